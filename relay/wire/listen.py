"""Listening UNIX sockets for our helpers.

Every helper listens on a UNIX socket in a directory of its own below
``/run/relay``; the socket itself is mode 0666 and who may connect is decided by
the directory's group (``relay.boot.datadir.RUN_DIRS``), so exactly one daemon
reaches each helper.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

# asyncio is imported where a server starts: the threaded HTTP helpers (relay.wire.unixhttp)
# use only the two plain functions, and asyncio costs them ~3 MiB of memory each.
if TYPE_CHECKING:
    import asyncio

    StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def replace_socket(path: Path) -> None:
    """Remove a socket left by an earlier run of the helper (none: nothing happens)."""
    path.unlink(missing_ok=True)


def open_to_group(path: Path) -> None:
    """Let the socket's directory alone decide who connects (mode 0666 on the socket)."""
    os.chmod(path, 0o666)


async def stream_server(handler: StreamHandler, path: Path,
                        limit: int = 64 * 1024) -> asyncio.AbstractServer:
    """An asyncio stream server on ``path``; ``limit`` bounds one read line in bytes."""
    import asyncio

    replace_socket(path)
    server = await asyncio.start_unix_server(handler, path=str(path), limit=limit)
    open_to_group(path)
    return server


async def protocol_server(factory: Callable[[], Any], path: Path) -> asyncio.AbstractServer:
    """An asyncio protocol server (e.g. aiosmtpd's SMTP) on ``path``."""
    import asyncio

    replace_socket(path)
    server = await asyncio.get_running_loop().create_unix_server(factory, path=str(path))
    open_to_group(path)
    return server
