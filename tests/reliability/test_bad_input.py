"""Bad input gets a correct SMTP or IMAP reply, crashes nothing, and nobody else notices.

On a relay of its own (MAX_MESSAGE_SIZE=2M): overlong lines and headers, NUL bytes,
8-bit and broken encodings, deeply nested MIME, messages just above the size
limit, malformed SMTP and IMAP commands, pipelining abuse and slow clients. After
each case no daemon has restarted (supervisord's pids and Postfix's master are
the same); at the end the logs show no crash and a normal user still sends,
receives and logs in.
"""

from __future__ import annotations

import base64
import imaplib
import os
import re
import smtplib
import threading
import time

import pytest

from relaytest import insecure_tls, submit, wait_for
from reliability_tools import (CRASH, Wire, account, daemon_pids, encrypted, message_ids,
                               smtp_wire, start_relay, supervised)

SMTP_REPLY = re.compile(rb"^[2-5]\d\d([ -].*)?$")
IMAP_RESPONSE = re.compile(rb"^(\* |\+ |[A-Za-z0-9]+ (OK|NO|BAD)( |$))")
LIMIT = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def env(image_exists):
    relay = start_relay({"MAX_MESSAGE_SIZE": "2M"})
    try:
        people = {name: account(relay) for name in ("alice", "bob", "carol")}
        yield {"relay": relay, **people, "pids": daemon_pids(relay), "log_start": len(relay.logs())}
    finally:
        if os.environ.get("KEEP_RELAY") != "1":
            relay.remove()


@pytest.fixture
def relay(env):
    """The module's relay; after each test, nothing in it has restarted."""
    yield env["relay"]
    assert all(state == "RUNNING" for state, _ in supervised(env["relay"]).values())
    assert daemon_pids(env["relay"]) == env["pids"], "a daemon restarted"


def smtp_session(relay, port: int, payload: bytes) -> list[bytes]:
    """Send raw bytes (ending with QUIT) in one go; every line that comes back until the
    server closes must be an SMTP reply."""
    wire = Wire(relay, port, tls=port == 465)
    with wire:
        assert wire.reply().startswith(b"220")
        if port == 25:  # it requires STARTTLS before any mail command (SPEC 6)
            assert wire.command(b"EHLO mx.other.example\r\n").startswith(b"250")
            assert wire.command(b"STARTTLS\r\n").startswith(b"220")
            wire.starttls()
        wire.send_until_answered(payload, chunk=len(payload))
        lines = wire.rest().split(b"\r\n")
    lines = [line for line in lines if line]
    assert lines and all(SMTP_REPLY.match(line) for line in lines), lines[:20]
    return lines


LOGGED_OUT = rb"^(a2|z) (OK|NO|BAD)"


def imap_session(relay, payload: bytes, login: dict | None = None,
                 last: bytes = LOGGED_OUT, closes: bool = False) -> list[bytes]:
    """The same for IMAP: every line until the server closes, or until the one that
    matches ``last`` (the answer to the LOGOUT the payload ends with), must be an IMAP
    response. ``closes``: the server is expected to give up on this input, so the
    payload is sent only until it answers."""
    wire = Wire(relay, 993, tls=True)
    lines = []
    with wire:
        assert wire.line().startswith(b"* OK")
        if login:
            wire.send(f'L LOGIN "{login["email"]}" "{login["password"]}"\r\n'.encode())
            assert wire.line().startswith(b"L OK")
        if closes:
            wire.send_until_answered(payload)
        else:
            wire.send(payload)
        while line := wire.line_or_eof():
            lines.append(line.rstrip(b"\r\n"))
            if re.match(last, lines[-1]):
                break
    assert lines and all(IMAP_RESPONSE.match(line) for line in lines), lines[:20]
    return lines


def submit_raw(relay, sender: dict, recipient: str, content: bytes) -> bytes:
    """MAIL, RCPT, DATA and the content as they are (no SIZE declared); the reply
    to the end of the data."""
    with smtp_wire(relay, 465, sender) as wire:
        assert wire.command(f"MAIL FROM:<{sender['email']}>\r\n".encode()).startswith(b"250")
        assert wire.command(f"RCPT TO:<{recipient}>\r\n".encode()).startswith(b"250")
        assert wire.command(b"DATA\r\n").startswith(b"354")
        reply = wire.command(content + b"\r\n.\r\n")
        assert wire.command(b"QUIT\r\n").startswith(b"221")
    return reply


def split(message: bytes) -> tuple[bytes, bytes]:
    head, _, body = message.partition(b"\r\n\r\n")
    return head, body


# --- message content, through the filter ---------------------------------------------

def with_extra(env, marker: str, extra_header: bytes = b"", body_prefix: bytes = b"",
               header_edit=lambda head: head) -> bytes:
    head, body = split(encrypted(env["alice"]["email"], env["bob"]["email"], marker))
    return header_edit(head) + extra_header + b"\r\n\r\n" + body_prefix + body


CONTENT_CASES = {
    # name: (message maker, expected reply code, delivered?)
    "overlong body line": (lambda env: with_extra(env, "longbody", body_prefix=b"x" * 5000 + b"\r\n"),
                           500, False),
    "overlong header": (lambda env: with_extra(env, "longhead", b"\r\nX-Long: " + b"y" * 20000),
                        500, False),
    "five thousand headers": (lambda env: with_extra(
        env, "manyheads", b"".join(b"\r\nX-H%d: v" % i for i in range(5000))), 250, True),
    "NUL in body": (lambda env: with_extra(env, "nulbody", body_prefix=b"a\0b\r\n"), 250, True),
    "NUL in header": (lambda env: with_extra(env, "nulhead", b"\r\nX-Nul: a\0b"), 250, True),
    "8-bit header": (lambda env: with_extra(env, "eightbit", b"\r\nX-Raw: \xff\xfe\xe4\xf6\x80"), 250, True),
    "broken encoded words": (lambda env: with_extra(
        env, "encwords", b"\r\nX-Enc: =?utf-8?B?!!!?= =?x-unknown?Q?a=ZZ?= =?utf-8?Q?=E4"), 250, True),
    "8-bit From": (lambda env: with_extra(env, "eightfrom", header_edit=lambda h: h.replace(
        b"From: ", b"From: \xe4\xf6\xff ")), 553, False),
}


@pytest.mark.parametrize("case", CONTENT_CASES)
def test_bad_message_content_through_the_filter(env, relay, case):
    make, want, delivered = CONTENT_CASES[case]
    content = make(env)
    marker = re.search(rb"<([^@]+)@reliability\.test>", content).group(1).decode()
    reply = submit_raw(relay, env["alice"], env["bob"]["email"], content)
    assert int(reply[:3]) == want, reply
    if delivered:
        wait_for(lambda: marker in message_ids(relay, env["bob"]["email"]), 30, what="delivery")
    else:
        assert marker not in message_ids(relay, env["bob"]["email"])


def nested(depth: int, sender: str, recipient: str) -> bytes:
    head = f"From: <{sender}>\r\nTo: <{recipient}>\r\nMIME-Version: 1.0\r\n".encode()
    parts = [head + b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n']
    for i in range(1, depth):
        parts.append(b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (i - 1, i))
    parts.append(b"--b%d\r\nContent-Type: text/plain\r\n\r\nhi\r\n" % (depth - 1))
    parts.extend(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return b"".join(parts)


@pytest.mark.parametrize("depth,want", [(50, 523), (2000, 554)])
def test_deeply_nested_mime(env, relay, depth, want):
    """Not encrypted either way: refused with 523, or 554 5.6.0 when the nesting is too
    deep for the parser; the filter survives both."""
    reply = submit_raw(relay, env["alice"], env["bob"]["email"],
                       nested(depth, env["alice"]["email"], env["bob"]["email"]))
    assert int(reply[:3]) == want, reply


def with_attachment(sender: str, recipient: str, size: int) -> bytes:
    encoded = base64.encodebytes(b"\xa5" * (size * 3 // 4)).replace(b"\n", b"\r\n")
    return (f"From: <{sender}>\r\nTo: <{recipient}>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            ).encode() + encoded + b"--b--\r\n"


def test_attachment_just_above_the_size_limit(env, relay):
    alice, bob = env["alice"], env["bob"]
    big = with_attachment(alice["email"], bob["email"], LIMIT + 64 * 1024)
    assert len(big) > LIMIT
    # without SIZE: refused at the end of the data
    reply = submit_raw(relay, alice, bob["email"], big)
    assert reply.startswith(b"552"), reply
    # with SIZE (smtplib declares it): refused at MAIL FROM, before any data
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        submit(relay, alice, [bob["email"]], big)
    assert refused.value.smtp_code == 552
    # just below the limit it reaches the filter, which reads it and refuses it (not encrypted)
    below = with_attachment(alice["email"], bob["email"], LIMIT - 256 * 1024)
    reply = submit_raw(relay, alice, bob["email"], below)
    assert reply.startswith(b"523"), reply


# --- SMTP commands (Postfix) -------------------------------------------------------------

SMTP_CASES = {
    "overlong command": b"EHLO " + b"a" * 5000 + b"\r\nQUIT\r\n",
    "NUL in command": b"EHLO a\0b\r\nMAIL FROM:<a\0@x.example>\r\nQUIT\r\n",
    "8-bit command": b"EHLO x\r\nMAIL FROM:<\xff\xfe@x.example>\r\nQUIT\r\n",
    "TLS hello on a plain port": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(40))
                                 + b"\r\nQUIT\r\n",
    "malformed commands": b"EHLO x\r\nMAIL FROM:<a@b\r\nMAIL FROM:<<>>\r\nRCPT TO:<x>\r\nRCPT\r\n"
                          b"DATA\r\nBDAT 10\r\nVRFY root\r\nEXPN all\r\nETRN x\r\nQUIT\r\n",
    "unknown commands": b"".join(b"XYZZY%d\r\n" % i for i in range(5)) + b"QUIT\r\n",
}


@pytest.mark.parametrize("case", SMTP_CASES)
@pytest.mark.parametrize("port", [25, 465])
def test_malformed_smtp_commands(relay, case, port):
    lines = smtp_session(relay, port, SMTP_CASES[case])
    assert lines[-1].startswith(b"221"), lines[-3:]


def test_endless_errors_end_the_session(relay):
    """Postfix ends a session that only sends errors (and sleeps before each reply
    after the tenth), so a garbage stream cannot keep a process busy forever."""
    lines = smtp_session(relay, 25, b"".join(b"GARBAGE %d\r\n" % i for i in range(30)))
    assert lines[-1].startswith(b"421"), lines[-3:]
    assert len(lines) <= 21


def test_pipelining_abuse(env, relay):
    """The whole transaction, message included, sent before any reply: the message is
    refused (DATA before the server allowed it) and nothing is delivered."""
    bob = env["bob"]
    sender = "dave@[192.0.2.1]"
    message = encrypted(sender, bob["email"], "pipelined")
    payload = (b"EHLO mx.other.example\r\n" + f"MAIL FROM:<{sender}>\r\nRCPT TO:<{bob['email']}>\r\n".encode()
               + b"DATA\r\n" + message + b"\r\n.\r\nQUIT\r\n")
    lines = smtp_session(relay, 25, payload)
    assert any(line.startswith(b"503 5.5.0") and b"pipelining" in line for line in lines), lines
    assert not any(line.startswith(b"354") for line in lines)
    assert "pipelined" not in message_ids(relay, bob["email"])


# --- IMAP (Dovecot) -----------------------------------------------------------------------

IMAP_CASES = {
    # before login (imap-login), then after login (imap, as the user)
    "overlong line": (b"a1 LOGIN " + b"x" * 100000 + b" y\r\na2 LOGOUT\r\n", rb"\* BYE Input buffer full"),
    "NUL": (b"a1 NO\0OP\r\na2 LOGOUT\r\n", rb"a1 BAD"),
    "8-bit": (b"a1 LOGIN \xff\xfe \xe4\r\na2 LOGOUT\r\n", rb"a1 BAD"),
    "huge literal": (b"a1 LOGIN {4294967296}\r\n", rb"\* BYE Literal size too large"),
    "huge non-synchronizing literal": (b"a1 LOGIN {999999999+}\r\nabc\r\na2 LOGOUT\r\n",
                                       rb"\* BYE Literal size too large"),
    "garbage": (b"\x00\x01\x02 GARBAGE ((((\r\n)))\r\n* * *\r\n", rb"\* BYE Too many invalid"),
    "deep parentheses": (b"a1 ID " + b"(" * 3000 + b"\r\na2 LOGOUT\r\n", rb"a1 BAD"),
    "thousands of pipelined commands": (b"".join(b"n%d NOOP\r\n" % i for i in range(2000))
                                        + b"z LOGOUT\r\n", rb"n1999 OK"),
}
IMAP_AFTER_LOGIN = {
    "huge APPEND": (b"a1 APPEND INBOX {5000000000}\r\na2 LOGOUT\r\n", rb"a1 NO"),
    "overlong argument": (b"a1 SELECT " + b"x" * 100000 + b"\r\na2 LOGOUT\r\n", rb"a1 BAD"),
    "deeply nested SEARCH": (b"s SELECT INBOX\r\na1 SEARCH " + b"(" * 5000 + b"ALL" + b")" * 5000
                             + b"\r\na2 LOGOUT\r\n", rb"a1 (BAD|NO|OK)"),
    "huge FETCH": (b"s SELECT INBOX\r\na1 FETCH 1:* (BODY.PEEK[HEADER.FIELDS (" + b"X " * 5000
                   + b")])\r\na2 LOGOUT\r\n", rb"a1 (BAD|OK)"),
    "NUL in a mailbox name": (b"a1 SELECT IN\0BOX\r\na2 LOGOUT\r\n", rb"a1 BAD"),
    "garbage while idling": (b"s SELECT INBOX\r\na1 IDLE\r\nGARBAGE\r\na2 LOGOUT\r\n", rb"a1 BAD"),
}


def test_huge_non_synchronizing_append(env, relay):
    """Refused at once (the mailbox quota); Dovecot then reads the announced literal
    away, so this client only hears the refusal and goes."""
    lines = imap_session(relay, b"a1 APPEND INBOX {5000000000+}\r\nxyz\r\n", login=env["carol"],
                         last=rb"^a1 ")
    assert lines[-1].startswith(b"a1 NO"), lines


@pytest.mark.parametrize("case", IMAP_CASES)
def test_malformed_imap_before_login(relay, case):
    payload, expected = IMAP_CASES[case]
    lines = imap_session(relay, payload, closes=expected.startswith(rb"\* BYE Input"))
    assert any(re.match(expected, line) for line in lines), lines[-5:]


@pytest.mark.parametrize("case", IMAP_AFTER_LOGIN)
def test_malformed_imap_after_login(env, relay, case):
    payload, expected = IMAP_AFTER_LOGIN[case]
    lines = imap_session(relay, payload, login=env["carol"])
    assert any(re.match(expected, line) for line in lines), lines[-5:]
    assert lines[-1].startswith(b"a2 OK"), "the session went on to LOGOUT"


# --- slow clients -------------------------------------------------------------------------

def test_slow_clients_do_not_hold_up_others(env, relay):
    """Thirty clients that send one byte every 0.2 s (bounded: a few seconds each); while
    they dribble, another user sends, receives and logs in; each slow one is answered."""
    alice, bob = env["alice"], env["bob"]
    results: list[bytes] = []
    errors: list[BaseException] = []

    def dribble(port: int, tls: bool, command: bytes, banner: bytes):
        try:
            with Wire(relay, port, tls=tls) as wire:
                assert wire.line().startswith(banner)
                for byte in command:
                    wire.send(bytes([byte]))
                    time.sleep(0.2)  # the point of this client: it is slow
                results.append(wire.reply() if port != 993 else wire.line())
        except BaseException as exc:
            errors.append(exc)

    clients = ([threading.Thread(target=dribble, args=(25, False, b"EHLO slow.example\r\n", b"220"))
                for _ in range(10)]
               + [threading.Thread(target=dribble, args=(465, True, b"EHLO slow.example\r\n", b"220"))
                  for _ in range(10)]
               + [threading.Thread(target=dribble, args=(993, True, b"a1 NOOP\r\n", b"* OK"))
                  for _ in range(10)])
    for client in clients:
        client.start()
    # meanwhile, a normal user
    submit(relay, alice, [bob["email"]], encrypted(alice["email"], bob["email"], "whileslow"))
    wait_for(lambda: "whileslow" in message_ids(relay, bob["email"]), 30, what="delivery")
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    assert im.login(bob["email"], bob["password"])[0] == "OK"
    im.logout()
    assert any(c.is_alive() for c in clients), "the slow clients were still sending meanwhile"
    for client in clients:
        client.join(60)
    assert not errors, errors
    assert len(results) == 30
    assert all(r.startswith(b"250 ") or r.startswith(b"a1 OK") for r in results), results


# --- afterwards ---------------------------------------------------------------------------

def test_no_crash_in_the_logs_and_everyone_else_served(env, relay):
    logs = relay.logs()[env["log_start"]:]
    crashes = [line for line in logs.splitlines() if CRASH.search(line)]
    assert not crashes, crashes[:20]
    alice, bob = env["alice"], env["bob"]
    submit(relay, bob, [alice["email"]], encrypted(bob["email"], alice["email"], "afterall"))
    wait_for(lambda: "afterall" in message_ids(relay, alice["email"]), 30, what="delivery")
