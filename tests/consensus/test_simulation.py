"""Safety and liveness of the machine over many seeded schedules of a hostile network.

Every schedule: 4 validators, one of them byzantine (it equivocates on every
proposal and vote it sends), random delays, drops and duplicates, and usually
a partition that heals at a drawn time. Checked for each schedule:

- safety: no two honest validators decide different values at one height
  (``SafetyViolation`` is raised the moment it would happen), and every commit
  verifies against the validator set;
- liveness: after the network heals, every honest validator decides new
  heights, reaching height 3 within 60 virtual seconds of healing;
- evidence: whenever an honest node processed both of the byzantine
  validator's conflicting votes, it reported the equivocation.

Restart schedules add crashes of random subsets of the validators (all four
at once included), between events or in the middle of one, each restarted
from its persisted signing guard and consensus message log. Checked: no honest
validator ever signs two different messages at one (height, round, step), its
guard never has to refuse (the machine resumes at or above what it signed),
no two decisions at a height, and after GST (the later of healing and the last
restart) every honest validator decides a new height, within 60 virtual
seconds. On the machine before resuming (restart at round 0) about 40 % of
these schedules froze.

``MOTUS_SIM_SCHEDULES=10000 pytest tests/consensus/test_simulation.py`` runs
the long variant: N more schedules without restarts and N with restarts
(about 3 + 5 minutes on one core).
"""

from __future__ import annotations

import os

import pytest

from consensus.types import ValidatorSet
from tests.consensus.sim import SafetyViolation, ScheduleResult, run_schedule

EQUAL_POWERS = [1, 1, 1, 1]
UNEQUAL_POWERS = [5, 10, 20, 30]  # any one of the first three may be byzantine (< 1/3 of 65)
LONG_RUN = int(os.environ.get("MOTUS_SIM_SCHEDULES", "0"))


def _restart_schedules(seeds: range) -> list[ScheduleResult]:
    """Four validators, one to three crash events each; every other schedule has an
    equivocating validator; one in five has unequal powers."""
    results = []
    for seed in seeds:
        powers = UNEQUAL_POWERS if seed % 5 == 0 else EQUAL_POWERS
        byzantine = None if seed % 2 == 0 else seed % 3
        results.append(run_schedule(seed, powers, byzantine, restarts=1 + seed % 3))
    return results


def _check(results: list[ScheduleResult]) -> None:
    stuck = [(r.seed, r.heights, r.network) for r in results if not r.live]
    assert not stuck, f"schedules that did not decide after healing: {stuck[:5]}"
    missed = [r.seed for r in results if r.evidence_found != r.evidence_expected]
    assert not missed, f"equivocation seen but not reported in schedules {missed[:10]}"


def test_equal_powers_with_an_equivocating_validator() -> None:
    results = [run_schedule(seed, EQUAL_POWERS, byzantine=seed % 4) for seed in range(700)]
    _check(results)
    # the schedules really were hostile, and the byzantine node was caught
    assert sum(1 for r in results if r.network.groups) > 400
    assert sum(1 for r in results if r.evidence_found) > 300
    assert sum(1 for r in results if r.network.drop_before_heal >= 0.3) > 250


def test_unequal_powers_with_an_equivocating_validator() -> None:
    results = [run_schedule(seed, UNEQUAL_POWERS, byzantine=seed % 3)
               for seed in range(10_000, 10_300)]
    _check(results)
    assert sum(1 for r in results if r.evidence_found) > 100


def test_all_honest_validators_never_produce_evidence() -> None:
    results = [run_schedule(seed, EQUAL_POWERS, byzantine=None) for seed in range(20_000, 20_100)]
    _check(results)
    assert all(r.evidence_expected == 0 and r.evidence_found == 0 for r in results)


def test_a_schedule_is_reproducible_from_its_seed() -> None:
    first, second = (run_schedule(4242, EQUAL_POWERS, byzantine=1) for _ in range(2))
    assert first == second


def test_the_safety_check_catches_a_broken_quorum(monkeypatch) -> None:
    # ">= 2/3" instead of "> 2/3": with 4 validators 2 votes would do, and the
    # simulated byzantine validator must be able to turn that into a fork.
    monkeypatch.setattr(ValidatorSet, "quorum", lambda self: self.total_power * 2 // 3)
    for seed in range(200):
        try:
            run_schedule(seed, EQUAL_POWERS, byzantine=seed % 4)
        except SafetyViolation:
            return
    pytest.fail("no fork found with a broken quorum rule")


def test_crash_restart_of_any_subset_resumes_safely_and_stays_live() -> None:
    results = _restart_schedules(range(30_000, 31_000))
    _check(results)
    assert all(r.first_decision_after_gst is not None for r in results)
    # the crashes really hit every shape: all four at once, mid-event, resumed mid-height
    crashes = [c for r in results for c in r.crashes]
    assert sum(1 for c in crashes if len(c.nodes) == 4) > 100
    # counted where they happen, not where they were drawn (a drawn one falls back to a
    # crash between events when no event comes in time)
    assert sum(r.mid_event_crashes for r in results) > 300
    assert sum(1 for r in results if r.resumed) > 500


@pytest.mark.timeout(0)  # as long as N schedules take
@pytest.mark.skipif(not LONG_RUN, reason="set MOTUS_SIM_SCHEDULES=N to run N more schedules")
def test_long_run_with_restarts() -> None:
    _check(_restart_schedules(range(300_000, 300_000 + LONG_RUN)))


@pytest.mark.timeout(0)  # as long as N schedules take
@pytest.mark.skipif(not LONG_RUN, reason="set MOTUS_SIM_SCHEDULES=N to run N more schedules")
def test_long_run() -> None:
    half = LONG_RUN // 2
    _check([run_schedule(seed, EQUAL_POWERS, byzantine=seed % 4)
            for seed in range(100_000, 100_000 + half)])
    _check([run_schedule(seed, UNEQUAL_POWERS, byzantine=seed % 3)
            for seed in range(200_000, 200_000 + LONG_RUN - half)])
