"""relay.notify.metadata's side of Dovecot's dict protocol, and the TURN credentials it hands out."""

import base64
import hashlib
import hmac

import pytest

from relay.notify import metadata
from relay.notify import push
from relay.notify import turn
from relay.settings import load

GUID = "0123456789abcdef0123456789abcdef"
TOKEN_KEY = f"priv/{GUID}/devicetoken"
SERVER = f"shared/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/"
ALICE = "alice@chat.example.org"
HELLO_METADATA = "H3\t2\t0\t\tmetadata"
HELLO_NEWMAIL = "H3\t2\t0\t\tnewmail"


class Notified:
    def __init__(self):
        self.addresses = []

    def new_message(self, address):
        self.addresses.append(address)
        return 1


@pytest.fixture
def service(tmp_path):
    def make(**env):
        settings = load({"MAIL_DOMAIN": "chat.example.org", "MAX_RECIPIENTS": "77", **env})
        root = tmp_path / "tokens"
        root.mkdir(exist_ok=True)
        return metadata.MetadataService(settings, push.TokenStore(root), Notified(),
                                        turn_secret="s3cret")
    return make


def session(service, hello=HELLO_METADATA):
    conn = metadata.DictConnection(service)
    assert conn.handle(hello) is None
    return conn


def test_server_entries(service):
    conn = session(service())
    assert conn.handle(f"L{SERVER}maxsmtprecipients\t{ALICE}") == "O77\n"
    assert conn.handle(f"L{SERVER}irohrelay\t{ALICE}") == "N\n"
    assert conn.handle(f"L{SERVER}unknown\t{ALICE}") == "N\n"
    reply = conn.handle(f"L{SERVER}turn\t{ALICE}")
    host, port, username, password = reply[1:-1].split(":")
    assert (host, port) == ("chat.example.org", "3478")
    expected = base64.b64encode(hmac.new(b"s3cret", username.encode(), hashlib.sha1).digest())
    assert password == expected.decode()


def test_irohrelay_when_configured(service):
    conn = session(service(IROH_RELAY_URL="https://iroh.example.org/"))
    assert conn.handle(f"L{SERVER}irohrelay\t{ALICE}") == "Ohttps://iroh.example.org/\n"


def test_no_turn_entry_when_turn_is_off(service):
    conn = session(service(TURN="off"))
    assert conn.handle(f"L{SERVER}turn\t{ALICE}") == "N\n"


def test_set_lookup_and_unset_device_tokens(service):
    svc = service()
    conn = session(svc)
    for tid, token in (("1", "openpgp:AAA"), ("2", "openpgp:BBB")):
        assert conn.handle(f"B{tid}\t{ALICE}") is None
        assert conn.handle(f"S{tid}\t{TOKEN_KEY}\t{token}") is None
        assert conn.handle(f"C{tid}") == f"O{tid}\n"
    assert svc.tokens.tokens(ALICE) == ["openpgp:AAA", "openpgp:BBB"]
    assert conn.handle(f"L{TOKEN_KEY}\t{ALICE}") == "Oopenpgp:AAA openpgp:BBB\n"
    conn.handle(f"B3\t{ALICE}")
    conn.handle(f"U3\t{TOKEN_KEY}")
    assert conn.handle("C3") == "O3\n"
    assert svc.tokens.tokens(ALICE) == []
    assert conn.handle(f"L{TOKEN_KEY}\t{ALICE}") == "N\n"


def test_nothing_else_can_be_stored(service):
    svc = service()
    conn = session(svc)
    conn.handle(f"B1\t{ALICE}")
    conn.handle(f"S1\tpriv/{GUID}/comment\tmy phone number")
    reply = conn.handle("C1")
    assert reply.startswith("F1\t")
    conn.handle(f"B2\t{ALICE}")
    conn.handle(f"S2\t{SERVER}turn\tevil:3478:1:x")
    assert conn.handle("C2").startswith("F2\t")
    # one refused key refuses the whole transaction
    conn.handle(f"B3\t{ALICE}")
    conn.handle(f"S3\t{TOKEN_KEY}\topenpgp:OK")
    conn.handle(f"S3\tpriv/{GUID}/comment\tx")
    assert conn.handle("C3").startswith("F3\t")
    assert svc.tokens.tokens(ALICE) == []
    assert list(svc.tokens.root.iterdir()) == []


def test_bad_token_and_foreign_user_are_refused(service):
    svc = service()
    conn = session(svc)
    conn.handle(f"B1\t{ALICE}")
    conn.handle(f"S1\t{TOKEN_KEY}\twith space")
    assert conn.handle("C1").startswith("F1\t")
    conn.handle("B2\tmallory@elsewhere.example")
    conn.handle(f"S2\t{TOKEN_KEY}\topenpgp:x")
    assert conn.handle("C2").startswith("F2\t")
    conn.handle("B3\t../../etc@chat.example.org")
    conn.handle(f"S3\t{TOKEN_KEY}\topenpgp:x")
    assert conn.handle("C3").startswith("F3\t")
    assert list(svc.tokens.root.iterdir()) == []


def test_rollback_and_unknown_transactions(service):
    svc = service()
    conn = session(svc)
    conn.handle(f"B1\t{ALICE}")
    conn.handle(f"S1\t{TOKEN_KEY}\topenpgp:x")
    assert conn.handle("R1") is None
    assert conn.handle("C1").startswith("F1\t")
    assert svc.tokens.tokens(ALICE) == []


def test_iteration_is_empty(service):
    conn = session(service())
    assert conn.handle(f"I0\t0\tpriv/{GUID}/\t{ALICE}") == "\n"


def test_new_mail_event_notifies(service):
    svc = service()
    conn = session(svc, HELLO_NEWMAIL)
    conn.handle(f"B1\t{ALICE}")
    conn.handle("S1\tpriv/status/INBOX\tnew")
    assert conn.handle("C1") == "O1\n"
    assert svc.notifier.addresses == [ALICE]
    # other mailboxes, or the same key on the metadata dict, notify nobody
    conn.handle(f"B2\t{ALICE}")
    conn.handle("S2\tpriv/status/Sent\tnew")
    assert conn.handle("C2") == "O2\n"
    other = session(svc)
    other.handle(f"B1\t{ALICE}")
    other.handle("S1\tpriv/status/INBOX\tnew")
    assert other.handle("C1").startswith("F1\t")
    assert svc.notifier.addresses == [ALICE]


def test_escaped_values_are_unescaped(service):
    svc = service()
    conn = session(svc)
    conn.handle(f"B1\t{ALICE}")
    conn.handle(f"S1\t{TOKEN_KEY}\topenpgp:a\x01tb")   # a tab inside: not a valid token
    assert conn.handle("C1").startswith("F1\t")


# --- TURN credentials --------------------------------------------------------------

def test_turn_credentials_rest_api_scheme():
    username, password = turn.credentials("secret", now=1_700_000_000, ttl=3600)
    assert username == "1700003600"
    digest = hmac.new(b"secret", b"1700003600", hashlib.sha1).digest()
    assert password == base64.b64encode(digest).decode()


def test_turn_metadata_value_as_delta_chat_parses_it():
    value = turn.metadata_value("chat.example.org", "secret", now=1_700_000_000)
    host, rest = value.split(":", 1)
    port, rest = rest.split(":", 1)
    expiry, password = rest.split(":", 1)
    assert (host, port) == ("chat.example.org", "3478")
    assert int(expiry) == 1_700_000_000 + turn.TTL
    assert ":" not in password


@pytest.mark.parametrize("domain,host", [
    ("chat.example.org", "chat.example.org"),
    ("[192.0.2.1]", "192.0.2.1"),
    ("[ipv6:2001:db8::1]", None),
    ("localhost", "localhost"),
])
def test_turn_host(domain, host):
    assert turn.host_for(domain) == host


def test_no_turn_value_without_secret():
    assert turn.metadata_value("chat.example.org", "") is None


def test_secret_is_made_once_and_private(tmp_path, monkeypatch):
    import os
    import pwd
    me = pwd.getpwuid(os.getuid()).pw_name
    path = tmp_path / "turn-secret"
    first = turn.ensure_secret(path, owner=me)
    assert len(first) >= 32
    assert turn.ensure_secret(path, owner=me) == first
    assert oct(path.stat().st_mode & 0o777) == "0o600"
