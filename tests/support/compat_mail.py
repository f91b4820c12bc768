"""Messages and mailbox checks shared by the compatibility tests (issue 17):
encrypted messages under any header lines, found again in a mailbox by a token."""

from __future__ import annotations

import base64
import os

import corpus_tools as ct

EXTERNAL = "carol.q@[192.0.2.1]"  # another server's user; IP relays are exempt from DKIM
_, _, TEMPLATE, _ = ct.load_case("enc_one_pkesk.eml", "s@x", "r@x")
_HEAD, ENC_BODY = TEMPLATE.split(b"\r\n\r\n", 1)
ENC_HEADERS = [h for h in _HEAD.split(b"\r\n") if h.lower().startswith((b"mime-", b"content-"))]


def message(token: str, head: list[bytes], eol: bytes = b"\r\n") -> bytes:
    """An encrypted message (the corpus' gpg output) under the given header lines, with
    ``token`` in its Message-ID, every line ended by ``eol``."""
    lines = [*head, f"Message-ID: <{token}@compat.test>".encode(),
             b"Date: Mon, 17 Nov 2025 10:00:00 +0000", *ENC_HEADERS]
    return eol.join(lines) + eol + eol + ENC_BODY.replace(b"\r\n", eol)


def big_message(token: str, head: list[bytes], size: int) -> bytes:
    """A valid OpenPGP/MIME message of about ``size`` bytes: the corpus' PKESK and one
    large SEIPD packet (random bytes: the relay never decrypts), armored without the
    optional CRC line."""
    pre, _, rest = ENC_BODY.partition(b"-----BEGIN PGP MESSAGE-----")
    armored, _, post = rest.partition(b"-----END PGP MESSAGE-----\r\n")
    pkesk = ct.parse_packets(ct.unarmor(
        "-----BEGIN PGP MESSAGE-----" + armored.decode() + "-----END PGP MESSAGE-----"))[0]
    small = message(token, head)
    filler = int((size - len(small)) * 3 / 4 * 76 / 78)  # base64, 76 characters + CRLF a line
    stream = ct.encode_packet(1, pkesk.body) + ct.encode_packet(18, b"\x01" + os.urandom(filler))
    b64 = base64.b64encode(stream)
    lines = [b64[i:i + 76] for i in range(0, len(b64), 76)]
    body = pre + b"\r\n".join([b"-----BEGIN PGP MESSAGE-----", b"", *lines,
                               b"-----END PGP MESSAGE-----", b""]) + post
    return small.partition(b"\r\n\r\n")[0] + b"\r\n\r\n" + body


def tokens_in_mailbox(relay, address: str) -> dict[str, bytes]:
    """token -> the stored file's bytes, for every message with a compat token."""
    out = relay.exec("sh", "-c", f"cd /data/mail/{address}/Maildir 2>/dev/null && "
                                 "grep -l 'compat-' new/* cur/* 2>/dev/null | while read f; do "
                                 "echo \"=== $f\"; cat \"$f\"; done; true")
    found = {}
    for chunk in out.stdout.split("=== ")[1:]:
        text = chunk.split("\n", 1)[1]
        for word in text.split("<"):
            if word.startswith("compat-") and "@compat.test>" in word:
                found[word.split("@")[0]] = text.encode("utf-8", "surrogateescape")
    return found


def bounce_lines(log: str, addresses: list[str]) -> list[str]:
    """Postfix's bounced/deferred delivery lines for any of ``addresses``."""
    return [line for line in log.splitlines()
            if any(a in line for a in addresses)
            and ("status=bounced" in line or "status=deferred" in line)]
