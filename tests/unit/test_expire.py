"""Expiry on a /data-like tree: exactly what must go goes, and nothing else."""

import os

import pytest

from relay.store import expire
from dataclasses import replace

from relay.settings import load

DAY = 86400
NOW = 2_000_000_000.0
SETTINGS = load({"MAIL_DOMAIN": "chat.example.org"})  # 20 days, 7 for large, 90 inactive


def age(path, days):
    t = NOW - days * DAY
    os.utime(path, (t, t))


@pytest.fixture
def tree(tmp_path):
    accounts, mail = tmp_path / "accounts", tmp_path / "mail"
    accounts.mkdir()
    mail.mkdir()

    def account(name, last_login_days, messages=()):
        acc = accounts / name
        acc.write_text("{SHA512-CRYPT}$6$x$y\n")
        age(acc, last_login_days)
        home = mail / name
        for sub in ("new", "cur", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True)
        for i, (sub, days, size) in enumerate(messages):
            f = home / "Maildir" / sub / f"{i}.msg"
            f.write_bytes(b"x" * size)
            age(f, days)
        age(home, 100)
        return home

    return accounts, mail, account


def names(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.msg"))


def test_messages_by_age_and_size(tree):
    accounts, mail, account = tree
    account("alice@chat.example.org", 1, [
        ("new", 19.9, 100),        # young: stays
        ("cur", 20.1, 100),        # older than 20 days: goes
        ("cur", 6.9, 300_000),     # large but younger than 7 days: stays
        ("new", 7.1, 300_000),     # large and older than 7 days: goes
        ("cur", 7.1, 200_000),     # exactly 200 kB is not "larger than": stays
    ])
    report = expire.run_once(SETTINGS, NOW, accounts, mail)
    assert names(mail) == ["alice@chat.example.org/Maildir/cur/2.msg",
                           "alice@chat.example.org/Maildir/cur/4.msg",
                           "alice@chat.example.org/Maildir/new/0.msg"]
    assert (report.messages_deleted, report.messages_kept) == (2, 3)


def test_other_folders_expire_too(tree):
    accounts, mail, account = tree
    home = account("alice@chat.example.org", 1)
    folder = home / "Maildir" / ".DeltaChat" / "cur"
    folder.mkdir(parents=True)
    (folder / "old.msg").write_bytes(b"x")
    age(folder / "old.msg", 30)
    expire.run_once(SETTINGS, NOW, accounts, mail)
    assert not (folder / "old.msg").exists()


def test_inactive_accounts_go_with_their_mail(tree):
    accounts, mail, account = tree
    account("active@chat.example.org", 89.9, [("new", 1, 10)])
    account("gone@chat.example.org", 90.1, [("new", 1, 10)])
    report = expire.run_once(SETTINGS, NOW, accounts, mail)
    assert sorted(p.name for p in accounts.iterdir()) == ["active@chat.example.org"]
    assert sorted(p.name for p in mail.iterdir()) == ["active@chat.example.org"]
    assert (report.accounts_deleted, report.mailboxes_deleted) == (1, 1)


def test_orphan_mailbox_removed_only_after_grace(tree):
    accounts, mail, account = tree
    account("orphan@chat.example.org", 1)
    (accounts / "orphan@chat.example.org").unlink()
    fresh = mail / "fresh@chat.example.org"   # an account being created right now
    fresh.mkdir()
    os.utime(fresh, (NOW - 60, NOW - 60))
    expire.run_once(SETTINGS, NOW, accounts, mail)
    assert sorted(p.name for p in mail.iterdir()) == ["fresh@chat.example.org"]


def test_symlinks_are_not_followed(tree, tmp_path):
    accounts, mail, account = tree
    home = account("alice@chat.example.org", 1)
    outside = tmp_path / "outside.msg"
    outside.write_bytes(b"precious")
    age(outside, 100)
    os.symlink(outside, home / "Maildir" / "cur" / "link.msg")
    expire.run_once(SETTINGS, NOW, accounts, mail)
    assert outside.read_bytes() == b"precious"


def test_quota_removes_oldest_down_to_70_percent_but_nothing_younger_than_a_day(tree):
    accounts, mail, account = tree
    quota = 10 * 1024 * 1024
    settings = replace(SETTINGS, mailbox_quota=quota,
                       delete_large_after=10)  # 1 MiB messages are "large": keep them out of this test
    mib = 1024 * 1024
    # 9 MiB in all (90 %): nine 1 MiB messages aged 9..1 days, plus one of 0.5 MiB from an hour ago
    messages = [("cur", days, mib) for days in range(9, 0, -1)]
    account("alice@chat.example.org", 1, messages)
    home = mail / "alice@chat.example.org" / "Maildir"
    (home / "new" / "fresh.msg").write_bytes(b"x" * (mib // 2))
    age(home / "new" / "fresh.msg", 1 / 24)
    report = expire.run_once(settings, NOW, accounts, mail)
    # 9.5 MiB -> at most 7 MiB: the three oldest go (9, 8, 7 days), leaving 6.5 MiB
    assert report.quota_deleted == 3
    left = sorted(p.name for p in home.rglob("*.msg"))
    assert left == sorted(["3.msg", "4.msg", "5.msg", "6.msg", "7.msg", "8.msg", "fresh.msg"])


def test_quota_never_removes_mail_younger_than_a_day(tree):
    accounts, mail, account = tree
    mib = 1024 * 1024
    settings = replace(SETTINGS, mailbox_quota=10 * mib, delete_large_after=10)
    account("alice@chat.example.org", 1, [("new", 0.5, mib) for _ in range(9)])
    report = expire.run_once(settings, NOW, accounts, mail)
    assert report.quota_deleted == 0
    assert len(list((mail / "alice@chat.example.org").rglob("*.msg"))) == 9


def test_under_75_percent_nothing_is_removed(tree):
    accounts, mail, account = tree
    mib = 1024 * 1024
    settings = replace(SETTINGS, mailbox_quota=10 * mib, delete_large_after=10)
    account("alice@chat.example.org", 1, [("cur", 5, mib) for _ in range(7)])
    assert expire.run_once(settings, NOW, accounts, mail).quota_deleted == 0


def test_push_tokens_go_with_their_account(tree, tmp_path):
    accounts, mail, account = tree
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    account("active@chat.example.org", 1)
    account("gone@chat.example.org", 90.1)
    for name in ("active@chat.example.org", "gone@chat.example.org", "orphan@chat.example.org"):
        (tokens / name).write_text(f"{int(NOW)} openpgp:abc\n")
    report = expire.run_once(SETTINGS, NOW, accounts, mail, tokens)
    assert sorted(p.name for p in tokens.iterdir()) == ["active@chat.example.org"]
    assert report.token_files_deleted == 2


def test_size_of_a_compressed_message_is_the_one_in_its_name():
    # Dovecot's file name carries the sizes before compression; W= is what its quota counts
    assert expire.message_size("1796045635.M3P188.host,S=892,W=917:2,S", 647) == 917
    assert expire.message_size("1796045635.M3P188.host,S=892:2,", 647) == 892
    assert expire.message_size("1.msg", 647) == 647
    # flags after ":2," are not sizes
    assert expire.message_size("1.M3.host:2,S=5", 100) == 100


def test_compressed_large_messages_count_their_real_size(tree):
    accounts, mail, account = tree
    new = account("alice@chat.example.org", 1) / "Maildir" / "new"
    # 300 kB messages stored in 190 kB files (compressed) are large; 8 days old: gone
    large = new / "1796045635.M1P1.host,S=300000,W=301000:2,"
    large.write_bytes(b"x" * 190_000)
    age(large, 8)
    small = new / "1796045635.M2P1.host,S=150000,W=151000:2,"
    small.write_bytes(b"x" * 100_000)
    age(small, 8)
    expire.run_once(SETTINGS, NOW, accounts, mail)
    assert not large.exists() and small.exists()


def test_quota_counts_compressed_messages_by_their_real_size(tree):
    accounts, mail, account = tree
    new = account("alice@chat.example.org", 1) / "Maildir" / "new"
    # 9 MiB of mail in 6 MiB of compressed files still counts 9 MiB of a 10 MiB quota
    mib = 1024 * 1024
    for days in range(9, 0, -1):
        f = new / f"1796045635.M{days}0P1.host,S={mib},W={mib}:2,"
        f.write_bytes(b"x" * (2 * mib // 3))
        age(f, days)
    settings = replace(SETTINGS, mailbox_quota=10 * mib, delete_large_after=10)
    report = expire.run_once(settings, NOW, accounts, mail)
    assert report.quota_deleted == 2   # 9 MiB -> at most 7 MiB: the 9 and 8 days old ones
