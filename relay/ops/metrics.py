"""relay-metrics: serves ``GET /metrics`` on METRICS_LISTEN (Prometheus text format).

Runs only when METRICS_LISTEN is set (supervisord.conf.j2), as the user
relaymetrics: a member of the group that may read the helpers' counter files
(relay.ops.metrics) and of postdrop (``postqueue -j``), nothing else. Every
scrape reads the files and measures the rest anew (relay.ops.collect); a scrape
that arrives while another runs waits for it, so at most one runs at a time.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from relay import counters, logs
from relay import settings as settings_mod
from relay.ops import collect
from relay.settings import Settings
from relay.settings.parsers import split_listen

log = logging.getLogger("relay-metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Handler(BaseHTTPRequestHandler):
    """``GET /metrics`` (or ``/``): 200 with the text format; anything else 404."""
    server_version = "chatmail-metrics"
    sys_version = ""
    settings: Settings
    lock = threading.Lock()

    def log_message(self, format: str, *args) -> None:
        """No line per request (it would name the scraper's address)."""
        pass

    def do_GET(self) -> None:
        """Answer a scrape: every value collected now (relay.ops.collect)."""
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        with self.lock:
            body = counters.exposition(collect.collect(self.settings))
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    """A thread per connection; the threads never hold up the process's exit."""
    daemon_threads = True


def make_server(listen: str) -> Server:
    """A server bound to ``listen`` (ADDRESS:PORT, IPv6 in brackets)."""
    host, port = split_listen(listen)

    class Bound(Server):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return Bound((host, port), Handler)


def main() -> None:
    """relay-metrics: serve METRICS_LISTEN for ever; exit 1 when it is empty."""
    settings = settings_mod.from_environment()
    logs.setup("relay-metrics", settings.log_level, settings.log_format)
    if not settings.metrics_listen:
        log.error("METRICS_LISTEN is empty: nothing to serve")
        raise SystemExit(1)
    Handler.settings = settings
    server = make_server(settings.metrics_listen)
    log.info("serving Prometheus metrics on http://%s/metrics", settings.metrics_listen)
    server.serve_forever()


if __name__ == "__main__":
    main()


def command(args) -> int:
    """``relayctl metrics [--json]``: what a scrape of METRICS_LISTEN answers."""
    import json
    values = collect.collect(settings_mod.from_environment())
    if args.json:
        print(json.dumps({"metrics": counters.samples(values)}, indent=2))
    else:
        print(counters.exposition(values).decode(), end="")
    return 0
