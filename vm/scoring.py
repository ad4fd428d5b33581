"""Reward scoring: pure integer formulas for vehicle points, streaks, the epoch pool
and the split of a pool (docs/rewards.md).

Nothing here reads state: :mod:`vm.modules.rewards` gathers the inputs (telemetry
counters, identity records, governance locks, parameters) and records the results.

Points are counted in units of :data:`POINTS_PER_LEVEL` (1,000, as DIMO's weekly
points) so that the 0.5 penalty of a failed challenge stays an exact integer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

ETHER = 10**18
BPS = 10_000
POINTS_PER_LEVEL = 1_000

# Data level by useful attestations, as multiples of ``min_attestations``:
# level 1 from 1x (qualifies), level 2 from 2x, level 3 from 4x.
DATA_LEVEL_MULTIPLES = (1, 2, 4)
# Streak level by qualifying epochs on record: level i from STREAK_FLOORS[i].
STREAK_FLOORS = (0, 4, 21, 36)
# Consecutive epochs without qualifying data that drop the streak by one level.
STREAK_DROP_MISSES = 3
# Lock level by MOTUS the vehicle's owner has locked in governance (DIMO-like).
LOCK_LEVEL_THRESHOLDS = (500 * ETHER, 1_500 * ETHER, 4_000 * ETHER)


class EpochActivity(Protocol):
    """What scoring needs of telemetry's per-vehicle epoch counters."""

    @property
    def accepted(self) -> int: ...
    @property
    def moving(self) -> int: ...
    @property
    def challenged(self) -> bool: ...
    @property
    def challenge_passed(self) -> bool: ...


@dataclass(frozen=True)
class Streak:
    """Streak of one vehicle: ``count`` qualifying epochs on record, ``missed`` epochs
    without qualifying data since the last qualifying one (or the last drop)."""

    count: int = 0
    missed: int = 0

    @property
    def level(self) -> int:
        return compute_streak_level(self.count)


@dataclass(frozen=True)
class VehicleScore:
    qualified: bool
    data_level: int
    streak_level: int
    lock_level: int
    penalized: bool  # challenged and failed: points halved
    points: int


# --- levels -------------------------------------------------------------------

def compute_useful_attestations(activity: EpochActivity) -> int:
    """Accepted attestations that show movement or changed values (``moving`` is
    counted by telemetry among accepted ones; the min guards a miscount)."""
    return max(0, min(activity.accepted, activity.moving))


def compute_data_level(useful: int, min_attestations: int) -> int:
    """0 below ``min_attestations`` useful attestations, then 1, 2, 3 at 1x, 2x, 4x."""
    level = 0
    for i, multiple in enumerate(DATA_LEVEL_MULTIPLES):
        if useful >= multiple * max(1, min_attestations):
            level = i + 1
    return level


def compute_streak_level(count: int) -> int:
    """0 below 4 qualifying epochs, 1 from 4, 2 from 21, 3 from 36."""
    level = 0
    for i, floor in enumerate(STREAK_FLOORS):
        if count >= floor:
            level = i
    return level


def compute_lock_level(locked: int) -> int:
    """0 below 500 MOTUS locked, 1 from 500, 2 from 1,500, 3 from 4,000."""
    return sum(1 for threshold in LOCK_LEVEL_THRESHOLDS if locked >= threshold)


def is_qualifying(activity: EpochActivity, min_attestations: int, registered: bool, paired: bool) -> bool:
    """A vehicle qualifies for an epoch when its NFT exists, a device is paired and it
    has at least ``min_attestations`` useful attestations."""
    return registered and paired and compute_useful_attestations(activity) >= max(1, min_attestations)


# --- streaks --------------------------------------------------------------------

def compute_next_streak(streak: Streak, qualified: bool) -> Streak:
    """The streak after one more epoch. A qualifying epoch adds one and clears the
    misses; a non-qualifying one adds a miss, and the third miss in a row drops the
    count to the floor of the level below its current level (0 from level 0 or 1)."""
    if qualified:
        return Streak(streak.count + 1, 0)
    return compute_streak_after_misses(streak, 1)


def compute_streak_after_misses(streak: Streak, misses: int) -> Streak:
    """The streak after ``misses`` epochs in a row without qualifying data; the same
    as applying :func:`compute_next_streak` ``misses`` times with ``False``, in
    constant time (a vehicle may be away for years)."""
    total = streak.missed + max(0, misses)
    drops = min(total // STREAK_DROP_MISSES, len(STREAK_FLOORS))
    count = streak.count
    for _ in range(drops):
        count = STREAK_FLOORS[max(compute_streak_level(count) - 1, 0)]
    return Streak(count, total % STREAK_DROP_MISSES)


# --- points ---------------------------------------------------------------------

def compute_points(data_level: int, streak_level: int, lock_level: int, penalized: bool) -> int:
    """(data + streak + lock level) * 1,000, halved (exactly) when ``penalized``."""
    points = (data_level + streak_level + lock_level) * POINTS_PER_LEVEL
    return points // 2 if penalized else points


def compute_vehicle_score(activity: EpochActivity, *, min_attestations: int, registered: bool,
                          paired: bool, streak: Streak, locked: int,
                          max_data_level: int = len(DATA_LEVEL_MULTIPLES)) -> VehicleScore:
    """Score of one vehicle for one epoch. ``streak`` is the streak AFTER this epoch
    (see :func:`compute_next_streak`). A vehicle that does not qualify scores 0.
    ``max_data_level`` caps the data level: a vehicle reporting through a synthetic
    device (a software integration) is held at ``synthetic_max_data_level``."""
    if not is_qualifying(activity, min_attestations, registered, paired):
        return VehicleScore(False, 0, 0, 0, False, 0)
    data_level = min(max(0, max_data_level),
                     compute_data_level(compute_useful_attestations(activity), min_attestations))
    lock_level = compute_lock_level(locked)
    penalized = bool(activity.challenged and not activity.challenge_passed)
    points = compute_points(data_level, streak.level, lock_level, penalized)
    return VehicleScore(True, data_level, streak.level, lock_level, penalized, points)


# --- pool -----------------------------------------------------------------------

def compute_decay_steps(epoch: int, decay_period_epochs: int) -> int:
    """Decay periods completed before ``epoch`` starts (epoch 0 is in period 0)."""
    return epoch // max(1, decay_period_epochs)


def compute_epoch_pool(params: Mapping[str, int], epoch: int) -> int:
    """Scheduled issuance of ``epoch``: ``epoch_issuance`` cut by ``decay_bps`` once per
    completed decay period, compounding, rounded down at every step:
    ``pool_0 = epoch_issuance; pool_k = pool_(k-1) * (10000 - decay_bps) // 10000``.
    Dust carried from earlier epochs is not included (see :func:`compute_payouts`)."""
    pool = params["epoch_issuance"]
    decay = params["decay_bps"]
    steps = compute_decay_steps(epoch, params["decay_period_epochs"])
    if decay <= 0:
        return pool
    keep = BPS - min(decay, BPS)
    # Each step lowers a positive pool by at least 1, so the loop ends after at most
    # about 10000 * ln(pool) / decay_bps + 10000 steps (under 700k at the bounds).
    for _ in range(steps):
        if pool == 0:
            break
        pool = pool * keep // BPS
    return pool


def compute_payouts(points: Sequence[int], pool: int) -> tuple[list[int], int]:
    """Split ``pool`` by ``points``: ``points[i] * pool // total`` each, and the
    remainder (dust, less than the number of paid vehicles) that nobody receives.
    With no points the whole pool is the remainder. Invariant:
    ``sum(payouts) + remainder == pool``."""
    total = sum(points)
    if total <= 0 or pool <= 0:
        return [0] * len(points), max(pool, 0)
    payouts = [compute_payout(p, pool, total) for p in points]
    return payouts, pool - sum(payouts)


def compute_payout(points: int, pool: int, total_points: int) -> int:
    """One vehicle's share of ``pool``: ``points * pool // total_points`` (0 when there
    are no points or no pool). What :func:`compute_payouts` gives each vehicle; block
    settlement pays vehicles one at a time with it, once ``total_points`` is known."""
    if total_points <= 0 or pool <= 0:
        return 0
    return points * pool // total_points


def compute_owner_split(reward: int, produced: Sequence[tuple[bytes, int]],
                        current_owner: bytes) -> list[tuple[bytes, int]]:
    """Split one vehicle's epoch ``reward`` between the owners whose ownership periods
    produced the epoch's accepted data: ``produced`` is ``(period owner, accepted
    attestations)`` per period, oldest first. Each owner gets ``reward * its count //
    total`` (periods of one owner are added up first); the rounding remainder (less
    than the number of owners, in wei) goes to the owner with the most data, the later
    one on a tie, so ``sum(amounts) == reward`` exactly. No data per period on record
    (an epoch settled before periods were counted): everything to ``current_owner``.
    Owners come out in the order of their first period."""
    merged: dict[bytes, int] = {}
    for owner, count in produced:
        if count > 0:
            merged[owner] = merged.get(owner, 0) + count
    total = sum(merged.values())
    if reward <= 0 or total == 0:
        return [(current_owner, reward)]
    shares = [(owner, reward * count // total) for owner, count in merged.items()]
    remainder = reward - sum(amount for _, amount in shares)
    if remainder:
        counts = list(merged.values())
        top = max(range(len(counts)), key=lambda i: (counts[i], i))
        owner, amount = shares[top]
        shares[top] = (owner, amount + remainder)
    return shares
