"""Exactly once after a crash: record the deliveries a crash cut off.

Dovecot drops a message whose Message-ID the recipient's mailbox has had within
the last day (config/etc/dovecot/sieve/deliver-once.sieve, Sieve's duplicate
test). It records a delivery in the user's duplicate database just after it
stored the message, and Postfix records it after Dovecot's reply; a crash
between the store and either record makes Postfix deliver the message again
after the restart, and without the record Dovecot would store it a second time.

So before Postfix starts (relay/delivery/postfix_master.py), :func:`repair` looks at the
messages every mailbox stored in the last minute before the relay went down
and adds any record that is missing, exactly as the Sieve test computes it
(an MD5 of the test's defaults and the Message-ID, in Dovecot's file format),
so the repeated delivery is dropped. Messages without a Message-ID of the usual
form are left alone (their repeat, if any, is delivered).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import struct
import time
from pathlib import Path

DB_NAME = ".dovecot.lda-dupes"
DB_VERSION = 2
PERIOD = 86400            # deliver-once.sieve's :seconds (sieve_duplicate_max_period)
WINDOW = 60.0             # deliveries this long before the last one may lack a record
MAX_HEADER_BYTES = 65536
STALE_LOCK = 10           # seconds, Dovecot's stale_timeout of this lock
# "<local@domain>" with no spaces, quotes, comments or nested brackets: the form
# Dovecot's message-id parser returns unchanged.
SIMPLE_MSGID = re.compile(rb"<[^<>\s\"()\\@]+@[^<>\s\"()\\@]+>")
GZIP_MAGIC = b"\x1f\x8b"
_RECORD = struct.Struct("=III")  # stamp, id_size, user_size (native order, like Dovecot)


def record_id(message_id: bytes) -> bytes:
    """The duplicate-database id the Sieve test `duplicate` (no :handle, no :last)
    computes for a Message-ID."""
    return hashlib.md5(b"sieve duplicate" + b"+" + b"default" + message_id).digest()


def read_head(path: Path, size: int = MAX_HEADER_BYTES) -> bytes:
    """The first ``size`` bytes of a stored message, uncompressed: Dovecot stores new mail
    gzip-compressed (zlib_save = gz) and older mail as it came. Raises OSError (also for a
    gzip file cut short: EOFError becomes OSError)."""
    with open(path, "rb") as f:
        if f.read(2) != GZIP_MAGIC:
            f.seek(0)
            return f.read(size)
        f.seek(0)
        try:
            with gzip.GzipFile(fileobj=f) as z:
                return z.read(size)
        except EOFError as exc:
            raise OSError(f"{path}: compressed data cut short") from exc


def message_id(path: Path) -> bytes | None:
    """The first Message-ID of a stored message (compressed or not), when it is of the
    simple form."""
    try:
        head = read_head(path)
    except OSError:
        return None
    head = re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0]
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", head)
    for line in unfolded.split(b"\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"message-id":
            match = SIMPLE_MSGID.search(value)
            return match.group(0) if match and value.strip().startswith(b"<") else None
    return None


def read_db(path: Path) -> list[tuple[int, bytes, bytes]]:
    """(stamp, id, user) of every record; [] for a missing or unknown file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    if len(data) < 4 or struct.unpack("=I", data[:4])[0] != DB_VERSION:
        return []
    records, pos = [], 4
    while pos + _RECORD.size <= len(data):
        stamp, id_size, user_size = _RECORD.unpack_from(data, pos)
        pos += _RECORD.size
        if pos + id_size + user_size > len(data):
            break
        records.append((stamp, data[pos:pos + id_size], data[pos + id_size:pos + id_size + user_size]))
        pos += id_size + user_size
    return records


def write_db(path: Path, records: list[tuple[int, bytes, bytes]], uid: int, gid: int,
             stale_after: float = STALE_LOCK) -> None:
    """Replace the database under Dovecot's lock (``<path>.lock``, made exclusively);
    a lock older than ``stale_after`` seconds was left by a process that died."""
    lock = path.with_name(path.name + ".lock")
    try:
        if time.time() - lock.stat().st_mtime >= stale_after:
            lock.unlink()
    except FileNotFoundError:
        pass
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        body = struct.pack("=I", DB_VERSION) + b"".join(
            _RECORD.pack(stamp, len(rid), len(user)) + rid + user for stamp, rid, user in records)
        os.write(fd, body)
        os.fchown(fd, uid, gid)
        os.close(fd)
        fd = -1
        os.replace(lock, path)
    finally:
        if fd != -1:
            os.close(fd)
            lock.unlink(missing_ok=True)


def recent_messages(maildir: Path, since: float) -> list[Path]:
    """The message files in ``maildir``'s ``new/`` and ``cur/`` whose mtime is ``since`` (a Unix
    time) or later; a folder not changed since then is not listed at all. Missing folders give
    nothing.
    """
    out = []
    for sub in ("new", "cur"):
        folder = maildir / sub
        try:
            if folder.stat().st_mtime < since:
                continue  # nothing was added or moved here since then
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime >= since:
                        out.append(Path(entry.path))
        except FileNotFoundError:
            continue
    return out


def last_activity(homes: list[Path]) -> float:
    """The newest mtime (Unix time) of the ``Maildir/new`` and ``Maildir/cur`` folders of ``homes``:
    when the last message was stored or moved; 0.0 when there is none.
    """
    newest = 0.0
    for home in homes:
        for sub in ("new", "cur"):
            try:
                newest = max(newest, (home / "Maildir" / sub).stat().st_mtime)
            except FileNotFoundError:
                pass
    return newest


def repair(mail_root: Path, window: float = WINDOW, now: float | None = None) -> int:
    """Add the missing records of the messages stored in the last ``window`` seconds
    before the newest delivery; returns how many records were added.

    Runs before Postfix starts, so no delivery, the only writer of these databases,
    is under way: a lock file found now was left by the crash (a delivery that was
    writing its record) and is taken over at once."""
    now = time.time() if now is None else now
    try:
        homes = [p for p in mail_root.iterdir() if p.is_dir() and not p.is_symlink()]
    except FileNotFoundError:
        return 0
    since = last_activity(homes) - window
    added = 0
    for home in homes:
        ids = {mid for path in recent_messages(home / "Maildir", since)
               if (mid := message_id(path)) is not None}
        if not ids:
            continue
        db = home / DB_NAME
        records = [r for r in read_db(db) if r[0] >= now]  # Dovecot drops expired ones too
        user = home.name.encode()
        known = {(rid, u) for _, rid, u in records}
        missing = [rid for rid in map(record_id, sorted(ids)) if (rid, user) not in known]
        if not missing:
            continue
        stat = home.stat()
        records += [(int(now) + PERIOD, rid, user) for rid in missing]
        write_db(db, records, stat.st_uid, stat.st_gid, stale_after=0)
        added += len(missing)
    return added

