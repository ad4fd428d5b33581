"""Proposer choice: weighted round-robin, in proportion to voting power."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.consensus.helpers import ADDRESSES, validator_set


@pytest.mark.parametrize("powers", [(1, 1, 1, 1), (1, 2, 3, 4), (5, 10, 20, 30), (1, 1, 1, 97)])
def test_each_validator_proposes_in_proportion_to_its_power(powers) -> None:
    validators = validator_set(powers)
    total = sum(powers)
    by_round = Counter(validators.proposer_for_round(r).address for r in range(total))
    assert by_round == {a: p for a, p in zip(ADDRESSES, powers, strict=True)}
    by_height, current = Counter(), validators
    for _ in range(total):
        by_height[current.proposer().address] += 1
        current = current.next_for_height()
    assert by_height == by_round


def test_round_zero_proposer_is_the_sets_proposer_and_rotates_per_height() -> None:
    validators = validator_set()
    assert validators.proposer_for_round(0) == validators.proposer()
    assert validators.next_for_height().proposer() == validators.proposer_for_round(1)
