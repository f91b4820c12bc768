"""Property tests of relay.accounts.auth's two wire parsers (hypothesis, bounded: seconds in all).

Dovecot's dict protocol (lines, TAB-escaped) and Postfix's socketmap protocol
(netstrings) are read from UNIX sockets. Whatever bytes arrive:

* the servers never raise and answer only with well-formed replies;
* a well-formed request gets exactly one answer, and the answer is right;
* an account file is created only for a valid address of the domain with a long
  enough password, and only inside the account directory.

The servers run for real (asyncio on a socketpair); FUZZ_EXAMPLES=20000 runs a
longer randomized search (tests/support/fuzzing.py).
"""

import json
import re
from pathlib import Path
import tempfile

import pytest
from hypothesis import given, strategies as st

from fuzzing import FUZZ, talk
from relay.accounts import store as accounts
from relay.accounts import auth
from relay.wire import dovecot_dict
from relay.settings import load

DOMAIN = "chat.example.org"
DICT_REPLY = re.compile(r"^[ONF][^\n]*\n$")
SOCKETMAP_REPLY = re.compile(rb"^(OK .*|NOTFOUND .*|PERM .*|TEMP .*)$", re.S)


@pytest.fixture
def fresh_root(monkeypatch):
    """A function that makes an empty account directory (in a directory of its own) for
    each hypothesis example."""
    monkeypatch.setattr(auth.accounts, "creation_refusal", lambda settings: None)
    # creating an account hashes its password: a plain "hash" keeps the search fast
    monkeypatch.setattr(accounts, "hash_password", lambda password: "{PLAIN}" + password)
    made = []

    def make() -> Path:
        made.append(tempfile.TemporaryDirectory())
        accounts_dir = Path(made[-1].name) / "accounts"
        accounts_dir.mkdir()
        return accounts_dir

    yield make
    for directory in made:
        directory.cleanup()


def authority(root):
    return auth.Authority(load({"MAIL_DOMAIN": DOMAIN}), root=root)


# --- Dovecot's dict protocol ------------------------------------------------------------

local_parts = st.one_of(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,12}", fullmatch=True),
                        st.text(max_size=14))
domains = st.sampled_from([DOMAIN, "other.example.org", DOMAIN.upper(), "", f"x.{DOMAIN}", "..", "/"])
addresses = st.one_of(st.builds(lambda l, d: f"{l}@{d}", local_parts, domains), st.text(max_size=30))
passwords = st.text(max_size=20)
keys = st.one_of(
    st.builds(lambda a, p: f"shared/passdb/{a}/{p}", addresses, passwords),
    st.builds(lambda a: f"shared/userdb/{a}", addresses),
    st.text(max_size=60),
)


def creatable(address: str, password: str) -> bool:
    return (accounts.check_new_address(address, DOMAIN, 9, 9) is None and len(password) >= 9)


@FUZZ
@given(lines=st.lists(st.one_of(keys.map(lambda k: "L" + dovecot_dict.tab_escape(k) + "\tuser"),
                                st.text(max_size=80)), max_size=8))
def test_dict_line_answers_every_command_with_one_line(fresh_root, lines):
    root = fresh_root()
    a = authority(root)
    for line in lines:
        line = line.split("\n")[0]
        reply = a.dict_line(line)
        if not line or line[0] == "H":
            assert reply is None
        else:
            assert DICT_REPLY.match(reply), (line, reply)
    for entry in root.parent.iterdir():
        assert entry == root, f"a file outside the account directory: {entry}"


@FUZZ
@given(address=addresses, password=passwords)
def test_passdb_creates_exactly_the_valid_accounts(fresh_root, address, password):
    root = fresh_root()
    a = authority(root)
    reply = a.dict_line("L" + dovecot_dict.tab_escape(f"shared/passdb/{address}/{password}") + "\tuser")
    created = sorted(p.name for p in root.iterdir())
    if creatable(address, password):
        assert reply.startswith("O") and created == [address]
        stored = json.loads(dovecot_dict.tab_unescape(reply[1:-1]))["password"]
        assert stored == "{PLAIN}" + password
        # the userdb and the socketmap now know the mailbox
        assert a.dict_line("L" + dovecot_dict.tab_escape(f"shared/userdb/{address}") + "\tuser").startswith("O")
        assert a.socketmap_request(f"mailbox {address}") == "OK exists"
    else:
        assert reply == "N\n" and created == []


@FUZZ
@given(text=st.text(max_size=200))
def test_tab_escaping_round_trips_and_unescape_never_raises(text):
    escaped = dovecot_dict.tab_escape(text)
    assert "\t" not in escaped and "\n" not in escaped and "\r" not in escaped and "\0" not in escaped
    assert dovecot_dict.tab_unescape(escaped) == text
    dovecot_dict.tab_unescape(text)  # arbitrary input, including a lone trailing \1


@FUZZ
@given(data=st.one_of(st.binary(max_size=400),
                      st.lists(keys, max_size=5).map(
                          lambda ks: "".join("L" + dovecot_dict.tab_escape(k) + "\tuser\n" for k in ks).encode())),
       chunks=st.lists(st.integers(0, 1000), max_size=4))
def test_dict_server_answers_whatever_arrives(fresh_root, data, chunks):
    root = fresh_root()
    a = authority(root)
    answer = talk(lambda r, w: auth.serve_dict(a, r, w), data, chunks).decode()
    lines = re.findall(r"[^\n]*\n", answer)
    assert "".join(lines) == answer
    assert all(DICT_REPLY.match(line) for line in lines), lines
    requests = [line for line in data.split(b"\n") if line and line[:1] != b"H"]
    assert len(lines) == len(requests)


def test_dict_server_survives_an_overlong_line(fresh_root):
    """More than the stream's 64 KiB line limit: the connection is closed, the
    server does not raise, and a new connection is answered as usual."""
    root = fresh_root()
    a = authority(root)
    assert talk(lambda r, w: auth.serve_dict(a, r, w), b"L" + b"x" * 200_000 + b"\n", []) == b""
    ok = talk(lambda r, w: auth.serve_dict(a, r, w),
              ("L" + dovecot_dict.tab_escape(f"shared/userdb/nobody@{DOMAIN}") + "\tuser\n").encode(), [])
    assert ok == b"N\n"


# --- Postfix's socketmap protocol (netstrings) -------------------------------------------

def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


def parse_netstrings(data: bytes) -> list[bytes]:
    """Independent of relay.accounts.auth: the whole answer must be netstrings back to back."""
    out = []
    while data:
        match = re.match(rb"(0|[1-9]\d*):", data)
        assert match, data[:40]
        size = int(match.group(1))
        start = match.end()
        assert data[start + size:start + size + 1] == b",", data[:40]
        out.append(data[start:start + size])
        data = data[start + size + 1:]
    return out


@FUZZ
@given(data=st.one_of(
           st.binary(max_size=300),
           st.lists(st.binary(max_size=40), max_size=5).map(lambda ps: b"".join(map(netstring, ps))),
           st.from_regex(rb"[0-9 +_-]{0,4}:[\x00-\xff]{0,20},?", fullmatch=True)),
       chunks=st.lists(st.integers(0, 1000), max_size=4))
def test_socketmap_server_answers_only_with_netstrings(fresh_root, data, chunks):
    root = fresh_root()
    a = authority(root)
    answer = talk(lambda r, w: auth.serve_socketmap(a, r, w), data, chunks)
    for reply in parse_netstrings(answer):
        assert SOCKETMAP_REPLY.match(reply), reply


@FUZZ
@given(requests=st.lists(st.one_of(addresses.map(lambda x: f"mailbox {x}"), st.text(max_size=30)),
                         max_size=6),
       chunks=st.lists(st.integers(0, 1000), max_size=4))
def test_socketmap_answers_each_request_correctly(fresh_root, requests, chunks):
    root = fresh_root()
    (root / f"abcdefghi@{DOMAIN}").write_text("{PLAIN}x\n")
    requests = requests + [f"mailbox ABCDEFGHI@{DOMAIN}"]
    a = authority(root)
    data = b"".join(netstring(r.encode()) for r in requests)
    replies = parse_netstrings(talk(lambda r, w: auth.serve_socketmap(a, r, w), data, chunks))
    assert len(replies) == len(requests)
    for request, reply in zip(requests, replies):
        name, _, key = request.partition(" ")
        if name != "mailbox":
            assert reply.startswith(b"PERM ")
        elif key.lower() == f"abcdefghi@{DOMAIN}":
            assert reply == b"OK exists"
        else:
            assert reply == b"NOTFOUND ", (request, reply)


@pytest.mark.parametrize("data", [b"-1:,", b"+3:abc,", b"1_0:mailbox xy,", b" 3:abc,",
                                  b"99999999999999999999:x", b"3:abcd", b"x" * 70000])
def test_socketmap_refuses_what_is_not_a_netstring(fresh_root, data):
    """Nothing is answered to a malformed or oversized request; the connection closes."""
    assert talk(lambda r, w: auth.serve_socketmap(authority(fresh_root()), r, w), data, []) == b""
