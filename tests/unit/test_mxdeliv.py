"""relay.federation.mxdeliv: request checks and the mapping of Postfix's replies to HTTP answers.

The HTTP side runs the real handler on a UNIX socket; Postfix is replaced by a
scripted SMTP session (the real one is exercised in tests/federation/)."""

import http.client
import json
import smtplib
import socket
import threading

import pytest

from relay.federation import mxdeliv
from relay.wire import unixhttp
from relay.federation.mxdeliv import Answer
from relay.settings import load


@pytest.mark.parametrize("froms,tos,want", [
    (["a@relay-a.test"], ["b@relay-b.test"], ("a@relay-a.test", ["b@relay-b.test"])),
    (["<a@relay-a.test>"], ["<b@relay-b.test>", "c@relay-b.test", "B@relay-b.test"],
     ("a@relay-a.test", ["b@relay-b.test", "c@relay-b.test"])),
    (["<>"], ["b@relay-b.test"], ("", ["b@relay-b.test"])),
    ([""], ["b@relay-b.test"], ("", ["b@relay-b.test"])),
    ([], ["b@relay-b.test"], ("", ["b@relay-b.test"])),  # the reference's null sender
    (["a@[192.0.2.1]"], ["b@relay-b.test"], ("a@[192.0.2.1]", ["b@relay-b.test"])),
    (["b\xc3\xbccher@relay-a.test"], ["b@relay-b.test"], ("b\u00fccher@relay-a.test", ["b@relay-b.test"])),
])
def test_envelope_from_headers(froms, tos, want):
    assert mxdeliv.parse_envelope(froms, tos, 10) == want


@pytest.mark.parametrize("froms,tos", [
    (["a@relay-a.test", "x@relay-a.test"], ["b@relay-b.test"]),
    (["a@relay-a.test"], []),
    (["not an address"], ["b@relay-b.test"]),
    (["a@relay-a.test"], ["b@relay-b.test", "two words@x"]),
    (["a@relay-a.test"], ["b@relay-b.test, c@relay-b.test"]),
    (["a@relay-a.test"], [f"r{i}@relay-b.test" for i in range(11)]),
])
def test_bad_envelopes_are_400(froms, tos):
    answer = mxdeliv.parse_envelope(froms, tos, 10)
    assert isinstance(answer, Answer) and answer.status == 400


@pytest.mark.parametrize("code,text,status", [
    (250, b"2.0.0 Ok: queued as 4X", 200),
    (523, b"Encryption Needed: Invalid Unencrypted Mail", 403),
    (550, b"5.7.1 No valid DKIM signature found for the From: domain", 403),
    (553, b"5.7.1 something else", 403),
    (552, b"5.3.4 Message size exceeds fixed limit", 413),
    (554, b"5.6.0 Message could not be parsed", 400),
    (451, b"4.7.5 DKIM key lookup failed, please try again later", 503),
    (421, b"4.4.2 timeout", 503),
])
def test_end_of_data_replies(code, text, status):
    answer = mxdeliv.data_answer(code, text, ["b@x"], {})
    assert answer.status == status
    if status != 200:
        assert answer.payload["error"].startswith(str(code))


class ScriptedPostfix:
    """Answers like Postfix's smtpd would, from a script; records what it was given."""

    def __init__(self, rcpt=None, data=(250, b"2.0.0 Ok: queued"), mail=(250, b"2.1.0 Ok"),
                 fail=None):
        self.rcpt_replies = rcpt or {}
        self.data_reply, self.mail_reply, self.fail = data, mail, fail
        self.got = {}

    def __call__(self):
        return self

    def __enter__(self):
        if self.fail:
            raise self.fail
        return self

    def __exit__(self, *exc):
        return False

    def connect(self):
        return 220, b"ready"

    def ehlo(self, name):
        return 250, b"ok"

    def mail(self, sender, options):
        self.got["mail"] = (sender, options)
        return self.mail_reply

    def rcpt(self, rcpt):
        self.got.setdefault("rcpt", []).append(rcpt)
        return self.rcpt_replies.get(rcpt, (250, b"2.1.5 Ok"))

    def rset(self):
        return 250, b"ok"

    def data(self, data):
        self.got["data"] = data
        return self.data_reply


@pytest.mark.parametrize("body,want", [
    (b"a\r\n..\r\n..b\r\n...c\r\n", b"a\r\n.\r\n.b\r\n..c\r\n"),
    (b"..first\r\nx. y\r\n", b".first\r\nx. y\r\n"),
    (b"no dots\r\n", b"no dots\r\n"),
    (b"a\r\n.\r\nb\r\n", None),
    (b".\r\nb\r\n", None),
    (b"a\r\n.", None),
    (b"a\n.\nb\n", None),
])
def test_transmission_form(body, want):
    assert mxdeliv.from_transmission_form(body) == want


def test_partial_recipients_and_crlf():
    pf = ScriptedPostfix(rcpt={"x@b": (550, b"5.1.1 <x@b>: Recipient address rejected")})
    answer = mxdeliv.deliver(pf, "a@a", ["b@b", "x@b"], b"Subject: s\n\nbody\n")
    assert answer == Answer(200, {"accepted": ["b@b"],
                                  "refused": {"x@b": "550 5.1.1 <x@b>: Recipient address rejected"}})
    assert pf.got["data"] == b"Subject: s\r\n\r\nbody\r\n"


def test_no_valid_recipient_is_404_and_nothing_is_sent():
    pf = ScriptedPostfix(rcpt={"x@b": (550, b"5.1.1 unknown")})
    assert mxdeliv.deliver(pf, "a@a", ["x@b"], b"m").status == 404
    assert "data" not in pf.got


def test_temporary_recipient_refusal_is_503():
    pf = ScriptedPostfix(rcpt={"x@b": (450, b"4.2.0 later")})
    assert mxdeliv.deliver(pf, "a@a", ["x@b"], b"m").status == 503


def test_postfix_unreachable_is_503():
    assert mxdeliv.deliver(ScriptedPostfix(fail=FileNotFoundError(2, "no socket")),
                           "a@a", ["b@b"], b"m").status == 503
    assert mxdeliv.deliver(ScriptedPostfix(fail=smtplib.SMTPServerDisconnected("gone")),
                           "a@a", ["b@b"], b"m").status == 503


def test_8bit_body_and_utf8_addresses_get_smtp_options():
    pf = ScriptedPostfix()
    mxdeliv.deliver(pf, "b\u00fc@a", ["b@b"], "Subject: \u00e4\r\n\r\n".encode())
    assert pf.got["mail"][1] == ["BODY=8BITMIME", "SMTPUTF8"]


@pytest.fixture
def server(tmp_path):
    pf = ScriptedPostfix()
    mxdeliv.Handler.settings = load({"MAIL_DOMAIN": "relay-b.test", "MAX_MESSAGE_SIZE": "1M",
                                     "MAX_RECIPIENTS": "10"})
    mxdeliv.Handler.smtp_factory = staticmethod(pf)
    path = tmp_path / "http.sock"
    srv = unixhttp.Server(str(path), mxdeliv.Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()

    def request(method, url="/mxdeliv", headers=(), body=b"", length=None):
        conn = http.client.HTTPConnection("localhost")
        conn.sock = socket.socket(socket.AF_UNIX)
        conn.sock.connect(str(path))
        conn.putrequest(method, url)
        for name, value in headers:
            conn.putheader(name, value)
        if method == "POST":
            conn.putheader("Content-Length", str(len(body) if length is None else length))
        try:
            conn.endheaders(body if method == "POST" else None)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the helper answered an early refusal and closed: its answer is there
        resp = conn.getresponse()
        payload = json.loads(resp.read() or b"{}")
        conn.close()
        return resp.status, payload

    yield request, pf
    srv.shutdown()
    srv.server_close()


def test_http_answers(server):
    request, pf = server
    ok = [("X-Mail-From", "a@relay-a.test"), ("X-Mail-To", "b@relay-b.test"),
          ("X-Mail-To", "c@relay-b.test")]
    status, payload = request("POST", headers=ok, body=b"Subject: x\r\n\r\nhi\r\n")
    assert (status, payload["accepted"]) == (200, ["b@relay-b.test", "c@relay-b.test"])
    assert pf.got["rcpt"] == ["b@relay-b.test", "c@relay-b.test"]
    assert request("POST", headers=ok[:1], body=b"x")[0] == 400
    assert request("POST", headers=ok, body=b"")[0] == 400
    # (nginx refuses such bodies before; the helper does not read them either)
    assert request("POST", headers=ok, length=1024 * 1024 + 65 * 1024)[0] == 413
    assert request("GET")[0] == 405
    assert request("POST", url="/other", headers=ok, body=b"x")[0] == 404


def test_the_reference_relays_requests(server):
    """No X-Mail-From (null sender), POST /mxdeliv/, a dot-stuffed body."""
    request, pf = server
    to = [("X-Mail-To", "b@relay-b.test")]
    status, payload = request("POST", url="/mxdeliv/", headers=to,
                              body=b"Subject: x\r\n\r\n..hi\r\n")
    assert (status, payload["accepted"]) == (200, ["b@relay-b.test"])
    assert pf.got["mail"][0] == ""
    assert pf.got["data"] == b"Subject: x\r\n\r\n.hi\r\n"  # smtplib stuffs it again
    status, payload = request("POST", headers=to, body=b"Subject: x\r\n\r\n.\r\nhi\r\n")
    assert status == 400 and "Invalid DATA" in payload["error"]
    assert request("GET", url="/mxdeliv/")[0] == 405
