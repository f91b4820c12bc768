"""relay-mxsend: mail for other domains, handed over by Postfix over LMTP (SPEC §6).

Postfix keeps the queue: it hands each message for other domains to us over
LMTP (``default_transport`` in main.cf) and retries, backs off and bounces by
our answers. LMTP, not a pipe, because LMTP answers once per recipient after
DATA, so one message to several domains can be delivered to some, deferred for
others and bounced for the rest. The LMTP server is aiosmtpd's; the delivery
itself (HTTPS ``/mxdeliv``, then SMTP) is ``relay.federation.outbound``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from relay import counters, logs, paths
from relay import settings as settings_mod
from relay.federation.outbound import Sender
from relay.federation.replies import Replies
from relay.settings import BODY_MARGIN
from relay.wire.listen import protocol_server
from relay.wire.tls import ClientContexts

log = logging.getLogger("relay-mxsend")


def recipient_domain(address: str) -> str | None:
    """The domain of ``local@domain`` in lower case without a final dot; None
    when either part is missing."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    return domain.lower().rstrip(".")


class LMTPServer:
    """aiosmtpd handler: collects the envelope, then delivers each recipient domain
    concurrently and answers once per recipient (RFC 2033 §4.2)."""

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

    # --- aiosmtpd hooks ---------------------------------------------------------

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        """LHLO: what this server does (aiosmtpd's own SIZE is off, see :func:`serve`)."""
        session.host_name = hostname
        return ["250-relay-mxsend", "250-PIPELINING", "250-ENHANCEDSTATUSCODES",
                "250-8BITMIME", "250-SMTPUTF8", f"250 SIZE {self.max_size}"]

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        """MAIL FROM: keep the sender (``"<>"`` for the null sender) and its parameters; always
        ``250 2.1.0``.
        """
        envelope.mail_from = address  # "<>" for the null sender (aiosmtpd needs it non-empty)
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """RCPT TO: ``250 2.1.5`` and the recipient is kept; ``501 5.1.3`` for an address without
        local part or domain, ``452 4.5.3`` past MAX_RECIPIENTS (Postfix sends the rest in
        another transaction).
        """
        if recipient_domain(address) is None:
            return "501 5.1.3 Syntax: RCPT TO:<user@domain>"
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """One reply line per accepted recipient, joined by CRLF (aiosmtpd sends it as is)."""
        data = envelope.original_content or b""
        if len(data) > self.max_size + BODY_MARGIN:
            replies = ["552 5.3.4 Message too large"] * len(envelope.rcpt_tos)
        else:
            mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from or ""
            replies = await self.deliver_all(mail_from, envelope.rcpt_tos, data)
        return "\r\n".join(replies)

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """QUIT: ``221 2.0.0 Bye``."""
        return "221 2.0.0 Bye"


class MxsendLMTP(LMTP):
    """aiosmtpd's LMTP with the replies LMTP needs: no HELP, VRFY or EXPN (only
    Postfix talks to us), and no limit of aiosmtpd's own on the message size or
    line length, whose refusals would be one reply for all recipients (Postfix
    sends at most message_size_limit, in lines it keeps short)."""

    line_length_limit = 1 << 20

    async def smtp_HELP(self, arg: str) -> None:
        """HELP is not offered: ``500 5.5.2``."""
        await self.push("500 5.5.2 Command not recognized")

    async def smtp_VRFY(self, arg: str) -> None:
        """VRFY is not offered: ``500 5.5.2`` (only Postfix talks to this socket)."""
        await self.push("500 5.5.2 Command not recognized")

    async def smtp_EXPN(self, arg: str) -> None:
        """EXPN is not offered: ``500 5.5.2``."""
        await self.push("500 5.5.2 Command not recognized")


async def serve(server: LMTPServer, path: Path) -> asyncio.AbstractServer:
    """Listen on ``path`` (access: the directory's group, postfix)."""
    return await protocol_server(
        lambda: MxsendLMTP(server, hostname="relay-mxsend", ident="relay-mxsend LMTP",
                           data_size_limit=None, enable_SMTPUTF8=True, decode_data=False),
        path)


async def main() -> None:
    """relay-mxsend: read the settings and serve LMTP on ``paths.MXSEND_SOCKET`` for ever, with up
    to 32 deliveries running at once in a thread pool.
    """
    settings = settings_mod.from_environment()
    logs.setup("relay-mxsend", settings.log_level, settings.log_format)
    counters.setup("relay-mxsend")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: one line per command
    sender = Sender(helo=settings.mail_domain, tls=ClientContexts())

    def forget_smtp_only() -> None:
        sender.smtp_only.clear()
        log.info("SIGHUP: every MX host will be asked over https again")

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, forget_smtp_only)
    pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="deliver")
    server = LMTPServer(sender, settings.max_message_size, settings.max_recipients, pool)
    listener = await serve(server, paths.MXSEND_SOCKET)
    log.info("delivering mail for other domains; LMTP on %s", paths.MXSEND_SOCKET)
    await listener.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
