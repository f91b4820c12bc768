"""The incoming DKIM rule with real signatures (dkimpy) and a TXT lookup we control."""

import subprocess

import dkim
import pytest

from relay.filter import dkimverify as dkimcheck


@pytest.fixture(scope="module")
def key(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkim")
    subprocess.run(["openssl", "genrsa", "-out", d / "k.pem", "2048"], check=True, capture_output=True)
    private = (d / "k.pem").read_bytes()
    der = subprocess.run(["openssl", "rsa", "-in", d / "k.pem", "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64
    return private, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


MSG = (b"From: Alice <alice@sender.example>\r\nTo: bob@relay.example\r\nSubject: x\r\n"
       b"Message-ID: <1@sender.example>\r\n\r\nbody\r\n")


def sign(private, domain, msg=MSG, selector=b"s1"):
    return dkim.sign(msg, selector, domain, private, include_headers=[b"from", b"to", b"subject"]) + msg


def dns_for(record, name=b"s1._domainkey.sender.example."):
    def lookup(qname, timeout=5):
        return record if qname == name else None
    return lookup


def test_aligned_signature_passes(key):
    private, record = key
    assert dkimcheck.check(sign(private, b"sender.example"), dns_for(record)) is None


def test_missing_signature_refused(key):
    assert dkimcheck.check(MSG, dns_for(key[1])) == dkimcheck.NO_VALID_SIGNATURE


def test_signature_of_another_domain_does_not_count(key):
    private, record = key
    signed = sign(private, b"other.example")
    lookup = dns_for(record, b"s1._domainkey.other.example.")
    assert dkimcheck.check(signed, lookup) == dkimcheck.NO_VALID_SIGNATURE


def test_tampered_body_refused(key):
    private, record = key
    signed = sign(private, b"sender.example").replace(b"body\r\n", b"b0dy\r\n")
    assert dkimcheck.check(signed, dns_for(record)) == dkimcheck.NO_VALID_SIGNATURE


def test_one_good_signature_among_bad_ones_is_enough(key):
    private, record = key
    good = sign(private, b"sender.example")
    junk = b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.example; s=s1; h=from; bh=AAAA; b=AAAA\r\n"
    assert dkimcheck.check(junk + good, dns_for(record)) is None


def test_dns_timeout_is_temporary(key):
    private, _ = key

    def timeout(qname, timeout=5):
        raise dkim.DnsTimeoutError("timeout")

    assert dkimcheck.check(sign(private, b"sender.example"), timeout) == dkimcheck.LOOKUP_FAILED


def test_ip_literal_sender_exempt():
    msg = MSG.replace(b"alice@sender.example", b"alice@[192.0.2.1]")
    assert dkimcheck.check(msg, dns_for(b"")) is None


@pytest.mark.parametrize("header", [b"", b"From: a@x.example\r\nFrom: b@x.example\r\n",
                                    b"From: a@x.example, b@x.example\r\n"])
def test_needs_exactly_one_from(header):
    msg = header + b"To: bob@relay.example\r\n\r\nbody\r\n"
    assert dkimcheck.check(msg, dns_for(b"")) == dkimcheck.NO_FROM
