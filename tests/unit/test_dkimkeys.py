"""The key lookup (relay/filter/dkimkeys.txt_records) against a small DNS server of our own
on loopback, answering each DNS outcome the way a real authoritative server does, and the
key record parser."""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.resolver
import dns.rrset
import pytest

from relay.filter import dkimkeys
from relay.filter.dkimkeys import TemporaryLookupError


def answer(query: dns.message.Message) -> dns.message.Message | None:
    name = query.question[0].name.to_text()
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA
    if name == "silent.test.":
        return None
    if name in ("two.test.", "alias.test."):
        if name == "alias.test.":
            reply.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", "two.test."))
        reply.answer.append(dns.rrset.from_text(
            "two.test.", 60, "IN", "TXT", '"site-verification=abc"', '"v=DKIM1; k=rsa; " "p=AAAA"'))
    elif name == "nx.test.":
        reply.set_rcode(dns.rcode.NXDOMAIN)
    elif name == "fail.test.":
        reply.set_rcode(dns.rcode.SERVFAIL)
    elif name == "refused.test.":
        reply.set_rcode(dns.rcode.REFUSED)
    return reply  # anything else: NOERROR without an answer (NODATA)


@pytest.fixture(scope="module")
def resolver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except OSError:
                continue
            reply = answer(dns.message.from_wire(data))
            if reply is not None:
                sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.port = sock.getsockname()[1]
    r.timeout = 0.3
    yield r
    stop.set()
    thread.join(5)
    sock.close()


def test_every_txt_record_strings_joined(resolver):
    assert sorted(dkimkeys.txt_records("two.test.", 2, resolver)) == [
        b"site-verification=abc", b"v=DKIM1; k=rsa; p=AAAA"]


def test_cname_is_followed(resolver):
    assert len(dkimkeys.txt_records("alias.test.", 2, resolver)) == 2


@pytest.mark.parametrize("name", ["nx.test.", "nodata.test."])
def test_definite_absence_is_an_empty_list(resolver, name):
    assert dkimkeys.txt_records(name, 2, resolver) == []


@pytest.mark.parametrize("name", ["fail.test.", "refused.test.", "silent.test."])
def test_servfail_refused_and_timeout_are_temporary(resolver, name):
    with pytest.raises(TemporaryLookupError):
        dkimkeys.txt_records(name, 0.6, resolver)


@pytest.mark.parametrize("text,dkim", [
    (b"v=DKIM1; k=rsa; p=AAAA", True),
    (b"p=AAAA", True),
    (b"v=DKIM1; p=", True),                       # a revoked key is still a key record
    (b"google-site-verification=abc", False),     # '-' cannot be in a tag name
    (b"v=spf1 a -all", False),
    (b"k=rsa; v=DKIM1; p=AAAA", False),
    (b"v=DKIM1; k=rsa", False),                   # p= is required
    (b"v=DKIM1; p=AAAA; p=BBBB", False),          # a tag twice voids the record
    (b"v=DKIM1;; p=AAAA", False),
])
def test_which_txt_records_are_key_records(text, dkim):
    assert (dkimkeys.key_record(text) is not None) == dkim


def test_tag_list_syntax():
    assert dkimkeys.parse_tag_list(b" a = 1 ;b=x y\r\n z; ") == {"a": b"1", "b": b"x y\r\n z"}
    for bad in (b"a", b"1a=2", b"a=1;a=2", b"a=\x01"):
        with pytest.raises(dkimkeys.TagListError):
            dkimkeys.parse_tag_list(bad)
