"""Checking the records of a :class:`relay.ops.dnszone.Zone` against what DNS answers.

:func:`check` is pure: it judges the answers of a ``resolve`` function
(:data:`Resolve`), so tests hand it a table; only :func:`dns_resolver` talks to
DNS (dnspython, the system's resolver or one name server).

Rules: MX and SRV compare targets and ports (priority and weight of a
single record do not matter); CNAME-like names may chain to the domain; DKIM
compares the ``p=`` key; SPF needs exactly one ``v=spf1`` record not ending
in ``+all``/``?all``/``all``; DMARC needs one ``v=DMARC1`` with
``p=reject`` or ``p=quarantine``; MTA-STS needs one ``v=STSv1`` with our id;
A/AAAA need our addresses among the answers. A missing optional record
(TLSRPT, CAA, www) is a warning; anything wrong, or a required record missing
or not resolvable, makes ``--check`` exit 1.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from relay.ops.dnszone import Record, Zone, absolute

QUERY_TIMEOUT = 3.0           # seconds per lookup
CHECK_BUDGET = 30.0           # seconds for the whole check


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
    """The verdict on one expected record: owner ``name``, ``rtype``, ``status`` (ok, missing,
    wrong, or error: the lookup failed, nothing is known), whether it is ``required``, the
    ``expected`` values, what was ``found``, and a ``note`` for the operator.
    """
    name: str
    rtype: str
    status: str                  # ok | missing | wrong | error
    required: bool
    expected: list[str]
    found: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def failed(self) -> bool:
        """True when this result should fail ``relayctl dns --check``: a wrong record, or a required
        one missing or not looked up (an optional record that is missing is fine).
        """
        if self.status == "wrong":
            return True
        return self.required and self.status in ("missing", "error")

    def line(self) -> str:
        """One line for the operator: ``<status> <name> <type> <expected>`` (long values cut to 72
        characters), what was found when wrong, and the note.
        """
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
    tags: dict[str, str] = {}
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
    found: list[str] = []
    errors: list[str] = []
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
    """The closing line of ``relayctl dns --check``: the results counted by status (e.g. ``"9 ok, 1
    missing, 2 optional missing"``) and whether anything must be published or fixed.
    """
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
