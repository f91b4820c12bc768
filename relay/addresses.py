"""Mail domains as the relay meets them: DNS names and address literals.

An address literal is an IP address in brackets in the domain part of an address
(RFC 5321 §4.1.3): ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``. MAIL_DOMAIN may be one
(a relay without a DNS name), and mail may go to one.
"""

from __future__ import annotations

import ipaddress


def literal_address(domain: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of an address-literal domain (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``,
    also ``[2001:db8::1]``), None for a DNS name or a malformed literal."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return ipaddress.ip_address(inner)
    except ValueError:
        return None
