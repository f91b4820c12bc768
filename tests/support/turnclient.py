"""A minimal TURN client (RFC 5766 long-term credentials), for the tests.

Run inside the relay container (python3 - < turnclient.py ARGS): it sends an
Allocate to coturn on 127.0.0.1:3478 over UDP or TCP with the given
credentials and prints one JSON line: the outcome of the Allocate and, when it
succeeded, of CreatePermission for each peer address given.

    python3 turnclient.py udp|tcp USERNAME PASSWORD [PEER ...]
"""

import hashlib
import hmac
import json
import os
import socket
import struct
import sys
import zlib

MAGIC = 0x2112A442
ALLOCATE, REFRESH, CREATE_PERMISSION = 0x0003, 0x0004, 0x0008
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
XOR_PEER_ADDRESS, REALM, NONCE, XOR_RELAYED_ADDRESS = 0x0012, 0x0014, 0x0015, 0x0016
REQUESTED_TRANSPORT, FINGERPRINT = 0x0019, 0x8028


def attr(kind: int, value: bytes) -> bytes:
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def xor_address(ip: str, port: int = 9) -> bytes:
    packed = socket.inet_aton(ip)
    xport = port ^ (MAGIC >> 16)
    xip = bytes(a ^ b for a, b in zip(packed, struct.pack("!I", MAGIC)))
    return b"\0\x01" + struct.pack("!H", xport) + xip


def message(kind: int, attrs: list[bytes], key: bytes | None = None) -> bytes:
    tid = os.urandom(12)
    body = b"".join(attrs)
    if key is not None:
        # MESSAGE-INTEGRITY covers the header with the length including itself.
        header = struct.pack("!HHI", kind, len(body) + 24, MAGIC) + tid
        mac = hmac.new(key, header + body, hashlib.sha1).digest()
        body += attr(MESSAGE_INTEGRITY, mac)
    header = struct.pack("!HHI", kind, len(body) + 8, MAGIC) + tid
    crc = (zlib.crc32(header + body) ^ 0x5354554E) & 0xFFFFFFFF
    return header + body + attr(FINGERPRINT, struct.pack("!I", crc))


def parse(data: bytes) -> tuple[int, dict[int, bytes]]:
    kind, length = struct.unpack("!HH", data[:4])
    attrs, pos = {}, 20
    while pos < 20 + length:
        a, n = struct.unpack("!HH", data[pos:pos + 4])
        attrs.setdefault(a, data[pos + 4:pos + 4 + n])
        pos += 4 + n + (4 - n % 4) % 4
    return kind, attrs


class Client:
    def __init__(self, transport: str) -> None:
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", 3478))
        self.stream = transport == "tcp"

    def ask(self, data: bytes) -> tuple[int, dict[int, bytes]]:
        self.sock.sendall(data)
        if not self.stream:
            return parse(self.sock.recv(4096))
        head = self._read(20)
        return parse(head + self._read(struct.unpack("!H", head[2:4])[0]))

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out


def error_code(attrs: dict[int, bytes]) -> int | None:
    value = attrs.get(ERROR_CODE)
    return None if value is None else value[2] * 100 + value[3]


def main() -> None:
    transport, username, password, *peers = sys.argv[1:]
    client = Client(transport)
    udp = attr(REQUESTED_TRANSPORT, b"\x11\0\0\0")
    kind, attrs = client.ask(message(ALLOCATE, [udp]))
    result: dict = {"challenge": error_code(attrs)}
    realm, nonce = attrs.get(REALM, b""), attrs.get(NONCE, b"")
    key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()
    auth = [attr(USERNAME, username.encode()), attr(REALM, realm), attr(NONCE, nonce)]
    kind, attrs = client.ask(message(ALLOCATE, [udp] + auth, key))
    result["realm"] = realm.decode()
    result["allocate"] = "success" if kind == 0x0103 else error_code(attrs)
    result["relayed"] = XOR_RELAYED_ADDRESS in attrs
    result["permissions"] = {}
    if kind == 0x0103:
        for peer in peers:
            kind, attrs = client.ask(message(
                CREATE_PERMISSION, [attr(XOR_PEER_ADDRESS, xor_address(peer))] + auth, key))
            result["permissions"][peer] = "success" if kind == 0x0108 else error_code(attrs)
        client.ask(message(REFRESH, [attr(LIFETIME, b"\0\0\0\0")] + auth, key))  # free it
    print(json.dumps(result))


if __name__ == "__main__":
    main()
