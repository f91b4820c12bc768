"""An archive of a reference chatmail relay's state, built from its documented layout.

What `tar czf state.tar.gz -C / home/vmail/mail etc/dkimkeys usr/local/lib/chatmaild`
gives on a host deployed by cmdeploy (chatmail/relay; facts and sources in
relay/store/refrelay.py and /work/notes/reference-facts.md section E):

    home/vmail/mail/<domain>/<address>/password          {SHA512-CRYPT}$6$<salt>$<hash>; mtime = last login day
    home/vmail/mail/<domain>/<address>/enforceE2EEincoming
    home/vmail/mail/<domain>/<address>/DISABLED           (rare)
    home/vmail/mail/<domain>/<address>/metadata.json      {"devicetoken": {<token>: <unix time>}} (or a list)
    home/vmail/mail/<domain>/<address>/{cur,new,tmp}/...  the Maildir root is the account directory
    home/vmail/mail/<domain>/<address>/.DeltaChat/...     a Maildir++ folder
    home/vmail/mail/<domain>/<address>/dovecot-uidlist    "3 V<uidvalidity> N<next uid> G<guid>", "<uid> :<name>"
    home/vmail/mail/<domain>/<address>/dovecot.index*, maildirsize, ...   Dovecot's caches
    home/vmail/mail/<domain>/pending_notifications/<uuid>
    etc/dkimkeys/opendkim.private, opendkim.txt, KeyTable, SigningTable
    usr/local/lib/chatmaild/chatmail.ini

Messages are real encrypted messages of the filter corpus (tests/corpus), stored as
Dovecot's LMTP stores them (Return-Path and Delivered-To added, LF line ends), some
gzip-compressed (as the reference's zlib_save = gz does since 2024-07), some plain.
Nothing here is taken from the reference's code.

    python3 tests/support/refrelay_fixture.py DOMAIN OUT.tar.gz   # writes one and prints its accounts
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import secrets
import string
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpus_tools  # noqa: E402

DAY = 86400
ENCRYPTED_CASES = ("enc_one_pkesk.eml", "enc_two_pkesk.eml", "enc_pkesk_skesk.eml",
                   "enc_new_format_headers.eml", "enc_armor_version.eml")
OLD_VMAIL_UID = 999  # whatever the old host had: the importer must not care


@dataclass
class Message:
    folder: str            # "" for INBOX, else ".DeltaChat" etc.
    sub: str               # "cur" or "new"
    name: str              # the Maildir file name, flags included
    stored: bytes          # as Dovecot stores it (LF line ends), uncompressed
    compressed: bool
    mtime: int
    uid: int

    @property
    def wire(self) -> bytes:
        """As IMAP hands it out (CRLF)."""
        return self.stored.replace(b"\n", b"\r\n")


@dataclass
class Account:
    address: str
    password: str
    last_login: int                 # day-rounded unix time (the password file's mtime)
    e2ee_flag: bool = True
    disabled: bool = False
    tokens: dict | list | None = None
    messages: list[Message] = field(default_factory=list)
    empty_password: bool = False
    uidvalidity: int = 0


@dataclass
class Fixture:
    domain: str
    accounts: list[Account]
    selector: str
    key_pem: bytes
    public_key_b64: str
    archive: Path

    def account(self, address: str) -> Account:
        return next(a for a in self.accounts if a.address == address)

    @property
    def published_record(self) -> str:
        """The DKIM TXT value cmdeploy told the old relay's operator to publish."""
        return f"v=DKIM1;k=rsa;p={self.public_key_b64};s=email;t=s"


def _random(n: int, alphabet: str = string.ascii_lowercase + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def sha512_crypt(password: str) -> str:
    """``{SHA512-CRYPT}$6$<16-char salt>$<hash>`` (crypt(3), default rounds), made by openssl."""
    salt = _random(16, string.ascii_letters + string.digits + "./")
    out = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out.startswith(f"$6${salt}$"), out
    return "{SHA512-CRYPT}" + out


def dkim_key(pkcs1: bool = False, bits: int = 2048) -> tuple[bytes, str]:
    """(PEM private key, base64 SubjectPublicKeyInfo); PKCS#8 as opendkim-genkey writes it on
    Debian 12 (OpenSSL 3), or the older PKCS#1 ``BEGIN RSA PRIVATE KEY`` form."""
    args = ["openssl", "genrsa"] + (["-traditional"] if pkcs1 else []) + [str(bits)]
    pem = subprocess.run(args, capture_output=True, check=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem,
                         capture_output=True, check=True).stdout
    return pem, base64.b64encode(der).decode()


def delivered(case: str, sender: str, address: str) -> bytes:
    """A corpus message as Dovecot LMTP stores it for ``address``."""
    _, _, data, _ = corpus_tools.load_case(case, sender, address)
    head = f"Return-Path: <{sender}>\r\nDelivered-To: {address}\r\n".encode()
    return (head + data).replace(b"\r\n", b"\n")


def _message(folder: str, sub: str, stored: bytes, compressed: bool, mtime: int, uid: int,
             flags: str = "S") -> Message:
    unique = f"{mtime}.M{secrets.randbelow(999999)}P{secrets.randbelow(99999)}.oldhost"
    # S= is the message's size uncompressed, W= its size with CRLF line ends
    vsize = len(stored) + stored.count(b"\n")
    name = f"{unique},S={len(stored)},W={vsize}"
    if sub == "cur":
        name += f":2,{flags}"
    return Message(folder, sub, name, stored, compressed, mtime, uid)


def default_accounts(domain: str, now: int) -> list[Account]:
    """alice: mail in INBOX (gzip and plain, cur and new) and .DeltaChat, push tokens;
    bob: one plain message, no enforceE2EEincoming (an account from before 2025-04), legacy
    token list; carol: no mail, DISABLED; dave: empty password file (unusable)."""
    today = now // DAY * DAY
    names = [_random(9) for _ in range(4)]
    alice, bob, carol, dave = (f"{n}@{domain}" for n in names)
    peer = f"{_random(9)}@other.example"
    msgs = [
        _message("", "cur", delivered(ENCRYPTED_CASES[0], peer, alice), True, now - 3 * DAY, 1),
        _message("", "cur", delivered(ENCRYPTED_CASES[1], peer, alice), False, now - 2 * DAY, 2, ""),
        _message("", "new", delivered(ENCRYPTED_CASES[2], peer, alice), True, now - 3600, 3),
        _message(".DeltaChat", "cur", delivered(ENCRYPTED_CASES[3], peer, alice), True,
                 now - DAY, 1),
    ]
    return [
        Account(alice, _random(20), today - 2 * DAY, tokens=dict(zip(
            (f"openpgp:{_random(40)}", f"openpgp:{_random(40)}"), (now - 5 * DAY, now - 200 * DAY))),
            messages=msgs, uidvalidity=1700000123),
        Account(bob, _random(20), today - 30 * DAY, e2ee_flag=False,
                tokens=[f"openpgp:{_random(40)}"], uidvalidity=1700000456, messages=[
                    _message("", "cur", delivered(ENCRYPTED_CASES[4], peer, bob), False,
                             now - 4 * DAY, 7)]),
        Account(carol, _random(20), today - 10 * DAY, disabled=True),
        Account(dave, _random(20), today - 5 * DAY, empty_password=True),
    ]


class _Tar:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.dirs: set[str] = set()

    def add(self, name: str, data: bytes | None, mtime: float, mode: int = 0o600,
            link: str | None = None) -> None:
        parent = name.rsplit("/", 1)[0]
        parts = parent.split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, int(mtime)
                info.uid = info.gid = OLD_VMAIL_UID
                info.uname = info.gname = "vmail"
                self.tar.addfile(info)
        info = tarfile.TarInfo(name)
        info.mode, info.mtime, info.uid, info.gid = mode, int(mtime), OLD_VMAIL_UID, OLD_VMAIL_UID
        info.uname = info.gname = "vmail"
        if link is not None:
            info.type, info.linkname = tarfile.LNKTYPE, link
            self.tar.addfile(info)
            return
        info.size = len(data or b"")
        self.tar.addfile(info, io.BytesIO(data or b""))


def _add_account(t: _Tar, base: str, a: Account, now: int) -> None:
    home = f"{base}/{a.address}"
    t.add(f"{home}/password", b"" if a.empty_password else sha512_crypt(a.password).encode(),
          a.last_login)
    t.add(f"{home}/password.lock", b"", a.last_login)
    if a.e2ee_flag:
        t.add(f"{home}/enforceE2EEincoming", b"", a.last_login)
    if a.disabled:
        t.add(f"{home}/DISABLED", b"", now)
    if a.tokens is not None:
        t.add(f"{home}/metadata.json", json.dumps({"devicetoken": a.tokens}).encode(), now)
    for m in a.messages:
        folder = f"{home}/{m.folder}" if m.folder else home
        data = gzip.compress(m.stored) if m.compressed else m.stored
        t.add(f"{folder}/{m.sub}/{m.name}", data, m.mtime)
    if a.messages:
        _add_dovecot_files(t, home, a, now)


def _add_dovecot_files(t: _Tar, home: str, a: Account, now: int) -> None:
    inbox = [m for m in a.messages if not m.folder]
    lines = [f"3 V{a.uidvalidity} N{max(m.uid for m in inbox) + 1} G{secrets.token_hex(16)}"]
    lines += [f"{m.uid} :{m.name.split(':')[0]}" for m in sorted(inbox, key=lambda m: m.uid)]
    t.add(f"{home}/dovecot-uidlist", ("\n".join(lines) + "\n").encode(), now)
    t.add(f"{home}/dovecot-uidvalidity", f"{a.uidvalidity:x}".encode(), now)
    t.add(f"{home}/subscriptions", b"V\t2\n\nDeltaChat\n", now)
    # caches a reference relay has beside the mail, which the importer leaves behind
    t.add(f"{home}/dovecot.index.log", secrets.token_bytes(300), now)
    t.add(f"{home}/dovecot.list.index.log", secrets.token_bytes(100), now)
    t.add(f"{home}/maildirsize", b"524288000S\n1234 1\n", now)
    t.add(f"{home}/tmp/{now}.M1P1.oldhost", b"half a message", now)
    # a message Dovecot hard-linked when the user copied it to a folder
    first = inbox[0]
    t.add(f"{home}/.DeltaChat/cur/{first.name}", None, first.mtime,
          link=f"{home}/cur/{first.name}")
    t.add(f"{home}/.DeltaChat/maildirfolder", b"", now)


def build(domain: str, out: Path, accounts: list[Account] | None = None,
          selector: str = "opendkim", pkcs1_key: bool = False, with_ini: bool = True,
          ini_domain: str | None = None, now: int | None = None) -> Fixture:
    """Write the archive (tar.gz) to ``out``; the returned Fixture says what is in it."""
    now = int(time.time()) if now is None else now
    accounts = default_accounts(domain, now) if accounts is None else accounts
    pem, pub = dkim_key(pkcs1_key)
    bare = domain.strip("[]")
    base = f"home/vmail/mail/{bare}"
    with tarfile.open(out, "w:gz") as tar:
        t = _Tar(tar)
        for a in accounts:
            _add_account(t, base, a, now)
        t.add(f"{base}/pending_notifications/{secrets.token_hex(16)}",
              f"{accounts[0].address}\n{now}\nopenpgp:x\n".encode(), now)
        keys = "etc/dkimkeys"
        t.add(f"{keys}/{selector}.private", pem, now - 400 * DAY)
        t.add(f"{keys}/{selector}.txt", f'{selector}._domainkey IN TXT ( "v=DKIM1; h=sha256; '
              f'k=rsa; " "p={pub}" )\n'.encode(), now - 400 * DAY, 0o644)
        t.add(f"{keys}/KeyTable", f"{selector}._domainkey.{bare} {bare}:{selector}:/etc/dkimkeys/"
              f"{selector}.private\n".encode(), now, 0o644)
        t.add(f"{keys}/SigningTable", f"*@{bare} {selector}._domainkey.{bare}\n".encode(), now,
              0o644)
        if with_ini:
            t.add("usr/local/lib/chatmaild/chatmail.ini",
                  f"[params]\nmail_domain = {ini_domain or bare}\nmax_user_send_per_minute = 60\n"
                  .encode(), now, 0o644)
    return Fixture(domain, accounts, selector, pem, pub, out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: refrelay_fixture.py DOMAIN OUT.tar.gz")
    fx = build(sys.argv[1], Path(sys.argv[2]))
    for a in fx.accounts:
        print(a.address, a.password, f"{len(a.messages)} messages")
    print(f"DKIM {fx.selector}._domainkey.{fx.domain} TXT {fx.published_record}")
