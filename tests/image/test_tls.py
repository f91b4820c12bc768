"""TLS on every port: 1.2 and 1.3 succeed, 1.0 and 1.1 are refused by the server."""

import smtplib
import socket
import ssl
import threading

import pytest

from relaytest import insecure_tls


def old_tls_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.minimum_version = version
    ctx.maximum_version = version
    return ctx


def handshake(port: int, ctx: ssl.SSLContext, starttls: str | None = None) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        if starttls == "smtp":
            f = raw.makefile("rb")
            assert f.readline().startswith(b"220")
            raw.sendall(b"EHLO test.example\r\n")
            while (line := f.readline())[3:4] == b"-":
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
        with ctx.wrap_socket(raw) as tls:
            return tls.version()


IMPLICIT = [465, 993, 443]
STARTTLS = [25, 587]


@pytest.mark.parametrize("port", IMPLICIT + STARTTLS)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_modern_tls_succeeds(relay, port, version):
    ctx = insecure_tls()
    ctx.minimum_version = ctx.maximum_version = version
    got = handshake(relay.port(port), ctx, "smtp" if port in STARTTLS else None)
    assert got == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


@pytest.fixture(scope="module")
def old_tls_works_here(tmp_path_factory):
    """A control: this client can speak TLS 1.0 and 1.1 with a server that allows them,
    so a refusal below comes from the relay and not from this machine's OpenSSL."""
    d = tmp_path_factory.mktemp("tls")
    import subprocess
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=control", "-keyout", d / "k.pem", "-out", d / "c.pem"],
                   check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.set_ciphers("ALL:@SECLEVEL=0")
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1
    server_ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    versions = [handshake(port, old_tls_client(v)) for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)]
    listener.close()
    assert versions == ["TLSv1", "TLSv1.1"]


@pytest.mark.parametrize("port", IMPLICIT + STARTTLS)
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_refused(relay, old_tls_works_here, port, version):
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(relay.port(port), old_tls_client(version), "smtp" if port in STARTTLS else None)


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
