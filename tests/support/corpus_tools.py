#!/usr/bin/env python3
"""The filter's test corpus: reading it, and (re)generating it with gpg.

``tests/corpus/`` holds one ``.eml`` file per rule or edge case of the encryption
filter (SPEC §3), with CRLF line endings as on the wire, and ``manifest.json``:

    {"placeholders": {...},
     "cases": {"<file>.eml": {"outgoing": "accept" | <reply code>,
                              "incoming": "accept" | <reply code>,
                              "mail_from": "{sender}" | "",
                              "rcpt_tos": ["{recipient}", ...],
                              "kind": "encrypted" | "malformed" | "cleartext"
                                      | "exception" | "forged-exception",
                              "why": "..."}}}

The .eml files and the envelopes use the placeholders ``{sender}`` and
``{recipient}`` for the two accounts of the relay (they are replaced with plain
``str.replace``, never ``str.format``): a test substitutes real addresses, see
:func:`load_case`. ``mail_from`` is ``""`` (the null sender) for bounces.

Only regeneration needs gpg; the tests read the committed files:

    python3 tests/support/corpus_tools.py        # rewrites tests/corpus/ (new random keys)

The helpers below (armor, packet parsing and encoding, CRC-24) are written
independently of ``relay.filter.openpgp`` so the tests can use them as an oracle.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
MANIFEST = CORPUS / "manifest.json"
SENDER = "{sender}"
RECIPIENT = "{recipient}"

PLACEHOLDERS = {
    SENDER: "the sending account of the relay (envelope sender of every case but bounces)",
    RECIPIENT: "another account of the relay",
}


# --- reading the corpus ----------------------------------------------------------------

def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def substitute(text: str, sender: str, recipient: str) -> str:
    return text.replace(SENDER, sender).replace(RECIPIENT, recipient)


def load_case(name: str, sender: str, recipient: str) -> tuple[str, list[str], bytes, dict]:
    """(mail_from, rcpt_tos, message bytes, manifest entry) with the placeholders filled in."""
    entry = load_manifest()["cases"][name]
    raw = (CORPUS / name).read_bytes().decode("utf-8")
    data = substitute(raw, sender, recipient).encode("utf-8")
    return (substitute(entry["mail_from"], sender, recipient),
            [substitute(r, sender, recipient) for r in entry["rcpt_tos"]],
            data, entry)


def verdict(reject) -> str | int:
    """A check_* result in the manifest's terms."""
    return "accept" if reject is None else reject.code


# --- OpenPGP helpers (independent of relay.filter.openpgp) ---------------------------------

def crc24(data: bytes) -> int:
    """RFC 4880 §6.1, table-free."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc = (crc << 1) ^ (0x1864CFB if crc & 0x800000 else 0)
    return crc & 0xFFFFFF


def armor(data: bytes, headers: list[str] = (), checksum: bool = True,
          kind: str = "MESSAGE") -> str:
    """ASCII armor with LF line endings (76-column lines as gpg writes 64)."""
    b64 = base64.b64encode(data).decode("ascii")
    lines = [f"-----BEGIN PGP {kind}-----", *headers, ""]
    lines += [b64[i:i + 64] for i in range(0, len(b64), 64)]
    if checksum:
        lines.append("=" + base64.b64encode(crc24(data).to_bytes(3, "big")).decode("ascii"))
    lines.append(f"-----END PGP {kind}-----")
    return "\n".join(lines) + "\n"


_B64 = re.compile(r"[A-Za-z0-9+/]*=*")


def _b64(text: str) -> bytes | None:
    """Strict base64, except that surplus '=' after a complete quad is ignored (as
    Python's base64 does, even with validate=True: it hides no data)."""
    if not _B64.fullmatch(text):
        return None
    core = text.rstrip("=")
    pads = len(text) - len(core)
    if len(core) % 4 == 1 or (len(core) % 4 and pads != 4 - len(core) % 4):
        return None
    try:
        return base64.b64decode(core + "=" * (-len(core) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def unarmor(text: str) -> bytes | None:
    """Decode one armored PGP MESSAGE; tolerant about header lines, strict about data."""
    lines = [line.rstrip(" \t\r") for line in text.strip().split("\n")]
    if len(lines) < 3 or lines[0] != "-----BEGIN PGP MESSAGE-----" \
            or lines[-1] != "-----END PGP MESSAGE-----":
        return None
    body = lines[1:-1]
    if "" in body:
        head, body = body[:body.index("")], body[body.index("") + 1:]
        if not all(re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*: ?.*", h) for h in head):
            return None
    crc = None
    if body and re.fullmatch(r"=[A-Za-z0-9+/]{4}=*", body[-1]):
        crc = _b64(body.pop()[1:])
        if crc is None:
            return None
    if not body or "=" in "".join(body[:-1]) or body[-1].startswith("="):
        return None
    data = _b64("".join(body))
    if data is None or (crc is not None and int.from_bytes(crc, "big") != crc24(data)):
        return None
    return data


@dataclass
class Packet:
    tag: int
    body: bytes          # reassembled (partial chunks joined)
    new_format: bool
    partial: bool        # the body used partial body lengths
    first_chunk: int     # length of the first partial chunk (0 when not partial)


class Broken(ValueError):
    pass


def parse_packets(data: bytes) -> list[Packet]:
    """RFC 4880 §4.2 packet framing; raises Broken on anything malformed or truncated."""
    out, pos = [], 0

    def need(n):
        if pos + n > len(data):
            raise Broken("truncated")

    while pos < len(data):
        ctb = data[pos]
        pos += 1
        if not ctb & 0x80:
            raise Broken("bit 7 of the packet tag is not set")
        if ctb & 0x40:
            tag, chunks, partial, first_chunk = ctb & 0x3F, [], False, 0
            while True:
                need(1)
                o = data[pos]
                if o < 192:
                    n, pos, more = o, pos + 1, False
                elif o < 224:
                    need(2)
                    n, pos, more = ((o - 192) << 8) + data[pos + 1] + 192, pos + 2, False
                elif o == 255:
                    need(5)
                    n, pos, more = int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5, False
                else:
                    n, pos, more = 1 << (o & 0x1F), pos + 1, True
                    if not partial:
                        first_chunk = n
                    partial = True
                need(n)
                chunks.append(data[pos:pos + n])
                pos += n
                if not more:
                    break
            out.append(Packet(tag, b"".join(chunks), True, partial, first_chunk))
        else:
            tag, ltype = (ctb >> 2) & 0x0F, ctb & 3
            if ltype == 3:
                raise Broken("indeterminate length")
            size = (1, 2, 4)[ltype]
            need(size)
            n = int.from_bytes(data[pos:pos + size], "big")
            pos += size
            need(n)
            out.append(Packet(tag, data[pos:pos + n], False, False, 0))
            pos += n
    return out


def stream_shape_ok(data: bytes | None) -> bool:
    """The SPEC §3 packet shape (with the version octets relay.filter.openpgp knows)."""
    if data is None:
        return False
    try:
        found = parse_packets(data)
    except Broken:
        return False
    if not found or found[-1].tag != 18:
        return False
    for p in found:
        if p.partial and (p.tag != 18 or p.first_chunk < 512):
            return False
    seipd = found[-1]
    if not seipd.body or seipd.body[0] not in (1, 2):
        return False
    for p in found[:-1]:
        if p.tag == 1 and p.body[:1] and p.body[0] in (3, 6):
            continue
        if p.tag == 3 and p.body[:1] and p.body[0] in (4, 5, 6):
            continue
        return False
    return True


def new_length(n: int, octets: int | None = None) -> bytes:
    """A new-format body length (octets: 1, 2 or 5; None for the shortest)."""
    if octets is None:
        octets = 1 if n < 192 else 2 if n < 8384 else 5
    if octets == 1:
        assert n < 192
        return bytes([n])
    if octets == 2:
        assert 192 <= n < 8384
        n -= 192
        return bytes([(n >> 8) + 192, n & 0xFF])
    return b"\xff" + n.to_bytes(4, "big")


def encode_packet(tag: int, body: bytes, *, new_format: bool = True,
                  octets: int | None = None, partial_chunk: int | None = None) -> bytes:
    """One packet. partial_chunk (a power of two) splits the body in partial chunks."""
    if not new_format:
        size = octets or (1 if len(body) < 256 else 2 if len(body) < 65536 else 4)
        ltype = {1: 0, 2: 1, 4: 2}[size]
        return bytes([0x80 | (tag << 2) | ltype]) + len(body).to_bytes(size, "big") + body
    head = bytes([0xC0 | tag])
    if partial_chunk is None:
        return head + new_length(len(body), octets) + body
    power = partial_chunk.bit_length() - 1
    assert 1 << power == partial_chunk
    out, rest = head, body
    while len(rest) > partial_chunk:
        out += bytes([224 + power]) + rest[:partial_chunk]
        rest = rest[partial_chunk:]
    return out + new_length(len(rest)) + rest


def literal_packet(text: bytes, new_format: bool = True) -> bytes:
    body = b"b" + b"\x00" + (1700000000).to_bytes(4, "big") + text
    return encode_packet(11, body, new_format=new_format)


# --- generating the corpus -----------------------------------------------------------

class GPG:
    """gpg with a throwaway GNUPGHOME."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="corpus-gnupg-")
        os.chmod(self._dir.name, 0o700)
        self.env = dict(os.environ, GNUPGHOME=self._dir.name)

    def close(self):
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, check=False,
                       capture_output=True)
        self._dir.cleanup()

    def run(self, *args: str, data: bytes = b"") -> bytes:
        proc = subprocess.run(
            ["gpg", "--batch", "--yes", "--quiet", "--no-tty", "--trust-model", "always",
             "--pinentry-mode", "loopback", *args],
            input=data, env=self.env, capture_output=True)
        if proc.returncode:
            raise RuntimeError(f"gpg {' '.join(args)}: {proc.stderr.decode()}")
        return proc.stdout

    def gen_key(self, uid: str) -> None:
        self.run("--passphrase", "", "--quick-gen-key", uid, "future-default", "default", "never")

    def encrypt(self, plaintext: bytes, recipients: list[str], passphrase: str | None = None,
                extra: list[str] = ()) -> str:
        args = ["--armor", *extra]
        for r in recipients:
            args += ["--recipient", r]
        if recipients:
            args.append("--encrypt")
        if passphrase is not None:
            args += ["--symmetric", "--passphrase", passphrase]
        return self.run(*args, data=plaintext).decode("ascii")

    def export(self, uid: str, secret: bool = False) -> bytes:
        return self.run("--passphrase", "",
                        "--export-secret-keys" if secret else "--export", uid)


def inner_message(text: str) -> bytes:
    """The cleartext inside the encryption: a MIME part as Delta Chat encrypts it."""
    return ("Content-Type: text/plain; charset=\"utf-8\"; protected-headers=\"v1\"\r\n"
            "Subject: Hi\r\n\r\n" + text.replace("\n", "\r\n")).encode("utf-8")


def headers(*, sender: str = SENDER, to: str = RECIPIENT, subject: str = "[...]",
            extra: list[str] = (), n: int = 0) -> list[str]:
    return [f"From: {sender}", f"To: {to}", f"Subject: {subject}",
            "Date: Mon, 17 Nov 2025 10:00:00 +0000",
            f"Message-ID: <corpus.{n}.f3a9c1@_chat.example.test>",
            *extra, "MIME-Version: 1.0"]


BOUNDARY = "pgpmime-7d1e2c9b"


def control_part(body: str = "Version: 1") -> list[str]:
    return ["Content-Type: application/pgp-encrypted",
            "Content-Description: PGP/MIME version identification", "", body, ""]


def data_part(armored: str, ctype: str = "application/octet-stream") -> list[str]:
    return [f'Content-Type: {ctype}; name="encrypted.asc"',
            "Content-Description: OpenPGP encrypted message",
            'Content-Disposition: inline; filename="encrypted.asc"', "",
            *armored.rstrip("\n").split("\n"), ""]


def multipart(ctype: str, parts: list[list[str]], boundary: str = BOUNDARY,
              params: str = "", preamble: str | None = None) -> list[str]:
    lines = [f'Content-Type: {ctype};{params} boundary="{boundary}"', ""]
    if preamble is not None:
        lines += [preamble, ""]
    for part in parts:
        lines += [f"--{boundary}", *part]
    lines += [f"--{boundary}--", ""]
    return lines


def pgp_mime(armored: str, parts: list[list[str]] | None = None) -> list[str]:
    if parts is None:
        parts = [control_part(), data_part(armored)]
    return multipart("multipart/encrypted", parts,
                     params=' protocol="application/pgp-encrypted";',
                     preamble="This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)")


def text_part(text: str, ctype: str = "text/plain") -> list[str]:
    return [f'Content-Type: {ctype}; charset="utf-8"', "", *text.split("\n")]


class Corpus:
    def __init__(self):
        self.cases: dict[str, dict] = {}

    def add(self, name: str, lines: list[str], *, outgoing, incoming, kind: str, why: str,
            mail_from: str = SENDER, rcpt_tos: list[str] = (RECIPIENT,)) -> None:
        assert name not in self.cases, name
        text = "\r\n".join(line.rstrip("\r") for line in lines)
        if not text.endswith("\r\n"):
            text += "\r\n"
        assert "\n" not in text.replace("\r\n", "")
        stripped = text.replace(SENDER, "").replace(RECIPIENT, "")
        assert "{" not in stripped and "}" not in stripped, f"{name}: stray brace"
        assert all(len(line) <= 998 for line in text.split("\r\n")), name
        (CORPUS / f"{name}.eml").write_bytes(text.encode("utf-8"))
        self.cases[f"{name}.eml"] = {
            "outgoing": outgoing, "incoming": incoming, "mail_from": mail_from,
            "rcpt_tos": list(rcpt_tos), "kind": kind, "why": why}

    def write_manifest(self) -> None:
        MANIFEST.write_text(json.dumps(
            {"placeholders": PLACEHOLDERS, "cases": self.cases}, indent=2) + "\n")


def generate() -> Corpus:
    rng = random.Random(3156)
    CORPUS.mkdir(exist_ok=True)
    for old in CORPUS.glob("*.eml"):
        old.unlink()
    gpg = GPG()
    try:
        return _generate(gpg, rng)
    finally:
        gpg.close()


def _generate(gpg: GPG, rng: random.Random) -> Corpus:
    A, B, C = "alice@example.invalid", "bob@example.invalid", "carol@example.invalid"
    for uid in (A, B, C):
        gpg.gen_key(f"{uid.split('@')[0]} <{uid}>")

    hello = inner_message("Hello Bob, this is end-to-end encrypted.\n")
    one = gpg.encrypt(hello, [B])
    two = gpg.encrypt(hello, [B, C])
    mixed_keys = gpg.encrypt(hello, [B], passphrase="correct horse battery staple")
    words = ["relay", "chat", "mail", "key", "packet", "armor", "lorem", "ipsum", "dolor"]
    big_text = "\n".join(" ".join(rng.choice(words) + str(rng.randrange(10**6))
                                  for _ in range(10)) for _ in range(160))
    big_plain = inner_message(big_text)
    assert len(big_plain) > 10_000
    big = gpg.encrypt(big_plain, [B], extra=["--compress-algo", "none"])
    medium = gpg.encrypt(inner_message(big_text[:3000]), [B, C], extra=["--compress-algo", "none"])

    one_bin = unarmor(one)
    big_bin = unarmor(big)
    p_one, p_two, p_mixed, p_big, p_medium = (parse_packets(unarmor(x))
                                              for x in (one, two, mixed_keys, big, medium))
    assert [p.tag for p in p_one] == [1, 18]
    assert [p.tag for p in p_two] == [1, 1, 18]
    assert sorted(p.tag for p in p_mixed[:-1]) == [1, 3] and p_mixed[-1].tag == 18
    assert p_big[-1].tag == 18 and p_big[-1].partial, "gpg did not use partial lengths"
    for x in (one, two, mixed_keys, big):
        assert stream_shape_ok(unarmor(x)) and "Version:" not in x
    pkesk, seipd = p_one

    corpus = Corpus()
    n = iter(range(1, 1000))

    def enc(name, armored, *, outgoing="accept", incoming="accept", kind="encrypted", why,
            hdrs=None, parts=None, body=None, **kw):
        lines = (hdrs or headers(n=next(n), extra=["Chat-Version: 1.0"]))
        lines = lines + (body if body is not None else pgp_mime(armored, parts))
        corpus.add(name, lines, outgoing=outgoing, incoming=incoming, kind=kind, why=why, **kw)

    def broken(name, armored, why, **kw):
        enc(name, armored, outgoing=523, incoming=523, kind="malformed", why=why, **kw)

    # -- valid OpenPGP/MIME --------------------------------------------------------
    enc("enc_one_pkesk", one, why="valid OpenPGP/MIME: one PKESK then SEIPD (gpg, old-format PKESK header)")
    enc("enc_two_pkesk", two, why="valid: two recipients' PKESK packets then SEIPD")
    enc("enc_pkesk_skesk", mixed_keys, why="valid: PKESK and SKESK (--symmetric plus a public key) then SEIPD")
    enc("enc_large_partial", big, why="valid: >10 kB plaintext, SEIPD with partial body lengths")
    enc("enc_new_format_headers",
        armor(b"".join(encode_packet(p.tag, p.body, octets=2 if p.tag == 18 else None)
                       for p in p_medium)),
        why="valid: all packets re-framed with new-format headers (2-octet SEIPD length)")
    enc("enc_five_octet_length",
        armor(encode_packet(1, pkesk.body, new_format=False, octets=4)
              + encode_packet(18, seipd.body, octets=5)),
        why="valid: 4-octet old-format PKESK length and 5-octet new-format SEIPD length")
    enc("enc_no_checksum", armor(one_bin, checksum=False),
        why="valid: armor without the optional CRC-24 line (RFC 9580)")
    enc("enc_armor_comment", armor(one_bin, headers=["Comment: https://example.org/key"]),
        why="valid: a Comment armor header is fine both ways, only Version is refused outgoing")
    enc("enc_armor_version", armor(one_bin, headers=["Version: GnuPG v2"]),
        outgoing=523, incoming="accept",
        why="armor carries a Version line: refused outgoing, allowed incoming")

    # -- broken armor / packet streams ------------------------------------------------
    lines = one.split("\n")
    lines[2] = lines[2][:10] + "*" + lines[2][11:]
    broken("enc_bad_base64", "\n".join(lines), "a character outside the base64 alphabet in the armor")
    lines = one.split("\n")
    lines[2] = lines[2][:8] + "=" + lines[2][9:]
    broken("enc_base64_inner_padding", "\n".join(lines), "a '=' pad character in the middle of the armor data")
    crc_line = next(i for i, l in enumerate(one.split("\n")) if re.fullmatch(r"=[A-Za-z0-9+/]{4}", l))
    lines = one.split("\n")
    wrong = crc24(one_bin) ^ 0x000001
    lines[crc_line] = "=" + base64.b64encode(wrong.to_bytes(3, "big")).decode()
    broken("enc_bad_crc", "\n".join(lines), "armor CRC-24 does not match the data")
    broken("enc_truncated", armor(one_bin[:-12]), "packet stream truncated inside the SEIPD packet (valid CRC)")
    broken("enc_truncated_partial", armor(big_bin[:9000]),
           "large message cut inside a partial-length chunk of the SEIPD packet")
    broken("enc_extra_packet_after_seipd", armor(one_bin + literal_packet(b"cleartext after SEIPD\n")),
           "a literal data packet follows the SEIPD packet")
    broken("enc_two_seipd", armor(one_bin + encode_packet(18, seipd.body)),
           "two SEIPD packets: exactly one must end the stream")
    broken("enc_only_session_keys",
           armor(b"".join(encode_packet(p.tag, p.body, new_format=False) for p in p_two[:-1])),
           "only PKESK packets, no SEIPD packet")
    broken("enc_sed_not_seipd", armor(encode_packet(1, pkesk.body, new_format=False)
                                      + encode_packet(9, seipd.body[1:])),
           "SED (tag 9, no integrity protection) instead of SEIPD")
    broken("enc_literal_data", armor(literal_packet(b"Hello Bob, this is NOT encrypted.\n")),
           "armored literal data packet (tag 11): cleartext dressed as a PGP MESSAGE")
    broken("enc_marker_then_seipd", armor(encode_packet(10, b"PGP") + one_bin),
           "a marker packet (tag 10) before the session keys: not the allowed shape")
    broken("enc_partial_first_chunk_256",
           armor(encode_packet(1, p_big[0].body, new_format=False)
                 + encode_packet(18, p_big[-1].body, partial_chunk=256)),
           "SEIPD with a first partial chunk of 256 octets (< 512, forbidden by RFC 4880)")
    broken("enc_empty_armor", "-----BEGIN PGP MESSAGE-----\n\n-----END PGP MESSAGE-----\n",
           "an armor block with no data")

    # -- broken MIME structure ---------------------------------------------------------
    broken("enc_wrong_part_order", one, parts=[data_part(one), control_part()],
           why="the octet-stream part comes before the application/pgp-encrypted part")
    broken("enc_three_parts", one, parts=[control_part(), data_part(one),
                                          text_part("and a cleartext part\n")],
           why="a third (text/plain) part after the two OpenPGP/MIME parts")
    broken("enc_control_version_2", one, parts=[control_part("Version: 2"), data_part(one)],
           why="application/pgp-encrypted part body is 'Version: 2', not 'Version: 1'")
    broken("enc_data_part_text_plain", one,
           parts=[control_part(), data_part(one, ctype="text/plain")],
           why="second part is text/plain instead of application/octet-stream")
    broken("enc_one_part", one, parts=[data_part(one)],
           why="multipart/encrypted with only the octet-stream part")
    broken("enc_nested_in_mixed", one,
           body=multipart("multipart/mixed",
                          [pgp_mime(one, None), text_part("cleartext next to it\n")],
                          boundary="outer-4b2a"),
           why="multipart/encrypted nested inside multipart/mixed")
    broken("enc_not_multipart_encrypted", one,
           body=multipart("multipart/mixed", [control_part(), data_part(one)]),
           why="the two right parts, but inside multipart/mixed instead of multipart/encrypted")
    broken("enc_two_armor_blocks", one + two, parts=[control_part(), data_part(one + "\n" + two)],
           why="two armored PGP MESSAGE blocks in the second part")
    broken("enc_text_before_begin", one,
           parts=[control_part(), data_part("Here is my message:\n\n" + one)],
           why="cleartext before the BEGIN PGP MESSAGE line")
    broken("enc_text_after_end", one,
           parts=[control_part(), data_part(one + "\nP.S. cleartext after the armor\n")],
           why="cleartext after the END PGP MESSAGE line")
    broken("enc_pgp_signature_block", one,
           parts=[control_part(), data_part(one.replace("PGP MESSAGE", "PGP SIGNATURE"))],
           why="armor labelled PGP SIGNATURE, not PGP MESSAGE")

    # -- From checks (outgoing only) -----------------------------------------------------
    enc("enc_forged_from", one, outgoing=553, incoming="accept",
        hdrs=headers(sender=RECIPIENT, n=next(n)),
        why="valid encryption but From is another account than the envelope sender")
    enc("enc_two_from_headers", one, outgoing=553, incoming="accept",
        hdrs=[f"From: {SENDER}"] + headers(sender=RECIPIENT, n=next(n)),
        why="two From headers (own address and another one)")
    enc("enc_from_two_addresses", one, outgoing=553, incoming="accept",
        hdrs=headers(sender=f"{SENDER}, {RECIPIENT}", n=next(n)),
        why="one From header listing two addresses")
    enc("enc_from_display_name_trick", one, outgoing=553, incoming="accept",
        hdrs=headers(sender=f'"{SENDER}" <{RECIPIENT}>', n=next(n)),
        why="From display name is the own address, the address itself is another account")
    enc("enc_no_from", one, outgoing=553, incoming="accept",
        hdrs=headers(n=next(n))[1:],
        why="no From header at all")

    # -- cleartext ---------------------------------------------------------------------
    def clear(name, lines, why, outgoing=523, incoming=523, kind="cleartext", **kw):
        corpus.add(name, lines, outgoing=outgoing, incoming=incoming, kind=kind, why=why, **kw)

    clear("plain_text", headers(n=next(n)) + text_part("Hello Bob, this is cleartext.\n"),
          "a plain text/plain message")
    clear("html_only", headers(n=next(n)) + text_part("<html><body><p>Hello Bob</p></body></html>\n",
                                                      ctype="text/html"),
          "a text/html-only message")
    clear("multipart_alternative", headers(n=next(n)) + multipart(
        "multipart/alternative",
        [text_part("Hello Bob\n"), text_part("<p>Hello Bob</p>\n", ctype="text/html")]),
        "multipart/alternative with text and HTML")
    keydata = base64.b64encode(gpg.export(A)).decode()
    folded = [keydata[i:i + 76] for i in range(0, len(keydata), 76)]
    clear("chat_headers_plain_body",
          headers(n=next(n), extra=["Chat-Version: 1.0",
                                    f"Autocrypt: addr={SENDER}; prefer-encrypt=mutual; keydata="]
                  + [" " + f for f in folded]) + text_part("Hello Bob, Delta Chat headers but no encryption.\n"),
          "Chat-Version and Autocrypt headers do not make a cleartext body acceptable")
    mdn = ["Content-Type: message/disposition-notification", "",
           "Reporting-UA: Delta Chat", f"Original-Recipient: rfc822;{SENDER}",
           f"Final-Recipient: rfc822;{SENDER}",
           "Original-Message-ID: <orig.1@_chat.example.test>",
           "Disposition: manual-action/MDN-sent-automatically; displayed", ""]
    clear("mdn_cleartext",
          headers(n=next(n), subject="Receipt Notification",
                  extra=["Chat-Version: 1.0", "Auto-Submitted: auto-replied"])
          + multipart("multipart/report", [text_part("This is a receipt notification.\n"), mdn],
                      params=" report-type=disposition-notification;"),
          "a cleartext read receipt (MDN) from a user: refused both ways")
    clear("pgp_inline_cleartext_wrapper",
          headers(n=next(n)) + text_part(one),
          "inline PGP (armor in a text/plain body) is not OpenPGP/MIME")

    # -- Secure-Join -----------------------------------------------------------------------
    def securejoin(value, body_parts, extra=(), ctype="multipart/mixed", sender=SENDER):
        hdrs = headers(sender=sender, n=next(n), subject=f"Message from {SENDER}",
                       extra=["Chat-Version: 1.0", f"Secure-Join: {value}",
                              "Secure-Join-Invitenumber: Wq4vN1xR7tYz0cB3", *extra])
        if ctype is None:
            return hdrs + body_parts
        return hdrs + multipart(ctype, body_parts, boundary="sj-9f8e7d")

    clear("securejoin_vc_request", securejoin("vc-request", [text_part("Secure-Join: vc-request\n")]),
          "Secure-Join vc-request handshake message: allowed unencrypted both ways",
          outgoing="accept", incoming="accept", kind="exception")
    clear("securejoin_vg_request",
          securejoin("vg-request", [text_part("Secure-Join: vg-request\n")],
                     extra=["Secure-Join-Group: Testers"]),
          "Secure-Join vg-request (group join) handshake message: allowed unencrypted both ways",
          outgoing="accept", incoming="accept", kind="exception")
    clear("securejoin_forged_from",
          securejoin("vc-request", [text_part("Secure-Join: vc-request\n")], sender=RECIPIENT),
          "valid vc-request, but From is not the envelope sender",
          outgoing=553, incoming="accept", kind="exception")
    clear("securejoin_forged_body", securejoin("vc-request", [text_part("Hi Bob, here is a secret in cleartext.\n")]),
          "Secure-Join: vc-request header but the text is not the header line",
          kind="forged-exception")
    clear("securejoin_body_mismatch", securejoin("vc-request", [text_part("Secure-Join: vg-request\n")]),
          "header says vc-request, the text says vg-request",
          kind="forged-exception")
    clear("securejoin_extra_part",
          securejoin("vc-request", [text_part("Secure-Join: vc-request\n"),
                                    ["Content-Type: application/octet-stream",
                                     "Content-Transfer-Encoding: base64", "",
                                     base64.b64encode(b"smuggled attachment").decode(), ""]]),
          "a valid vc-request text part plus an extra attachment part",
          kind="forged-exception")
    clear("securejoin_html_part", securejoin("vc-request", [text_part("Secure-Join: vc-request\n", ctype="text/html")]),
          "the single part is text/html instead of text/plain",
          kind="forged-exception")
    clear("securejoin_not_multipart",
          securejoin("vc-request", text_part("Secure-Join: vc-request\n"), ctype=None),
          "a bare text/plain body instead of multipart/mixed",
          kind="forged-exception")
    clear("securejoin_vc_auth_required",
          securejoin("vc-auth-required", [text_part("Secure-Join: vc-auth-required\n")]),
          "vc-auth-required is a later handshake step: must be encrypted",
          kind="forged-exception")
    clear("securejoin_two_headers",
          securejoin("vc-request", [text_part("Secure-Join: vc-request\n")],
                     extra=["Secure-Join: vg-request"]),
          "two Secure-Join headers",
          kind="forged-exception")

    # -- Autocrypt Setup Message -----------------------------------------------------------
    secret = gpg.export(A, secret=True)
    setup = gpg.run("--symmetric", "--passphrase", "1234-5678-9012-3456-7890-1234-5678-9012-3456",
                    data=armor(secret, kind="PRIVATE KEY BLOCK").encode())
    setup_armor = armor(setup, headers=["Passphrase-Format: numeric9x4", "Passphrase-Begin: 12"])
    html = ["<!DOCTYPE html>", "<html><head><title>Autocrypt Setup Message</title></head><body>",
            "<h1>Autocrypt Setup Message</h1>",
            "<p>This is the Autocrypt Setup Message used to transfer your key.</p>",
            "<pre>", *setup_armor.rstrip("\n").split("\n"), "</pre></body></html>"]

    def asm(to, n_):
        return headers(to=to, subject="Autocrypt Setup Message", n=n_,
                       extra=["Autocrypt-Setup-Message: v1"]) + multipart(
            "multipart/mixed",
            [text_part("This message contains all information to transfer your Autocrypt "
                       "settings.\n"),
             ["Content-Type: application/autocrypt-setup",
              'Content-Disposition: attachment; filename="autocrypt-setup-message.html"',
              "", *html, ""]], boundary="asm-3c2b1a")

    clear("autocrypt_setup_to_self", asm(SENDER, next(n)),
          "Autocrypt Setup Message to oneself only: allowed outgoing, never incoming",
          outgoing="accept", incoming=523, kind="exception", rcpt_tos=[SENDER])
    clear("autocrypt_setup_to_other", asm(RECIPIENT, next(n)),
          "Autocrypt Setup Message to someone else: refused",
          kind="forged-exception")
    clear("autocrypt_setup_self_and_other", asm(f"{SENDER}, {RECIPIENT}", next(n)),
          "Autocrypt Setup Message to oneself and someone else: refused",
          kind="forged-exception", rcpt_tos=[SENDER, RECIPIENT])

    # -- delivery status reports -----------------------------------------------------------
    def dsn(sender, auto, report_type="delivery-status", n_=0):
        extra = ["Auto-Submitted: auto-replied"] if auto else []
        if report_type == "delivery-status":
            report = ["Content-Description: Delivery report",
                      "Content-Type: message/delivery-status", "",
                      "Reporting-MTA: dns; mx.example.net",
                      "Arrival-Date: Mon, 17 Nov 2025 10:00:01 +0000", "",
                      "Final-Recipient: rfc822; nobody@example.net",
                      "Original-Recipient: rfc822;nobody@example.net",
                      "Action: failed", "Status: 5.1.1",
                      "Remote-MTA: dns; mx.example.net",
                      "Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.net>: "
                      "Recipient address rejected: User unknown", ""]
        else:
            report = mdn
        return headers(sender=sender, subject="Undelivered Mail Returned to Sender", n=n_,
                       extra=extra) + multipart(
            "multipart/report",
            [["Content-Description: Notification",
              "Content-Type: text/plain; charset=us-ascii", "",
              "This is the mail system at host mx.example.net.", "",
              "I'm sorry to have to inform you that your message could not",
              "be delivered to one or more recipients.", ""],
             report,
             ["Content-Description: Undelivered Message Headers",
              "Content-Type: text/rfc822-headers", "",
              f"From: {RECIPIENT}", "To: nobody@example.net",
              "Subject: [...]", "Message-ID: <orig.2@_chat.example.test>", ""]],
            params=f" report-type={report_type};", boundary="dsn-5a4b3c")

    daemon = "Mail Delivery System <MAILER-DAEMON@mx.example.net>"
    clear("dsn_mailer_daemon", dsn(daemon, True, n_=next(n)),
          "delivery status report from MAILER-DAEMON with Auto-Submitted: allowed incoming "
          "(outgoing: From is not the sender)",
          outgoing=553, incoming="accept", kind="exception", mail_from="")
    clear("dsn_without_auto_submitted", dsn(daemon, False, n_=next(n)),
          "a MAILER-DAEMON delivery report without Auto-Submitted",
          outgoing=553, incoming=523, kind="forged-exception", mail_from="")
    clear("dsn_from_user", dsn(SENDER, True, n_=next(n)),
          "a delivery report with Auto-Submitted but from a normal address",
          kind="forged-exception")
    clear("mdn_from_mailer_daemon", dsn(daemon, True, report_type="disposition-notification",
                                        n_=next(n)),
          "MAILER-DAEMON with Auto-Submitted, but a disposition-notification (MDN), "
          "not a delivery status report",
          outgoing=553, incoming=523, kind="forged-exception", mail_from="")
    return corpus


def main() -> int:
    corpus = generate()
    corpus.write_manifest()
    print(f"wrote {len(corpus.cases)} cases to {CORPUS}")
    # cross-check against the filter, when it is importable
    sys.path.insert(0, str(CORPUS.parents[1]))
    try:
        from relay.filter.policy import check_incoming, check_outgoing
    except ImportError:
        return 0
    bad = 0
    for name in corpus.cases:
        mail_from, rcpts, data, entry = load_case(
            name, "k3x9q2m7a@_chat.example.test", "p8w2z4r1b@_chat.example.test")
        got = (verdict(check_outgoing(mail_from, rcpts, data)),
               verdict(check_incoming(mail_from, rcpts, data)))
        if got != (entry["outgoing"], entry["incoming"]):
            bad += 1
            print(f"  MISMATCH {name}: expected {(entry['outgoing'], entry['incoming'])}, got {got}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
