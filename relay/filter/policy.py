"""What the filter accepts, as pure functions of envelope and message (SPEC §3).

Outgoing (submitted by our users, also to users of this relay):
  * the envelope sender and the single ``From:`` address must be the same
    address (Postfix already ties the envelope sender to the login);
  * the message must be OpenPGP/MIME encrypted, except a Secure-Join request
    or an Autocrypt Setup Message the user sends to themself only.
Incoming (from other servers):
  * encrypted, except a Secure-Join request or a delivery status report from
    a mailer-daemon address.
Everything else unencrypted is refused with 523, whatever its other headers say.
"""

from __future__ import annotations

from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message

from relay.filter import guard
from relay.filter.openpgp import has_one_content_type, is_openpgp_mime
from relay.filter.rfc5322 import from_addresses, normalise_field_names

__all__ = ["Reject", "UNENCRYPTED", "BAD_FROM", "UNPARSABLE", "parse", "from_addresses",
           "check_outgoing", "check_incoming"]


@dataclass(frozen=True)
class Reject:
    """A refusal: SMTP reply ``code`` (e.g. 523) and ``text`` (e.g. "Encryption Needed: Invalid
    Unencrypted Mail", the reference relay's exact text), sent during the transaction.
    """
    code: int
    text: str

    def reply(self) -> str:
        """The SMTP reply line, ``"<code> <text>"``."""
        return f"{self.code} {self.text}"


UNENCRYPTED = Reject(523, "Encryption Needed: Invalid Unencrypted Mail")
BAD_FROM = Reject(553, "5.7.1 From header must be your own address (the envelope sender)")
UNPARSABLE = Reject(554, "5.6.0 Message could not be parsed")


def parse(data: bytes) -> Message:
    """The message as Python's email package reads it (compat32: raw header values),
    after the obsolete ``Name WSP :`` field syntax is written as ``Name:``
    (relay.filter.rfc5322.normalise_field_names). The From address is read by
    relay.filter.rfc5322.from_addresses, shared with the DKIM check."""
    return message_from_bytes(normalise_field_names(data), policy=email_policy.compat32)


def _single_text_part(msg: Message) -> str | None:
    if not has_one_content_type(msg):
        return None
    if msg.get_content_type() != "multipart/mixed" or not msg.is_multipart():
        return None
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 1:
        return None
    part = parts[0]
    if not isinstance(part, Message) or not has_one_content_type(part):
        return None
    if part.is_multipart() or part.get_content_type() != "text/plain":
        return None
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    return payload.decode("utf-8", "replace")


def is_securejoin_request(msg: Message) -> bool:
    """True for the first message of Delta Chat's Secure-Join handshake, which cannot be encrypted
    yet (SPEC §3): exactly one ``Secure-Join: vc-request`` or ``vg-request`` header, and a
    ``multipart/mixed`` body with a single ``text/plain`` part whose text is that same header
    line.
    """
    values = msg.get_all("Secure-Join") or []
    if len(values) != 1:
        return False
    value = str(values[0]).strip()
    if value not in ("vc-request", "vg-request"):
        return False
    text = _single_text_part(msg)
    return text is not None and text.strip() == f"Secure-Join: {value}"


def is_autocrypt_setup_to_self(msg: Message, mail_from: str, rcpt_tos: list[str]) -> bool:
    """True for an Autocrypt Setup Message (Autocrypt Level 1: ``multipart/mixed``, Subject
    ``Autocrypt Setup Message``) whose every recipient is the sender itself (SPEC §3, as the
    reference relay's filtermail allows outgoing).
    """
    if msg.get_content_type() != "multipart/mixed" or not msg.is_multipart():
        return False
    if str(msg.get("Subject", "")).strip() != "Autocrypt Setup Message":
        return False
    return bool(rcpt_tos) and all(r.lower() == mail_from.lower() for r in rcpt_tos)


def is_mailer_daemon_report(msg: Message) -> bool:
    """True for a delivery status report (RFC 6522 ``multipart/report;
    report-type=delivery-status``, RFC 3464) from a single ``mailer-daemon@`` address with an
    ``Auto-Submitted`` header other than ``no`` (RFC 3834): the incoming exception of SPEC §3, so
    users learn about bounces.
    """
    senders = from_addresses(msg)
    if not senders or len(senders) != 1:
        return False
    local, at, domain = senders[0].rpartition("@")
    if not at or not domain or local != "mailer-daemon":
        return False
    if msg.get_content_type() != "multipart/report":
        return False
    if str(msg.get_param("report-type", "")).lower() != "delivery-status":
        return False
    auto = str(msg.get("Auto-Submitted", "")).strip().lower()
    return auto not in ("", "no")


def _parsed(data: bytes, msg: Message | None) -> Message | None:
    """``msg``, or ``data`` parsed when it is None; None when the parser fails (an
    unexpected failure goes through relay.filter.guard: re-raised under test)."""
    if msg is not None:
        return msg
    try:
        return parse(data)
    except Exception as exc:
        guard.unexpected(exc, "parse")
        return None


def check_outgoing(mail_from: str, rcpt_tos: list[str], data: bytes,
                   msg: Message | None = None) -> Reject | None:
    """None when a submitted message may go on, else why not (``msg``: ``data`` parsed)."""
    msg = _parsed(data, msg)
    if msg is None:
        return UNPARSABLE
    if from_addresses(msg) != [mail_from.lower()]:
        return BAD_FROM
    if is_openpgp_mime(msg, outgoing=True):
        return None
    if is_securejoin_request(msg) or is_autocrypt_setup_to_self(msg, mail_from, rcpt_tos):
        return None
    return UNENCRYPTED


def check_incoming(mail_from: str, rcpt_tos: list[str], data: bytes,
                   msg: Message | None = None) -> Reject | None:
    """None when a message from another server may be delivered, else why not."""
    msg = _parsed(data, msg)
    if msg is None:
        return UNPARSABLE
    if is_openpgp_mime(msg, outgoing=False):
        return None
    if is_securejoin_request(msg) or is_mailer_daemon_report(msg):
        return None
    return UNENCRYPTED
