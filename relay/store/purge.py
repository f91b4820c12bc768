"""Delete one account with everything the relay keeps for it, at once
(``relayctl account delete``).

What is removed: the account file (password hash, last login), the mailbox with
Dovecot's indexes and its deliver-once records, the push-token file, pending
push notifications for it, the disabled marker, and queued mail it sent or
that waits only for it (Postfix's queue files hold the address). A message
queued for it and for others stays for the others; its delivery to this
address then fails and bounces. IMAP sessions are ended first
(``doveadm kick``) and the address is marked disabled while its files go, so no
login or delivery recreates them halfway.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from relay import paths
from relay.accounts import disabled
from relay.accounts import store as accounts


def kick(address: str) -> bool:
    """End the IMAP sessions of ``address`` now (``doveadm kick``); True if it ran."""
    result = subprocess.run(["doveadm", "kick", address], capture_output=True, text=True,
                            timeout=30)
    return result.returncode in (0, 68)  # 68 (EX_NOUSER): no session was open


def pending_notifications(address: str, root: Path = paths.PUSH_QUEUE) -> list[Path]:
    """The files of pending push notifications for ``address``."""
    found = []
    for entry in _scan(root):
        try:
            if json.loads(Path(entry.path).read_text()).get("address") == address:
                found.append(Path(entry.path))
        except (OSError, ValueError, AttributeError):
            continue
    return found


def queued_messages(address: str) -> list[str]:
    """Queue ids of the messages ``address`` sent, or that wait for it alone."""
    out = subprocess.run(["postqueue", "-j"], capture_output=True, text=True, timeout=60).stdout
    ids = []
    for line in out.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        recipients = {r.get("address", "").lower() for r in message.get("recipients", [])}
        if message.get("sender", "").lower() == address or recipients == {address}:
            ids.append(message["queue_id"])
    return ids


def _scan(root: Path) -> list[os.DirEntry]:
    try:
        return [e for e in os.scandir(root) if e.is_file(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def purge(address: str) -> dict:
    """Delete everything of ``address`` (lower case, of this relay's domain); return
    what was found: ``account``, ``mailbox``, ``push_tokens``, ``was_disabled``
    (booleans), ``push_pending`` and ``queued_messages`` (counts)."""
    accounts.account_file(address)  # raises ValueError for a name that is no address
    was_disabled = not disabled.disable(address)
    kick(address)
    report: dict = {"account": _unlink(accounts.account_file(address)),
                    "mailbox": (paths.MAIL / address).exists()}
    shutil.rmtree(paths.MAIL / address, ignore_errors=True)
    report["push_tokens"] = _unlink(paths.PUSH_TOKENS / address)
    report["push_pending"] = sum(_unlink(p) for p in pending_notifications(address))
    queued = queued_messages(address)
    for queue_id in queued:
        subprocess.run(["postsuper", "-d", queue_id], capture_output=True, timeout=60)
    report["queued_messages"] = len(queued)
    report["was_disabled"] = was_disabled
    kick(address)  # a login that slipped in before the marker
    shutil.rmtree(paths.MAIL / address, ignore_errors=True)
    disabled.enable(address)
    return report
