"""The From: address as RFC 5322 writes it, in every legal form (issue 17 §2).

hypothesis builds ``From:`` fields from the RFC 5322 grammar (§3.2-§3.4, §4 obsolete
syntax, RFC 2047 encoded words in many charsets, RFC 6532 UTF-8): display names as
atoms, quoted strings and obsolete phrases with periods, comments (nested, with
quoted pairs), folding at every place FWS may stand, CFWS inside the address,
source routes, quoted local parts, domain literals, mixed case and ``From :``.
The generator knows the address it wrote, so no oracle is needed:

* submission: the right address passes check_outgoing, a wrong one gets the 553;
* incoming: the From domain drives the DKIM alignment: a message signed by the
  From domain passes, the same signature under a From of another domain fails.
"""

import base64
import os
import random
import subprocess

import dkim
import pytest
from hypothesis import given, settings, strategies as st

import corpus_tools as ct
from fuzzing import FUZZ
from relay.filter import dkimverify, policy, rfc5322
from relay.filter.policy import check_incoming, check_outgoing

SENDER = "k3x9q2m7a@_chat.example.test"
RECIPIENT = "p8w2z4r1b@_chat.example.test"
_, _, ENCRYPTED, _ = ct.load_case("enc_one_pkesk.eml", SENDER, RECIPIENT)
BODY_AFTER_FROM = ENCRYPTED.split(b"\r\n", 1)[1]
assert ENCRYPTED.startswith(b"From: ")

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
CHARSETS = {"utf-8": "Jörg Ünïcødé 名前 Ωμέγα 😀", "iso-8859-1": "Jörg Müller Çà",
            "iso-8859-15": "Jörg €uro", "windows-1252": "Jörg “quoted” €",
            "koi8-r": "Тестов Иван", "shift_jis": "山田太郎", "euc-jp": "山田太郎",
            "iso-2022-jp": "山田太郎", "gb2312": "张伟", "big5": "張偉", "utf-16": "Zoë"}


# --- the grammar, as a generator ---------------------------------------------------------
# Plain Python driven by a seed that hypothesis draws: thousands of fields a second
# (hypothesis' own composite strategies cost milliseconds per draw). A failing seed is
# reported by hypothesis, and every assertion message shows the field itself.

def q_encode(raw: bytes) -> str:
    """RFC 2047 §4.2 and §5(3): the Q form allowed in a phrase."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!*+-/"
    return "".join(chr(b) if b in safe else "_" if b == 32 else f"={b:02X}" for b in raw)


class Grammar:
    """RFC 5322 §3.2-§3.4 and §4, RFC 2047, RFC 6532: one random production per call."""

    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)

    def maybe(self, make, p=0.5) -> str:
        return make() if self.r.random() < p else ""

    def text(self, alphabet: str, low=1, high=8) -> str:
        return "".join(self.r.choice(alphabet) for _ in range(self.r.randint(low, high)))

    def fws(self) -> str:
        """FWS = ([*WSP CRLF] 1*WSP) / obs-FWS: folding included."""
        wsp = self.r.choice([" ", "\t", "  "])
        return self.r.choice([wsp, wsp, "\r\n" + wsp, " \r\n" + wsp])

    def quoted_pair(self) -> str:
        return "\\" + self.r.choice(ATEXT + " ()<>[]:;@\\,.\"")

    def comment(self, depth=0) -> str:
        parts = []
        for _ in range(self.r.randint(0, 4)):
            kind = self.r.randrange(4 if depth < 2 else 3)
            parts.append([lambda: self.text(ATEXT + "<>[]:;@,.\"äé名", 1, 6), self.quoted_pair,
                          self.fws, lambda: self.comment(depth + 1)][kind]())
        return "(" + "".join(parts) + ")"

    def cfws(self) -> str:
        """CFWS = (1*([FWS] comment) [FWS]) / FWS"""
        if self.r.random() < 0.5:
            return self.fws()
        out = "".join(self.maybe(self.fws) + self.comment() for _ in range(self.r.randint(1, 2)))
        return out + self.maybe(self.fws)

    def around(self, text: str) -> str:
        return self.maybe(self.cfws, 0.3) + text + self.maybe(self.cfws, 0.3)

    def atom(self, text=None) -> str:
        return self.around(text or self.text(ATEXT + "ÄéÑ"))

    def quoted_string(self, text=None) -> str:
        if text is None:
            pieces = [self.text(ATEXT + "()<>[]:;@,. äé名"), self.quoted_pair(), self.fws()]
            text = "".join(self.r.choice(pieces) for _ in range(self.r.randint(0, 4)))
        return self.around('"' + text + '"')

    def encoded_words(self) -> str:
        """1-3 encoded words of a text in some charset, separated by FWS."""
        charset = self.r.choice(sorted(CHARSETS))
        words = []
        for piece in CHARSETS[charset].split(" ")[:self.r.randint(1, 3)]:
            raw = piece.encode(charset)
            b = self.r.random() < 0.5
            name = "".join(c.upper() if self.r.random() < 0.5 else c for c in charset)
            name += self.maybe(lambda: "*en", 0.15)  # RFC 2231 §5 language tag
            enc = ("B" if b else "Q") if self.r.random() < 0.5 else ("b" if b else "q")
            payload = base64.b64encode(raw).decode() if b else q_encode(raw)
            words.append(f"=?{name}?{enc}?{payload}?=")
        return self.around(self.fws().join(words))

    def word(self) -> str:
        return self.r.choice([self.atom, self.quoted_string, self.encoded_words])()

    def display_name(self) -> str:
        """phrase = 1*word / obs-phrase (word *(word / "." / CFWS))"""
        rest = [self.r.choice([self.word, lambda: ".", lambda: ". ", self.cfws])()
                for _ in range(self.r.randint(0, 4))]
        # two adjacent words need white space between them, as any writer puts it
        return " ".join([self.word(), *rest])

    def mixed_case(self, text: str) -> str:
        return "".join(c.upper() if self.r.random() < 0.5 else c for c in text)

    def local_part(self, local: str) -> str:
        """dot-atom / quoted-string / obs-local-part (word *("." word))"""
        local = self.mixed_case(local)
        form = self.r.randrange(3)
        if form == 0:
            return self.around(local)
        if form == 1:
            return self.quoted_string(local)
        return ".".join(self.r.choice([self.atom, self.quoted_string])(w)
                        for w in local.split("."))

    def domain(self, name: str) -> str:
        """dot-atom / domain-literal (FWS inside) / obs-domain (atom *("." atom))"""
        name = self.mixed_case(name)
        if name.startswith("["):
            return self.around("[" + self.maybe(self.fws) + name[1:-1] + self.maybe(self.fws) + "]")
        if self.r.random() < 0.5:
            return self.around(name)
        return ".".join(self.atom(label) for label in name.split("."))

    def mailbox(self, address: str) -> str:
        local, _, dom = address.rpartition("@")
        spec = self.local_part(local) + "@" + self.domain(dom)
        if self.r.random() < 0.25:
            return spec
        route = self.maybe(lambda: self.r.choice(  # obs-route
            ["@relay.example:", "@a.example,@b.example:", ",@a.example, @b.example :"]), 0.15)
        return (self.maybe(self.display_name) + self.maybe(self.cfws, 0.3) + "<" + route + spec
                + ">" + self.maybe(self.cfws, 0.3))

    def from_field(self, address: str, obs_colon=True) -> str:
        """A whole ``From:`` field (name, colon, body, CRLF) for ``address``."""
        colon = ":"
        if obs_colon:  # obs-from: WSP before ':'
            colon = self.r.choice([":", ":", ":", " :", "\t:"])
        body = self.mailbox(address)
        if self.r.random() < 0.15:  # obs-mbox-list: empty list elements
            body = self.r.choice([", ", " ,"]) + body + self.r.choice([",", ", ,"])
        lead = self.r.choice([" ", "", "\t", "\r\n "])
        return f"{self.mixed_case('from')}{colon}{lead}{body}\r\n"

    def wrong(self, address: str) -> str:
        """An address that is not ``address``, in any case."""
        local, _, dom = address.rpartition("@")
        bare = dom.strip("[]").lstrip("_")
        return self.r.choice([local[:-1] + ("x" if local[-1] != "x" else "y") + "@" + dom,
                              local + "x@" + dom, "x" + local + "@" + dom,
                              local + "@x" + bare + ".test", local + "@sub." + bare,
                              local[1:] + "@" + dom])


SEEDS = st.integers(0, 2**64 - 1)


def message(field: str) -> bytes:
    return field.encode("utf-8") + BODY_AFTER_FROM


# --- submission ------------------------------------------------------------------------------

@FUZZ
@given(SEEDS)
def test_own_address_in_any_legal_form_is_accepted(seed):
    field = Grammar(seed).from_field(SENDER)
    msg = message(field)
    assert rfc5322.from_addresses(policy.parse(msg)) == [SENDER], field
    assert check_outgoing(SENDER, [RECIPIENT], msg) is None, field


@FUZZ
@given(SEEDS)
def test_another_address_in_any_legal_form_is_refused(seed):
    grammar = Grammar(seed)
    other = grammar.wrong(SENDER)
    field = grammar.from_field(other)
    msg = message(field)
    assert rfc5322.from_addresses(policy.parse(msg)) == [other.lower()], field
    assert check_outgoing(SENDER, [RECIPIENT], msg) == policy.BAD_FROM, field


@FUZZ
@given(SEEDS, st.sampled_from(["Carol.Q.Smith@[192.0.2.1]", "k3x9q2m7a@[IPv6:2001:db8::7]",
                               "a.b-c_d@sub.example.org"]))
def test_ip_literal_and_dotted_addresses(seed, address):
    field = Grammar(seed).from_field(address)
    assert rfc5322.from_addresses(policy.parse(message(field))) == [address.lower()], field


# --- incoming: the DKIM alignment reads the same address ---------------------------------------

@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkim")
    subprocess.run(["openssl", "genrsa", "-out", d / "k.pem", "1024"], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", d / "k.pem", "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return (d / "k.pem").read_bytes(), b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


# dkimpy's RSA is pure Python: 40 signed pairs by default (FUZZ_EXAMPLES raises it).
DKIM_FUZZ = settings(FUZZ, max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)))


def signed(private: bytes, domain: str, msg: bytes) -> bytes:
    return dkim.sign(msg, b"s1", domain.encode(), private,
                     include_headers=[b"from", b"to", b"subject", b"message-id"]) + msg


def lookup(record: bytes, domain: str):
    """The TXT records at a key name (relay.filter.dkimkeys.TxtLookup): ``record`` at
    ``s1._domainkey.<domain>``, nothing elsewhere."""
    def txt(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return [record] if name.rstrip(".") == f"s1._domainkey.{domain}" else []
    return txt


@DKIM_FUZZ
@given(SEEDS)
def test_incoming_from_domain_drives_dkim_alignment(dkim_key, seed):
    private, record = dkim_key
    grammar = Grammar(seed)
    sender = "Carol.Smith@Sender.Example"
    field = grammar.from_field(sender, obs_colon=False)
    msg = signed(private, "sender.example", message(field))
    assert dkimverify.from_domain(policy.parse(msg)) == "sender.example", field
    assert check_incoming(sender, [RECIPIENT], msg) is None
    assert dkimverify.check(msg, lookup(record, "sender.example")) is None, field
    other = grammar.wrong(sender)
    field = grammar.from_field(other, obs_colon=False)
    msg = signed(private, "sender.example", message(field))
    if other.rpartition("@")[2].lower() != "sender.example":
        assert dkimverify.check(msg, lookup(record, "sender.example")) is not None, field


# --- what is not a single mailbox --------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "bob@evil.test <k3x9q2m7a@_chat.example.test>",
    "k3x9q2m7a@_chat.example.test <bob@evil.test>",
    "<k3x9q2m7a@_chat.example.test> <bob@evil.test>",
    "A <k3x9q2m7a@_chat.example.test> (x) B <bob@evil.test>",
    "A <k3x9q2m7a@_chat.example.test",
    "A <k3x9q2m7a@_chat.example.test>;",
    "Friends: k3x9q2m7a@_chat.example.test;",
    "=?utf-8?q?x?= <=?utf-8?q?k3x9q2m7a?=@_chat.example.test>",
    "k3x9q2m7a.@_chat.example.test",
    "(unterminated k3x9q2m7a@_chat.example.test",
    "A\x00 <k3x9q2m7a@_chat.example.test>",
    "",
])
def test_not_one_mailbox_is_refused(value):
    msg = message(f"From: {value}\r\n")
    assert rfc5322.from_addresses(policy.parse(msg)) != [SENDER]
    assert check_outgoing(SENDER, [RECIPIENT], msg) == policy.BAD_FROM


def test_two_from_fields_are_refused():
    msg = message(f"From: {SENDER}\r\nfrom: {SENDER}\r\n")
    assert rfc5322.from_addresses(policy.parse(msg)) is None
    assert check_outgoing(SENDER, [RECIPIENT], msg) == policy.BAD_FROM


@pytest.mark.parametrize("value", [
    "x\r\n <k3x9q2m7a@_chat.example.test>",          # issue 17: folded before the address
    "A. Smith <k3x9q2m7a@_chat.example.test>",      # issue 17: obsolete phrase
    "=?utf-8?q?Smith,_A.?= <k3x9q2m7a@_chat.example.test>",  # a careless encoder's comma
    '"=?utf-8?q?J=C3=B6rg?=" <k3x9q2m7a@_chat.example.test>',  # encoded word in quotes
    "Jörg Müller <K3X9Q2M7A@_Chat.Example.Test>",   # RFC 6532 raw UTF-8, mixed case
])
def test_issue_examples_are_accepted(value):
    assert check_outgoing(SENDER, [RECIPIENT], message(f"From: {value}\r\n")) is None


def test_eight_bit_non_utf8_display_name_is_read():
    msg = b"From: J\xf6rg <" + SENDER.encode() + b">\r\n" + BODY_AFTER_FROM
    assert check_outgoing(SENDER, [RECIPIENT], msg) is None


def test_hostile_header_is_read_in_linear_time():
    """100 kB of obsolete phrase (Postfix's header_size_limit): one pass, no recursion."""
    for value in ["a." * 50_000 + f" <{SENDER}>", "(" * 50_000 + ")" * 50_000 + SENDER,
                  "=?utf-8?q?a?= " * 7_000 + f"<{SENDER}>"]:
        assert rfc5322.mailbox_list(value) in ([SENDER], None)
