"""Rewards module: every epoch, score the vehicles of the epoch that ended and mint
their share of the epoch pool to their owners, a vehicle's share split between the
owners whose ownership periods produced the epoch's data (docs/rewards.md; formulas in
:mod:`vm.scoring`).

The boundary block opens the ended epoch (a snapshot of what its rules read); every
block then settles a bounded number of vehicle-steps (:func:`settle`, block order step
1, charged to the block cost): scoring from a cursor, then paying from a cursor, then
finalizing; epochs strictly in order; then clearing the per-vehicle records of epochs
older than ``reward_history_epochs`` (docs/rewards.md "Settlement", "History window").

This runs in block execution, not in a transaction: every result is recorded in state
(covered by the state root and ``eth_getProof``), readable with the views below or the
Python read API, and announced by block events (:mod:`vm.events`): ``RewardPaid`` per
payout, then ``EpochSettled``.

Storage layout (Solidity-style, at :data:`vm.modules.addresses.REWARDS`):

- slot 0: carry (dust not yet paid, added to the next paying epoch's pool);
  slot 1: processed epochs (epochs ``0 .. n-1`` are done; ``n`` settles next);
  slot 2: cleared epochs (no per-vehicle records below it); slot 3: clearing cursor.
- ``mapping_slot(10, epoch)`` + 0 processed, + 1 issuance, + 2 carry in, + 3 pool,
  + 4 total points, + 5 minted, + 6 paid vehicle count, + 7 carry out,
  + 8 evaluated vehicle count (vehicles with data in the epoch), + 9 height of the block
  that finished settling it, + 10 phase, + 11 min_attestations and + 12
  synthetic_max_data_level at the boundary, + 13 vehicles listed by telemetry, + 14
  scoring cursor, + 15 paying cursor, + 16 height of the boundary block that ended it.
- ``mapping_slot(11, epoch, i)``: vehicle id of the i-th evaluated vehicle (scoring order).
- ``mapping_slot(12, epoch, vehicle_id)`` + 0 the record, one word written when the
  vehicle is scored (:func:`pack_record`: flags 1 recorded, 2 qualified, 4 penalized;
  data, streak and lock level; points; streak count after the epoch; owner when scored),
  + 1 the payout, one word written when it is paid (:func:`pack_payout`: the reward and
  the number of owner shares stored; 0 shares: the whole reward went to the owner when
  scored).
- ``mapping_slot(13, vehicle_id)``: the streak, one word (:func:`pack_streak`: count,
  missed epochs in a row, last epoch with data + 1, 0: never seen).
- ``mapping_slot(15, epoch, vehicle_id, i)`` + 0 owner, + 1 amount: the shares of a
  reward split between several owners, or paid to another owner than the one when scored.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth.abc import StateAPI
from eth_typing import Address

from vm import supply  # module import: vm.supply imports vm.modules (cycle)
from vm.modules import addresses
from vm.modules.base import Call, Store, SystemModule, mapping_slot
from vm.modules.governance import locked_amount
from vm.modules.params import get_all_params, get_param
from vm.scoring import (
    DATA_LEVEL_MULTIPLES,
    EpochActivity,
    Streak,
    compute_epoch_pool,
    compute_next_streak,
    compute_owner_split,
    compute_payout,
    compute_streak_after_misses,
    compute_vehicle_score,
    is_qualifying,
)

ZERO_ADDRESS = b"\x00" * 20
MAX_LIST = 1_000

S_CARRY = 0
S_PROCESSED = 1
S_CLEARED = 2  # epochs 0 .. n-1 have had their per-vehicle records cleared
S_CLEAR_CURSOR = 3  # index reached in epoch n's list while clearing it
M_EPOCH = 10
M_EPOCH_VEHICLE = 11
M_REWARD = 12
M_STREAK = 13
M_SHARE = 15  # (14, the share count of the first layout, is unused)

(E_PROCESSED, E_ISSUANCE, E_CARRY_IN, E_POOL, E_TOTAL_POINTS, E_MINTED, E_PAID_COUNT, E_CARRY_OUT,
 E_EVALUATED, E_SETTLED_AT, E_PHASE, E_MIN_ATTESTATIONS, E_SYNTHETIC_MAX, E_LISTED, E_SCORED, E_PAID,
 E_ENDED_AT) = range(17)
# settlement phase of an epoch (E_PHASE): not opened, scoring, paying, to finalize, done
PHASE_NONE, PHASE_SCORING, PHASE_PAYING, PHASE_FINAL, PHASE_DONE = range(5)
R_RECORD, R_PAYOUT = 0, 1  # the two words of a vehicle's record of an epoch
FLAG_RECORDED, FLAG_QUALIFIED, FLAG_PENALIZED = 1, 2, 4
# Vehicle-steps clearing one vehicle's records of an old epoch counts for: deleting its
# ~15 slots from the tries cost ~1.7x a scoring or paying step at 10,000 vehicles
# (bench_costs, docs/benchmarks.md "Epoch settlement").
CLEAR_STEPS = 2

# The record word, low bits first: flags 8, data level 8, streak level 8, lock level 8,
# points 32 (at most 9,000: vm.scoring), streak count 32 (one more a qualifying epoch),
# owner when scored 160.
_U8, _U32, _U64 = 0xFF, 0xFFFF_FFFF, (1 << 64) - 1
REWARD_BITS = 192  # the payout word: reward in the low 192 bits, shares stored above


def pack_record(flags: int, data_level: int, streak_level: int, lock_level: int, points: int,
                streak: int, owner: bytes) -> int:
    """One storage word holding a vehicle's record of an epoch (docs/rewards.md "State
    layout"); fields out of their widths would corrupt it, so they are refused."""
    if not (flags | data_level | streak_level | lock_level) <= _U8 or not (points | streak) <= _U32:
        raise ValueError(f"reward record field out of range: {(flags, data_level, streak_level, lock_level, points, streak)}")
    return (flags | data_level << 8 | streak_level << 16 | lock_level << 24 | points << 32
            | streak << 64 | int.from_bytes(owner, "big") << 96)


def unpack_record(word: int) -> tuple[int, int, int, int, int, int, bytes]:
    """(flags, data level, streak level, lock level, points, streak count, owner when
    scored) of a record word."""
    return (word & _U8, word >> 8 & _U8, word >> 16 & _U8, word >> 24 & _U8, word >> 32 & _U32,
            word >> 64 & _U32, (word >> 96).to_bytes(20, "big"))


def pack_payout(reward: int, stored_shares: int) -> int:
    """One storage word: the vehicle's reward and how many owner shares are stored."""
    if not 0 <= reward < 1 << REWARD_BITS:
        raise ValueError(f"reward {reward} out of range")
    return reward | stored_shares << REWARD_BITS


def unpack_payout(word: int) -> tuple[int, int]:
    """(reward, owner shares stored) of a payout word."""
    return word & ((1 << REWARD_BITS) - 1), word >> REWARD_BITS


def pack_streak(count: int, missed: int, last_plus1: int) -> int:
    """One storage word: streak count, missed epochs in a row, last epoch with data + 1."""
    return (count & _U64) | (missed & _U64) << 64 | (last_plus1 & _U64) << 128


def _load_streak(st: Store, vehicle_id: int) -> tuple[Streak, int]:
    """The stored streak and last epoch with data + 1 (0: never seen)."""
    word = st.load(mapping_slot(M_STREAK, vehicle_id))
    return Streak(word & _U64, word >> 64 & _U64), word >> 128 & _U64


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    processed: bool
    issuance: int  # scheduled by compute_epoch_pool
    carry_in: int  # dust carried from earlier epochs
    pool: int  # issuance + carry_in
    total_points: int
    minted: int  # sum of rewards; 0 when no vehicle qualified
    vehicle_count: int  # vehicles paid (points > 0)
    carry_out: int  # dust carried to the next epoch
    evaluated: int  # vehicles with data in the epoch (paid or not)
    settled_at: int = 0  # height of the block that finished settling it (0: not yet)
    ended_at: int = 0  # height of the boundary block that ended it (first of the next epoch)
    settling: bool = False  # opened, not finished: the sums so far are partial


@dataclass(frozen=True)
class VehicleReward:
    epoch: int
    vehicle_id: int
    owner: bytes  # owner when scored (whose lock counted); zero if the NFT was gone
    points: int
    reward: int
    qualified: bool
    data_level: int
    streak_level: int
    lock_level: int
    penalized: bool
    streak: int  # streak count after this epoch
    shares: tuple[tuple[bytes, int], ...] = ()  # (owner, amount) paid, by ownership period


@dataclass(frozen=True)
class StreakRecord:
    vehicle_id: int
    count: int
    level: int
    missed: int
    last_data_epoch: int | None  # None: never had data


# --- inputs from telemetry and identity --------------------------------------
# Imported lazily: those modules are optional for this one (a chain without them
# simply has no vehicles to pay), and they import nothing from here.

def _module(name: str) -> Any | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def epoch_vehicle_count(state: StateAPI, epoch: int) -> int:
    """How many vehicles telemetry listed in ``epoch`` (had an accepted attestation)."""
    telemetry = _module("vm.modules.telemetry")
    return telemetry.epoch_vehicle_count(state, epoch) if telemetry is not None else 0


def epoch_vehicle_at(state: StateAPI, epoch: int, index: int) -> tuple[int, EpochActivity]:
    """The ``index``-th vehicle of telemetry's list for ``epoch`` (the order in which
    vehicles first had an accepted attestation in it) and its counters."""
    telemetry = _module("vm.modules.telemetry")
    assert telemetry is not None  # a listed vehicle implies the module
    vid = telemetry.epoch_vehicle_at(state, epoch, index)
    return vid, telemetry.get_vehicle_epoch(state, epoch, vid)


def get_vehicle_owner(state: StateAPI, vehicle_id: int) -> tuple[bytes | None, bool, bool]:
    """(current owner or None if the NFT does not exist, whether a device is paired,
    whether that device is synthetic: a licensed integration's key, docs/developers.md,
    whose data level is capped), read once for the scoring."""
    identity = _module("vm.modules.identity")
    if identity is None:
        return None, False, False
    owner, device, synthetic = identity.get_vehicle_pairing(state, vehicle_id)
    return owner, device is not None, synthetic


def get_period_producers(state: StateAPI, epoch: int, vehicle_id: int) -> list[tuple[bytes, int]]:
    """``(period owner, accepted attestations)`` of each ownership period of the vehicle
    that produced data in ``epoch``, oldest first (telemetry counts them by device time)."""
    telemetry = _module("vm.modules.telemetry")
    identity = _module("vm.modules.identity")
    if telemetry is None or identity is None:
        return []
    periods = identity.ownership_periods(state, vehicle_id)
    if len(periods) == 1:
        # one period ever: every accepted attestation of the epoch is its (what
        # get_period_counts answers, without reading the periods a second time)
        accepted = telemetry.get_vehicle_epoch(state, epoch, vehicle_id).accepted
        return [(periods[0].owner, accepted)] if accepted else []
    counts = telemetry.get_period_counts(state, epoch, vehicle_id)
    return [(p.owner, counts[p.index]) for p in periods if p.index in counts]


# --- epoch settlement (spread over blocks) -------------------------------------

def open_epoch(state: StateAPI, epoch: int, height: int) -> None:
    """Open ``epoch`` (just ended) for settlement, in the boundary block ``height`` that
    ended it: snapshot what its rules read (the issuance and the scoring parameters in
    force now, before this boundary's governance activations) and how many vehicles
    telemetry listed in it. Opening twice changes nothing."""
    st = Store(state, addresses.REWARDS)
    ebase = mapping_slot(M_EPOCH, epoch)
    if st.load(ebase + E_PROCESSED) or st.load(ebase + E_PHASE):
        return
    params = get_all_params(state)
    st.store(ebase + E_PHASE, PHASE_SCORING)
    st.store(ebase + E_ISSUANCE, compute_epoch_pool(params, epoch))
    st.store(ebase + E_MIN_ATTESTATIONS, params["min_attestations"])
    st.store(ebase + E_SYNTHETIC_MAX, params["synthetic_max_data_level"])
    st.store(ebase + E_LISTED, epoch_vehicle_count(state, epoch))
    st.store(ebase + E_ENDED_AT, height)


def settle(state: StateAPI, max_steps: int, emit: Callable[..., None] | None = None) -> int:
    """Do at most ``max_steps`` vehicle-steps of settlement work, in order: the oldest
    opened, unfinished epoch first (epochs finish strictly in order); returns the steps
    done. A step scores one vehicle (phase 1), pays one (phase 2) or finalizes an epoch."""
    st = Store(state, addresses.REWARDS)
    done = 0
    while done < max_steps:
        epoch = st.load(S_PROCESSED)
        ebase = mapping_slot(M_EPOCH, epoch)
        phase = st.load(ebase + E_PHASE)
        if phase == PHASE_SCORING:
            done += _score_vehicles(state, st, epoch, ebase, max_steps - done)
        elif phase == PHASE_PAYING:
            done += _pay_vehicles(state, st, epoch, ebase, max_steps - done, emit)
        elif phase == PHASE_FINAL:
            _finalize(state, st, epoch, ebase, emit)
            done += 1
        else:
            break  # not opened yet: nothing to settle
    if done < max_steps:
        done += _clear_old_epochs(state, st, max_steps - done)
    return done


def settlement_progress(state: StateAPI, epoch: int) -> tuple[int, int, int]:
    """``(vehicles listed, scored, paid)`` of ``epoch``'s settlement so far."""
    st = Store(state, addresses.REWARDS)
    base = mapping_slot(M_EPOCH, epoch)
    return st.load(base + E_LISTED), st.load(base + E_SCORED), st.load(base + E_PAID)


def settlement_backlog(state: StateAPI) -> int:
    """Ended epochs not yet finalized (0 when settlement keeps up; 1 while one settles)."""
    from vm.epoch import get_epoch  # vm.epoch imports vm.modules: import at use

    return max(0, get_epoch(state) - processed_epochs(state))


@dataclass(frozen=True)
class SettlementBacklog:
    """Settlement work not done yet (docs/rewards.md "Settlement", "Backlog")."""

    epochs: int  # ended epochs not finalized: 0 keeps up, 1 while one settles, 2+ behind
    oldest: int  # the oldest of them (the one settling), = processed epochs
    vehicles: int  # vehicles of those epochs not yet paid (scored or not)
    steps: int  # vehicle-steps left to finalize them (at most: a vehicle listed twice is skipped)
    counted: int  # epochs whose vehicles and steps are counted (the oldest BACKLOG_EPOCHS_READ)

    @property
    def spans_epochs(self) -> bool:
        """True when an epoch ended while the one before was still settling: the fleet
        outgrows the epoch and the backlog grows by one epoch a boundary."""
        return self.epochs > 1


# Epochs a backlog read looks into (4 slots each): the node reads it every block, and a
# chain that far behind has its answer in ``epochs`` already.
BACKLOG_EPOCHS_READ = 64


def get_settlement_backlog(state: StateAPI) -> SettlementBacklog:
    """How much settlement work is left: the ended, unfinalized epochs and, for the oldest
    :data:`BACKLOG_EPOCHS_READ` of them, their unpaid vehicles and steps left."""
    st = Store(state, addresses.REWARDS)
    oldest = st.load(S_PROCESSED)
    epochs = settlement_backlog(state)
    vehicles = steps = 0
    counted = min(epochs, BACKLOG_EPOCHS_READ)
    for epoch in range(oldest, oldest + counted):
        base = mapping_slot(M_EPOCH, epoch)
        listed, scored = st.load(base + E_LISTED), st.load(base + E_SCORED)
        unscored = max(0, listed - scored)
        unpaid = unscored + max(0, st.load(base + E_EVALUATED) - st.load(base + E_PAID))
        vehicles += unpaid
        steps += unscored + unpaid + 1  # score, pay, and one step to finalize
    return SettlementBacklog(epochs, oldest, vehicles, steps, counted)


def _score_vehicles(state: StateAPI, st: Store, epoch: int, ebase: int, budget: int) -> int:
    """Phase 1: score the epoch's vehicles from the cursor, in telemetry's list order,
    recording each and adding up the points; when all are scored, take the pool."""
    listed, cursor = st.load(ebase + E_LISTED), st.load(ebase + E_SCORED)
    end = min(listed, cursor + budget)
    min_attestations = st.load(ebase + E_MIN_ATTESTATIONS)
    synthetic_max = st.load(ebase + E_SYNTHETIC_MAX)
    evaluated, total = st.load(ebase + E_EVALUATED), st.load(ebase + E_TOTAL_POINTS)
    for i in range(cursor, end):
        vid, activity = epoch_vehicle_at(state, epoch, i)
        rbase = mapping_slot(M_REWARD, epoch, vid)
        if st.load(rbase + R_RECORD):
            continue  # never score (or pay) a vehicle twice for one epoch
        owner, paired, synthetic = get_vehicle_owner(state, vid)
        qualified = is_qualifying(activity, min_attestations, owner is not None, paired)
        # the streak level of the score counts this epoch
        streak = compute_next_streak(_advance_streak(st, vid, epoch), qualified)
        score = compute_vehicle_score(
            activity, min_attestations=min_attestations, registered=owner is not None,
            paired=paired, streak=streak, locked=locked_amount(state, owner) if owner else 0,
            max_data_level=synthetic_max if paired and synthetic else len(DATA_LEVEL_MULTIPLES))
        # three writes a vehicle: its streak, its place in the list, its record
        st.store(mapping_slot(M_STREAK, vid), pack_streak(streak.count, streak.missed, epoch + 1))
        flags = (FLAG_RECORDED | (FLAG_QUALIFIED if score.qualified else 0)
                 | (FLAG_PENALIZED if score.penalized else 0))
        st.store(mapping_slot(M_EPOCH_VEHICLE, epoch, evaluated), vid)
        st.store(rbase + R_RECORD, pack_record(flags, score.data_level, score.streak_level,
                                               score.lock_level, score.points, streak.count,
                                               owner or ZERO_ADDRESS))
        evaluated += 1
        total += score.points
    st.store(ebase + E_SCORED, end)
    st.store(ebase + E_EVALUATED, evaluated)
    st.store(ebase + E_TOTAL_POINTS, total)
    if end == listed:  # every vehicle scored: the pool is known now (carry of the epoch before)
        carry_in = st.load(S_CARRY)
        st.store(ebase + E_CARRY_IN, carry_in)
        st.store(ebase + E_POOL, st.load(ebase + E_ISSUANCE) + carry_in)
        st.store(ebase + E_PHASE, PHASE_PAYING)
    return end - cursor


def _pay_vehicles(state: StateAPI, st: Store, epoch: int, ebase: int, budget: int,
                  emit: Callable[..., None] | None) -> int:
    """Phase 2: pay the scored vehicles from the cursor, in the order they were scored:
    ``points * pool // total_points`` each, split between the owners who produced the data."""
    evaluated, cursor = st.load(ebase + E_EVALUATED), st.load(ebase + E_PAID)
    end = min(evaluated, cursor + budget)
    pool, total = st.load(ebase + E_POOL), st.load(ebase + E_TOTAL_POINTS)
    minted, paid_count = st.load(ebase + E_MINTED), st.load(ebase + E_PAID_COUNT)
    paid_now = 0
    for i in range(cursor, end):
        vid = st.load(mapping_slot(M_EPOCH_VEHICLE, epoch, i))
        rbase = mapping_slot(M_REWARD, epoch, vid)
        _, _, _, _, points, _, owner = unpack_record(st.load(rbase + R_RECORD))
        reward = compute_payout(points, pool, total)
        if not reward:
            continue
        shares = compute_owner_split(reward, get_period_producers(state, epoch, vid), owner)
        # the usual case, all of it to the owner when scored, stores no share
        stored = 0 if shares == [(owner, reward)] else len(shares)
        st.store(rbase + R_PAYOUT, pack_payout(reward, stored))
        for j, (payee, amount) in enumerate(shares):
            if stored:
                share = mapping_slot(M_SHARE, epoch, vid, j)
                st.store_address(share, payee)
                st.store(share + 1, amount)
            if amount:
                state.delta_balance(Address(payee), amount)
                if emit is not None:
                    emit("RewardPaid", epoch, vid, payee, points, amount)
        paid_now += reward
        paid_count += 1
    if paid_now:
        supply.record_minted(state, paid_now)  # once a block: the sum of its payouts
    minted += paid_now
    st.store(ebase + E_PAID, end)
    st.store(ebase + E_MINTED, minted)
    st.store(ebase + E_PAID_COUNT, paid_count)
    if end == evaluated:
        st.store(ebase + E_PHASE, PHASE_FINAL)
    return end - cursor


def _finalize(state: StateAPI, st: Store, epoch: int, ebase: int,
              emit: Callable[..., None] | None) -> None:
    """Close a fully paid epoch: the carry, the processed flag and counter, the event."""
    minted = st.load(ebase + E_MINTED)
    carry_in = st.load(ebase + E_CARRY_IN)
    # the rounding dust is carried; an unpaid epoch's issuance is not minted
    carry_out = st.load(ebase + E_POOL) - minted if minted else carry_in
    st.store(ebase + E_CARRY_OUT, carry_out)
    st.store(ebase + E_PROCESSED, 1)
    st.store(ebase + E_PHASE, PHASE_DONE)
    st.store(ebase + E_SETTLED_AT, state.block_number)
    st.store(S_CARRY, carry_out)
    st.store(S_PROCESSED, epoch + 1)
    if emit is not None:
        emit("EpochSettled", epoch, st.load(ebase + E_POOL), st.load(ebase + E_TOTAL_POINTS),
             minted, carry_out)


def _clear_old_epochs(state: StateAPI, st: Store, budget: int) -> int:
    """Clear the per-vehicle records of epochs that left the history window (epoch ``X``
    once ``X + reward_history_epochs`` epochs are settled): rewards' records, shares and
    vehicle list, and telemetry's counters, period counts and vehicle list of ``X``.
    :data:`CLEAR_STEPS` steps per listed vehicle, one to close the epoch. Returns the
    steps done."""
    keep = get_param(state, "reward_history_epochs")
    processed = st.load(S_PROCESSED)
    done = 0
    telemetry = _module("vm.modules.telemetry")
    while done < budget:
        epoch = st.load(S_CLEARED)
        if epoch + keep >= processed:
            break
        ebase = mapping_slot(M_EPOCH, epoch)
        evaluated = st.load(ebase + E_EVALUATED)
        listed = max(st.load(ebase + E_LISTED), evaluated)
        cursor = st.load(S_CLEAR_CURSOR)
        end = min(listed, cursor + (budget - done) // CLEAR_STEPS)
        for i in range(cursor, end):
            if telemetry is not None:
                telemetry.clear_epoch_vehicle(state, epoch, i)
            if i < evaluated:
                _clear_vehicle_record(st, epoch, i)
        done += (end - cursor) * CLEAR_STEPS
        if end < listed or done >= budget:  # closing the epoch is a step of its own
            st.store(S_CLEAR_CURSOR, end)
            break
        if telemetry is not None:
            telemetry.clear_epoch_list(state, epoch)
        st.store(S_CLEAR_CURSOR, 0)
        st.store(S_CLEARED, epoch + 1)
        done += 1
    return done


def _clear_vehicle_record(st: Store, epoch: int, index: int) -> None:
    """Zero the ``index``-th evaluated vehicle's record of ``epoch`` (its slot in the
    epoch's list, the record's two words, the owner shares stored)."""
    slot = mapping_slot(M_EPOCH_VEHICLE, epoch, index)
    vid = st.load(slot)
    st.store(slot, 0)
    rbase = mapping_slot(M_REWARD, epoch, vid)
    st.store(rbase + R_RECORD, 0)
    payout = st.load(rbase + R_PAYOUT)
    if payout:
        for j in range(unpack_payout(payout)[1]):
            share = mapping_slot(M_SHARE, epoch, vid, j)
            st.store(share, 0)
            st.store(share + 1, 0)
        st.store(rbase + R_PAYOUT, 0)


def history_start(state: StateAPI) -> int:
    """First epoch whose per-vehicle records are still in state (older ones were cleared:
    their ``RewardPaid`` events and archive states still hold them)."""
    st = Store(state, addresses.REWARDS)
    return st.load(S_CLEARED) + (1 if st.load(S_CLEAR_CURSOR) else 0)


def process_epoch_end(state: StateAPI, epoch: int,
                      emit: Callable[..., None] | None = None) -> EpochResult:
    """Open ``epoch`` if needed and settle everything up to and including it in one go
    (no step limit): the one-shot settlement, by the same code as the spread one. A
    second call changes nothing."""
    for e in range(processed_epochs(state), epoch + 1):
        open_epoch(state, e, state.block_number)
    while not get_epoch_result(state, epoch).processed:
        if not settle(state, 1 << 62, emit):
            break
    return get_epoch_result(state, epoch)


def _advance_streak(st: Store, vehicle_id: int, epoch: int) -> Streak:
    """The vehicle's streak before ``epoch``: the stored one plus the epochs it had no
    data at all (those were not visited, so their misses are applied now)."""
    streak, last_plus1 = _load_streak(st, vehicle_id)
    if last_plus1 == 0:
        return streak
    return compute_streak_after_misses(streak, epoch - last_plus1)


# --- Python read API (the node serves these over RPC) -------------------------

def processed_epochs(state: StateAPI) -> int:
    """Number of processed epochs: results exist for epochs ``0 .. n-1``."""
    return Store(state, addresses.REWARDS).load(S_PROCESSED)


def get_carry(state: StateAPI) -> int:
    return Store(state, addresses.REWARDS).load(S_CARRY)


def get_epoch_result(state: StateAPI, epoch: int) -> EpochResult:
    """Recorded result of ``epoch`` (``processed`` False and zeros if not yet processed)."""
    st = Store(state, addresses.REWARDS)
    base = mapping_slot(M_EPOCH, epoch)
    v = [st.load(base + i) for i in range(E_ENDED_AT + 1)]
    return EpochResult(epoch, bool(v[E_PROCESSED]), v[E_ISSUANCE], v[E_CARRY_IN], v[E_POOL],
                       v[E_TOTAL_POINTS], v[E_MINTED], v[E_PAID_COUNT], v[E_CARRY_OUT], v[E_EVALUATED],
                       v[E_SETTLED_AT], v[E_ENDED_AT] or v[E_SETTLED_AT],
                       PHASE_SCORING <= v[E_PHASE] <= PHASE_FINAL)


def get_vehicle_reward(state: StateAPI, epoch: int, vehicle_id: int) -> VehicleReward | None:
    """What ``vehicle_id`` scored and was paid for ``epoch``; None if it had no data then."""
    st = Store(state, addresses.REWARDS)
    base = mapping_slot(M_REWARD, epoch, vehicle_id)
    word = st.load(base + R_RECORD) if epoch >= history_start(state) else 0
    return vehicle_reward_of(epoch, vehicle_id, word, st.load(base + R_PAYOUT) if word else 0,
                             lambda j: _share(st, epoch, vehicle_id, j))


def vehicle_reward_of(epoch: int, vehicle_id: int, record: int, payout: int,
                      share: Callable[[int], tuple[bytes, int]] | None = None) -> VehicleReward | None:
    """The record read from its two words (``share(j)``: the j-th stored owner share;
    without it, shares are left out); None when not recorded. Also what the light client
    decodes proven storage with."""
    flags, data_level, streak_level, lock_level, points, streak, owner = unpack_record(record)
    if not flags & FLAG_RECORDED:
        return None
    reward, stored = unpack_payout(payout)
    if stored:
        shares = tuple(share(j) for j in range(stored)) if share is not None else ()
    else:
        shares = ((owner, reward),) if reward else ()
    return VehicleReward(
        epoch=epoch, vehicle_id=vehicle_id, owner=owner, points=points, reward=reward,
        qualified=bool(flags & FLAG_QUALIFIED), data_level=data_level, streak_level=streak_level,
        lock_level=lock_level, penalized=bool(flags & FLAG_PENALIZED), streak=streak, shares=shares,
    )


def _share(st: Store, epoch: int, vehicle_id: int, j: int) -> tuple[bytes, int]:
    share = mapping_slot(M_SHARE, epoch, vehicle_id, j)
    return st.load_address(share), st.load(share + 1)


def get_epoch_vehicles(state: StateAPI, epoch: int, offset: int = 0, limit: int = MAX_LIST) -> list[int]:
    """Vehicle ids evaluated in ``epoch`` (had data), ascending, paged."""
    st = Store(state, addresses.REWARDS)
    if epoch < history_start(state):
        return []  # cleared (docs/rewards.md "History window")
    n = st.load(mapping_slot(M_EPOCH, epoch) + E_EVALUATED)
    return [st.load(mapping_slot(M_EPOCH_VEHICLE, epoch, i)) for i in range(offset, min(n, offset + limit))]


def list_epoch_rewards(state: StateAPI, epoch: int) -> list[VehicleReward]:
    """Every vehicle evaluated in ``epoch`` with its points and reward (the payouts are
    those with ``reward > 0``, each also announced by a ``RewardPaid`` block event)."""
    out = []
    for vid in get_epoch_vehicles(state, epoch, 0, 2**64):
        rec = get_vehicle_reward(state, epoch, vid)
        if rec is not None:
            out.append(rec)
    return out


def get_vehicle_rewards(state: StateAPI, vehicle_id: int, from_epoch: int, to_epoch: int) -> list[VehicleReward]:
    """Records of ``vehicle_id`` for epochs ``from_epoch .. to_epoch`` inclusive (epochs
    without data are skipped). The caller bounds the range."""
    out = []
    for epoch in range(max(0, from_epoch), to_epoch + 1):
        rec = get_vehicle_reward(state, epoch, vehicle_id)
        if rec is not None:
            out.append(rec)
    return out


def get_streak(state: StateAPI, vehicle_id: int) -> StreakRecord:
    """The vehicle's streak as of the last processed epoch (epochs without data since
    its last data count as misses, see :func:`vm.scoring.compute_streak_after_misses`)."""
    st = Store(state, addresses.REWARDS)
    streak, last_plus1 = _load_streak(st, vehicle_id)
    if last_plus1 == 0:
        return StreakRecord(vehicle_id, 0, 0, 0, None)
    streak = compute_streak_after_misses(streak, max(0, st.load(S_PROCESSED) - last_plus1))
    return StreakRecord(vehicle_id, streak.count, streak.level, streak.missed, last_plus1 - 1)


# --- the precompile -------------------------------------------------------------

class RewardsModule(SystemModule):
    name = "rewards"
    address = addresses.REWARDS

    def getEpoch(self, call: Call, epoch: int) -> tuple[int, ...]:
        call.gas(2_100 * 9, "epoch result read")
        r = get_epoch_result(call.state, epoch)
        return (r.pool, r.total_points, r.minted, r.vehicle_count, r.issuance, r.carry_in, r.carry_out,
                r.processed)

    def getVehicleReward(self, call: Call, epoch: int, vehicle_id: int) -> tuple[Any, ...]:
        call.gas(2_100 * 8, "vehicle reward read")
        r = get_vehicle_reward(call.state, epoch, vehicle_id)
        if r is None:
            return (0, 0, "0x" + ZERO_ADDRESS.hex(), False, 0, 0, 0, False)
        return (r.points, r.reward, "0x" + r.owner.hex(), r.qualified, r.data_level, r.streak_level,
                r.lock_level, r.penalized)

    def getEpochVehicles(self, call: Call, epoch: int, offset: int, limit: int) -> list[int]:
        ids = get_epoch_vehicles(call.state, epoch, offset, min(limit, MAX_LIST))
        call.gas(2_100 * (1 + len(ids)), "epoch vehicles read")
        return ids

    def getStreak(self, call: Call, vehicle_id: int) -> tuple[int, int, int, int, bool]:
        call.gas(2_100 * 4, "streak read")
        s = get_streak(call.state, vehicle_id)
        known = s.last_data_epoch is not None
        return s.count, s.level, s.missed, s.last_data_epoch if known else 0, known  # type: ignore[return-value]

    def processedEpochs(self, call: Call) -> int:
        return call.store.load(S_PROCESSED)

    def carry(self, call: Call) -> int:
        return call.store.load(S_CARRY)

    def begin_block(self, state: StateAPI, env: Any, epoch_boundary: bool) -> None:
        # opened here, before governance's hook: a parameter change activating at this
        # boundary does not reach the ended epoch's snapshot
        if epoch_boundary:
            from vm.epoch import get_epoch  # vm.epoch imports vm.modules: import at use

            open_epoch(state, get_epoch(state) - 1, env.height)

    def metered_work(self, state: StateAPI, max_steps: int) -> int:
        """This block's settlement work (block order step 1, after every module's
        hook): at most ``max_steps`` vehicle-steps; returns the steps done."""
        return settle(state, max_steps, lambda event, *args: self.emit(state, None, event, *args))

