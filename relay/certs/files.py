"""TLS certificates: where they come from, and the files the daemons read.

Postfix, Dovecot and nginx all read ``paths.TLS_CERT`` and ``paths.TLS_KEY``.
Each source keeps its own files below ``/data/tls/<source>/`` and the chosen
one is copied into place atomically.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import ssl
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from relay import paths
from relay.boot.datadir import install_file
from relay.settings import Settings

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
    """The subjectAltName entries of the (first) certificate in ``cert``, as
    ``["DNS:chat.example.org", "IP:192.0.2.1", ...]`` (IPv6 in its compressed form), read with
    openssl. Raises subprocess.CalledProcessError for an unreadable file or a certificate without
    subjectAltName.
    """
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


def _date(cert: Path, which: str) -> float:
    out = subprocess.run(["openssl", "x509", "-noout", f"-{which}date", "-in", str(cert)],
                         capture_output=True, text=True, check=True).stdout
    stamp = out.strip().split("=", 1)[1]
    return datetime.strptime(stamp, "%b %d %H:%M:%S %Y %Z").replace(
        tzinfo=UTC).timestamp()


def not_after(cert: Path) -> float:
    """Expiry of the first certificate in a PEM file, as a Unix time."""
    return _date(cert, "end")


def not_before(cert: Path) -> float:
    """Start of validity of the first certificate in a PEM file, as a Unix time (seconds). Raises
    subprocess.CalledProcessError for an unreadable file.
    """
    return _date(cert, "start")


def fingerprint(cert: Path) -> str:
    """SHA-256 of the first (leaf) certificate in a PEM file."""
    pem = cert.read_text()
    end = pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem[:end])).hexdigest()


def validate_pair(cert: Path, key: Path, names: list[str] | None = None) -> str | None:
    """None when cert is a current certificate for key (and names), else what is wrong."""
    try:
        cert_pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"],
                                  capture_output=True, check=True).stdout
        key_pub = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"],
                                 capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as exc:
        # openssl's own words, on one line: the entrypoint's error for a bad pair is one line
        said = " ".join(exc.stderr.decode(errors="replace").split())[:120]
        return f"unreadable certificate or key ({said})"
    if cert_pub != key_pub:
        return f"{cert} does not belong to the key {key}"
    if not_after(cert) < time.time():
        return f"{cert} has expired"
    missing = [n for n in names or [] if n not in cert_names(cert)]
    if missing:
        return f"{cert} does not name {', '.join(missing)}"
    return None


def content_hash(*files: Path) -> str:
    """SHA-256 (hex) over the bytes of ``files`` in order: changes when any of them changes. Raises
    OSError for a file that cannot be read.
    """
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def install(cert: Path, key: Path) -> None:
    """Copy ``cert`` and ``key`` to ``paths.TLS_CERT`` (0644) and ``paths.TLS_KEY`` (0600), both
    owned by root and each replaced atomically; the daemons read them at their next reload.
    """
    install_file(key, paths.TLS_KEY, "root", "root", 0o600)
    install_file(cert, paths.TLS_CERT, "root", "root", 0o644)


def write_ca_bundle(extra: str) -> None:
    """Debian's CA certificates plus the operator's EXTRA_CA_FILE, for our helpers and Postfix."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
    if extra:
        try:
            added = Path(extra).read_text(errors="replace")
        except OSError as exc:
            raise FileNotFoundError(f"EXTRA_CA_FILE={extra} cannot be read: {exc.strerror}") from None
        if "-----BEGIN CERTIFICATE-----" not in added:
            raise ValueError(f"EXTRA_CA_FILE={extra} holds no PEM certificate "
                             "(-----BEGIN CERTIFICATE-----)")
        bundle += "\n" + added
    tmp = paths.CA_BUNDLE.with_suffix(".new")
    tmp.write_text(bundle)
    tmp.chmod(0o644)
    tmp.replace(paths.CA_BUNDLE)


def acme_ready() -> bool:
    """True when /data/tls/acme holds a chain and key that :func:`validate_pair` accepts (they
    belong together and the certificate has not expired).
    """
    cert, key = ACME / "fullchain.pem", ACME / "privkey.pem"
    return cert.is_file() and key.is_file() and validate_pair(cert, key) is None


def prepare(settings: Settings) -> str:
    """Put a usable certificate in place before any daemon starts; return its source."""
    mode, domain = settings.tls_mode, settings.mail_domain
    write_ca_bundle(settings.extra_ca_file)
    if mode == "external":
        cert, key = Path(settings.tls_cert_file), Path(settings.tls_key_file)
        if not (cert.is_file() and key.is_file()):
            raise FileNotFoundError(
                f"TLS_MODE=external needs TLS_CERT_FILE={cert} and TLS_KEY_FILE={key}")
        problem = validate_pair(cert, key)
        if problem:
            raise ValueError(f"TLS_MODE=external: TLS_CERT_FILE={cert} and TLS_KEY_FILE={key} "
                             f"are no usable pair: {problem}")
        install(cert, key)
        return "external"
    if mode == "acme" and acme_ready():
        install(ACME / "fullchain.pem", ACME / "privkey.pem")
        return "acme"
    make_self_signed(domain)
    install(SELF_SIGNED / "fullchain.pem", SELF_SIGNED / "privkey.pem")
    if mode == "acme":
        log.warning("no ACME certificate yet for %s: serving a self-signed certificate "
                    "until one is obtained", domain)
    return "self-signed"
