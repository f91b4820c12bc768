"""`relayctl why` and `relayctl queue` against broken peers on the federation test bed
(tests/support/probepeers.py), in text and JSON, from inside relay A."""

from __future__ import annotations

import json
import re
import secrets

import pytest

import corpus_tools as ct
from fednet import B_DOMAIN, existing_account, wait_log
from probepeers import CLOSED, EXPIRED, NOWHERE, NULL_MX, WRONG_NAME, ProbePeers
from relaytest import submit

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def peers(fed):
    return ProbePeers(fed).start()


def why(fed, target: str) -> tuple[int, dict, str]:
    """(exit status, JSON, text) of `relayctl why --json target` in relay A (the JSON
    carries the human form too: one probe per case; test_why_null_mx compares it with
    the plain command's output)."""
    as_json = fed.a.exec("relayctl", "why", "--json", target, check=False)
    data = json.loads(as_json.stdout)
    assert data["exit_status"] == as_json.returncode, as_json.stdout + as_json.stderr
    print(f"\n$ relayctl why {target}  (exit {as_json.returncode})\n{data['text']}")
    return as_json.returncode, data, data["text"]


def verdict(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_why_null_mx(fed, peers):
    status, data, text = why(fed, NULL_MX)
    assert status == 1 and data["mx"]["status"] == "null-mx" and data["hosts"] == []
    assert verdict(text).startswith("FAIL:") and "null MX" in verdict(text), text
    plain = fed.a.exec("relayctl", "why", NULL_MX, check=False)
    assert (plain.returncode, plain.stdout.strip()) == (1, text.strip())


def test_why_unresolvable_domain(fed, peers):
    status, data, text = why(fed, NOWHERE)
    assert status == 1 and data["mx"]["status"] == "nxdomain"
    assert "does not exist" in verdict(text), text


def test_why_port_25_closed_but_443_open(fed, peers):
    status, data, text = why(fed, CLOSED)
    host = data["hosts"][0]
    assert status == 1 and host["host"] == f"mx.{CLOSED}"
    assert host["smtp"]["kind"] == "refused"
    assert host["https"]["kind"] == "not-relay" and host["https"]["status"] == 404
    assert host["https"]["tls"]["ok"] is True      # the certificate itself is fine
    assert "port 25" in verdict(text) and "/mxdeliv" in verdict(text), text
    assert "4. SMTP 25: refused: port 25: connection refused" in text


def test_why_expired_certificate_and_the_local_part_never_shows(fed, peers):
    local = f"secret{secrets.token_hex(3)}"
    status, data, text = why(fed, f"{local}@{EXPIRED}")
    smtp = data["hosts"][0]["smtp"]
    assert status == 1 and smtp["kind"] == "tls"
    assert "expired" in smtp["tls"]["error"] and smtp["tls"]["certificate"]["days_left"] < 0
    assert "certificate" in verdict(text) and "expired" in verdict(text), text
    assert local not in text and local not in json.dumps(data)


def test_why_certificate_for_another_name(fed, peers):
    status, data, text = why(fed, WRONG_NAME)
    host = data["hosts"][0]
    assert status == 1 and host["https"]["kind"] == "unreachable"
    assert host["smtp"]["kind"] == "tls" and "mail.classic.test" in host["smtp"]["tls"]["certificate"]["names"]
    assert re.search(r"hostname mismatch|doesn't match|not valid for", host["smtp"]["tls"]["error"], re.I)
    assert "mail.classic.test" in verdict(text), text


def test_why_a_working_relay_exits_0(fed, peers):
    status, data, text = why(fed, B_DOMAIN)
    assert status == 0 and data["ok"] and data["path"] == f"https to {B_DOMAIN}"
    assert data["hosts"][0]["https"]["kind"] == "relay" and data["hosts"][0]["smtp"]["kind"] == "ok"
    assert verdict(text).startswith("OK: delivery to relay-b.test works now"), text


def queued_ids(relay, domain: str) -> list[str]:
    out = relay.exec("postqueue", "-j").stdout
    return [m["queue_id"] for m in map(json.loads, out.splitlines())
            if any(r["address"].endswith("@" + domain) for r in m["recipients"])]


def test_queue_groups_deferred_mail_by_domain_and_reason_then_retries(fed, peers):
    alice = existing_account(fed.a)
    rcpt = f"carol{secrets.token_hex(3)}@{CLOSED}"
    submit(fed.a, alice, [rcpt], ct.load_case("enc_one_pkesk.eml", alice["email"], rcpt)[2])
    first = wait_log(fed.a, rf"to=<{re.escape(rcpt)}>.*status=deferred", 60)
    try:
        data = json.loads(fed.a.exec("relayctl", "queue", "--json").stdout)
        rows = [r for r in data["deferred"] if r["domain"] == CLOSED]
        assert len(rows) == 1, data
        row = rows[0]
        assert row["reason"] == "connection-refused" and row["messages"] == 1, row
        assert row["next_retry_in_seconds"] is not None and row["oldest_age_seconds"] >= 0
        text = fed.a.exec("relayctl", "queue").stdout
        print("\n$ relayctl queue\n" + text)
        assert re.search(rf"{re.escape(CLOSED)}\s+connection refused\s+1\s+1", text), text
        for local in (rcpt.split("@")[0], alice["email"].split("@")[0]):
            assert local not in text and local not in json.dumps(data)

        retried = json.loads(fed.a.exec("relayctl", "queue", "retry", CLOSED, "--json").stdout)
        assert retried == {"retried": CLOSED, "messages": 1}
        wait_log(fed.a, rf"to=<{re.escape(rcpt)}>.*status=deferred", 60, after=len(first))
        assert "why a domain fails now" in text
        assert "5. queue: 1 message(s) deferred, connection refused" in why(fed, CLOSED)[2]
    finally:
        for qid in queued_ids(fed.a, CLOSED):
            fed.a.exec("postsuper", "-d", qid, check=False)
