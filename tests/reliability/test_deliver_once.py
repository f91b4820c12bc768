"""A message is in a mailbox once, however often it is delivered.

After a crash Postfix repeats the deliveries whose replies it had not recorded
(at least once); Dovecot drops a message whose Message-ID the recipient's mailbox
has had within the last day (config/etc/dovecot/sieve/deliver-once.sieve). The
record of each delivery must survive deliveries to the same user at the same
time: Dovecot's duplicate database lost such records until our patch
(image/dovecot/duplicate-db-merge.patch). Here the same messages reach one user
twice from several connections at once, as the repeats after a crash do.

A crash between Dovecot's store and its record is covered at the next start by
relay/delivery/deliveronce.py, which writes the record itself: its ids must be the very
ones Dovecot computes.
"""

from __future__ import annotations

import base64
import collections
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from relay.delivery import deliveronce
from relaytest import wait_for
from reliability_tools import account, encrypted, message_ids, smtp_login

SENDERS = 6
PER_SENDER = 15


def send_all(relay, senders: list[dict], recipients: list[str], ids: list[list[str]]) -> None:
    """Each sender sends its ids over its own connection, all senders at once."""
    def one(sender_ids):
        sender, mids = sender_ids
        smtp = smtp_login(relay, sender)
        try:
            for mid in mids:
                data = encrypted(sender["email"], recipients[0], mid)
                assert smtp.sendmail(sender["email"], recipients, data) == {}
        finally:
            smtp.quit()

    with ThreadPoolExecutor(len(senders)) as pool:
        list(pool.map(one, zip(senders, ids)))


def queue_empty(relay) -> bool:
    return relay.exec("postqueue", "-j").stdout.strip() == ""


def test_a_repeated_delivery_is_dropped_even_when_deliveries_run_at_once(sturdy):
    relay = sturdy
    senders = [account(relay) for _ in range(SENDERS)]
    bob, carol = account(relay), account(relay)
    ids = [[f"once{s}x{n:02d}" for n in range(PER_SENDER)] for s in range(SENDERS)]
    everything = sorted(mid for mids in ids for mid in mids)

    send_all(relay, senders, [bob["email"]], ids)
    wait_for(lambda: sorted(message_ids(relay, bob["email"])) == everything, 120, 0.5,
             "the first round delivered")
    # the same messages again, now to bob and carol in one transaction each
    send_all(relay, senders, [bob["email"], carol["email"]], ids)
    wait_for(lambda: queue_empty(relay), 120, 0.5, "the second round handled")

    in_bob = collections.Counter(message_ids(relay, bob["email"]))
    repeated = sorted(mid for mid, n in in_bob.items() if n > 1)
    assert not repeated, f"{len(repeated)} of {len(everything)} delivered twice: {repeated[:10]}"
    assert sorted(in_bob) == everything
    # the record is per mailbox: carol, who had none of them, got each once
    assert sorted(message_ids(relay, carol["email"])) == everything


def test_deliveronce_computes_the_ids_dovecot_records(sturdy, tmp_path):
    relay = sturdy
    alice, bob = account(relay), account(relay)
    send_all(relay, [alice], [bob["email"]], [["idcheck1", "idcheck2"]])
    wait_for(lambda: sorted(message_ids(relay, bob["email"])) == ["idcheck1", "idcheck2"], 60, 0.2,
             "delivered")
    db = tmp_path / "dupes"
    db.write_bytes(base64.b64decode(relay.exec(
        "base64", "-w0", f"/data/mail/{bob['email']}/{deliveronce.DB_NAME}").stdout))
    recorded = {rid for _, rid, user in deliveronce.read_db(Path(db)) if user == bob["email"].encode()}
    for marker in ("idcheck1", "idcheck2"):
        assert deliveronce.record_id(f"<{marker}@reliability.test>".encode()) in recorded
