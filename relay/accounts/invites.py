"""Single-use invites for REGISTRATION=invite.

An invite is a random token of TOKEN_LENGTH lowercase letters and digits. The
relay keeps only the token's SHA-256 as a file name below /data/invites, and in
the file the time the invite expires; the token itself appears only in what
``relayctl invite`` prints. Using an invite deletes its file (``claim``): of two
clients that use one token at the same moment exactly one succeeds, because
only one ``unlink`` of a file can succeed. Nothing links an invite to the account
it made: the file is gone before the account exists, and no log line names both.

The token travels in the URL that Delta Chat POSTs to, ``DCACCOUNT:https://<domain>/new?invite=<token>``
(the core POSTs to the URL as given, query included: chatmail/core
``src/qr.rs`` ``login_param_from_account_qr``). A client that creates its account
by its first login (no ``/new``) puts the token in front of its password.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import string
import time
from pathlib import Path
from urllib.parse import parse_qs

from relay import paths

TOKEN_LENGTH = 24                      # about 124 bits of [a-z0-9]
TOKEN_ALPHABET = string.ascii_lowercase + string.digits
TOKEN_RE = re.compile(rf"^[a-z0-9]{{{TOKEN_LENGTH}}}$")
MAX_VALID = 365 * 86400                # seconds
MAX_COUNT = 1000                       # invites made by one command
_DURATION = re.compile(r"^(\d+)\s*([smhdw]?)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}


def parse_duration(text: str) -> int:
    """``7d``, ``12h``, ``30m``, ``2w``, ``90s`` or a bare number of days -> seconds
    (1 s .. MAX_VALID). Raises ValueError with a sentence for anything else."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 7d, 12h or 30m")
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if not 1 <= seconds <= MAX_VALID:
        raise ValueError("an invite is valid for 1 second to 365 days")
    return seconds


def _dir(root: Path | None) -> Path:
    return paths.INVITES if root is None else root  # looked up at call time: tests move it


def _name(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue(count: int, valid: int, now: float | None = None, root: Path | None = None,
          owner: tuple[int, int] | None = None) -> list[str]:
    """Make ``count`` new invites valid for ``valid`` seconds; return their tokens.
    ``owner`` (uid, gid) is given to each file (relayctl runs as root; relay-auth
    reads and deletes them)."""
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"from 1 to {MAX_COUNT} invites at a time")
    expires = int((time.time() if now is None else now) + valid)
    tokens = []
    for _ in range(count):
        token = "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))
        tmp = _dir(root) / f".{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{expires}\n")
        if owner is not None:
            os.chown(tmp, *owner)
        os.rename(tmp, _dir(root) / _name(token))
        tokens.append(token)
    return tokens


def _expiry(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except FileNotFoundError:
        return None
    except ValueError:
        return 0.0  # unreadable: treated as expired


def valid(token: str, now: float | None = None, root: Path | None = None) -> bool:
    """Whether ``token`` names an unused invite that has not expired (nothing changes)."""
    if not TOKEN_RE.match(token):
        return False
    expiry = _expiry(_dir(root) / _name(token))
    return expiry is not None and expiry > (time.time() if now is None else now)


def claim(token: str, now: float | None = None, root: Path | None = None) -> str:
    """Use the invite ``token``: ``"ok"`` exactly once for a valid token (its file is
    deleted), else ``"expired"`` (also deleted) or ``"unknown"`` (never made, already
    used, or mistyped). Safe against concurrent claims of one token: one ``unlink``
    wins, every other caller gets ``"unknown"``."""
    if not TOKEN_RE.match(token):
        return "unknown"
    path = _dir(root) / _name(token)
    expiry = _expiry(path)
    if expiry is None:
        return "unknown"
    try:
        path.unlink()
    except FileNotFoundError:
        return "unknown"  # another client claimed it a moment ago
    return "ok" if expiry > (time.time() if now is None else now) else "expired"


def _entries(root: Path | None) -> list[os.DirEntry]:
    """The files of the invite directory (none when it does not exist yet)."""
    try:
        return list(os.scandir(_dir(root)))
    except FileNotFoundError:
        return []


def sweep(now: float | None = None, root: Path | None = None) -> int:
    """Delete the files of expired invites (and of interrupted writes); return how many."""
    now = time.time() if now is None else now
    removed = 0
    for entry in _entries(root):
        path = Path(entry.path)
        try:
            if entry.name.startswith("."):
                if now - entry.stat().st_mtime > 60:  # an interrupted issue()
                    path.unlink()
            elif (_expiry(path) or now) <= now:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # claimed meanwhile
    return removed


def count(now: float | None = None, root: Path | None = None) -> int:
    """How many unused invites are still valid."""
    now = time.time() if now is None else now
    return sum(1 for e in _entries(root)
               if not e.name.startswith(".") and (_expiry(Path(e.path)) or 0) > now)


def revoke_all(root: Path | None = None) -> int:
    """Delete every unused invite; return how many there were."""
    removed = 0
    for entry in _entries(root):
        try:
            os.unlink(entry.path)
            removed += not entry.name.startswith(".")
        except FileNotFoundError:
            pass
    return removed


def token_from_query(query: str) -> str:
    """The invite token of a ``/new`` request's query string: ``invite=<token>``, or
    the bare query (``/new?<token>``, the form of the reference relay's proposal,
    chatmail/relay PR #600). Empty when there is none."""
    if "=" in query:
        return parse_qs(query).get("invite", [""])[0].strip().lower()
    return query.strip().lower()


def split_password(password: str) -> tuple[str, str]:
    """A first login's password in invite mode: the token, then the password proper.
    Returns (token, rest); the token part is empty when the password is too short."""
    if len(password) <= TOKEN_LENGTH:
        return "", password
    return password[:TOKEN_LENGTH].lower(), password[TOKEN_LENGTH:]


def dcaccount_url(domain: str, token: str) -> str:
    """What an invite's QR code says: Delta Chat POSTs to the https URL after the scheme."""
    return f"DCACCOUNT:https://{domain}/new?invite={token}"


def web_link(domain: str, token: str) -> str:
    """An https link for messengers and mail: a browser that opens it is sent on to the
    ``dcaccount:`` URL, which opens Delta Chat."""
    return f"https://{domain}/new?invite={token}"
