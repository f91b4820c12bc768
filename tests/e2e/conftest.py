"""Real Delta Chat clients (deltachat-rpc-server from PyPI) against the running relay."""

import shutil
import sys
from pathlib import Path

import pytest
from deltachat_rpc_client import DeltaChat, Rpc


def rpc_server_path() -> str:
    candidate = Path(sys.executable).parent / "deltachat-rpc-server"
    return str(candidate) if candidate.exists() else (shutil.which("deltachat-rpc-server") or "")


@pytest.fixture(scope="session")
def dc(tmp_path_factory):
    accounts_dir = tmp_path_factory.mktemp("dc") / "accounts"  # must not exist yet
    with Rpc(accounts_dir=str(accounts_dir), rpc_server_path=rpc_server_path()) as rpc:
        yield DeltaChat(rpc)


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
