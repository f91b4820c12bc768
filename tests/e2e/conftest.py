"""Real Delta Chat clients (deltachat-rpc-server from PyPI) against the running relay."""

import time

import pytest

from relaytest import Relay, daemon_errors, delta_chat, logs_since

LITERALS = {"ipv4": "[192.0.2.1]", "ipv6": "[IPv6:2001:db8::1]"}
APPVERSIONS = {"clients": [{"clientId": "deltachat", "sources": [
    {"sourceId": "gplay", "versionInteger": 754, "versionString": "2.57.0",
     "downloadUrl": "https://download.delta.chat/android/deltachat-gplay-release-2.57.0.apk"}]}]}


# Errors that tests provoke on purpose, as a client may: each with its test. Dovecot
# logs a refused METADATA commit at error level whoever caused it.
PROVOKED = (
    # tests/e2e/test_metadata.py: a client stores a key other than /private/devicetoken
    "dict-server returned failure: only /private/devicetoken can be stored",
    # tests/e2e/test_metadata.py: a client stores a malformed device token
    "dict-server returned failure: a device token is 1 to 4096 printable characters",
)


@pytest.fixture(scope="package", autouse=True)
def healthy_relay_log(relay):
    """The e2e suite fails when the session relay logged a Dovecot error or a Postfix
    fatal/panic while it ran (issue 17 §4: a healthy relay's log has none), other than
    the client errors the tests provoke (PROVOKED)."""
    start = time.time() - 1
    yield
    errors = [e for e in daemon_errors(logs_since(relay, start))
              if not any(p in e for p in PROVOKED)]
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


@pytest.fixture(scope="package")
def literal_relays(image_exists, tmp_path_factory):
    """Two small relays whose MAIL_DOMAIN is an address literal (IPv4, IPv6), started
    together (tests/e2e/test_compat_*.py). The IPv4 one serves an app-version index
    (APPVERSIONS_FILE, bind-mounted)."""
    import json
    index = tmp_path_factory.mktemp("appversions") / "appversions.json"
    index.write_text(json.dumps(APPVERSIONS, indent=2))
    index.chmod(0o644)
    relays = {kind: Relay({"MAIL_DOMAIN": domain, "TLS_MODE": "self-signed", "TURN": "off",
                           "NEW_ACCOUNTS_PER_MINUTE": "600",
                           **({"APPVERSIONS_FILE": "/etc/chatmail-appversions.json"}
                              if kind == "ipv4" else {})},
                          extra_args=(("-v", f"{index}:/etc/chatmail-appversions.json:ro")
                                      if kind == "ipv4" else ()))
              for kind, domain in LITERALS.items()}
    try:
        for r in relays.values():
            r.start()
        for r in relays.values():
            r.wait_healthy()
        yield relays
    finally:
        for r in relays.values():
            r.remove()
