"""Onboarding and login rules, with plain protocol clients against the real image."""

import base64
import http.client
import imaplib
import re
import smtplib
import subprocess
import xml.etree.ElementTree as ET

import pytest
from relaytest import imap_accepts, insecure_tls, securejoin_request, smtp_accepts, submit, wait_for

DOMAIN = "_chat.example.test"


def https(relay, method, path):
    conn = http.client.HTTPSConnection("127.0.0.1", relay.port(443), context=insecure_tls(), timeout=10)
    conn.request(method, path, headers={"Host": DOMAIN})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()






# --- /new and the web pages -----------------------------------------------------------

def test_post_new_hands_out_random_credentials(relay):
    a, b = relay.new_account(), relay.new_account()
    assert re.fullmatch(rf"[a-z0-9]{{9}}@{re.escape(DOMAIN)}", a["email"])
    assert len(a["password"]) >= 12
    assert a["email"] != b["email"] and a["password"] != b["password"]
    # self-signed relay: a dclogin URL that tells Delta Chat to accept the certificate
    assert a["dclogin"].startswith(f"dclogin:{a['email']}?p=")
    assert "ic=3" in a["dclogin"]


def test_get_new_redirects_browsers_to_dcaccount(relay):
    status, headers, _ = https(relay, "GET", "/new")
    assert status == 302
    assert headers["Location"] == f"dcaccount:https://{DOMAIN}/new"


def test_home_page_qr_code_decodes_to_dcaccount_url(relay, tmp_path):
    status, _, body = https(relay, "GET", "/")
    assert status == 200
    match = re.search(rb'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', body)
    assert match, "no embedded QR code image"
    png = tmp_path / "qr.png"
    png.write_bytes(base64.b64decode(match.group(1)))
    decoded = subprocess.run(["zbarimg", "--quiet", "--raw", str(png)],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert decoded == f"DCACCOUNT:https://{DOMAIN}/new"
    assert f'href="dcaccount:https://{DOMAIN}/new"'.encode() in body


def test_privacy_page(relay):
    status, _, body = https(relay, "GET", "/privacy.html")
    assert status == 200 and b"Privacy policy" in body and b"90 days" in body


def test_autoconfig_xml(relay):
    status, headers, body = https(relay, "GET", "/.well-known/autoconfig/mail/config-v1.1.xml")
    assert status == 200 and "xml" in headers["Content-Type"]
    root = ET.fromstring(body)
    imap = root.find("./emailProvider/incomingServer[@type='imap']")
    assert (imap.findtext("hostname"), imap.findtext("port"), imap.findtext("socketType")) == \
        (DOMAIN, "993", "SSL")
    smtp_ports = {s.findtext("port") for s in root.findall("./emailProvider/outgoingServer")}
    assert smtp_ports == {"465", "587"}


def test_port_80_redirects_to_https(relay):
    conn = http.client.HTTPConnection("127.0.0.1", relay.port(80), timeout=10)
    conn.request("GET", "/new", headers={"Host": DOMAIN})
    resp = conn.getresponse()
    assert resp.status == 301
    assert resp.getheader("Location") == f"https://{DOMAIN}/new"


# --- create on first login ----------------------------------------------------------------

def test_first_login_creates_and_later_logins_must_match(relay):
    acct = relay.new_account()
    assert imap_accepts(relay, acct["email"], acct["password"])
    assert not imap_accepts(relay, acct["email"], acct["password"] + "x")
    assert smtp_accepts(relay, acct["email"], acct["password"])
    assert not smtp_accepts(relay, acct["email"], "wrong-password-123")


@pytest.mark.parametrize("user,password,why", [
    ("abcdefghi@" + DOMAIN, "short", "password shorter than 9"),
    ("abcdefgh@" + DOMAIN, "longenoughpassword", "local part too short"),
    ("abcdefghij@" + DOMAIN, "longenoughpassword", "local part too long"),
    ("abc$efghi@" + DOMAIN, "longenoughpassword", "bad character"),
    ("abcdefghi@example.org", "longenoughpassword", "other domain"),
    ("abcdefghi", "longenoughpassword", "no domain"),
])
def test_refused_first_logins(relay, user, password, why):
    assert not imap_accepts(relay, user, password), why
    assert not smtp_accepts(relay, user, password), why
    out = relay.exec("ls", "/data/accounts").stdout
    assert user.lower() not in out.split()


def test_uppercase_login_reaches_the_same_account(relay):
    acct = relay.new_account()
    assert imap_accepts(relay, acct["email"], acct["password"])
    assert imap_accepts(relay, acct["email"].upper(), acct["password"])


def test_no_auth_without_tls_on_587(relay):
    with smtplib.SMTP("127.0.0.1", relay.port(587), timeout=10) as s:
        s.ehlo("client.example")
        assert not s.has_extn("auth")
        code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(b"\0a@b\0password1").decode())
        assert code in (503, 530, 538)


def test_no_password_in_clear_on_data(relay):
    acct = relay.new_account()
    assert imap_accepts(relay, acct["email"], acct["password"])
    submit(relay, acct, [acct["email"]], securejoin_request(acct["email"], acct["email"]))
    found = relay.exec("grep", "-rlF", acct["password"], "/data", check=False)
    assert found.returncode == 1, f"password found in {found.stdout}"
    stored = relay.exec("cat", f"/data/accounts/{acct['email']}").stdout
    assert stored.startswith("{SHA512-CRYPT}$6$")


def test_account_creation_switch(relay):
    """The old `relayctl accounts off|on` (now an alias of `relayctl registration closed|default`)."""
    existing = relay.new_account()
    assert imap_accepts(relay, existing["email"], existing["password"])
    relay.exec("relayctl", "accounts", "off")
    try:
        assert https(relay, "POST", "/new")[0] == 403
        fresh = f"zzzzzzzz9@{DOMAIN}"
        assert not imap_accepts(relay, fresh, "longenoughpassword")
        assert imap_accepts(relay, existing["email"], existing["password"])
    finally:
        relay.exec("relayctl", "accounts", "on")
    assert imap_accepts(relay, f"zzzzzzzz8@{DOMAIN}", "longenoughpassword")


# --- sending as someone else ------------------------------------------------------------

def test_foreign_envelope_sender_refused(relay):
    acct = relay.new_account()
    other = f"someoneel@{DOMAIN}"
    with smtplib.SMTP_SSL("127.0.0.1", relay.port(465), context=insecure_tls(), timeout=20) as s:
        s.login(acct["email"], acct["password"])
        with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
            s.sendmail(other, [acct["email"]], securejoin_request(other, acct["email"]))
    code, text = next(iter(err.value.recipients.values()))
    assert code == 553 and b"not owned by user" in text


def test_foreign_from_header_refused(relay):
    acct = relay.new_account()
    forged = securejoin_request(f"someoneel@{DOMAIN}", acct["email"])
    with pytest.raises(smtplib.SMTPDataError) as err:
        submit(relay, acct, [acct["email"]], forged)
    assert err.value.smtp_code == 553
    assert b"From header must be your own address" in err.value.smtp_error


# --- expiry ------------------------------------------------------------------------------

def test_inactive_accounts_and_old_mail_are_deleted(relay):
    stale, active = relay.new_account(), relay.new_account()
    for acct in (stale, active):
        assert imap_accepts(relay, acct["email"], acct["password"])
        submit(relay, acct, [acct["email"]], securejoin_request(acct["email"], acct["email"]))
    for acct in (stale, active):
        wait_for(lambda: relay.mailbox_files(acct["email"]), 30, what="delivery")
    relay.exec("touch", "-d", "91 days ago", f"/data/accounts/{stale['email']}")
    relay.exec("sh", "-c", f"touch -d '21 days ago' /data/mail/{active['email']}/Maildir/new/*")
    submit(relay, active, [active["email"]], securejoin_request(active["email"], active["email"], "new"))
    wait_for(lambda: len(relay.mailbox_files(active["email"])) == 2, 30, what="second delivery")

    relay.exec("relayctl", "expire")

    accounts = relay.exec("ls", "/data/accounts").stdout.split()
    assert stale["email"] not in accounts and active["email"] in accounts
    assert relay.exec("test", "-e", f"/data/mail/{stale['email']}", check=False).returncode == 1
    assert len(relay.mailbox_files(active["email"])) == 1  # the old one went, the new one stays


def test_quota_is_reported_to_clients(relay):
    acct = relay.new_account()
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=20)
    try:
        im.login(acct["email"], acct["password"])
        typ, data = im.getquotaroot("INBOX")
    finally:
        im.logout()
    assert typ == "OK"
    quota_line = [d for d in data if isinstance(d, list)][-1][0].decode()
    assert "STORAGE 0 307200" in quota_line  # MAILBOX_QUOTA=300M in tests/conftest.py
