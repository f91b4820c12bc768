"""Real Delta Chat clients (deltachat-rpc-server from PyPI) against the running relay."""

import time

import pytest

from relaytest import daemon_errors, delta_chat, logs_since


@pytest.fixture(scope="package", autouse=True)
def healthy_relay_log(relay):
    """The e2e suite fails when the session relay logged a Dovecot error or a Postfix
    fatal/panic while it ran (issue 17 §4: a healthy relay's log has none)."""
    start = time.time() - 1
    yield
    errors = daemon_errors(logs_since(relay, start))
    assert not errors, "daemon errors in the relay's log during the e2e tests:\n" + "\n".join(
        errors[:20])


@pytest.fixture(scope="session")
def dc(tmp_path_factory):
    with delta_chat(tmp_path_factory.mktemp("dc") / "accounts") as chat:
        yield chat


@pytest.fixture
def make_account(dc, relay):
    """A Delta Chat profile set up only from the relay's /new answer (dclogin flow)."""
    made = []

    def make(r=relay):
        answer = r.new_account()
        account = dc.add_account()
        account.add_transport_from_qr(r.dclogin_for_here(answer))
        account.bring_online()
        made.append(account)
        return account

    yield make
    for account in made:
        account.stop_io()
