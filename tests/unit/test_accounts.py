import os
import time

import pytest

from relay.accounts import store as accounts

DOMAIN = "chat.example.org"


@pytest.mark.parametrize("address,reason", [
    ("abcdefghi@chat.example.org", None),
    ("abc.def_g@chat.example.org", None),
    ("abcdefgh@chat.example.org", "local part must have 9 to 9 characters"),
    ("abcdefghij@chat.example.org", "local part must have 9 to 9 characters"),
    ("ABCDEFGHI@chat.example.org", "not a valid address"),
    ("abcd+efgh@chat.example.org", "not a valid address"),
    ("abcdefghi@other.example.org", "not a valid address"),
    ("abcdefghi", "not a valid address"),
    (".abcdefgh@chat.example.org", "not a valid address"),
    ("abcdefgh.@chat.example.org", "not a valid address"),
    ("../../etc@chat.example.org", "not a valid address"),
])
def test_new_address_rules(address, reason):
    result = accounts.check_new_address(address, DOMAIN, 9, 9)
    if reason is None:
        assert result is None
    else:
        assert result is not None and result.startswith(reason)


def test_create_stores_only_a_salted_hash(tmp_path):
    hashed = accounts.create("abcdefghi@chat.example.org", "secretpassword", tmp_path)
    stored = (tmp_path / "abcdefghi@chat.example.org").read_text()
    assert "secretpassword" not in stored
    assert stored.strip() == hashed
    assert hashed.startswith("{SHA512-CRYPT}$6$")
    assert (tmp_path / "abcdefghi@chat.example.org").stat().st_mode & 0o777 == 0o600
    # salted: the same password hashes differently for another account
    assert accounts.create("bbcdefghi@chat.example.org", "secretpassword", tmp_path).split("$")[3] \
        != hashed.split("$")[3]


def test_first_creation_wins(tmp_path):
    first = accounts.create("abcdefghi@chat.example.org", "password-one", tmp_path)
    second = accounts.create("abcdefghi@chat.example.org", "password-two", tmp_path)
    assert second == first
    assert accounts.count(tmp_path) == 1


def test_record_login_sets_day_resolution_mtime(tmp_path):
    accounts.create("abcdefghi@chat.example.org", "secretpassword", tmp_path)
    path = tmp_path / "abcdefghi@chat.example.org"
    old = time.time() - 5 * 86400
    os.utime(path, (old, old))
    accounts.record_login("abcdefghi@chat.example.org", tmp_path)
    assert path.stat().st_mtime > time.time() - 60


def test_random_credentials():
    local = accounts.random_localpart(9)
    assert len(local) == 9 and accounts.LOCALPART_CHARS.match(local)
    assert len(accounts.random_password(9)) >= 12


def test_create_on_a_full_disk_leaves_nothing_behind(tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(accounts.os, "fsync", full)
    with pytest.raises(OSError):
        accounts.create("abcdefghi@chat.example.org", "goodpassword", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_accounts_of_other_domains_are_counted_by_domain(tmp_path):
    for name in ("a@chat.example.org", "b@chat.example.org", "c@old.example.org",
                 "d@old.example.org", "e@[192.0.2.1]", ".f@new.example.org.1a2b3c4d"):
        (tmp_path / name).write_text("{SHA512-CRYPT}x")
    assert accounts.other_domains("chat.example.org", tmp_path) == {"old.example.org": 2, "[192.0.2.1]": 1}
    assert accounts.other_domains("old.example.org", tmp_path) == {"chat.example.org": 2, "[192.0.2.1]": 1}
    assert accounts.other_domains("x.test", tmp_path / "none") == {}
