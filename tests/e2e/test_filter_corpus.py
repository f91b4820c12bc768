"""Every corpus message through the real Postfix of the running relay, both ways.

Outgoing: submitted by a real account on 465 or 587. Incoming: delivered by
"another server" on port 25. The SMTP reply must be the one the manifest
expects, and the recipient's mailbox must end up holding exactly the accepted
messages — a refused message never reaches a mailbox.

On port 25 the spec's DKIM rule also applies. The corpus is not DKIM-signed,
so its external senders are rewritten to IP literals (which the spec exempts):
that way the encryption rules are what is tested here. A case whose From:
stays on a DNS domain must then be refused by the DKIM rule (550 5.7.1) where
it would otherwise be accepted. DKIM itself is tested in tests/unit/test_dkimcheck.py
and across relays in the federation tests.
"""

import json
import smtplib

import pytest

from relaytest import ROOT, insecure_tls, securejoin_request, submit, wait_for

CORPUS = ROOT / "tests" / "corpus"
CASES = json.loads((CORPUS / "manifest.json").read_text())["cases"]
EXTERNAL_SENDER = "carol@[192.0.2.1]"
EXTERNAL_MX = ("mx.example.net", "[192.0.2.9]")


def expected(value):
    return 250 if value == "accept" else int(value)


@pytest.fixture(scope="module")
def people(relay):
    alice, bob_out, bob_in = relay.new_account(), relay.new_account(), relay.new_account()
    for acct in (alice, bob_out, bob_in):  # first login creates the account
        submit(relay, acct, [acct["email"]], securejoin_request(acct["email"], acct["email"]))
    for acct in (alice, bob_out, bob_in):
        wait_for(lambda: relay.mailbox_files(acct["email"]), 30, what="account setup")
        relay.exec("sh", "-c", f"rm -f /data/mail/{acct['email']}/Maildir/new/*")
    return {"alice": alice, "bob_out": bob_out, "bob_in": bob_in, "accepted": {"out": 0, "in": 0}}


def fill(text: str, sender: str, recipient: str) -> str:
    return text.replace("{sender}", sender).replace("{recipient}", recipient)


def attempt(smtp, mail_from, rcpt_tos, data) -> int:
    try:
        refused = smtp.sendmail(mail_from, rcpt_tos, data)
    except smtplib.SMTPRecipientsRefused as exc:
        return next(iter(exc.recipients.values()))[0]
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        return exc.smtp_code
    assert not refused
    return 250


@pytest.mark.parametrize("name", sorted(CASES))
def test_outgoing(relay, people, name):
    case = CASES[name]
    alice, bob = people["alice"], people["bob_out"]
    data = fill((CORPUS / name).read_bytes().decode(), alice["email"], bob["email"]).encode()
    mail_from = fill(case["mail_from"], alice["email"], bob["email"])
    rcpts = [fill(r, alice["email"], bob["email"]) for r in case["rcpt_tos"]]
    port = 465 if sorted(CASES).index(name) % 2 == 0 else 587
    if port == 465:
        smtp = smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(), timeout=60)
    else:
        smtp = smtplib.SMTP("127.0.0.1", relay.port(587), timeout=60)
        smtp.starttls(context=insecure_tls())
    with smtp:
        smtp.login(alice["email"], alice["password"])
        code = attempt(smtp, mail_from, rcpts, data)
    assert code == expected(case["outgoing"]), case["why"]
    if code == 250:
        people["accepted"]["out"] += rcpts.count(bob["email"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_incoming(relay, people, name):
    case = CASES[name]
    bob = people["bob_in"]
    text = fill((CORPUS / name).read_bytes().decode(), EXTERNAL_SENDER, bob["email"])
    text = text.replace(*EXTERNAL_MX)
    mail_from = fill(case["mail_from"], EXTERNAL_SENDER, bob["email"])
    rcpts = [r for r in (fill(r, EXTERNAL_SENDER, bob["email"]) for r in case["rcpt_tos"])
             if r == bob["email"]] or [bob["email"]]
    want = expected(case["incoming"])
    from relay.filter.dkimverify import from_domain
    from relay.filter.policy import parse
    domain = from_domain(parse(text.encode()))
    if want == 250 and not (domain or "").startswith("["):
        want = 550  # the DKIM rule: no signature for a DNS domain
    with smtplib.SMTP("127.0.0.1", relay.port(25), timeout=60) as smtp:
        smtp.ehlo("mx.sender.example")
        smtp.starttls(context=insecure_tls())
        smtp.ehlo("mx.sender.example")
        code = attempt(smtp, mail_from, rcpts, text.encode())
    assert code == want, case["why"]
    if code == 250:
        people["accepted"]["in"] += 1


def test_mailboxes_hold_exactly_the_accepted_messages(relay, people):
    for direction, key in (("out", "bob_out"), ("in", "bob_in")):
        address = people[key]["email"]
        want = people["accepted"][direction]
        assert want > 0
        wait_for(lambda: len(relay.mailbox_files(address)) >= want, 60, what=f"{direction} deliveries")
        # the queue is empty once everything accepted is delivered; nothing more arrives
        wait_for(lambda: relay.exec("postqueue", "-j").stdout.strip() == "", 30, what="empty queue")
        assert len(relay.mailbox_files(address)) == want
