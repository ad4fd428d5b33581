"""Proposal size by time (``node.network.ConsensusApp``): a proposal holds as many
transactions as this node builds in about ``PROPOSAL_BUDGET_S``, learnt from its last
sizeable proposal, within [PROPOSAL_MIN_TXS, PROPOSAL_MAX_TXS]. Without the cap, full
blocks under load missed the propose timeout and four validators stalled."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from node.network import (
    PROPOSAL_MAX_ATTESTATIONS,
    PROPOSAL_MAX_TXS,
    PROPOSAL_MIN_ATTESTATIONS,
    PROPOSAL_START_ATTESTATIONS,
    PROPOSAL_START_TXS,
    ConsensusApp,
)


@pytest.mark.parametrize(
    ("count", "elapsed_s", "expected"),
    [
        (500, 0.6, 250),  # twice the budget: half as many next time
        (500, 0.15, 1000),  # half the budget: twice as many
        (1000, 0.01, PROPOSAL_MAX_TXS),
        (300, 10.0, PROPOSAL_START_TXS // 2),  # one slow block halves the cap at most
        (10, 5.0, PROPOSAL_START_TXS),  # too small a sample to learn from
    ],
)
def test_cap_follows_the_measured_build_time(count: int, elapsed_s: float, expected: int) -> None:
    app = ConsensusApp(SimpleNamespace(), proposer=b"\x01" * 20, budget_s=0.3)  # type: ignore[arg-type]
    app.learn_proposal_cost(count, 0, elapsed_s)
    assert app.max_txs == expected


@pytest.mark.parametrize(
    ("count", "attestations", "elapsed_s", "txs_cap", "attestations_cap"),
    [
        # a restart's attestation backlog: 2000 of them and 500 transfers took 1.2 s,
        # four times the budget: both shrink by four, so the next block fits it
        (500, 2000, 1.2, PROPOSAL_START_TXS // 2, 500),  # 125 learnt: halved at most
        (1000, 2000, 1.2, 250, 500),
        (0, 1000, 0.15, PROPOSAL_START_TXS, 2000),  # no transactions: their cap stays
        (500, 10, 0.6, 250, PROPOSAL_START_ATTESTATIONS),  # too few to learn from
        (0, 2000, 100.0, PROPOSAL_START_TXS, PROPOSAL_START_ATTESTATIONS // 2),
    ],
)
def test_attestation_cap_follows_the_measured_build_time(
    count: int, attestations: int, elapsed_s: float, txs_cap: int, attestations_cap: int,
) -> None:
    app = ConsensusApp(SimpleNamespace(), proposer=b"\x01" * 20, budget_s=0.3)  # type: ignore[arg-type]
    app.learn_proposal_cost(count, attestations, elapsed_s)
    assert (app.max_txs, app.max_attestations) == (txs_cap, attestations_cap)


def test_propose_passes_the_cap_and_learns_from_the_result() -> None:
    calls: list[dict[str, Any]] = []

    class FakeApplication:
        head = SimpleNamespace(height=7)

        def propose(self, height: int, proposer: bytes, *, max_txs: int,
                    max_attestations: int, budget: Any) -> bytes:
            calls.append({"height": height, "max_txs": max_txs,
                          "max_attestations": max_attestations})
            return b"block %d" % height

        def block_of(self, value: bytes) -> Any:
            return SimpleNamespace(transactions=[b"tx"] * min(calls[-1]["max_txs"], 400),
                                   attestations=[])

    app = ConsensusApp(FakeApplication(), proposer=b"\x01" * 20, budget_s=1e9)  # type: ignore[arg-type]
    app.propose(8, 0)
    app.propose(9, 0)
    assert calls[0] == {"height": 8, "max_txs": PROPOSAL_START_TXS,
                        "max_attestations": PROPOSAL_START_ATTESTATIONS}
    assert calls[1]["max_txs"] == PROPOSAL_MAX_TXS  # built fast: the cap opened up


@pytest.mark.parametrize(
    ("powers", "alone"),
    [
        ([100], True),  # a single-validator chain
        ([70, 20, 10], True),  # our 70 of 100 is a quorum (67) by itself
        ([25, 25, 25, 25], False),  # the others' checks are on the way to the decision
        ([66, 34], False),  # 66 of 100: just short of a quorum
    ],
)
def test_a_proposer_deciding_alone_gets_the_interval_budget(powers: list[int], alone: bool) -> None:
    from consensus.types import Validator, ValidatorSet

    me = b"\x01" * 20
    validators = ValidatorSet([Validator(me, powers[0])]
                              + [Validator(bytes([2 + i]) * 20, p) for i, p in enumerate(powers[1:])])
    store = SimpleNamespace(validators_for=lambda height: validators)
    app = ConsensusApp(SimpleNamespace(store=store), proposer=me, budget_s=0.3,  # type: ignore[arg-type]
                       alone_budget_s=0.6)
    assert app.budget_for(5) == (0.6 if alone else 0.3)
    # learning scales to the budget the proposal was built under
    app.learn_proposal_cost(0, 2_000, 0.3, app.budget_for(5))
    assert app.max_attestations == (4_000 if alone else 2_000)
    # an interval shorter than the propose-timeout budget never shrinks it
    short = ConsensusApp(SimpleNamespace(store=store), proposer=me, budget_s=0.3,  # type: ignore[arg-type]
                         alone_budget_s=0.06)
    assert short.budget_for(5) == 0.3


@pytest.mark.parametrize(
    ("late_s", "budget_s"),
    [
        (-0.2, 0.3),  # early: the peers' timers start after ours
        (0.3, 0.3),  # 1.0 - 0.3 - 0.25 = 0.45 left: the budget fits
        (0.6, 0.15),  # 1.0 - 0.6 - 0.25: cut
        (0.9, 0.02),  # nothing left: the smallest budget, a small block rather than none
    ],
)
def test_a_late_proposer_builds_within_its_peers_propose_timeout(late_s: float,
                                                                 budget_s: float) -> None:
    """A proposer that starts its height ``late_s`` after the instant every node aims at
    (the last block's timestamp + the interval) builds only what still reaches its peers
    before their propose timeout (1 s here): its round is not lost to a slow build."""
    from consensus.types import Validator, ValidatorSet

    me = b"\x01" * 20
    validators = ValidatorSet([Validator(bytes([1 + i]) * 20, 25) for i in range(4)])
    head = SimpleNamespace(timestamp_ms=1_000_000)
    app = ConsensusApp(
        SimpleNamespace(store=SimpleNamespace(validators_for=lambda h: validators), head=head),  # type: ignore[arg-type]
        proposer=me, budget_s=0.3, alone_budget_s=0.6, interval_s=1.0, propose_timeout_s=1.0,
        clock=lambda: 1_000 + 1.0 + late_s)
    assert app.late_budget(0.3, 5) == pytest.approx(budget_s)
    # a proposer deciding alone has nobody waiting for it
    alone = ValidatorSet([Validator(me, 100)])
    app.app.store = SimpleNamespace(validators_for=lambda h: alone)
    assert app.late_budget(0.6, 5) == 0.6


def test_the_cap_shrinks_slowly_and_only_for_a_slow_block() -> None:
    """A small block's time is mostly fixed costs: one that took under half the budget
    never lowers a cap; a slower one lowers it at most by half; the floor still holds."""
    app = ConsensusApp(SimpleNamespace(), proposer=b"\x01" * 20, budget_s=0.3)  # type: ignore[arg-type]
    app.max_attestations = 4_000
    app.learn_proposal_cost(0, 100, 0.064)  # 468 at that pace, but quick: proves nothing
    assert app.max_attestations == 4_000
    app.learn_proposal_cost(0, 200, 0.16)  # 375 at that pace, and slow: halved
    assert app.max_attestations == 2_000
    for _ in range(8):
        app.learn_proposal_cost(0, 60, 1.0)
    assert app.max_attestations == PROPOSAL_MIN_ATTESTATIONS
    app.learn_proposal_cost(0, 100, 0.001)  # growth is not damped: the budget stops a build
    assert app.max_attestations == PROPOSAL_MAX_ATTESTATIONS


@pytest.mark.parametrize(("attestation_cost", "first"), [
    (150, 2_000),  # 0.3 s / 150 us
    (100, 3_000),  # the default weight
    (None, PROPOSAL_START_ATTESTATIONS),  # no chain to ask
    (0, PROPOSAL_START_ATTESTATIONS),  # a weight of 0 says nothing
])
def test_the_first_cap_is_the_chains_estimate(attestation_cost: int | None, first: int) -> None:
    calls: list[int] = []

    class FakeApplication:
        head = SimpleNamespace(height=7)

        def propose(self, height: int, proposer: bytes, *, max_txs: int,
                    max_attestations: int, budget: Any) -> bytes:
            calls.append(max_attestations)
            return b"block %d" % height

        def block_of(self, value: bytes) -> Any:
            return SimpleNamespace(transactions=[], attestations=[b"a"] * 2_500)

    ticks = iter(range(100))
    app = ConsensusApp(FakeApplication(), proposer=b"\x01" * 20, budget_s=0.3,  # type: ignore[arg-type]
                       attestation_cost=None if attestation_cost is None else lambda: attestation_cost,
                       timer=lambda: 0.1 * next(ticks))
    app.propose(8, 0)
    app.propose(9, 0)
    # the second proposal's cap is learnt from the first (2,500 in 0.1 s), not guessed
    assert calls == [first, 7_500]


def _peer_block(proposer: bytes, attestations: int) -> Any:
    return SimpleNamespace(header=SimpleNamespace(proposer=proposer), transactions=[],
                           attestations=[b"a"] * attestations)


def test_a_peers_block_checked_teaches_the_caps() -> None:
    """A validator proposes one height in n: the blocks it checks for its peers teach its
    caps too (a check executes the block as building does), its own only at build."""
    me, peer = b"\x01" * 20, b"\x02" * 20
    blocks = {b"peer": _peer_block(peer, 3_000), b"mine": _peer_block(me, 50_000),
              b"bad": _peer_block(peer, 50_000)}

    class FakeApplication:
        head = SimpleNamespace(height=7)

        checked: set[bytes] = set()

        def executed_already(self, value: bytes) -> bool:
            return value in self.checked

        def validate(self, height: int, value: bytes) -> bool:
            self.checked.add(value)
            return value != b"bad"

        def block_of(self, value: bytes) -> Any:
            return blocks[value]

    ticks = iter(range(100))
    app = ConsensusApp(FakeApplication(), proposer=me, budget_s=0.3,  # type: ignore[arg-type]
                       timer=lambda: 0.15 * next(ticks))
    assert app.validate(8, b"peer")
    assert app.max_attestations == 6_000  # 3,000 in 0.15 s: 6,000 in the 0.3 s budget
    assert app.attestations_learnt
    assert app.validate(8, b"mine")  # our own proposal: learnt when we built it
    assert not app.validate(8, b"bad")  # an invalid block teaches nothing
    assert app.max_attestations == 6_000
    # checked again (a commit message for it): a cache hit, not a measure of execution
    blocks[b"peer"] = _peer_block(peer, 3_000)
    ticks = iter([0.0, 1e-5])
    app.timer = lambda: next(ticks)
    assert app.validate(8, b"peer")
    assert app.max_attestations == 6_000


def test_a_late_proposers_cut_build_teaches_nothing() -> None:
    """A build under a cut budget (a late proposer) is mostly fixed costs: neither the
    caps nor the budget's fill share learn from it."""
    from consensus.types import Validator, ValidatorSet

    me = b"\x01" * 20
    validators = ValidatorSet([Validator(bytes([1 + i]) * 20, 25) for i in range(4)])
    built: list[float] = []

    class FakeApplication:
        head = SimpleNamespace(height=7, timestamp_ms=1_000_000)
        store = SimpleNamespace(validators_for=lambda h: validators)

        def propose(self, height: int, proposer: bytes, *, max_txs: int,
                    max_attestations: int, budget: Any) -> bytes:
            budget.start(with_attestations=True)
            budget.stopped = True  # the cut budget stopped the filling
            budget.finish()
            built.append(budget.seconds)
            return b"block"

        def block_of(self, value: bytes) -> Any:
            return SimpleNamespace(transactions=[], attestations=[b"a"] * 200)

    ticks = iter(range(100))
    app = ConsensusApp(FakeApplication(), proposer=me, budget_s=0.3,  # type: ignore[arg-type]
                       interval_s=1.0, propose_timeout_s=1.0,
                       clock=lambda: 1_000 + 1.0 + 0.9,  # 0.9 s late: 0.02 s budget
                       timer=lambda: 0.076 * next(ticks))
    app.max_attestations = 4_000
    app.attestations_learnt = True
    app.propose(8, 0)
    assert built == [pytest.approx(0.02)]
    assert app.max_attestations == 4_000  # not 200 * 0.3 / 0.076 = 789
    assert app.budget.fill_share == app.budget.START_SHARE  # not 0.14


def test_a_proposer_late_with_all_its_peers_is_not_cut() -> None:
    """When the last height ran long at every node (a burst's start: 2-3 s), none started
    the next one before its decision plus the commit wait: a proposer that decided with
    its peers (it waited for another's precommit) counts its lateness from there, not
    from the instant every node aimed at, and builds its full budget. One that was the
    last to precommit (its peers decided before it) is still cut."""
    from consensus.runner import HeightTimeline
    from consensus.types import Validator, ValidatorSet
    from node.network import decided_with_peers

    me = b"\x01" * 20
    validators = ValidatorSet([Validator(bytes([1 + i]) * 20, 25) for i in range(4)])
    head = SimpleNamespace(timestamp_ms=1_000_000, height=7)  # the aimed start: 1,001.0
    now = [1_002.3]
    app = ConsensusApp(
        SimpleNamespace(store=SimpleNamespace(validators_for=lambda h: validators), head=head),  # type: ignore[arg-type]
        proposer=me, budget_s=0.3, interval_s=1.0, propose_timeout_s=1.0,
        clock=lambda: now[0])
    # height 7 started at 1,000.0 here; we precommitted at 1.6 s and decided at 2.1 s
    waited = HeightTimeline(7, 1_000.0, 0, {"precommit@0": 1.6, "decide": 2.1})
    decided = decided_with_peers(waited, 7)
    assert decided == pytest.approx(1_002.1)
    app.peers_start = (8, decided + 0.2)  # what NetworkService sets at the commit
    assert app.late_budget(0.3, 8) == 0.3  # 1,002.3 is when the peers started too
    assert app.late_budget(0.3, 9) == pytest.approx(0.02)  # another height's: not used
    # we were the last to precommit: the others decided (and started) before us
    last = HeightTimeline(7, 1_000.0, 0, {"precommit@0": 2.08, "decide": 2.1})
    assert decided_with_peers(last, 7) is None
    assert decided_with_peers(HeightTimeline(7, 1_000.0, 1, {"precommit@0": 1.6,
                                                             "decide": 2.1}), 7) is None
    assert decided_with_peers(waited, 6) is None
    app.peers_start = None
    assert app.late_budget(0.3, 8) == pytest.approx(0.02)  # 1.3 s late: the smallest budget


def test_a_round_0_proposal_on_time_carries_the_aimed_instant() -> None:
    """The timestamp of a proposal started at most STAMP_AIMED_MAX_S after the instant
    every node aimed the height at (head timestamp + interval) is that instant, so the
    next height is aimed a whole interval later and the cadence does not drift."""
    from node.network import STAMP_AIMED_MAX_S

    now = [1_000.5]
    fake = SimpleNamespace(head=SimpleNamespace(timestamp_ms=999_500))
    app = ConsensusApp(fake, proposer=b"\x01" * 20, interval_s=1.0,  # type: ignore[arg-type]
                       propose_timeout_s=1.0, clock=lambda: now[0])
    assert app.aimed_timestamp_ms() == 1_000_500  # on the aimed instant
    now[0] += STAMP_AIMED_MAX_S / 2
    assert app.aimed_timestamp_ms() == 1_000_500  # a little after it
    now[0] += STAMP_AIMED_MAX_S
    assert app.aimed_timestamp_ms() is None  # late: its own clock
    now[0] = 1_000.4
    assert app.aimed_timestamp_ms() is None  # before it (a round that started early)
    assert ConsensusApp(fake, proposer=b"\x01" * 20).aimed_timestamp_ms() is None  # type: ignore[arg-type]
