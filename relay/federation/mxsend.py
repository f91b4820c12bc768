"""Mail for other domains: HTTPS ``/mxdeliv`` first, then SMTP with STARTTLS (SPEC §6).

Postfix keeps the queue: it hands each message for other domains to us over
LMTP (``default_transport`` in main.cf) and retries, backs off and bounces by
our answers. LMTP, not a pipe, because LMTP answers once per recipient after
DATA, so one message to several domains can be delivered to some, deferred for
others and bounced for the rest.

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

import asyncio
import http.client
import ipaddress
import json
import logging
import os
import random
import re
import smtplib
import ssl
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dns.exception
import dns.name
import dns.resolver

from relay import logs
from relay import paths
from relay import settings as settings_mod
from relay.settings import BODY_MARGIN
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
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return as_reply(f"{code} {clean(text)}", f"451 4.3.0 Unexpected reply {code}")


def summary(replies: Replies) -> str:
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
            code, text = end
            ok = f"250 2.0.0 Ok: delivered via smtp to {host}"
            for rcpt in accepted:
                replies[rcpt] = ok if code == 250 else smtp_reply(code, text)
            return replies
    except HostFailed:
        raise
    except (OSError, smtplib.SMTPException, UnicodeError, ValueError) as exc:
        raise HostFailed(clean(f"{type(exc).__name__}: {exc}", 200)) from None


# --- one domain -------------------------------------------------------------------------

@dataclass
class Sender:
    helo: str
    tls: ClientContexts
    resolve: Callable[[str], Destination] = resolve
    post: Callable[..., tuple[int, bool, bytes]] = post_mxdeliv
    smtp: Callable[..., Replies] = send_smtp

    def deliver(self, domain: str, mail_from: str, recipients: list[str], data: bytes) -> Replies:
        try:
            dest = self.resolve(domain)
        except DeliveryError as exc:
            log.info("%s: not delivered: %s", domain, exc.reply)
            return {r: exc.reply for r in recipients}
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
                    return replies
                last = f"HTTP {status}{'' if marked else ' without ' + MARKER}"
            except (OSError, http.client.HTTPException, UnicodeError, ValueError) as exc:
                last = clean(f"{type(exc).__name__}: {exc}", 200)
            log.info("%s: https to %s failed (%s): trying smtp", domain, host, last)
            try:
                replies = self.smtp(host, self.tls.get(dest.verify, None), self.helo, mail_from,
                                    recipients, data)
                log.info("%s via smtp (%s): %s", domain, host, summary(replies))
                return replies
            except HostFailed as exc:
                last = str(exc)
                log.info("%s: smtp to %s failed (%s)", domain, host, last)
        reply = f"451 4.4.1 No mail server of {domain} reachable: {last}"
        log.warning("%s: deferred: %s", domain, last)
        return {r: reply for r in recipients}


# --- the LMTP server Postfix talks to ---------------------------------------------------

_MAIL = re.compile(r"^FROM:\s*<([^<>]*)>(.*)$", re.I | re.S)
_RCPT = re.compile(r"^TO:\s*<([^<>]*)>(.*)$", re.I | re.S)


def recipient_domain(address: str) -> str | None:
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    return domain.lower().rstrip(".")


class LMTPServer:
    def __init__(self, sender: Sender, max_size: int, max_recipients: int,
                 pool: ThreadPoolExecutor) -> None:
        self.sender = sender
        self.max_size = max_size
        self.max_recipients = max_recipients
        self.pool = pool

    async def deliver_all(self, mail_from: str, recipients: list[str], data: bytes) -> list[str]:
        """One reply per recipient, in their order; domains are delivered concurrently."""
        by_domain: dict[str, list[str]] = {}
        for rcpt in recipients:
            by_domain.setdefault(recipient_domain(rcpt) or "", []).append(rcpt)
        loop = asyncio.get_running_loop()

        async def one(domain: str, rcpts: list[str]) -> Replies:
            try:
                return await loop.run_in_executor(self.pool, self.sender.deliver, domain,
                                                  mail_from, rcpts, data)
            except Exception:
                log.exception("%s: delivery failed", domain)
                return {r: "451 4.3.0 Internal error, will try again" for r in rcpts}

        results: Replies = {}
        for replies in await asyncio.gather(*(one(d, r) for d, r in by_domain.items())):
            results.update(replies)
        return [results[r] for r in recipients]

    async def read_data(self, reader: asyncio.StreamReader) -> bytes | None:
        """The message up to the lone dot, unstuffed; None when it is too large."""
        chunks: list[bytes] = []
        size = 0
        limit = self.max_size + BODY_MARGIN
        while True:
            line = await reader.readuntil(b"\n")
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]
            size += len(line)
            if size <= limit:
                chunks.append(line)
        return b"".join(chunks) if size <= limit else None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def send(*lines: str) -> None:
            writer.write("".join(f"{line}\r\n" for line in lines).encode("utf-8"))

        mail_from: str | None = None
        recipients: list[str] = []
        send("220 relay-mxsend LMTP ready")
        try:
            while True:
                await writer.drain()
                raw = await reader.readuntil(b"\n")
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb, _, arg = line.partition(" ")
                verb = verb.upper()
                if verb == "LHLO":
                    mail_from, recipients = None, []
                    send("250-relay-mxsend", "250-PIPELINING", "250-ENHANCEDSTATUSCODES",
                         "250-8BITMIME", "250-SMTPUTF8", f"250 SIZE {self.max_size}")
                elif verb == "MAIL":
                    match = _MAIL.match(arg)
                    if mail_from is not None:
                        send("503 5.5.1 Sender already given")
                    elif not match:
                        send("501 5.5.4 Syntax: MAIL FROM:<address>")
                    else:
                        mail_from, recipients = match.group(1), []
                        send("250 2.1.0 Ok")
                elif verb == "RCPT":
                    match = _RCPT.match(arg)
                    if mail_from is None:
                        send("503 5.5.1 MAIL first")
                    elif not match or recipient_domain(match.group(1)) is None:
                        send("501 5.1.3 Syntax: RCPT TO:<user@domain>")
                    elif len(recipients) >= self.max_recipients:
                        send("452 4.5.3 Too many recipients")
                    else:
                        recipients.append(match.group(1))
                        send("250 2.1.5 Ok")
                elif verb == "DATA":
                    if mail_from is None or not recipients:
                        send("503 5.5.1 No valid recipients")
                        continue
                    send("354 End data with <CR><LF>.<CR><LF>")
                    await writer.drain()
                    data = await self.read_data(reader)
                    if data is None:
                        send(*["552 5.3.4 Message too large"] * len(recipients))
                    else:
                        send(*await self.deliver_all(mail_from, recipients, data))
                    mail_from, recipients = None, []
                elif verb == "RSET":
                    mail_from, recipients = None, []
                    send("250 2.0.0 Ok")
                elif verb == "NOOP":
                    send("250 2.0.0 Ok")
                elif verb == "QUIT":
                    send("221 2.0.0 Bye")
                    await writer.drain()
                    break
                else:
                    send("500 5.5.2 Command not recognized")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


async def serve(server: LMTPServer, path: Path) -> asyncio.AbstractServer:
    path.unlink(missing_ok=True)
    listener = await asyncio.start_unix_server(server.handle, path=str(path), limit=1 << 20)
    os.chmod(path, 0o666)  # access is governed by the directory's group (postfix)
    return listener


async def main() -> None:
    settings = settings_mod.from_environment()
    logs.setup("relay-mxsend", settings.log_level, settings.log_format)
    sender = Sender(helo=settings.mail_domain, tls=ClientContexts())
    pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="deliver")
    server = LMTPServer(sender, settings.max_message_size, settings.max_recipients, pool)
    listener = await serve(server, paths.MXSEND_SOCKET)
    log.info("delivering mail for other domains; LMTP on %s", paths.MXSEND_SOCKET)
    await listener.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
