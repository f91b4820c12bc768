"""POST /mxdeliv on relay B, as another relay would send it: what it refuses and why, and
its DKIM check of relay A's signatures through the test DNS."""

from __future__ import annotations

import secrets

import pytest

import corpus_tools as ct
from fednet import (CLASSIC_DOMAIN, CLASSIC_USER, dkim_sign, existing_account, post_mxdeliv,
                    wait_log)
from relaytest import submit, wait_for

pytestmark = pytest.mark.slow

MAX = 2 * 1024 * 1024  # MAX_MESSAGE_SIZE of the federation's relays


@pytest.fixture(scope="module")
def bob(fed):
    return existing_account(fed.b)


def encrypted(sender: str, recipient: str) -> bytes:
    return ct.load_case("enc_one_pkesk.eml", sender, recipient)[2]


def assert_answer(answer, status: int, error: str = ""):
    code, headers, payload = answer
    assert code == status, (code, payload)
    assert headers.get("X-Mxdeliv") == "1", headers  # a relay's answer, not a web server's
    assert error in payload.get("error", ""), payload


def test_unencrypted_body_is_403(fed, bob):
    sender = f"someone@{fed.a.domain}"
    plain = (f"From: <{sender}>\r\nTo: <{bob['email']}>\r\nSubject: hi\r\n"
             f"Message-ID: <{secrets.token_hex(6)}@relay-a.test>\r\n\r\nplain text\r\n").encode()
    assert_answer(post_mxdeliv(fed.b, plain, [sender], [bob["email"]]), 403,
                  "523 Encryption Needed: Invalid Unencrypted Mail")


def test_unknown_recipient_is_404(fed, bob):
    sender = f"someone@{fed.a.domain}"
    nobody = f"zz{secrets.token_hex(3)}@{fed.b.domain}"
    code, _, payload = post_mxdeliv(fed.b, encrypted(sender, nobody), [sender], [nobody])
    assert code == 404
    assert payload["refused"][nobody].startswith("550 5.1.1 ")
    # A recipient of another domain is no valid recipient here either (no relaying).
    other = f"carol@{CLASSIC_DOMAIN}"
    assert post_mxdeliv(fed.b, encrypted(sender, other), [sender], [other])[0] == 404


@pytest.mark.parametrize("mail_from,mail_to,why", [
    (["a@relay-a.test", "b@relay-a.test"], ["{bob}"], "X-Mail-From"),
    (["a@relay-a.test"], [], "X-Mail-To"),
    (["not an address"], ["{bob}"], "X-Mail-From"),
])
def test_missing_or_bad_headers_are_400(fed, bob, mail_from, mail_to, why):
    mail_to = [v.replace("{bob}", bob["email"]) for v in mail_to]
    assert_answer(post_mxdeliv(fed.b, encrypted("a@relay-a.test", bob["email"]), mail_from,
                               mail_to), 400, why)


def test_oversized_bodies_are_413(fed, bob):
    sender = f"someone@{fed.a.domain}"
    # Far above the limit: nginx refuses it without reading it.
    assert_answer(post_mxdeliv(fed.b, b"x" * 1024, [sender], [bob["email"]], length=MAX + 1024 * 1024),
                  413)
    # Just above: Postfix's message_size_limit refuses it (552), relay.federation.mxdeliv says 413.
    big = encrypted(sender, bob["email"]) + (b"f" * 998 + b"\r\n") * (MAX // 1000 + 8)
    assert MAX < len(big) < MAX + 64 * 1024
    assert_answer(post_mxdeliv(fed.b, big, [sender], [bob["email"]]), 413, "552")


def test_no_or_bad_dkim_signature_is_403(fed, bob):
    sender = f"someone@{fed.a.domain}"
    body = encrypted(sender, bob["email"])
    assert_answer(post_mxdeliv(fed.b, body, [sender], [bob["email"]]), 403,
                  "No DKIM signature found")
    # Signed for relay-a.test with the right selector, but not with relay A's key.
    forged_key = rsa_key()
    forged = dkim_sign(body, fed.a.domain, "chatmail", forged_key)
    assert_answer(post_mxdeliv(fed.b, forged, [sender], [bob["email"]]), 403,
                  "No valid DKIM signature")


def rsa_key() -> bytes:
    import subprocess
    return subprocess.run(["openssl", "genrsa", "2048"], check=True, capture_output=True).stdout


def test_b_checks_a_signature_through_dns(fed, bob):
    """A message relay A signed (caught at the classic server, where it arrives as sent)
    is accepted by B as it is, and refused once a byte of it changes."""
    alice = existing_account(fed.a)
    carol = f"{CLASSIC_USER}@{CLASSIC_DOMAIN}"
    marker = secrets.token_hex(6)
    body = encrypted(alice["email"], carol).replace(b"Message-ID: <", f"Message-ID: <{marker}".encode(), 1)
    submit(fed.a, alice, [carol], body)
    signed = wait_for(lambda: [m for m in fed.classic_messages() if marker.encode() in m], 60, 0.3,
                      "relay A's message at the classic server")[0]
    signed = signed[signed.index(b"DKIM-Signature:"):]  # drop the classic server's trace headers
    signed = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"d=relay-a.test" in signed

    before = len(fed.b.mailbox_files(bob["email"]))
    assert_answer(post_mxdeliv(fed.b, signed, [alice["email"]], [bob["email"]]), 200)
    wait_for(lambda: len(fed.b.mailbox_files(bob["email"])) > before, 30, 0.2, "delivered to bob")

    tampered = signed.replace(b"Subject: [...]", b"Subject: [..,]", 1)
    assert tampered != signed
    assert_answer(post_mxdeliv(fed.b, tampered, [alice["email"]], [bob["email"]]), 403,
                  "No valid DKIM signature")


def test_mail_from_a_with_a_broken_signature_is_refused_by_b(fed, bob):
    """With another key published for relay A's selector, B refuses what A sends, and A
    bounces it to the sender; with the right key back, the same mail goes through."""
    alice = existing_account(fed.a)
    fed.publish(fed.a.domain, dkim_value="v=DKIM1; k=rsa; p=" + public_b64(rsa_key()))
    try:
        submit(fed.a, alice, [bob["email"]], encrypted(alice["email"], bob["email"]))
        line = wait_log(fed.a, rf"to=<{bob['email']}>.*status=bounced", 60)[-1]
        assert "550 5.7.1 Refused by relay-b.test (https)" in line and "No valid DKIM" in line, line
        # The bounce reaches the sender's mailbox (signed by A, delivered locally).
        wait_for(lambda: fed.a.mailbox_files(alice["email"]), 60, 0.3, "the bounce to alice")
    finally:
        fed.publish(fed.a.domain)
    before = len(fed.b.mailbox_files(bob["email"]))
    submit(fed.a, alice, [bob["email"]], encrypted(alice["email"], bob["email"]))
    wait_for(lambda: len(fed.b.mailbox_files(bob["email"])) > before, 60, 0.3, "delivered to bob")


def public_b64(private_pem: bytes) -> str:
    import base64
    import subprocess
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=private_pem,
                         check=True, capture_output=True).stdout
    return base64.b64encode(der).decode()
