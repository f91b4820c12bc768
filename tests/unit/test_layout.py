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
