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


# what `uname -m` says inside a container of the expected architecture
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}


def test_every_service_runs(smoke_relay):
    arch = os.environ.get("SMOKE_ARCH") or docker("version", "-f", "{{.Server.Arch}}").stdout.strip()
    # the programs inside really are of that architecture (an imported base image may
    # carry the host's label): Postfix's own binary, not only the shell
    machine = smoke_relay.exec("uname", "-m").stdout.strip()
    assert machine == MACHINES.get(arch, arch), (arch, machine)
    elf = smoke_relay.exec("python3", "-c", "import sys; f = open('/usr/lib/postfix/sbin/master', 'rb');"
                           " f.seek(18); sys.stdout.write(str(int.from_bytes(f.read(2), 'little')))")
    assert int(elf.stdout) == {"x86_64": 62, "aarch64": 183}[machine]  # ELF e_machine
    status = json.loads(smoke_relay.exec("relayctl", "status", "--json").stdout)
    assert set(status["services"].values()) == {"RUNNING"}, status["services"]
    assert {"postfix", "dovecot", "nginx", "opendkim", "relay-filter"} <= set(status["services"])
    print(f"\nsmoke: {IMAGE} ({machine}) healthy, {len(status['services'])} services running")


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
