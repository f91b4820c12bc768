"""Create-on-login authentication, answered over UNIX sockets.

Two small protocols are served from one asyncio loop:

* Dovecot's dict proxy protocol, used by its passdb and userdb (and so by
  Postfix SMTP AUTH, which asks Dovecot). The passdb key carries the plain
  password, so that the first login for an unknown address of our domain can
  create the account. We answer with the stored salted hash; Dovecot compares.
* Postfix's socketmap protocol, for ``virtual_mailbox_maps``: does this
  mailbox exist? Unknown recipients are refused at RCPT time. Two more maps
  refuse a disabled address as sender and as recipient (relay.accounts.disabled).
* The same socketmap protocol on a socket of its own for relay.accounts.signup:
  in invite mode ``/new`` asks here, and the account is created at once, after
  its invite was used up (relay.accounts.invites).

Who may get a new account, by either way, is decided by relay.accounts.registration.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from relay import counters, logs, paths
from relay import settings as settings_mod
from relay.accounts import disabled, events, invites, registration
from relay.accounts import store as accounts
from relay.settings import Settings
from relay.wire import socketmap
from relay.wire.dovecot_dict import serve_dict_lines, tab_escape, tab_unescape
from relay.wire.listen import stream_server

log = logging.getLogger("relay-auth")
ACCOUNT_COUNT_INTERVAL = 60.0  # seconds: deletions (expiry, relayctl) show within this

INVITE_SWEEP_INTERVAL = 60.0  # seconds
# access(5) actions for a disabled address (RFC 3463: X.2.1 mailbox disabled,
# X.7.1 delivery not authorized).
DISABLED_REPLIES = {
    "disabled-recipient": "550 5.2.1 Mailbox disabled",
    "disabled-sender": "550 5.7.1 This account is disabled",
}


class Authority:
    """Answers lookups from the account store, creating accounts on first login."""

    def __init__(self, settings: Settings, root: Path = paths.ACCOUNTS,
                 disabled_root: Path = paths.DISABLED) -> None:
        self.settings = settings
        self.domain = settings.mail_domain
        self.root = root
        self.disabled_root = disabled_root

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
        if disabled.is_disabled(address, self.disabled_root):
            log.info("login refused: the address is disabled")
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
        """Create on first login. In invite mode the password starts with an invite
        token (relay.accounts.invites.split_password), which this login uses up."""
        s = self.settings
        token, rest = "", password
        if registration.mode(s) == "invite":
            token, rest = invites.split_password(password)
        why = accounts.check_new_address(
            address, self.domain, s.username_min_length, s.username_max_length)
        reason = "bad_address"
        if why is None and len(rest) < s.password_min_length:
            why, reason = f"password shorter than {s.password_min_length} characters", \
                "short_password"
        if why is not None:
            log.info("no account created: %s", why)
            events.refused(reason, "login")
            return None
        decision = registration.decide(s, "login", token)
        if not decision.allowed:
            log.info("no account created by a first login: %s", decision.reason)
            return None
        hashed = accounts.create(address, password, self.root)
        events.created("login")
        total = accounts.count(self.root)
        log.info("account created (%d in all)", total)
        counters.set_gauge("chatmail_accounts", total)
        return hashed

    def new_account(self, token: str) -> str:
        """``/new`` in invite mode (asked by relay.accounts.signup): use the invite
        ``token`` up and create a random account at once. The socketmap reply: ``OK``
        with the JSON ``{"email", "password"}``, ``PERM``/``TEMP`` with the reason key
        and the text for the client."""
        s = self.settings
        decision = registration.decide(s, "new", token)
        if not decision.allowed:
            kind = "TEMP" if decision.temporary else "PERM"
            return f"{kind} {decision.reason} {decision.text}"
        password = accounts.random_password(s.password_min_length)
        for _ in range(5):  # a random local part that exists already: draw again
            address = f"{accounts.random_localpart(s.username_max_length)}@{self.domain}"
            if accounts.read_hash(address, self.root) is None and \
                    not disabled.is_disabled(address, self.disabled_root):
                accounts.create(address, password, self.root)
                events.created("new")
                log.info("account created with an invite (%d in all)",
                         accounts.count(self.root))
                return "OK " + json.dumps({"email": address, "password": password})
        return "TEMP internal could not find a free address"

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
        """Answer one Postfix socketmap request ``"<map> <key>"`` (socketmap_table(5)):
        ``mailbox`` (``"OK exists"`` or ``"NOTFOUND "``: does the account exist?),
        ``disabled-sender`` (check_sasl_access: the login name) and ``disabled-recipient``
        (check_recipient_access: address, domain, ``user@``), which answer ``"OK <access(5)
        action>"`` for a disabled address; ``"PERM unknown map"`` for any other map,
        ``"TEMP internal error <Type>"`` when the lookup raised (Postfix retries).
        """
        name, _, key = request.partition(" ")
        try:
            if name == "mailbox":
                return "OK exists" if self.mailbox_exists(key) else "NOTFOUND "
            if name in DISABLED_REPLIES:
                found = "@" in key and disabled.is_disabled(key.lower(), self.disabled_root)
                return f"OK {DISABLED_REPLIES[name]}" if found else "NOTFOUND "
        except Exception as exc:
            log.exception("%s lookup failed", name)
            return f"TEMP internal error {type(exc).__name__}"
        return "PERM unknown map"

    def signup_request(self, request: str) -> str:
        """relay.accounts.signup's one request: ``invite <token>``."""
        name, _, token = request.partition(" ")
        if name != "invite":
            return "PERM unknown map"
        try:
            return self.new_account(token.strip())
        except Exception as exc:
            log.exception("account creation with an invite failed")
            return f"TEMP internal error {type(exc).__name__}"


async def serve_dict(authority: Authority, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    """Serve one Dovecot dict connection (passdb/userdb lookups) until the client closes it."""
    await serve_dict_lines(authority.dict_line, reader, writer, log)


async def serve_socketmap(authority: Authority, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
    """Serve one Postfix socketmap connection (netstring requests) until the client closes it."""
    await socketmap.serve_socketmap(authority.socketmap_request, reader, writer)


async def sweep_invites() -> None:
    """Forget expired invites within a minute of their expiry."""
    while True:
        removed = invites.sweep()
        if removed:
            log.info("%d expired invites deleted", removed)
        await asyncio.sleep(INVITE_SWEEP_INTERVAL)


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
        await stream_server(lambda r, w: socketmap.serve_socketmap(
            authority.signup_request, r, w), paths.SIGNUP_AUTH_SOCKET),
    ]
    log.info("serving %s, %s and %s", paths.AUTH_DICT_SOCKET, paths.ACCOUNTS_MAP_SOCKET,
             paths.SIGNUP_AUTH_SOCKET)
    await asyncio.gather(sweep_invites(), *(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
