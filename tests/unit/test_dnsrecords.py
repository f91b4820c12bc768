"""relayctl dns: the records to publish and the check of what is published.

The zone text is parsed with dnspython's zone parser; the check is fed by a
resolve function that answers from such a parsed zone (following CNAMEs like a
resolver), so "published" means "these zone-file lines are in the zone".
"""

import base64
import json
import os
import re

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from relay.ops import relayctl as cli
from relay import system
from relay.ops import dnscheck, dnsreport, dnszone
from relay import settings

DOMAIN = "chat.example.org"
ORIGIN = DOMAIN + "."
POLICY = f"version: STSv1\nmode: enforce\nmx: {DOMAIN}\nmax_age: 2419200\n"
# a 2048-bit key's SubjectPublicKeyInfo is 294 bytes: 392 base64 characters
KEY = base64.b64encode(bytes(range(256)) + bytes(38)).decode()
DKIM_VALUE = "v=DKIM1; k=rsa; p=" + KEY


def make_settings(**env):
    env.setdefault("MAIL_DOMAIN", DOMAIN)
    env.setdefault("ADMIN_EMAIL", "ops@example.net")
    return settings.load(env)


def make_zone(addresses=("203.0.113.5", "2001:db8::5"), dkim=DKIM_VALUE, policy=POLICY,
              detected=False, **env):
    return dnszone.records(make_settings(**env), dkim, policy, addresses, detected)


def parse(text, origin=DOMAIN):
    return dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)


def rdatas(zone, name, rtype):
    node = zone.get_node(dns.name.from_text(name))
    if node is None:
        return []
    rds = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rtype))
    return list(rds) if rds else []


def txt_values(zone, name):
    return [b"".join(r.strings).decode() for r in rdatas(zone, name, "TXT")]


def resolver_for(text, errors=()):
    """A resolve function answering from zone-file text (names anywhere in the tree);
    (name, type) in ``errors`` fail as a timeout would."""
    zone = parse(text, origin=".")

    def resolve(name, rtype):
        if (name, rtype) in errors:
            return dnscheck.Answer(error="timed out")
        current = dns.name.from_text(name)
        for _ in range(8):
            node = zone.get_node(current)
            if node is None:
                return dnscheck.Answer(canonical=current.to_text()) if current.to_text() != name \
                    else dnscheck.Answer()
            found = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rtype))
            if found:
                if rtype == "TXT":
                    values = tuple(b"".join(r.strings).decode() for r in found)
                else:
                    values = tuple(r.to_text() for r in found)
                return dnscheck.Answer(values, current.to_text())
            cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
            if not cname:
                return dnscheck.Answer(canonical=current.to_text())
            current = cname[0].target
        raise AssertionError("CNAME loop")

    return resolve


def edit(text, drop=(), add=()):
    """Zone text without the lines of ``drop``, plus ``add``. A ``drop`` entry that
    ends in a dot is an owner name; any other is a piece of the line."""
    def dropped(line):
        return any(line.split()[0] == s if s.endswith(".") else s in line for s in drop)
    lines = [line for line in text.splitlines() if not dropped(line)]
    return "\n".join(lines + list(add)) + "\n"


def by_name(results):
    return {(r.name, r.rtype): r for r in results}


# --- the records ----------------------------------------------------------------

def test_zone_text_parses_and_has_every_record_of_spec_section_6():
    text = dnszone.zone_text(make_zone())
    assert "$ORIGIN" not in text and "$TTL" not in text
    zone = parse(text)
    assert [r.address for r in rdatas(zone, ORIGIN, "A")] == ["203.0.113.5"]
    assert [r.address for r in rdatas(zone, ORIGIN, "AAAA")] == ["2001:db8::5"]
    mx = rdatas(zone, ORIGIN, "MX")
    assert [(r.preference, r.exchange.to_text()) for r in mx] == [(10, ORIGIN)]
    assert txt_values(zone, ORIGIN) == ["v=spf1 a ~all"]
    assert txt_values(zone, f"chatmail._domainkey.{ORIGIN}") == [DKIM_VALUE]
    assert txt_values(zone, f"_dmarc.{ORIGIN}") == ["v=DMARC1;p=reject;adkim=s;aspf=s"]
    assert txt_values(zone, f"_mta-sts.{ORIGIN}") == [f"v=STSv1; id={dnszone.mta_sts_id(POLICY)}"]
    assert txt_values(zone, f"_smtp._tls.{ORIGIN}") == ["v=TLSRPTv1;rua=mailto:ops@example.net"]
    for host in ("mta-sts", "www"):
        assert [r.target.to_text() for r in rdatas(zone, f"{host}.{ORIGIN}", "CNAME")] == [ORIGIN]
    srv = {service: [(r.port, r.target.to_text())
                     for r in rdatas(zone, f"{service}._tcp.{ORIGIN}", "SRV")]
           for service in ("_submissions", "_submission", "_imaps", "_imap")}
    assert srv == {"_submissions": [(465, ORIGIN)], "_submission": [(587, ORIGIN)],
                   "_imaps": [(993, ORIGIN)], "_imap": [(0, ".")]}
    assert [r.to_text() for r in rdatas(zone, ORIGIN, "CAA")] == ['0 issue "letsencrypt.org"']
    for line in text.splitlines():
        assert line.startswith(";") or line.split()[0].endswith("."), line
        if not line.startswith(";"):
            assert line.split()[1:3] == ["3600", "IN"], line


def test_every_record_line_is_a_record_of_the_zone_and_nothing_else():
    zone = make_zone()
    parsed = parse(dnszone.zone_text(zone))
    count = sum(len(rds) for _, rds in parsed.iterate_rdatasets())
    assert count == len(zone.records) == 15


def test_a_long_dkim_value_is_split_into_strings_of_at_most_255_and_rejoins():
    value = "v=DKIM1; k=rsa; p=" + base64.b64encode(os.urandom(550)).decode()  # 4096-bit size
    assert len(value) == 754
    zone = parse(dnszone.zone_text(make_zone(dkim=value)))
    (record,) = rdatas(zone, f"chatmail._domainkey.{ORIGIN}", "TXT")
    assert len(record.strings) == 3
    assert all(len(s) <= 255 for s in record.strings)
    assert all(len(s) == 255 for s in record.strings[:-1])
    assert b"".join(record.strings).decode() == value


def test_txt_rdata_quotes_and_escapes():
    assert dnszone.txt_rdata('a"b\\c') == '"a\\"b\\\\c"'
    assert dnszone.txt_rdata("x" * 256) == '"' + "x" * 255 + '" "x"'
    assert dnszone.txt_rdata("x" * 255) == '"' + "x" * 255 + '"'
    with pytest.raises(ValueError):
        dnszone.txt_rdata("non-ascii é")


def test_the_mta_sts_id_follows_the_policy_text():
    first = dnszone.mta_sts_id(POLICY)
    assert first == dnszone.mta_sts_id(POLICY)
    assert first != dnszone.mta_sts_id(POLICY.replace("enforce", "testing"))
    assert first.isalnum() and 1 <= len(first) <= 32


def test_without_addresses_the_zone_asks_for_them_and_still_parses():
    zone = make_zone(addresses=())
    text = dnszone.zone_text(zone)
    parsed = parse(text)
    assert rdatas(parsed, ORIGIN, "A") == [] and rdatas(parsed, ORIGIN, "AAAA") == []
    assert "PUBLIC_ADDRESSES" in text
    assert f";  {ORIGIN} 3600 IN A     <public IPv4 address>" in text
    assert rdatas(parsed, ORIGIN, "MX")  # the rest is there


def test_tlsrpt_only_with_an_admin_address_elsewhere():
    no_admin = make_zone(ADMIN_EMAIL="")
    assert not [r for r in no_admin.records if r.kind == "tlsrpt"]
    assert any("ADMIN_EMAIL" in c for c in no_admin.comments)
    own = make_zone(ADMIN_EMAIL=f"admin@{DOMAIN}")
    assert not [r for r in own.records if r.kind == "tlsrpt"]
    assert any("refuses unencrypted mail" in c for c in own.comments)


@pytest.mark.parametrize("env, caa", [
    ({}, '0 issue "letsencrypt.org"'),
    ({"ACME_DIRECTORY_URL": "https://acme-staging-v02.api.letsencrypt.org/directory"},
     '0 issue "letsencrypt.org"'),
    ({"ACME_DIRECTORY_URL": "https://pebble.example.test:14000/dir"}, None),
    ({"TLS_MODE": "self-signed"}, None),
    ({"TLS_MODE": "external"}, None),
])
def test_caa_only_for_a_ca_we_know(env, caa):
    zone = make_zone(**env)
    found = [r.rdata for r in zone.records if r.rtype == "CAA"]
    assert found == ([caa] if caa else [])
    if "ACME_DIRECTORY_URL" in env and not caa:
        assert any("pebble.example.test" in c for c in zone.comments)
    parse(dnszone.zone_text(zone))


@pytest.mark.parametrize("domain", ["[192.0.2.1]", "localhost"])
def test_ip_literals_and_localhost_have_nothing_to_publish(domain, capsys):
    zone = make_zone(MAIL_DOMAIN=domain)
    assert zone.records == [] and not zone.publishable
    text = dnszone.zone_text(zone)
    assert text.startswith("; ") and "nothing to publish" in text or "no name" in text
    assert dnscheck.check(zone, lambda name, rtype: pytest.fail("no lookups")) == []
    assert dnsreport.run(make_settings(MAIL_DOMAIN=domain), do_check=True,
                 resolve=lambda name, rtype: pytest.fail("no lookups")) == 0
    assert "nothing to check" in capsys.readouterr().out


def test_an_underscore_domain_says_no_public_dns_is_needed_and_lists_records_for_a_test_zone():
    zone = make_zone(MAIL_DOMAIN="_chat.example.test", TLS_MODE="self-signed")
    text = dnszone.zone_text(zone)
    assert any("No public DNS is needed" in c for c in zone.comments)
    assert "No public DNS is needed" in text.replace("\n; ", " ")
    parsed = parse(text, origin="_chat.example.test")
    assert rdatas(parsed, "_chat.example.test.", "MX")
    results = dnscheck.check(zone, resolver_for(text))
    assert {r.status for r in results} == {"ok"}


# --- the check ----------------------------------------------------------------

def test_a_complete_zone_checks_ok():
    zone = make_zone()
    results = dnscheck.check(zone, resolver_for(dnszone.zone_text(zone)))
    assert len(results) == 15  # one per name and type
    assert [r for r in results if r.status != "ok"] == []
    assert not any(r.failed for r in results)
    assert "all required records are published correctly" in dnscheck.summary(results)


def test_an_empty_zone_reports_everything_missing_and_fails():
    zone = make_zone()
    results = dnscheck.check(zone, resolver_for(f"{ORIGIN} 3600 IN NS ns.example.net.\n"))
    assert {r.status for r in results} == {"missing"}
    assert all(r.failed == r.required for r in results)
    optional = {(r.name, r.rtype) for r in results if not r.required}
    assert optional == {(f"www.{ORIGIN}", "CNAME"), (f"_smtp._tls.{ORIGIN}", "TXT"),
                        (ORIGIN, "CAA")}
    assert "publish or fix" in dnscheck.summary(results)


def test_missing_optional_records_are_warnings_only():
    zone = make_zone()
    text = edit(dnszone.zone_text(zone), drop=[f"www.{ORIGIN}", "_smtp._tls", " CAA "])
    results = by_name(dnscheck.check(zone, resolver_for(text)))
    for key in ((f"www.{ORIGIN}", "CNAME"), (f"_smtp._tls.{ORIGIN}", "TXT"), (ORIGIN, "CAA")):
        assert results[key].status == "missing" and not results[key].failed
        assert results[key].line().startswith("missing (optional)")
    assert not any(r.failed for r in results.values())


def test_missing_required_records_fail():
    zone = make_zone()
    text = edit(dnszone.zone_text(zone), drop=[" MX ", "_dmarc", "_imap._tcp"])
    results = by_name(dnscheck.check(zone, resolver_for(text)))
    for key in ((ORIGIN, "MX"), (f"_dmarc.{ORIGIN}", "TXT"), (f"_imap._tcp.{ORIGIN}", "SRV")):
        assert results[key].status == "missing" and results[key].failed
    assert sum(r.status == "ok" for r in results.values()) == 12


WRONG = [
    # (lines to drop, lines to add, (name, type) that is wrong)
    ([" MX "], [f"{ORIGIN} 3600 IN MX 10 mail.example.net."], (ORIGIN, "MX")),
    ([" MX "], [f"{ORIGIN} 3600 IN MX 10 {ORIGIN}", f"{ORIGIN} 3600 IN MX 20 backup.example.net."],
     (ORIGIN, "MX")),
    (["v=spf1"], [f'{ORIGIN} 3600 IN TXT "v=spf1 a +all"'], (ORIGIN, "TXT")),
    (["v=spf1"], [f'{ORIGIN} 3600 IN TXT "v=spf1 a ?all"'], (ORIGIN, "TXT")),
    ([], [f'{ORIGIN} 3600 IN TXT "v=spf1 mx -all"'], (ORIGIN, "TXT")),  # two SPF records
    (["_domainkey"], [f'chatmail._domainkey.{ORIGIN} 3600 IN TXT "v=DKIM1; k=rsa; p=AAAA"'],
     (f"chatmail._domainkey.{ORIGIN}", "TXT")),
    (["_dmarc"], [f'_dmarc.{ORIGIN} 3600 IN TXT "v=DMARC1;p=none"'], (f"_dmarc.{ORIGIN}", "TXT")),
    (["_mta-sts"], [f'_mta-sts.{ORIGIN} 3600 IN TXT "v=STSv1; id=20240101"'],
     (f"_mta-sts.{ORIGIN}", "TXT")),
    (["_smtp._tls"], [f'_smtp._tls.{ORIGIN} 3600 IN TXT "v=TLSRPTv1;rua=mailto:old@example.net"'],
     (f"_smtp._tls.{ORIGIN}", "TXT")),
    (["_submissions"], [f"_submissions._tcp.{ORIGIN} 3600 IN SRV 0 1 587 {ORIGIN}"],
     (f"_submissions._tcp.{ORIGIN}", "SRV")),
    (["_imap._tcp"], [f"_imap._tcp.{ORIGIN} 3600 IN SRV 0 1 143 {ORIGIN}"],
     (f"_imap._tcp.{ORIGIN}", "SRV")),
    ([" A "], [f"{ORIGIN} 3600 IN A 198.51.100.7"], (ORIGIN, "A")),
    ([f"mta-sts.{ORIGIN}"], [f"mta-sts.{ORIGIN} 3600 IN A 198.51.100.7"],
     (f"mta-sts.{ORIGIN}", "CNAME")),
    ([f"www.{ORIGIN}"], [f"www.{ORIGIN} 3600 IN CNAME web.example.net."],
     (f"www.{ORIGIN}", "CNAME")),
    # optional, but a CAA set that leaves out our CA stops the certificate
    ([" CAA "], [f'{ORIGIN} 3600 IN CAA 0 issue "pki.goog"'], (ORIGIN, "CAA")),
    ([" CAA "], ['example.org. 3600 IN CAA 0 issue "sectigo.com"'], (ORIGIN, "CAA")),
]


@pytest.mark.parametrize("drop, add, key", WRONG)
def test_wrong_records_are_reported_with_what_was_found(drop, add, key):
    zone = make_zone()
    text = edit(dnszone.zone_text(zone), drop=drop, add=add)
    results = by_name(dnscheck.check(zone, resolver_for(text)))
    assert results[key].status == "wrong", results[key]
    assert results[key].failed
    assert results[key].found
    assert "(found " in results[key].line()
    assert [k for k, r in results.items() if r.status != "ok"] == [key]


ACCEPTED = [
    # MX preference and SRV priority/weight do not matter
    ([" MX "], [f"{ORIGIN} 3600 IN MX 0 {ORIGIN}"], (ORIGIN, "MX")),
    (["_imaps"], [f"_imaps._tcp.{ORIGIN} 3600 IN SRV 5 0 993 {ORIGIN}"],
     (f"_imaps._tcp.{ORIGIN}", "SRV")),
    # stricter or different but sound sender policies
    (["v=spf1"], [f'{ORIGIN} 3600 IN TXT "v=spf1 a mx -all"'], (ORIGIN, "TXT")),
    ([], [f'{ORIGIN} 3600 IN TXT "google-site-verification=abc"'], (ORIGIN, "TXT")),
    (["_dmarc"], [f'_dmarc.{ORIGIN} 3600 IN TXT "v=DMARC1; p=quarantine; rua=mailto:x@x.net"'],
     (f"_dmarc.{ORIGIN}", "TXT")),
    # DKIM key with whitespace and tags in another order
    (["_domainkey"], [f'chatmail._domainkey.{ORIGIN} 3600 IN TXT "k=rsa; v=DKIM1; p='
                      + KEY[:200] + '" " ' + KEY[200:] + '"'],
     (f"chatmail._domainkey.{ORIGIN}", "TXT")),
    # a CNAME chain to the domain, or the same addresses without a CNAME
    ([f"mta-sts.{ORIGIN}"], [f"mta-sts.{ORIGIN} 3600 IN CNAME web.{ORIGIN}",
                    f"web.{ORIGIN} 3600 IN CNAME {ORIGIN}"], (f"mta-sts.{ORIGIN}", "CNAME")),
    ([f"www.{ORIGIN}"], [f"www.{ORIGIN} 3600 IN A 203.0.113.5",
                         f"www.{ORIGIN} 3600 IN AAAA 2001:db8::5"],
     (f"www.{ORIGIN}", "CNAME")),
    # more addresses than ours, and further CAs next to ours, at a parent
    ([], [f"{ORIGIN} 3600 IN A 203.0.113.99"], (ORIGIN, "A")),
    ([" CAA "], ['example.org. 3600 IN CAA 0 issue "letsencrypt.org; accounturi=x"',
                 'example.org. 3600 IN CAA 0 issue "sectigo.com"'], (ORIGIN, "CAA")),
]


@pytest.mark.parametrize("drop, add, key", ACCEPTED)
def test_equivalent_records_are_accepted(drop, add, key):
    zone = make_zone()
    text = edit(dnszone.zone_text(zone), drop=drop, add=add)
    results = by_name(dnscheck.check(zone, resolver_for(text)))
    assert results[key].status == "ok", results[key]
    assert not any(r.failed for r in results.values())


def test_extra_addresses_are_named_in_the_ok_line():
    zone = make_zone()
    text = edit(dnszone.zone_text(zone), add=[f"{ORIGIN} 3600 IN A 203.0.113.99"])
    result = by_name(dnscheck.check(zone, resolver_for(text)))[(ORIGIN, "A")]
    assert "203.0.113.99" in result.line() and "not one of this relay's" in result.line()


def test_lookup_errors_fail_required_records_only():
    zone = make_zone()
    errors = {(ORIGIN, "MX"), (ORIGIN, "CAA")}
    results = by_name(dnscheck.check(zone, resolver_for(dnszone.zone_text(zone), errors=errors)))
    assert results[(ORIGIN, "MX")].status == "error" and results[(ORIGIN, "MX")].failed
    assert results[(ORIGIN, "CAA")].status == "error" and not results[(ORIGIN, "CAA")].failed
    assert "timed out" in results[(ORIGIN, "MX")].line()


def test_without_known_addresses_the_domain_needs_some_address():
    zone = make_zone(addresses=())
    published = edit(dnszone.zone_text(make_zone()))  # the full zone, addresses included
    results = by_name(dnscheck.check(zone, resolver_for(published)))
    assert results[(ORIGIN, "A/AAAA")].status == "ok"
    assert "PUBLIC_ADDRESSES" in results[(ORIGIN, "A/AAAA")].line()
    assert results[(f"www.{ORIGIN}", "CNAME")].status == "ok"
    bare = edit(dnszone.zone_text(zone))  # what was printed: no addresses
    missing = by_name(dnscheck.check(zone, resolver_for(bare)))[(ORIGIN, "A/AAAA")]
    assert missing.status == "missing" and missing.failed


# --- relayctl dns ---------------------------------------------------------------

@pytest.fixture
def container(monkeypatch):
    """What run() reads from the container: the DKIM value, the policy, the interfaces."""
    monkeypatch.setattr(dnsreport.dkim, "txt_record_value", lambda: DKIM_VALUE)
    monkeypatch.setattr(dnsreport, "served_policy", lambda: POLICY)
    monkeypatch.setattr(system, "local_addresses", lambda: ["203.0.113.5", "2001:db8::5"])
    for name in settings.BY_NAME:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAIL_DOMAIN", DOMAIN)
    monkeypatch.setenv("ADMIN_EMAIL", "ops@example.net")


def test_relayctl_dns_prints_the_zone(container, monkeypatch, capsys):
    assert cli.main(["dns"]) == 0
    out = capsys.readouterr().out
    assert out == dnszone.zone_text(make_zone(addresses=["203.0.113.5", "2001:db8::5"], detected=True))
    assert "found on the container's interfaces" in out
    monkeypatch.setenv("PUBLIC_ADDRESSES", "198.51.100.9")
    assert cli.main(["dns"]) == 0
    out = capsys.readouterr().out
    assert out == dnszone.zone_text(make_zone(addresses=["198.51.100.9"]))
    assert re.search(rf"^{re.escape(ORIGIN)} +3600 IN A +198\.51\.100\.9$", out, re.M)
    assert " IN AAAA " not in out


def test_relayctl_dns_json(container, capsys):
    assert cli.main(["dns", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["domain"] == DOMAIN and len(data["records"]) == 15
    assert {"name", "rtype", "rdata", "required"} <= set(data["records"][0])
    assert "check" not in data


def test_relayctl_dkim_record_is_a_line_a_zone_file_takes(container, capsys):
    # One quoted string of 410 characters is no valid TXT record: at most 255 per string.
    assert cli.main(["dkim-record"]) == 0
    name, rdata_text = capsys.readouterr().out.strip().split(" IN TXT ", 1)
    assert name == "chatmail._domainkey"
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rdata_text)
    assert len(rdata.strings) == 2 and b"".join(rdata.strings).decode() == DKIM_VALUE
    assert cli.main(["dkim-record", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == DKIM_VALUE


def test_check_exit_status_and_output(container, capsys):
    full = dnszone.zone_text(make_zone())
    assert dnsreport.run(make_settings(), do_check=True, resolve=resolver_for(full)) == 0
    out = capsys.readouterr().out
    assert out.count("\nok ") + out.startswith("ok ") == 15
    broken = edit(full, drop=["_dmarc"])
    assert dnsreport.run(make_settings(), do_check=True, json_output=True,
                 resolve=resolver_for(broken)) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert [c["name"] for c in data["check"] if c["failed"]] == [f"_dmarc.{ORIGIN}"]


def test_missing_dkim_key_is_a_clear_error(container, monkeypatch, capsys):
    def no_key():
        raise FileNotFoundError("/data/dkim/chatmail.private")
    monkeypatch.setattr(dnsreport.dkim, "txt_record_value", no_key)
    assert cli.main(["dns"]) == 1
    assert "start the relay first" in capsys.readouterr().err


# --- the container's own addresses ---------------------------------------------

FIB_TRIE = """Main:
  +-- 0.0.0.0/0 3 0 4
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 172.17.0.0/16 2 0 2
           |-- 172.17.0.2
              /32 host LOCAL
     +-- 198.51.100.0/24 2 0 2
           |-- 198.51.100.0
              /24 link UNICAST
           |-- 81.2.69.160
              /24 link UNICAST
              /32 host LOCAL
        |-- 198.51.100.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 3 0 4
           |-- 81.2.69.160
              /32 host LOCAL
"""

IF_INET6 = """\
fe800000000000001c8a75fffe338b16 23f 40 20 80 veth920af64
fd000000000000000000000000000002 04 40 00 82     eth0
2a0104f8000000000000000000000002 04 40 00 80     eth0
2a0104f8000000000000000000000003 04 40 00 01     eth0
2a0104f8000000000000000000000004 04 40 00 a0     eth0
00000000000000000000000000000001 01 80 10 80       lo
"""


def test_fib_trie_gives_the_local_ipv4_addresses():
    assert system.parse_fib_trie(FIB_TRIE) == ["127.0.0.1", "172.17.0.2", "81.2.69.160"]


def test_if_inet6_skips_temporary_and_deprecated_addresses():
    assert system.parse_if_inet6(IF_INET6) == ["fe80::1c8a:75ff:fe33:8b16", "fd00::2", "2a01:4f8::2",
                                          "::1"]


def test_only_global_addresses_are_published():
    found = system.parse_fib_trie(FIB_TRIE) + system.parse_if_inet6(IF_INET6)
    assert system.global_addresses(found) == ["81.2.69.160", "2a01:4f8::2"]


def test_local_addresses_reads_proc(tmp_path):
    (tmp_path / "fib_trie").write_text(FIB_TRIE)
    (tmp_path / "if_inet6").write_text(IF_INET6)
    assert system.local_addresses(tmp_path) == ["81.2.69.160", "2a01:4f8::2"]
    assert system.local_addresses(tmp_path / "missing") == []
