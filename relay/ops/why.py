"""``relayctl why ADDRESS|DOMAIN``: why mail to a domain is stuck, probed live from
inside the container in the order delivery takes (relay.federation.outbound):

1. MX lookup: null MX (RFC 7505), NXDOMAIN, no MX (the domain itself, RFC 5321
   §5.1), DNS failure;
2. each MX host's addresses (A/AAAA), and whether this host can reach IPv6 at all;
3. HTTPS ``/mxdeliv`` on the host: certificate (name, chain, expiry) and the
   answer to ``GET`` (a chatmail relay answers 405 without taking mail);
4. SMTP on port 25: reachable, STARTTLS, certificate;
5. what the queue holds for the domain.

It ends with one line saying what is wrong and what to do, and exits 0 when
delivery would work now. No message is sent, and a local part given with the
address is never printed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from relay import system
from relay.federation import outbound
from relay.ops import probe
from relay.ops import queue as queue_mod
from relay.wire.tls import ClientContexts


@dataclass
class HostReport:
    """What one MX host showed: its addresses, an IPv6 route (None: no AAAA), the
    HTTPS and port 25 probes (None: not probed, the host has no address)."""
    host: str
    addresses: dict[str, list[str]]
    ipv6_route: bool | None
    https: probe.HTTPSResult | None = None
    smtp: probe.SMTPResult | None = None


@dataclass
class Report:
    """Everything ``relayctl why`` found for one domain, and its decision."""
    domain: str
    verify_certificates: bool
    ipv6_here: bool
    mx: probe.MXResult
    hosts: list[HostReport] = field(default_factory=list)
    queue: list[dict] = field(default_factory=list)
    ok: bool = False
    path: str = ""
    verdict: str = ""


def target_domain(target: str) -> str:
    """The domain of ``local@domain`` or of a bare domain, lower case, no final dot."""
    return target.rpartition("@")[2].strip().lower().rstrip(".")


def https_usable(result: probe.HTTPSResult | None) -> bool:
    """Whether relay-mxsend would deliver over HTTPS to a host that answered so."""
    if result is None:
        return False
    # relay-mxsend takes our own relay's answers and the reference relays' unmarked ones
    # (relay.federation.replies): both are relays that take mail over HTTPS.
    return result.kind in ("relay", "reference")


def probe_host(host: str, verify: bool, contexts: ClientContexts, helo: str) -> HostReport:
    """Addresses, then HTTPS and port 25 of one MX host (no probes without an address)."""
    found = probe.addresses(host)
    v6 = found.get("AAAA", [])
    report = HostReport(host, found, probe.routable(v6[0]) if v6 else None)
    if not found.get("A") and not v6:
        return report
    report.https = probe.probe_https(host, verify, contexts)
    report.smtp = probe.probe_smtp(host, verify, contexts, helo)
    return report


def investigate(target: str, helo: str, contexts: ClientContexts | None = None) -> Report:
    """Run every probe for ``target`` (an address or a domain) and decide."""
    domain = target_domain(target)
    verify = not domain.startswith(("_", "["))
    contexts = contexts or ClientContexts()
    mx = probe.lookup_mx(domain)
    report = Report(domain, verify, system.ipv6_available() and any(
        ":" in a for a in system.local_addresses()), mx)
    for host in mx.hosts[:outbound.MAX_HOSTS]:
        report.hosts.append(probe_host(host, verify, contexts, helo))
    try:
        data = queue_mod.report(queue_mod.read_queue(), queue_mod.retry_times())
        report.queue = [row for row in data["deferred"] if row["domain"] == domain]
    except (OSError, RuntimeError, ValueError):
        report.queue = []
    decide(report)
    return report


def _cert_problem(tls: probe.TLSResult | None) -> str:
    if tls is None:
        return ""
    cert = tls.certificate
    names = ", ".join(cert.get("names", [])) or cert.get("subject", "?")
    extra = f" (it names {names}; expires {cert.get('not_after', '?')[:10]})" if cert else ""
    return f"{tls.error.rstrip('.')}{extra}"


def decide(r: Report) -> None:
    """Set ``ok``, ``path`` and the one-line ``verdict`` of a report."""
    d = r.domain
    if r.mx.status == "null-mx":
        r.verdict = (f"{d} publishes a null MX: it accepts no mail at all. Nothing to fix here; "
                     "the sender needs another address.")
        return
    if r.mx.status == "nxdomain":
        r.verdict = f"{d} does not exist in DNS: check the address for a typo."
        return
    if r.mx.status == "error":
        r.verdict = (f"the MX lookup for {d} failed ({r.mx.error}): check this host's resolver "
                     "(relayctl doctor) or the domain's name servers; Postfix retries meanwhile.")
        return
    for h in r.hosts:
        if https_usable(h.https):
            r.ok, r.path = True, f"https to {h.host}"
            break
        if h.smtp is not None and h.smtp.kind == "ok":
            r.ok, r.path = True, f"smtp to {h.host}"
            break
    if r.ok:
        queued = sum(row["messages"] for row in r.queue)
        r.verdict = (f"delivery to {d} works now ({r.path})"
                     + (f"; {queued} queued message(s) go with the next retry, or now with "
                        f"`relayctl queue retry {d}`" if queued else "."))
        return
    r.verdict = _failure(r)


def _failure(r: Report) -> str:
    """The first thing that stops delivery, in delivery order, and what to do."""
    for h in r.hosts:
        if not h.addresses.get("A") and not h.addresses.get("AAAA"):
            return (f"MX host {h.host} has no address (no A or AAAA record): the operator of "
                    f"{r.domain} must fix the MX or add the address; mail stays queued meanwhile.")
        if not h.addresses.get("A") and h.ipv6_route is False:
            return (f"{h.host} has only IPv6 addresses and this host has no IPv6 route: give the "
                    "container IPv6 (Docker's ipv6 network option) or ask the peer for an A record.")
    cert_errors = [(h.host, res.tls) for h in r.hosts for res in (h.https, h.smtp)
                   if res is not None and res.tls is not None and not res.tls.ok and res.tls.error]
    if cert_errors:
        host, tls = cert_errors[0]
        return (f"{host}'s certificate is refused: {_cert_problem(tls)}. Its operator must renew "
                "or fix it; mail stays queued and is retried for 2 days.")
    h = r.hosts[0]
    smtp, https = h.smtp, h.https
    if smtp is not None and smtp.kind == "no-starttls":
        return (f"{h.host} offers no STARTTLS on port 25 and this relay never sends in clear text; "
                "its operator must enable TLS.")
    if smtp is not None and smtp.kind == "timeout":
        return (f"port 25 of {h.host} does not answer: if no mail server answers on port 25 from "
                "here, your provider blocks outgoing port 25 (relayctl doctor --port25-host); "
                "otherwise the peer's firewall drops it.")
    if https is not None and https.kind == "failing":
        return (f"{h.host}'s /mxdeliv fails ({https.detail}) and port 25 is closed "
                f"({smtp.detail if smtp else '-'}): the peer's relay is down; it is retried.")
    return (f"no mail server of {r.domain} takes mail from here: {smtp.detail if smtp else '-'}; "
            f"HTTPS: {https.detail if https else '-'}. Ask its operator to open port 25 or serve "
            "/mxdeliv; mail stays queued and is retried for 2 days.")


def as_json(r: Report) -> dict:
    """The JSON of ``relayctl why --json``: the report, the exit status, and the
    human form under ``text``."""
    data = asdict(r)
    data["exit_status"] = 0 if r.ok else 1
    data["text"] = text(r)
    return data


def text(r: Report) -> str:
    """The human form: one block per step, then the verdict line."""
    lines = [f"domain {r.domain} (certificates {'checked' if r.verify_certificates else 'not checked: _-domain or literal'})"]
    mx = r.mx
    lines.append(f"1. MX: {mx.status}" + (f" ({', '.join(mx.records)})" if mx.records else "")
                 + (f": {mx.error}" if mx.error else "")
                 + (" -> the domain itself takes mail" if mx.status == "implicit" else ""))
    lines.append(f"   this host: IPv6 {'available' if r.ipv6_here else 'not available'}")
    for h in r.hosts:
        addrs = ", ".join(h.addresses.get("A", []) + h.addresses.get("AAAA", [])) or "none"
        lines.append(f"2. {h.host}: addresses {addrs}"
                     + ("" if h.ipv6_route is None else f"; IPv6 route {'yes' if h.ipv6_route else 'no'}"))
        for label, res in (("3. HTTPS", h.https), ("4. SMTP 25", h.smtp)):
            if res is None:
                continue
            lines.append(f"   {label}: {res.kind}: {res.detail}")
            if res.tls is not None and res.tls.certificate:
                c = res.tls.certificate
                lines.append(f"      certificate: names {', '.join(c.get('names', [])) or '-'}; "
                             f"issuer {c.get('issuer', '?')}; expires {c.get('not_after', '?')[:10]} "
                             f"({c.get('days_left', '?')} days)")
    if r.queue:
        for row in r.queue:
            lines.append(f"5. queue: {row['messages']} message(s) deferred, {row['reason_text']}"
                         f"{' ' + row['code'] if row['reason'] == 'refused' and row['code'] else ''}, "
                         f"oldest {queue_mod.age(row['oldest_age_seconds'])}: {row['detail']}")
    else:
        lines.append("5. queue: nothing deferred for this domain")
    lines.append(("OK: " if r.ok else "FAIL: ") + r.verdict)
    return "\n".join(lines)


def command(args) -> int:
    """``relayctl why TARGET [--json]``: exit 0 when delivery would work now, else 1."""
    import json

    from relay import settings as settings_mod
    from relay.settings.parsers import parse_domain
    values = settings_mod.from_environment()
    domain = target_domain(args.target)
    problem = ""
    try:
        if not domain:
            raise ValueError("no domain")
        parse_domain(domain)
    except ValueError as exc:
        problem = (f"{args.target!r} is neither an address nor a domain name ({exc}): give "
                   "ADDRESS or DOMAIN, e.g. someone@chat.example.org or chat.example.org")
    if not problem and domain == values.mail_domain:
        problem = (f"{domain!r} is not another domain: mail for {values.mail_domain} is delivered "
                   "here (relayctl queue shows what waits)")
    if problem:
        print(json.dumps({"error": problem, "exit_status": 2}, indent=2) if args.json else problem)
        return 2
    report = investigate(domain, values.mail_domain)
    print(json.dumps(as_json(report), indent=2) if args.json else text(report))
    return 0 if report.ok else 1
