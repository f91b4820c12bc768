"""Parsers of setting values: text in, a typed value out.

Each raises ``ValueError`` with a short reason when the text is not accepted;
``relay.settings.load`` turns it into a one-line ``SettingError`` that names the
variable and what it accepts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import urlsplit

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_UNDERSCORE_LABEL = re.compile(r"^_[a-z0-9]([a-z0-9-]{0,60}[a-z0-9])?$")


def parse_domain(text: str) -> str:
    """A DNS domain name with at least two labels, an IP literal ``[192.0.2.1]``,
    or ``localhost`` (a relay reachable from this machine only).

    The first label may start with ``_`` (``_chat.example.test``): Delta Chat
    treats such a domain as a test relay with a self-signed certificate.
    """
    value = text.strip().lower().rstrip(".")
    if value.startswith("[") and value.endswith("]"):
        inner = value[1:-1]
        if inner.startswith("ipv6:"):
            inner = inner[5:]
        try:
            address = ipaddress.ip_address(inner)
        except ValueError:
            raise ValueError("not a valid IP literal") from None
        if address.is_unspecified or address.is_multicast:
            raise ValueError("an IP literal must be the address clients reach the relay at, "
                             "not an unspecified or multicast address")
        return value
    if not re.match(r"^[a-z0-9._-]+$", value):
        raise ValueError("only letters, digits, '.', '-' and a leading '_' are allowed")
    if value == "localhost":
        return value  # a relay for this machine only: the one name every resolver knows
    labels = value.split(".")
    if len(value) > 253 or len(labels) < 2:
        raise ValueError("needs at least two labels")
    first, rest = labels[0], labels[1:]
    if not (_LABEL.match(first) or _UNDERSCORE_LABEL.match(first)):
        raise ValueError(f"bad label {first!r}")
    for label in rest:
        if not _LABEL.match(label):
            raise ValueError(f"bad label {label!r}")
    if rest[-1].isdigit():
        raise ValueError("top-level label is numeric")
    return value


def choice(*options: str) -> Callable[[str], str]:
    """A parser for one of ``options`` (compared in lower case, surrounding space ignored); returns
    the lower-case value, raises ValueError for any other.
    """
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError("unknown value")
        return value

    return parse


def integer(low: int, high: int) -> Callable[[str], int]:
    """A parser for a whole decimal number from ``low`` to ``high`` (inclusive); raises ValueError
    for signs, units, fractions and values out of range.
    """
    def parse(text: str) -> int:
        if not re.match(r"^[0-9]+$", text.strip()):
            raise ValueError("not a whole number")
        value = int(text.strip(), 10)
        if not low <= value <= high:
            raise ValueError("out of range")
        return value

    return parse


def number(low: float, high: float) -> Callable[[str], float]:
    """A parser for a decimal number (``5``, ``0.5``) from ``low`` to ``high``; raises ValueError
    otherwise.
    """
    def parse(text: str) -> float:
        if not re.match(r"^[0-9]+(\.[0-9]+)?$", text.strip()):
            raise ValueError("not a number")
        value = float(text.strip())
        if not low <= value <= high:
            raise ValueError("out of range")
        return value

    return parse


_SIZE = re.compile(r"^(\d+)\s*([kmgt]?)(i?b)?$")
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def size(low: int, high: int) -> Callable[[str], int]:
    """Bytes, with an optional binary unit: 500M, 1G, 30MiB, 4096."""

    def parse(text: str) -> int:
        match = _SIZE.match(text.strip().lower())
        if not match:
            raise ValueError("not a size")
        value = int(match.group(1)) * _UNITS[match.group(2)]
        if not low <= value <= high:
            raise ValueError("out of range")
        return value

    return parse


def boolean(text: str) -> bool:
    """``on/off``, ``true/false``, ``yes/no``, ``1/0`` (any case) as a bool; raises ValueError for
    anything else.
    """
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean")


def http_url(text: str) -> str:
    """The text (stripped) when it is an http or https URL with a host; raises ValueError otherwise.
    """
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("not an http(s) URL")
    if any(c.isspace() or not c.isprintable() for c in text.strip()):
        raise ValueError("a URL has no spaces or control characters (write a space as %20)")
    return text.strip()


def absolute_path_or_empty(text: str) -> str:
    """The text (stripped) when it is empty or an absolute path; raises ValueError otherwise."""
    value = text.strip()
    if value and not value.startswith("/"):
        raise ValueError("not an absolute path")
    return value


def absolute_path(text: str) -> str:
    """The text (stripped) when it is an absolute path; raises ValueError when empty or relative.
    """
    value = absolute_path_or_empty(text)
    if not value:
        raise ValueError("empty")
    return value


def ip_list(text: str) -> tuple[str, ...]:
    """Comma- or space-separated IPv4/IPv6 addresses (may be empty)."""
    out = []
    for item in re.split(r"[,\s]+", text.strip()):
        if item:
            try:
                out.append(str(ipaddress.ip_address(item)))
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address") from None
    return tuple(out)


def http_url_or_empty(text: str) -> str:
    """An empty text as "", any other through :func:`http_url` (ValueError)."""
    return http_url(text) if text.strip() else ""


def port_range(low: int, high: int, most: int) -> Callable[[str], tuple[int, int]]:
    """Two port numbers joined by '-': ``49152-49171``."""

    def parse(text: str) -> tuple[int, int]:
        match = re.match(r"^(\d+)-(\d+)$", text.strip())
        if not match:
            raise ValueError("not a range like 49152-49171")
        first, last = int(match.group(1)), int(match.group(2))
        if not low <= first <= last <= high:
            raise ValueError(f"ports must lie within {low}-{high}, the first not above the last")
        if last - first + 1 > most:
            raise ValueError(f"more than {most} ports")
        return first, last

    return parse


def email_or_empty(text: str) -> str:
    """The text (stripped) when it is empty or an address ``local@domain``: a dot-atom local part
    (RFC 5322 §3.2.3 ``atext`` and dots) and a domain :func:`parse_domain` takes; raises
    ValueError otherwise. (The address is a contact: shown on the web pages, in the TLSRPT record
    and to clients, so nothing beyond plain addresses.)
    """
    value = text.strip()
    if not value:
        return value
    local, _, domain = value.rpartition("@")
    if not re.match(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$", local):
        raise ValueError("not an e-mail address")
    try:
        parse_domain(domain)
    except ValueError as exc:
        raise ValueError(f"not an e-mail address: its domain {domain!r}: {exc}") from None
    return value


# Ports the relay itself listens on (public, and on loopback behind port 443).
RESERVED_PORTS = (25, 80, 443, 465, 587, 993, 3478, 8443, 8465, 8993)


def listen_address_or_empty(text: str) -> str:
    """``ADDRESS:PORT`` with an IPv4 address or a bracketed IPv6 one
    (``127.0.0.1:9100``, ``[::]:9100``), normalised; empty: off. The port may not
    be one the relay already uses."""
    value = text.strip()
    if not value:
        return ""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("needs ADDRESS:PORT with a port from 1 to 65535")
    if int(port) in RESERVED_PORTS:
        raise ValueError(f"port {port} is one of the relay's own")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if address.version == 6 and not bracketed:
        raise ValueError("an IPv6 address needs brackets, e.g. [::]:9100")
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def split_listen(value: str) -> tuple[str, int]:
    """(address, port) of a value of :func:`listen_address_or_empty`."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def free_text(most: int) -> Callable[[str], str]:
    """Text for a web page (a name, a postal address): printable characters only, at
    most ``most`` of them; a literal ``\\n`` (backslash, n) starts a new line, since an
    environment variable in an .env file is one line. Lines are stripped."""

    def parse(text: str) -> str:
        lines = [line.strip() for line in text.replace("\\n", "\n").split("\n")]
        value = "\n".join(line for line in lines if line)
        if len(value) > most:
            raise ValueError(f"longer than {most} characters")
        if any(not ch.isprintable() for ch in value.replace("\n", "")):
            raise ValueError("control characters are not allowed")
        return value

    return parse
