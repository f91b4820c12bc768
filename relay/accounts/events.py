"""Counts of what happened to new accounts, for metrics (issue 16 §4).

Every account the relay creates and every creation it refuses passes through
:func:`created` or :func:`refused`, with ``via`` = ``"new"`` (the ``/new`` web
endpoint) or ``"login"`` (create on first login) and, for a refusal, one of
:data:`REASONS`. The counts live in the process that counted them
(relay-auth creates every account; relay-signup refuses ``/new`` requests
itself only in closed mode and when the machine is short of resources);
:func:`snapshot` reads them. Nothing here ever holds an address or an IP.
"""

from __future__ import annotations

import threading
from collections import Counter

from relay import counters

REASONS = (
    "closed",           # REGISTRATION=closed (or relayctl registration closed)
    "invite_missing",   # invite mode, no invite given
    "invite_unknown",   # invite mode, token never made, already used or mistyped
    "invite_expired",   # invite mode, token past its validity
    "disabled",         # the address is disabled (relayctl account disable)
    "load", "memory", "disk",   # the machine is short of resources (SPEC §2)
    "bad_address",      # not a valid new address of this relay (length, characters)
    "short_password",   # below PASSWORD_MIN_LENGTH
)
VIAS = ("new", "login")

_lock = threading.Lock()
_counts: Counter[tuple[str, str, str]] = Counter()


def created(via: str) -> None:
    """One account was created through ``via`` (also counted for the metrics)."""
    with _lock:
        _counts["created", "", via] += 1
    counters.inc("chatmail_accounts_created_total", via=via)


def refused(reason: str, via: str) -> None:
    """A new account was refused through ``via`` for ``reason`` (one of REASONS)."""
    reason = reason if reason in REASONS else "other"
    with _lock:
        _counts["refused", reason, via] += 1
    counters.inc("chatmail_account_refusals_total", reason=reason)


def snapshot() -> dict[str, dict[str, int]]:
    """The counts so far in this process: ``{"created": {via: n},
    "refused": {"<reason>/<via>": n}}`` (only what happened at least once)."""
    with _lock:
        items = list(_counts.items())
    out: dict[str, dict[str, int]] = {"created": {}, "refused": {}}
    for (outcome, reason, via), n in items:
        out[outcome][via if outcome == "created" else f"{reason}/{via}"] = n
    return out
