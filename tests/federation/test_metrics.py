"""The Prometheus metrics of relay A and B (METRICS_LISTEN in fednet's RELAY_ENV),
scraped from the test network and read with prometheus_client's text parser: after
real traffic, each counter moved by what that traffic should count."""

from __future__ import annotations

import imaplib
import ipaddress
import re
import secrets
import smtplib
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import corpus_tools as ct
from fednet import A_HOST, B_HOST, CLASSIC_DOMAIN, CLASSIC_SELECTOR, CLASSIC_USER, dkim_sign, \
    existing_account
from relaytest import insecure_tls, submit, wait_for

pytestmark = pytest.mark.slow

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(fed, host: int) -> Samples:
    url = f"http://{fed.net.ip(host)}:9100/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(resp.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


MSG = "chatmail_messages_total"


def test_counters_move_with_traffic_and_labels_carry_no_address(fed):
    a0, b0 = scrape(fed, A_HOST), scrape(fed, B_HOST)
    alice, bob = existing_account(fed.a), existing_account(fed.b)
    with pytest.raises(smtplib.SMTPDataError):
        submit(fed.a, alice, [bob["email"]], f"From: <{alice['email']}>\r\nTo: <{bob['email']}>\r\n"
               "Subject: hi\r\n\r\nplain text\r\n".encode())
    submit(fed.a, alice, [bob["email"]],
           ct.load_case("enc_one_pkesk.eml", alice["email"], bob["email"])[2])
    carol = f"{CLASSIC_USER}@{CLASSIC_DOMAIN}"
    plain = (f"From: <{carol}>\r\nTo: <{alice['email']}>\r\nSubject: hello\r\n"
             f"Message-ID: <{secrets.token_hex(6)}@{CLASSIC_DOMAIN}>\r\n\r\nplain\r\n").encode()
    fed.classic_send(carol, alice["email"], dkim_sign(plain, CLASSIC_DOMAIN, CLASSIC_SELECTOR,
                                                      fed.classic_dkim_key))
    imap = imaplib.IMAP4_SSL("127.0.0.1", fed.a.port(993), ssl_context=insecure_tls(), timeout=30)
    imap.login(alice["email"], alice["password"])

    a_expected = {
        (MSG, (("direction", "outgoing"), ("outcome", "refused"), ("reason", "unencrypted"))): 1,
        (MSG, (("direction", "outgoing"), ("outcome", "accepted"), ("reason", "none"))): 1,
        (MSG, (("direction", "incoming"), ("outcome", "refused"), ("reason", "unencrypted"))): 1,
        ("chatmail_federation_recipients_total", (("outcome", "delivered"), ("path", "https"))): 1,
        ("chatmail_signups_total", (("outcome", "served"),)): 1,
        ("chatmail_accounts_created_total", (("via", "login"),)): 1,
    }
    a1 = wait_for(lambda: _moved(fed, a0, A_HOST, a_expected), 60, 0.5, "relay A's counters")
    b1 = wait_for(lambda: _moved(fed, b0, B_HOST, {
        (MSG, (("direction", "incoming"), ("outcome", "accepted"), ("reason", "none"))): 1,
        ("chatmail_mxdeliv_requests_total", (("status", "200"),)): 1}), 60, 0.5,
        "relay B's counters")
    # Exactly what this traffic should count on A (nothing else ran meanwhile).
    for (name, labels), delta in a_expected.items():
        if name == MSG or "federation" in name:
            assert value(a1, name, **dict(labels)) - value(a0, name, **dict(labels)) == delta, name
    assert value(a1, "chatmail_accounts") >= 1
    assert value(a1, "chatmail_imap_connections", state="active") >= 1
    imap.logout()
    assert value(a1, "chatmail_queue_oldest_seconds") >= 0
    assert "chatmail_queue_messages" in {n for n, _ in a1}
    assert 1000 < value(a1, "chatmail_certificate_days_left") <= 1827  # pebble: 5 years
    assert value(a1, "chatmail_dkim_record_published") == 1           # fednet published it
    for source in ("queue", "imap", "certificate", "dkim", "relay-filter", "relay-auth"):
        assert value(a1, "chatmail_metrics_source_up", source=source) == 1, source
    for samples in (a1, b1):
        for _name, labels in samples:
            for _label, text in labels:
                assert "@" not in text and not _is_ip(text), labels


def _moved(fed, before: Samples, host: int, expected: dict) -> Samples | None:
    now = scrape(fed, host)
    for (name, labels), delta in expected.items():
        if value(now, name, **dict(labels)) - value(before, name, **dict(labels)) < delta:
            return None
    return now


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def test_relayctl_metrics_prints_what_the_exporter_serves(fed):
    served = scrape(fed, A_HOST)
    printed = parse(fed.a.exec("relayctl", "metrics").stdout)
    assert {n for n, _ in printed} == {n for n, _ in served}
    assert re.search(r'"name": "chatmail_messages_total"',
                     fed.a.exec("relayctl", "metrics", "--json").stdout)
    # The exporter runs as its own user, not root.
    ps = fed.a.exec("ps", "-o", "user:16=,args=", "-C", "python3").stdout
    assert re.search(r"^relaymetrics\s+python3 -m relay\.ops\.metrics", ps, re.M), ps
