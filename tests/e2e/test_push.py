"""Push notifications to a local HTTPS gateway, and what the relay keeps about users on /data.

The gateway is tests/support/push_receiver.py in a container on a docker network this
module creates, with a certificate from a CA made here with openssl; the relay
on the same network trusts that CA through EXTRA_CA_FILE and posts to
https://gateway.push.test:8443/notify.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from relay.notify.push import pending_key
from relaytest import (IMAGE, ROOT, Relay, docker, get_metadata, imap_login, securejoin_request,
                       set_device_token, submit, wait_for)

ALIAS = "gateway.push.test"


def make_certificates(directory: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=relay test push CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", *ec, "-keyout", "key.pem", "-out", "server.csr", "-subj", f"/CN={ALIAS}")
    (directory / "server.ext").write_text(
        f"subjectAltName=DNS:{ALIAS}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "cert.pem", "-days", "2", "-extfile", "server.ext")


class Gateway:
    """The receiving container; what it received is in its log, one JSON line per POST."""

    def __init__(self, name: str, network: str, volume: str) -> None:
        self.name, self.network, self.volume = name, network, volume
        self.url = f"https://{ALIAS}:8443/notify"

    def run(self) -> None:
        docker("run", "-d", "--name", self.name, "--network", self.network,
               "--network-alias", ALIAS, "--no-healthcheck", "-v", f"{self.volume}:/srv:ro",
               "--entrypoint", "python3", IMAGE, "/srv/push_receiver.py", "/srv/cert.pem",
               "/srv/key.pem")
        self.wait_ready(1)

    def lines(self) -> list[dict]:
        out = docker("logs", self.name, check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def received(self) -> list[dict]:
        return [line for line in self.lines() if "body" in line]

    def got(self, token: str) -> dict | None:
        return next((line for line in self.received() if line["body"] == token), None)

    def wait_ready(self, starts: int) -> None:
        wait_for(lambda: sum("ready" in line for line in self.lines()) >= starts, 30, 0.2,
                 "notification receiver ready")

    def stop(self) -> None:
        docker("stop", "-t", "1", self.name)

    def start(self) -> None:
        starts = sum("ready" in line for line in self.lines())
        docker("start", self.name)
        self.wait_ready(starts + 1)


@pytest.fixture(scope="module")
def gateway(image_exists, tmp_path_factory):
    suffix = secrets.token_hex(3)
    network, volume = f"relaytest-push-{suffix}", f"relaytest-push-{suffix}-gw"
    directory = tmp_path_factory.mktemp("push-ca")
    make_certificates(directory)
    files = {name: (directory / name).read_text() for name in ("ca.pem", "cert.pem", "key.pem")}
    files["push_receiver.py"] = (ROOT / "tests" / "support" / "push_receiver.py").read_text()
    gw = Gateway(f"relaytest-push-{suffix}-gw", network, volume)
    docker("network", "create", network)
    try:
        docker("volume", "create", volume)
        for name, text in files.items():  # a volume, not a bind mount: works with any engine
            docker("run", "--rm", "-i", "-v", f"{volume}:/v", "--entrypoint", "sh", IMAGE,
                   "-c", f"cat > /v/{name}", input=text)
        gw.run()
        yield gw
    finally:
        docker("rm", "-f", "-v", gw.name, check=False)
        docker("volume", "rm", "-f", volume, check=False)
        docker("network", "rm", network, check=False)


@pytest.fixture(scope="module")
def push_relay(gateway):
    r = Relay({"MAIL_DOMAIN": "_push.example.test", "TLS_MODE": "self-signed",
               "NEW_ACCOUNTS_PER_MINUTE": "6000", "PUSH_GATEWAY_URL": gateway.url,
               "EXTRA_CA_FILE": "/etc/relaytest-gateway/ca.pem"},
              extra_args=("--network", gateway.network,
                          "-v", f"{gateway.volume}:/etc/relaytest-gateway:ro"))
    r.start()
    try:
        yield r.wait_healthy()
    finally:
        r.remove()


def with_tokens(relay: Relay, *tokens: str) -> dict:
    account = relay.new_account()
    im = imap_login(relay, account)
    for token in tokens:
        assert set_device_token(im, token)[0] == "OK"
    im.logout()
    return account


def send_to(relay: Relay, recipient: dict) -> float:
    sender = relay.new_account()
    submit(relay, sender, [recipient["email"]],
           securejoin_request(sender["email"], recipient["email"]))
    return time.time()


def queued(relay: Relay, account: dict, token: str) -> dict | None:
    """The pending notification for this account and token, as kept on /data."""
    out = relay.exec("cat", f"/data/push/queue/{pending_key(account['email'], token)}",
                     check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def test_new_mail_is_pushed_to_every_token(push_relay, gateway):
    tokens = [f"openpgp:phone-{secrets.token_hex(8)}", f"openpgp:laptop-{secrets.token_hex(8)}"]
    bob = with_tokens(push_relay, *tokens)
    sent = send_to(push_relay, bob)
    got = [wait_for(lambda t=t: gateway.got(t), 20, 0.05, "notification") for t in tokens]
    latency = max(g["t"] for g in got) - sent
    print(f"push latency (SMTP submission done -> gateway received): {latency * 1000:.0f} ms")
    for g in got:
        assert (g["path"], g["status"]) == ("/notify", 200)
        assert g["content_type"].startswith("text/plain")
    # SPEC: the gateway hears of a new message within a second
    assert latency < 1.0
    for token in tokens:
        wait_for(lambda t=token: queued(push_relay, bob, t) is None, 10, 0.2, "sent: not queued")


def test_no_token_no_notification(push_relay, gateway):
    before = len(gateway.received())
    alice = with_tokens(push_relay)  # logged in once: the account exists
    token = f"openpgp:after-{secrets.token_hex(8)}"
    bob = with_tokens(push_relay, token)
    send_to(push_relay, alice)              # alice has no token
    send_to(push_relay, bob)                # bob has one: its notification comes after
    wait_for(lambda: gateway.got(token), 20, 0.05, "bob's notification")
    assert [g["body"] for g in gateway.received()[before:]] == [token]


def test_token_the_gateway_calls_gone_is_dropped(push_relay, gateway):
    gone, kept = f"openpgp:gone-{secrets.token_hex(8)}", f"openpgp:kept-{secrets.token_hex(8)}"
    bob = with_tokens(push_relay, gone, kept)
    send_to(push_relay, bob)
    assert wait_for(lambda: gateway.got(gone), 20, 0.05, "notification")["status"] == 410

    def stored() -> str:
        im = imap_login(push_relay, bob)
        try:
            return get_metadata(im, "INBOX", "/private/devicetoken")["/private/devicetoken"]
        finally:
            im.logout()

    wait_for(lambda: stored() == kept, 10, 0.2, "the gone token removed")


def test_retried_until_the_gateway_is_back(push_relay, gateway):
    token = f"openpgp:retry-{secrets.token_hex(8)}"
    bob = with_tokens(push_relay, token)
    gateway.stop()
    try:
        send_to(push_relay, bob)
        # delivered at once; the notification waits on /data
        wait_for(lambda: len(push_relay.mailbox_files(bob["email"])) == 1, 10, 0.1, "delivery")
        wait_for(lambda: (queued(push_relay, bob, token) or {}).get("failures", 0) >= 1, 20, 0.2,
                 "a failed attempt")
        status = json.loads(push_relay.exec("relayctl", "status", "--json").stdout)
        assert status["push_pending"] >= 1 and status["push_accounts"] >= 1
    finally:
        gateway.start()
    got = wait_for(lambda: gateway.got(token), 60, 0.2, "notification after the gateway is back")
    assert got["status"] == 200
    wait_for(lambda: queued(push_relay, bob, token) is None, 10, 0.2, "sent: not queued")


def test_pending_notification_survives_a_restart(push_relay, gateway):
    token = f"openpgp:restart-{secrets.token_hex(8)}"
    bob = with_tokens(push_relay, token)
    gateway.stop()
    try:
        send_to(push_relay, bob)
        wait_for(lambda: (queued(push_relay, bob, token) or {}).get("failures", 0) >= 1, 20, 0.2,
                 "a failed attempt")
        push_relay.stop()                  # the relay is down ...
    finally:
        gateway.start()                    # ... when the gateway comes back
    docker("start", push_relay.name)
    push_relay._ports = {}
    push_relay.wait_healthy()
    got = wait_for(lambda: gateway.got(token), 60, 0.2, "notification after the restart")
    assert got["status"] == 200
    assert re.search(r"serving \S+; [1-9]\d* pending notifications from before",
                     push_relay.logs())
    wait_for(lambda: queued(push_relay, bob, token) is None, 10, 0.2, "sent: not queued")


def test_a_hanging_gateway_does_not_delay_delivery(push_relay, gateway):
    slow = f"openpgp:slow-{secrets.token_hex(8)}"   # the receiver answers after 30 s
    bob = with_tokens(push_relay, slow)
    send_to(push_relay, bob)
    wait_for(lambda: gateway.got(slow), 20, 0.05, "notification")
    started = time.monotonic()
    send_to(push_relay, bob)                         # while that request hangs
    wait_for(lambda: len(push_relay.mailbox_files(bob["email"])) == 2, 10, 0.1,
             "second message delivered")
    assert time.monotonic() - started < 10


# --- acceptance: nothing about a user is stored beyond what the spec lists -----------------

# Every kind of file /data may hold, relative to /data. <a> is an account address.
ADDR = r"[a-z0-9._-]+@_push\.example\.test"
MAILDIR_FILE = (r"(\.[^/]+/)?("
                r"(cur|new|tmp)/[^/]+"                       # messages
                r"|dovecot-uidlist|dovecot-uidvalidity(\.[0-9a-f]+)?|dovecot-keywords"
                r"|dovecot\.index(\.log(\.2)?|\.cache)?|dovecot\.list\.index(\.log)?"
                r"|dovecot\.mailbox\.log|maildirfolder|subscriptions)")
ALLOWED = [
    r"LAYOUT_VERSION",
    rf"accounts/{ADDR}",                                   # the password hash
    rf"mail/{ADDR}/Maildir/{MAILDIR_FILE}",
    # the Message-IDs delivered in the last day (deliver-once.sieve) and their locks
    rf"mail/{ADDR}/\.dovecot\.lda-dupes(\.locks/[0-9a-f]+\.lock)?",
    rf"push/tokens/{ADDR}",                                # device tokens
    r"push/queue/[0-9a-f]{40}",                            # notifications not yet sent
    r"postfix/(pid/([a-z.]+\.pid|(unix|inet|pass)\.[a-z0-9.:_-]+)"   # Postfix's pids, locks,
    r"|(public|private)/[a-z0-9-]+"                                    # sockets,
    r"|(active|bounce|corrupt|defer|deferred|flush|hold|incoming|maildrop|saved|trace)/.+"
    r"|data/[a-z_]+\.(lock|db))",                          # queue (transient) and its caches
    r"tls/(fullchain|privkey)\.pem|tls/self-signed/[a-z.]+\.pem",
    r"dkim/[a-z0-9._-]+\.(private|txt)",
    r"state/(turn-secret|account-creation-off|registration)",
    r"invites/[0-9a-f]{64}",                               # unused invites: SHA-256 of the token
    rf"disabled/{ADDR}",                                   # disabled addresses (empty markers)
]


def test_data_holds_only_what_the_spec_lists(push_relay, gateway, dc):
    """After users logged in, chatted, registered a token and got notified."""
    accounts = []
    for _ in range(2):
        answer = push_relay.new_account()
        account = dc.add_account()
        account.add_transport_from_qr(push_relay.dclogin_for_here(answer))
        account.bring_online()
        accounts.append((answer, account))
    (alice_cred, alice), (bob_cred, bob) = accounts
    token = f"openpgp:listing-{secrets.token_hex(8)}"
    im = imap_login(push_relay, bob_cred)
    assert set_device_token(im, token)[0] == "OK"
    im.logout()
    alice.create_chat(bob).send_text("hello bob")
    assert bob.wait_for_incoming_msg().get_snapshot().text == "hello bob"
    wait_for(lambda: gateway.got(token), 20, 0.1, "bob's notification")
    bob_chat = bob.create_chat(alice)
    bob_chat.send_text("hello alice")
    assert alice.wait_for_incoming_msg().get_snapshot().text == "hello alice"
    for _, account in accounts:
        account.stop_io()

    listing = push_relay.exec("find", "/data", "-mindepth", "1", "!", "-type", "d",
                              "-printf", "%P\n").stdout.split("\n")
    unknown = [p for p in listing if p and not any(re.fullmatch(a, p) for a in ALLOWED)]
    assert unknown == [], "\n".join(listing)
    for cred in (alice_cred, bob_cred):
        assert f"accounts/{cred['email']}" in listing
    assert f"push/tokens/{bob_cred['email']}" in listing

    # The clients' addresses as the relay saw them: in its logs, in no stored file.
    addresses = set(re.findall(r"rip=([0-9a-f.:]+),", push_relay.logs()))
    assert addresses
    for address in addresses:
        found = push_relay.exec("grep", "-rlF", address, "/data", check=False)
        assert found.returncode == 1, f"{address} stored in {found.stdout}"
