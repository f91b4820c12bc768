"""Smoke test of an image on its own: every service up, healthy, an account
logs in, a message is delivered. `make test` runs it on the native image;
`make test-arm64` runs it on the arm64 image under emulation (SMOKE_TIMEOUT
stretches the waits there)."""

from __future__ import annotations

import imaplib
import json
import os

import pytest

from relaytest import IMAGE, Relay, docker, insecure_tls, securejoin_request, submit, wait_for

SLOW = float(os.environ.get("SMOKE_TIMEOUT", "120"))


@pytest.fixture(scope="module")
def smoke_relay():
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is missing (make image, or make image-arm64)")
    r = Relay({"MAIL_DOMAIN": "_smoke.example.test", "TLS_MODE": "self-signed"}).start()
    try:
        r.wait_healthy(SLOW)
        yield r
    finally:
        r.remove()


def test_every_service_runs(smoke_relay):
    arch = docker("image", "inspect", "-f", "{{.Architecture}}", IMAGE).stdout.strip()
    status = json.loads(smoke_relay.exec("relayctl", "status", "--json").stdout)
    assert set(status["services"].values()) == {"RUNNING"}, status["services"]
    assert {"postfix", "dovecot", "nginx", "opendkim", "relay-filter"} <= set(status["services"])
    print(f"\nsmoke: {IMAGE} ({arch}) healthy, {len(status['services'])} services running")


def test_login_and_delivery(smoke_relay):
    alice, bob = smoke_relay.new_account(), smoke_relay.new_account()
    im = imaplib.IMAP4_SSL("127.0.0.1", smoke_relay.port(993), ssl_context=insecure_tls(),
                           timeout=SLOW)
    im.login(bob["email"], bob["password"])  # creates bob
    submit(smoke_relay, alice, [bob["email"]], securejoin_request(alice["email"], bob["email"]))

    def delivered():
        im.select("INBOX", readonly=True)
        return im.search(None, "ALL")[1][0].split()

    assert len(wait_for(delivered, SLOW, 0.5, "delivery to bob")) == 1
    im.logout()
