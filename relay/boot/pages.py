"""The web pages' part of the template context, and rendering just the pages.

The home page shows the registration mode (relay.accounts.registration): the
QR code and ``DCACCOUNT:`` link only when registration is open; when it is
closed, that no accounts are made; in invite mode, to ask the operator for an
invite. The home and privacy pages name who runs the relay when the operator
set it (PRIVACY_POSTAL, PRIVACY_MAIL or ADMIN_EMAIL, PRIVACY_PDO,
PRIVACY_SUPERVISOR: the reference relay's four privacy settings).

Start-up renders every template (relay.boot.startup); ``relayctl registration``
renders the pages again with :func:`render` when it changes the mode.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable
from pathlib import Path

from relay import paths
from relay.accounts import registration
from relay.accounts.links import dcaccount_url, qr_text, server_host
from relay.boot import render as renderer
from relay.settings import Settings, template_context

PAGES = "var/www/"   # the templates below this prefix are the web pages


def qr_png(text: str) -> bytes:
    """``text`` as a PNG QR code (qrencode, 8 pixels a module, 2 modules of margin)."""
    return subprocess.run(["qrencode", "-t", "PNG", "-s", "8", "-m", "2", "-o", "-", text],
                          check=True, capture_output=True).stdout


def mx_hostname(domain: str) -> str:
    """The host name of the MX and of the mail servers (IP-literal relays: localhost)."""
    return domain if not domain.startswith("[") else "localhost"


def context(settings: Settings, qr: Callable[[str], bytes] | None = None) -> dict:
    """What the page templates use besides the settings themselves (``qr``: what makes
    the PNG QR code, :func:`qr_png` unless given)."""
    mode = registration.mode(settings)
    qr = qr or qr_png
    return dict(
        registration_mode=mode,
        dcaccount_url=dcaccount_url(settings),
        # The QR code is made only when the page shows it.
        qr_png_base64=base64.b64encode(qr(qr_text(settings))).decode() if mode == "open" else "",
        mailbox_quota_mib=settings.mailbox_quota // (1024 * 1024),
        mx_hostname=mx_hostname(settings.mail_domain),
        # the host clients connect to (autoconfig): a literal's bare address
        server_host=server_host(settings.mail_domain),
        privacy_contact=settings.privacy_contact,
        operator_lines=settings.privacy_postal.splitlines(),
        pdo_lines=settings.privacy_pdo.splitlines(),
        supervisor_lines=settings.privacy_supervisor.splitlines(),
    )


def render(settings: Settings, root: Path = paths.RENDERED) -> list[Path]:
    """Render the web pages only (e.g. after the registration mode changed)."""
    ctx = {**template_context(settings), **context(settings)}
    return renderer.render_all(ctx, root=root, only=PAGES)
