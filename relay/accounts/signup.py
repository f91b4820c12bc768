"""The relay's dynamic web endpoint, behind nginx on a UNIX socket.

``POST /new`` hands out a random address and password; the account itself is
created by the first login with them (relay.accounts.auth). ``GET /new`` sends a
browser on to the ``dcaccount:`` URL so that Delta Chat opens it. nginx limits
how often one IP address may ask.
"""

from __future__ import annotations

import json
import logging
from http.server import BaseHTTPRequestHandler
from urllib.parse import quote

from relay import counters, logs, paths
from relay import settings as settings_mod
from relay.accounts import store as accounts
from relay.settings import Settings
from relay.wire import unixhttp

log = logging.getLogger("relay-signup")


def new_account(settings: Settings) -> dict:
    """The JSON answer of ``POST /new`` (SPEC §2): ``{"email": "<local>@<domain>",
    "password": "<pw>"}``, a random local part of USERNAME_MAX_LENGTH characters and a random
    password (:func:`relay.accounts.store.random_password`), both ``a-z0-9``. Nothing is
    stored: the first login creates the account. With TLS_MODE=self-signed a ``"dclogin"`` URL
    (``dclogin:<email>?p=<pw>&v=1&ic=3``) is added, because Delta Chat refuses a self-signed
    certificate when it fetches ``/new`` itself (the reference relay adds the same URL in its
    self-signed mode, under the key ``dclogin_url``).
    """
    domain = settings.mail_domain
    email = f"{accounts.random_localpart(settings.username_max_length)}@{domain}"
    password = accounts.random_password(settings.password_min_length)
    answer = {"email": email, "password": password}
    if settings.tls_mode == "self-signed":
        # Delta Chat refuses self-signed certificates unless told: ic=3 accepts them.
        answer["dclogin"] = f"dclogin:{quote(email, safe='@')}?p={quote(password, safe='')}&v=1&ic=3"
    return answer


def dcaccount_url(settings: Settings) -> str:
    """The link a phone with Delta Chat opens to create an account here."""
    return f"dcaccount:https://{settings.mail_domain}/new"


def qr_text(settings: Settings) -> str:
    """What the home page's QR code says (upper-case scheme: a denser QR code)."""
    return f"DCACCOUNT:https://{settings.mail_domain}/new"


class Handler(BaseHTTPRequestHandler):
    """HTTP handler of relay-signup (one instance per request, on the UNIX socket nginx proxies
    ``/new`` to): ``POST /new`` answers JSON, ``GET``/``HEAD /new`` redirect to the
    ``dcaccount:`` URL, every other path is a JSON 404.
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
        """``POST /new``: 200 with :func:`new_account`'s JSON; 503 ``{"error": ...}`` while account
        creation is refused (ACCOUNT_CREATION off, ``relayctl accounts off``, or the machine
        short of resources: ``accounts.creation_refusal``); 404 for any other path. The query
        string is ignored.
        """
        if self.path.split("?")[0] != "/new":
            return self._json(404, {"error": "not found"})
        refusal = accounts.creation_refusal(self.settings)
        if refusal is not None:
            log.warning("/new refused: %s", refusal)
            counters.inc("chatmail_signups_total", outcome="refused")
            counters.inc("chatmail_account_refusals_total", reason=counters.refusal_reason(refusal))
            return self._json(503, {"error": "this relay does not create new accounts right now"})
        counters.inc("chatmail_signups_total", outcome="served")
        self._json(200, new_account(self.settings))

    def do_GET(self) -> None:
        """``GET /new`` (also HEAD): a 302 to ``dcaccount:https://<domain>/new`` with a small HTML
        link as body, so that a phone's browser hands the URL to Delta Chat; 404 elsewhere.
        """
        if self.path.split("?")[0] != "/new":
            return self._json(404, {"error": "not found"})
        url = dcaccount_url(self.settings)
        body = f'<!doctype html><a href="{url}">{url}</a>\n'.encode()
        self._send(302, body, "text/html; charset=utf-8", {"Location": url})

    do_HEAD = do_GET


def main() -> None:
    """relay-signup: read the settings and serve ``paths.SIGNUP_SOCKET`` for ever (threaded)."""
    settings = settings_mod.from_environment()
    logs.setup("relay-signup", settings.log_level, settings.log_format)
    counters.setup("relay-signup")
    Handler.settings = settings
    unixhttp.serve(Handler, paths.SIGNUP_SOCKET, log)


if __name__ == "__main__":
    main()
