"""The DNS records an operator publishes for the relay, and a check of what is published.

``relayctl dns`` prints them in zone-file form: absolute names with a trailing
dot, an explicit TTL and class on every line, no ``$ORIGIN`` or ``$TTL``, so
the lines paste into any zone. ``relayctl dns --check`` looks each one up with
the system's resolver and says ``ok``, ``missing`` or ``wrong (found ...)``.

The logic is pure: :func:`records` builds a :class:`Zone` from the settings,
the DKIM TXT value, the MTA-STS policy text and the addresses;
:func:`zone_text` prints it; :func:`check` compares it with what a ``resolve``
function (:data:`Resolve`) answers. Only :func:`run` reads the container
(DKIM key, rendered policy, interfaces) and only :func:`dns_resolver` talks to
DNS.

Choices made here:

- A/AAAA come from ``PUBLIC_ADDRESSES``, else from the global addresses of the
  container's interfaces (host networking). Behind Docker's port publishing or
  NAT there are none; the zone then carries comment lines asking for them, and
  the check only asks that the domain has some address.
- ``mta-sts.`` and ``www.`` are CNAMEs to the domain (one place to change an
  address); the check also accepts A/AAAA records with the same addresses.
  ``www.`` is optional.
- SPF is ``v=spf1 a ~all``: the domain's own A/AAAA send its mail, which stays
  right when the addresses change. DMARC is ``p=reject`` with strict alignment,
  the relay signs every message it sends.
- The ``_mta-sts`` id is a hash of the policy text, so it changes exactly when
  the policy does (also when TLS_MODE switches between enforce and testing).
- TLSRPT only with ``ADMIN_EMAIL``, and not when that address is on this relay:
  reports are unencrypted mail, which the relay refuses (SPEC section 3).
- SRV per RFC 6186/8314: ``_submissions`` 465, ``_submission`` 587,
  ``_imaps`` 993, and ``_imap._tcp`` with target ``.`` (no port 143 here).
- CAA: with TLS_MODE=acme and Let's Encrypt (production or staging, both check
  ``letsencrypt.org``) the record ``0 issue "letsencrypt.org"``. For any other
  ACME CA the issuer domain is not knowable from the directory URL, so only a
  comment names the directory host. With TLS_MODE=self-signed no CA issues
  anything and with TLS_MODE=external the CA is the operator's choice: comment
  only. CAA is optional; but a published CAA set (at the domain or a parent,
  RFC 8659 climbs the tree) that does not allow the CA is wrong, as it stops
  issuance.
- ``_``-domains (test relays for Delta Chat) need no public DNS and cannot have
  a public certificate; the records are still printed, under a comment, for a
  private zone of a test network, and ``--check`` works on them. IP literals
  and ``localhost`` have nothing to publish: a comment, and exit status 0.
- Check rules: MX and SRV compare targets and ports (priority and weight of a
  single record do not matter); CNAME-like names may chain to the domain; DKIM
  compares the ``p=`` key; SPF needs exactly one ``v=spf1`` record not ending
  in ``+all``/``?all``/``all``; DMARC needs one ``v=DMARC1`` with
  ``p=reject`` or ``p=quarantine``; MTA-STS needs one ``v=STSv1`` with our id;
  A/AAAA need our addresses among the answers. A missing optional record
  (TLSRPT, CAA, www) is a warning; anything wrong, or a required record missing
  or not resolvable, makes ``--check`` exit 1.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Union
from urllib.parse import urlsplit

from relay.boot import dkimkey as dkim
from relay.settings import Settings

TTL = 3600
TXT_CHUNK = 255               # longest character-string in a TXT record (RFC 1035)
QUERY_TIMEOUT = 3.0           # seconds per lookup
CHECK_BUDGET = 30.0           # seconds for the whole check
LETSENCRYPT_HOSTS = ("acme-v02.api.letsencrypt.org", "acme-staging-v02.api.letsencrypt.org")
LETSENCRYPT_CAA = "letsencrypt.org"
DMARC = "v=DMARC1;p=reject;adkim=s;aspf=s"
SPF = "v=spf1 a ~all"


# --- what to publish ----------------------------------------------------------

@dataclass(frozen=True)
class Record:
    """One resource record. ``value`` is what the check compares: the TXT text
    (strings joined), the address, or the target name; ``kind`` says how."""
    name: str            # absolute, trailing dot
    rtype: str
    rdata: str           # presentation form, as in a zone file
    kind: str            # address | alias | mx | srv | spf | dkim | dmarc | mta-sts | tlsrpt | caa
    value: str
    required: bool = True
    ttl: int = TTL

    def line(self, width: int = 0) -> str:
        return f"{self.name:<{width}} {self.ttl} IN {self.rtype:<5} {self.rdata}"


@dataclass(frozen=True)
class Comment:
    text: str


Item = Union[Record, Comment]


@dataclass(frozen=True)
class Zone:
    domain: str                       # as configured, e.g. chat.example.org
    items: tuple[Item, ...] = ()
    publishable: bool = True          # False: IP literal or localhost, nothing to publish
    addresses: tuple[str, ...] = ()   # the relay's addresses the A/AAAA records name

    @property
    def records(self) -> list[Record]:
        return [item for item in self.items if isinstance(item, Record)]

    @property
    def comments(self) -> list[str]:
        return [item.text for item in self.items if isinstance(item, Comment)]


def absolute(name: str) -> str:
    return name.lower().rstrip(".") + "."


def txt_rdata(value: str) -> str:
    """A TXT value as quoted character-strings of at most 255 characters each."""
    if not value.isascii():
        raise ValueError("TXT values here are ASCII")
    chunks = [value[i:i + TXT_CHUNK] for i in range(0, len(value), TXT_CHUNK)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def mta_sts_id(policy: str) -> str:
    """The policy's id: 1 to 32 letters and digits (RFC 8461), here a short hash."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def no_public_dns(domain: str) -> str | None:
    """Why a domain has nothing to publish, or None when it has."""
    if domain.startswith("["):
        return (f"MAIL_DOMAIN {domain} is an IP literal: there is no name to publish DNS records "
                "for; clients and other relays connect to the address itself.")
    if domain == "localhost":
        return ("MAIL_DOMAIN is localhost: the relay serves this machine only and every resolver "
                "already knows the name, so there is nothing to publish.")
    return None


def caa_issuer(settings: Settings) -> tuple[str | None, str]:
    """The CAA issuer domain to publish, or None and a comment saying why not."""
    mode = settings.tls_mode
    if mode == "self-signed":
        return None, ("No CAA record: TLS_MODE=self-signed, no CA issues this relay's "
                      "certificate.")
    if mode == "external":
        return None, ("No CAA record: TLS_MODE=external. If you publish CAA, it must allow the "
                      "CA that issues your certificate.")
    host = (urlsplit(settings.acme_directory_url).hostname or "").lower()
    if host in LETSENCRYPT_HOSTS:
        return LETSENCRYPT_CAA, ""
    return None, (f"No CAA record: the ACME CA at {host} is not one this command knows. If you "
                  "publish CAA, it must allow that CA's issuer domain (see its documentation).")


def records(settings: Settings, dkim_value: str, mta_sts_policy: str,
            addresses: Iterable[str], detected: bool = False) -> Zone:
    """Every record of SPEC section 6 for the configured domain. ``detected``:
    the addresses were found on the interfaces, not given in PUBLIC_ADDRESSES."""
    domain = settings.mail_domain
    reason = no_public_dns(domain)
    if reason:
        return Zone(domain, (Comment(reason),), publishable=False)

    addrs = tuple(str(ipaddress.ip_address(a)) for a in addresses)
    origin = absolute(domain)
    items: list[Item] = [Comment(f"DNS records for the chatmail relay {domain}; "
                                 "relayctl dns --check checks them")]
    if domain.startswith("_"):
        items.append(Comment(
            f"{domain} starts with '_': Delta Chat and other relays treat it as a test relay "
            "with a self-signed certificate, and no public CA issues certificates for such a "
            "name. No public DNS is needed; the records below are for a private zone (a test "
            "network) that lets other relays find this one."))

    def add(name: str, rtype: str, rdata: str, kind: str, value: str,
            required: bool = True) -> None:
        items.append(Record(name, rtype, rdata, kind, value, required))

    if addrs and detected:
        items.append(Comment("Addresses of the relay, as found on the container's interfaces "
                             "(set PUBLIC_ADDRESSES if others are public)"))
    else:
        items.append(Comment("Addresses of the relay"))
    if addrs:
        for a in addrs:
            rtype = "A" if ipaddress.ip_address(a).version == 4 else "AAAA"
            add(origin, rtype, a, "address", a)
    else:
        items += [
            Comment("The relay's public addresses are not known: the container has no global "
                    "address (Docker port publishing or NAT). Add them here,"),
            Comment(f"  {origin} {TTL} IN A     <public IPv4 address>"),
            Comment(f"  {origin} {TTL} IN AAAA  <public IPv6 address>"),
            Comment("or set PUBLIC_ADDRESSES and run relayctl dns again."),
        ]
    items.append(Comment("MTA-STS policy host and web page (www is optional)"))
    add(f"mta-sts.{origin}", "CNAME", origin, "alias", origin)
    add(f"www.{origin}", "CNAME", origin, "alias", origin, required=False)

    items.append(Comment("Mail exchanger and sender policies"))
    add(origin, "MX", f"10 {origin}", "mx", origin)
    add(origin, "TXT", txt_rdata(SPF), "spf", SPF)
    dkim_name = f"{dkim.SELECTOR}._domainkey.{origin}"
    add(dkim_name, "TXT", txt_rdata(dkim_value), "dkim", dkim_value)
    add(f"_dmarc.{origin}", "TXT", txt_rdata(DMARC), "dmarc", DMARC)

    items.append(Comment("MTA-STS: the id changes whenever the policy does"))
    sts = f"v=STSv1; id={mta_sts_id(mta_sts_policy)}"
    add(f"_mta-sts.{origin}", "TXT", txt_rdata(sts), "mta-sts", sts)

    admin = settings.admin_email
    if not admin:
        items.append(Comment("No TLSRPT record (optional): set ADMIN_EMAIL to receive TLS "
                             "reports."))
    elif admin.lower().endswith("@" + domain):
        items.append(Comment(f"No TLSRPT record: ADMIN_EMAIL {admin} is on this relay, which "
                             "refuses unencrypted mail such as TLS reports; use an address "
                             "elsewhere."))
    else:
        items.append(Comment("TLS reports (optional)"))
        tlsrpt = f"v=TLSRPTv1;rua=mailto:{admin}"
        add(f"_smtp._tls.{origin}", "TXT", txt_rdata(tlsrpt), "tlsrpt", tlsrpt, required=False)

    items.append(Comment("Mail client service discovery (RFC 6186, 8314); no IMAP on port 143"))
    for service, port in (("_submissions", 465), ("_submission", 587), ("_imaps", 993)):
        add(f"{service}._tcp.{origin}", "SRV", f"0 1 {port} {origin}", "srv", f"{port} {origin}")
    add(f"_imap._tcp.{origin}", "SRV", "0 0 0 .", "srv", "0 .")

    issuer, why_not = caa_issuer(settings)
    if issuer:
        items.append(Comment("Only this CA may issue certificates for the domain (optional)"))
        add(origin, "CAA", f'0 issue "{issuer}"', "caa", issuer, required=False)
    else:
        items.append(Comment(why_not))
    return Zone(domain, tuple(items), addresses=addrs)


def zone_text(zone: Zone) -> str:
    width = max((len(r.name) for r in zone.records), default=0)
    lines = []
    for item in zone.items:
        if isinstance(item, Record):
            lines.append(item.line(width))
        elif item.text.startswith("  "):  # an example line: keep it whole
            lines.append(f";{item.text}")
        else:
            lines += [f"; {line}" for line in textwrap.wrap(item.text, 96)]
    return "\n".join(lines) + "\n"


# --- the relay's own addresses ------------------------------------------------

IPV6_SKIP_FLAGS = 0x01 | 0x08 | 0x20 | 0x40  # temporary, DAD failed, deprecated, tentative


def parse_if_inet6(text: str) -> list[str]:
    """IPv6 addresses from /proc/net/if_inet6 that suit DNS (not temporary or tentative)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or len(fields[0]) != 32:
            continue
        if int(fields[4], 16) & IPV6_SKIP_FLAGS:
            continue
        out.append(str(ipaddress.IPv6Address(int(fields[0], 16))))
    return out


def parse_fib_trie(text: str) -> list[str]:
    """The local IPv4 addresses in /proc/net/fib_trie (leaves marked ``/32 host LOCAL``)."""
    out: list[str] = []
    leaf = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|-- "):
            leaf = stripped[4:].strip()
        elif stripped.startswith("+--") or stripped.endswith(":"):
            leaf = None
        elif leaf and stripped.startswith("/32 host LOCAL") and leaf not in out:
            out.append(leaf)
    return out


def global_addresses(candidates: Iterable[str]) -> list[str]:
    """Publicly routable addresses only, IPv4 first, without duplicates."""
    found = []
    for text in candidates:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        if addr.is_global and not addr.is_multicast and addr not in found:
            found.append(addr)
    return [str(a) for a in sorted(found, key=lambda a: (a.version, a))]


def local_addresses(proc: Path = Path("/proc/net")) -> list[str]:
    texts = []
    for name, parse in (("fib_trie", parse_fib_trie), ("if_inet6", parse_if_inet6)):
        try:
            texts += parse((proc / name).read_text())
        except OSError:
            pass
    return global_addresses(texts)


# --- checking what is published -----------------------------------------------

@dataclass(frozen=True)
class Answer:
    """What a lookup found. TXT rdatas are the strings of a record joined;
    other types are in presentation form. ``canonical`` is the owner name at the
    end of a CNAME chain. ``error`` is set when the lookup failed (timeout,
    SERVFAIL): then nothing is known, neither found nor missing."""
    rdatas: tuple[str, ...] = ()
    canonical: str = ""
    error: str = ""


Resolve = Callable[[str, str], Answer]


@dataclass
class Result:
    name: str
    rtype: str
    status: str                  # ok | missing | wrong | error
    required: bool
    expected: list[str]
    found: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def failed(self) -> bool:
        if self.status == "wrong":
            return True
        return self.required and self.status in ("missing", "error")

    def line(self) -> str:
        label = self.status if self.required or self.status in ("ok", "wrong") else \
            f"{self.status} (optional)"
        text = f"{label:<18} {self.name} {self.rtype} {_short(' '.join(self.expected))}"
        if self.status == "wrong":
            text += f" (found {'; '.join(_short(f) for f in self.found) or 'nothing usable'})"
        if self.note:
            text += f" ({self.note})"
        return text


def _short(text: str, limit: int = 72) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _tags(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    return tags


def _names(rdata: str) -> list[str]:
    return rdata.lower().split()


def _ip_set(rdatas: Iterable[str]) -> set:
    out = set()
    for text in rdatas:
        try:
            out.add(ipaddress.ip_address(text))
        except ValueError:
            pass
    return out


def _caa_issuer(rdata: str) -> tuple[str, str] | None:
    """(tag, issuer domain) of a CAA rdata such as ``0 issue "ca.example; x=y"``."""
    parts = rdata.split(None, 2)
    if len(parts) != 3:
        return None
    value = parts[2].strip().strip('"')
    return parts[1].lower(), value.split(";")[0].strip().lower()


def check(zone: Zone, resolve: Resolve) -> list[Result]:
    """Look up every record of ``zone`` with ``resolve`` and judge the answers."""
    if not zone.publishable:
        return []
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for r in zone.records:
        groups.setdefault((r.name, r.rtype, r.kind), []).append(r)
    results = []
    if not zone.addresses:
        results.append(_check_any_address(absolute(zone.domain), resolve))
    for (name, rtype, kind), group in groups.items():
        results.append(_CHECKS[kind](zone, name, rtype, group, resolve))
    return results


def _result(name: str, rtype: str, group: list[Record], status: str, found: Iterable[str] = (),
            note: str = "") -> Result:
    return Result(name, rtype, status, any(r.required for r in group),
                  [r.rdata for r in group], list(found), note)


def _check_any_address(name: str, resolve: Resolve) -> Result:
    """Without known addresses: the domain must at least have some."""
    found, errors = [], []
    for rtype in ("A", "AAAA"):
        answer = resolve(name, rtype)
        found += answer.rdatas
        if answer.error:
            errors.append(answer.error)
    hint = "set PUBLIC_ADDRESSES to check that they are this relay's"
    if found:
        return Result(name, "A/AAAA", "ok", True, ["<public addresses>"], found,
                      f"found {', '.join(found)}; {hint}")
    if errors:
        return Result(name, "A/AAAA", "error", True, ["<public addresses>"], [], "; ".join(errors))
    return Result(name, "A/AAAA", "missing", True, ["<public addresses>"], [], hint)


def _check_addresses(zone: Zone, name: str, rtype: str, group: list[Record],
                     resolve: Resolve) -> Result:
    answer = resolve(name, rtype)
    if answer.error:
        return _result(name, rtype, group, "error", note=answer.error)
    found = _ip_set(answer.rdatas)
    expected = _ip_set(r.value for r in group)
    if not found:
        return _result(name, rtype, group, "missing")
    if expected <= found:
        extra = sorted(str(a) for a in found - expected)
        note = f"also {', '.join(extra)}, not one of this relay's addresses" if extra else ""
        return _result(name, rtype, group, "ok", answer.rdatas, note)
    return _result(name, rtype, group, "wrong", answer.rdatas)


def _check_alias(zone: Zone, name: str, rtype: str, group: list[Record],
                 resolve: Resolve) -> Result:
    """A CNAME (or a chain of them) to the domain, or A/AAAA with the same addresses."""
    target = group[0].value
    found: list[str] = []
    addresses: set = set()
    errors = []
    for qtype in ("A", "AAAA"):
        answer = resolve(name, qtype)
        if answer.error:
            errors.append(answer.error)
            continue
        canonical = absolute(answer.canonical) if answer.canonical else name
        if canonical == target:
            return _result(name, rtype, group, "ok")
        if canonical != name and f"CNAME to {canonical}" not in found:
            found.append(f"CNAME to {canonical}")
        found += [f"{qtype} {a}" for a in answer.rdatas]
        addresses |= _ip_set(answer.rdatas)
    if not found:
        return _result(name, rtype, group, "error" if errors else "missing",
                       note="; ".join(errors))
    want = _ip_set(zone.addresses)
    if not want:  # the relay's addresses are not known: the domain's will do
        for qtype in ("A", "AAAA"):
            want |= _ip_set(resolve(target, qtype).rdatas)
    if want and want <= addresses:
        return _result(name, rtype, group, "ok", found, "no CNAME, but the same addresses")
    return _result(name, rtype, group, "wrong", found)


def _check_mx(zone: Zone, name: str, rtype: str, group: list[Record], resolve: Resolve) -> Result:
    answer = resolve(name, rtype)
    if answer.error:
        return _result(name, rtype, group, "error", note=answer.error)
    if not answer.rdatas:
        return _result(name, rtype, group, "missing")
    targets = {absolute(_names(r)[-1]) for r in answer.rdatas if _names(r)}
    if targets == {r.value for r in group}:
        return _result(name, rtype, group, "ok", answer.rdatas)
    return _result(name, rtype, group, "wrong", answer.rdatas)


def _check_srv(zone: Zone, name: str, rtype: str, group: list[Record], resolve: Resolve) -> Result:
    answer = resolve(name, rtype)
    if answer.error:
        return _result(name, rtype, group, "error", note=answer.error)
    if not answer.rdatas:
        return _result(name, rtype, group, "missing")
    found = set()
    for rdata in answer.rdatas:
        parts = _names(rdata)
        if len(parts) == 4:
            found.add(f"{parts[2]} {absolute(parts[3]) if parts[3] != '.' else '.'}")
    if found == {r.value for r in group}:
        return _result(name, rtype, group, "ok", answer.rdatas)
    return _result(name, rtype, group, "wrong", answer.rdatas)


def _txt(name: str, rtype: str, group: list[Record], resolve: Resolve,
         prefix: str) -> tuple[Result | None, list[str], Answer]:
    """TXT lookup; the records that start with ``prefix`` (case-insensitive)."""
    answer = resolve(name, "TXT")
    if answer.error:
        return _result(name, rtype, group, "error", note=answer.error), [], answer
    matching = [t for t in answer.rdatas if t.strip().lower().startswith(prefix.lower())]
    if not matching:
        return _result(name, rtype, group, "missing", answer.rdatas), [], answer
    return None, matching, answer


def _check_spf(zone: Zone, name: str, rtype: str, group: list[Record], resolve: Resolve) -> Result:
    early, found, _ = _txt(name, rtype, group, resolve, "v=spf1")
    if early:
        return early
    spf = [t for t in found if t.strip().lower().split(" ", 1)[0] == "v=spf1"]
    if not spf:
        return _result(name, rtype, group, "missing")
    if len(spf) > 1:
        return _result(name, rtype, group, "wrong", spf, "more than one SPF record")
    terms = spf[0].lower().split()
    if terms[-1] in ("all", "+all", "?all") or len(terms) == 1:
        return _result(name, rtype, group, "wrong", spf, "allows every sender")
    return _result(name, rtype, group, "ok", spf)


def _check_dkim(zone: Zone, name: str, rtype: str, group: list[Record],
                resolve: Resolve) -> Result:
    answer = resolve(name, "TXT")
    if answer.error:
        return _result(name, rtype, group, "error", note=answer.error)
    if not answer.rdatas:
        return _result(name, rtype, group, "missing")
    want = "".join(_tags(group[0].value).get("p", "").split())
    for text in answer.rdatas:
        tags = _tags(text)
        if "".join(tags.get("p", "").split()) == want and tags.get("k", "rsa").lower() == "rsa":
            return _result(name, rtype, group, "ok", answer.rdatas)
    return _result(name, rtype, group, "wrong", answer.rdatas, "not this relay's DKIM key")


def _check_dmarc(zone: Zone, name: str, rtype: str, group: list[Record],
                 resolve: Resolve) -> Result:
    early, found, _ = _txt(name, rtype, group, resolve, "v=DMARC1")
    if early:
        return early
    if len(found) > 1:
        return _result(name, rtype, group, "wrong", found, "more than one DMARC record")
    if _tags(found[0]).get("p", "").lower() in ("reject", "quarantine"):
        return _result(name, rtype, group, "ok", found)
    return _result(name, rtype, group, "wrong", found, "p= must be reject or quarantine")


def _check_mta_sts(zone: Zone, name: str, rtype: str, group: list[Record],
                   resolve: Resolve) -> Result:
    early, found, _ = _txt(name, rtype, group, resolve, "v=STSv1")
    if early:
        return early
    if len(found) > 1:
        return _result(name, rtype, group, "wrong", found, "more than one v=STSv1 record")
    if _tags(found[0]).get("id") == _tags(group[0].value)["id"]:
        return _result(name, rtype, group, "ok", found)
    return _result(name, rtype, group, "wrong", found, "id differs from the served policy's")


def _check_tlsrpt(zone: Zone, name: str, rtype: str, group: list[Record],
                  resolve: Resolve) -> Result:
    early, found, _ = _txt(name, rtype, group, resolve, "v=TLSRPTv1")
    if early:
        return early
    want = _tags(group[0].value)
    if len(found) == 1 and _tags(found[0]) == want:
        return _result(name, rtype, group, "ok", found)
    return _result(name, rtype, group, "wrong", found)


def _check_caa(zone: Zone, name: str, rtype: str, group: list[Record], resolve: Resolve) -> Result:
    """CAA applies from the closest name up the tree that has any (RFC 8659)."""
    labels = name.rstrip(".").split(".")
    for i in range(len(labels) - 1):   # not the top-level domain
        here = ".".join(labels[i:]) + "."
        answer = resolve(here, "CAA")
        if answer.error:
            return _result(name, rtype, group, "error", note=answer.error)
        if answer.rdatas:
            issuers = {p[1] for p in map(_caa_issuer, answer.rdatas) if p and p[0] == "issue"}
            at = "" if here == name else f"published at {here}"
            if not issuers or group[0].value in issuers:
                return _result(name, rtype, group, "ok", answer.rdatas, at)
            return _result(name, rtype, group, "wrong", answer.rdatas,
                           "the CA may not issue" + (f"; {at}" if at else ""))
    return _result(name, rtype, group, "missing", note="any CA may issue")


_CHECKS = {
    "address": _check_addresses, "alias": _check_alias, "mx": _check_mx, "srv": _check_srv,
    "spf": _check_spf, "dkim": _check_dkim, "dmarc": _check_dmarc, "mta-sts": _check_mta_sts,
    "tlsrpt": _check_tlsrpt, "caa": _check_caa,
}


def summary(results: list[Result]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        key = r.status if r.required or r.status in ("ok", "wrong") else f"optional {r.status}"
        counts[key] = counts.get(key, 0) + 1
    order = ["ok", "missing", "wrong", "error", "optional missing", "optional error"]
    text = ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))
    if any(r.failed for r in results):
        return f"{text}: publish or fix the records marked missing, wrong or error"
    return f"{text}: all required records are published correctly"


# --- the real resolver --------------------------------------------------------

def dns_resolver(timeout: float = QUERY_TIMEOUT, budget: float = CHECK_BUDGET,
                 nameserver: tuple[str, int] | None = None) -> Resolve:
    """Lookups with dnspython and /etc/resolv.conf (or one ``nameserver``, an
    address and port), ``timeout`` seconds each and ``budget`` seconds in all;
    past the budget every lookup is an error."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=nameserver is None)
    if nameserver:
        resolver.nameservers = [nameserver[0]]
        resolver.port = nameserver[1]
    resolver.timeout = timeout
    resolver.lifetime = timeout
    deadline = time.monotonic() + budget

    def resolve(name: str, rtype: str) -> Answer:
        left = deadline - time.monotonic()
        if left <= 0:
            return Answer(error=f"not looked up: the check's {budget:.0f} s are used up")
        try:
            answer = resolver.resolve(name, rtype, raise_on_no_answer=False, search=False,
                                      lifetime=min(timeout, left))
        except dns.resolver.NXDOMAIN:
            return Answer()
        except dns.exception.Timeout:
            return Answer(error=f"no answer within {min(timeout, left):.0f} s")
        except dns.resolver.NoNameservers:
            return Answer(error="the name servers failed to answer (SERVFAIL or refused)")
        except dns.exception.DNSException as exc:
            return Answer(error=str(exc) or type(exc).__name__)
        canonical = answer.canonical_name.to_text()
        if answer.rrset is None:
            return Answer(canonical=canonical)
        if rtype == "TXT":
            rdatas = tuple(b"".join(r.strings).decode("ascii", "replace") for r in answer.rrset)
        else:
            rdatas = tuple(r.to_text() for r in answer.rrset)
        return Answer(rdatas, canonical)

    return resolve


# --- relayctl dns -------------------------------------------------------------

def served_policy() -> str:
    """The MTA-STS policy as nginx serves it (rendered at every start)."""
    from relay import paths
    served = paths.WWW / ".well-known" / "mta-sts.txt"
    if served.exists():
        return served.read_text()
    raise FileNotFoundError(f"{served} is missing: the relay renders it at start")


def as_json(zone: Zone, results: list[Result] | None) -> str:
    data: dict = {
        "domain": zone.domain,
        "publishable": zone.publishable,
        "records": [asdict(r) for r in zone.records],
        "comments": zone.comments,
    }
    if results is not None:
        data["check"] = [dict(asdict(r), failed=r.failed) for r in results]
        data["ok"] = not any(r.failed for r in results)
    return json.dumps(data, indent=2)


def run(settings: Settings, do_check: bool = False, json_output: bool = False,
        resolve: Resolve | None = None) -> int:
    domain = settings.mail_domain
    if no_public_dns(domain):
        zone = records(settings, "", "", ())
    else:
        try:
            dkim_value = dkim.txt_record_value()
            policy = served_policy()
        except (OSError, subprocess.CalledProcessError) as exc:  # not started yet
            print(f"relayctl dns: the DKIM key or the MTA-STS policy is not there yet ({exc}); "
                  "start the relay first", file=sys.stderr)
            return 1
        given = settings.public_addresses
        zone = records(settings, dkim_value, policy, given or local_addresses(),
                       detected=not given)
    results = None
    if do_check:
        results = check(zone, resolve or dns_resolver())
    if json_output:
        print(as_json(zone, results))
    elif results is None:
        sys.stdout.write(zone_text(zone))
    elif not zone.publishable:
        print(f"nothing to check: {zone.comments[0]}")
    else:
        for r in results:
            print(r.line())
        print(summary(results))
    return 1 if results and any(r.failed for r in results) else 0
