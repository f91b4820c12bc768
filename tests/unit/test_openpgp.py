"""relay.filter.openpgp: packet framing, CRC-24, ASCII armor and the OpenPGP/MIME shape."""

import base64
import email

import pytest

import corpus_tools as ct
from relay.filter import openpgp
from relay.filter.openpgp import crc24, dearmor, is_encrypted_stream, packets

SENDER = "k3x9q2m7a@_chat.example.test"
RECIPIENT = "p8w2z4r1b@_chat.example.test"

PKESK = bytes([3]) + bytes(range(8)) + bytes([18]) + b"\x11" * 80     # v3 PKESK body
SKESK = bytes([4, 9, 3, 8]) + b"\x22" * 20                            # v4 SKESK body
SEIPD = bytes([1]) + b"\x33" * 100                                     # v1 SEIPD body


def new(tag, body, **kw):
    return ct.encode_packet(tag, body, **kw)


def old(tag, body, **kw):
    return ct.encode_packet(tag, body, new_format=False, **kw)


def corpus_armor(name):
    data = ct.load_case(name, SENDER, RECIPIENT)[2]
    return email.message_from_bytes(data).get_payload()[1].get_payload()


# --- CRC-24 -----------------------------------------------------------------------------

def test_crc24_known_values():
    assert crc24(b"") == 0xB704CE          # RFC 4880 §6.1: the initial value
    assert crc24(b"123456789") == 0x21CF02  # CRC-24/OPENPGP check value


def test_crc24_matches_gpg_armor_checksum():
    armored = corpus_armor("enc_one_pkesk.eml").replace("\r", "").strip().split("\n")
    checksum = next(line for line in armored if line.startswith("="))
    data = base64.b64decode("".join(armored[2:armored.index(checksum)]))
    assert crc24(data) == int.from_bytes(base64.b64decode(checksum[1:]), "big")
    assert crc24(data) == ct.crc24(data)


# --- packet framing ---------------------------------------------------------------------------

def test_new_format_one_octet_lengths():
    stream = new(1, PKESK) + new(18, SEIPD)
    assert stream[1] == len(PKESK) and stream[0] == 0xC1
    assert packets(stream) == [(1, b"\x03"), (18, b"\x01")]
    assert is_encrypted_stream(stream)


def test_old_format_lengths_one_two_four_octets():
    for octets, ctb in ((1, 0x84), (2, 0x85), (4, 0x86)):
        stream = old(1, PKESK, octets=octets) + new(18, SEIPD)
        assert stream[0] == ctb
        assert is_encrypted_stream(stream), octets
    assert is_encrypted_stream(old(3, SKESK) + old(1, PKESK, octets=2) + new(18, SEIPD))


@pytest.mark.parametrize("size", [192, 193, 1000, 8383])
def test_new_format_two_octet_lengths(size):
    body = bytes([1]) + b"\x44" * (size - 1)
    stream = new(1, PKESK) + new(18, body, octets=2)
    assert 192 <= stream[len(new(1, PKESK)) + 1] < 224
    assert is_encrypted_stream(stream)


@pytest.mark.parametrize("size", [1, 191, 192, 8384, 70000])
def test_new_format_five_octet_lengths(size):
    body = bytes([1]) + b"\x44" * (size - 1)
    stream = new(1, PKESK, octets=5) + new(18, body, octets=5)
    assert stream[1] == 0xFF
    assert is_encrypted_stream(stream)


def test_two_octet_length_arithmetic():
    # 0xC5 0xFB: ((0xC5 - 192) << 8) + 0xFB + 192 = 1723
    body = bytes([1]) + b"\x00" * 1722
    assert packets(b"\xd2\xc5\xfb" + body) == [(18, b"\x01")]
    with pytest.raises(openpgp.Malformed):
        packets(b"\xd2\xc5\xfb" + body[:-1])


@pytest.mark.parametrize("chunk", [512, 1024, 8192])
def test_partial_lengths_accepted(chunk):
    body = bytes([1]) + b"\x55" * 20000
    stream = old(1, PKESK) + new(18, body, partial_chunk=chunk)
    assert stream[len(old(1, PKESK)) + 1] == 224 + chunk.bit_length() - 1
    assert is_encrypted_stream(stream)
    assert ct.parse_packets(stream)[-1].body == body


def test_partial_length_final_chunk_may_be_five_octets_or_empty():
    head = b"\xd2" + bytes([224 + 9]) + bytes([1]) + b"\x00" * 511   # one 512-octet chunk
    assert is_encrypted_stream(head + b"\xff\x00\x00\x00\x03" + b"abc")
    assert is_encrypted_stream(head + b"\x00")
    assert is_encrypted_stream(head + bytes([224 + 9]) + b"\x00" * 512 + b"\x05" + b"x" * 5)


def test_later_partial_chunks_may_be_small():
    # only the first partial chunk must be >= 512 octets
    stream = b"\xd2" + bytes([224 + 9]) + bytes([1]) + b"\x00" * 511 + bytes([224]) + b"x" + b"\x01y"
    assert is_encrypted_stream(stream)


@pytest.mark.parametrize("chunk", [1, 2, 256])
def test_first_partial_chunk_below_512_refused(chunk):
    body = bytes([1]) + b"\x55" * 2000
    stream = old(1, PKESK) + new(18, body, partial_chunk=chunk)
    with pytest.raises(openpgp.Malformed):
        packets(stream)
    assert not is_encrypted_stream(stream)


def test_partial_lengths_refused_on_session_key_packets():
    stream = new(1, PKESK + b"\x00" * 600, partial_chunk=512) + new(18, SEIPD)
    assert not is_encrypted_stream(stream)


@pytest.mark.parametrize("stream", [
    b"\xd2" + bytes([224 + 9]) + b"\x01" + b"\x00" * 511,                 # ends on a partial length
    b"\xd2" + bytes([224 + 9]) + b"\x01" + b"\x00" * 100,                 # chunk cut short
    b"\xd2" + bytes([224 + 9]) + b"\x01" + b"\x00" * 511 + b"\xff\x00",   # final length cut short
])
def test_truncated_partial_streams_refused(stream):
    assert not is_encrypted_stream(stream)


@pytest.mark.parametrize("stream", [
    b"",                                       # nothing
    b"\xd2",                                   # header without length
    b"\xd2\xc0",                               # 2-octet length cut short
    b"\xd2\xff\x00\x00\x00",                   # 5-octet length cut short
    b"\xd2\x05\x01\x00",                       # body cut short
    b"\x84",                                   # old format without length
    b"\x85\x00",                               # old 2-octet length cut short
    b"\x86\x00\x00\x00",                       # old 4-octet length cut short
])
def test_truncated_framing_refused(stream):
    assert not is_encrypted_stream(stream)
    assert not is_encrypted_stream(new(1, PKESK) + stream)


def test_truncated_real_message_refused():
    data = ct.unarmor(corpus_armor("enc_one_pkesk.eml"))
    assert is_encrypted_stream(data)
    for cut in range(1, len(data)):
        assert not is_encrypted_stream(data[:cut]), cut


def test_old_format_indeterminate_length_refused():
    assert not is_encrypted_stream(bytes([0x80 | (1 << 2) | 3]) + PKESK + new(18, SEIPD))


def test_byte_without_packet_bit_refused():
    assert not is_encrypted_stream(b"\x12" + new(18, SEIPD)[1:])
    assert not is_encrypted_stream(new(18, SEIPD) + b"\x00")


@pytest.mark.parametrize("stream,ok", [
    (new(18, SEIPD), True),                                          # no session keys
    (new(1, PKESK) + new(18, SEIPD), True),
    (new(3, SKESK) + new(18, SEIPD), True),
    (new(1, PKESK) * 3 + new(3, SKESK) + new(18, SEIPD), True),
    (new(3, SKESK) + new(1, PKESK) + new(18, SEIPD), True),
    (new(1, PKESK), False),                                          # no SEIPD
    (new(1, PKESK) + new(3, SKESK), False),
    (new(1, PKESK) + new(18, SEIPD) + new(18, SEIPD), False),        # two SEIPD
    (new(18, SEIPD) + new(1, PKESK), False),                         # SEIPD not last
    (new(1, PKESK) + new(18, SEIPD) + ct.literal_packet(b"x"), False),
    (new(1, PKESK) + new(9, SEIPD[1:]), False),                      # SED
    (old(1, PKESK) + old(9, SEIPD[1:]), False),
    (ct.literal_packet(b"hello"), False),                            # literal data
    (ct.literal_packet(b"hello", new_format=False), False),
    (new(8, b"\x01" + b"compressed"), False),                        # compressed data
    (new(10, b"PGP") + new(1, PKESK) + new(18, SEIPD), False),       # marker
    (new(2, b"\x04" * 40) + new(18, SEIPD), False),                  # signature
    (new(1, PKESK) + new(11, b"b\x00\x00\x00\x00\x00x") + new(18, SEIPD), False),
    (new(0, b"\x03") + new(18, SEIPD), False),                       # reserved tag 0
    (new(18, b""), False),                                           # empty SEIPD
    (new(18, b"\x03" + SEIPD[1:]), False),                           # unknown SEIPD version
    (new(18, b"\x02" + SEIPD[1:]), True),                            # SEIPD v2 (RFC 9580)
    (new(1, b"\x06" + PKESK[1:]) + new(18, SEIPD), True),            # PKESK v6
    (new(1, b"\x04" + PKESK[1:]) + new(18, SEIPD), False),
    (new(1, b"") + new(18, SEIPD), False),                           # empty PKESK
    (new(3, b"\x06" + SKESK[1:]) + new(18, SEIPD), True),
    (new(3, b"\x03" + SKESK[1:]) + new(18, SEIPD), False),
])
def test_stream_shapes(stream, ok):
    assert is_encrypted_stream(stream) is ok
    assert ct.stream_shape_ok(stream) is ok


def test_packets_reports_tags_and_first_octet():
    stream = old(1, PKESK) + new(3, SKESK) + new(18, SEIPD, partial_chunk=None)
    assert packets(stream) == [(1, b"\x03"), (3, b"\x04"), (18, b"\x01")]
    big = bytes([2]) + b"\x00" * 3000
    assert packets(new(18, big, partial_chunk=1024)) == [(18, b"\x02")]


def test_is_encrypted_stream_never_raises_on_odd_input():
    for stream in (b"\xff" * 10, b"\xc0\xff\xff\xff\xff\xff", b"\xfe\xfe", bytes(range(256))):
        assert is_encrypted_stream(stream) is False


# --- ASCII armor ------------------------------------------------------------------------------

STREAM = old(1, PKESK) + new(18, SEIPD)


def test_dearmor_round_trip():
    assert dearmor(ct.armor(STREAM), allow_version=False) == STREAM
    assert dearmor(ct.armor(STREAM).replace("\n", "\r\n"), allow_version=False) == STREAM


def test_dearmor_real_gpg_output():
    armored = corpus_armor("enc_one_pkesk.eml")
    data = dearmor(armored, allow_version=False)
    assert data == ct.unarmor(armored) and is_encrypted_stream(data)


def test_checksum_line_is_optional():
    assert dearmor(ct.armor(STREAM, checksum=False), allow_version=False) == STREAM


def test_version_header_only_when_allowed():
    for header in ("Version: GnuPG v2", "Version: 1", "version: x", "VERSION: y", "Version:"):
        armored = ct.armor(STREAM, headers=[header])
        assert dearmor(armored, allow_version=False) is None, header
        assert dearmor(armored, allow_version=True) == STREAM, header
    armored = ct.armor(STREAM, headers=["Comment: hi", "Version: GnuPG v2"])
    assert dearmor(armored, allow_version=False) is None
    assert dearmor(armored, allow_version=True) == STREAM


@pytest.mark.parametrize("headers", [["Comment: made by hand"], ["Charset: UTF-8"],
                                     ["Comment: a", "Comment: b"], ["Hash: SHA256"]])
def test_other_armor_headers_allowed(headers):
    assert dearmor(ct.armor(STREAM, headers=headers), allow_version=False) == STREAM


def test_armor_header_needs_the_blank_line():
    lines = ct.armor(STREAM, headers=["Comment: x"]).split("\n")
    lines.remove("")
    assert dearmor("\n".join(lines), allow_version=True) is None


def test_trailing_whitespace_and_surrounding_blank_lines_tolerated():
    armored = "\n\n" + "\n".join(line + " \t" for line in ct.armor(STREAM).split("\n")) + "\n\n"
    assert dearmor(armored, allow_version=False) == STREAM


def _lines():
    return ct.armor(STREAM).rstrip("\n").split("\n")


def _bad_crc():
    lines = _lines()
    lines[-2] = "=" + base64.b64encode((crc24(STREAM) ^ 0x800000).to_bytes(3, "big")).decode()
    return lines


def _edit(index, fn):
    lines = _lines()
    lines[index] = fn(lines[index])
    return lines


@pytest.mark.parametrize("lines", [
    pytest.param(_bad_crc(), id="crc mismatch"),
    pytest.param(_edit(-2, lambda l: l + "A"), id="crc too long"),
    pytest.param(_edit(-2, lambda l: l[:-1]), id="crc too short"),
    pytest.param(_edit(-2, lambda l: "=!!!!"), id="crc not base64"),
    pytest.param(_edit(2, lambda l: l[:5] + "*" + l[6:]), id="data not base64"),
    pytest.param(_edit(2, lambda l: l[:5] + "=" + l[6:]), id="padding inside data"),
    pytest.param(_edit(2, lambda l: " " + l), id="leading space"),
    pytest.param(_edit(2, lambda l: l[:5] + " " + l[5:]), id="space inside data"),
    pytest.param(_edit(2, lambda l: l[:-1]), id="data length not a multiple of 4"),
    pytest.param(_edit(0, lambda l: l.replace("MESSAGE", "SIGNATURE")), id="other label"),
    pytest.param(_edit(-1, lambda l: l.replace("MESSAGE", "SIGNATURE")), id="mismatched END"),
    pytest.param(_edit(0, lambda l: "x" + l), id="text on the BEGIN line"),
    pytest.param(["Hello", ""] + _lines(), id="text before BEGIN"),
    pytest.param(_lines() + ["P.S."], id="text after END"),
    pytest.param(_lines() + _lines(), id="two blocks"),
    pytest.param(_lines()[:-1], id="no END line"),
    pytest.param(_lines()[1:], id="no BEGIN line"),
    pytest.param(_lines()[:2] + _lines()[-1:], id="no data"),
    pytest.param(_lines()[:2] + _lines()[-2:], id="only a checksum"),
    pytest.param(_lines()[:3] + [""] + _lines()[3:], id="blank line inside data"),
])
def test_bad_armor_refused(lines):
    assert dearmor("\n".join(lines), allow_version=True) is None


def test_dearmor_refuses_data_after_padding():
    """base64 decoding must not stop at a pad character and silently drop the rest."""
    armored = "\n".join(["-----BEGIN PGP MESSAGE-----", "", "YQ==", "YWJj",
                         "-----END PGP MESSAGE-----"])
    assert dearmor(armored, allow_version=True) is None
    assert ct.unarmor(armored) is None


# --- the MIME shape (the corpus covers the whole message; here: odd part encodings) --------

def test_is_openpgp_mime_never_raises():
    for data in (b"", b"Content-Type: multipart/encrypted\r\n\r\n",
                 b"Content-Type: multipart/encrypted; boundary=x\r\n\r\n--x\r\n\r\n--x--\r\n",
                 b"Content-Type: multipart/encrypted; boundary=x\r\n\r\n--x\r\n"
                 b"Content-Type: message/rfc822\r\n\r\n--x\r\n--x--"):
        msg = email.message_from_bytes(data)
        assert openpgp.is_openpgp_mime(msg, outgoing=True) is False
        assert openpgp.is_openpgp_mime(msg, outgoing=False) is False


def test_control_part_whitespace_tolerated_other_text_not():
    data = ct.load_case("enc_one_pkesk.eml", SENDER, RECIPIENT)[2]
    ok = data.replace(b"\r\n\r\nVersion: 1\r\n", b"\r\n\r\n  Version: 1  \r\n\r\n")
    assert openpgp.is_openpgp_mime(email.message_from_bytes(ok), outgoing=True)
    bad = data.replace(b"\r\n\r\nVersion: 1\r\n", b"\r\n\r\nVersion: 1\r\nsecret\r\n")
    assert not openpgp.is_openpgp_mime(email.message_from_bytes(bad), outgoing=True)
