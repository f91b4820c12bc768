"""Live probes of another domain's mail servers, for ``relayctl why``.

Each probe looks the way relay-mxsend's delivery does (relay.federation.outbound):
the same resolver, the same TLS contexts (Debian's CAs plus EXTRA_CA_FILE, names
checked except for ``_``-domains and IP literals), the same ports. None of them
sends a message: HTTPS asks ``GET /mxdeliv``, which a chatmail relay answers with
``405`` (filtermail: ``405 Method Not Allowed``; ours: ``405`` with an
``X-Mxdeliv`` header) without taking mail; SMTP stops after STARTTLS and EHLO.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime

import dns.exception
import dns.name
import dns.resolver

from relay.federation import outbound
from relay.wire.tls import ClientContexts

TIMEOUT = 10.0


# --- DNS ------------------------------------------------------------------------------

@dataclass
class MXResult:
    """``status``: ``mx``, ``implicit`` (no MX: the domain itself), ``null-mx``,
    ``nxdomain``, ``literal`` or ``error``; ``hosts`` in order of preference."""
    status: str
    hosts: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    error: str = ""


def lookup_mx(domain: str, resolver: dns.resolver.Resolver | None = None) -> MXResult:
    """The MX lookup as relay-mxsend makes it (RFC 5321 §5.1, RFC 7505 null MX)."""
    if domain.startswith("["):
        address = outbound.ip_literal(domain)
        if address is None:
            return MXResult("error", error="not a valid address literal")
        return MXResult("literal", [address])
    resolver = resolver or dns.resolver.Resolver()
    try:
        answer = resolver.resolve(domain, "MX", lifetime=outbound.DNS_LIFETIME, search=False)
    except dns.resolver.NXDOMAIN:
        return MXResult("nxdomain")
    except dns.resolver.NoAnswer:
        return MXResult("implicit", [domain])
    except dns.exception.DNSException as exc:
        return MXResult("error", error=type(exc).__name__)
    records = sorted((r.preference, r.exchange) for r in answer)
    hosts = [x.to_text(omit_final_dot=True).lower() for _, x in records if x != dns.name.root]
    texts = [f"{p} {x.to_text()}" for p, x in records]
    if not hosts:
        return MXResult("null-mx", records=texts)
    return MXResult("mx", hosts, texts)


def addresses(host: str, resolver: dns.resolver.Resolver | None = None) -> dict[str, list[str]]:
    """{"A": [...], "AAAA": [...], "error": [...]} for one host name (or literal)."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return {"A" if ":" not in host else "AAAA": [host]}
    except OSError:
        pass
    resolver = resolver or dns.resolver.Resolver()
    found: dict[str, list[str]] = {"A": [], "AAAA": []}
    for rtype in ("A", "AAAA"):
        try:
            found[rtype] = [r.to_text() for r in resolver.resolve(
                host, rtype, lifetime=outbound.DNS_LIFETIME, search=False)]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            pass
        except dns.exception.DNSException as exc:
            found.setdefault("error", []).append(f"{rtype}: {type(exc).__name__}")
    return found


def routable(address: str) -> bool:
    """Whether this host has a route to ``address`` (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((address, 25))
        return True
    except OSError:
        return False


# --- certificates ----------------------------------------------------------------------

def describe_certificate(der: bytes) -> dict:
    """Subject, issuer, names (subjectAltName), expiry (ISO date) and days left of a
    DER certificate, read by ``openssl x509``; {} when it cannot be read."""
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-issuer",
                          "-enddate", "-ext", "subjectAltName", "-nameopt", "RFC2253"],
                         input=der, capture_output=True, timeout=10)
    if out.returncode != 0:
        return {}
    info: dict = {"names": []}
    lines = out.stdout.decode("utf-8", "replace").splitlines()
    for i, line in enumerate(lines):
        if line.startswith("subject="):
            info["subject"] = line[8:].strip()
        elif line.startswith("issuer="):
            info["issuer"] = line[7:].strip()
        elif line.startswith("notAfter="):
            when = datetime.strptime(line[9:].strip(), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
            info["not_after"] = when.isoformat()
            info["days_left"] = round((when - datetime.now(UTC)).total_seconds() / 86400, 1)
        elif "Subject Alternative Name" in line and i + 1 < len(lines):
            info["names"] = [n.strip().replace("DNS:", "").replace("IP Address:", "")
                             for n in lines[i + 1].split(",")]
    return info


@dataclass
class TLSResult:
    """``ok``: the chain and name verified; ``error``: why not (ssl's own words)."""
    ok: bool
    error: str = ""
    certificate: dict = field(default_factory=dict)
    version: str = ""


def _tls(raw_connect, host: str, contexts: ClientContexts, verify: bool) -> TLSResult:
    """Handshake (verified when ``verify``); on a verification failure, once more
    unverified, only to read the certificate that was presented."""
    try:
        with raw_connect() as raw:
            with contexts.get(verify, None).wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True) or b""
                return TLSResult(True, certificate=describe_certificate(der),
                                 version=tls.version() or "")
    except ssl.SSLCertVerificationError as exc:
        error = exc.verify_message or str(exc)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        return TLSResult(False, f"TLS handshake failed: {error_text(exc)}")
    try:
        with raw_connect() as raw:
            with contexts.get(False, None).wrap_socket(raw, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True) or b""
                return TLSResult(False, error, describe_certificate(der), tls.version() or "")
    except (OSError, ValueError) as exc:
        return TLSResult(False, error + f" (then: {type(exc).__name__})")


# --- HTTPS /mxdeliv ----------------------------------------------------------------------

@dataclass
class HTTPSResult:
    """``kind``: ``relay`` (405 with X-Mxdeliv: our kind), ``reference`` (a plain 405:
    filtermail), ``not-relay`` (another answer: a web server without /mxdeliv),
    ``failing`` (5xx), ``unreachable`` (no TCP connection), ``tls`` (handshake or
    certificate refused)."""
    kind: str
    detail: str = ""
    status: int | None = None
    tls: TLSResult | None = None


def probe_https(host: str, verify: bool, contexts: ClientContexts) -> HTTPSResult:
    """``GET https://<host>/mxdeliv`` (what relay-mxsend would POST to)."""
    def connect() -> socket.socket:
        return socket.create_connection((host, 443), TIMEOUT)
    try:
        connect().close()
    except OSError as exc:
        return HTTPSResult("unreachable", f"port 443: {error_text(exc)}")
    tls = _tls(connect, host, contexts, verify)
    if not tls.ok:
        return HTTPSResult("tls", tls.error or "TLS handshake failed", tls=tls)
    conn = http.client.HTTPSConnection(outbound.http_host(host), 443, timeout=TIMEOUT,
                                       context=contexts.get(verify, "http/1.1"))
    try:
        conn.request("GET", "/mxdeliv", headers={"User-Agent": "relayctl-why"})
        resp = conn.getresponse()
        body = outbound.clean(resp.read(2048).decode("utf-8", "replace"), 120)
        marked = resp.getheader(outbound.MARKER) is not None
    except (OSError, http.client.HTTPException) as exc:
        return HTTPSResult("failing", f"no HTTP answer: {error_text(exc)}", tls=tls)
    finally:
        conn.close()
    status = resp.status
    detail = f"GET /mxdeliv: HTTP {status}" + (f" {body!r}" if body and not marked else "")
    if status == 405:
        return HTTPSResult("relay" if marked else "reference", detail, status, tls)
    if status >= 500:
        return HTTPSResult("failing", detail, status, tls)
    return HTTPSResult("not-relay", detail, status, tls)


# --- SMTP port 25 -----------------------------------------------------------------------

@dataclass
class SMTPResult:
    """``kind``: ``ok`` (STARTTLS and a verified certificate), ``refused``,
    ``timeout``, ``unreachable``, ``no-starttls``, ``tls``, ``error``."""
    kind: str
    detail: str = ""
    banner: str = ""
    tls: TLSResult | None = None


def _read_reply(f) -> tuple[int, str]:
    lines = []
    while True:
        line = f.readline(1024).decode("utf-8", "replace")
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line[4:].strip())
        if line[3:4] != "-":
            return int(line[:3]), " ".join(lines)


def probe_smtp(host: str, verify: bool, contexts: ClientContexts, helo: str) -> SMTPResult:
    """Port 25: banner, EHLO, STARTTLS with the certificate checked as for delivery."""
    try:
        raw = socket.create_connection((host, 25), TIMEOUT)
    except TimeoutError:
        return SMTPResult("timeout", "port 25: no answer within "
                          f"{TIMEOUT:.0f} s (filtered by a firewall, here or there)")
    except ConnectionRefusedError:
        return SMTPResult("refused", "port 25: connection refused")
    except OSError as exc:
        return SMTPResult("unreachable", f"port 25: {error_text(exc)}")
    with raw:
        try:
            f = raw.makefile("rb")
            code, banner = _read_reply(f)
            if code != 220:
                return SMTPResult("error", f"greeting {code} {outbound.clean(banner, 120)}")
            raw.sendall(f"EHLO {helo}\r\n".encode())
            code, ehlo = _read_reply(f)
            if "STARTTLS" not in ehlo.upper().split():
                raw.sendall(b"QUIT\r\n")
                return SMTPResult("no-starttls", "EHLO answer offers no STARTTLS",
                                  outbound.clean(banner, 120))
            raw.sendall(b"STARTTLS\r\n")
            code, text = _read_reply(f)
            if code != 220:
                return SMTPResult("no-starttls", f"STARTTLS answered {code} {text}")
        except (OSError, ValueError) as exc:
            return SMTPResult("error", f"SMTP dialogue: {error_text(exc)}")
    tls = _tls(lambda: _starttls_socket(host, helo), host, contexts, verify)
    if not tls.ok:
        return SMTPResult("tls", tls.error or "TLS handshake failed", outbound.clean(banner, 120), tls)
    return SMTPResult("ok", "STARTTLS, certificate verified", outbound.clean(banner, 120), tls)


def _starttls_socket(host: str, helo: str) -> socket.socket:
    """A connection to port 25 that has just been answered 220 to STARTTLS."""
    raw = socket.create_connection((host, 25), TIMEOUT)
    try:
        f = raw.makefile("rb")
        _read_reply(f)
        raw.sendall(f"EHLO {helo}\r\n".encode())
        _read_reply(f)
        raw.sendall(b"STARTTLS\r\n")
        code, text = _read_reply(f)
        if code != 220:
            raise ConnectionError(f"STARTTLS answered {code}")
        return raw
    except BaseException:
        raw.close()
        raise


def error_text(exc: BaseException) -> str:
    """A socket error in words: ``connection refused``, ``timed out``, ..."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"name not resolved ({exc.strerror})"
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return outbound.clean(text, 160)
