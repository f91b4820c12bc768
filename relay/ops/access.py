"""relayctl's commands for who may join and for single accounts:

    relayctl registration [open|closed|invite|default] [--json]
    relayctl invite [--count N] [--valid 7d] [--qr terminal|png|svg|none] [--json]
    relayctl invite --revoke-all
    relayctl account disable|enable|delete ADDRESS [--json]
    relayctl account list [--count] [--disabled] [--addresses] [--json]
    relayctl accounts on|off            (old name: off = registration closed,
                                         on = back to REGISTRATION)

They run as root inside the container and change files below /data that
relay-auth and relay-signup read at every request, so every change holds at once.
"""

from __future__ import annotations

import argparse
import json
import pwd
import subprocess
import sys
import time

from relay import paths
from relay import settings as settings_mod
from relay.accounts import disabled, invites, registration
from relay.accounts import store as accounts


def _auth_owner() -> tuple[int, int]:
    entry = pwd.getpwnam("relayauth")
    return entry.pw_uid, entry.pw_gid


def _print(data: dict, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2) if as_json else text)


# --- registration ----------------------------------------------------------------------

def registration_state(values: settings_mod.Settings) -> dict:
    """The mode in force, where it comes from, the setting, and the unused invites."""
    return {"registration": registration.mode(values), "source": registration.source(values),
            "setting": values.registration, "invites_valid": invites.count()}


def _set_mode(values: settings_mod.Settings, mode: str | None) -> None:
    from relay.boot import pages  # (imported when needed: relayctl starts faster)
    registration.set_override(mode)
    pages.render(values)  # the home page shows the mode


def cmd_registration(args: argparse.Namespace) -> int:
    """``relayctl registration [MODE] [--json]``: set the mode (``default``: back to
    REGISTRATION) and render the pages again; print the mode in force; always 0."""
    values = settings_mod.from_environment()
    if args.mode:
        _set_mode(values, None if args.mode == "default" else args.mode)
    state = registration_state(values)
    _print(state, args.json, f"registration: {state['registration']} ({state['source']}); "
           f"{state['invites_valid']} unused invites")
    return 0


def cmd_accounts_switch(args: argparse.Namespace) -> int:
    """The old ``relayctl accounts on|off``."""
    values = settings_mod.from_environment()
    _set_mode(values, "closed" if args.switch == "off" else None)
    mode = registration.mode(values)
    _print({"account_creation": "off" if mode == "closed" else "on", "registration": mode},
           args.json, f"registration: {mode} ({registration.source(values)})")
    return 0


# --- invites -----------------------------------------------------------------------------

def qr_image(text: str, kind: str) -> bytes:
    """``text`` as a QR code: ``png``, ``svg`` or ``terminal`` (UTF-8 half blocks; on a
    terminal with explicit black-on-white colours, so it scans whatever the theme)."""
    terminal = "ANSIUTF8" if sys.stdout.isatty() else "UTF8"
    form = {"png": ["-t", "PNG", "-s", "8"], "svg": ["-t", "SVG"],
            "terminal": ["-t", terminal]}[kind]
    return subprocess.run(["qrencode", *form, "-m", "2", "-o", "-", text],
                          check=True, capture_output=True).stdout


def cmd_invite(args: argparse.Namespace) -> int:
    """``relayctl invite``: make ``--count`` invites valid for ``--valid``; print each
    link, QR text and terminal QR code, or one PNG/SVG image (``--qr``), or JSON;
    ``--revoke-all`` deletes every unused invite. 0, or 2 for a bad argument."""
    values = settings_mod.from_environment()
    if args.revoke_all:
        removed = invites.revoke_all()
        _print({"revoked": removed}, args.json, f"{removed} unused invites deleted")
        return 0
    try:
        valid = invites.parse_duration(args.valid)
        if args.qr in ("png", "svg") and args.count != 1:
            raise ValueError(f"--qr {args.qr} writes one image: use it with --count 1")
        tokens = invites.issue(args.count, valid, owner=_auth_owner())
    except ValueError as exc:
        print(f"relayctl invite: {exc}", file=sys.stderr)
        return 2
    mode = registration.mode(values)
    if mode != "invite":
        print(f"note: registration is {mode}, so these invites are not asked for; they "
              "work once it is invite (relayctl registration invite)", file=sys.stderr)
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() + valid))
    domain = values.mail_domain
    made = [{"link": invites.web_link(domain, t), "dcaccount": invites.dcaccount_url(domain, t),
             "expires": expires} for t in tokens]
    if args.json:
        print(json.dumps({"registration": mode, "invites": made}, indent=2))
    elif args.qr in ("png", "svg"):
        print(f"single-use invite, valid until {expires}: {made[0]['link']}", file=sys.stderr)
        sys.stdout.buffer.write(qr_image(made[0]["dcaccount"], args.qr))
    else:
        for n, invite in enumerate(made, 1):
            print(f"Invite {n} of {len(made)}: single use, valid until {expires}\n"
                  f"  link (opens Delta Chat): {invite['link']}\n"
                  f"  QR code text:            {invite['dcaccount']}")
            if args.qr == "terminal":
                print(qr_image(invite["dcaccount"], "terminal").decode())
    return 0


# --- single accounts -----------------------------------------------------------------------

def _address(values: settings_mod.Settings, text: str) -> str:
    address = text.strip().lower()
    if not accounts.is_local(address, values.mail_domain):
        raise ValueError(f"{text!r} is not an address of {values.mail_domain}")
    return address


def cmd_account(args: argparse.Namespace) -> int:
    """``relayctl account disable|enable|delete ADDRESS`` and ``account list``. 0; 1 when
    delete finds nothing of the address; 2 for a missing or foreign address."""
    from relay.store import purge
    values = settings_mod.from_environment()
    if args.action == "list":
        return _list(args)
    if not args.address:
        print(f"relayctl account {args.action}: give the ADDRESS", file=sys.stderr)
        return 2
    try:
        address = _address(values, args.address)
    except ValueError as exc:
        print(f"relayctl account: {exc}", file=sys.stderr)
        return 2
    exists = accounts.read_hash(address) is not None
    if args.action == "disable":
        newly = disabled.disable(address, owner=_auth_owner())
        purge.kick(address)
        _print({"address": address, "disabled": True, "was_disabled": not newly,
                "account_exists": exists}, args.json,
               f"{address} is disabled: logins, sending and receiving are refused, its IMAP "
               "sessions were ended" + ("" if exists else " (no account exists for it now; "
                                         "none can be created while it is disabled)"))
        return 0
    if args.action == "enable":
        was = disabled.enable(address)
        _print({"address": address, "disabled": False, "was_disabled": was}, args.json,
               f"{address} is enabled" if was else f"{address} was not disabled")
        return 0
    report = purge.purge(address)
    found = any(report.values())
    parts = [k.replace("_", " ") if v is True else f"{k.replace('_', ' ')}: {v}"
             for k, v in report.items() if v]
    _print({"address": address, "deleted": report}, args.json,
           f"{address}: deleted ({', '.join(parts)})" if found
           else f"{address}: no account, nothing deleted")
    return 0 if found else 1


def _list(args: argparse.Namespace) -> int:
    data: dict = {"accounts": accounts.count(), "disabled": disabled.count()}
    if args.disabled:
        data["disabled_addresses"] = disabled.addresses()
    if args.addresses:
        data["addresses"] = sorted(
            p.name for p in paths.ACCOUNTS.iterdir() if not p.name.startswith("."))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(data["accounts"])
    for name in data.get("addresses", []):
        print(name)
    for name in data.get("disabled_addresses", []):
        print(f"disabled: {name}")
    return 0


# --- the rows of relayctl's COMMANDS table ---------------------------------------------------

JSON_ARG = (("--json",), {"action": "store_true", "help": "print JSON"})
REGISTRATION_ARGS = (
    (("mode",), {"nargs": "?", "choices": [*registration.MODES, "default"],
                 "help": "set the mode of the running relay ('default': REGISTRATION again)"}),
    JSON_ARG)
INVITE_ARGS = (
    (("--count",), {"type": int, "default": 1, "help": "how many invites (default 1)"}),
    (("--valid",), {"default": "7d", "help": "how long each is valid: 7d, 12h, 30m (default 7d)"}),
    (("--qr",), {"choices": ["terminal", "png", "svg", "none"], "default": "terminal",
                 "help": "QR codes in the terminal (default), or one PNG/SVG image to stdout"}),
    (("--revoke-all",), {"action": "store_true", "help": "delete every unused invite"}),
    JSON_ARG)
ACCOUNT_ARGS = (
    (("action",), {"choices": ["disable", "enable", "delete", "list"]}),
    (("address",), {"nargs": "?", "help": "the account's address (not for list)"}),
    (("--count",), {"action": "store_true", "help": "list: the number only (the default)"}),
    (("--disabled",), {"action": "store_true", "help": "list: also the disabled addresses"}),
    (("--addresses",), {"action": "store_true", "help": "list: also every account's address"}),
    JSON_ARG)
