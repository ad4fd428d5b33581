"""Telemetry attestations (docs/telemetry.md): wire codec, signing digest, reject
codes and the stateless checks.

An attestation (version 2) is the canonical msgpack array
``[version, device, vehicle_id, seq, timestamp_s, cell, odometer_hm, commitment,
challenge, signature]``. It publishes no more location than proof of coverage needs
(docs/privacy.md): a coarse H3 cell (the chain's ``h3_resolution``, 5..7), the time in
whole seconds, the odometer in whole hectometres, and ``commitment``, a salted hash of
the off-chain payload (exact position, fine cell, exact time, odometer, speed...). The
device signs ``keccak256(b"\\x19Motus Attestation:\\n" + chain_id (8 bytes, big-endian)
+ rlp([first nine fields]))`` with secp256k1 and appends ``r || s || v`` (v 0 or 1).
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
from vm.geo import cell_is_inside, latlng_to_cell

VERSION = 2  # 1: fine cell, ms time, metre odometer, speed, unsalted hash (no longer accepted)
MAX_ATTESTATION_BYTES = 256  # the largest valid attestation is 180 bytes
DIGEST_PREFIX = b"\x19Motus Attestation:\n"
FIELD_COUNT = 10
ODOMETER_UNIT_M = 100  # on chain the odometer counts whole hectometres
TIME_UNIT_MS = 1000  # on chain the reading's time counts whole seconds
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
    timestamp_s: int  # when the reading was taken, unix seconds (floor)
    cell: int  # H3 index (as an integer) at the chain's coarse h3_resolution
    odometer_hm: int  # odometer in whole hectometres (floor)
    commitment: bytes  # salted keccak of the off-chain payload (compute_commitment)
    challenge: bytes  # the epoch challenge nonce (8 bytes) or empty
    signature: bytes = b""  # 65 bytes r || s || v

    @property
    def timestamp_ms(self) -> int:
        """The on-chain time in milliseconds: whole seconds, so always a multiple of 1000
        (the exact time is in the payload)."""
        return self.timestamp_s * TIME_UNIT_MS

    @property
    def odometer_m(self) -> int:
        """The on-chain odometer in metres: whole hectometres (the exact value is in the
        payload)."""
        return self.odometer_hm * ODOMETER_UNIT_M

    def signed_fields(self) -> list[int | bytes]:
        """The nine fields covered by the signature, in wire order."""
        return list(self[:9])

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
    if len(att.device) != 20 or len(att.commitment) != 32 or len(att.challenge) not in (0, 8):
        body = encode_signed_fields(att.signed_fields())  # odd shapes: the general encoder
    else:
        # The usual shapes, spelled out (this runs for every attestation a node sees);
        # tests check it against the general encoder and the rlp package.
        payload = b"".join((
            rlp_uint(att.version), b"\x94", att.device, rlp_uint(att.vehicle_id),
            rlp_uint(att.seq), rlp_uint(att.timestamp_s), rlp_uint(att.cell),
            rlp_uint(att.odometer_hm), b"\xa0", att.commitment,
            b"\x88" + att.challenge if att.challenge else b"\x80",
        ))
        # at least 1 + 21 + 5 + 33 + 1 = 61 bytes and at most 109: one length byte
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


_FIELD_TYPES = (int, bytes, int, int, int, int, int, bytes, bytes, bytes)


def _explain_types(obj: list) -> None:
    """Raise the malformed error naming the first badly typed field."""
    _uint(obj[0], "version")
    _bin(obj[1], "device", 20)
    for i, name in ((2, "vehicle_id"), (3, "seq"), (4, "timestamp_s"), (5, "cell"),
                    (6, "odometer_hm")):
        _uint(obj[i], name)
    _bin(obj[7], "commitment", 32)
    _bin(obj[8], "challenge", 0, NONCE_BYTES)
    _bin(obj[9], "signature", 65)
    raise _malformed("badly typed field")  # pragma: no cover - one check above fails


def decode_accepted(raw: bytes) -> Attestation:
    """An attestation a block's execution already accepted (so canonical and well typed),
    read without :func:`decode_attestation`'s checks (~5x cheaper): for what a node does
    with every included attestation after a commit. Never for bytes from outside."""
    return Attestation(*msgpack.unpackb(raw))


def decode_attestation(raw: bytes) -> Attestation:
    """Decode wire bytes; raises AttestationError(malformed) unless ``raw`` is exactly
    the canonical encoding of a well-typed version-2 attestation. Never raises
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
    if type(obj) is list and obj and type(obj[0]) is int and obj[0] != VERSION:
        # checked first: an old version-1 record has a different shape
        raise _malformed(f"unsupported version {obj[0]} (this chain speaks {VERSION})")
    if type(obj) is not list or len(obj) != FIELD_COUNT:
        raise _malformed(f"must be a msgpack array of {FIELD_COUNT} elements")
    if tuple(map(type, obj)) != _FIELD_TYPES:
        _explain_types(obj)
    # msgpack integers are at most 64 bits; only negatives remain to refuse
    if min(obj[0], obj[2], obj[3], obj[4], obj[5], obj[6]) < 0:
        _explain_types(obj)
    if obj[0] != VERSION:
        raise _malformed(f"unsupported version {obj[0]} (this chain speaks {VERSION})")
    if (len(obj[1]) != 20 or len(obj[7]) != 32 or len(obj[8]) not in (0, NONCE_BYTES)
            or len(obj[9]) != 65):
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
# process (pool admission, then block execution re-checks the same bytes), with the
# decoded attestation when this process decoded it (None when a worker process did the
# check). The id is the hash of every byte, signature included, so a hit proves the
# same checks passed before and decoding the same bytes gives the same record again;
# results are unchanged, only time is saved.
# Bounded by the attestation pool's capacity (``telemetry.pool_max``, 100,000 by default;
# the node sets it with set_verified_capacity): every pending attestation keeps its entry
# until a block executes it; each entry is ~650 bytes (the id and the decoded record),
# ~65 MB when full. When full, the oldest tenth goes (those most likely already
# included): dropping a pending attestation's entry only costs its signature check again.
_VERIFIED: dict[bytes, Attestation | None] = {}
_VERIFIED_MAX = 100_000
VERIFIED_MIN = 1_000  # (the memo must hold at least a block's attestations to be of use)


def set_verified_capacity(pool_capacity: int) -> None:
    """Size the verified-id memo to the attestation pool's capacity (at least
    VERIFIED_MIN entries); entries beyond the new size go, oldest first."""
    global _VERIFIED_MAX
    _VERIFIED_MAX = max(VERIFIED_MIN, pool_capacity)
    _make_room()


def _make_room() -> None:
    if len(_VERIFIED) >= _VERIFIED_MAX:
        drop = max(1, _VERIFIED_MAX // 10, len(_VERIFIED) - _VERIFIED_MAX + 1)
        # dicts keep insertion order: the first keys are the oldest
        for key in list(_VERIFIED)[:drop]:
            del _VERIFIED[key]


def _verified_key(att_id: bytes, chain_id: int) -> bytes:
    return att_id + chain_id.to_bytes(8, "big")


def mark_verified(att_id: bytes, chain_id: int, att: Attestation | None = None) -> None:
    """Record that the attestation with ``att_id`` passed :func:`check_stateless` for
    ``chain_id`` (used when a worker process did the check), with its decoded record
    ``att`` when the caller has it (then :func:`check_stateless` returns it as is).
    Only for an id whose exact bytes passed :func:`decode_attestation` and
    :func:`verify_signature`: without ``att`` they are later read by
    :func:`decode_accepted`, without the canonical-form checks."""
    _make_room()
    _VERIFIED[_verified_key(att_id, chain_id)] = att


def is_verified(att_id: bytes, chain_id: int) -> bool:
    return _verified_key(att_id, chain_id) in _VERIFIED


_CHAIN_SUFFIXES: dict[int, bytes] = {}


def check_stateless(raw: bytes, chain_id: int, att_id: bytes | None = None) -> Attestation:
    """Decode ``raw`` and verify its signature for ``chain_id``.

    Returns the attestation or raises AttestationError with code ``malformed`` or
    ``bad_signature``; never raises anything else. ``att_id`` (keccak of ``raw``)
    may be passed when the caller already computed it.
    """
    suffix = _CHAIN_SUFFIXES.get(chain_id)
    if suffix is None:
        suffix = _CHAIN_SUFFIXES[chain_id] = chain_id.to_bytes(8, "big")
    key = (compute_attestation_id(raw) if att_id is None else att_id) + suffix
    known = _VERIFIED.get(key, _UNSEEN)
    if known is _UNSEEN:
        att = decode_attestation(raw)
        verify_signature(att, chain_id)
        _make_room()
        _VERIFIED[key] = att
        return att
    if known is None:
        # Verified by a worker process, which decoded these exact bytes (the id is their
        # keccak) with decode_attestation's checks: read here without repeating them.
        known = _VERIFIED[key] = decode_accepted(raw)
    return known  # type: ignore[return-value]


_UNSEEN = object()


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
# The full signals of one reading (exact position, fine cell, exact time and odometer,
# speed, battery, diagnostics...) stay off-chain; the attestation carries a salted
# commitment to their canonical encoding (docs/privacy.md says why the salt matters).

MAX_SIGNALS_BYTES = 64 * 1024
_SIGNALS_UNPACK_LIMITS = _unpack_limits(MAX_SIGNALS_BYTES)
COMMITMENT_DOMAIN = b"motus.signals.v2\x00"  # keccak256(domain ++ payload), never a bare keccak
SALT_SIGNAL = "salt"  # bin, MIN_SALT_BYTES..MAX_SALT_BYTES random bytes, new for every payload
MIN_SALT_BYTES = 16
MAX_SALT_BYTES = 32
FINE_CELL_SIGNAL = "cell"  # H3 cell at FINE_CELL_RESOLUTION, inside the attestation's cell
FINE_CELL_RESOLUTION = 8
# Signals that reveal where the car is: removed for a reader without a location
# permission. The salt goes with them: whoever holds the salt and the other signals of
# a record can test candidate positions against the public commitment (a brute force
# over the coarse cell), so the salt is location data.
LOCATION_SIGNALS = frozenset({"lat", "lon", FINE_CELL_SIGNAL, SALT_SIGNAL})


class SignalsError(ValueError):
    """A signal payload refused; ``code`` is stable: ``bad_payload`` (not canonical, too
    large, no salt, fine cell or position inconsistent with the attestation) or
    ``hash_mismatch`` (does not open the attestation's commitment)."""

    def __init__(self, message: str, code: str = "bad_payload") -> None:
        super().__init__(message)
        self.code = code


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


def compute_commitment(payload: bytes) -> bytes:
    """What an attestation's ``commitment`` must be for this payload:
    ``keccak256(COMMITMENT_DOMAIN ++ payload)``. The payload carries its own random salt
    (:data:`SALT_SIGNAL`), so the commitment hides the payload from anyone without it."""
    return keccak256(COMMITMENT_DOMAIN + payload)


def open_commitment(att: Attestation, payload: bytes) -> dict[str, object]:
    """Check that ``payload`` is what ``att`` committed to, and consistent with it; return
    the signals. Raises :class:`SignalsError`: ``hash_mismatch`` unless
    ``compute_commitment(payload) == att.commitment``; ``bad_payload`` unless the payload
    is canonical, carries a salt of 16..32 bytes, its fine cell (when present) is a
    resolution-8 cell inside ``att.cell``, and its ``lat``/``lon`` (when present) lie in
    that fine cell (which must then be present)."""
    if compute_commitment(payload) != att.commitment:
        raise SignalsError("the payload does not open the attestation's commitment",
                           "hash_mismatch")
    signals = decode_signals(payload)
    salt = signals.get(SALT_SIGNAL)
    if type(salt) is not bytes or not MIN_SALT_BYTES <= len(salt) <= MAX_SALT_BYTES:
        raise SignalsError(f"the payload needs a random salt of {MIN_SALT_BYTES} to "
                           f"{MAX_SALT_BYTES} bytes (signal {SALT_SIGNAL!r}, bin)")
    fine = signals.get(FINE_CELL_SIGNAL)
    has_position = "lat" in signals or "lon" in signals
    if fine is None and has_position:
        raise SignalsError(f"a payload with lat/lon needs its fine cell ({FINE_CELL_SIGNAL!r})")
    if fine is not None:
        if type(fine) is not int or not cell_is_inside(fine, FINE_CELL_RESOLUTION, att.cell):
            raise SignalsError(f"fine cell is not a resolution-{FINE_CELL_RESOLUTION} cell "
                               "inside the attestation's cell")
    if has_position:
        lat, lon = signals.get("lat"), signals.get("lon")
        if (type(lat) is not float or type(lon) is not float
                or not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0)
                or latlng_to_cell(lat, lon, FINE_CELL_RESOLUTION) != fine):
            raise SignalsError("lat/lon are not a position inside the payload's fine cell")
    return signals
