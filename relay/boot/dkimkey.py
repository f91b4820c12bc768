"""The DKIM signing key: made once on the data volume, readable only by OpenDKIM."""

from __future__ import annotations

import base64
import logging
import os
import pwd
import subprocess
from pathlib import Path

from relay import paths

log = logging.getLogger("relay.dkim")

SELECTOR = "chatmail"
KEY = paths.DKIM / f"{SELECTOR}.private"


def ensure_key() -> None:
    """Make the 2048-bit RSA DKIM signing key ``KEY`` on /data once (openssl genrsa, created with
    umask 077, owned by opendkim, mode 0600, put in place atomically); an existing key is kept.
    Raises subprocess.CalledProcessError when openssl fails.
    """
    if KEY.exists():
        return
    log.info("making the DKIM key %s", KEY)
    tmp = KEY.with_suffix(".new")
    old_umask = os.umask(0o077)
    try:
        subprocess.run(["openssl", "genrsa", "-out", str(tmp), "2048"], check=True,
                       capture_output=True)
    finally:
        os.umask(old_umask)
    opendkim = pwd.getpwnam("opendkim")
    os.chown(tmp, opendkim.pw_uid, opendkim.pw_gid)
    os.chmod(tmp, 0o600)
    os.replace(tmp, KEY)


def public_key_b64() -> str:
    """The DER SubjectPublicKeyInfo of ``KEY``, base64: the ``p=`` tag of the DKIM key record (RFC
    6376 §3.6.1). Raises subprocess.CalledProcessError when the key cannot be read.
    """
    der = subprocess.run(["openssl", "rsa", "-in", str(KEY), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return base64.b64encode(der).decode()


def txt_record_value() -> str:
    """The TXT record to publish at ``chatmail._domainkey.<domain>``: ``"v=DKIM1; k=rsa;
    p=<base64>"`` (RFC 6376 §3.6.1).
    """
    return f"v=DKIM1; k=rsa; p={public_key_b64()}"


def write_public_record(path: Path) -> None:
    """Write the DKIM TXT record value to ``path`` (mode 0644): the public half, for
    helpers that may not read the key (the metrics exporter compares it with DNS)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(txt_record_value() + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
