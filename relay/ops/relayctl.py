"""relayctl: the operator's command inside the container.

    relayctl status [--json]      services, accounts, queue, disk, certificate
    relayctl accounts on|off      allow or stop the creation of new accounts
    relayctl dkim-record          the DKIM TXT record to publish
    relayctl health               the container health check
    relayctl expire               delete old mail and inactive accounts now
    relayctl certs [--json]       the certificate: source, names, days left, what each port serves
    relayctl certs renew [--force]  ask the ACME CA now (renewal normally runs on its own)
    relayctl backup > file.tar.gz  a consistent archive of /data, taken while the relay runs
    relayctl restore [--force] < file.tar.gz   into an empty /data (before the relay starts)
    relayctl doctor [--json]      checks for a new host: DNS, reverse DNS, port 25 out, clock, ...
    relayctl dns [--check] [--json]  the DNS records to publish (zone-file form); --check looks
                                  them up and exits 1 when a required one is missing or wrong
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from relay.accounts import store as accounts
from relay.boot import dkimkey as dkim
from relay.store import expire
from relay.ops import health
from relay import paths
from relay import system
from relay.settings import Settings


def services() -> dict[str, str]:
    out = subprocess.run(["supervisorctl", "-c", "/etc/supervisor/supervisord.conf", "status"],
                         capture_output=True, text=True).stdout
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            result[parts[0]] = parts[1]
    return result


def queue_size() -> int:
    out = subprocess.run(["postqueue", "-j"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def count_files(directory) -> int:
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
    from relay.certs import watch as certwatch
    info = certwatch.status(values)
    stale = sorted(k for k, v in info.pop("served").items() if v != "ok")
    info["served_everywhere"] = not stale
    if stale:
        info["not_served_on"] = stale
    return info


def status() -> dict:
    from relay import settings
    values = settings.from_environment()
    return {
        "domain": values.mail_domain,
        "services": services(),
        "accounts": accounts.count(),
        "account_creation": "off" if paths.NOCREATE_FLAG.exists() else "on",
        "queue": queue_size(),
        "push_accounts": count_files(paths.PUSH_TOKENS),   # accounts with device tokens
        "push_pending": count_files(paths.PUSH_QUEUE),     # notifications not yet accepted
        "disk_free_bytes": system.free_disk(paths.DATA),
        "certificate": certificate_summary(values),
        "dkim_record_published": dkim_published(values),
        "health": health.check(),
    }


def show(data: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["doctor"]:  # its own options
        from relay.ops import doctor
        return doctor.main(argv[1:])
    parser = argparse.ArgumentParser(prog="relayctl", description="Operate the chatmail relay.")
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="services, accounts, queue, disk")
    st.add_argument("--json", action="store_true")
    acc = sub.add_parser("accounts", help="allow or stop new accounts")
    acc.add_argument("switch", choices=["on", "off"])
    acc.add_argument("--json", action="store_true")
    dk = sub.add_parser("dkim-record", help="print the DKIM TXT record")
    dk.add_argument("--json", action="store_true")
    he = sub.add_parser("health", help="run the health check")
    he.add_argument("--json", action="store_true")
    sub.add_parser("expire", help="delete old mail and inactive accounts now (logs a summary)")
    crt = sub.add_parser("certs", help="TLS certificate status, or renew it now")
    crt.add_argument("action", nargs="?", choices=["status", "renew"], default="status")
    crt.add_argument("--force", action="store_true", help="renew even when not due")
    crt.add_argument("--json", action="store_true")
    sub.add_parser("doctor", help="checks for a new host, each with a verdict and advice "
                   "(relayctl doctor --help)")
    sub.add_parser("backup", help="write an archive of /data to stdout (while running)")
    rst = sub.add_parser("restore", help="unpack an archive from stdin into an empty /data")
    rst.add_argument("--force", action="store_true", help="overwrite a /data that holds a relay")
    dns = sub.add_parser("dns", help="DNS records to publish; --check looks them up")
    dns.add_argument("--check", action="store_true",
                     help="resolve every record and report ok, missing or wrong")
    dns.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "status":
        show(status(), args.json)
        return 0
    if args.command == "accounts":
        if args.switch == "off":
            paths.NOCREATE_FLAG.touch()
        else:
            paths.NOCREATE_FLAG.unlink(missing_ok=True)
        show({"account_creation": args.switch}, args.json)
        return 0
    if args.command == "dkim-record":
        if args.json:
            show({"name": f"{dkim.SELECTOR}._domainkey", "type": "TXT",
                  "value": dkim.txt_record_value()}, True)
        else:
            print(f'{dkim.SELECTOR}._domainkey IN TXT "{dkim.txt_record_value()}"')
        return 0
    if args.command == "health":
        if args.json:
            failures = health.check()
            show({"healthy": not any(failures.values()), "probes": failures}, True)
            return 0 if not any(failures.values()) else 1
        return health.main(full=True)
    if args.command == "expire":
        return expire.main([])
    if args.command == "certs":
        from relay.certs import watch as certwatch
        from relay import settings
        values = settings.from_environment()
        if args.action == "renew":
            return certwatch.renew(values, args.force)
        show(certwatch.status(values), args.json)
        return 0
    if args.command in ("backup", "restore"):
        from relay.store import backup
        return backup.main([args.command] + (["--force"] if getattr(args, "force", False) else []))
    if args.command == "dns":
        from relay.ops import dnsreport
        from relay import settings
        return dnsreport.run(settings.from_environment(), do_check=args.check,
                              json_output=args.json)
    return 2

