"""What the hypothesis harnesses in tests/unit share: bounded, repeatable settings and a
way to run one server connection of a helper on a socketpair.

FUZZ_EXAMPLES=20000 runs a longer, randomized search (the default is quick and
repeatable: derandomized, no example database).
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile

# keep hypothesis' caches out of the working tree
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                      os.path.join(tempfile.gettempdir(), "relay-tests-hypothesis"))

from hypothesis import HealthCheck, settings  # noqa: E402

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 200)), deadline=None, database=None,
                derandomize="FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def talk(handler, data: bytes, chunks: list[int]) -> bytes:
    """Run one server connection on a socketpair: send ``data`` (cut at ``chunks``),
    close our side for writing, and return everything the server answered."""
    async def run() -> bytes:
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=theirs)
        server = asyncio.ensure_future(handler(reader, writer))
        loop = asyncio.get_running_loop()
        ours.setblocking(False)
        start = 0
        for cut in sorted(set(c % (len(data) + 1) for c in chunks)) + [len(data)]:
            await loop.sock_sendall(ours, data[start:cut])
            start = max(start, cut)
        ours.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := await asyncio.wait_for(loop.sock_recv(ours, 65536), 10):
            received += chunk
        await asyncio.wait_for(server, 10)  # raises if the handler raised
        ours.close()
        return received
    return asyncio.run(run())
