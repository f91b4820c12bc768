"""`relayctl dns`: the printed zone parses, matches the running relay, verifies
the relay's own DKIM signatures, and `--check` tells a complete zone from an
incomplete one on a real DNS server (NSD on the test network)."""

from __future__ import annotations

import json

import dkim
import dns.rdatatype
import dns.zone
import pytest

from relaytest import securejoin_request, submit, wait_for

pytestmark = pytest.mark.slow

DOMAIN = "relay-d.test"


@pytest.fixture(scope="module")
def net(make_net):
    return make_net(pebble=False)


@pytest.fixture(scope="module")
def relay(net):
    r = net.relay(DOMAIN, 30, {"TLS_MODE": "self-signed", "ADMIN_EMAIL": "ops@example.org",
                               "NEW_ACCOUNTS_PER_MINUTE": "6000"})
    r.start().wait_healthy()
    return r


@pytest.fixture(scope="module")
def printed(relay):
    out = relay.exec("relayctl", "dns").stdout
    zone = dns.zone.from_text(out, origin=f"{DOMAIN}.", relativize=False, check_origin=False)
    return out, zone


def rrset(zone, name, rtype):
    node = zone.get_node(name)
    return node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rtype)) if node else None


def test_printed_zone_has_every_record_kind_and_matches_the_relay(relay, net, printed):
    _, zone = printed
    d = f"{DOMAIN}."
    assert [r.to_text() for r in rrset(zone, d, "A")] == [net.ip(30)]
    assert [r.to_text() for r in rrset(zone, d, "MX")] == [f"10 {d}"]
    assert rrset(zone, f"mta-sts.{d}", "CNAME")[0].to_text() == d
    spf = [b"".join(r.strings).decode() for r in rrset(zone, d, "TXT")]
    assert spf == ["v=spf1 a ~all"]
    dkim_txt = b"".join(rrset(zone, f"chatmail._domainkey.{d}", "TXT")[0].strings).decode()
    assert dkim_txt == relay.exec("relayctl", "dkim-record").stdout.split('"', 1)[1].rsplit('"', 1)[0]
    dmarc = b"".join(rrset(zone, f"_dmarc.{d}", "TXT")[0].strings).decode()
    assert "p=reject" in dmarc
    assert b"".join(rrset(zone, f"_mta-sts.{d}", "TXT")[0].strings).startswith(b"v=STSv1; id=")
    assert b"mailto:ops@example.org" in b"".join(rrset(zone, f"_smtp._tls.{d}", "TXT")[0].strings)
    ports = {name: rrset(zone, f"{name}.{d}", "SRV")[0].port
             for name in ("_submissions._tcp", "_submission._tcp", "_imaps._tcp")}
    assert ports == {"_submissions._tcp": 465, "_submission._tcp": 587, "_imaps._tcp": 993}


def test_the_printed_dkim_record_verifies_a_signature_made_by_the_relay(relay, printed):
    _, zone = printed
    alice, bob = relay.new_account(), relay.new_account()
    submit(relay, bob, [bob["email"]], securejoin_request(bob["email"], bob["email"]))
    wait_for(lambda: relay.mailbox_files(bob["email"]), 30, what="bob's mailbox")
    relay.exec("sh", "-c", f"rm -f /data/mail/{bob['email']}/Maildir/new/*")
    submit(relay, alice, [bob["email"]], securejoin_request(alice["email"], bob["email"]))
    name = wait_for(lambda: relay.mailbox_files(bob["email"]), 30, what="delivery")[0]
    # stored gzip-compressed (zlib_save); zcat -f reads both forms
    raw = relay.exec("sh", "-c", f"zcat -f /data/mail/{bob['email']}/Maildir/*/{name}").stdout.encode()
    assert b"DKIM-Signature:" in raw and b"d=" + DOMAIN.encode() in raw

    def from_printed_zone(qname, timeout=5):
        found = rrset(zone, qname.decode().rstrip(".") + ".", "TXT")
        return b"".join(found[0].strings) if found else None

    assert dkim.verify(raw, dnsfunc=from_printed_zone)
    # ... and the check is real: one changed byte in the signed body fails it.
    head, body = raw.split(b"\n\n", 1)
    tampered = head + b"\n\n" + body.replace(b"vc-request", b"vc-requesT")
    assert not dkim.verify(tampered, dnsfunc=from_printed_zone)


def zone_records(printed_text: str, drop: tuple[str, ...] = ()) -> list[str]:
    lines = [line for line in printed_text.splitlines() if line.strip() and not line.startswith(";")]
    return [line for line in lines if not any(line.startswith(prefix) for prefix in drop)]


def test_check_reports_a_complete_zone_as_ok(relay, net, printed):
    text, _ = printed
    net.set_zone(DOMAIN, zone_records(text))
    done = relay.exec("relayctl", "dns", "--check", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "missing" not in done.stdout and "wrong" not in done.stdout
    # relayctl status reports the published DKIM record and the certificate, too.
    status = json.loads(relay.exec("relayctl", "status", "--json").stdout)
    assert status["dkim_record_published"] == "ok"
    assert status["certificate"]["served_everywhere"] is True
    assert status["certificate"]["days_left"] > 300
    assert status["services"]["relay-certs"] == "RUNNING" and status["queue"] == 0
    assert {"accounts", "disk_free_bytes", "account_creation", "health"} <= set(status)


def test_check_names_what_is_missing_or_wrong(relay, net, printed):
    text, _ = printed
    records = zone_records(text, drop=(f"chatmail._domainkey.{DOMAIN}.", f"_dmarc.{DOMAIN}."))
    records = [r.replace(f"10 {DOMAIN}.", "10 mx.elsewhere.test.") if " MX " in r else r
               for r in records]
    net.set_zone(DOMAIN, records)
    done = relay.exec("relayctl", "dns", "--check", check=False)
    assert done.returncode == 1, done.stdout
    status = json.loads(relay.exec("relayctl", "status", "--json").stdout)
    assert status["dkim_record_published"] == "missing"
    lines = done.stdout.splitlines()

    def verdict(fragment):
        return [line for line in lines if fragment in line]

    assert any("missing" in line for line in verdict("_domainkey")), done.stdout
    assert any("missing" in line for line in verdict("_dmarc")), done.stdout
    assert any("wrong" in line and "mx.elsewhere.test" in line for line in verdict("MX")), done.stdout
    assert all("ok" in line for line in verdict("_submissions")), done.stdout


def test_doctor_gives_a_verdict_per_check(relay, net, printed):
    text, _ = printed
    net.set_zone(DOMAIN, zone_records(text))

    def doctor(*args):
        done = relay.exec("relayctl", "doctor", "--json", *args, check=False)
        return done.returncode, {c["name"]: c for c in json.loads(done.stdout)}

    # Port 25 of a host that has no mail server: fail, with the advice to ask the provider.
    rc, checks = doctor("--port25-host", net.ip(2))
    assert rc == 1
    assert checks["outbound port 25"]["verdict"] == "fail"
    assert "provider" in checks["outbound port 25"]["advice"]
    assert checks["forward DNS"]["verdict"] == "ok"
    # Docker's embedded DNS answers PTR queries for containers itself (their names).
    assert net.ip(30) in checks["reverse DNS"]["detail"]
    assert checks["certificate served"]["verdict"] == "ok"
    assert checks["resolver"]["verdict"] == "ok"

    # With a reachable mail server (the relay itself) nothing fails.
    rc, checks = doctor("--port25-host", net.ip(30))
    assert checks["outbound port 25"]["verdict"] == "ok", checks["outbound port 25"]
    assert rc == 0, checks
    assert "relay-doctor: OK   certificate served" in relay.logs()  # the start-up summary
