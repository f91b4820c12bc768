"""The relay's dynamic web endpoint, behind nginx on a UNIX socket.

``POST /new`` hands out a random address and password; the account itself is
created by the first login with them (relay.accounts.auth). ``GET /new`` sends a
browser on to the ``dcaccount:`` URL so that Delta Chat opens it. nginx limits
how often one IP address may ask. ``/cgi-bin/newemail.py`` is the same endpoint:
the QR codes of early relays point there, and Delta Chat follows no redirects.
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler

from relay import logs, paths
from relay import settings as settings_mod
from relay.accounts import store as accounts
from relay.accounts.links import dcaccount_url, dclogin_url, qr_text
from relay.settings import Settings
from relay.wire import unixhttp

log = logging.getLogger("relay-signup")


def new_account(settings: Settings) -> dict:
    """The JSON answer of ``POST /new`` (SPEC §2): ``{"email": "<local>@<domain>",
    "password": "<pw>"}``, a random local part of USERNAME_MAX_LENGTH characters and a random
    password (:func:`relay.accounts.store.random_password`), both ``a-z0-9``. Nothing is
    stored: the first login creates the account. With TLS_MODE=self-signed a login URL
    (``dclogin:<email>?p=<pw>&v=1[&ih=<ip>&sh=<ip>]&ic=3``, :func:`relay.accounts.links.dclogin_url`)
    is added under the key ``dclogin_url`` (the reference relay's name, which its web page and
    tools read) and under ``dclogin`` (this relay's older name), because Delta Chat refuses a
    self-signed certificate when it fetches ``/new`` itself.
    """
    domain = settings.mail_domain
    email = f"{accounts.random_localpart(settings.username_max_length)}@{domain}"
    password = accounts.random_password(settings.password_min_length)
    answer = {"email": email, "password": password}
    if settings.tls_mode == "self-signed":
        # Delta Chat refuses self-signed certificates unless told: ic=3 accepts them.
        # "dclogin_url" is the reference relay's key (its web page and tools read it);
        # "dclogin" is this relay's older name for the same link.
        answer["dclogin_url"] = answer["dclogin"] = dclogin_url(settings, email, password)
    return answer


__all__ = ["new_account", "dcaccount_url", "qr_text", "ENDPOINTS", "Handler", "main"]

# The paths that hand out accounts: /new, and the path of the first relays' QR codes.
ENDPOINTS = ("/new", "/cgi-bin/newemail.py")


class Handler(BaseHTTPRequestHandler):
    """HTTP handler of relay-signup (one instance per request, on the UNIX socket nginx proxies
    ``/new`` and ``/cgi-bin/newemail.py`` to): ``POST`` answers JSON, ``GET``/``HEAD`` redirect
    to the ``dcaccount:`` URL, every other path is a JSON 404.
    """
    server_version = "chatmail"
    sys_version = ""
    settings: Settings  # set by main() before the server starts

    def address_string(self) -> str:  # UNIX socket: no client address, and we log none
        """The client's address for http.server's messages: "-" (a UNIX socket has none, and we log
        none).
        """
        return "-"

    def log_message(self, format: str, *args) -> None:  # no per-request logs (privacy)
        """Log nothing per request (no client addresses or request lines in the logs)."""
        pass

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def do_POST(self) -> None:
        """``POST /new`` (or ``/cgi-bin/newemail.py``): 200 with :func:`new_account`'s JSON; 503 ``{"error": ...}`` while account
        creation is refused (ACCOUNT_CREATION off, ``relayctl accounts off``, or the machine
        short of resources: ``accounts.creation_refusal``); 404 for any other path. The query
        string is ignored.
        """
        if self.path.split("?")[0] not in ENDPOINTS:
            return self._json(404, {"error": "not found"})
        refusal = accounts.creation_refusal(self.settings)
        if refusal is not None:
            log.warning("/new refused: %s", refusal)
            return self._json(503, {"error": "this relay does not create new accounts right now"})
        self._json(200, new_account(self.settings))

    def do_GET(self) -> None:
        """``GET /new`` or ``/cgi-bin/newemail.py`` (also HEAD): a 302 to ``dcaccount:https://<domain>/new`` with a small HTML
        link as body, so that a phone's browser hands the URL to Delta Chat; 404 elsewhere.
        """
        if self.path.split("?")[0] not in ENDPOINTS:
            return self._json(404, {"error": "not found"})
        url = dcaccount_url(self.settings)
        body = f'<!doctype html><a href="{url}">{url}</a>\n'.encode()
        self._send(302, body, "text/html; charset=utf-8", {"Location": url})

    do_HEAD = do_GET


def main() -> None:
    """relay-signup: read the settings and serve ``paths.SIGNUP_SOCKET`` for ever (threaded)."""
    settings = settings_mod.from_environment()
    logs.setup("relay-signup", settings.log_level, settings.log_format)
    Handler.settings = settings
    unixhttp.serve(Handler, paths.SIGNUP_SOCKET, log)


if __name__ == "__main__":
    main()
