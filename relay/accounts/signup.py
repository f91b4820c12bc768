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

from relay import logs, paths
from relay import settings as settings_mod
from relay.accounts import store as accounts
from relay.settings import Settings
from relay.wire import unixhttp

log = logging.getLogger("relay-signup")


def new_account(settings: Settings) -> dict:
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
    server_version = "chatmail"
    sys_version = ""
    settings: Settings  # set by main() before the server starts

    def address_string(self) -> str:  # UNIX socket: no client address, and we log none
        return "-"

    def log_message(self, format: str, *args) -> None:  # no per-request logs (privacy)
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
        if self.path.split("?")[0] != "/new":
            return self._json(404, {"error": "not found"})
        refusal = accounts.creation_refusal(self.settings)
        if refusal is not None:
            log.warning("/new refused: %s", refusal)
            return self._json(503, {"error": "this relay does not create new accounts right now"})
        self._json(200, new_account(self.settings))

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/new":
            return self._json(404, {"error": "not found"})
        url = dcaccount_url(self.settings)
        body = f'<!doctype html><a href="{url}">{url}</a>\n'.encode()
        self._send(302, body, "text/html; charset=utf-8", {"Location": url})

    do_HEAD = do_GET


def main() -> None:
    settings = settings_mod.from_environment()
    logs.setup("relay-signup", settings.log_level, settings.log_format)
    Handler.settings = settings
    unixhttp.serve(Handler, paths.SIGNUP_SOCKET, log)


if __name__ == "__main__":
    main()
