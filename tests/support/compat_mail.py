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


def tokens_in_mailbox(relay, address: str) -> dict[str, tuple[bytes, float]]:
    """token -> (the stored message's bytes, uncompressed: Dovecot stores mail gzip-compressed;
    the file's modification time as a Unix time: when Dovecot wrote it), for every message with
    a compat token in the mailbox."""
    import subprocess

    from relaytest import DOCKER
    script = (f"cd /data/mail/{address}/Maildir 2>/dev/null && zgrep -l 'compat-' new/* cur/* "
              "2>/dev/null | while read f; do printf '\\n=== %s\\n' \"$(stat -c %.3Y \"$f\")\"; "
              "zcat -f \"$f\"; done; true")
    out = subprocess.run([DOCKER, "exec", relay.name, "sh", "-c", script], capture_output=True,
                         timeout=60, check=True).stdout
    found = {}
    for chunk in out.split(b"\n=== ")[1:]:
        mtime, _, data = chunk.partition(b"\n")
        for word in data.split(b"<"):
            if word.startswith(b"compat-") and b"@compat.test>" in word:
                found[word.split(b"@")[0].decode()] = (data, float(mtime))
    return found


def bounce_lines(log: str, addresses: list[str]) -> list[str]:
    """Postfix's bounced/deferred delivery lines for any of ``addresses``."""
    return [line for line in log.splitlines()
            if any(a in line for a in addresses)
            and ("status=bounced" in line or "status=deferred" in line)]


def accounts(relay, n: int) -> list[dict]:
    """``n`` new accounts of ``relay``, each created by a first SMTP login (no message,
    so none of them has used its send rate budget)."""
    import smtplib

    from relaytest import insecure_tls
    made = [relay.new_account() for _ in range(n)]
    for acct in made:
        with smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(),
                              timeout=30) as smtp:
            smtp.login(acct["email"], acct["password"])
    return made
