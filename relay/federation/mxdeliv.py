"""``POST /mxdeliv``: other relays deliver mail to our users over HTTPS (SPEC §1).

nginx terminates TLS, caps the body size and passes the request over a UNIX
socket. We speak SMTP to Postfix's ``mxdeliv`` service (a UNIX socket in
Postfix's ``public/`` directory), which is configured like port 25: unknown
recipients are refused at RCPT, and the message passes the same incoming
filter and DKIM check before it is queued on /data::

    nginx --> relay.federation.mxdeliv --> Postfix mxdeliv --> relay.filter (incoming) --> reinject-in --> queue

The request is the reference relays' (filtermail 0.7, ``http_server.rs``): at most
one ``X-Mail-From`` (none, empty or ``<>``: the null sender), one ``X-Mail-To`` per
recipient, the body in SMTP transmission form (lines dot-stuffed as between DATA and
the final dot, which is left out); ``POST /mxdeliv/`` (older relays) is the same.

We answer 200 only after Postfix has queued the message, so nothing we accept
is lost. Answers, each with a small JSON body:

    200  queued for every recipient listed in "accepted" ("refused": the others)
    400  bad request: X-Mail-From repeated, no X-Mail-To, bad address, a lone "." line
    403  refused by policy, e.g. not encrypted (523) or no valid DKIM signature
    404  none of the recipients exists here
    413  too large
    503  temporary trouble: the sender should try again (or use SMTP)
"""

from __future__ import annotations

import json
import logging
import re
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from relay import counters, paths
from relay.settings import Settings
from relay.wire import unixhttp
from relay.wire.unixsmtp import UnixSMTP, recipients_and_data

log = logging.getLogger("relay-mxdeliv")

MAX_CONCURRENT = 32           # requests handled at once; more get 503
_ADDRESS = re.compile(r"[^\s<>@]+@[^\s<>@]+")


@dataclass
class Answer:
    """What relay-mxdeliv answers: the HTTP ``status`` and the JSON ``payload`` (e.g. ``{"accepted":
    [...], "refused": {...}}`` or ``{"error": "..."}``).
    """
    status: int
    payload: dict = field(default_factory=dict)


def bad_request(reason: str) -> Answer:
    """A 400 answer with ``{"error": reason}``."""
    return Answer(400, {"error": reason})


def _address(value: str) -> str | None:
    """An address from a header value, with or without angle brackets."""
    value = value.strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    if len(value) > 320 or not _ADDRESS.fullmatch(value):
        return None
    return value


def _utf8(value: str) -> str:
    """http.server decodes header bytes as Latin-1; addresses may be UTF-8 (SMTPUTF8)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def parse_envelope(mail_from: list[str], mail_to: list[str],
                   max_recipients: int) -> tuple[str, list[str]] | Answer:
    """(sender, recipients) from the X-Mail-From and X-Mail-To header values, or a 400.
    No X-Mail-From is the null sender (the reference relays leave it out for bounces)."""
    mail_from = [_utf8(v) for v in mail_from]
    mail_to = [_utf8(v) for v in mail_to]
    if len(mail_from) > 1:
        return bad_request("at most one X-Mail-From header is allowed")
    raw_from = mail_from[0].strip() if mail_from else ""
    if raw_from in ("", "<>"):
        sender = ""  # the null sender of delivery status reports
    else:
        parsed = _address(raw_from)
        if parsed is None:
            return bad_request("X-Mail-From is not an address")
        sender = parsed
    if not mail_to:
        return bad_request("at least one X-Mail-To header is required")
    if len(mail_to) > max_recipients:
        return bad_request(f"more than {max_recipients} recipients")
    recipients: list[str] = []
    for value in mail_to:
        parsed = _address(value)
        if parsed is None:
            return bad_request("an X-Mail-To header is not an address")
        if parsed.lower() not in (r.lower() for r in recipients):
            recipients.append(parsed)
    return sender, recipients


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"


def data_answer(code: int, text: bytes | str, accepted: list[str],
                refused: dict[str, str]) -> Answer:
    """Our answer for Postfix's reply to the end of DATA."""
    reply = _reply(code, text)
    if code == 250:
        return Answer(200, {"accepted": accepted, "refused": refused})
    if 400 <= code < 500:
        return Answer(503, {"error": reply})
    if code == 552 or " 5.3.4 " in reply:
        return Answer(413, {"error": reply})
    if code == 554 and " 5.6." in reply:
        return Answer(400, {"error": reply})
    # 523 (not encrypted), 5.7.x (DKIM, policy) and any other permanent refusal.
    return Answer(403, {"error": reply})


def _normalize(data: bytes) -> bytes:
    """CRLF line ends, as on the wire (smtplib sends bytes as they are)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


_LONE_DOT = re.compile(rb"(?:^|\n)\.\r?(?:\n|$)")


def from_transmission_form(body: bytes) -> bytes | None:
    """The message in a request body that is in SMTP transmission form (RFC 5321
    §4.5.2, as the reference relays post it): one leading dot taken off each line
    that has one. None when a line holds only a dot (the end of DATA cannot be
    part of it; the reference refuses it with ``500 Invalid DATA``)."""
    if _LONE_DOT.search(body):
        return None
    return re.sub(rb"(^|\n)\.", rb"\1", body)


def deliver(smtp_factory: Callable[[], smtplib.SMTP], sender: str, recipients: list[str],
            data: bytes) -> Answer:
    """Hand one message to Postfix's mxdeliv service; map its replies to our answer."""
    options = []
    if any(b > 0x7F for b in data):
        options.append("BODY=8BITMIME")
    if not (sender + "".join(recipients)).isascii():
        options.append("SMTPUTF8")
    try:
        with smtp_factory() as smtp:
            smtp.connect()
            smtp.ehlo("mxdeliv")
            code, text = smtp.mail(sender, options)
            if code != 250:
                smtp.rset()
                if 400 <= code < 500:
                    return Answer(503, {"error": _reply(code, text)})
                return Answer(403, {"error": _reply(code, text)})
            accepted, refused, end = recipients_and_data(smtp, recipients, _normalize(data), _reply)
            if end is None:
                if any(r.startswith("4") for r in refused.values()):
                    return Answer(503, {"error": "recipients temporarily refused",
                                        "refused": refused})
                return Answer(404, {"error": "no valid recipient", "refused": refused})
            return data_answer(*end, accepted, refused)
    except (OSError, smtplib.SMTPException) as exc:
        log.error("handing the message to Postfix failed: %s", exc)
        return Answer(503, {"error": "temporary failure, please try again"})


class Handler(unixhttp.QuietHandler):
    """HTTP handler of relay-mxdeliv on the UNIX socket nginx proxies ``/mxdeliv`` to: POST delivers
    (see the module's answers), GET and HEAD get 405, other paths 404. One request per
    connection; at most MAX_CONCURRENT deliveries at once (more get 503).
    """
    protocol_version = "HTTP/1.1"
    settings: Settings  # set by main() before the server starts
    slots = threading.BoundedSemaphore(MAX_CONCURRENT)
    smtp_factory: Callable[[], smtplib.SMTP] = staticmethod(lambda: UnixSMTP(paths.MXDELIV_POSTFIX))

    def _answer(self, answer: Answer, extra: dict | None = None) -> None:
        body = json.dumps(answer.payload).encode() + b"\n"
        if self.command == "POST":
            counters.inc("chatmail_mxdeliv_requests_total", status=str(answer.status))
        self.send_body(answer.status, body, "application/json", extra)

    def _not_here(self) -> bool:
        if self.path.split("?")[0] not in ("/mxdeliv", "/mxdeliv/"):
            self.close_connection = True
            self._answer(Answer(404, {"error": "not found"}))
            return True
        return False

    def do_GET(self) -> None:
        """GET or HEAD ``/mxdeliv``: 405 with ``Allow: POST`` (the reference relays answer 405 too);
        404 for any other path.
        """
        if not self._not_here():
            self.close_connection = True
            self._answer(Answer(405, {"error": "POST only"}), {"Allow": "POST"})

    do_HEAD = do_GET

    def do_POST(self) -> None:
        """POST ``/mxdeliv``: check the length (411 without Content-Length, 413 above the body
        limit), the envelope headers (400, :func:`parse_envelope`) and the body (400 when empty
        or short), then hand the message to Postfix (:func:`deliver`) and answer its verdict; 503
        when MAX_CONCURRENT deliveries are running. Logs one line: sender's domain, status,
        recipients accepted.
        """
        self.close_connection = True  # one request per connection: nginx opens a new one
        if self._not_here():
            return
        limit = self.settings.body_limit  # as nginx's client_max_body_size
        length_text = self.headers.get("Content-Length", "")
        if not length_text.isdigit():
            return self._answer(Answer(411, {"error": "Content-Length is required"}))
        length = int(length_text)
        if length > limit:
            return self._answer(Answer(413, {"error": "message too large"}))
        envelope = parse_envelope(self.headers.get_all("X-Mail-From") or [],
                                  self.headers.get_all("X-Mail-To") or [],
                                  self.settings.max_recipients)
        if isinstance(envelope, Answer):
            return self._answer(envelope)
        if length == 0:
            return self._answer(bad_request("the body must be the message"))
        body = self.rfile.read(length)
        if len(body) != length:
            return self._answer(bad_request("the body ended early"))
        data = from_transmission_form(body)
        if data is None:
            return self._answer(bad_request("500 5.6.0 Invalid DATA: a line holds only a dot "
                                            "(the body is in SMTP transmission form)"))
        if not self.slots.acquire(blocking=False):
            log.warning("too many deliveries at once: answering 503")
            return self._answer(Answer(503, {"error": "busy, please try again"}))
        try:
            answer = deliver(self.smtp_factory, *envelope, data)
        finally:
            self.slots.release()
        sender, recipients = envelope
        detail = answer.payload.get("error", "")
        log.info("mxdeliv from %s: %d (%d of %d recipients accepted)%s",
                 sender.rpartition("@")[2] or "<>", answer.status,
                 len(answer.payload.get("accepted", [])), len(recipients),
                 f": {detail}" if detail else "")
        self._answer(answer)


def main() -> None:
    """relay-mxdeliv: read the settings and serve ``paths.MXDELIV_SOCKET`` for ever (threaded)."""
    unixhttp.run_service("relay-mxdeliv", Handler, paths.MXDELIV_SOCKET)


if __name__ == "__main__":
    main()
