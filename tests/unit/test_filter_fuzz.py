"""Property tests of the encryption filter (hypothesis, bounded: a few seconds in all).

They run with relay.filter.guard.STRICT on (tests/unit/conftest.py): an exception in
our own code fails them instead of passing as one more refusal.

* nothing raises, whatever the bytes;
* random bytes and mutated cleartext messages are never accepted;
* a mutated encrypted message is accepted only if it still is OpenPGP/MIME, judged
  by relay.filter.openpgp itself and by the independent oracle of tests/support/corpus_tools.py;
* relay.filter.openpgp's packet-stream check agrees with the oracle on random packet
  streams and on mutations of real gpg packet streams (re-armored with a valid
  CRC, so the mutation reaches the packet parser instead of the checksum).
"""

import email
import email.utils
from hypothesis import event, given, strategies as st

import corpus_tools as ct
from fuzzing import FUZZ
from relay.filter import guard
from relay.filter import openpgp
from relay.filter import policy
from relay.filter.policy import check_incoming, check_outgoing

SENDER = "k3x9q2m7a@_chat.example.test"
RECIPIENT = "p8w2z4r1b@_chat.example.test"

MANIFEST = ct.load_manifest()["cases"]
CASES = {name: ct.load_case(name, SENDER, RECIPIENT) for name in sorted(MANIFEST)}
CLEARTEXT = sorted(n for n, e in MANIFEST.items() if e["kind"] == "cleartext")
ENCRYPTED = sorted(n for n, e in MANIFEST.items() if e["kind"] == "encrypted")
VALID_ONE = CASES["enc_one_pkesk.eml"][2]

REFUSALS = (policy.UNENCRYPTED, policy.BAD_FROM, policy.UNPARSABLE)


def verdicts(mail_from, rcpt_tos, data):
    out = check_outgoing(mail_from, rcpt_tos, data)
    inc = check_incoming(mail_from, rcpt_tos, data)
    assert out is None or out in REFUSALS
    assert inc is None or inc in REFUSALS
    return out, inc


@st.composite
def mutated(draw, data: bytes, max_ops: int = 4) -> bytes:
    """data after 1..max_ops bit flips, truncations, insertions and deletions."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "replace"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "replace" and data:
            data[pos] = draw(st.integers(0, 255))
    return bytes(data)


def case_and_mutation(names, max_ops=4):
    return st.sampled_from(names).flatmap(
        lambda name: st.tuples(st.just(name), mutated(CASES[name][2], max_ops)))


# --- the independent oracle -------------------------------------------------------------

def oracle_encrypted(data: bytes, outgoing: bool) -> bool:
    """OpenPGP/MIME per SPEC §3, with corpus_tools' armor and packet parsers."""
    msg = email.message_from_bytes(data)
    if msg.get_content_type() != "multipart/encrypted":
        return False
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 2:
        return False
    control, body = parts
    if control.get_content_type() != "application/pgp-encrypted" or control.is_multipart():
        return False
    if (control.get_payload(decode=True) or b"").strip() != b"Version: 1":
        return False
    if body.get_content_type() != "application/octet-stream" or body.is_multipart():
        return False
    try:
        armored = body.get_payload(decode=True).decode("ascii")
    except (AttributeError, UnicodeDecodeError):
        return False
    if outgoing:
        lines = [line.rstrip(" \t\r") for line in armored.strip().split("\n")][1:]
        head = lines[:lines.index("")] if "" in lines else []
        if any(h.lower().startswith("version:") for h in head):
            return False
    return ct.stream_shape_ok(ct.unarmor(armored))


def oracle_from_ok(data: bytes, mail_from: str) -> bool:
    values = email.message_from_bytes(data).get_all("From") or []
    addresses = email.utils.getaddresses([str(v) for v in values])
    return len(values) == 1 and [a.lower() for _, a in addresses if a] == [mail_from.lower()]


def test_fuzzers_run_with_the_filter_strict():
    assert guard.STRICT is True


def test_oracle_agrees_with_the_manifest():
    for name in ENCRYPTED:
        mail_from, _, data, entry = CASES[name]
        assert oracle_encrypted(data, outgoing=False), name
        assert oracle_encrypted(data, outgoing=True) == (name != "enc_armor_version.eml"), name
    for name, (mail_from, _, data, entry) in CASES.items():
        if entry["kind"] in ("malformed", "cleartext"):
            assert not oracle_encrypted(data, outgoing=False), name


# --- (a) nothing raises ---------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes_never_accepted(data):
    out, inc = verdicts(SENDER, [RECIPIENT], data)
    assert out is not None and inc is not None


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_under_valid_headers_never_accepted(tail):
    head = VALID_ONE.split(b"\r\n\r\n", 1)[0]
    out, inc = verdicts(SENDER, [RECIPIENT], head + b"\r\n\r\n" + tail)
    assert out is not None and inc is not None


@FUZZ
@given(case_and_mutation(sorted(CASES)))
def test_mutated_corpus_never_raises(case):
    name, data = case
    mail_from, rcpt_tos, _, _ = CASES[name]
    verdicts(mail_from, rcpt_tos, data)


# --- (b) mutated cleartext is never accepted ------------------------------------------------

@FUZZ
@given(case_and_mutation(CLEARTEXT, max_ops=8))
def test_mutated_cleartext_never_accepted(case):
    name, data = case
    mail_from, rcpt_tos, _, _ = CASES[name]
    out, inc = verdicts(mail_from, rcpt_tos, data)
    assert out is not None and inc is not None


# --- (c) an accepted mutation of an encrypted message is still encrypted ---------------------

@FUZZ
@given(case_and_mutation(ENCRYPTED))
def test_accepted_mutation_is_still_openpgp_mime(case):
    name, data = case
    mail_from, rcpt_tos, _, _ = CASES[name]
    out, inc = verdicts(mail_from, rcpt_tos, data)
    event(f"incoming {'accepted' if inc is None else 'refused'}")
    msg = policy.parse(data)
    if inc is None:
        assert openpgp.is_openpgp_mime(msg, outgoing=False)
        armored = msg.get_payload()[1].get_payload(decode=True).decode("ascii")
        assert openpgp.is_encrypted_stream(openpgp.dearmor(armored, allow_version=True))
        assert oracle_encrypted(data, outgoing=False)
    if out is None:
        assert openpgp.is_openpgp_mime(msg, outgoing=True)
        assert oracle_encrypted(data, outgoing=True)
        assert oracle_from_ok(data, mail_from)


def _armored_stream(name):
    msg = email.message_from_bytes(CASES[name][2])
    return ct.unarmor(msg.get_payload()[1].get_payload())


STREAMS = {name: _armored_stream(name) for name in ENCRYPTED}
STREAMS = {n: s for n, s in STREAMS.items() if s is not None}


def wrap(stream: bytes) -> bytes:
    """The enc_one_pkesk message with its armored data replaced by ``stream``."""
    msg = VALID_ONE.decode("ascii")
    begin = msg.index("-----BEGIN PGP MESSAGE-----")
    end = msg.index("-----END PGP MESSAGE-----") + len("-----END PGP MESSAGE-----")
    return (msg[:begin] + ct.armor(stream).rstrip("\n").replace("\n", "\r\n")
            + msg[end:]).encode("ascii")


# --- (d) the packet parser against the oracle ------------------------------------------------

@FUZZ
@given(st.sampled_from(sorted(STREAMS)).flatmap(
    lambda name: mutated(STREAMS[name], max_ops=3)))
def test_mutated_packet_stream_matches_oracle(stream):
    expected = ct.stream_shape_ok(stream)
    event(f"stream {'valid' if expected else 'invalid'}")
    assert openpgp.is_encrypted_stream(stream) is expected
    out, inc = verdicts(SENDER, [RECIPIENT], wrap(stream))
    assert (inc is None) is expected
    assert (out is None) is expected


@st.composite
def packet(draw, tag, version):
    body = bytes([version]) + draw(st.binary(max_size=40)) \
        + b"\x5a" * draw(st.sampled_from([0, 0, 200, 600, 1500, 9000]))
    if draw(st.integers(0, 19)) == 0:
        body = b""
    framing = draw(st.sampled_from(["new", "new5", "old", "old4", "partial"]
                                   + ["partial"] * 2 * (tag == 18)))
    if framing.startswith("old") and tag < 16:
        return ct.encode_packet(tag, body, new_format=False,
                                octets=4 if framing == "old4" else None)
    if framing == "new5":
        return ct.encode_packet(tag, body, octets=5)
    if framing == "partial":
        chunk = draw(st.sampled_from([1, 64, 256, 512, 512, 1024, 1024]))
        return ct.encode_packet(tag, body, partial_chunk=chunk)
    return ct.encode_packet(tag, body)


TAGS = st.sampled_from([1, 3, 18, 9, 11, 10, 8, 2, 0, 60])


@st.composite
def packet_streams(draw):
    """About half plausible (keys then SEIPD, sometimes spoiled), half anything."""
    if draw(st.integers(0, 3)):
        specs = [(draw(st.sampled_from([1, 3])), None) for _ in range(draw(st.integers(0, 3)))]
        specs.append((18, None))
        for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):  # spoil it
            i = draw(st.integers(0, len(specs)))
            if draw(st.booleans()) or i == len(specs):
                specs.insert(i, (draw(TAGS), None))
            else:
                specs[i] = (specs[i][0], draw(st.integers(0, 255)))
    else:
        specs = [(draw(TAGS), None) for _ in range(draw(st.integers(0, 5)))]
    valid_version = {1: [3, 6], 3: [4, 5, 6], 18: [1, 2]}
    stream = b""
    for tag, version in specs:
        if version is None:
            version = draw(st.sampled_from(valid_version.get(tag, [0, 1, 3, 4])))
        stream += draw(packet(tag, version))
    if draw(st.integers(0, 5)) == 0:
        stream = stream[:draw(st.integers(0, len(stream)))]
    return stream


@FUZZ
@given(packet_streams())
def test_random_packet_streams_match_oracle(stream):
    event(f"stream {'valid' if ct.stream_shape_ok(stream) else 'invalid'}")
    assert openpgp.is_encrypted_stream(stream) is ct.stream_shape_ok(stream)


@FUZZ
@given(packet_streams())
def test_random_packet_streams_in_a_message(stream):
    expected = ct.stream_shape_ok(stream)
    out, inc = verdicts(SENDER, [RECIPIENT], wrap(stream))
    assert (inc is None) is expected and (out is None) is expected


# --- armor mutations -----------------------------------------------------------------------

ARMOR = ct.armor(STREAMS["enc_one_pkesk.eml"])


ARMOR_PIECES = st.sampled_from([b" ", b"\t", b"\r", b"\n", b"\r\n", b"=", b"==", b"A", b"-",
                                b"\nVersion: 1\n", b"\nComment: x\n", b"\n\n", b":"])


@st.composite
def armor_edits(draw, text: bytes) -> bytes:
    """Mostly edits of the armor's layout (whitespace, pad characters, headers)."""
    data = bytearray(text)
    for _ in range(draw(st.integers(1, 3))):
        ends = [i for i, c in enumerate(data) if c == 0x0A]
        if ends and draw(st.integers(0, 3)):  # mostly at a line's end or start
            pos = draw(st.sampled_from(ends)) + draw(st.sampled_from([0, 1]))
        else:
            pos = draw(st.integers(0, len(data)))
        if draw(st.integers(0, 3)):
            data[pos:pos] = draw(ARMOR_PIECES)
        else:
            del data[pos:pos + draw(st.integers(1, 3))]
    return bytes(data)


@FUZZ
@given(st.one_of(mutated(ARMOR.encode("ascii"), max_ops=2), armor_edits(ARMOR.encode("ascii"))))
def test_mutated_armor_decodes_to_the_same_bytes_or_nothing(raw):
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return
    got = openpgp.dearmor(text, allow_version=True)
    event(f"armor {'decoded' if got is not None else 'refused'}")
    if got is not None:
        assert got == ct.unarmor(text), "relay.filter.openpgp and the oracle decode differently"
        # the CRC line is still there: whatever decodes is what gpg armored
        if any(line.rstrip(" \t\r").startswith("=") and len(line.rstrip(" \t\r")) == 5
               for line in text.split("\n")[-3:]):
            assert got == STREAMS["enc_one_pkesk.eml"]
    if "Version:" in text and got is not None:
        no_version = openpgp.dearmor(text, allow_version=False)
        assert no_version is None or all(
            not line.lower().lstrip().startswith("version:") for line in text.split("\n")[:3])
