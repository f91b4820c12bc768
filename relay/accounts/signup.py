"""The relay's dynamic web endpoint, behind nginx on a UNIX socket.

``POST /new`` hands out a random address and password; the account itself is
created by the first login with them (relay.accounts.auth). ``GET /new`` sends a
browser on to the ``dcaccount:`` URL so that Delta Chat opens it. nginx limits
how often one IP address may ask. ``/cgi-bin/newemail.py`` is the same endpoint:
the QR codes of early relays point there, and Delta Chat follows no redirects.

The registration mode (relay.accounts.registration) changes the answers: when
closed, ``/new`` refuses (403); in invite mode it needs ``?invite=<token>``,
and relay.accounts.auth uses the invite up and creates the account before the
answer goes out. A refusal is JSON ``{"reason": ...}``, the form Delta Chat
shows its user (chatmail/core ``src/qr.rs`` ``CreateAccountErrorResponse``).
"""

from __future__ import annotations

import json
import logging

from relay import counters, paths
from relay.accounts import events, invites, registration
from relay.accounts import store as accounts
from relay.accounts.links import dcaccount_url, dclogin_url, qr_text
from relay.settings import Settings
from relay.wire import socketmap, unixhttp

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
    return answer(settings, email, accounts.random_password(settings.password_min_length))


def answer(settings: Settings, email: str, password: str) -> dict:
    """The JSON of a successful ``/new``: email, password (and the dclogin URL when
    the certificate is self-signed)."""
    result = {"email": email, "password": password}
    if settings.tls_mode == "self-signed":
        # Delta Chat refuses self-signed certificates unless told: ic=3 accepts them.
        # "dclogin_url" is the reference relay's key (its web page and tools read it);
        # "dclogin" is this relay's older name for the same link.
        result["dclogin_url"] = result["dclogin"] = dclogin_url(settings, email, password)
    return result


def refusal(status: int, reason: str, text: str) -> tuple[int, dict]:
    """A refused ``/new``: (``status``, JSON with ``reason``, the sentence Delta Chat shows,
    ``error``, the same for older scripts, and ``code``, the reason key of
    relay.accounts.events.REASONS)."""
    return status, {"reason": text, "error": text, "code": reason}


def post_new(settings: Settings, query: str) -> tuple[int, dict]:
    """What ``POST /new?<query>`` answers: (HTTP status, JSON). Open: random credentials
    (the first login creates the account); closed: 403; short of resources: 503; invite
    mode: relay-auth uses the invite of ``query`` up and creates the account (200 with its
    credentials), or says why not (403, or 503 when relay-auth cannot be reached)."""
    current = registration.mode(settings)
    if current != "invite":
        decision = registration.decide(settings, "new")
        if not decision.allowed:
            return refusal(503 if decision.temporary else 403, decision.reason, decision.text)
        return 200, new_account(settings)
    token = invites.token_from_query(query)
    if not token:
        events.refused("invite_missing", "new")
        return refusal(403, "invite_missing", registration.TEXTS["invite_missing"])
    try:
        reply = socketmap.query(str(paths.SIGNUP_AUTH_SOCKET), f"invite {token}")
    except OSError as exc:
        log.error("relay-auth did not answer: %s", exc)
        return refusal(503, "internal", "Please try again later.")
    kind, _, rest = reply.partition(" ")
    if kind == "OK":
        created = json.loads(rest)
        return 200, answer(settings, created["email"], created["password"])
    reason, _, text = rest.partition(" ")
    return refusal(403 if kind == "PERM" else 503, reason, text or "Please try again later.")


__all__ = ["new_account", "dcaccount_url", "qr_text", "ENDPOINTS", "Handler", "main"]

# The paths that hand out accounts: /new, and the path of the first relays' QR codes.
ENDPOINTS = ("/new", "/cgi-bin/newemail.py")


class Handler(unixhttp.QuietHandler):
    """HTTP handler of relay-signup (one instance per request, on the UNIX socket nginx proxies
    ``/new`` and ``/cgi-bin/newemail.py`` to): ``POST`` answers JSON, ``GET``/``HEAD`` redirect
    to the ``dcaccount:`` URL, every other path is a JSON 404.
    """
    settings: Settings  # set by main() before the server starts

    def _json(self, status: int, payload: dict) -> None:
        self.send_body(status, json.dumps(payload).encode(), "application/json")

    def do_POST(self) -> None:
        """``POST /new[?invite=<token>]`` (or ``/cgi-bin/newemail.py``): (HTTP status, JSON)
        from :func:`post_new`; a JSON 404 for any other path."""
        path, _, query = self.path.partition("?")
        if path not in ENDPOINTS:
            return self._json(404, {"error": "not found"})
        status, payload = post_new(self.settings, query)
        counters.inc("chatmail_signups_total", outcome="served" if status == 200 else "refused")
        if status != 200:
            log.info("/new refused: %s", payload["code"])
        self._json(status, payload)

    def do_GET(self) -> None:
        """``GET /new`` or ``/cgi-bin/newemail.py`` (also HEAD): a 302 to ``dcaccount:https://<domain>/new`` (with the
        ``?invite=<token>`` of the request in invite mode) and a small HTML link as body, so
        that a phone's browser hands the URL to Delta Chat; 403 with the reason as HTML when
        registration is closed or, in invite mode, without a well-formed invite; 404 elsewhere.
        """
        path, _, query = self.path.partition("?")
        if path not in ENDPOINTS:
            return self._json(404, {"error": "not found"})
        current = registration.mode(self.settings)
        token = invites.token_from_query(query) if current == "invite" else ""
        if current == "closed" or (current == "invite" and not invites.TOKEN_RE.match(token)):
            text = registration.TEXTS["closed" if current == "closed" else
                                      "invite_unknown" if token else "invite_missing"]
            body = f"<!doctype html><p>{text}</p>\n".encode()
            return self.send_body(403, body, "text/html; charset=utf-8")
        url = dcaccount_url(self.settings) + (f"?invite={token}" if token else "")
        body = f'<!doctype html><a href="{url}">{url}</a>\n'.encode()
        self.send_body(302, body, "text/html; charset=utf-8", {"Location": url})

    do_HEAD = do_GET


def main() -> None:
    """relay-signup: read the settings and serve ``paths.SIGNUP_SOCKET`` for ever (threaded)."""
    unixhttp.run_service("relay-signup", Handler, paths.SIGNUP_SOCKET)


if __name__ == "__main__":
    main()
