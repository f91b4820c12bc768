"""relay.federation.mxsend, outbound and replies: answer mapping (our relay's JSON answers and
the reference relays' plain SMTP-text answers), MX choice, the HTTPS-then-SMTP order, the
SMTP-only list, and the LMTP conversation (over a real UNIX socket; deliveries replaced by a
recorder)."""

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor

import dns.name
import dns.resolver
import pytest

from relay.federation import mxsend, outbound, replies as rp
from relay.federation.outbound import DeliveryError, Destination, HostFailed, Sender, SmtpOnlyHosts
from relay.federation.replies import HttpAnswer
from relay.settings import BODY_MARGIN
from relay.wire.tls import ClientContexts


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
    assert rp.as_reply(text, "FALLBACK") == want


RCPTS = ["b1@relay-b.test", "B2@relay-b.test"]


def ours(status, body):
    """An answer of our own relay's /mxdeliv (nginx marks it)."""
    return HttpAnswer(status, True, "application/json", body)


def own_replies(status, body, rcpts=RCPTS, host="h"):
    return rp.https_replies(ours(status, body), rcpts, host)


def test_our_temporary_answers_are_not_used():
    assert own_replies(503, b"{}") is None
    assert own_replies(502, b"") is None
    assert own_replies(405, b"") is None


def test_accepted_with_one_refused_recipient():
    body = b'{"accepted": ["b1@relay-b.test"], "refused": {"b2@relay-b.test": "550 5.1.1 <b2>: unknown"}}'
    replies = own_replies(200, body, host="relay-b.test")
    assert replies["b1@relay-b.test"].startswith("250 2.0.0 ")
    assert "via https to relay-b.test" in replies["b1@relay-b.test"]
    assert replies["B2@relay-b.test"] == "550 5.1.1 <b2>: unknown"


def test_accepted_without_a_body_counts_for_everyone():
    replies = own_replies(200, b"")
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
    replies = own_replies(status, body)
    assert set(replies) == set(RCPTS)
    assert all(r.startswith(prefix) for r in replies.values()), replies


def test_404_keeps_the_receivers_reasons():
    body = b'{"error": "no valid recipient", "refused": {"b1@relay-b.test": "550 5.1.1 unknown b1"}}'
    replies = own_replies(404, body)
    assert replies["b1@relay-b.test"] == "550 5.1.1 unknown b1"
    assert replies["B2@relay-b.test"].startswith("550 5.1.1 Recipient unknown")


# --- answers of receivers without our marker (the reference relays, web servers) ----------

DELIVERED = "250 2.0.0 Ok: delivered via https to mx.ref.test"


@pytest.mark.parametrize("answer", [
    HttpAnswer(200, body=b"250 OK"),                          # filtermail 0.6.6 and later
    HttpAnswer(201, body=b"250 OK"),                          # filtermail 0.6.4/0.6.5
    HttpAnswer(200, body=b"250 OK (HTTPS)\r\n"),
    HttpAnswer(200, content_type="text/plain", body=b"250 2.0.0 Ok: queued as 4Xy"),
    HttpAnswer(200),                                          # no body at all
    HttpAnswer(204),
    HttpAnswer(200, content_type="application/json", body=b'{"ok": true}'),
    HttpAnswer(200, body=b"OK"),
    HttpAnswer(200, content_type="text/html", body=b"250 OK"),  # a proxy's default type
])
def test_a_2xx_without_marker_is_a_delivery(answer):
    assert rp.https_replies(answer, RCPTS, "mx.ref.test") == {r: DELIVERED for r in RCPTS}


@pytest.mark.parametrize("answer", [
    HttpAnswer(200, content_type="text/html", body=b"<!DOCTYPE html><html>welcome</html>"),
    HttpAnswer(200, content_type="application/xhtml+xml", body=b""),
    HttpAnswer(200, body=b"\xef\xbb\xbf  \n<html><body>catch-all</body></html>"),
    HttpAnswer(200, body=b"<?xml version='1.0'?><page/>"),
    HttpAnswer(404, content_type="text/html", body=b"<html>404 Not Found</html>"),
    HttpAnswer(413, content_type="text/html", body=b"<html><head><title>413 Request Entity "
                                                    b"Too Large</title></head></html>"),
    HttpAnswer(502, content_type="text/html", body=b"<html>502 Bad Gateway</html>"),
    HttpAnswer(405, body=b"Method Not Allowed"),             # filtermail for anything but POST
    HttpAnswer(404, content_type="text/plain", body=b"Not Found"),
    HttpAnswer(301, content_type="text/html", body=b"<html>301</html>"),
    HttpAnswer(500),
    HttpAnswer(400, body=b"250 OK"),                          # no refusal text: not a reply
    HttpAnswer(400, body=b"bad request"),
])
def test_web_pages_and_other_answers_go_on_to_smtp(answer):
    assert rp.https_replies(answer, RCPTS, "mx.ref.test") is None


@pytest.mark.parametrize("status,body,want", [
    (400, b"523 Encryption Needed: Invalid Unencrypted Mail",
     "523 5.0.0 Encryption Needed: Invalid Unencrypted Mail"),
    (400, b"554 5.7.1 No valid DKIM signature found", "554 5.7.1 No valid DKIM signature found"),
    (400, b"550 5.1.1 <b1@ref.test>: Recipient address rejected: User unknown "
          b"(forwarded from 127.0.0.1:10026)",
     "550 5.1.1 <b1@ref.test>: Recipient address rejected: User unknown "
     "(forwarded from 127.0.0.1:10026)"),
    (400, b"500 Invalid DATA", "500 5.0.0 Invalid DATA"),
    (413, b"552 Message exceeds maximum size", "552 5.0.0 Message exceeds maximum size"),
    (400, b"451 I/O error", "451 4.0.0 I/O error"),
    (400, b"450 4.2.0 <b1@ref.test>: Recipient address rejected: try later\r\nmore",
     "450 4.2.0 <b1@ref.test>: Recipient address rejected: try later"),
    (503, b"421 4.3.2 shutting down", "421 4.3.2 shutting down"),
    (200, b"550 5.7.1 refused after all", "550 5.7.1 refused after all"),  # never "delivered"
])
def test_an_smtp_reply_in_the_body_is_every_recipients_reply(status, body, want):
    replies = rp.https_replies(HttpAnswer(status, body=body), RCPTS, "mx.ref.test")
    assert replies == {r: f"{want} (from mx.ref.test via https)" for r in RCPTS}


def test_temporary_and_permanent_refusals_keep_their_class():
    """Postfix defers on a 4xx LMTP reply and bounces on a 5xx one."""
    for text, first in ((b"451 4.3.0 later", "4"), (b"550 5.1.1 no", "5"), (b"523 E2EE", "5")):
        replies = rp.https_replies(HttpAnswer(400, body=text), RCPTS, "h")
        assert {r[0] for r in replies.values()} == {first}


def test_smtp_text_and_web_page_shapes():
    assert rp.smtp_text(b"250 OK") == "250 OK"
    assert rp.smtp_text(b"  550-first\r\n550 second") == "550-first"
    assert rp.smtp_text(b"550") == "550"
    assert rp.smtp_text(b"5500 no") is None and rp.smtp_text(b"Method Not Allowed") is None
    assert rp.smtp_text(b"<p>550 no</p>") is None
    assert rp.is_web_page(HttpAnswer(200, content_type="text/html"))
    assert not rp.is_web_page(HttpAnswer(200, content_type="text/plain", body=b"250 OK"))
    assert outbound.media_type("Text/HTML; charset=UTF-8") == "text/html"
    assert outbound.media_type(None) == ""


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

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Recorder:
    """A Sender whose network steps are scripted: ``https`` and ``smtp`` list what each
    call returns (or raises), in order."""

    def __init__(self, https, smtp, hosts=("mx1.test", "mx2.test"), verify=True):
        self.https, self.smtp, self.calls = list(https), list(smtp), []
        self.dest = Destination("d.test", hosts, verify)
        self.clock = Clock()
        self.smtp_only = SmtpOnlyHosts(clock=self.clock)

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

        return Sender("relay-a.test", ClientContexts(), resolve, post, smtp, self.smtp_only)

    def paths(self):
        return [c[:2] for c in self.calls]


def test_https_answer_is_used():
    rec = Recorder([ours(200, b"{}")], [])
    replies = rec.sender().deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")
    assert replies["x@d.test"].startswith("250 ") and "https" in replies["x@d.test"]
    assert rec.calls == [("https", "mx1.test", True)]


def test_a_reference_relays_200_is_one_delivery_without_smtp():
    """filtermail answers a plain 200 "250 OK" without our marker: delivered once."""
    rec = Recorder([HttpAnswer(200, body=b"250 OK")], ["250 2.0.0 Ok: delivered via smtp to mx1.test"])
    replies = rec.sender().deliver("d.test", "a@relay-a.test", ["x@d.test", "y@d.test"], b"m")
    assert replies == {r: "250 2.0.0 Ok: delivered via https to mx1.test" for r in ("x@d.test", "y@d.test")}
    assert rec.paths() == [("https", "mx1.test")]


def test_a_reference_relays_refusal_is_the_reply_without_smtp():
    rec = Recorder([HttpAnswer(400, body=b"523 Encryption Needed: Invalid Unencrypted Mail")], [])
    replies = rec.sender().deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")
    assert replies["x@d.test"].startswith("523 5.0.0 Encryption Needed")
    assert rec.paths() == [("https", "mx1.test")]
    assert rec.smtp_only.since("mx1.test") is None


def test_smtp_after_a_failed_or_unusable_https_answer():
    for https in (ConnectionRefusedError(111, "refused"),
                  HttpAnswer(404, content_type="text/html", body=b"<html>Not Found</html>"),
                  HttpAnswer(200, content_type="text/html", body=b"<html>catch-all</html>"),
                  HttpAnswer(405, body=b"Method Not Allowed"), ours(502, b"")):
        rec = Recorder([https], ["250 2.0.0 Ok: delivered via smtp to mx1.test"])
        replies = rec.sender().deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")
        assert "via smtp" in replies["x@d.test"]
        assert rec.paths() == [("https", "mx1.test"), ("smtp", "mx1.test")]


# --- hosts that needed SMTP --------------------------------------------------------------

SMTP_OK = "250 2.0.0 Ok: delivered via smtp to mx1.test"


def test_a_host_that_needed_smtp_is_not_asked_over_https_for_30_minutes():
    rec = Recorder([ConnectionRefusedError(111, "refused"), HttpAnswer(200, body=b"250 OK")],
                   [SMTP_OK, SMTP_OK, SMTP_OK])
    sender = rec.sender()
    for _ in range(2):
        sender.deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")
    assert rec.paths() == [("https", "mx1.test"), ("smtp", "mx1.test"), ("smtp", "mx1.test")]
    rec.clock.now += 29 * 60
    sender.deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")
    assert rec.paths()[-1] == ("smtp", "mx1.test")
    # Skipped deliveries do not extend the period: after 30 minutes HTTPS is asked again.
    rec.clock.now += 60
    assert "via https" in sender.deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")["x@d.test"]
    assert rec.paths()[-1] == ("https", "mx1.test")


def test_only_a_successful_smtp_delivery_puts_a_host_on_the_list():
    rec = Recorder([OSError("down"), OSError("down"), OSError("down"), OSError("down")],
                   [HostFailed("connection refused"), HostFailed("timeout"),
                    "550 5.1.1 unknown user", "451 4.3.0 later"], hosts=("mx1.test",))
    sender = rec.sender()
    for _ in range(4):
        sender.deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")
    assert [p for p, _ in rec.paths()] == ["https", "smtp"] * 4
    assert rec.smtp_only.since("mx1.test") is None


def test_smtp_failing_to_connect_takes_a_host_off_the_list():
    rec = Recorder([OSError("no 443"), HttpAnswer(200, body=b"250 OK")],
                   [SMTP_OK, HostFailed("port 25 blocked")], hosts=("mx1.test",))
    sender = rec.sender()
    sender.deliver("d.test", "a@relay-a.test", ["x@d.test"], b"m")
    assert rec.smtp_only.since("mx1.test") == 0
    assert sender.deliver("d.test", "", ["x@d.test"], b"m")["x@d.test"].startswith("451 4.4.1 ")
    assert rec.smtp_only.since("mx1.test") is None
    # The next attempt (Postfix retries later) asks over HTTPS again.
    assert "via https" in sender.deliver("d.test", "", ["x@d.test"], b"m")["x@d.test"]
    assert rec.paths() == [("https", "mx1.test"), ("smtp", "mx1.test"), ("smtp", "mx1.test"),
                           ("https", "mx1.test")]


def test_the_list_is_per_mx_host_and_bounded():
    clock = Clock()
    hosts = SmtpOnlyHosts(clock=clock, limit=3)
    for i, name in enumerate(("a", "b", "c", "d")):
        clock.now += 1
        hosts.add(name)
    assert hosts.since("a") is None                      # the oldest made room
    assert [hosts.since(h) for h in ("b", "c", "d")] == [2, 1, 0]
    hosts.clear()
    assert hosts.since("d") is None


# --- the request on the wire --------------------------------------------------------------

@pytest.mark.parametrize("data,want", [
    (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n"),
    (b".leading\r\n..two\r\n", b"..leading\r\n...two\r\n"),
    (b"no dot. here\r\n", b"no dot. here\r\n"),
    (b"no final line end", b"no final line end\r\n"),
])
def test_transmission_form(data, want):
    assert outbound.transmission_form(data) == want


@pytest.fixture
def http_peer(monkeypatch):
    """A plain HTTP server standing in for the receiver's 443 (TLS is the ssl module's
    business): records each request, answers like filtermail 0.7."""
    import http.client
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.path, self.headers, body))
            self.send_response(200)
            self.send_header("Content-Length", "6")
            self.end_headers()
            self.wfile.write(b"250 OK")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    port = server.server_address[1]
    monkeypatch.setattr(outbound.http.client, "HTTPSConnection",
                        lambda host, _port, timeout, context: http.client.HTTPConnection(
                            "127.0.0.1", port, timeout=timeout))
    yield seen
    server.shutdown()


def test_the_request_is_the_references_form(http_peer):
    answer = outbound.post_mxdeliv("mx.ref.test", None, "a@relay-a.test",
                                   ["b@ref.test", "c@ref.test"], b"Subject: x\r\n\r\n.hi\r\n")
    assert answer == HttpAnswer(200, False, "", b"250 OK")
    path, headers, body = http_peer[0]
    assert path == "/mxdeliv"
    assert headers.get_all("X-Mail-From") == ["a@relay-a.test"]
    assert headers.get_all("X-Mail-To") == ["b@ref.test", "c@ref.test"]  # one header each
    assert body == b"Subject: x\r\n\r\n..hi\r\n"


def test_the_null_sender_is_sent_without_x_mail_from(http_peer):
    outbound.post_mxdeliv("mx.ref.test", None, "", ["b@ref.test"], b"Subject: x\r\n\r\nbounce\r\n")
    _, headers, _ = http_peer[0]
    assert headers.get_all("X-Mail-From") is None
    assert headers.get_all("X-Mail-To") == ["b@ref.test"]


def test_next_host_then_temporary_failure():
    rec = Recorder([OSError("down"), OSError("down")], [HostFailed("no STARTTLS offered"),
                                                         HostFailed("timeout")])
    replies = rec.sender().deliver("d.test", "", ["x@d.test", "y@d.test"], b"m")
    assert rec.paths() == [("https", "mx1.test"), ("smtp", "mx1.test"),
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
