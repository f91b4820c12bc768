"""One federation for the whole directory: relay-a.test, relay-b.test and classic.test on a
test network with real DNS and ACME (tests/support/fednet.py), a peer that answers as the
reference relays do plus a catch-all web site (tests/support/refpeer.py), and Delta Chat
clients."""

from __future__ import annotations

import pytest

from fednet import Federation, dc_account
from refpeer import RefPeer
from relaytest import delta_chat


@pytest.fixture(scope="session")
def fed(image_exists):
    f = Federation(peers=(RefPeer,))
    try:
        f.start()
        yield f
    finally:
        f.close()


@pytest.fixture(scope="session")
def fed_dc(tmp_path_factory):
    with delta_chat(tmp_path_factory.mktemp("fed-dc") / "accounts") as chat:
        yield chat


@pytest.fixture
def make_account(fed_dc):
    made = []

    def make(relay):
        account = dc_account(fed_dc, relay)
        made.append(account)
        return account

    yield make
    for account in made:
        account.stop_io()
