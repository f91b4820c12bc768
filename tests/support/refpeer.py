"""A peer on the federation test network that stands for a reference chatmail relay
(filtermail 0.7 behind nginx, Postfix and Dovecot), plus a catch-all web site on the same
machine. Started by fednet.Federation (``Federation(peers=(RefPeer,))``).

    ref.test  MX mx.ref.test: HTTPS /mxdeliv answered as filtermail 0.7 does
              (tests/support/refpeer_server.py), re-injected into a real Postfix, stored
              by a real Dovecot (LMTP) in /srv/mail/<domain>/<local part>/Maildir
    web.test  MX mx.web.test (same address): HTTPS is a catch-all web site (HTML 200 for
              everything); mail reaches it only over SMTP

Port 25 is real Postfix with STARTTLS, for both domains; its certificate names
mx.ref.test and mx.web.test and comes from the test CA the relays trust (EXTRA_CA_FILE),
as the classic server's does. Every local part exists (the reference's Postfix has
``local_recipient_maps =``), except the ones in REFUSALS, which Postfix's re-injection
listener (127.0.0.1:10026, log name postfix/reinject) refuses with the given reply, so
the refusal reaches the sender as filtermail forwards it: ``400 <reply> (forwarded from
127.0.0.1:10026)``. Port 25 does not refuse them: a sender that wrongly falls back to
SMTP gets its message stored, and the tests see it.
"""

from __future__ import annotations

import re
import shlex

from relaytest import ROOT, docker, wait_for
from testnet import TestNet

REF_DOMAIN, REF_MX = "ref.test", "mx.ref.test"
WEB_DOMAIN, WEB_MX = "web.test", "mx.web.test"
REF_HOST = 21
MAIL_ROOT = "/srv/mail"
REFUSALS = {
    "refused550": "550 5.1.1 No such user here",
    "later451": "451 4.3.0 Mailbox busy, try again later",
}

SETUP = """
set -eu
useradd -u 5000 -U -M -d {mail_root} -s /usr/sbin/nologin vmail
mkdir -p {mail_root} && chown vmail:vmail {mail_root}
cat > /etc/dovecot/dovecot.conf <<'EOF'
protocols = lmtp
ssl = no
log_path = /dev/stderr
mail_location = maildir:{mail_root}/%d/%n/Maildir
userdb {{
  driver = static
  args = uid=vmail gid=vmail home={mail_root}/%d/%n allow_all_users=yes
}}
passdb {{
  driver = static
  args = nopassword=y
}}
service lmtp {{
  unix_listener /var/spool/postfix/private/dovecot-lmtp {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
EOF
cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
postconf -e myhostname={ref_mx} mydomain={ref} myorigin={ref} \
  'mydestination={ref}, {web}, localhost' local_recipient_maps= \
  local_transport=lmtp:unix:private/dovecot-lmtp inet_interfaces=all inet_protocols=ipv4 \
  alias_maps= alias_database= mynetworks=127.0.0.0/8 maillog_file=/dev/stdout \
  compatibility_level=3.6 'smtpd_tls_chain_files=/peer/key.pem, /peer/cert.pem' \
  smtpd_tls_security_level=may smtpd_tls_loglevel=1
postconf -F '*/*/chroot = n'
cat >> /etc/postfix/master.cf <<'EOF'
127.0.0.1:10026 inet n - n - - smtpd
  -o syslog_name=postfix/reinject
  -o smtpd_recipient_restrictions=check_recipient_access,texthash:/peer/refusals,permit_mynetworks,reject
EOF
dovecot -F &
python3 -u /peer/refpeer_server.py /peer/cert.pem /peer/key.pem &
exec postfix start-fg
"""


def openssl(*args: str) -> None:
    import subprocess
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class RefPeer:
    """The peer container; ``start()`` publishes its DNS records and waits until Postfix,
    Dovecot and the HTTPS server answer."""

    __test__ = False
    name = "ref"

    def __init__(self, net: TestNet) -> None:
        self.net = net
        self.container = ""
        self.ip = net.ip(REF_HOST)

    def start(self) -> RefPeer:
        net = self.net
        peer_dir = net.dir / "refpeer"
        peer_dir.mkdir()
        self._certificate(peer_dir)
        (peer_dir / "refusals").write_text(
            "".join(f"{local}@{REF_DOMAIN} {reply}\n" for local, reply in REFUSALS.items()))
        (peer_dir / "refpeer_server.py").write_bytes(
            (ROOT / "tests" / "support" / "refpeer_server.py").read_bytes())
        for f in peer_dir.iterdir():
            f.chmod(0o644)
        for domain, mx in ((REF_DOMAIN, REF_MX), (WEB_DOMAIN, WEB_MX)):
            net.set_zone(domain, [f"{domain}. IN MX 10 {mx}.", f"{mx}. IN A {self.ip}",
                                  f'{domain}. IN TXT "v=spf1 mx ~all"'])
        script = SETUP.format(mail_root=MAIL_ROOT, ref=REF_DOMAIN, ref_mx=REF_MX, web=WEB_DOMAIN)
        self.container = net.run("refpeer", REF_HOST, "-v", f"{peer_dir}:/peer:ro",
                                 "--hostname", REF_MX, command=("sh", "-c", script))
        wait_for(lambda: all(s in self.logs() for s in
                             ("daemon started", "refpeer-https: listening", "starting up")),
                 60, 0.3, "the reference peer's Postfix, Dovecot and HTTPS server")
        return self

    def _certificate(self, peer_dir) -> None:
        ca = self.net.dir / "pebble"
        openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={REF_MX}",
                "-keyout", str(peer_dir / "key.pem"), "-out", str(peer_dir / "csr.pem"))
        (peer_dir / "ext.cnf").write_text(f"subjectAltName=DNS:{REF_MX},DNS:{WEB_MX}\n")
        openssl("x509", "-req", "-in", str(peer_dir / "csr.pem"), "-CA", str(ca / "ca.pem"),
                "-CAkey", str(ca / "ca.key"), "-CAcreateserial", "-days", "2",
                "-extfile", str(peer_dir / "ext.cnf"), "-out", str(peer_dir / "cert.pem"))

    # --- what the tests look at -------------------------------------------------------

    def logs(self) -> str:
        out = docker("logs", self.container, check=False)
        return out.stdout + out.stderr

    def stored(self, needle: str, domain: str = REF_DOMAIN) -> list[str]:
        """The messages in the peer's mailboxes of ``domain`` (Maildir new/ and cur/,
        not Dovecot's caches) that contain ``needle``."""
        boxes = f"{MAIL_ROOT}/{domain}/*/Maildir"
        out = docker("exec", self.container, "sh", "-c",
                     f"grep -lF -- {shlex.quote(needle)} {boxes}/new/* {boxes}/cur/* 2>/dev/null; true")
        return out.stdout.split()

    def https_requests(self, host: str, needle: str = "") -> list[str]:
        """The HTTPS server's log lines for requests to ``host`` (containing ``needle``)."""
        return [line for line in self.logs().splitlines()
                if line.startswith(f"refpeer-https: host={host} ") and needle in line]

    def smtp_clients(self, message_id: str) -> list[str]:
        """Who handed the message with this Message-ID to the peer's Postfix, one entry
        per queue file: ``postfix/reinject/smtpd localhost[127.0.0.1]`` for a re-injection
        by the /mxdeliv server, ``postfix/smtpd <name>[<address>]`` for SMTP on port 25."""
        lines = self.logs().splitlines()
        ids = {m.group(1) for line in lines
               if (m := re.search(r"postfix/cleanup\[\d+\]: (\w+): message-id=(\S+)", line))
               and m.group(2) == message_id}
        clients = []
        for line in lines:
            m = re.search(r"(postfix(?:/reinject)?/smtpd)\[\d+\]: (\w+): client=(\S+)", line)
            if m and m.group(2) in ids:
                clients.append(f"{m.group(1)} {m.group(3)}")
        return clients
