"""TLS on every port: 1.2 and 1.3 succeed; 1.0, 1.1 and weak TLS 1.2 ciphers are refused.

Every endpoint a client can reach: SMTP with STARTTLS on 25 and 587, implicit TLS
on 465 and 993, and port 443 for each protocol its multiplexer routes by ALPN
(the web server, IMAP, SMTP; each ends at a different TLS stack).
"""

import smtplib
import socket
import ssl
import subprocess
import threading

import pytest

from relaytest import insecure_tls

ENDPOINTS = {  # name: (container port, STARTTLS protocol, ALPN)
    "25": (25, "smtp", None),
    "587": (587, "smtp", None),
    "465": (465, None, None),
    "993": (993, None, None),
    "443-https": (443, None, None),
    "443-imap": (443, None, ["imap"]),
    "443-smtp": (443, None, ["smtp"]),
}

# TLS 1.2 cipher classes no endpoint may agree to, as OpenSSL cipher strings this
# machine's OpenSSL can offer (RC4, 3DES, DES and EXPORT it cannot offer at all:
# test_configured_cipher_lists_are_strong covers those, and PSK and SRP, from the
# server's side).
WEAK_CIPHERS = {
    "null-encryption": "eNULL",
    "anonymous": "aNULL",
    "static-rsa": "kRSA",
    "cbc-sha1": "SHA1",
    "cbc-sha2": "SHA256:SHA384:!AESGCM:!CHACHA20:!AESCCM",
    "camellia-aria": "CAMELLIA:ARIA",
}


def client(version_min=ssl.TLSVersion.TLSv1_2, version_max=ssl.TLSVersion.TLSv1_3,
           ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers((ciphers or "ALL") + ":@SECLEVEL=0")
    ctx.minimum_version = version_min
    ctx.maximum_version = version_max
    return ctx


def old_tls_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    return client(version, version)


def weak_cipher_client(ciphers: str) -> ssl.SSLContext:
    return client(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, ciphers)


def smtp_starttls(raw: socket.socket) -> None:
    """Greeting, EHLO and STARTTLS in clear text on ``raw``, up to the 220 that starts TLS."""
    f = raw.makefile("rb")
    assert f.readline().startswith(b"220")
    raw.sendall(b"EHLO test.example\r\n")
    while f.readline()[3:4] == b"-":
        pass
    raw.sendall(b"STARTTLS\r\n")
    assert f.readline().startswith(b"220")


def handshake(port: int, ctx: ssl.SSLContext, starttls: str | None = None,
              alpn: list[str] | None = None) -> tuple[str, str]:
    """(TLS version, cipher) the server agreed to."""
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if starttls == "smtp":
            smtp_starttls(raw)
        with ctx.wrap_socket(raw) as tls:
            return tls.version(), tls.cipher()[0]


def endpoint_handshake(relay, name: str, ctx: ssl.SSLContext) -> tuple[str, str]:
    port, starttls, alpn = ENDPOINTS[name]
    return handshake(relay.port(port), ctx, starttls, alpn)


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_modern_tls_succeeds(relay, name, version):
    ctx = insecure_tls()
    ctx.minimum_version = ctx.maximum_version = version
    got, cipher = endpoint_handshake(relay, name, ctx)
    assert got == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    if version == ssl.TLSVersion.TLSv1_2:
        assert cipher.startswith(("ECDHE-", "DHE-")) and ("GCM" in cipher or "CHACHA20" in cipher)


@pytest.fixture(scope="module")
def permissive_server(tmp_path_factory):
    """A control server that allows everything: this client can speak TLS 1.0 and 1.1
    and each weak cipher class with it, so a refusal below comes from the relay and
    not from this machine's OpenSSL."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=control", "-keyout", d / "k.pem", "-out", d / "c.pem"],
                   check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1
    server_ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()

    def serve():
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    yield port
    done.set()
    listener.close()


def test_control_server_speaks_old_versions_and_weak_ciphers(permissive_server):
    for version, name in ((ssl.TLSVersion.TLSv1, "TLSv1"), (ssl.TLSVersion.TLSv1_1, "TLSv1.1")):
        assert handshake(permissive_server, old_tls_client(version))[0] == name
    for weak, ciphers in WEAK_CIPHERS.items():
        version, cipher = handshake(permissive_server, weak_cipher_client(ciphers))
        assert version == "TLSv1.2" and cipher, weak


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_refused(relay, permissive_server, name, version):
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        endpoint_handshake(relay, name, old_tls_client(version))


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("weak", WEAK_CIPHERS)
def test_weak_ciphers_refused(relay, permissive_server, name, weak):
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        endpoint_handshake(relay, name, weak_cipher_client(WEAK_CIPHERS[weak]))


def test_configured_cipher_lists_are_strong(relay):
    """What each daemon's cipher list expands to in the container's own OpenSSL: forward
    secrecy and AEAD only (so no RC4, 3DES, DES, EXPORT, NULL, anonymous or CBC suite)."""
    lists = {
        "postfix": relay.exec("postconf", "-h", "tls_high_cipherlist").stdout.strip(),
        "dovecot": relay.exec("doveconf", "-h", "ssl_cipher_list").stdout.strip(),
        "nginx": relay.exec("sh", "-c", "sed -n 's/^ *ssl_ciphers \\(.*\\);/\\1/p' "
                                        "/etc/nginx/nginx.conf").stdout.strip(),
    }
    exclude = relay.exec("postconf", "-h", "smtpd_tls_exclude_ciphers").stdout.replace(",", " ").split()
    assert {"aNULL", "eNULL"} <= set(exclude)
    for daemon, ciphers in lists.items():
        assert ciphers, daemon
        out = relay.exec("openssl", "ciphers", "-v", ciphers).stdout.splitlines()
        tls12 = [line.split() for line in out if " TLSv1.2 " in line]
        assert tls12, daemon
        for name, _, kx, au, enc, mac in tls12:
            assert kx in ("Kx=ECDH", "Kx=DH"), (daemon, name)
            assert au in ("Au=RSA", "Au=ECDSA", "Au=DSS"), (daemon, name)
            assert enc.startswith(("Enc=AESGCM", "Enc=CHACHA20")), (daemon, name)
            assert mac == "Mac=AEAD", (daemon, name)


@pytest.mark.parametrize("port", [25, 587])
def test_starttls_offered(relay, port):
    with smtplib.SMTP("127.0.0.1", relay.port(port), timeout=10) as s:
        s.ehlo("test.example")
        assert s.has_extn("starttls")
        assert not s.has_extn("auth"), "no AUTH before TLS"


def test_port_25_requires_starttls(relay):
    """Other servers must use STARTTLS on port 25 (SPEC §6): no mail before it."""
    with smtplib.SMTP("127.0.0.1", relay.port(25), timeout=10) as s:
        s.ehlo("test.example")
        code, text = s.mail("someone@sender.example")
        assert code == 530 and b"STARTTLS" in text
        s.starttls(context=insecure_tls())
        s.ehlo("test.example")
        assert s.mail("someone@sender.example")[0] == 250


@pytest.mark.parametrize("name", ["25", "587", "465", "443-smtp"])
def test_postfix_issues_no_tls13_session_ticket(relay, name):
    """Postfix hands out no TLS 1.3 session tickets (NumTickets = 0 through its tls_config_file):
    OpenSSL writes each ticket as a record of its own after the handshake, and the SMTP reply
    written after them waited behind TCP's Nagle algorithm for the client's delayed ACK (40 ms
    per connection here, one round trip on a real network; issue 14's per-hop trace)."""
    port, starttls, alpn = ENDPOINTS[name]
    ctx = insecure_tls()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", relay.port(port)), timeout=10) as raw:
        if starttls:
            smtp_starttls(raw)
        with ctx.wrap_socket(raw) as tls:
            if starttls:
                tls.sendall(b"EHLO test.example\r\n")
            reply = tls.recv(4096)   # tickets, if any, come before this first reply
            assert reply[:3] in (b"220", b"250"), reply
            assert tls.version() == "TLSv1.3"
            assert tls.session is not None and not tls.session.has_ticket
