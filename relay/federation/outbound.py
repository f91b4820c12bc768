"""How relay-mxsend delivers to another domain: HTTPS ``/mxdeliv`` first, then SMTP
with STARTTLS (SPEC §6). :class:`Sender` gives one reply per recipient.

For each recipient domain: the MX hosts (the domain itself when it has no MX,
the address for an IP literal), and for each host in order of preference:

1. ``POST https://<host>/mxdeliv`` with ``X-Mail-From`` (left out for the null
   sender, as the reference does) and one ``X-Mail-To`` per recipient; the body is
   the message in SMTP transmission form (CRLF lines, dot-stuffed, no final ``.``
   line: what the reference posts and its receiver expects). The certificate is
   verified against the host name (not for ``_``-domains and IP literals), TLS 1.2
   or newer. The answer is read by the rule in :mod:`relay.federation.replies`:
   a 2xx is a delivery unless it is a web page, an SMTP reply in a refusal's body
   is every recipient's reply, anything else (timeouts, refused connections, web
   pages, 405, nginx's 502) means "no HTTPS here".
2. SMTP on port 25 with STARTTLS required, the same certificate rules.

A host whose HTTPS just failed and which then took the mail over SMTP is not
asked over HTTPS again for 30 minutes (:class:`SmtpOnlyHosts`, as filtermail 0.7's
``mxdeliv_unsupported_hosts``): a classic MX without a web server must not cost
an HTTPS attempt per message.

When no host gives an answer, the recipients get ``451 4.4.1`` and Postfix
retries later. One log line per delivery attempt says which path carried the
mail and what the receiver said; no addresses' local parts, no content.
"""

from __future__ import annotations

import http.client
import logging
import random
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.resolver

from relay import counters
from relay.addresses import literal_address
from relay.federation.replies import (
    MARKER,
    HttpAnswer,
    Replies,
    clean,
    https_replies,
    smtp_reply,
    summary,
)
from relay.wire.tls import ClientContexts
from relay.wire.unixsmtp import recipients_and_data

log = logging.getLogger("relay-mxsend")

HTTPS_CONNECT_TIMEOUT = 10.0
HTTPS_ANSWER_TIMEOUT = 120.0   # the receiver checks DKIM and queues before it answers
SMTP_TIMEOUT = 60.0
DNS_LIFETIME = 10.0
MAX_HOSTS = 3                  # MX hosts tried per attempt; Postfix retries later
DOMAIN_BUDGET = 600.0          # no further host after this long (lmtp_data_done_timeout: 1200 s)
SMTP_ONLY_PERIOD = 30 * 60.0   # seconds a host that needed SMTP is not asked over HTTPS
ANSWER_LIMIT = 64 * 1024       # bytes of an HTTPS answer we read


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


def count(path: str, replies: Replies) -> Replies:
    """Record each recipient's outcome in ``chatmail_federation_recipients_total``
    (``path``: https, smtp or none) and return ``replies``."""
    for reply in replies.values():
        outcome = {"2": "delivered", "4": "deferred"}.get(reply[:1], "bounced")
        counters.inc("chatmail_federation_recipients_total", path=path, outcome=outcome)
    return replies


# --- where to deliver -----------------------------------------------------------------

def ip_literal(domain: str) -> str | None:
    """The address of ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` as text; None for a DNS name
    (:func:`relay.addresses.literal_address`)."""
    address = literal_address(domain)
    return None if address is None else str(address)


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

def http_host(host: str) -> str:
    """``host`` as the host part of a URL: an IPv6 address in brackets (RFC 3986 §3.2.2)."""
    return f"[{host}]" if ":" in host else host


def transmission_form(data: bytes) -> bytes:
    """The message as SMTP carries it between DATA and the final dot (RFC 5321
    §4.5.2): every line that starts with ``.`` gets another one, and the data ends
    with CRLF. ``data`` comes from Postfix over LMTP, so its lines end in CRLF."""
    stuffed = re.sub(rb"(^|\n)\.", rb"\1..", data)
    return stuffed if stuffed.endswith(b"\r\n") else stuffed + b"\r\n"


def media_type(value: str | None) -> str:
    """``text/html`` from ``Text/HTML; charset=utf-8``; "" for None."""
    return (value or "").split(";", 1)[0].strip().lower()


def post_mxdeliv(host: str, ctx: ssl.SSLContext, mail_from: str, recipients: list[str],
                 data: bytes) -> HttpAnswer:
    """POST the message (``data`` as it came over LMTP) to ``https://<host>/mxdeliv``;
    the answer's status, marker, media type and first 64 KiB.
    Raises OSError/HTTPException (also for timeouts and TLS failures)."""
    body = transmission_form(data)
    conn = http.client.HTTPSConnection(http_host(host), 443, timeout=HTTPS_CONNECT_TIMEOUT,
                                       context=ctx)
    try:
        conn.connect()
        conn.sock.settimeout(HTTPS_ANSWER_TIMEOUT)
        conn.putrequest("POST", "/mxdeliv", skip_accept_encoding=True)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(len(body)))
        if mail_from:  # the null sender: no X-Mail-From at all (the reference's form)
            conn.putheader("X-Mail-From", mail_from.encode())
        for rcpt in recipients:
            conn.putheader("X-Mail-To", rcpt.encode())
        conn.endheaders(body)
        resp = conn.getresponse()
        return HttpAnswer(resp.status, resp.getheader(MARKER) is not None,
                          media_type(resp.getheader("Content-Type")), resp.read(ANSWER_LIMIT))
    finally:
        conn.close()


class SmtpOnlyHosts:
    """MX hosts whose HTTPS failed and which then took a message over SMTP: for
    ``period`` seconds they are not asked over HTTPS (filtermail 0.7 does the same
    for 30 minutes, keyed by MX host name). A host leaves the list when its time is
    up or when SMTP to it fails to connect (then HTTPS may be the only way in).

    Kept in memory only: after a restart of relay-mxsend every host is asked over
    HTTPS once more, which costs at most one failed attempt per message in flight
    to it (a refused connection, or HTTPS_CONNECT_TIMEOUT for a port that drops
    packets). SIGHUP empties the list (``supervisorctl signal HUP relay-mxsend``).
    Thread-safe: deliveries run in a pool of threads."""

    def __init__(self, period: float = SMTP_ONLY_PERIOD,
                 clock: Callable[[], float] = time.monotonic, limit: int = 10000) -> None:
        self.period, self.clock, self.limit = period, clock, limit
        self._since: dict[str, float] = {}
        self._lock = threading.Lock()

    def since(self, host: str) -> float | None:
        """Seconds since ``host`` went on the list; None when it is not on it (any more)."""
        with self._lock:
            added = self._since.get(host)
            if added is None:
                return None
            age = self.clock() - added
            if age >= self.period:
                del self._since[host]
                return None
            return age

    def add(self, host: str) -> None:
        """Put ``host`` on the list from now on; at ``limit`` hosts, expired ones are
        dropped first, then the oldest."""
        with self._lock:
            now = self.clock()
            if len(self._since) >= self.limit:  # drop what has expired, else the oldest
                self._since = {h: t for h, t in self._since.items() if now - t < self.period}
                while len(self._since) >= self.limit:
                    del self._since[min(self._since, key=self._since.__getitem__)]
            self._since[host] = now

    def discard(self, host: str) -> None:
        """Take ``host`` off the list (HTTPS is tried again at its next message)."""
        with self._lock:
            self._since.pop(host, None)

    def clear(self) -> None:
        """Forget every host (SIGHUP)."""
        with self._lock:
            self._since.clear()


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
    are the steps, replaceable in tests; ``smtp_only`` the hosts not asked over HTTPS for now.
    """

    helo: str
    tls: ClientContexts
    resolve: Callable[[str], Destination] = resolve
    post: Callable[..., HttpAnswer] = post_mxdeliv
    smtp: Callable[..., Replies] = send_smtp
    smtp_only: SmtpOnlyHosts = field(default_factory=SmtpOnlyHosts)

    def deliver(self, domain: str, mail_from: str, recipients: list[str], data: bytes) -> Replies:
        """Deliver ``data`` from ``mail_from`` to ``recipients`` (all of ``domain``); returns one
        LMTP reply line per recipient, never raises. Host after host (at most DOMAIN_BUDGET
        seconds in all): HTTPS ``/mxdeliv`` first (unless the host is on the SMTP-only list),
        SMTP when HTTPS gives no usable answer (:func:`relay.federation.replies.https_replies`),
        the next host when both fail; when none answers, ``451 4.4.1`` for every recipient so
        that Postfix retries. Logs one line per path tried.
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
            replies, last = self._to_host(dest, host, mail_from, recipients, data)
            if replies is not None:
                return replies
        reply = f"451 4.4.1 No mail server of {domain} reachable: {last}"
        log.warning("%s: deferred: %s", domain, last)
        return count("none", {r: reply for r in recipients})

    def _to_host(self, dest: Destination, host: str, mail_from: str, recipients: list[str],
                 data: bytes) -> tuple[Replies | None, str]:
        """HTTPS (unless the host is on the SMTP-only list), then SMTP: the replies,
        or None and why this host gave none."""
        domain = dest.domain
        age = self.smtp_only.since(host)
        if age is None:
            replies, last = self._https(dest, host, mail_from, recipients, data)
            if replies is not None:
                return count("https", replies), last
            log.info("%s: https to %s failed (%s): trying smtp", domain, host, last)
        else:
            log.info("%s: https to %s skipped (smtp only since %d s): trying smtp",
                     domain, host, age)
        try:
            replies = self.smtp(host, self.tls.get(dest.verify, None), self.helo, mail_from,
                                recipients, data)
        except HostFailed as exc:
            self.smtp_only.discard(host)
            log.info("%s: smtp to %s failed (%s)", domain, host, exc)
            return None, str(exc)
        log.info("%s via smtp (%s): %s", domain, host, summary(replies))
        if age is None and any(r.startswith("2") for r in replies.values()):
            self.smtp_only.add(host)
            log.info("%s: %s gets smtp only for the next %d min", domain, host,
                     self.smtp_only.period // 60)
        return count("smtp", replies), ""

    def _https(self, dest: Destination, host: str, mail_from: str, recipients: list[str],
               data: bytes) -> tuple[Replies | None, str]:
        """``POST /mxdeliv``: the replies, or None and why they are no relay's answer."""
        try:
            answer = self.post(host, self.tls.get(dest.verify, "http/1.1"), mail_from,
                               recipients, data)
        except (OSError, http.client.HTTPException, UnicodeError, ValueError) as exc:
            return None, clean(f"{type(exc).__name__}: {exc}", 200)
        replies = https_replies(answer, recipients, host)
        if replies is None:
            shape = "" if answer.marked else f" {answer.content_type or 'without Content-Type'}"
            return None, f"HTTP {answer.status}{shape}"
        log.info("%s via https (%s): HTTP %d: %s", dest.domain, host, answer.status,
                 summary(replies))
        return replies, ""
