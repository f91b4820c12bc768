"""Every link the relay hands out, valid for every accepted MAIL_DOMAIN form.

MAIL_DOMAIN is a DNS name (``chat.example.org``, ``_chat.example.test``) or an
address literal as mail addresses carry it (RFC 5321 §4.1.3: ``[192.0.2.1]``,
``[IPv6:2001:db8::1]``). In a URL the host is written differently (RFC 3986
§3.2.2): an IPv4 address bare, an IPv6 address in brackets and without the
``IPv6:`` tag; brackets around an IPv4 address are not a URL at all (Delta Chat
says "invalid IPv6 address"). A server host name in autoconfig XML or a
``dclogin:`` parameter is the bare address.
"""

from __future__ import annotations

from urllib.parse import quote

from relay.addresses import literal_address
from relay.settings import Settings


def server_host(domain: str) -> str:
    """The host clients connect to: the domain itself, or the bare address of a literal."""
    address = literal_address(domain)
    return domain if address is None else str(address)


def url_host(domain: str) -> str:
    """The domain as the host part of a URL (RFC 3986 §3.2.2)."""
    address = literal_address(domain)
    if address is None:
        return domain
    return f"[{address}]" if address.version == 6 else str(address)


def dcaccount_url(settings: Settings) -> str:
    """The link a phone with Delta Chat opens to create an account here."""
    return f"dcaccount:https://{url_host(settings.mail_domain)}/new"


def qr_text(settings: Settings) -> str:
    """What the home page's QR code says (upper-case scheme: a denser QR code)."""
    return f"DCACCOUNT:https://{url_host(settings.mail_domain)}/new"


def dclogin_url(settings: Settings, email: str, password: str) -> str:
    """``dclogin:`` URL with ``ic=3`` (accept the self-signed certificate), as the
    reference relay builds it (chatmaild newemail.py): the address keeps ``@[]:`` (pchar, RFC 3986 §3.3),
    the password is fully percent-encoded; for an address-literal relay the IMAP
    and SMTP hosts (``ih``, ``sh``) name the address, which no DNS lookup could
    find from the literal."""
    url = f"dclogin:{quote(email, safe='@[]:')}?p={quote(password, safe='')}&v=1"
    if literal_address(settings.mail_domain) is not None:
        host = quote(server_host(settings.mail_domain), safe=":")
        url += f"&ih={host}&sh={host}"
    return url + "&ic=3"
