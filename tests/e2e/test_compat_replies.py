"""Reply texts that tools and clients read (issue 17 §4)."""

import pytest

from compat_mail import accounts, message
from fednet import post_mxdeliv
from smtpwire import Wire

UNSIGNED_FROM = "carol@sender.example"  # a DNS domain: the DKIM rule applies


@pytest.fixture(scope="module")
def people(relay):
    return accounts(relay, 2)


def test_missing_dkim_signature_says_so(relay, people):
    """The reference's text, which its online test and operators' tools look for."""
    bob = people[0]
    data = message("compat-unsigned", [f"From: <{UNSIGNED_FROM}>".encode(),
                                       f"To: <{bob['email']}>".encode()])
    with Wire.connect(relay, 25) as wire:
        res = wire.send(UNSIGNED_FROM, [bob["email"]], data)
    assert res.stage == "end" and res.code // 100 == 5 and "No DKIM signature found" in res.text
    status, _, payload = post_mxdeliv(relay, data, [UNSIGNED_FROM], [bob["email"]])
    assert 400 <= status < 500 and "No DKIM signature found" in str(payload), (status, payload)


def test_forged_from_on_submission_is_permanent_and_names_the_header(relay, people):
    alice, bob = people
    data = message("compat-forged", [f"From: A. Smith <{bob['email']}>".encode(),
                                     f"To: <{bob['email']}>".encode()])
    with Wire.connect(relay, 465) as wire:
        wire.login(alice["email"], alice["password"])
        res = wire.send(alice["email"], [bob["email"]], data)
    assert res.stage == "end" and res.code // 100 == 5, res
    assert "From header" in res.text, res
