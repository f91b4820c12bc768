"""Deletion of what the relay must not keep (SPEC §2 and §4).

* accounts that have not logged in for DELETE_INACTIVE_USERS_AFTER days, with
  their mailbox (the account file's mtime is the last login day);
* every message older than DELETE_MAILS_AFTER days, and messages larger than
  200 kB older than DELETE_LARGE_AFTER days (a Maildir file's mtime is its
  delivery time);
* mailboxes and push-token files whose account no longer exists;
* when a mailbox holds more than 75 % of MAILBOX_QUOTA, its oldest messages
  (never one younger than 24 hours) until it holds at most 70 %, so that it
  never runs full and clients never see quota warnings.

One pass walks each Maildir once, so its cost grows linearly with the number
of stored messages; it deletes files with unlink() and never holds a lock
Dovecot or Postfix wait for. Runs as root (it removes files of two users) and
never follows a symbolic link.

    python3 -m relay.store.expire          one pass now (also: relayctl expire)
    python3 -m relay.store.expire --loop   a pass every hour (supervisord runs one pass an hour
                                     from a shell loop instead, to keep no Python resident)
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from relay import logs, paths
from relay import settings as settings_mod
from relay.settings import Settings

log = logging.getLogger("relay-expire")

DAY = 86400
LARGE_MESSAGE = 200 * 1000
INTERVAL = 3600
ORPHAN_GRACE = 3600
QUOTA_HIGH, QUOTA_LOW = 0.75, 0.70
QUOTA_MIN_AGE = DAY
MAILDIR_SUBDIRS = ("new", "cur")
# Dovecot names a Maildir file ...,S=<size>,W=<virtual size>:2,<flags>: the message's size
# before compression (mail is stored gzip-compressed) and with CRLF line ends, which is what
# its quota counts (quota_vsizes).
MAILDIR_SIZE = re.compile(r",([SW])=(\d+)")


def message_size(name: str, file_size: int) -> int:
    """Bytes a Maildir message counts for, from its file ``name``: the W= (virtual, as
    Dovecot's quota counts) or else S= size; ``file_size`` when the name has neither (a file
    not written by Dovecot). Compressed files are smaller on disk than this."""
    sizes = dict(MAILDIR_SIZE.findall(name.partition(":")[0]))
    return int(sizes.get("W") or sizes.get("S") or file_size)


@dataclass
class Report:
    """What one expiry pass did: counts of accounts, mailboxes, messages (by age, and over quota)
    and push-token files deleted, messages kept, and the paths it could not delete (``errors``).
    """
    accounts_deleted: int = 0
    mailboxes_deleted: int = 0
    messages_deleted: int = 0
    messages_kept: int = 0
    quota_deleted: int = 0
    token_files_deleted: int = 0
    errors: list[str] = field(default_factory=list)


def _maildirs(home: Path):
    """INBOX and every other folder of one mailbox (Maildir++ dot-folders)."""
    root = home / "Maildir"
    yield root
    try:
        for entry in os.scandir(root):
            if entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)
    except FileNotFoundError:
        return


def expire_messages(home: Path, now: float, max_age: float, large_age: float,
                    quota: int, report: Report) -> None:
    """Delete the messages of one mailbox (``home``, all its Maildir++ folders) older than
    ``max_age`` seconds, or larger than 200 kB (:func:`message_size`, not the compressed
    file's size) and older than ``large_age``, at Unix time ``now``; then, when what is left exceeds 75 % of ``quota`` bytes, the oldest messages (none
    younger than a day) until at most 70 % is used. Counts go to ``report``; files that vanish
    meanwhile are skipped.
    """
    kept: list[tuple[float, int, str]] = []  # (mtime, size, path) of what stays
    for folder in _maildirs(home):
        for sub in MAILDIR_SUBDIRS:
            try:
                entries = os.scandir(folder / sub)
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # fetched and expunged meanwhile
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    age = now - st.st_mtime
                    size = message_size(entry.name, st.st_size)
                    if age > max_age or (size > LARGE_MESSAGE and age > large_age):
                        try:
                            os.unlink(entry.path)
                            report.messages_deleted += 1
                        except FileNotFoundError:
                            pass
                    else:
                        kept.append((st.st_mtime, size, entry.path))
    report.messages_kept += len(kept)
    total = sum(size for _, size, _ in kept)
    if total <= QUOTA_HIGH * quota:
        return
    for mtime, size, path in sorted(kept):  # oldest first
        if total <= QUOTA_LOW * quota or now - mtime < QUOTA_MIN_AGE:
            break
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        total -= size
        report.quota_deleted += 1
        report.messages_kept -= 1


def _scan(root: Path) -> list[os.DirEntry]:
    """The entries of ``root``; none when it does not exist (yet)."""
    try:
        return list(os.scandir(root))
    except FileNotFoundError:
        return []


def expire_accounts(accounts_root: Path, now: float, inactive: float,
                    report: Report) -> tuple[set[str], set[str]]:
    """Delete account files whose last login (mtime) is more than ``inactive`` seconds
    ago; return the addresses of the accounts that stay and of those deleted."""
    live: set[str] = set()
    deleted: set[str] = set()
    for entry in _scan(accounts_root):
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        if now - entry.stat(follow_symlinks=False).st_mtime > inactive:
            try:
                os.unlink(entry.path)
                report.accounts_deleted += 1
                deleted.add(entry.name)
            except FileNotFoundError:
                pass
        else:
            live.add(entry.name)
    return live, deleted


def expire_mailboxes(settings: Settings, now: float, mail_root: Path, accounts_root: Path,
                     live: set[str], deleted: set[str], report: Report) -> None:
    """Remove the mailboxes of deleted accounts; expire the messages of the others."""
    for home in _scan(mail_root):
        if not home.is_dir(follow_symlinks=False):
            continue
        if home.name not in live:
            # No account: deleted just now, or earlier. A mailbox without an account
            # that is younger than an hour may belong to an account created after the
            # scan of the accounts, so it waits for the next pass.
            if home.name not in deleted and (
                    (accounts_root / home.name).exists()
                    or now - home.stat(follow_symlinks=False).st_mtime < ORPHAN_GRACE):
                continue
            try:
                shutil.rmtree(home.path)
                report.mailboxes_deleted += 1
            except OSError as exc:
                report.errors.append(f"{home.name}: {exc}")
            continue
        expire_messages(Path(home.path), now, settings.delete_mails_after * DAY,
                        settings.delete_large_after * DAY, settings.mailbox_quota, report)


def expire_push_tokens(tokens_root: Path, accounts_root: Path, live: set[str],
                       report: Report) -> None:
    """Delete token files without an account. Push tokens are stored only by a
    logged-in user, so such a file belongs to an account deleted now or earlier."""
    for entry in _scan(tokens_root):
        if entry.name.startswith(".") or entry.name in live or \
                (accounts_root / entry.name).exists():
            continue
        try:
            os.unlink(entry.path)
            report.token_files_deleted += 1
        except FileNotFoundError:
            pass


def run_once(settings: Settings, now: float | None = None, accounts_root: Path = paths.ACCOUNTS,
             mail_root: Path = paths.MAIL, tokens_root: Path = paths.PUSH_TOKENS) -> Report:
    """One pass over the data volume at time ``now`` (seconds since the epoch):
    inactive accounts, their mailboxes and push tokens, old and large messages,
    mailboxes above 75 % of their quota. Returns what it did; it never raises for
    a file that disappears meanwhile."""
    now = time.time() if now is None else now
    report = Report()
    live, deleted = expire_accounts(accounts_root, now,
                                    settings.delete_inactive_users_after * DAY, report)
    expire_mailboxes(settings, now, mail_root, accounts_root, live, deleted, report)
    expire_push_tokens(tokens_root, accounts_root, live, report)
    return report


def main(argv: list[str] | None = None) -> int:
    """``python3 -m relay.store.expire [--loop]`` (relay-expire, relayctl expire): one pass
    (:func:`run_once`) and a summary log line, or with --loop a pass every hour for ever. Returns
    1 when something could not be deleted, else 0.
    """
    parser = argparse.ArgumentParser(prog="relay.store.expire")
    parser.add_argument("--loop", action="store_true", help="run a pass every hour")
    args = parser.parse_args(argv)
    settings = settings_mod.from_environment()
    logs.setup("relay-expire", settings.log_level, settings.log_format)
    while True:
        started = time.monotonic()
        report = run_once(settings)
        log.info("deleted %d inactive accounts, %d mailboxes, %d push-token files, %d old "
                 "messages, %d messages over quota; %d messages kept (%.2f s)",
                 report.accounts_deleted, report.mailboxes_deleted, report.token_files_deleted,
                 report.messages_deleted, report.quota_deleted, report.messages_kept,
                 time.monotonic() - started)
        for error in report.errors:
            log.error("could not delete %s", error)
        if not args.loop:
            return 1 if report.errors else 0
        time.sleep(INTERVAL)


if __name__ == "__main__":
    sys.exit(main())
