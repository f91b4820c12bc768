"""``relayctl import-relay``: move a reference (cmdeploy) relay's users, mail, push
tokens and DKIM key into this relay.

    relayctl import-relay [ARCHIVE|-] [--dry-run] [--skip-conflicts] [--json]

ARCHIVE is a tar (optionally compressed) of the old host's ``/home/vmail/mail`` and
``/etc/dkimkeys`` (see the README); ``-`` or nothing reads it from stdin. Steps:

1. unpack into a staging directory on /data (``importstage``); an archive of
   another domain, or with unsafe paths, is refused there;
2. decide for each account: ``new`` (not here), ``merge`` (here with the same
   password hash: an earlier import of the same relay, so the messages not yet
   here are added) or ``conflict`` (here with another hash: a different person
   made it here). Conflicts refuse the whole import unless ``--skip-conflicts``,
   which leaves those accounts as they are here;
3. check the DKIM key (RSA, for this domain) and its selector;
4. unless ``--dry-run``: move everything into place (account file first, with
   the old last-login day as its mtime, then the Maildir, then the push
   tokens), install the key and the selector, and if the relay is running,
   have OpenDKIM sign with them at once.

Exit status 0 when imported (or, with ``--dry-run``, importable); 1 when refused
(then nothing in /data was changed) or stopped halfway while moving into place
(what moved stays and works; the same import again merges the rest); 2 when stdin
is a terminal.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from relay import paths
from relay.accounts import store as accounts
from relay.boot import dkimkey
from relay.notify import push
from relay.settings import Settings
from relay.store import importmerge, refrelay
from relay.store.importstage import Refused, Stage, unpack

log = logging.getLogger("relay.import")

STAGE = paths.DATA / ".import-relay"
LOCK = paths.STATE / "import-relay.lock"
SUPERVISOR_SOCKET = Path("/run/supervisor.sock")
SUPERVISORCTL = ("supervisorctl", "-c", "/etc/supervisor/supervisord.conf")


@dataclass
class Plan:
    """What the import does (also its JSON report)."""
    domain: str
    new: list[str] = field(default_factory=list)
    merge: list[str] = field(default_factory=list)
    conflict: list[str] = field(default_factory=list)
    invalid: dict[str, str] = field(default_factory=dict)    # address -> why not imported
    disabled_on_old_relay: list[str] = field(default_factory=list)
    without_e2ee_flag: int = 0
    messages: int = 0
    push_tokens: int = 0
    dkim_selector: str | None = None
    dkim_key: str | None = None        # file name in the archive
    dkim_record: str | None = None     # the TXT value the old relay published
    dkim_note: str = ""


def _dkim_choice(stage: Stage, plan: Plan) -> None:
    """Pick the key and selector (KeyTable entry for the domain, else opendkim.private,
    else the only key) and check them; Refused when unusable."""
    domain = refrelay.bare_domain(stage.domain)
    chosen = refrelay.parse_keytable(stage.keytable, domain) if stage.keytable else None
    if stage.keytable and chosen is None and refrelay.keytable_domains(stage.keytable):
        raise Refused(f"the archive's DKIM KeyTable signs for "
                      f"{', '.join(sorted(refrelay.keytable_domains(stage.keytable)))}, "
                      f"not for {stage.domain}")
    if chosen is None and stage.dkim_files:
        names = sorted(stage.dkim_files)
        name = "opendkim.private" if "opendkim.private" in names else names[0]
        if len(names) > 1 and name != "opendkim.private":
            raise Refused(f"several DKIM keys and no KeyTable: {', '.join(names)}")
        chosen = (name.removesuffix(".private"), name)
    if chosen is None:
        plan.dkim_note = ("no DKIM key in the archive: this relay keeps its own key "
                          "(publish its record from `relayctl dns`)")
        return
    selector, name = chosen
    if name not in stage.dkim_files:
        raise Refused(f"the KeyTable names the DKIM key {name}, which is not in the archive")
    if not dkimkey.valid_selector(selector):
        raise Refused(f"the DKIM selector {selector!r} is not a DNS label")
    try:
        p = dkimkey.public_key_b64(stage.dkim_files[name])
    except subprocess.CalledProcessError:
        raise Refused(f"the DKIM key {name} is not an RSA private key openssl can read") from None
    plan.dkim_selector, plan.dkim_key = selector, name
    plan.dkim_record = refrelay.cmdeploy_record(p)


SALTED_HASH = "{SHA512-CRYPT}$6$"  # the only form the reference relay's doveauth.py writes


def make_plan(stage: Stage, skip_conflicts: bool) -> Plan:
    """Decide what happens to each account and to the DKIM key; Refused when the
    import cannot go ahead as a whole."""
    if stage.ini_domain and refrelay.bare_domain(stage.ini_domain) != \
            refrelay.bare_domain(stage.domain):
        raise Refused(f"the archive's chatmail.ini is for {stage.ini_domain}, but this relay's "
                      f"MAIL_DOMAIN is {stage.domain}")
    plan = Plan(stage.domain)
    for address, account in sorted(stage.accounts.items()):
        if not accounts.is_local(address, stage.domain):
            plan.invalid[address] = "not an address this relay can have"
        elif account.password is None:
            plan.invalid[address] = ("empty or unreadable password file (unusable there too)"
                                     if account.password_seen else "no password file")
        elif not account.password.startswith(SALTED_HASH):
            # The reference writes only SHA512-CRYPT (doveauth.py); anything else (e.g. {PLAIN})
            # would put a password on /data as it is and skip PASSWORD_MIN_LENGTH.
            scheme = account.password.partition("}")[0] + "}"
            plan.invalid[address] = (f"password stored as {scheme}, not as the salted "
                                     "SHA512-CRYPT hash the reference relay writes")
        else:
            here = accounts.read_hash(address)
            kind = plan.new if here is None else plan.merge if here == account.password \
                else plan.conflict
            kind.append(address)
            if kind is plan.conflict:
                continue
            plan.messages += account.messages
            plan.push_tokens += len(account.tokens)
            plan.without_e2ee_flag += not account.e2ee_flag
            if account.disabled:
                plan.disabled_on_old_relay.append(address)
    if plan.conflict and not skip_conflicts:
        raise Refused(f"{len(plan.conflict)} account(s) of the archive already exist here with "
                      f"another password: {', '.join(plan.conflict[:5])}"
                      f"{' ...' if len(plan.conflict) > 5 else ''}; --skip-conflicts imports the "
                      "others and leaves these as they are here")
    if not plan.new and not plan.merge:
        why = "; ".join(f"{a}: {reason}" for a, reason in list(plan.invalid.items())[:3])
        more = " ..." if len(plan.invalid) > 3 else ""
        raise Refused("no account of the archive can be imported" + (f" ({why}{more})" if why else ""))
    _dkim_choice(stage, plan)
    return plan


def _chown_tree(path: Path, user: str) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)


def _write_file(target: Path, text: str, user: str, mtime: float | None = None) -> None:
    """Write ``text`` to ``target`` atomically, owned by ``user``, mode 0600."""
    tmp = target.with_name(f".{target.name}.import")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    _chown_tree(tmp, user)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, target)


def _install_account_file(address: str, password: str, last_login: float) -> bool:
    """Create the account file (mtime = last login); False when it appeared meanwhile
    (a first login here since the plan was made)."""
    target = accounts.account_file(address)
    tmp = target.with_name(f".{target.name}.import")
    _write_file(tmp, password + "\n", "relayauth", last_login)
    try:
        os.link(tmp, target)  # never replaces an account made here meanwhile
        return True
    except FileExistsError:
        return accounts.read_hash(address) == password
    finally:
        os.unlink(tmp)


def _commit_account(stage: Stage, plan: Plan, address: str, merge: bool) -> None:
    account = stage.accounts[address]
    assert account.password is not None
    target = accounts.account_file(address)
    last_login = account.last_login or time.time()
    if not merge and not _install_account_file(address, account.password, last_login):
        plan.new.remove(address)
        plan.conflict.append(address)
        return
    # the same hash here already: keep the later of the two last-login days
    last_login = max(last_login, target.stat().st_mtime)
    os.utime(target, (last_login, last_login))
    importmerge.move_maildir(stage.maildir(address), paths.MAIL / address)
    if account.tokens:
        target = paths.PUSH_TOKENS / address
        _write_file(target, token_lines(account.tokens, target), "relaypush")


def token_lines(tokens: dict[str, int], existing: Path, now: float | None = None) -> str:
    """The push-token file (relay.notify.push.TokenStore's form: ``<unix time> <token>``
    per line, oldest first) holding ``tokens`` merged with those already in ``existing``
    (the later time wins), without invalid or stale ones, at most MAX_TOKENS."""
    now = time.time() if now is None else now
    merged: dict[str, int] = {}
    try:
        for line in existing.read_text().splitlines():
            text, _, token = line.partition(" ")
            if text.isdigit():
                merged[token] = int(text)
    except FileNotFoundError:
        pass
    for token, stamp in tokens.items():
        merged[token] = max(stamp, merged.get(token, 0))
    fresh = sorted(((s, t) for t, s in merged.items()
                    if push.valid_token(t) and now - s <= push.TOKEN_MAX_AGE))
    return "".join(f"{s} {t}\n" for s, t in fresh[-push.MAX_TOKENS:])


def _commit_dkim(stage: Stage, plan: Plan) -> None:
    assert plan.dkim_selector and plan.dkim_key and plan.dkim_record
    selector = plan.dkim_selector
    key = stage.dkim_files[plan.dkim_key].read_text()
    _write_file(paths.DKIM / f"{selector}.private", key, "opendkim")
    _write_file(paths.DKIM / f"{selector}.record", plan.dkim_record + "\n", "opendkim")
    _write_file(dkimkey.SELECTOR_FILE, selector + "\n", "opendkim")  # last: switches signing


def reload_signing(settings: Settings) -> str:
    """Have a running relay's OpenDKIM sign with the installed key and selector."""
    if not SUPERVISOR_SOCKET.exists():
        return "the relay is not running: it signs with the imported key from its start"
    from relay import system
    from relay.boot import render, startup
    context = startup.context(settings, system.ipv6_available())
    render.render_one("etc/opendkim.conf.j2", context, root=paths.RENDERED)
    dkimkey.write_public_record(paths.DKIM_RECORD)
    done = subprocess.run([*SUPERVISORCTL, "restart", "opendkim"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"OpenDKIM did not restart ({done.stdout.strip()}): restart the container"
    return "OpenDKIM restarted: outgoing mail is signed with the imported key"


def commit(stage: Stage, plan: Plan, settings: Settings) -> str:
    """Move the staged accounts and key into /data; what happened to signing."""
    for address in list(plan.new):
        _commit_account(stage, plan, address, merge=False)
    for address in plan.merge:
        _commit_account(stage, plan, address, merge=True)
    if plan.dkim_selector is None:
        return plan.dkim_note
    _commit_dkim(stage, plan)
    return reload_signing(settings)


class Stopped(Exception):
    """The import failed while moving accounts into place: what was moved stays (and
    works); running the same import again merges the rest."""


def run(src: BinaryIO | Path, settings: Settings, dry_run: bool = False,
        skip_conflicts: bool = False) -> tuple[Plan, str]:
    """Import an archive; returns the plan and what happened to DKIM signing. Raises
    Refused (nothing changed) when the archive cannot be imported, Stopped when moving
    it into place failed halfway (e.g. the disk filled up)."""
    from relay.boot import datadir
    try:
        # also before the relay's first start (docker compose run); a dry run only checks
        datadir.check_layout() if dry_run else datadir.prepare()
    except datadir.LayoutError as exc:
        raise Refused(str(exc)) from None
    with open(LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Refused("another import is running") from None
        shutil.rmtree(STAGE, ignore_errors=True)  # left by an import that was killed
        try:
            try:
                stage = unpack(src, STAGE, settings.mail_domain)
                plan = make_plan(stage, skip_conflicts)
            except OSError as exc:  # e.g. no space left for the stage
                raise Refused(str(exc)) from None
            if dry_run:
                return plan, "dry run: nothing changed"
            try:
                return plan, commit(stage, plan, settings)
            except (OSError, subprocess.SubprocessError) as exc:
                raise Stopped(str(exc)) from None
        finally:
            shutil.rmtree(STAGE, ignore_errors=True)


def report_lines(plan: Plan, signing: str) -> list[str]:
    """The human-readable report."""
    lines = [f"domain: {plan.domain}",
             f"accounts: {len(plan.new)} new, {len(plan.merge)} merged with an earlier import, "
             f"{len(plan.conflict)} left as they are here (another password), "
             f"{len(plan.invalid)} not importable",
             f"messages: {plan.messages}, push tokens: {plan.push_tokens}"]
    lines += [f"  not imported: {a}: {why}" for a, why in plan.invalid.items()]
    lines += [f"  left as it is here: {a}" for a in plan.conflict]
    if plan.disabled_on_old_relay:
        lines.append("disabled on the old relay (imported; block them here too): "
                     + ", ".join(plan.disabled_on_old_relay))
    if plan.dkim_selector:
        lines.append(f"DKIM: selector {plan.dkim_selector}, key {plan.dkim_key}; the record "
                     f"{plan.dkim_selector}._domainkey.{plan.domain} stays as published "
                     "(relayctl dns prints it)")
    lines.append(signing)
    return lines


def main(archive: str, settings: Settings, dry_run: bool, skip_conflicts: bool,
         as_json: bool) -> int:
    """relayctl import-relay; see the module's docstring."""
    import json
    src: BinaryIO | Path = sys.stdin.buffer if archive == "-" else Path(archive)
    if src is sys.stdin.buffer and sys.stdin.isatty():
        print("relayctl import-relay reads the archive from stdin: redirect it from a file "
              "(docker compose exec -T ... < archive.tar.gz)", file=sys.stderr)
        return 2
    try:
        plan, signing = run(src, settings, dry_run, skip_conflicts)
    except Refused as exc:
        if as_json:
            print(json.dumps({"imported": False, "refused": str(exc)}, indent=2))
        print(f"relayctl import-relay: refused, nothing changed: {exc}", file=sys.stderr)
        return 1
    except Stopped as exc:
        if as_json:
            print(json.dumps({"imported": False, "stopped": str(exc)}, indent=2))
        print(f"relayctl import-relay: stopped halfway: {exc}; the accounts moved in so far "
              "work; run the same import again to finish (it merges)", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"imported": not dry_run, "dry_run": dry_run, **asdict(plan),
                          "signing": signing}, indent=2))
    else:
        print("\n".join(report_lines(plan, signing)))
    return 0
