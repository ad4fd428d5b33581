"""The two primitives on every hot path: Keccak-256 and secp256k1 public-key recovery.

``keccak256`` is safe-pysha3's C Keccak (~0.7 us a call) instead of eth_hash's
default pycryptodome backend (~5 us through its wrappers); :func:`use_fast_keccak`
points eth_hash itself (and so py-evm, trie and rlp users) at the same backend.

``recover_address`` calls libsecp256k1's recovery straight through coincurve's
cffi binding (the computation of ``PublicKey.from_signature_and_message`` without
its Python wrappers) and memoises public key -> address, since one key signs many
transactions and attestations. It checks nothing beyond what libsecp256k1 checks
(r, s in range, v a valid recovery id): callers apply their own rules (low s,
v in {0, 1}) first.
"""

from __future__ import annotations

import os
import threading

from coincurve import PublicKey
from eth_hash.auto import keccak as _eth_keccak

try:
    from sha3 import keccak_256 as _keccak_256  # safe-pysha3
except ImportError:  # pragma: no cover - the dependency is declared; stay correct without it
    _keccak_256 = None


def _pysha3_keccak(data: bytes) -> bytes:
    return _keccak_256(data).digest()  # type: ignore[misc]


keccak256 = _pysha3_keccak if _keccak_256 is not None else _eth_keccak
# the hash object's constructor (``keccak_new(data).digest()`` is ``keccak256(data)``
# without the wrapper's call: for loops that hash tens of thousands of trie nodes)
keccak_new = _keccak_256 if _keccak_256 is not None else _eth_keccak.new


def use_fast_keccak() -> None:
    """Make eth_hash pick its pysha3 backend (eth_hash chooses on its first hash, and
    reads ``ETH_HASH_BACKEND`` then). An operator's explicit choice wins."""
    if _keccak_256 is not None:
        os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")


# --- recovery ----------------------------------------------------------------

_ADDRESS_OF_KEY: dict[bytes, bytes] = {}
_ADDRESS_CACHE_MAX = 100_000


def _make_direct_recover():
    """(recover, serialize) over libsecp256k1: ``recover`` returns the key in
    libsecp256k1's 64-byte internal form (a cache key, valid in this process only)."""
    try:
        from coincurve._libsecp256k1 import ffi, lib
        from coincurve.context import GLOBAL_CONTEXT
    except Exception:  # pragma: no cover - other coincurve builds
        return None
    ctx, new, buffer = GLOBAL_CONTEXT.ctx, ffi.new, ffi.buffer
    parse = lib.secp256k1_ecdsa_recoverable_signature_parse_compact
    recover = lib.secp256k1_ecdsa_recover
    serialize, uncompressed = lib.secp256k1_ec_pubkey_serialize, lib.SECP256K1_EC_UNCOMPRESSED

    local = threading.local()  # scratch structs per thread, overwritten by every call

    def direct_recover(signature: bytes, digest: bytes) -> bytes | None:
        try:
            rsig, pub, view = local.scratch
        except AttributeError:
            pub = new("secp256k1_pubkey *")
            rsig, pub, view = local.scratch = (
                new("secp256k1_ecdsa_recoverable_signature *"), pub, buffer(pub))
        # parse_compact reads the first 64 bytes (r || s) of the 65 it is handed
        if not parse(ctx, rsig, signature, signature[64]):
            return None
        if not recover(ctx, pub, rsig, digest):
            return None
        return view[:]

    def direct_serialize(internal: bytes) -> bytes:
        pub = new("secp256k1_pubkey *")
        buffer(pub)[:] = internal
        out, size = new("unsigned char[65]"), new("size_t *", 65)
        serialize(ctx, out, size, pub, uncompressed)
        return buffer(out, 65)[1:]

    return direct_recover, direct_serialize


def _public_recover(signature: bytes, digest: bytes) -> bytes | None:  # pragma: no cover
    try:
        key = PublicKey.from_signature_and_message(signature, digest, hasher=None)
    except Exception:
        return None
    return key.format(compressed=False)[1:]


_direct = _make_direct_recover()
if _direct is not None:
    _recover, _serialize = _direct
else:  # pragma: no cover
    _recover, _serialize = _public_recover, lambda point: point


def recover_address(signature: bytes, digest: bytes) -> bytes | None:
    """The address whose key made ``signature`` (65 bytes r || s || recovery id) over
    the 32-byte ``digest``, or None when libsecp256k1 recovers no key."""
    if len(signature) != 65 or len(digest) != 32 or signature[64] > 3:
        return None
    key = _recover(signature, digest)
    if key is None:
        return None
    address = _ADDRESS_OF_KEY.get(key)
    if address is None:
        address = keccak256(_serialize(key))[12:]
        if len(_ADDRESS_OF_KEY) >= _ADDRESS_CACHE_MAX:
            _ADDRESS_OF_KEY.clear()
        _ADDRESS_OF_KEY[key] = address
    return address
