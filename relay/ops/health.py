"""The container health check: healthy only when SMTP, IMAP and HTTPS answer.

Run by Docker (HEALTHCHECK in the image) as ``python3 -m relay.ops.health``.
Each probe speaks the protocol far enough to see a real answer: the SMTP
banner on 25, the IMAP greeting over TLS on 993, an HTTP status over TLS on 443.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from relay.wire.tls import client_context

TIMEOUT = 3.0
# Once healthy, the protocol probes run at most this often; in between, the
# check only confirms the ports still listen (no connection, so no log lines
# from Postfix and Dovecot every few seconds).
FULL_PROBE_INTERVAL = 60.0
LAST_OK = Path("/run/relay/health-ok")
PORTS = {"smtp": 25, "imap": 993, "https": 443}


def smtp(host: str = "127.0.0.1", port: int = 25) -> str:
    """Probe SMTP on ``host``:``port``: the banner must start with 220; returns it, raises
    RuntimeError for another answer or OSError (TIMEOUT seconds) when nothing answers.
    """
    with socket.create_connection((host, port), TIMEOUT) as sock:
        banner = sock.recv(512).decode("ascii", "replace")
        sock.sendall(b"QUIT\r\n")
    if not banner.startswith("220"):
        raise RuntimeError(f"unexpected banner {banner.strip()!r}")
    return banner.strip()


def imap(host: str = "127.0.0.1", port: int = 993) -> str:
    """Probe IMAP over implicit TLS (certificate not checked): the greeting must start with
    ``* OK``; returns it, raises RuntimeError or OSError/ssl.SSLError.
    """
    with socket.create_connection((host, port), TIMEOUT) as raw:
        with client_context(verify=False).wrap_socket(raw) as sock:
            greeting = sock.recv(512).decode("ascii", "replace")
            sock.sendall(b"a LOGOUT\r\n")
    if not greeting.startswith("* OK"):
        raise RuntimeError(f"unexpected greeting {greeting.strip()!r}")
    return greeting.strip()


def https(host: str = "127.0.0.1", port: int = 443) -> str:
    """Probe HTTPS (certificate not checked): ``HEAD /`` must get ``HTTP/1.1 200``; returns the
    status line, raises RuntimeError or OSError/ssl.SSLError.
    """
    with socket.create_connection((host, port), TIMEOUT) as raw:
        with client_context(verify=False).wrap_socket(raw) as sock:
            sock.sendall(b"HEAD / HTTP/1.0\r\nHost: localhost\r\n\r\n")
            status = sock.recv(512).decode("ascii", "replace").split("\r\n", 1)[0]
    if not status.startswith("HTTP/1.1 200"):
        raise RuntimeError(f"unexpected status {status!r}")
    return status


PROBES = {"smtp": smtp, "imap": imap, "https": https}


def check() -> dict[str, str | None]:
    """Map each probe to None when it passed, or to the reason it failed."""
    failures: dict[str, str | None] = {}
    for name, probe in PROBES.items():
        try:
            probe()
            failures[name] = None
        except Exception as exc:
            failures[name] = f"{type(exc).__name__}: {exc}"
    return failures


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state, from /proc (IPv4 and IPv6)."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


def recently_ok() -> bool:
    """True when the full probes passed less than FULL_PROBE_INTERVAL seconds ago (the mtime of
    LAST_OK) and the three ports still listen.
    """
    try:
        age = time.time() - LAST_OK.stat().st_mtime
    except FileNotFoundError:
        return False
    return 0 <= age < FULL_PROBE_INTERVAL and set(PORTS.values()) <= listening_ports()


def main(full: bool = False) -> int:
    """The health check: 0 and "healthy: ..." when every probe passes (or, unless ``full``, passed
    within the last minute and the ports still listen), else 1 and "unhealthy: " with each failed
    probe's reason.
    """
    if not full and recently_ok():
        print("healthy: ports listen; protocols answered within the last minute")
        return 0
    results = check()
    bad = {k: v for k, v in results.items() if v}
    if bad:
        LAST_OK.unlink(missing_ok=True)
        print("unhealthy: " + "; ".join(f"{k} {v}" for k, v in bad.items()))
        return 1
    try:
        LAST_OK.touch()
        os.utime(LAST_OK)
    except OSError:
        pass
    print("healthy: smtp imap https answer")
    return 0


if __name__ == "__main__":
    sys.exit(main(full="--full" in sys.argv))
