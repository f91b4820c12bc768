"""A threaded HTTP server on a UNIX socket, for the helpers nginx proxies to
(relay.accounts.signup for /new, relay.federation.mxdeliv for /mxdeliv)."""

from __future__ import annotations

import logging
import socketserver
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
