"""Who may join (REGISTRATION, invites) and disabled addresses, without Docker:
relay.accounts.invites, .registration, .disabled, and what relay-auth and
relay-signup answer in each mode."""

import json
import multiprocessing
import time

import pytest

from relay import paths
from relay import settings as settings_mod
from relay.accounts import auth, disabled, events, invites, registration, signup
from relay.wire import dovecot_dict

DOMAIN = "chat.example.org"


@pytest.fixture
def data(tmp_path, monkeypatch):
    """paths below a temporary /data; resources always sufficient."""
    for name, sub in (("INVITES", "invites"), ("DISABLED", "disabled"), ("STATE", "state"),
                      ("ACCOUNTS", "accounts")):
        (tmp_path / sub).mkdir()
        monkeypatch.setattr(paths, name, tmp_path / sub)
    monkeypatch.setattr(paths, "REGISTRATION_OVERRIDE", tmp_path / "state" / "registration")
    monkeypatch.setattr(paths, "NOCREATE_FLAG", tmp_path / "state" / "account-creation-off")
    monkeypatch.setattr(auth.accounts, "creation_refusal", lambda settings: None)
    return tmp_path


def values(**env):
    return settings_mod.load({"MAIL_DOMAIN": DOMAIN, **env})


def authority(data, **env):
    return auth.Authority(values(**env), root=data / "accounts", disabled_root=data / "disabled")


def login(a, address, password):
    """A Dovecot passdb lookup: True when the account exists (or was just created)."""
    return a.dict_line("L" + dovecot_dict.tab_escape(f"shared/passdb/{address}/{password}")
                       + "\tuser").startswith("O")


# --- invites --------------------------------------------------------------------------------

def test_invite_is_single_use_and_stored_only_hashed(data):
    [token] = invites.issue(1, 3600)
    assert invites.TOKEN_RE.match(token)
    assert [p.name for p in (data / "invites").iterdir()] == [invites._name(token)]
    assert token not in (data / "invites" / invites._name(token)).read_text()
    assert invites.valid(token) and invites.count() == 1
    assert invites.claim(token) == "ok"
    assert invites.claim(token) == "unknown"
    assert list((data / "invites").iterdir()) == []


def test_expired_invite_is_refused_and_forgotten(data):
    [old, fresh] = invites.issue(1, 60, now=time.time() - 120) + invites.issue(1, 3600)
    assert not invites.valid(old)
    assert invites.count() == 1
    assert invites.claim(old) == "expired"
    assert invites.claim(old) == "unknown"
    [later] = invites.issue(1, 60, now=time.time() - 120)
    assert invites.sweep() == 1 and invites.valid(fresh) and not invites.valid(later)


def test_no_invite_directory_yet_and_revoking_all(data, tmp_path):
    missing = tmp_path / "never-made"
    assert invites.sweep(root=missing) == 0 and invites.count(root=missing) == 0
    assert invites.revoke_all(root=missing) == 0
    invites.issue(3, 3600)
    assert invites.revoke_all() == 3 and invites.count() == 0
    assert list((data / "invites").iterdir()) == []


@pytest.mark.parametrize("token", ["", "x" * 23, "x" * 25, "A" * 24, "../../../etc/passwd"])
def test_malformed_tokens_are_unknown(data, token):
    assert invites.claim(token) == "unknown"


def _claim(args):
    root, token = args
    return invites.claim(token, root=root)


def test_concurrent_claims_of_one_token_exactly_one_wins(tmp_path):
    tokens = invites.issue(20, 3600, root=tmp_path)
    with multiprocessing.Pool(8) as pool:
        for token in tokens:
            results = pool.map(_claim, [(tmp_path, token)] * 8)
            assert sorted(results) == ["ok"] + ["unknown"] * 7


@pytest.mark.parametrize("query,token", [
    ("invite=abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwx"),
    ("foo=1&invite=ABCDEFGHIJKLMNOPQRSTUVWX", "abcdefghijklmnopqrstuvwx"),
    ("abcdefghijklmnopqrstuvwx", "abcdefghijklmnopqrstuvwx"),   # chatmail/relay PR #600 form
    ("", ""), ("foo=1", ""),
])
def test_token_from_query(query, token):
    assert invites.token_from_query(query) == token


@pytest.mark.parametrize("text,seconds", [("7d", 7 * 86400), ("12h", 43200), ("30m", 1800),
                                          ("2w", 14 * 86400), ("90s", 90), ("3", 3 * 86400)])
def test_durations(text, seconds):
    assert invites.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0d", "366d", "soon", "-1d", "1y"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        invites.parse_duration(text)


def test_invite_urls():
    token = "a" * 24
    assert invites.dcaccount_url(DOMAIN, token) == f"DCACCOUNT:https://{DOMAIN}/new?invite={token}"
    assert invites.web_link(DOMAIN, token) == f"https://{DOMAIN}/new?invite={token}"


# --- the mode ----------------------------------------------------------------------------------

def test_mode_from_setting_override_and_old_flag(data):
    v = values(REGISTRATION="invite")
    assert registration.mode(v) == "invite" and registration.source(v) == "REGISTRATION=invite"
    paths.NOCREATE_FLAG.touch()  # a volume from before: `relayctl accounts off`
    assert registration.mode(v) == "closed"
    registration.set_override("open")
    assert registration.mode(v) == "open" and not paths.NOCREATE_FLAG.exists()
    assert "relayctl" in registration.source(v)
    registration.set_override(None)
    assert registration.mode(v) == "invite"
    assert registration.mode(values(ACCOUNT_CREATION="off")) == "closed"


def test_account_creation_off_conflicts_with_another_mode():
    with pytest.raises(settings_mod.SettingError, match="ACCOUNT_CREATION=off contradicts"):
        values(ACCOUNT_CREATION="off", REGISTRATION="open")
    assert values(ACCOUNT_CREATION="off", REGISTRATION="closed").registration == "closed"


def test_resources_refuse_before_an_invite_is_used(data, monkeypatch):
    monkeypatch.setattr(auth.accounts, "creation_refusal", lambda s: ("load", "load 9 > 5"))
    [token] = invites.issue(1, 3600)
    decision = registration.decide(values(REGISTRATION="invite"), "new", token)
    assert not decision.allowed and decision.temporary and decision.reason == "load"
    assert invites.valid(token)


# --- create on first login in each mode -----------------------------------------------------------

def test_closed_refuses_first_logins_but_not_existing_accounts(data):
    a = authority(data)
    assert login(a, f"abcdefghi@{DOMAIN}", "goodpassword")
    registration.set_override("closed")
    assert not login(a, f"bbcdefghi@{DOMAIN}", "goodpassword")
    assert login(a, f"abcdefghi@{DOMAIN}", "goodpassword")
    assert sorted(p.name for p in (data / "accounts").iterdir()) == [f"abcdefghi@{DOMAIN}"]


def test_invite_mode_first_login_needs_a_token_before_the_password(data):
    a = authority(data, REGISTRATION="invite")
    [token] = invites.issue(1, 3600)
    assert not login(a, f"abcdefghi@{DOMAIN}", "goodpassword")
    assert not login(a, f"abcdefghi@{DOMAIN}", token + "short")   # rest below 9: token kept
    assert invites.valid(token)
    assert login(a, f"abcdefghi@{DOMAIN}", token + "goodpassword")
    assert not invites.valid(token)
    assert not login(a, f"bbcdefghi@{DOMAIN}", token + "goodpassword")  # used up
    stored = (data / "accounts" / f"abcdefghi@{DOMAIN}").read_text()
    assert token not in stored and stored.startswith("{SHA512-CRYPT}")


def test_invite_mode_new_creates_the_account_at_once(data):
    a = authority(data, REGISTRATION="invite")
    [token] = invites.issue(1, 3600)
    kind, _, body = a.signup_request(f"invite {token}").partition(" ")
    assert kind == "OK"
    created = json.loads(body)
    assert (data / "accounts" / created["email"]).exists()
    assert login(a, created["email"], created["password"])
    assert a.signup_request(f"invite {token}").startswith("PERM invite_unknown ")
    assert a.signup_request("invite ").startswith("PERM invite_missing ")


def test_signup_answers_in_each_mode(data, monkeypatch):
    a = authority(data, REGISTRATION="invite", TLS_MODE="self-signed")
    monkeypatch.setattr(signup.socketmap, "query", lambda path, request: a.signup_request(request))
    v = values(REGISTRATION="invite", TLS_MODE="self-signed")
    status, body = signup.post_new(v, "")
    assert status == 403 and "invite" in body["reason"]
    [token] = invites.issue(1, 3600)
    status, body = signup.post_new(v, f"invite={token}")
    assert status == 200 and body["email"].endswith(DOMAIN) and "ic=3" in body["dclogin"]
    status, body = signup.post_new(v, f"invite={token}")
    assert status == 403 and body["code"] == "invite_unknown"
    registration.set_override("closed")
    status, body = signup.post_new(v, "")
    assert status == 403 and body["reason"] == registration.TEXTS["closed"]
    registration.set_override("open")
    status, body = signup.post_new(v, "")
    assert status == 200 and not (data / "accounts" / body["email"]).exists()  # made by login


def test_refusals_are_counted_without_addresses(data):
    before = events.snapshot()["refused"].get("closed/login", 0)
    registration.set_override("closed")
    login(authority(data), f"abcdefghi@{DOMAIN}", "goodpassword")
    counts = events.snapshot()
    assert counts["refused"]["closed/login"] == before + 1
    assert DOMAIN not in json.dumps(counts)


# --- disabled addresses ----------------------------------------------------------------------------

def test_disabled_address_cannot_log_in_or_be_created(data):
    a = authority(data)
    address = f"abcdefghi@{DOMAIN}"
    assert login(a, address, "goodpassword")
    assert disabled.disable(address) and not disabled.disable(address)
    marker = data / "disabled" / address
    assert marker.read_bytes() == b"" and marker.stat().st_mtime == 0  # no time kept
    assert not login(a, address, "goodpassword")
    (data / "accounts" / address).unlink()          # e.g. expired for inactivity
    assert not login(a, address, "anotherpassword")  # not created again
    assert not (data / "accounts" / address).exists()
    assert disabled.enable(address) and not disabled.enable(address)
    assert login(a, address, "anotherpassword")


def test_postfix_maps_for_disabled_addresses(data):
    a = authority(data)
    address = f"abcdefghi@{DOMAIN}"
    assert a.socketmap_request(f"disabled-recipient {address}") == "NOTFOUND "
    disabled.disable(address)
    assert a.socketmap_request(f"disabled-recipient {address.upper()}") == \
        "OK 550 5.2.1 Mailbox disabled"
    assert a.socketmap_request(f"disabled-sender {address}").startswith("OK 550 5.7.1 ")
    assert a.socketmap_request(f"disabled-recipient {DOMAIN}") == "NOTFOUND "
    assert a.socketmap_request("disabled-recipient abcdefghi@") == "NOTFOUND "
