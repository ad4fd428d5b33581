"""secp256k1 signing for consensus messages: recoverable 65-byte r||s||v (v in {0, 1})."""

from __future__ import annotations

from functools import lru_cache

import coincurve
from eth_hash.auto import keccak

from consensus.errors import BadSignature

SIGNATURE_LENGTH = 65


def address_of_public_key(public_key: coincurve.PublicKey) -> bytes:
    return keccak(public_key.format(compressed=False)[1:])[-20:]


def address_of_private_key(private_key: bytes) -> bytes:
    return _address_of_private_key(bytes(private_key))


@lru_cache(maxsize=64)
def _address_of_private_key(private_key: bytes) -> bytes:
    return address_of_public_key(coincurve.PrivateKey(private_key).public_key)


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """Sign a 32-byte digest; returns r || s || v with v in {0, 1}."""
    return coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)


def recover_address(digest: bytes, signature: bytes) -> bytes:
    """Address that produced ``signature`` over ``digest``; raises BadSignature."""
    if len(signature) != SIGNATURE_LENGTH or signature[64] > 1:
        raise BadSignature("signature must be 65 bytes r||s||v with v in {0,1}")
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except Exception as exc:  # coincurve raises plain Exception/ValueError on bad points
        raise BadSignature(f"signature does not recover a public key: {exc}") from None
    return address_of_public_key(public_key)
