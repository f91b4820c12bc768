"""relayctl: the operator's command inside the container.

Every subcommand is one row of :data:`COMMANDS` (name, help, arguments, the
function that runs it); ``relayctl --help`` lists them. Subcommands that print
take ``--json``. Exit status 0 on success, 1 when what was asked for is not
right (a failed check, a missing record), 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay import settings
from relay.boot import dkimkey as dkim
from relay.ops import access, health
from relay.store import expire


def show(data: dict, as_json: bool) -> None:
    """Print ``data`` as indented JSON, or one ``key: value`` line per entry."""
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            print(f"{key}: {value}")


# --- the subcommands ---------------------------------------------------------------

def cmd_status(args: argparse.Namespace) -> int:
    """``relayctl status [--json]``: services, accounts, registration, queue, push, disk,
    certificate, DKIM and health (:func:`relay.ops.status.status`), as readable lines
    (:func:`relay.ops.status.summary`) or JSON; always 0.
    """
    from relay.ops import status
    data = status.status()
    if args.json:
        show(data, True)
    else:
        print(status.summary(data))
    return 0


def cmd_dkim_record(args: argparse.Namespace) -> int:
    """``relayctl dkim-record [--json]``: the DKIM TXT record to publish (``chatmail._domainkey``).
    Raises subprocess.CalledProcessError before the key exists.
    """
    if args.json:
        show({"name": f"{dkim.selector()}._domainkey", "type": "TXT",
              "value": dkim.txt_record_value()}, True)
    else:
        # Split into character-strings of at most 255 characters, as a zone file needs them
        # (a 2048-bit key's value is about 400).
        from relay.ops.dnszone import txt_rdata
        print(f"{dkim.selector()}._domainkey IN TXT {txt_rdata(dkim.txt_record_value())}")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """``relayctl health [--json]``: every protocol probe now; 1 when one fails."""
    if not args.json:
        return health.main(full=True)
    failures = health.check()
    show({"healthy": not any(failures.values()), "probes": failures}, True)
    return 0 if not any(failures.values()) else 1


def cmd_expire(args: argparse.Namespace) -> int:
    """``relayctl expire``: one expiry run now (:func:`relay.store.expire.main`)."""
    return expire.main([])


def cmd_certs(args: argparse.Namespace) -> int:
    """``relayctl certs [status|renew [--force]] [--json]``: the certificate state, or an ACME
    renewal now (:func:`relay.certs.watch.renew`, 1 when it fails).
    """
    from relay.certs import watch
    values = settings.from_environment()
    if args.action == "renew":
        status, message = watch.renew(values, args.force)
        if args.json:
            show({"ok": status == 0, "message": message}, True)
        else:
            print(message)
        return status
    info = watch.status(values)
    if args.json:
        show(info, True)
        return 0
    for key, value in info.items():  # lists and mappings in words, not as Python reprs
        if isinstance(value, list):
            print(f"{key}: {', '.join(str(v) for v in value)}")
        elif isinstance(value, dict):
            print(f"{key}:")
            for name, state in value.items():
                print(f"  {name}: {state}")
        else:
            print(f"{key}: {value}")
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """``relayctl backup > file.tar.gz``: the archive of /data on stdout
    (:func:`relay.store.backup.main`).
    """
    from relay.store import backup
    return backup.main(["backup"])


def cmd_restore(args: argparse.Namespace) -> int:
    """``relayctl restore [--force] < file.tar.gz``: unpack an archive into /data (refused when it
    already holds a relay, unless --force).
    """
    from relay.store import backup
    return backup.main(["restore"] + (["--force"] if args.force else []))


def cmd_dns(args: argparse.Namespace) -> int:
    """``relayctl dns [--check] [--json]``: the records to publish and their check
    (:func:`relay.ops.dnsreport.run`).
    """
    from relay.ops import dnsreport
    return dnsreport.run(settings.from_environment(), do_check=args.check, json_output=args.json)


def cmd_import_relay(args: argparse.Namespace) -> int:
    """``relayctl import-relay [ARCHIVE|-] [--dry-run] [--skip-conflicts] [--json]``: move in a
    reference relay (relay.store.importrelay); 0 imported, 1 refused or stopped."""
    from relay.store import importrelay
    return importrelay.main(args.archive, settings.from_environment(), args.dry_run,
                            args.skip_conflicts, args.json)


def cmd_doctor(argv: list[str]) -> int:
    """``relayctl doctor ...``: its own arguments are passed on (:func:`relay.ops.doctor.main`)."""
    from relay.ops import doctor
    return doctor.main(argv)


# --- the table ------------------------------------------------------------------------

Arg = tuple[tuple[str, ...], dict[str, Any]]  # argparse add_argument(*names, **options)
JSON: Arg = (("--json",), {"action": "store_true", "help": "print JSON"})


@dataclass(frozen=True)
class Command:
    """One subcommand: ``run`` gets the parsed arguments and returns the exit status.
    A ``passthrough`` command parses its own options (it gets the raw argv)."""
    name: str
    help: str
    run: Callable[[Any], int]
    args: tuple[Arg, ...] = ()
    passthrough: bool = False


COMMANDS: tuple[Command, ...] = (
    Command("status", "services, accounts, queue, disk, certificate, health", cmd_status, (JSON,)),
    Command("registration", "who may get a new account: show or set open, closed, invite "
            "(default: back to REGISTRATION)", access.cmd_registration, access.REGISTRATION_ARGS),
    Command("invite", "make single-use invite links and QR codes (REGISTRATION=invite)",
            access.cmd_invite, access.INVITE_ARGS),
    Command("account", "disable, enable or delete one account; list: how many there are",
            access.cmd_account, access.ACCOUNT_ARGS),
    Command("accounts", "old name: 'off' = registration closed, 'on' = back to REGISTRATION",
            access.cmd_accounts_switch, ((("switch",), {"choices": ["on", "off"]}), JSON)),
    Command("dkim-record", "the DKIM TXT record to publish", cmd_dkim_record, (JSON,)),
    Command("health", "run the container health check", cmd_health, (JSON,)),
    Command("expire", "delete old mail and inactive accounts now (logs a summary)", cmd_expire),
    Command("certs", "the certificate: source, names, days left, what each port serves; "
            "'renew' asks the ACME CA now", cmd_certs,
            ((("action",), {"nargs": "?", "choices": ["status", "renew"], "default": "status"}),
             (("--force",), {"action": "store_true", "help": "renew even when not due"}), JSON)),
    Command("doctor", "checks for a new host, each with a verdict and advice "
            "(relayctl doctor --help)", cmd_doctor, passthrough=True),
    Command("backup", "write an archive of /data to stdout (while the relay runs)", cmd_backup),
    Command("restore", "unpack an archive from stdin into an empty /data (before the start)",
            cmd_restore,
            ((("--force",), {"action": "store_true",
                             "help": "overwrite a /data that holds a relay"}),)),
    Command("dns", "the DNS records to publish (zone-file form); --check looks them up and "
            "exits 1 when a required one is missing or wrong", cmd_dns,
            ((("--check",), {"action": "store_true",
                             "help": "resolve every record and report ok, missing or wrong"}),
             JSON)),
    Command("import-relay", "move in a reference (cmdeploy) relay: accounts with their "
            "passwords and last login, mail, push tokens, DKIM key and selector, from a tar "
            "archive (README: Moving in from a reference relay)", cmd_import_relay,
            ((("archive",), {"nargs": "?", "default": "-",
                             "help": "tar or tar.gz of /home/vmail/mail and /etc/dkimkeys "
                                     "(default: stdin)"}),
             (("--dry-run",), {"action": "store_true",
                               "help": "read and check the archive, report, change nothing"}),
             (("--skip-conflicts",), {"action": "store_true",
                                      "help": "leave accounts that exist here with another "
                                              "password as they are, import the others"}),
             JSON)),
    Command("queue", "deferred mail by destination domain and reason; 'retry [DOMAIN]' tries "
            "again now", lambda args: _ops("queue").command(args),
            ((("action",), {"nargs": "?", "choices": ["show", "retry"], "default": "show"}),
             (("domain",), {"nargs": "?", "help": "with retry: only this domain"}), JSON)),
    Command("why", "why mail to ADDRESS or DOMAIN is stuck: DNS, HTTPS /mxdeliv, port 25, "
            "queue, probed now; exit 0 when delivery would work", lambda args: _ops("why").command(args),
            ((("target",), {"help": "an address (its local part is never shown) or a domain"}),
             JSON)),
    Command("metrics", "the Prometheus metrics that METRICS_LISTEN serves",
            lambda args: _ops("metrics").command(args), (JSON,)),
)


def _ops(name: str) -> Any:
    """relay.ops.<name>, imported when its command runs (relayctl starts fast)."""
    import importlib
    return importlib.import_module(f"relay.ops.{name}")


def parser() -> argparse.ArgumentParser:
    """relayctl's argument parser, one subparser per row of :data:`COMMANDS`."""
    top = argparse.ArgumentParser(prog="relayctl", description="Operate the chatmail relay.")
    sub = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        sp = sub.add_parser(command.name, help=command.help, description=command.help)
        for names, options in command.args:
            sp.add_argument(*names, **options)
        sp.set_defaults(run=command.run)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the exit status (see the module's docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    for command in COMMANDS:
        if command.passthrough and argv[:1] == [command.name]:
            return command.run(argv[1:])
    args = parser().parse_args(argv)
    return args.run(args)
