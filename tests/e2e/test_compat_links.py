"""Every link the relay prints is a URL a real Delta Chat client accepts, for every
MAIL_DOMAIN form: name, ``_`` name, IPv4 and IPv6 literal (issue 17 §4).

The links are read where a user meets them: the home page's QR code (decoded
with zbarimg), the ``GET /new`` redirect, ``/cgi-bin/newemail.py`` (GET and POST),
the autoconfig XML, ``relayctl dns`` and the /new answer's ``dclogin_url``. The
judge is deltachat-rpc-server: ``check_qr`` must parse each, and on the
address-literal relays a profile is set up from ``dclogin_url`` and logs in.
"""

import base64
import http.client
import ipaddress
import json
import re
import urllib.parse
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import LITERALS
from relay import settings
from relay.accounts import links
from relaytest import insecure_tls

URL_HOST = {"ipv4": "192.0.2.1", "ipv6": "[2001:db8::1]"}
SERVER = {"ipv4": "192.0.2.1", "ipv6": "2001:db8::1"}


@pytest.fixture(scope="module")
def judge(dc):
    """An unconfigured Delta Chat profile: check_qr needs no server."""
    return dc.add_account()


def https(relay, method, path, host):
    conn = http.client.HTTPSConnection("127.0.0.1", relay.port(443), context=insecure_tls(),
                                       timeout=10)
    conn.request(method, path, headers={"Host": host})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def qr_of_home_page(relay, host, tmp_path) -> tuple[str, bytes]:
    status, _, body = https(relay, "GET", "/", host)
    assert status == 200
    png = tmp_path / "qr.png"
    png.write_bytes(base64.b64decode(re.search(rb'base64,([A-Za-z0-9+/=]+)"', body).group(1)))
    text = subprocess.run(["zbarimg", "--quiet", "--raw", str(png)], capture_output=True,
                          text=True, check=True).stdout.strip()
    return text, body


def assert_account_link(judge, link: str, host: str) -> None:
    """Delta Chat reads ``link`` as an account-creation link for ``host``."""
    qr = judge.check_qr(link)
    assert qr["kind"] == "account", (link, qr)
    assert qr["domain"] == host, (link, qr)


def printed_links(relay, host) -> dict[str, str]:
    """Every account link the relay prints for a browser or a phone."""
    found = {}
    status, headers, _ = https(relay, "GET", "/new", host)
    assert status == 302
    found["GET /new"] = headers["Location"]
    status, headers, _ = https(relay, "GET", "/cgi-bin/newemail.py", host)
    assert status == 302
    found["GET /cgi-bin/newemail.py"] = headers["Location"]
    return found


@pytest.mark.parametrize("domain", ["chat.example.org", "_chat.example.test", "[192.0.2.1]",
                                    "[IPv6:2001:db8::1]"])
def test_links_of_every_domain_form_parse_in_delta_chat(judge, domain):
    s = settings.load({"MAIL_DOMAIN": domain, "TLS_MODE": "self-signed"})
    host = links.url_host(s.mail_domain)
    for link in (links.qr_text(s), links.dcaccount_url(s)):
        assert_account_link(judge, link, host.lower())
    login = links.dclogin_url(s, f"abcdefghi@{s.mail_domain}", "p@ss w0rd&=?")
    qr = judge.check_qr(login)
    assert qr["kind"] == "login" and qr["address"] == f"abcdefghi@{s.mail_domain}", qr


def test_session_relay_links(relay, judge, tmp_path):
    host = relay.domain
    text, body = qr_of_home_page(relay, host, tmp_path)
    assert_account_link(judge, text, host)
    for where, link in printed_links(relay, host).items():
        assert link == f"dcaccount:https://{host}/new", where
        assert_account_link(judge, link, host)
    status, _, answer = https(relay, "POST", "/cgi-bin/newemail.py", host)
    answer = json.loads(answer)
    assert status == 200 and answer["email"].endswith("@" + host)
    assert answer["dclogin_url"] == answer["dclogin"]
    assert judge.check_qr(answer["dclogin_url"])["kind"] == "login"


@pytest.mark.parametrize("kind", sorted(LITERALS))
def test_address_literal_relay_links(literal_relays, dc, judge, kind, tmp_path):
    relay, host, server = literal_relays[kind], URL_HOST[kind], SERVER[kind]
    text, body = qr_of_home_page(relay, host, tmp_path)
    assert text == f"DCACCOUNT:https://{host}/new"
    assert_account_link(judge, text, host)
    for where, link in printed_links(relay, host).items():
        assert link == f"dcaccount:https://{host}/new", where
        assert_account_link(judge, link, host)
    status, _, xml = https(relay, "GET", "/.well-known/autoconfig/mail/config-v1.1.xml", host)
    names = {e.text for e in ET.fromstring(xml).iter("hostname")}
    assert names == {server}, names
    dns = relay.exec("relayctl", "dns", check=False).stdout
    assert "IP literal" in dns, dns  # nothing to publish, and no link that is not a URL
    for url in re.findall(r"\b(?:https?|dcaccount|mailto):\S+", dns):
        host = urllib.parse.urlsplit(url.partition("dcaccount:")[2] or url).hostname or ""
        assert ":" not in host or ipaddress.ip_address(host).version == 6, url
    # the link a phone gets for this relay: a profile set up from it logs in
    answer = json.loads(https(relay, "POST", "/new", host)[2])
    assert answer["email"].endswith("@" + relay.domain.lower())
    qr = judge.check_qr(answer["dclogin_url"])
    assert qr["kind"] == "login" and qr["address"] == answer["email"], qr
    account = dc.add_account()
    account.add_transport_from_qr(relay.dclogin_for_here(answer))
    assert account.get_config("configured_addr") == answer["email"]
