"""The one definition of every setting the relay reads from its environment.

Each setting is a field of :class:`Settings` and carries its environment
variable's name, a default (``None`` means required), a parser that turns the
text into a typed value or raises ``ValueError`` with a sentence naming what is
accepted, and a line of documentation. ``load``/``from_environment`` give every
helper one frozen ``Settings``; values derived from several settings (the body
limit, connections per IP, the TLS endpoints) are its properties. The README
table is generated from the fields (``python3 -m relay.settings --markdown``)
and a test keeps the two in step, and another keeps ``compose.yaml`` in step.
To add a setting: one field here, then ``make docs``.

An empty value counts as unset, so ``compose.yaml`` can pass every variable
through with ``${NAME:-}`` and the defaults still live here only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from relay.settings.parsers import (
    absolute_path,
    absolute_path_or_empty,
    boolean,
    choice,
    email_or_empty,
    free_text,
    http_url,
    http_url_or_empty,
    integer,
    ip_list,
    listen_address_or_empty,
    number,
    parse_domain,
    port_range,
    size,
)


class SettingError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: its ``name``, ``default`` text (None: required), the ``parse``
    function (text -> value, raises ValueError for a value it refuses), the ``accepted`` values
    and the ``doc`` text, both as the README table shows them.
    """
    name: str
    default: str | None
    parse: Callable[[str], Any]
    accepted: str
    doc: str


# --- the settings ----------------------------------------------------------

MiB = 1024**2
GiB = 1024**3

# Room above MAX_MESSAGE_SIZE for what a hop adds to a message (trace and
# signature headers, the SMTP dot-stuffing of an LMTP or filter server): the
# hops behind Postfix's own size check must never refuse what Postfix accepted.
BODY_MARGIN = 64 * 1024


def setting(name: str, default: str | None, parse: Callable[[str], Any], accepted: str,
            doc: str) -> Any:
    """A field of :class:`Settings` for the environment variable ``name``."""
    return field(metadata={"setting": Setting(name, default, parse, accepted, doc)})


@dataclass(frozen=True)
class TLSEndpoint:
    """Where a client reaches a TLS service: ``port``, ``starttls`` (else implicit TLS),
    ``alpn`` (the protocol name a client offers on port 443, None for plain HTTPS)."""
    port: int
    label: str
    starttls: bool = False
    alpn: str | None = None


TLS_ENDPOINTS: tuple[TLSEndpoint, ...] = (
    TLSEndpoint(25, "SMTP STARTTLS", starttls=True),
    TLSEndpoint(465, "SMTPS"),
    TLSEndpoint(587, "submission STARTTLS", starttls=True),
    TLSEndpoint(993, "IMAPS"),
    TLSEndpoint(443, "HTTPS"),
    TLSEndpoint(443, "ALPN imap", alpn="imap"),
    TLSEndpoint(443, "ALPN smtp", alpn="smtp"),
)

@dataclass(frozen=True)
class Settings:
    """Every setting, parsed: ``load`` makes one from the environment.

    Each field is one environment variable (its name in lower case) and carries
    its ``Setting`` (default, parser, accepted values, documentation) in its
    metadata: this class is the table the README and compose.yaml are generated
    from. Values derived from several settings are properties, computed here
    once for every helper and template."""

    mail_domain: str = setting(
        "MAIL_DOMAIN", None, parse_domain,
        "a domain name such as chat.example.org (the first label may start with '_', "
        "e.g. _chat.example.test), an IP literal such as [192.0.2.1], or localhost",
        "The relay's mail domain: addresses are `<random>@MAIL_DOMAIN`. Required.")
    tls_mode: str = setting(
        "TLS_MODE", "acme", choice("acme", "self-signed", "external"),
        "one of acme, self-signed, external",
        "Where the TLS certificate comes from: an ACME CA, a certificate made and kept on "
        "`/data`, or files the operator provides.")
    acme_directory_url: str = setting(
        "ACME_DIRECTORY_URL", "https://acme-v02.api.letsencrypt.org/directory", http_url,
        "an http(s) URL of an ACME directory",
        "The ACME CA used when TLS_MODE=acme, e.g. Let's Encrypt's staging directory "
        "`https://acme-staging-v02.api.letsencrypt.org/directory` for trials.")
    admin_email: str = setting(
        "ADMIN_EMAIL", "", email_or_empty,
        "an e-mail address, or empty",
        "The operator's contact: ACME account contact, TLS report address (TLSRPT) in the "
        "DNS records, and the contact shown on the privacy and home pages (and given to clients "
        "as `/shared/admin`) unless PRIVACY_MAIL is set.")
    privacy_postal: str = setting(
        "PRIVACY_POSTAL", "", free_text(500),
        "text (lines separated by a literal `\\n`), or empty",
        "Who runs the relay, as the privacy page names the one responsible for it: name and "
        "postal address. Shown on the privacy and home pages when set.")
    privacy_mail: str = setting(
        "PRIVACY_MAIL", "", email_or_empty,
        "an e-mail address, or empty",
        "The privacy contact shown on the privacy and home pages and given to clients as "
        "`/shared/admin` (IMAP METADATA); empty: ADMIN_EMAIL is used for both.")
    privacy_pdo: str = setting(
        "PRIVACY_PDO", "", free_text(500),
        "text (lines separated by a literal `\\n`), or empty",
        "The data-protection officer (name and address), shown on the privacy page when set.")
    privacy_supervisor: str = setting(
        "PRIVACY_SUPERVISOR", "", free_text(500),
        "text (lines separated by a literal `\\n`), or empty",
        "The data-protection supervisory authority users may complain to, shown on the "
        "privacy page when set.")
    tls_cert_file: str = setting(
        "TLS_CERT_FILE", "/data/tls/external/fullchain.pem", absolute_path,
        "an absolute path inside the container",
        "With TLS_MODE=external: the certificate chain (PEM). Changes to the file are picked "
        "up within a minute, without a restart.")
    tls_key_file: str = setting(
        "TLS_KEY_FILE", "/data/tls/external/privkey.pem", absolute_path,
        "an absolute path inside the container",
        "With TLS_MODE=external: the private key (PEM) of TLS_CERT_FILE.")
    extra_ca_file: str = setting(
        "EXTRA_CA_FILE", "", absolute_path_or_empty,
        "an absolute path inside the container, or empty",
        "PEM file of further CA certificates to trust, besides Debian's: for a private ACME "
        "CA's directory and for other servers' certificates (tests use it for pebble).")
    public_addresses: tuple[str, ...] = setting(
        "PUBLIC_ADDRESSES", "", ip_list,
        "IPv4/IPv6 addresses separated by commas, or empty",
        "The relay's public addresses, for the A/AAAA and SPF records that `relayctl dns` "
        "prints and checks. Empty: the global addresses of the container's interfaces.")
    username_min_length: int = setting(
        "USERNAME_MIN_LENGTH", "9", integer(3, 32),
        "a whole number from 3 to 32",
        "Shortest local part for which a first login creates an account.")
    username_max_length: int = setting(
        "USERNAME_MAX_LENGTH", "9", integer(3, 32),
        "a whole number from 3 to 32, not below USERNAME_MIN_LENGTH",
        "Longest local part for which a first login creates an account; `/new` hands out "
        "random local parts of this length.")
    password_min_length: int = setting(
        "PASSWORD_MIN_LENGTH", "9", integer(8, 128),
        "a whole number from 8 to 128",
        "Shortest password accepted when a login creates an account (`/new` hands out "
        "three characters more, and at least 20).")
    registration: str = setting(
        "REGISTRATION", "open", choice("open", "closed", "invite"),
        "one of open, closed, invite",
        "Who may get a new account: anyone (`open`), nobody (`closed`: neither `/new` nor a "
        "first login creates one), or whoever has a single-use invite from `relayctl invite` "
        "(`invite`). Existing accounts keep working in every mode; `relayctl registration` "
        "changes the mode of a running relay.")
    account_creation: bool = setting(
        "ACCOUNT_CREATION", "on", boolean,
        "on or off (also true/false, yes/no, 1/0)",
        "Deprecated alias: `off` means `REGISTRATION=closed` (and may not be combined with "
        "another REGISTRATION value); `on` changes nothing.")
    create_max_load: float = setting(
        "CREATE_MAX_LOAD", "5", number(0.1, 1000.0),
        "a number from 0.1 to 1000",
        "No new accounts while the 1-minute load average is above this.")
    create_min_free_memory: int = setting(
        "CREATE_MIN_FREE_MEMORY", "200M", size(0, 1024 * GiB),
        "a size such as 200M or 1G",
        "No new accounts while less memory than this is available.")
    create_min_free_disk: int = setting(
        "CREATE_MIN_FREE_DISK", "1G", size(0, 1024**5),
        "a size such as 500M or 1G",
        "No new accounts while `/data` has less free space than this.")
    new_accounts_per_minute: int = setting(
        "NEW_ACCOUNTS_PER_MINUTE", "20", integer(1, 10000),
        "a whole number from 1 to 10000",
        "How many `/new` requests one IP address may make a minute, after a burst of 10 "
        "more (nginx `limit_req`); beyond it 429.")
    max_message_size: int = setting(
        "MAX_MESSAGE_SIZE", "30M", size(1 * MiB, 1 * GiB),
        "a size from 1M to 1G, such as 30M",
        "Largest message accepted, on submission and from other servers.")
    max_recipients: int = setting(
        "MAX_RECIPIENTS", "1000", integer(1, 100000),
        "a whole number from 1 to 100000",
        "Most recipients one message may have.")
    max_user_send_per_minute: int = setting(
        "MAX_USER_SEND_PER_MINUTE", "60", integer(1, 100000),
        "a whole number from 1 to 100000",
        "Messages one user may send a minute on average; beyond it a temporary 450 4.7.1.")
    max_user_send_burst: int = setting(
        "MAX_USER_SEND_BURST", "10", integer(1, 100000),
        "a whole number from 1 to 100000",
        "Messages one user may send at once before the per-minute rate applies.")
    max_imap_connections: int = setting(
        "MAX_IMAP_CONNECTIONS", "10000", integer(10, 1000000),
        "a whole number from 10 to 1000000",
        "Concurrent IMAP connections in all; one IP address may hold a fifth of them.")
    imap_hibernate_timeout: int = setting(
        "IMAP_HIBERNATE_TIMEOUT", "3", integer(0, 3600),
        "a whole number of seconds from 0 to 3600",
        "An IMAP client quiet in IDLE this long leaves its own process for Dovecot's "
        "imap-hibernate, where it costs a few kilobytes instead of most of a megabyte; new "
        "mail reaches it as fast. Longer keeps more clients in their own processes at once "
        "when many reconnect together. 0: never.")
    max_smtp_connections: int = setting(
        "MAX_SMTP_CONNECTIONS", "1000", integer(10, 100000),
        "a whole number from 10 to 100000",
        "Concurrent SMTP connections on each port; one IP address may hold a fifth of them.")
    mailbox_quota: int = setting(
        "MAILBOX_QUOTA", "500M", size(10 * MiB, 1024 * GiB),
        "a size from 10M, such as 500M or 2G",
        "Size cap of each mailbox (reported to clients); above 75 % the oldest messages "
        "that are at least a day old are removed down to 70 %.")
    delete_mails_after: int = setting(
        "DELETE_MAILS_AFTER", "20", integer(1, 3650),
        "a whole number of days from 1 to 3650",
        "Every message is deleted this many days after it arrived.")
    delete_large_after: int = setting(
        "DELETE_LARGE_AFTER", "7", integer(1, 3650),
        "a whole number of days from 1 to 3650",
        "Messages larger than 200 kB are deleted this many days after they arrived.")
    delete_inactive_users_after: int = setting(
        "DELETE_INACTIVE_USERS_AFTER", "90", integer(1, 36500),
        "a whole number of days from 1 to 36500",
        "Accounts that have not logged in for this many days are deleted with all their mail.")
    push_gateway_url: str = setting(
        "PUSH_GATEWAY_URL", "https://notifications.delta.chat/notify", http_url,
        "an http(s) URL",
        "Where new-mail notifications for registered devices are POSTed (the device token "
        "is the body). The certificate is checked against Debian's CAs and EXTRA_CA_FILE.")
    iroh_relay_url: str = setting(
        "IROH_RELAY_URL", "", http_url_or_empty,
        "an http(s) URL, or empty",
        "A realtime (iroh) relay offered to clients in the `irohrelay` metadata entry; "
        "empty: none is offered.")
    turn: bool = setting(
        "TURN", "on", boolean,
        "on or off (also true/false, yes/no, 1/0)",
        "Whether the built-in TURN server (coturn, port 3478 UDP and TCP) runs and clients "
        "get time-limited credentials for calls in the `turn` metadata entry.")
    turn_relay_ports: tuple[int, int] = setting(
        "TURN_RELAY_PORTS", "49152-49171", port_range(1024, 65535, 1000),
        "two port numbers from 1024 to 65535 joined by '-', at most 1000 ports",
        "UDP ports the TURN server relays calls through; `compose.yaml` publishes the same "
        "range. Each call through the relay needs one or two of them.")
    metrics_listen: str = setting(
        "METRICS_LISTEN", "", listen_address_or_empty,
        "ADDRESS:PORT such as 127.0.0.1:9100 or [::]:9100 (IPv6 in brackets), or empty",
        "Where the Prometheus metrics are served (`GET /metrics`, text format); empty: "
        "no exporter runs. `compose.yaml` does not publish it: publish it yourself, to a "
        "private address only. `relayctl metrics` prints the same at any time.")
    appversions_file: str = setting(
        "APPVERSIONS_FILE", "/data/appversions.json", absolute_path,
        "an absolute path inside the container",
        "An app-version index (JSON, the shape of the reference relay's `appversions.json`: "
        "`{\"clients\": [{\"clientId\", \"sources\": [{\"sourceId\", \"versionInteger\", "
        "\"versionString\", \"downloadUrl\"}]}]}`) that Delta Chat reads as IMAP METADATA "
        "`/shared/vendor/deltachat/appversions`. Checked at start: a bad file stops the "
        "container with one line saying what is wrong. No file at the default path: none is "
        "offered (NIL).")
    log_level: str = setting(
        "LOG_LEVEL", "info", choice("debug", "info", "warning", "error"),
        "one of debug, info, warning, error",
        "Verbosity of the relay's own helpers.")
    log_format: str = setting(
        "LOG_FORMAT", "text", choice("text", "json"),
        "one of text, json",
        "Our helpers' log lines: `name: LEVEL message`, or one JSON object per line "
        "(`ts`, `service`, `level`, `msg`). The daemons keep their own formats.")

    @property
    def body_limit(self) -> int:
        """Bytes a message may have on the wire past Postfix's own check: MAX_MESSAGE_SIZE
        plus room for the headers a hop adds (nginx, our LMTP and filter servers use it;
        Postfix's message_size_limit refuses above MAX_MESSAGE_SIZE itself)."""
        return self.max_message_size + BODY_MARGIN

    @property
    def max_smtp_per_ip(self) -> int:
        """Concurrent SMTP connections one IP address may hold on one port (a fifth)."""
        return max(1, self.max_smtp_connections // 5)

    @property
    def max_imap_per_ip(self) -> int:
        """Concurrent IMAP connections one IP address may hold (a fifth)."""
        return max(1, self.max_imap_connections // 5)

    @property
    def privacy_contact(self) -> str:
        """The privacy contact address: PRIVACY_MAIL, else ADMIN_EMAIL ("" when neither)."""
        return self.privacy_mail or self.admin_email

    @property
    def tls_endpoints(self) -> tuple[TLSEndpoint, ...]:
        """Every port (and ALPN name on 443) where a client reaches a TLS service."""
        return TLS_ENDPOINTS

    @property
    def tls_ports(self) -> tuple[int, ...]:
        """The TCP ports that serve the relay's certificate, in ascending order."""
        return tuple(sorted({e.port for e in TLS_ENDPOINTS}))


SETTINGS: tuple[Setting, ...] = tuple(f.metadata["setting"] for f in fields(Settings))

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def load(environ: Mapping[str, str]) -> Settings:
    """Parse every setting from ``environ`` (variable name -> text).

    An unset or empty variable takes its default. Raises :class:`SettingError`,
    whose message is one line naming the variable and what it accepts, for the
    first bad or missing value."""
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.name, "")
        if raw.strip() == "":
            if setting.default is None:
                raise SettingError(
                    f"{setting.name} is required: set it to {setting.accepted}")
            raw = setting.default
        try:
            values[setting.name.lower()] = setting.parse(raw)
        except ValueError as exc:
            raise SettingError(
                f"{setting.name}={raw!r} is not valid ({exc}): expected {setting.accepted}"
            ) from None
    result = Settings(**values)
    if result.username_max_length < result.username_min_length:
        raise SettingError(
            f"USERNAME_MAX_LENGTH={result.username_max_length} is below "
            f"USERNAME_MIN_LENGTH={result.username_min_length}: expected a whole number "
            "from 3 to 32, not below USERNAME_MIN_LENGTH")
    return _fold_account_creation(result, environ)


def _fold_account_creation(result: Settings, environ: Mapping[str, str]) -> Settings:
    """ACCOUNT_CREATION=off is the old name of REGISTRATION=closed."""
    if result.account_creation:
        return result
    explicit = environ.get("REGISTRATION", "").strip()
    if explicit and result.registration != "closed":
        raise SettingError(
            f"ACCOUNT_CREATION=off contradicts REGISTRATION={explicit}: ACCOUNT_CREATION is "
            "the old name of REGISTRATION=closed; set REGISTRATION only")
    return replace(result, registration="closed")


def from_environment() -> Settings:
    """:func:`load` from this process's environment: how every helper starts."""
    return load(os.environ)


def template_context(settings: Settings) -> dict[str, Any]:
    """Each setting under its variable name in lower case, for the templates."""
    return {f.name: getattr(settings, f.name) for f in fields(settings)}
