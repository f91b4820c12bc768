"""Moving in from a reference relay (relayctl import-relay), on a relay started from
compose.host.yaml, and real client addresses.

One relay for the module, started by docker-compose 1.29 from compose.host.yaml
exactly as an operator does, except that "the host" is a network namespace of its
own: a small holder container on a docker network this module creates, whose
namespace the relay joins (a test override sets ``network_mode: container:<holder>``
in place of ``host``). So nothing binds on this machine's ports, parallel runs do
not clash, and other containers on that network reach the relay as clients of a
host-networked relay do: without NAT or a proxy in between.

The archive is built by tests/support/refrelay_fixture.py from the reference
relay's documented layout.
"""

from __future__ import annotations

import imaplib
import io
import json
import secrets
import shutil
import smtplib
import socket
import subprocess
import tarfile
import textwrap

import dkim
import pytest

import refrelay_fixture
from relaytest import (IMAGE, ROOT, delta_chat, docker, insecure_tls, queued_message,
                       securejoin_request, wait_for)

DOMAIN = "_move.example.test"
COMPOSE = shutil.which("docker-compose")
RELAY_HOST, CLIENT_A, CLIENT_B = 10, 21, 22


class Net:
    """A docker network of our own with fixed IPv4 and IPv6 (ULA) addresses."""

    def __init__(self) -> None:
        self.name = f"relaytest-move-{secrets.token_hex(3)}"
        self.containers: list[str] = []
        last = ""
        for _ in range(8):
            self.prefix = f"10.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}"
            self.prefix6 = f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}:1"
            done = docker("network", "create", "--ipv6", "--subnet", f"{self.prefix}.0/24",
                          "--subnet", f"{self.prefix6}::/64", self.name, check=False)
            if done.returncode == 0:
                return
            last = done.stderr
        raise RuntimeError(f"cannot create a test network: {last}")

    def ip(self, host: int) -> str:
        return f"{self.prefix}.{host}"

    def ip6(self, host: int) -> str:
        return f"{self.prefix6}::{host:x}"

    def idle_container(self, role: str, host: int) -> str:
        """A container of the relay image that only sleeps: a namespace and a shell."""
        name = f"{self.name}-{role}"
        docker("run", "-d", "--name", name, "--network", self.name, "--ip", self.ip(host),
               "--ip6", self.ip6(host), "--cap-drop", "ALL", IMAGE, "sleep", "infinity")
        self.containers.append(name)
        return name

    def close(self) -> None:
        for name in self.containers:
            docker("rm", "-f", "-v", name, check=False)
        docker("network", "rm", self.name, check=False)


@pytest.fixture(scope="module")
def net(image_exists):
    n = Net()
    try:
        yield n
    finally:
        n.close()


@pytest.fixture(scope="module")
def host_relay(net, tmp_path_factory):
    """compose.host.yaml up, in the holder's network namespace; yields (container, address)."""
    if COMPOSE is None:
        pytest.fail("docker-compose is not installed (bash .ci/run installs it)")
    holder = net.idle_container("host", RELAY_HOST)
    work = tmp_path_factory.mktemp("compose-host")
    project = net.name.replace("-", "")
    (work / "test.env").write_text(
        f"MAIL_DOMAIN={DOMAIN}\nTLS_MODE=self-signed\nCREATE_MAX_LOAD=1000\n"
        "NEW_ACCOUNTS_PER_MINUTE=1\nPUSH_GATEWAY_URL=https://127.0.0.1:9/notify\n"
        f"RELAY_VOLUME={project}-data\nRELAY_IMAGE={IMAGE}\n")
    (work / "netns.yaml").write_text(
        f'services:\n  relay:\n    network_mode: "container:{holder}"\n')

    def compose(*args, check=True):
        return subprocess.run([COMPOSE, "--env-file", str(work / "test.env"), "-p", project,
                               "-f", str(ROOT / "compose.host.yaml"), "-f", str(work / "netns.yaml"),
                               *args], capture_output=True, text=True, check=check, timeout=180)

    try:
        up = compose("up", "-d", "--no-build", check=False)
        assert up.returncode == 0, up.stderr
        container = compose("ps", "-q", "relay").stdout.strip()
        # what the health check probes, polled more often than its 5 s interval
        wait_for(lambda: answers(net.ip(RELAY_HOST)), 90, 0.3, "relay answers on 993, 465, 443")
        yield container, net.ip(RELAY_HOST)
    finally:
        compose("down", "-v", "--timeout", "0", check=False)
        docker("volume", "rm", "-f", f"{project}-data", check=False)


def answers(host: str) -> bool:
    """IMAP greets on 993, SMTP on 465 and HTTPS answers on 443."""
    ctx = insecure_tls()
    for port, greeting in ((993, b"* OK"), (465, b"220 ")):
        with ctx.wrap_socket(socket.create_connection((host, port), 2)) as s:
            if not s.recv(100).startswith(greeting):
                return False
    with ctx.wrap_socket(socket.create_connection((host, 443), 2)) as s:
        s.sendall(f"GET / HTTP/1.0\r\nHost: {DOMAIN}\r\n\r\n".encode())
        return s.recv(100).startswith(b"HTTP/1.1 200")


def relayctl(container: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["/usr/bin/docker", "exec", "-i", container, "relayctl", *args],
                          input=stdin, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return refrelay_fixture.build(DOMAIN, tmp_path_factory.mktemp("ref") / "state.tar.gz")


@pytest.fixture(scope="module")
def imported(host_relay, fixture):
    """The archive imported into the running relay (on stdin, as the README says)."""
    container, _ = host_relay
    done = relayctl(container, "import-relay", "--json", stdin=fixture.archive.read_bytes())
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


def sh(container: str, script: str) -> str:
    return docker("exec", container, "sh", "-c", script).stdout


# --- the import ------------------------------------------------------------------------------

def test_import_reports_each_account_and_the_dkim_key(imported, fixture):
    alice, bob, carol, dave = fixture.accounts
    assert sorted(imported["new"]) == sorted([alice.address, bob.address, carol.address])
    assert imported["merge"] == [] and imported["conflict"] == []
    assert list(imported["invalid"]) == [dave.address]
    assert imported["disabled_on_old_relay"] == [carol.address]
    assert imported["without_e2ee_flag"] == 1
    assert imported["messages"] == len(alice.messages) + len(bob.messages) + 2  # + hard links
    assert imported["push_tokens"] == 2        # alice's fresh one and bob's legacy one
    assert imported["dkim_selector"] == "opendkim"
    assert imported["dkim_record"] == fixture.published_record
    assert "OpenDKIM restarted" in imported["signing"]


def test_imported_files_have_the_owners_modes_and_times_the_data_volume_expects(host_relay, imported,
                                                                                   fixture):
    container, _ = host_relay
    alice, bob = fixture.accounts[:2]
    fmt = "%U:%G %a %Y"
    accounts = sh(container, f"stat -c '{fmt}' /data/accounts/{alice.address} "
                             f"/data/accounts/{bob.address}").split("\n")
    assert accounts[:2] == [f"relayauth:relayauth 600 {alice.last_login}",
                            f"relayauth:relayauth 600 {bob.last_login}"]
    home = f"/data/mail/{alice.address}/Maildir"
    first = alice.messages[0]
    assert sh(container, f"stat -c '{fmt}' '{home}/cur/{first.name}'").strip() == \
        f"vmail:vmail 600 {first.mtime}"
    # every file of the mailbox is vmail's, and Dovecot's caches of the old host stayed behind
    assert sh(container, f"find /data/mail/{alice.address} ! -user vmail") == ""
    assert "maildirsize" not in sh(container, f"ls -a {home}")
    assert sh(container, "cat /data/dkim/selector").strip() == "opendkim"
    assert sh(container, "stat -c '%U %a' /data/dkim/opendkim.private").strip() == "opendkim 600"
    tokens = sh(container, f"cat /data/push/tokens/{alice.address}").split()
    assert tokens[1] in alice.tokens and len(tokens) == 2
    assert sh(container, f"stat -c '%U %a' /data/push/tokens/{alice.address}").strip() == \
        "relaypush 600"
    assert sh(container, "ls -a /data").split().count(".import-relay") == 0  # stage removed


def imap(host: str, account) -> imaplib.IMAP4_SSL:
    im = imaplib.IMAP4_SSL(host, 993, ssl_context=insecure_tls(), timeout=30)
    im.login(account.address, account.password)
    return im


def test_old_password_logs_in_and_sees_the_old_mail_with_its_uids(host_relay, imported, fixture):
    _, host = host_relay
    alice = fixture.accounts[0]
    im = imap(host, alice)
    try:
        typ, data = im.select("INBOX", readonly=True)
        assert typ == "OK" and int(data[0]) == 3
        assert im.untagged_responses["UIDVALIDITY"] == [str(alice.uidvalidity).encode()]
        typ, data = im.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
        got = {}
        for item in data:
            if isinstance(item, tuple):
                uid = int(item[0].split(b"UID ")[1].split()[0])
                got[uid] = (b"\\Seen" in item[0], item[1])
        inbox = {m.uid: ("S" in m.name.split(":2,")[-1] if m.sub == "cur" else False, m.wire)
                 for m in alice.messages if not m.folder}
        assert got == inbox  # gzip-compressed and plain files alike, UIDs kept
        typ, data = im.select("DeltaChat", readonly=True)
        assert typ == "OK" and int(data[0]) == 2
    finally:
        im.logout()
    with pytest.raises(imaplib.IMAP4.error):
        bad = fixture.accounts[1]
        imaplib.IMAP4_SSL(host, 993, ssl_context=insecure_tls(), timeout=30).login(
            bad.address, bad.password + "x")


def test_outgoing_mail_is_signed_with_the_old_key_and_selector(net, host_relay, imported, fixture):
    """The copy Postfix queues for another domain (local delivery strips the signature), sent to
    an unused address of this module's test network: nothing answers, the message stays queued."""
    container, host = host_relay
    alice = fixture.accounts[0]
    unreachable = f"probe@[{net.ip(250)}]"
    marker = secrets.token_hex(6)
    with smtplib.SMTP_SSL(host, 465, context=insecure_tls(), timeout=30) as smtp:
        smtp.login(alice.address, alice.password)
        smtp.sendmail(alice.address, [unreachable],
                      securejoin_request(alice.address, unreachable, marker))
    raw = queued_message(container, unreachable)
    assert marker.encode() in raw
    assert f"d={DOMAIN}".encode() in raw and b"s=opendkim" in raw

    def old_dns(qname, timeout=5):
        assert qname.decode().rstrip(".") == f"opendkim._domainkey.{DOMAIN}"
        return fixture.published_record.encode()
    assert dkim.verify(raw, dnsfunc=old_dns)


def test_dns_prints_the_record_the_old_relay_published(host_relay, imported, fixture):
    container, _ = host_relay
    zone = json.loads(relayctl(container, "dns", "--json").stdout)
    dkim_records = [r for r in zone["records"] if r["kind"] == "dkim"]
    assert [(r["name"], r["value"]) for r in dkim_records] == \
        [(f"opendkim._domainkey.{DOMAIN}.", fixture.published_record)]
    text = relayctl(container, "dns").stdout.decode()
    assert f"opendkim._domainkey.{DOMAIN}." in text and "chatmail._domainkey" not in text


def test_importing_again_adds_nothing_twice_and_refuses_another_domain(host_relay, imported,
                                                                      fixture):
    container, _ = host_relay
    alice = fixture.accounts[0]
    count = f"find /data/mail/{alice.address} -type f -path '*/cur/*' -o -type f -path '*/new/*'"
    before = sh(container, f"{count} | wc -l")
    again = relayctl(container, "import-relay", "--json", stdin=fixture.archive.read_bytes())
    assert again.returncode == 0, again.stderr.decode()
    report = json.loads(again.stdout)
    assert report["new"] == [] and len(report["merge"]) == 3
    assert sh(container, f"{count} | wc -l") == before
    other = io.BytesIO()
    with tarfile.open(fileobj=other, mode="w:gz") as tar:
        for name in ("a1b2c3d4e@other.example/password", "a1b2c3d4e@other.example/cur/1.x"):
            info = tarfile.TarInfo(f"home/vmail/mail/other.example/{name}")
            info.size = 5
            tar.addfile(info, io.BytesIO(b"{X}yz"))
    listing = "ls /data/accounts; cat /data/dkim/selector; md5sum /data/dkim/*; ls -a /data"
    state = sh(container, listing)
    refused = relayctl(container, "import-relay", stdin=other.getvalue())
    assert refused.returncode == 1
    assert b"refused, nothing changed" in refused.stderr and b"other.example" in refused.stderr
    assert sh(container, listing) == state


def test_an_imported_account_keeps_chatting_in_delta_chat(host_relay, imported, fixture, tmp_path):
    _, host = host_relay
    alice, bob = fixture.accounts[:2]
    with delta_chat(tmp_path / "accounts") as dc:
        profiles = []
        for account in (alice, bob):
            profile = dc.add_account()
            profile.add_or_update_transport({
                "addr": account.address, "password": account.password,
                "imapServer": host, "imapPort": 993, "imapSecurity": "ssl",
                "smtpServer": host, "smtpPort": 465, "smtpSecurity": "ssl",
                "certificateChecks": "acceptInvalidCertificates"})
            profile.bring_online()
            profiles.append(profile)
        a, b = profiles
        a.create_chat(b).send_text("still here after the move")
        msg = b.wait_for_incoming_msg().get_snapshot()
        assert (msg.text, msg.show_padlock) == ("still here after the move", True)
        chat = b.get_chat_by_id(msg.chat_id)
        chat.accept()  # a first message from a new contact arrives as a contact request
        chat.send_text("me too")
        reply = a.wait_for_incoming_msg().get_snapshot()
        assert (reply.text, reply.show_padlock) == ("me too", True)
        for profile in profiles:
            profile.stop_io()


# --- real client addresses ---------------------------------------------------------------------

NEW_ACCOUNT = textwrap.dedent("""
    import ssl, sys, urllib.request, urllib.error
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    codes = []
    for _ in range(int(sys.argv[2])):
        req = urllib.request.Request(f"https://{sys.argv[1]}/new", method="POST",
                                     headers={"Host": sys.argv[3]})
        try:
            codes.append(urllib.request.urlopen(req, context=ctx, timeout=10).status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
    print(" ".join(map(str, codes)))
""")

HOLD_IMAP = textwrap.dedent("""
    import socket, ssl, sys, time
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    held = [ctx.wrap_socket(socket.create_connection((sys.argv[1], 993), 10)) for _ in range(3)]
    for s in held:
        s.recv(100)
    time.sleep(float(sys.argv[2]))
""")


def run_in(container: str, script: str, *args: str, detach: bool = False) -> str:
    return docker("exec", *(["-d"] if detach else []), container, "python3", "-c", script,
                  *args).stdout


@pytest.fixture(scope="module")
def clients(net):
    """Two clients with addresses of their own on the relay's network."""
    return net.idle_container("client-a", CLIENT_A), net.idle_container("client-b", CLIENT_B)


def test_each_client_address_has_its_own_account_creation_limit(host_relay, clients, net):
    _, host = host_relay
    a, b = clients
    # NEW_ACCOUNTS_PER_MINUTE=1 with nginx's burst of 10: the 12th request within the
    # minute from one address is refused ...
    codes = run_in(a, NEW_ACCOUNT, host, "12", DOMAIN).split()
    assert codes[:11] == ["200"] * 11 and codes[11] == "429", codes
    # ... and a client at another address (here over IPv6) is not held back by it (behind
    # published ports both would come from the gateway and share one limit)
    assert run_in(b, NEW_ACCOUNT, f"[{net.ip6(RELAY_HOST)}]", "1", DOMAIN).split() == ["200"]


def doctor_check(container: str) -> dict:
    done = relayctl(container, "doctor", "--only", "client-addresses", "--json")
    return json.loads(done.stdout)[0]


def test_doctor_sees_clients_with_their_own_addresses(host_relay, clients, net):
    container, host = host_relay
    a, b = clients
    run_in(a, HOLD_IMAP, host, "60", detach=True)
    run_in(b, HOLD_IMAP, net.ip6(RELAY_HOST), "60", detach=True)

    def counted():
        check = doctor_check(container)
        connections = int(check["detail"].split()[0]) if check["verdict"] != "skip" else 0
        return check if connections >= 6 else None
    check = wait_for(counted, 30, 0.5, "six held IMAP connections counted")
    assert check["verdict"] == "ok", check
    assert "from 2 addresses, 0 from a gateway" in check["detail"], check


def test_doctor_warns_behind_published_ports(relay):
    """The session relay publishes its ports on 127.0.0.1: its clients arrive from the
    gateway (docker-proxy)."""
    ctx = insecure_tls()
    held = []
    try:
        for _ in range(3):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", relay.port(993)), 10))
            s.recv(100)
            held.append(s)

        def counted():
            check = doctor_check(relay.name)
            return check if check["verdict"] != "skip" else None
        check = wait_for(counted, 20, 0.5, "connections counted")
        assert check["verdict"] == "warn", check
        assert "come from the gateway" in check["detail"] and "compose.host.yaml" in check["advice"]
    finally:
        for s in held:
            s.close()
