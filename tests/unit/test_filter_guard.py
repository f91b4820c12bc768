"""relay.filter.guard: the filter's catch-alls refuse a message in production and raise a
programming error under test; a standard-library parser tripped by hostile input is the
message's fault in both modes."""

import asyncio
import logging
from types import SimpleNamespace

import pytest

import corpus_tools as ct
from relay.filter import guard, openpgp, policy, server

SENDER = "k3x9q2m7a@_chat.example.test"
RECIPIENT = "p8w2z4r1b@_chat.example.test"
ENCRYPTED = ct.load_case("enc_one_pkesk.eml", SENDER, RECIPIENT)[2]


def planted(*args, **kwargs):
    raise TypeError("planted bug")


def test_unit_tests_run_strict():
    assert guard.STRICT is True  # tests/unit/conftest.py


def test_a_valid_message_passes_in_both_modes(monkeypatch):
    assert policy.check_incoming(SENDER, [RECIPIENT], ENCRYPTED) is None
    monkeypatch.setattr(guard, "STRICT", False)
    assert policy.check_outgoing(SENDER, [RECIPIENT], ENCRYPTED) is None


def test_a_programming_error_raises_under_test(monkeypatch):
    monkeypatch.setattr(openpgp, "dearmor", planted)
    with pytest.raises(TypeError, match="planted bug"):
        policy.check_incoming(SENDER, [RECIPIENT], ENCRYPTED)


def test_a_programming_error_refuses_in_production(monkeypatch, caplog):
    monkeypatch.setattr(guard, "STRICT", False)
    monkeypatch.setattr(openpgp, "dearmor", planted)
    with caplog.at_level(logging.INFO, logger="relay-filter"):
        assert policy.check_incoming(SENDER, [RECIPIENT], ENCRYPTED) is policy.UNENCRYPTED
        assert policy.check_outgoing(SENDER, [RECIPIENT], ENCRYPTED) is policy.UNENCRYPTED
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    line = errors[0].getMessage()
    assert "TypeError" in line and "test_filter_guard.py:" in line
    assert "planted bug" not in line  # str(exc) may quote the message: never logged


def test_a_parse_error_is_unparsable_in_production(monkeypatch):
    monkeypatch.setattr(policy, "message_from_bytes", planted)
    with pytest.raises(TypeError):
        policy.check_outgoing(SENDER, [RECIPIENT], ENCRYPTED)
    monkeypatch.setattr(guard, "STRICT", False)
    assert policy.check_outgoing(SENDER, [RECIPIENT], ENCRYPTED) is policy.UNPARSABLE
    assert policy.check_incoming(SENDER, [RECIPIENT], ENCRYPTED) is policy.UNPARSABLE


def test_the_email_package_tripping_is_the_messages_fault(caplog):
    """Python 3.11's header parser raises IndexError on "From: user@" (get_domain): the
    message is refused, and the test does not fail although STRICT is on."""
    msg = policy.parse(b"From: " + SENDER.split("@")[0].encode() + b"@\r\n\r\nhi\r\n")
    with caplog.at_level(logging.INFO, logger="relay-filter"):
        assert policy.from_addresses(msg) is None
        assert policy.check_outgoing(SENDER, [RECIPIENT], msg.as_bytes()) is policy.BAD_FROM


def test_origin_names_the_innermost_frame():
    try:
        planted()
    except TypeError as exc:
        assert guard.origin(exc).endswith(f"test_filter_guard.py:{planted.__code__.co_firstlineno + 1}")
        assert not guard.raised_by_email_package(exc)
    assert guard.origin(TypeError()) == "?"


def handle_data(data: bytes) -> str:
    """One end of DATA through relay-filter's handler (outgoing, no reinjection reached)."""
    settings = SimpleNamespace(max_recipients=10)
    handler = server.Handler("outgoing", settings, None, ct.CORPUS / "nowhere")
    envelope = SimpleNamespace(original_content=data, mail_from=SENDER, rcpt_tos=[RECIPIENT],
                               mail_options=[])
    return asyncio.run(handler.handle_DATA(None, None, envelope))


def test_the_server_refuses_an_unparsable_message_in_production(monkeypatch):
    monkeypatch.setattr(policy, "parse", planted)
    with pytest.raises(TypeError):
        handle_data(ENCRYPTED)
    monkeypatch.setattr(guard, "STRICT", False)
    assert handle_data(ENCRYPTED) == policy.UNPARSABLE.reply()
