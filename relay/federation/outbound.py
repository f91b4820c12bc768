"""How relay-mxsend delivers to another domain: HTTPS ``/mxdeliv`` first, then SMTP
with STARTTLS (SPEC §6). :class:`Sender` gives one reply per recipient.

For each recipient domain: the MX hosts (the domain itself when it has no MX,
the address for an IP literal), and for each host in order of preference:

1. ``POST https://<host>/mxdeliv`` with ``X-Mail-From``/``X-Mail-To`` headers;
   the certificate is verified against the host name (not for ``_``-domains
   and IP literals), TLS 1.2 or newer. Only an answer that carries the
   ``X-Mxdeliv`` header counts: a web server's ``404 Not Found`` or a
   catch-all ``200`` must not be taken for a relay's verdict. 5xx, timeouts,
   connection failures and unmarked answers mean "no HTTPS here".
2. SMTP on port 25 with STARTTLS required, the same certificate rules.

When no host gives an answer, the recipients get ``451 4.4.1`` and Postfix
retries later. One log line per delivery attempt says which path carried the
mail and what the receiver said; no addresses' local parts, no content.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import random
import re
import smtplib
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver

from relay import counters
from relay.wire.tls import ClientContexts
from relay.wire.unixsmtp import recipients_and_data

log = logging.getLogger("relay-mxsend")

HTTPS_CONNECT_TIMEOUT = 10.0
HTTPS_ANSWER_TIMEOUT = 120.0   # the receiver checks DKIM and queues before it answers
SMTP_TIMEOUT = 60.0
DNS_LIFETIME = 10.0
MAX_HOSTS = 3                  # MX hosts tried per attempt; Postfix retries later
DOMAIN_BUDGET = 600.0          # no further host after this long (lmtp_data_done_timeout: 1200 s)
MARKER = "X-Mxdeliv"

Replies = dict[str, str]       # recipient -> one LMTP reply line


class DeliveryError(Exception):
    """The whole domain gets this reply (DNS errors, null MX)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True)
class Destination:
    """Where mail for ``domain`` goes: its MX ``hosts`` (names or addresses, best preference first,
    at most MAX_HOSTS) and whether the peers' certificates are ``verify``-ed against the host
    name (not for ``_``-domains and IP literals, as the reference relay's relaxed client).
    """
    domain: str
    hosts: tuple[str, ...]
    verify: bool   # check the peer's certificate against the host name


# --- replies ---------------------------------------------------------------------------

_REPLY = re.compile(r"^([245]\d\d)(?:[ -](.*))?$", re.S)
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}\b")


def clean(text: str, limit: int = 300) -> str:
    """One line of printable text (remote answers end up in our logs and bounces)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text[:limit]


def as_reply(text: str, fallback: str) -> str:
    """A remote SMTP reply ("550 5.1.1 User unknown") as an LMTP reply line with
    an enhanced status code; ``fallback`` when ``text`` is not a 4xx/5xx reply."""
    match = _REPLY.match(text.strip())
    if not match or match.group(1)[0] == "2":
        return fallback
    code, rest = match.group(1), clean(match.group(2) or "")
    if not _ENHANCED.match(rest):
        rest = f"{code[0]}.0.0 {rest}".rstrip()
    return f"{code} {rest}"


def smtp_reply(code: int, text: bytes | str) -> str:
    """A reply ``code`` and text from smtplib as one LMTP reply line with an enhanced status code
    (:func:`as_reply`); a 2xx or malformed reply becomes ``451 4.3.0 Unexpected reply``.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return as_reply(f"{code} {clean(text)}", f"451 4.3.0 Unexpected reply {code}")


def count(path: str, replies: Replies) -> Replies:
    """Record each recipient's outcome in ``chatmail_federation_recipients_total``
    (``path``: https, smtp or none) and return ``replies``."""
    for reply in replies.values():
        outcome = {"2": "delivered", "4": "deferred"}.get(reply[:1], "bounced")
        counters.inc("chatmail_federation_recipients_total", path=path, outcome=outcome)
    return replies


def summary(replies: Replies) -> str:
    """The reply codes of ``replies`` counted, for the log: e.g. ``"2x250, 1x550"``."""
    counts = Counter(r[:3] for r in replies.values())
    return ", ".join(f"{n}x{code}" for code, n in sorted(counts.items()))


# --- where to deliver -----------------------------------------------------------------

def ip_literal(domain: str) -> str | None:
    """The address of ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``; None for a DNS name."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return str(ipaddress.ip_address(inner))
    except ValueError:
        return None


def resolve(domain: str, resolver: dns.resolver.Resolver | None = None) -> Destination:
    """Where to deliver mail for ``domain``: an IP literal is its own host; otherwise the MX records
    (RFC 5321 §5.1: by preference, equal ones shuffled; no MX record: the domain itself). Raises
    DeliveryError with the reply for every recipient: ``550 5.1.2`` for NXDOMAIN or a bad
    literal, ``556 5.1.10`` for a null MX (RFC 7505), ``451 4.4.3`` when the lookup times out or
    fails (DNS_LIFETIME seconds).
    """
    if domain.startswith("["):
        address = ip_literal(domain)
        if address is None:
            raise DeliveryError(f"550 5.1.2 Bad address literal {clean(domain, 80)}")
        return Destination(domain, (address,), verify=False)
    verify = not domain.startswith("_")
    resolver = resolver or dns.resolver.Resolver()
    try:
        answer = resolver.resolve(domain, "MX", lifetime=DNS_LIFETIME, search=False)
    except dns.resolver.NXDOMAIN:
        raise DeliveryError(f"550 5.1.2 Recipient domain {domain} does not exist") from None
    except dns.resolver.NoAnswer:
        return Destination(domain, (domain,), verify)  # implicit MX: the domain's A/AAAA
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.YXDOMAIN) as exc:
        raise DeliveryError(f"451 4.4.3 MX lookup for {domain} failed: "
                            f"{clean(type(exc).__name__, 40)}") from None
    records = sorted((r.preference, random.random(), r.exchange) for r in answer)
    hosts = tuple(exchange.to_text(omit_final_dot=True).lower() for _, _, exchange in records
                  if exchange != dns.name.root)
    if not hosts:
        raise DeliveryError(f"556 5.1.10 {domain} accepts no mail (null MX)")
    return Destination(domain, hosts[:MAX_HOSTS], verify)


# --- HTTPS /mxdeliv --------------------------------------------------------------------

def mxdeliv_replies(status: int, marked: bool, body: bytes, recipients: list[str],
                    host: str) -> Replies | None:
    """Per-recipient replies for an answer of ``POST /mxdeliv``; None: not a usable answer
    (fall back to SMTP)."""
    if not marked or status not in (200, 400, 403, 404, 413):
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
        ok = f"250 2.0.0 Ok: delivered via https to {host}"
        return {r: as_reply(refused[r.lower()], f"550 5.1.1 Refused by {where}")
                if r.lower() in refused else ok for r in recipients}
    if status == 404:
        return {r: as_reply(refused.get(r.lower(), ""), f"550 5.1.1 Recipient unknown at {where}")
                for r in recipients}
    if status == 403:
        return {r: f"550 5.7.1 Refused by {where}: {reason or 'policy'}" for r in recipients}
    if status == 413:
        return {r: f"552 5.3.4 Message too large for {where}" for r in recipients}
    return {r: f"554 5.6.0 Bad request for {where}: {reason}".rstrip(": ") for r in recipients}


def http_host(host: str) -> str:
    """``host`` as the host part of a URL: an IPv6 address in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]" if ":" in host else host


def post_mxdeliv(host: str, ctx: ssl.SSLContext, mail_from: str, recipients: list[str],
                 data: bytes) -> tuple[int, bool, bytes]:
    """POST the message; (status, marked, body). Raises OSError/HTTPException."""
    conn = http.client.HTTPSConnection(http_host(host), 443, timeout=HTTPS_CONNECT_TIMEOUT,
                                       context=ctx)
    try:
        conn.connect()
        conn.sock.settimeout(HTTPS_ANSWER_TIMEOUT)
        conn.putrequest("POST", "/mxdeliv", skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(len(data)))
        conn.putheader("X-Mail-From", (mail_from or "<>").encode())
        for rcpt in recipients:
            conn.putheader("X-Mail-To", rcpt.encode())
        conn.endheaders(data)
        resp = conn.getresponse()
        body = resp.read(64 * 1024)
        return resp.status, resp.getheader(MARKER) is not None, body
    finally:
        conn.close()


# --- SMTP -----------------------------------------------------------------------------

class HostFailed(Exception):
    """This host gave no usable answer; try the next one (or later)."""


def send_smtp(host: str, ctx: ssl.SSLContext, helo: str, mail_from: str,
              recipients: list[str], data: bytes) -> Replies:
    """Deliver over SMTP to ``host`` port 25 with STARTTLS required (certificate checked by
    ``ctx``): BODY=8BITMIME, SMTPUTF8 and SIZE as the peer offers and the message needs. Returns
    one LMTP reply per recipient (the peer's permanent refusals passed on, a success as ``250
    2.0.0 Ok: delivered via smtp to <host>``); a recipient needing SMTPUTF8 at a peer without it
    gets ``550 5.6.7``. Raises HostFailed when the host gave no usable answer (connection, TLS,
    no STARTTLS, a temporary refusal of MAIL).
    """
    where = f"{host} (smtp)"
    needs_utf8 = not (mail_from + "".join(recipients)).isascii()
    try:
        # Connecting in the constructor also makes STARTTLS check the certificate
        # against ``host`` (smtplib keeps only the constructor's host for that).
        with smtplib.SMTP(host, 25, timeout=SMTP_TIMEOUT, local_hostname=helo) as smtp:
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise HostFailed("no STARTTLS offered")
            smtp.starttls(context=ctx)
            smtp.ehlo()
            options = []
            if any(b > 0x7F for b in data) and smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            if needs_utf8:
                if not smtp.has_extn("smtputf8"):
                    return {r: f"550 5.6.7 {where} does not support SMTPUTF8" for r in recipients}
                options.append("SMTPUTF8")
            if smtp.has_extn("size"):
                options.append(f"SIZE={len(data)}")
            code, text = smtp.mail(mail_from, options)
            if code != 250:
                if 500 <= code < 600:
                    return {r: smtp_reply(code, text) for r in recipients}
                raise HostFailed(f"MAIL {smtp_reply(code, text)}")
            accepted, replies, end = recipients_and_data(smtp, recipients, data, smtp_reply)
            if end is None:
                return replies
            end_code, end_text = end
            ok = f"250 2.0.0 Ok: delivered via smtp to {host}"
            for rcpt in accepted:
                replies[rcpt] = ok if end_code == 250 else smtp_reply(end_code, end_text)
            return replies
    except HostFailed:
        raise
    except (OSError, smtplib.SMTPException, UnicodeError, ValueError) as exc:
        raise HostFailed(clean(f"{type(exc).__name__}: {exc}", 200)) from None


# --- one domain -------------------------------------------------------------------------

@dataclass
class Sender:
    """Delivers one domain's recipients (relay-mxsend calls :meth:`deliver` in a thread per domain):
    ``helo`` is our EHLO name, ``tls`` the client contexts; ``resolve``, ``post`` and ``smtp``
    are the steps, replaceable in tests.
    """
    helo: str
    tls: ClientContexts
    resolve: Callable[[str], Destination] = resolve
    post: Callable[..., tuple[int, bool, bytes]] = post_mxdeliv
    smtp: Callable[..., Replies] = send_smtp

    def deliver(self, domain: str, mail_from: str, recipients: list[str], data: bytes) -> Replies:
        """Deliver ``data`` from ``mail_from`` to ``recipients`` (all of ``domain``); returns one
        LMTP reply line per recipient, never raises. Host after host (at most DOMAIN_BUDGET
        seconds in all): HTTPS ``/mxdeliv`` first, SMTP when HTTPS gives no usable answer, the
        next host when both fail; when none answers, ``451 4.4.1`` for every recipient so that
        Postfix retries. Logs one line per path tried.
        """
        try:
            dest = self.resolve(domain)
        except DeliveryError as exc:
            log.info("%s: not delivered: %s", domain, exc.reply)
            return count("none", {r: exc.reply for r in recipients})
        last = "no MX host"
        deadline = time.monotonic() + DOMAIN_BUDGET
        for host in dest.hosts:
            if time.monotonic() > deadline:
                break
            try:
                status, marked, body = self.post(host, self.tls.get(dest.verify, "http/1.1"),
                                                 mail_from, recipients, data)
                replies = mxdeliv_replies(status, marked, body, recipients, host)
                if replies is not None:
                    log.info("%s via https (%s): HTTP %d: %s", domain, host, status, summary(replies))
                    return count("https", replies)
                last = f"HTTP {status}{'' if marked else ' without ' + MARKER}"
            except (OSError, http.client.HTTPException, UnicodeError, ValueError) as exc:
                last = clean(f"{type(exc).__name__}: {exc}", 200)
            log.info("%s: https to %s failed (%s): trying smtp", domain, host, last)
            try:
                replies = self.smtp(host, self.tls.get(dest.verify, None), self.helo, mail_from,
                                    recipients, data)
                log.info("%s via smtp (%s): %s", domain, host, summary(replies))
                return count("smtp", replies)
            except HostFailed as exc:
                last = str(exc)
                log.info("%s: smtp to %s failed (%s)", domain, host, last)
        reply = f"451 4.4.1 No mail server of {domain} reachable: {last}"
        log.warning("%s: deferred: %s", domain, last)
        return count("none", {r: reply for r in recipients})
