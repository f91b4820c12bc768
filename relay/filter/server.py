"""The filter in the mail path: Postfix's before-queue proxy (smtpd_proxy_filter).

Postfix hands every SMTP transaction to us before it queues anything:

    465/587 smtpd --> outgoing.sock --> policy.check_outgoing --> public/reinject-out --> queue
                                                                  (DKIM-signed by OpenDKIM)
    25      smtpd --> incoming.sock --> policy.check_incoming, dkimcheck --> public/reinject-in

We answer the end of DATA only after the reinjection smtpd has answered, so a
message is either refused with a reason the sender sees at once (523, 553)
or accepted by Postfix's queue on /data. If the reinjection fails we answer
with a temporary error: never accepted-then-lost. The send rate limit refuses
MAIL FROM (450 4.7.1): Postfix opens this proxy at the first accepted RCPT
(smtpd_delay_open), so the client reads the refusal as its RCPT reply and
never uploads the body (as the reference's filtermail does).

Every hop is a UNIX socket: nothing listens on a network for the filter or
the reinjection, so no network is ever trusted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from relay import counters, logs, paths
from relay import settings as settings_mod
from relay.filter import dkimverify as dkimcheck
from relay.filter import guard, headers, policy
from relay.filter.ratelimit import TokenBucket
from relay.settings import Settings
from relay.wire.unixsmtp import UnixSMTP

log = logging.getLogger("relay-filter")

RATE_LIMITED = "450 4.7.1 Too many messages: slow down and try again in a minute"
REINJECT_TIMEOUT = 60


def ascii_domain(address: str) -> str:
    """The address with an internationalised domain name as its A-label (RFC 5890
    §2.3.2.1: the same name); the local part is kept as it is."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii() or domain.startswith("["):
        return address
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        return address  # Postfix refuses it during the transaction


def reinject(path: Path, envelope: Envelope, data: bytes) -> str:
    """Hand the message to Postfix; return the SMTP reply for our client.

    The SMTPUTF8 request is not passed on (as the reference's filtermail does):
    Postfix then queues the message unflagged, and its LMTP client delivers UTF-8
    headers and UTF-8 local parts to Dovecot, whose LMTP offers no SMTPUTF8 (Postfix
    SMTPUTF8_README: a flagged message with UTF-8 in it would bounce there, and the
    bounce of a local sender's message with it). UTF-8 local parts go on without it,
    as Postfix has always taken them (and Dovecot's LMTP, too), internationalised
    domains as A-labels; relay-mxsend asks the next hop for SMTPUTF8 itself when an
    address needs it. ``BODY=`` is passed on."""
    try:
        with UnixSMTP(path) as smtp:
            smtp.connect()
            smtp.ehlo("relay-filter")
            # UTF-8 local parts go on as they are, without the SMTPUTF8 request
            # (SMTPUTF8_README: Postfix has always accepted them so).
            smtp.command_encoding = "utf-8"
            refused = smtp.sendmail(ascii_domain(envelope.mail_from or ""),
                                    [ascii_domain(r) for r in envelope.rcpt_tos], data,
                                    mail_options=[o for o in envelope.mail_options
                                                  if o.upper().startswith("BODY=")])
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
    except smtplib.SMTPResponseException as exc:
        error = exc.smtp_error
        return f"{exc.smtp_code} {error.decode(errors='replace') if isinstance(error, bytes) else error}"
    except (OSError, smtplib.SMTPException) as exc:
        log.error("reinjection into %s failed: %s", path.name, exc)
        return "451 4.3.0 Temporary failure in the mail filter, please try again"
    if refused:
        # Some recipients were refused after we had accepted them: the sender must learn of it.
        log.warning("reinjection refused %d recipient(s)", len(refused))
        return "451 4.3.0 Not all recipients could be accepted, please try again"
    return "250 2.0.0 Ok: queued"


class Handler:
    """aiosmtpd handler for one direction (``"outgoing"``: submitted mail, checked by
    :func:`policy.check_outgoing` and rate-limited by ``limiter``; ``"incoming"``: mail from
    other servers, checked by :func:`policy.check_incoming` and DKIM). Accepted messages are
    reinjected into Postfix at ``reinject_path``.
    """
    def __init__(self, direction: str, settings: Settings, limiter: TokenBucket | None,
                 reinject_path: Path) -> None:
        self.direction = direction
        self.settings = settings
        self.limiter = limiter
        self.reinject_path = reinject_path
        self.check = policy.check_outgoing if direction == "outgoing" else policy.check_incoming

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        """MAIL FROM: ``250 OK``, or the send rate limit's ``450 4.7.1`` (outgoing only; SPEC
        §3, issue 17 §4). Every transaction takes a token, refused ones too: the answer comes
        before the body, as the reference's filtermail gives it."""
        if self.limiter is not None and not self.limiter.allow(address.lower()):
            log.info("%s message refused: rate limit", self.direction)
            return RATE_LIMITED
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """RCPT TO: ``250 OK``, or ``452 4.5.3`` past MAX_RECIPIENTS (the rest comes in another
        transaction).
        """
        if len(envelope.rcpt_tos) >= self.settings.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """End of DATA: the message's verdict as the SMTP reply (:meth:`decide`), counted in
        ``chatmail_messages_total`` by direction, outcome and reason (relay.counters)."""
        reply = await self.decide(envelope)
        outcome, reason = counters.message_outcome(reply)
        counters.inc("chatmail_messages_total", direction=self.direction, outcome=outcome,
                     reason=reason)
        return reply

    async def decide(self, envelope: Envelope) -> str:
        """The reply to the end of DATA. A refusal (523, 553, 554, DKIM 550/451, rate limit
        450 4.7.1) is answered at once; an accepted message (outgoing: its Subject replaced by
        ``[...]``, SPEC §3) is answered with Postfix's own reply to its reinjection, so a 250
        means it is queued on /data.
        """
        data = envelope.original_content or b""
        loop = asyncio.get_running_loop()
        try:
            msg = policy.parse(data)  # parsed once, for every check below
        except Exception as exc:
            guard.unexpected(exc, "parse")  # re-raises under test
            return policy.UNPARSABLE.reply()
        verdict = self.check(envelope.mail_from or "", envelope.rcpt_tos, data, msg)
        if verdict is None and self.direction == "incoming":
            verdict = await loop.run_in_executor(
                None, lambda: dkimcheck.check(data, msg=msg))
        if verdict is not None:
            log.info("%s message refused: %s", self.direction, verdict.reply())
            return verdict.reply()
        if self.direction == "outgoing":
            # The real subject travels inside the encryption (SPEC §3). Done here and
            # not in Postfix's header_checks, whose REPLACE action logs the old subject.
            data = headers.replace_header(data, b"Subject", b"[...]")
        return await loop.run_in_executor(None, reinject, self.reinject_path, envelope, data)


async def serve(handler: Handler, path: Path, settings: Settings) -> asyncio.AbstractServer:
    """Listen on the UNIX socket ``path`` for Postfix's smtpd_proxy_filter connections (mode 0666:
    the directory's group decides who may connect); body limit ``settings.body_limit`` bytes,
    SMTPUTF8 accepted, data kept as bytes.
    """
    path.unlink(missing_ok=True)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(
        lambda: SMTP(handler, hostname="relay-filter", ident="relay-filter",
                     data_size_limit=settings.body_limit,
                     enable_SMTPUTF8=True, decode_data=False, loop=loop),
        path=str(path))
    os.chmod(path, 0o666)  # access is governed by the directory's group (postfix)
    return server


async def main() -> None:
    """relay-filter: read the settings and serve the outgoing and incoming sockets for ever."""
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: one line per command
    settings = settings_mod.from_environment()
    logs.setup("relay-filter", settings.log_level, settings.log_format)
    counters.setup("relay-filter")
    limiter = TokenBucket(settings.max_user_send_per_minute, settings.max_user_send_burst)
    servers = [
        await serve(Handler("outgoing", settings, limiter, paths.REINJECT_OUT),
                    paths.FILTER_OUT_SOCKET, settings),
        await serve(Handler("incoming", settings, None, paths.REINJECT_IN),
                    paths.FILTER_IN_SOCKET, settings),
    ]
    log.info("filtering on %s and %s", paths.FILTER_OUT_SOCKET, paths.FILTER_IN_SOCKET)
    await asyncio.gather(*(s.serve_forever() for s in servers))


