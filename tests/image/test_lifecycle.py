"""Start-up refusals, restarts and stops of the real image."""

import re
import imaplib

import pytest

from relaytest import IMAGE, Relay, docker, insecure_tls, securejoin_request, submit, wait_for


def run_with(env: dict[str, str]):
    args = ["run", "--rm"]
    for k, v in env.items():
        args += ["-e", f"{k}={v}"]
    return docker(*args, IMAGE, check=False, timeout=30)


@pytest.mark.parametrize("env,variable", [
    ({}, "MAIL_DOMAIN"),
    ({"MAIL_DOMAIN": "bad domain"}, "MAIL_DOMAIN"),
    ({"MAIL_DOMAIN": "-x.example.org"}, "MAIL_DOMAIN"),
    ({"MAIL_DOMAIN": "chat.example.org", "TLS_MODE": "letsencrypt"}, "TLS_MODE"),
    ({"MAIL_DOMAIN": "chat.example.org", "MAX_RECIPIENTS": "many"}, "MAX_RECIPIENTS"),
    ({"MAIL_DOMAIN": "chat.example.org", "MAILBOX_QUOTA": "lots"}, "MAILBOX_QUOTA"),
    ({"MAIL_DOMAIN": "chat.example.org", "CREATE_MAX_LOAD": "x"}, "CREATE_MAX_LOAD"),
])
def test_bad_setting_stops_start_with_one_line(image_exists, env, variable):
    result = run_with(env)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert re.search(r"expected|set it to", lines[0])
    assert result.stdout.strip() == ""  # nothing started


def test_external_mode_without_files_says_what_is_missing(image_exists):
    result = run_with({"MAIL_DOMAIN": "chat.example.org", "TLS_MODE": "external"})
    assert result.returncode != 0
    assert ("TLS_MODE=external needs TLS_CERT_FILE=/data/tls/external/fullchain.pem and "
            "TLS_KEY_FILE=/data/tls/external/privkey.pem") in result.stderr


@pytest.fixture
def fresh_relay(image_exists):
    r = Relay({"MAIL_DOMAIN": "_restart.example.test", "TLS_MODE": "self-signed"}).start()
    try:
        yield r.wait_healthy()
    finally:
        r.remove()


def imap_count(relay, address, password):
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=20)
    try:
        im.login(address, password)
        typ, data = im.select("INBOX")
        return int(data[0])
    finally:
        im.logout()


def test_restart_keeps_accounts_mail_keys_and_certificate(fresh_relay):
    r = fresh_relay
    acct = r.new_account()
    submit(r, acct, [acct["email"]], securejoin_request(acct["email"], acct["email"]))
    wait_for(lambda: imap_count(r, acct["email"], acct["password"]) == 1, 30, what="delivery")
    before = r.exec("sh", "-c", "sha256sum /data/dkim/chatmail.private /data/tls/fullchain.pem "
                                "/data/accounts/*").stdout

    r.restart().wait_healthy()

    assert r.exec("sh", "-c", "sha256sum /data/dkim/chatmail.private /data/tls/fullchain.pem "
                              "/data/accounts/*").stdout == before
    assert imap_count(r, acct["email"], acct["password"]) == 1
    with pytest.raises(imaplib.IMAP4.error):
        im = imaplib.IMAP4_SSL("127.0.0.1", r.port(993), ssl_context=insecure_tls(), timeout=20)
        im.login(acct["email"], "not-the-password")


def test_a_volume_with_accounts_of_another_domain_is_named_at_start(fresh_relay):
    """Same volume, MAIL_DOMAIN changed: the relay starts, and its log says why the old
    accounts cannot log in (the domain and a count, no address)."""
    acct = fresh_relay.new_account()
    assert imap_count(fresh_relay, acct["email"], acct["password"]) == 0  # creates the account
    assert "accounts of another domain" not in fresh_relay.logs()
    fresh_relay.remove(keep_volume=True)
    moved = Relay({"MAIL_DOMAIN": "_moved.example.test", "TLS_MODE": "self-signed"},
                  volume=fresh_relay.volume).start()
    try:
        moved.wait_healthy()
        logs = moved.logs()
        assert "/data holds accounts of another domain (1 of _restart.example.test)" in logs
        assert acct["email"] not in logs
    finally:
        moved.remove()


def test_docker_stop_ends_everything_cleanly(fresh_relay):
    """An idle relay stops well within 10 s (SIGKILL, exit 137, after that); compose.yaml
    allows 30 s for a busy one."""
    fresh_relay.stop(grace=10)
    state = fresh_relay.state()
    assert not state["Running"]
    assert state["ExitCode"] == 0, fresh_relay.logs()[-2000:]
    assert not state["OOMKilled"]
