"""Upgrades and backups: an older /data layout made by the test is migrated and its
accounts and mail survive; a newer one is refused; a backup taken while the
relay runs restores into a fresh volume with the mail readable."""

from __future__ import annotations

import imaplib
import secrets
import subprocess

import pytest

from relaytest import DOCKER, IMAGE, Relay, docker, insecure_tls, securejoin_request, submit, wait_for

DOMAIN = "_upgrade.example.test"
PASSWORD = "an-old-password-1234"
MARKER = "kept-across-the-upgrade"

# Writes a volume as an older image left it: account hash file (relayauth), one
# Maildir message (vmail), a DKIM key (opendkim); layout version given in argv.
FIXTURE = r"""
import crypt, os, subprocess, sys
version, address, password, marker = sys.argv[1:5]
def own(path, uid, mode):
    os.chown(path, uid, uid); os.chmod(path, mode)
os.makedirs("/data/accounts"); own("/data/accounts", 206, 0o700)
acct = "/data/accounts/" + address
open(acct, "w").write("{SHA512-CRYPT}" + crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512)) + "\n")
own(acct, 206, 0o600)
home = "/data/mail/" + address
for d in ("/data/mail", home, home + "/Maildir", home + "/Maildir/new", home + "/Maildir/cur", home + "/Maildir/tmp"):
    os.makedirs(d, exist_ok=True); own(d, 205, 0o700)
msg = home + "/Maildir/new/1700000000.M1P1.old"
open(msg, "w").write("From: <%s>\r\nTo: <%s>\r\nSubject: [...]\r\nMessage-ID: <m1@old>\r\n\r\n%s\r\n" % (address, address, marker))
own(msg, 205, 0o600)
os.makedirs("/data/dkim"); own("/data/dkim", 204, 0o700)
subprocess.run(["openssl", "genrsa", "-out", "/data/dkim/chatmail.private", "2048"], check=True, capture_output=True)
own("/data/dkim/chatmail.private", 204, 0o600)
if version != "0":
    open("/data/LAYOUT_VERSION", "w").write(version + "\n")
"""


def make_volume(version: str, address: str) -> str:
    volume = f"relaytest-upgrade-{secrets.token_hex(3)}"
    docker("volume", "create", volume)
    docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "python3", IMAGE, "-c", FIXTURE,
           version, address, PASSWORD, MARKER)
    return volume


def read_inbox(relay: Relay, address: str, password: str) -> list[bytes]:
    im = imaplib.IMAP4_SSL("127.0.0.1", relay.port(993), ssl_context=insecure_tls(), timeout=30)
    im.login(address, password)
    im.select("INBOX", readonly=True)
    bodies = [im.fetch(num, "(BODY.PEEK[])")[1][0][1] for num in im.search(None, "ALL")[1][0].split()]
    im.logout()
    return bodies


@pytest.mark.parametrize("version", ["0", "1"])
def test_an_older_layout_keeps_its_accounts_and_mail(image_exists, version):
    address = f"olduser{version}1@{DOMAIN}"
    volume = make_volume(version, address)
    dkim_before = docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sha256sum", IMAGE,
                         "/data/dkim/chatmail.private").stdout.split()[0]
    relay = Relay({"MAIL_DOMAIN": DOMAIN, "TLS_MODE": "self-signed"}, volume=volume).start()
    try:
        relay.wait_healthy()
        bodies = read_inbox(relay, address, PASSWORD)
        assert len(bodies) == 1 and MARKER.encode() in bodies[0]
        with pytest.raises(imaplib.IMAP4.error):  # the stored hash is what counts
            read_inbox(relay, address, PASSWORD + "x")
        assert relay.exec("cat", "/data/LAYOUT_VERSION").stdout.strip() == "1"
        assert relay.exec("sha256sum", "/data/dkim/chatmail.private").stdout.split()[0] == dkim_before
        if version == "0":
            assert "migrating /data from layout 0 to 1" in relay.logs()
    finally:
        relay.remove()


def test_a_newer_layout_is_refused_and_left_alone(image_exists):
    volume = make_volume("99", f"newuser991@{DOMAIN}")
    relay = Relay({"MAIL_DOMAIN": DOMAIN, "TLS_MODE": "self-signed"}, volume=volume).start()
    try:
        wait_for(lambda: not relay.state()["Running"], 60, 0.5, "the container refusing to start")
        assert relay.state()["ExitCode"] != 0
        assert "this image understands up to 1" in relay.logs()
        # nothing was touched: no certificate made, the version file as it was
        out = docker("run", "--rm", "-v", f"{volume}:/data", "--entrypoint", "sh", IMAGE, "-c",
                     "cat /data/LAYOUT_VERSION; ls /data").stdout.split()
        assert out[0] == "99" and "tls" not in out
    finally:
        relay.remove()


def test_a_backup_taken_while_running_restores_into_a_fresh_volume(image_exists):
    source = Relay({"MAIL_DOMAIN": DOMAIN, "TLS_MODE": "self-signed"}).start()
    target = None
    try:
        source.wait_healthy()
        acct = source.new_account()
        read_inbox(source, acct["email"], acct["password"])  # first login creates it
        submit(source, acct, [acct["email"]], securejoin_request(acct["email"], acct["email"], "bk"))
        wait_for(lambda: source.mailbox_files(acct["email"]), 30, what="delivery")
        archive = subprocess.run([DOCKER, "exec", source.name, "relayctl", "backup"],
                                 capture_output=True, check=True, timeout=120)
        assert archive.stdout[:2] == b"\x1f\x8b" and b"backup:" in archive.stderr

        target = Relay({"MAIL_DOMAIN": DOMAIN, "TLS_MODE": "self-signed"})
        docker("volume", "create", target.volume)
        restored = subprocess.run([DOCKER, "run", "--rm", "-i", "-v", f"{target.volume}:/data",
                                   IMAGE, "relayctl", "restore"], input=archive.stdout,
                                  capture_output=True, timeout=120)
        assert restored.returncode == 0, restored.stderr
        again = subprocess.run([DOCKER, "run", "--rm", "-i", "-v", f"{target.volume}:/data",
                                IMAGE, "relayctl", "restore"], input=archive.stdout,
                               capture_output=True, timeout=120)
        assert again.returncode == 1 and b"already holds a relay" in again.stderr
        target.start().wait_healthy()
        bodies = read_inbox(target, acct["email"], acct["password"])
        assert len(bodies) == 1 and b"bk@test" in bodies[0]
        for path in ("/data/dkim/chatmail.private", "/data/tls/self-signed/fullchain.pem"):
            assert (source.exec("sha256sum", path).stdout.split()[0]
                    == target.exec("sha256sum", path).stdout.split()[0])
    finally:
        source.remove()
        if target:
            target.remove()
