import pytest

from relay import settings
from relay.settings import parsers
from relay.settings import SettingError, load

BASE = {"MAIL_DOMAIN": "chat.example.org"}


def test_defaults_follow_the_spec():
    v = load(BASE)
    assert v.tls_mode == "acme"
    assert v.username_min_length == v.username_max_length == 9
    assert v.password_min_length == 9
    assert v.max_message_size == 30 * 1024 * 1024
    assert v.max_recipients == 1000
    assert v.mailbox_quota == 500 * 1024 * 1024
    assert v.create_max_load == 5.0
    assert v.create_min_free_memory == 200 * 1024 * 1024
    assert v.create_min_free_disk == 1024 ** 3
    assert v.max_imap_connections == 10000
    assert v.max_smtp_connections == 1000
    assert v.delete_mails_after == 20
    assert v.delete_large_after == 7
    assert v.delete_inactive_users_after == 90


@pytest.mark.parametrize("domain", [
    "chat.example.org", "_chat.example.test", "a.b", "xn--bcher-kva.example", "localhost",
    "[192.0.2.1]", "[ipv6:2001:db8::1]", "Chat.Example.ORG.",
])
def test_accepted_domains(domain):
    assert load({"MAIL_DOMAIN": domain}).mail_domain == domain.lower().rstrip(".")


@pytest.mark.parametrize("domain", [
    "bad domain", "example", "-a.example.org", "a..b", "a.b_c.org", "under_score.example",
    "[300.1.1.1]", "[example.org]", "[0.0.0.0]", "[ipv6:::]", "[224.0.0.1]", "x" * 64 + ".org", "a.123", "ex*ample.org", "chat.example.org/x",
])
def test_rejected_domains_name_the_variable(domain):
    with pytest.raises(SettingError) as err:
        load({"MAIL_DOMAIN": domain})
    text = str(err.value)
    assert text.startswith("MAIL_DOMAIN=")
    assert "\n" not in text
    assert "expected a domain name" in text


def test_missing_domain():
    with pytest.raises(SettingError, match=r"^MAIL_DOMAIN is required"):
        load({})


def test_empty_value_takes_the_default():
    assert load({**BASE, "TLS_MODE": "", "MAX_RECIPIENTS": "  "}).max_recipients == 1000


@pytest.mark.parametrize("name,value,accepted", [
    ("TLS_MODE", "letsencrypt", "acme, self-signed, external"),
    ("MAX_RECIPIENTS", "ten", "whole number"),
    ("MAX_RECIPIENTS", "0", "whole number"),
    ("MAX_RECIPIENTS", "-5", "whole number"),
    ("MAX_MESSAGE_SIZE", "30 potatoes", "size"),
    ("MAX_MESSAGE_SIZE", "2G", "size"),
    ("CREATE_MAX_LOAD", "high", "number"),
    ("ACCOUNT_CREATION", "maybe", "on or off"),
    ("LOG_LEVEL", "loud", "debug, info"),
    ("ACME_DIRECTORY_URL", "https://exa mple.org/directory", "http(s) URL"),
    ("ADMIN_EMAIL", "<script>@example.org", "e-mail address"),
    ("ADMIN_EMAIL", "ops@example..org", "e-mail address"),
    ("PRIVACY_MAIL", "ops@", "e-mail address"),
    ("PRIVACY_MAIL", "a b@example.org", "e-mail address"),
])
def test_bad_values_name_variable_and_accepted_values(name, value, accepted):
    with pytest.raises(SettingError) as err:
        load({**BASE, name: value})
    assert str(err.value).startswith(f"{name}=")
    assert accepted in str(err.value)


@pytest.mark.parametrize("address", [
    "ops@example.org", "o'brien+relay@mail.example.org", "first.last@example.org", "ops@[192.0.2.1]",
])
def test_plain_contact_addresses_are_taken(address):
    assert load({**BASE, "ADMIN_EMAIL": f" {address} "}).admin_email == address


def test_username_max_below_min_is_refused():
    with pytest.raises(SettingError, match="USERNAME_MAX_LENGTH"):
        load({**BASE, "USERNAME_MIN_LENGTH": "10", "USERNAME_MAX_LENGTH": "9"})


@pytest.mark.parametrize("text,expected", [
    ("500M", 500 * 2**20), ("1G", 2**30), ("30MiB", 30 * 2**20), ("4096", 4096), ("64k", 65536),
])
def test_sizes(text, expected):
    assert parsers.size(0, 2**50)(text) == expected


def test_every_setting_is_documented():
    for s in settings.SETTINGS:
        assert s.doc and s.accepted, s.name
        if s.default is not None:
            s.parse(s.default)  # every default passes its own check


def test_push_and_turn_defaults():
    v = load(BASE)
    assert v.push_gateway_url == "https://notifications.delta.chat/notify"
    assert v.iroh_relay_url == ""
    assert v.turn is True
    assert v.turn_relay_ports == (49152, 49171)


@pytest.mark.parametrize("name,value", [
    ("PUSH_GATEWAY_URL", "notifications.delta.chat/notify"),
    ("PUSH_GATEWAY_URL", "ftp://example.org/"),
    ("IROH_RELAY_URL", "iroh.example.org"),
    ("TURN", "maybe"),
    ("TURN_RELAY_PORTS", "49152"),
    ("TURN_RELAY_PORTS", "49171-49152"),
    ("TURN_RELAY_PORTS", "80-90"),
    ("TURN_RELAY_PORTS", "40000-41000"),
    ("TURN_RELAY_PORTS", "60000-70000"),
])
def test_bad_push_and_turn_values_name_the_variable(name, value):
    with pytest.raises(SettingError) as err:
        load({**BASE, name: value})
    assert str(err.value).startswith(f"{name}=")


def test_turn_relay_ports_accepts_a_range():
    assert load({**BASE, "TURN_RELAY_PORTS": " 50000-50000 "}).turn_relay_ports == (50000, 50000)


def test_json_log_lines(monkeypatch, capsys):
    import json as jsonlib
    import logging

    from relay import logs
    log = logs.setup("relay-test", "info", "json")
    log.info("delivered %d messages", 3)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    entry = jsonlib.loads(line)
    assert entry["service"] == "relay-test" and entry["level"] == "info"
    assert entry["msg"] == "delivered 3 messages" and entry["ts"].endswith("Z")
    logs.setup("relay-test", "info", "text").warning("plain")
    assert capsys.readouterr().err.strip().endswith("relay-test: WARNING plain")
    logging.getLogger().handlers.clear()
