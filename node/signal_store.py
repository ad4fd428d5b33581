"""Off-chain signal store: the full payloads behind attestations' ``commitment``.

The chain keeps only the salted commitment and the coarse cell of each reading; the owner's
chosen node keeps the payload (exact position, battery, diagnostics...) here,
verified against the attestation, indexed by vehicle and time, pruned after a
retention period, and served by ``motus_getTelemetry`` to requesters that hold
a data permission on the vehicle (see :func:`authorize_request`).

LevelDB layout (one plyvel database, a directory of its own; integers are
8-byte big-endian so keys sort by number):

- ``b"v" + vehicle_id + timestamp_ms + id`` -> msgpack ``[attestation bytes, payload]``
- ``b"a" + id`` -> ``vehicle_id + timestamp_ms`` (lookup by attestation id, de-duplication)
- ``b"t" + timestamp_ms + vehicle_id + id`` -> empty (retention scan in time order)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import plyvel
from eth_account import Account
from eth_account.messages import encode_defunct

from vm.attestation import (
    LOCATION_SIGNALS,
    Attestation,
    AttestationError,
    SignalsError,
    check_stateless,
    compute_attestation_id,
    decode_attestation,
    decode_signals,
    open_commitment,
)
from vm.geo import cell_to_latlng

DAY_MS = 86_400_000
REQUEST_FRESH_MS = 60_000  # a signed request is valid this long around its timestamp
MAX_RANGE_MS = 31 * DAY_MS
MAX_RECORDS = 10_000

# identity permission bits (vm.modules.identity.PERMISSION_BITS)
BIT_NON_LOCATION_HISTORY = 0
BIT_CURRENT_LOCATION = 2
BIT_LOCATION_HISTORY = 3
BIT_APPROXIMATE_LOCATION = 7

EXACT, CURRENT, APPROXIMATE, NONE = "exact", "current", "approximate", "none"


class SignalStoreError(Exception):
    """A payload the store refuses; ``code`` is stable: bad_attestation, bad_payload,
    hash_mismatch."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class TelemetryAccessError(Exception):
    """A telemetry request refused; ``code`` is stable: bad_request, stale_request,
    bad_signature, denied."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class StoredSignals:
    id: bytes
    vehicle_id: int
    timestamp_ms: int
    attestation: Attestation
    raw_attestation: bytes
    payload: bytes

    @property
    def signals(self) -> dict[str, Any]:
        return decode_signals(self.payload)


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


class SignalStore:
    """Signal payloads in a LevelDB directory at ``path``, kept ``retention_days``."""

    def __init__(self, path: str, chain_id: int, retention_days: int = 30) -> None:
        self.chain_id = chain_id
        self.retention_ms = retention_days * DAY_MS
        self._db = plyvel.DB(path, create_if_missing=True)

    def close(self) -> None:
        self._db.close()

    def put(self, raw_attestation: bytes, payload: bytes) -> bytes:
        """Store ``payload`` under its attestation after checking that the attestation is
        signed by its device and that ``payload`` (salt included) opens its commitment
        (``vm.attestation.open_commitment``); returns the
        attestation id. Storing the same pair again is a no-op. Whether the attestation
        was accepted on chain is the caller's business (the node stores payloads of
        attestations its pool accepted)."""
        try:
            att = check_stateless(raw_attestation, self.chain_id)
        except AttestationError as exc:
            raise SignalStoreError("bad_attestation", str(exc)) from None
        try:
            open_commitment(att, payload)
        except SignalsError as exc:
            raise SignalStoreError(exc.code, str(exc)) from None
        att_id = compute_attestation_id(raw_attestation)
        where = _u64(att.vehicle_id) + _u64(att.timestamp_ms)
        if self._db.get(b"a" + att_id) is not None:
            return att_id
        with self._db.write_batch(transaction=True) as batch:
            record = msgpack.packb([raw_attestation, payload], use_bin_type=True)
            batch.put(b"v" + where + att_id, record)
            batch.put(b"a" + att_id, where)
            batch.put(b"t" + _u64(att.timestamp_ms) + _u64(att.vehicle_id) + att_id, b"")
        return att_id

    def get(self, att_id: bytes) -> StoredSignals | None:
        where = self._db.get(b"a" + att_id)
        if where is None:
            return None
        value = self._db.get(b"v" + where + att_id)
        return None if value is None else self._record(att_id, value)

    def _record(self, att_id: bytes, value: bytes) -> StoredSignals:
        raw, payload = msgpack.unpackb(value, raw=False)
        # verified by put(); decoding only keeps reads free of the process-wide verified-id
        # memo, so they may run on worker threads (motus_getTelemetry does)
        att = decode_attestation(raw)
        return StoredSignals(att_id, att.vehicle_id, att.timestamp_ms, att, raw, payload)

    def query(self, vehicle_id: int, from_ms: int, to_ms: int,
              limit: int = MAX_RECORDS) -> list[StoredSignals]:
        """Records of ``vehicle_id`` with ``from_ms <= timestamp_ms <= to_ms``, oldest first."""
        if to_ms < from_ms:
            return []
        start = b"v" + _u64(vehicle_id) + _u64(from_ms)
        stop = b"v" + _u64(vehicle_id) + _u64(min(to_ms, 2**64 - 2) + 1)
        out = []
        for key, value in self._db.iterator(start=start, stop=stop):
            out.append(self._record(key[17:], value))
            if len(out) >= limit:
                break
        return out

    def latest(self, vehicle_id: int) -> StoredSignals | None:
        """The vehicle's newest record."""
        prefix = b"v" + _u64(vehicle_id)
        for key, value in self._db.iterator(prefix=prefix, reverse=True):
            return self._record(key[17:], value)
        return None

    def prune(self, now_ms: int) -> int:
        """Delete records older than the retention period; returns how many."""
        cutoff = max(0, now_ms - self.retention_ms)
        n = 0
        with self._db.write_batch(transaction=True) as batch:
            for key, _ in self._db.iterator(start=b"t", stop=b"t" + _u64(cutoff)):
                ts, vehicle, att_id = key[1:9], key[9:17], key[17:]
                batch.delete(key)
                batch.delete(b"a" + att_id)
                batch.delete(b"v" + vehicle + ts + att_id)
                n += 1
        return n


# --- motus_getTelemetry: signed requests and the access rule ----------------------


@dataclass(frozen=True)
class TelemetryRequest:
    vehicle_id: int
    from_ms: int
    to_ms: int
    timestamp_ms: int  # when the requester signed; must be within 60 s of the node's clock
    signature: bytes  # EIP-191 personal_sign over request_message(...)


def request_message(chain_id: int, vehicle_id: int, from_ms: int, to_ms: int,
                    timestamp_ms: int) -> str:
    """The exact text a requester signs with EIP-191 (``personal_sign``)."""
    return (f"Motus telemetry request\nchain_id: {chain_id}\nvehicle_id: {vehicle_id}\n"
            f"from_ms: {from_ms}\nto_ms: {to_ms}\ntimestamp_ms: {timestamp_ms}")


def sign_request(private_key: bytes, chain_id: int, vehicle_id: int, from_ms: int, to_ms: int,
                 timestamp_ms: int) -> TelemetryRequest:
    """Client side: a signed telemetry request."""
    text = request_message(chain_id, vehicle_id, from_ms, to_ms, timestamp_ms)
    message = encode_defunct(text=text)
    signature = bytes(Account.sign_message(message, private_key).signature)
    return TelemetryRequest(vehicle_id, from_ms, to_ms, timestamp_ms, signature)


@dataclass(frozen=True)
class TelemetryAccess:
    requester: bytes
    location: str  # exact, current, approximate or none


PermissionCheck = Callable[[Any, int, bytes, int, int], bool]  # identity.has_permission


def authorize_request(state: Any, request: TelemetryRequest, chain_id: int, now_ms: int,
                      has_permission: PermissionCheck | None = None) -> TelemetryAccess:
    """Check a signed request against the head state now; raises TelemetryAccessError.

    Rule: the signer must hold non-location history (bit 0) on the vehicle now.
    Location signals (``lat``, ``lon``) are then returned by the best location
    permission held: location history (bit 3) exact on every record; current
    location (bit 2) exact on the vehicle's newest record only; approximate
    location (bit 7) replaced by the centre of the attestation's public H3 cell;
    none of these: removed. Owners hold every permission.
    """
    if has_permission is None:
        from vm.modules.identity import has_permission as identity_has_permission

        has_permission = identity_has_permission
    if not 0 <= request.from_ms <= request.to_ms or request.to_ms - request.from_ms > MAX_RANGE_MS:
        raise TelemetryAccessError(
            "bad_request", f"need 0 <= from_ms <= to_ms, range at most {MAX_RANGE_MS} ms")
    if abs(now_ms - request.timestamp_ms) > REQUEST_FRESH_MS:
        raise TelemetryAccessError(
            "stale_request", "request timestamp is more than 60 s from the node's clock")
    message = encode_defunct(text=request_message(chain_id, request.vehicle_id, request.from_ms,
                                                  request.to_ms, request.timestamp_ms))
    try:
        requester = bytes.fromhex(Account.recover_message(message, signature=request.signature)[2:])
    except Exception:
        raise TelemetryAccessError("bad_signature",
                                   "signature does not recover an address") from None
    now_s = now_ms // 1000

    def holds(bit: int) -> bool:
        return bool(has_permission(state, request.vehicle_id, requester, 1 << bit, now_s))

    if not holds(BIT_NON_LOCATION_HISTORY):
        raise TelemetryAccessError("denied", f"0x{requester.hex()} holds no data permission on "
                                             f"vehicle {request.vehicle_id}")
    if holds(BIT_LOCATION_HISTORY):
        location = EXACT
    elif holds(BIT_CURRENT_LOCATION):
        location = CURRENT
    elif holds(BIT_APPROXIMATE_LOCATION):
        location = APPROXIMATE
    else:
        location = NONE
    return TelemetryAccess(requester, location)


def get_telemetry(store: SignalStore, state: Any, request: TelemetryRequest, now_ms: int,
                  has_permission: PermissionCheck | None = None,
                  limit: int = MAX_RECORDS) -> list[dict[str, Any]]:
    """What ``motus_getTelemetry`` answers: the vehicle's records in the range with
    location signals filtered by :func:`authorize_request`'s rule. ``payload`` (hex) is
    present only when nothing was removed, so it can be checked against the chain's
    ``commitment``."""
    access = authorize_request(state, request, store.chain_id, now_ms, has_permission)
    records = store.query(request.vehicle_id, request.from_ms, request.to_ms, limit)
    newest = store.latest(request.vehicle_id) if access.location == CURRENT else None
    out = []
    for rec in records:
        signals = rec.signals
        mode = access.location
        if mode == CURRENT:
            mode = EXACT if newest is not None and rec.id == newest.id else NONE
        has_location = any(k in signals for k in LOCATION_SIGNALS)
        if mode != EXACT and has_location:
            for key in LOCATION_SIGNALS:
                signals.pop(key, None)
            if mode == APPROXIMATE:
                signals["lat"], signals["lon"] = cell_to_latlng(rec.attestation.cell)
        out.append({
            "id": "0x" + rec.id.hex(),
            "vehicle_id": rec.vehicle_id,
            "timestamp_ms": rec.timestamp_ms,
            "cell": hex(rec.attestation.cell),
            "location": mode if has_location else NONE,
            "signals": signals,
            "payload": "0x" + rec.payload.hex() if mode == EXACT or not has_location else None,
        })
    return out
