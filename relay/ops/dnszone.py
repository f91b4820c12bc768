"""The DNS records an operator publishes for the relay (``relayctl dns``).

They are printed in zone-file form: absolute names with a trailing dot, an
explicit TTL and class on every line, no ``$ORIGIN`` or ``$TTL``, so the lines
paste into any zone. :func:`records` is pure: it builds a :class:`Zone` from the
settings, the DKIM TXT value, the MTA-STS policy text and the addresses, and
:func:`zone_text` prints it. ``relay.ops.dnscheck`` compares a zone with what
is published; ``relay.ops.dnsreport`` is the command that reads the container
and prints.

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
"""

from __future__ import annotations

import hashlib
import ipaddress
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from relay.boot import dkimkey as dkim
from relay.settings import Settings

TTL = 3600
TXT_CHUNK = 255               # longest character-string in a TXT record (RFC 1035)
LETSENCRYPT_HOSTS = ("acme-v02.api.letsencrypt.org", "acme-staging-v02.api.letsencrypt.org")
LETSENCRYPT_CAA = "letsencrypt.org"
DMARC = "v=DMARC1;p=reject;adkim=s;aspf=s"
SPF = "v=spf1 a ~all"


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
        """The record as a zone-file line, its name padded to ``width`` characters: ``<name> <ttl>
        IN <type> <rdata>``.
        """
        return f"{self.name:<{width}} {self.ttl} IN {self.rtype:<5} {self.rdata}"


@dataclass(frozen=True)
class Comment:
    """A line of explanation in the zone (printed as a ``;`` comment), not a record."""
    text: str


Item = Record | Comment


@dataclass(frozen=True)
class Zone:
    """What to publish for ``domain``: records and comments in ``items``, in print order;
    ``publishable`` False for an IP literal or localhost (one comment, no records); ``addresses``
    the relay's addresses the A/AAAA records name.
    """
    domain: str                       # as configured, e.g. chat.example.org
    items: tuple[Item, ...] = ()
    publishable: bool = True          # False: IP literal or localhost, nothing to publish
    addresses: tuple[str, ...] = ()   # the relay's addresses the A/AAAA records name

    @property
    def records(self) -> list[Record]:
        """The records of the zone, in order, without the comments."""
        return [item for item in self.items if isinstance(item, Record)]

    @property
    def comments(self) -> list[str]:
        """The texts of the zone's comments, in order."""
        return [item.text for item in self.items if isinstance(item, Comment)]


def absolute(name: str) -> str:
    """``name`` as an absolute DNS name: lower case with one trailing dot."""
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
    """Every record of SPEC section 6 for the configured domain.

    ``dkim_value``: the DKIM TXT text; ``mta_sts_policy``: the served policy
    (its hash is the ``_mta-sts`` id); ``addresses``: the relay's IPv4/IPv6
    addresses as text; ``detected``: they were found on the interfaces, not
    given in PUBLIC_ADDRESSES. An IP literal or ``localhost`` gives a zone with
    one comment and ``publishable`` False."""
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
    items += _address_records(origin, addrs, detected)
    items += _mail_records(origin, dkim_value, mta_sts_policy)
    items += _tlsrpt_records(origin, domain, settings.admin_email)
    items += _srv_records(origin)
    items += _caa_records(origin, settings)
    return Zone(domain, tuple(items), addresses=addrs)


def _address_records(origin: str, addrs: tuple[str, ...], detected: bool) -> list[Item]:
    """A/AAAA (or comments asking for them), and the names that alias the domain."""
    items: list[Item] = [Comment(
        "Addresses of the relay, as found on the container's interfaces (set PUBLIC_ADDRESSES "
        "if others are public)" if addrs and detected else "Addresses of the relay")]
    for a in addrs:
        rtype = "A" if ipaddress.ip_address(a).version == 4 else "AAAA"
        items.append(Record(origin, rtype, a, "address", a))
    if not addrs:
        items += [
            Comment("The relay's public addresses are not known: the container has no global "
                    "address (Docker port publishing or NAT). Add them here,"),
            Comment(f"  {origin} {TTL} IN A     <public IPv4 address>"),
            Comment(f"  {origin} {TTL} IN AAAA  <public IPv6 address>"),
            Comment("or set PUBLIC_ADDRESSES and run relayctl dns again."),
        ]
    return items + [
        Comment("MTA-STS policy host and web page (www is optional)"),
        Record(f"mta-sts.{origin}", "CNAME", origin, "alias", origin),
        Record(f"www.{origin}", "CNAME", origin, "alias", origin, required=False),
    ]


def _mail_records(origin: str, dkim_value: str, mta_sts_policy: str) -> list[Item]:
    """MX, SPF, DKIM, DMARC and the MTA-STS id."""
    sts = f"v=STSv1; id={mta_sts_id(mta_sts_policy)}"
    return [
        Comment("Mail exchanger and sender policies"),
        Record(origin, "MX", f"10 {origin}", "mx", origin),
        Record(origin, "TXT", txt_rdata(SPF), "spf", SPF),
        Record(f"{dkim.selector()}._domainkey.{origin}", "TXT", txt_rdata(dkim_value), "dkim",
               dkim_value),
        Record(f"_dmarc.{origin}", "TXT", txt_rdata(DMARC), "dmarc", DMARC),
        Comment("MTA-STS: the id changes whenever the policy does"),
        Record(f"_mta-sts.{origin}", "TXT", txt_rdata(sts), "mta-sts", sts),
    ]


def _tlsrpt_records(origin: str, domain: str, admin: str) -> list[Item]:
    """TLSRPT to ADMIN_EMAIL, unless there is none or it is on this relay."""
    if not admin:
        return [Comment("No TLSRPT record (optional): set ADMIN_EMAIL to receive TLS reports.")]
    if admin.lower().endswith("@" + domain):
        return [Comment(f"No TLSRPT record: ADMIN_EMAIL {admin} is on this relay, which refuses "
                        "unencrypted mail such as TLS reports; use an address elsewhere.")]
    tlsrpt = f"v=TLSRPTv1;rua=mailto:{admin}"
    return [Comment("TLS reports (optional)"),
            Record(f"_smtp._tls.{origin}", "TXT", txt_rdata(tlsrpt), "tlsrpt", tlsrpt,
                   required=False)]


def _srv_records(origin: str) -> list[Item]:
    """Mail client service discovery (RFC 6186, RFC 8314)."""
    items: list[Item] = [Comment("Mail client service discovery (RFC 6186, 8314); no IMAP on "
                                 "port 143")]
    for service, port in (("_submissions", 465), ("_submission", 587), ("_imaps", 993)):
        items.append(Record(f"{service}._tcp.{origin}", "SRV", f"0 1 {port} {origin}", "srv",
                            f"{port} {origin}"))
    items.append(Record(f"_imap._tcp.{origin}", "SRV", "0 0 0 .", "srv", "0 ."))
    return items


def _caa_records(origin: str, settings: Settings) -> list[Item]:
    """CAA for the ACME CA when its issuer domain is known, else a comment why not."""
    issuer, why_not = caa_issuer(settings)
    if not issuer:
        return [Comment(why_not)]
    return [Comment("Only this CA may issue certificates for the domain (optional)"),
            Record(origin, "CAA", f'0 issue "{issuer}"', "caa", issuer, required=False)]


def zone_text(zone: Zone) -> str:
    """The zone in zone-file form (RFC 1035 §5): records with their names aligned, comments as ``;``
    lines wrapped at 96 characters; ends with a newline.
    """
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
