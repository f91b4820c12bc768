"""Per-hop timing of one message through an idle relay (issue 14).

A client in IDLE waits; another account submits one message to it on port 465 over an SMTP
session logged in already. The hops are read from the container's log with Docker's receive
timestamps (``docker logs --timestamps``, the host's clock, as the client's): every daemon
writes its lines to the container's stdout as it goes. Times are milliseconds after the
client began DATA (``sendmail``):

    submission   Postfix's submission smtpd took MAIL FROM (NOQUEUE client=...)
    filter       relay-filter checked it and began re-injecting (reinject-out: client=)
    queued       cleanup wrote the queue file (message-id=)
    accepted     the filter passed Postfix's 250 back to the client (proxy-accept)
    qmgr         the queue manager took it (queue active)
    stored       Dovecot's LMTP stored it, through Sieve (stored mail into mailbox 'INBOX')
    delivered    Postfix's LMTP client logged Dovecot's 250 (status=sent)
    exists       the IDLE client read "* n EXISTS"
"""

from __future__ import annotations

import datetime
import imaplib
import re
import smtplib
import statistics
import threading
import time

from relaytest import Relay, docker, insecure_tls, securejoin_request

HOPS = ("submission", "filter", "queued", "accepted", "qmgr", "stored", "delivered", "exists")


def log_since(relay: Relay, since: float) -> list[tuple[float, str]]:
    """(Unix time, line) of the container's log lines from ``since`` on."""
    stamp = datetime.datetime.fromtimestamp(since - 1, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S")
    out = docker("logs", "--timestamps", "--since", stamp, relay.name, check=False)
    lines = []
    for line in (out.stdout + out.stderr).splitlines():
        when, _, text = line.partition(" ")
        try:
            # 2026-11-30T13:26:08.123456789Z: keep microseconds
            parsed = datetime.datetime.strptime(when[:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            continue
        lines.append((parsed.replace(tzinfo=datetime.UTC).timestamp(), text))
    return lines


def hop_times(lines: list[tuple[float, str]], sender: str, recipient: str,
              message_id: str, since: float) -> dict[str, float]:
    """The Unix time of each hop found in ``lines`` (those from ``since`` on) for the message
    ``message_id`` from ``sender`` to ``recipient`` (hops not found are left out)."""
    found: dict[str, float] = {}
    queue_id = None
    lines = [(when, text) for when, text in lines if when >= since]
    for when, text in lines:
        if "submission" not in found and "NOQUEUE: client=" in text and \
                f"sasl_username={sender}" in text:
            found["submission"] = when
        elif f"message-id=<{message_id}>" in text and "cleanup" in text:
            match = re.search(r"cleanup\[\d+\]: ([0-9A-F]+): message-id", text)
            if match:
                queue_id = match.group(1)
                found["queued"] = when
        elif "proxy-accept: END-OF-MESSAGE" in text and f"to=<{recipient}>" in text:
            found.setdefault("accepted", when)
        elif f"msgid=<{message_id}>" in text and "stored mail into mailbox" in text:
            found["stored"] = when
    if queue_id:
        for when, text in lines:
            if "reinject-out/smtpd" in text and f"{queue_id}: client=" in text:
                found["filter"] = when
            elif "qmgr" in text and f"{queue_id}: from=" in text:
                found["qmgr"] = when
            elif f"{queue_id}: to=<{recipient}>" in text and "status=sent" in text:
                found["delivered"] = when
    return found


def one_message(relay: Relay, smtp, sender: str, im, recipient: str, marker: str) -> dict:
    """Trace one message: ``smtp`` is a logged-in smtplib session of ``sender``, ``im`` an
    imaplib session of ``recipient`` with INBOX selected and nothing new in it. Returns the
    Unix time of each hop. The IDLE client reads in a thread of its own, so its EXISTS is
    timed when it comes, not when the submission's reply has come too."""
    tag = im._new_tag().decode()
    im.send(f"{tag} IDLE\r\n".encode())
    while not im.readline().startswith(b"+"):
        pass
    exists: list[float] = []

    def wait() -> None:
        while b"EXISTS" not in im.readline():
            pass
        exists.append(time.time())

    reader = threading.Thread(target=wait, daemon=True)
    reader.start()
    data = securejoin_request(sender, recipient, marker)
    message_id = re.search(rb"Message-ID: <([^>]+)>", data).group(1).decode()
    started = time.time()
    smtp.sendmail(sender, [recipient], data)
    reader.join(30)
    im.send(b"DONE\r\n")
    while not im.readline().startswith(tag.encode()):
        pass
    time.sleep(0.5)  # the last log lines are still on their way to docker
    hops = hop_times(log_since(relay, started), sender, recipient, message_id, started)
    if exists:
        hops["exists"] = exists[0]
    hops["start"] = started
    return hops


def trace(relay: Relay, rounds: int = 10) -> dict:
    """The median time of each hop (ms after DATA began) over ``rounds`` messages, one at a
    time, to a client in IDLE on an otherwise idle relay; plus each round's total."""
    sender, receiver = relay.new_account(), relay.new_account()
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    im.login(receiver["email"], receiver["password"])
    im.select("INBOX")
    smtp = smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(), timeout=30)
    smtp.login(sender["email"], sender["password"])
    per_hop: dict[str, list[float]] = {name: [] for name in HOPS}
    try:
        for i in range(rounds + 1):  # the first is a warm-up
            hops = one_message(relay, smtp, sender["email"], im, receiver["email"], f"t{i}")
            if i == 0:
                continue
            for name in HOPS:
                if name in hops:
                    per_hop[name].append((hops[name] - hops["start"]) * 1000)
    finally:
        smtp.quit()
        im.logout()
    result = {name: round(statistics.median(v), 1) for name, v in per_hop.items() if v}
    result["rounds"] = rounds
    result["missing"] = [name for name, v in per_hop.items() if not v]
    return result


def client_split(lines: list[tuple[float, str]], sender: str, recipient: str,
                 rounds: list[tuple[float, float]]) -> dict:
    """Where a Delta Chat message's time goes. ``rounds`` holds, per message, the Unix time
    send_text was called and the Unix time the recipient's IncomingMsg event arrived; the
    relay's side comes from ``lines`` (log_since). Per message, in ms (medians returned):

        sender_client       send_text until Postfix took the MAIL FROM of ``sender`` (the
                            sending core builds, encrypts and signs, then submits)
        relay_to_stored     that MAIL FROM until Dovecot's LMTP stored it for ``recipient``
                            (filter, DKIM, queue, LMTP, Sieve)
        stored_to_incoming  stored until the IncomingMsg event: Dovecot's IDLE announcement
                            (ours: the client has EXISTS about when "stored" is logged; stock
                            Dovecot waits 500 ms first), then the receiving core fetches,
                            decrypts and stores the message and tells its UI

    Rounds whose two log lines are not found are counted in ``unmatched``."""
    parts: dict[str, list[float]] = {"sender_client": [], "relay_to_stored": [],
                                    "stored_to_incoming": []}
    unmatched = 0
    for started, arrived in rounds:
        window = [(when, text) for when, text in lines if started <= when <= arrived + 1]
        submitted = next((when for when, text in window if "NOQUEUE: client=" in text
                          and f"sasl_username={sender}" in text), None)
        stored = next((when for when, text in window if submitted is not None and when >= submitted
                       and f"lmtp({recipient})" in text and "stored mail into mailbox" in text), None)
        if submitted is None or stored is None:
            unmatched += 1
            continue
        parts["sender_client"].append((submitted - started) * 1000)
        parts["relay_to_stored"].append((stored - submitted) * 1000)
        parts["stored_to_incoming"].append((arrived - stored) * 1000)
    result: dict = {name: round(statistics.median(v), 1) for name, v in parts.items() if v}
    result["unmatched"] = unmatched
    return result
