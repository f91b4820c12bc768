"""Do clients reach the relay with their own addresses? (``relayctl doctor``)

Behind Docker's published ports, a connection can arrive from the address of
the bridge's gateway instead of the client's: always for IPv6 clients of a
container without IPv6, and for every client when the host runs Docker's
userland proxy (no iptables NAT). Per-address limits (account creation rate,
the fifth of the connections one address may hold) then treat all those
clients as one.

The check looks at the connections established right now, in the kernel's
tables (``/proc/net/tcp``, ``/proc/net/tcp6``), to the client ports, and
compares their peers with the default gateways of the container's routing
tables (``/proc/net/route``, ``/proc/net/ipv6_route``). Nothing is stored; only
counts leave this module (and the gateway's address, which is no client's).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

CLIENT_PORTS = (25, 443, 465, 587, 993)
ESTABLISHED = "01"
PROC = Path("/proc/net")


def _ipv4(hex_le: str) -> ipaddress.IPv4Address:
    """/proc/net/tcp and /proc/net/route print IPv4 addresses as one host-order word."""
    return ipaddress.IPv4Address(socket.inet_ntoa(struct.pack("<I", int(hex_le, 16))))


def _ipv6(hex_words: str) -> ipaddress.IPv6Address:
    """/proc/net/tcp6 prints IPv6 addresses as four host-order words."""
    packed = b"".join(struct.pack("<I", int(hex_words[i:i + 8], 16)) for i in range(0, 32, 8))
    return ipaddress.IPv6Address(packed)


def _plain(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The address as text; an IPv4-mapped IPv6 address (a dual-stack socket) as IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def client_peers(proc: Path = PROC, ports: tuple[int, ...] = CLIENT_PORTS) -> list[str]:
    """Peer address of each established TCP connection to one of ``ports`` (local
    side), loopback peers left out (internal hops, health checks)."""
    peers = []
    for name, parse in (("tcp", _ipv4), ("tcp6", _ipv6)):
        try:
            lines = (proc / name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[3] != ESTABLISHED:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port not in ports:
                continue
            peer = parse(fields[2].rsplit(":", 1)[0])
            text = _plain(peer)
            if not ipaddress.ip_address(text).is_loopback:
                peers.append(text)
    return peers


def gateways(proc: Path = PROC) -> set[str]:
    """The next hops of the default routes (IPv4 and IPv6)."""
    found = set()
    try:
        for line in (proc / "route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[1] == "00000000" and fields[2] != "00000000":
                found.add(str(_ipv4(fields[2])))
    except FileNotFoundError:
        pass
    try:
        for line in (proc / "ipv6_route").read_text().splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[0] == "0" * 32 and fields[1] == "00" \
                    and fields[4] != "0" * 32:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(fields[4]))))
    except FileNotFoundError:
        pass
    return found


@dataclass(frozen=True)
class Census:
    """Counts only: connections now, distinct peers, connections from a gateway."""
    connections: int
    addresses: int
    from_gateway: int
    gateway: str  # the gateway most of them came from ('' if none)

    @property
    def collapsed(self) -> bool:
        """True when more than half of the clients arrive from the gateway."""
        return self.connections > 0 and 2 * self.from_gateway > self.connections


def census(proc: Path = PROC) -> Census:
    """Count the client connections of this moment (see the module's docstring)."""
    peers = client_peers(proc)
    hops = gateways(proc)
    from_gw = [p for p in peers if p in hops]
    top = max(hops, key=from_gw.count) if from_gw else ""
    return Census(len(peers), len(set(peers)), len(from_gw), top)
