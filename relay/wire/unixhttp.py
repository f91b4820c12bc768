"""A threaded HTTP server on a UNIX socket, for the helpers nginx proxies to
(relay.accounts.signup for /new, relay.federation.mxdeliv for /mxdeliv)."""

from __future__ import annotations

import json
import logging
import socketserver
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from relay.wire.listen import open_to_group, replace_socket


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A threaded HTTP server on a UNIX socket (one thread per connection, daemon threads)."""
    daemon_threads = True

    def get_request(self):
        """Accept a connection; its client address is ``("-", 0)``, since a UNIX socket has none
        (nginx knows the client's address; we do not keep it).
        """
        request, _ = super().get_request()
        return request, ("-", 0)  # no client address on a UNIX socket (nginx knows it)


class QuietHandler(BaseHTTPRequestHandler):
    """Base of the handlers nginx proxies to: no client address (a UNIX socket has none, and we
    keep none), no line per request in the logs, and :meth:`send_body` for a whole answer.
    """
    server_version = "chatmail"
    sys_version = ""

    def address_string(self) -> str:
        """The client's address for http.server's messages: always "-"."""
        return "-"

    def log_message(self, format: str, *args) -> None:
        """Log nothing per request (no client addresses or request lines in the logs)."""

    def send_body(self, status: int, body: bytes, content_type: str,
                  extra: dict[str, str] | None = None) -> None:
        """Send one answer: ``status``, ``Content-Type``, ``Content-Length``,
        ``Cache-Control: no-store``, the ``extra`` headers, then ``body`` (not for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own error answers (a malformed request, a method this handler has no
        ``do_`` for) as the JSON ``{"error": ...}`` our answers use, not its HTML page; the
        connection closes after it. A method not served is 405 with ``Allow`` (RFC 9110
        §15.5.6), not http.server's 501."""
        extra = {"Connection": "close"}
        if code == HTTPStatus.NOT_IMPLEMENTED and self.command:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"method {self.command} not allowed here"
            extra["Allow"] = ", ".join(sorted(name[3:] for name in dir(self) if name.startswith("do_")))
        self.close_connection = True
        reason = message or HTTPStatus(code).phrase
        self.send_body(code, json.dumps({"error": reason}).encode(), "application/json", extra)


def serve(handler: type[BaseHTTPRequestHandler], path: Path, log: logging.Logger) -> None:
    """Serve for ever; who may connect is decided by the socket directory's group."""
    replace_socket(path)
    with Server(str(path), handler) as server:
        open_to_group(path)
        log.info("serving %s", path)
        server.serve_forever()


def run_service(program: str, handler: Any, path: Path) -> None:
    """The main() of a helper that nginx proxies to: read the settings, set up its logging
    and counters under ``program``, give ``handler`` (a BaseHTTPRequestHandler class with a
    ``settings`` attribute) the settings, and serve ``path`` for ever."""
    from relay import counters, logs, settings
    values = settings.from_environment()
    log = logs.setup(program, values.log_level, values.log_format)
    counters.setup(program)
    handler.settings = values
    serve(handler, path, log)
