"""Real-world message shapes through every way in (issue 17, acceptance 2).

Each shape (folded and encoded headers, obsolete syntax, raw UTF-8 headers with
SMTPUTF8, 8-bit headers with 8BITMIME, BDAT, pipelining, bare LF line ends, long
lines) goes through 465 and 587 (submitted by a user of the relay), 25 (another
server, STARTTLS) and POST /mxdeliv (another relay), byte for byte as written
here (tests/support/smtpwire.py; smtplib would rewrite bare LFs). The rule:
every 250 (HTTP 2xx) ends in the recipient's mailbox within 10 s, intact
(OpenPGP/MIME structure and the shape's own headers); every refusal comes during
the SMTP or HTTP transaction; nothing bounces afterwards.

Mail from other servers carries an IP-literal From (the DKIM rule exempts IP
relays), so the shapes are what is judged here; DKIM has its own tests.
"""

import secrets
import time

import pytest

from compat_mail import EXTERNAL, accounts, bounce_lines, message, tokens_in_mailbox
from fednet import post_mxdeliv
from relaytest import logs_since, wait_for
from smtpwire import Wire

DEADLINE = 10.0  # seconds from the 250 to the mailbox


def shapes(sender: str, rcpt: str) -> dict:
    """name -> (header lines, send options); every shape is legal and must be delivered."""
    s, r = sender.encode(), rcpt.encode()
    return {
        "folded_from": ([b"From: Alice\r\n <" + s + b">", b"To: <" + r + b">",
                         b"Subject: [...]"], {}),
        "obsolete_phrase": ([b"From: A. Q. Smith <" + s + b">", b"To: " + r,
                             b"Subject: [...]"], {}),
        "folded_everywhere": ([b"From: (sent by)\r\n \"Smith, A. (Jr.)\"\r\n\t<" + s
                               + b">\r\n (work)", b"To:\r\n " + r + b" (me)",
                               b"Subject:\r\n [...]"], {}),
        "encoded_words": ([b"From: =?utf-8?b?SsO2cmcgw5xiZXI=?= =?ISO-8859-1?Q?M=FCller?= <"
                           + s + b">", b"To: =?koi8-r?q?=F4=C5=D3=D4?= <" + r + b">",
                           b"Subject: =?iso-2022-jp?b?GyRCJUYlOSVIGyhC?="], {}),
        "utf8_headers_smtputf8": ([("From: Jörg Müller 😀 <" + sender + ">").encode(),
                                   b"To: " + r, "Subject: Grüße, ÄÖÜ".encode(),
                                   "X-Note: ünïcödé text without addresses".encode()],
                                  {"options": ["SMTPUTF8", "BODY=8BITMIME"]}),
        "eightbit_headers_8bitmime": ([b"From: J\xf6rg M\xfcller <" + s + b">", b"To: " + r,
                                       b"Subject: Gr\xfc\xdfe", b"X-Note: caf\xe9"],
                                      {"options": ["BODY=8BITMIME"]}),
        "bdat": ([b"From: <" + s + b">", b"To: <" + r + b">", b"Subject: [...]"],
                 {"bdat": True, "chunk": 700}),
        "pipelined": ([b"From: " + s, b"To: " + r, b"Subject: [...]"], {"pipelined": True}),
        "bare_lf": ([b"From: A. Smith <" + s + b">", b"To: " + r, b"Subject: [...]"],
                    {"eol": b"\n"}),
        "long_lines": ([b"From: <" + s + b">", b"To: <" + r + b">", b"Subject: [...]",
                        b"X-Long: " + b"x" * 980,
                        b"X-Folded: " + b"\r\n ".join([b"y" * 900] * 6)], {}),
        "mixed_case_and_obsolete_colon": ([b"FROM : <" + s.upper() + b">", b"tO: " + r,
                                           b"subject: [...]"], {}),
    }


@pytest.fixture(scope="module")
def people(relay):
    """bob receives the submitted shapes, dave those from other servers; one sender per
    submission port and half of the shapes (the send rate limit's burst is 10)."""
    bob, dave, *senders = accounts(relay, 6)
    return bob, dave, senders


def send_all(relay, way: str, sender_acct, sender: str, rcpt: str, names) -> dict:
    """The named shapes through one way in: name -> (token, accepted, reply, time of reply)."""
    results = {}
    every = shapes(sender, rcpt)
    if way == "mxdeliv":
        for name in names:
            head, opts = every[name]
            token = f"compat-{secrets.token_hex(6)}"
            data = message(token, head, opts.get("eol", b"\r\n"))
            status, _, payload = post_mxdeliv(relay, data, [sender], [rcpt])
            results[name] = (token, 200 <= status < 300, f"{status} {payload}", time.time())
        return results
    with Wire.connect(relay, int(way)) as wire:
        if sender_acct is not None:
            wire.login(sender_acct["email"], sender_acct["password"])
        for name in names:
            head, opts = every[name]
            token = f"compat-{secrets.token_hex(6)}"
            data = message(token, head, opts.get("eol", b"\r\n"))
            res = wire.send(sender, [rcpt], data, options=opts.get("options", []),
                            bdat=opts.get("bdat", False), pipelined=opts.get("pipelined", False),
                            chunk=opts.get("chunk", 65536))
            results[name] = (token, res.accepted, f"{res.stage} {res.code} {res.text}",
                             time.time())
            if not res.accepted:
                wire.rset()
    return results


def test_every_shape_every_way_is_delivered_within_10s(relay, people):
    bob, dave, senders = people
    start = time.time() - 1
    names = sorted(shapes("a@b", "c@d"))
    halves = (names[:len(names) // 2], names[len(names) // 2:])
    sent = {}
    for i, (way, half) in enumerate((w, h) for w in ("465", "587") for h in halves):
        alice = senders[i]
        for name, res in send_all(relay, way, alice, alice["email"], bob["email"], half).items():
            sent[(way, name)] = (bob["email"], *res)
    for way in ("25", "mxdeliv"):
        for name, res in send_all(relay, way, None, EXTERNAL, dave["email"], names).items():
            sent[(way, name)] = (dave["email"], *res)
    refused = {k: v[3] for k, v in sent.items() if not v[2]}
    assert not refused, f"legal shapes refused: {refused}"

    arrived: dict[tuple, float] = {}  # when Dovecot wrote the file
    contents: dict[tuple, bytes] = {}

    def all_arrived():
        for address in (bob["email"], dave["email"]):
            found = tokens_in_mailbox(relay, address)
            for key, (addr, token, _, _, _) in sent.items():
                if addr == address and token in found:
                    contents[key], arrived[key] = found[token]
        return len(arrived) == len(sent)

    wait_for(all_arrived, DEADLINE + 5, 0.3, "every accepted message in its mailbox")
    late = {k: round(arrived[k] - v[4], 1) for k, v in sent.items() if arrived[k] - v[4] > DEADLINE}
    assert not late, f"delivered later than {DEADLINE} s after the 250: {late}"
    for key, data in contents.items():
        head, _, body = data.replace(b"\r\n", b"\n").partition(b"\n\n")
        assert b"multipart/encrypted" in head.lower() and b"-----BEGIN PGP MESSAGE-----" in body, key
        assert b"-----END PGP MESSAGE-----" in body, key
    assert not bounce_lines(logs_since(relay, start), [bob["email"], dave["email"]])
