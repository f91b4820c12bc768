"""Certificates from an ACME CA (Let's Encrypt or any other) with acme-tiny over HTTP-01.

One attempt (``obtain``) goes:

1. which names can be validated: each name must resolve and its
   ``http://<name>/.well-known/acme-challenge/`` must reach *this* relay (a
   random probe file we serve ourselves). The mail domain is required;
   ``mta-sts.`` and ``www.`` are added when they pass, and skipped with a
   warning otherwise. Nothing is sent to the CA when the mail domain fails.
2. the CA's directory must answer (else the CA is down: a short back-off).
3. acme-tiny runs as the unprivileged user ``relayacme``, which alone can read
   the ACME account key (``/data/acme``); it writes the challenge files that
   nginx serves on port 80 and prints the certificate chain.
4. the chain is checked against our key and the names, then stored below
   ``/data/tls/acme``; installing and reloading is the caller's job.

Failures are remembered on the volume with a growing back-off, so restarts do
not hammer the CA (rate limits) and a relay whose DNS is not ready yet keeps
retrying on its own.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from relay import paths
from relay.certs import files as certs
from relay.settings import Settings
from relay.wire.backoff import exponential
from relay.wire.tls import client_context

log = logging.getLogger("relay.certs.acme")

ACCOUNT_KEY = paths.ACME_ACCOUNT / "account.key"
CSR = paths.ACME_ACCOUNT / "domain.csr"
STATE = certs.ACME / "state.json"
DOMAIN_KEY = certs.ACME / "privkey.pem"
CHAIN = certs.ACME / "fullchain.pem"
USER = "relayacme"

# Back-off after a failure: the CA unreachable or our own name checks failing
# cost the CA nothing, so retry soon; a failed order counts against the CA's
# rate limits (Let's Encrypt: 5 failed validations per name and hour).
BACKOFF_CHEAP = (30.0, 15 * 60.0)     # first delay, cap (seconds)
BACKOFF_ORDER = (10 * 60.0, 6 * 3600.0)
HTTP_TIMEOUT = 5.0


class AcmeError(RuntimeError):
    """One ACME attempt failed; the message says why. ``cheap`` is True when the CA was not asked
    for anything (our own checks failed, or the CA was unreachable): the back-off is then short
    (``BACKOFF_CHEAP``), otherwise long (``BACKOFF_ORDER``), because failed orders count against
    the CA's rate limits.
    """
    def __init__(self, message: str, cheap: bool) -> None:
        super().__init__(message)
        self.cheap = cheap  # True: the CA was not asked for anything


# --- failure memory ---------------------------------------------------------

@dataclass
class State:
    """The failure memory on the volume (``STATE``, JSON): ``failures`` in a row, the Unix time
    ``next_attempt`` before which no attempt is made, and the ``last_error`` message.
    """
    failures: int = 0
    next_attempt: float = 0.0
    last_error: str = ""

    @classmethod
    def load(cls) -> State:
        """The state stored in ``STATE``; a missing, unreadable or malformed file gives the fresh
        state (no failures, no back-off), never an error.
        """
        try:
            data = json.loads(STATE.read_text())
            return cls(int(data["failures"]), float(data["next_attempt"]), str(data["last_error"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return cls()

    def save(self) -> None:
        """Write the state to ``STATE`` atomically (a temporary file, then rename), making its
        directory (root only, 0700) when missing: the first failure on a fresh volume comes before
        any key exists there. Raises OSError.
        """
        STATE.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = STATE.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        os.replace(tmp, STATE)


def backoff(failures: int, cheap: bool) -> float:
    """Seconds until the next attempt after ``failures`` failures in a row; ``cheap``:
    the failure cost the CA nothing (it was unreachable, or our own checks failed)."""
    first, cap = BACKOFF_CHEAP if cheap else BACKOFF_ORDER
    return exponential(failures, first, cap)


def record_failure(state: State, error: AcmeError, now: float) -> State:
    """Count ``error`` as one more failure at Unix time ``now``: set ``next_attempt`` to now plus
    :func:`backoff`, keep its message, save and return ``state``.
    """
    state.failures += 1
    delay = backoff(state.failures, error.cheap)
    state.next_attempt = now + delay
    state.last_error = str(error)
    state.save()
    return state


def record_success() -> None:
    """Forget every failure (a fresh state is saved)."""
    State().save()


# --- checks before the CA is asked ------------------------------------------

def resolves(name: str) -> list[str]:
    """The addresses ``name`` resolves to for TCP port 80 (system resolver, IPv4 and IPv6, as text,
    sorted, without repeats); an empty list when it does not resolve.
    """
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]) for info in infos})


def reaches_us(name: str) -> str | None:
    """None when http://name/ serves our probe file, else why not."""
    token = secrets.token_urlsafe(24)
    probe = paths.ACME_CHALLENGES / token
    probe.write_text(token)
    probe.chmod(0o644)
    url = f"http://{name}/.well-known/acme-challenge/{token}"
    import urllib.request  # here: relay-certs in the other TLS modes never needs it (2 MiB)

    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as resp:
            body = resp.read(200).decode("ascii", "replace")
        return None if body == token else f"{url} answered with something else than our probe"
    except OSError as exc:  # urllib.error.URLError is one
        return f"{url} does not reach this relay ({getattr(exc, 'reason', exc)})"
    finally:
        probe.unlink(missing_ok=True)


def names_to_request(domain: str) -> list[str]:
    """The mail domain (required) plus the optional names that pass the same checks."""
    wanted = [n.removeprefix("DNS:") for n in certs.names_for(domain)]
    names = []
    for name in wanted:
        problem = None if resolves(name) else f"{name} does not resolve"
        problem = problem or reaches_us(name)
        if problem is None:
            names.append(name)
        elif name == domain:
            raise AcmeError(f"cannot validate {name}: {problem}; check its A/AAAA record "
                            "and that port 80 reaches this host", cheap=True)
        else:
            log.warning("leaving %s out of the certificate: %s", name, problem)
    return names


def check_directory(url: str, ca_bundle: Path) -> None:
    """Fetch the ACME directory at ``url`` (RFC 8555 §7.1.1), trusting ``ca_bundle``; raises a cheap
    AcmeError when it does not answer within HTTP_TIMEOUT seconds or is no ACME directory (no
    ``newOrder``).
    """
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT, context=client_context(cafile=ca_bundle)) as r:
            directory = json.load(r)
        if "newOrder" not in directory:
            raise AcmeError(f"{url} is not an ACME directory", cheap=True)
    except (OSError, ValueError) as exc:  # urllib.error.URLError is an OSError
        raise AcmeError(f"ACME directory {url} unreachable: {getattr(exc, 'reason', exc)}",
                        cheap=True) from None


# --- keys, CSR, acme-tiny ------------------------------------------------------

def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def _new_key(path: Path, bits: int, owner: pwd.struct_passwd | None = None) -> None:
    """An RSA key readable only by its owner (root unless given), written atomically."""
    tmp = path.with_suffix(".new")
    old = os.umask(0o077)
    try:
        _run(["openssl", "genrsa", "-out", str(tmp), str(bits)])
    finally:
        os.umask(old)
    if owner is not None:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    os.replace(tmp, path)


def ensure_keys() -> None:
    """Make the missing keys: the 4096-bit ACME account key (owned by ``relayacme``, the only user
    that reads it) and the 2048-bit key the certificates are issued for (root only). Raises
    subprocess.CalledProcessError when openssl fails.
    """
    if not ACCOUNT_KEY.exists():
        log.info("making the ACME account key %s", ACCOUNT_KEY)
        _new_key(ACCOUNT_KEY, 4096, pwd.getpwnam(USER))
    if not DOMAIN_KEY.exists():
        certs.ACME.mkdir(mode=0o700, exist_ok=True)
        _new_key(DOMAIN_KEY, 2048)


def write_csr(names: list[str]) -> None:
    """Write the certificate signing request for ``names`` (first one the CN, all of them
    subjectAltName DNS entries, SHA-256) to ``CSR``, readable by ``relayacme``. Raises
    subprocess.CalledProcessError.
    """
    acme = pwd.getpwnam(USER)
    tmp = CSR.with_suffix(".new")
    _run(["openssl", "req", "-new", "-sha256", "-key", str(DOMAIN_KEY), "-subj", f"/CN={names[0]}",
          "-addext", "subjectAltName=" + ",".join(f"DNS:{n}" for n in names), "-out", str(tmp)])
    os.chown(tmp, acme.pw_uid, acme.pw_gid)
    os.chmod(tmp, 0o644)
    os.replace(tmp, CSR)


def run_acme_tiny(directory_url: str, contact: str, ca_bundle: Path) -> str:
    """Run acme-tiny as ``relayacme`` against ``directory_url`` (HTTP-01, challenge files in
    ``paths.ACME_CHALLENGES``, which nginx serves on port 80), with ``mailto:contact`` when given
    and ``ca_bundle`` as SSL_CERT_FILE. Returns the PEM chain it prints; raises an AcmeError (not
    cheap) when it fails or takes over 5 minutes. Its log lines are passed on.
    """
    cmd = ["acme-tiny", "--account-key", str(ACCOUNT_KEY), "--csr", str(CSR),
           "--acme-dir", str(paths.ACME_CHALLENGES), "--directory-url", directory_url]
    if contact:
        cmd += ["--contact", f"mailto:{contact}"]
    acme = pwd.getpwnam(USER)
    env = {"PATH": "/usr/bin:/bin", "SSL_CERT_FILE": str(ca_bundle), "HOME": "/nonexistent"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env,
                              user=acme.pw_uid, group=acme.pw_gid, extra_groups=[], umask=0o022)
    except subprocess.TimeoutExpired:
        raise AcmeError("acme-tiny took longer than 5 minutes", cheap=False) from None
    for line in done.stderr.splitlines():
        log.info("acme-tiny: %s", line)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AcmeError(f"the CA refused or failed: {last}", cheap=False)
    return done.stdout


def store_chain(chain: str, names: list[str]) -> None:
    """Check the new chain (our key, every name) and keep it below /data/tls/acme."""
    tmp = CHAIN.with_suffix(".new")
    tmp.write_text(chain)
    try:
        problem = certs.validate_pair(tmp, DOMAIN_KEY, [f"DNS:{n}" for n in names])
    except Exception as exc:  # an unparsable answer
        problem = str(exc)
    if problem:
        tmp.unlink(missing_ok=True)
        raise AcmeError(f"the CA's certificate is unusable: {problem}", cheap=False)
    os.replace(tmp, CHAIN)


def obtain(settings: Settings) -> list[str]:
    """One complete attempt; returns the names certified, raises AcmeError."""
    domain = settings.mail_domain
    names = names_to_request(domain)
    check_directory(settings.acme_directory_url, paths.CA_BUNDLE)
    ensure_keys()
    write_csr(names)
    log.info("asking %s for a certificate for %s", settings.acme_directory_url, ", ".join(names))
    chain = run_acme_tiny(settings.acme_directory_url, settings.admin_email, paths.CA_BUNDLE)
    store_chain(chain, names)
    return names


def attempt(settings: Settings, force: bool = False, now: float | None = None) -> bool:
    """obtain() unless a back-off is running (or force); log and remember the outcome."""
    now = time.time() if now is None else now
    state = State.load()
    if not force and now < state.next_attempt:
        return False
    try:
        names = obtain(settings)
    except AcmeError as exc:
        state = record_failure(state, exc, now)
        log.error("no ACME certificate: %s; next attempt in %d s", exc, state.next_attempt - now)
        return False
    record_success()
    log.info("new ACME certificate for %s", ", ".join(names))
    return True
