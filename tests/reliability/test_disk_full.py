"""/data runs full: mail is refused with a temporary error, nothing stored is damaged,
and everything works again once there is space.

/data is a 64 MiB tmpfs here, filled up with a file by root inside the container.
Postfix refuses new mail while its queue's file system has less than 1.5 times
MAX_MESSAGE_SIZE free, so a message is never half-written into the queue.
"""

import imaplib
import smtplib

import pytest

from relaytest import insecure_tls, submit, wait_for
from reliability_tools import account, daemon_pids, encrypted, message_ids, start_relay

# Checksums of what must survive: keys, certificate, accounts (with their names) and
# every stored message (by content only: Dovecot may move a file from new/ to cur/).
DATA_SIZE = 64 * 1024 * 1024

STATE = ("cd /data && sha256sum dkim/* tls/*.pem accounts/*; "
         "for f in mail/*/Maildir/cur/* mail/*/Maildir/new/*; do sha256sum < \"$f\"; done | sort")


@pytest.fixture
def small_disk(image_exists):
    relay = start_relay({"MAX_MESSAGE_SIZE": "1M", "CREATE_MIN_FREE_DISK": "0"},
                        data_tmpfs_size=f"{DATA_SIZE}")
    try:
        yield relay
    finally:
        relay.remove()


def free_bytes(relay) -> int:
    blocks, size = relay.exec("stat", "-f", "-c", "%a %S", "/data").stdout.split()
    return int(blocks) * int(size)


def imap_fetch_all(relay, acct) -> list[bytes]:
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    try:
        im.login(acct["email"], acct["password"])
        im.select("INBOX", readonly=True)
        typ, data = im.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        return [part[1] for part in data if isinstance(part, tuple)]
    finally:
        im.logout()


def test_full_data_volume_refuses_mail_for_now_and_recovers(small_disk):
    relay = small_disk
    alice, bob = account(relay), account(relay)
    for n in range(3):
        submit(relay, alice, [bob["email"]], encrypted(alice["email"], bob["email"], f"before{n}"))
    wait_for(lambda: len(message_ids(relay, bob["email"])) == 3, 30, what="deliveries")
    stored = relay.exec("sh", "-c", STATE).stdout
    assert "accounts/" in stored and len(stored.splitlines()) >= 3 + 3
    bodies = imap_fetch_all(relay, bob)
    pids = daemon_pids(relay)

    # fill /data up to the last block: only ever the small tmpfs, and with a bounded write
    fs_type, blocks, block_size = relay.exec("stat", "-f", "-c", "%T %b %S", "/data").stdout.split()
    assert fs_type == "tmpfs" and int(blocks) * int(block_size) <= DATA_SIZE, "not the small /data"
    count = DATA_SIZE // (1024 * 1024)
    relay.exec("sh", "-c", f"dd if=/dev/zero of=/data/filler bs=1M count={count} 2>/dev/null; "
                           f"dd if=/dev/zero of=/data/filler2 bs=4k count=256 2>/dev/null; true")
    assert free_bytes(relay) < 64 * 1024

    # submission and port 25: refused for now (452 4.3.1 at MAIL FROM or, after the
    # filter, at the end of the data); nothing is half-accepted
    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as refused:
        submit(relay, alice, [bob["email"]], encrypted(alice["email"], bob["email"], "whilefull"))
    assert refused.value.smtp_code == 452 and refused.value.smtp_error.startswith(b"4.3.1")
    with smtplib.SMTP("127.0.0.1", relay.port(25), timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())  # port 25 requires STARTTLS
        smtp.ehlo("mx.other.example")
        code, text = smtp.docmd("MAIL FROM:<carol@[192.0.2.1]>")
    assert code == 452 and text.startswith(b"4.3.1"), (code, text)
    # a first login cannot create an account: a temporary failure, not a crash
    newcomer = relay.new_account()
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    with pytest.raises(imaplib.IMAP4.error) as failed:
        im.login(newcomer["email"], newcomer["password"])
    assert "UNAVAILABLE" in str(failed.value) or "AUTHENTICATIONFAILED" in str(failed.value)
    im.shutdown()
    # what is stored can still be read
    assert imap_fetch_all(relay, bob) == bodies
    assert daemon_pids(relay) == pids, "a daemon died of the full disk"

    # space again
    relay.exec("rm", "/data/filler", "/data/filler2")
    submit(relay, alice, [bob["email"]], encrypted(alice["email"], bob["email"], "afterfull"))
    wait_for(lambda: "afterfull" in message_ids(relay, bob["email"]), 30, what="delivery after")
    assert sorted(message_ids(relay, bob["email"])) == ["afterfull", "before0", "before1", "before2"]
    now = relay.exec("sh", "-c", STATE).stdout
    for line in stored.splitlines():
        assert line in now, f"changed or lost: {line}"
    assert relay.exec("sh", "-c", "ls -A /data/accounts | grep '^\\.' ; true").stdout == "", \
        "no half-written account file left behind"
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    assert im.login(newcomer["email"], newcomer["password"])[0] == "OK"
    im.logout()
    assert daemon_pids(relay) == pids
