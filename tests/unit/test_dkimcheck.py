"""The incoming DKIM rule (relay/filter/dkimverify.py), rule by rule of its docstring table:
messages signed here with our own keys (RSA and Ed25519, through dkimpy's header
builder so that every tag can be set, rsa-sha1 and an h= without From included), key
records served by a TXT lookup we control, and valid and invalid variants of each rule."""

from __future__ import annotations

import base64
import logging
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import dkimsign
from dkimsign import ed25519_key, rsa_key
from fuzzing import FUZZ
from relay.filter import dkimverify as dkimcheck
from relay.filter.dkimkeys import TemporaryLookupError

NAME = "s1._domainkey.sender.example."
MSG = (b"From: Alice <alice@sender.example>\r\nTo: bob@relay.example\r\nSubject: x\r\n"
       b"Message-ID: <1@sender.example>\r\n\r\nbody\r\nsecond line\r\n")


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa_key(2048), "rsa1024": rsa_key(1024), "rsa512": rsa_key(512),
            "ed25519": ed25519_key()}


def record(keys, kind="rsa", tags=b"v=DKIM1; k=rsa; "):
    if kind == "ed25519" and tags == b"v=DKIM1; k=rsa; ":
        tags = b"v=DKIM1; k=ed25519; "
    return tags + b"p=" + keys[kind][1]


def sign(keys, msg=MSG, kind="rsa", algo=b"rsa-sha256", domain=b"sender.example", **kw):
    """``msg`` signed for sender.example with selector s1 (tests/support/dkimsign.py)."""
    if kind == "ed25519":
        algo = b"ed25519-sha256"
    return dkimsign.sign(msg, keys[kind][0], domain, b"s1", algo, **kw)


def dns(answers):
    """A TXT lookup: {name: [records] or an exception}; unknown names do not exist."""
    calls = []

    def lookup(name, timeout):
        calls.append(name)
        value = answers.get(name, [])
        if isinstance(value, Exception):
            raise value
        return list(value)

    lookup.calls = calls
    return lookup


def verdict(data, answers):
    return dkimcheck.check(data, dns(answers))


def refused_because(reject, words):
    assert reject is not None and reject.code == 550, reject
    assert reject.text.startswith(dkimcheck.NO_VALID_SIGNATURE.text), reject
    assert words in reject.text, reject


# --- algorithms and keys (RFC 8301, RFC 8463) ---------------------------------------------

@pytest.mark.parametrize("canon", [b"relaxed/relaxed", b"simple/simple", b"relaxed/simple",
                                   b"simple", b"relaxed"])
def test_rsa_sha256_passes_in_every_canonicalization(keys, canon):
    assert verdict(sign(keys, canon=canon), {NAME: [record(keys)]}) is None


def test_ed25519_sha256_passes(keys):
    assert verdict(sign(keys, kind="ed25519"), {NAME: [record(keys, "ed25519")]}) is None


def test_rsa_sha1_never_counts(keys):
    refused_because(verdict(sign(keys, algo=b"rsa-sha1"), {NAME: [record(keys)]}), "rsa-sha1")


def test_algorithm_names_are_case_insensitive(keys):
    signed = sign(keys, tags=[(b"a", b"RSA-SHA256")])
    assert verdict(signed, {NAME: [record(keys)]}) is None


def test_unknown_algorithm_refused(keys):
    signed = sign(keys, tags=[(b"a", b"rsa-sha512")])
    refused_because(verdict(signed, {NAME: [record(keys)]}), "unknown signature algorithm")


@pytest.mark.parametrize("kind,ok", [("rsa1024", True), ("rsa512", False)])
def test_rsa_keys_need_1024_bits(keys, kind, ok):
    reject = verdict(sign(keys, kind=kind), {NAME: [record(keys, kind)]})
    if ok:
        assert reject is None
    else:
        refused_because(reject, "shorter than 1024 bits")


def test_key_type_must_match_the_algorithm(keys):
    # An Ed25519 signature that names rsa-sha256, and an RSA signature with an ed25519 key.
    ed_as_rsa = sign(keys, kind="ed25519", tags=[(b"a", b"rsa-sha256")])
    refused_because(verdict(ed_as_rsa, {NAME: [record(keys, "ed25519")]}),
                    "inappropriate key algorithm")
    refused_because(verdict(sign(keys), {NAME: [b"k=ed25519; p=" + keys["ed25519"][1]]}),
                    "inappropriate key algorithm")


def test_wrong_key_and_tampering_refused(keys):
    other = record(keys, "rsa1024")
    refused_because(verdict(sign(keys), {NAME: [other]}), "did not verify")
    tampered = sign(keys).replace(b"second line", b"second lime")
    refused_because(verdict(tampered, {NAME: [record(keys)]}), "body hash")
    header_changed = sign(keys).replace(b"Subject: x", b"Subject: y")
    refused_because(verdict(header_changed, {NAME: [record(keys)]}), "did not verify")


# --- signature tags (RFC 6376 §3.5, §6.1.1) -----------------------------------------------

def test_h_without_from_is_ignored(keys):
    signed = sign(keys, headers=(b"to", b"subject"))
    refused_because(verdict(signed, {NAME: [record(keys)]}), "From field not signed")
    # h= names are case-insensitive: "From" counts.
    assert verdict(sign(keys, headers=(b"From", b"To")), {NAME: [record(keys)]}) is None


def test_l_must_cover_the_whole_body(keys):
    signed = sign(keys, length=True)
    assert verdict(signed, {NAME: [record(keys)]}) is None
    extended = signed + b"appended text nobody signed\r\n"
    refused_because(verdict(extended, {NAME: [record(keys)]}), "partial body signature")
    beyond = sign(keys, tags=[(b"l", b"9999")])
    refused_because(verdict(beyond, {NAME: [record(keys)]}), "l= beyond the end")


@pytest.mark.parametrize("identity,ok", [(b"@sender.example", True), (b"alice@sender.example", True),
                                         (b"@mail.sender.example", True),
                                         (b"@xsender.example", False), (b"@other.example", False),
                                         (b"sender.example", False)])
def test_i_must_be_in_d(keys, identity, ok):
    reject = verdict(sign(keys, tags=[(b"i", identity)]), {NAME: [record(keys)]})
    if ok:
        assert reject is None
    else:
        refused_because(reject, "i=")


@pytest.mark.parametrize("q,ok", [(b"dns/txt", True), (b"DNS/TXT", True), (b"other/x:dns/txt", True),
                                  (b"other/x", False)])
def test_q_needs_dns_txt(keys, q, ok):
    reject = verdict(sign(keys, tags=[(b"q", q)]), {NAME: [record(keys)]})
    assert (reject is None) == ok, reject


def test_times(keys):
    now = int(time.time())
    good = [(b"t", str(now - 86400).encode()), (b"x", str(now + 86400).encode())]
    assert verdict(sign(keys, tags=good), {NAME: [record(keys)]}) is None
    assert verdict(sign(keys, tags=[(b"t", str(now + 60).encode())]), {NAME: [record(keys)]}) is None
    future = sign(keys, tags=[(b"t", str(now + 3600).encode())])
    refused_because(verdict(future, {NAME: [record(keys)]}), "in the future")
    expired = sign(keys, tags=[(b"t", str(now - 7200).encode()), (b"x", str(now - 3600).encode())])
    refused_because(verdict(expired, {NAME: [record(keys)]}), "expired")
    backwards = sign(keys, tags=[(b"t", str(now).encode()), (b"x", str(now - 10).encode())])
    refused_because(verdict(backwards, {NAME: [record(keys)]}), "x= not after t=")


@pytest.mark.parametrize("tag,value,words", [
    (b"v", b"2", "incompatible version"),
    (b"c", b"relaxed/bogus", "c="),
    (b"d", b"sender..example", "d= or s="),
    (b"h", b"from::to", "h="),
    (b"t", b"soon", "t="),
    (b"l", b"-1", "l="),
])
def test_bad_tag_values_refused(keys, tag, value, words):
    refused_because(verdict(sign(keys, tags=[(tag, value)]), {NAME: [record(keys)]}), words)


HAND_MADE = b"v=1; a=rsa-sha256; d=sender.example; s=s1; h=from; bh=AAAA; b=AAAA"


@pytest.mark.parametrize("tag", ["v", "a", "b", "bh", "d", "h", "s"])
def test_required_tags(tag):
    tags = b"; ".join(t for t in HAND_MADE.split(b"; ") if not t.startswith(tag.encode() + b"="))
    reject = verdict(b"DKIM-Signature: " + tags + b"\r\n" + MSG, {})
    refused_because(reject, f"missing required tag {tag}=")


def test_a_tag_given_twice_voids_the_signature(keys):
    signed = sign(keys, tags=[(b"z", b"1")]).replace(b"z=1", b"d=sender.example", 1)
    refused_because(verdict(signed, {NAME: [record(keys)]}), "given twice")


def test_from_domain_compared_case_insensitively(keys):
    msg = MSG.replace(b"alice@sender.example", b"alice@Sender.EXAMPLE")
    assert verdict(sign(keys, msg, domain=b"SENDER.example"), {NAME: [record(keys)]}) is None


# --- key records (RFC 6376 §3.6.1, §6.1.2) ------------------------------------------------

@pytest.mark.parametrize("tags,ok", [
    (b"", True),                               # v= is optional
    (b"v=DKIM1; ", True),
    (b"v=DKIM1; k=rsa; h=sha256; s=email; t=s; n=notes; ", True),
    (b"v=DKIM1; h=sha1:sha256; s=*; t=z; ", True),   # unknown flags are ignored
    (b"v=DKIM1; s=email:tlsrpt; ", True),
    (b"v=DKIM2; ", False),                     # another version is discarded
    (b"k=rsa; v=DKIM1; ", False),              # v= must come first
    (b"v=DKIM1; h=sha1; ", False),             # the key does not allow sha256
    (b"v=DKIM1; s=tlsrpt; ", False),           # not for e-mail
    (b"v=DKIM1; k=dsa; ", False),              # unknown key type
    (b"v=DKIM1; t=y; ", False),                # testing: treated as unsigned
])
def test_key_record_tags(keys, tags, ok):
    reject = verdict(sign(keys), {NAME: [tags + b"p=" + keys["rsa"][1]]})
    assert (reject is None) == ok, reject


def test_revoked_key(keys):
    refused_because(verdict(sign(keys), {NAME: [b"v=DKIM1; k=rsa; p="]}), "key revoked")


def test_t_s_forbids_subdomains_in_i(keys):
    strict = [b"v=DKIM1; t=s; p=" + keys["rsa"][1]]
    assert verdict(sign(keys, tags=[(b"i", b"@sender.example")]), {NAME: strict}) is None
    sub = sign(keys, tags=[(b"i", b"@mail.sender.example")])
    refused_because(verdict(sub, {NAME: strict}), "t=s")


def test_key_split_into_strings_with_white_space(keys):
    p = keys["rsa"][1]
    assert verdict(sign(keys), {NAME: [b"v=DKIM1; k=rsa; p=" + p[:100] + b" " + p[100:]]}) is None


def test_bad_key_material_refused(keys):
    refused_because(verdict(sign(keys), {NAME: [b"v=DKIM1; p=not*base64"]}), "key syntax error")
    garbage = b"v=DKIM1; p=" + base64.b64encode(b"not a DER public key at all")
    refused_because(verdict(sign(keys), {NAME: [garbage]}), "key syntax error (p= does not parse)")
    short_ed = b"k=ed25519; p=" + base64.b64encode(b"x" * 31)
    refused_because(verdict(sign(keys, kind="ed25519"), {NAME: [short_ed]}), "32 octets")


# --- DNS outcomes (RFC 6376 §3.6.2.2, §6.1.2) ---------------------------------------------

SITE = b"google-site-verification=4p3Xx0QdAbCdEfGhIjKlMnOpQrStUvWxYz0123456789"


@pytest.mark.parametrize("others", [[SITE], [b"v=spf1 -all"], [SITE, b"v=spf1 -all"]])
def test_other_txt_records_beside_the_key_in_any_order(keys, others):
    for records in ([*others, record(keys)], [record(keys), *others]):
        assert verdict(sign(keys), {NAME: records}) is None, records


def test_several_dkim_records_each_tried(keys):
    for records in ([record(keys, "rsa1024"), record(keys)], [record(keys), record(keys, "rsa1024")]):
        assert verdict(sign(keys), {NAME: records}) is None


def test_no_key_is_permanent(keys):
    refused_because(verdict(sign(keys), {}), "no key for signature")  # NXDOMAIN or no TXT
    refused_because(verdict(sign(keys), {NAME: [SITE]}), "no DKIM key record")


def test_temporary_failure_is_451_and_logged_as_error(keys, caplog):
    failing = {NAME: TemporaryLookupError("no name server answered (SERVFAIL or REFUSED)")}
    with caplog.at_level(logging.INFO, logger="relay-filter"):
        reject = verdict(sign(keys), failing)
    assert reject == dkimcheck.LOOKUP_FAILED and reject.code == 451
    assert reject.text.startswith("4.7.")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and NAME in errors[0].getMessage()


def test_temporary_failure_beats_a_permanent_one_but_not_a_pass(keys):
    other_name = "s2._domainkey.sender.example."
    second = sign(keys, sign(keys), tags=[(b"s", b"s2")])  # two aligned signatures, s2 on top
    temp = TemporaryLookupError("timeout")
    assert verdict(second, {other_name: temp, NAME: [record(keys, "rsa1024")]}) == \
        dkimcheck.LOOKUP_FAILED
    assert verdict(second, {other_name: temp, NAME: [record(keys)]}) is None


# --- which signatures count ---------------------------------------------------------------

def test_missing_signature_says_no_dkim_signature_found(keys):
    reject = verdict(MSG, {NAME: [record(keys)]})
    assert reject == dkimcheck.NO_SIGNATURE
    assert reject.reply() == "550 5.7.1 No DKIM signature found"


def test_signature_of_another_domain_does_not_count(keys):
    signed = sign(keys, domain=b"other.example")
    lookup = dns({"s1._domainkey.other.example.": [record(keys)]})
    refused_because(dkimcheck.check(signed, lookup), "another domain")
    assert lookup.calls == []  # its key is not even looked up


def test_one_good_signature_among_bad_ones_is_enough(keys):
    junk = b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=s1; h=from; bh=AAAA; b=AAAA\r\n"
    assert verdict(junk + sign(keys) , {NAME: [record(keys)]}) is None
    assert verdict(sign(keys, junk + MSG), {NAME: [record(keys)]}) is None


def test_key_lookups_per_message_are_bounded(keys):
    signed = MSG
    for i in range(dkimcheck.MAX_ALIGNED + 3):
        signed = sign(keys, signed, tags=[(b"s", f"k{i}".encode())])
    lookup = dns({})
    refused_because(dkimcheck.check(signed, lookup), "no key")
    assert len(lookup.calls) == dkimcheck.MAX_ALIGNED


def test_ip_literal_sender_exempt():
    msg = MSG.replace(b"alice@sender.example", b"alice@[192.0.2.1]")
    assert verdict(msg, {}) is None


@pytest.mark.parametrize("header", [b"", b"From: a@x.example\r\nFrom: b@x.example\r\n",
                                    b"From: a@x.example, b@x.example\r\n"])
def test_needs_exactly_one_from(header):
    msg = header + b"To: bob@relay.example\r\n\r\nbody\r\n"
    assert verdict(msg, {}) == dkimcheck.NO_FROM


# --- hostile input: every signature header and key record gets an answer, no exception -----

TAG_TEXT = st.lists(st.sampled_from(
    [b"v=1", b"v=DKIM1", b"a=rsa-sha256", b"a=ed25519-sha256", b"a=rsa-sha1", b"d=sender.example",
     b"s=s1", b"h=from:to", b"h=", b"bh=AAAA", b"b=AAAA", b"b=", b"l=3", b"l=99999999999999999",
     b"i=@sender.example", b"t=1", b"x=2", b"c=relaxed", b"q=dns/txt", b"k=rsa", b"k=ed25519",
     b"p=", b"p=AAAA", b"p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC", b"t=y:s", b"s=email",
     b"\xff\xfe", b"=", b";", b" \r\n "]), max_size=12).map(b"; ".join)


@FUZZ
@given(signature=TAG_TEXT | st.binary(max_size=200), key=TAG_TEXT | st.binary(max_size=200))
def test_any_signature_and_key_record_get_an_answer(signature, key):
    header = b"DKIM-Signature: " + signature.replace(b"\r\n", b"\r\n ") + b"\r\n"
    reject = verdict(header + MSG, {NAME: [key]})  # guard.STRICT: our own errors raise
    assert reject is not None and reject.code == 550
