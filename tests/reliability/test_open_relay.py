"""Never an open relay, no backscatter, authentication only after TLS, and failed
logins slowed down without locking anybody out.

Port 25 takes mail only for mailboxes that exist here; every other recipient,
however it is disguised, is refused at RCPT time, so nothing is ever accepted and
then bounced to a forged sender.
"""

import base64
import imaplib
import smtplib
import time

import pytest

from relaytest import insecure_tls, securejoin_request, submit, wait_for
from reliability_tools import smtp_wire

EXTERNAL_SENDER = "carol@[192.0.2.1]"

# {domain}: the relay's domain; {ip}: the container's own address; {user}: an existing
# account's local part. None of these is a mailbox of this relay.
RELAY_TRICKS = [
    "user@other.example",
    "{user}@other.example",
    "user%other.example@{domain}",
    "{user}%other.example@{domain}",
    "other.example!user@{domain}",
    "user%other.example@[{ip}]",
    "other.example!user@[{ip}]",
    '"user@other.example"@{domain}',
    '"user%other.example"@{domain}',
    "@a.example,@b.example:user@other.example",
    "@{domain}:user@other.example",
    "user@[192.0.2.1]",
    "user@[127.0.0.1]",
    "user@[IPv6:::1]",
    "user@[{ip}]",
    "{user}@[{ip}]",
    "user@localhost",
    "user@{domain}.other.example",
    "user@sub.{domain}",
    "user@{domain}@other.example",
]
UNKNOWN_LOCAL = [
    "nosuchuser@{domain}",
    "postmaster@{domain}",
    "postmaster",  # bare: Postfix would take it whatever the maps say (issue 17)
    "root@{domain}",
    "{user}+tag@{domain}",
    "{user}.x@{domain}",
]


@pytest.fixture(scope="module")
def setting(relay):
    acct = relay.new_account()
    submit(relay, acct, [acct["email"]], securejoin_request(acct["email"], acct["email"]))
    ip = relay.exec("hostname", "-i").stdout.split()[0]
    return {"domain": relay.domain, "ip": ip, "user": acct["email"].split("@")[0], "acct": acct}


def rcpt_reply(relay, recipient: str, starttls: bool) -> tuple[int, bytes, int | None]:
    """(RCPT reply code, its text, the reply code to DATA after a refused RCPT) of one
    port 25 transaction."""
    with smtplib.SMTP("127.0.0.1", relay.port(25), timeout=30) as smtp:
        smtp.ehlo("mx.other.example")
        if starttls:
            smtp.starttls(context=insecure_tls())
            smtp.ehlo("mx.other.example")
        code, text = smtp.mail(EXTERNAL_SENDER)
        if not starttls:  # port 25 requires STARTTLS (SPEC 6): refused before any RCPT
            return code, text, None
        assert code == 250
        code, text = smtp.docmd(f"RCPT TO:<{recipient}>")
        if code == 250:
            smtp.rset()
            return code, text, None
        return code, text, smtp.docmd("DATA")[0]


@pytest.mark.parametrize("starttls", [False, True], ids=["plain", "starttls"])
@pytest.mark.parametrize("template", RELAY_TRICKS)
def test_relay_attempts_refused_at_rcpt(relay, setting, template, starttls):
    recipient = template.format(**setting)
    code, text, data_code = rcpt_reply(relay, recipient, starttls)
    assert 500 <= code < 600, (recipient, code, text)
    if starttls:
        assert data_code == 554, "DATA without a valid recipient is refused: nothing can be queued"
    else:
        assert code == 530 and b"STARTTLS" in text, (code, text)


@pytest.mark.parametrize("template", UNKNOWN_LOCAL)
def test_unknown_local_recipient_refused_at_rcpt(relay, setting, template):
    """No accept-then-bounce: a mailbox that does not exist is refused while the
    sending server is still connected (so no bounce goes to a forged sender)."""
    code, text, _ = rcpt_reply(relay, template.format(**setting), starttls=True)
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)


def test_existing_mailbox_accepted_as_control(relay, setting):
    address = setting["acct"]["email"]
    assert rcpt_reply(relay, address, starttls=True)[0] == 250
    assert rcpt_reply(relay, address.upper(), starttls=True)[0] == 250


def test_nothing_was_queued_or_bounced(relay, setting):
    """After all the refused attempts above: no bounce, nothing deferred for later."""
    wait_for(lambda: relay.exec("postqueue", "-j").stdout.strip() == "", 30, what="empty queue")
    logs = relay.logs()
    assert "status=bounced" not in logs.replace("undeliverable postmaster notification", "")
    assert "other.example" not in relay.exec("sh", "-c", "ls /data/mail").stdout


@pytest.mark.parametrize("port", [465, 587, 443])
def test_submission_without_login_refused(relay, setting, port):
    """The submission ports relay nothing for a client that has not logged in."""
    wire = smtp_wire(relay, port, tls=True, alpn=["smtp"] if port == 443 else None)
    with wire:
        mail = wire.command(f"MAIL FROM:<{setting['acct']['email']}>\r\n".encode())
        replies = [mail]
        for recipient in ("user@other.example", setting["acct"]["email"]):
            replies.append(wire.command(f"RCPT TO:<{recipient}>\r\n".encode()))
        replies.append(wire.command(b"DATA\r\n"))
    assert all(r[:1] == b"5" for r in replies[1:]), replies
    assert not any(r.startswith(b"354") for r in replies)


def auth_plain(acct: dict, password: str | None = None) -> bytes:
    secret = password if password is not None else acct["password"]
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + acct["email"].encode() + b"\0"
                                              + secret.encode()) + b"\r\n"


def test_no_authentication_before_tls_on_587(relay, setting):
    with smtp_wire(relay, 587) as wire:
        wire.send(b"EHLO client.example\r\n")
        capabilities = []
        while (line := wire.line())[3:4] == b"-":
            capabilities.append(line)
        capabilities.append(line)
        assert not any(b"AUTH" in c for c in capabilities)
        # even with the right password, AUTH in clear text is refused
        reply = wire.command(auth_plain(setting["acct"]))
        assert reply.startswith(b"5") and not reply.startswith(b"235"), reply


def test_no_authentication_on_port_25_even_after_tls(relay, setting):
    with smtplib.SMTP("127.0.0.1", relay.port(25), timeout=30) as smtp:
        smtp.ehlo("mx.other.example")
        smtp.starttls(context=insecure_tls())
        smtp.ehlo("mx.other.example")
        assert not smtp.has_extn("auth")
        code, _ = smtp.docmd(auth_plain(setting["acct"]).decode().strip())
        assert code == 503


def timed(fn):
    start = time.monotonic()
    try:
        result = fn()
    except Exception as exc:  # the failure is the expected outcome here
        result = exc
    return result, time.monotonic() - start


def test_failed_logins_are_slowed_down_and_others_still_log_in(relay, setting):
    """Each failed attempt costs the client 2 s on its connection (Dovecot's
    auth_failure_delay, which also answers SMTP AUTH); there is no penalty per IP
    address, so a correct login from the same address right after still works
    (in this test every client shares the Docker bridge address, as many users
    behind one NAT do)."""
    acct = setting["acct"]
    # Dovecot counts the delay in whole seconds (src/auth/auth-request-handler.c: ioloop_time
    # minus the request's last_access, checked every 500 ms), so a 2 s delay ends between a
    # little over 1 s and 2.5 s after the attempt: more than 1 s is what it guarantees.
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    for _ in range(3):
        result, took = timed(lambda: im.login(acct["email"], "not-the-password"))
        assert isinstance(result, imaplib.IMAP4.error) and b"AUTHENTICATIONFAILED" in str(result).encode()
        assert took > 1.0, took
    im.shutdown()

    with smtp_wire(relay, 465) as wire:
        for _ in range(2):
            reply, took = timed(lambda: wire.command(auth_plain(acct, "not-the-password")))
            assert reply.startswith(b"535"), reply
            assert took > 1.0, took

    # right after: the same account and another one log in on both protocols
    other = relay.new_account()
    for who in (acct, other):
        im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
        assert im.login(who["email"], who["password"])[0] == "OK"
        im.logout()
        with smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(), timeout=30) as s:
            assert s.login(who["email"], who["password"])[0] == 235
