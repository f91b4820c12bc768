"""What a reference chatmail relay (chatmail/relay, deployed by cmdeploy) keeps on disk,
read from the paths of an archive of it. Pure functions; ``importrelay`` does the work.

Facts relied on, read in chatmail/relay at commit 48ad92bf (2026-08-20; also
/work/notes/reference-facts.md section E):

* Mailboxes: ``/home/vmail/mail/<domain>/`` (chatmaild ``config.py``: ``mailboxes_dir``
  defaults to ``/home/vmail/mail/<mail_domain>``; an IPv4-only relay uses the bare
  address as ``<domain>`` and ``user@[a.b.c.d]`` addresses). One directory per
  account, named by the address (``expire.py`` lists names containing ``@``);
  ``pending_notifications/`` beside them is a push retry queue (not imported).
* The account directory is itself the Maildir++ root (``dovecot.conf.j2``:
  ``mail_location = maildir:<mailboxes_dir>/%u``): ``cur/ new/ tmp/`` and
  ``.<Folder>/`` directly inside, next to Dovecot's ``dovecot-uidlist`` (UIDs and
  UIDVALIDITY: kept, so clients do not fetch everything again), ``dovecot-keywords``,
  ``dovecot-uidvalidity*``, ``subscriptions``, and caches we leave behind (index
  files, ``maildirsize`` of the maildir quota backend, ``dovecot.lda-dupes``).
  Since 2024-07-04 (commit 733b9604: ``mail_plugins = zlib``, ``zlib_save = gz``)
  messages are stored gzip-compressed; older ones are plain. Our Dovecot loads
  the zlib plugin, which reads both.
* ``password``: one line ``{SHA512-CRYPT}$6$...`` (``doveauth.py``
  ``encrypt_password``), the same form as our account files. Its mtime is the
  last login, rounded down to the UTC day (``user.py`` ``set_last_login_timestamp``).
  An empty file makes the account unusable there (``get_userdb_dict``).
* ``enforceE2EEincoming``: flag file; absent means the account accepted
  cleartext from outside (accounts older than 2025-04). ``DISABLED``: flag file
  of filtermail's experimental account blocking.
* ``metadata.json``: JSON object; key ``devicetoken`` maps push token -> unix time
  it was stored (a list of tokens in the legacy form); tokens older than 90 days
  or more than 60 s in the future are dropped on read (``metadata.py``).
* DKIM: cmdeploy runs ``opendkim-genkey -D /etc/dkimkeys -d <domain> -s opendkim``
  (``opendkim/deployer.py``): key ``/etc/dkimkeys/opendkim.private`` (PEM), named in
  ``/etc/dkimkeys/KeyTable`` as ``opendkim._domainkey.<d> <d>:opendkim:<path>``;
  the record it tells the operator to publish is
  ``v=DKIM1;k=rsa;p=<key>;s=email;t=s`` (``remote/rdns.py`` ``get_dkim_entry``).
* Settings: ``/usr/local/lib/chatmaild/chatmail.ini``, ``[params] mail_domain``.
"""

from __future__ import annotations

import configparser
import json
import re
from dataclasses import dataclass

# Maildir files of the account directory that carry state worth keeping.
KEEP_FILES = ("dovecot-uidlist", "dovecot-keywords", "subscriptions", "maildirfolder")
KEEP_PREFIXES = ("dovecot-uidvalidity",)
MESSAGE_DIRS = ("cur", "new")
TOKEN_MAX_AGE = 90 * 86400
TOKEN_MAX_FUTURE = 60
KEYTABLE_LINE = re.compile(r"^(\S+)\._domainkey\.(\S+)\s+(\S+):(\S+):(\S+)\s*$")


@dataclass(frozen=True)
class Member:
    """Where an archive path belongs.

    ``kind``: ``account`` (a file of an account directory; ``address`` and
    ``part`` say which: ``password``, ``e2ee``, ``disabled``, ``metadata``,
    ``maildir`` with ``maildir_path`` relative to the Maildir root and
    ``message`` True for a file in ``cur/`` or ``new/``, or ``skip``),
    ``dkim`` (``name`` is the file name below ``dkimkeys/``), ``ini``, or
    ``other`` (not part of what we import)."""
    kind: str
    address: str = ""
    domain_dir: str = ""
    part: str = ""
    maildir_path: tuple[str, ...] = ()
    message: bool = False
    name: str = ""


def bare_domain(domain: str) -> str:
    """The directory name the reference uses for a domain: ``[192.0.2.1]`` -> ``192.0.2.1``."""
    return domain[1:-1] if domain.startswith("[") and domain.endswith("]") else domain


def _maildir_entry(rest: list[str]) -> tuple[tuple[str, ...], bool] | None:
    """(path inside the Maildir, is a message) for what we keep; None for what we leave."""
    if not rest:
        return (), False
    folder: list[str] = []
    if rest[0].startswith(".") and len(rest[0]) > 1:
        folder, rest = [rest[0]], rest[1:]
        if not rest:
            return tuple(folder), False
    head = rest[0]
    if head in MESSAGE_DIRS:
        return tuple(folder + rest), len(rest) == 2
    if len(rest) == 1 and (head in KEEP_FILES or head.startswith(KEEP_PREFIXES)):
        return tuple(folder + rest), False
    return None  # tmp/, index files, quota file, locks, rawlogs


def _account_part(rest: list[str]) -> Member | None:
    names = {"password": "password", "enforceE2EEincoming": "e2ee", "DISABLED": "disabled",
             "metadata.json": "metadata"}
    if len(rest) == 1 and rest[0] in names:
        return Member("account", part=names[rest[0]])
    entry = _maildir_entry(rest)
    if entry is None:
        return Member("account", part="skip")
    return Member("account", part="maildir", maildir_path=entry[0], message=entry[1])


def classify(path: str) -> Member:
    """Where the archive member ``path`` (``home/vmail/mail/<d>/<addr>/cur/...``, any
    prefix) belongs. Raises ValueError for an absolute path or one with ``..``."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if path.startswith("/") or ".." in parts:
        raise ValueError(f"unsafe path in the archive: {path}")
    for i in range(1, len(parts)):
        local, at, domain = parts[i].rpartition("@")
        if at and local and bare_domain(domain) == parts[i - 1]:
            part = _account_part(parts[i + 1:])
            assert part is not None
            return Member("account", address=parts[i], domain_dir=parts[i - 1], part=part.part,
                          maildir_path=part.maildir_path, message=part.message)
    if len(parts) >= 2 and parts[-2] == "dkimkeys":
        return Member("dkim", name=parts[-1])
    if parts and parts[-1] == "chatmail.ini":
        return Member("ini")
    return Member("other")


def parse_password(text: str) -> str | None:
    """The stored hash (``{SCHEME}...``, as Dovecot reads it), or None for an empty
    or malformed file (an unusable account on the reference relay too)."""
    value = text.strip()
    if "\n" in value or not re.match(r"^\{[A-Z0-9.-]+\}\S+$", value):
        return None
    return value


def parse_tokens(data: bytes, now: float) -> dict[str, int]:
    """Push tokens of ``metadata.json`` -> unix time stored, without those the
    reference would drop (older than 90 days, from the future). A legacy list of
    tokens counts as stored ``now`` (as the reference converts it)."""
    try:
        tokens = json.loads(data).get("devicetoken", {})
    except (ValueError, AttributeError):
        return {}
    if isinstance(tokens, list):
        tokens = {t: int(now) for t in tokens}
    if not isinstance(tokens, dict):
        return {}
    return {t: int(ts) for t, ts in tokens.items()
            if isinstance(t, str) and isinstance(ts, (int, float)) and not isinstance(ts, bool)
            and now - TOKEN_MAX_AGE < ts < now + TOKEN_MAX_FUTURE}


def parse_keytable(text: str, domain: str) -> tuple[str, str] | None:
    """(selector, key file name) of the OpenDKIM KeyTable entry for ``domain``, or None."""
    for line in text.splitlines():
        match = KEYTABLE_LINE.match(line.strip())
        if match and match.group(3).lower() == domain.lower():
            return match.group(4), match.group(5).rsplit("/", 1)[-1]
    return None


def keytable_domains(text: str) -> set[str]:
    """Every signing domain named in an OpenDKIM KeyTable."""
    return {m.group(3).lower() for m in map(KEYTABLE_LINE.match, map(str.strip, text.splitlines()))
            if m}


def parse_ini_domain(text: str) -> str | None:
    """``mail_domain`` of chatmail.ini's ``[params]`` section, or None."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
        return parser.get("params", "mail_domain").strip().lower() or None
    except (configparser.Error, KeyError):
        return None


def cmdeploy_record(p: str) -> str:
    """The DKIM TXT value cmdeploy tells an operator to publish for the key ``p``."""
    return f"v=DKIM1;k=rsa;p={p};s=email;t=s"
