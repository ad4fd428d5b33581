"""Off-chain signal store: the full payloads behind attestations' ``commitment``.

The chain keeps only the salted commitment and the coarse cell of each reading; the owner's
chosen node keeps the payload (exact position, battery, diagnostics...) here,
verified against the attestation, indexed by vehicle and time, pruned after a
retention period, and served by ``motus_getTelemetry`` to the owners of the ownership
periods in which records were produced and to the current owner's grantees (see
:func:`authorize_request`). Every node stores what it validated: payloads are
gossiped (docs/telemetry.md, "Signal replication").

LevelDB layout (one plyvel database, a directory of its own; integers are
8-byte big-endian so keys sort by number):

- ``b"v" + vehicle_id + timestamp_ms + id`` -> msgpack ``[attestation bytes, payload]``
- ``b"a" + id`` -> ``vehicle_id + timestamp_ms`` (lookup by attestation id, de-duplication)
- ``b"k" + vehicle_id + timestamp_ms + id`` -> empty: an attestation included on chain
  whose payload this node does not hold (coverage answers)
- ``b"t" + timestamp_ms + vehicle_id + id`` -> empty (retention scan in time order)
- ``b"m" + vehicle_id + minute_start_ms + signal name`` -> msgpack ``[count, sum, min,
  max, last_timestamp_ms, last]``: per-minute aggregates of each numeric non-location
  signal (``motus_aggregateSignals`` reads whole minutes from here, not the records)
- ``b"M"`` -> the aggregate index's version (absent: rebuilt from the records on open)
"""

from __future__ import annotations

import heapq
import math
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import msgpack
import plyvel
from eth_account import Account
from eth_account.messages import encode_defunct

from codec.developer import NONCE_BYTES, request_message  # noqa: F401  (re-exported)
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
from vm.modules.identity import (
    PERMISSIONS_ALL,
    READ_PERMISSIONS,
    OwnershipPeriod,
    get_permission,
    get_vehicle,
    ownership_periods,
)

DAY_MS = 86_400_000
REQUEST_FRESH_MS = 60_000  # a signed request is valid this long around its timestamp
MAX_RANGE_MS = 31 * DAY_MS
MAX_RECORDS = 10_000
MAX_MISSING_LISTED = 100  # ids of records without a payload here, listed in ``coverage``
NONCES_PER_SIGNER = 1_000  # answered requests one signer may have in flight (2 min window)
NONCES_TOTAL = 100_000  # over all signers: ~15 MB at most

# identity permission bits (vm.modules.identity.PERMISSION_BITS)
BIT_NON_LOCATION_HISTORY = 0
BIT_CURRENT_LOCATION = 2
BIT_LOCATION_HISTORY = 3
BIT_RAW_DATA = 6
BIT_APPROXIMATE_LOCATION = 7

EXACT, CURRENT, APPROXIMATE, NONE = "exact", "current", "approximate", "none"


MINUTE_MS = 60_000
AGG_INDEX_VERSION = b"1"


def numeric_signals(signals: dict[str, Any]) -> dict[str, float]:
    """The signals aggregates are kept for: numbers (not booleans, not NaN) outside
    the location set (lat/lon, fine cell, salt need location permissions)."""
    return {k: v for k, v in signals.items()
            if k not in LOCATION_SIGNALS and not isinstance(v, bool)
            and isinstance(v, int | float) and v == v and abs(v) != float("inf")}


def merge_aggregate(agg: list[Any], timestamp_ms: int, value: float) -> list[Any]:
    """``[count, sum, min, max, last_ts, last]`` with one more sample."""
    count, total, low, high, last_ts, last = agg
    if timestamp_ms >= last_ts:
        last_ts, last = timestamp_ms, value
    return [count + 1, total + value, min(low, value), max(high, value), last_ts, last]


class SignalStoreError(Exception):
    """A payload the store refuses; ``code`` is stable: bad_attestation, bad_payload,
    hash_mismatch."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class TelemetryAccessError(Exception):
    """A telemetry request refused; ``code`` is stable: bad_request, wrong_audience,
    expired, bad_signature, replayed, too_many_requests, busy, denied, period_mismatch."""

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
        if self._db.get(b"M") != AGG_INDEX_VERSION:
            self._rebuild_aggregates()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SignalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
            batch.delete(b"k" + where + att_id)
            batch.put(b"v" + where + att_id, record)
            batch.put(b"a" + att_id, where)
            batch.put(b"t" + _u64(att.timestamp_ms) + _u64(att.vehicle_id) + att_id, b"")
            self._aggregate(batch, att.vehicle_id, att.timestamp_ms, payload)
        return att_id

    def _aggregate(self, batch: Any, vehicle_id: int, timestamp_ms: int, payload: bytes) -> None:
        """Fold one record's numeric signals into its minute's aggregates (in ``batch``).
        Writers are the node's trio thread only, so read-modify-write is safe."""
        minute = timestamp_ms - timestamp_ms % MINUTE_MS
        prefix = b"m" + _u64(vehicle_id) + _u64(minute)
        for name, value in numeric_signals(decode_signals(payload)).items():
            key = prefix + name.encode()
            old = self._db.get(key)
            if old is None:
                agg = [1, value, value, value, timestamp_ms, value]
            else:
                agg = merge_aggregate(msgpack.unpackb(old), timestamp_ms, value)
            batch.put(key, msgpack.packb(agg))

    def _rebuild_aggregates(self) -> None:
        """Build the aggregate index from the records (a store written before it)."""
        for key, _ in self._db.iterator(prefix=b"m"):
            self._db.delete(key)
        for key, value in self._db.iterator(prefix=b"v"):
            _, payload = msgpack.unpackb(value, raw=False)
            with self._db.write_batch(transaction=True) as batch:
                self._aggregate(batch, int.from_bytes(key[1:9], "big"),
                                int.from_bytes(key[9:17], "big"), payload)
        self._db.put(b"M", AGG_INDEX_VERSION)

    def minute_aggregates(self, vehicle_id: int, from_minute: int,
                          to_minute: int) -> Iterable[tuple[int, str, list[Any]]]:
        """``(minute_start_ms, signal, [count, sum, min, max, last_ts, last])`` of the
        vehicle's whole minutes starting in ``[from_minute, to_minute]``, in key order."""
        if to_minute < from_minute:
            return
        start = b"m" + _u64(vehicle_id) + _u64(from_minute)
        stop = b"m" + _u64(vehicle_id) + _u64(min(to_minute, 2**64 - 2) + 1)
        for key, value in self._db.iterator(start=start, stop=stop):
            yield (int.from_bytes(key[9:17], "big"), key[17:].decode(),
                   msgpack.unpackb(value))

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
              limit: int = MAX_RECORDS, reverse: bool = False) -> list[StoredSignals]:
        """Records of ``vehicle_id`` with ``from_ms <= timestamp_ms <= to_ms``, oldest
        first (newest first with ``reverse``)."""
        if to_ms < from_ms or limit <= 0:
            return []
        start = b"v" + _u64(vehicle_id) + _u64(from_ms)
        stop = b"v" + _u64(vehicle_id) + _u64(min(to_ms, 2**64 - 2) + 1)
        out = []
        for key, value in self._db.iterator(start=start, stop=stop, reverse=reverse):
            out.append(self._record(key[17:], value))
            if len(out) >= limit:
                break
        return out

    def count(self, vehicle_id: int, from_ms: int, to_ms: int) -> int:
        """How many records of the vehicle this store holds in ``[from_ms, to_ms]``."""
        return self._count(b"v", vehicle_id, from_ms, to_ms)

    def count_missing(self, vehicle_id: int, from_ms: int, to_ms: int) -> int:
        """How many included attestations of the vehicle in ``[from_ms, to_ms]`` have no
        payload here."""
        return self._count(b"k", vehicle_id, from_ms, to_ms)

    def _count(self, tag: bytes, vehicle_id: int, from_ms: int, to_ms: int) -> int:
        if to_ms < from_ms:
            return 0
        start = tag + _u64(vehicle_id) + _u64(from_ms)
        stop = tag + _u64(vehicle_id) + _u64(min(to_ms, 2**64 - 2) + 1)
        return sum(1 for _ in self._db.iterator(start=start, stop=stop, include_value=False))

    def note_included(self, attestations: Iterable[tuple[bytes, int, int]]) -> int:
        """Remember attestations included on chain, ``(id, vehicle_id, timestamp_ms)``,
        whose payload this node does not hold, so that reads can say what is missing;
        returns how many were noted. Storing the payload later clears the note."""
        n = 0
        with self._db.write_batch(transaction=True) as batch:
            for att_id, vehicle_id, timestamp_ms in attestations:
                if self._db.get(b"a" + att_id) is not None:
                    continue
                batch.put(b"k" + _u64(vehicle_id) + _u64(timestamp_ms) + att_id, b"")
                batch.put(b"t" + _u64(timestamp_ms) + _u64(vehicle_id) + att_id, b"")
                n += 1
        return n

    def missing(self, vehicle_id: int, from_ms: int, to_ms: int, limit: int) -> list[bytes]:
        """Ids of included attestations of the vehicle in the range (inclusive) whose
        payload this node does not hold, oldest first, at most ``limit``."""
        if to_ms < from_ms or limit <= 0:
            return []
        start = b"k" + _u64(vehicle_id) + _u64(from_ms)
        stop = b"k" + _u64(vehicle_id) + _u64(min(to_ms, 2**64 - 2) + 1)
        out = []
        for key in self._db.iterator(start=start, stop=stop, include_value=False):
            out.append(key[17:])
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
                batch.delete(b"k" + vehicle + ts + att_id)
                # a minute's aggregates go with its first pruned record (docs/developers.md)
                minute = int.from_bytes(ts, "big")
                minute -= minute % MINUTE_MS
                for agg_key in self._db.iterator(prefix=b"m" + vehicle + _u64(minute),
                                                 include_value=False):
                    batch.delete(agg_key)
                n += 1
        return n


def json_ready(value: Any) -> Any:
    """Signal values as JSON: bytes as 0x-hex, NaN and infinities as strings (JSON has
    none), everything else as msgpack gave it."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


# --- motus_getTelemetry: signed requests and the access rule ----------------------


@dataclass(frozen=True)
class TelemetryRequest:
    """A signed read request. ``node_id`` (the serving node's libp2p peer id) and
    ``chain_id`` are its audience; ``nonce`` makes it usable once."""

    vehicle_id: int
    from_ms: int
    to_ms: int
    timestamp_ms: int  # when the requester signed; must be within 60 s of the node's clock
    signature: bytes  # EIP-191 personal_sign over request_message(...)
    node_id: str = ""
    nonce: bytes = b""
    chain_id: int | None = None  # the chain the requester named; None: the node's own


def sign_request(private_key: bytes, chain_id: int, node_id: str, vehicle_id: int, from_ms: int,
                 to_ms: int, timestamp_ms: int, nonce: bytes | None = None) -> TelemetryRequest:
    """Client side: a signed telemetry request for the node ``node_id`` (its peer id,
    ``motus_nodeStatus().peerId``); a fresh random 16-byte nonce unless given."""
    nonce = secrets.token_bytes(NONCE_BYTES) if nonce is None else nonce
    text = request_message(chain_id, vehicle_id, from_ms, to_ms, timestamp_ms, node_id, nonce)
    signature = bytes(Account.sign_message(encode_defunct(text=text), private_key).signature)
    return TelemetryRequest(vehicle_id, from_ms, to_ms, timestamp_ms, signature, node_id, nonce,
                            chain_id)


def request_json(request: TelemetryRequest) -> dict[str, Any]:
    """The ``motus_getTelemetry`` parameter for a signed request."""
    return {"vehicleId": request.vehicle_id, "fromMs": request.from_ms, "toMs": request.to_ms,
            "timestampMs": request.timestamp_ms, "chainId": request.chain_id,
            "nodeId": request.node_id, "nonce": "0x" + request.nonce.hex(),
            "signature": "0x" + request.signature.hex()}


class UsedNonces:
    """Nonces of answered requests, per signer, kept until their request expires
    (timestamp + :data:`REQUEST_FRESH_MS`): a request is answered at most once per node.

    Memory is bounded: at most ``per_signer`` live nonces per signer (a signer over it
    is refused ``too_many_requests`` until some expire) and ``total`` overall (then every
    new request is refused ``busy``). Nothing is evicted early, since an evicted nonce
    could be replayed. Thread-safe (reads run on RPC worker threads)."""

    def __init__(self, per_signer: int = NONCES_PER_SIGNER, total: int = NONCES_TOTAL) -> None:
        self.per_signer = per_signer
        self.total = total
        self._by_signer: dict[bytes, dict[bytes, int]] = {}
        self._expiries: list[tuple[int, bytes, bytes]] = []  # heap of (expiry, signer, nonce)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiries)

    def _expire(self, now_ms: int) -> None:
        while self._expiries and self._expiries[0][0] < now_ms:
            _, signer, nonce = heapq.heappop(self._expiries)
            live = self._by_signer.get(signer)
            if live is not None:
                live.pop(nonce, None)
                if not live:
                    del self._by_signer[signer]

    def check(self, signer: bytes, nonce: bytes, now_ms: int) -> None:
        """Raise ``replayed``, ``too_many_requests`` or ``busy``; records nothing."""
        with self._lock:
            self._expire(now_ms)
            live = self._by_signer.get(signer, {})
            if nonce in live:
                raise TelemetryAccessError("replayed", "this request was answered already")
            if len(live) >= self.per_signer:
                raise TelemetryAccessError(
                    "too_many_requests",
                    f"{self.per_signer} requests of this signer in the last "
                    f"{2 * REQUEST_FRESH_MS // 1000} s; try again later")
            if len(self._expiries) >= self.total:
                raise TelemetryAccessError("busy", "the node is tracking too many requests")

    def use(self, signer: bytes, nonce: bytes, timestamp_ms: int, now_ms: int) -> None:
        """Record an answered request (after :meth:`check`); ``replayed`` if another
        thread answered the same one meanwhile."""
        with self._lock:
            live = self._by_signer.setdefault(signer, {})
            if nonce in live:
                raise TelemetryAccessError("replayed", "this request was answered already")
            expiry = timestamp_ms + REQUEST_FRESH_MS
            live[nonce] = expiry
            heapq.heappush(self._expiries, (expiry, signer, nonce))


@dataclass(frozen=True)
class ReadablePeriod:
    """An ownership period the requester may read, and what of it (permission bits)."""

    period: OwnershipPeriod
    bits: int


@dataclass(frozen=True)
class TelemetryAccess:
    """What a checked credential may read (node/access.py makes these)."""

    requester: bytes  # the signer (or, for a token, the grantee it stands for)
    periods: tuple[ReadablePeriod, ...]  # the readable periods overlapping the range
    vehicle_id: int = 0
    from_ms: int = 0  # the scope read: device times [from_ms, to_ms]
    to_ms: int = 0
    via: str = "request"  # the credential kind: "request" or "token"
    owner_at_grant: bytes | None = None  # the vehicle's owner when access was given
    expires_ms: int | None = None  # a token's expiry (None: a signed request's own rule)


GrantLookup = Callable[[Any, int, bytes, int], int]  # (state, vehicle, grantee, now_s) -> bits


def granted_bits(state: Any, vehicle_id: int, grantee: bytes, now_s: int) -> int:
    """The permission bits ``grantee`` holds on the vehicle now from its current owner
    (0 when none or expired)."""
    bits, expiry = get_permission(state, vehicle_id, grantee)
    return bits if now_s < expiry else 0


def verify_request(request: TelemetryRequest, chain_id: int, node_id: str,
                   now_ms: int) -> bytes:
    """The signer of a well-formed, fresh request for this chain and node; raises
    TelemetryAccessError ``bad_request``, ``wrong_audience``, ``expired`` or
    ``bad_signature``. Checks no permission and spends no nonce."""
    if not 0 <= request.from_ms <= request.to_ms or request.to_ms - request.from_ms > MAX_RANGE_MS:
        raise TelemetryAccessError(
            "bad_request", f"need 0 <= from_ms <= to_ms, range at most {MAX_RANGE_MS} ms")
    if len(request.nonce) != NONCE_BYTES:
        raise TelemetryAccessError("bad_request", f"nonce must be {NONCE_BYTES} bytes")
    if request.chain_id not in (None, chain_id) or request.node_id != node_id:
        raise TelemetryAccessError(
            "wrong_audience", f"request is for chain {request.chain_id} node "
                              f"{request.node_id or '(none)'}; this is chain {chain_id} node {node_id}")
    if abs(now_ms - request.timestamp_ms) > REQUEST_FRESH_MS:
        raise TelemetryAccessError(
            "expired", "request timestamp is more than 60 s from the node's clock")
    text = request_message(chain_id, request.vehicle_id, request.from_ms, request.to_ms,
                           request.timestamp_ms, node_id, request.nonce)
    try:
        recovered = Account.recover_message(encode_defunct(text=text), signature=request.signature)
        requester = bytes.fromhex(recovered[2:])
    except Exception:
        raise TelemetryAccessError("bad_signature",
                                   "signature does not recover an address") from None
    return requester


def authorize_request(state: Any, request: TelemetryRequest, chain_id: int, node_id: str,
                      now_ms: int, nonces: UsedNonces | None = None,
                      grants: GrantLookup = granted_bits) -> TelemetryAccess:
    """Check a signed request against the head state now; raises TelemetryAccessError
    (nothing is recorded then). On success its nonce is recorded in ``nonces``.

    Rule (docs/privacy.md, "Who can read what"): records belong to the ownership period
    in which they were produced. The requester reads every period it owned, with every
    permission; a grantee of the current owner reads the current owner's periods with
    the bits granted (ended by a transfer, which resets grants). Order of checks:
    ``bad_request``, ``wrong_audience``, ``expired``, ``bad_signature``, ``replayed`` /
    ``too_many_requests`` / ``busy``, ``denied`` (no readable period), ``period_mismatch``
    (readable periods, none in the range).
    """
    requester = verify_request(request, chain_id, node_id, now_ms)
    if nonces is not None:
        nonces.check(requester, request.nonce, now_ms)
    periods = ownership_periods(state, request.vehicle_id)
    vehicle = get_vehicle(state, request.vehicle_id)
    current = vehicle.owner if vehicle is not None else None
    granted = 0
    if current is not None and requester != current:
        granted = grants(state, request.vehicle_id, requester, now_ms // 1000) & READ_PERMISSIONS
    readable = []
    for period in periods:
        if period.owner == requester:
            readable.append(ReadablePeriod(period, PERMISSIONS_ALL))
        elif granted and period.owner == current:
            readable.append(ReadablePeriod(period, granted))
    if not readable:
        raise TelemetryAccessError("denied", f"0x{requester.hex()} may read no data of vehicle "
                                             f"{request.vehicle_id}")
    overlapping = tuple(r for r in readable if _window(r.period)[0] <= request.to_ms
                        and (r.period.to_ms is None or request.from_ms < r.period.to_ms))
    if not overlapping:
        raise TelemetryAccessError(
            "period_mismatch", "the range lies outside the ownership periods this signer may "
                               "read: " + ", ".join(_period_text(r.period) for r in readable))
    if nonces is not None:
        nonces.use(requester, request.nonce, request.timestamp_ms, now_ms)
    return TelemetryAccess(requester, overlapping)


def _window(period: OwnershipPeriod) -> tuple[int, int | None]:
    """The device times of the records a period holds, ``[start, end)``: the first
    period also holds readings older than the mint (a device may send them up to
    ``attestation_stale_ms`` late)."""
    return (0 if period.index == 0 else period.from_ms), period.to_ms


def _period_text(period: OwnershipPeriod) -> str:
    start, end = _window(period)
    return f"[{start}, {'now' if end is None else end})"


def filter_record(rec: StoredSignals, bits: int, newest: bool) -> dict[str, Any]:
    """One record as the holder of ``bits`` sees it (docs/privacy.md, the bit table):
    non-location signals with non-location history (bit 0); ``lat``/``lon`` exact with
    location history (bit 3), or current location (bit 2) on the vehicle's newest record,
    else the centre of the record's public H3 cell with approximate location (bit 7),
    else removed; ``cell`` with any of those; ``payload`` (the raw bytes, verifiable
    against the chain's ``commitment``) with raw data (bit 6) when nothing was removed."""
    signals = rec.signals
    has_location = any(k in signals for k in LOCATION_SIGNALS)
    if bits & (1 << BIT_LOCATION_HISTORY) or (newest and bits & (1 << BIT_CURRENT_LOCATION)):
        mode = EXACT
    elif bits & (1 << BIT_APPROXIMATE_LOCATION):
        mode = APPROXIMATE
    else:
        mode = NONE
    out: dict[str, Any] = {}
    if bits & (1 << BIT_NON_LOCATION_HISTORY):
        out = {k: v for k, v in signals.items() if k not in LOCATION_SIGNALS}
    if mode == EXACT:
        out.update((k, signals[k]) for k in LOCATION_SIGNALS if k in signals)
    elif mode == APPROXIMATE and has_location:
        out["lat"], out["lon"] = cell_to_latlng(rec.attestation.cell)
    complete = len(out) == len(signals) and (mode == EXACT or not has_location)
    return {
        "id": "0x" + rec.id.hex(),
        "vehicle_id": rec.vehicle_id,
        "timestamp_ms": rec.timestamp_ms,
        "cell": hex(rec.attestation.cell) if mode != NONE else None,
        "location": mode if has_location else NONE,
        "signals": out,
        "payload": ("0x" + rec.payload.hex()
                    if complete and bits & (1 << BIT_RAW_DATA) else None),
    }


def get_telemetry(store: SignalStore, state: Any, request: TelemetryRequest, now_ms: int,
                  node_id: str = "", nonces: UsedNonces | None = None,
                  grants: GrantLookup = granted_bits,
                  limit: int = MAX_RECORDS) -> dict[str, Any]:
    """What ``motus_getTelemetry`` answers: ``records`` of the vehicle in the range that
    fall in the requester's readable ownership periods (each filtered by
    :func:`filter_record` with that period's bits), the ``periods`` read, and
    ``coverage``: how many records the chain has in those windows whose payload this node
    does not hold (``complete`` is False then; ``missing`` lists up to 100 ids)."""
    access = authorize_request(state, request, store.chain_id, node_id, now_ms, nonces, grants)
    return read_telemetry(store, replace(access, vehicle_id=request.vehicle_id,
                                         from_ms=request.from_ms, to_ms=request.to_ms), limit)


def readable_windows(access: TelemetryAccess) -> list[tuple[ReadablePeriod, int, int]]:
    """Each readable period of ``access`` with the device times of its scope it covers,
    ``(period, lo, hi)`` inclusive, oldest first; empty windows are left out."""
    out = []
    for readable in access.periods:
        start, end = _window(readable.period)
        lo = max(access.from_ms, start)
        hi = access.to_ms if end is None else min(access.to_ms, end - 1)
        if lo <= hi:
            out.append((readable, lo, hi))
    return out


def read_telemetry(store: SignalStore, access: TelemetryAccess,
                   limit: int = MAX_RECORDS) -> dict[str, Any]:
    """The ``motus_getTelemetry`` answer for a checked ``access`` (see get_telemetry)."""
    newest = store.latest(access.vehicle_id)
    records: list[dict[str, Any]] = []
    missing: list[bytes] = []
    for readable, lo, hi in readable_windows(access):
        period = readable.period
        for rec in store.query(access.vehicle_id, lo, hi, limit - len(records)):
            is_newest = newest is not None and rec.id == newest.id
            records.append(filter_record(rec, readable.bits, is_newest) | {"period": period.index})
        missing += store.missing(access.vehicle_id, lo, hi, MAX_MISSING_LISTED - len(missing))
    return {
        "records": records,
        "periods": [{"index": r.period.index, "owner": "0x" + r.period.owner.hex(),
                     "from_ms": r.period.from_ms, "to_ms": r.period.to_ms}
                    for r in access.periods],
        "coverage": {"complete": not missing, "missing": ["0x" + m.hex() for m in missing]},
    }
