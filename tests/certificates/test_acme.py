"""TLS_MODE=acme against a real ACME CA (Debian's pebble) on a test network
with a real DNS server: first issuance, forced renewal without a failed
connection, and a CA that is down when the relay starts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
import socket
import ssl
import threading
import time

import pytest

from relaytest import docker, fingerprints, served_der, wait_for
from testnet import TestNet, build_tools_image

pytestmark = pytest.mark.slow

DOMAIN = "relay-a.test"
RELAY_HOST = 10


@pytest.fixture(scope="module")
def net(image_exists):
    build_tools_image()
    n = TestNet()
    try:
        n.start_dns()
        n.start_pebble()
        yield n
    finally:
        n.close()


def verified_handshake(relay, port: int, roots: str, alpn: str | None = None) -> str:
    """A handshake that trusts only pebble's root and checks the name; returns the leaf's sha256."""
    ctx = ssl.create_default_context(cadata=roots)
    if alpn:
        ctx.set_alpn_protocols([alpn])
    with socket.create_connection(("127.0.0.1", relay.port(port)), 10) as raw:
        with ctx.wrap_socket(raw, server_hostname=relay.domain) as sock:
            return hashlib.sha256(sock.getpeercert(binary_form=True)).hexdigest()


def s_client_fingerprint(relay, port: int, roots: str) -> str:
    """What `openssl s_client` sees (verified against pebble's root), as a sha256 hex."""
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
        ca.write(roots)
        ca.flush()
        shown = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{relay.port(port)}",
             "-servername", relay.domain, "-CAfile", ca.name, "-verify_return_error",
             "-verify_hostname", relay.domain], input="", capture_output=True, text=True,
            timeout=20)
    assert "Verify return code: 0 (ok)" in shown.stdout, shown.stdout[-500:]
    der = subprocess.run(["openssl", "x509", "-outform", "DER"], input=shown.stdout.encode(),
                         capture_output=True, check=True).stdout
    return hashlib.sha256(der).hexdigest()


def one_new_certificate(relay, old: str) -> str | None:
    """The fingerprint every port serves, when it is the same everywhere and not `old`."""
    served = set(fingerprints(relay).values())
    return served.pop() if len(served) == 1 and old not in served else None


def test_obtains_a_certificate_and_a_forced_renewal_replaces_it_without_failures(net):
    relay = net.relay(DOMAIN, RELAY_HOST, {"TLS_MODE": "acme"}).start()
    relay.wait_healthy()
    roots = net.pebble_roots()
    # The relay asks pebble on its own; every port ends up with the CA's certificate.
    first = wait_for(lambda: verified_handshake(relay, 465, roots), 120, 1,
                     "a pebble-issued certificate on 465")
    wait_for(lambda: set(fingerprints(relay).values()) == {first}, 60, 0.5,
             "the same certificate on every port")
    for port, alpn in ((993, None), (443, None), (443, "imap"), (443, "smtp")):
        assert verified_handshake(relay, port, roots, alpn) == first
    issued = relay.exec("openssl", "x509", "-noout", "-ext", "subjectAltName",
                        "-in", "/data/tls/acme/fullchain.pem").stdout
    for name in (DOMAIN, f"mta-sts.{DOMAIN}", f"www.{DOMAIN}"):
        assert f"DNS:{name}" in issued
    assert relay.exec("stat", "-c", "%U %a", "/data/acme/account.key").stdout.split() == [
        "relayacme", "600"]
    certs = json.loads(relay.exec("relayctl", "certs", "--json").stdout)
    assert certs["source"] == "acme" and set(certs["served"].values()) == {"ok"}, certs
    started = relay.state()["StartedAt"]

    # Clients that trust pebble's root keep connecting while the certificate is swapped.
    stop = threading.Event()
    results = {"ok": 0, "failed": []}

    def hammer():
        ports = ((465, None), (993, None), (443, None))
        for i in range(5000):  # bounded; stopped by the event long before
            if stop.is_set():
                return
            port, alpn = ports[i % len(ports)]
            try:
                verified_handshake(relay, port, roots, alpn)
                results["ok"] += 1
            except Exception as exc:
                results["failed"].append(f"{port}: {exc}")

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        renewed = relay.exec("relayctl", "certs", "renew", "--force", check=False)
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        new = wait_for(lambda: one_new_certificate(relay, first), 60, 0.5,
                       "the renewed certificate on every port")
    finally:
        time.sleep(1)  # let the hammer see the new certificate for a moment too
        stop.set()
        worker.join(30)
    assert new != first
    assert results["failed"] == [], results["failed"][:5]
    assert results["ok"] > 20
    for port in (465, 993, 443):
        assert verified_handshake(relay, port, roots) == new
        assert s_client_fingerprint(relay, port, roots) == new
    state = relay.state()
    assert state["StartedAt"] == started and state["Running"]  # never restarted
    assert "every port now serves the new certificate" in relay.logs()
    print(f"\nACME renewal: {results['ok']} verified handshakes during the swap, 0 failed")


def test_ca_down_at_start_serves_self_signed_then_switches(net):
    docker("stop", "-t", "2", net.pebble_name)
    relay = net.relay(f"late.{DOMAIN}", RELAY_HOST + 1, {"TLS_MODE": "acme"})
    relay.start().wait_healthy()
    logs = relay.logs()
    assert "serving a self-signed certificate until one is obtained" in logs
    wait_for(lambda: "unreachable" in relay.logs(), 60, 0.5, "the failed attempt logged")
    self_signed = hashlib.sha256(served_der(relay, 465)).hexdigest()

    docker("start", net.pebble_name)
    net.wait_pebble()
    roots = net.pebble_roots()
    # Back-off after "CA unreachable" starts at 30 s: the switch comes on its own.
    new = wait_for(lambda: verified_handshake(relay, 465, roots), 150, 1,
                   "the relay switching to a pebble certificate")
    assert new != self_signed
    assert verified_handshake(relay, 993, roots) == new
    assert relay.health() == "healthy"
