"""TURN for calls: the shared secret and the time-limited credentials clients get.

coturn runs with ``use-auth-secret``: it accepts any username that is a unix
time in the future, when the password is base64(HMAC-SHA1(secret, username))
(the "TURN REST API" scheme). relay.notify.metadata hands such credentials out in the
``/shared/vendor/deltachat/turn`` metadata entry as
``<host>:<port>:<username>:<password>``. Delta Chat reads the username as the
expiry time and asks again when less than 12 hours are left, so the username
is the bare expiry time (no ``:`` in it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pwd
import secrets
import time
from pathlib import Path

PORT = 3478
TTL = 3 * 86400  # credentials stay valid this long


def credentials(secret: str, now: float | None = None, ttl: int = TTL) -> tuple[str, str]:
    """(username, password) valid until ``now + ttl``."""
    expiry = int(time.time() if now is None else now) + ttl
    username = str(expiry)
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def host_for(domain: str) -> str | None:
    """The host clients reach the TURN server at, or None when the metadata
    format cannot carry it (an IPv6 literal has colons of its own)."""
    if domain.startswith("["):
        inner = domain[1:-1]
        return None if ":" in inner else inner
    return domain


def metadata_value(domain: str, secret: str, now: float | None = None) -> str | None:
    """The ``turn`` metadata entry ``<host>:3478:<username>:<password>`` with credentials valid for
    TTL seconds from ``now`` (default the clock); None without a secret or for an IPv6 literal
    domain (its colons would break the format).
    """
    host = host_for(domain)
    if host is None or not secret:
        return None
    username, password = credentials(secret, now)
    return f"{host}:{PORT}:{username}:{password}"


def ensure_secret(path: Path, owner: str = "relaypush") -> str:
    """The shared secret, made on first start: 0600, readable by relay.notify.metadata only
    (coturn gets it through its configuration file, rendered by root)."""
    try:
        secret = path.read_text().strip()
    except FileNotFoundError:
        secret = ""
    if not secret:
        tmp = path.with_name(path.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        os.replace(tmp, path)
        secret = path.read_text().strip()
    entry = pwd.getpwnam(owner)
    st = path.stat()
    if (st.st_uid, st.st_gid) != (entry.pw_uid, entry.pw_gid):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    if st.st_mode & 0o777 != 0o600:
        os.chmod(path, 0o600)
    return secret


def read_secret(path: Path) -> str:
    """The TURN secret stored at ``path`` (stripped), or "" when the file does not exist."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""
