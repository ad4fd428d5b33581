"""Telemetry attestations (docs/telemetry.md): wire codec, signing digest, reject
codes and the stateless checks.

An attestation is the canonical msgpack array
``[version, device, vehicle_id, seq, timestamp_ms, cell, odometer_m, speed_cmps,
signals_hash, challenge, signature]``. The device signs
``keccak256(b"\\x19Motus Attestation:\\n" + chain_id (8 bytes, big-endian) +
rlp([first ten fields]))`` with secp256k1 and appends ``r || s || v`` (v 0 or 1).
That digest is the contract with device firmware: changing it needs a new
``version``; ``tests/vm/test_attestation.py`` pins it with a fixed vector.

Stateless checks (no chain state needed, safe to run in any process): size,
decode, field types, canonical form, signature. Stateful checks (device known,
paired, deny list, time, sequence, movement, rate) live in
:mod:`vm.modules.telemetry`. Every refusal is an :class:`AttestationError`
whose ``code`` is one of :class:`RejectCode`.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Sequence
from typing import NamedTuple

import msgpack

from vm.block import rlp_encode, rlp_uint
from vm.crypto import keccak256, recover_address
from vm.errors import VMError

VERSION = 1
MAX_ATTESTATION_BYTES = 256  # the largest valid attestation is 189 bytes
DIGEST_PREFIX = b"\x19Motus Attestation:\n"
FIELD_COUNT = 11
UINT64_LIMIT = 2**64  # msgpack integers end at 64 bits; so do ours
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
NONCE_BYTES = 8


class RejectCode(enum.StrEnum):
    """Stable reject codes, in the order the checks run (the first failing one is reported)."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_DEVICE = "unknown_device"
    NOT_PAIRED = "not_paired"
    DENIED = "denied"
    STALE = "stale"
    FUTURE = "future"
    REPLAY = "replay"
    TOO_FREQUENT = "too_frequent"
    BAD_CELL = "bad_cell"
    IMPLAUSIBLE_SPEED = "implausible_speed"
    ODOMETER_ROLLBACK = "odometer_rollback"
    ODOMETER_MISMATCH = "odometer_mismatch"
    RATE_CAP = "rate_cap"


OK = "ok"  # the result code of an accepted attestation (not a reject code)


class AttestationError(VMError):
    """An attestation refused by a check; ``code`` is a :class:`RejectCode` value."""

    code = RejectCode.MALFORMED.value

    def __init__(self, code: RejectCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code.value
        self.reject_code = code
        self.message = message




# --- the record --------------------------------------------------------------


class Attestation(NamedTuple):
    """One decoded attestation (immutable; ``att._replace(field=...)`` makes a changed copy).
    Field meanings: docs/telemetry.md. A NamedTuple rather than a
    dataclass because every attestation a node sees builds one: it is the cheapest record."""

    version: int
    device: bytes  # 20-byte address of the device key
    vehicle_id: int  # vehicle NFT token id
    seq: int  # counts up per device, starting at 1
    timestamp_ms: int
    cell: int  # H3 index as an integer
    odometer_m: int
    speed_cmps: int
    signals_hash: bytes  # keccak of the off-chain signal payload
    challenge: bytes  # the epoch challenge nonce (8 bytes) or empty
    signature: bytes = b""  # 65 bytes r || s || v

    def signed_fields(self) -> list[int | bytes]:
        """The ten fields covered by the signature, in wire order."""
        return list(self[:10])

    def encode(self) -> bytes:
        """Canonical wire bytes (msgpack array, bytes as bin, shortest integers)."""
        return msgpack.packb(self, use_bin_type=True)

    @property
    def id(self) -> bytes:
        return compute_attestation_id(self.encode())


def compute_attestation_id(raw: bytes) -> bytes:
    """The attestation id: keccak256 of its wire bytes."""
    return keccak256(raw)


# --- signing digest ----------------------------------------------------------


def encode_signed_fields(fields: Sequence[int | bytes]) -> bytes:
    """``rlp.encode(fields)`` for a flat list of unsigned ints and bytes.

    Written out because the generic ``rlp`` package takes ~17 us per attestation;
    tests check it byte for byte against ``rlp.encode``.
    """
    payload = b"".join(rlp_uint(f) if isinstance(f, int) else rlp_encode(f) for f in fields)
    if len(payload) < 56:
        return bytes((0xC0 + len(payload),)) + payload
    length = len(payload).to_bytes((len(payload).bit_length() + 7) // 8, "big")
    return bytes((0xF7 + len(length),)) + length + payload


def compute_signing_digest(att: Attestation, chain_id: int) -> bytes:
    """The 32-byte digest a device signs (docs/telemetry.md, exactly)."""
    if len(att.device) != 20 or len(att.signals_hash) != 32 or len(att.challenge) not in (0, 8):
        body = encode_signed_fields(att.signed_fields())  # odd shapes: the general encoder
    else:
        # The usual shapes, spelled out (this runs for every attestation a node sees);
        # tests check it against the general encoder and the rlp package.
        payload = b"".join((
            rlp_uint(att.version), b"\x94", att.device, rlp_uint(att.vehicle_id),
            rlp_uint(att.seq), rlp_uint(att.timestamp_ms), rlp_uint(att.cell),
            rlp_uint(att.odometer_m), rlp_uint(att.speed_cmps), b"\xa0", att.signals_hash,
            b"\x88" + att.challenge if att.challenge else b"\x80",
        ))
        # at least 1 + 21 + 6 + 33 + 1 = 62 bytes and at most 118: one length byte
        body = bytes((0xF8, len(payload))) + payload
    prefix = _PREFIXES.get(chain_id)
    if prefix is None:
        prefix = _PREFIXES[chain_id] = DIGEST_PREFIX + chain_id.to_bytes(8, "big")
    return keccak256(prefix + body)


_PREFIXES: dict[int, bytes] = {}


# --- decoding ----------------------------------------------------------------


def _unpack_limits(max_bytes: int) -> dict[str, int]:
    """msgpack limits for an input of at most ``max_bytes``: every element takes a byte,
    so no container or string can be longer."""
    return {f"max_{kind}_len": max_bytes for kind in ("bin", "str", "array", "map", "ext")}


_ATTESTATION_UNPACK_LIMITS = _unpack_limits(MAX_ATTESTATION_BYTES)  # built once: admission is hot


def _malformed(message: str) -> AttestationError:
    return AttestationError(RejectCode.MALFORMED, message)


def _uint(value: object, name: str) -> int:
    # type() rather than isinstance: msgpack booleans decode to Python bools
    if type(value) is not int or not 0 <= value < UINT64_LIMIT:
        raise _malformed(f"{name} must be an unsigned 64-bit integer")
    return value


def _bin(value: object, name: str, *lengths: int) -> bytes:
    if type(value) is not bytes or len(value) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise _malformed(f"{name} must be {want} bytes (msgpack bin)")
    return value


_FIELD_TYPES = (int, bytes, int, int, int, int, int, int, bytes, bytes, bytes)


def _explain_types(obj: list) -> None:
    """Raise the malformed error naming the first badly typed field."""
    _uint(obj[0], "version")
    _bin(obj[1], "device", 20)
    for i, name in ((2, "vehicle_id"), (3, "seq"), (4, "timestamp_ms"), (5, "cell"),
                    (6, "odometer_m"), (7, "speed_cmps")):
        _uint(obj[i], name)
    _bin(obj[8], "signals_hash", 32)
    _bin(obj[9], "challenge", 0, NONCE_BYTES)
    _bin(obj[10], "signature", 65)
    raise _malformed("badly typed field")  # pragma: no cover - one check above fails


def decode_attestation(raw: bytes) -> Attestation:
    """Decode wire bytes; raises AttestationError(malformed) unless ``raw`` is exactly
    the canonical encoding of a well-typed version-1 attestation. Never raises
    anything else."""
    if type(raw) is not bytes:
        raw = bytes(raw) if isinstance(raw, bytearray | memoryview) else b""
    if not raw:
        raise _malformed("empty attestation")
    if len(raw) > MAX_ATTESTATION_BYTES:
        raise _malformed(f"{len(raw)} bytes, limit {MAX_ATTESTATION_BYTES}")
    try:
        # raw=True: msgpack str decodes to bytes, so a str where bin belongs fails the
        # canonical re-encoding below instead of being silently accepted.
        # Explicit limits (no container or string longer than the input allows), and
        # msgpack's C unpacker stops at 1,024 nested levels with StackError (a
        # ValueError) on a fixed stack of its own, whatever the recursion limit.
        obj = msgpack.unpackb(raw, raw=True, use_list=True, strict_map_key=False,
                              **_ATTESTATION_UNPACK_LIMITS)
    except Exception as exc:
        raise _malformed(f"not msgpack: {type(exc).__name__}") from None
    if type(obj) is not list or len(obj) != FIELD_COUNT:
        raise _malformed(f"must be a msgpack array of {FIELD_COUNT} elements")
    if tuple(map(type, obj)) != _FIELD_TYPES:
        _explain_types(obj)
    # msgpack integers are at most 64 bits; only negatives remain to refuse
    if min(obj[0], obj[2], obj[3], obj[4], obj[5], obj[6], obj[7]) < 0:
        _explain_types(obj)
    if obj[0] != VERSION:
        raise _malformed(f"unsupported version {obj[0]} (this chain speaks {VERSION})")
    if (len(obj[1]) != 20 or len(obj[8]) != 32 or len(obj[9]) not in (0, NONCE_BYTES)
            or len(obj[10]) != 65):
        _explain_types(obj)
    try:
        canonical = _packer().pack(obj) == raw
    except Exception:  # pragma: no cover - every element was type-checked above
        canonical = False
    if not canonical:
        raise _malformed("not canonical msgpack (bin for bytes, shortest integers)")
    return _new_tuple(Attestation, obj)  # Attestation(*obj) without the Python-level __new__


_new_tuple = tuple.__new__
_packers = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's msgpack packer for the canonical re-encoding (``packb`` builds a new
    Packer per call; the bytes are the same: ``use_bin_type=True``, autoreset)."""
    try:
        return _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
        return packer


def encode_attestation(att: Attestation) -> bytes:
    return att.encode()


# --- signatures --------------------------------------------------------------

_ZERO32 = bytes(32)
_N_BYTES = SECP256K1_N.to_bytes(32, "big")
_HALF_N_BYTES = (SECP256K1_N // 2).to_bytes(32, "big")


def recover_signer(digest: bytes, signature: bytes) -> bytes:
    """Address that produced ``signature`` (65 bytes r || s || v, v in {0, 1}, low s)
    over ``digest``; raises AttestationError(bad_signature)."""
    if len(signature) != 65 or signature[64] > 1:
        raise AttestationError(RejectCode.BAD_SIGNATURE, "signature v must be 0 or 1")
    r, s = signature[:32], signature[32:64]
    # Low s (as Ethereum's EIP-2): otherwise (r, n - s) is a second valid signature
    # of the same record, i.e. a second id for one attestation. (Fixed-width big-endian
    # bytes compare like the numbers they encode.)
    if not (_ZERO32 < r < _N_BYTES and _ZERO32 < s <= _HALF_N_BYTES):
        raise AttestationError(RejectCode.BAD_SIGNATURE,
                               "signature r or s out of range (s must be low)")
    address = recover_address(signature, digest)
    if address is None:
        raise AttestationError(RejectCode.BAD_SIGNATURE, "signature does not recover a key")
    return address


def verify_signature(att: Attestation, chain_id: int) -> None:
    """Raise AttestationError(bad_signature) unless ``att.device`` signed ``att`` for
    ``chain_id``."""
    signer = recover_signer(compute_signing_digest(att, chain_id), att.signature)
    if signer != att.device:
        raise AttestationError(RejectCode.BAD_SIGNATURE,
                               f"signed by 0x{signer.hex()}, not by device 0x{att.device.hex()}")


# --- stateless checks --------------------------------------------------------

# Ids of attestations whose signature already verified for a chain id in this
# process (pool admission, then block execution re-checks the same bytes). The
# id is the hash of every byte, signature included, so a hit proves the same
# check passed before; results are unchanged, only time is saved.
_VERIFIED: dict[bytes, None] = {}
_VERIFIED_MAX = 200_000


def _verified_key(att_id: bytes, chain_id: int) -> bytes:
    return att_id + chain_id.to_bytes(8, "big")


def mark_verified(att_id: bytes, chain_id: int) -> None:
    """Record that the attestation with ``att_id`` passed :func:`check_stateless` for
    ``chain_id`` (used when a worker process did the check)."""
    if len(_VERIFIED) >= _VERIFIED_MAX:
        # drop the oldest half: dicts keep insertion order
        for key in list(_VERIFIED)[: _VERIFIED_MAX // 2]:
            del _VERIFIED[key]
    _VERIFIED[_verified_key(att_id, chain_id)] = None


def is_verified(att_id: bytes, chain_id: int) -> bool:
    return _verified_key(att_id, chain_id) in _VERIFIED


_CHAIN_SUFFIXES: dict[int, bytes] = {}


def check_stateless(raw: bytes, chain_id: int, att_id: bytes | None = None) -> Attestation:
    """Decode ``raw`` and verify its signature for ``chain_id``.

    Returns the attestation or raises AttestationError with code ``malformed`` or
    ``bad_signature``; never raises anything else. ``att_id`` (keccak of ``raw``)
    may be passed when the caller already computed it.
    """
    att = decode_attestation(raw)
    suffix = _CHAIN_SUFFIXES.get(chain_id)
    if suffix is None:
        suffix = _CHAIN_SUFFIXES[chain_id] = chain_id.to_bytes(8, "big")
    key = (compute_attestation_id(raw) if att_id is None else att_id) + suffix
    if key not in _VERIFIED:
        verify_signature(att, chain_id)
        if len(_VERIFIED) >= _VERIFIED_MAX:
            for old in list(_VERIFIED)[: _VERIFIED_MAX // 2]:  # the oldest half
                del _VERIFIED[old]
        _VERIFIED[key] = None
    return att


def check_stateless_codes(raws: Sequence[bytes], chain_id: int) -> list[str]:
    """Stateless checks of many attestations: one code per item (``"ok"`` or a reject
    code). Picklable in and out, for worker processes.

    Uses no verified-id memo: in a worker process nothing else would read it (the main
    process records accepted ids itself, and skips resubmissions before they get here),
    so it would only hold memory, and answer repeated batches without doing the work."""
    out = []
    for raw in raws:
        try:
            verify_signature(decode_attestation(raw), chain_id)
        except AttestationError as exc:
            out.append(exc.code)
        else:
            out.append(OK)
    return out


# --- off-chain signal payloads -------------------------------------------------
# The full signals of one reading (exact position, battery, diagnostics...) stay
# off-chain; the attestation carries keccak256 of their canonical encoding.

MAX_SIGNALS_BYTES = 64 * 1024
_SIGNALS_UNPACK_LIMITS = _unpack_limits(MAX_SIGNALS_BYTES)
LOCATION_SIGNALS = frozenset({"lat", "lon"})  # degrees (WGS84); need a location permission


class SignalsError(ValueError):
    """A signal payload that is not canonical or too large."""


def _canonical(value: object, depth: int = 0) -> object:
    if depth > 8:
        raise SignalsError("signals nested too deeply")
    if value is None or type(value) in (bool, float, str, bytes):
        return value
    if type(value) is int:
        if not -(2**63) <= value < 2**64:
            raise SignalsError("signal integers must fit in 64 bits")
        return value
    if isinstance(value, list | tuple):
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            raise SignalsError("signal names must be strings")
        return {k: _canonical(value[k], depth + 1)
                for k in sorted(value, key=lambda k: k.encode("utf-8"))}
    raise SignalsError(f"unsupported signal value type {type(value).__name__}")


def encode_signals(signals: dict[str, object]) -> bytes:
    """Canonical payload bytes of a signals dict: msgpack map, names sorted by their
    UTF-8 bytes (recursively), str as str, bytes as bin, floats as float64,
    shortest integers. Raises SignalsError for anything else."""
    if type(signals) is not dict:
        raise SignalsError("signals must be a dict")
    payload = msgpack.packb(_canonical(signals), use_bin_type=True)
    if len(payload) > MAX_SIGNALS_BYTES:
        raise SignalsError(f"signal payload of {len(payload)} bytes, limit {MAX_SIGNALS_BYTES}")
    return payload


def decode_signals(payload: bytes) -> dict[str, object]:
    """Inverse of :func:`encode_signals`; raises SignalsError unless ``payload`` is the
    canonical encoding of a signals dict."""
    if len(payload) > MAX_SIGNALS_BYTES:
        raise SignalsError(f"signal payload of {len(payload)} bytes, limit {MAX_SIGNALS_BYTES}")
    try:
        signals = msgpack.unpackb(payload, raw=False, strict_map_key=True, use_list=True,
                                  **_SIGNALS_UNPACK_LIMITS)
    except Exception as exc:
        raise SignalsError(f"not msgpack: {type(exc).__name__}") from None
    if type(signals) is not dict or encode_signals(signals) != payload:
        raise SignalsError("not a canonical signals map")
    return signals


def compute_signals_hash(payload: bytes) -> bytes:
    """What an attestation's ``signals_hash`` must be for this payload."""
    return keccak256(payload)
