"""Our helpers fail in the middle of a transaction: the client gets a temporary
error (never a 250 for mail that is then lost), supervisord starts the helper
again, and the next transaction succeeds. Nothing else restarts.

To hit the middle of a transaction every time, the helper (or the Postfix process
it waits for) is frozen with SIGSTOP, the client's request is observed to be
waiting on it, and then the helper is killed with SIGKILL.
"""

import imaplib
import smtplib
import pytest

from relaytest import insecure_tls, securejoin_request, submit, wait_for
from reliability_tools import (Wire, account, daemon_pids, encrypted, message_ids, smtp_login,
                               smtp_wire, supervised)


@pytest.fixture(scope="module")
def people(sturdy):
    return {"alice": account(sturdy), "bob": account(sturdy)}


@pytest.fixture(scope="module")
def others_before(sturdy):
    """The pids of everything but the helpers these tests kill."""
    return daemon_pids(sturdy)


def pid_of(relay, program: str) -> int:
    def running():
        state, pid = supervised(relay)[program]
        return pid if state == "RUNNING" else None
    return wait_for(running, 30, 0.2, f"{program} running")


def restarted(relay, program: str, old_pid: int) -> int:
    def new_pid():
        state, pid = supervised(relay)[program]
        return pid if state == "RUNNING" and pid != old_pid else None
    return wait_for(new_pid, 30, 0.2, f"{program} running again")


def unix_connections(relay, path_part: str) -> int:
    """Sockets on a UNIX socket path: the listener plus one per accepted or pending
    connection (the kernel lists a pending one before the server accepts it)."""
    table = relay.exec("cat", "/proc/net/unix").stdout.splitlines()
    return sum(1 for line in table if line.endswith(path_part))


def assert_others_unharmed(relay, others_before, killed: set[str]) -> None:
    now = daemon_pids(relay)
    for name, pid in others_before.items():
        if name not in killed:
            assert now[name] == pid, f"{name} restarted"


def test_filter_killed_while_it_holds_a_submitted_message(sturdy, people, others_before):
    """The filter has the whole message and is handing it to Postfix's queue
    (reinject-out, frozen here) when it dies: the client gets 451, nothing is queued."""
    relay, alice, bob = sturdy, people["alice"], people["bob"]
    filter_pid = pid_of(relay, "relay-filter")
    master = relay.exec("cat", "/data/postfix/pid/master.pid").stdout.strip()
    reinjectors = [line.split()[0] for line in relay.exec("ps", "-eo", "pid,args").stdout.splitlines()
                   if "-n reinject-out" in line]
    before = unix_connections(relay, "public/reinject-out")
    smtp = smtp_login(relay, alice)
    assert smtp.mail(alice["email"])[0] == 250
    assert smtp.rcpt(bob["email"])[0] == 250
    assert smtp.docmd("DATA")[0] == 354
    relay.exec("kill", "-STOP", master, *reinjectors)
    try:
        smtp.send(encrypted(alice["email"], bob["email"], "cutfilter") + b"\r\n.\r\n")
        wait_for(lambda: unix_connections(relay, "public/reinject-out") > before, 30, 0.1,
                 "the filter handing the message to Postfix")
        relay.exec("kill", "-KILL", str(filter_pid))
    finally:
        relay.exec("kill", "-CONT", master, *reinjectors)
    code, text = smtp.getreply()
    assert 400 <= code < 500, (code, text)
    smtp.close()
    restarted(relay, "relay-filter", filter_pid)

    submit(relay, alice, [bob["email"]], encrypted(alice["email"], bob["email"], "afterfilter"))
    wait_for(lambda: "afterfilter" in message_ids(relay, bob["email"]), 30, what="next delivery")
    wait_for(lambda: relay.exec("postqueue", "-j").stdout.strip() == "", 30, what="empty queue")
    assert "cutfilter" not in message_ids(relay, bob["email"])
    assert_others_unharmed(relay, others_before, {"relay-filter"})


def test_filter_killed_before_it_answers_another_server(sturdy, people, others_before):
    """Port 25: the filter is frozen when Postfix hands it the message, then dies."""
    relay, bob = sturdy, people["bob"]
    sender = "carol@[192.0.2.1]"  # an IP-literal relay: exempt from the DKIM rule
    filter_pid = pid_of(relay, "relay-filter")
    before = unix_connections(relay, "filter/incoming.sock")
    with smtplib.SMTP("127.0.0.1", relay.port(25), timeout=60) as smtp:
        smtp.starttls(context=insecure_tls())  # port 25 requires STARTTLS
        smtp.ehlo("mx.other.example")
        assert smtp.mail(sender)[0] == 250
        assert smtp.rcpt(bob["email"])[0] == 250
        assert smtp.docmd("DATA")[0] == 354
        relay.exec("kill", "-STOP", str(filter_pid))
        try:
            smtp.send(encrypted(sender, bob["email"], "cutincoming") + b"\r\n.\r\n")
            wait_for(lambda: unix_connections(relay, "filter/incoming.sock") > before, 30, 0.1,
                     "Postfix connecting to the frozen filter")
        finally:
            relay.exec("kill", "-KILL", str(filter_pid))
        code, text = smtp.getreply()
    assert 400 <= code < 500, (code, text)
    restarted(relay, "relay-filter", filter_pid)
    with smtplib.SMTP("127.0.0.1", relay.port(25), timeout=60) as smtp:
        smtp.starttls(context=insecure_tls())  # port 25 requires STARTTLS
        smtp.ehlo("mx.other.example")
        assert not smtp.sendmail(sender, [bob["email"]], encrypted(sender, bob["email"], "afterin"))
    wait_for(lambda: "afterin" in message_ids(relay, bob["email"]), 30, what="next delivery")
    assert "cutincoming" not in message_ids(relay, bob["email"])
    assert_others_unharmed(relay, others_before, {"relay-filter"})


def auth_killed_during(relay, start):
    """Freeze relay-auth, start a request that needs it, see it wait, kill the helper;
    return what the request's client then got."""
    auth_pid = pid_of(relay, "relay-auth")
    relay.exec("kill", "-STOP", str(auth_pid))
    try:
        wire = start()
        assert wire.quiet_for(1.0), "no reply: the request waits for the frozen helper"
    finally:
        relay.exec("kill", "-KILL", str(auth_pid))
    reply = wire.line()
    wire.close()
    restarted(relay, "relay-auth", auth_pid)
    return reply


def test_auth_killed_during_a_recipient_lookup(sturdy, people, others_before):
    """Port 25 asks relay-auth whether the mailbox exists: 451, then it works again."""
    relay, bob = sturdy, people["bob"]

    def start():
        wire = smtp_wire(relay, 25)
        assert wire.command(b"MAIL FROM:<carol@[192.0.2.1]>\r\n").startswith(b"250")
        wire.send(f"RCPT TO:<{bob['email']}>\r\n".encode())
        return wire

    reply = auth_killed_during(relay, start)
    assert reply.startswith(b"451 4.3.0"), reply
    with smtp_wire(relay, 25) as wire:
        assert wire.command(b"MAIL FROM:<carol@[192.0.2.1]>\r\n").startswith(b"250")
        assert wire.command(f"RCPT TO:<{bob['email']}>\r\n".encode()).startswith(b"250")
    assert_others_unharmed(relay, others_before, {"relay-filter", "relay-auth"})


def test_auth_killed_during_an_imap_login(sturdy, people, others_before):
    relay, alice = sturdy, people["alice"]

    def start():
        wire = Wire(relay, 993, tls=True)
        assert wire.line().startswith(b"* OK")
        wire.send(f'a1 LOGIN "{alice["email"]}" "{alice["password"]}"\r\n'.encode())
        return wire

    reply = auth_killed_during(relay, start)
    assert reply.startswith(b"a1 NO [UNAVAILABLE]"), reply  # temporary: the client retries
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    assert im.login(alice["email"], alice["password"])[0] == "OK"
    im.logout()
    assert_others_unharmed(relay, others_before, {"relay-filter", "relay-auth"})


def test_auth_killed_during_an_smtp_login(sturdy, people, others_before):
    """Postfix turns every failure its Dovecot SASL client hears of into 535 (it
    ignores Dovecot's "temporary" flag; only a lost connection to Dovecot gives
    454), so the client sees a failed login, not 235; no mail was accepted, and
    the next login works."""
    relay, alice = sturdy, people["alice"]
    import base64
    token = base64.b64encode(b"\0" + alice["email"].encode() + b"\0" + alice["password"].encode())

    def start():
        wire = smtp_wire(relay, 465)
        wire.send(b"AUTH PLAIN " + token + b"\r\n")
        return wire

    reply = auth_killed_during(relay, start)
    assert reply[:3] in (b"454", b"535"), reply
    submit(relay, alice, [alice["email"]], securejoin_request(alice["email"], alice["email"]))
    assert_others_unharmed(relay, others_before, {"relay-filter", "relay-auth"})
