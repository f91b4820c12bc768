"""relayctl doctor: what an operator needs to know about a new host, each check
with a verdict (ok, warn, fail, skip) and what to do about it.

    relayctl doctor [--json] [--port25-host HOST ...] [--clock-url URL]

At every start the container logs a summary of the checks that need nothing
outside this host and its DNS (``--startup``); the outbound port 25 probe runs
only when asked, because it connects to other people's mail servers.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import socket
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass

from relay import limits, paths, system
from relay import settings as settings_mod
from relay.certs import watch as certwatch
from relay.ops import dnszone
from relay.settings import Settings

CLOCK_SKEW_LIMIT = 30.0      # seconds; TLS and DKIM tolerate little more
DEFAULT_PORT25_HOSTS = ("gmail-smtp-in.l.google.com", "mx.delta.chat")
RESERVED_TLDS = ("test", "example", "invalid", "localhost", "local")  # RFC 2606, 6761, 6762


@dataclass
class Check:
    """One verdict of the doctor: the check's ``name``, ``verdict`` (ok, warn, fail or skip), what
    was found (``detail``) and what to do about it (``advice``, shown unless ok).
    """
    name: str
    verdict: str     # ok | warn | fail | skip
    detail: str
    advice: str = ""

    def line(self) -> str:
        """The check as one line: ``"WARN reverse DNS: <detail> -> <advice>"``."""
        text = f"{self.verdict.upper():<4} {self.name}: {self.detail}"
        return text + (f" -> {self.advice}" if self.advice and self.verdict != "ok" else "")


def _resolver():
    import dns.resolver
    resolver = dns.resolver.Resolver()
    resolver.lifetime = 5
    return resolver


def public_addresses(values: Settings) -> list[str]:
    """The relay's public addresses: PUBLIC_ADDRESSES, or else the global addresses of the
    container's interfaces (may be empty behind NAT).
    """
    return list(values.public_addresses) or system.local_addresses()


def check_resolver(values: Settings) -> Check:
    """Does the container's resolver answer? ok when it answers for the mail domain (also NXDOMAIN
    or no A record: it answered), fail on timeout or SERVFAIL, with advice about
    /etc/resolv.conf.
    """
    import dns.exception
    import dns.resolver
    domain = values.mail_domain
    try:
        _resolver().resolve(domain.lstrip("["), "A")
        return Check("resolver", "ok", f"answers for {domain}")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return Check("resolver", "ok", f"answers (but {domain} has no A record)")
    except dns.exception.DNSException as exc:
        return Check("resolver", "fail", f"no answer: {type(exc).__name__}",
                     "check /etc/resolv.conf of the container (Docker's --dns) and the host's resolver")


def check_forward_dns(values: Settings) -> Check:
    """Do the mail domain's A/AAAA records name this relay? fail without records or when they name
    other addresses only; warn when our own address is unknown; skip for a domain without DNS (IP
    literal, localhost).
    """
    domain = values.mail_domain
    if not dnszone.records(values, "", "", ()).publishable:
        return Check("forward DNS", "skip", f"{domain} has no DNS")
    found = set()
    for rtype in ("A", "AAAA"):
        try:
            found |= {r.to_text() for r in _resolver().resolve(domain, rtype)}
        except Exception:
            pass
    ours = set(public_addresses(values))
    if not found:
        return Check("forward DNS", "fail", f"{domain} has no A/AAAA record",
                     "publish the records from `relayctl dns`")
    if ours and not ours & found:
        return Check("forward DNS", "fail", f"{domain} points at {', '.join(sorted(found))}, "
                     f"this relay is {', '.join(sorted(ours))}", "fix the A/AAAA records")
    if not ours:
        return Check("forward DNS", "warn", f"{domain} points at {', '.join(sorted(found))}; "
                     "this relay's public address is unknown", "set PUBLIC_ADDRESSES")
    return Check("forward DNS", "ok", f"{domain} -> {', '.join(sorted(found))}")


def check_reverse_dns(values: Settings) -> Check:
    """Does each public address have a PTR record whose name resolves back to it (forward-confirmed
    reverse DNS, which many receivers require)? warn otherwise, skip when no public address is
    known.
    """
    import dns.reversename
    addresses = public_addresses(values)
    if not addresses:
        return Check("reverse DNS", "skip", "public address unknown", "set PUBLIC_ADDRESSES")
    problems, good = [], []
    for addr in addresses:
        try:
            names = [r.to_text().rstrip(".") for r in
                     _resolver().resolve(dns.reversename.from_address(addr), "PTR")]
        except Exception:
            problems.append(f"{addr} has no PTR record")
            continue
        back = set()
        for name in names:
            for rtype in ("A", "AAAA"):
                try:
                    back |= {r.to_text() for r in _resolver().resolve(name, rtype)}
                except Exception:
                    pass
        if addr not in back:
            problems.append(f"{addr} -> {', '.join(names)}, which does not resolve back")
        else:
            good.append(f"{addr} -> {names[0]}")
    if problems:
        return Check("reverse DNS", "warn", "; ".join(problems),
                     f"ask your provider for a PTR record naming {values.mail_domain}: "
                     "many servers refuse mail from addresses without one")
    return Check("reverse DNS", "ok", "; ".join(good))


def check_ipv6() -> Check:
    """skip when the container has no IPv6, warn when it has IPv6 but no global IPv6 address, ok
    with the addresses otherwise.
    """
    v6 = [a for a in system.local_addresses() if ":" in a]
    if not system.ipv6_available():
        return Check("IPv6", "skip", "the container has no IPv6",
                     "optional: enable IPv6 in Docker for reachability over IPv6")
    if not v6:
        return Check("IPv6", "warn", "IPv6 works inside the container but it has no public "
                     "IPv6 address", "publish an AAAA record only for a reachable address")
    return Check("IPv6", "ok", f"public IPv6 {', '.join(v6)}")


def check_port25(hosts: list[str]) -> Check:
    """Can this host reach other mail servers on port 25 (many providers block it)? Connects to each
    of ``hosts`` (8 s timeout each) and reads its banner: ok when one greets with 220, fail
    otherwise with each host's answer or error.
    """
    reached: list[str] = []
    failed: list[str] = []
    unresolved = 0  # hosts whose name did not resolve: no port was tried
    for host in hosts:
        try:
            with socket.create_connection((host, 25), 8) as sock:
                banner = sock.recv(200).decode("ascii", "replace").strip()
            (reached if banner.startswith("220") else failed).append(f"{host}: {banner[:40]}")
        except socket.gaierror as exc:
            unresolved += 1
            failed.append(f"{host}: {exc}")
        except OSError as exc:
            failed.append(f"{host}: {exc}")
    if reached:
        return Check("outbound port 25", "ok", "; ".join(reached))
    if unresolved == len(hosts):
        return Check("outbound port 25", "fail", "; ".join(failed),
                     "no host name resolved, so port 25 was not tried: fix the resolver first "
                     "(the resolver check), or name a host with --port25-host")
    return Check("outbound port 25", "fail", "; ".join(failed),
                 "many providers block outbound port 25 until asked: open a ticket with yours")


def check_clock(url: str) -> Check:
    """Compare our clock with the Date header of an HTTPS HEAD request to ``url`` (8 s timeout):
    fail beyond CLOCK_SKEW_LIMIT seconds either way (TLS and DKIM need a right clock), skip when
    the reference does not answer or sends no Date.
    """
    try:
        req = urllib.request.Request(url, method="HEAD")
        ctx = __import__("ssl").create_default_context(cafile=str(paths.CA_BUNDLE)) \
            if paths.CA_BUNDLE.exists() else None
        with urllib.request.urlopen(req, timeout=8, context=ctx) as resp:
            date = resp.headers.get("Date")
    except Exception as exc:
        return Check("clock", "skip", f"no time reference ({url}: {exc})")
    if not date:
        return Check("clock", "skip", f"{url} sent no Date header")
    skew = time.time() - email.utils.parsedate_to_datetime(date).timestamp()
    if abs(skew) > CLOCK_SKEW_LIMIT:
        return Check("clock", "fail", f"{skew:+.0f} s off {url}'s clock",
                     "the host's clock is wrong: enable NTP (systemd-timesyncd, chrony)")
    return Check("clock", "ok", f"{skew:+.1f} s from {url}'s clock")


def check_headroom(values: Settings) -> list[Check]:
    """Free space on /data and available memory against the limits below which new accounts stop
    (CREATE_MIN_FREE_DISK, CREATE_MIN_FREE_MEMORY): fail below them, warn below twice them; two
    checks, sizes in MiB.
    """
    disk = system.free_disk(paths.DATA)
    mem = system.available_memory()
    out = []
    for name, have, need, advice in (
            ("disk", disk, values.create_min_free_disk, "free space on the data volume"),
            ("memory", mem, values.create_min_free_memory, "add memory or swap")):
        mib = have // (1024 * 1024)
        if have < need:
            out.append(Check(f"{name} headroom", "fail", f"{mib} MiB free, below the "
                             f"{need // (1024 * 1024)} MiB at which new accounts stop", advice))
        elif have < 2 * need:
            out.append(Check(f"{name} headroom", "warn", f"{mib} MiB free, close to the "
                             f"{need // (1024 * 1024)} MiB limit", advice))
        else:
            out.append(Check(f"{name} headroom", "ok", f"{mib} MiB free"))
    return out


def check_open_files(values: Settings, have: int | None = None) -> Check:
    """Is the open-files limit (RLIMIT_NOFILE, ``have``; default: this process's) enough for
    MAX_IMAP_CONNECTIONS clients in IDLE? The one host limit left for new-mail announcements
    (relay/limits.py); warn with the limit found, the limit needed and how to raise it.
    """
    have = limits.open_files_limit() if have is None else have
    connections = values.max_imap_connections
    need = limits.open_files_needed(connections)
    if have >= need:
        return Check("open files", "ok", f"limit {have}, {need} needed for "
                     f"MAX_IMAP_CONNECTIONS={connections}")
    fits = max(0, have - (need - connections))
    return Check("open files", "warn", f"limit {have} (RLIMIT_NOFILE), {need} needed for "
                 f"MAX_IMAP_CONNECTIONS={connections}: beyond {fits} clients in IDLE, new mail "
                 "waits for 30-second polling",
                 f"{limits.raise_command(need)}; or set MAX_IMAP_CONNECTIONS={fits}")


def check_certificate() -> Check:
    """Does every TLS port serve the installed certificate? fail when none is installed or a port
    serves another one (or none), naming the ports.
    """
    expected = certwatch.installed_fingerprint()
    if expected is None:
        return Check("certificate served", "fail", "no certificate installed", "see the log of relay-certs")
    stale = certwatch.stale_endpoints(expected)
    if stale:
        return Check("certificate served", "fail", "not served on " + ", ".join(sorted(stale)),
                     "relayctl certs; the relay-certs log says what failed")
    return Check("certificate served", "ok", f"on all {len(certwatch.ENDPOINTS)} endpoints")


def check_privacy_contact(values: Settings) -> Check:
    """A relay on a public domain should say who runs it (the privacy and home pages show
    PRIVACY_POSTAL and PRIVACY_MAIL or ADMIN_EMAIL; GDPR art. 13 asks for both)."""
    domain = values.mail_domain
    if not dnszone.records(values, "", "", ()).publishable or domain.startswith("_") or \
            domain.rsplit(".", 1)[-1] in RESERVED_TLDS:
        return Check("privacy contact", "skip", f"{domain} is not a public domain")
    missing = [name for name, value in (("PRIVACY_POSTAL", values.privacy_postal),
                                        ("PRIVACY_MAIL or ADMIN_EMAIL", values.privacy_contact))
               if not value]
    if missing:
        none = not (values.privacy_contact or values.privacy_postal or values.privacy_pdo
                    or values.privacy_supervisor)
        detail = ("the privacy page names no one who runs this relay" if none else
                  "the privacy page lacks " + " and ".join(missing))
        return Check("privacy contact", "warn", detail,
                     "set " + ", ".join(missing) + " (and PRIVACY_PDO, PRIVACY_SUPERVISOR "
                     "where they apply)")
    return Check("privacy contact", "ok", f"the privacy page names the operator and "
                 f"{values.privacy_contact}")


def check_client_addresses() -> Check:
    """Do clients arrive with their own addresses, or all from the Docker gateway?"""
    from relay.ops import clientaddr
    now = clientaddr.census()
    name = "client addresses"
    if not now.connections:
        return Check(name, "skip", "no client connections at the moment")
    if now.collapsed:
        return Check(name, "warn", f"{now.from_gateway} of {now.connections} client connections "
                     f"come from the gateway {now.gateway}: behind Docker's published ports the "
                     "relay does not see the clients' addresses, so per-address limits (account "
                     "creation rate, connections per address) treat them as one client",
                     "run the relay with host networking (compose.host.yaml, see the README)")
    return Check(name, "ok", f"{now.connections} client connections from {now.addresses} "
                 f"addresses, {now.from_gateway} from a gateway")


ONLY = {"client-addresses": check_client_addresses, "certificate": check_certificate,
        "ipv6": check_ipv6, "open-files": lambda: check_open_files(settings_mod.from_environment())}


def run_checks(values: Settings, port25_hosts: list[str] | None, clock_url: str | None) -> list[Check]:
    """Every check in report order. ``port25_hosts`` None skips the port 25 probe (start-up),
    ``clock_url`` None skips the clock check.
    """
    checks = [check_resolver(values), check_forward_dns(values), check_reverse_dns(values),
              check_ipv6()]
    checks.append(check_port25(port25_hosts) if port25_hosts else
                  Check("outbound port 25", "skip", "not probed at start-up",
                        "run `relayctl doctor` to probe it"))
    checks.append(check_clock(clock_url) if clock_url else
                  Check("clock", "skip", "no time reference (TLS_MODE is not acme)"))
    checks += check_headroom(values)
    checks.append(check_open_files(values))
    checks.append(check_certificate())
    checks.append(check_client_addresses())
    checks.append(check_privacy_contact(values))
    return checks


def main(argv: list[str]) -> int:
    """``relayctl doctor [--json] [--startup] [--port25-host HOST ...] [--clock-url URL]``: run the
    checks and print one line each and a count (or JSON: a list of Check fields). With --startup
    the lines are prefixed ``relay-doctor:`` and no other server is probed. Returns 1 when a
    check failed, else 0.
    """
    parser = argparse.ArgumentParser(prog="relayctl doctor")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--startup", action="store_true",
                        help="the start-up summary: no probe of other servers' port 25")
    parser.add_argument("--port25-host", action="append",
                        help=f"mail servers to probe on port 25 (default: {', '.join(DEFAULT_PORT25_HOSTS)})")
    parser.add_argument("--clock-url", help="an HTTPS URL whose Date header is the reference "
                        "(default: ACME_DIRECTORY_URL)")
    parser.add_argument("--only", action="append", choices=sorted(ONLY),
                        help="run only this check (repeatable)")
    args = parser.parse_args(argv)
    values = settings_mod.from_environment()
    hosts = None if args.startup else (args.port25_host or list(DEFAULT_PORT25_HOSTS))
    clock = args.clock_url or (values.acme_directory_url if values.tls_mode == "acme" else None)
    checks = [ONLY[name]() for name in args.only] if args.only else \
        run_checks(values, hosts, clock)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        prefix = "relay-doctor: " if args.startup else ""
        for c in checks:
            print(prefix + c.line())
        counts = {v: sum(c.verdict == v for c in checks) for v in ("ok", "warn", "fail", "skip")}
        print(prefix + ", ".join(f"{n} {v}" for v, n in counts.items()))
    return 1 if any(c.verdict == "fail" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
