"""Property tests of relay.notify.metadata's side of Dovecot's dict protocol (hypothesis).

Dovecot's imap and lmtp processes send METADATA requests of our users and new-mail
events here; the keys, values and user names in them come from IMAP clients.
Whatever lines arrive:

* the connection never raises; lookups, iterations and commits get exactly one
  well-formed reply each, every other command none;
* only a device token (printable, no spaces, at most 4096 characters) of a user of
  this relay is ever stored, as one file named after that user in the token
  directory, and a lookup returns exactly the tokens stored;
* the server entries are read-only: no transaction can change them;
* a new-mail event notifies only a user of this relay.

The server runs for real on a socketpair as well (tests/support/fuzzing.py).
"""

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from fuzzing import FUZZ, talk
from relay.accounts import store as accounts
from relay.notify import metadata
from relay.notify import push
from relay.accounts.auth import tab_escape
from relay.settings import load
from test_metadata_dict import Notified

DOMAIN = "chat.example.org"
GUID = "0123456789abcdef0123456789abcdef"
TOKEN_KEY = f"priv/{GUID}/devicetoken"
SERVER = f"shared/{GUID}/vendor/vendor.dovecot/pvt/server/vendor/deltachat/"
REPLY = re.compile(r"^([ONF][^\n]*)?\n$")
ANSWERED = set("LICD")  # the commands that get a reply


@pytest.fixture
def fresh():
    """A function that makes a service with an empty token directory (in a directory
    of its own) for each hypothesis example."""
    made = []

    def make():
        made.append(tempfile.TemporaryDirectory())
        root = Path(made[-1].name) / "tokens"
        root.mkdir()
        settings = load({"MAIL_DOMAIN": DOMAIN, "MAX_RECIPIENTS": "50"})
        return metadata.MetadataService(settings, push.TokenStore(root), Notified(),
                                        turn_secret="s3cret"), root

    yield make
    for directory in made:
        directory.cleanup()


users = st.one_of(st.sampled_from([f"alice@{DOMAIN}", f"bob@{DOMAIN}", "eve@other.example.org",
                                   "../x", "", f"a/b@{DOMAIN}", f".hidden@{DOMAIN}", DOMAIN]),
                  st.text(max_size=20))
keys = st.one_of(st.sampled_from([TOKEN_KEY, "priv/status/INBOX", SERVER + "turn",
                                  SERVER + "maxsmtprecipients", SERVER + "irohrelay",
                                  f"priv/{GUID}/comment", f"shared/{GUID}/comment"]),
                 st.text(max_size=40))
values = st.one_of(st.from_regex(r"[!-~]{1,40}", fullmatch=True), st.text(max_size=40),
                   st.just("x" * 4097))
tids = st.sampled_from(["1", "2", "x"])
hellos = st.sampled_from(["H3\t2\t0\t\tmetadata"] * 4 + ["H3\t2\t0\t\tnewmail", "H3", "H"])


def line_of(parts: list[str]) -> str:
    return parts[0] + "\t".join(tab_escape(p) for p in parts[1:])


commands = st.one_of(
    st.builds(lambda k, u: line_of(["L", k, u]), keys, users),
    st.builds(lambda t, u: line_of(["B", t, u]), tids, users),
    st.builds(lambda t, k, v: line_of(["S", t, k, v]), tids, keys, values),
    st.builds(lambda t, k: line_of(["U", t, k]), tids, keys),
    st.builds(lambda t: line_of(["T", t, "1700000000", "0"]), tids),
    st.builds(lambda t, c: line_of([c, t]), tids, st.sampled_from("CDR")),
    st.builds(lambda k, u: line_of(["I", "0", k, u]), keys, users),
    hellos,
    st.text(max_size=60).map(lambda text: text.replace("\n", "")),
)

local_users = st.sampled_from([f"alice@{DOMAIN}", f"bob@{DOMAIN}"])
token_ops = st.one_of(
    st.builds(lambda v: ["S", "{tid}", TOKEN_KEY, v], st.from_regex(r"[!-~]{1,40}", fullmatch=True)),
    st.builds(lambda v: ["S", "{tid}", TOKEN_KEY, v], values),
    st.builds(lambda k, v: ["S", "{tid}", k, v], keys, values),
    st.builds(lambda: ["U", "{tid}", TOKEN_KEY]),
)


def transaction(tid: str, user: str, ops: list[list[str]], end: str) -> list[str]:
    return ([line_of(["B", tid, user])]
            + [line_of([op[0], tid] + op[2:]) for op in ops]
            + [line_of([end, tid])])


# whole transactions, mostly of local users, so that the search also stores tokens
transactions = st.builds(transaction, tids, st.one_of(local_users, users),
                         st.lists(token_ops, min_size=1, max_size=4),
                         st.sampled_from(["C", "C", "D", "R"]))
sessions = st.lists(st.one_of(transactions, commands.map(lambda c: [c])), max_size=10).map(
    lambda blocks: [line for block in blocks for line in block])


def stored_tokens(root: Path) -> dict[str, list[str]]:
    out = {}
    for path in root.iterdir():
        lines = path.read_text().splitlines()
        out[path.name] = [line.split(" ", 1)[1] for line in lines]
    return out


@FUZZ
@given(lines=sessions)
def test_every_command_is_answered_as_the_protocol_says(fresh, lines):
    service, root = fresh()
    conn = metadata.DictConnection(service)
    for line in lines:
        reply = conn.handle(line)
        if line and line[0] in ANSWERED:
            assert reply is not None and REPLY.match(reply), (line, reply)
        else:
            assert reply is None, (line, reply)


@FUZZ
@given(lines=sessions, hello=hellos)
def test_only_valid_tokens_of_local_users_are_stored(fresh, lines, hello):
    service, root = fresh()
    conn = metadata.DictConnection(service)
    conn.handle(hello)
    for line in lines:
        conn.handle(line)
    entries = list(root.parent.iterdir())
    assert entries == [root], f"a file outside the token directory: {entries}"
    for user, tokens in stored_tokens(root).items():
        assert accounts.is_local(user, DOMAIN), user
        assert 1 <= len(tokens) <= push.MAX_TOKENS
        assert all(push.valid_token(t) for t in tokens), tokens
        # what Dovecot reads back is exactly what is stored
        reply = metadata.DictConnection(service).handle(line_of(["L", TOKEN_KEY, user]))
        assert reply == "O" + tab_escape(" ".join(service.tokens.tokens(user))) + "\n"
        assert sorted(service.tokens.tokens(user)) == sorted(tokens)
    # new-mail events reach only users of this relay
    assert all(accounts.is_local(a, DOMAIN) for a in service.notifier.addresses)
    # the server entries are unchanged, whatever was committed
    assert conn.handle(line_of(["L", SERVER + "maxsmtprecipients", f"alice@{DOMAIN}"])) == "O50\n"


@FUZZ
@given(user=users, value=values, hello=hellos)
def test_a_token_commit_stores_exactly_when_valid(fresh, user, value, hello):
    service, root = fresh()
    conn = metadata.DictConnection(service)
    conn.handle(hello)
    conn.handle(line_of(["B", "1", user]))
    conn.handle(line_of(["S", "1", TOKEN_KEY, value]))
    reply = conn.handle(line_of(["C", "1"]))
    storable = (not hello.endswith("newmail") and accounts.is_local(user, DOMAIN)
                and push.valid_token(value))
    if hello.endswith("newmail"):
        assert reply == "O1\n" and not any(root.iterdir())
    elif storable:
        assert reply == "O1\n"
        assert service.tokens.tokens(user) == [value]
    else:
        assert reply.startswith("F1\t") and not any(root.iterdir())


@FUZZ
@given(data=st.one_of(st.binary(max_size=400),
                      sessions.map(lambda ls: "".join(x + "\n" for x in ls).encode())),
       chunks=st.lists(st.integers(0, 1000), max_size=4))
def test_server_answers_whatever_arrives(fresh, data, chunks):
    service, root = fresh()
    answer = talk(lambda r, w: metadata.serve(service, r, w), data, chunks).decode()
    lines = re.findall(r"[^\n]*\n", answer)
    assert "".join(lines) == answer
    assert all(REPLY.match(line) for line in lines), lines
    requests = [line for line in data.decode("utf-8", "replace").split("\n") if line[:1] in ANSWERED]
    assert len(lines) == len(requests)
