"""Push tokens, the retry schedule and the notifier's queue (no network beyond 127.0.0.1)."""

import asyncio
import http.server
import os
import stat
import threading
import time

import pytest

from relay.notify import push
from relay.wire.tls import client_context

DAY = 86400
NOW = 2_000_000_000
ALICE = "alice@chat.example.org"


@pytest.fixture
def store(tmp_path):
    root = tmp_path / "tokens"
    root.mkdir()
    return push.TokenStore(root)


def test_tokens_are_a_set_per_account_oldest_first(store):
    store.add(ALICE, "openpgp:one", NOW)
    store.add(ALICE, "openpgp:two", NOW + 10)
    store.add(ALICE, "openpgp:one", NOW + 20)   # stored again: refreshed, not doubled
    assert store.tokens(ALICE, NOW + 30) == ["openpgp:two", "openpgp:one"]
    assert store.tokens("bob@chat.example.org", NOW) == []


def test_token_file_is_private(store):
    store.add(ALICE, "openpgp:one", NOW)
    mode = stat.S_IMODE(os.stat(store.root / ALICE).st_mode)
    assert mode == 0o600


def test_tokens_not_stored_again_for_90_days_are_dropped(store):
    store.add(ALICE, "openpgp:old", NOW - 91 * DAY)
    store.add(ALICE, "openpgp:new", NOW - 89 * DAY)
    assert store.tokens(ALICE, NOW) == ["openpgp:new"]
    assert "openpgp:old" not in (store.root / ALICE).read_text()


def test_at_most_16_tokens_the_least_recent_goes(store):
    for i in range(20):
        store.add(ALICE, f"openpgp:{i}", NOW + i)
    assert store.tokens(ALICE, NOW + 100) == [f"openpgp:{i}" for i in range(4, 20)]


def test_remove_one_and_all(store):
    store.add(ALICE, "openpgp:one", NOW)
    store.add(ALICE, "openpgp:two", NOW)
    assert store.remove(ALICE, "openpgp:one")
    assert not store.remove(ALICE, "openpgp:one")
    assert store.tokens(ALICE, NOW) == ["openpgp:two"]
    store.remove_all(ALICE)
    assert not (store.root / ALICE).exists()
    assert store.remove(ALICE, "openpgp:two") is False


@pytest.mark.parametrize("token", ["", "with space", "tab\there", "x" * 4097, "nl\n", "ü"])
def test_bad_tokens_are_refused(store, token):
    with pytest.raises(ValueError):
        store.add(ALICE, token, NOW)
    assert store.tokens(ALICE, NOW) == []


@pytest.mark.parametrize("name", ["../etc/passwd", ".hidden", ""])
def test_account_names_cannot_leave_the_directory(store, name):
    with pytest.raises(ValueError):
        store.add(name, "openpgp:x", NOW)


def test_retry_delay_grows_to_an_hour():
    delays = [push.retry_delay(n) for n in range(1, 12)]
    assert delays[:5] == [2, 6, 18, 54, 162]
    assert all(a < b for a, b in zip(delays, delays[1:]) if b < 3600)
    assert max(delays) == 3600
    assert push.retry_delay(3, jitter=1) == pytest.approx(18 * 1.1)
    assert push.retry_delay(3, jitter=-1) == pytest.approx(18 * 0.9)


def test_schedule_covers_a_few_hours():
    times = push.schedule()
    assert times[0] == 0
    assert len(times) == 11
    assert 3 * 3600 < times[-1] <= 4 * 3600


# --- the notifier with a fake gateway -----------------------------------------------

class FakeGateway:
    def __init__(self, answers=()):
        self.answers = list(answers)   # statuses or exceptions, then 200 for ever
        self.posted = []
        self.lock = threading.Lock()

    def __call__(self, token):
        with self.lock:
            self.posted.append(token)
            answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def queue_dir(tmp_path):
    d = tmp_path / "queue"
    d.mkdir()
    return d


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(push, "FIRST_RETRY", 0.02)


async def run_until(notifier, condition, timeout=5.0):
    task = asyncio.create_task(notifier.run())
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, "condition not reached"
            await asyncio.sleep(0.01)
    finally:
        task.cancel()


def make(store, queue_dir, gateway, **kw):
    return push.Notifier(store, push.Spool(queue_dir), gateway, **kw)


def test_new_message_without_tokens_queues_nothing(store, queue_dir):
    notifier = make(store, queue_dir, FakeGateway())
    assert notifier.new_message(ALICE) == 0
    assert list(queue_dir.iterdir()) == []


def test_each_token_is_posted_and_the_queue_emptied(store, queue_dir):
    store.add(ALICE, "openpgp:one")
    store.add(ALICE, "openpgp:two")
    gateway = FakeGateway()
    notifier = make(store, queue_dir, gateway)

    async def scenario():
        assert notifier.new_message(ALICE) == 2
        assert len(list(queue_dir.iterdir())) == 2   # on disk before the event is answered
        await run_until(notifier, lambda: not notifier.pending)

    asyncio.run(scenario())
    assert sorted(gateway.posted) == ["openpgp:one", "openpgp:two"]
    assert list(queue_dir.iterdir()) == []


def test_gone_token_is_removed(store, queue_dir):
    store.add(ALICE, "openpgp:gone")
    store.add(ALICE, "openpgp:fine")
    gateway = FakeGateway()
    gateway_fn = lambda token: 410 if token == "openpgp:gone" else gateway(token)  # noqa: E731
    notifier = make(store, queue_dir, gateway_fn)

    async def scenario():
        notifier.new_message(ALICE)
        await run_until(notifier, lambda: not notifier.pending)

    asyncio.run(scenario())
    assert store.tokens(ALICE) == ["openpgp:fine"]


def test_failures_are_retried_until_accepted(store, queue_dir, fast_retries):
    store.add(ALICE, "openpgp:one")
    gateway = FakeGateway([ConnectionRefusedError(), 503, 429, 200])
    notifier = make(store, queue_dir, gateway)

    async def scenario():
        notifier.new_message(ALICE)
        await run_until(notifier, lambda: not notifier.pending)

    asyncio.run(scenario())
    assert gateway.posted == ["openpgp:one"] * 4
    assert list(queue_dir.iterdir()) == []


def test_other_client_errors_are_dropped_not_retried(store, queue_dir, fast_retries):
    store.add(ALICE, "openpgp:one")
    gateway = FakeGateway([400])
    notifier = make(store, queue_dir, gateway)

    async def scenario():
        notifier.new_message(ALICE)
        await run_until(notifier, lambda: not notifier.pending)

    asyncio.run(scenario())
    assert gateway.posted == ["openpgp:one"]
    assert store.tokens(ALICE) == ["openpgp:one"]   # only 410 removes a token


def test_pending_notifications_survive_a_restart(store, queue_dir):
    store.add(ALICE, "openpgp:one")
    first = make(store, queue_dir, FakeGateway())
    first.new_message(ALICE)              # the process ends before sending
    first.executor.shutdown()
    gateway = FakeGateway()
    second = make(store, queue_dir, gateway)
    assert second.restore() == 1

    async def scenario():
        await run_until(second, lambda: not second.pending)

    asyncio.run(scenario())
    assert gateway.posted == ["openpgp:one"]
    assert list(queue_dir.iterdir()) == []


def test_unreadable_queue_files_are_dropped(store, queue_dir):
    (queue_dir / ("0" * 40)).write_text("not json")
    (queue_dir / ".half-written.tmp").write_text("{")
    notifier = make(store, queue_dir, FakeGateway())
    assert notifier.restore() == 0
    assert list(queue_dir.iterdir()) == []


def test_one_pending_notification_per_token(store, queue_dir):
    store.add(ALICE, "openpgp:one")
    notifier = make(store, queue_dir, FakeGateway())
    for _ in range(5):
        notifier.new_message(ALICE)
    assert len(notifier.pending) == 1
    assert len(list(queue_dir.iterdir())) == 1


def test_token_removed_meanwhile_is_not_posted(store, queue_dir):
    store.add(ALICE, "openpgp:one")
    gateway = FakeGateway()
    notifier = make(store, queue_dir, gateway)
    notifier.new_message(ALICE)
    store.remove_all(ALICE)               # unset by the client, or the account is gone

    async def scenario():
        await run_until(notifier, lambda: not notifier.pending)

    asyncio.run(scenario())
    assert gateway.posted == []


def test_given_up_after_hours_without_new_mail(store, queue_dir, fast_retries):
    store.add(ALICE, "openpgp:one")
    offset = [0.0]
    gateway = FakeGateway([ConnectionRefusedError()] * 100)

    def failing(token):
        offset[0] += 3600          # every attempt "takes" an hour
        return gateway(token)

    notifier = make(store, queue_dir, failing, clock=lambda: time.time() + offset[0])
    notifier.tokens.tokens = lambda address, now=None: ["openpgp:one"]  # never stale here

    async def scenario():
        notifier.new_message(ALICE)
        await run_until(notifier, lambda: not notifier.pending)

    asyncio.run(scenario())
    # an hour per attempt: given up once more than four hours have passed
    assert len(gateway.posted) == 4
    assert list(queue_dir.iterdir()) == []


def test_message_during_a_request_is_notified_again(store, queue_dir):
    store.add(ALICE, "openpgp:one")
    started, release = threading.Event(), threading.Event()
    posted = []

    def slow(token):
        posted.append(token)
        if len(posted) == 1:
            started.set()
            release.wait(5)
        return 200

    notifier = make(store, queue_dir, slow)

    async def scenario():
        notifier.new_message(ALICE)
        task = asyncio.create_task(notifier.run())
        await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
        notifier.new_message(ALICE)       # arrives while the first request is under way
        release.set()
        try:
            for _ in range(500):
                if not notifier.pending:
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()

    asyncio.run(scenario())
    assert posted == ["openpgp:one", "openpgp:one"]


# --- the HTTP client against a local server ------------------------------------------

class Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    received: list = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.received.append((self.headers.get("Content-Type"), body.decode()))
        self.send_response(Recorder.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def local_server():
    Recorder.received = []
    Recorder.status = 200
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_gateway_posts_the_token_as_body(local_server):
    url = f"http://127.0.0.1:{local_server.server_address[1]}/notify"
    gateway = push.Gateway(url, client_context(cafile=None), timeout=5)
    assert gateway.post("openpgp:abc") == 200
    Recorder.status = 410
    assert gateway.post("openpgp:def") == 410     # on the kept-alive connection
    assert [body for _, body in Recorder.received] == ["openpgp:abc", "openpgp:def"]
    assert Recorder.received[0][0].startswith("text/plain")


def test_gateway_down_raises(local_server):
    port = local_server.server_address[1]
    local_server.shutdown()
    local_server.server_close()
    gateway = push.Gateway(f"http://127.0.0.1:{port}/notify", client_context(cafile=None), timeout=2)
    with pytest.raises(OSError):
        gateway.post("openpgp:abc")


def test_extra_ca_file_must_be_pem(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(Exception):
        client_context(cafile=bad)
