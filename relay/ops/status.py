"""``relayctl status``: services, accounts, queue, push, disk, certificate, DKIM, health.

:func:`status` gathers it as a JSON-ready dict (``relayctl status --json``);
:func:`summary` turns that into the lines an operator reads: one per service and
per health probe, then one per topic, in words.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from relay import paths, settings, system
from relay.accounts import disabled, invites, registration
from relay.accounts import store as accounts
from relay.boot import dkimkey as dkim
from relay.ops import health
from relay.settings import Settings


def services() -> dict[str, str]:
    """supervisord's programs and their states, e.g. ``{"relay-auth": "RUNNING", ...}`` (empty when
    supervisorctl does not answer).
    """
    out = subprocess.run(["supervisorctl", "-c", "/etc/supervisor/supervisord.conf", "status"],
                         capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            result[parts[0]] = parts[1]
    return result


def queue_size() -> int:
    """How many messages Postfix's queue holds (``postqueue -j``, one JSON line each)."""
    out = subprocess.run(["postqueue", "-j"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def count_files(directory: Path) -> int:
    """How many entries ``directory`` holds, dot-files left out; 0 when it is missing."""
    try:
        return sum(1 for e in os.scandir(directory) if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def dkim_published(values: Settings) -> str:
    """ok, missing, wrong or error: the DKIM TXT record as the resolver sees it."""
    from relay.ops import dnscheck, dnszone
    if not dnszone.records(values, "", "", ()).publishable:
        return "not applicable (no DNS for this domain)"
    zone = dnszone.Zone(values.mail_domain, tuple(
        r for r in dnszone.records(values, dkim.txt_record_value(), "", ("192.0.2.1",)).records
        if r.kind == "dkim"), addresses=("192.0.2.1",))
    result = dnscheck.check(zone, dnscheck.dns_resolver(budget=5))[0]
    return result.status + (f" ({result.note})" if result.note else "")


def certificate_summary(values: Settings) -> dict:
    """:func:`relay.certs.watch.status` with the per-port list folded into ``served_everywhere``
    (bool) and, when false, ``not_served_on`` (the ports).
    """
    from relay.certs import watch as certwatch
    info = certwatch.status(values)
    stale = sorted(k for k, v in info.pop("served").items() if v != "ok")
    info["served_everywhere"] = not stale
    if stale:
        info["not_served_on"] = stale
    return info


def status() -> dict:
    """Everything ``relayctl status`` reports, as a JSON-ready dict."""
    values = settings.from_environment()
    return {
        "domain": values.mail_domain,
        "services": services(),
        "accounts": accounts.count(),
        "account_creation": "off" if registration.mode(values) == "closed" else "on",
        "registration": registration.mode(values),
        "registration_source": registration.source(values),
        "invites_valid": invites.count(),
        "disabled_accounts": disabled.count(),
        "queue": queue_size(),
        "push_accounts": count_files(paths.PUSH_TOKENS),   # accounts with device tokens
        "push_pending": count_files(paths.PUSH_QUEUE),     # notifications not yet accepted
        "disk_free_bytes": system.free_disk(paths.DATA),
        "certificate": certificate_summary(values),
        "dkim_record_published": dkim_published(values),
        "health": health.check(),
    }


# --- the human-readable form --------------------------------------------------------------

def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _certificate(info: dict) -> str:
    if "error" in info:
        return f"{info['mode']}: {info['error']}"
    names = ", ".join(n.removeprefix("DNS:") for n in info.get("names", []))
    words = [f"{info['mode']} ({info.get('source', '?')})", names,
             f"{info['days_left']} days left (until {info['not_after']})"]
    words.append("served on every port" if info.get("served_everywhere") else
                 "NOT served on " + ", ".join(info.get("not_served_on", [])))
    acme = info.get("acme") or {}
    if acme.get("failures"):
        words.append(f"{acme['failures']} failed ACME attempts, last: {acme['last_error']}")
    return "; ".join(words)


def summary(data: dict) -> str:
    """``data`` from :func:`status` as text: a heading, one line per service and per
    health probe, then one line per topic (no Python reprs, no None)."""
    services = data["services"]
    running = sum(state == "RUNNING" for state in services.values())
    width = max([len(name) for name in services] + [len(p) for p in data["health"]] + [12])
    lines = [f"chatmail relay {data['domain']}", "",
             f"Services: {running} of {len(services)} running"]
    lines += [f"  {name:<{width}}  {state.lower()}" for name, state in services.items()]
    lines.append("Health probes:")
    lines += [f"  {name:<{width}}  {'ok' if problem is None else 'FAILED: ' + problem}"
              for name, problem in data["health"].items()]
    topics = [
        ("Accounts", f"{data['accounts']}, of which {data['disabled_accounts']} disabled"
         if data["disabled_accounts"] else str(data["accounts"])),
        ("Registration", f"{data['registration']} ({data['registration_source']})"
         + (f", {data['invites_valid']} unused invites" if data["invites_valid"] else "")),
        ("Mail queue", f"{data['queue']} messages"),
        ("Push", f"{data['push_accounts']} accounts with device tokens, "
                 f"{data['push_pending']} notifications pending"),
        ("Disk free", f"{_size(data['disk_free_bytes'])} on /data"),
        ("Certificate", _certificate(data["certificate"])),
        ("DKIM record", data["dkim_record_published"]),
    ]
    lines += [f"{name + ':':<14}{text}" for name, text in topics]
    return "\n".join(lines)
