"""DKIM signatures for tests, with every tag under the test's control (dkimpy's own
``sign`` refuses some of what a verifier must be tested with: an h= without From, for
one). RSA keys come from openssl in PKCS#1 form (older dkimpy reads no PKCS#8), Ed25519
keys from PyNaCl (RFC 8463)."""

from __future__ import annotations

import base64
import subprocess
import time

import dkim
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import HASH_ALGORITHMS, parse_pem_private_key


def rsa_key(bits: int = 2048) -> tuple[bytes, bytes]:
    """(private key PEM, base64 of the public key's DER: the p= of its key record)."""
    pem = subprocess.run(["openssl", "genrsa", "-traditional", str(bits)], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, check=True,
                         capture_output=True).stdout
    return pem, base64.b64encode(der)


def ed25519_key():
    """(PyNaCl signing key, base64 of the 32-octet public key)."""
    import nacl.signing
    key = nacl.signing.SigningKey.generate()
    return key, base64.b64encode(bytes(key.verify_key))


def sign(msg: bytes, private, domain: bytes, selector: bytes, algo: bytes = b"rsa-sha256",
         headers=(b"from", b"to", b"subject"), canon: bytes = b"relaxed/relaxed",
         length: bool = False, tags=()) -> bytes:
    """``msg`` with a DKIM-Signature on top. ``private`` is an RSA PEM or a PyNaCl key
    (then ``algo`` must be ed25519-sha256); ``length`` adds l= for the whole body;
    ``tags`` [(name, value)] add tags or replace the ones made here (a= included, so a
    signature can name another algorithm than the one it was made with)."""
    signer = dkim.DKIM(msg)
    policy = CanonicalizationPolicy.from_c_value(canon)
    body = policy.canonicalize_body(signer.body)
    signer.signature_algorithm = algo
    signer.hasher = HASH_ALGORITHMS[algo]
    fields = [(b"v", b"1"), (b"a", algo), (b"c", canon), (b"d", domain), (b"s", selector),
              (b"t", str(int(time.time())).encode()), (b"h", b":".join(headers))]
    if length:
        fields.append((b"l", str(len(body)).encode()))
    override = dict(tags)
    fields = [(k, override.pop(k, v)) for k, v in fields] + list(override.items())
    fields += [(b"bh", base64.b64encode(signer.hasher(body).digest())), (b"b", b"0" * 60)]
    if isinstance(private, bytes):
        private = parse_pem_private_key(private)
    header = signer.gen_header(fields, [h.lower() for h in headers], policy, b"DKIM-Signature",
                               private)
    return b"DKIM-Signature: " + header + msg
