"""Disabled addresses: one empty marker file per address below /data/disabled.

The marker holds nothing but the address (its name): no reason, no time (its
modification time is set to the epoch), no IP address. While it exists the
address cannot log in, send or receive, and no account can be created for it,
also after its account was deleted for inactivity; ``relayctl account enable``
removes it, ``relayctl account delete`` removes it with the account. (The
reference relay's experimental per-account block is a ``DISABLED`` file in the
account's mailbox directory, which makes filtermail drop mail silently and
does not stop logins; reference-facts.md E, chatmail/filtermail PR #108.)
"""

from __future__ import annotations

import os
from pathlib import Path

from relay import paths


def _marker(address: str, root: Path | None) -> Path:
    if not address or "/" in address or address.startswith("."):
        raise ValueError("not an address")
    return (paths.DISABLED if root is None else root) / address.lower()


def is_disabled(address: str, root: Path | None = None) -> bool:
    """Whether ``address`` (any case) is disabled."""
    try:
        return _marker(address, root).exists()
    except ValueError:
        return False


def disable(address: str, root: Path | None = None,
            owner: tuple[int, int] | None = None) -> bool:
    """Disable ``address``; False when it already was. ``owner``: (uid, gid) of the marker."""
    marker = _marker(address, root)
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    if owner is not None:
        os.chown(marker, *owner)
    os.utime(marker, (0, 0))  # no time of disabling is kept
    return True


def enable(address: str, root: Path | None = None) -> bool:
    """Remove the marker of ``address``; False when it was not disabled."""
    try:
        _marker(address, root).unlink()
        return True
    except FileNotFoundError:
        return False


def addresses(root: Path | None = None) -> list[str]:
    """Every disabled address, sorted."""
    try:
        return sorted(e.name for e in os.scandir(paths.DISABLED if root is None else root)
                      if not e.name.startswith("."))
    except FileNotFoundError:
        return []


def count(root: Path | None = None) -> int:
    """How many addresses are disabled (for status and metrics)."""
    return len(addresses(root))
