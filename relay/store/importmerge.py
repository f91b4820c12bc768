"""Moving a staged Maildir into an account's home (``relayctl import-relay``).

A mailbox that is not here yet moves as a whole (one rename). A mailbox that is
already here (an earlier import of the same relay) keeps everything it has,
including Dovecot's ``dovecot-uidlist``; the archive's messages whose unique
Maildir name (the part before ``:2,``) is not yet in that folder are moved in,
and Dovecot gives them new UIDs when it next looks. Folders that are not here
yet move as a whole. Everything stays owned by vmail.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

MESSAGE_DIRS = ("cur", "new")
MAILDIR_DIRS = ("cur", "new", "tmp")


def _vmail() -> tuple[int, int]:
    pw = pwd.getpwnam("vmail")
    return pw.pw_uid, pw.pw_gid


def _mkdir(path: Path) -> None:
    if not path.exists():
        path.mkdir(mode=0o700)
        os.chown(path, *_vmail())


def folders(maildir: Path) -> list[Path]:
    """INBOX (the Maildir root) and its Maildir++ folders (``.Name`` directories)."""
    found = [maildir]
    for entry in sorted(os.scandir(maildir), key=lambda e: e.name):
        if entry.name.startswith(".") and entry.name not in (".", "..") and \
                entry.is_dir(follow_symlinks=False):
            found.append(Path(entry.path))
    return found


def complete(maildir: Path) -> None:
    """Give INBOX and every folder its cur/, new/ and tmp/ (an archive may lack empty ones)."""
    for folder in folders(maildir):
        for sub in MAILDIR_DIRS:
            _mkdir(folder / sub)


def unique_name(filename: str) -> str:
    """A Maildir file's unique part: ``1775324677.M448978P3029757.host,S=3235,W=3305``
    of ``...:2,S`` (the flags after ``:2,`` change as the user reads)."""
    return filename.split(":", 1)[0]


def _merge_folder(src: Path, dst: Path) -> int:
    """Move src's messages that dst lacks into dst; the number moved."""
    have = {unique_name(e.name) for sub in MESSAGE_DIRS if (dst / sub).is_dir()
            for e in os.scandir(dst / sub)}
    moved = 0
    for sub in MESSAGE_DIRS:
        _mkdir(dst / sub)
        for entry in os.scandir(src / sub):
            if entry.is_file(follow_symlinks=False) and unique_name(entry.name) not in have:
                os.rename(entry.path, dst / sub / entry.name)
                have.add(unique_name(entry.name))
                moved += 1
    return moved


def move_maildir(staged: Path, home: Path) -> int:
    """Put the staged Maildir at ``home/Maildir`` (see the module's docstring); returns
    the number of messages merged into an existing Maildir (0 when it moved whole)."""
    if not staged.is_dir():
        return 0  # an account that never received mail: Dovecot makes the Maildir at login
    complete(staged)
    _mkdir(home)
    target = home / "Maildir"
    if not target.exists():
        os.rename(staged, target)
        return 0
    moved = 0
    for folder in folders(staged):
        dst = target if folder == staged else target / folder.name
        if not dst.exists():
            os.rename(folder, dst)
        else:
            moved += _merge_folder(folder, dst)
    complete(target)
    return moved
