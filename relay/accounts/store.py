"""The account store: one small file per account below /data/accounts.

The file holds the salted password hash (SHA512-CRYPT, as Dovecot verifies it)
and its modification time is the day of the last login. Nothing else about a
user is stored.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import string
import warnings
from collections.abc import Iterator
from pathlib import Path

from relay import paths, system
from relay.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # Debian 12's Python 3.11 still has it; Dovecot verifies the result

LOCALPART_CHARS = re.compile(r"^[a-z0-9._-]+$")
RANDOM_ALPHABET = string.ascii_lowercase + string.digits


def is_local(address: str, domain: str) -> bool:
    """True when ``address`` can name an account of ``domain`` (and so a file name)."""
    localpart, at, addr_domain = address.rpartition("@")
    return (bool(at) and addr_domain == domain and bool(LOCALPART_CHARS.match(localpart))
            and localpart[0] not in ".-")


def account_file(address: str, root: Path = paths.ACCOUNTS) -> Path:
    """The account file of ``address`` below ``root``; raises ValueError for a name that is not a
    plain file name (contains "/" or starts with ".").
    """
    if "/" in address or address.startswith("."):
        raise ValueError("not an account name")
    return root / address


def hash_password(password: str) -> str:
    """``password`` as Dovecot's ``{SHA512-CRYPT}$6$<salt>$<hash>`` (crypt(3), random salt)."""
    return "{SHA512-CRYPT}" + crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def check_new_address(address: str, domain: str, min_len: int, max_len: int) -> str | None:
    """Why ``address`` cannot become an account of ``domain``, or None when it can."""
    if not is_local(address, domain) or address.rpartition("@")[0].endswith("."):
        return "not a valid address of this relay"
    localpart = address.rpartition("@")[0]
    if not min_len <= len(localpart) <= max_len:
        return f"local part must have {min_len} to {max_len} characters"
    return None


def creation_refusal(settings: Settings) -> tuple[str, str] | None:
    """Why the machine cannot take a new account right now, as (reason, text) with
    reason ``load``, ``memory`` or ``disk`` (SPEC §2); None when it can. The
    registration mode is relay.accounts.registration's business."""
    load = system.load_average()
    if load > settings.create_max_load:
        return "load", f"load average {load:.1f} is above {settings.create_max_load}"
    memory = system.available_memory()
    if memory < settings.create_min_free_memory:
        return "memory", f"only {memory >> 20} MiB of memory available"
    disk = system.free_disk(paths.DATA)
    if disk < settings.create_min_free_disk:
        return "disk", f"only {disk >> 20} MiB free on /data"
    return None


def read_hash(address: str, root: Path = paths.ACCOUNTS) -> str | None:
    """The stored hash of ``address`` (as :func:`hash_password` made it), or None when the account
    does not exist; raises ValueError for a name :func:`account_file` refuses.
    """
    try:
        return account_file(address, root).read_text().strip()
    except FileNotFoundError:
        return None


def create(address: str, password: str, root: Path = paths.ACCOUNTS) -> str:
    """Store a new account and return its hash; if it appeared meanwhile, return that one."""
    target = account_file(address, root)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
    hashed = hash_password(password)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(hashed + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, target)  # fails if a concurrent first login won the race
    except FileExistsError:
        return read_hash(address, root) or hashed
    finally:
        os.unlink(tmp)  # also when the disk is full: no half-written file stays behind
    return hashed


def record_login(address: str, root: Path = paths.ACCOUNTS) -> None:
    """Set the account file's mtime to now, at most once a day (day resolution is enough)."""
    path = account_file(address, root)
    try:
        last = datetime.date.fromtimestamp(path.stat().st_mtime)
    except FileNotFoundError:
        return
    if last != datetime.date.today():
        os.utime(path)


def names(root: Path = paths.ACCOUNTS) -> Iterator[str]:
    """The addresses of the accounts below ``root``: none when the folder is missing, and not the
    temporary dot-files of a creation in progress."""
    try:
        entries = os.scandir(root)
    except FileNotFoundError:
        return
    with entries:
        for entry in entries:
            if not entry.name.startswith("."):
                yield entry.name


def count(root: Path = paths.ACCOUNTS) -> int:
    """How many accounts exist below ``root`` (:func:`names`)."""
    return sum(1 for _ in names(root))


def other_domains(domain: str, root: Path = paths.ACCOUNTS) -> dict[str, int]:
    """The domains other than ``domain`` that accounts below ``root`` belong to, each with how
    many (empty when every account is of ``domain`` or there is none). Such accounts cannot log
    in: a volume of another relay, or MAIL_DOMAIN changed since they were made."""
    found: dict[str, int] = {}
    for name in names(root):
        _, at, of = name.rpartition("@")
        if at and of != domain:
            found[of] = found.get(of, 0) + 1
    return found


def random_localpart(length: int) -> str:
    """A random local part of ``length`` characters from ``a-z0-9`` (secrets module)."""
    return "".join(secrets.choice(RANDOM_ALPHABET) for _ in range(length))


def random_password(min_length: int) -> str:
    """A random password from ``a-z0-9``: ``min_length`` + 3 characters (SPEC §2, as the
    reference relay's /new in chatmaild newemail.py), but never fewer than 20.
    """
    return "".join(secrets.choice(RANDOM_ALPHABET) for _ in range(max(min_length + 3, 20)))
