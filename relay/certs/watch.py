"""Keeps the certificate that clients see current, and proves it.

Runs under supervisor as ``python3 -m relay.certs.watch`` (root: it installs the
key below /data/tls and reloads Postfix, Dovecot and nginx).

- ``TLS_MODE=acme``: obtains a certificate when there is none (the relay
  starts with a self-signed one meanwhile) and renews it once less than a
  third of its lifetime is left (30 days for Let's Encrypt), with the back-off
  of ``relay.certs.acme`` after failures.
- ``TLS_MODE=external``: polls a hash of TLS_CERT_FILE and TLS_KEY_FILE (bind
  mounts do not deliver inotify events reliably) and installs a changed pair
  once it is valid.
- After every change, and hourly anyway, it connects to every TLS endpoint
  on loopback and compares the certificate served with the one installed. A
  reload that did not take is retried; if it still does not take, it logs an
  error on every check until it does.

The daemons reload gracefully: open connections finish on the old
certificate, new ones get the new one, nothing is refused and no mail is lost.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from relay import logs, paths, settings
from relay.certs import acme
from relay.certs import files as certs
from relay.ops import health
from relay.settings import TLS_ENDPOINTS, Settings
from relay.wire.tls import client_context

log = logging.getLogger("relay-certs")

CHECK_INTERVAL = 10.0        # external files' hash, ACME due date
VERIFY_INTERVAL = 3600.0     # served certificate vs installed one
SERVE_WAIT = 15.0            # after a reload, how long the new certificate may take to show
RELOAD_TRIES = 3
TIMEOUT = 5.0

RELOADS = (
    ["/usr/sbin/postfix", "reload"],
    ["/usr/bin/doveadm", "reload"],
    ["/usr/sbin/nginx", "-s", "reload"],
)


# --- what each port serves -----------------------------------------------------

def _digest(der: bytes | None) -> str:
    if not der:
        raise ssl.SSLError("no certificate")
    return hashlib.sha256(der).hexdigest()


def _implicit(port: int, alpn: str | None = None) -> Callable[[], str]:
    def probe() -> str:
        with socket.create_connection(("127.0.0.1", port), TIMEOUT) as raw:
            with client_context(verify=False, alpn=alpn).wrap_socket(raw) as sock:
                return _digest(sock.getpeercert(binary_form=True))
    return probe


def _starttls(port: int) -> Callable[[], str]:
    def probe() -> str:
        with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as smtp:
            smtp.starttls(context=client_context(verify=False))
            sock = smtp.sock
            if not isinstance(sock, ssl.SSLSocket):
                raise ssl.SSLError("STARTTLS did not start TLS")
            return _digest(sock.getpeercert(binary_form=True))
    return probe


ENDPOINTS: dict[str, Callable[[], str]] = {
    f"{e.port} ({e.label})": _starttls(e.port) if e.starttls else _implicit(e.port, e.alpn)
    for e in TLS_ENDPOINTS
}


def served() -> dict[str, str]:
    """Endpoint -> fingerprint of the certificate it serves, or 'error: ...'."""
    result = {}
    for name, probe in ENDPOINTS.items():
        try:
            result[name] = probe()
        except (OSError, ssl.SSLError, smtplib.SMTPException) as exc:
            result[name] = f"error: {type(exc).__name__}: {exc}"
    return result


def stale_endpoints(expected: str) -> dict[str, str]:
    """The endpoints (``"<port> (<label>)"``) whose served certificate is not the one with SHA-256
    fingerprint ``expected`` (hex), mapped to what they serve instead or ``"error: ..."``; empty
    when every port serves it.
    """
    return {name: fp for name, fp in served().items() if fp != expected}


# --- switching --------------------------------------------------------------

@contextmanager
def locked() -> Iterator[None]:
    """One certificate change at a time, between this loop and relayctl."""
    with open(paths.CERT_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def reload_daemons() -> None:
    """Reload Postfix, Dovecot and nginx gracefully (``RELOADS``), each in turn; a failed reload is
    logged with its stderr, not raised.
    """
    for cmd in RELOADS:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            log.error("%s failed: %s", " ".join(cmd), done.stderr.strip()[:200])


def make_served(expected: str) -> dict[str, str]:
    """Reload until every endpoint serves `expected`; return the endpoints that still do not."""
    stale: dict[str, str] = {}
    for attempt in range(1, RELOAD_TRIES + 1):
        reload_daemons()
        deadline = time.monotonic() + SERVE_WAIT
        while True:
            stale = stale_endpoints(expected)
            if not stale or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        if not stale:
            return {}
        log.warning("after reload %d of %d the new certificate is not served on %s",
                    attempt, RELOAD_TRIES, ", ".join(stale))
    return stale


def switch_to(cert: Path, key: Path, why: str) -> bool:
    """Install cert and key, reload the daemons and prove every port serves the new one."""
    certs.install(cert, key)
    expected = certs.fingerprint(paths.TLS_CERT)
    log.info("installed the certificate (%s), sha256 %s; reloading", why, expected[:16])
    stale = make_served(expected)
    if stale:
        log.error("CERTIFICATE NOT SERVED: %s still serve an old certificate or fail: %s",
                  ", ".join(stale), "; ".join(f"{k}: {v[:80]}" for k, v in stale.items()))
        return False
    log.info("every port now serves the new certificate (%d endpoints checked)", len(ENDPOINTS))
    return True


# --- the two sources ------------------------------------------------------------

_renew_at: tuple[float, float] = (-1.0, 0.0)  # (chain mtime, when to renew)


def acme_due(now: float | None = None) -> bool:
    """True when there is no usable ACME certificate or a third of its lifetime is left."""
    global _renew_at
    chain = certs.ACME / "fullchain.pem"
    try:
        mtime = chain.stat().st_mtime
    except FileNotFoundError:
        return True
    if _renew_at[0] != mtime:
        if not certs.acme_ready():
            return True
        start, end = certs.not_before(chain), certs.not_after(chain)
        _renew_at = (mtime, end - (end - start) / 3)
    return (time.time() if now is None else now) >= _renew_at[1]


def installed_fingerprint() -> str | None:
    """SHA-256 (hex) of the certificate installed in ``paths.TLS_CERT``, or None when there is none
    or it cannot be read.
    """
    try:
        return certs.fingerprint(paths.TLS_CERT)
    except (OSError, ValueError):
        return None


def acme_step(values: Settings, force: bool = False) -> None:
    """One ACME turn of the loop: obtain a certificate when :func:`acme_due` (or ``force``), under
    the back-off of :func:`relay.certs.acme.attempt`, then switch to the chain on /data/tls/acme
    when it is usable and not the one installed.
    """
    chain, key = certs.ACME / "fullchain.pem", certs.ACME / "privkey.pem"
    if force or acme_due():
        acme.attempt(values, force=force)
    if certs.acme_ready() and certs.fingerprint(chain) != installed_fingerprint():
        switch_to(chain, key, "ACME")


class ExternalWatch:
    """TLS_MODE=external: polls TLS_CERT_FILE and TLS_KEY_FILE by content hash (bind mounts do not
    deliver inotify events reliably) and installs a changed pair once it is valid. The pair found
    at start counts as installed (``certs.prepare`` did that).
    """
    def __init__(self, values: Settings) -> None:
        self.cert = Path(values.tls_cert_file)
        self.key = Path(values.tls_key_file)
        self.seen: str | None = None
        try:
            self.seen = certs.content_hash(self.cert, self.key)  # installed at start
        except OSError:
            pass

    def step(self) -> None:
        """Look at the files once: unchanged, nothing happens; changed and valid, :func:`switch_to`
        installs them; changed and invalid (often a half-written pair: a new certificate, the old
        key) or unreadable, the installed certificate stays and the problem is logged once, not
        at every step.
        """
        try:
            current = certs.content_hash(self.cert, self.key)
        except OSError as exc:
            if self.seen != "unreadable":
                log.error("cannot read TLS_CERT_FILE/TLS_KEY_FILE: %s; keeping the installed "
                          "certificate", exc)
            self.seen = "unreadable"
            return
        if current == self.seen:
            return
        self.seen = current
        problem = certs.validate_pair(self.cert, self.key)
        if problem:
            # Often a half-written pair (new certificate, old key): the next change fixes it.
            log.error("not installing the changed external certificate: %s", problem)
            return
        switch_to(self.cert, self.key, f"{self.cert} changed")


def verify(force_reload: bool = False) -> None:
    """Compare what every port serves with the installed certificate and, when one differs (or
    ``force_reload``), reload until it is served (:func:`make_served`); logs an error for the
    ports that still do not serve it. Nothing happens without an installed certificate.
    """
    expected = installed_fingerprint()
    if expected is None:
        return
    stale = stale_endpoints(expected)
    if stale or force_reload:
        log.warning("served certificate differs from the installed one on %s; reloading",
                    ", ".join(stale) or "no port")
        left = make_served(expected)
        if left:
            log.error("CERTIFICATE NOT SERVED on %s", ", ".join(left))


def wait_for_daemons(timeout: float = 60.0) -> None:
    """Until port 80 (ACME challenges) and every TLS port listen."""
    wanted = {80, *(e.port for e in TLS_ENDPOINTS)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not wanted <= health.listening_ports():
        time.sleep(0.5)


def main() -> int:
    """relay-certs: wait for the daemons, run the doctor's start-up summary once, then every
    CHECK_INTERVAL seconds under the certificate lock take one ACME or external-files step and,
    every VERIFY_INTERVAL seconds, :func:`verify`. An exception in a turn is logged with its
    traceback and the loop goes on (the relay keeps serving). Never returns.
    """
    values = settings.from_environment()
    logs.setup("relay-certs", values.log_level, values.log_format)
    mode = values.tls_mode
    if mode == "self-signed":
        log.info("TLS_MODE=self-signed: nothing to renew; checking what is served hourly")
    wait_for_daemons()
    # In a process of its own, so the DNS library it loads does not stay resident here.
    subprocess.run([sys.executable, "-m", "relay.ops.doctor", "--startup"], timeout=120, check=False)
    external = ExternalWatch(values) if mode == "external" else None
    last_verify = 0.0
    while True:
        with locked():
            try:
                if mode == "acme":
                    acme_step(values)
                elif external:
                    external.step()
                if time.monotonic() - last_verify > VERIFY_INTERVAL:
                    verify()
                    last_verify = time.monotonic()
            except Exception:  # keep serving; say loudly what went wrong
                log.exception("certificate check failed")
        time.sleep(CHECK_INTERVAL)


# --- for relayctl --------------------------------------------------------------

def installed_source(values: Settings) -> str:
    """Which source's certificate is the one installed: acme, self-signed or external."""
    installed = installed_fingerprint()
    for name, chain in (("acme", certs.ACME / "fullchain.pem"),
                        ("self-signed", certs.SELF_SIGNED / "fullchain.pem")):
        if chain.exists() and certs.fingerprint(chain) == installed:
            return name
    return "external" if values.tls_mode == "external" else "unknown"


def status(values: Settings) -> dict:
    """The installed certificate, what each port serves, and the ACME state."""
    info: dict = {"mode": values.tls_mode}
    try:
        end = certs.not_after(paths.TLS_CERT)
        info.update(names=certs.cert_names(paths.TLS_CERT),
                    not_after=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end)),
                    days_left=int((end - time.time()) // 86400),
                    source=installed_source(values))
    except (OSError, ValueError, subprocess.CalledProcessError) as exc:
        info["error"] = f"no readable certificate installed: {exc}"
    expected = installed_fingerprint()
    info["served"] = {name: ("ok" if fp == expected else fp if fp.startswith("error") else
                             "an older certificate") for name, fp in served().items()}
    if values.tls_mode == "acme":
        state = acme.State.load()
        info["acme"] = {"failures": state.failures, "last_error": state.last_error,
                        "next_attempt_in_s": max(0, int(state.next_attempt - time.time()))}
    return info


def renew(values: Settings, force: bool) -> tuple[int, str]:
    """relayctl certs renew: one ACME attempt now (ignoring the back-off), then switch. Returns
    the exit status (0 renewed or not due, 1 not renewed) and one line saying what happened.
    """
    if values.tls_mode != "acme":
        return 1, f"TLS_MODE={values.tls_mode}: nothing to renew"
    with locked():
        if not (force or acme_due()):
            return 0, "the certificate is not due for renewal (use --force)"
        if not acme.attempt(values, force=True):
            return 1, f"failed: {acme.State.load().last_error}"
        chain, key = certs.ACME / "fullchain.pem", certs.ACME / "privkey.pem"
        ok = switch_to(chain, key, "renewed on request")
    return (0, "renewed; every port serves the new certificate") if ok else \
        (1, "renewed, but not every port serves it: see the log")
