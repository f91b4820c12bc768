"""A threaded HTTP server on a UNIX socket, for the helpers nginx proxies to
(relay.accounts.signup for /new, relay.federation.mxdeliv for /mxdeliv)."""

from __future__ import annotations

import logging
import os
import socketserver
from http.server import BaseHTTPRequestHandler
from pathlib import Path


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A threaded HTTP server on a UNIX socket (one thread per connection, daemon threads)."""
    daemon_threads = True

    def get_request(self):
        """Accept a connection; its client address is ``("-", 0)``, since a UNIX socket has none
        (nginx knows the client's address; we do not keep it).
        """
        request, _ = super().get_request()
        return request, ("-", 0)  # no client address on a UNIX socket (nginx knows it)


def serve(handler: type[BaseHTTPRequestHandler], path: Path, log: logging.Logger) -> None:
    """Serve for ever; who may connect is decided by the socket directory's group."""
    path.unlink(missing_ok=True)
    with Server(str(path), handler) as server:
        os.chmod(path, 0o666)
        log.info("serving %s", path)
        server.serve_forever()
