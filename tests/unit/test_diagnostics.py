"""relayctl queue, why and metrics: the pure parts (classification, grouping, the
verdict, the counter files and their Prometheus text form)."""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay import counters
from relay.ops import probe, why
from relay.ops import queue as q
from relay.settings import SettingError, load
from relay.settings.parsers import listen_address_or_empty, split_listen

WRAP = "host relay-mxsend[/run/relay/mxsend/lmtp.sock] said: {} (in reply to end of DATA command)"


@pytest.mark.parametrize("reason, cls, code", [
    (WRAP.format("451 4.4.1 No mail server of x.test reachable: ConnectionRefusedError: "
                 "[Errno 111] Connection refused"), "connection-refused", "451"),
    (WRAP.format("451 4.4.1 No mail server of x.test reachable: SSLCertVerificationError: "
                 "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"), "tls", "451"),
    (WRAP.format("451 4.4.3 MX lookup for x.test failed: Timeout"), "dns", "451"),
    (WRAP.format("451 4.4.1 No mail server of x.test reachable: gaierror: [Errno -2] Name or "
                 "service not known"), "dns", "451"),
    (WRAP.format("451 4.4.1 No mail server of x.test reachable: OSError: [Errno 101] Network is "
                 "unreachable"), "no-route", "451"),
    (WRAP.format("451 4.4.1 No mail server of x.test reachable: TimeoutError: timed out"),
     "timeout", "451"),
    (WRAP.format("450 4.2.0 <bob@x.test>: Mailbox busy"), "refused", "450"),
    ("connect to /run/relay/mxsend/lmtp.sock: Connection refused", "local", None),
    ("", "waiting", None),
])
def test_delay_reasons_are_classified(reason, cls, code):
    assert q.classify(reason) == (cls, code)


def test_scrub_removes_local_parts_and_postfix_wrapping():
    text = q.scrub(WRAP.format("550 5.1.1 <bob.secret@x.test>: Recipient unknown"))
    assert text == "550 5.1.1 <...@x.test>: Recipient unknown"
    assert "bob" not in text


def queued(qid, arrival, *rcpts, queue="deferred"):
    return {"queue_name": queue, "queue_id": qid, "arrival_time": arrival, "message_size": 100,
            "sender": "alice@relay.test",
            "recipients": [{"address": a, "delay_reason": r} for a, r in rcpts]}


REFUSED = WRAP.format("451 4.4.1 No mail server of x.test reachable: ConnectionRefusedError: "
                      "[Errno 111] Connection refused")
TLS = WRAP.format("451 4.4.1 No mail server of y.test reachable: certificate verify failed")


def test_report_groups_by_domain_and_reason_without_local_parts():
    messages = [queued("A1", 1000, ("bob@x.test", REFUSED), ("carl@x.test", REFUSED)),
                queued("B2", 1500, ("dora@X.test", REFUSED), ("eve@y.test", TLS)),
                queued("C3", 1900, ("fay@z.test", ""), queue="active")]
    data = q.report(messages, {"A1": 2600.0, "B2": 2300.0}, now=2000.0)
    assert data["messages"] == 3 and data["queues"] == {"deferred": 2, "active": 1}
    assert data["oldest_age_seconds"] == 1000
    x, y = data["deferred"]
    assert (x["domain"], x["reason"], x["messages"], x["recipients"]) == ("x.test", "connection-refused", 2, 3)
    assert x["oldest_age_seconds"] == 1000 and x["next_retry_in_seconds"] == 300
    assert (y["domain"], y["reason"], y["messages"]) == ("y.test", "tls", 1)
    dumped = json.dumps(data) + q.text(data)
    for local in ("bob", "carl", "dora", "eve", "fay", "alice"):
        assert local not in dumped
    assert "x.test" in q.text(data) and "connection refused" in q.text(data)


def test_age_is_readable():
    assert [q.age(s) for s in (5, 125, 3 * 3600 + 300, 2 * 86400 + 7200)] == ["5s", "2m", "3h 5m",
                                                                              "2d 2h"]


# --- why: the verdict ---------------------------------------------------------------

def host(kind_https=None, kind_smtp=None, tls_error="", a=("192.0.2.1",), aaaa=(), route=None):
    tls = probe.TLSResult(False, tls_error, {"names": ["mx.other.test"], "not_after": "2026-01-01"}) \
        if tls_error else None
    return why.HostReport(
        "mx.x.test", {"A": list(a), "AAAA": list(aaaa)}, route,
        https=probe.HTTPSResult(kind_https, "detail", tls=tls if kind_https == "tls" else None)
        if kind_https else None,
        smtp=probe.SMTPResult(kind_smtp, "port 25: detail", tls=tls if kind_smtp == "tls" else None)
        if kind_smtp else None)


def verdict(mx_status="mx", *hosts, queue=()):
    r = why.Report("x.test", True, False, probe.MXResult(mx_status, ["mx.x.test"]), list(hosts),
                   list(queue))
    why.decide(r)
    return r


def test_why_null_mx_nxdomain_and_dns_errors_fail_with_advice():
    assert "null MX" in verdict("null-mx").verdict
    assert "does not exist" in verdict("nxdomain").verdict
    assert "resolver" in verdict("error").verdict
    assert not any(verdict(s).ok for s in ("null-mx", "nxdomain", "error"))


def test_why_ok_over_smtp_or_https_and_mentions_queued_mail():
    r = verdict("mx", host("not-relay", "ok"), queue=[{"messages": 2}])
    assert r.ok and r.path == "smtp to mx.x.test" and "relayctl queue retry x.test" in r.verdict
    assert verdict("mx", host("relay", "refused")).path == "https to mx.x.test"


def test_why_certificate_problems_come_first():
    r = verdict("mx", host("tls", "tls", tls_error="certificate has expired"))
    assert not r.ok and "certificate has expired" in r.verdict and "mx.other.test" in r.verdict


def test_why_closed_port_25_without_mxdeliv():
    r = verdict("mx", host("not-relay", "refused"))
    assert not r.ok and "port 25" in r.verdict


def test_why_ipv6_only_host_without_ipv6_route():
    r = verdict("mx", host(None, None, a=(), aaaa=("2001:db8::1",), route=False))
    assert not r.ok and "IPv6" in r.verdict


def test_why_takes_a_reference_relay_as_our_sender_does():
    """relay-mxsend delivers to a reference relay over HTTPS (its answers carry no marker)."""
    r = verdict("mx", host("reference", "refused"))
    assert r.ok


def test_target_domain_drops_the_local_part():
    assert why.target_domain("Bob.Secret@Example.TEST.") == "example.test"
    assert why.target_domain("example.test") == "example.test"


@pytest.mark.parametrize("target, says", [
    ("a@", "neither an address nor a domain name (no domain)"),
    ("@@", "neither an address nor a domain name"),
    ("bad domain!", "neither an address nor a domain name"),
    ("[999.1.1.1]", "not a valid IP literal"),
    ("someone@Chat.Example.ORG", "is not another domain"),
])
def test_why_refuses_what_names_no_other_domain_before_probing(target, says, monkeypatch, capsys):
    from types import SimpleNamespace
    monkeypatch.setenv("MAIL_DOMAIN", "chat.example.org")
    monkeypatch.setattr(why, "investigate", lambda *a: pytest.fail("probed"))
    assert why.command(SimpleNamespace(target=target, json=False)) == 2
    assert says in capsys.readouterr().out
    assert why.command(SimpleNamespace(target=target, json=True)) == 2
    assert says in json.loads(capsys.readouterr().out)["error"]


# --- counters -----------------------------------------------------------------------

def test_labels_are_declared_values_or_other():
    name, pairs = counters.key("chatmail_federation_recipients_total",
                               {"path": "https", "outcome": "bob@example.test"})
    assert dict(pairs) == {"path": "https", "outcome": "other"}
    with pytest.raises(KeyError):
        counters.key("chatmail_no_such_metric", {})
    with pytest.raises(ValueError):
        counters.key("chatmail_accounts_created_total", {})


def test_counter_files_round_trip_and_render_as_prometheus_text(tmp_path):
    for service in counters.SERVICES:
        (tmp_path / service).mkdir()
    rec = counters.setup("relay-filter", tmp_path)
    counters.inc("chatmail_messages_total", direction="incoming", outcome="refused",
                 reason="unencrypted")
    counters.inc("chatmail_messages_total", 2, direction="incoming", outcome="refused",
                 reason="unencrypted")
    rec.write()
    counters.setup("relay-auth", tmp_path)
    counters.inc("chatmail_accounts_created_total", via="login")
    counters.set_gauge("chatmail_accounts", 7)
    counters.recorded()
    counters._recorder.write()
    values, readable = counters.read_all(tmp_path)
    assert all(readable.values())
    text = counters.exposition(values).decode()
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for family in text_string_to_metric_families(text) for s in family.samples}
    assert found[("chatmail_messages_total", (("direction", "incoming"), ("outcome", "refused"),
                                              ("reason", "unencrypted")))] == 3
    assert found[("chatmail_accounts_created_total", (("via", "login"),))] == 1
    assert found[("chatmail_accounts", ())] == 7
    # A restarted helper goes on from its file (counters only).
    again = counters.setup("relay-filter", tmp_path)
    assert sum(again.values.values()) == 3
    counters.setup("none", tmp_path)  # no such directory: memory only, no file
    assert counters._recorder.path is None


def test_reply_and_refusal_classification():
    assert counters.message_outcome("250 2.0.0 Ok: queued") == ("accepted", "none")
    assert counters.message_outcome("523 Encryption Needed: Invalid Unencrypted Mail") == \
        ("refused", "unencrypted")
    assert counters.message_outcome("550 5.7.1 No valid DKIM signature found")[1] == "dkim"
    assert counters.message_outcome("553 5.7.1 From header must be your own address")[1] == "sender"
    assert counters.message_outcome("450 4.7.1 Too many messages") == ("deferred", "rate_limit")
    assert counters.message_outcome("451 4.3.0 Temporary failure") == ("deferred", "temporary")


def test_imap_ports_match_the_rendered_configuration():
    from relay.boot import startup
    from relay.ops import collect
    assert collect.IMAP_PORTS == (993, 8993)
    assert "proxied_imap_port=8993" in open(startup.__file__).read()


def test_established_counts_imap_sockets_only(tmp_path):
    header = "  sl  local_address rem_address   st\n"
    rows = ["0: 0100007F:03E1 0100007F:D431 01", "1: 0100007F:2321 0100007F:D432 01",
            "2: 0100007F:03E1 00000000:0000 0A", "3: 0100007F:01BB 0100007F:D433 01"]
    (tmp_path / "tcp").write_text(header + "\n".join(rows) + "\n")
    from relay.ops import collect
    assert collect.established((993, 8993), tmp_path) == 2


# --- METRICS_LISTEN -------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [("", ""), ("127.0.0.1:9100", "127.0.0.1:9100"),
                                         ("[::]:9100", "[::]:9100"), (" [::1]:9200 ", "[::1]:9200")])
def test_metrics_listen_accepts(text, value):
    assert listen_address_or_empty(text) == value


@pytest.mark.parametrize("text", ["9100", "localhost:9100", "::1:9100", "127.0.0.1:0",
                                  "127.0.0.1:443", "0.0.0.0:99999"])
def test_metrics_listen_refuses(text):
    with pytest.raises(ValueError):
        listen_address_or_empty(text)
    with pytest.raises(SettingError, match="METRICS_LISTEN"):
        load({"MAIL_DOMAIN": "chat.example.org", "METRICS_LISTEN": text})


def test_split_listen():
    assert split_listen("[::]:9100") == ("::", 9100)
    assert split_listen("127.0.0.1:9100") == ("127.0.0.1", 9100)


def test_push_outcomes_are_counted(tmp_path, monkeypatch):
    import asyncio

    from relay.notify import metadata, push
    monkeypatch.setattr(push, "FIRST_RETRY", 0.02)
    (tmp_path / "tokens").mkdir()
    (tmp_path / "queue").mkdir()
    tokens = push.TokenStore(tmp_path / "tokens")
    tokens.add("alice@chat.example.org", "openpgp:one")
    answers = [503, 200]
    notifier = metadata.CountedNotifier(tokens, push.Spool(tmp_path / "queue"),
                                        lambda token: answers.pop(0))
    counters.setup("none", tmp_path)
    before = counters.recorded()

    def count(outcome):
        k = counters.key("chatmail_push_notifications_total", {"outcome": outcome})
        return counters.recorded().get(k, 0) - before.get(k, 0)

    async def scenario():
        notifier.new_message("alice@chat.example.org")
        task = asyncio.create_task(notifier.run())
        for _ in range(500):
            if not notifier.pending:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    assert (count("retry"), count("sent"), count("given_up")) == (1, 1, 0)


def test_account_events_reach_the_counters():
    """relay.accounts.events (what relay-auth and relay-signup count) feeds the metrics,
    with its reasons as labels (none becomes "other")."""
    from relay.accounts import events
    for reason in events.REASONS:
        assert reason in counters.ACCOUNT_REFUSALS
    before = dict(counters.recorded())
    events.refused("invite_expired", "login")
    events.created("new")
    after = counters.recorded()
    refusal = counters.key("chatmail_account_refusals_total", {"reason": "invite_expired"})
    created = counters.key("chatmail_accounts_created_total", {"via": "new"})
    assert after[refusal] == before.get(refusal, 0) + 1
    assert after[created] == before.get(created, 0) + 1


@pytest.mark.parametrize("domain", ["bad domain!", "a..b", "[0.0.0.0]"])
def test_queue_retry_refuses_what_is_no_domain(domain, monkeypatch, capsys):
    """Exit 2 with the reason, and Postfix is not asked at all."""
    import argparse
    monkeypatch.setattr(q, "retry", lambda d: pytest.fail("Postfix asked"))
    args = argparse.Namespace(action="retry", domain=domain, json=False)
    assert q.command(args) == 2
    assert "is not a domain" in capsys.readouterr().err
