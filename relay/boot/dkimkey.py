"""The DKIM signing key: made once on the data volume, readable only by OpenDKIM.

A new relay signs with selector ``chatmail`` and the key
``/data/dkim/chatmail.private``. A relay that took over a reference relay's key
(``relayctl import-relay``) keeps that relay's selector, so the DKIM record in
DNS stays as it was: ``/data/dkim/selector`` then names it (one line, e.g.
``opendkim``), the key is ``/data/dkim/<selector>.private``, and
``/data/dkim/<selector>.record`` holds the TXT value the old relay published
(cmdeploy writes ``v=DKIM1;k=rsa;p=...;s=email;t=s``), which ``relayctl dns``
prints as it is as long as its ``p=`` is this key.
"""

from __future__ import annotations

import base64
import logging
import os
import pwd
import re
import subprocess
from pathlib import Path

from relay import paths

log = logging.getLogger("relay.dkim")

DEFAULT_SELECTOR = "chatmail"
SELECTOR_FILE = paths.DKIM / "selector"
# RFC 6376 3.1: a selector is one or more DNS labels.
_LABEL = r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?"
SELECTOR_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$", re.IGNORECASE)


def valid_selector(text: str) -> bool:
    """True for a selector made of DNS labels (RFC 6376 section 3.1)."""
    return len(text) <= 253 and bool(SELECTOR_RE.match(text))


def selector(root: Path = paths.DKIM) -> str:
    """The selector in use: the one stored by an import, else ``chatmail``."""
    try:
        stored = (root / SELECTOR_FILE.name).read_text().strip()
    except (FileNotFoundError, PermissionError):
        return DEFAULT_SELECTOR
    return stored if valid_selector(stored) else DEFAULT_SELECTOR


def key_path(root: Path = paths.DKIM) -> Path:
    """The private key OpenDKIM signs with (PEM, PKCS#1 or PKCS#8)."""
    return root / f"{selector(root)}.private"


def ensure_key() -> None:
    """Make the 2048-bit RSA DKIM signing key ``key_path()`` on /data once (openssl genrsa,
    created with umask 077, owned by opendkim, mode 0600, put in place atomically); an existing
    key (ours or an imported one) is kept. Raises subprocess.CalledProcessError when openssl
    fails."""
    key = key_path()
    if key.exists():
        return
    log.info("making the DKIM key %s", key)
    tmp = key.with_suffix(".new")
    old_umask = os.umask(0o077)
    try:
        subprocess.run(["openssl", "genrsa", "-out", str(tmp), "2048"], check=True,
                       capture_output=True)
    finally:
        os.umask(old_umask)
    opendkim = pwd.getpwnam("opendkim")
    os.chown(tmp, opendkim.pw_uid, opendkim.pw_gid)
    os.chmod(tmp, 0o600)
    os.replace(tmp, key)


def public_key_b64(key: Path | None = None) -> str:
    """The DER SubjectPublicKeyInfo of the RSA private key ``key`` (default: the key in use),
    base64: the ``p=`` tag of the DKIM key record (RFC 6376 §3.6.1). Raises
    subprocess.CalledProcessError when the file is no RSA key openssl can read."""
    der = subprocess.run(["openssl", "rsa", "-in", str(key or key_path()), "-pubout",
                          "-outform", "DER"], check=True, capture_output=True).stdout
    return base64.b64encode(der).decode()


def record_p(value: str) -> str:
    """The ``p=`` tag of a DKIM TXT value, whitespace removed ('' when absent)."""
    for tag in value.split(";"):
        name, _, tag_value = tag.partition("=")
        if name.strip() == "p":
            return "".join(tag_value.split())
    return ""


def txt_record_value() -> str:
    """The TXT record to publish at ``<selector>._domainkey.<domain>``: the value an imported
    relay published (``<selector>.record``) when its ``p=`` is the key in use, else ours,
    ``"v=DKIM1; k=rsa; p=<base64>"`` (RFC 6376 §3.6.1)."""
    p = public_key_b64()
    try:
        published = (paths.DKIM / f"{selector()}.record").read_text().strip()
    except FileNotFoundError:
        published = ""
    if published and record_p(published) == p:
        return published
    return f"v=DKIM1; k=rsa; p={p}"


def write_public_record(path: Path) -> None:
    """Write ``<selector> <TXT record value>`` to ``path`` (mode 0644): the public half,
    for helpers that may not read /data/dkim (the metrics exporter compares it with DNS).
    Start-up writes it, and an import that changes the key or selector again."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(f"{selector()} {txt_record_value()}\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
