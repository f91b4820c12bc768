"""Relay A and a peer that answers /mxdeliv as the reference relays do (filtermail 0.7:
plain 200 "250 OK", 400 with the SMTP reply for every refusal, no marker header; real
Postfix and Dovecot behind it: tests/support/refpeer.py), and a catch-all web site on an
MX host that only takes mail over SMTP. Also POST /mxdeliv as the reference relays send
it to ours: no X-Mail-From for the null sender, the path /mxdeliv/."""

from __future__ import annotations

import re
import secrets

import pytest

import corpus_tools as ct
from fednet import (CLASSIC_DOMAIN, CLASSIC_SELECTOR, CLASSIC_USER, dkim_sign, existing_account,
                    post_mxdeliv, wait_log)
from refpeer import REF_DOMAIN, REF_MX, REFUSALS, WEB_DOMAIN, WEB_MX
from relaytest import docker, submit, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def peer(fed):
    return fed.peers["ref"]


@pytest.fixture(scope="module")
def alice(fed):
    return existing_account(fed.a)


def message(sender: str, recipient: str, marker: str, dots: bool = False) -> bytes:
    """An encrypted message (corpus) with its own Message-ID <marker@relay-a.test>; with
    ``dots``, its MIME preamble holds a line of a lone dot and one that starts with two,
    which only survive a hop when the body travels in SMTP transmission form."""
    body = ct.load_case("enc_one_pkesk.eml", sender, recipient)[2]
    body = re.sub(rb"Message-ID: <[^>]*>", f"Message-ID: <{marker}@relay-a.test>".encode(), body)
    if dots:
        body = body.replace(b"This is an OpenPGP/MIME", b".\r\n..This is an OpenPGP/MIME", 1)
        assert b"\r\n.\r\n..This" in body
    return body


def sent_line(fed, rcpt: str, status: str) -> str:
    return wait_log(fed.a, rf"to=<{re.escape(rcpt)}>.*status={status}", 60)[-1]


def test_a_message_to_a_reference_relay_is_stored_once_over_https(fed, peer, alice):
    marker = secrets.token_hex(8)
    rcpt = f"dave{secrets.token_hex(3)}@{REF_DOMAIN}"
    submit(fed.a, alice, [rcpt], message(alice["email"], rcpt, marker, dots=True))
    line = sent_line(fed, rcpt, "sent")
    assert f"250 2.0.0 Ok: delivered via https to {REF_MX}" in line, line
    # Postfix logged the delivery after relay-mxsend's reply, so any SMTP re-send would
    # already have happened: one stored copy, handed over by the /mxdeliv server only.
    stored = peer.stored(marker)
    assert len(stored) == 1, stored
    assert peer.smtp_clients(f"<{marker}@relay-a.test>") == [
        "postfix/reinject/smtpd localhost[127.0.0.1]"]
    posts = peer.https_requests(REF_MX, marker)
    assert len(posts) == 1 and posts[0].endswith("-> 200 250 OK"), posts
    assert f"from=<{alice['email']}> to=1" in posts[0]
    # The dot lines arrived as they were written (dot-stuffed on the wire, unstuffed by
    # the peer's Postfix), so the DKIM signature over them still holds.
    copy = docker("exec", peer.container, "cat", stored[0]).stdout
    assert "\n.\n..This is an OpenPGP/MIME" in copy.replace("\r\n", "\n")
    assert "DKIM-Signature:" in copy


def test_a_permanent_refusal_bounces_with_the_peers_text(fed, peer, alice):
    marker = secrets.token_hex(8)
    rcpt = f"refused550@{REF_DOMAIN}"
    before = len(fed.a.mailbox_files(alice["email"]))
    submit(fed.a, alice, [rcpt], message(alice["email"], rcpt, marker))
    line = sent_line(fed, rcpt, "bounced")
    assert REFUSALS["refused550"] == "550 5.1.1 No such user here"
    want = f"550 5.1.1 <{rcpt}>: Recipient address rejected: No such user here"
    assert want in line and f"(from {REF_MX} via https)" in line, line
    # The peer answered 400 with its Postfix's reply; nothing went on to SMTP.
    posts = peer.https_requests(REF_MX, marker)
    assert len(posts) == 1 and f"-> 400 {want}" in posts[0], posts
    assert peer.stored(marker) == [] and peer.smtp_clients(f"<{marker}@relay-a.test>") == []
    # The sender gets the bounce (a DSN from relay A) with the peer's reply in it.
    wait_for(lambda: len(fed.a.mailbox_files(alice["email"])) > before, 60, 0.3, "the bounce")
    dsn = fed.a.mailbox_grep(alice["email"], "No such user here")
    assert dsn, "no DSN naming the refusal in the sender's mailbox"


def test_a_temporary_refusal_is_deferred_not_bounced(fed, peer, alice):
    marker = secrets.token_hex(8)
    rcpt = f"later451@{REF_DOMAIN}"
    submit(fed.a, alice, [rcpt], message(alice["email"], rcpt, marker))
    line = sent_line(fed, rcpt, "deferred")
    assert f"451 4.3.0 <{rcpt}>: Recipient address rejected: Mailbox busy" in line, line
    assert not re.search(rf"to=<{re.escape(rcpt)}>.*status=(bounced|sent)", fed.a.logs())
    assert len(peer.https_requests(REF_MX, marker)) == 1
    assert peer.stored(marker) == [] and peer.smtp_clients(f"<{marker}@relay-a.test>") == []
    # Out of the queue again (Postfix would retry in a few minutes).
    queue_id = re.search(r"(\w+): to=<", line).group(1)
    fed.a.exec("postsuper", "-d", queue_id)


def test_a_catch_all_web_site_leads_to_smtp_once_and_then_smtp_only(fed, peer, alice):
    first, second = secrets.token_hex(8), secrets.token_hex(8)
    rcpt = f"erin{secrets.token_hex(3)}@{WEB_DOMAIN}"
    before = len(peer.https_requests(WEB_MX))
    submit(fed.a, alice, [rcpt], message(alice["email"], rcpt, first))
    line = sent_line(fed, rcpt, "sent")
    assert f"250 2.0.0 Ok: delivered via smtp to {WEB_MX}" in line, line
    wait_log(fed.a, rf"relay-mxsend: INFO {WEB_DOMAIN}: https to {WEB_MX} failed "
                    rf"\(HTTP 200 text/html\): trying smtp")
    assert len(peer.stored(first, WEB_DOMAIN)) == 1
    assert [c.split()[0] for c in peer.smtp_clients(f"<{first}@relay-a.test>")] == ["postfix/smtpd"]
    assert len(peer.https_requests(WEB_MX)) == before + 1

    # The next message goes straight to SMTP: the web site is not asked again.
    submit(fed.a, alice, [rcpt], message(alice["email"], rcpt, second))
    wait_log(fed.a, rf"to=<{re.escape(rcpt)}>.*status=sent \(250 2\.0\.0 Ok: delivered via smtp",
             after=1)
    wait_log(fed.a, rf"{WEB_DOMAIN}: https to {WEB_MX} skipped \(smtp only since \d+ s\)")
    assert len(peer.stored(second, WEB_DOMAIN)) == 1
    assert len(peer.https_requests(WEB_MX)) == before + 1


def test_the_reference_peer_answers_as_filtermail_and_relay_mxsend_reads_it(fed, peer):
    """The peer's own answers, fetched over the test network and read by the rule
    relay-mxsend uses: 405 for GET (SMTP next), 523 text for a plain message (bounce)."""
    import http.client
    import ssl

    from relay.federation.outbound import media_type, transmission_form
    from relay.federation.replies import HttpAnswer, https_replies

    ctx = ssl.create_default_context(cafile=str(fed.net.extra_ca_file))
    ctx.check_hostname = False  # reached by its address; the Host header names it

    def ask(method: str, headers: dict, body: bytes = b"") -> HttpAnswer:
        conn = http.client.HTTPSConnection(peer.ip, 443, context=ctx, timeout=30)
        conn.request(method, "/mxdeliv", body=body or None, headers={"Host": REF_MX, **headers})
        resp = conn.getresponse()
        answer = HttpAnswer(resp.status, resp.getheader("X-Mxdeliv") is not None,
                            media_type(resp.getheader("Content-Type")), resp.read())
        conn.close()
        return answer

    get = ask("GET", {})
    assert get == HttpAnswer(405, False, "", b"Method Not Allowed")
    assert https_replies(get, ["x@ref.test"], REF_MX) is None
    plain = transmission_form(b"From: <a@relay-a.test>\r\nTo: <x@ref.test>\r\n\r\nhello\r\n")
    refused = ask("POST", {"X-Mail-From": "a@relay-a.test", "X-Mail-To": "x@ref.test"}, plain)
    assert refused == HttpAnswer(400, False, "", b"523 Encryption Needed: Invalid Unencrypted Mail")
    assert https_replies(refused, ["x@ref.test"], REF_MX) == {
        "x@ref.test": f"523 5.0.0 Encryption Needed: Invalid Unencrypted Mail (from {REF_MX} via https)"}


# --- POST /mxdeliv to our relay as the reference relays send it ---------------------------------

def test_inbound_null_sender_without_x_mail_from_on_mxdeliv_slash(fed):
    bob = existing_account(fed.b)
    carol = f"{CLASSIC_USER}@{CLASSIC_DOMAIN}"
    marker = secrets.token_hex(8)
    body = re.sub(rb"Message-ID: <[^>]*>", f"Message-ID: <{marker}@{CLASSIC_DOMAIN}>".encode(),
                  ct.load_case("enc_one_pkesk.eml", carol, bob["email"])[2])
    signed = dkim_sign(body, CLASSIC_DOMAIN, CLASSIC_SELECTOR, fed.classic_dkim_key)
    status, headers, payload = post_mxdeliv(fed.b, signed, [], [bob["email"]], path="/mxdeliv/")
    assert (status, payload.get("accepted")) == (200, [bob["email"]]), (status, payload)
    assert headers.get("X-Mxdeliv") == "1"
    wait_log(fed.b, r"relay-mxdeliv: INFO mxdeliv from <>: 200 \(1 of 1 recipients accepted\)")
    wait_for(lambda: fed.b.mailbox_grep(bob["email"], marker), 30, 0.3, "the message in bob's mailbox")
