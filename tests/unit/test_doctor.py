"""relayctl doctor's checks (relay.ops.doctor) with a fake resolver, fake sockets, a fake
clock reference and fake free space: each verdict (ok, warn, fail, skip) is reached."""

import email.utils
import json
from types import SimpleNamespace

import dns.exception
import dns.resolver
import pytest

from relay import settings, system
from relay.ops import clientaddr, doctor

DOMAIN = "chat.example.org"
V4, V6 = "192.0.2.10", "2001:db8::10"
MiB = 1024 * 1024


class Resolver:
    """Answers from a dict (name, type) -> list of texts; 'timeout' as the list times out,
    a missing name is NXDOMAIN."""

    def __init__(self, zone):
        self.zone = zone

    def resolve(self, name, rtype):
        key = (str(name).rstrip("."), rtype)
        answer = self.zone.get(key)
        if answer == "timeout":
            raise dns.exception.Timeout()
        if answer is None:
            raise dns.resolver.NXDOMAIN()
        return [SimpleNamespace(to_text=lambda v=v: v) for v in answer]


@pytest.fixture
def zone(monkeypatch):
    """The DNS the doctor sees: fill the dict."""
    records: dict = {}
    monkeypatch.setattr(doctor, "_resolver", lambda: Resolver(records))
    return records


def values(domain=DOMAIN, **env):
    return settings.load({"MAIL_DOMAIN": domain, **env})


PTR_V4 = "10.2.0.192.in-addr.arpa"


# --- resolver and forward DNS ---------------------------------------------------------------

def test_resolver(zone):
    zone[(DOMAIN, "A")] = [V4]
    assert doctor.check_resolver(values()).verdict == "ok"
    del zone[(DOMAIN, "A")]
    check = doctor.check_resolver(values())
    assert check.verdict == "ok" and "no A record" in check.detail
    zone[(DOMAIN, "A")] = "timeout"
    check = doctor.check_resolver(values())
    assert check.verdict == "fail" and check.detail == "no answer: Timeout"
    assert "resolv.conf" in check.advice


@pytest.mark.parametrize("records,public,verdict,detail", [
    ({(DOMAIN, "A"): [V4]}, V4, "ok", f"{DOMAIN} -> {V4}"),
    ({(DOMAIN, "A"): [V4], (DOMAIN, "AAAA"): [V6]}, V6, "ok", f"{DOMAIN} -> {V4}, {V6}"),
    ({}, V4, "fail", f"{DOMAIN} has no A/AAAA record"),
    ({(DOMAIN, "A"): ["198.51.100.7"]}, V4, "fail", "points at 198.51.100.7, this relay is"),
    ({(DOMAIN, "A"): [V4]}, "", "warn", "public address is unknown"),
])
def test_forward_dns(zone, monkeypatch, records, public, verdict, detail):
    zone.update(records)
    monkeypatch.setattr(system, "local_addresses", lambda: [])
    check = doctor.check_forward_dns(values(PUBLIC_ADDRESSES=public))
    assert check.verdict == verdict and detail in check.detail


def test_forward_dns_falls_back_to_the_interfaces(zone, monkeypatch):
    zone[(DOMAIN, "A")] = [V4]
    monkeypatch.setattr(system, "local_addresses", lambda: [V4])
    assert doctor.check_forward_dns(values()).verdict == "ok"


@pytest.mark.parametrize("domain", ["[192.0.2.1]", "localhost"])
def test_forward_dns_is_skipped_without_dns(zone, domain):
    assert doctor.check_forward_dns(values(domain, TLS_MODE="self-signed")).verdict == "skip"


# --- reverse DNS -----------------------------------------------------------------------------

def test_reverse_dns_that_resolves_back(zone):
    zone.update({(PTR_V4, "PTR"): [f"{DOMAIN}."], (DOMAIN, "A"): [V4]})
    check = doctor.check_reverse_dns(values(PUBLIC_ADDRESSES=V4))
    assert (check.verdict, check.detail) == ("ok", f"{V4} -> {DOMAIN}")


def test_reverse_dns_missing_or_not_resolving_back(zone):
    check = doctor.check_reverse_dns(values(PUBLIC_ADDRESSES=V4))
    assert check.verdict == "warn" and check.detail == f"{V4} has no PTR record"
    assert DOMAIN in check.advice
    zone[(PTR_V4, "PTR")] = ["host.provider.example."]
    zone[("host.provider.example", "A")] = ["198.51.100.7"]
    check = doctor.check_reverse_dns(values(PUBLIC_ADDRESSES=V4))
    assert check.verdict == "warn" and "does not resolve back" in check.detail


def test_reverse_dns_without_a_public_address(zone, monkeypatch):
    monkeypatch.setattr(system, "local_addresses", lambda: [])
    assert doctor.check_reverse_dns(values()).verdict == "skip"


# --- IPv6, port 25, clock, headroom, certificate --------------------------------------------

@pytest.mark.parametrize("available,addresses,verdict", [
    (False, [V4], "skip"), (True, [V4], "warn"), (True, [V4, V6], "ok")])
def test_ipv6(monkeypatch, available, addresses, verdict):
    monkeypatch.setattr(system, "ipv6_available", lambda: available)
    monkeypatch.setattr(system, "local_addresses", lambda: addresses)
    assert doctor.check_ipv6().verdict == verdict


class Banner:
    """A connected socket that sends ``banner``."""

    def __init__(self, banner):
        self.banner = banner

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def recv(self, size):
        return self.banner[:size]


def test_port25(monkeypatch):
    servers = {"mx.a.example": b"220 mx.a.example ESMTP\r\n", "mx.b.example": b"554 go away\r\n"}
    asked = []

    def connect(address, timeout):
        asked.append(address)
        if address[0] not in servers:
            raise TimeoutError("timed out")
        return Banner(servers[address[0]])

    monkeypatch.setattr(doctor.socket, "create_connection", connect)
    check = doctor.check_port25(["mx.blocked.example", "mx.a.example"])
    assert check.verdict == "ok" and check.detail.startswith("mx.a.example: 220")
    assert asked == [("mx.blocked.example", 25), ("mx.a.example", 25)]
    check = doctor.check_port25(["mx.blocked.example", "mx.b.example"])
    assert check.verdict == "fail" and "mx.b.example: 554 go away" in check.detail
    assert "block outbound port 25" in check.advice


def test_port25_without_dns_blames_the_resolver_not_the_provider(monkeypatch):
    def connect(address, timeout):
        raise doctor.socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(doctor.socket, "create_connection", connect)
    check = doctor.check_port25(["mx.a.example", "mx.b.example"])
    assert check.verdict == "fail" and "resolver" in check.advice
    assert "block outbound port 25" not in check.advice


class Reference:
    """urlopen's answer: a HEAD response with a Date header (or none)."""

    def __init__(self, date):
        self.headers = {"Date": date} if date else {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("offset,verdict", [(0, "ok"), (-120, "fail"), (3600, "fail"), (None, "skip")])
def test_clock(monkeypatch, offset, verdict):
    now = 1_760_000_000.0  # the host's clock, a fake
    monkeypatch.setattr(doctor, "time", SimpleNamespace(time=lambda: now))
    date = None if offset is None else email.utils.formatdate(now + offset, usegmt=True)
    monkeypatch.setattr(doctor.urllib.request, "urlopen",
                        lambda req, timeout, context: Reference(date))
    check = doctor.check_clock("https://acme.example/directory")
    assert check.verdict == verdict, check


def test_clock_without_a_reference(monkeypatch):
    def refuse(req, timeout, context):
        raise OSError("connection refused")
    monkeypatch.setattr(doctor.urllib.request, "urlopen", refuse)
    check = doctor.check_clock("https://acme.example/directory")
    assert check.verdict == "skip" and "connection refused" in check.detail


@pytest.mark.parametrize("free,verdict", [(5000 * MiB, "ok"), (1500 * MiB, "warn"), (500 * MiB, "fail")])
def test_headroom(monkeypatch, free, verdict):
    monkeypatch.setattr(system, "free_disk", lambda path: free)
    monkeypatch.setattr(system, "available_memory", lambda: free)
    checks = doctor.check_headroom(values(CREATE_MIN_FREE_DISK="1G", CREATE_MIN_FREE_MEMORY="1G"))
    assert [c.name for c in checks] == ["disk headroom", "memory headroom"]
    assert {c.verdict for c in checks} == {verdict}
    assert checks[0].detail.startswith(f"{free // MiB} MiB free")


def test_certificate(monkeypatch):
    watch = doctor.certwatch
    monkeypatch.setattr(watch, "installed_fingerprint", lambda: None)
    assert doctor.check_certificate().verdict == "fail"
    monkeypatch.setattr(watch, "installed_fingerprint", lambda: "fp")
    monkeypatch.setattr(watch, "stale_endpoints", lambda fp: {"993 (IMAP)": "error: refused"})
    check = doctor.check_certificate()
    assert check.verdict == "fail" and check.detail == "not served on 993 (IMAP)"
    monkeypatch.setattr(watch, "stale_endpoints", lambda fp: {})
    assert doctor.check_certificate().verdict == "ok"


def test_a_check_line_gives_advice_only_when_not_ok():
    assert doctor.Check("x", "ok", "fine", "do y").line() == "OK   x: fine"
    assert doctor.Check("x", "warn", "hmm", "do y").line() == "WARN x: hmm -> do y"


# --- the command ------------------------------------------------------------------------------

@pytest.fixture
def healthy(zone, monkeypatch):
    """A host on which every check passes."""
    zone.update({(DOMAIN, "A"): [V4], (PTR_V4, "PTR"): [DOMAIN]})
    monkeypatch.setattr(doctor.settings_mod, "from_environment",
                        lambda: values(PUBLIC_ADDRESSES=V4, TLS_MODE="self-signed",
                                       PRIVACY_POSTAL="Operator, Street 1, Town",
                                       PRIVACY_MAIL="privacy@example.org"))
    monkeypatch.setattr(system, "ipv6_available", lambda: False)
    monkeypatch.setattr(system, "local_addresses", lambda: [V4])
    monkeypatch.setattr(system, "free_disk", lambda path: 100 << 30)
    monkeypatch.setattr(system, "available_memory", lambda: 100 << 30)
    monkeypatch.setattr(doctor.limits, "open_files_limit", lambda: 1048576)
    monkeypatch.setattr(doctor.certwatch, "installed_fingerprint", lambda: "fp")
    monkeypatch.setattr(doctor.certwatch, "stale_endpoints", lambda fp: {})
    monkeypatch.setattr(doctor.socket, "create_connection",
                        lambda address, timeout: Banner(b"220 hello\r\n"))
    monkeypatch.setattr(clientaddr, "census", lambda: clientaddr.Census(0, 0, 0, ""))
    return zone


def test_startup_summary(healthy, capsys):
    assert doctor.main(["--startup"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("relay-doctor: ") for line in lines)
    assert "relay-doctor: SKIP outbound port 25: not probed at start-up -> run `relayctl doctor` " \
        "to probe it" in lines
    assert lines[-1] == "relay-doctor: 8 ok, 0 warn, 0 fail, 4 skip"


def test_json_and_the_exit_status(healthy, capsys):
    assert doctor.main(["--json", "--port25-host", "mx.a.example"]) == 0
    checks = json.loads(capsys.readouterr().out)
    assert all(set(c) == {"name", "verdict", "detail", "advice"} for c in checks)
    assert [c["name"] for c in checks] == [
        "resolver", "forward DNS", "reverse DNS", "IPv6", "outbound port 25", "clock",
        "disk headroom", "memory headroom", "open files", "certificate served",
        "client addresses", "privacy contact"]
    assert {c["name"]: c["verdict"] for c in checks}["outbound port 25"] == "ok"
    healthy[(DOMAIN, "A")] = ["198.51.100.7"]
    assert doctor.main(["--json", "--port25-host", "mx.a.example"]) == 1
    assert {c["name"]: c["verdict"] for c in json.loads(capsys.readouterr().out)}[
        "forward DNS"] == "fail"


# --- client addresses ----------------------------------------------------------------------

@pytest.mark.parametrize("census,verdict,detail", [
    (clientaddr.Census(0, 0, 0, ""), "skip", "no client connections at the moment"),
    (clientaddr.Census(10, 1, 10, "172.17.0.1"), "warn",
     "10 of 10 client connections come from the gateway 172.17.0.1"),
    (clientaddr.Census(10, 4, 6, "172.17.0.1"), "warn", "6 of 10"),
    (clientaddr.Census(10, 6, 5, "172.17.0.1"), "ok", "10 client connections from 6 addresses"),
    (clientaddr.Census(3, 3, 0, ""), "ok", "3 client connections from 3 addresses, 0 from a gateway"),
])
def test_client_addresses(monkeypatch, census, verdict, detail):
    monkeypatch.setattr(clientaddr, "census", lambda: census)
    check = doctor.check_client_addresses()
    assert check.verdict == verdict and detail in check.detail
    assert ("compose.host.yaml" in check.advice) == (verdict == "warn")


def test_only_runs_the_named_check(monkeypatch, capsys):
    monkeypatch.setattr(doctor.settings_mod, "from_environment", lambda: values())
    monkeypatch.setattr(clientaddr, "census", lambda: clientaddr.Census(4, 1, 4, "10.0.0.1"))
    assert doctor.main(["--only", "client-addresses", "--json"]) == 0
    assert [(c["name"], c["verdict"]) for c in json.loads(capsys.readouterr().out)] == [
        ("client addresses", "warn")]


# --- open files (the one host limit left for new-mail announcements, issue 14) --------------

def test_open_files_enough():
    check = doctor.check_open_files(values(MAX_IMAP_CONNECTIONS="10000"), have=20000)
    assert check.verdict == "ok"
    assert "20000" in check.detail and "11088" in check.detail


def test_open_files_too_few_names_found_needed_and_the_fix():
    check = doctor.check_open_files(values(MAX_IMAP_CONNECTIONS="10000"), have=4096)
    assert check.verdict == "warn"
    assert "limit 4096" in check.detail and "11088 needed" in check.detail
    assert "MAX_IMAP_CONNECTIONS=10000" in check.detail
    # the fix: a container limit of at least the need, or fewer connections
    assert "--ulimit nofile=65536:65536" in check.advice
    assert "MAX_IMAP_CONNECTIONS=3008" in check.advice


def test_open_files_in_the_startup_summary(healthy, monkeypatch, capsys):
    monkeypatch.setattr(doctor.limits, "open_files_limit", lambda: 1024)
    assert doctor.main(["--startup"]) == 0   # a warning, not a failure
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("relay-doctor: WARN open files: limit 1024") for line in lines)
    assert lines[-1] == "relay-doctor: 7 ok, 1 warn, 0 fail, 4 skip"
