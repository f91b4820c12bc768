"""Push tokens of the users' devices and the notifications sent for them (SPEC §5).

* ``TokenStore``: one file per account below /data/push/tokens, one line per
  device token: ``<unix time of the last SETMETADATA> <token>``. Delta Chat
  stores its (encrypted, ``openpgp:...``) token again at every start of the
  app, so a token not stored again for TOKEN_MAX_AGE is dropped; so is one
  the gateway answers with 410 Gone.
* ``Notifier``: for a new message, one pending notification per token, kept
  as a small file below /data/push/queue until the gateway accepted it, so
  that it survives a restart. A token with a notification already pending
  gets no second one (one wake-up fetches every new message). Failed
  attempts are retried with growing back-off (``retry_delay``) until
  GIVE_UP_AFTER has passed since the last new message.

The HTTP requests run in a few worker threads (http.client, TLS checked
against Debian's CAs plus EXTRA_CA_FILE), never in the path of delivery.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import http.client
import json
import logging
import os
import random
import re
import secrets
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from relay.wire.backoff import exponential

log = logging.getLogger("relay-metadata")

DAY = 86400
TOKEN_MAX_AGE = 90 * DAY
MAX_TOKENS = 16            # per account; beyond it the least recently stored goes
TOKEN_RE = re.compile(r"^[\x21-\x7e]{1,4096}$")  # printable ASCII, no spaces

FIRST_RETRY = 2.0          # seconds after the first failure
RETRY_FACTOR = 3.0
MAX_RETRY = 3600.0
GIVE_UP_AFTER = 4 * 3600   # seconds after the last new message
HTTP_TIMEOUT = 20.0
WORKERS = 4


def valid_token(token: str) -> bool:
    """True for a token we store: 1 to 4096 printable ASCII characters, no spaces."""
    return bool(TOKEN_RE.fullmatch(token))


def retry_delay(failures: int, jitter: float = 0.0) -> float:
    """Seconds to wait after the ``failures``-th failed attempt (1, 2, ...):
    2, 6, 18, 54 s, ... up to an hour; ``jitter`` in [-1, 1] spreads it by up to 10 %."""
    return exponential(failures, FIRST_RETRY, MAX_RETRY, RETRY_FACTOR) * (1 + 0.1 * jitter)


def schedule(give_up_after: float = GIVE_UP_AFTER) -> list[float]:
    """The times (seconds after the first attempt) of every attempt without jitter."""
    times, t, failures = [0.0], 0.0, 0
    while True:
        failures += 1
        t += retry_delay(failures)
        if t > give_up_after:
            return times
        times.append(t)


# --- device tokens -------------------------------------------------------------

class TokenStore:
    """The device tokens, one file per account below ``root``: lines ``<unix time> <token>``, at
    most MAX_TOKENS, dropped TOKEN_MAX_AGE s after last stored; bad names: ValueError."""
    def __init__(self, root: Path) -> None:
        self.root = root

    def _file(self, address: str) -> Path:
        if "/" in address or address.startswith(".") or not address:
            raise ValueError("not an account name")
        return self.root / address

    def _read(self, address: str) -> dict[str, int]:
        try:
            text = self._file(address).read_text()
        except FileNotFoundError:
            return {}
        tokens: dict[str, int] = {}
        for line in text.splitlines():
            stamp, _, token = line.partition(" ")
            if stamp.isdigit() and valid_token(token):
                tokens[token] = int(stamp)
        return tokens

    def _write(self, address: str, tokens: dict[str, int]) -> None:
        path = self._file(address)
        if not tokens:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            for token, stamp in sorted(tokens.items(), key=lambda item: item[1]):
                f.write(f"{stamp} {token}\n")
        os.replace(tmp, path)

    def tokens(self, address: str, now: float | None = None) -> list[str]:
        """The account's current tokens, oldest first; stale ones are removed."""
        now = time.time() if now is None else now
        stored = self._read(address)
        fresh = {t: s for t, s in stored.items() if now - s <= TOKEN_MAX_AGE}
        if len(fresh) != len(stored):
            self._write(address, fresh)
        return [t for t, _ in sorted(fresh.items(), key=lambda item: item[1])]

    def add(self, address: str, token: str, now: float | None = None) -> None:
        """Store or renew ``token`` at Unix time ``now``; ValueError for a bad token."""
        if not valid_token(token):
            raise ValueError("a device token is 1 to 4096 printable characters without spaces")
        now = int(time.time() if now is None else now)
        tokens = {t: s for t, s in self._read(address).items() if now - s <= TOKEN_MAX_AGE}
        tokens[token] = now
        while len(tokens) > MAX_TOKENS:
            del tokens[min(tokens, key=tokens.__getitem__)]
        self._write(address, tokens)

    def remove(self, address: str, token: str) -> bool:
        """Remove one token (the gateway said 410 Gone); True when it was there."""
        tokens = self._read(address)
        if tokens.pop(token, None) is None:
            return False
        self._write(address, tokens)
        return True

    def remove_all(self, address: str) -> None:
        """Remove every token of ``address`` (SETMETADATA to NIL, or the account is gone)."""
        self._file(address).unlink(missing_ok=True)


# --- pending notifications -------------------------------------------------------

@dataclass
class Pending:
    """A notification the gateway has not accepted yet: ``key`` (:func:`pending_key`, its file
    name), ``address``, ``token``, ``since`` (Unix time of the latest new message), the
    ``failures`` so far, when it is ``due``; ``in_flight``/``again`` live in memory only."""
    key: str
    address: str
    token: str
    since: float          # the latest new message this notification stands for
    failures: int = 0
    due: float = 0.0
    in_flight: bool = False
    again: bool = False   # a new message arrived while a request was under way

    def to_json(self) -> str:
        """The part that survives a restart, as JSON: address, token, since, failures."""
        return json.dumps({"address": self.address, "token": self.token,
                           "since": self.since, "failures": self.failures})


def pending_key(address: str, token: str) -> str:
    """The spool name for (``address``, ``token``): 40 hex digits of SHA-256 (one per token)."""
    return hashlib.sha256(f"{address}\0{token}".encode()).hexdigest()[:40]


class Spool:
    """Pending notifications as files: written before the new-mail event is answered."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, item: Pending) -> None:
        """Write ``item`` to its file atomically (a dot-file, then rename; mode 0600)."""
        tmp = self.root / f".{item.key}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(item.to_json())
        os.replace(tmp, self.root / item.key)

    def delete(self, item: Pending) -> None:
        """Remove ``item``'s file (no error when it is already gone)."""
        (self.root / item.key).unlink(missing_ok=True)

    def load(self) -> list[Pending]:
        """Every pending notification on file; half-written or unreadable files are deleted."""
        items = []
        for entry in os.scandir(self.root):
            path = Path(entry.path)
            if entry.name.startswith("."):
                path.unlink(missing_ok=True)  # an interrupted write
                continue
            try:
                data = json.loads(path.read_text())
                item = Pending(entry.name, str(data["address"]), str(data["token"]),
                               float(data["since"]), int(data["failures"]))
                if item.key != pending_key(item.address, item.token):
                    raise ValueError("name does not match content")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("dropping unreadable pending notification %s: %s", entry.name, exc)
                path.unlink(missing_ok=True)
                continue
            items.append(item)
        return items


# --- HTTP ------------------------------------------------------------------------

class Gateway:
    """POSTs a token to the gateway URL; one kept-alive connection per worker thread."""

    def __init__(self, url: str, context: ssl.SSLContext, timeout: float = HTTP_TIMEOUT) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.context = context
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                   context=self.context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
        self.local.conn = None

    def _request(self, token: str) -> int:
        conn = self._connection()
        try:
            conn.request("POST", self.path, body=token.encode(),
                         headers={"Content-Type": "text/plain; charset=utf-8"})
            response = conn.getresponse()
            response.read()
        except BaseException:
            self._drop()
            raise
        if response.will_close:
            self._drop()
        return response.status

    def post(self, token: str) -> int:
        """The HTTP status; raises OSError/HTTPException when there is none."""
        reused = getattr(self.local, "conn", None) is not None and self.local.conn.sock is not None
        try:
            return self._request(token)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
        # The server closed the kept-alive connection meanwhile: once more, on a new one.
        return self._request(token)


# --- the notifier ----------------------------------------------------------------

class Notifier:
    """Sends pending notifications: ``post`` (token -> HTTP status, blocking; ``workers`` threads),
    ``spool`` (kept across restarts), ``clock`` (Unix s) and ``rng`` (jitter)."""
    def __init__(self, tokens: TokenStore, spool: Spool, post, workers: int = WORKERS,
                 clock=time.time, rng: random.Random | None = None) -> None:
        self.tokens = tokens
        self.spool = spool
        self.post = post                    # token -> HTTP status (blocking)
        self.clock = clock
        self.rng = rng or random.Random()
        self.pending: dict[str, Pending] = {}
        self.heap: list[tuple[float, str]] = []
        self.wake = asyncio.Event()
        self.slots = asyncio.Semaphore(workers)
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push")
        self.sent = 0

    def _schedule(self, item: Pending, due: float) -> None:
        item.due = due
        heapq.heappush(self.heap, (due, item.key))
        self.wake.set()

    def restore(self) -> int:
        """Queue what a previous run left pending (tried again at once)."""
        now = self.clock()
        for item in self.spool.load():
            self.pending[item.key] = item
            self._schedule(item, now)
        return len(self.pending)

    def new_message(self, address: str) -> int:
        """A message was delivered to ``address``: one notification per token."""
        now = self.clock()
        count = 0
        for token in self.tokens.tokens(address, now):
            key = pending_key(address, token)
            item = self.pending.get(key)
            if item is None:
                item = Pending(key, address, token, now)
                self.spool.save(item)
                self.pending[key] = item
                self._schedule(item, now)
            else:
                item.since, item.again = now, item.again or item.in_flight
                self.spool.save(item)
            count += 1
        return count

    async def run(self) -> None:
        """Send each notification when due, ``workers`` at once, for ever: 2xx done, 410 drops the
        token, 408/429/5xx/network errors retry (:func:`retry_delay`) for GIVE_UP_AFTER s after
        the last new message, other statuses drop it."""
        while True:
            now = self.clock()
            while self.heap and self.heap[0][0] <= now:
                due, key = heapq.heappop(self.heap)
                item = self.pending.get(key)
                if item is None or item.due != due or item.in_flight:
                    continue  # superseded entry of the heap
                await self.slots.acquire()
                item.in_flight = True
                asyncio.create_task(self._attempt(item))
            self.wake.clear()
            timeout = max(0.0, self.heap[0][0] - self.clock()) if self.heap else None
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _attempt(self, item: Pending) -> None:
        try:
            outcome = await self._send(item)
        finally:
            self.slots.release()
        item.in_flight = False
        now = self.clock()
        if outcome == "retry":
            item.failures += 1
            # Given up, or its token (its account) gone meanwhile: write nothing back.
            if now - item.since > GIVE_UP_AFTER or item.token not in self.tokens.tokens(
                    item.address, now):
                log.warning("a notification was given up after %d attempts", item.failures)
                self._forget(item)
                return
            self.spool.save(item)
            self._schedule(item, now + retry_delay(item.failures, self.rng.uniform(-1, 1)))
            return
        if outcome == "sent" and item.again:
            item.again, item.failures = False, 0
            self.spool.save(item)
            self._schedule(item, now)
            return
        self._forget(item)

    def _forget(self, item: Pending) -> None:
        self.pending.pop(item.key, None)
        self.spool.delete(item)

    async def _send(self, item: Pending) -> str:
        """'sent', 'retry', or 'dropped'."""
        if item.token not in self.tokens.tokens(item.address, self.clock()):
            return "dropped"  # unset by the client, expired, or the account is gone
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            status = await loop.run_in_executor(self.executor, self.post, item.token)
        except (OSError, http.client.HTTPException, ssl.SSLError) as exc:
            log.warning("notification gateway unreachable (%s: %s); attempt %d, will retry",
                        type(exc).__name__, exc, item.failures + 1)
            return "retry"
        elapsed = (time.monotonic() - started) * 1000
        if 200 <= status < 300:
            self.sent += 1
            log.debug("notification accepted in %.0f ms", elapsed)
            return "sent"
        if status == 410:
            self.tokens.remove(item.address, item.token)
            log.info("the gateway says a device token is no longer valid: removed")
            return "dropped"
        if status in (408, 429) or status >= 500:
            log.warning("notification gateway answered %d; attempt %d, will retry",
                        status, item.failures + 1)
            return "retry"
        log.warning("notification gateway refused a notification with %d: dropped", status)
        return "dropped"
