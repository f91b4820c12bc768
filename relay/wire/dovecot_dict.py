"""Dovecot's dict proxy protocol, the server side (``proxy:<socket>:<name>`` dicts).

Dovecot sends one command per line: ``H`` (hello), ``L<key>`` (lookup),
``B``/``S``/``C`` (transaction begin, set, commit) and others; fields are
separated by TAB and escaped with ``\\x01`` (Dovecot's ``str_tabescape``). Used by
relay-auth (passdb and userdb lookups) and relay-metadata (METADATA entries and
new-mail events).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

_UNESCAPE = {"0": "\0", "1": "\1", "t": "\t", "r": "\r", "n": "\n", "l": "\n"}


def tab_unescape(text: str) -> str:
    """Undo Dovecot's ``str_tabescape``: ``\\x01t`` -> TAB, ``\\x01n`` -> LF, ...;
    an unknown escape stands for the character itself."""
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
    """Dovecot's ``str_tabescape``: a value that may hold TAB, CR, LF, NUL or ``\\x01``."""
    return (text.replace("\1", "\1" "1").replace("\t", "\1t")
            .replace("\r", "\1r").replace("\n", "\1n").replace("\0", "\1" "0"))


async def serve_dict_lines(handle: Callable[[str], str | None], reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter, logger: logging.Logger) -> None:
    """One connection of Dovecot's dict protocol: each request line (without its LF)
    goes to ``handle``, whose reply line (None: the command has none) is written back.

    A line beyond the reader's limit means the peer is out of step with the
    protocol: the connection is closed with a warning on ``logger``."""
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
