"""Scoring and pool formulas against hand-computed tables (docs/rewards.md)."""

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vm.params import defaults
from vm.scoring import (
    ETHER,
    Streak,
    compute_data_level,
    compute_epoch_pool,
    compute_lock_level,
    compute_next_streak,
    compute_payouts,
    compute_points,
    compute_streak_after_misses,
    compute_streak_level,
    compute_vehicle_score,
    is_qualifying,
)


@dataclass(frozen=True)
class Activity:
    accepted: int
    moving: int
    challenged: bool = False
    challenge_passed: bool = False


@pytest.mark.parametrize("useful,level", [(0, 0), (11, 0), (12, 1), (23, 1), (24, 2), (47, 2), (48, 3), (999, 3)])
def test_data_level_by_useful_attestations(useful, level):
    assert compute_data_level(useful, 12) == level


@pytest.mark.parametrize("count,level", [(0, 0), (3, 0), (4, 1), (20, 1), (21, 2), (35, 2), (36, 3), (500, 3)])
def test_streak_level(count, level):
    assert compute_streak_level(count) == level


@pytest.mark.parametrize("locked,level", [
    (0, 0), (500 * ETHER - 1, 0), (500 * ETHER, 1), (1_500 * ETHER - 1, 1), (1_500 * ETHER, 2),
    (4_000 * ETHER - 1, 2), (4_000 * ETHER, 3), (10**9 * ETHER, 3),
])
def test_lock_level(locked, level):
    assert compute_lock_level(locked) == level


def test_points_and_challenge_penalty():
    assert compute_points(1, 0, 0, False) == 1_000
    assert compute_points(3, 3, 3, False) == 9_000
    assert compute_points(3, 3, 3, True) == 4_500
    assert compute_points(1, 0, 0, True) == 500


@pytest.mark.parametrize("activity,registered,paired,ok", [
    (Activity(12, 12), True, True, True),
    (Activity(11, 11), True, True, False),  # too few
    (Activity(100, 11), True, True, False),  # many, but a parked car repeating itself
    (Activity(12, 12), False, True, False),  # NFT burned
    (Activity(12, 12), True, False, False),  # device unpaired
])
def test_qualification(activity, registered, paired, ok):
    assert is_qualifying(activity, 12, registered, paired) is ok


def test_vehicle_score_table():
    s = compute_vehicle_score(Activity(50, 30), min_attestations=12, registered=True, paired=True,
                              streak=Streak(21, 0), locked=1_500 * ETHER)
    assert (s.qualified, s.data_level, s.streak_level, s.lock_level, s.points) == (True, 2, 2, 2, 6_000)
    s = compute_vehicle_score(Activity(50, 50, challenged=True), min_attestations=12, registered=True,
                              paired=True, streak=Streak(4, 0), locked=0)
    assert (s.data_level, s.streak_level, s.penalized, s.points) == (3, 1, True, 2_000)
    s = compute_vehicle_score(Activity(50, 50, challenged=True, challenge_passed=True), min_attestations=12,
                              registered=True, paired=True, streak=Streak(4, 0), locked=0)
    assert (s.penalized, s.points) == (False, 4_000)
    s = compute_vehicle_score(Activity(5, 5), min_attestations=12, registered=True, paired=True,
                              streak=Streak(40, 0), locked=10**9 * ETHER)
    assert (s.qualified, s.points) == (False, 0)


# --- streaks ----------------------------------------------------------------------

def run(streak: Streak, pattern: str) -> Streak:
    for c in pattern:
        streak = compute_next_streak(streak, c == "Q")
    return streak


@pytest.mark.parametrize("start,pattern,expected", [
    (Streak(0, 0), "QQQ", Streak(3, 0)),
    (Streak(0, 0), "QQQQ", Streak(4, 0)),  # 4th qualifying epoch: level 1
    (Streak(10, 0), "-", Streak(10, 1)),  # one miss: no growth, no loss
    (Streak(10, 0), "--Q", Streak(11, 0)),  # two misses then data: misses forgotten
    (Streak(10, 0), "---", Streak(0, 0)),  # level 1 falls to level 0's floor
    (Streak(25, 0), "---", Streak(4, 0)),  # level 2 falls to level 1's floor
    (Streak(40, 0), "---", Streak(21, 0)),  # level 3 falls to level 2's floor
    (Streak(40, 0), "------", Streak(4, 0)),  # each further 3 misses: one more level
    (Streak(40, 0), "-------", Streak(4, 1)),
    (Streak(40, 0), "------------", Streak(0, 0)),
    (Streak(3, 0), "---", Streak(0, 0)),
    (Streak(21, 2), "-", Streak(4, 0)),  # missed counter carries across calls
    (Streak(36, 0), "--Q--Q", Streak(38, 0)),  # no three in a row: no drop
])
def test_streak_table(start, pattern, expected):
    assert run(start, pattern) == expected


@given(count=st.integers(0, 100), missed=st.integers(0, 2), misses=st.integers(0, 40))
def test_streak_after_misses_equals_stepwise(count, missed, misses):
    start = Streak(count, missed)
    assert compute_streak_after_misses(start, misses) == run(start, "-" * misses)


def test_streak_after_a_very_long_absence_is_constant_time():
    assert compute_streak_after_misses(Streak(1000, 0), 10**12 + 1) == Streak(0, 2)


# --- pool ---------------------------------------------------------------------------

def params(**kw):
    p = defaults()
    p.update(kw)
    return p


@pytest.mark.parametrize("epoch,pool", [
    (0, 1_000_000), (9, 1_000_000),  # period 0
    (10, 850_000), (19, 850_000),  # one cut: 1e6 * 0.85
    (20, 722_500),  # 850,000 * 0.85
    (30, 614_125),  # 722,500 * 0.85
    (40, 522_006),  # 614,125 * 0.85 = 522,006.25, rounded down
    (50, 443_705),  # 522,006 * 0.85 = 443,705.1
])
def test_pool_decays_compounding(epoch, pool):
    p = params(epoch_issuance=1_000_000, decay_bps=1_500, decay_period_epochs=10)
    assert compute_epoch_pool(p, epoch) == pool


def test_pool_without_decay_and_to_zero():
    assert compute_epoch_pool(params(epoch_issuance=7, decay_bps=0, decay_period_epochs=1), 10**9) == 7
    # 7 -> 3 -> 1 -> 0 with 50 % cuts
    p = params(epoch_issuance=7, decay_bps=5_000, decay_period_epochs=1)
    assert [compute_epoch_pool(p, e) for e in range(5)] == [7, 3, 1, 0, 0]
    assert compute_epoch_pool(params(decay_bps=10_000, decay_period_epochs=1), 1) == 0


def test_default_pool_is_dimo_weekly_issuance_per_ten_minutes():
    p = defaults()
    assert compute_epoch_pool(p, 0) == 1_105_000 * ETHER * 600 // 604_800
    assert compute_epoch_pool(p, 52_560) == compute_epoch_pool(p, 0) * 8_500 // 10_000


def test_pool_worst_case_decay_terminates():
    p = params(epoch_issuance=10**9 * ETHER, decay_bps=1, decay_period_epochs=1)
    assert compute_epoch_pool(p, 10**9) == 0


# --- payouts --------------------------------------------------------------------------

def test_payout_table_with_remainder():
    # 100 wei over 3,000 + 3,000 + 1,000 points: 42 + 42 + 14 = 98, remainder 2
    assert compute_payouts([3_000, 3_000, 1_000], 100) == ([42, 42, 14], 2)


def test_payout_zero_points_epoch():
    assert compute_payouts([], 100) == ([], 100)
    assert compute_payouts([0, 0], 100) == ([0, 0], 100)


@given(points=st.lists(st.integers(0, 20_000), max_size=50), pool=st.integers(0, 10**30))
def test_payouts_conserve_the_pool(points, pool):
    payouts, rest = compute_payouts(points, pool)
    assert sum(payouts) + rest == pool
    assert all(r >= 0 for r in payouts) and rest >= 0
    if sum(points):
        assert rest < max(1, sum(1 for p in points if p))


def test_docs_worked_example():
    """docs/rewards.md, 'Worked example': keep the numbers there true."""
    common = {"min_attestations": 12, "registered": True, "paired": True}
    a = compute_vehicle_score(Activity(60, 60), streak=Streak(40, 0), locked=0, **common)
    b = compute_vehicle_score(Activity(20, 20), streak=Streak(4, 0), locked=0, **common)
    c = compute_vehicle_score(Activity(15, 15, challenged=True), streak=Streak(2, 0), locked=1_500 * ETHER,
                              **common)
    assert [a.points, b.points, c.points] == [6_000, 2_000, 1_500]
    pool = compute_epoch_pool(defaults(), 0)
    assert pool == 1_096_230_158_730_158_730_158
    assert compute_epoch_pool(defaults(), 52_560) == 931_795_634_920_634_920_634
    assert compute_epoch_pool(defaults(), 2 * 52_560) == 792_026_289_682_539_682_538
    assert compute_payouts([a.points, b.points, c.points], pool) == (
        [692_355_889_724_310_776_941, 230_785_296_574_770_258_980, 173_088_972_431_077_694_235], 2)
