"""One federation for the whole directory: relay-a.test, relay-b.test and classic.test on a
test network with real DNS and ACME (tests/fednet.py), plus Delta Chat clients."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from deltachat_rpc_client import DeltaChat, Rpc

from fednet import Federation


@pytest.fixture(scope="session")
def fed(image_exists):
    f = Federation()
    try:
        f.start()
        yield f
    finally:
        f.close()


def rpc_server_path() -> str:
    candidate = Path(sys.executable).parent / "deltachat-rpc-server"
    return str(candidate) if candidate.exists() else (shutil.which("deltachat-rpc-server") or "")


@pytest.fixture(scope="session")
def fed_dc(tmp_path_factory):
    accounts_dir = tmp_path_factory.mktemp("fed-dc") / "accounts"  # must not exist yet
    with Rpc(accounts_dir=str(accounts_dir), rpc_server_path=rpc_server_path()) as rpc:
        yield DeltaChat(rpc)


def dc_account(dc, relay):
    """A Delta Chat profile with an account from the relay's /new. The relays' certificates
    come from pebble, which the core does not trust: it accepts them without checks
    (TESTING.md); relay-to-relay traffic is verified."""
    answer = relay.new_account()
    account = dc.add_account()
    account.add_or_update_transport({
        "addr": answer["email"], "password": answer["password"],
        "imapServer": "127.0.0.1", "imapPort": relay.port(993), "imapSecurity": "ssl",
        "smtpServer": "127.0.0.1", "smtpPort": relay.port(465), "smtpSecurity": "ssl",
        "certificateChecks": "acceptInvalidCertificates"})
    account.bring_online()
    return account


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
