"""Incoming DKIM rule (SPEC §3): a valid signature whose d= is the From: domain.

Signatures of other domains do not count (strict alignment). Mail whose From:
domain is an IP literal is exempt: such relays have no DNS to publish a key in.
The key lookup uses the container's resolver; a lookup that times out is a
temporary failure, so the sending server retries instead of bouncing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.message import Message

import dkim
import dkim.dnsplug

from relay.filter.policy import Reject, from_addresses, parse

log = logging.getLogger("relay-filter")

NO_VALID_SIGNATURE = Reject(550, "5.7.1 No valid DKIM signature found for the From: domain")
NO_FROM = Reject(550, "5.7.1 Message needs exactly one From: address")
LOOKUP_FAILED = Reject(451, "4.7.5 DKIM key lookup failed, please try again later")

TxtLookup = Callable[..., bytes | None]


def from_domain(msg: Message) -> str | None:
    """The domain of the single From: address, lower case, without a final dot (an IP literal keeps
    its brackets: ``[192.0.2.1]``); None when there is not exactly one parsable From: address.
    """
    addresses = from_addresses(msg)
    if not addresses or len(addresses) != 1 or "@" not in addresses[0]:
        return None
    return addresses[0].rpartition("@")[2].rstrip(".")


def check(data: bytes, dnsfunc: TxtLookup | None = None, timeout: float = 5,
          msg: Message | None = None) -> Reject | None:
    """``msg`` is ``data`` already parsed, when the caller has it."""
    domain = from_domain(parse(data) if msg is None else msg)
    if domain is None:
        return NO_FROM
    if domain.startswith("[") and domain.endswith("]"):
        return None  # IP-literal relays are exempt
    base = dnsfunc or dkim.dnsplug.get_txt
    timed_out = False

    def lookup(name: bytes, timeout: float = timeout) -> bytes | None:
        # dkimpy turns a lookup timeout into a plain "not verified"; we want to know.
        nonlocal timed_out
        try:
            return base(name, timeout=timeout)
        except dkim.DnsTimeoutError:
            timed_out = True
            raise

    verifier = dkim.DKIM(data, minkey=1024, timeout=timeout)
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    for idx in range(count):
        try:
            ok = verifier.verify(idx=idx, dnsfunc=lookup)
        except dkim.DnsTimeoutError:
            timed_out = True
            continue
        except dkim.DKIMException as exc:
            log.debug("DKIM signature %d unusable: %s", idx, exc)
            continue
        signer = (verifier.domain or b"").decode("ascii", "replace").lower().rstrip(".")
        if ok and signer == domain:
            return None
    return LOOKUP_FAILED if timed_out else NO_VALID_SIGNATURE
