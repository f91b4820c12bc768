"""smtplib over a UNIX socket: how our helpers hand mail to Postfix's services in public/."""

from __future__ import annotations

import smtplib
import socket
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
