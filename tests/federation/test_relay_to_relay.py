"""Delta Chat users on two relays chat across the federation: over HTTPS /mxdeliv, and
over SMTP with STARTTLS when HTTPS is down. Each test shows the path from the logs:
the sending relay's Postfix logs the reply of relay.federation.mxsend, which names the path."""

from __future__ import annotations

import re

import pytest

from fednet import A_HOST, B_HOST, wait_log
from relaytest import wait_for

pytestmark = pytest.mark.slow


def receive(account, text: str):
    msg = account.wait_for_incoming_msg().get_snapshot()
    assert (msg.text, msg.show_padlock) == (text, True)
    return msg


def chat_has(chat, text: str) -> bool:
    return any(m.get_snapshot().text == text and m.get_snapshot().show_padlock
               for m in chat.get_messages())


def sent_line(relay, recipient: str, path: str, host: str, after: int = 0) -> str:
    """Postfix's log line for a delivery to ``recipient`` that relay.federation.mxsend made by ``path``."""
    pattern = (rf"to=<{re.escape(recipient)}>.*status=sent \(250 2\.0\.0 Ok: delivered via "
               rf"{path} to {re.escape(host)}\)")
    return wait_log(relay, pattern, 60, after)[-1]


def addr(account) -> str:
    return account.self_contact.get_snapshot().address


def test_chat_both_ways_over_https(fed, make_account):
    alice, bob = make_account(fed.a), make_account(fed.b)
    alice.create_chat(bob).send_text("hello bob, via https")
    receive(bob, "hello bob, via https")
    bob.create_chat(alice).send_text("hello alice, via https")
    receive(alice, "hello alice, via https")

    print("\nA:", sent_line(fed.a, addr(bob), "https", fed.b.domain))
    print("B:", sent_line(fed.b, addr(alice), "https", fed.a.domain))
    # The receivers' side of it: POST /mxdeliv answered 200 after Postfix queued it, which
    # the filter allows only with a valid DKIM signature of relay A (B looked up A's key).
    wait_log(fed.b, r"relay-mxdeliv: INFO mxdeliv from relay-a\.test: 200")
    wait_log(fed.a, r"relay-mxdeliv: INFO mxdeliv from relay-b\.test: 200")


def test_group_spanning_both_relays(fed, make_account):
    a1, a2, b1 = make_account(fed.a), make_account(fed.a), make_account(fed.b)
    group = a1.create_group("across relays")
    group.add_contact(a1.create_contact(a2))
    group.add_contact(a1.create_contact(b1))
    group.send_text("hi group")
    b_msg = receive(b1, "hi group")
    a2_msg = receive(a2, "hi group")
    sent_line(fed.a, addr(b1), "https", fed.b.domain)

    before = len(re.findall(r"mxdeliv from relay-b\.test: 200 \(2 of 2", fed.a.logs()))
    b_group = b1.get_chat_by_id(b_msg.chat_id)
    b_group.accept()
    b_group.send_text("reply from relay b")
    a2.get_chat_by_id(a2_msg.chat_id).accept()
    for chat in (group, a2.get_chat_by_id(a2_msg.chat_id)):
        wait_for(lambda: chat_has(chat, "reply from relay b"), 60, 0.2, "the reply, encrypted")
    # Both members on relay A got it from one POST with two X-Mail-To headers.
    wait_log(fed.a, r"mxdeliv from relay-b\.test: 200 \(2 of 2 recipients accepted\)", after=before)
    for member in (a1, a2):
        sent_line(fed.b, addr(member), "https", fed.a.domain)


def test_without_https_the_chat_goes_over_smtp_with_tls(fed, make_account):
    # Accounts come from /new on 443, so they are made before it goes down.
    alice, bob = make_account(fed.a), make_account(fed.b)
    alice_chat, bob_chat = alice.create_chat(bob), bob.create_chat(alice)
    a_ip, b_ip = fed.net.ip(A_HOST), fed.net.ip(B_HOST)
    with fed.https_down():
        b_tls, a_tls = len(tls_lines(fed.b, a_ip)), len(tls_lines(fed.a, b_ip))
        alice_chat.send_text("hello bob, via smtp")
        receive(bob, "hello bob, via smtp")
        bob_chat.send_text("hello alice, via smtp")
        receive(alice, "hello alice, via smtp")

        print("\nA:", sent_line(fed.a, addr(bob), "smtp", fed.b.domain))
        print("B:", sent_line(fed.b, addr(alice), "smtp", fed.a.domain))
        wait_log(fed.a, r"relay-mxsend: INFO relay-b\.test: https to relay-b\.test failed "
                        r"\(ConnectionRefusedError")
        # Each receiving Postfix logged a TLS session from the other relay on port 25
        # (and relay.federation.mxsend refuses to send without STARTTLS and a verified certificate).
        print("B:", wait_for(lambda: tls_lines(fed.b, a_ip)[b_tls:], 30, 0.3,
                             "TLS from relay A in B's log")[-1])
        print("A:", wait_for(lambda: tls_lines(fed.a, b_ip)[a_tls:], 30, 0.3,
                             "TLS from relay B in A's log")[-1])
    # TLS session logging (smtpd_tls_loglevel=1 on port 25) shows no mail content.
    for relay in (fed.a, fed.b):
        assert "BEGIN PGP MESSAGE" not in relay.logs() and "Chat-Version" not in relay.logs()


def tls_lines(relay, client_ip: str) -> list[str]:
    return [line for line in relay.logs().splitlines()
            if re.search(rf"postfix/smtpd\[\d+\]: \w+ TLS connection established from "
                         rf"\S*\[{re.escape(client_ip)}\]: TLSv1\.[23] ", line)]
