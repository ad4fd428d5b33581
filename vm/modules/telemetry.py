"""Telemetry module: proof of coverage over device attestations (docs/telemetry.md).

Block execution step (4) calls :func:`process_attestations`: every attestation
passes the stateless checks (:mod:`vm.attestation`) and then the stateful ones
below, against the state at that point of the block, in order; an accepted one
updates its device's last record and its vehicle's counters for the current
epoch. The node's attestation pool runs the same rules through a
:class:`TelemetryView` on the head state without writing anything.

Challenges: the seed of an epoch is the hash of the block before the epoch's
first block (``begin_block``). A device is challenged in that epoch when
``int(keccak(seed ++ device)) < challenge_fraction_bps * 2**256 // 10000``; its
nonce is ``keccak(seed ++ device ++ b"nonce")[:8]``. It passes when an accepted
attestation carrying that nonce is included within the first
``challenge_window_bps`` of the epoch's blocks.

Storage layout of the telemetry account (Solidity mapping slots, see
:func:`vm.modules.base.mapping_slot`; 64-bit fields packed high to low):

- ``mapping_slot(1, device)``: last accepted ``seq | timestamp_ms | cell | odometer_m``
  (the attestation's coarse values: whole seconds as ms, whole hectometres as metres)
- ``mapping_slot(2, device)``: not used (it held the whole last commitment)
- ``mapping_slot(3, device)``: ``vehicle_id | epoch | commitment_digest |
  accepted_in_epoch (32 bits) | flags (32 bits)`` where ``vehicle_id`` is the vehicle of
  the last accepted attestation, ``commitment_digest`` the first 8 bytes of its
  commitment (only compared, to tell "moving"), ``accepted_in_epoch`` counts for
  ``epoch`` only (at most ``max_attestations_per_epoch`` <= 10**6), flags bit 0 = denied
  (governance deny list)
- ``mapping_slot(4, epoch, vehicle_id)``: ``accepted | distance_m | moving | flags``,
  flags bit 0 = challenged, bit 1 = challenge passed
- ``mapping_slot(5, epoch)``: number of vehicles with data in the epoch; element ``i``
  (in order of first acceptance) at ``int(keccak(pad32(that slot))) + i``
- ``mapping_slot(6, epoch)``: the epoch's challenge seed (zero: no seed, nobody challenged)
- slot 7: number of deny-list changes so far
- ``mapping_slot(8, epoch, vehicle_id, period_index)``: accepted attestations of the
  vehicle in the epoch produced (device time) in that ownership period
  (:func:`vm.modules.identity.period_at`), counted only while the vehicle has more than
  one recorded period; those accepted while it had exactly one (period 0) are not
  written: period 0's count is its stored count plus the epoch's accepted count minus
  the sum of the stored counts (:func:`get_period_counts`; rewards split by these)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import h3.api.basic_int as h3
import msgpack
from eth.abc import StateAPI
from eth_typing import Address

from vm.attestation import (
    MAX_ATTESTATION_BYTES,
    NONCE_BYTES,
    ODOMETER_UNIT_M,
    OK,
    TIME_UNIT_MS,
    Attestation,
    AttestationError,
    RejectCode,
    check_stateless,
    compute_attestation_id,
    decode_attestation,
    keccak256,
)
from vm.attestation_ahead import SignaturesAhead
from vm.errors import InvalidBlock
from vm.geo import cell_distance_lower_bound_m, is_valid_cell
from vm.modules import addresses
from vm.modules.base import Call, Store, SystemModule, mapping_slot, pad32
from vm.modules.params import get_param

SLOT_DEVICE_LAST = 1
# slot 2 held a device's last whole commitment: now its 64-bit digest is in the meta slot
SLOT_DEVICE_META = 3
SLOT_VEHICLE_EPOCH = 4
SLOT_EPOCH_VEHICLES = 5
SLOT_EPOCH_SEED = 6
SLOT_DENY_VERSION = 7  # plain slot: counts deny-list changes (lets caches notice them)
SLOT_PERIOD_EPOCH = 8  # mapping(epoch => vehicle => ownership period index => accepted)

FLAG_DENIED = 1
FLAG_CHALLENGED = 1
FLAG_PASSED = 2
MASK64 = 2**64 - 1
BPS = 10_000
ZERO_HASH = b"\x00" * 32
DEFERRED = "deferred"  # result of an attestation left for a later block (block full); not a reject

# identity.get_device, or anything returning None (no device NFT) or a record with
# ``vehicle_id`` (the paired vehicle, 0 for none): all the checks read of it
DeviceLookup = Callable[[StateAPI, bytes], Any]


class _Pairing(NamedTuple):
    vehicle_id: int
    # the vehicle has had exactly one ownership period (identity's hint in the device's
    # pairing): nothing to read to count the attestation (TelemetryView._count_period)
    single_period: bool = False


def _device_pairing(state: StateAPI, device: bytes) -> _Pairing | None:
    """The default DeviceLookup: two reads where ``get_device`` makes six."""
    from vm.modules import identity  # imported late: identity is a sibling module

    vehicle_id = identity.device_pairing(state, device)
    return None if vehicle_id is None else _Pairing(vehicle_id)


_DEFAULT_DEVICE_PAIRING = _device_pairing


def _pairings_of(state: StateAPI) -> DeviceLookup:
    """The default DeviceLookup for one view's state: the same answers, read through one
    identity ledger and without the per-call import."""
    from vm.modules import identity  # sibling module: imported at use

    pairing = identity.hinted_pairing_reader(state)

    def lookup(_state: StateAPI, device: bytes) -> _Pairing | None:
        value = pairing(device)
        return None if value is None else _pairing_of(value)

    return lookup


# Challenge answers by (epoch seed, threshold): a pure function of the seed, the device
# and the threshold, shared by every view of an epoch (a device attests many times an
# epoch); the last two keys kept, each at most _CHALLENGE_MEMO_MAX devices.
_CHALLENGE_MEMO: dict[tuple[bytes, int], dict[bytes, bytes | None]] = {}
_CHALLENGE_MEMO_MAX = 100_000


def _challenge_memo(seed: bytes, threshold: int) -> dict[bytes, bytes | None]:
    memo = _CHALLENGE_MEMO.get((seed, threshold))
    if memo is None or len(memo) >= _CHALLENGE_MEMO_MAX:
        memo = _CHALLENGE_MEMO[(seed, threshold)] = {}
        while len(_CHALLENGE_MEMO) > 2:  # (views of two threads may race here: harmless)
            try:
                _CHALLENGE_MEMO.pop(next(iter(_CHALLENGE_MEMO)), None)
            except (StopIteration, RuntimeError):
                break
    return memo


_SINGLE_PERIOD_HINT = 1 << 255  # identity.SINGLE_PERIOD_HINT (a test holds them equal)


def _pairing_of(value: int) -> _Pairing:
    """The pairing a device's hinted pairing field (identity.hinted_pairing_reader) gives."""
    if value & _SINGLE_PERIOD_HINT:
        return _Pairing(value ^ _SINGLE_PERIOD_HINT, True)
    return _Pairing(value)


def _pack(a: int, b: int, c: int, d: int) -> int:
    return (a << 192) | (b << 128) | (c << 64) | d


def _unpack(value: int) -> tuple[int, int, int, int]:
    return value >> 192, (value >> 128) & MASK64, (value >> 64) & MASK64, value & MASK64


MASK32 = 2**32 - 1


def _pack_meta(vehicle_id: int, epoch: int, digest: int, count: int, flags: int) -> int:
    """A device's meta slot: ``vehicle_id | epoch | commitment digest`` (64 bits each),
    then ``accepted_in_epoch`` and ``flags`` (32 bits each)."""
    return (vehicle_id << 192) | (epoch << 128) | (digest << 64) | (count << 32) | flags


def _unpack_meta(value: int) -> tuple[int, int, int, int, int]:
    """(vehicle_id, epoch, commitment digest, accepted_in_epoch, flags) of a meta slot."""
    return (value >> 192, (value >> 128) & MASK64, (value >> 64) & MASK64,
            (value >> 32) & MASK32, value & MASK32)


def commitment_digest(commitment: bytes) -> int:
    """What the chain keeps of a device's last commitment: its first 8 bytes, compared
    with the next attestation's to tell whether the car's signals changed ("moving").
    The commitment is a salted keccak (uniform), so any 8 of its bytes are a digest; two
    different commitments agreeing on them (2**-64 for honest ones) only make the
    submitter's own car look not moving, never anyone else's (docs/telemetry.md)."""
    return int.from_bytes(commitment[:8], "big")


# --- read API ----------------------------------------------------------------


@dataclass(frozen=True)
class VehicleEpochStats:
    """A vehicle's proof-of-coverage counters for one epoch (what rewards score)."""

    accepted: int  # accepted attestations
    distance_m: int  # odometer progress credited (capped by max_speed_cmps over elapsed time)
    moving: int  # accepted attestations whose cell, odometer or commitment changed vs the previous
    challenged: bool  # the vehicle's device was challenged this epoch
    challenge_passed: bool  # ... and answered in time


@dataclass(frozen=True)
class DeviceState:
    """What the chain remembers of a device (its last accepted attestation)."""

    seq: int  # 0: nothing accepted yet
    timestamp_ms: int
    cell: int
    odometer_m: int
    commitment_digest: bytes  # the first 8 bytes of the last commitment
    vehicle_id: int
    epoch: int  # epoch of ``accepted_in_epoch``
    accepted_in_epoch: int
    denied: bool


def _store(state: StateAPI) -> Store:
    return Store(state, addresses.TELEMETRY)


def get_device_state(state: StateAPI, device: bytes) -> DeviceState:
    """The device's last accepted attestation, epoch counter and deny flag."""
    st = _store(state)
    seq, ts, cell, odo = _unpack(st.load(mapping_slot(SLOT_DEVICE_LAST, device)))
    vehicle, epoch, digest, count, flags = _unpack_meta(
        st.load(mapping_slot(SLOT_DEVICE_META, device)))
    return DeviceState(seq, ts, cell, odo, digest.to_bytes(8, "big"), vehicle, epoch, count,
                       bool(flags & FLAG_DENIED))


def get_vehicle_epoch(state: StateAPI, epoch: int, vehicle_id: int) -> VehicleEpochStats:
    """Counters of ``vehicle_id`` in ``epoch`` (all zero when it sent nothing)."""
    accepted, distance, moving, flags = _unpack(
        _store(state).load(mapping_slot(SLOT_VEHICLE_EPOCH, epoch, vehicle_id)))
    return VehicleEpochStats(accepted, distance, moving, bool(flags & FLAG_CHALLENGED),
                             bool(flags & FLAG_PASSED))


def get_period_counts(state: StateAPI, epoch: int, vehicle_id: int) -> dict[int, int]:
    """Accepted attestations of ``vehicle_id`` in ``epoch`` per ownership period index
    (periods with none left out): who produced the epoch's data. The attestations
    accepted while the vehicle had one recorded period are not stored per period (one
    write less per attestation): they are the epoch's accepted count minus the stored
    counts, and all in period 0, the only period there was then."""
    from vm.modules import identity  # sibling module: imported at use

    st = _store(state)
    out = {}
    stored = 0
    periods = identity.ownership_periods(state, vehicle_id)
    for period in periods:
        n = st.load(mapping_slot(SLOT_PERIOD_EPOCH, epoch, vehicle_id, period.index))
        if n:
            out[period.index] = n
            stored += n
    implicit = get_vehicle_epoch(state, epoch, vehicle_id).accepted - stored
    if implicit > 0 and periods:
        out[0] = out.get(0, 0) + implicit
    return out


def _clock(state: StateAPI) -> tuple[int, int]:
    """(current epoch, its first height)."""
    from vm.epoch import get_epoch, get_epoch_start  # vm.epoch imports vm.modules: import at use

    return get_epoch(state), get_epoch_start(state)


def _list_base(epoch: int) -> tuple[int, int]:
    length_slot = mapping_slot(SLOT_EPOCH_VEHICLES, epoch)
    return length_slot, int.from_bytes(keccak256(pad32(length_slot)), "big")


def epoch_vehicles(state: StateAPI, epoch: int) -> list[int]:
    """Vehicles with at least one accepted attestation in ``epoch``, ascending."""
    st = _store(state)
    length_slot, base = _list_base(epoch)
    return sorted(st.load(base + i) for i in range(st.load(length_slot)))


def epoch_vehicle_count(state: StateAPI, epoch: int) -> int:
    """Length of ``epoch``'s vehicle list (vehicles with an accepted attestation in it)."""
    return _store(state).load(_list_base(epoch)[0])


def epoch_vehicle_at(state: StateAPI, epoch: int, index: int) -> int:
    """The ``index``-th vehicle of ``epoch``'s list: the order in which vehicles had their
    first accepted attestation of the epoch (what rewards settle in)."""
    return _store(state).load(_list_base(epoch)[1] + index)


def clear_epoch_vehicle(state: StateAPI, epoch: int, index: int) -> None:
    """Zero the ``index``-th entry of ``epoch``'s vehicle list and that vehicle's counters
    and per-period counts of ``epoch``: rewards clears an epoch once it has left the
    history window (docs/rewards.md "History window"); nothing reads them after that."""
    from vm.modules import identity  # sibling module: imported at use

    st = _store(state)
    slot = _list_base(epoch)[1] + index
    vehicle_id = st.load(slot)
    st.store(slot, 0)
    st.store(mapping_slot(SLOT_VEHICLE_EPOCH, epoch, vehicle_id), 0)
    for period in identity.ownership_periods(state, vehicle_id):
        st.store(mapping_slot(SLOT_PERIOD_EPOCH, epoch, vehicle_id, period.index), 0)


def clear_epoch_list(state: StateAPI, epoch: int) -> None:
    """Zero the length of ``epoch``'s vehicle list (its entries were cleared one by one)."""
    _store(state).store(_list_base(epoch)[0], 0)


def get_epoch_seed(state: StateAPI, epoch: int) -> bytes:
    """The challenge seed of ``epoch`` (32 zero bytes if the epoch has not started)."""
    return _store(state).load(mapping_slot(SLOT_EPOCH_SEED, epoch)).to_bytes(32, "big")


def is_challenged(seed: bytes, device: bytes, fraction_bps: int) -> bool:
    """Pure: whether ``device`` is challenged in the epoch with ``seed``."""
    if seed == ZERO_HASH:
        return False
    return int.from_bytes(keccak256(seed + device), "big") < fraction_bps * 2**256 // BPS


def compute_challenge_nonce(seed: bytes, device: bytes) -> bytes:
    """Pure: the 8-byte nonce a challenged device must include."""
    return keccak256(seed + device + b"nonce")[:NONCE_BYTES]


def get_challenge(state: StateAPI, device: bytes, epoch: int) -> tuple[bool, bytes]:
    """(challenged, nonce) of ``device`` in ``epoch``; the nonce is empty when not challenged."""
    seed = get_epoch_seed(state, epoch)
    if not is_challenged(seed, device, get_param(state, "challenge_fraction_bps")):
        return False, b""
    return True, compute_challenge_nonce(seed, device)


def is_denied(state: StateAPI, device: bytes) -> bool:
    return bool(_store(state).load(mapping_slot(SLOT_DEVICE_META, device)) & FLAG_DENIED)


def set_denied(state: StateAPI, device: bytes, denied: bool) -> None:
    """Put ``device`` on the governance deny list or take it off (no gas, no event)."""
    st = _store(state)
    slot = mapping_slot(SLOT_DEVICE_META, device)
    value = st.load(slot)
    new = value | FLAG_DENIED if denied else value & ~FLAG_DENIED
    if new != value:
        st.store(slot, new)
        st.store(SLOT_DENY_VERSION, st.load(SLOT_DENY_VERSION) + 1)


def get_deny_version(state: StateAPI) -> int:
    """Number of deny-list changes so far (caches of device tracks compare it)."""
    return _store(state).load(SLOT_DENY_VERSION)


def set_epoch_seed(state: StateAPI, epoch: int, seed: bytes) -> None:
    _store(state).store(mapping_slot(SLOT_EPOCH_SEED, epoch), int.from_bytes(seed, "big"))


# --- the rules ---------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The chain parameters the rules use, read once per view."""

    resolution: int
    stale_ms: int
    future_ms: int
    min_interval_ms: int
    max_speed_cmps: int
    odometer_tolerance_bps: int
    odometer_tolerance_m: int
    max_per_epoch: int
    challenge_fraction_bps: int
    challenge_window_bps: int
    epoch_length_blocks: int

    @classmethod
    def from_state(cls, state: StateAPI) -> Limits:
        p = lambda name: get_param(state, name)  # noqa: E731
        return cls(p("h3_resolution"), p("attestation_stale_ms"), p("attestation_future_ms"),
                   p("min_interval_ms"), p("max_speed_cmps"), p("odometer_tolerance_bps"),
                   p("odometer_tolerance_m"), p("max_attestations_per_epoch"),
                   p("challenge_fraction_bps"), p("challenge_window_bps"),
                   p("epoch_length_blocks"))


@lru_cache(maxsize=1 << 17)
def device_slots(device: bytes) -> tuple[int, int]:
    """Storage slots (last, meta) of a device; memoised because the checks need them for
    every attestation and each costs a keccak."""
    key = device.rjust(32, b"\x00")
    last, meta = (int.from_bytes(keccak256(key + base.to_bytes(32, "big")), "big")
                  for base in (SLOT_DEVICE_LAST, SLOT_DEVICE_META))
    return last, meta


class DeviceTrack:
    """A device's last accepted attestation as the checks see it (mutable, in memory):
    time in ms and odometer in metres, as the attestation's coarse values scale them;
    ``digest`` is :func:`commitment_digest` of the last commitment."""

    __slots__ = ("seq", "timestamp_ms", "cell", "odometer_m", "digest", "vehicle_id",
                 "epoch", "count", "flags")

    def __init__(self, last: int, meta: int) -> None:
        self.seq, self.timestamp_ms, self.cell, self.odometer_m = _unpack(last)
        self.vehicle_id, self.epoch, self.digest, self.count, self.flags = _unpack_meta(meta)

    def packed(self) -> tuple[int, int]:
        """The (last, meta) slot values of this track."""
        return (_pack(self.seq, self.timestamp_ms, self.cell, self.odometer_m),
                _pack_meta(self.vehicle_id, self.epoch, self.digest, self.count, self.flags))

    @classmethod
    def load(cls, state: StateAPI, device: bytes) -> DeviceTrack:
        last, meta = device_slots(device)
        address = Address(addresses.TELEMETRY)
        return cls(state.get_storage(address, last), state.get_storage(address, meta))

    def copy(self) -> DeviceTrack:
        other = DeviceTrack.__new__(DeviceTrack)
        other.seq, other.timestamp_ms, other.cell = self.seq, self.timestamp_ms, self.cell
        other.odometer_m, other.digest = self.odometer_m, self.digest
        other.vehicle_id, other.epoch, other.count = self.vehicle_id, self.epoch, self.count
        other.flags = self.flags
        return other

    def advance(self, att: Sequence[Any], epoch: int) -> None:
        """Record ``att`` (an Attestation, or its decoded wire fields in the same order)
        as the device's newest accepted attestation in ``epoch``."""
        self.count = (self.count if self.epoch == epoch else 0) + 1
        self.epoch = epoch
        self.vehicle_id, self.seq = att[2], att[3]
        self.timestamp_ms, self.cell = att[4] * TIME_UNIT_MS, att[5]
        self.odometer_m = att[6] * ODOMETER_UNIT_M
        self.digest = int.from_bytes(att[7][:8], "big")  # commitment_digest, inline


class _Tally:
    __slots__ = ("accepted", "distance_m", "moving", "flags", "slot", "loaded")

    def __init__(self, value: int, slot: int = 0) -> None:
        self.accepted, self.distance_m, self.moving, self.flags = _unpack(value)
        self.slot, self.loaded = slot, value


class TelemetryView:
    """The telemetry rules over one state, at a given time and height.

    ``check`` answers whether an attestation (already through the stateless
    checks) would be accepted next; ``apply`` records an accepted one in memory
    so that following checks see it; ``commit`` writes what was applied into
    the state. Block execution uses all three; the node's pool uses ``check`` and
    ``apply`` on a read-only view of the head state (pending attestations of one
    device then chain correctly) and never commits.

    ``now_ms`` is the block time (or the node's clock for pool admission) and
    ``height`` the height of the block the attestations go into. For admission the
    node may pass a memoised ``get_device``, a ``track_cache`` of device tracks that
    are current for ``state`` (the view works on copies) and ``tallies=False`` (no
    epoch counters: nothing is committed).
    """

    def __init__(self, state: StateAPI, now_ms: int, height: int,
                 get_device: DeviceLookup | None = None, *,
                 track_cache: dict[bytes, DeviceTrack] | None = None,
                 tallies: bool = True) -> None:
        self.state = state
        self.now_ms = now_ms
        self.height = height
        self.limits = Limits.from_state(state)
        self.epoch, epoch_start = _clock(state)
        self.seed = get_epoch_seed(state, self.epoch)
        # is_challenged's bound: nothing is below 0, so no seed challenges nobody
        self._threshold = (0 if self.seed == ZERO_HASH
                           else self.limits.challenge_fraction_bps * 2**256 // BPS)
        window = self.limits.epoch_length_blocks * self.limits.challenge_window_bps // BPS
        self.in_challenge_window = height < epoch_start + window
        # whether device records are identity's hinted pairing field (what read_ahead reads)
        self._pairing_field = False
        if get_device is None:
            get_device = _device_pairing
            if get_device is _DEFAULT_DEVICE_PAIRING:  # (a test may put a reference in)
                get_device = _pairings_of(state)
                self._pairing_field = True
        self._get_device = get_device
        self._track_cache = track_cache
        self.tallies = tallies
        self._store = _store(state)
        self._load = self._store.reader()  # (the state's fast slot reads: ~10,000 a block)
        self._identity_load: Callable[[int], int] | None = None  # (made at first use)
        self._devices: dict[bytes, Any] = {}
        self._tracks: dict[bytes, DeviceTrack] = {}
        self._tallies: dict[int, _Tally] = {}
        self._dirty_tracks: set[bytes] = set()
        self._new_vehicles: list[int] = []
        self._challenges = _challenge_memo(self.seed, self._threshold)
        self._periods: dict[int, list[Any]] = {}  # vehicle -> ownership periods (this block)
        self._period_counts: dict[tuple[int, int], int] = {}  # (vehicle, period) -> accepted
        # what was read, to write only what changed: device -> (last, meta) as loaded,
        # (vehicle, period) -> count as loaded
        self._loaded: dict[bytes, tuple[int, int]] = {}
        self._loaded_periods: dict[tuple[int, int], int] = {}
        # slots read ahead (read_ahead), each taken by the first check that needs it:
        # device -> pairing field, device -> (last, meta), vehicle -> epoch tally
        self._ahead_pairings: dict[bytes, int] = {}
        self._ahead_tracks: dict[bytes, tuple[int, int]] = {}
        self._ahead_tallies: dict[int, int] = {}

    def read_ahead(self, raws: Sequence[bytes]) -> None:
        """Read the slots the checks of ``raws`` (a block's attestations, or the next
        of them, in order) will read, all at once before their checks
        (``MotusState.slots_reader``: one call for each module's slots instead of one a
        slot, ~8,000 a block): each device's pairing field and (last, meta) slots and
        each claimed vehicle's epoch tally, unless an earlier call or check read them.
        Every value is the state's at this point, which is what the checks would read,
        since a view writes nothing before :meth:`commit`; a check takes a value only
        for a device or vehicle it has not met yet, and a value nobody takes is dropped
        with the view. The device and vehicle are read from the bytes without any check (a
        hint only: the checks decode and verify them); bytes that do not look like an
        attestation are skipped. Nothing is read ahead for an admission view (tracks
        shared across views, no tallies) or a state without the batch read."""
        if self._track_cache is not None or not self.tallies:
            return
        telemetry = getattr(self.state, "slots_reader", None)
        if telemetry is None:
            return
        devices: dict[bytes, None] = {}
        vehicles: dict[int, None] = {}
        known, known_vehicles = self._ahead_tracks.keys() | self._tracks.keys(), (
            self._ahead_tallies.keys() | self._tallies.keys())
        for raw in raws:
            if len(raw) > MAX_ATTESTATION_BYTES:
                continue
            try:
                obj = msgpack.unpackb(raw)
                device, vehicle_id = obj[1], obj[2]
            except Exception:  # noqa: BLE001 - a hint only: the checks say what is wrong
                continue
            if (type(device) is bytes and len(device) == 20 and type(vehicle_id) is int
                    and 0 < vehicle_id <= MASK64):
                if device not in known:
                    devices[device] = None
                if vehicle_id not in known_vehicles:
                    vehicles[vehicle_id] = None
        if not devices and not vehicles:
            return
        epoch = self.epoch
        slots: list[int] = []
        for device in devices:
            slots.extend(device_slots(device))
        tally_slots = [mapping_slot(SLOT_VEHICLE_EPOCH, epoch, v) for v in vehicles]
        values = telemetry(Address(addresses.TELEMETRY))(slots + tally_slots)
        it = iter(values)
        self._ahead_tracks.update(
            {device: (last, meta) for device, last, meta in zip(devices, it, it, strict=False)})
        self._ahead_tallies.update(zip(vehicles, it, strict=True))
        if self._pairing_field and devices:
            from vm.modules import identity  # sibling module: imported at use
            pairing_slots = [identity.device_pairing_slot(device) for device in devices]
            self._ahead_pairings.update(zip(
                devices, telemetry(Address(addresses.IDENTITY))(pairing_slots), strict=True))

    # -- cached reads --

    def device_record(self, device: bytes) -> Any:
        try:
            return self._devices[device]
        except KeyError:
            value = self._ahead_pairings.pop(device, 0)
            # (a field of 0, unpaired or unknown, takes the lookup's second read)
            record = self._devices[device] = (
                _pairing_of(value) if value else self._get_device(self.state, device))
            return record

    def _track(self, device: bytes) -> DeviceTrack:
        track = self._tracks.get(device)
        if track is None:
            shared = self._track_cache
            if shared is None:
                loaded = self._ahead_tracks.pop(device, None)
                if loaded is None:
                    last_slot, meta_slot = device_slots(device)
                    load = self._load
                    loaded = (load(last_slot), load(meta_slot))
                self._loaded[device] = loaded
                # (the slots as read: what packed() would give back, every bit being a field)
                track = DeviceTrack(*loaded)
            else:
                base = shared.get(device)
                if base is None:
                    base = shared[device] = DeviceTrack.load(self.state, device)
                track = base.copy()
            self._tracks[device] = track
        return track

    def _tally(self, vehicle_id: int) -> _Tally:
        tally = self._tallies.get(vehicle_id)
        if tally is None:
            slot = mapping_slot(SLOT_VEHICLE_EPOCH, self.epoch, vehicle_id)
            value = self._ahead_tallies.pop(vehicle_id, None)
            tally = self._tallies[vehicle_id] = _Tally(
                self._load(slot) if value is None else value, slot)
        return tally

    def challenge_nonce(self, device: bytes) -> bytes | None:
        """The device's nonce this epoch, or None when it is not challenged."""
        try:
            return self._challenges[device]
        except KeyError:
            pass
        # (is_challenged, with the threshold computed once per view)
        challenged = int.from_bytes(keccak256(self.seed + device), "big") < self._threshold
        nonce = self._challenges[device] = (compute_challenge_nonce(self.seed, device)
                                            if challenged else None)
        return nonce

    # -- the checks --

    def check(self, att: Attestation) -> RejectCode | None:
        """The first stateful rule ``att`` breaks, or None if it would be accepted.

        Order (and so the reported code) is fixed: unknown_device, not_paired,
        denied, stale, future, replay, too_frequent, bad_cell, implausible_speed,
        odometer_rollback, odometer_mismatch, rate_cap.
        """
        lim = self.limits
        record = self.device_record(att.device)
        if record is None:
            return RejectCode.UNKNOWN_DEVICE
        if record.vehicle_id == 0 or record.vehicle_id != att.vehicle_id:
            return RejectCode.NOT_PAIRED
        track = self._track(att.device)
        if track.flags & FLAG_DENIED:
            return RejectCode.DENIED
        timestamp_ms = att.timestamp_s * TIME_UNIT_MS
        if timestamp_ms + lim.stale_ms < self.now_ms:
            return RejectCode.STALE
        if timestamp_ms > self.now_ms + lim.future_ms:
            return RejectCode.FUTURE
        if att.seq <= track.seq:
            return RejectCode.REPLAY
        has_previous = track.seq > 0
        # a timestamp before the previous one is "too frequent" too (negative interval)
        if has_previous and timestamp_ms < track.timestamp_ms + lim.min_interval_ms:
            return RejectCode.TOO_FREQUENT
        if not is_valid_cell(att.cell, lim.resolution):
            return RejectCode.BAD_CELL
        if has_previous:
            elapsed_ms = timestamp_ms - track.timestamp_ms
            moved_m = _moved_at_least_m(track.cell, att.cell, lim.resolution)
            # speed = moved_m * 100 cm / (elapsed_ms / 1000 s) > max_speed_cmps, without division
            if moved_m * 100_000 > lim.max_speed_cmps * elapsed_ms:
                return RejectCode.IMPLAUSIBLE_SPEED
            if track.vehicle_id == att.vehicle_id:  # odometers of one car only
                odometer_m = att.odometer_hm * ODOMETER_UNIT_M
                if odometer_m < track.odometer_m:
                    return RejectCode.ODOMETER_ROLLBACK
                delta = odometer_m - track.odometer_m
                # + one unit: both readings are floored to whole hectometres, so the
                # published delta may be up to one unit short of the true one
                allowed = (delta + delta * lim.odometer_tolerance_bps // BPS
                           + lim.odometer_tolerance_m + ODOMETER_UNIT_M)
                # A previous record older than the staleness window no longer anchors
                # the odometer: a car carried on a ferry or truck would otherwise be
                # refused forever (refusals never update the record).
                if elapsed_ms <= lim.stale_ms and moved_m > allowed:
                    return RejectCode.ODOMETER_MISMATCH
        count = track.count if track.epoch == self.epoch else 0
        if count >= lim.max_per_epoch:
            return RejectCode.RATE_CAP
        return None

    def apply(self, att: Attestation) -> None:
        """Record ``att`` (which passed :meth:`check`) as accepted."""
        track = self._track(att.device)
        if self.tallies:
            self._count(att, track)
        track.advance(att, self.epoch)
        self._dirty_tracks.add(att.device)

    def _count(self, att: Attestation, track: DeviceTrack) -> None:
        """The vehicle's epoch counters for an accepted ``att``, before ``track`` advances."""
        lim = self.limits
        tally = self._tally(att.vehicle_id)
        distance = moving = 0
        if track.seq > 0:
            odometer_m = att.odometer_hm * ODOMETER_UNIT_M
            moving = int(att.cell != track.cell or odometer_m != track.odometer_m
                         or commitment_digest(att.commitment) != track.digest)
            if track.vehicle_id == att.vehicle_id:
                elapsed_ms = att.timestamp_s * TIME_UNIT_MS - track.timestamp_ms
                # credit no more than the car could plausibly have driven, plus one
                # odometer unit: whole hectometres make an honest delta up to one unit
                # larger than the distance driven since the previous reading
                distance = min(odometer_m - track.odometer_m,
                               lim.max_speed_cmps * elapsed_ms // 100_000 + ODOMETER_UNIT_M)
        if tally.accepted == 0:
            self._new_vehicles.append(att.vehicle_id)
        self._count_period(att)
        tally.accepted += 1
        tally.distance_m = min(tally.distance_m + distance, MASK64)
        tally.moving += moving
        nonce = self.challenge_nonce(att.device)
        if nonce is not None:
            tally.flags |= FLAG_CHALLENGED
            if self.in_challenge_window and att.challenge == nonce:
                tally.flags |= FLAG_PASSED

    def _count_period(self, att: Attestation) -> None:
        """One more accepted attestation in the ownership period its device time falls in
        (transactions run before attestations, so a transfer in this block counts)."""
        periods = self._periods.get(att.vehicle_id)
        if periods is None and getattr(self._devices.get(att.device), "single_period", False):
            # identity's hint: the vehicle (the device's, checked) has one period
            periods = self._periods[att.vehicle_id] = _ONLY_PERIOD
        if periods is None:
            # (imported here, once per vehicle and block: a sibling module)
            from vm.modules import identity
            # one recorded period (the usual case) holds every record: no need to read it
            if self._identity_load is None:
                self._identity_load = Store(self.state, addresses.IDENTITY).reader()
            opened = self._identity_load(mapping_slot(identity.SLOT_PERIOD_COUNT, att.vehicle_id))
            periods = self._periods[att.vehicle_id] = (
                _ONLY_PERIOD if opened == 1  # (identity.period_count, through the fast reads)
                else identity.ownership_periods(self.state, att.vehicle_id))
        if periods is _ONLY_PERIOD:
            return  # period 0's share of the epoch's accepted count: not stored (get_period_counts)
        index = _period_index(periods, att.timestamp_ms)
        if index is None:  # pragma: no cover - a paired device implies a minted vehicle
            return
        key = (att.vehicle_id, index)
        count = self._period_counts.get(key)
        if count is None:
            count = self._load(mapping_slot(SLOT_PERIOD_EPOCH, self.epoch, *key))
            self._loaded_periods[key] = count
        self._period_counts[key] = count + 1

    def commit(self) -> None:
        """Write every applied change into the state (block execution only): each slot
        once, and only when its value changed (the values read are known, so nothing is
        read again; no gas is metered here)."""
        state, address = self.state, Address(addresses.TELEMETRY)
        writes: list[tuple[int, int]] = []  # (slot, value), in the order they are written
        write = writes.append
        for key, count in self._period_counts.items():
            if count != self._loaded_periods.get(key):
                write((mapping_slot(SLOT_PERIOD_EPOCH, self.epoch, *key), count))
        for device in self._dirty_tracks:
            t = self._tracks[device]
            last_slot, meta_slot = device_slots(device)
            last, meta = t.packed()
            loaded = self._loaded.get(device)
            if loaded is None or last != loaded[0]:
                write((last_slot, last))
            if loaded is None or meta != loaded[1]:
                write((meta_slot, meta))
        for vehicle_id, tally in self._tallies.items():
            if tally.accepted:
                value = _pack(tally.accepted, tally.distance_m, tally.moving, tally.flags)
                if value != tally.loaded:
                    write((tally.slot or mapping_slot(SLOT_VEHICLE_EPOCH, self.epoch, vehicle_id),
                           value))
        if self._new_vehicles:
            st = self._store
            length_slot, base = _list_base(self.epoch)
            n = st.load(length_slot)
            for i, vehicle_id in enumerate(self._new_vehicles):
                write((base + n + i, vehicle_id))
            write((length_slot, n + len(self._new_vehicles)))
        set_many = getattr(state, "set_storage_many", None)  # (MotusState: one call for all)
        if set_many is not None:
            set_many(address, writes)
        else:
            for slot, value in writes:
                state.set_storage(address, slot, value)
        self._dirty_tracks.clear()
        self._new_vehicles.clear()


READ_AHEAD_STEP = 256  # attestations read ahead at a time beside a signature worker

_ONLY_PERIOD: list[Any] = []  # marker: the vehicle has exactly one ownership period


def _period_index(periods: list[Any], timestamp_ms: int) -> int | None:
    from vm.modules import identity  # sibling module: imported at use

    period = identity.period_at(periods, timestamp_ms)
    return None if period is None else period.index


def _moved_at_least_m(previous_cell: int, cell: int, resolution: int) -> int:
    """Lower bound of the distance between two cells; compares at the coarser
    resolution when governance changed the resolution in between."""
    if previous_cell == cell:  # (one cell: one resolution, no distance)
        return 0
    try:
        prev_res = h3.get_resolution(previous_cell)
    except Exception:  # pragma: no cover - stored cells were valid when accepted
        return 0
    if prev_res != resolution:
        common = min(prev_res, resolution)
        if prev_res > common:
            previous_cell = h3.cell_to_parent(previous_cell, common)
        if resolution > common:
            cell = h3.cell_to_parent(cell, common)
        resolution = common
    return cell_distance_lower_bound_m(previous_cell, cell, resolution)


# --- block execution ---------------------------------------------------------


def process_attestations(state: StateAPI, env: Any, attestations: Sequence[bytes],
                         ahead: SignaturesAhead | None = None, finish: bool = True,
                         ) -> tuple[list[bytes], list[tuple[bytes, str]]]:
    """Block execution step (4) of a block being checked: check and apply
    ``attestations`` in order; any invalid one raises InvalidBlock (the first by index,
    its code in the message). Returns (included attestation bytes: all of them, one
    ``(id, "ok")`` per input). Building leaves the invalid ones out instead:
    :func:`build_attestations`, through the same view and checks.

    ``ahead`` (made over the same ``attestations``) has their signatures checked on
    another core meanwhile, settled after the loop (or, with ``finish`` False, by the
    caller's :func:`finish_signatures` once it has done the rest of the block); it
    changes no result and no error.
    """
    cap = get_param(state, "max_block_attestations")
    if len(attestations) > cap:  # (execution refuses such a block before calling this)
        raise InvalidBlock(f"more than {cap} attestations in the block")
    view = TelemetryView(state, env.timestamp_ms, env.height)
    included: list[bytes] = []
    results: list[tuple[bytes, str]] = []
    ids = ahead.ids if ahead is not None else None
    unchecked = ahead.unchecked() if ahead is not None else None
    # The slots are read ahead all at once, or, while a worker checks signatures beside,
    # READ_AHEAD_STEP attestations at a time, the worker handed more tasks in between
    # (a whole block's reads, ~25 ms at 100,000 vehicles, would leave it idle that long).
    last = len(attestations)
    step = last if unchecked is None else READ_AHEAD_STEP
    read_to = pump_at = 0
    chain_id = env.chain_id
    for index, raw in enumerate(attestations):
        if index == read_to:
            read_to = min(index + step, last)
            view.read_ahead(attestations[index:read_to])
        raw = bytes(raw)
        att_id = compute_attestation_id(raw) if ids is None else ids[index]
        decoded = False
        try:
            if unchecked is not None and unchecked[index]:
                assert ahead is not None
                if index >= pump_at:
                    ahead.pump()
                    pump_at = index + PUMP_EVERY
                    if ahead.refused_at < index:  # a forged block fails here, not at its end
                        bad = ahead.first_bad(index)
                        if bad is not None:
                            _raise_bad(ahead, *bad)
                att = decode_attestation(raw)  # its signature: settled after the loop
            else:
                att = check_stateless(raw, chain_id, att_id)
            decoded = True
            code = view.check(att)
            if code is not None:
                raise AttestationError(code, _REASONS[code])
        except AttestationError as exc:
            # (the serial check stops at the first bad signature before this one, and at
            # this one's own before its state checks)
            bad = ahead.first_bad(index + decoded) if ahead is not None else None
            if bad is not None:
                _raise_bad(ahead, *bad)  # type: ignore[arg-type]
            raise InvalidBlock(_failure(index, att_id, exc)) from None
        view.apply(att)
        included.append(raw)
        results.append((att_id, OK))
    view.commit()
    if ahead is not None and finish:
        finish_signatures(ahead)
    return included, results


PUMP_EVERY = 16  # unchecked attestations between two looks for the worker's answers


def _failure(index: int, att_id: bytes, exc: AttestationError) -> str:
    """The message of a block refused at its attestation ``index`` (the serial check's)."""
    return f"attestation {index} (0x{att_id.hex()}): {exc}"


def _raise_bad(ahead: SignaturesAhead, index: int, exc: AttestationError) -> None:
    raise InvalidBlock(_failure(index, ahead.ids[index], exc)) from None


def finish_signatures(ahead: SignaturesAhead) -> None:
    """Settle the signatures of a checked block's attestations that its loop applied
    unverified (:meth:`SignaturesAhead.finish`): InvalidBlock for the first bad one, with
    the serial check's message."""
    bad = ahead.finish()
    if bad is not None:
        _raise_bad(ahead, *bad)


# Block building reads the slots of this many attestations ahead at a time: its view
# lives for the whole block (nothing is written before its commit), so a read ahead's
# cost does not depend on where the block is; in steps, so a budget that stops the
# build early has not paid for the reads of the whole block first.
BUILD_READ_AHEAD = 1_000


def build_attestations(state: StateAPI, env: Any, attestations: Sequence[bytes],
                       should_stop: Callable[[], bool] | None = None, run: int = 100,
                       ids: Sequence[bytes] | None = None,
                       ) -> tuple[list[bytes], list[tuple[bytes, str]], int, list[Attestation]]:
    """Block building's step (4): check and apply ``attestations`` in order, leaving out
    the invalid ones, all through one view that is committed once at the end, which is
    how a check of the block executes them (:func:`process_attestations`), so the
    result is the same; ``should_stop()`` (the builder's time budget) is asked between
    runs of ``run`` attestations, never before the first run, and once it is true the
    rest are not looked at. The governed ``max_block_attestations`` caps the included
    ones over the whole block (those after it: ``deferred``).

    ``ids`` may carry the attestations' ids (keccak of each, as the node's pool keys
    them) so they are not hashed again. Returns (included bytes, one ``(id, code)``
    for each attestation looked at, how many were looked at: a prefix of the input, the
    included ones decoded: what the node's commit reads of them, not decoded again).

    (A view per run, committed after each, made the same state but cost more as the
    block grew: every run's read ahead went through the journal of all the slots
    written before it, ~10 % of a 10,000-attestation build.)"""
    view = TelemetryView(state, env.timestamp_ms, env.height)
    cap = get_param(state, "max_block_attestations")
    chain_id = env.chain_id
    included: list[bytes] = []
    records: list[Attestation] = []
    results: list[tuple[bytes, str]] = []
    n = len(attestations)
    run = max(1, run)
    done = read_to = 0
    while done < n:
        if done and should_stop is not None and should_stop():
            break
        end = min(done + run, n)
        if end > read_to and len(included) < cap:
            read_to = min(max(end, done + BUILD_READ_AHEAD), n)
            view.read_ahead(attestations[done:read_to])
        for index in range(done, end):
            raw = attestations[index]
            if type(raw) is not bytes:
                raw = bytes(raw)
            att_id = compute_attestation_id(raw) if ids is None else ids[index]
            if len(included) >= cap:
                results.append((att_id, DEFERRED))
                continue
            try:
                att = check_stateless(raw, chain_id, att_id)
                code = view.check(att)
            except AttestationError as exc:
                results.append((att_id, exc.code))
                continue
            if code is not None:
                results.append((att_id, code.value))
                continue
            view.apply(att)
            included.append(raw)
            records.append(att)
            results.append((att_id, OK))
        done = end
    view.commit()
    return included, results, done, records


_REASONS = {
    RejectCode.UNKNOWN_DEVICE: "no device NFT is bound to this key",
    RejectCode.NOT_PAIRED: "the device is not paired with this vehicle",
    RejectCode.DENIED: "the device is on the governance deny list",
    RejectCode.STALE: "timestamp older than attestation_stale_ms before block time",
    RejectCode.FUTURE: "timestamp more than attestation_future_ms after block time",
    RejectCode.REPLAY: "seq not above the device's last accepted seq",
    RejectCode.TOO_FREQUENT: "less than min_interval_ms after the device's previous attestation",
    RejectCode.BAD_CELL: "cell is not a valid H3 cell at the chain's resolution",
    RejectCode.IMPLAUSIBLE_SPEED: "distance from the previous cell implies more than "
                                  "max_speed_cmps",
    RejectCode.ODOMETER_ROLLBACK: "odometer below the vehicle's previous reading",
    RejectCode.ODOMETER_MISMATCH: "cells moved further than the odometer allows (plus tolerance)",
    RejectCode.RATE_CAP: "device reached max_attestations_per_epoch this epoch",
}


def reject_reason(code: str) -> str:
    """A sentence a device operator can act on, for any reject code."""
    if code == RejectCode.MALFORMED:
        return "not a canonical version-1 attestation (see docs/telemetry.md)"
    if code == RejectCode.BAD_SIGNATURE:
        return "the signature does not recover the device address for this chain id"
    try:
        return _REASONS[RejectCode(code)]
    except (ValueError, KeyError):
        return code


# --- the system module ---------------------------------------------------------


def _address(text: str) -> bytes:
    return bytes.fromhex(text[2:])


class TelemetryModule(SystemModule):
    name = "telemetry"
    address = addresses.TELEMETRY

    def begin_block(self, state: StateAPI, env: Any, epoch_boundary: bool) -> None:
        # The first block of every epoch (epoch 0 starts at height 1) fixes the seed:
        # the hash of the block before it, unknown until that block was final.
        epoch, epoch_start = _clock(state)
        if epoch_boundary or env.height == epoch_start:
            parent = env.prev_hashes[0] if env.prev_hashes else env.parent_hash
            set_epoch_seed(state, epoch, parent)

    def init_genesis(self, state: StateAPI, spec: Any) -> None:
        for device in spec.modules.get(self.name, {}).get("denied", []):
            set_denied(state, _address(device), True)

    def process_attestations(self, state: StateAPI, env: Any, attestations: Sequence[bytes],
                             ahead: SignaturesAhead | None = None, finish: bool = True,
                             ) -> tuple[list[bytes], list[tuple[bytes, str]]]:
        return process_attestations(state, env, attestations, ahead=ahead, finish=finish)

    def build_attestations(self, state: StateAPI, env: Any, attestations: Sequence[bytes],
                           should_stop: Callable[[], bool] | None = None, run: int = 100,
                           ids: Sequence[bytes] | None = None,
                           ) -> tuple[list[bytes], list[tuple[bytes, str]], int, list[Attestation]]:
        return build_attestations(state, env, attestations, should_stop, run, ids)

    # -- ABI views --

    def getDeviceState(self, call: Call, device: str) -> tuple[Any, ...]:
        d = _address(device)
        st = call.store
        seq, ts, cell, odo = _unpack(st.load(mapping_slot(SLOT_DEVICE_LAST, d)))
        vehicle, epoch, digest, count, flags = _unpack_meta(
            st.load(mapping_slot(SLOT_DEVICE_META, d)))
        return (seq, ts, cell, odo, digest.to_bytes(8, "big"), vehicle, epoch, count,
                bool(flags & FLAG_DENIED))

    def getVehicleEpoch(self, call: Call, epoch: int, vehicle_id: int) -> tuple[Any, ...]:
        accepted, distance, moving, flags = _unpack(
            call.store.load(mapping_slot(SLOT_VEHICLE_EPOCH, epoch, vehicle_id)))
        return accepted, distance, moving, bool(flags & FLAG_CHALLENGED), bool(flags & FLAG_PASSED)

    def getEpochVehicles(self, call: Call, epoch: int) -> list[int]:
        length_slot, base = _list_base(epoch)
        return sorted(call.store.load(base + i) for i in range(call.store.load(length_slot)))

    def getChallenge(self, call: Call, device: str, epoch: int) -> tuple[bool, bytes]:
        call.gas(2_100 * 2, "challenge lookup")
        challenged, nonce = get_challenge(call.state, _address(device), epoch)
        return challenged, nonce.ljust(NONCE_BYTES, b"\x00")

    def isDenied(self, call: Call, device: str) -> bool:
        return bool(call.store.load(mapping_slot(SLOT_DEVICE_META, _address(device))) & FLAG_DENIED)

    def getEpochSeed(self, call: Call, epoch: int) -> bytes:
        return call.store.load(mapping_slot(SLOT_EPOCH_SEED, epoch)).to_bytes(32, "big")
