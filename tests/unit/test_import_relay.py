"""relayctl import-relay without the image: reading a reference relay's paths and
files, unpacking an archive built from its documented layout into a stage, the
plan for existing accounts, and merging Maildirs."""

import gzip
import io
import json
import os
import pwd
import tarfile
from pathlib import Path

import pytest

import refrelay_fixture
from relay.store import importmerge, importrelay, importstage, refrelay

DOMAIN = "chat.example.org"
NOW = 1_800_000_000


# --- where archive paths belong ----------------------------------------------------------

@pytest.mark.parametrize("path,kind,part,maildir,message", [
    ("home/vmail/mail/chat.example.org/a1@chat.example.org/password", "account", "password", (), False),
    ("./home/vmail/mail/chat.example.org/a1@chat.example.org/cur/1.M2P3.h,S=5:2,S", "account",
     "maildir", ("cur", "1.M2P3.h,S=5:2,S"), True),
    ("mail/chat.example.org/a1@chat.example.org/.DeltaChat/new/1.x", "account", "maildir",
     (".DeltaChat", "new", "1.x"), True),
    ("x/chat.example.org/a1@chat.example.org/dovecot-uidlist", "account", "maildir",
     ("dovecot-uidlist",), False),
    ("x/chat.example.org/a1@chat.example.org/.Sent/dovecot-uidlist", "account", "maildir",
     (".Sent", "dovecot-uidlist"), False),
    ("x/chat.example.org/a1@chat.example.org/tmp/1.x", "account", "skip", (), False),
    ("x/chat.example.org/a1@chat.example.org/.Sent/tmp/1.x", "account", "skip", (), False),
    ("x/chat.example.org/a1@chat.example.org/dovecot.index.cache", "account", "skip", (), False),
    ("x/chat.example.org/a1@chat.example.org/maildirsize", "account", "skip", (), False),
    ("x/chat.example.org/a1@chat.example.org/password.lock", "account", "skip", (), False),
    ("x/chat.example.org/a1@chat.example.org/enforceE2EEincoming", "account", "e2ee", (), False),
    ("x/chat.example.org/a1@chat.example.org/DISABLED", "account", "disabled", (), False),
    ("x/chat.example.org/a1@chat.example.org/metadata.json", "account", "metadata", (), False),
    ("x/192.0.2.1/a1@[192.0.2.1]/password", "account", "password", (), False),
])
def test_account_paths_are_classified(path, kind, part, maildir, message):
    member = refrelay.classify(path)
    assert (member.kind, member.part) == (kind, part)
    if part == "maildir":
        assert (member.maildir_path, member.message) == (maildir, message)


def test_other_paths_are_classified():
    assert refrelay.classify("etc/dkimkeys/opendkim.private").kind == "dkim"
    assert refrelay.classify("etc/dkimkeys/KeyTable").name == "KeyTable"
    assert refrelay.classify("usr/local/lib/chatmaild/chatmail.ini").kind == "ini"
    assert refrelay.classify("home/vmail/mail/chat.example.org/pending_notifications/ab").kind == "other"
    # an address whose domain is not its directory's name is not an account directory
    assert refrelay.classify("home/vmail/mail/other.org/a1@chat.example.org/password").kind == "other"
    for bad in ("/etc/passwd", "home/../../etc/passwd", "a/../b"):
        with pytest.raises(ValueError):
            refrelay.classify(bad)


def test_password_tokens_keytable_and_ini_are_read():
    h = "{SHA512-CRYPT}$6$abcdefghijklmnop$" + "x" * 86
    assert refrelay.parse_password(h + "\n") == h
    assert refrelay.parse_password("") is None
    assert refrelay.parse_password("$6$nohashprefix$x") is None
    assert refrelay.parse_password(h + "\n" + h) is None
    data = json.dumps({"devicetoken": {"fresh": NOW - 10, "old": NOW - 91 * 86400,
                                       "future": NOW + 3600, "bad": "x"}}).encode()
    assert refrelay.parse_tokens(data, NOW) == {"fresh": NOW - 10}
    assert refrelay.parse_tokens(json.dumps({"devicetoken": ["a", "b"]}).encode(), NOW) == \
        {"a": NOW, "b": NOW}
    assert refrelay.parse_tokens(b"not json", NOW) == {}
    assert refrelay.parse_tokens(b"[1, 2]", NOW) == {}
    table = ("opendkim._domainkey.chat.example.org chat.example.org:opendkim:"
             "/etc/dkimkeys/opendkim.private\n")
    assert refrelay.parse_keytable(table, "chat.example.org") == ("opendkim", "opendkim.private")
    assert refrelay.parse_keytable(table, "other.org") is None
    assert refrelay.keytable_domains(table) == {"chat.example.org"}
    assert refrelay.parse_ini_domain("[params]\nmail_domain = Chat.Example.org\n") == DOMAIN
    assert refrelay.parse_ini_domain("[other]\nx = 1\n") is None


# --- unpacking an archive -------------------------------------------------------------------

@pytest.fixture
def as_vmail(monkeypatch):
    """Stand the test's own user in for vmail."""
    me = pwd.getpwuid(os.getuid())
    monkeypatch.setattr(importstage.pwd, "getpwnam", lambda name: me)
    monkeypatch.setattr(importmerge.pwd, "getpwnam", lambda name: me)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return refrelay_fixture.build(DOMAIN, tmp_path_factory.mktemp("ref") / "state.tar.gz", now=NOW)


def test_unpack_reads_every_account_of_the_archive(fixture, tmp_path, as_vmail):
    stage = importstage.unpack(fixture.archive, tmp_path / "stage", DOMAIN, now=NOW)
    alice, bob, carol, dave = fixture.accounts
    assert set(stage.accounts) == {a.address for a in fixture.accounts}
    a = stage.accounts[alice.address]
    assert a.password.startswith("{SHA512-CRYPT}$6$") and a.e2ee_flag and not a.disabled
    assert a.last_login == alice.last_login
    assert list(a.tokens.values()) == [NOW - 5 * 86400]  # the 200-day-old token is dropped
    assert a.messages == len(alice.messages) + 1          # + the hard-linked copy
    b = stage.accounts[bob.address]
    assert not b.e2ee_flag and list(b.tokens.values()) == [NOW]  # legacy list: stored now
    assert stage.accounts[carol.address].disabled
    assert stage.accounts[dave.address].password is None
    assert stage.accounts[dave.address].password_seen
    assert set(stage.dkim_files) == {"opendkim.private"} and stage.keytable
    assert stage.ini_domain == DOMAIN


def test_unpack_writes_maildirs_as_they_were_without_caches(fixture, tmp_path, as_vmail):
    stage = importstage.unpack(fixture.archive, tmp_path / "stage", DOMAIN, now=NOW)
    alice = fixture.accounts[0]
    maildir = stage.maildir(alice.address)
    for m in alice.messages:
        path = maildir / m.folder / m.sub / m.name
        data = path.read_bytes()
        assert (gzip.decompress(data) if m.compressed else data) == m.stored
        assert data[:2] == (b"\x1f\x8b" if m.compressed else data[:2])  # kept compressed
        assert path.stat().st_mtime == m.mtime
        assert path.stat().st_mode & 0o777 == 0o600
    linked = maildir / ".DeltaChat" / "cur" / alice.messages[0].name
    assert linked.samefile(maildir / "cur" / alice.messages[0].name)
    names = {p.name for p in maildir.rglob("*")}
    assert "dovecot-uidlist" in names and "subscriptions" in names and "maildirfolder" in names
    assert not names & {"dovecot.index.log", "dovecot.list.index.log", "maildirsize",
                        "password", "metadata.json", "enforceE2EEincoming"}
    assert not (maildir / "tmp").exists() or not list((maildir / "tmp").iterdir())


def _tar(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_unpack_refuses_another_domain_unsafe_paths_and_empty_archives(tmp_path, as_vmail):
    other = _tar({"home/vmail/mail/other.org/a1@other.org/password": b"{PLAIN}x"})
    with pytest.raises(importstage.Refused, match="accounts of other.org.*MAIL_DOMAIN is "
                                                  "chat.example.org"):
        importstage.unpack(other, tmp_path / "s1", DOMAIN)
    unsafe = _tar({"../../etc/cron.d/x": b"boom"})
    with pytest.raises(importstage.Refused, match="unsafe path"):
        importstage.unpack(unsafe, tmp_path / "s2", DOMAIN)
    with pytest.raises(importstage.Refused, match="no accounts"):
        importstage.unpack(_tar({"etc/hosts": b""}), tmp_path / "s3", DOMAIN)
    with pytest.raises(importstage.Refused, match="not a readable tar"):
        importstage.unpack(io.BytesIO(b"this is no archive" * 100), tmp_path / "s4", DOMAIN)


def test_a_streamed_archive_cut_anywhere_is_refused(fixture, tmp_path, as_vmail):
    # A truncated copy must not import part of the mail and call it done.
    raw = fixture.archive.read_bytes()
    for cut in range(1, len(raw), 13):
        with pytest.raises(importstage.Refused, match="not a readable tar archive"):
            importstage.unpack(io.BytesIO(raw[:cut]), tmp_path / f"s{cut}", DOMAIN, now=NOW)


def test_a_streamed_archive_reads_like_a_file(fixture, tmp_path, as_vmail):
    with open(fixture.archive, "rb") as f:
        stage = importstage.unpack(f, tmp_path / "stage", DOMAIN, now=NOW)
    assert stage.accounts[fixture.accounts[0].address].messages == 5


# --- the plan ------------------------------------------------------------------------------

def test_plan_sorts_accounts_and_refuses_conflicts(fixture, tmp_path, as_vmail, monkeypatch):
    stage = importstage.unpack(fixture.archive, tmp_path / "stage", DOMAIN, now=NOW)
    alice, bob, carol, dave = fixture.accounts
    here = {bob.address: stage.accounts[bob.address].password,   # an earlier import
            carol.address: "{SHA512-CRYPT}$6$someone$else"}       # made here by someone else
    monkeypatch.setattr(importrelay.accounts, "read_hash", lambda address: here.get(address))
    with pytest.raises(importstage.Refused, match=f"already exist here.*{carol.address}"):
        importrelay.make_plan(stage, skip_conflicts=False)
    plan = importrelay.make_plan(stage, skip_conflicts=True)
    assert plan.new == [alice.address] and plan.merge == [bob.address]
    assert plan.conflict == [carol.address] and list(plan.invalid) == [dave.address]
    assert plan.messages == 5 + 2 and plan.without_e2ee_flag == 1  # with hard-linked copies
    assert plan.dkim_selector == "opendkim" and plan.dkim_record == fixture.published_record


def test_a_password_that_is_no_salted_hash_is_not_imported(tmp_path, as_vmail, monkeypatch):
    # Dovecot would take {PLAIN}secret: a six-character password kept on /data as it is.
    base = f"home/vmail/mail/{DOMAIN}/"
    good = "{SHA512-CRYPT}$6$abcdefghijklmnop$" + "x" * 86
    archive = _tar({base + f"plain1234@{DOMAIN}/password": b"{PLAIN}secret\n",
                    base + f"hashed123@{DOMAIN}/password": good.encode()})
    stage = importstage.unpack(archive, tmp_path / "stage", DOMAIN, now=NOW)
    monkeypatch.setattr(importrelay.accounts, "read_hash", lambda address: None)
    plan = importrelay.make_plan(stage, skip_conflicts=False)
    assert plan.new == [f"hashed123@{DOMAIN}"]
    assert plan.invalid == {f"plain1234@{DOMAIN}": "password stored as {PLAIN}, not as the salted "
                                                   "SHA512-CRYPT hash the reference relay writes"}
    alone = importstage.unpack(_tar({base + f"plain1234@{DOMAIN}/password": b"{PLAIN}secret"}),
                               tmp_path / "stage2", DOMAIN, now=NOW)
    with pytest.raises(importstage.Refused, match=r"no account .* \(plain1234@.*: password stored "
                                                  r"as \{PLAIN\}"):
        importrelay.make_plan(alone, skip_conflicts=False)


def test_plan_refuses_a_key_for_another_domain(fixture, tmp_path, as_vmail, monkeypatch):
    stage = importstage.unpack(fixture.archive, tmp_path / "stage", DOMAIN, now=NOW)
    monkeypatch.setattr(importrelay.accounts, "read_hash", lambda address: None)
    stage.keytable = "x._domainkey.other.org other.org:x:/etc/dkimkeys/x.private\n"
    with pytest.raises(importstage.Refused, match="KeyTable signs for other.org"):
        importrelay.make_plan(stage, skip_conflicts=False)
    stage.keytable, stage.ini_domain = None, "other.org"
    with pytest.raises(importstage.Refused, match="chatmail.ini is for other.org"):
        importrelay.make_plan(stage, skip_conflicts=False)
    stage.ini_domain = None
    stage.dkim_files["opendkim.private"].write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    with pytest.raises(importstage.Refused, match="not an RSA private key"):
        importrelay.make_plan(stage, skip_conflicts=False)


# --- merging Maildirs --------------------------------------------------------------------

def _maildir(root: Path, messages: dict[str, bytes]) -> Path:
    for rel, data in messages.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_a_new_mailbox_moves_whole_and_gets_every_maildir_directory(tmp_path, as_vmail):
    staged = _maildir(tmp_path / "stage" / "Maildir", {"cur/1.a:2,S": b"one",
                                                        ".DeltaChat/new/2.b": b"two",
                                                        "dovecot-uidlist": b"3 V1 N2 G0\n"})
    assert importmerge.move_maildir(staged, tmp_path / "home") == 0
    target = tmp_path / "home" / "Maildir"
    assert (target / "cur" / "1.a:2,S").read_bytes() == b"one"
    assert (target / "dovecot-uidlist").exists()
    for folder in (target, target / ".DeltaChat"):
        assert all((folder / sub).is_dir() for sub in ("cur", "new", "tmp"))


def test_merging_adds_only_what_is_missing_and_keeps_what_is_here(tmp_path, as_vmail):
    home = tmp_path / "home"
    _maildir(home / "Maildir", {"cur/1.a:2,SR": b"one, read here", "dovecot-uidlist": b"here\n",
                                ".Sent/cur/9.z:2,S": b"sent"})
    staged = _maildir(tmp_path / "stage", {"new/1.a": b"one, unread there", "cur/2.b:2,": b"two",
                                           ".DeltaChat/cur/3.c:2,S": b"three",
                                           "dovecot-uidlist": b"there\n"})
    assert importmerge.move_maildir(staged, home) == 1
    target = home / "Maildir"
    assert (target / "cur" / "1.a:2,SR").read_bytes() == b"one, read here"
    assert not (target / "new" / "1.a").exists()
    assert (target / "cur" / "2.b:2,").read_bytes() == b"two"
    assert (target / ".DeltaChat" / "cur" / "3.c:2,S").read_bytes() == b"three"
    assert (target / ".Sent" / "cur" / "9.z:2,S").exists()
    assert (target / "dovecot-uidlist").read_bytes() == b"here\n"


def test_an_account_without_mail_needs_no_maildir(tmp_path, as_vmail):
    assert importmerge.move_maildir(tmp_path / "absent", tmp_path / "home") == 0
    assert not (tmp_path / "home").exists()


def test_imported_push_tokens_are_read_back_by_the_token_store(tmp_path):
    from relay.notify import push
    existing = tmp_path / "a1@chat.example.org"
    existing.write_text(f"{NOW - 100} openpgp:here\n{NOW - 50} openpgp:both\n")
    text = importrelay.token_lines({"openpgp:both": NOW - 200, "openpgp:there": NOW - 10,
                                    "bad token": NOW, "openpgp:stale": NOW - 91 * 86400},
                                   existing, now=NOW)
    existing.write_text(text)
    store = push.TokenStore(tmp_path)
    assert store.tokens("a1@chat.example.org", now=NOW) == [
        "openpgp:here", "openpgp:both", "openpgp:there"]
    many = {f"openpgp:{i}": NOW - 1000 + i for i in range(40)}
    assert len(importrelay.token_lines(many, tmp_path / "none", now=NOW).splitlines()) == \
        push.MAX_TOKENS
