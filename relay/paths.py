"""Where things live inside the container.

Everything that must survive a restart or an image upgrade is below DATA;
everything below RUN is recreated at every start.
"""

from pathlib import Path

DATA = Path("/data")
LAYOUT_VERSION_FILE = DATA / "LAYOUT_VERSION"
LAYOUT_VERSION = 1

MAIL = DATA / "mail"              # one Maildir home per account: MAIL/<address>/
ACCOUNTS = DATA / "accounts"      # one file per account: salted password hash; mtime = last login day
POSTFIX_QUEUE = DATA / "postfix"  # Postfix queue_directory
TLS = DATA / "tls"                # certificate and key in use
TLS_CERT = TLS / "fullchain.pem"
TLS_KEY = TLS / "privkey.pem"
ACME_ACCOUNT = DATA / "acme"      # ACME account key (only the relayacme user reads it)
DKIM = DATA / "dkim"              # DKIM signing key
STATE = DATA / "state"            # small state files of our helpers
PUSH = DATA / "push"              # relay.notify.metadata's own directory
PUSH_TOKENS = PUSH / "tokens"     # one file per account: its devices' push tokens
PUSH_QUEUE = PUSH / "queue"       # notifications not yet accepted by the gateway
TURN_SECRET = STATE / "turn-secret"  # shared secret of coturn and relay.notify.metadata

RUN = Path("/run/relay")          # sockets of our helpers
AUTH_DICT_SOCKET = RUN / "auth-dovecot" / "dict.sock"      # Dovecot passdb/userdb -> relay.accounts.auth
ACCOUNTS_MAP_SOCKET = RUN / "auth-postfix" / "accounts.sock"  # Postfix socketmap -> relay.accounts.auth
SIGNUP_SOCKET = RUN / "signup" / "http.sock"               # nginx -> relay.accounts.signup
FILTER_OUT_SOCKET = RUN / "filter" / "outgoing.sock"      # Postfix 465/587 -> relay.filter
FILTER_IN_SOCKET = RUN / "filter" / "incoming.sock"       # Postfix 25 -> relay.filter
REINJECT_OUT = POSTFIX_QUEUE / "public" / "reinject-out"  # relay.filter -> Postfix (signs, queues)
REINJECT_IN = POSTFIX_QUEUE / "public" / "reinject-in"    # relay.filter -> Postfix (queues)
NOCREATE_FLAG = STATE / "account-creation-off"            # old `relayctl accounts off`; read as closed
REGISTRATION_OVERRIDE = STATE / "registration"            # `relayctl registration MODE`: open|closed|invite
INVITES = DATA / "invites"        # one file per unused invite: named by the token's SHA-256, holds its expiry
DISABLED = DATA / "disabled"      # one empty file per disabled address (mtime 0: no time is kept)
SIGNUP_AUTH_SOCKET = RUN / "auth-signup" / "invite.sock"   # relay.accounts.signup -> relay.accounts.auth
MXDELIV_SOCKET = RUN / "mxdeliv" / "http.sock"            # nginx POST /mxdeliv -> relay.federation.mxdeliv
MXDELIV_POSTFIX = POSTFIX_QUEUE / "public" / "mxdeliv"    # relay.federation.mxdeliv -> Postfix (as port 25)
MXSEND_SOCKET = RUN / "mxsend" / "lmtp.sock"              # Postfix (remote domains) -> relay.federation.mxsend
METADATA_SOCKET = RUN / "metadata" / "dict.sock"          # Dovecot METADATA, new mail -> relay.notify.metadata
APPVERSIONS_SERVED = RUN / "metadata" / "appversions.json"  # the checked APPVERSIONS_FILE, one line
COTURN_RUN = Path("/run/coturn")                          # coturn's pid file
METRICS = RUN / "metrics"         # one directory per helper: its counters (relay.ops.metrics)
DKIM_RECORD = RUN / "dkim-record.txt"  # the public DKIM record, for the metrics exporter

CA_BUNDLE = RUN / "ca-bundle.pem"  # Debian's CAs plus EXTRA_CA_FILE
CERT_LOCK = RUN / "certs.lock"     # one certificate change at a time (loop or relayctl)
ACME_CHALLENGES = Path("/run/acme-challenge")       # HTTP-01 tokens nginx serves on port 80

# The root filesystem may be read-only (compose.yaml): whatever the daemons write
# outside /data goes below /run, which is a tmpfs there.
RENDERED = Path("/run/chatmail/config")  # rendered templates; /etc/... are symlinks into it
POSTFIX_DATA = Path("/run/postfix")      # Postfix data_directory (lock, TLS session cache)
DOVECOT_STATE = Path("/run/dovecot-state")  # Dovecot state_dir
SIEVE_BIN = Path("/run/dovecot-sieve")     # compiled Sieve scripts (written by lmtp as vmail)
# Our Dovecot's service for IDLE wake-ups (image/dovecot/mailbox-notify.patch); absent in the
# comparator image with Debian's Dovecot as is (make image DOVECOT=stock).
DOVECOT_MAILBOX_NOTIFY = Path("/usr/lib/dovecot/mailbox-notify")
NGINX_TEMP = Path("/run/nginx")          # nginx's temporary files (request bodies)
OPENDKIM_RUN = Path("/run/opendkim")

WWW = Path("/var/www/chatmail")   # rendered web pages
CONFIG_TEMPLATES = Path(__file__).resolve().parent.parent / "config"
