"""Prepare the data volume: directories, owners, modes and the layout version.

Runs at every start and is idempotent. Ownership is fixed recursively only
when the top of a directory is wrong (a fresh volume, a restored backup, a bind
mount made by another user), so a large volume does not slow every start.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from relay import counters, paths

log = logging.getLogger("relay.boot.datadir")


class LayoutError(RuntimeError):
    """/data cannot be used by this image: an unreadable LAYOUT_VERSION, or a newer layout than
    ``paths.LAYOUT_VERSION``. The entrypoint stops with its message.
    """
    pass


@dataclass(frozen=True)
class Dir:
    """A directory the relay needs: ``path``, its owner ``user`` and ``group`` (names from the
    image's /etc/passwd and /etc/group) and its permission bits ``mode`` (e.g. 0o700).
    """
    path: Path
    user: str
    group: str
    mode: int


DIRS: tuple[Dir, ...] = (
    Dir(paths.DATA, "root", "root", 0o755),
    Dir(paths.MAIL, "vmail", "vmail", 0o700),
    Dir(paths.ACCOUNTS, "relayauth", "relayauth", 0o700),
    Dir(paths.POSTFIX_QUEUE, "root", "root", 0o755),
    Dir(paths.TLS, "root", "root", 0o700),
    Dir(paths.ACME_ACCOUNT, "relayacme", "relayacme", 0o700),
    Dir(paths.DKIM, "opendkim", "opendkim", 0o700),
    Dir(paths.STATE, "root", "root", 0o755),
    Dir(paths.PUSH, "relaypush", "relaypush", 0o700),
    Dir(paths.PUSH_TOKENS, "relaypush", "relaypush", 0o700),
    Dir(paths.PUSH_QUEUE, "relaypush", "relaypush", 0o700),
    Dir(paths.INVITES, "relayauth", "relayauth", 0o700),
    Dir(paths.DISABLED, "relayauth", "relayauth", 0o700),
)

RUN_DIRS: tuple[Dir, ...] = (
    Dir(paths.RUN, "root", "root", 0o755),
    # A socket is reachable only by who may enter its directory: the group of
    # each directory is the one daemon that talks to that helper.
    Dir(paths.AUTH_DICT_SOCKET.parent, "relayauth", "dovecot", 0o750),
    Dir(paths.ACCOUNTS_MAP_SOCKET.parent, "relayauth", "postfix", 0o750),
    Dir(paths.SIGNUP_SOCKET.parent, "relaysignup", "www-data", 0o750),
    Dir(paths.SIGNUP_AUTH_SOCKET.parent, "relayauth", "relaysignup", 0o750),
    Dir(paths.FILTER_OUT_SOCKET.parent, "relayfilter", "postfix", 0o750),
    Dir(paths.MXDELIV_SOCKET.parent, "relaymxdeliv", "www-data", 0o750),
    Dir(paths.MXSEND_SOCKET.parent, "relaymxsend", "postfix", 0o750),
    # Dovecot's imap and lmtp processes run as vmail.
    Dir(paths.METADATA_SOCKET.parent, "relaypush", "vmail", 0o750),
    Dir(paths.COTURN_RUN, "turnserver", "turnserver", 0o750),
    Dir(paths.ACME_CHALLENGES, "relayacme", "relayacme", 0o755),
    # Postfix is a member of the opendkim group, to reach the milter socket.
    Dir(paths.OPENDKIM_RUN, "opendkim", "opendkim", 0o750),
    Dir(paths.RENDERED, "root", "root", 0o755),
    Dir(paths.POSTFIX_DATA, "postfix", "postfix", 0o700),
    Dir(paths.DOVECOT_STATE, "root", "root", 0o755),
    Dir(paths.SIEVE_BIN, "vmail", "vmail", 0o700),
    Dir(paths.NGINX_TEMP, "root", "root", 0o755),
    # Counters: each helper writes its own directory; the group relaymetrics (the
    # exporter) may enter them all (relay.counters).
    Dir(paths.METRICS, "root", "root", 0o755),
    *(Dir(paths.METRICS / service, user, counters.GROUP, 0o750)
      for service, user in counters.SERVICES.items()),
)


def _ids(user: str, group: str) -> tuple[int, int]:
    return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid


def ensure_dir(d: Dir) -> None:
    """Create ``d.path`` (with parents) and give it its owner and mode. When the directory's own
    owner is wrong (a fresh volume, a restored backup, another user's bind mount) everything
    below it is chowned too, without following links; otherwise the tree is left alone, so a
    large volume does not slow every start. Raises KeyError for an unknown user or group, OSError
    when the volume refuses.
    """
    uid, gid = _ids(d.user, d.group)
    d.path.mkdir(parents=True, exist_ok=True)
    st = d.path.stat()
    if (st.st_uid, st.st_gid) != (uid, gid):
        for root, dirs, files in os.walk(d.path):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, gid)
        os.chown(d.path, uid, gid)
    if st.st_mode & 0o7777 != d.mode:
        os.chmod(d.path, d.mode)


# Migrations: MIGRATIONS[n] turns a layout-n volume into layout n+1. Each step
# is idempotent (a start interrupted halfway runs it again) and logged.
def _from_unversioned() -> None:
    """Layout 0: a volume without LAYOUT_VERSION, from before the file existed.
    Its files are where layout 1 wants them; only owners and modes (fixed by
    ensure_dir for the directories) may differ."""


MIGRATIONS: dict[int, Callable[[], None]] = {0: _from_unversioned}


def migrate(found: int, target: int = paths.LAYOUT_VERSION) -> list[int]:
    """Run the migrations from layout `found` up to `target`; return the steps run."""
    steps = []
    for version in range(found, target):
        log.info("migrating /data from layout %d to %d", version, version + 1)
        MIGRATIONS[version]()
        steps.append(version)
    return steps


def check_layout() -> int:
    """Return the layout version found on the volume (0 for a fresh volume)."""
    try:
        found = int(paths.LAYOUT_VERSION_FILE.read_text().strip())
    except FileNotFoundError:
        return 0
    except ValueError:
        raise LayoutError(f"{paths.LAYOUT_VERSION_FILE} is unreadable; refusing to touch /data") from None
    if found > paths.LAYOUT_VERSION:
        raise LayoutError(
            f"/data has layout version {found} but this image understands up to "
            f"{paths.LAYOUT_VERSION}: run the newer image again or restore a backup")
    return found


# Dovecot's lock files (dotlocks) name the pid of their holder. A SIGKILL can leave one, and in
# a restarted container the same pid may well be alive again, so Dovecot would wait out its
# stale timeout (2 minutes for a Maildir's uidlist) before the next delivery to that mailbox.
# Before supervisord starts, no Dovecot process exists: every such file is stale.
STALE_LOCK_NAMES = ("dovecot-uidlist.lock", "dovecot-keywords.lock")
HOME_LOCK_NAMES = (".dovecot.lda-dupes.lock",)


def remove_stale_locks(mail_root: Path = paths.MAIL) -> int:
    """Remove the lock files Dovecot left in every mailbox home below ``mail_root`` (in the
    home, in Maildir/ and in each Maildir++ folder); returns how many. Call only while no
    Dovecot process runs. Never follows a symbolic link."""
    removed = 0
    try:
        homes = [e for e in os.scandir(mail_root) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return 0
    for home in homes:
        dirs = [Path(home.path), Path(home.path) / "Maildir"]
        try:
            dirs += [Path(e.path) for e in os.scandir(dirs[1])
                     if e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            pass
        for directory in dirs:
            names = HOME_LOCK_NAMES if directory == dirs[0] else STALE_LOCK_NAMES
            for name in names:
                try:
                    os.unlink(directory / name)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def prepare() -> None:
    """Make /data and /run/relay ready for this image: check the layout version
    (:func:`check_layout`, LayoutError), create every directory of ``DIRS`` and ``RUN_DIRS`` with
    its owner and mode, run the migrations a non-fresh volume needs, remove the lock files a
    crash left in mailboxes (:func:`remove_stale_locks`), and write ``paths.LAYOUT_VERSION``
    atomically. Idempotent.
    """
    found = check_layout()
    for d in DIRS + RUN_DIRS:
        ensure_dir(d)
    fresh = found == 0 and not any(paths.ACCOUNTS.iterdir()) and not any(paths.MAIL.iterdir())
    if not fresh:
        migrate(found)
        remove_stale_locks()
    tmp = paths.LAYOUT_VERSION_FILE.with_suffix(".tmp")
    tmp.write_text(f"{paths.LAYOUT_VERSION}\n")
    os.replace(tmp, paths.LAYOUT_VERSION_FILE)


def install_file(src: Path, dst: Path, user: str, group: str, mode: int) -> None:
    """Copy src to dst atomically with the given owner and mode."""
    uid, gid = _ids(user, group)
    tmp = dst.with_name(dst.name + ".new")
    shutil.copyfile(src, tmp)
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, dst)
