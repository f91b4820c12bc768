"""Helpers of the reliability suite: relays of its own, accounts, encrypted messages, a
view of the relay's processes (to tell that nothing crashed or restarted) and of its
mailboxes, and raw SMTP/IMAP conversations."""

from __future__ import annotations

import base64
import re
import secrets
import select
import smtplib
import socket
import ssl

from relaytest import Relay, insecure_tls, securejoin_request, submit, wait_for

import corpus_tools as ct

# Settings for the suite's own relays: no limit of the normal kind gets in the way of
# what a test is about (a loaded CI machine must not refuse accounts either).
RELIABILITY_ENV = {
    "MAIL_DOMAIN": "_sturdy.example.test",
    "TLS_MODE": "self-signed",
    "NEW_ACCOUNTS_PER_MINUTE": "6000",
    "MAX_USER_SEND_PER_MINUTE": "100000",
    "MAX_USER_SEND_BURST": "100000",
    "CREATE_MAX_LOAD": "1000",
    "CREATE_MIN_FREE_MEMORY": "0",
}

# Figures a test wants in the terminal summary at the end of the run (conftest.py).
SUMMARY: list[str] = []

# Lines that mean a process died or hit an internal error, in any daemon's log.
CRASH = re.compile(r"panic|fatal|Traceback|killed by signal|terminated abnormally|"
                   r"exited: .*not expected|status [1-9]\d*\)|Segmentation|core dumped", re.I)


def start_relay(env: dict[str, str] | None = None, **relay_options) -> Relay:
    """A relay of the suite's own, healthy (the caller removes it); ``env`` adds to
    RELIABILITY_ENV, ``relay_options`` go to Relay (e.g. data_tmpfs_size)."""
    relay = Relay({**RELIABILITY_ENV, **(env or {})}, **relay_options)
    relay.start()
    try:
        relay.wait_healthy()
    except Exception:
        relay.remove()
        raise
    return relay


def account(relay: Relay) -> dict:
    """An account that exists (made by its first login) with an empty mailbox."""
    acct = relay.new_account()
    submit(relay, acct, [acct["email"]], securejoin_request(acct["email"], acct["email"]))
    wait_for(lambda: relay.mailbox_files(acct["email"]), 30, what="first delivery")
    relay.exec("sh", "-c", f"rm -f /data/mail/{acct['email']}/Maildir/new/*")
    return acct


def encrypted(sender: str, recipient: str, marker: str = "") -> bytes:
    """A real OpenPGP/MIME message (from the corpus) that the filter accepts; the marker
    goes into its Message-ID, which reaches the mailbox unchanged."""
    _, _, data, _ = ct.load_case("enc_one_pkesk.eml", sender, recipient)
    marker = marker or secrets.token_hex(8)
    return re.sub(rb"Message-ID: <[^>]*>", b"Message-ID: <%s@reliability.test>" % marker.encode(),
                  data, count=1)


def message_ids(relay: Relay, address: str) -> list[str]:
    """The Message-ID markers of every message in the INBOX, one entry per message, as
    Dovecot itself reads the mailbox (whatever the storage format)."""
    out = relay.exec("doveadm", "fetch", "-u", address, "hdr.message-id", "mailbox", "INBOX").stdout
    return re.findall(r"<([^@>]+)@reliability\.test>", out)


def supervised(relay: Relay) -> dict[str, tuple[str, int | None]]:
    """supervisord's view: program -> (state, pid)."""
    out = relay.exec("supervisorctl", "-c", "/etc/supervisor/supervisord.conf", "status",
                     check=False).stdout
    programs = {}
    for line in out.splitlines():
        parts = line.split()
        pid = re.search(r"pid (\d+),", line)
        programs[parts[0]] = (parts[1], int(pid.group(1)) if pid else None)
    return programs


def daemon_pids(relay: Relay) -> dict[str, int | None]:
    """Every supervised program's pid plus the master processes below them: a restart
    of any of them changes this."""
    pids = {name: pid for name, (_, pid) in supervised(relay).items()}
    master = relay.exec("cat", "/data/postfix/pid/master.pid", check=False).stdout.strip()
    pids["postfix master"] = int(master) if master.isdigit() else None
    return pids


def smtp_login(relay: Relay, acct: dict, port: int = 465) -> smtplib.SMTP:
    if port == 465:
        smtp = smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(), timeout=60)
    else:
        smtp = smtplib.SMTP("127.0.0.1", relay.port(port), timeout=60)
        smtp.starttls(context=insecure_tls())
    smtp.login(acct["email"], acct["password"])
    return smtp


class Wire:
    """A raw SMTP or IMAP conversation: exact bytes out, replies line by line."""

    def __init__(self, relay: Relay, port: int, tls: bool, timeout: float = 30,
                 alpn: list[str] | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", relay.port(port)), timeout=timeout)
        self.sock: socket.socket | ssl.SSLSocket = raw
        if tls:
            ctx = insecure_tls()
            if alpn:
                ctx.set_alpn_protocols(alpn)
            self.sock = ctx.wrap_socket(raw)
        self.file = self.sock.makefile("rb")

    def starttls(self) -> None:
        self.sock = insecure_tls().wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")

    def line(self) -> bytes:
        return self.file.readline()

    def reply(self) -> bytes:
        """One SMTP reply (the last line of a multi-line one)."""
        while True:
            line = self.file.readline()
            if not line or line[3:4] != b"-":
                return line

    def quiet_for(self, seconds: float) -> bool:
        """True when nothing arrives within ``seconds`` (nothing is consumed)."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return False
        readable, _, _ = select.select([self.sock], [], [], seconds)
        return not readable

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_until_answered(self, data: bytes, chunk: int = 4096) -> None:
        """Send ``data`` piece by piece, but stop once the server has answered or closed
        (a server that refuses an overlong line does not read the rest of it). The first
        piece always goes: right after a TLS handshake the socket is readable with the
        server's session tickets, which are no answer."""
        for start in range(0, len(data), chunk):
            if start and not self.quiet_for(0):
                return
            try:
                self.sock.sendall(data[start:start + chunk])
            except OSError:  # closed by the server meanwhile; its answer is read next
                return

    def line_or_eof(self) -> bytes:
        try:
            return self.file.readline()
        except OSError:  # the server closed the connection while we were sending
            return b""

    def command(self, data: bytes) -> bytes:
        self.send(data)
        return self.reply()

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        chunks = []
        while chunk := self.sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Wire":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def smtp_wire(relay: Relay, port: int, acct: dict | None = None, tls: bool | None = None,
              alpn: list[str] | None = None) -> Wire:
    """A raw SMTP session after the greeting and EHLO (and AUTH, given an account).
    465 and 443 speak TLS at once; 25 and 587 upgrade with STARTTLS when ``tls`` is
    true (by default: when an account logs in, and always on 25, which requires it)."""
    implicit = port in (465, 443)
    wire = Wire(relay, port, tls=implicit, alpn=alpn)
    assert wire.reply().startswith(b"220")
    assert wire.command(b"EHLO client.example\r\n").startswith(b"250")
    if not implicit and (tls if tls is not None else (acct is not None or port == 25)):
        assert wire.command(b"STARTTLS\r\n").startswith(b"220")
        wire.starttls()
        assert wire.command(b"EHLO client.example\r\n").startswith(b"250")
    if acct is not None:
        token = base64.b64encode(b"\0" + acct["email"].encode() + b"\0" + acct["password"].encode())
        assert wire.command(b"AUTH PLAIN " + token + b"\r\n").startswith(b"235")
    return wire
