"""Incoming DKIM rule (SPEC §3): a valid signature whose d= is the From: domain.

Mail from other servers (port 25 and /mxdeliv alike) needs one DKIM signature
that verifies under RFC 6376 and RFC 8301 and whose ``d=`` is the domain of the
single ``From:`` address (strict alignment; signatures of other domains do not
count). Mail whose From: domain is an IP literal is exempt: such relays have no
DNS to publish a key in. dkimpy does the canonicalization and the cryptography;
every rule about tags, keys and DNS below is ours, so dkimpy's version and its
defaults do not decide what we accept. "ours" = enforced in this package,
"dkimpy" = by dkimpy, tested in tests/unit/test_dkimcheck.py either way.

Signature (DKIM-Signature header field)                            source        by
-----------------------------------------------------------------  ------------  ------
tag-list syntax; a tag named twice voids the header field           6376 §3.2     ours
v, a, b, bh, d, h, s required; v=1                                   6376 §6.1.1   ours
a=rsa-sha256 or ed25519-sha256 only; rsa-sha1 never counts           8301 §3.1,    ours
                                                                     8463 §3
b=, bh= base64; c= simple|relaxed[/simple|relaxed] (default simple)  6376 §3.5     ours
d=, s= domain-name syntax (A-labels), d= compared case-insensitively 6376 §3.5     ours
h= must list From, else the signature is ignored                     6376 §6.1.1   ours
i= domain is d= or a subdomain of it (default "@d")                  6376 §6.1.1   ours
l= only when it covers the whole canonicalized body (text after the  6376 §8.2,    ours
  signed part voids the signature; l= above the body length is       §3.5
  malformed)
q= colon list that includes dns/txt (others ignored)                 6376 §3.5     ours
t= not more than CLOCK_SKEW in the future; x= after t=, not expired  6376 §3.5     ours
body hash, header hash (h= fields bottom-up, an extra unsigned From  6376 §3.7,    dkimpy
  breaks it), RSA PKCS#1 v1.5 / Ed25519 check, canonicalization      §6.1.3
RSA keys under 1024 bits never count                                 8301 §3.2     dkimpy
                                                                                   (minkey)
Key record (TXT at <s>._domainkey.<d>)
-----------------------------------------------------------------  ------------  ------
all TXT records read; non-DKIM ones (site verification, SPF) left    6376          ours
  out; each record's strings joined without a separator              §3.6.2.2
v= absent, or first and DKIM1, else the record is discarded          6376 §3.6.1   ours
p= required; empty p= = revoked (PERMFAIL)                           6376 §6.1.2   ours
k= rsa (default) or ed25519, and it must match a=                    6376 §6.1.2,  ours
                                                                     8463 §4
h= (key) must allow sha256 when present                              6376 §6.1.2   ours
s= must include * or email                                           6376 §3.6.1   ours
t=y (testing): treated as unsigned, so the signature does not count  6376 §3.6.1   ours
t=s: the i= domain must equal d= exactly                             6376 §3.6.1   ours
DNS outcome
-----------------------------------------------------------------  ------------  ------
NXDOMAIN, no TXT, no DKIM record among the TXT records: PERMFAIL     6376 §6.1.2   ours
SERVFAIL, REFUSED, timeout, no resolver: TEMPFAIL -> 451 4.7.5 on    6376 §6.1.2   ours
  SMTP (relay-mxdeliv answers 503), logged at error level
several DKIM records at one name: each is tried (§3.6.2.2 leaves     6376          ours
  this undefined; all were published by the domain)                 §3.6.2.2

Verdict: the first aligned signature that passes accepts the message (the order of
signatures means nothing, RFC 6376 §6.1). Otherwise a temporary failure of any
aligned signature gives 451 (the sender retries), else 550 5.7.1 with the reason of
the first aligned signature; no DKIM-Signature at all gives "No DKIM signature found"
(the reference relay's text, which tools look for).

Where the reference relay (filtermail 0.7.4 on viadkim) differs: it answers every DNS
failure with a permanent 554 (no 4xx), seems to accept l= partial-body signatures (by
viadkim's defaults), and answers 554 rather than 550.
"""

from __future__ import annotations

import binascii
import logging
import re
import time
from dataclasses import dataclass, field
from email.message import Message

import dkim
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError

from relay.filter import dkimkeys, guard
from relay.filter.dkimkeys import KeyRecord, TemporaryLookupError, TxtLookup, colon_list
from relay.filter.policy import Reject, from_addresses, parse

log = logging.getLogger("relay-filter")

NO_SIGNATURE = Reject(550, "5.7.1 No DKIM signature found")
NO_VALID_SIGNATURE = Reject(550, "5.7.1 No valid DKIM signature found for the From: domain")
NO_FROM = Reject(550, "5.7.1 Message needs exactly one From: address")
LOOKUP_FAILED = Reject(451, "4.7.5 DKIM key lookup failed temporarily, please try again later")

ALGORITHMS = ("rsa-sha256", "ed25519-sha256")  # RFC 8301 §3.1, RFC 8463 §3
REQUIRED_TAGS = ("v", "a", "b", "bh", "d", "h", "s")  # RFC 6376 §6.1.1
MIN_RSA_BITS = 1024  # RFC 8301 §3.2
CLOCK_SKEW = 300  # seconds a t= may lie ahead and an x= may lie behind our clock
MAX_ALIGNED = 5  # aligned signatures whose keys we look up per message

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}\Z")
_CANON = re.compile(rb"(simple|relaxed)(/(simple|relaxed))?\Z")
_NUMBER = re.compile(rb"[0-9]{1,16}\Z")


def from_domain(msg: Message) -> str | None:
    """The domain of the single From: address, lower case, without a final dot (an IP literal keeps
    its brackets: ``[192.0.2.1]``); None when there is not exactly one parsable From: address.
    """
    addresses = from_addresses(msg)
    if not addresses or len(addresses) != 1 or "@" not in addresses[0]:
        return None
    return addresses[0].rpartition("@")[2].rstrip(".")


def a_label(domain: str) -> str | None:
    """``domain`` lower-cased in A-label (ASCII) form, None when it is no domain name."""
    domain = domain.lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return domain if len(domain) <= 253 and _DOMAIN.match(domain) else None


class Invalid(Exception):
    """This signature does not count (a PERMFAIL reason, RFC 6376 §6.1)."""


@dataclass
class Signature:
    """One DKIM-Signature header field whose tags passed the rules above."""

    header: tuple[bytes, bytes]
    tags: dict[str, bytes]
    domain: str
    selector: str
    algorithm: str
    identity_domain: str

    @property
    def key_name(self) -> str:
        """The absolute DNS name of its key record, ``<s>._domainkey.<d>.`` (RFC 6376 §3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}."


def _base64(tags: dict[str, bytes], name: str) -> bytes:
    value = re.sub(rb"[ \t\r\n]", b"", tags[name])
    if not _BASE64.match(value) or len(value) % 4:
        raise Invalid(f"signature syntax error ({name}= is not base64)")
    return value


def _times(tags: dict[str, bytes], now: float) -> None:
    """t= and x= (RFC 6376 §3.5)."""
    stamps = {}
    for name in ("t", "x"):
        if name in tags:
            if not _NUMBER.match(tags[name]):
                raise Invalid(f"signature syntax error ({name}= is not a number)")
            stamps[name] = int(tags[name])
    if "t" in stamps and stamps["t"] > now + CLOCK_SKEW:
        raise Invalid("signature time t= in the future")
    if "x" in stamps:
        if "t" in stamps and stamps["x"] <= stamps["t"]:
            raise Invalid("signature syntax error (x= not after t=)")
        if stamps["x"] < now - CLOCK_SKEW:
            raise Invalid("signature expired (x=)")


def signature(header: tuple[bytes, bytes], now: float) -> Signature:
    """The signature in one DKIM-Signature header field, checked against every tag rule
    of the table above that needs no key. Raises Invalid with the reason."""
    try:
        tags = dkimkeys.parse_tag_list(header[1])
    except dkimkeys.TagListError as exc:
        raise Invalid(f"signature syntax error ({exc})") from exc
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    if missing:
        raise Invalid(f"signature missing required tag {missing[0]}=")
    if tags["v"] != b"1":
        raise Invalid("incompatible version (v=)")
    algorithm = tags["a"].decode("ascii", "replace").lower()
    if algorithm == "rsa-sha1":
        raise Invalid("rsa-sha1 is not accepted (RFC 8301)")
    if algorithm not in ALGORITHMS:
        raise Invalid("unknown signature algorithm (a=)")
    _base64(tags, "b")
    _base64(tags, "bh")
    if not _CANON.match(tags.get("c", b"simple").lower()):
        raise Invalid("signature syntax error (c=)")
    domain = a_label(tags["d"].decode("utf-8", "replace"))
    selector = a_label(tags["s"].decode("utf-8", "replace"))
    if domain is None or selector is None:
        raise Invalid("signature syntax error (d= or s= is not a domain name)")
    signed = colon_list(tags["h"])
    if "" in signed:
        raise Invalid("signature syntax error (h=)")
    if "from" not in signed:
        raise Invalid("From field not signed (h= without From)")
    identity = tags.get("i", b"@" + tags["d"]).decode("utf-8", "replace")
    identity_domain = a_label(identity.rpartition("@")[2]) if "@" in identity else None
    if identity_domain is None or not (identity_domain == domain
                                       or identity_domain.endswith("." + domain)):
        raise Invalid("domain mismatch (i= is not d= or a subdomain of it)")
    if "l" in tags and not _NUMBER.match(tags["l"]):
        raise Invalid("signature syntax error (l=)")
    if "dns/txt" not in colon_list(tags.get("q", b"dns/txt")):
        raise Invalid("no known query method (q=)")
    _times(tags, now)
    return Signature(header, tags, domain, selector, algorithm, identity_domain)


class _DkimpyNotes:
    """A logger for dkimpy that keeps its complaints (key format errors) for our reason."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def isEnabledFor(self, level: int) -> bool:
        return False

    def debug(self, *args: object) -> None:
        pass

    info = warning = debug

    def error(self, message: object, *args: object) -> None:
        self.errors.append(str(message) % args if args else str(message))


def body_length_problem(verifier: dkim.DKIM, sig: Signature) -> str | None:
    """Why an l= signature does not cover the whole body (RFC 6376 §8.2), or None."""
    if "l" not in sig.tags:
        return None
    try:
        policy = CanonicalizationPolicy.from_c_value(sig.tags.get("c", b"simple").lower())
    except InvalidCanonicalizationPolicyError:
        return "signature syntax error (c=)"
    length = len(policy.canonicalize_body(verifier.body))
    signed = int(sig.tags["l"])
    if signed < length:
        return f"partial body signature (l= covers {signed} of {length} octets)"
    if signed > length:
        return "signature syntax error (l= beyond the end of the body)"
    return None


def crypto_check(verifier: dkim.DKIM, sig: Signature, record: KeyRecord) -> str | None:
    """dkimpy's verification of ``sig`` with ``record``; None when it passes, else why not."""
    problem = body_length_problem(verifier, sig)
    if problem:
        return problem
    tags = {k.encode(): v for k, v in sig.tags.items()}
    tags[b"a"] = sig.algorithm.encode()
    tags[b"c"] = sig.tags.get("c", b"simple").lower()
    signed = [h.encode() for h in colon_list(sig.tags["h"])]
    notes = _DkimpyNotes()
    verifier.logger = notes
    try:
        ok = verifier.verify_sig(tags, signed, sig.header,
                                 lambda name, timeout=5: record.for_dkimpy())
    except dkim.KeyFormatError as exc:
        if "too small" in str(exc):
            return f"RSA key shorter than {MIN_RSA_BITS} bits (RFC 8301)"
        return "key syntax error (p= does not parse)"
    except dkim.ValidationError as exc:
        return "body hash did not verify" if "body hash" in str(exc) else "signature did not verify"
    except (dkim.DKIMException, binascii.Error, ValueError) as exc:  # hostile input
        return f"signature did not verify ({type(exc).__name__})"
    except Exception as exc:
        guard.unexpected(exc, "DKIM verification")  # re-raises under test
        return "signature did not verify"
    if ok:
        return None
    # dkimpy logs (and answers False for) a key it cannot parse; its text quotes the key.
    return "key syntax error (p= does not parse)" if notes.errors else "signature did not verify"


def key_problem(sig: Signature, record: KeyRecord) -> str | None:
    """The key record rules that depend on the signature (RFC 6376 §3.6.1, §6.1.2)."""
    reason = dkimkeys.unusable_reason(record, sig.algorithm)
    if reason:
        return reason
    if "s" in record.flags and sig.identity_domain != sig.domain:
        return "i= is a subdomain of d=, which the key forbids (t=s)"
    return None


@dataclass
class Outcome:
    """What the signatures of one message came to."""

    passed: bool = False
    reasons: list[str] = field(default_factory=list)      # of aligned signatures, in order
    temporary: list[str] = field(default_factory=list)    # lookups that failed for now


def judge(verifier: dkim.DKIM, sig: Signature, lookup: TxtLookup, timeout: float,
          outcome: Outcome) -> None:
    """Verify one aligned signature: fetch its keys, apply the key rules, let dkimpy check."""
    try:
        texts = lookup(sig.key_name, timeout)
    except TemporaryLookupError as exc:
        outcome.temporary.append(f"{sig.key_name}: {exc}")
        return
    records = [r for r in (dkimkeys.key_record(t) for t in texts) if r is not None]
    if not records:
        outcome.reasons.append("no key for signature" if not texts
                               else "no DKIM key record among the TXT records")
        return
    reasons = []
    for record in records:
        reason = key_problem(sig, record) or crypto_check(verifier, sig, record)
        if reason is None and "y" in record.flags:
            reason = "key in testing mode (t=y): treated as unsigned"
        if reason is None:
            outcome.passed = True
            return
        reasons.append(reason)
    outcome.reasons.append(reasons[0])


def check(data: bytes, lookup: TxtLookup | None = None, timeout: float = 5,
          msg: Message | None = None, now: float | None = None) -> Reject | None:
    """None when ``data`` (a message from another server, CRLF line ends) carries a valid
    DKIM signature of its From: domain, else the refusal: NO_FROM, NO_SIGNATURE, a 550
    5.7.1 with the reason, or LOOKUP_FAILED (451) when a key lookup failed for now.
    ``msg`` is ``data`` already parsed, when the caller has it; ``lookup`` replaces the
    DNS (tests); ``timeout`` bounds each key lookup, in seconds; ``now`` is a Unix time."""
    domain = from_domain(parse(data) if msg is None else msg)
    if domain is None:
        return NO_FROM
    if domain.startswith("[") and domain.endswith("]"):
        return None  # IP-literal relays are exempt
    author = a_label(domain) or domain
    lookup = lookup or dkimkeys.txt_records
    now = time.time() if now is None else now
    try:
        verifier = dkim.DKIM(data, minkey=MIN_RSA_BITS, timeout=timeout, logger=_DkimpyNotes())
    except dkim.DKIMException:
        return _invalid("message format error")
    headers = [h for h in verifier.headers if h[0].lower() == b"dkim-signature"]
    if not headers:
        return NO_SIGNATURE
    outcome, others, looked_up = Outcome(), [], 0
    for header in headers:
        try:
            sig = signature(header, now)
        except Invalid as exc:
            outcome.reasons.append(str(exc))
            continue
        if sig.domain != author:
            others.append(sig.domain)
            continue
        if looked_up == MAX_ALIGNED:
            break
        looked_up += 1
        judge(verifier, sig, lookup, timeout, outcome)
        if outcome.passed:
            return None
    if outcome.temporary:
        log.error("DKIM key lookup failed temporarily, answering 451: %s", outcome.temporary[0])
        return LOOKUP_FAILED
    if outcome.reasons:
        return _invalid(outcome.reasons[0])
    return _invalid(f"signed by another domain only (d={others[0]})")


def _invalid(reason: str) -> Reject:
    reason = " ".join(reason.encode("ascii", "replace").decode().split())[:160]
    return Reject(NO_VALID_SIGNATURE.code, f"{NO_VALID_SIGNATURE.text}: {reason}")

