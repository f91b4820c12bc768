"""IMAP METADATA served through the real Dovecot, and TURN credentials checked by the real coturn."""

import base64
import hashlib
import hmac
import http.client
import json
import time

import pytest

from relaytest import (ROOT, Relay, get_metadata, imap_login, insecure_tls, set_device_token,
                       wait_for)

TURN_CLIENT = (ROOT / "tests" / "support" / "turnclient.py").read_text()
SERVER_ENTRIES = ("/shared/vendor/deltachat/turn", "/shared/vendor/deltachat/maxsmtprecipients",
                  "/shared/vendor/deltachat/irohrelay", "/shared/admin")


def test_capabilities_after_login(relay):
    im = imap_login(relay, relay.new_account())
    caps = im.capability()[1][0].decode().split()
    im.logout()
    assert {"XCHATMAIL", "XDELTAPUSH", "METADATA"} <= set(caps)


def test_server_metadata(relay):
    im = imap_login(relay, relay.new_account())
    values = get_metadata(im, '""', *SERVER_ENTRIES)
    im.logout()
    assert values["/shared/vendor/deltachat/maxsmtprecipients"] == relay.env["MAX_RECIPIENTS"]
    assert values["/shared/vendor/deltachat/irohrelay"] is None
    assert values["/shared/admin"] is None
    # Parsed as Delta Chat parses it: host, port, expiry time (= username), password.
    host, port, expiry, password = values["/shared/vendor/deltachat/turn"].split(":", 3)
    assert (host, port) == (relay.domain, "3478")
    assert time.time() + 2 * 86400 < int(expiry) < time.time() + 4 * 86400
    assert len(base64.b64decode(password)) == 20  # an HMAC-SHA1


def test_device_tokens_are_kept_per_user_and_nothing_else(relay):
    account = relay.new_account()
    im = imap_login(relay, account)
    assert set_device_token(im, "openpgp:phone")[0] == "OK"
    assert set_device_token(im, "openpgp:tablet")[0] == "OK"
    assert set_device_token(im, "openpgp:phone")[0] == "OK"   # again: no duplicate
    tokens = get_metadata(im, "INBOX", "/private/devicetoken")["/private/devicetoken"]
    assert sorted(tokens.split(" ")) == ["openpgp:phone", "openpgp:tablet"]
    stat = relay.exec("stat", "-c", "%U %a", f"/data/push/tokens/{account['email']}").stdout
    assert stat.split() == ["relaypush", "600"]

    # Anything else is refused, so no other data about a user can be stored.
    for command in ('SETMETADATA INBOX (/private/comment "my phone number")',
                    'SETMETADATA "" (/shared/vendor/deltachat/turn "evil:3478:1:x")',
                    'SETMETADATA "" (/private/vendor/deltachat/contacts "a,b,c")'):
        name, _, args = command.partition(" ")
        typ, _ = im._simple_command(name, args)
        assert typ == "NO", command
    assert set_device_token(im, "two words")[0] == "NO"

    # Another user sees only their own tokens.
    other = imap_login(relay, relay.new_account())
    assert get_metadata(other, "INBOX", "/private/devicetoken") == {"/private/devicetoken": None}
    other.logout()

    typ, _ = im._simple_command("SETMETADATA", "INBOX", "(/private/devicetoken NIL)")
    assert typ == "OK"
    assert get_metadata(im, "INBOX", "/private/devicetoken") == {"/private/devicetoken": None}
    im.logout()
    assert relay.exec("test", "-e", f"/data/push/tokens/{account['email']}",
                      check=False).returncode == 1


def turn_client(relay, transport, username, password, *peers) -> dict:
    out = relay.exec("python3", "-c", TURN_CLIENT, transport, username, password, *peers).stdout
    return json.loads(out)


def test_turn_credentials_from_metadata_authenticate(relay):
    im = imap_login(relay, relay.new_account())
    value = get_metadata(im, '""', "/shared/vendor/deltachat/turn")["/shared/vendor/deltachat/turn"]
    im.logout()
    _, _, username, password = value.split(":", 3)

    # coturn answers a few seconds after the container starts
    wait_for(lambda: turn_client(relay, "udp", username, password)["allocate"] == "success",
             30, 0.5, "TURN allocation with the metadata credentials")
    private_peers = ("127.0.0.1", "10.0.0.1", "172.17.0.1", "192.168.1.1", "169.254.1.1")
    for transport in ("udp", "tcp"):
        # Only creating permissions: no packet goes to any of these addresses.
        result = turn_client(relay, transport, username, password, "1.2.3.4", *private_peers)
        assert result["realm"] == relay.domain
        assert (result["allocate"], result["relayed"]) == ("success", True), result
        assert result["permissions"]["1.2.3.4"] == "success"
        for peer in private_peers:  # no relaying into private networks
            assert result["permissions"][peer] == 403, (peer, result)

    wrong = base64.b64encode(hashlib.sha1(b"guess").digest()).decode()
    assert turn_client(relay, "udp", username, wrong)["allocate"] == 401
    assert turn_client(relay, "tcp", str(int(username) + 1), password)["allocate"] == 401
    # Credentials made with the right secret but already expired are refused too.
    secret = relay.exec("cat", "/data/state/turn-secret").stdout.strip()
    past = str(int(time.time()) - 60)
    expired = base64.b64encode(hmac.new(secret.encode(), past.encode(), hashlib.sha1).digest())
    assert turn_client(relay, "udp", past, expired.decode())["allocate"] == 401


def test_coturn_runs_unprivileged(relay):
    users = relay.exec("ps", "-C", "turnserver", "-o", "user=").stdout.split()
    assert users == ["turnserver"]
    conf = relay.exec("stat", "-L", "-c", "%U %G %a", "/etc/turnserver.conf").stdout.split()
    assert conf == ["root", "turnserver", "640"]


@pytest.fixture(scope="module")
def configured_relay(relay):
    """TURN off, an iroh relay, an admin and a privacy contact and the operator's details."""
    r = Relay({**relay.env, "TURN": "off", "IROH_RELAY_URL": "https://iroh.example.org/",
               "ADMIN_EMAIL": "admin@example.org", "PRIVACY_MAIL": "privacy@example.org",
               "PRIVACY_POSTAL": OPERATOR, "PRIVACY_PDO": PDO, "PRIVACY_SUPERVISOR": SUPERVISOR,
               "MAX_RECIPIENTS": "42"}).start()
    try:
        r.wait_healthy()
        yield r
    finally:
        r.remove()


OPERATOR = r"Relay Operators <e.V.>\nExample Street 1\n12345 Exampletown"
PDO = r"Dr. Data Protection\nPrivacy Lane 2"
SUPERVISOR = "The Data Protection Commissioner of Exampleland"


def test_operator_details_on_the_pages(configured_relay):
    """PRIVACY_* (the reference relay's four privacy settings) on the pages as served;
    PRIVACY_MAIL, not ADMIN_EMAIL, is the contact."""
    def page(path):
        conn = http.client.HTTPSConnection("127.0.0.1", configured_relay.port(443),
                                           context=insecure_tls(), timeout=10)
        conn.request("GET", path, headers={"Host": configured_relay.domain})
        return conn.getresponse().read().decode()

    home, privacy = page("/"), page("/privacy.html")
    for text in (home, privacy):
        assert "Relay Operators &lt;e.V.&gt;<br>" in text and "12345 Exampletown<br>" in text
        assert 'href="mailto:privacy@example.org"' in text and "admin@example.org" not in text
    assert "Dr. Data Protection<br>" in privacy and "Privacy Lane 2<br>" in privacy
    assert SUPERVISOR in privacy


def test_settings_reach_the_metadata(configured_relay):
    im = imap_login(configured_relay, configured_relay.new_account())
    values = get_metadata(im, '""', *SERVER_ENTRIES)
    im.logout()
    assert values == {
        "/shared/vendor/deltachat/turn": None,
        "/shared/vendor/deltachat/maxsmtprecipients": "42",
        "/shared/vendor/deltachat/irohrelay": "https://iroh.example.org/",
        "/shared/admin": "mailto:privacy@example.org",
    }
    assert configured_relay.exec("pgrep", "-x", "turnserver", check=False).returncode == 1


@pytest.fixture(scope="module")
def localhost_relay(relay):
    """MAIL_DOMAIN=localhost: a name the Delta Chat core on this machine can resolve, so it
    turns the turn entry into ICE servers."""
    r = Relay({**relay.env, "MAIL_DOMAIN": "localhost", "ADMIN_EMAIL": "privacy@example.org"})
    r.start()
    try:
        r.wait_healthy()
        yield r
    finally:
        r.remove()


def test_admin_email_is_the_contact_on_the_privacy_page(localhost_relay):
    """ADMIN_EMAIL alone (no PRIVACY_MAIL) is the contact the privacy page shows."""
    conn = http.client.HTTPSConnection("127.0.0.1", localhost_relay.port(443),
                                       context=insecure_tls(), timeout=10)
    conn.request("GET", "/privacy.html", headers={"Host": "localhost"})
    assert 'href="mailto:privacy@example.org"' in conn.getresponse().read().decode()


def test_delta_chat_reads_the_metadata_and_its_turn_credentials_work(localhost_relay, dc):
    account = dc.add_account()
    account.add_transport_from_qr(localhost_relay.dclogin_for_here(localhost_relay.new_account()))
    account.bring_online()
    try:
        ice = json.loads(dc.rpc.ice_servers(account.id))
        info = dc.rpc.get_info(account.id)
    finally:
        account.stop_io()
    assert [server["urls"] for server in ice] == [["turn:127.0.0.1:3478"]]
    assert "mailto:privacy@example.org" in info["imap_server_admin"]
    username, credential = ice[0]["username"], ice[0]["credential"]
    wait_for(lambda: turn_client(localhost_relay, "udp", username, credential)["allocate"]
             == "success", 30, 0.5, "TURN allocation with the credentials Delta Chat got")
