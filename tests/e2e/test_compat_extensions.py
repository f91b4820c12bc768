"""Every ESMTP extension the relay advertises works end to end (issue 17 §3).

On 25, 465, 587 and 443 (ALPN "smtp") the EHLO keywords are listed, and each is
used: PIPELINING, SIZE (declared at the limit, and above it), 8BITMIME with
8-bit headers, SMTPUTF8 with raw UTF-8 headers and address-free UTF-8 content,
CHUNKING (BDAT), VRFY (252 for every argument, RFC 5321 §7.3), ENHANCEDSTATUSCODES,
AUTH and STARTTLS. A keyword this test does not know fails it: whoever makes the
relay advertise something new must show it works. Each message is delivered to the
mailbox, or refused during the transaction; none is accepted and then bounced.
One real message of nearly MAX_MESSAGE_SIZE goes through 465 (declared SIZE =
the limit): delivered.
"""

import secrets
import time

import pytest

from compat_mail import EXTERNAL, accounts, big_message, bounce_lines, message, tokens_in_mailbox
from relaytest import logs_since, wait_for
from smtpwire import Wire

PORTS = (25, 465, 587, 443)
SUBMISSION = (465, 587, 443)
TESTED = {"PIPELINING", "SIZE", "VRFY", "ETRN", "STARTTLS", "AUTH", "ENHANCEDSTATUSCODES",
          "8BITMIME", "SMTPUTF8", "CHUNKING"}
LIMIT = 20 * 1024 * 1024  # MAX_MESSAGE_SIZE of the session relay (tests/conftest.py)


@pytest.fixture(scope="module")
def people(relay):
    """Recipients bob (submitted mail) and dave (mail from other servers), and one sender
    per submission port and one for the large message: each stays within the send
    rate limit's burst (10)."""
    bob, dave, *senders = accounts(relay, 2 + len(SUBMISSION) + 1)
    return bob, dave, dict(zip([*SUBMISSION, "big"], senders))


def test_ehlo_keywords_are_all_known(relay, people):
    for port in PORTS:
        with Wire.connect(relay, port) as wire:
            unknown = set(wire.keywords) - TESTED
            assert not unknown, f"port {port} advertises {unknown}: add them to this test"
            assert "ETRN" not in wire.keywords, "ETRN flushes queues for dial-up MX hosts"
            assert "DSN" not in wire.keywords  # the proxy filter takes no NOTIFY/ORCPT


def use_each(relay, wire: Wire, port: int, sender: str, rcpt: str, sent: dict) -> None:
    """One transaction per advertised keyword; accepted ones are recorded in ``sent``."""
    kw = wire.keywords

    def send(name, head, **opts):
        token = f"compat-{secrets.token_hex(6)}"
        res = wire.send(sender, [rcpt], message(token, head), **opts)
        assert res.accepted, (port, name, res)
        sent[(port, name)] = (rcpt, token, time.time())

    plain = [f"From: <{sender}>".encode(), f"To: <{rcpt}>".encode(), b"Subject: [...]"]
    if "PIPELINING" in kw:
        send("PIPELINING", plain, pipelined=True)
    if "CHUNKING" in kw:
        send("CHUNKING", plain, bdat=True, chunk=1000)
        send("CHUNKING+PIPELINING", plain, bdat=True, pipelined=True)
    if "8BITMIME" in kw:
        send("8BITMIME", [b"From: J\xf6rg <" + sender.encode() + b">", f"To: {rcpt}".encode(),
                          b"Subject: Gr\xfc\xdfe aus K\xf6ln"], options=["BODY=8BITMIME"])
    if "SMTPUTF8" in kw:
        send("SMTPUTF8", [f"From: Jörg Müller 😀 <{sender}>".encode(), f"To: {rcpt}".encode(),
                          "Subject: Grüße aus Köln, 東京".encode(),
                          "X-Note: ünïcödé, no address in here".encode()],
             options=["SMTPUTF8", "BODY=8BITMIME"])
    if "SMTPUTF8" in kw and port == 25:  # another server's user with a UTF-8 local part
        utf8_sender = "jörg.müller@[192.0.2.1]"
        token = f"compat-{secrets.token_hex(6)}"
        res = wire.send(utf8_sender, [rcpt], message(token, [
            f"From: Jörg <{utf8_sender}>".encode(), f"To: {rcpt}".encode()]),
            options=["SMTPUTF8", "BODY=8BITMIME"])
        assert res.accepted, (port, "SMTPUTF8 envelope", res)
        sent[(port, "SMTPUTF8 envelope")] = (rcpt, token, time.time())
    if "SIZE" in kw:
        assert int(kw["SIZE"]) == LIMIT, kw["SIZE"]
        code, _ = wire.command(f"MAIL FROM:<{sender}> SIZE={LIMIT}".encode())
        assert code == 250
        wire.rset()
        code, text = wire.command(f"MAIL FROM:<{sender}> SIZE={LIMIT + 1}".encode())
        assert code == 552 and text.startswith("5.3.4"), (port, code, text)
    if "VRFY" in kw:
        for arg in (rcpt, f"nobody{secrets.token_hex(3)}@{relay.domain}", "postmaster",
                    "someone@example.org", rcpt.split("@")[0]):
            code, text = wire.command(f"VRFY {arg}".encode())
            assert code == 252 and text.startswith("2.0.0"), (port, arg, code, text)
    if "ENHANCEDSTATUSCODES" in kw:
        code, text = wire.command(b"NOOP")
        assert code == 250 and text.startswith("2.0.0"), (code, text)


def test_every_advertised_extension_works_on_every_port(relay, people):
    bob, dave, senders = people
    start = time.time() - 1
    sent: dict = {}
    for port in PORTS:
        with Wire.connect(relay, port) as wire:
            if port in SUBMISSION:
                assert "AUTH" in wire.keywords
                alice = senders[port]
                wire.login(alice["email"], alice["password"])
                use_each(relay, wire, port, alice["email"], bob["email"], sent)
            else:
                use_each(relay, wire, port, EXTERNAL, dave["email"], sent)
    # SIZE at the limit, for real: declared as the limit, a message just below it
    alice = senders["big"]
    token = f"compat-{secrets.token_hex(6)}"
    data = big_message(token, [f"From: <{alice['email']}>".encode(),
                               f"To: <{bob['email']}>".encode()], LIMIT - 256 * 1024)
    with Wire.connect(relay, 465) as wire:
        wire.login(alice["email"], alice["password"])
        res = wire.send(alice["email"], [bob["email"]], data, options=[f"SIZE={LIMIT}"])
    assert res.accepted, res
    sent[(465, "SIZE at the limit")] = (bob["email"], token, time.time())

    arrived: dict = {}  # key -> when Dovecot wrote the file

    def all_there():
        for address in (bob["email"], dave["email"]):
            found = tokens_in_mailbox(relay, address)
            for key, (addr, tok, _) in sent.items():
                if addr == address and tok in found:
                    arrived[key] = found[tok][1]
        return len(arrived) == len(sent)

    wait_for(all_there, 20, 0.3, "every accepted message in its mailbox")
    late = {k: round(arrived[k] - v[2], 1) for k, v in sent.items() if arrived[k] - v[2] > 10}
    assert not late, late
    assert not bounce_lines(logs_since(relay, start), [bob["email"], dave["email"]])


def test_postmaster_is_refused_at_rcpt_not_bounced(relay, people):
    """Postfix takes a bare "postmaster" whatever its maps say; there is no such mailbox
    here, so the RCPT is refused, as postmaster@domain is (never 250, then a bounce)."""
    bob, dave, senders = people
    for port in (25, 465):
        with Wire.connect(relay, port) as wire:
            sender = EXTERNAL
            if port == 465:
                sender = senders[465]["email"]
                wire.login(sender, senders[465]["password"])
            for rcpt in ("postmaster", "Postmaster", f"postmaster@{relay.domain}"):
                res = wire.send(sender, [rcpt], message("compat-none", [b"To: postmaster"]))
                assert res.stage == "RCPT" and res.code == 550, (port, rcpt, res)
