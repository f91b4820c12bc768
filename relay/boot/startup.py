"""What the entrypoint does before handing over to supervisord.

settings -> /data prepared -> certificate and DKIM key in place -> every
template rendered -> Postfix queue checked. Each step is idempotent.
"""

from __future__ import annotations

import grp
import ipaddress
import logging
import os
import pwd
import secrets
import subprocess
import sys

from relay import limits, paths, system
from relay.accounts import store as accounts
from relay.boot import datadir, pages, render
from relay.boot import dkimkey as dkim
from relay.boot.pages import qr_png
from relay.certs import files as certs
from relay.notify import appversions, turn
from relay.settings import Settings, template_context

log = logging.getLogger("chatmail")

# The TLS 1.2 cipher suites every daemon offers (TLS 1.3's suites are all strong):
# forward secrecy and authenticated encryption only, never anonymous. No RC4, 3DES,
# NULL, EXPORT, static RSA or CBC suites; Delta Chat, browsers and mail servers
# that speak TLS 1.2 all have these.
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"


def turn_external_ips(addresses: tuple[str, ...]) -> list[str]:
    """The public address coturn tells clients to send to (behind published ports it only
    knows the container's): the first IPv4 one, else the first IPv6 one. coturn 4.6
    accepts a single external-ip."""
    for version in (4, 6):
        for address in addresses:
            if ipaddress.ip_address(address).version == version:
                return [address]
    return []


def context(settings: Settings, ipv6: bool, turn_secret: str = "") -> dict:
    """Everything the templates may use: each setting in lower case, plus derived values."""
    ctx = template_context(settings)
    domain = settings.mail_domain
    ctx.update(
        ipv6=ipv6,
        tls_cert=str(paths.TLS_CERT),
        tls_key=str(paths.TLS_KEY),
        tls_ciphers=TLS_CIPHERS,
        auth_dict_socket=str(paths.AUTH_DICT_SOCKET),
        accounts_map_socket=str(paths.ACCOUNTS_MAP_SOCKET),
        signup_socket=str(paths.SIGNUP_SOCKET),
        filter_out_socket=str(paths.FILTER_OUT_SOCKET),
        # loopback ports behind the port 443 multiplexer
        proxied_imap_port=8993,
        proxied_smtp_port=8465,
        proxied_https_port=8443,
        filter_in_socket=str(paths.FILTER_IN_SOCKET),
        mxdeliv_socket=str(paths.MXDELIV_SOCKET),
        mxsend_socket=str(paths.MXSEND_SOCKET),
        ca_bundle=str(paths.CA_BUNDLE),
        www=str(paths.WWW),
        postfix_data_dir=str(paths.POSTFIX_DATA),
        dovecot_state_dir=str(paths.DOVECOT_STATE),
        sieve_bin_dir=str(paths.SIEVE_BIN),
        nginx_temp_dir=str(paths.NGINX_TEMP),
        acme_challenge_dir=str(paths.ACME_CHALLENGES),
        dkim_selector=dkim.selector(),
        dkim_key=str(dkim.key_path()),
        vmail_uid=pwd.getpwnam("vmail").pw_uid,
        max_smtp_per_ip=settings.max_smtp_per_ip,
        body_limit=settings.body_limit,
        metadata_socket=str(paths.METADATA_SOCKET),
        coturn_run=str(paths.COTURN_RUN),
        turn_secret=turn_secret,
        turn_realm=domain.strip("[]"),
        turn_external_ips=turn_external_ips(settings.public_addresses),
        supervisor_password=secrets.token_urlsafe(24),
        mailbox_notify=paths.DOVECOT_MAILBOX_NOTIFY.exists(),
        **limits.dovecot_limits(settings.max_imap_connections, limits.open_files_limit()),
    )
    ctx.update(pages.context(settings, qr=qr_png))  # qr_png looked up here: tests replace it
    return ctx


def prepare(settings: Settings) -> dict:
    """Every start-up step before supervisord, in order: /data prepared
    (:func:`relay.boot.datadir.prepare`), a certificate installed, the DKIM key and TURN secret
    made, every template rendered below ``paths.RENDERED``, ``postfix check`` run. Returns the
    template context. Raises LayoutError, OSError, ValueError (an external certificate that
    does not fit its key), subprocess.CalledProcessError or RuntimeError (``postfix check``
    failed); entrypoint.py turns any of them into one line and stops the container.
    """
    index = appversions.load(settings.appversions_file)  # checked before anything is changed
    datadir.prepare()
    if foreign := accounts.other_domains(settings.mail_domain):
        log.warning("/data holds accounts of another domain (%s); they cannot log in with "
                    "MAIL_DOMAIN=%s: is this the right volume, or did MAIL_DOMAIN change?",
                    ", ".join(f"{n} of {d}" for d, n in sorted(foreign.items())), settings.mail_domain)
    source = certs.prepare(settings)
    dkim.ensure_key()
    dkim.write_public_record(paths.DKIM_RECORD)
    ipv6 = system.ipv6_available()
    log.info("domain %s, TLS certificate: %s, IPv6 %s", settings.mail_domain, source,
             "available" if ipv6 else "not available: listening on IPv4 only")
    if appversions.install(index):
        log.info("app-version index from %s is served", settings.appversions_file)
    secret = turn.ensure_secret(paths.TURN_SECRET)
    ctx = context(settings, ipv6, secret)
    render.render_all(ctx, root=paths.RENDERED)
    os.chmod(paths.RENDERED / "etc/supervisor/supervisord.conf", 0o600)  # the control password
    turn_conf = paths.RENDERED / "etc/turnserver.conf"
    os.chown(turn_conf, 0, grp.getgrnam("turnserver").gr_gid)
    os.chmod(turn_conf, 0o640)  # holds the TURN secret
    check_postfix()
    return ctx


def check_postfix() -> None:
    """``postfix check``: configuration, queue directories, queue repair after a crash.

    Its warnings that our configuration files are symbolic links out of
    /etc/postfix (into the rendered files on /run) are expected and left out.
    """
    result = subprocess.run(["/usr/sbin/postfix", "check"], capture_output=True, text=True)
    for line in (result.stdout + result.stderr).splitlines():
        if "symlink leaves directory: /etc/postfix/./" not in line:
            print(line, file=sys.stderr, flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"postfix check failed with exit status {result.returncode}")
