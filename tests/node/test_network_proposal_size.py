"""Proposal size by time (``node.network.ConsensusApp``): a proposal holds as many
transactions as this node builds in about ``PROPOSAL_BUDGET_S``, learnt from its last
sizeable proposal, within [PROPOSAL_MIN_TXS, PROPOSAL_MAX_TXS]. Without the cap, full
blocks under load missed the propose timeout and four validators stalled."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from node.network import (
    PROPOSAL_MAX_TXS,
    PROPOSAL_MIN_ATTESTATIONS,
    PROPOSAL_MIN_TXS,
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
        (300, 10.0, PROPOSAL_MIN_TXS),  # a slow moment never starves the chain
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
        (500, 2000, 1.2, PROPOSAL_MIN_TXS, 500),
        (1000, 2000, 1.2, 250, 500),
        (0, 1000, 0.15, PROPOSAL_START_TXS, 2000),  # no transactions: their cap stays
        (500, 10, 0.6, 250, PROPOSAL_START_ATTESTATIONS),  # too few to learn from
        (0, 2000, 100.0, PROPOSAL_START_TXS, PROPOSAL_MIN_ATTESTATIONS),
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
