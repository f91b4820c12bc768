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
import os
import re
from collections.abc import Callable
from pathlib import Path

from . import accounts, logs, paths, settings as settings_mod

log = logging.getLogger("relay-auth")

_UNESCAPE = {"0": "\0", "1": "\1", "t": "\t", "r": "\r", "n": "\n", "l": "\n"}


def tab_unescape(text: str) -> str:
    if "\1" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\1" and i + 1 < len(text):
            out.append(_UNESCAPE.get(text[i + 1], text[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def tab_escape(text: str) -> str:
    return (text.replace("\1", "\1" "1").replace("\t", "\1t")
            .replace("\r", "\1r").replace("\n", "\1n").replace("\0", "\1" "0"))


class Authority:
    """Answers lookups from the account store, creating accounts on first login."""

    def __init__(self, settings: dict, root: Path = paths.ACCOUNTS) -> None:
        self.settings = settings
        self.domain = settings["MAIL_DOMAIN"]
        self.root = root

    def passdb(self, address: str, password: str) -> dict | None:
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
            address, self.domain, s["USERNAME_MIN_LENGTH"], s["USERNAME_MAX_LENGTH"])
        if reason is None and len(password) < s["PASSWORD_MIN_LENGTH"]:
            reason = f"password shorter than {s['PASSWORD_MIN_LENGTH']} characters"
        if reason is None:
            refusal = accounts.creation_refusal(s)
            if refusal is not None:
                log.warning("new account refused: %s", refusal)
                return None
        if reason is not None:
            log.info("no account created: %s", reason)
            return None
        hashed = accounts.create(address, password, self.root)
        log.info("account created (%d in all)", accounts.count(self.root))
        return hashed

    def userdb(self, address: str) -> dict | None:
        if not accounts.is_local(address, self.domain):
            return None
        if accounts.read_hash(address, self.root) is None:
            return None
        return {"home": str(paths.MAIL / address), "uid": "vmail", "gid": "vmail"}

    def mailbox_exists(self, address: str) -> bool:
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
        name, _, key = request.partition(" ")
        if name != "mailbox":
            return "PERM unknown map"
        try:
            return "OK exists" if self.mailbox_exists(key) else "NOTFOUND "
        except Exception as exc:
            log.exception("mailbox lookup failed")
            return f"TEMP internal error {type(exc).__name__}"


def netstring(text: str) -> bytes:
    data = text.encode()
    return b"%d:%s," % (len(data), data)


async def serve_dict_lines(handle: Callable[[str], str | None], reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, logger: logging.Logger = log) -> None:
    """One connection of Dovecot's dict protocol: each request line goes to ``handle``,
    whose reply (None: the command has none) is written back."""
    try:
        while line := await reader.readline():
            reply = handle(line.decode("utf-8", "replace").rstrip("\n"))
            if reply is not None:
                writer.write(reply.encode())
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    except ValueError:  # a line beyond the stream's limit: the protocol is out of step
        logger.warning("dict request line too long; connection closed")
    finally:
        writer.close()


async def serve_dict(authority: Authority, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
    await serve_dict_lines(authority.dict_line, reader, writer)


MAX_NETSTRING = 100_000
_NETSTRING_LENGTH = re.compile(rb"0|[1-9][0-9]{0,5}")


async def read_netstring(reader: asyncio.StreamReader) -> bytes | None:
    """The payload of the next netstring (``<length>:<payload>,``), or None at the end
    of the stream and for anything that is not a canonical netstring of at most
    MAX_NETSTRING bytes."""
    try:
        length = (await reader.readuntil(b":"))[:-1]
        if not _NETSTRING_LENGTH.fullmatch(length) or int(length) > MAX_NETSTRING:
            return None
        payload = await reader.readexactly(int(length) + 1)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    return payload[:-1] if payload[-1:] == b"," else None


async def serve_socketmap(authority: Authority, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
    try:
        while (payload := await read_netstring(reader)) is not None:
            reply = authority.socketmap_request(payload.decode("utf-8", "replace"))
            writer.write(netstring(reply))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def start_unix_server(handler, path: Path) -> asyncio.AbstractServer:
    path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(handler, path=str(path))
    os.chmod(path, 0o666)  # access is governed by the directory's group
    return server


async def main() -> None:
    logs.setup("relay-auth")
    authority = Authority(settings_mod.load(os.environ))
    servers = [
        await start_unix_server(lambda r, w: serve_dict(authority, r, w), paths.AUTH_DICT_SOCKET),
        await start_unix_server(lambda r, w: serve_socketmap(authority, r, w),
                                paths.ACCOUNTS_MAP_SOCKET),
    ]
    log.info("serving %s and %s", paths.AUTH_DICT_SOCKET, paths.ACCOUNTS_MAP_SOCKET)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main())
