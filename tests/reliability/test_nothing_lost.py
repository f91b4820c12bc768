"""Nothing accepted is lost: the container dies under load and every message that got
a 250 reply is delivered after the restart, exactly once.

A bounded load generator submits LOAD_MESSAGES (500) real OpenPGP/MIME messages
through the filter on port 465 from LOAD_THREADS (5) clients, each logged in as its
own user. After a third of them were accepted the whole container is killed
(`docker kill`: SIGKILL to every process), started again on the same volume, and
the clients carry on. Then the same with a graceful `docker stop`.

Each message carries a unique id in its Message-ID; the recipient's mailbox is
read through Dovecot. Counted: accepted (250), delivered (accepted ones in the
mailbox), lost (accepted, never delivered), duplicated (in the mailbox more than
once), and, for information, messages whose 250 was cut off by the kill but which
were delivered anyway (a client that retries sends those twice; the relay cannot
know). The counts are printed, written to <pytest tmp>/nothing_lost/<case>.json
and shown in the terminal summary.

Nothing accepted is ever lost, and nothing is delivered twice. A graceful stop
drains Postfix (relay/delivery/postfix_master.py), so no delivery is cut in half. SIGKILL can
cut one in half: a message that Dovecot has stored but whose 250 Postfix has not
yet recorded is delivered again after the restart (Postfix guarantees at least
once). Dovecot recognises the repeat by its Message-ID and drops it
(config/etc/dovecot/sieve/deliver-once.sieve), so the mailbox holds every accepted
message exactly once in both cases.
"""

from __future__ import annotations

import collections
import json
import os
import re
import smtplib
import threading
import time

import pytest

from relaytest import wait_for
from reliability_tools import SUMMARY, account, encrypted, message_ids, smtp_login, start_relay

pytestmark = pytest.mark.slow

MESSAGES = int(os.environ.get("LOAD_MESSAGES", 500))
THREADS = int(os.environ.get("LOAD_THREADS", 5))


class Load:
    """Clients that submit numbered messages until all were tried once; while the relay
    is down they wait (bounded) for it to come back."""

    def __init__(self, relay, senders: list[dict], recipient: dict, prefix: str, total: int) -> None:
        self.relay, self.senders, self.recipient = relay, senders, recipient
        self.ids = collections.deque(f"{prefix}{n:04d}" for n in range(total))
        self.accepted: list[str] = []
        self.refused: list[tuple[str, int]] = []   # a 4xx/5xx reply: not accepted
        self.cut_off: list[str] = []               # no reply at all (connection died)
        self.up = threading.Event()
        self.up.set()
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(s,), daemon=True) for s in senders]

    def start(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def _next(self) -> str | None:
        with self.lock:
            return self.ids.popleft() if self.ids else None

    def _run(self, sender: dict) -> None:
        smtp = None
        try:
            while True:
                if not self.up.wait(timeout=180):
                    raise TimeoutError("the relay did not come back")
                if smtp is None:
                    try:
                        smtp = smtp_login(self.relay, sender)
                    except (OSError, smtplib.SMTPException):
                        time.sleep(0.2)  # the relay is going down or not up yet: ask again
                        continue
                mid = self._next()
                if mid is None:
                    break
                data = encrypted(sender["email"], self.recipient["email"], mid)
                try:
                    smtp.sendmail(sender["email"], [self.recipient["email"]], data)
                except smtplib.SMTPResponseException as exc:
                    with self.lock:
                        self.refused.append((mid, exc.smtp_code))
                    smtp = None if exc.smtp_code == 421 else smtp
                    continue
                except smtplib.SMTPRecipientsRefused as exc:
                    with self.lock:
                        self.refused.append((mid, next(iter(exc.recipients.values()))[0]))
                    continue
                except (OSError, smtplib.SMTPException):
                    with self.lock:
                        self.cut_off.append(mid)
                    smtp = None
                    continue
                with self.lock:
                    self.accepted.append(mid)
            if smtp is not None:
                smtp.quit()
        except BaseException as exc:  # reported by join()
            self.errors.append(exc)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "load generator did not finish"
        assert not self.errors, self.errors


def records_added(logs: str) -> int:
    """Records of cut-off deliveries relay.delivery.deliveronce added at the starts so far."""
    return sum(int(n) for n in re.findall(r"postfix: recorded (\d+) deliver", logs))


@pytest.fixture(scope="module")
def loaded_relay(image_exists):
    relay = start_relay()
    try:
        yield relay
    finally:
        if os.environ.get("KEEP_RELAY") != "1":
            relay.remove()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("nothing_lost")


@pytest.mark.parametrize("how", ["docker kill", "docker stop"])
def test_accepted_mail_survives_the_container_dying_under_load(loaded_relay, report_dir, how):
    relay = loaded_relay
    senders = [account(relay) for _ in range(THREADS)]
    recipient = account(relay)
    prefix = "kill" if how == "docker kill" else "stop"
    records_before = records_added(relay.logs())
    started = time.monotonic()
    load = Load(relay, senders, recipient, prefix, MESSAGES).start()

    wait_for(lambda: len(load.accepted) >= MESSAGES // 3 or not any(t.is_alive() for t in load.threads),
             240, 0.05, "a third of the load accepted")
    assert len(load.accepted) < MESSAGES, "the load ended before the relay went down"
    load.up.clear()
    accepted_before = list(load.accepted)
    if how == "docker kill":
        relay.kill()
    else:
        relay.stop()
    state = relay.state()
    assert not state["Running"]
    if how == "docker stop":
        assert state["ExitCode"] == 0, "a graceful stop ends every daemon in time"
    went_down = time.monotonic()
    relay.start_again().wait_healthy(120)
    healthy_again = time.monotonic()
    load.up.set()
    load.join(600)
    load_done = time.monotonic()

    accepted = set(load.accepted)
    assert len(accepted) == len(load.accepted), "an id was accepted twice"

    def all_delivered():
        return accepted <= set(message_ids(relay, recipient["email"]))

    try:
        wait_for(all_delivered, 300, 1, "every accepted message in the mailbox")
    finally:
        # once the queue is empty nothing more can arrive: count then
        all_in = time.monotonic()
        wait_for(lambda: relay.exec("postqueue", "-j").stdout.strip() == "", 120, 1, "empty queue")
        in_mailbox = collections.Counter(message_ids(relay, recipient["email"]))
        counts = {
            "case": how,
            "messages": MESSAGES,
            "threads": THREADS,
            "accepted_before_going_down": len(accepted_before),
            "accepted": len(accepted),
            "delivered": sum(1 for mid in accepted if in_mailbox[mid] >= 1),
            "lost": sum(1 for mid in accepted if in_mailbox[mid] == 0),
            "duplicated": sum(1 for n in in_mailbox.values() if n > 1),
            "refused_4xx_5xx": len(load.refused),
            "cut_off_without_reply": len(load.cut_off),
            "cut_off_but_delivered": sum(1 for mid in load.cut_off if in_mailbox[mid]),
            "unknown_in_mailbox": sum(1 for mid in in_mailbox if not mid.startswith(prefix)),
            # how exactly-once came about: repeats Dovecot dropped, and records of
            # deliveries the crash had cut off that relay.delivery.deliveronce added at the start
            "repeats_dropped": len(re.findall(rf"msgid=<{prefix}\d+@reliability\.test>: discard action",
                                              logs := relay.logs())),
            "records_added_at_start": records_added(logs) - records_before,
            "seconds": {"load_until_down": round(went_down - started, 1),
                        "down_until_healthy": round(healthy_again - went_down, 1),
                        "rest_of_load": round(load_done - healthy_again, 1),
                        "until_all_delivered": round(all_in - load_done, 1)},
        }
        duplicates = [mid for mid, n in in_mailbox.items() if n > 1]
        if duplicates:  # how it came about, from the relay's own log
            print("\n".join(line for line in relay.logs().splitlines()
                            if any(mid in line for mid in duplicates))[-5000:])
        (report_dir / f"{prefix}.json").write_text(json.dumps(counts, indent=2) + "\n")
        counts["report"] = str(report_dir / f"{prefix}.json")
        line = f"nothing lost ({how}): " + json.dumps(counts)
        SUMMARY.append(line)
        print("\n" + line)

    assert counts["lost"] == 0
    assert counts["duplicated"] == 0
    assert counts["unknown_in_mailbox"] == 0
    assert all(400 <= code < 500 for _, code in load.refused), load.refused  # never a permanent refusal
    # what the restart left in the queue waits for no retry timer (Postfix's is 5 minutes)
    assert counts["seconds"]["until_all_delivered"] < 60
    # every message was tried once: accepted, refused for now, or cut off with the connection
    assert counts["accepted"] + counts["refused_4xx_5xx"] + counts["cut_off_without_reply"] == MESSAGES
