"""TLS_MODE=external: operator-provided files in a bind mount, changes picked
up without a restart, a broken pair refused with a clear message."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from relaytest import Relay, fingerprints, wait_for

DOMAIN = "_ext.example.test"


def make_pair(ca: Path, out: Path, name: str) -> str:
    """A CA-signed certificate and key written in place (key first, like an ACME client
    on the host would); returns the certificate's sha256."""
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                    "-keyout", str(out / "privkey.pem.tmp"), "-out", str(out / "req.csr")],
                   check=True, capture_output=True)
    (out / "ext.cnf").write_text(f"subjectAltName=DNS:{name}\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(out / "req.csr"), "-CA", str(ca / "ca.pem"),
                    "-CAkey", str(ca / "ca.key"), "-CAcreateserial", "-days", "30",
                    "-extfile", str(out / "ext.cnf"), "-out", str(out / "cert.tmp")],
                   check=True, capture_output=True)
    os.chmod(out / "privkey.pem.tmp", 0o644)  # the container's root reads it through the mount
    os.replace(out / "privkey.pem.tmp", out / "privkey.pem")
    der = subprocess.run(["openssl", "x509", "-in", str(out / "cert.tmp"), "-outform", "DER"],
                         check=True, capture_output=True).stdout
    os.replace(out / "cert.tmp", out / "fullchain.pem")
    return hashlib.sha256(der).hexdigest()


@pytest.fixture
def certdir():
    with tempfile.TemporaryDirectory(prefix="chatmail-ext-") as tmp:
        base = Path(tmp)
        ca, out = base / "ca", base / "certs"
        ca.mkdir()
        out.mkdir()
        out.chmod(0o755)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=operator test CA", "-keyout", str(ca / "ca.key"),
                        "-out", str(ca / "ca.pem")], check=True, capture_output=True)
        yield ca, out


def external_relay(out: Path) -> Relay:
    return Relay({"MAIL_DOMAIN": DOMAIN, "TLS_MODE": "external",
                  "TLS_CERT_FILE": "/certs/fullchain.pem", "TLS_KEY_FILE": "/certs/privkey.pem"},
                 extra_args=("-v", f"{out}:/certs:ro"))


def test_changed_files_are_served_without_a_restart(image_exists, certdir):
    ca, out = certdir
    first = make_pair(ca, out, DOMAIN)
    relay = external_relay(out).start()
    try:
        relay.wait_healthy()
        assert set(fingerprints(relay).values()) == {first}
        started = relay.state()["StartedAt"]

        second = make_pair(ca, out, DOMAIN)
        wait_for(lambda: set(fingerprints(relay).values()) == {second}, 90, 1,
                 "the changed certificate on every port")
        assert relay.state()["StartedAt"] == started

        # A key that does not match the certificate is not installed; the old pair stays.
        (out / "privkey.pem").write_text(subprocess.run(
            ["openssl", "genrsa", "2048"], check=True, capture_output=True, text=True).stdout)
        wait_for(lambda: "not installing the changed external certificate" in relay.logs(), 60,
                 0.5, "the mismatched pair refused")
        assert set(fingerprints(relay).values()) == {second}
    finally:
        relay.remove()


def test_a_broken_pair_stops_the_start_with_one_line(image_exists, certdir):
    ca, out = certdir
    make_pair(ca, out, DOMAIN)
    (out / "privkey.pem").write_text(subprocess.run(
        ["openssl", "genrsa", "2048"], check=True, capture_output=True, text=True).stdout)
    relay = external_relay(out).start()
    try:
        wait_for(lambda: not relay.state()["Running"], 60, 0.5, "the container stopping")
        assert relay.state()["ExitCode"] != 0
        assert "does not belong to the key" in relay.logs()
    finally:
        relay.remove()
