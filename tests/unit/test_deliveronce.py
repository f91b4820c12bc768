"""relay.delivery.deliveronce: the records of deliveries a crash cut off, in Dovecot's format.

That the ids are the ones Dovecot's Sieve `duplicate` test computes is checked
against Dovecot itself in tests/reliability/test_deliver_once.py."""

import gzip
import os
import struct
import time

from relay.delivery import deliveronce

NOW = 1_800_000_000.0
USER = "alice@chat.example.org"


def message(mid: bytes) -> bytes:
    return (b"Return-Path: <bob@chat.example.org>\r\nDelivered-To: alice@chat.example.org\r\n"
            b"Message-ID:\r\n " + mid + b"\r\nSubject: [...]\r\n\r\nMessage-ID: <body@x>\r\n")


def mailbox(root, user=USER, messages=(), mtime=NOW):
    home = root / user
    for sub in ("new", "cur", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    for n, (sub, mid) in enumerate(messages):
        path = home / "Maildir" / sub / f"{int(mtime)}.M{n}.host"
        path.write_bytes(message(mid))
        os.utime(path, (mtime, mtime))
    for sub in ("new", "cur"):
        os.utime(home / "Maildir" / sub, (mtime, mtime))
    return home


def test_message_id_takes_the_header_not_the_body(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(message(b"<abc.def@chat.example.org>"))
    assert deliveronce.message_id(path) == b"<abc.def@chat.example.org>"
    for odd in (b"no-brackets@x", b"<two words@x>", b'<"quoted"@x>', b"(comment) <a@x>", b""):
        path.write_bytes(message(odd))
        assert deliveronce.message_id(path) is None, odd
    path.write_bytes(b"Subject: none\r\n\r\nMessage-ID: <a@x>\r\n")
    assert deliveronce.message_id(path) is None


def test_message_id_of_a_compressed_message(tmp_path):
    """Dovecot stores new mail gzip-compressed (zlib_save = gz); a crash cut-off delivery must
    still get its record, or its repeat is stored twice."""
    path = tmp_path / "m"
    path.write_bytes(gzip.compress(message(b"<abc.def@chat.example.org>")))
    assert deliveronce.message_id(path) == b"<abc.def@chat.example.org>"
    # cut short by the crash: no id, no exception
    path.write_bytes(gzip.compress(message(b"<abc.def@chat.example.org>"))[:12])
    assert deliveronce.message_id(path) is None


def test_db_round_trip_in_dovecots_layout(tmp_path):
    db = tmp_path / deliveronce.DB_NAME
    records = [(123, b"\x01" * 16, b"a@x"), (456, b"\x02" * 16, b"bb@x")]
    deliveronce.write_db(db, records, os.getuid(), os.getgid())
    data = db.read_bytes()
    assert data[:4] == struct.pack("=I", 2)
    assert data[4:16] == struct.pack("=III", 123, 16, 3)
    assert deliveronce.read_db(db) == records
    assert not (tmp_path / (deliveronce.DB_NAME + ".lock")).exists()
    db.write_bytes(struct.pack("=I", 1) + data[4:])   # a version we do not know
    assert deliveronce.read_db(db) == []


def test_a_stale_lock_is_taken_over(tmp_path):
    db = tmp_path / deliveronce.DB_NAME
    lock = tmp_path / (deliveronce.DB_NAME + ".lock")
    lock.write_bytes(b"")
    old = time.time() - 60
    os.utime(lock, (old, old))
    deliveronce.write_db(db, [(1, b"i", b"u")], os.getuid(), os.getgid())
    assert deliveronce.read_db(db) == [(1, b"i", b"u")]


def test_repair_records_what_was_stored_just_before_the_end(tmp_path):
    known = deliveronce.record_id(b"<known@x>")
    home = mailbox(tmp_path, messages=[("new", b"<known@x>"), ("new", b"<cut@x>"), ("cur", b"<read@x>")])
    deliveronce.write_db(home / deliveronce.DB_NAME,
                         [(int(NOW) + 100, known, USER.encode()),
                          (int(NOW) - 1, b"expired", USER.encode())], os.getuid(), os.getgid())
    # an older mailbox: nothing of it was in flight
    mailbox(tmp_path, user="old@chat.example.org", messages=[("new", b"<old@x>")], mtime=NOW - 3600)

    assert deliveronce.repair(tmp_path, now=NOW + 5) == 2
    records = deliveronce.read_db(home / deliveronce.DB_NAME)
    ids = {rid for _, rid, user in records if user == USER.encode()}
    assert ids == {known, deliveronce.record_id(b"<cut@x>"), deliveronce.record_id(b"<read@x>")}
    assert all(stamp >= NOW for stamp, _, _ in records)   # the expired one is gone
    assert not (tmp_path / "old@chat.example.org" / deliveronce.DB_NAME).exists()
    # a second pass finds nothing missing
    assert deliveronce.repair(tmp_path, now=NOW + 6) == 0


def test_repair_of_an_empty_or_missing_mail_root(tmp_path):
    assert deliveronce.repair(tmp_path / "missing") == 0
    assert deliveronce.repair(tmp_path) == 0


def test_repair_takes_over_the_lock_a_crash_left(tmp_path):
    """A delivery killed while it wrote its record leaves the lock file behind; no
    delivery runs during the repair, so the lock is the crash's, however young."""
    home = mailbox(tmp_path, messages=[("new", b"<cut@x>")])
    lock = home / (deliveronce.DB_NAME + ".lock")
    lock.write_bytes(b"")
    assert deliveronce.repair(tmp_path, now=NOW + 1) == 1
    assert not lock.exists()
    assert [rid for _, rid, _ in deliveronce.read_db(home / deliveronce.DB_NAME)] == [
        deliveronce.record_id(b"<cut@x>")]
