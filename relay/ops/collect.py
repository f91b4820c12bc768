"""What a scrape measures at the time it is made, added to the helpers' own counters
(relay.ops.metrics): Postfix's queue, IMAP connections, the certificate served,
the DKIM record in DNS.

Everything here works for the exporter's unprivileged user (relaymetrics, a
member of postdrop for ``postqueue -j``): process names and TCP sockets are read
from /proc, the certificate from port 443 as a client sees it, the DKIM record
that start-up wrote to :data:`relay.paths.DKIM_RECORD` and the one DNS has.
A source that fails is left out and ``chatmail_metrics_source_up`` says so.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from relay import counters, paths
from relay.ops import probe
from relay.ops import queue as queue_mod
from relay.ops.dnszone import no_public_dns
from relay.settings import Settings
from relay.wire.tls import client_context

# IMAP's TCP ports: 993, and the loopback port behind the port 443 multiplexer
# (relay.boot.startup.context: proxied_imap_port; a unit test keeps them equal).
IMAP_PORTS = (993, 8993)
DKIM_CACHE_SECONDS = 300.0
CERT_CACHE_SECONDS = 300.0
Values = dict[counters.Key, float]


def put(values: Values, name: str, value: float, **labels: str) -> None:
    """Set one sample of ``values`` (label rules of relay.counters.key)."""
    values[counters.key(name, labels)] = float(value)


def queue_gauges(values: Values, now: float | None = None) -> None:
    """Messages per Postfix queue and the oldest one's age (``postqueue -j``, which
    the group postdrop may run). Raises RuntimeError when Postfix cannot be asked."""
    messages = queue_mod.read_queue()
    report = queue_mod.report(messages, {}, now)
    for name in counters.METRICS["chatmail_queue_messages"].labels["queue"]:
        put(values, "chatmail_queue_messages", report["queues"].get(name, 0), queue=name)
    put(values, "chatmail_queue_oldest_seconds", report["oldest_age_seconds"])


def process_names(proc: Path = Path("/proc")) -> list[str]:
    """The command name (``comm``) of every process in this container."""
    names = []
    for entry in os.scandir(proc):
        if entry.name.isdigit():
            try:
                names.append((proc / entry.name / "comm").read_text().strip())
            except OSError:
                pass
    return names


def established(ports: tuple[int, ...], proc: Path = Path("/proc/net")) -> int:
    """TCP connections in state ESTABLISHED whose local port is one of ``ports``."""
    count = 0
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "01" and \
                    int(fields[1].rsplit(":", 1)[1], 16) in ports:
                count += 1
    return count


def imap_gauges(values: Values) -> None:
    """active: one ``imap`` process per logged-in, non-hibernated client (Dovecot's
    imap service has client_limit 1); hibernated: IMAP connections without one of
    their own (held by imap-hibernate; includes clients still logging in)."""
    names = process_names()
    active = names.count("imap")
    clients = established(IMAP_PORTS)
    # A client on port 443 (ALPN imap) is one connection to 8993 behind nginx; its
    # 443 side is not counted, so no client is counted twice.
    hibernated = max(0, clients - active) if "imap-hibernate" in names else 0
    put(values, "chatmail_imap_connections", active, state="active")
    put(values, "chatmail_imap_connections", hibernated, state="hibernated")


_cert_cache: list[tuple[float, datetime]] = []


def certificate_gauge(values: Values) -> None:
    """Days left of the certificate port 443 serves (looked at every
    CERT_CACHE_SECONDS: a TLS handshake and ``openssl x509`` cost about 0.5 s)."""
    if not _cert_cache or time.monotonic() - _cert_cache[0][0] > CERT_CACHE_SECONDS:
        with socket.create_connection(("127.0.0.1", 443), 5) as raw:
            with client_context(verify=False).wrap_socket(raw) as tls:
                der = tls.getpeercert(binary_form=True) or b""
        not_after = datetime.fromisoformat(probe.describe_certificate(der)["not_after"])
        _cert_cache[:] = [(time.monotonic(), not_after)]
    left = (_cert_cache[0][1] - datetime.now(UTC)).total_seconds() / 86400
    put(values, "chatmail_certificate_days_left", round(left, 2))


_dkim_cache: dict[str, tuple[float, float]] = {}
_dkim_lock = threading.Lock()


def _p_value(record: str) -> str:
    """The ``p=`` tag of a DKIM key record, without spaces (RFC 6376 §3.6.1)."""
    match = re.search(r"(?:^|;)\s*p\s*=([^;]*)", record)
    return re.sub(r"\s+", "", match.group(1)) if match else ""


def dkim_gauge(values: Values, settings: Settings) -> None:
    """1 when the TXT record at <selector>._domainkey.<domain> carries our key;
    nothing for a domain without public DNS (IP literal, localhost)."""
    domain = settings.mail_domain
    if no_public_dns(domain):
        return
    with _dkim_lock:
        cached = _dkim_cache.get(domain)
        if cached is None or time.monotonic() - cached[0] > DKIM_CACHE_SECONDS:
            import dns.exception
            import dns.resolver
            selector, _, record = paths.DKIM_RECORD.read_text().strip().partition(" ")
            expected = _p_value(record)
            try:
                answer = dns.resolver.Resolver().resolve(
                    f"{selector}._domainkey.{domain}", "TXT", lifetime=5, search=False)
                found = {_p_value(b"".join(r.strings).decode("ascii", "replace")) for r in answer}
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                found = set()
            except dns.exception.DNSException:
                raise RuntimeError("DNS lookup failed") from None
            cached = (time.monotonic(), 1.0 if expected and expected in found else 0.0)
            _dkim_cache[domain] = cached
    put(values, "chatmail_dkim_record_published", cached[1])


def collect(settings: Settings, root: Path = counters.ROOT) -> Values:
    """Every value of one scrape: the helpers' files plus what is measured now."""
    values, readable = counters.read_all(root)
    for service, ok in readable.items():
        put(values, "chatmail_metrics_source_up", 1 if ok else 0, source=service)
    sources = {
        "queue": lambda: queue_gauges(values),
        "imap": lambda: imap_gauges(values),
        "certificate": lambda: certificate_gauge(values),
        "dkim": lambda: dkim_gauge(values, settings),
    }
    for source, measure in sources.items():
        try:
            measure()
            ok = True
        except Exception:  # one failing source must not cost the whole scrape
            ok = False
        put(values, "chatmail_metrics_source_up", 1 if ok else 0, source=source)
    return values
