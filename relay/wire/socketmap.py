"""Postfix's socketmap protocol, the server side (``socketmap:unix:<path>:<name>``).

Requests and replies are netstrings (``<length>:<payload>,``); a request is
``<map name> <key>``, a reply ``OK <value>``, ``NOTFOUND ``, ``TEMP <reason>`` or
``PERM <reason>`` (Postfix's socketmap_table(5)).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the blocking client (relay-signup's) runs without asyncio: 3 MiB less
    import asyncio

MAX_NETSTRING = 100_000  # bytes of payload; Postfix's own limit is the same
_NETSTRING_LENGTH = re.compile(rb"0|[1-9][0-9]{0,5}")


def netstring(text: str) -> bytes:
    """``text`` as a netstring of its UTF-8 bytes."""
    data = text.encode()
    return b"%d:%s," % (len(data), data)


async def read_netstring(reader: asyncio.StreamReader) -> bytes | None:
    """The payload of the next netstring (``<length>:<payload>,``), or None at the end
    of the stream and for anything that is not a canonical netstring of at most
    MAX_NETSTRING bytes."""
    import asyncio  # already loaded: only an asyncio server gets here

    try:
        length = (await reader.readuntil(b":"))[:-1]
        if not _NETSTRING_LENGTH.fullmatch(length) or int(length) > MAX_NETSTRING:
            return None
        payload = await reader.readexactly(int(length) + 1)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    return payload[:-1] if payload[-1:] == b"," else None


async def serve_socketmap(handle: Callable[[str], str], reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
    """One connection: each request goes to ``handle``, whose reply is sent back; the
    connection ends at the first request that is not a canonical netstring."""
    try:
        while (payload := await read_netstring(reader)) is not None:
            writer.write(netstring(handle(payload.decode("utf-8", "replace"))))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


def query(path: str, request: str, timeout: float = 10.0) -> str:
    """The client side, blocking: send one request (``<map name> <key>``) over the UNIX
    socket ``path`` and return the reply (``OK <value>``, ``NOTFOUND ``, ...).
    Raises OSError when the server cannot be reached or answers nothing usable."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(netstring(request))
        data = b""
        while True:
            length, colon, rest = data.partition(b":")
            if colon and _NETSTRING_LENGTH.fullmatch(length) and \
                    len(rest) >= int(length) + 1:
                if rest[int(length):int(length) + 1] != b",":
                    raise OSError("malformed socketmap reply")
                return rest[:int(length)].decode("utf-8", "replace")
            if len(data) > MAX_NETSTRING + 16:
                raise OSError("socketmap reply too long")
            chunk = sock.recv(4096)
            if not chunk:
                raise OSError("socketmap server closed the connection")
            data += chunk
