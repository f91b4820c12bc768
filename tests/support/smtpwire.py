"""A raw SMTP client for tests that need what smtplib hides or rewrites.

smtplib turns every bare LF into CRLF, knows no BDAT (CHUNKING) and sends one
command at a time; tests of "every advertised extension works end to end"
(issue 17 §3) need all three. This client sends exactly the bytes it is given:

    with Wire.connect(relay, 465) as w:          # 25/587: STARTTLS; 465: TLS; 443: ALPN smtp
        w.ehlo(); w.login(addr, password)
        result = w.send(sender, [rcpt], data, options=["SMTPUTF8"], bdat=True)
        result.accepted     # True for a 250 at the end of the transaction
        result.stage        # where it ended: "MAIL", "RCPT", "DATA", "BDAT" or "end"
"""

from __future__ import annotations

import base64
import socket
import ssl
from dataclasses import dataclass

STARTTLS_PORTS = (25, 587)


@dataclass
class Result:
    stage: str
    code: int
    text: str

    @property
    def accepted(self) -> bool:
        return self.stage == "end" and self.code == 250


class Wire:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rb")
        self.keywords: dict[str, str] = {}

    @classmethod
    def connect(cls, relay, port: int, helo: str = "client.example", timeout: float = 60
                ) -> "Wire":
        """Connected, greeted, TLS up and EHLO done on ``port`` of ``relay`` (container port)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", relay.port(port)), timeout)
        if port in STARTTLS_PORTS:
            wire = cls(raw)
            wire.reply()
            wire.ehlo(helo)
            wire.command(b"STARTTLS", expect=220)
            wire = cls(ctx.wrap_socket(raw))
        else:
            if port == 443:
                ctx.set_alpn_protocols(["smtp"])
            wire = cls(ctx.wrap_socket(raw))
            wire.reply()
        wire.ehlo(helo)
        return wire

    def __enter__(self) -> "Wire":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("connection closed")
            lines.append(line[4:].rstrip(b"\r\n").decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    def command(self, line: bytes, expect: int | None = None) -> tuple[int, str]:
        self.sock.sendall(line + b"\r\n")
        code, text = self.reply()
        if expect is not None and code != expect:
            raise AssertionError(f"{line[:40]!r}: {code} {text}")
        return code, text

    def ehlo(self, helo: str = "client.example") -> dict[str, str]:
        _, text = self.command(f"EHLO {helo}".encode(), expect=250)
        self.keywords = {}
        for line in text.split("\n")[1:]:
            word, _, param = line.partition(" ")
            self.keywords[word.upper()] = param
        return self.keywords

    def login(self, user: str, password: str) -> None:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.command(f"AUTH PLAIN {token}".encode(), expect=235)

    def rset(self) -> None:
        self.command(b"RSET", expect=250)

    def send(self, sender: str, recipients: list[str], data: bytes, options: list[str] = (),
             bdat: bool = False, pipelined: bool = False, chunk: int = 65536) -> Result:
        """One transaction; ``data`` goes on the wire as it is (dot-stuffed for DATA)."""
        mail = f"MAIL FROM:<{sender}>{''.join(' ' + o for o in options)}".encode()
        rcpts = [f"RCPT TO:<{r}>".encode() for r in recipients]
        if pipelined:  # RFC 2920: the whole envelope (and DATA) in one write
            tail = [] if bdat else [b"DATA"]
            self.sock.sendall(b"\r\n".join([mail, *rcpts, *tail]) + b"\r\n")
            replies = [self.reply() for _ in range(1 + len(rcpts) + len(tail))]
        else:
            replies = [self.command(mail)]
            if replies[0][0] == 250:
                replies += [self.command(r) for r in rcpts]
        code, text = replies[0]
        if code != 250:
            self._abort(replies, pipelined and not bdat)
            return Result("MAIL", code, text)
        good = [r for r in replies[1:1 + len(rcpts)] if r[0] in (250, 251)]
        if not good:
            bad = replies[1]
            self._abort(replies, pipelined and not bdat)
            return Result("RCPT", bad[0], bad[1])
        if bdat:
            return self._bdat(data, chunk)
        code, text = replies[-1] if pipelined else self.command(b"DATA")
        if code != 354:
            return Result("DATA", code, text)
        self.sock.sendall(dot_stuff(data) + b".\r\n")
        code, text = self.reply()
        return Result("end", code, text)

    def _abort(self, replies, data_sent: bool) -> None:
        if data_sent and replies[-1][0] == 354:  # pipelined DATA was accepted after all
            self.sock.sendall(b".\r\n")
            self.reply()
        self.rset()

    def _bdat(self, data: bytes, chunk: int) -> Result:
        pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            self.sock.sendall(f"BDAT {len(piece)}{' LAST' if last else ''}\r\n".encode() + piece)
            code, text = self.reply()
            if last:
                return Result("end", code, text)
            if code != 250:
                return Result("BDAT", code, text)
        raise AssertionError("unreachable")


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency, keeping the message's own line ends (bare LF too);
    the last line gets a CRLF so that the final dot stands on a line of its own."""
    lines = data.split(b"\n")
    out = b"\n".join(b"." + line if line.startswith(b".") else line for line in lines)
    if not out.endswith(b"\r\n"):
        out = out[:-1] + b"\r\n" if out.endswith(b"\n") else out + b"\r\n"
    return out
