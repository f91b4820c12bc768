"""Real Delta Chat clients (deltachat-rpc-server from PyPI) against the running relay."""

import pytest

from relaytest import delta_chat


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
