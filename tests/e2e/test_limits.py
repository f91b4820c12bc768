"""Limits, on a relay of its own with small values so every limit is reached quickly."""

import secrets
import smtplib

import pytest

from relaytest import Relay, insecure_tls, securejoin_request, submit, wait_for

LIMITS = {
    "MAIL_DOMAIN": "_limits.example.test",
    "TLS_MODE": "self-signed",
    "NEW_ACCOUNTS_PER_MINUTE": "2",
    "MAX_USER_SEND_PER_MINUTE": "12",   # one token in five seconds
    "MAX_USER_SEND_BURST": "3",
    "MAX_RECIPIENTS": "5",
    "MAX_MESSAGE_SIZE": "1M",
}


@pytest.fixture(scope="module")
def limited(image_exists):
    r = Relay(dict(LIMITS)).start()
    try:
        yield r.wait_healthy()
    finally:
        r.remove()


@pytest.fixture(scope="module")
def accounts(limited):
    """Made before the /new limit is exhausted; logins create them."""
    made = [limited.new_account() for _ in range(4)]
    for acct in made:
        submit(limited, acct, [acct["email"]], securejoin_request(acct["email"], acct["email"]))
    return made


def test_sending_rate_limit_is_temporary(limited, accounts):
    sender, recipient = accounts[0], accounts[1]
    # One connection, one transaction after the other: the burst of 3 (less what the
    # setup used, plus at most one token refilled meanwhile) is spent within a few
    # transactions, and the next is refused at RCPT, before the client uploads the
    # body (issue 17 §4).
    replies = []
    with smtplib.SMTP_SSL("127.0.0.1", limited.port(465), context=insecure_tls(), timeout=30) as s:
        s.login(sender["email"], sender["password"])
        for i in range(5):
            assert s.mail(sender["email"])[0] == 250
            code, text = s.rcpt(recipient["email"])
            replies.append(code)
            if code != 250:
                break
            assert s.data(securejoin_request(sender["email"], recipient["email"], str(i)))[0] == 250
    assert replies[-1] == 450 and text.startswith(b"4.7.1"), (replies, text)
    assert 1 <= len(replies) - 1 <= 3, replies

    def accepted_again():
        try:
            submit(limited, sender, [recipient["email"]],
                   securejoin_request(sender["email"], recipient["email"], "again"))
            return True
        except smtplib.SMTPRecipientsRefused as exc:
            assert next(iter(exc.recipients.values()))[0] == 450
            return False

    wait_for(accepted_again, 30, 1, "sending allowed again after the bucket refilled")
    # another user is not slowed down by the first one's limit
    submit(limited, recipient, [sender["email"]],
           securejoin_request(recipient["email"], sender["email"]))


def test_too_many_recipients(limited, accounts):
    sender = accounts[2]
    # six existing mailboxes, created by a first login (no /new needed)
    recipients = []
    for i in range(6):
        address = f"rcpt{secrets.token_hex(2)}{i}@{LIMITS['MAIL_DOMAIN']}"
        with smtplib.SMTP_SSL("127.0.0.1", limited.port(465), context=insecure_tls(), timeout=30) as s:
            s.login(address, "a-long-enough-password")
        recipients.append(address)
    with smtplib.SMTP_SSL("127.0.0.1", limited.port(465), context=insecure_tls(), timeout=30) as s:
        s.login(sender["email"], sender["password"])
        s.mail(sender["email"])
        replies = [s.rcpt(r) for r in recipients]
    assert [code for code, _ in replies[:5]] == [250] * 5
    assert replies[5][0] == 452 and b"too many recipients" in replies[5][1].lower()


def test_oversized_message_refused(limited, accounts):
    sender = accounts[3]
    big = securejoin_request(sender["email"], sender["email"]) + b"x" * (1536 * 1024)
    with pytest.raises(smtplib.SMTPException) as err:
        submit(limited, sender, [sender["email"]], big)
    code = getattr(err.value, "smtp_code", None) or next(iter(err.value.recipients.values()))[0]
    assert code == 552


def test_new_account_rate_limit_per_ip(limited, accounts):
    import http.client

    def post():
        conn = http.client.HTTPSConnection("127.0.0.1", limited.port(443), context=insecure_tls(),
                                           timeout=10)
        conn.request("POST", "/new")
        return conn.getresponse().status

    statuses = [post() for _ in range(15)]
    # 2 a minute with a burst of 10: the 4 accounts above used part of it already
    assert statuses.count(429) >= 4
    assert set(statuses) <= {200, 429}
