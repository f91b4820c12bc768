"""Who may join (REGISTRATION, relayctl registration and invite) and single accounts
(relayctl account disable, enable, delete, list) against the real image.

All on the session relay: the registration mode is switched at run time with
``relayctl registration`` (the same decision code reads it as reads REGISTRATION)
and set back to the default afterwards.
"""

from __future__ import annotations

import hashlib
import http.client
import imaplib
import json
import re
import secrets
import smtplib
import threading
from pathlib import Path

import pytest
from relaytest import (
    DOCKER,
    IMAGE,
    docker,
    imap_accepts,
    imap_login,
    insecure_tls,
    securejoin_request,
    set_device_token,
    smtp_accepts,
    submit,
    wait_for,
)

from relay.notify.push import pending_key

DOMAIN = "_chat.example.test"


def https(relay, method, path):
    conn = http.client.HTTPSConnection("127.0.0.1", relay.port(443), context=insecure_tls(),
                                       timeout=20)
    conn.request(method, path, headers={"Host": DOMAIN})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def post_new(relay, query=""):
    status, _, body = https(relay, "POST", "/new" + (f"?{query}" if query else ""))
    return status, json.loads(body)


def relayctl(relay, *args):
    return json.loads(relay.exec("relayctl", *args, "--json").stdout)






def in_parallel(*calls):
    """Run the calls at the same moment (a barrier), return their results in order."""
    results: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # a failure is a result too
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def invite_tokens(relay, count=1, valid="1h"):
    made = relayctl(relay, "invite", "--count", str(count), "--valid", valid)["invites"]
    return [re.search(r"invite=([a-z0-9]+)$", i["dcaccount"]).group(1) for i in made]


def account_names(relay):
    return set(relay.exec("ls", "/data/accounts").stdout.split())


@pytest.fixture
def mode(relay):
    """Set the registration mode of the session relay; back to REGISTRATION after the test."""
    def set_mode(value):
        return relayctl(relay, "registration", value)
    yield set_mode
    relay.exec("sh", "-c", "[ ! -e /data/state/registration ] || relayctl registration default")


# --- the three modes, both ways to an account ---------------------------------------------

def test_closed_refuses_new_accounts_by_every_way(relay, mode):
    existing = relay.new_account()
    assert imap_accepts(relay, existing["email"], existing["password"])
    state = mode("closed")
    assert state["registration"] == "closed" and "relayctl" in state["source"]
    status, body = post_new(relay)
    assert status == 403 and body["reason"] == "This relay does not accept new accounts."
    assert https(relay, "GET", "/new")[0] == 403
    assert not imap_accepts(relay, f"closedacc@{DOMAIN}", "longenoughpassword")
    assert f"closedacc@{DOMAIN}" not in account_names(relay)
    assert imap_accepts(relay, existing["email"], existing["password"])  # existing ones work
    page = https(relay, "GET", "/")[2].decode()
    assert "does not accept new accounts" in page and "data:image/png" not in page
    assert relayctl(relay, "registration", "default")["registration"] == "open"
    assert post_new(relay)[0] == 200
    assert "data:image/png" in https(relay, "GET", "/")[2].decode()


# --- disable, enable, delete, list -----------------------------------------------------------------

def smtp_session(relay, account):
    s = smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(), timeout=20)
    s.login(account["email"], account["password"])
    return s


def rcpt_from_outside(relay, recipient):
    """MAIL and RCPT on port 25 as another server would: the RCPT reply."""
    with smtplib.SMTP("127.0.0.1", relay.port(25), timeout=20) as s:
        s.ehlo("mx.example.org")
        s.starttls(context=insecure_tls())
        s.ehlo("mx.example.org")
        s.mail("someone@example.org")
        return s.rcpt(recipient)


def session_ended(im):
    try:
        im.noop()
        return False
    except (imaplib.IMAP4.abort, OSError):
        return True


def test_disable_and_enable(relay):
    a, b, c = relay.new_account(), relay.new_account(), relay.new_account()
    for acct in (a, b, c):
        assert imap_accepts(relay, acct["email"], acct["password"])
    im = imap_login(relay, a)
    im.select("INBOX")
    smtp = smtp_session(relay, a)

    out = relayctl(relay, "account", "disable", a["email"].upper())
    assert out == {"address": a["email"], "disabled": True, "was_disabled": False,
                   "account_exists": True}
    wait_for(lambda: session_ended(im), 10, 0.2, "the IMAP session to end")
    smtp.mail(a["email"])                         # a session authenticated before
    code, text = smtp.rcpt(b["email"])
    assert code == 550 and b"5.7.1" in text
    smtp.close()
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        submit(relay, b, [a["email"]], securejoin_request(b["email"], a["email"]))
    code, text = refused.value.recipients[a["email"]]
    assert code == 550 and b"5.2.1" in text and b"disabled" in text
    code, text = rcpt_from_outside(relay, a["email"])
    assert code == 550 and b"5.2.1" in text
    conn = http.client.HTTPSConnection("127.0.0.1", relay.port(443), context=insecure_tls(),
                                       timeout=20)            # another relay, over HTTPS
    conn.request("POST", "/mxdeliv", body=securejoin_request("x@example.org", a["email"]),
                 headers={"Host": DOMAIN, "X-Mail-From": "x@example.org", "X-Mail-To": a["email"]})
    answer = conn.getresponse()
    assert answer.status != 200 and b"5.2.1" in answer.read()

    # c is disabled and its account goes for inactivity: the address stays blocked
    relay.exec("sh", "-c", f"relayctl account disable {c['email']} && "
               f"touch -d '91 days ago' /data/accounts/{c['email']} && relayctl expire")
    assert c["email"] not in account_names(relay)
    assert in_parallel(  # each failed login waits 2 s (auth_failure_delay): at once
        lambda: imap_accepts(relay, a["email"], a["password"]),
        lambda: smtp_accepts(relay, a["email"], a["password"]),
        lambda: imap_accepts(relay, c["email"], "anotherpassword1"),
    ) == [False, False, False]
    assert c["email"] not in account_names(relay)
    listing = relayctl(relay, "account", "list", "--disabled")
    assert {a["email"], c["email"]} <= set(listing["disabled_addresses"])
    # a marker only: empty, no time
    assert relay.exec("stat", "-c", "%s %Y", f"/data/disabled/{a['email']}").stdout.split() == \
        ["0", "0"]

    assert relayctl(relay, "account", "enable", a["email"])["was_disabled"] is True
    assert imap_accepts(relay, a["email"], a["password"])
    submit(relay, b, [a["email"]], securejoin_request(b["email"], a["email"]))
    assert relayctl(relay, "account", "delete", c["email"])["deleted"]["was_disabled"]


def test_list_counts_only(relay):
    out = relay.exec("sh", "-c", "relayctl account list; relayctl account list --count; "
                                 "ls /data/accounts | wc -l").stdout.split("\n")
    assert out[0] == out[1] == out[2].strip() and out[0].isdigit()


def test_delete_leaves_nothing_on_data(relay):
    a, b = relay.new_account(), relay.new_account()
    for acct in (a, b):
        assert imap_accepts(relay, acct["email"], acct["password"])
    token = f"openpgp:delete-{secrets.token_hex(6)}"
    im = imap_login(relay, a)
    assert set_device_token(im, token)[0] == "OK"
    im.select("INBOX")
    submit(relay, b, [a["email"]], securejoin_request(b["email"], a["email"]))
    wait_for(lambda: relay.mailbox_files(a["email"]), 30, what="delivery")
    # the gateway is unreachable in tests: the notification stays pending
    key = pending_key(a["email"], token)
    wait_for(lambda: relay.exec("test", "-e", f"/data/push/queue/{key}", check=False)
             .returncode == 0, 10, what="a pending notification")

    out = relayctl(relay, "account", "delete", a["email"])
    assert out["deleted"]["account"] and out["deleted"]["mailbox"]
    assert out["deleted"]["push_tokens"] and out["deleted"]["push_pending"] == 1
    wait_for(lambda: session_ended(im), 10, 0.2, "the IMAP session to end")

    needles = [a["email"], key] + [getattr(hashlib, h)(a["email"].encode()).hexdigest()
                                   for h in ("md5", "sha1", "sha256")]
    names = relay.exec("find", "/data", "-printf", "%P\n").stdout
    contents = relay.exec("grep", "-rlaF", *sum((["-e", n] for n in needles), []), "/data",
                          check=False)
    assert not any(n in names for n in needles), names
    assert contents.returncode == 1, contents.stdout
    assert relay.exec("relayctl", "account", "delete", a["email"], check=False).returncode == 1


# --- invite mode (last in this module: the mode stays until the module ends) -----------------

@pytest.fixture(scope="module")
def invite_mode(relay):
    relayctl(relay, "registration", "invite")
    yield
    relay.exec("relayctl", "registration", "default")


def test_invite_mode(relay, invite_mode):
    [expiring] = invite_tokens(relay, valid="1s")
    page = https(relay, "GET", "/")[2].decode()
    assert "ask the operator for an invite" in page and "data:image/png" not in page
    status, body = post_new(relay)
    assert status == 403 and "invite" in body["reason"]
    assert https(relay, "GET", "/new")[0] == 403

    by_new, by_login = invite_tokens(relay, 2)
    status, headers, _ = https(relay, "GET", f"/new?invite={by_new}")  # a link in a browser
    assert status == 302 and headers["Location"] == f"dcaccount:https://{DOMAIN}/new?invite={by_new}"
    before = account_names(relay)
    status, account = post_new(relay, f"invite={by_new}")
    assert status == 200 and account["email"] in account_names(relay)  # made at once
    assert imap_accepts(relay, account["email"], account["password"])
    status, body = post_new(relay, f"invite={by_new}")                  # used twice
    assert status == 403 and "already used" in body["reason"]

    # create on first login: the invite in front of the password
    assert imap_accepts(relay, f"invitelog@{DOMAIN}", by_login + "longenoughpassword")
    assert smtp_accepts(relay, f"invitelog@{DOMAIN}", by_login + "longenoughpassword")
    assert in_parallel(  # each failed login waits 2 s (auth_failure_delay): at once
        lambda: imap_accepts(relay, f"invitelo2@{DOMAIN}", "longenoughpassword"),
        lambda: imap_accepts(relay, f"invitelo3@{DOMAIN}", by_login + "longenoughpassword"),
    ) == [False, False]
    assert account_names(relay) - before == {account["email"], f"invitelog@{DOMAIN}"}

    # an expired invite is refused and forgotten
    wait_for(lambda: relayctl(relay, "registration")["invites_valid"] == 0, 10, 0.2,
             "the invite to expire")
    status, body = post_new(relay, f"invite={expiring}")
    assert status == 403 and body["code"] in ("invite_expired", "invite_unknown")
    # nothing of any invite is left, and no log line names an invite
    assert relay.exec("ls", "/data/invites").stdout.split() == []
    logs = relay.logs()
    assert by_new not in logs and by_login not in logs and expiring not in logs


def test_one_invite_used_by_clients_at_once_makes_one_account(relay, invite_mode):
    before = len(account_names(relay))
    tokens = invite_tokens(relay, 3)
    for token in tokens:  # by /new, four clients per invite
        results = in_parallel(*[lambda t=token: post_new(relay, f"invite={t}")] * 4)
        assert sorted(status for status, _ in results) == [200, 403, 403, 403], results
    [token] = invite_tokens(relay)  # by first login, two clients with different addresses
    results = in_parallel(
        lambda: imap_accepts(relay, f"racerone1@{DOMAIN}", token + "longenoughpassword"),
        lambda: imap_accepts(relay, f"racertwo2@{DOMAIN}", token + "longenoughpassword"))
    assert sorted(results) == [False, True]
    assert len(account_names(relay)) == before + 4


# --- a real Delta Chat client with an invite link -----------------------------------------------

@pytest.fixture
def dc_in_container(relay, tmp_path):
    """deltachat-rpc-server (the PyPI binary, statically linked) in a container that
    resolves the relay's domain to the relay, so the core POSTs to
    https://_chat.example.test/new?invite=... itself, as on a phone."""
    import deltachat_rpc_server
    binary = Path(deltachat_rpc_server.__file__).parent / "deltachat-rpc-server"
    address = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", relay.name).stdout.strip()
    name = f"relaytest-dc-{secrets.token_hex(3)}"
    wrapper = tmp_path / "rpc-server"
    wrapper.write_text(
        f"#!/bin/sh\nexec {DOCKER} run --rm -i --name {name} --add-host {DOMAIN}:{address} "
        # no resolver: names other than the relay's (autoconfig.<domain>, ...) fail at once
        f"--dns 127.0.0.1 "
        f"-v {tmp_path}:/dc -v {binary}:/usr/local/bin/deltachat-rpc-server:ro "
        f"-e DC_ACCOUNTS_PATH=/dc/accounts --entrypoint /usr/local/bin/deltachat-rpc-server "
        f"{IMAGE}\n")
    wrapper.chmod(0o755)
    from deltachat_rpc_client import DeltaChat, Rpc
    try:
        with Rpc(rpc_server_path=str(wrapper)) as rpc:
            yield DeltaChat(rpc)
    finally:
        docker("rm", "-f", "-v", name, check=False)


def test_delta_chat_joins_with_an_invite_link(relay, invite_mode, dc_in_container):
    made = relayctl(relay, "invite")["invites"][0]
    assert made["dcaccount"].startswith(f"DCACCOUNT:https://{DOMAIN}/new?invite=")
    first = dc_in_container.add_account()
    first.add_transport_from_qr(made["dcaccount"])   # POST /new?invite=..., then log in
    address = first.get_config("configured_addr")
    assert address.endswith("@" + DOMAIN) and address in account_names(relay)
    assert [t["addr"] for t in first.list_transports()] == [address]
    first.bring_online()   # its IMAP connection is idle: logged in on the relay
    second = dc_in_container.add_account()
    with pytest.raises(Exception, match="already used"):  # the reason Delta Chat shows
        second.add_transport_from_qr(made["dcaccount"])
    assert second.list_transports() == []
    first.stop_io()
