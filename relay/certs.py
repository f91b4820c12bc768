"""TLS certificates: where they come from, and the files the daemons read.

Postfix, Dovecot and nginx all read ``paths.TLS_CERT`` and ``paths.TLS_KEY``.
Each source keeps its own files below ``/data/tls/<source>/`` and the chosen
one is copied into place atomically.
"""

from __future__ import annotations

import ipaddress
import logging
import subprocess
from pathlib import Path

from . import paths
from .datadir import install_file

log = logging.getLogger("relay.certs")

SELF_SIGNED = paths.TLS / "self-signed"
EXTERNAL = paths.TLS / "external"
ACME = paths.TLS / "acme"


def names_for(domain: str) -> list[str]:
    """subjectAltName entries a certificate for this relay must carry."""
    if domain.startswith("["):
        inner = domain[1:-1].removeprefix("ipv6:")
        return [f"IP:{ipaddress.ip_address(inner)}"]
    if domain == "localhost":
        return ["DNS:localhost", "IP:127.0.0.1", "IP:::1"]
    return [f"DNS:{domain}", f"DNS:mta-sts.{domain}", f"DNS:www.{domain}"]


def cert_names(cert: Path) -> list[str]:
    out = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)],
        capture_output=True, text=True, check=True).stdout
    names = []
    for line in out.splitlines()[1:]:
        for item in line.split(","):
            item = item.strip().replace("IP Address:", "IP:")
            if item.startswith("IP:") and ":" in item[3:]:
                item = "IP:" + str(ipaddress.ip_address(item[3:]))
            names.append(item)
    return names


def make_self_signed(domain: str) -> None:
    """Create (once per domain) a self-signed certificate below /data/tls/self-signed."""
    SELF_SIGNED.mkdir(mode=0o700, exist_ok=True)
    cert, key = SELF_SIGNED / "fullchain.pem", SELF_SIGNED / "privkey.pem"
    wanted = names_for(domain)
    if cert.exists() and key.exists() and cert_names(cert) == wanted:
        return
    log.info("making a self-signed certificate for %s", ", ".join(wanted))
    subject = domain if not domain.startswith("[") else domain[1:-1]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
         "-subj", f"/CN={subject[:64]}", "-addext", "subjectAltName=" + ",".join(wanted),
         "-addext", "basicConstraints=critical,CA:FALSE",
         "-addext", "extendedKeyUsage=serverAuth",
         "-keyout", str(key) + ".new", "-out", str(cert) + ".new"],
        check=True, capture_output=True)
    Path(str(key) + ".new").chmod(0o600)
    Path(str(key) + ".new").replace(key)
    Path(str(cert) + ".new").replace(cert)


def install(source: Path) -> None:
    install_file(source / "privkey.pem", paths.TLS_KEY, "root", "root", 0o600)
    install_file(source / "fullchain.pem", paths.TLS_CERT, "root", "root", 0o644)


def prepare(settings: dict) -> str:
    """Put a usable certificate in place before any daemon starts; return its source."""
    mode, domain = settings["TLS_MODE"], settings["MAIL_DOMAIN"]
    if mode == "external":
        cert, key = EXTERNAL / "fullchain.pem", EXTERNAL / "privkey.pem"
        if not (cert.is_file() and key.is_file()):
            raise FileNotFoundError(
                f"TLS_MODE=external needs {cert} and {key} on the data volume")
        install(EXTERNAL)
        return "external"
    if mode == "acme" and (ACME / "fullchain.pem").is_file() and (ACME / "privkey.pem").is_file():
        install(ACME)
        return "acme"
    make_self_signed(domain)
    install(SELF_SIGNED)
    if mode == "acme":
        log.warning("no ACME certificate yet for %s: serving a self-signed certificate "
                    "until one is obtained", domain)
    return "self-signed"
