"""``relayctl dns [--check] [--json]``: the zone to publish, and how DNS answers now.

Reads what the container has (the DKIM key, the MTA-STS policy nginx serves,
PUBLIC_ADDRESSES or the interfaces' addresses), builds the zone
(``relay.ops.dnszone``), optionally checks it (``relay.ops.dnscheck``), and
prints text or JSON. Exit status 1 when a required record is missing or wrong.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

from relay import system
from relay.boot import dkimkey as dkim
from relay.ops.dnscheck import Resolve, Result, check, dns_resolver, summary
from relay.ops.dnszone import Zone, no_public_dns, records, zone_text
from relay.settings import Settings


def served_policy() -> str:
    """The MTA-STS policy as nginx serves it (rendered at every start)."""
    from relay import paths
    served = paths.WWW / ".well-known" / "mta-sts.txt"
    if served.exists():
        return served.read_text()
    raise FileNotFoundError(f"{served} is missing: the relay renders it at start")


def as_json(zone: Zone, results: list[Result] | None) -> str:
    """``relayctl dns --json``: ``{"domain", "publishable", "records": [Record fields...],
    "comments": [...]}``, and with a check ``"check": [Result fields + "failed"...]`` and
    ``"ok"``; indented JSON text.
    """
    data: dict = {
        "domain": zone.domain,
        "publishable": zone.publishable,
        "records": [asdict(r) for r in zone.records],
        "comments": zone.comments,
    }
    if results is not None:
        data["check"] = [dict(asdict(r), failed=r.failed) for r in results]
        data["ok"] = not any(r.failed for r in results)
    return json.dumps(data, indent=2)


def run(settings: Settings, do_check: bool = False, json_output: bool = False,
        resolve: Resolve | None = None) -> int:
    """``relayctl dns``: build the zone from the DKIM key, the served MTA-STS policy and the relay's
    addresses, then print it as a zone file, or (``do_check``) each record's check and a summary,
    or JSON. ``resolve`` replaces the real resolver (tests). Returns the exit status: 1 when a
    required record is missing or wrong, or the relay has not made its DKIM key or policy yet; 0
    otherwise.
    """
    domain = settings.mail_domain
    if no_public_dns(domain):
        zone = records(settings, "", "", ())
    else:
        try:
            dkim_value = dkim.txt_record_value()
            policy = served_policy()
        except (OSError, subprocess.CalledProcessError) as exc:  # not started yet
            print(f"relayctl dns: the DKIM key or the MTA-STS policy is not there yet ({exc}); "
                  "start the relay first", file=sys.stderr)
            return 1
        given = settings.public_addresses
        zone = records(settings, dkim_value, policy, given or system.local_addresses(),
                       detected=not given)
    results = None
    if do_check:
        results = check(zone, resolve or dns_resolver())
    if json_output:
        print(as_json(zone, results))
    elif results is None:
        sys.stdout.write(zone_text(zone))
    elif not zone.publishable:
        print(f"nothing to check: {zone.comments[0]}")
    else:
        for r in results:
            print(r.line())
        print(summary(results))
    return 1 if results and any(r.failed for r in results) else 0
