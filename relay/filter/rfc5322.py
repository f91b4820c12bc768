"""Reading header fields as RFC 5322 says: unfolded, obsolete syntax included.

The filter compares only the *address* of the ``From:`` header (SPEC §3:
submitted mail must carry the sender's own address; the DKIM rule for mail
from other servers needs the From domain). Everything around the address is
read and then ignored: display names in any form (atoms, quoted strings,
RFC 2047 encoded words in any charset, raw UTF-8 per RFC 6532, the obsolete
phrase with unquoted periods ``A. Smith``), comments, folding anywhere FWS may
stand, and the obsolete forms of RFC 5322 §4 (CFWS around the ``.`` and ``@``
of an address, empty list elements, a source route ``<@a,@b:user@c>``, white
space before the field's colon).

Nothing is decoded: an encoded word is an atom like any other (RFC 2047 §5
keeps it out of addresses), so no charset can confuse the address. The one
leniency beyond the grammar: an encoded word in a display name may hold
specials (``=?utf-8?q?Smith,_A.?=``, written by careless encoders) and still
counts as one word. The address itself is read strictly.

A header that does not parse as exactly this grammar gives ``None``: the
caller refuses the message during the SMTP transaction, with a reply that says
so. The parser is a single linear pass (no backtracking, no recursion), so a
hostile 100 kB header costs milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message

from relay.filter import guard

# RFC 5322 §3.2.3 atext, plus every non-ASCII character (RFC 6532 §3.2).
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+")
# RFC 2047 §2 encoded-word, read leniently (see the module docstring).
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_DOT_ATOM = re.compile(_ATEXT.pattern + r"(?:\." + _ATEXT.pattern + r")*")
_SPECIALS = set("<>@,;:.")
_WSP = " \t"


class _Syntax(ValueError):
    pass


@dataclass(frozen=True)
class _Token:
    kind: str          # "atom", "quoted", "literal", or the special character itself
    value: str         # atom text, quoted-string content, domain-literal content
    strict: bool = True  # atom made of atext only (an encoded word with specials is not)


def unfold(value: str) -> str:
    """RFC 5322 §2.2.3: remove every CRLF (or bare LF) that is followed by WSP."""
    return re.sub(r"\r?\n(?=[ \t])", "", value)


def _delimited(text: str, i: int, close: str, nests: bool) -> tuple[str, int]:
    """Content of a quoted string (``close='"'``), comment (``')'``, nesting) or domain
    literal (``']'``) whose opening character is at ``i - 1``; returns (content, end)."""
    out: list[str] = []
    depth = 1
    while i < len(text):
        c = text[i]
        if c == "\\":  # quoted-pair, obs-qp
            if i + 1 >= len(text):
                break
            out.append(text[i + 1])
            i += 2
            continue
        if c == close:
            depth -= 1
            if depth == 0:
                return "".join(out), i + 1
        elif nests and c == "(":
            depth += 1
        elif close == "]" and c == "[":
            raise _Syntax("'[' inside a domain literal")
        elif c in ("\r", "\n", "\0"):
            raise _Syntax("line break or NUL in a header value")
        out.append(c)
        i += 1
    raise _Syntax(f"unterminated {'comment' if nests else close!r}")


def tokens(text: str) -> list[_Token]:
    """The lexical tokens of an unfolded header value; CFWS is dropped."""
    out: list[_Token] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c in _WSP:
            i += 1
        elif c == "(":
            _, i = _delimited(text, i + 1, ")", nests=True)
        elif c == '"':
            content, i = _delimited(text, i + 1, '"', nests=False)
            out.append(_Token("quoted", content))
        elif c == "[":
            content, i = _delimited(text, i + 1, "]", nests=False)
            out.append(_Token("literal", content))
        elif c in _SPECIALS:
            out.append(_Token(c, c))
            i += 1
        elif (word := _ENCODED_WORD.match(text, i)) is not None:
            strict = _ATEXT.fullmatch(word.group()) is not None
            out.append(_Token("atom", word.group(), strict))
            i = word.end()
        elif (atom := _ATEXT.match(text, i)) is not None:
            out.append(_Token("atom", atom.group()))
            i = atom.end()
        else:
            raise _Syntax(f"character {c!r} not allowed here")
    return out


class _Parser:
    """mailbox-list (RFC 5322 §3.4) with obs-mbox-list, obs-angle-addr, obs-local-part,
    obs-domain and obs-phrase (§4.4), over the tokens of :func:`tokens`."""

    def __init__(self, toks: list[_Token]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i].kind if self.i < len(self.toks) else None

    def take(self, kind: str) -> _Token:
        if self.peek() != kind:
            raise _Syntax(f"expected {kind!r}, found {self.peek()!r}")
        self.i += 1
        return self.toks[self.i - 1]

    def mailbox_list(self) -> list[str]:
        found: list[str] = []
        while self.peek() is not None:
            if self.peek() == ",":  # obs-mbox-list: empty elements
                self.i += 1
                continue
            found.append(self.mailbox())
            if self.peek() is not None:
                self.take(",")
        if not found:
            raise _Syntax("no address")
        return found

    def mailbox(self) -> str:
        start = self.i
        while self.peek() in ("atom", "quoted", "."):
            self.i += 1
        if self.peek() == "<":  # name-addr: the words before it are the display name
            if self.i > start and self.toks[start].kind == ".":
                raise _Syntax("display name starts with '.'")
            return self.angle_addr()
        self.i = start  # addr-spec
        return self.addr_spec()

    def angle_addr(self) -> str:
        self.take("<")
        if self.peek() in ("@", ","):  # obs-route: obs-domain-list ":"
            domains = 0
            while self.peek() in ("@", ","):
                self.i += 1
                if self.toks[self.i - 1].kind == "@":
                    self.domain()
                    domains += 1
            if not domains:
                raise _Syntax("source route without a domain")
            self.take(":")
        address = self.addr_spec()
        self.take(">")
        return address

    def word(self) -> str:
        token = self.toks[self.i] if self.i < len(self.toks) else None
        if token is None or token.kind not in ("atom", "quoted"):
            raise _Syntax("expected a word")
        if token.kind == "atom" and not token.strict:
            raise _Syntax("encoded word in an address")
        self.i += 1
        return token.value if token.kind == "atom" else _quote_if_needed(token.value)

    def addr_spec(self) -> str:
        local = [self.word()]
        while self.peek() == ".":
            self.i += 1
            local.append(self.word())
        self.take("@")
        return ".".join(local) + "@" + self.domain()

    def domain(self) -> str:
        if self.peek() == "literal":
            return "[" + re.sub(r"[ \t]", "", self.take("literal").value) + "]"
        labels = [self.take("atom")]
        while self.peek() == ".":
            self.i += 1
            labels.append(self.take("atom"))
        if not all(label.strict for label in labels):
            raise _Syntax("encoded word in a domain")
        return ".".join(label.value for label in labels)


def _quote_if_needed(content: str) -> str:
    """A quoted local-part word in canonical form: bare when it is a dot-atom
    (``"a.b"`` and ``a.b`` are the same local part, RFC 5321 §4.1.2)."""
    if _DOT_ATOM.fullmatch(content):
        return content
    return '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _normalise(address: str) -> str:
    """Lower case; a non-ASCII domain name as its A-label (DKIM's d= is ASCII)."""
    local, _, domain = address.rpartition("@")
    if not domain.isascii() and not domain.startswith("["):
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return f"{local}@{domain}".lower()


def mailbox_list(value: str) -> list[str] | None:
    """The addresses (addr-spec, lower-cased) of a ``mailbox-list`` header value such as
    a ``From:`` field body, folded or not; ``None`` when it is not one.

    Source: RFC 5322 §3.4 and §4.4 (obsolete syntax, which a reader must accept),
    RFC 6532 (UTF-8), RFC 2047 §5 (encoded words only in phrases and comments).
    Groups are not mailboxes and give ``None``.
    """
    text = unfold(value)
    try:
        return [_normalise(a) for a in _Parser(tokens(text)).mailbox_list()]
    except _Syntax:
        return None
    except Exception as exc:  # a programming error here: refused, and raised under test
        guard.unexpected(exc, "From header")
        return None


def field_values(msg: Message, name: str) -> list[str]:
    """The raw bodies of every ``name:`` field of a message parsed with the compat32
    policy, as text: 8-bit bytes are read as UTF-8 (RFC 6532), undecodable bytes
    become U+FFFD. Folding is kept (see :func:`unfold`)."""
    out = []
    for key, value in msg.raw_items():
        if key.rstrip(_WSP).lower() == name.lower():
            raw = str(value).encode("utf-8", "surrogateescape")
            out.append(raw.decode("utf-8", "replace"))
    return out


def from_addresses(msg: Message) -> list[str] | None:
    """The addresses of the message's single ``From:`` field, lower-cased; ``None`` when
    there is not exactly one ``From:`` field (RFC 5322 §3.6) or it does not parse.

    This is the one place that reads ``From:``: the submission check
    (relay.filter.policy) and the DKIM alignment check (relay.filter.dkimverify)
    both use it, so they can never disagree about whose message it is."""
    values = field_values(msg, "From")
    if len(values) != 1:
        return None
    return mailbox_list(values[0])


_OBS_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]+:", re.MULTILINE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")


def normalise_field_names(data: bytes) -> bytes:
    """The message with ``Name WSP :`` (RFC 5322 §4.5 obsolete field syntax) written as
    ``Name:`` in its header section, so that Python's email parser, which stops at
    such a line, reads the fields after it; the body is left as it is."""
    end = _HEADER_END.search(data)
    head, rest = (data[:end.start()], data[end.start():]) if end else (data, b"")
    if not _OBS_FIELD_NAME.search(head):
        return data
    return _OBS_FIELD_NAME.sub(rb"\1:", head) + rest
