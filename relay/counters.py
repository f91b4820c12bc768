"""The relay's counters and gauges, as Prometheus reads them (``METRICS_LISTEN``,
``relayctl metrics``).

Recording, in any helper (cheap: a dict update, and a small file rewrite at most
once a second)::

    from relay import counters
    counters.setup("relay-filter")                      # once, in main()
    counters.inc("chatmail_messages_total", direction="incoming", outcome="refused",
                reason="unencrypted")
    counters.set_gauge("chatmail_push_pending", 3)

Every metric is declared once in :data:`METRICS` with its labels and the values
each label may take. A value outside that list is recorded as ``other``, so no
label can ever carry an address, an IP or any other free text; a name that is
not declared raises ``KeyError`` (a unit test catches the typo).

Each process keeps its values in memory and writes them to its own file,
``/run/relay/metrics/<service>/values.json`` (see :data:`SERVICES`): the
directory belongs to the helper's own user and the group ``relaymetrics``, mode
0750, so only the helper and the exporter reach the file inside (mode 0644: the
directory is the gate, because a container without CAP_FSETID cannot make a
set-group-id directory for a group root is not in). The exporter
(``relay.ops.metrics``: the program relay-metrics, user relaymetrics) and
``relayctl metrics`` (root) read
every file and add what is measured at scrape time (``relay.ops.collect``). A
helper that restarts goes on counting from the values in its file; the files
live on /run, so counters start at zero with the container (Prometheus expects
counter resets).

To add a metric: a row in :data:`METRICS`. A new helper process that records:
a row in :data:`SERVICES` (its name and Unix user) and ``counters.setup(name)``
(a short-lived one, e.g. a relayctl command run as root, too: its values are
written at exit).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay import paths

ROOT = paths.METRICS
FILE = "values.json"
WRITE_INTERVAL = 1.0   # seconds: at most one file write per process and second
OTHER = "other"

# service (the process's name) -> the Unix user it runs as (owner of its directory)
SERVICES: dict[str, str] = {
    "relay-auth": "relayauth",
    "relay-signup": "relaysignup",
    "relay-filter": "relayfilter",
    "relay-mxdeliv": "relaymxdeliv",
    "relay-mxsend": "relaymxsend",
    "relay-metadata": "relaypush",
}
GROUP = "relaymetrics"


@dataclass(frozen=True)
class Metric:
    """One metric: ``kind`` is ``counter`` or ``gauge``; ``labels`` maps each label
    name to the values it may take (anything else becomes ``other``)."""
    name: str
    kind: str
    help: str
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)


MESSAGE_REASONS = ("none", "unencrypted", "dkim", "sender", "malformed", "too_large",
                   "rate_limit", "recipient", "temporary")
# the reasons of relay.accounts.events.REASONS
ACCOUNT_REFUSALS = ("closed", "invite_missing", "invite_unknown", "invite_expired", "disabled",
                    "load", "memory", "disk", "bad_address", "short_password")
HTTP_STATUSES = ("200", "400", "403", "404", "405", "411", "413", "503")

METRICS: dict[str, Metric] = {m.name: m for m in (
    # counters, recorded by the helpers
    Metric("chatmail_messages_total", "counter",
           "Messages the filter decided on, by direction, outcome and reason (Postfix's own "
           "refusals before the filter, e.g. unknown recipients, are not counted)",
           {"direction": ("incoming", "outgoing"),
            "outcome": ("accepted", "refused", "deferred"), "reason": MESSAGE_REASONS}),
    Metric("chatmail_federation_recipients_total", "counter",
           "Recipients of other domains handled by relay-mxsend, by path and outcome",
           {"path": ("https", "smtp", "none"), "outcome": ("delivered", "deferred", "bounced")}),
    Metric("chatmail_mxdeliv_requests_total", "counter",
           "POST /mxdeliv requests from other relays, by HTTP status of our answer",
           {"status": HTTP_STATUSES}),
    Metric("chatmail_push_notifications_total", "counter",
           "Attempts to hand a notification to the push gateway, by outcome",
           {"outcome": ("sent", "retry", "dropped", "given_up")}),
    Metric("chatmail_accounts_created_total", "counter", "Accounts created",
           {"via": ("new", "login", "import")}),
    Metric("chatmail_account_refusals_total", "counter",
           "Account creations refused (first login or /new), by reason",
           {"reason": ACCOUNT_REFUSALS}),
    Metric("chatmail_signups_total", "counter", "POST /new answers, by outcome",
           {"outcome": ("served", "refused")}),
    # gauges, set by the helpers
    Metric("chatmail_accounts", "gauge", "Accounts on this relay"),
    Metric("chatmail_push_pending", "gauge", "Notifications not yet accepted by the gateway"),
    # gauges measured at scrape time (relay.ops.collect)
    Metric("chatmail_queue_messages", "gauge", "Messages in Postfix's queue, by queue",
           {"queue": ("deferred", "active", "incoming", "hold", "maildrop")}),
    Metric("chatmail_queue_oldest_seconds", "gauge",
           "Age of the oldest message in Postfix's queue (0 when empty)"),
    Metric("chatmail_imap_connections", "gauge",
           "IMAP connections: active (an imap process each) and hibernated",
           {"state": ("active", "hibernated")}),
    Metric("chatmail_certificate_days_left", "gauge",
           "Days until the certificate served on port 443 expires (negative: expired)"),
    Metric("chatmail_dkim_record_published", "gauge",
           "1 when DNS has this relay's DKIM key at <selector>._domainkey, else 0"),
    Metric("chatmail_metrics_source_up", "gauge",
           "1 when a source of these metrics could be read at this scrape, else 0",
           {"source": ("queue", "imap", "certificate", "dkim", *SERVICES)}),
)}

Key = tuple[str, tuple[tuple[str, str], ...]]   # (name, sorted label pairs)


def key(name: str, labels: dict[str, str]) -> Key:
    """The canonical key of one sample. Raises KeyError for an undeclared metric and
    ValueError for missing or unknown label names; label values outside the
    declared ones become ``other``."""
    metric = METRICS[name]
    if set(labels) != set(metric.labels):
        raise ValueError(f"{name} takes the labels {sorted(metric.labels)}, got {sorted(labels)}")
    pairs = tuple(sorted((label, value if value in metric.labels[label] else OTHER)
                         for label, value in ((k, str(v)) for k, v in labels.items())))
    return name, pairs


class Recorder:
    """One process's values; written to ``path`` (None: memory only) at most every
    ``WRITE_INTERVAL`` seconds, the last change always within that time."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.values: dict[Key, float] = {}
        self.lock = threading.Lock()
        self.write_lock = threading.Lock()   # one file write at a time (timer and caller)
        self.last_write = 0.0
        self.timer: threading.Timer | None = None
        if path is not None:
            self.values.update((k, v) for k, v in load(path).items()
                               if METRICS[k[0]].kind == "counter")

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` with ``labels`` (see :func:`key`)."""
        k = key(name, labels)
        with self.lock:
            self.values[k] = self.values.get(k, 0.0) + amount
        self._changed()

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set the gauge ``name`` with ``labels`` to ``value``."""
        k = key(name, labels)
        with self.lock:
            self.values[k] = float(value)
        self._changed()

    def _changed(self) -> None:
        if self.path is None:
            return
        with self.lock:
            wait = self.last_write + WRITE_INTERVAL - time.monotonic()
            if wait > 0:
                if self.timer is None:
                    self.timer = threading.Timer(wait, self.write)
                    self.timer.daemon = True
                    self.timer.start()
                return
        self.write()

    def write(self) -> None:
        """Write the values now (atomically: a reader sees the old or the new file)."""
        if self.path is None:
            return
        with self.lock:
            self.timer = None
            self.last_write = time.monotonic()
            rows = [[name, dict(pairs), value] for (name, pairs), value in self.values.items()]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with self.write_lock:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                with os.fdopen(fd, "w") as f:
                    json.dump({"written": time.time(), "values": rows}, f)
                os.replace(tmp, self.path)
            except OSError:
                pass  # metrics never stop mail: the next change tries again


def load(path: Path) -> dict[Key, float]:
    """The values in one file; {} when it is missing or unreadable. Rows of metrics
    that are no longer declared are left out."""
    try:
        rows = json.loads(path.read_text())["values"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    values: dict[Key, float] = {}
    for row in rows:
        try:
            name, labels, value = row
            values[key(name, labels)] = float(value)
        except (KeyError, ValueError, TypeError):
            continue
    return values


_recorder = Recorder()


def setup(service: str, root: Path = ROOT) -> Recorder:
    """Make this process record into ``root/<service>/values.json`` (the directory
    is made at start-up, see :data:`SERVICES`); returns the recorder."""
    global _recorder
    directory = root / service
    _recorder = Recorder(directory / FILE if directory.is_dir() else None)
    atexit.register(_recorder.write)  # a short-lived process keeps its last changes too
    return _recorder


def inc(name: str, amount: float = 1.0, **labels: str) -> None:
    """Add ``amount`` to a counter (see :func:`key` for the label rules)."""
    _recorder.inc(name, amount, **labels)


def set_gauge(name: str, value: float, **labels: str) -> None:
    """Set a gauge to ``value``."""
    _recorder.set(name, value, **labels)


def recorded() -> dict[Key, float]:
    """This process's values (for tests)."""
    with _recorder.lock:
        return dict(_recorder.values)


def read_all(root: Path = ROOT) -> tuple[dict[Key, float], dict[str, bool]]:
    """Every helper's values, counters of the same key summed, and for each service
    whether its file could be read (a helper that has recorded nothing yet has none)."""
    values: dict[Key, float] = {}
    readable: dict[str, bool] = {}
    for service in SERVICES:
        path = root / service / FILE
        found = load(path)
        readable[service] = bool(found) or not path.exists()
        for k, v in found.items():
            values[k] = values.get(k, 0.0) + v if METRICS[k[0]].kind == "counter" else v
    return values, readable


def samples(values: dict[Key, float]) -> list[dict[str, Any]]:
    """Every declared metric in declaration order, as ``{"name", "type", "help",
    "samples": [{"labels", "value"}]}``; a counter without labels shows 0 when nothing
    was recorded, a gauge nothing (not measured)."""
    out = []
    for name, metric in METRICS.items():
        rows = [(dict(pairs), v) for (n, pairs), v in sorted(values.items()) if n == name]
        if not rows and not metric.labels and metric.kind == "counter":
            rows = [({}, 0.0)]
        out.append({"name": name, "type": metric.kind, "help": metric.help,
                    "samples": [{"labels": labels, "value": v} for labels, v in rows]})
    return out


def refresh_every(seconds: float, name: str, measure: Callable[[], float]) -> threading.Thread:
    """Set the gauge ``name`` to ``measure()`` now and every ``seconds`` from a daemon
    thread (for gauges that other processes change too, e.g. accounts deleted by expiry)."""
    def loop() -> None:
        while True:
            try:
                set_gauge(name, measure())
            except Exception:  # a failed measurement leaves the last value
                pass
            time.sleep(seconds)
    thread = threading.Thread(target=loop, name=f"gauge-{name}", daemon=True)
    thread.start()
    return thread


def message_outcome(reply: str) -> tuple[str, str]:
    """(outcome, reason) of the filter's SMTP reply to a message, for
    ``chatmail_messages_total``: 250 accepted; 523 unencrypted; 5.7.x with DKIM: dkim;
    553 or From problems: sender; 552 or 5.3.4: too_large; 5.6.x: malformed; 450 4.7.1:
    rate_limit; other 4xx deferred (temporary); other 5xx: other."""
    code, text = reply[:3], reply.lower()
    if code.startswith("2"):
        return "accepted", "none"
    if code == "523":
        return "refused", "unencrypted"
    if code.startswith("4"):
        return "deferred", "rate_limit" if " 4.7.1 " in reply[:10] else "temporary"
    if "dkim" in text:
        return "refused", "dkim"
    if code == "553" or "from" in text.split(":")[0]:
        return "refused", "sender"
    if code == "552" or " 5.3.4" in reply[:10]:
        return "refused", "too_large"
    if " 5.6." in reply[:10]:
        return "refused", "malformed"
    if " 5.1." in reply[:10]:
        return "refused", "recipient"
    return "refused", OTHER


def families(values: dict[Key, float]) -> list[Any]:
    """prometheus_client metric families (Debian's python3-prometheus-client) for
    ``values``: imported here, so helpers that only record never load it."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    out = []
    for family in samples(values):
        labels = sorted(METRICS[family["name"]].labels)
        cls = CounterMetricFamily if family["type"] == "counter" else GaugeMetricFamily
        metric = cls(family["name"], family["help"], labels=labels)
        for sample in family["samples"]:
            metric.add_metric([sample["labels"][label] for label in labels], sample["value"])
        out.append(metric)
    return out


class Snapshot:
    """A prometheus_client collector of fixed values (``generate_latest(Snapshot(v))``)."""

    def __init__(self, values: dict[Key, float]) -> None:
        self.values = values

    def collect(self) -> list[Any]:
        """The metric families, as prometheus_client's ``generate_latest`` asks for them."""
        return families(self.values)


def exposition(values: dict[Key, float]) -> bytes:
    """The Prometheus text format (version 0.0.4) of ``values``."""
    from prometheus_client.exposition import generate_latest
    return generate_latest(Snapshot(values))
