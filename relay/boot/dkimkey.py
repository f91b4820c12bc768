"""The DKIM signing key: made once on the data volume, readable only by OpenDKIM."""

from __future__ import annotations

import base64
import logging
import os
import pwd
import subprocess

from relay import paths

log = logging.getLogger("relay.dkim")

SELECTOR = "chatmail"
KEY = paths.DKIM / f"{SELECTOR}.private"


def ensure_key() -> None:
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
    der = subprocess.run(["openssl", "rsa", "-in", str(KEY), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return base64.b64encode(der).decode()


def txt_record_value() -> str:
    return f"v=DKIM1; k=rsa; p={public_key_b64()}"
