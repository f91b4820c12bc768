"""The HTTPS side of a reference chatmail relay, as the peer container runs it (Debian's
python3, standard library only): nginx in front of filtermail 0.7's ``/mxdeliv``, answering
exactly as /work/notes/reference-facts.md A.1 documents (filtermail ``http_server.rs``,
``smtp_server.rs``, ``inbound.rs``, ``error.rs``), with the real Postfix of the same
container behind it. Used by tests/support/refpeer.py; not imported by the tests.

Virtual hosts, by the request's Host (SNI gives the same names):

* ``mx.ref.test`` -- the reference relay. ``/mxdeliv`` and anything below it is filtermail
  (the reference's nginx has ``location /mxdeliv``, a prefix), every other path nginx's 404
  page. filtermail: 405 ``Method Not Allowed`` for anything but POST; a body over nginx's
  default ``client_max_body_size`` (1 MiB) gets nginx's HTML 413, one over
  ``max_message_size`` (MAX_SIZE here) ``413 552 Message exceeds maximum size``;
  ``X-Mail-From`` (first value; absent = the null sender) and every ``X-Mail-To``; the body
  must be in SMTP transmission form (``400 500 Invalid DATA``); unencrypted mail is refused
  with ``400 523 Encryption Needed: Invalid Unencrypted Mail`` (every recipient enforces
  encryption, as new reference accounts do; mailer-daemon reports and Secure-Join requests
  pass); no ``X-Mail-To`` at all: ``200 250 OK`` and the mail is dropped. What passes is
  re-injected unchanged into Postfix on 127.0.0.1:10026 (the reference's reinjection port);
  a refusal there is answered ``400 <Postfix's reply> (forwarded from 127.0.0.1:10026)``,
  a failed connection ``400 451 I/O error``; success ``200 250 OK``. No Content-Type on
  filtermail's answers, no marker header; ``Server: nginx``. DKIM is not verified here.
* ``mx.web.test`` -- a catch-all web site: ``200`` with an HTML page for every request.

One log line per request on stdout: ``refpeer-https: host=... POST /mxdeliv
from=<...>|absent to=N msgid=<...> -> 200 250 OK``.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import os
import re
import smtplib
import ssl
import sys

REF_HOSTS = {"mx.ref.test"}
WEB_HOSTS = {"mx.web.test"}
MAX_SIZE = int(os.environ.get("REFPEER_MAX_SIZE", "500000"))
NGINX_BODY_LIMIT = 1024 * 1024
REINJECT = ("127.0.0.1", 10026)
ENCRYPTION_NEEDED = "523 Encryption Needed: Invalid Unencrypted Mail"
NGINX_PAGE = ("<html>\r\n<head><title>{0}</title></head>\r\n<body>\r\n<center><h1>{0}</h1>"
              "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")
WEB_PAGE = ("<!DOCTYPE html>\n<html><head><title>Welcome</title></head>\n"
            "<body><h1>Welcome to our site</h1><p>Nothing to see here.</p></body></html>\n")


def valid_data(data: bytes) -> bool:
    """filtermail's ``is_valid_data``: ends with CRLF, no bare CR or LF, no lone dot line."""
    if not data.endswith(b"\r\n"):
        return False
    if re.search(rb"\r(?!\n)|(?<!\r)\n", data):
        return False
    return not (data.startswith(b".\r\n") or b"\r\n.\r\n" in data)


def from_address(value: str) -> str | None:
    match = re.search(r"<([^<>\s]+@[^<>\s]+)>", value) or re.fullmatch(r"\s*(\S+@\S+)\s*", value)
    return match.group(1) if match else None


def passes_encryption_check(msg, from_addr: str) -> bool:
    """Encrypted (PGP/MIME), a Secure-Join request, or a mailer-daemon report."""
    if msg.get_content_type() == "multipart/encrypted":
        return True
    if msg.get("Secure-Join", "").strip().lower() in ("vc-request", "vg-request"):
        return True
    return bool(msg.get("Auto-Submitted", "").strip()
                and from_addr.lower().startswith("mailer-daemon@")
                and msg.get_content_type() == "multipart/report")


def raw_reply(code: int, text: bytes) -> str:
    """An SMTP reply as it came over the wire (filtermail forwards it as read)."""
    lines = text.decode("utf-8", "replace").split("\n") or [""]
    return "".join(f"{code}{'-' if i < len(lines) - 1 else ' '}{line}\r\n"
                   for i, line in enumerate(lines))


def reinject(mail_from: str, rcpts: list[str], data: bytes) -> tuple[bool, str]:
    """Hand the message to Postfix as filtermail does: data as received, then ".";
    the first refusal wins (filtermail pipelines and reports the first error)."""
    forwarded = f" (forwarded from {REINJECT[0]}:{REINJECT[1]})"
    try:
        with smtplib.SMTP(*REINJECT, local_hostname="[127.0.0.1]", timeout=60) as smtp:
            smtp.ehlo()
            code, text = smtp.mail(mail_from)
            if code != 250:
                return False, raw_reply(code, text) + forwarded
            for rcpt in rcpts:
                code, text = smtp.rcpt(rcpt)
                if code not in (250, 251):
                    smtp.rset()
                    return False, raw_reply(code, text) + forwarded
            smtp.putcmd("data")
            code, text = smtp.getreply()
            if code != 354:
                return False, raw_reply(code, text) + forwarded
            smtp.send(data + b".\r\n")
            code, text = smtp.getreply()
            if code != 250:
                return False, raw_reply(code, text) + forwarded
    except (OSError, smtplib.SMTPException):
        return False, "451 I/O error"
    return True, "250 OK"


def filtermail(mail_from: str, rcpts: list[str], data: bytes) -> tuple[int, str, str]:
    """(HTTP status, body, Message-ID) for one POST, as filtermail 0.7 answers it."""
    if not valid_data(data):
        return 400, "500 Invalid DATA", ""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    msgid = str(msg.get("Message-ID", "")).strip()
    from_header = str(msg.get("From", "")).strip()
    from_addr = from_address(from_header)
    if from_addr is None:
        return 400, f"500 Invalid FROM header: {from_header}", msgid
    if mail_from.lower() != from_addr.lower():
        mail_from = ""  # filtermail re-injects such mail with the null sender
    if not passes_encryption_check(msg, from_addr) and rcpts:
        return 400, ENCRYPTION_NEEDED, msgid
    if not rcpts:
        return 200, "250 OK", msgid  # "Dropping mail; All recipients disabled."
    ok, reply = reinject(mail_from, rcpts, data)
    return (200 if ok else 400), reply, msgid


def log(text: str) -> None:
    """One line on stdout in a single write (Postfix writes its log there too)."""
    sys.stdout.buffer.write(f"refpeer-https: {text}\n".encode())
    sys.stdout.buffer.flush()


def visible_ascii(value: str) -> bool:
    return all(33 <= ord(c) <= 126 for c in value)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "nginx"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass

    def answer(self, status: int, body: str, ctype: str | None = None, note: str = "") -> None:
        raw = body.encode()
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        first = body.splitlines()[0] if body else ""
        log(f"host={self.host()} {self.command} {self.path}{note} -> {status} "
            f"{first if not ctype else ctype}")

    def host(self) -> str:
        return (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def handle_any(self) -> None:
        host = self.host()
        if host in WEB_HOSTS:
            self.body()
            return self.answer(200, WEB_PAGE, "text/html")
        if host not in REF_HOSTS or not self.path.startswith("/mxdeliv"):
            self.body()
            return self.answer(404, NGINX_PAGE.format("404 Not Found"), "text/html")
        if self.command != "POST":
            return self.answer(405, "Method Not Allowed")
        if int(self.headers.get("Content-Length") or 0) > NGINX_BODY_LIMIT:
            self.close_connection = True
            return self.answer(413, NGINX_PAGE.format("413 Request Entity Too Large"), "text/html")
        data = self.body()
        if len(data) > MAX_SIZE:
            return self.answer(413, "552 Message exceeds maximum size")
        froms = self.headers.get_all("X-Mail-From") or []
        mail_from = froms[0] if froms and visible_ascii(froms[0]) else ""
        rcpts = [v for v in self.headers.get_all("X-Mail-To") or [] if visible_ascii(v)]
        status, reply, msgid = filtermail(mail_from, rcpts, data)
        note = (f" from={('<' + froms[0] + '>') if froms else 'absent'} to={len(rcpts)} "
                f"msgid={msgid or '-'}")
        self.answer(status, reply, note=note)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, ctx: ssl.SSLContext) -> None:
        super().__init__(address, handler)
        self.ctx = ctx

    def finish_request(self, request, client_address):  # TLS in the request's own thread
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        self.RequestHandlerClass(tls, client_address, self)


def main() -> None:
    cert, key = sys.argv[1], sys.argv[2]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    server = Server(("0.0.0.0", 443), Handler, ctx)
    log("listening on 443")
    server.serve_forever()


if __name__ == "__main__":
    main()
