"""relay.store.backup on a tmp tree: what the archive holds, what restore makes of it,
and when restore refuses."""

import io
import os
import socket
import sys
import tarfile
from types import SimpleNamespace

import pytest

from relay import paths
from relay.store import backup

ADDR = "k3x9q2m7a@chat.example.org"


def make_data(root):
    """A small /data: an account, a Maildir (with a message caught in new/ and cur/ and
    one still being written in tmp/), a queue file, a key, and a socket."""
    (root / paths.LAYOUT_VERSION_FILE.name).write_text("1\n")
    (root / "accounts").mkdir()
    (root / "accounts" / ADDR).write_text("{SHA512-CRYPT}$6$salt$hash\n")
    home = root / "mail" / ADDR
    for sub in ("new", "cur", "tmp"):
        (home / sub).mkdir(parents=True)
    (home / "new" / "1700000000.M1P1.host").write_bytes(b"message one")
    (home / "cur" / "1700000000.M1P1.host:2,S").write_bytes(b"message one")
    (home / "cur" / "1700000001.M2P2.host:2,").write_bytes(b"message two")
    (home / "tmp" / "1700000002.M3P3.host").write_bytes(b"half writ")
    (root / "postfix" / "active").mkdir(parents=True)
    (root / "postfix" / "active" / "4ABC").write_bytes(b"queue file")
    (root / "tls").mkdir(mode=0o700)
    (root / "tls" / "privkey.pem").write_text("KEY")
    (root / "tls" / "privkey.pem").chmod(0o600)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "postfix" / "public.sock"))
    return sock


def archive(root) -> bytes:
    out = io.BytesIO()
    backup.backup(out, root)
    return out.getvalue()


def files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    sock = make_data(root)
    yield root
    sock.close()


def test_the_archive_holds_files_and_directories_but_no_tmp_or_sockets(data):
    raw = archive(data)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert f"mail/{ADDR}/tmp" not in members
    assert not any("/tmp/" in name for name in members)
    assert "postfix/public.sock" not in members
    assert members["tls/privkey.pem"].mode == 0o600
    assert members["tls"].isdir()
    assert all(m.uname == "" and m.gname == "" for m in members.values())  # numeric ids only
    assert sum(m.isreg() for m in members.values()) == 7
    assert backup.backup(io.BytesIO(), data) == 7


def test_restore_into_an_empty_volume(data, tmp_path):
    raw = archive(data)
    target = tmp_path / "new"
    target.mkdir()
    restored = backup.restore(io.BytesIO(raw), target)
    want = {k: v for k, v in files(data).items() if "/tmp/" not in k}
    del want[f"mail/{ADDR}/cur/1700000000.M1P1.host:2,S"]  # the same message as in new/
    assert files(target) == want
    assert restored == len(want) == 6
    assert (target / "tls" / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert (target / "tls").stat().st_mode & 0o777 == 0o700
    assert (target / "mail" / ADDR / "new").is_dir()


def test_restore_refuses_a_volume_that_holds_a_relay(data, tmp_path):
    raw = archive(data)
    with pytest.raises(RuntimeError, match="already holds a relay"):
        backup.restore(io.BytesIO(raw), data)
    (data / "accounts" / ADDR).write_text("changed")
    assert backup.restore(io.BytesIO(raw), data, force=True) == 6
    assert (data / "accounts" / ADDR).read_text() == "{SHA512-CRYPT}$6$salt$hash\n"


def crafted(*members) -> bytes:
    """A tar.gz of (name, kind) members: 'file', 'symlink' (to /etc/passwd)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = 2
                tar.addfile(info, io.BytesIO(b"hi"))
    return out.getvalue()


@pytest.mark.parametrize("name", ["../escape", "/etc/escape", "mail/../../escape"])
def test_restore_refuses_paths_out_of_the_volume(tmp_path, name):
    target = tmp_path / "new"
    target.mkdir()
    with pytest.raises(RuntimeError, match="unsafe path"):
        backup.restore(io.BytesIO(crafted((name, "file"))), target)
    assert not (tmp_path / "escape").exists()


def test_restore_skips_links(tmp_path):
    target = tmp_path / "new"
    target.mkdir()
    raw = crafted(("accounts/link", "symlink"), ("accounts/real", "file"))
    assert backup.restore(io.BytesIO(raw), target) == 1
    assert not (target / "accounts" / "link").exists()
    assert not (target / "accounts" / "link").is_symlink()


RESTORE, BACKUP = backup.restore, backup.backup


def run_main(monkeypatch, argv, root, stdin=b""):
    """backup.main with stdin/stdout as byte buffers and ``root`` as /data."""
    monkeypatch.setattr(backup, "restore", lambda src, force=False: RESTORE(src, root, force))
    monkeypatch.setattr(backup, "backup", lambda out: BACKUP(out, root))
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdin", SimpleNamespace(buffer=io.BytesIO(stdin)))
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(buffer=out, isatty=lambda: False))
    return backup.main(argv), out.getvalue()


def test_relayctl_backup_and_restore(monkeypatch, capsys, data, tmp_path):
    rc, raw = run_main(monkeypatch, ["backup"], data)
    assert rc == 0 and capsys.readouterr().err == "backup: 7 files\n"
    rc, _ = run_main(monkeypatch, ["restore"], data, raw)
    assert rc == 1
    assert "already holds a relay" in capsys.readouterr().err
    rc, _ = run_main(monkeypatch, ["restore", "--force"], data, raw)
    assert rc == 0 and capsys.readouterr().err.startswith("restore: 6 files into")
    target = tmp_path / "empty"
    target.mkdir()
    assert run_main(monkeypatch, ["restore"], target, raw)[0] == 0
    assert (target / "accounts" / ADDR).exists()


def test_relayctl_backup_refuses_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(isatty=lambda: True))
    assert backup.main(["backup"]) == 2
    assert "redirect it to a file" in capsys.readouterr().err


def test_a_damaged_archive_is_an_error_not_a_crash(monkeypatch, capsys, tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    rc, _ = run_main(monkeypatch, ["restore"], target, b"not a tar archive")
    assert rc == 1 and capsys.readouterr().err.startswith("relayctl restore: ")
    assert os.listdir(target) == []


def test_an_archive_damaged_halfway_says_the_volume_holds_part_of_it(monkeypatch, capsys, data,
                                                                      tmp_path):
    # A truncated download: what came before the damage is on the volume, and its
    # LAYOUT_VERSION makes the next plain restore refuse; the operator must hear both.
    raw = archive(data)
    target = tmp_path / "empty"
    target.mkdir()
    rc, _ = run_main(monkeypatch, ["restore"], target, raw[:-4])  # every member, no gzip trailer
    err = capsys.readouterr().err
    assert rc == 1 and "now holds part of the archive" in err and "restore --force" in err
    assert "\n" not in err.rstrip("\n")
    assert run_main(monkeypatch, ["restore", "--force"], target, raw)[0] == 0
    assert (target / "accounts" / ADDR).exists()


def test_an_archive_cut_anywhere_is_an_error_never_a_silent_partial_restore(data, tmp_path):
    # tarfile alone reads a gzip stream that breaks off as a shorter, complete archive.
    raw = archive(data)
    for cut in range(1, len(raw)):
        target = tmp_path / f"cut{cut}"
        target.mkdir()
        with pytest.raises((RuntimeError, OSError, EOFError, tarfile.TarError)):
            backup.restore(io.BytesIO(raw[:cut]), target)
