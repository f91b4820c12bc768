"""relay-filter's SMTP hooks: the send rate limit refuses MAIL FROM, before any body is sent
(issue 17 §4); the envelope it hands back to Postfix (A-labels)."""

import asyncio
from pathlib import Path

from aiosmtpd.smtp import Envelope

from relay.filter.ratelimit import TokenBucket
from relay.filter.server import RATE_LIMITED, Handler
from relay.settings import load


def mail(handler, address):
    envelope = Envelope()
    reply = asyncio.run(handler.handle_MAIL(None, None, envelope, address, ["BODY=8BITMIME"]))
    return reply, envelope


def test_mail_refused_once_the_bucket_is_empty():
    settings = load({"MAIL_DOMAIN": "chat.example.org"})
    now = [0.0]
    handler = Handler("outgoing", settings, TokenBucket(60, 2, clock=lambda: now[0]), Path("/x"))
    for _ in range(2):
        reply, envelope = mail(handler, "a@chat.example.org")
        assert reply == "250 OK" and envelope.mail_from == "a@chat.example.org"
        assert envelope.mail_options == ["BODY=8BITMIME"]
    reply, envelope = mail(handler, "A@chat.example.org")  # the same sender, in any case
    assert reply == RATE_LIMITED and reply.startswith("450 4.7.1 ")
    assert envelope.mail_from is None
    assert mail(handler, "b@chat.example.org")[0] == "250 OK"  # others are not slowed down
    now[0] += 1.0  # one token a second
    assert mail(handler, "a@chat.example.org")[0] == "250 OK"


def test_incoming_has_no_send_limit():
    settings = load({"MAIL_DOMAIN": "chat.example.org"})
    handler = Handler("incoming", settings, None, Path("/x"))
    assert all(mail(handler, "x@other.example")[0] == "250 OK" for _ in range(50))


def test_internationalised_domains_go_on_as_a_labels():
    from relay.filter.server import ascii_domain
    assert ascii_domain("jörg@bücher.example") == "jörg@xn--bcher-kva.example"
    assert ascii_domain("a@b.example") == "a@b.example"
    assert ascii_domain("a@[192.0.2.1]") == "a@[192.0.2.1]"
    assert ascii_domain("") == ""
