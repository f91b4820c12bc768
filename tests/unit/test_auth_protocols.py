"""relay.accounts.auth's two wire protocols, driven with the lines Dovecot and Postfix send."""

import json

import pytest

from relay.accounts import auth
from relay.wire import dovecot_dict, socketmap
from relay.settings import load

DOMAIN = "chat.example.org"


@pytest.fixture
def authority(tmp_path, monkeypatch):
    monkeypatch.setattr(auth.accounts, "creation_refusal", lambda settings: None)
    return auth.Authority(load({"MAIL_DOMAIN": DOMAIN}), root=tmp_path)


def lookup(authority, key):
    return authority.dict_line("L" + dovecot_dict.tab_escape(key) + "\tuser")


def test_hello_gets_no_reply(authority):
    assert authority.dict_line("H3\t2\t0\t\tauth") is None


def test_first_login_creates_then_password_must_match(authority, tmp_path):
    reply = lookup(authority, "shared/passdb/abcdefghi@chat.example.org/goodpassword")
    assert reply.startswith("O")
    stored = json.loads(dovecot_dict.tab_unescape(reply[1:].rstrip("\n")))["password"]
    assert stored.startswith("{SHA512-CRYPT}")
    # later lookups answer the stored hash whatever password is offered: Dovecot compares
    again = lookup(authority, "shared/passdb/abcdefghi@chat.example.org/otherpassword")
    assert json.loads(dovecot_dict.tab_unescape(again[1:].rstrip("\n")))["password"] == stored
    assert (tmp_path / "abcdefghi@chat.example.org").exists()


def test_password_may_contain_slashes_and_tabs(authority):
    reply = lookup(authority, "shared/passdb/abcdefghi@chat.example.org/pa/ss\tword!")
    assert reply.startswith("O")


@pytest.mark.parametrize("key", [
    "shared/passdb/abcdefghi@chat.example.org/short",          # password too short
    "shared/passdb/abcdefgh@chat.example.org/goodpassword",    # local part too short
    "shared/passdb/abcdefghi@other.example.org/goodpassword",  # other domain
    "shared/passdb/abc$efghi@chat.example.org/goodpassword",   # bad character
    "shared/passdb/abcdefghi/goodpassword",                    # no domain
])
def test_refused_creations(authority, key, tmp_path):
    assert lookup(authority, key) == "N\n"
    assert list(tmp_path.iterdir()) == []


def test_creation_refused_when_short_of_resources(tmp_path, monkeypatch):
    monkeypatch.setattr(auth.accounts, "creation_refusal", lambda s: ("load", "load average 9.0 is above 5"))
    a = auth.Authority(load({"MAIL_DOMAIN": DOMAIN}), root=tmp_path)
    assert lookup(a, "shared/passdb/abcdefghi@chat.example.org/goodpassword") == "N\n"


def test_userdb_only_for_existing_accounts(authority):
    assert lookup(authority, "shared/userdb/abcdefghi@chat.example.org") == "N\n"
    lookup(authority, "shared/passdb/abcdefghi@chat.example.org/goodpassword")
    reply = json.loads(dovecot_dict.tab_unescape(lookup(authority, "shared/userdb/abcdefghi@chat.example.org")[1:]))
    assert reply == {"home": "/data/mail/abcdefghi@chat.example.org", "uid": "vmail", "gid": "vmail"}


def test_socketmap(authority):
    assert authority.socketmap_request("mailbox abcdefghi@chat.example.org") == "NOTFOUND "
    lookup(authority, "shared/passdb/abcdefghi@chat.example.org/goodpassword")
    assert authority.socketmap_request("mailbox ABCDEFGHI@chat.example.org") == "OK exists"
    assert authority.socketmap_request("mailbox @chat.example.org") == "NOTFOUND "
    assert authority.socketmap_request("other key").startswith("PERM")


def test_tab_escaping_roundtrip():
    text = "a\tb\nc\rd\1e\0f"
    assert dovecot_dict.tab_unescape(dovecot_dict.tab_escape(text)) == text


def test_netstring():
    assert socketmap.netstring("OK exists") == b"9:OK exists,"
