"""Backup and restore of /data while the relay runs.

``relayctl backup`` writes a gzip'd tar of /data to stdout, with numeric owners
and modes (the image's user ids are fixed). It does not stop anything:

- Maildir messages are written to ``tmp/`` and renamed into place, so every
  message file in the archive is complete; ``tmp/`` itself is left out. A
  message that moves from ``new/`` to ``cur/`` while the archive is written may
  be caught twice: restore keeps one (the Maildir base name is unique).
- Postfix's queue files are complete once Postfix acknowledged them; the ones
  being written are in ``incoming/`` without their final mode and Postfix
  ignores them after a restore.
- Dovecot's index files are caches; Dovecot rebuilds what is inconsistent.
- Files that disappear while being read (expired mail, delivered queue files)
  are skipped.

``relayctl restore`` reads such an archive from stdin into an empty /data
(``docker compose run --rm -T relay relayctl restore < backup.tar.gz`` on a new
volume); it refuses a /data that already holds a relay unless ``--force``.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
from pathlib import Path
from typing import BinaryIO

from relay import paths
from relay.store import tarstream

SKIP_DIRS = {"tmp"}  # Maildir tmp/: messages still being written
MAILDIR_BASE = re.compile(r"^(?P<base>[^:]+)(:2,.*)?$")


def _add_tree(tar: tarfile.TarFile, root: Path) -> int:
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if rel_dir.parts and rel_dir.parts[0] == "mail":
            dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in sorted(dirnames) + sorted(filenames):
            path = Path(dirpath) / name
            arcname = str(rel_dir / name)
            try:
                info = tar.gettarinfo(str(path), arcname)  # None for a socket
                if info is None or not (info.isreg() or info.isdir()):
                    continue  # Postfix's sockets and FIFOs: made again at start
                info.uname = info.gname = ""  # numeric ids only: fixed in the image
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                    count += 1
                else:
                    tar.addfile(info)
            except FileNotFoundError:
                continue  # expired or moved while we walked: not part of this backup
    return count


def backup(out: BinaryIO, root: Path = paths.DATA) -> int:
    """Write the archive; return the number of files in it."""
    with tarfile.open(fileobj=out, mode="w|gz") as tar:
        return _add_tree(tar, root)


def _maildir_key(name: str) -> str | None:
    parts = Path(name).parts
    if len(parts) >= 4 and parts[0] == "mail" and parts[-2] in ("new", "cur"):
        match = MAILDIR_BASE.match(parts[-1])
        return "/".join(parts[:-2]) + "/" + match.group("base") if match else None
    return None


def restore(src: BinaryIO, root: Path = paths.DATA, force: bool = False) -> int:
    """Unpack an archive into root; return the number of files restored. Raises RuntimeError
    (a volume that holds a relay, an unsafe path), OSError or tarfile.TarError; when the archive
    fails halfway the message says that ``root`` now holds part of it (the archive is a stream:
    what came before the damage is unpacked).
    """
    if (root / paths.LAYOUT_VERSION_FILE.name).exists() and not force:
        raise RuntimeError(f"{root} already holds a relay; restore into an empty volume "
                           "(or pass --force to overwrite)")
    seen: set[str] = set()
    count = written = 0
    try:
        with tarstream.open_stream(src) as tar:  # a truncated archive is an error
            for member in tar:
                if member.name.startswith(("/", "..")) or ".." in Path(member.name).parts:
                    raise RuntimeError(f"unsafe path in the archive: {member.name}")
                if member.issym() or member.islnk():
                    continue  # /data holds no links; never follow one out of it
                key = _maildir_key(member.name)
                if key is not None:
                    if key in seen:
                        continue  # caught in new/ and cur/: one copy is enough
                    seen.add(key)
                tar.extract(member, root, set_attrs=True, numeric_owner=True)
                written += 1
                count += member.isreg()
    except (OSError, EOFError, RuntimeError, tarfile.TarError) as exc:
        if not written:
            raise
        raise RuntimeError(f"{exc}; {root} now holds part of the archive ({written} entries): do "
                           "not start the relay on it, run relayctl restore --force with a "
                           "complete archive") from None
    return count


def main(argv: list[str]) -> int:
    """``relayctl backup`` / ``relayctl restore [--force]`` (``argv[0]`` names which): the archive
    goes to stdout or comes from stdin, a count to stderr. Returns 0, 1 when it failed (the
    reason on stderr: an I/O error, a damaged archive, a /data that already holds a relay), 2
    when stdout is a terminal.
    """
    command = argv[0]
    try:
        if command == "backup":
            if sys.stdout.isatty():
                print("relayctl backup writes the archive to stdout: redirect it to a file",
                      file=sys.stderr)
                return 2
            n = backup(sys.stdout.buffer)
            print(f"backup: {n} files", file=sys.stderr)
        else:
            n = restore(sys.stdin.buffer, force="--force" in argv)
            print(f"restore: {n} files into {paths.DATA}", file=sys.stderr)
    except (OSError, EOFError, RuntimeError, tarfile.TarError) as exc:
        print(f"relayctl {command}: {exc}", file=sys.stderr)
        return 1
    return 0
