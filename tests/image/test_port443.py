"""Port 443 carries IMAP and SMTP for clients that ask for ALPN "imap" or "smtp"."""

import imaplib
import socket

import pytest

from relaytest import insecure_tls, securejoin_request, wait_for


def tls_443(relay, alpn):
    ctx = insecure_tls()
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", relay.port(443)), timeout=10)
    return ctx.wrap_socket(raw)


def read_line(sock) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def test_alpn_imap_reaches_dovecot(relay):
    with tls_443(relay, ["imap"]) as sock:
        assert read_line(sock).startswith(b"* OK")


def test_alpn_smtp_reaches_postfix_submission(relay):
    with tls_443(relay, ["smtp"]) as sock:
        assert read_line(sock).startswith(b"220 ")
        sock.sendall(b"EHLO client.example\r\n")
        lines = []
        while not (line := read_line(sock)).startswith(b"250 "):
            lines.append(line)
        assert any(b"AUTH PLAIN" in line for line in lines)


@pytest.mark.parametrize("alpn", [None, ["http/1.1"], ["h2", "http/1.1"]])
def test_other_alpn_reaches_the_web_server(relay, alpn):
    with tls_443(relay, alpn) as sock:
        if sock.selected_alpn_protocol() == "h2":
            return  # nginx answered with HTTP/2: it is the web server
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_line(sock).startswith(b"HTTP/1.1 200")


def test_login_and_submission_over_443_keep_the_client_address(relay):
    acct = relay.new_account()
    ctx = insecure_tls()
    ctx.set_alpn_protocols(["imap"])

    class IMAP443(imaplib.IMAP4_SSL):
        pass

    im = IMAP443("127.0.0.1", relay.port(443), ssl_context=ctx, timeout=20)
    im.login(acct["email"], acct["password"])
    im.logout()

    with tls_443(relay, ["smtp"]) as sock:
        import smtplib

        smtp = smtplib.SMTP()
        smtp.sock = sock
        smtp.file = None
        assert smtp.getreply()[0] == 220
        smtp.ehlo("client.example")
        smtp.login(acct["email"], acct["password"])
        smtp.sendmail(acct["email"], [acct["email"]], securejoin_request(acct["email"], acct["email"]))
        smtp.quit()
    wait_for(lambda: relay.mailbox_files(acct["email"]), 30, what="delivery via 443")

    logs = relay.logs()
    login_lines = [l for l in logs.splitlines() if "Login: user=<" + acct["email"] in l]
    assert login_lines and all("rip=127.0.0.1" not in l for l in login_lines), login_lines
    sasl = [l for l in logs.splitlines() if "submissions-443" in l and f"sasl_username={acct['email']}" in l]
    assert sasl and "[127.0.0.1]" not in sasl[0], sasl
