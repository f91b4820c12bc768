"""Layout versions of /data: migrations run in order, a newer volume is refused."""

import pytest

from relay.boot import datadir
from relay import paths


@pytest.fixture
def volume(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "LAYOUT_VERSION_FILE", tmp_path / "LAYOUT_VERSION")
    return tmp_path


def test_every_older_layout_has_a_migration():
    assert sorted(datadir.MIGRATIONS) == list(range(paths.LAYOUT_VERSION))


def test_migrations_run_in_order_up_to_the_target(monkeypatch):
    ran = []
    monkeypatch.setattr(datadir, "MIGRATIONS", {0: lambda: ran.append(0), 1: lambda: ran.append(1),
                                                2: lambda: ran.append(2)})
    assert datadir.migrate(1, target=3) == [1, 2]
    assert ran == [1, 2]
    assert datadir.migrate(3, target=3) == []


def test_a_newer_volume_is_refused_with_a_clear_message(volume):
    (volume / "LAYOUT_VERSION").write_text(f"{paths.LAYOUT_VERSION + 1}\n")
    with pytest.raises(datadir.LayoutError, match="this image understands up to"):
        datadir.check_layout()


def test_an_unreadable_version_is_refused(volume):
    (volume / "LAYOUT_VERSION").write_text("banana\n")
    with pytest.raises(datadir.LayoutError, match="unreadable"):
        datadir.check_layout()


def test_no_version_file_is_layout_zero(volume):
    assert datadir.check_layout() == 0


def test_stale_dovecot_locks_are_removed_before_dovecot_starts(tmp_path):
    """A SIGKILL can leave Dovecot's dotlocks behind; in a restarted container their pid may
    be alive again, and Dovecot would wait 2 minutes before delivering to that mailbox."""
    home = tmp_path / "alice@chat.example.org"
    folder = home / "Maildir" / ".DeltaChat"
    (home / "Maildir" / "new").mkdir(parents=True)
    folder.mkdir()
    locks = [home / ".dovecot.lda-dupes.lock", home / "Maildir" / "dovecot-uidlist.lock",
             folder / "dovecot-uidlist.lock", home / "Maildir" / "dovecot-keywords.lock"]
    for lock in locks:
        lock.write_text("180:host\n")
    keep = [home / "Maildir" / "dovecot-uidlist", home / "Maildir" / "new" / "1.M1.host,S=5:2,"]
    for path in keep:
        path.write_text("x")
    (tmp_path / "link@chat.example.org").symlink_to(home)  # never followed: counted once
    assert datadir.remove_stale_locks(tmp_path) == 4
    assert not any(lock.exists() for lock in locks)
    assert all(path.exists() for path in keep)
    assert datadir.remove_stale_locks(tmp_path) == 0
    assert datadir.remove_stale_locks(tmp_path / "missing") == 0
