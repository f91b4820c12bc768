"""``relayctl queue``: what Postfix's queue holds, grouped by destination domain and
the reason delivery is deferred; ``relayctl queue retry [DOMAIN]`` tries again now.

The queue is read with ``postqueue -j`` (one JSON object per message: queue name,
arrival time, recipients with their ``delay_reason``). Every message for another
domain is delivered through relay-mxsend, so a deferral reason is mostly our own
reply (``451 4.4.1 No mail server of <domain> reachable: <last error>``) or the
remote server's reply passed on; Postfix wraps it as ``host relay-mxsend[...] said:
... (in reply to end of DATA command)``. What is shown never names a local part:
addresses in reasons are replaced by their domain.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from relay import paths

# reason class -> what an operator reads
CLASSES = {
    "dns": "DNS",
    "no-route": "no route",
    "connection-refused": "connection refused",
    "timeout": "timeout",
    "tls": "TLS/certificate",
    "refused": "refused with code",
    "local": "relay-mxsend unavailable",
    "other": "other",
    "waiting": "not tried yet",
}

_PATTERNS: tuple[tuple[str, re.Pattern], ...] = tuple((name, re.compile(rx, re.I)) for name, rx in (
    ("tls", r"certificate|CERTIFICATE_VERIFY|\bSSL|\bTLS|STARTTLS|handshake"),
    ("dns", r"MX lookup|does not exist|gaierror|Name or service not known|No address associated"
            r"|name resolution|NXDOMAIN|Host or domain name not found|DNS"),
    ("no-route", r"Network is unreachable|No route to host|unreachable"),
    ("connection-refused", r"Connection refused"),
    ("timeout", r"timed? ?out|Timeout"),
))
_OWN_REPLY = re.compile(r"^4\d\d 4\.(4\.[13]|3\.0) ")
_LOCAL = re.compile(r"relay-mxsend|mxsend/lmtp\.sock", re.I)
_PREFIX = re.compile(r"^(?:delivery temporarily suspended: )?(?:host \S+ said: )?", re.I)
_SUFFIX = re.compile(r"\s*\(in reply to [^)]*\)\s*$", re.I)
_ADDRESS = re.compile(r"<?[^\s<>@\"]+@([A-Za-z0-9.\[\]:_-]+)>?")
_CODE = re.compile(r"^([45]\d\d)\b")


def scrub(reason: str) -> str:
    """A delay reason without Postfix's wrapping and without local parts."""
    text = _SUFFIX.sub("", _PREFIX.sub("", reason.strip()))
    return _ADDRESS.sub(lambda m: f"<...@{m.group(1)}>", text)[:300]


def classify(reason: str) -> tuple[str, str | None]:
    """(class, reply code or None) of one ``delay_reason``; class is a key of
    :data:`CLASSES`."""
    if not reason:
        return "waiting", None
    text = scrub(reason)
    code_match = _CODE.match(text)
    code = code_match.group(1) if code_match else None
    if code and not _OWN_REPLY.match(text):
        return "refused", code           # the remote server's own reply, passed on
    if code is None and _LOCAL.search(reason):
        return "local", None             # Postfix could not talk to relay-mxsend
    for name, pattern in _PATTERNS:
        if pattern.search(text):
            return name, code
    return "other", code


@dataclass
class Group:
    """Deferred recipients of one domain with one reason class (and reply code):
    counts, the oldest arrival and the soonest retry (Unix times), one scrubbed
    reason as ``detail``."""
    domain: str
    reason: str
    code: str | None
    detail: str
    messages: int = 0
    recipients: int = 0
    oldest_arrival: float = 0.0
    next_retry: float | None = None
    queue_ids: set[str] = field(default_factory=set)


def read_queue() -> list[dict]:
    """``postqueue -j``: one dict per message. Raises RuntimeError when Postfix
    cannot be asked (e.g. not running)."""
    result = subprocess.run(["postqueue", "-j"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"postqueue -j failed: {result.stderr.strip()[:200]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def retry_times(queue_dir: Path = paths.POSTFIX_QUEUE) -> dict[str, float]:
    """Queue id -> time of the next delivery attempt: Postfix sets a deferred queue
    file's modification time to it. Empty when the files cannot be read (not root)."""
    times: dict[str, float] = {}
    for root, _dirs, files in os.walk(queue_dir / "deferred"):
        for name in files:
            try:
                times[name] = os.stat(os.path.join(root, name)).st_mtime
            except OSError:
                pass
    return times


def domain_of(address: str) -> str:
    """The domain of an address in lower case, ``(none)`` for the null sender."""
    return address.rpartition("@")[2].lower().rstrip(".") or "(none)"


def group(messages: list[dict], retries: dict[str, float]) -> list[Group]:
    """Deferred recipients grouped by (domain, reason class, code), oldest first."""
    groups: dict[tuple[str, str, str | None], Group] = {}
    for msg in messages:
        if msg.get("queue_name") != "deferred":
            continue
        qid = str(msg.get("queue_id", ""))
        arrival = float(msg.get("arrival_time", 0))
        for rcpt in msg.get("recipients", []):
            reason = rcpt.get("delay_reason", "")
            cls, code = classify(reason)
            domain = domain_of(rcpt.get("address", ""))
            g = groups.setdefault((domain, cls, code),
                                  Group(domain, cls, code, scrub(reason), oldest_arrival=arrival))
            g.recipients += 1
            if qid not in g.queue_ids:
                g.queue_ids.add(qid)
                g.messages += 1
                g.oldest_arrival = min(g.oldest_arrival, arrival)
                retry = retries.get(qid)
                if retry is not None and (g.next_retry is None or retry < g.next_retry):
                    g.next_retry = retry
    return sorted(groups.values(), key=lambda g: (g.oldest_arrival, g.domain))


def report(messages: list[dict], retries: dict[str, float], now: float | None = None) -> dict:
    """The JSON of ``relayctl queue --json``: totals per queue and the deferred groups,
    ages and retry times in seconds from ``now``."""
    now = time.time() if now is None else now
    per_queue: dict[str, int] = {}
    for msg in messages:
        per_queue[msg.get("queue_name", "?")] = per_queue.get(msg.get("queue_name", "?"), 0) + 1
    oldest = min((float(m.get("arrival_time", now)) for m in messages), default=now)
    rows = []
    for g in group(messages, retries):
        row = asdict(g)
        for name in ("queue_ids", "oldest_arrival", "next_retry"):
            row.pop(name)
        row["reason_text"] = CLASSES[g.reason]
        row["oldest_age_seconds"] = int(now - g.oldest_arrival)
        row["next_retry_in_seconds"] = (None if g.next_retry is None
                                        else max(0, int(g.next_retry - now)))
        rows.append(row)
    return {"messages": len(messages), "queues": per_queue,
            "oldest_age_seconds": int(now - oldest), "deferred": rows}


def age(seconds: float | None) -> str:
    """A duration for people: 45s, 12m, 3h 5m, 2d 4h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def text(data: dict) -> str:
    """The human form of :func:`report`."""
    queues = ", ".join(f"{n} {q}" for q, n in sorted(data["queues"].items())) or "empty"
    lines = [f"queue: {data['messages']} messages ({queues})"
             + (f", oldest {age(data['oldest_age_seconds'])}" if data["messages"] else "")]
    if not data["deferred"]:
        lines.append("nothing deferred")
        return "\n".join(lines)
    lines.append(f"{'DOMAIN':<28} {'REASON':<24} {'MSGS':>5} {'RCPTS':>5} {'OLDEST':>8}  NEXT TRY")
    for row in data["deferred"]:
        reason = row["reason_text"] + (f" {row['code']}" if row["reason"] == "refused" else "")
        nxt = row["next_retry_in_seconds"]
        lines.append(f"{row['domain']:<28} {reason:<24} {row['messages']:>5} {row['recipients']:>5} "
                     f"{age(row['oldest_age_seconds']):>8}  {'in ' + age(nxt) if nxt is not None else '-'}")
        if row["detail"]:
            lines.append(f"    {row['detail']}")
    lines.append("why a domain fails now: relayctl why DOMAIN;  try again now: relayctl queue retry [DOMAIN]")
    return "\n".join(lines)


def retry(domain: str | None) -> dict:
    """Schedule deferred mail for immediate delivery: all of it (``postqueue -f``), or
    the messages with a recipient at ``domain`` (``postqueue -i`` per queue id: Postfix's
    per-site flush ``-s`` only serves fast_flush_domains, which a relay has none of)."""
    if domain is None:
        subprocess.run(["postqueue", "-f"], check=True, capture_output=True, timeout=60)
        return {"retried": "all"}
    domain = domain.lower().rstrip(".")
    ids = sorted({str(m["queue_id"]) for m in read_queue() if m.get("queue_name") == "deferred"
                  and any(domain_of(r.get("address", "")) == domain for r in m.get("recipients", []))})
    for qid in ids:
        subprocess.run(["postqueue", "-i", qid], check=True, capture_output=True, timeout=60)
    return {"retried": domain, "messages": len(ids)}


def command(args) -> int:
    """``relayctl queue [retry [DOMAIN]] [--json]``: 0, 1 when Postfix cannot be asked, 2 when
    DOMAIN is no domain name or IP literal."""
    import sys
    try:
        if args.action == "retry":
            if args.domain is not None:
                from relay.settings.parsers import parse_domain
                try:
                    parse_domain(args.domain)
                except ValueError as exc:
                    print(f"relayctl queue retry: {args.domain!r} is not a domain ({exc})",
                          file=sys.stderr)
                    return 2
            result = retry(args.domain)
            print(json.dumps(result, indent=2) if args.json else
                  f"scheduled for delivery now: {result.get('messages', 'all')} message(s)"
                  + (f" for {result['retried']}" if result["retried"] != "all" else ""))
            return 0
        data = report(read_queue(), retry_times())
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"relayctl queue: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2) if args.json else text(data))
    return 0
