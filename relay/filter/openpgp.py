"""Is this message OpenPGP-encrypted? The strict structural check of SPEC §3.

A message counts as encrypted only when it is exactly OpenPGP/MIME (RFC 3156):

    multipart/encrypted
      application/pgp-encrypted      body "Version: 1"
      application/octet-stream       one ASCII-armored PGP MESSAGE

and the armored data decodes to zero or more session-key packets (tag 1
public-key, tag 3 symmetric) followed by exactly one integrity-protected
encrypted data packet (tag 18, SEIPD) that ends the stream. Packet framing
follows RFC 4880 / RFC 9580 §4.2 (old and new formats, partial body lengths
for the data packet). Nothing here decrypts anything: we only check shape.

Every function returns False (never raises) for anything it does not like;
under test (relay.filter.guard.STRICT) an unexpected exception is raised.
"""

from __future__ import annotations

import base64
import binascii
import re
from email.message import Message

from relay.filter import guard

PKESK, SKESK, SEIPD = 1, 3, 18
PKESK_VERSIONS = {3, 6}
SKESK_VERSIONS = {4, 5, 6}
SEIPD_VERSIONS = {1, 2}

BEGIN = "-----BEGIN PGP MESSAGE-----"
END = "-----END PGP MESSAGE-----"
_ARMOR_HEADER = re.compile(r"^([A-Za-z][A-Za-z0-9-]*): ?(.*)$")
_B64_LINE = re.compile(r"^[A-Za-z0-9+/=]+$")


class Malformed(ValueError):
    """The packet stream is not well-formed OpenPGP (RFC 9580 §4.2 framing); callers turn it into
    "not encrypted".
    """
    pass


# --- packet stream ------------------------------------------------------------

def _read_length(data: bytes, pos: int) -> tuple[int, int, bool]:
    """New-format body length at ``pos``: (length, new position, is_partial)."""
    if pos >= len(data):
        raise Malformed("truncated length")
    first = data[pos]
    if first < 192:
        return first, pos + 1, False
    if first < 224:
        if pos + 1 >= len(data):
            raise Malformed("truncated length")
        return ((first - 192) << 8) + data[pos + 1] + 192, pos + 2, False
    if first == 255:
        if pos + 5 > len(data):
            raise Malformed("truncated length")
        return int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5, False
    return 1 << (first & 0x1F), pos + 1, True


def packets(data: bytes) -> list[tuple[int, bytes]]:
    """Split an OpenPGP packet stream into (tag, first bytes of body) pairs."""
    result = []
    pos = 0
    while pos < len(data):
        header = data[pos]
        if not header & 0x80:
            raise Malformed("not a packet header")
        if header & 0x40:  # new format
            tag = header & 0x3F
            pos += 1
            length, pos, partial = _read_length(data, pos)
            if partial and tag != SEIPD:
                raise Malformed("partial length on a non-data packet")
            if partial and length < 512:
                raise Malformed("first partial chunk shorter than 512 octets")
            start = pos
            body_len = 0
            while partial:
                if pos + length > len(data):
                    raise Malformed("truncated partial chunk")
                pos += length
                body_len += length
                length, pos, partial = _read_length(data, pos)
            if pos + length > len(data):
                raise Malformed("truncated packet")
            first_bytes = data[start:start + 1] if body_len else data[pos:pos + 1]
            pos += length
        else:  # old format
            tag = (header >> 2) & 0x0F
            kind = header & 0x03
            if kind == 3:
                raise Malformed("indeterminate length")
            size = (1, 2, 4)[kind]
            if pos + 1 + size > len(data):
                raise Malformed("truncated length")
            length = int.from_bytes(data[pos + 1:pos + 1 + size], "big")
            pos += 1 + size
            if pos + length > len(data):
                raise Malformed("truncated packet")
            first_bytes = data[pos:pos + 1]
            pos += length
        result.append((tag, first_bytes))
    return result


def is_encrypted_stream(data: bytes) -> bool:
    """Zero or more session-key packets, then exactly one SEIPD packet ending the stream."""
    try:
        found = packets(data)
    except Malformed:
        return False
    if not found:
        return False
    *keys, last = found
    tag, first = last
    if tag != SEIPD or not first or first[0] not in SEIPD_VERSIONS:
        return False
    for tag, first in keys:
        if tag == PKESK and first and first[0] in PKESK_VERSIONS:
            continue
        if tag == SKESK and first and first[0] in SKESK_VERSIONS:
            continue
        return False
    return True


# --- ASCII armor ------------------------------------------------------------------

def _crc24_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return table


_CRC24_TABLE = _crc24_table()


def crc24(data: bytes) -> int:
    """The armor checksum of RFC 4880 §6.1, one table lookup per byte."""
    crc, table = 0xB704CE, _CRC24_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ table[((crc >> 16) ^ byte) & 0xFF]
    return crc


def dearmor(text: str, allow_version: bool) -> bytes | None:
    """The binary content of exactly one armored PGP MESSAGE, or None."""
    lines = [line.rstrip(" \t\r") for line in text.strip().split("\n")]
    if len(lines) < 3 or lines[0] != BEGIN or lines[-1] != END:
        return None
    body = lines[1:-1]
    # armor headers up to the first blank line (the blank line is required if any)
    i = 0
    while i < len(body) and body[i] != "":
        match = _ARMOR_HEADER.match(body[i])
        if not match:
            break
        if match.group(1).lower() == "version" and not allow_version:
            return None
        i += 1
    if i < len(body) and body[i] == "":
        body = body[i + 1:]
    elif i > 0:
        return None  # headers without the separating blank line
    checksum = None
    if body and body[-1].startswith("="):
        checksum = body.pop()
    if not body or not all(_B64_LINE.match(line) for line in body):
        return None
    try:
        data = base64.b64decode("".join(body), validate=True)
    except (binascii.Error, ValueError):
        return None
    if checksum is not None:
        try:
            expected = base64.b64decode(checksum[1:], validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(expected) != 3 or int.from_bytes(expected, "big") != crc24(data):
            return None
    return data


# --- MIME structure ---------------------------------------------------------------

def _text(part: Message) -> str | None:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    try:
        return payload.decode("ascii")
    except UnicodeDecodeError:
        return None


def has_one_content_type(part: Message) -> bool:
    """Python reads the first of repeated Content-Type headers, some clients the last:
    a part with more than one could show as encrypted here and as text there."""
    return len(part.get_all("Content-Type") or []) == 1


def is_openpgp_mime(msg: Message, outgoing: bool) -> bool:
    """The whole SPEC §3 check on a parsed message (outgoing: no armor Version line)."""
    try:
        if not has_one_content_type(msg):
            return False
        if msg.get_content_type() != "multipart/encrypted" or not msg.is_multipart():
            return False
        parts = msg.get_payload()
        if not isinstance(parts, list) or len(parts) != 2:
            return False
        control, encrypted = parts
        if not (isinstance(control, Message) and isinstance(encrypted, Message)):
            return False
        if not (has_one_content_type(control) and has_one_content_type(encrypted)):
            return False
        if control.is_multipart() or encrypted.is_multipart():
            return False
        if control.get_content_type() != "application/pgp-encrypted":
            return False
        if (_text(control) or "").strip() != "Version: 1":
            return False
        if encrypted.get_content_type() != "application/octet-stream":
            return False
        armored = _text(encrypted)
        if armored is None:
            return False
        data = dearmor(armored, allow_version=not outgoing)
        return data is not None and is_encrypted_stream(data)
    except Exception as exc:  # a malformed message is unencrypted, never an error
        guard.unexpected(exc, "openpgp")  # re-raises under test
        return False
