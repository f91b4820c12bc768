"""DKIM verification in the real image (relay B of the federation), with keys and a zone of
our own on the test network's DNS server (NSD), over port 25 (STARTTLS) and /mxdeliv:

    dkimlab.test                    first._domainkey:  site verification TXT, then the key
                                    second._domainkey: the key, then site verification TXT
    tempfail.dkimlab.test           a zone NSD answers SERVFAIL for (TestNet.add_unserved_zone)

The rules themselves are tested one by one in tests/unit/test_dkimcheck.py; here each
kind of answer is checked end to end: accepted, refused for good (5xx / 403) with the
reason, refused for now (451 / 503) so the sender retries."""

from __future__ import annotations

import json
import re
import secrets
import smtplib
from types import SimpleNamespace

import pytest

import corpus_tools as ct
import dkimsign
from fednet import existing_account, txt_strings, wait_log
from relaytest import insecure_tls, wait_for

pytestmark = pytest.mark.slow

LAB = "dkimlab.test"
TEMPFAIL = f"tempfail.{LAB}"
SITE = '"google-site-verification=Xk3q-9dE0aVbN4mZr7TgYp1sLc8Hw2UoJf6Ii5Ke"'


@pytest.fixture(scope="module")
def lab(fed):
    key, public = dkimsign.rsa_key(2048)
    dkim_txt = txt_strings("v=DKIM1; k=rsa; p=" + public.decode())
    fed.net.add_unserved_zone(TEMPFAIL)
    fed.net.set_zone(LAB, [
        f'{LAB}. IN TXT "v=spf1 -all"',
        f"first._domainkey.{LAB}. IN TXT {SITE}", f"first._domainkey.{LAB}. IN TXT {dkim_txt}",
        f"second._domainkey.{LAB}. IN TXT {dkim_txt}", f"second._domainkey.{LAB}. IN TXT {SITE}",
    ])
    # NSD answers in zone-file order, so the two selectors do put the key first and second.
    assert fed.net.query(f"first._domainkey.{LAB}", "TXT")[0].startswith('"google')
    assert fed.net.query(f"second._domainkey.{LAB}", "TXT")[0].startswith('"v=DKIM1')
    return SimpleNamespace(key=key, bob=existing_account(fed.b)["email"])


def message(lab, domain: str = LAB) -> tuple[str, bytes]:
    sender = f"alice@{domain}"
    data = ct.load_case("enc_one_pkesk.eml", sender, lab.bob)[2]
    data = re.sub(rb"Message-ID: <[^>]*>", f"Message-ID: <{secrets.token_hex(8)}@{domain}>"
                  .encode(), data, count=1)
    return sender, data


def signed(lab, selector="second", domain=LAB, **kw) -> tuple[str, bytes]:
    sender, data = message(lab, domain)
    return sender, dkimsign.sign(data, lab.key, domain.encode(), selector.encode(), **kw)


def over_smtp(fed, sender: str, recipient: str, data: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", fed.b.port(25), timeout=60) as smtp:
        smtp.ehlo(f"mx.{LAB}")
        smtp.starttls(context=insecure_tls())
        smtp.ehlo(f"mx.{LAB}")
        assert smtp.mail(sender)[0] == 250
        assert smtp.rcpt(recipient)[0] == 250
        try:
            code, text = smtp.data(data)
        except smtplib.SMTPDataError as exc:
            code, text = exc.smtp_code, exc.smtp_error
    return code, text.decode(errors="replace")


def over_mxdeliv(fed, sender: str, recipient: str, data: bytes) -> tuple[int, str]:
    from fednet import post_mxdeliv
    status, _, payload = post_mxdeliv(fed.b, data, [sender], [recipient])
    return status, json.dumps(payload)


PATHS = {"smtp": over_smtp, "mxdeliv": over_mxdeliv}
# case -> (how the message is made, SMTP code, /mxdeliv status, words in the reply). The
# refusals use the selector whose key is the first TXT record, so that even a verifier that
# reads only the first record gets to the rule under test.
CASES = {
    "valid, key after a site verification TXT": (lambda lab: signed(lab, "first"), 250, 200, ""),
    "valid, key before a site verification TXT": (lambda lab: signed(lab, "second"), 250, 200, ""),
    "l= with text after the signed part": (
        lambda lab: appended(signed(lab, length=True)), 550, 403, "partial body signature"),
    "h= without From": (
        lambda lab: signed(lab, headers=(b"to", b"subject", b"message-id")), 550, 403,
        "From field not signed"),
    "rsa-sha1": (lambda lab: signed(lab, algo=b"rsa-sha1"), 550, 403, "rsa-sha1"),
    "key lookup SERVFAIL": (lambda lab: signed(lab, domain=TEMPFAIL), 451, 503,
                           "4.7.5 DKIM key lookup failed temporarily"),
    "no signature": (lambda lab: message(lab), 550, 403, "5.7.1 No DKIM signature found"),
}


def appended(made: tuple[str, bytes]) -> tuple[str, bytes]:
    sender, data = made
    return sender, data + b"\r\nText after the signed part, which nobody signed.\r\n"


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("case", list(CASES))
def test_dkim_verdicts(fed, lab, case, path):
    make, smtp_code, http_status, words = CASES[case]
    sender, data = make(lab)
    code, text = PATHS[path](fed, sender, lab.bob, data)
    assert code == (smtp_code if path == "smtp" else http_status), (code, text)
    assert words in text, text


def test_valid_mail_reaches_the_mailbox(fed, lab):
    before = len(fed.b.mailbox_files(lab.bob))
    sender, data = signed(lab, "second")
    assert over_smtp(fed, sender, lab.bob, data)[0] == 250
    wait_for(lambda: len(fed.b.mailbox_files(lab.bob)) > before, 30, 0.2, "delivered to bob")


def test_servfail_is_logged_as_error(fed, lab):
    pattern = (r"relay-filter.*(ERROR|\"error\").*DKIM key lookup failed temporarily.*"
               + re.escape(TEMPFAIL))
    seen = len(re.findall(pattern, fed.b.logs()))
    sender, data = signed(lab, domain=TEMPFAIL)
    assert over_smtp(fed, sender, lab.bob, data)[0] == 451
    wait_log(fed.b, pattern, 10, after=seen)
