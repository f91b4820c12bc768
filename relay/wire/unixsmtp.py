"""smtplib over a UNIX socket (how our helpers hand mail to Postfix's services in
public/), and the recipient and data steps every SMTP client of ours shares."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable
from pathlib import Path

TIMEOUT = 60


class UnixSMTP(smtplib.SMTP):
    """``UnixSMTP(path).connect()`` talks SMTP to the socket at ``path``."""

    def __init__(self, path: Path, timeout: float = TIMEOUT) -> None:
        self._path = str(path)
        super().__init__(timeout=timeout)

    def _get_socket(self, host, port, timeout):  # noqa: ANN001 (smtplib's signature)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(self._path)
        return sock


def recipients_and_data(smtp: smtplib.SMTP, recipients: list[str], data: bytes,
                        reply: Callable[[int, bytes | str], str]
                        ) -> tuple[list[str], dict[str, str], tuple[int, bytes | str] | None]:
    """After MAIL FROM: RCPT TO for each recipient, then DATA if any was accepted.

    Returns the accepted recipients, the refused ones with ``reply(code, text)`` of
    their refusal, and the reply to the end of DATA (None when no recipient was
    accepted: the transaction is reset instead)."""
    accepted: list[str] = []
    refused: dict[str, str] = {}
    for rcpt in recipients:
        code, text = smtp.rcpt(rcpt)
        if code in (250, 251):
            accepted.append(rcpt)
        else:
            refused[rcpt] = reply(code, text)
    if not accepted:
        smtp.rset()
        return accepted, refused, None
    try:
        return accepted, refused, smtp.data(data)
    except smtplib.SMTPDataError as exc:
        return accepted, refused, (exc.smtp_code, exc.smtp_error)
