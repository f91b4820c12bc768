"""One federation for the whole directory: relay-a.test, relay-b.test and classic.test on a
test network with real DNS and ACME (tests/fednet.py), plus Delta Chat clients."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from deltachat_rpc_client import DeltaChat, Rpc

from fednet import Federation, dc_account


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
