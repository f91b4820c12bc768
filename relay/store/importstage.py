"""First half of ``relayctl import-relay``: unpack a reference relay's archive into a
staging directory on /data and learn what it holds, without touching the relay.

The archive is read once, as a stream (a tar or tar.gz on stdin works). What
belongs to an account goes below ``<stage>/mail/<address>/Maildir`` with the
owner, modes and mtimes it will have in /data; password hashes, flags and push
tokens are kept in memory; DKIM keys go to ``<stage>/dkim``. Anything that
cannot be imported safely (a path with ``..``, an account of another domain)
stops the reading with :class:`Refused`; the caller then removes the stage and
/data is as before.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from relay.store import refrelay, tarstream


class Refused(Exception):
    """The archive cannot be imported; nothing was changed. The text says why."""


@dataclass
class Account:
    """One account of the archive, as far as it was read."""
    address: str
    password: str | None = None
    password_seen: bool = False
    last_login: float | None = None
    e2ee_flag: bool = False
    disabled: bool = False
    tokens: dict[str, int] = field(default_factory=dict)
    messages: int = 0


@dataclass
class Stage:
    """What the archive held. ``root``: the staging directory (same file system as
    /data, so that accounts move into place by rename)."""
    root: Path
    domain: str
    accounts: dict[str, Account] = field(default_factory=dict)
    dkim_files: dict[str, Path] = field(default_factory=dict)   # name below dkimkeys/ -> staged file
    keytable: str | None = None
    ini_domain: str | None = None
    other_members: int = 0

    def maildir(self, address: str) -> Path:
        """Where the account's Maildir is staged (``<stage>/mail/<address>/Maildir``)."""
        return self.root / "mail" / address / "Maildir"


class _Reader:
    """Unpacks one archive into a Stage (see the module's docstring)."""

    SMALL = 1 << 20  # password, metadata.json, KeyTable, chatmail.ini, keys: read into memory

    def __init__(self, stage: Stage, now: float) -> None:
        self.stage = stage
        self.now = now
        vmail = pwd.getpwnam("vmail")
        self.owner = (vmail.pw_uid, vmail.pw_gid)
        self.staged: dict[str, Path] = {}  # archive name -> staged path (for hard links)

    def read(self, tar: tarfile.TarFile) -> None:
        for member in tar:
            where = self._classify(member.name)
            if member.issym() or not (member.isfile() or member.isdir() or member.islnk()):
                continue  # a reference relay's state has no symbolic links or devices
            if where.kind == "account":
                self._account(tar, member, where)
            elif where.kind == "dkim" and member.isfile():
                self._dkim(tar, member, where.name)
            elif where.kind == "ini" and member.isfile():
                self.stage.ini_domain = refrelay.parse_ini_domain(self._small(tar, member).decode(
                    "utf-8", "replace"))
            else:
                self.stage.other_members += 1

    def _classify(self, name: str) -> refrelay.Member:
        try:
            where = refrelay.classify(name)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        expected = refrelay.bare_domain(self.stage.domain)
        if where.kind == "account" and where.domain_dir.lower() != expected:
            raise Refused(f"the archive holds accounts of {where.domain_dir}, but this relay's "
                          f"MAIL_DOMAIN is {self.stage.domain}")
        return where

    def _small(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
        if member.size > self.SMALL:
            raise Refused(f"{member.name}: {member.size} bytes, too large for what it should be")
        f = tar.extractfile(member)
        return f.read() if f else b""

    def _account(self, tar: tarfile.TarFile, member: tarfile.TarInfo,
                 where: refrelay.Member) -> None:
        address = where.address.lower()
        account = self.stage.accounts.setdefault(address, Account(address))
        if where.part == "password" and member.isfile():
            account.password_seen = True
            account.password = refrelay.parse_password(
                self._small(tar, member).decode("ascii", "replace"))
            account.last_login = float(member.mtime)
        elif where.part == "e2ee":
            account.e2ee_flag = True
        elif where.part == "disabled":
            account.disabled = True
        elif where.part == "metadata" and member.isfile():
            account.tokens = refrelay.parse_tokens(self._small(tar, member), self.now)
        elif where.part == "maildir":
            target = self.stage.maildir(address).joinpath(*where.maildir_path)
            if self._maildir_member(tar, member, target) and where.message:
                account.messages += 1

    def _maildir_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo,
                        target: Path) -> bool:
        """Write one Maildir entry as vmail; True when a file was written."""
        self._mkdirs(target if member.isdir() else target.parent)
        if member.isdir():
            return False
        if member.islnk():  # Dovecot hard-links a message copied to another folder
            source = self.staged.get(member.linkname)
            if source is None or target.exists():
                return False
            os.link(source, target)
            self.staged[member.name] = target
            return True
        src = tar.extractfile(member)
        if src is None:
            return False
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            os.fchown(out.fileno(), *self.owner)
        os.utime(target, (member.mtime, member.mtime))  # delivery time (expiry, INTERNALDATE)
        self.staged[member.name] = target
        return True

    def _mkdirs(self, directory: Path) -> None:
        missing = []
        while not directory.exists():
            missing.append(directory)
            directory = directory.parent
        for d in reversed(missing):
            d.mkdir(mode=0o700)
            os.chown(d, *self.owner)

    def _dkim(self, tar: tarfile.TarFile, member: tarfile.TarInfo, name: str) -> None:
        data = self._small(tar, member)
        if name == "KeyTable":
            self.stage.keytable = data.decode("utf-8", "replace")
        elif name.endswith(".private"):
            target = self.stage.root / "dkim" / name
            target.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            self.stage.dkim_files[name] = target


def unpack(src: BinaryIO | Path, stage_root: Path, domain: str, now: float | None = None) -> Stage:
    """Read the archive (a file object, read as a stream, or a path; tar, tar.gz, tar.bz2
    or tar.xz) into ``stage_root``, which must not exist. Raises Refused (with the
    stage left for the caller to remove) for an archive that cannot be imported."""
    stage_root.mkdir(mode=0o700)
    stage = Stage(stage_root, domain)
    reader = _Reader(stage, time.time() if now is None else now)
    try:
        if isinstance(src, Path):
            with tarfile.open(src, mode="r:*") as tar:
                reader.read(tar)
        else:
            with tarstream.open_stream(src) as tar:  # a truncated archive is an error
                reader.read(tar)
    except tarfile.TarError as exc:
        raise Refused(f"not a readable tar archive ({exc})") from None
    if not stage.accounts:
        raise Refused("no accounts in the archive: expected home/vmail/mail/<domain>/<address>/ "
                      "(see the README: Moving in from a reference relay)")
    return stage
