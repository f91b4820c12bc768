"""What relay-mxsend tells Postfix: the receiver's answers, SMTP or HTTPS, as one LMTP
reply line per recipient.

The rule for an answer of ``POST https://<MX host>/mxdeliv`` (README "Federation",
SPEC §1; the reference's answers: notes in reference-facts A.1, filtermail 0.7
``http_server.rs``):

* **Our own relay** marks every answer of its ``/mxdeliv`` with ``X-Mxdeliv`` (nginx)
  and gives JSON with per-recipient detail: 200 delivered (``refused`` lists the
  recipients it did not take, each with its reply), 404 no such recipient, 403
  refused by policy, 413 too large, 400 bad request. Anything else it answers (503,
  nginx's 502/504) means "not now": the next path (SMTP) is tried.
* **Any other receiver** (the reference relays, filtermail 0.7, send no marker):

  - an answer whose body starts with a ``4xx``/``5xx`` SMTP reply is that reply
    for every recipient, whatever the HTTP status: filtermail answers ``400`` with
    the reply text for each refusal (``523 Encryption Needed...``, ``554 5.7.1 No
    valid DKIM...``, or Postfix's own reply ``... (forwarded from ...)``) and
    ``413`` with ``552 ...``. A ``5xx`` text is a permanent refusal (Postfix
    bounces); a ``4xx`` text is temporary (Postfix keeps the mail and tries again
    later, HTTPS first). A refusal is never counted as a delivery, not even in a 2xx;
  - a ``2xx`` is a delivery to every recipient (filtermail: ``200`` with body
    ``250 OK``; 0.6.4/0.6.5 answered ``201``), with or without a body, unless it
    is plainly a web page: ``Content-Type: text/html`` or
    ``application/xhtml+xml``, or a body that starts with ``<`` (a body that
    starts with an SMTP reply is a relay's, whatever its type). A catch-all web
    server's ``200`` must not swallow the mail: it goes on to SMTP;
  - every other answer (``405 Method Not Allowed``, nginx's HTML ``413``/``502``,
    a redirect, ``404``) goes on to SMTP on port 25, as the reference does.

The reference itself counts any 2xx as delivered and sends every non-2xx on to SMTP
(so its receivers see a refused message twice); mapping the refusal text is ours.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass

Replies = dict[str, str]       # recipient -> one LMTP reply line
MARKER = "X-Mxdeliv"           # our relay's nginx adds it to every /mxdeliv answer
WEB_TYPES = ("text/html", "application/xhtml+xml")

_REPLY = re.compile(r"^([245]\d\d)(?:[ -](.*))?$", re.S)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")
_SMTP_TEXT = re.compile(rb"^\s*([245]\d\d)(?:[ -]|\r?\n|$)")


def clean(text: str, limit: int = 300) -> str:
    """One line of printable text (remote answers end up in our logs and bounces)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:limit]


def as_reply(text: str, fallback: str) -> str:
    """A remote SMTP reply ("550 5.1.1 User unknown") as an LMTP reply line with
    an enhanced status code (``<class>.0.0`` when the remote gave none, RFC 3463);
    ``fallback`` when ``text`` is not a 4xx/5xx reply."""
    match = _REPLY.match(text.strip())
    if not match or match.group(1)[0] == "2":
        return fallback
    code, rest = match.group(1), clean(match.group(2) or "")
    if not _ENHANCED.match(rest):
        rest = f"{code[0]}.0.0 {rest}".rstrip()
    return f"{code} {rest}"


def smtp_reply(code: int, text: bytes | str) -> str:
    """An SMTP server's reply (smtplib's code and text) as an LMTP reply line."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return as_reply(f"{code} {clean(text)}", f"451 4.3.0 Unexpected reply {code}")


def summary(replies: Replies) -> str:
    """``"2x250, 1x550"``: the reply codes and how often each occurs (for the log)."""
    counts = Counter(r[:3] for r in replies.values())
    return ", ".join(f"{n}x{code}" for code, n in sorted(counts.items()))


# --- answers of POST /mxdeliv -------------------------------------------------------------

@dataclass(frozen=True)
class HttpAnswer:
    """What a receiver answered to ``POST /mxdeliv``.

    ``content_type``: the media type in lower case without parameters ("" when the
    answer has none, as filtermail's); ``body``: at most the first 64 KiB."""

    status: int
    marked: bool = False
    content_type: str = ""
    body: bytes = b""


def is_web_page(answer: HttpAnswer) -> bool:
    """True for an answer no relay gives: an HTML or XHTML document (by its
    Content-Type, or by a body that starts with markup)."""
    if answer.content_type in WEB_TYPES:
        return True
    return answer.body.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<")


def smtp_text(body: bytes) -> str | None:
    """The first line of ``body`` when it is an SMTP reply (``550 5.1.1 ...``,
    ``250 OK``, a bare ``250``); None otherwise."""
    if not _SMTP_TEXT.match(body[:1024]):
        return None
    first = body.lstrip().split(b"\n", 1)[0]
    return clean(first.decode("utf-8", "replace"))


def delivered(host: str) -> str:
    """The LMTP reply for a recipient ``host`` took over HTTPS (Postfix logs it)."""
    return f"250 2.0.0 Ok: delivered via https to {host}"


def https_replies(answer: HttpAnswer, recipients: list[str], host: str) -> Replies | None:
    """Per-recipient replies for an answer of ``POST /mxdeliv`` (the rule in this
    module's docstring); None: not a relay's answer, try SMTP."""
    if answer.marked:
        return own_replies(answer.status, answer.body, recipients, host)
    text = smtp_text(answer.body)  # the body's shape first: "250 OK" is a relay's, whatever the type
    if text is not None and text[0] in "45":
        reply = f"{as_reply(text, '')} (from {host} via https)"
        return {r: reply for r in recipients}
    ok = 200 <= answer.status < 300
    if ok and (text is not None or not is_web_page(answer)):
        return {r: delivered(host) for r in recipients}
    return None


def own_replies(status: int, body: bytes, recipients: list[str], host: str) -> Replies | None:
    """Per-recipient replies for an answer of our own relay's ``/mxdeliv``
    (relay.federation.mxdeliv: JSON ``{"accepted", "refused", "error"}``); None for
    the answers that mean "not now" (503, nginx's 502/504, 405, ...)."""
    if status not in (200, 400, 403, 404, 413):
        return None
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    refused = payload.get("refused")
    refused = {str(k).lower(): str(v) for k, v in refused.items()} if isinstance(refused, dict) else {}
    reason = clean(str(payload.get("error", "")))
    where = f"{host} (https)"
    if status == 200:
        return {r: as_reply(refused[r.lower()], f"550 5.1.1 Refused by {where}")
                if r.lower() in refused else delivered(host) for r in recipients}
    if status == 404:
        return {r: as_reply(refused.get(r.lower(), ""), f"550 5.1.1 Recipient unknown at {where}")
                for r in recipients}
    if status == 403:
        return {r: f"550 5.7.1 Refused by {where}: {reason or 'policy'}" for r in recipients}
    if status == 413:
        return {r: f"552 5.3.4 Message too large for {where}" for r in recipients}
    return {r: f"554 5.6.0 Bad request for {where}: {reason}".rstrip(": ") for r in recipients}
