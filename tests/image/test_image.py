"""testinfra checks against a running container of the real image."""

import pytest
import testinfra


@pytest.fixture(scope="module")
def host(relay):
    return testinfra.get_host(f"docker://{relay.name}")


@pytest.mark.parametrize("package", [
    "postfix", "dovecot-imapd", "dovecot-lmtpd", "nginx", "opendkim", "supervisor",
    "python3-jinja2", "python3-aiosmtpd", "acme-tiny", "qrencode", "coturn",
])
def test_debian_packages_installed(host, package):
    assert host.package(package).is_installed


@pytest.mark.parametrize("command,user", [
    ("supervisord", "root"),
    ("master", "root"),          # Postfix master; its children drop to postfix
    ("qmgr", "postfix"),
    ("pickup", "postfix"),
    ("dovecot", "root"),         # Dovecot master; its children drop privileges
    ("imap-login", "dovenull"),
    ("auth", "dovecot"),         # the auth process and its workers
    ("opendkim", "opendkim"),
    ("turnserver", "turnserver"),
])
def test_daemons_run_as_expected_user(host, command, user):
    procs = host.process.filter(comm=command)
    assert procs, f"no {command} process"
    assert {p.user for p in procs} == {user}


def test_delivery_runs_as_vmail(host, relay):
    """LMTP delivery needs no root: every mailbox belongs to vmail."""
    relay.new_account()  # make sure Dovecot has answered at least one request
    procs = host.process.filter(comm="lmtp")
    dovecot_lmtp = [p for p in procs if "dovecot" in p.args]
    assert all(p.user == "vmail" for p in dovecot_lmtp)


def test_nginx_workers_unprivileged(host):
    workers = [p for p in host.process.filter(comm="nginx") if "worker" in p.args]
    assert workers and {p.user for p in workers} == {"www-data"}


@pytest.mark.parametrize("module,user", [("relay.accounts.auth", "relayauth"), ("relay.accounts.signup", "relaysignup"),
                                         ("relay.federation.mxdeliv", "relaymxdeliv"),
                                         ("relay.federation.mxsend", "relaymxsend"),
                                         ("relay.notify.metadata", "relaypush")])
def test_our_helpers_run_as_their_own_users(host, module, user):
    procs = [p for p in host.process.filter(comm="python3") if f"-m {module}" in p.args]
    assert len(procs) == 1
    assert procs[0].user == user


# Who each process of the container runs as. Root only where a daemon's master
# must start listeners or children under other users (and supervisord, the
# syslog socket in /dev, and relay.store.expire, which deletes files of two users).
PROCESS_USERS = {
    "supervisord": "root", "busybox": "root", "relay.store.expire": "root", "postfix_master.sh": "root",
    # its start-up step (postqueue -f, then -i for deferred local deliveries): 20 s when none is deferred
    "relay.delivery.postfix_master": "root",
    "master": "root", "dovecot": "root", "log": "root", "config": "root", "nginx: master": "root",
    "relay.accounts.auth": "relayauth", "relay.accounts.signup": "relaysignup", "relay.filter": "relayfilter",
    "relay.notify.metadata": "relaypush", "relay.federation.mxdeliv": "relaymxdeliv", "relay.federation.mxsend": "relaymxsend",
    "relay.certs": "root", "turnserver": "turnserver",
    "opendkim": "opendkim", "nginx: worker": "www-data",
    "imap-login": "dovenull", "dovecot/anvil": "dovecot", "stats": "dovecot", "auth": "dovecot",
    "auth-worker": "dovecot", "imap": "vmail", "dovecot/lmtp": "vmail",
    # IDLE clients: mailbox-notify wakes them, imap-hibernate holds the idle ones (issue 14)
    "mailbox-notify": "dovecot", "imap-hibernate": "dovecot",
    **{name: "postfix" for name in ("pickup", "qmgr", "postlogd", "tlsmgr", "anvil", "smtpd",
                                    "trivial-rewrite", "cleanup", "lmtp", "bounce", "proxymap",
                                    "scache", "smtp", "showq", "verify", "flush", "error")},
}


def process_key(comm: str, args: str) -> str:
    if (comm == "sh" and "relay.store.expire" in args) or args == "sleep 3600":
        return "relay.store.expire"  # the hourly loop of supervisord's relay-expire program
    if comm == "sh" and args.endswith("/relay/delivery/postfix_master.sh"):
        return "postfix_master.sh"  # the wrapper of Postfix's master
    if comm == "python3":
        return args.split(" -m ", 1)[1].split()[0] if " -m " in args else args
    if comm == "nginx":
        return "nginx: master" if "master" in args else "nginx: worker"
    if args.startswith("dovecot-") and comm in ("anvil", "lmtp"):
        return f"dovecot/{comm}"
    return comm


def test_every_process_runs_as_its_own_user(relay):
    relay.new_account()  # so that Dovecot's auth workers have been started
    out = relay.exec("ps", "-eo", "user:20,comm:20,args").stdout.splitlines()[1:]
    seen = {}
    for line in out:
        user, comm, args = line[:20].strip(), line[21:41].strip(), line[42:].strip()
        if comm == "ps":
            continue
        key = process_key(comm, args)
        assert key in PROCESS_USERS, f"unexpected process {comm!r} ({args!r}) as {user}"
        assert user == PROCESS_USERS[key], f"{args!r} runs as {user}, not {PROCESS_USERS[key]}"
        seen[key] = user
    for key in ("relay.accounts.auth", "relay.filter", "relay.accounts.signup", "opendkim", "imap-login", "qmgr",
                "nginx: worker", "auth", "mailbox-notify"):
        assert key in seen, key


@pytest.mark.parametrize("port", [25, 80, 443, 465, 587, 993])
def test_public_ports_listen(host, port):
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_no_unexpected_public_listeners(host):
    """Only the six public ports and TURN listen on a non-loopback address."""
    public = set()
    for spec in host.socket.get_listening_sockets():
        if spec.startswith("tcp://"):
            address, port = spec[len("tcp://"):].rsplit(":", 1)
            if address not in ("127.0.0.1", "::1"):
                public.add(int(port))
    assert public == {25, 80, 443, 465, 587, 993, 3478}


def test_settings_reach_rendered_configs(host):
    main_cf = host.file("/etc/postfix/main.cf")
    assert main_cf.contains("^message_size_limit = 20971520$")  # MAX_MESSAGE_SIZE=20M
    assert main_cf.contains("^smtpd_recipient_limit = 500$")    # MAX_RECIPIENTS=500
    assert main_cf.contains("^smtpd_client_connection_count_limit = 100$")  # a fifth of 500
    assert main_cf.contains("^virtual_mailbox_domains = _chat.example.test$")
    assert host.file("/etc/dovecot/dovecot.conf").contains("_chat.example.test chatmail relay ready")
    assert host.file("/var/www/chatmail/index.html").contains("dcaccount:https://_chat.example.test/new")
    assert host.file("/etc/opendkim.conf").contains("^Domain  *csl:_chat.example.test$")


def test_postfix_trusts_only_loopback(host):
    mynetworks = host.run("postconf -h mynetworks").stdout.split()
    assert set(mynetworks) <= {"127.0.0.0/8", "[::1]/128"}
    assert "permit_mynetworks" not in host.run("postconf -h smtpd_relay_restrictions").stdout


def test_postfix_and_dovecot_configs_are_valid(host):
    assert host.run("postfix check").rc == 0
    assert host.run("doveconf -n").rc == 0
    assert host.run("nginx -t").rc == 0


@pytest.mark.parametrize("path,user,group,mode", [
    ("/data", "root", "root", 0o755),
    ("/data/accounts", "relayauth", "relayauth", 0o700),
    ("/data/mail", "vmail", "vmail", 0o700),
    ("/data/tls", "root", "root", 0o700),
    ("/data/tls/privkey.pem", "root", "root", 0o600),
    ("/data/acme", "relayacme", "relayacme", 0o700),
    ("/data/tls/self-signed", "root", "root", 0o700),
    ("/data/tls/self-signed/privkey.pem", "root", "root", 0o600),
    ("/data/dkim", "opendkim", "opendkim", 0o700),
    ("/data/dkim/chatmail.private", "opendkim", "opendkim", 0o600),
    ("/data/postfix/maildrop", "postfix", "postdrop", 0o730),
    ("/data/postfix/active", "postfix", "root", 0o700),
    ("/data/push", "relaypush", "relaypush", 0o700),
    ("/data/push/tokens", "relaypush", "relaypush", 0o700),
    ("/data/push/queue", "relaypush", "relaypush", 0o700),
    ("/data/invites", "relayauth", "relayauth", 0o700),
    ("/data/disabled", "relayauth", "relayauth", 0o700),
    ("/data/state/turn-secret", "relaypush", "relaypush", 0o600),
])
def test_data_owners_and_modes(host, path, user, group, mode):
    f = host.file(path)
    assert f.exists
    assert (f.user, f.group, f.mode) == (user, group, mode)


def test_secrets_are_readable_by_their_owner_only(relay):
    """Keys, account hashes and the control password: no group or other access at all.
    (Postfix, Dovecot and nginx read the TLS key as root before they drop privileges;
    OpenDKIM owns its key.) Only certificates may be world-readable."""
    relay.new_account()
    out = relay.exec("find", "/data/tls", "/data/dkim", "/data/accounts",
                     "/run/chatmail/config/etc/supervisor", "-type", "f", "-perm", "/077").stdout.split()
    assert all(path.endswith("fullchain.pem") for path in out), out
    keys = relay.exec("sh", "-c", "ls /data/tls/privkey.pem /data/tls/*/privkey.pem "
                                  "/data/dkim/*.private").stdout.split()
    assert len(keys) >= 3


def test_layout_version_written(host):
    assert host.file("/data/LAYOUT_VERSION").content_string.strip() == "1"


def test_health_check_is_defined_in_image_and_healthy(relay):
    assert relay.health() == "healthy"
    out = relay.exec("relayctl", "health")
    assert "healthy: smtp imap https answer" in out.stdout
