"""relay.federation.mxsend: answer mapping, MX choice, the HTTPS-then-SMTP order and the LMTP
conversation (over a real UNIX socket; deliveries replaced by a recorder)."""

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor

import dns.name
import dns.resolver
import pytest

from relay.federation import mxsend
from relay.settings import BODY_MARGIN
from relay.wire.tls import ClientContexts
from relay.federation import outbound
from relay.federation.outbound import DeliveryError, Destination, HostFailed, Sender


# --- replies --------------------------------------------------------------------------

@pytest.mark.parametrize("text,want", [
    ("550 5.1.1 <b@x>: Recipient address rejected", "550 5.1.1 <b@x>: Recipient address rejected"),
    ("550 User unknown", "550 5.0.0 User unknown"),
    ("450 4.2.0 try later", "450 4.2.0 try later"),
    ("523 Encryption Needed: Invalid Unencrypted Mail",
     "523 5.0.0 Encryption Needed: Invalid Unencrypted Mail"),
    ("250 2.0.0 Ok", "FALLBACK"),
    ("nonsense", "FALLBACK"),
    ("", "FALLBACK"),
    ("550 5.7.1 line\r\nbreak\x00", "550 5.7.1 line break"),
])
def test_as_reply(text, want):
    assert outbound.as_reply(text, "FALLBACK") == want


RCPTS = ["b1@relay-b.test", "B2@relay-b.test"]


def test_unmarked_or_temporary_answers_are_not_used():
    assert outbound.mxdeliv_replies(200, False, b"<html>", RCPTS, "h") is None   # catch-all web server
    assert outbound.mxdeliv_replies(404, False, b"Not Found", RCPTS, "h") is None
    assert outbound.mxdeliv_replies(503, True, b"{}", RCPTS, "h") is None
    assert outbound.mxdeliv_replies(502, True, b"", RCPTS, "h") is None
    assert outbound.mxdeliv_replies(405, True, b"", RCPTS, "h") is None


def test_accepted_with_one_refused_recipient():
    body = b'{"accepted": ["b1@relay-b.test"], "refused": {"b2@relay-b.test": "550 5.1.1 <b2>: unknown"}}'
    replies = outbound.mxdeliv_replies(200, True, body, RCPTS, "relay-b.test")
    assert replies["b1@relay-b.test"].startswith("250 2.0.0 ")
    assert "via https to relay-b.test" in replies["b1@relay-b.test"]
    assert replies["B2@relay-b.test"] == "550 5.1.1 <b2>: unknown"


def test_accepted_without_a_body_counts_for_everyone():
    replies = outbound.mxdeliv_replies(200, True, b"", RCPTS, "h")
    assert all(r.startswith("250 ") for r in replies.values())


@pytest.mark.parametrize("status,body,prefix", [
    (404, b'{"error": "no valid recipient"}', "550 5.1.1 "),
    (403, b'{"error": "523 Encryption Needed: Invalid Unencrypted Mail"}',
     "550 5.7.1 Refused by h (https): 523 Encryption Needed"),
    (403, b'{"error": "550 5.7.1 No valid DKIM signature found for the From: domain"}',
     "550 5.7.1 Refused by h (https): 550 5.7.1 No valid DKIM"),
    (413, b"<html>413</html>", "552 5.3.4 "),
    (400, b'{"error": "exactly one X-Mail-From header is required"}', "554 5.6.0 "),
])
def test_refusals_are_permanent_for_every_recipient(status, body, prefix):
    replies = outbound.mxdeliv_replies(status, True, body, RCPTS, "h")
    assert set(replies) == set(RCPTS)
    assert all(r.startswith(prefix) for r in replies.values()), replies


def test_404_keeps_the_receivers_reasons():
    body = b'{"error": "no valid recipient", "refused": {"b1@relay-b.test": "550 5.1.1 unknown b1"}}'
    replies = outbound.mxdeliv_replies(404, True, body, RCPTS, "h")
    assert replies["b1@relay-b.test"] == "550 5.1.1 unknown b1"
    assert replies["B2@relay-b.test"].startswith("550 5.1.1 Recipient unknown")


# --- where to deliver -----------------------------------------------------------------

def test_ip_literals():
    assert outbound.ip_literal("[192.0.2.1]") == "192.0.2.1"
    assert outbound.ip_literal("[IPv6:2001:db8::1]") == "2001:db8::1"
    assert outbound.ip_literal("[300.1.1.1]") is None
    assert outbound.ip_literal("example.org") is None
    assert outbound.resolve("[192.0.2.1]") == Destination("[192.0.2.1]", ("192.0.2.1",), False)
    with pytest.raises(DeliveryError, match="^550 5.1.2"):
        outbound.resolve("[nonsense]")


class MX:
    def __init__(self, preference, exchange):
        self.preference, self.exchange = preference, dns.name.from_text(exchange)


class FakeResolver:
    def __init__(self, answer=None, error=None):
        self.answer, self.error, self.asked = answer, error, []

    def resolve(self, name, rtype, **kw):
        self.asked.append((name, rtype))
        if self.error:
            raise self.error
        return self.answer


def test_mx_hosts_in_order_of_preference():
    r = FakeResolver([MX(20, "b.mx.test."), MX(10, "a.mx.test."), MX(30, "c.mx.test."),
                      MX(40, "d.mx.test.")])
    dest = outbound.resolve("example.test", r)
    assert dest.hosts == ("a.mx.test", "b.mx.test", "c.mx.test")  # at most MAX_HOSTS
    assert dest.verify and r.asked == [("example.test", "MX")]


def test_underscore_domains_are_not_verified():
    assert not outbound.resolve("_chat.example.test", FakeResolver([MX(10, "_chat.example.test.")])).verify


def test_no_mx_means_the_domain_itself():
    assert outbound.resolve("example.test", FakeResolver(error=dns.resolver.NoAnswer())).hosts == (
        "example.test",)


@pytest.mark.parametrize("error,prefix", [
    (dns.resolver.NXDOMAIN(), "550 5.1.2 "),
    (dns.resolver.LifetimeTimeout(timeout=1, errors=[]), "451 4.4.3 "),
    (dns.resolver.NoNameservers(), "451 4.4.3 "),
])
def test_dns_failures(error, prefix):
    with pytest.raises(DeliveryError) as info:
        outbound.resolve("example.test", FakeResolver(error=error))
    assert info.value.reply.startswith(prefix)


def test_null_mx():
    with pytest.raises(DeliveryError, match="^556 5.1.10"):
        outbound.resolve("example.test", FakeResolver([MX(0, ".")]))


# --- HTTPS first, then SMTP, host by host -----------------------------------------------

class Recorder:
    def __init__(self, https, smtp, hosts=("mx1.test", "mx2.test"), verify=True):
        self.https, self.smtp, self.calls = list(https), list(smtp), []
        self.dest = Destination("d.test", hosts, verify)

    def sender(self):
        def resolve(domain):
            return self.dest

        def post(host, ctx, mail_from, rcpts, data):
            self.calls.append(("https", host, ctx.check_hostname))
            result = self.https.pop(0)
            if isinstance(result, Exception):
                raise result
            return result

        def smtp(host, ctx, helo, mail_from, rcpts, data):
            self.calls.append(("smtp", host, ctx.check_hostname))
            result = self.smtp.pop(0)
            if isinstance(result, Exception):
                raise result
            return {r: result for r in rcpts}

        return Sender("relay-a.test", ClientContexts(), resolve, post, smtp)


def test_https_answer_is_used():
    rec = Recorder([(200, True, b"{}")], [])
    replies = rec.sender().deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")
    assert replies["x@d.test"].startswith("250 ") and "https" in replies["x@d.test"]
    assert rec.calls == [("https", "mx1.test", True)]


def test_smtp_after_a_failed_or_unmarked_https_answer():
    for https in (ConnectionRefusedError(111, "refused"), (404, False, b"Not Found"),
                  (502, True, b"")):
        rec = Recorder([https], ["250 2.0.0 Ok: delivered via smtp to mx1.test"])
        replies = rec.sender().deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")
        assert "via smtp" in replies["x@d.test"]
        assert [c[0] for c in rec.calls] == ["https", "smtp"]


def test_next_host_then_temporary_failure():
    rec = Recorder([OSError("down"), OSError("down")], [HostFailed("no STARTTLS offered"),
                                                         HostFailed("timeout")])
    replies = rec.sender().deliver("d.test", "", ["x@d.test", "y@d.test"], b"m")
    assert [c[:2] for c in rec.calls] == [("https", "mx1.test"), ("smtp", "mx1.test"),
                                          ("https", "mx2.test"), ("smtp", "mx2.test")]
    assert all(r.startswith("451 4.4.1 ") for r in replies.values())


def test_ip_literal_destinations_are_not_verified():
    rec = Recorder([OSError("down")], ["250 2.0.0 ok"], hosts=("192.0.2.1",), verify=False)
    rec.sender().deliver("[192.0.2.1]", "a@relay-a.test", ["x@[192.0.2.1]"], b"m")
    assert rec.calls == [("https", "192.0.2.1", False), ("smtp", "192.0.2.1", False)]


def test_dns_failure_is_the_reply():
    def resolve(domain):
        raise DeliveryError("451 4.4.3 MX lookup for d.test failed: Timeout")

    s = Sender("relay-a.test", ClientContexts(), resolve)
    assert s.deliver("d.test", "", ["x@d.test"], b"m") == {
        "x@d.test": "451 4.4.3 MX lookup for d.test failed: Timeout"}


# --- the LMTP conversation ----------------------------------------------------------------

class FakeSender:
    def __init__(self):
        self.got = []

    def deliver(self, domain, mail_from, rcpts, data):
        self.got.append((domain, mail_from, list(rcpts), data))
        return {r: ("550 5.1.1 unknown" if r.startswith("nobody") else "250 2.0.0 ok via https")
                for r in rcpts}


@pytest.fixture
def lmtp(tmp_path):
    """An LMTP server in a thread of its own; yields (send-and-read function, fake sender)."""
    import threading

    fake = FakeSender()
    path = tmp_path / "lmtp.sock"
    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(2)
    server = mxsend.LMTPServer(fake, max_size=1024 * 1024, max_recipients=3, pool=pool)
    listener = loop.run_until_complete(mxsend.serve(server, path))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(10)
    sock.connect(str(path))
    buf = sock.makefile("rb")

    def talk(data: bytes, replies: int) -> list[str]:
        if data:
            sock.sendall(data)
        out = []
        while len(out) < replies:
            line = buf.readline().decode()
            assert line, "connection closed"
            out.append(line.rstrip("\r\n"))
        return out

    assert talk(b"", 1)[0].startswith("220 ")
    yield talk, fake
    buf.close()
    sock.close()

    async def sessions_ended():
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5)

    asyncio.run_coroutine_threadsafe(sessions_ended(), loop).result(10)
    loop.call_soon_threadsafe(listener.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    pool.shutdown()


def test_lmtp_one_reply_per_recipient_after_data(lmtp):
    talk, fake = lmtp
    lhlo = talk(b"LHLO postfix\r\n", 6)
    assert lhlo[-1] == "250 SIZE 1048576" and "250-PIPELINING" in lhlo
    # Pipelined, as Postfix sends them.
    replies = talk(b"MAIL FROM:<a@relay-a.test> BODY=8BITMIME\r\nRCPT TO:<b@relay-b.test>\r\n"
                   b"RCPT TO:<nobody@relay-b.test>\r\nRCPT TO:<c@classic.test>\r\nDATA\r\n", 5)
    assert replies == ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
                       "354 End data with <CR><LF>.<CR><LF>"]
    replies = talk(b"Subject: x\r\n\r\n..leading dot\r\nend\r\n.\r\n", 3)
    assert replies == ["250 2.0.0 ok via https", "550 5.1.1 unknown", "250 2.0.0 ok via https"]
    by_domain = {g[0]: g for g in fake.got}
    assert by_domain["relay-b.test"][2] == ["b@relay-b.test", "nobody@relay-b.test"]
    assert by_domain["classic.test"][2] == ["c@classic.test"]
    assert by_domain["classic.test"][3] == b"Subject: x\r\n\r\n.leading dot\r\nend\r\n"
    # The session goes on: a second transaction, then QUIT.
    assert talk(b"RSET\r\nMAIL FROM:<>\r\nRCPT TO:<d@classic.test>\r\nDATA\r\n", 4)[-1].startswith("354")
    assert talk(b"x\r\n.\r\n", 1) == ["250 2.0.0 ok via https"]
    assert fake.got[-1][1] == ""
    assert talk(b"QUIT\r\n", 1) == ["221 2.0.0 Bye"]


def test_lmtp_refuses_bad_sequences(lmtp):
    talk, fake = lmtp
    talk(b"LHLO postfix\r\n", 6)
    assert talk(b"RCPT TO:<b@relay-b.test>\r\n", 1)[0].startswith("503 ")
    assert talk(b"DATA\r\n", 1)[0].startswith("503 ")
    assert talk(b"MAIL FROM:<a@relay-a.test>\r\n", 1)[0].startswith("250 ")
    assert talk(b"MAIL FROM:<a@relay-a.test>\r\n", 1)[0].startswith("503 ")
    assert talk(b"RCPT TO:<no-domain>\r\n", 1)[0].startswith("501 ")
    assert talk(b"RCPT TO:<1@x.test>\r\nRCPT TO:<2@x.test>\r\nRCPT TO:<3@x.test>\r\n"
                b"RCPT TO:<4@x.test>\r\n", 4)[-1].startswith("452 4.5.3")
    assert talk(b"HELP\r\n", 1)[0].startswith("500 ")
    assert not fake.got


def test_lmtp_too_large(lmtp):
    talk, fake = lmtp
    talk(b"LHLO postfix\r\nMAIL FROM:<a@relay-a.test>\r\nRCPT TO:<b@relay-b.test>\r\nDATA\r\n", 9)
    line = b"x" * 1000 + b"\r\n"
    assert talk(line * 1200 + b".\r\n", 1) == ["552 5.3.4 Message too large"]
    assert not fake.got


def test_lmtp_too_large_is_refused_once_per_recipient(lmtp):
    """A message past MAX_MESSAGE_SIZE plus the margin gets one 552 per recipient
    (a single reply would put Postfix's LMTP client out of step)."""
    talk, fake = lmtp
    talk(b"LHLO postfix\r\n", 6)
    assert talk(b"MAIL FROM:<a@relay-a.test>\r\nRCPT TO:<b@relay-b.test>\r\n"
                b"RCPT TO:<c@classic.test>\r\nDATA\r\n", 4)[-1].startswith("354")
    line = b"x" * 998 + b"\r\n"
    body = line * ((1024 * 1024 + BODY_MARGIN) // len(line) + 1)
    assert talk(body + b".\r\n", 2) == ["552 5.3.4 Message too large"] * 2
    assert not fake.got
    assert talk(b"NOOP\r\n", 1)[0].startswith("250")  # still in step
