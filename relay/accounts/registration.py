"""Who may get a new account: the registration mode, and the one place that decides.

The mode is REGISTRATION (``open``, ``closed`` or ``invite``; ACCOUNT_CREATION=off
is its old name for ``closed``), unless the operator changed it on the running
relay with ``relayctl registration MODE``, which writes the mode to
/data/state/registration (``relayctl registration default`` removes the file).
A volume that still has the flag file of the old ``relayctl accounts off``
counts as ``closed`` until the mode is set again.

Both ways to a new account ask :func:`decide`: ``/new`` (relay.accounts.signup,
which hands invite-mode requests to relay.accounts.auth) and the first login
(relay.accounts.auth). Every decision is counted (:mod:`relay.accounts.events`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from relay import paths
from relay.accounts import events, invites, store
from relay.settings import Settings

log = logging.getLogger("relay.accounts.registration")

MODES = ("open", "closed", "invite")


def override() -> str | None:
    """The mode set with ``relayctl registration``, or None when the setting applies."""
    try:
        value = paths.REGISTRATION_OVERRIDE.read_text().strip()
    except (FileNotFoundError, PermissionError):
        value = ""
    if value in MODES:
        return value
    return "closed" if paths.NOCREATE_FLAG.exists() else None


def mode(settings: Settings) -> str:
    """The registration mode in force: ``open``, ``closed`` or ``invite``."""
    return override() or settings.registration


def source(settings: Settings) -> str:
    """Where :func:`mode` comes from, in words for ``relayctl``."""
    if override() is None:
        return f"REGISTRATION={settings.registration}" if settings.account_creation \
            else "ACCOUNT_CREATION=off"
    return f"set with relayctl registration; REGISTRATION={settings.registration}"


def set_override(value: str | None) -> None:
    """Set the mode of the running relay (None: back to the setting). Also removes
    the old ``relayctl accounts off`` flag, which this replaces."""
    if value is None:
        paths.REGISTRATION_OVERRIDE.unlink(missing_ok=True)
    else:
        if value not in MODES:
            raise ValueError(f"registration mode is one of {', '.join(MODES)}")
        tmp = paths.REGISTRATION_OVERRIDE.with_name(".registration.tmp")
        tmp.write_text(value + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, paths.REGISTRATION_OVERRIDE)
    paths.NOCREATE_FLAG.unlink(missing_ok=True)


@dataclass(frozen=True)
class Decision:
    """``allowed``; else ``reason`` (a key of events.REASONS), ``text`` for the client,
    and ``temporary`` (try again later) or not."""
    allowed: bool
    reason: str = ""
    text: str = ""
    temporary: bool = False


ALLOW = Decision(True)
TEXTS = {
    "closed": "This relay does not accept new accounts.",
    "invite_missing": "This relay accepts new accounts only with an invite: "
                      "ask its operator for an invite link.",
    "invite_unknown": "This invite is not valid (already used or mistyped): "
                      "ask the relay's operator for a new one.",
    "invite_expired": "This invite has expired: ask the relay's operator for a new one.",
    "disabled": "This address is not available.",
}


def decide(settings: Settings, via: str, token: str = "") -> Decision:
    """May an account be created now, through ``via`` (``"new"`` or ``"login"``), with
    the invite ``token`` (empty: none)? In invite mode an allowed decision has used
    the token up, so call this only once everything else about the new account is
    right. A refusal is counted here (events.refused); the caller counts the account
    it then creates (events.created)."""
    decision = _decide(settings, token)
    if not decision.allowed:
        events.refused(decision.reason, via)
    return decision


def _decide(settings: Settings, token: str) -> Decision:
    current = mode(settings)
    if current == "closed":
        return Decision(False, "closed", TEXTS["closed"])
    busy = store.creation_refusal(settings)
    if busy is not None:
        log.warning("no new account now: %s", busy[1])
        return Decision(False, busy[0], "This relay cannot create new accounts right now: "
                        "try again later.", temporary=True)
    if current == "open":
        return ALLOW
    if not token:
        return Decision(False, "invite_missing", TEXTS["invite_missing"])
    claimed = invites.claim(token)
    if claimed == "ok":
        return ALLOW
    reason = "invite_expired" if claimed == "expired" else "invite_unknown"
    return Decision(False, reason, TEXTS[reason])
