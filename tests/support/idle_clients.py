"""Many IMAP clients that behave as Delta Chat does while it waits for mail: connect over
implicit TLS, LOGIN (the first login creates the account), SELECT INBOX, IDLE, and stay.

Used by the many-clients test (tests/e2e/test_many_clients.py) and the scale step of the
bench (bench/scale.py). One asyncio loop holds all connections; they are opened a few at
a time (``concurrency``) and stay open until :meth:`IdleClients.close`.

    async with IdleClients(host, 993) as clients:
        await clients.open(accounts)                 # [(address, password), ...]
        seen = await clients.wait_exists(client, after=t0, timeout=5)
"""

from __future__ import annotations

import asyncio
import resource
import secrets
import ssl
import time
from dataclasses import dataclass, field


def raise_fd_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to its hard limit (never anything on
    the host); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def random_accounts(domain: str, count: int, localpart_length: int = 9) -> list[tuple[str, str]]:
    """``count`` new (address, password) pairs of ``domain``; the relay creates each account
    at its first login. Local parts are ``localpart_length`` lowercase letters and digits."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return [("".join(secrets.choice(alphabet) for _ in range(localpart_length)) + "@" + domain,
             secrets.token_hex(12)) for _ in range(count)]


@dataclass
class IdleClient:
    """One connection in IDLE. ``exists`` holds (monotonic time, message count) for every
    untagged EXISTS received since IDLE began."""
    address: str
    password: str
    index: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    connect_s: float = 0.0
    idle_since: float = 0.0
    exists: list[tuple[float, int]] = field(default_factory=list)
    closed: str | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)


class IMAPError(Exception):
    """The server answered a command with NO or BAD, or the connection ended early."""


class IdleClients:
    """A pool of :class:`IdleClient` connections to ``host``:``port`` (implicit TLS)."""

    def __init__(self, host: str, port: int = 993, concurrency: int = 16,
                 timeout: float = 60) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.concurrency = concurrency
        self.clients: list[IdleClient] = []
        self._readers: list[asyncio.Task] = []
        self._tls = ssl.create_default_context()
        self._tls.check_hostname = False
        self._tls.verify_mode = ssl.CERT_NONE

    async def __aenter__(self) -> "IdleClients":
        raise_fd_limit()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def open(self, accounts: list[tuple[str, str]]) -> list[IdleClient]:
        """Connect, log in, SELECT INBOX and IDLE for every account, ``concurrency`` at a
        time, in the order given. Returns the new clients (also appended to ``clients``);
        raises :class:`IMAPError` or a socket error if any one fails."""
        gate = asyncio.Semaphore(self.concurrency)
        new = [IdleClient(a, p, len(self.clients) + i) for i, (a, p) in enumerate(accounts)]
        self.clients.extend(new)

        async def one(client: IdleClient) -> None:
            async with gate:
                await asyncio.wait_for(self._connect(client), self.timeout)
            self._readers.append(asyncio.create_task(self._read_idle(client)))

        await asyncio.gather(*(one(c) for c in new))
        return new

    async def _connect(self, client: IdleClient) -> None:
        started = time.monotonic()
        client.reader, client.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self._tls, limit=1 << 20)
        greeting = await client.reader.readline()
        if not greeting.startswith(b"* OK"):
            raise IMAPError(f"{client.address}: greeting {greeting!r}")
        await self._command(client, "a", f'LOGIN "{client.address}" "{client.password}"')
        await self._command(client, "b", "SELECT INBOX")
        client.writer.write(b"c IDLE\r\n")
        while True:
            line = await client.reader.readline()
            if not line:
                raise IMAPError(f"{client.address}: closed before IDLE")
            if line.startswith(b"+"):
                break
            if line.startswith(b"c "):
                raise IMAPError(f"{client.address}: IDLE refused: {line!r}")
        client.idle_since = time.monotonic()
        client.connect_s = client.idle_since - started

    @staticmethod
    async def _command(client: IdleClient, tag: str, command: str) -> None:
        assert client.reader and client.writer
        client.writer.write(f"{tag} {command}\r\n".encode())
        while True:
            line = await client.reader.readline()
            if not line:
                raise IMAPError(f"{client.address}: closed during {command.split()[0]}")
            if line.startswith(f"{tag} ".encode()):
                if not line.startswith(f"{tag} OK".encode()):
                    raise IMAPError(f"{client.address}: {command.split()[0]}: {line!r}")
                return

    async def _read_idle(self, client: IdleClient) -> None:
        assert client.reader
        try:
            while True:
                line = await client.reader.readline()
                if not line:
                    client.closed = "connection closed by the server"
                    break
                if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
                    client.exists.append((time.monotonic(), int(line.split()[1])))
                    client._changed.set()
                elif line.startswith(b"* BYE"):
                    client.closed = line.decode(errors="replace").strip()
        except (ConnectionError, ssl.SSLError) as exc:
            client.closed = f"{type(exc).__name__}: {exc}"
        client._changed.set()

    async def wait_exists(self, client: IdleClient, after: float, timeout: float) -> float | None:
        """Monotonic time of the first EXISTS ``client`` received at or after ``after``, waiting
        up to ``timeout`` seconds from now for it; None if none came (or the connection
        ended, see ``client.closed``)."""
        deadline = time.monotonic() + timeout
        while True:
            for when, _count in client.exists:
                if when >= after:
                    return when
            left = deadline - time.monotonic()
            if left <= 0 or client.closed:
                return None
            client._changed.clear()
            try:
                await asyncio.wait_for(client._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def open_count(self) -> int:
        """How many clients still hold an open connection."""
        return sum(1 for c in self.clients if c.writer is not None and c.closed is None)

    async def close(self) -> None:
        """End IDLE and log out where the connection still stands, then close everything."""
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for client in self.clients:
            if client.writer is None:
                continue
            try:
                if client.closed is None:
                    client.writer.write(b"DONE\r\nd LOGOUT\r\n")
                client.writer.close()
            except (ConnectionError, RuntimeError):
                pass
        await asyncio.gather(*(c.writer.wait_closed() for c in self.clients if c.writer),
                             return_exceptions=True)
        self._readers.clear()
