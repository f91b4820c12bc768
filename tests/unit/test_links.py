"""Every link the relay hands out is a valid URL for every accepted MAIL_DOMAIN form
(issue 17 §4). The real Delta Chat client's verdict on them is in
tests/e2e/test_compat_links.py; here the shapes, with RFC 3986 as the judge."""

import ipaddress
import urllib.parse

import pytest

from relay import settings
from relay.accounts import links, signup

FORMS = {  # MAIL_DOMAIN as an operator writes it -> URL host, server host
    "chat.example.org": ("chat.example.org", "chat.example.org"),
    "_chat.example.test": ("_chat.example.test", "_chat.example.test"),
    "[192.0.2.1]": ("192.0.2.1", "192.0.2.1"),
    "[IPv6:2001:DB8::1]": ("[2001:db8::1]", "2001:db8::1"),
    "[2001:db8:0::7]": ("[2001:db8::7]", "2001:db8::7"),
}


def conf(domain, mode="self-signed"):
    return settings.load({"MAIL_DOMAIN": domain, "TLS_MODE": mode})


def url_host_ok(host: str) -> bool:
    """RFC 3986 §3.2.2: reg-name, IPv4address, or [IPv6address]."""
    if host.startswith("["):
        return host.endswith("]") and ipaddress.ip_address(host[1:-1]).version == 6
    return all(c.isalnum() or c in "-._" for c in host)


@pytest.mark.parametrize("domain", sorted(FORMS))
def test_link_hosts(domain):
    s = conf(domain)
    want_url, want_server = FORMS[domain]
    assert links.url_host(s.mail_domain) == want_url
    assert links.server_host(s.mail_domain) == want_server
    for url in (links.dcaccount_url(s), links.qr_text(s)):
        scheme, _, rest = url.partition(":")
        assert scheme.lower() == "dcaccount"
        parts = urllib.parse.urlsplit(rest)
        assert parts.scheme == "https" and parts.path == "/new"
        assert parts.netloc == want_url and url_host_ok(parts.netloc)
        # what a URL parser makes of the host is the relay's address or name
        assert (parts.hostname or "").lower() == want_url.strip("[]").lower()


@pytest.mark.parametrize("domain", sorted(FORMS))
def test_new_answer_has_the_reference_key(domain):
    s = conf(domain)
    answer = signup.new_account(s)
    assert answer["dclogin_url"] == answer["dclogin"]
    url = answer["dclogin_url"]
    assert url.startswith(f"dclogin:{answer['email']}?p=")  # the address keeps @ and []
    query = urllib.parse.parse_qs(url.partition("?")[2])
    assert query["p"] == [answer["password"]] and query["v"] == ["1"] and query["ic"] == ["3"]
    if domain.startswith("["):
        assert query["ih"] == query["sh"] == [FORMS[domain][1]]
    else:
        assert "ih" not in query and "sh" not in query


def test_no_login_link_with_a_trusted_certificate():
    assert "dclogin_url" not in signup.new_account(conf("chat.example.org", "acme"))


def test_cgi_path_is_the_same_endpoint():
    assert set(signup.ENDPOINTS) == {"/new", "/cgi-bin/newemail.py"}
