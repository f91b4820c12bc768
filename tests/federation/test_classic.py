"""A classic mail server (Debian's Postfix, classic.test) and the relays, both ways."""

from __future__ import annotations

import re
import secrets
import smtplib

import dkim
import pytest

import corpus_tools as ct
from fednet import (A_HOST, CLASSIC_DOMAIN, CLASSIC_HOST, CLASSIC_SELECTOR, CLASSIC_USER,
                    autocrypt_header, dkim_sign, existing_account, gpg_encrypt, openpgp_mime,
                    vcard_key, wait_log)
from relaytest import submit, wait_for

pytestmark = pytest.mark.slow

CAROL = f"{CLASSIC_USER}@{CLASSIC_DOMAIN}"


def classic_status(fed, recipient: str, status: str) -> str:
    pattern = re.compile(rf"postfix/smtp\[\d+\]: \w+: to=<{re.escape(recipient)}>.*status={status}")
    return wait_for(lambda: [line for line in fed.classic_logs().splitlines() if pattern.search(line)],
                    60, 0.3, f"the classic server's delivery to {recipient}: {status}")[-1]


def test_plain_mail_from_a_classic_server_is_refused_with_523(fed):
    alice = existing_account(fed.a)
    msg = (f"From: <{CAROL}>\r\nTo: <{alice['email']}>\r\nSubject: hello\r\n"
           f"Message-ID: <{secrets.token_hex(6)}@{CLASSIC_DOMAIN}>\r\n\r\nplain text\r\n").encode()
    fed.classic_send(CAROL, alice["email"], dkim_sign(msg, CLASSIC_DOMAIN, CLASSIC_SELECTOR,
                                                      fed.classic_dkim_key))
    line = classic_status(fed, alice["email"], "bounced")
    assert "said: 523 Encryption Needed: Invalid Unencrypted Mail" in line, line
    assert fed.a.mailbox_files(alice["email"]) == []


def texts(account) -> set[str]:
    return {m.get_snapshot().text for chat in account.get_chatlist() for m in chat.get_messages()}


def test_encrypted_dkim_signed_mail_from_a_classic_server_is_delivered(fed, make_account):
    """Built like a classic OpenPGP client does (GnuPG: signed, encrypted to alice's key from
    her vCard, Autocrypt header), DKIM-signed for classic.test with the key in the test DNS."""
    alice = make_account(fed.a)
    address = alice.self_contact.get_snapshot().address
    text = f"hello from classic.test {secrets.token_hex(4)}"
    inner = f"Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n".encode()
    armored, carol_key = gpg_encrypt(vcard_key(alice.self_contact.make_vcard()), inner, CAROL)
    msg = openpgp_mime(CAROL, address, armored, secrets.token_hex(8),
                       (autocrypt_header(CAROL, carol_key),))
    fed.classic_send(CAROL, address, dkim_sign(msg, CLASSIC_DOMAIN, CLASSIC_SELECTOR,
                                               fed.classic_dkim_key))
    line = classic_status(fed, address, "sent")
    assert "(250 2.0.0 Ok: queued)" in line, line
    # Delta Chat decrypts it with its own key and checks carol's signature.
    got = wait_for(lambda: [m for m in messages(alice) if m.text == text], 60, 0.5,
                   "the decrypted text in alice's Delta Chat")[0]
    assert got.show_padlock


def messages(account) -> list:
    return [m.get_snapshot() for chat in account.get_chatlist() for m in chat.get_messages()]


def test_relay_user_to_classic_server_only_encrypted_and_dkim_signed(fed):
    alice = existing_account(fed.a)
    plain = (f"From: <{alice['email']}>\r\nTo: <{CAROL}>\r\nSubject: hi\r\n\r\nplain\r\n").encode()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(fed.a, alice, [CAROL], plain)
    assert refused.value.smtp_code == 523

    marker = secrets.token_hex(6)
    body = ct.load_case("enc_one_pkesk.eml", alice["email"], CAROL)[2].replace(
        b"Message-ID: <", f"Message-ID: <{marker}".encode(), 1)
    submit(fed.a, alice, [CAROL], body)
    got = wait_for(lambda: [m for m in fed.classic_messages() if marker.encode() in m], 60, 0.3,
                   "the message in carol's mailbox")[0]
    # No HTTPS at the classic server: SMTP with STARTTLS, its certificate verified.
    line = wait_log(fed.a, rf"to=<{CAROL}>.*status=sent \(250 2\.0\.0 Ok: delivered via smtp to "
                           rf"mail\.classic\.test\)")[-1]
    print("\nA:", line)
    assert re.search(r"Anonymous TLS connection established from \S+\[" + re.escape(fed.net.ip(A_HOST)),
                     fed.classic_logs())
    # It left relay A signed, and the signature verifies with the key in the test DNS.
    signed = got[got.index(b"DKIM-Signature:"):].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert b"d=relay-a.test" in signed
    assert dkim.verify(signed, dnsfunc=fed.txt_lookup)


def test_a_certificate_that_does_not_name_the_mx_host_keeps_the_mail_queued(fed):
    """badname.test's MX host has the classic server's address, but its certificate names
    only mail.classic.test: relay A refuses to send there and keeps the message."""
    fed.net.set_zone("badname.test", ["badname.test. IN MX 10 mx.badname.test.",
                                      f"mx.badname.test. IN A {fed.net.ip(CLASSIC_HOST)}"])
    alice = existing_account(fed.a)
    rcpt = "someone@badname.test"
    submit(fed.a, alice, [rcpt], ct.load_case("enc_one_pkesk.eml", alice["email"], rcpt)[2])
    line = wait_log(fed.a, rf"to=<{rcpt}>.*status=deferred", 60)[-1]
    assert "451 4.4.1" in line and "CERTIFICATE_VERIFY_FAILED" in line, line
    wait_log(fed.a, r"badname\.test: smtp to mx\.badname\.test failed \(SSLCertVerificationError")
