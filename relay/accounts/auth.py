"""Create-on-login authentication, answered over UNIX sockets.

Two small protocols are served from one asyncio loop:

* Dovecot's dict proxy protocol, used by its passdb and userdb (and so by
  Postfix SMTP AUTH, which asks Dovecot). The passdb key carries the plain
  password, so that the first login for an unknown address of our domain can
  create the account. We answer with the stored salted hash; Dovecot compares.
* Postfix's socketmap protocol, for ``virtual_mailbox_maps``: does this
  mailbox exist? Unknown recipients are refused at RCPT time.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from relay import counters, logs, paths
from relay import settings as settings_mod
from relay.accounts import store as accounts
from relay.settings import Settings
from relay.wire import socketmap
from relay.wire.dovecot_dict import serve_dict_lines, tab_escape, tab_unescape
from relay.wire.listen import stream_server

log = logging.getLogger("relay-auth")
ACCOUNT_COUNT_INTERVAL = 60.0  # seconds: deletions (expiry, relayctl) show within this

class Authority:
    """Answers lookups from the account store, creating accounts on first login."""

    def __init__(self, settings: Settings, root: Path = paths.ACCOUNTS) -> None:
        self.settings = settings
        self.domain = settings.mail_domain
        self.root = root

    def passdb(self, address: str, password: str) -> dict | None:
        """Dovecot's passdb lookup for ``address`` with the password the client sent.

        Returns ``{"password": "{SHA512-CRYPT}$6$..."}``, the stored salted hash, which Dovecot
        compares with the password itself. An address of our domain without an account is created
        first (SPEC §2 "create on first login", as the reference relay's doveauth does) when its
        local part and the password pass the length rules and creation is allowed; an existing
        account gets its last-login day recorded. Returns None (Dovecot: unknown user, login
        refused) for another domain or a refused creation. Raises OSError when the account store
        cannot be read or written.
        """
        if not accounts.is_local(address, self.domain):
            return None
        hashed = accounts.read_hash(address, self.root)
        if hashed is None:
            hashed = self._create(address, password)
            if hashed is None:
                return None
        else:
            accounts.record_login(address, self.root)
        return {"password": hashed}

    def _create(self, address: str, password: str) -> str | None:
        s = self.settings
        reason = accounts.check_new_address(
            address, self.domain, s.username_min_length, s.username_max_length)
        if reason is None and len(password) < s.password_min_length:
            reason = f"password shorter than {s.password_min_length} characters"
        if reason is None:
            refusal = accounts.creation_refusal(s)
            if refusal is not None:
                log.warning("new account refused: %s", refusal)
                counters.inc("chatmail_account_refusals_total",
                             reason=counters.refusal_reason(refusal))
                return None
        if reason is not None:
            log.info("no account created: %s", reason)
            counters.inc("chatmail_account_refusals_total", reason=counters.refusal_reason(reason))
            return None
        hashed = accounts.create(address, password, self.root)
        total = accounts.count(self.root)
        log.info("account created (%d in all)", total)
        counters.inc("chatmail_accounts_created_total", via="login")
        counters.set_gauge("chatmail_accounts", total)
        return hashed

    def userdb(self, address: str) -> dict | None:
        """Dovecot's userdb lookup: ``{"home": "/data/mail/<address>", "uid": "vmail", "gid":
        "vmail"}`` for an existing account of our domain, None otherwise (nothing is created
        here).
        """
        if not accounts.is_local(address, self.domain):
            return None
        if accounts.read_hash(address, self.root) is None:
            return None
        return {"home": str(paths.MAIL / address), "uid": "vmail", "gid": "vmail"}

    def mailbox_exists(self, address: str) -> bool:
        """True when ``address`` (compared in lower case) is an existing account of our domain:
        Postfix's ``virtual_mailbox_maps`` asks this, so unknown recipients get a 550 at RCPT.
        """
        address = address.lower()
        return accounts.is_local(address, self.domain) and \
            accounts.read_hash(address, self.root) is not None

    # --- Dovecot dict protocol -------------------------------------------------

    def dict_line(self, line: str) -> str | None:
        """One command line in, one reply line out (None: no reply expected)."""
        if not line:
            return None
        cmd, rest = line[0], line[1:]
        if cmd == "H":
            return None
        if cmd == "L":
            key = tab_unescape(rest.split("\t", 1)[0])
            try:
                value = self.dict_lookup(key)
            except Exception as exc:  # never leave Dovecot waiting
                log.exception("lookup failed")
                return "F" + tab_escape(f"internal error: {type(exc).__name__}") + "\n"
            if value is None:
                return "N\n"
            return "O" + tab_escape(json.dumps(value)) + "\n"
        log.warning("unsupported dict command %r", cmd)
        return "F" + tab_escape(f"unsupported command {cmd}") + "\n"

    def dict_lookup(self, key: str) -> dict | None:
        """Answer one dict key: ``[shared/]passdb/<address>/<password>`` (see
        config/etc/dovecot/auth-dict.conf.ext.j2) or ``[shared/]userdb/<address>``; the reply
        dict, or None for "not found" (also for any other key).
        """
        key = key.removeprefix("shared/")
        kind, _, rest = key.partition("/")
        if kind == "passdb":
            address, _, password = rest.partition("/")
            return self.passdb(address, password)
        if kind == "userdb":
            return self.userdb(rest)
        return None

    # --- Postfix socketmap protocol ----------------------------------------------

    def socketmap_request(self, request: str) -> str:
        """Answer one Postfix socketmap request ``"<map> <key>"`` (socketmap_table(5)): ``"OK
        exists"`` or ``"NOTFOUND "`` for the ``mailbox`` map, ``"PERM unknown map"`` for any
        other, ``"TEMP internal error <Type>"`` when the lookup raised (Postfix retries).
        """
        name, _, key = request.partition(" ")
        if name != "mailbox":
            return "PERM unknown map"
        try:
            return "OK exists" if self.mailbox_exists(key) else "NOTFOUND "
        except Exception as exc:
            log.exception("mailbox lookup failed")
            return f"TEMP internal error {type(exc).__name__}"


async def serve_dict(authority: Authority, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    """Serve one Dovecot dict connection (passdb/userdb lookups) until the client closes it."""
    await serve_dict_lines(authority.dict_line, reader, writer, log)


async def serve_socketmap(authority: Authority, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
    """Serve one Postfix socketmap connection (netstring requests) until the client closes it."""
    await socketmap.serve_socketmap(authority.socketmap_request, reader, writer)


async def main() -> None:
    """relay-auth: read the settings, then serve the Dovecot dict socket
    (``paths.AUTH_DICT_SOCKET``) and the Postfix socketmap (``paths.ACCOUNTS_MAP_SOCKET``) for
    ever. A bad setting raises SettingError before anything listens.
    """
    settings = settings_mod.from_environment()
    logs.setup("relay-auth", settings.log_level, settings.log_format)
    counters.setup("relay-auth")
    authority = Authority(settings)
    counters.refresh_every(ACCOUNT_COUNT_INTERVAL, "chatmail_accounts", accounts.count)
    servers = [
        await stream_server(lambda r, w: serve_dict(authority, r, w), paths.AUTH_DICT_SOCKET),
        await stream_server(lambda r, w: serve_socketmap(authority, r, w),
                            paths.ACCOUNTS_MAP_SOCKET),
    ]
    log.info("serving %s and %s", paths.AUTH_DICT_SOCKET, paths.ACCOUNTS_MAP_SOCKET)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
