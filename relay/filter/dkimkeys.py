"""DKIM key records: the DNS lookup at ``<s>._domainkey.<d>`` and the key record rules.

The rules are listed with their RFC sections in :mod:`relay.filter.dkimverify`'s
docstring (the "key record" and "DNS" rows); this module carries them out:

* every TXT record at the name is read, each record's strings joined without a
  separator (RFC 6376 §3.6.2.2), and records that are not DKIM key records (site
  verification strings, SPF, ...) are left out, so their order does not matter;
* a definite "nothing here" (NXDOMAIN, no TXT record, no DKIM record among them) is
  permanent; anything else that stops the lookup (SERVFAIL, REFUSED, timeout, no
  resolver reachable) is temporary (RFC 6376 §6.1.2: TEMPFAIL, key unavailable).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass

import dns.exception
import dns.resolver

# A TXT lookup: (absolute name as text, timeout in seconds) -> the TXT records at that
# name as bytes ([] when the name or its TXT records do not exist); raises
# TemporaryLookupError when the answer is not known.
TxtLookup = Callable[[str, float], list[bytes]]

MAX_RECORDS = 10  # TXT records looked at per name; more is a misconfigured zone

_TAG_NAME = re.compile(rb"[A-Za-z][A-Za-z0-9_]*\Z")
# VALCHAR (RFC 6376 §3.2), plus UTF-8 octets (internationalized mail, RFC 8616).
_TAG_VALUE = re.compile(rb"[\x21-\x3a\x3c-\x7e\x80-\xff]+(?:[ \t\r\n]+[\x21-\x3a\x3c-\x7e\x80-\xff]+)*\Z")
_FWS = b" \t\r\n"


class TemporaryLookupError(Exception):
    """The key could not be looked up now (SERVFAIL, timeout, ...): try again later."""


class TagListError(ValueError):
    """A tag-list that does not follow RFC 6376 §3.2."""


def parse_tag_list(value: bytes) -> dict[str, bytes]:
    """A DKIM tag-list (RFC 6376 §3.2) as {tag name: value}, values with the folding
    white space at their ends removed (inner white space kept). A trailing ``;`` is
    allowed; an empty tag-spec elsewhere, a bad tag name, a value with a ``;`` or a
    control character, or a tag named twice raises TagListError (§3.2: "the entire
    tag-list is invalid")."""
    specs = value.split(b";")
    if specs and not specs[-1].strip(_FWS):
        specs.pop()
    tags: dict[str, bytes] = {}
    for spec in specs:
        name, equals, tag_value = spec.partition(b"=")
        name = name.strip(_FWS)
        tag_value = tag_value.strip(_FWS)
        if not equals or not _TAG_NAME.match(name):
            raise TagListError(f"bad tag-spec {spec[:40]!r}")
        if tag_value and not _TAG_VALUE.match(tag_value):
            raise TagListError(f"bad value of {name.decode()}=")
        key = name.decode("ascii")
        if key in tags:
            raise TagListError(f"{key}= given twice")
        tags[key] = tag_value
    return tags


def colon_list(value: bytes) -> list[str]:
    """A colon-separated tag value (h=, s=, t=, q=) as lower-case items."""
    return [item.strip(_FWS).decode("ascii", "replace").lower() for item in value.split(b":")]


@dataclass(frozen=True)
class KeyRecord:
    """One DKIM key record (RFC 6376 §3.6.1), its tags already checked for syntax."""

    key_type: str          # k=: "rsa" (the default) or "ed25519" (RFC 8463)
    public_key: bytes      # p= with white space removed; empty = revoked (§3.6.1)
    hashes: list[str]      # h=: acceptable hash algorithms; [] = all
    services: list[str]    # s=: service types, default ["*"]
    flags: list[str]       # t=: "y" testing, "s" no subdomains in i=

    @property
    def revoked(self) -> bool:
        """An empty p= (RFC 6376 §3.6.1): the domain has withdrawn this key."""
        return not self.public_key

    def for_dkimpy(self) -> bytes:
        """The record reduced to what dkimpy needs to load the key (k= and p=); every
        other tag is judged by our own rules, so dkimpy's reading of them cannot differ."""
        return b"k=" + self.key_type.encode() + b"; p=" + self.public_key


def key_record(text: bytes) -> KeyRecord | None:
    """The DKIM key record in one TXT record, or None when the record is not one:
    not a tag-list, a ``v=`` that is not first or not ``DKIM1`` (§3.6.1: "Records
    beginning with a v= tag with any other value MUST be discarded"), or no ``p=``
    (REQUIRED). Site verification strings and SPF records are thus left out."""
    try:
        tags = parse_tag_list(text)
    except TagListError:
        return None
    if "v" in tags and (next(iter(tags)) != "v" or tags["v"] != b"DKIM1"):
        return None
    if "p" not in tags:
        return None
    public_key = re.sub(rb"[ \t\r\n]", b"", tags["p"])
    return KeyRecord(
        key_type=tags.get("k", b"rsa").strip(_FWS).decode("ascii", "replace").lower(),
        public_key=public_key,
        hashes=colon_list(tags["h"]) if "h" in tags else [],
        services=colon_list(tags.get("s", b"*")),
        flags=colon_list(tags.get("t", b"")),
    )


def unusable_reason(record: KeyRecord, algorithm: str) -> str | None:
    """Why ``record`` cannot verify a signature made with ``algorithm`` (the a= tag), or
    None when it can. The reasons are RFC 6376 §6.1.2's PERMFAIL names."""
    if record.revoked:
        return "key revoked (empty p=)"
    if record.key_type not in ("rsa", "ed25519"):
        return f"unknown key type k={record.key_type}"
    if record.key_type != algorithm.partition("-")[0]:
        return f"inappropriate key algorithm (k={record.key_type} for a={algorithm})"
    if record.hashes and algorithm.rpartition("-")[2] not in record.hashes:
        return "inappropriate hash algorithm (key h= does not allow sha256)"
    if "*" not in record.services and "email" not in record.services:
        return "key not for e-mail (s= service types)"
    try:
        key = base64.b64decode(record.public_key, validate=True)
    except ValueError:
        return "key syntax error (p= is not base64)"
    if record.key_type == "ed25519" and len(key) != 32:
        return "key syntax error (an ed25519 key has 32 octets)"
    return None


def txt_records(name: str, timeout: float,
                resolver: dns.resolver.Resolver | None = None) -> list[bytes]:
    """Every TXT record at ``name`` (absolute, e.g. ``s1._domainkey.example.org.``), each
    as its strings joined (RFC 6376 §3.6.2.2), at most MAX_RECORDS of them. [] when the
    name does not exist (NXDOMAIN) or has no TXT record (NODATA): the key is definitely
    absent. Raises TemporaryLookupError for SERVFAIL, REFUSED, a timeout after
    ``timeout`` seconds, or no usable resolver configuration (RFC 6376 §6.1.2)."""
    if resolver is None:
        resolver = _default_resolver()
    try:
        answer = resolver.resolve(name, "TXT", lifetime=timeout, raise_on_no_answer=False,
                                  search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.YXDOMAIN):
        return []
    except dns.exception.Timeout as exc:
        raise TemporaryLookupError(f"timeout after {timeout:g} s") from exc
    except dns.resolver.NoNameservers as exc:
        raise TemporaryLookupError("no name server answered (SERVFAIL or REFUSED)") from exc
    except dns.exception.DNSException as exc:
        raise TemporaryLookupError(f"{type(exc).__name__}: {exc}") from exc
    if answer.rrset is None:
        return []
    return [b"".join(record.strings) for record in list(answer.rrset)[:MAX_RECORDS]]


_resolver: dns.resolver.Resolver | None = None


def _default_resolver() -> dns.resolver.Resolver:
    """The system resolver (/etc/resolv.conf), read once per process."""
    global _resolver
    if _resolver is None:
        try:
            _resolver = dns.resolver.Resolver()
        except dns.exception.DNSException as exc:  # no /etc/resolv.conf, no nameserver line
            raise TemporaryLookupError(f"no resolver configured: {exc}") from exc
    return _resolver
