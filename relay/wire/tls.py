"""TLS contexts for our helpers' outgoing connections.

Peers are verified against one CA list: Debian's CA certificates plus the
operator's ``EXTRA_CA_FILE``, which start-up writes to ``paths.CA_BUNDLE``
(``relay.certs.files.write_ca_bundle``). TLS 1.2 is the lowest version offered.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from relay import paths


def client_context(verify: bool = True, alpn: str | None = None,
                   cafile: Path | None = paths.CA_BUNDLE) -> ssl.SSLContext:
    """A client context, TLS 1.2 or newer.

    ``verify``: check the peer's certificate chain against ``cafile`` (Debian's
    CAs when None or missing) and its name; False for probes that compare
    fingerprints themselves or only want an answer. ``alpn``: the one protocol
    name to offer (e.g. ``imap``). Raises ``ssl.SSLError`` when ``cafile`` holds
    no certificate."""
    usable = cafile is not None and cafile.exists()
    ctx = ssl.create_default_context(cafile=str(cafile) if usable else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols([alpn])
    return ctx


class ClientContexts:
    """Client contexts by (verify, alpn), made again when the CA bundle changes.

    For long-running helpers: the bundle is rewritten at every start, and a
    context is costly to make (it parses every CA certificate)."""

    def __init__(self, bundle: Path = paths.CA_BUNDLE) -> None:
        self.bundle = bundle
        self._cache: dict[tuple[bool, str | None, int], ssl.SSLContext] = {}

    def get(self, verify: bool, alpn: str | None) -> ssl.SSLContext:
        """The context for ``verify`` and ``alpn`` (see :func:`client_context`)."""
        try:
            stamp = self.bundle.stat().st_mtime_ns
        except OSError:
            stamp = 0  # no bundle: Debian's CAs
        key = (verify, alpn, stamp)
        ctx = self._cache.get(key)
        if ctx is None:
            ctx = client_context(verify, alpn, self.bundle if stamp else None)
            self._cache = {key: ctx, **{k: v for k, v in self._cache.items() if k[2] == stamp}}
        return ctx
