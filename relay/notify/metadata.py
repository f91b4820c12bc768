"""IMAP METADATA and new-mail events from Dovecot, and the push notifications they cause.

Dovecot talks to this helper with its dict protocol over one UNIX socket, as
two dicts (the name after the socket path in dovecot.conf):

``metadata`` (``mail_attribute_dict``): every METADATA entry of every user.
  Only two kinds exist here, and nothing else can be stored:

  * ``/private/devicetoken`` of a mailbox (dict key ``priv/<guid>/devicetoken``):
    SETMETADATA adds a device token to the user's set (relay.push.TokenStore),
    setting it to NIL removes the user's tokens, GETMETADATA lists them;
  * server entries ``/shared/vendor/deltachat/<name>`` (dict key
    ``shared/<INBOX guid>/vendor/vendor.dovecot/pvt/server/vendor/deltachat/<name>``),
    read-only and computed here: ``turn`` (time-limited TURN credentials),
    ``maxsmtprecipients``, ``irohrelay`` and ``appversions`` (the operator's index,
    checked at start by relay.notify.appversions). (``/shared/admin`` comes from
    Dovecot's own ``mail_server_admin``.)

``newmail`` (the notify_status plugin, loaded for LMTP only): after each
  delivery into INBOX Dovecot sets ``priv/status/INBOX`` for the recipient,
  in an asynchronous commit; the answer only has to wait until the pending
  notifications are written to /data/push/queue. relay.push.Notifier sends
  them on its own schedule, so the gateway never holds up delivery.

Runs as its own user (relaypush), which owns /data/push and the TURN secret.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from relay import counters, logs, paths
from relay import settings as settings_mod
from relay.accounts import store as accounts
from relay.notify import appversions, push, turn
from relay.settings import Settings
from relay.wire.dovecot_dict import serve_dict_lines, tab_escape, tab_unescape
from relay.wire.listen import stream_server
from relay.wire.tls import client_context

log = logging.getLogger("relay-metadata")
PENDING_INTERVAL = 5.0  # seconds between updates of the chatmail_push_pending gauge

DEVICETOKEN_KEY = re.compile(r"^priv/[0-9a-f]{32}/devicetoken$")
SERVER_KEY = re.compile(
    r"^shared/[0-9a-f]{32}/vendor/vendor\.dovecot/pvt/server/vendor/deltachat/([a-z0-9]+)$")
STATUS_KEY = re.compile(r"^priv/status/INBOX$")
NEWMAIL_DICT = "newmail"
MAX_OPS = 100  # per transaction; Dovecot sends one or two


class CommitError(Exception):
    """The transaction cannot be stored; the text goes back to Dovecot."""


class MetadataService:
    """The dict behind Dovecot's IMAP METADATA and new-mail events (see the module text): device
    tokens in ``tokens``, new-mail notifications through ``notifier`` (None: none sent), the
    server entries ``maxsmtprecipients``, ``irohrelay`` (when set) and ``turn`` (when TURN is on
    and ``turn_secret`` is given).
    """
    def __init__(self, settings: Settings, tokens: push.TokenStore,
                 notifier: push.Notifier | None, turn_secret: str = "") -> None:
        self.domain = settings.mail_domain
        self.tokens = tokens
        self.notifier = notifier
        self.server_entries: dict[str, Any] = {
            "maxsmtprecipients": str(settings.max_recipients),
        }
        if settings.iroh_relay_url:
            self.server_entries["irohrelay"] = settings.iroh_relay_url
        index = appversions.served_value()
        if index is not None:
            self.server_entries["appversions"] = index
        self.turn_secret = turn_secret if settings.turn else ""

    def _user(self, user: str) -> str:
        if not accounts.is_local(user, self.domain):
            raise CommitError("not a user of this relay")
        return user

    def lookup(self, key: str, user: str) -> str | None:
        """The value of one dict ``key`` for ``user``: a server entry (``turn`` credentials made
        now, ``maxsmtprecipients``, ``irohrelay``), or for a user of this relay its device tokens
        joined by spaces; None (no such entry) for anything else and for a user without tokens.
        """
        match = SERVER_KEY.match(key)
        if match:
            name = match.group(1)
            if name == "turn":
                return turn.metadata_value(self.domain, self.turn_secret)
            return self.server_entries.get(name)
        if DEVICETOKEN_KEY.match(key) and accounts.is_local(user, self.domain):
            return " ".join(self.tokens.tokens(user)) or None
        return None

    def commit(self, dict_name: str, user: str, ops: list[tuple[str, str, str]]) -> None:
        """Apply one transaction's operations, or raise CommitError having applied none."""
        if dict_name == NEWMAIL_DICT:
            if any(op == "set" and STATUS_KEY.match(key) for op, key, _ in ops):
                count = self.notifier.new_message(self._user(user)) if self.notifier else 0
                log.debug("new message: %d notifications queued", count)
            return
        for op, key, value in ops:
            if not DEVICETOKEN_KEY.match(key):
                raise CommitError("only /private/devicetoken can be stored")
            if op == "set" and not push.valid_token(value):
                raise CommitError("a device token is 1 to 4096 printable characters "
                                  "without spaces")
        address = self._user(user)
        for op, _key, value in ops:
            if op == "set":
                self.tokens.add(address, value)
                log.info("device token stored (%d for this account)",
                         len(self.tokens.tokens(address)))
            else:
                self.tokens.remove_all(address)
                log.info("device tokens removed")


@dataclass
class Transaction:
    """One open dict transaction of a connection: the ``user`` it is for, its ``ops`` as ``(op, key,
    value)`` with op ``"set"`` or ``"unset"``, and ``failed``, the error text once a command in
    it was refused (the commit then fails with it).
    """
    user: str
    ops: list[tuple[str, str, str]] = field(default_factory=list)
    failed: str | None = None


class DictConnection:
    """One Dovecot dict client: its dict name and open transactions."""

    def __init__(self, service: MetadataService) -> None:
        self.service = service
        self.dict_name = ""
        self.transactions: dict[str, Transaction] = {}

    def handle(self, line: str) -> str | None:
        """One command line in, the reply (None: the command has none)."""
        if not line:
            return None
        cmd, args = line[0], [tab_unescape(a) for a in line[1:].split("\t")]
        if cmd == "H":
            self.dict_name = args[4] if len(args) > 4 else ""
            return None
        if cmd == "L":
            try:
                value = self.service.lookup(args[0], args[1] if len(args) > 1 else "")
            except Exception as exc:  # never leave Dovecot waiting
                log.exception("lookup failed")
                return "F" + tab_escape(f"internal error: {type(exc).__name__}") + "\n"
            return "N\n" if value is None else "O" + tab_escape(value) + "\n"
        if cmd == "I":
            return "\n"  # nothing to list: an empty iteration
        tid = args[0]
        if cmd == "B":
            self.transactions[tid] = Transaction(args[1] if len(args) > 1 else "")
            return None
        txn = self.transactions.get(tid)
        if cmd in ("C", "D"):
            self.transactions.pop(tid, None)
            if txn is None:
                return f"F{tid}\tunknown transaction\n"
            error = txn.failed
            if error is None:
                try:
                    self.service.commit(self.dict_name, txn.user, txn.ops)
                except CommitError as exc:
                    error = str(exc)
                except Exception as exc:
                    log.exception("commit failed")
                    error = f"internal error: {type(exc).__name__}"
            if error is not None:
                log.info("metadata change refused: %s", error)
                return f"F{tid}\t{tab_escape(error)}\n"
            return f"O{tid}\n"
        if cmd == "R":
            self.transactions.pop(tid, None)
            return None
        if txn is None:
            return None
        if cmd == "S" and len(args) >= 3:
            txn.ops.append(("set", args[1], args[2]))
        elif cmd == "U" and len(args) >= 2:
            txn.ops.append(("unset", args[1], ""))
        elif cmd == "T":
            pass  # a timestamp for the changes: nothing to keep
        else:
            txn.failed = f"unsupported command {cmd}"
        if len(txn.ops) > MAX_OPS:
            txn.failed = "too many changes in one transaction"
            txn.ops.clear()
        return None


async def serve(service: MetadataService, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    """Serve one Dovecot dict connection (METADATA or new-mail events) until it closes."""
    await serve_dict_lines(DictConnection(service).handle, reader, writer, log)


class CountedNotifier(push.Notifier):
    """push.Notifier whose attempts are counted in ``chatmail_push_notifications_total``
    (relay.counters): sent, retry, dropped, and given_up for a retry past
    push.GIVE_UP_AFTER (the rule Notifier._attempt applies right after)."""

    async def _send(self, item: push.Pending) -> str:
        outcome = await super()._send(item)
        counters.inc("chatmail_push_notifications_total", outcome=outcome)
        if outcome == "retry" and self.clock() - item.since > push.GIVE_UP_AFTER:
            counters.inc("chatmail_push_notifications_total", outcome="given_up")
        return outcome


async def main() -> None:
    """relay-metadata: read the settings, restore the pending notifications from /data/push/queue,
    then serve ``paths.METADATA_SOCKET`` and send notifications for ever.
    """
    settings = settings_mod.from_environment()
    logs.setup("relay-metadata", settings.log_level, settings.log_format)
    counters.setup("relay-metadata")
    tokens = push.TokenStore(paths.PUSH_TOKENS)
    gateway = push.Gateway(settings.push_gateway_url, client_context())
    notifier = CountedNotifier(tokens, push.Spool(paths.PUSH_QUEUE), gateway.post)
    counters.refresh_every(PENDING_INTERVAL, "chatmail_push_pending", lambda: len(notifier.pending))
    restored = notifier.restore()
    secret = turn.read_secret(paths.TURN_SECRET) if settings.turn else ""
    if settings.turn and not secret:
        log.error("no TURN secret in %s: no turn metadata is offered", paths.TURN_SECRET)
    service = MetadataService(settings, tokens, notifier, secret)
    server = await stream_server(lambda r, w: serve(service, r, w), paths.METADATA_SOCKET)
    log.info("serving %s; %d pending notifications from before", paths.METADATA_SOCKET, restored)
    await asyncio.gather(server.serve_forever(), notifier.run())


if __name__ == "__main__":
    asyncio.run(main())
