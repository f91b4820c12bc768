"""relay.accounts.signup, the /new handler (SPEC §2), on a real UNIX socket with the
threaded server nginx proxies to; the machine's load and free space are fakes."""

import http.client
import json
import re
import socket
import threading

import pytest

from relay import paths, settings
from relay.accounts import signup
from relay.accounts import store as accounts
from relay.wire import unixhttp

DOMAIN = "chat.example.org"


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """An idle machine with room to spare, and the operator's off switch in tmp_path."""
    monkeypatch.setattr(paths, "NOCREATE_FLAG", tmp_path / "account-creation-off")
    monkeypatch.setattr(paths, "REGISTRATION_OVERRIDE", tmp_path / "registration")
    monkeypatch.setattr(accounts.system, "load_average", lambda: 0.1)
    monkeypatch.setattr(accounts.system, "available_memory", lambda: 8 << 30)
    monkeypatch.setattr(accounts.system, "free_disk", lambda path: 100 << 30)
    return tmp_path


@pytest.fixture
def serve(machine, monkeypatch):
    """serve(env) -> request(method, url): one relay-signup with these settings."""
    servers = []

    def start(env=None):
        values = settings.load({"MAIL_DOMAIN": DOMAIN, **(env or {})})
        monkeypatch.setattr(signup.Handler, "settings", values, raising=False)
        path = machine / f"http{len(servers)}.sock"
        server = unixhttp.Server(str(path), signup.Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()

        def request(method, url="/new"):
            conn = http.client.HTTPConnection("localhost", timeout=10)
            conn.sock = socket.socket(socket.AF_UNIX)
            conn.sock.connect(str(path))
            conn.request(method, url, body=b"" if method == "POST" else None)
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            return resp.status, dict(resp.getheaders()), body
        return request

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_post_new_hands_out_an_address_and_a_password(serve):
    request = serve({"TLS_MODE": "acme"})
    status, headers, body = request("POST")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    answer = json.loads(body)
    assert set(answer) == {"email", "password"}
    assert re.fullmatch(r"[a-z0-9]{9}@" + re.escape(DOMAIN), answer["email"])
    assert len(answer["password"]) >= 9 + 3
    assert re.fullmatch(r"[a-z0-9]+", answer["password"])


def test_each_post_gets_a_new_account(serve):
    request = serve({"TLS_MODE": "acme"})
    answers = [json.loads(request("POST")[2]) for _ in range(5)]
    assert len({a["email"] for a in answers}) == 5
    assert len({a["password"] for a in answers}) == 5


def test_lengths_follow_the_settings(serve):
    request = serve({"TLS_MODE": "acme", "USERNAME_MIN_LENGTH": "5", "USERNAME_MAX_LENGTH": "12",
                     "PASSWORD_MIN_LENGTH": "30"})
    answer = json.loads(request("POST")[2])
    assert len(answer["email"].partition("@")[0]) == 12
    assert len(answer["password"]) == 33


def test_a_self_signed_relay_adds_a_dclogin_url(serve):
    """Delta Chat refuses a self-signed certificate when it fetches /new itself; the
    dclogin: URL with ic=3 tells it to accept one (tests/e2e use it)."""
    request = serve({"TLS_MODE": "self-signed"})
    answer = json.loads(request("POST")[2])
    assert set(answer) == {"email", "password", "dclogin", "dclogin_url"}  # issue 17: both keys
    assert answer["dclogin"] == (f"dclogin:{answer['email']}?p={answer['password']}&v=1&ic=3")
    assert answer["dclogin_url"] == answer["dclogin"]


@pytest.mark.parametrize("env,flag", [({"ACCOUNT_CREATION": "off"}, False),
                                      ({}, True)])
def test_no_account_while_creation_is_off(serve, machine, env, flag):
    """Registration closed (here by its old names: ACCOUNT_CREATION=off, and the flag file
    of the old `relayctl accounts off`): 403 with the reason Delta Chat shows its user."""
    if flag:
        (machine / "account-creation-off").touch()  # relayctl accounts off, before REGISTRATION
    request = serve({"TLS_MODE": "acme", **env})
    status, headers, body = request("POST")
    assert status == 403
    answer = json.loads(body)
    assert answer["reason"] == "This relay does not accept new accounts."
    assert answer["code"] == "closed"


def test_no_account_while_the_machine_is_short_of_memory(serve, monkeypatch):
    monkeypatch.setattr(accounts.system, "available_memory", lambda: 100 << 20)
    request = serve({"TLS_MODE": "acme"})
    assert request("POST")[0] == 503


def test_get_new_sends_a_browser_to_the_dcaccount_url(serve):
    request = serve({"TLS_MODE": "acme"})
    status, headers, body = request("GET")
    url = f"dcaccount:https://{DOMAIN}/new"
    assert status == 302
    assert headers["Location"] == url
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert f'href="{url}"'.encode() in body
    assert int(headers["Content-Length"]) == len(body)
    assert request("GET", "/new?x=1")[1]["Location"] == url


def test_head_new_answers_like_get_without_a_body(serve):
    request = serve({"TLS_MODE": "acme"})
    status, headers, body = request("HEAD")
    assert status == 302 and body == b""
    assert headers["Location"] == f"dcaccount:https://{DOMAIN}/new"
    assert int(headers["Content-Length"]) == len(request("GET")[2])


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_other_paths_are_not_found(serve, method):
    request = serve({"TLS_MODE": "acme"})
    status, headers, body = request(method, "/new/other")
    assert status == 404
    if method != "HEAD":
        assert json.loads(body) == {"error": "not found"}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_other_methods_are_405_with_allow(serve, method):
    request = serve()
    status, headers, body = request(method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD, POST"
    assert json.loads(body) == {"error": f"method {method} not allowed here"}


def test_a_malformed_request_is_400_in_json(serve, machine):
    serve()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(machine / "http0.sock"))
        sock.sendall(b"GET /new with spaces HTTP/1.1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 400 ")
    assert b"Content-Type: application/json" in head
    assert "error" in json.loads(body)


def test_the_qr_code_and_link_name_new():
    values = settings.load({"MAIL_DOMAIN": DOMAIN})
    assert signup.qr_text(values) == f"DCACCOUNT:https://{DOMAIN}/new"
    assert signup.dcaccount_url(values) == f"dcaccount:https://{DOMAIN}/new"


def test_the_first_relays_cgi_path_is_the_same_endpoint(serve):
    """Issue 17: printed QR codes of early relays point at /cgi-bin/newemail.py, and
    Delta Chat follows no redirects: the same answers as /new, GET and POST."""
    request = serve({"TLS_MODE": "self-signed"})
    status, _, body = request("POST", "/cgi-bin/newemail.py")
    answer = json.loads(body)
    assert status == 200 and set(answer) == {"email", "password", "dclogin", "dclogin_url"}
    status, headers, _ = request("GET", "/cgi-bin/newemail.py")
    assert status == 302 and headers["Location"] == f"dcaccount:https://{DOMAIN}/new"
