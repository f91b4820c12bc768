"""Federation on the test network: two relays, a classic mail server, real DNS and ACME.

    relay-a.test  (our image, TLS_MODE=acme, certificate from pebble)
    relay-b.test  (our image, the same)
    classic.test  (Debian's Postfix; MX mail.classic.test; STARTTLS with a certificate
                   of the test CA; one local mailbox, carol)

NSD serves each domain's A, MX, SPF, DKIM, DMARC and MTA-STS records. The relays
trust pebble's own CA and the root pebble issues from (fetched from its management
API before they start), so they verify each other's certificates and the classic
server's exactly as on the internet. Used by tests/federation/ and `make bench`.
"""

from __future__ import annotations

import base64
import contextlib
import re
import shlex
import subprocess

from relaytest import Relay, docker, wait_for
from testnet import TestNet, build_tools_image

A_DOMAIN, B_DOMAIN, CLASSIC_DOMAIN = "relay-a.test", "relay-b.test", "classic.test"
CLASSIC_MX = f"mail.{CLASSIC_DOMAIN}"
A_HOST, B_HOST, CLASSIC_HOST = 10, 11, 12
CLASSIC_USER = "carol"
CLASSIC_SELECTOR = "test"
RELAY_ENV = {
    "TLS_MODE": "acme",
    "MAX_MESSAGE_SIZE": "2M",          # small, so the size refusals are cheap to test
    "NEW_ACCOUNTS_PER_MINUTE": "6000",
    "CREATE_MAX_LOAD": "1000",         # a busy shared test machine must not stop /new
    "METRICS_LISTEN": "0.0.0.0:9100",  # scraped from the test network (tests/federation/test_metrics.py)
}

CLASSIC_SETUP = """
set -eu
useradd -m {user}
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
postconf -e myhostname={mx} mydomain={domain} myorigin={domain} \
  'mydestination={domain}, {mx}, localhost' inet_interfaces=all inet_protocols=ipv4 \
  home_mailbox=Maildir/ alias_maps= alias_database= mynetworks=127.0.0.0/8 \
  maillog_file=/dev/stdout compatibility_level=3.6 \
  'smtpd_tls_chain_files=/certs/key.pem, /certs/cert.pem' smtpd_tls_security_level=may \
  smtp_tls_security_level=may smtpd_tls_loglevel=1 smtp_tls_loglevel=1
postconf -F '*/*/chroot = n'
exec postfix start-fg
"""


def txt_strings(value: str) -> str:
    """A TXT value as zone-file strings of at most 255 characters each."""
    return " ".join(f'"{value[i:i + 250]}"' for i in range(0, len(value), 250))


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Federation:
    __test__ = False

    def __init__(self, peers: tuple = ()) -> None:
        """``peers``: classes of further test peers (e.g. refpeer.RefPeer), each made as
        ``Peer(net)`` and started with ``.start()`` before the relays start, so their DNS
        zones are in place; found afterwards as ``self.peers[Peer.name]``."""
        self.peer_types = tuple(peers)
        self.peers: dict[str, object] = {}
        self.net: TestNet | None = None
        self.a: Relay | None = None
        self.b: Relay | None = None
        self.classic = ""
        self.zone_lines: dict[str, list[str]] = {}
        self.classic_dkim_key = b""

    # --- building it ------------------------------------------------------------------

    def start(self) -> "Federation":
        build_tools_image()
        self.net = net = TestNet()
        net.start_dns()
        net.start_pebble()
        # Relays verify each other against pebble's issuing root: one CA file with both.
        ca = net.extra_ca_file
        ca.write_text(ca.read_text() + net.pebble_roots())
        self._start_classic()
        for kind in self.peer_types:
            self.peers[kind.name] = kind(net).start()
        self.a = net.relay(A_DOMAIN, A_HOST, dict(RELAY_ENV)).start()
        self.b = net.relay(B_DOMAIN, B_HOST, dict(RELAY_ENV)).start()
        for relay in (self.a, self.b):
            relay.wait_healthy(180)
            # Publish exactly what the relay asks for (relayctl dns), then let it check.
            zone = relay.exec("relayctl", "dns").stdout
            self.zone_lines[relay.domain] = [line for line in zone.splitlines()
                                             if line.strip() and not line.startswith(";")]
            self.publish(relay.domain)
        for relay in (self.a, self.b):
            check = relay.exec("relayctl", "dns", "--check", check=False)
            assert check.returncode == 0, check.stdout + check.stderr
        roots = net.pebble_roots()
        for relay in (self.a, self.b):
            wait_for(lambda: self.verified(relay, roots), 180, 1,
                     f"{relay.domain} serving a pebble certificate on 443 and 25")
        return self

    def publish(self, domain: str, dkim_value: str | None = None) -> None:
        """(Re)publish a relay's zone as `relayctl dns` printed it; with ``dkim_value``,
        another DKIM key in place of the relay's own."""
        lines = self.zone_lines[domain]
        if dkim_value is not None:
            lines = [f"chatmail._domainkey.{domain}. 3600 IN TXT {txt_strings(dkim_value)}"
                     if "._domainkey." in line else line for line in lines]
        self.net.set_zone(domain, lines)

    def verified(self, relay: Relay, roots: str) -> bool:
        """Port 443 and STARTTLS on 25 present a certificate that chains to pebble's root
        and names the relay (smtplib would check 127.0.0.1: STARTTLS by hand)."""
        import socket
        import ssl
        ctx = ssl.create_default_context(cadata=roots)
        with socket.create_connection(("127.0.0.1", relay.port(443)), 10) as raw:
            with ctx.wrap_socket(raw, server_hostname=relay.domain):
                pass
        with socket.create_connection(("127.0.0.1", relay.port(25)), 10) as raw:
            f = raw.makefile("rb")
            f.readline()
            raw.sendall(b"EHLO check.test\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            raw.sendall(b"STARTTLS\r\n")
            f.readline()
            with ctx.wrap_socket(raw, server_hostname=relay.domain):
                pass
        return True

    def _start_classic(self) -> None:
        net = self.net
        certs = net.dir / "classic"
        certs.mkdir()
        ca = net.dir / "pebble"
        # The certificate is issued by the test CA that the relays trust (EXTRA_CA_FILE).
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={CLASSIC_MX}",
                "-keyout", str(certs / "key.pem"), "-out", str(certs / "csr.pem"))
        (certs / "ext.cnf").write_text(f"subjectAltName=DNS:{CLASSIC_MX}\n")
        openssl("x509", "-req", "-in", str(certs / "csr.pem"), "-CA", str(ca / "ca.pem"),
                "-CAkey", str(ca / "ca.key"), "-CAcreateserial", "-days", "2",
                "-extfile", str(certs / "ext.cnf"), "-out", str(certs / "cert.pem"))
        # The classic domain's DKIM key: the tests sign its mail with dkimpy.
        openssl("genrsa", "-out", str(certs / "dkim.pem"), "2048")
        self.classic_dkim_key = (certs / "dkim.pem").read_bytes()
        der = subprocess.run(["openssl", "rsa", "-in", str(certs / "dkim.pem"), "-pubout",
                              "-outform", "DER"], check=True, capture_output=True).stdout
        for f in certs.iterdir():
            f.chmod(0o644)
        ip = net.ip(CLASSIC_HOST)
        dkim_value = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
        net.set_zone(CLASSIC_DOMAIN, [
            f"{CLASSIC_DOMAIN}. IN MX 10 {CLASSIC_MX}.", f"{CLASSIC_MX}. IN A {ip}",
            f'{CLASSIC_DOMAIN}. IN TXT "v=spf1 mx ~all"',
            f"{CLASSIC_SELECTOR}._domainkey.{CLASSIC_DOMAIN}. IN TXT {txt_strings(dkim_value)}",
            f'_dmarc.{CLASSIC_DOMAIN}. IN TXT "v=DMARC1;p=none"'])
        script = CLASSIC_SETUP.format(user=CLASSIC_USER, mx=CLASSIC_MX, domain=CLASSIC_DOMAIN)
        self.classic = net.run("classic", CLASSIC_HOST, "-v", f"{certs}:/certs:ro",
                               "--hostname", CLASSIC_MX, command=("sh", "-c", script))
        wait_for(lambda: "daemon started" in self.classic_logs(), 60, 0.3,
                 "the classic Postfix running")

    def close(self) -> None:
        if self.net is not None:
            self.net.close()

    @contextlib.contextmanager
    def https_down(self):
        """Both relays without port 443 (nginx stopped); port 25 stays up."""
        for relay in (self.a, self.b):
            docker("exec", relay.name, "supervisorctl", "stop", "nginx")
        try:
            yield
        finally:
            for relay in (self.a, self.b):
                docker("exec", relay.name, "supervisorctl", "start", "nginx", check=False)
                # relay-mxsend asks a host that needed SMTP over HTTPS again only after
                # 30 minutes; SIGHUP makes it forget, for the tests that follow.
                docker("exec", relay.name, "supervisorctl", "signal", "HUP", "relay-mxsend",
                       check=False)
            for relay in (self.a, self.b):
                relay.wait_healthy(60)

    # --- the classic server -----------------------------------------------------------

    def classic_logs(self) -> str:
        out = docker("logs", self.classic, check=False)
        return out.stdout + out.stderr

    def classic_send(self, sender: str, recipient: str, data: bytes) -> None:
        """Hand a message to the classic server's sendmail; its Postfix delivers it."""
        docker("exec", "-i", self.classic, "sh", "-c",
               f"/usr/sbin/sendmail -i -f {shlex.quote(sender)} {shlex.quote(recipient)}",
               input=data.decode())

    def classic_messages(self) -> list[bytes]:
        names = docker("exec", self.classic, "sh", "-c",
                       f"ls /home/{CLASSIC_USER}/Maildir/new/ 2>/dev/null; true").stdout.split()
        return [docker("exec", self.classic, "cat",
                       f"/home/{CLASSIC_USER}/Maildir/new/{n}").stdout.encode() for n in names]

    # --- DNS helpers for dkimpy ---------------------------------------------------------

    def txt_lookup(self, name: bytes, timeout: float = 5) -> bytes | None:
        answers = self.net.query(name.decode().rstrip("."), "TXT")
        if not answers:
            return None
        return "".join(re.findall(r'"([^"]*)"', answers[0])).encode()


def dc_account(dc, relay: Relay):
    """A Delta Chat profile with an account from the relay's /new. The relays' certificates
    come from pebble, which the core does not trust: it accepts them without checks
    (TESTING.md); relay-to-relay traffic is verified."""
    answer = relay.new_account()
    account = dc.add_account()
    account.add_or_update_transport({
        "addr": answer["email"], "password": answer["password"],
        "imapServer": "127.0.0.1", "imapPort": relay.port(993), "imapSecurity": "ssl",
        "smtpServer": "127.0.0.1", "smtpPort": relay.port(465), "smtpSecurity": "ssl",
        "certificateChecks": "acceptInvalidCertificates"})
    account.bring_online()
    return account


def existing_account(relay: Relay) -> dict:
    """An account from /new that exists (its first IMAP login created it)."""
    import imaplib
    from relaytest import insecure_tls
    answer = relay.new_account()
    imap = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    imap.login(answer["email"], answer["password"])
    imap.logout()
    return answer


def log_lines(relay: Relay, needle: str) -> list[str]:
    return [line for line in relay.logs().splitlines() if needle in line]


def wait_log(relay: Relay, pattern: str, timeout: float = 60, after: int = 0) -> list[str]:
    """Log lines matching ``pattern`` (a regular expression), once more than ``after`` exist."""
    rx = re.compile(pattern)

    def found():
        lines = [line for line in relay.logs().splitlines() if rx.search(line)]
        return lines if len(lines) > after else None

    return wait_for(found, timeout, 0.3, f"{relay.name} log /{pattern}/")



# --- messages the tests build -----------------------------------------------------------

def vcard_key(vcard: str) -> bytes:
    """The OpenPGP public key (binary) of a Delta Chat vCard."""
    unfolded = re.sub(r"\r?\n[ \t]", "", vcard)
    match = re.search(r"KEY:data:application/pgp-keys;base64\\?,([A-Za-z0-9+/=]+)", unfolded)
    if not match:
        raise ValueError("no key in the vCard")
    return base64.b64decode(match.group(1))


def gpg_encrypt(recipient_key: bytes, plaintext: bytes, sender: str) -> tuple[str, bytes]:
    """Sign and encrypt ``plaintext`` with GnuPG, as a classic OpenPGP mail client would:
    a fresh key for ``sender`` signs, the message is encrypted to ``recipient_key`` and the
    sender's key. Returns (ASCII-armored message, the sender's public key for Autocrypt)."""
    import tempfile
    with tempfile.TemporaryDirectory() as home:
        gpg = ["gpg", "--homedir", home, "--batch", "--no-tty", "--quiet", "--passphrase", ""]

        def fingerprints() -> list[str]:
            out = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True,
                                 capture_output=True, text=True).stdout
            return [line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:")]

        subprocess.run([*gpg, "--quick-generate-key", f"<{sender}>", "ed25519", "sign", "never"],
                       check=True, capture_output=True)
        own = fingerprints()[0]
        subprocess.run([*gpg, "--quick-add-key", own, "cv25519", "encr", "never"], check=True,
                       capture_output=True)
        sender_fprs = set(fingerprints())
        public = subprocess.run([*gpg, "--export", own], check=True, capture_output=True).stdout
        subprocess.run([*gpg, "--import"], input=recipient_key, check=True, capture_output=True)
        theirs = next(f for f in fingerprints() if f not in sender_fprs)
        armored = subprocess.run([*gpg, "--trust-model", "always", "--armor", "--sign", "--encrypt",
                                  "--local-user", own, "--recipient", theirs, "--recipient", own],
                                 input=plaintext, check=True, capture_output=True).stdout.decode()
        return armored, public


def autocrypt_header(address: str, public_key: bytes) -> str:
    data = base64.b64encode(public_key).decode()
    folded = "\r\n ".join(data[i:i + 72] for i in range(0, len(data), 72))
    return f"Autocrypt: addr={address}; prefer-encrypt=mutual; keydata=\r\n {folded}"


def openpgp_mime(sender: str, recipient: str, armored: str, marker: str,
                 extra_headers: tuple[str, ...] = ()) -> bytes:
    """An RFC 3156 message around ``armored`` (CRLF line ends)."""
    import email.utils
    lines = [*extra_headers, f"From: <{sender}>", f"To: <{recipient}>", "Subject: [...]",
             f"Date: {email.utils.formatdate()}",
             f"Message-ID: <{marker}@{sender.rpartition('@')[2]}>", "MIME-Version: 1.0",
             'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
             'boundary="enc-boundary"', "", "--enc-boundary",
             "Content-Type: application/pgp-encrypted", "", "Version: 1", "", "--enc-boundary",
             'Content-Type: application/octet-stream; name="encrypted.asc"', "",
             *armored.strip().splitlines(), "", "--enc-boundary--", ""]
    return "\r\n".join(lines).encode()


def dkim_sign(data: bytes, domain: str, selector: str, key: bytes) -> bytes:
    import dkim
    headers = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
               b"content-type"]
    return dkim.sign(data, selector.encode(), domain.encode(), key,
                     canonicalize=(b"relaxed", b"relaxed"), include_headers=headers) + data


def post_mxdeliv(relay: Relay, body: bytes, mail_from: list[str], mail_to: list[str],
                 length: int | None = None, path: str = "/mxdeliv") -> tuple[int, dict, dict]:
    """POST /mxdeliv to a relay's published port 443, as another relay would; returns
    (status, response headers, JSON body or {})."""
    import http.client
    import json
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", relay.port(443), context=ctx, timeout=60)
    try:
        conn.putrequest("POST", path, skip_host=True)
        conn.putheader("Host", relay.domain)
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(len(body) if length is None else length))
        for value in mail_from:
            conn.putheader("X-Mail-From", value)
        for value in mail_to:
            conn.putheader("X-Mail-To", value)
        conn.endheaders()
        try:
            conn.send(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the whole body was read: the answer is waiting
        resp = conn.getresponse()
        raw = resp.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {}
        return resp.status, dict(resp.getheaders()), payload
    finally:
        conn.close()
