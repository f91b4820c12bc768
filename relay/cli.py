"""relayctl: the operator's command inside the container.

    relayctl status [--json]      services, accounts, queue, disk, certificate
    relayctl accounts on|off      allow or stop the creation of new accounts
    relayctl dkim-record          the DKIM TXT record to publish
    relayctl health               the container health check
    relayctl expire               delete old mail and inactive accounts now
    relayctl certs [--json]       the certificate: source, names, days left, what each port serves
    relayctl certs renew [--force]  ask the ACME CA now (renewal normally runs on its own)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from . import accounts, dkim, expire, health, paths, system


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


def status() -> dict:
    return {
        "services": services(),
        "accounts": accounts.count(),
        "account_creation": "off" if paths.NOCREATE_FLAG.exists() else "on",
        "queue": queue_size(),
        "disk_free_bytes": system.free_disk(paths.DATA),
        "health": health.check(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="relayctl", description="Operate the chatmail relay.")
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="services, accounts, queue, disk")
    st.add_argument("--json", action="store_true")
    acc = sub.add_parser("accounts", help="allow or stop new accounts")
    acc.add_argument("switch", choices=["on", "off"])
    sub.add_parser("dkim-record", help="print the DKIM TXT record")
    sub.add_parser("health", help="run the health check")
    sub.add_parser("expire", help="delete old mail and inactive accounts now")
    crt = sub.add_parser("certs", help="TLS certificate status, or renew it now")
    crt.add_argument("action", nargs="?", choices=["status", "renew"], default="status")
    crt.add_argument("--force", action="store_true", help="renew even when not due")
    crt.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.command == "status":
        data = status()
        if args.json:
            print(json.dumps(data, indent=2))
        else:
            for key, value in data.items():
                print(f"{key}: {value}")
        return 0
    if args.command == "accounts":
        if args.switch == "off":
            paths.NOCREATE_FLAG.touch()
        else:
            paths.NOCREATE_FLAG.unlink(missing_ok=True)
        print(f"account creation {args.switch}")
        return 0
    if args.command == "dkim-record":
        print(f'{dkim.SELECTOR}._domainkey IN TXT "{dkim.txt_record_value()}"')
        return 0
    if args.command == "health":
        return health.main(full=True)
    if args.command == "expire":
        return expire.main([])
    if args.command == "certs":
        from . import certwatch, settings
        values = settings.load(os.environ)
        if args.action == "renew":
            return certwatch.renew(values, args.force)
        info = certwatch.status(values)
        print(json.dumps(info, indent=2) if args.json else
              "\n".join(f"{k}: {v}" for k, v in info.items()))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
