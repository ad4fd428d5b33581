"""Vote sets: tallies by power, quorums, duplicates and equivocation."""

from __future__ import annotations

import pytest

from consensus.types import Vote
from consensus.votes import MAX_CONFLICTING_VOTES, VoteSet
from tests.consensus.helpers import ADDRESSES, CHAIN_ID, KEYS, NIL, PREVOTE, h, validator_set

A, B = h(b"A"), h(b"B")


def _vote(i: int, block_hash: bytes, round_: int = 0) -> Vote:
    return Vote.create(CHAIN_ID, KEYS[i], PREVOTE, 1, round_, block_hash, ADDRESSES[i])


@pytest.mark.parametrize("powers,voters,quorum_for_a", [
    ((1, 1, 1, 1), [0, 1], False),
    ((1, 1, 1, 1), [0, 1, 2], True),  # 3 > 2/3 of 4
    ((1, 1, 1, 0), [0, 1], False),  # zero power is not a validator: 2 of 3 is exactly 2/3
    ((1, 2, 3, 4), [3, 2], True),  # 7 of 10
    ((1, 2, 3, 4), [3, 1, 0], True),  # 7 of 10
    ((1, 2, 3, 4), [3, 1], False),  # 6 of 10
    ((1, 1, 1, 3), [3], False),  # 3 of 6 is not more than 2/3
])
def test_quorum_is_more_than_two_thirds_of_power(powers, voters, quorum_for_a) -> None:
    vs = VoteSet(validator_set(powers), 1, 0, PREVOTE)
    for i in voters:
        vs.add(_vote(i, A))
    assert vs.is_quorum_for(A) == quorum_for_a
    assert vs.get_majority() == (A if quorum_for_a else None)


def test_quorum_any_counts_votes_for_different_blocks() -> None:
    vs = VoteSet(validator_set(), 1, 0, PREVOTE)
    for i, block_hash in enumerate([A, B, NIL]):
        vs.add(_vote(i, block_hash))
    assert vs.is_quorum_any() and vs.get_majority() is None
    assert (vs.power_for(A), vs.power_for(B), vs.power_for(NIL), vs.power_any) == (1, 1, 1, 3)


def test_repeated_vote_is_not_counted_twice() -> None:
    vs = VoteSet(validator_set(), 1, 0, PREVOTE)
    assert vs.add(_vote(0, A)) == (True, None)
    assert vs.add(_vote(0, A)) == (False, None)
    assert vs.power_for(A) == 1 and _vote(0, A) in vs


def test_equivocation_gives_evidence_once_and_keeps_the_first_vote_counted() -> None:
    vs = VoteSet(validator_set(), 1, 0, PREVOTE)
    first, second = _vote(0, A), _vote(0, B)
    vs.add(first)
    added, evidence = vs.add(second)
    assert added and evidence is not None
    assert evidence.verify(CHAIN_ID, validator_set()) == ADDRESSES[0]
    assert vs.get_first_votes() == [first] and vs.power_any == 1
    # the second vote is a valid signature for B: it counts for B (a commit may need it)
    assert vs.power_for(A) == 1 and vs.power_for(B) == 1
    assert vs.add(_vote(0, NIL))[1] is None  # evidence only once per validator


def test_conflicting_votes_kept_per_validator_are_bounded() -> None:
    vs = VoteSet(validator_set(), 1, 0, PREVOTE)
    vs.add(_vote(0, A))
    hashes = [h(b"%d" % i) for i in range(MAX_CONFLICTING_VOTES + 3)]
    added = [vs.add(_vote(0, x))[0] for x in hashes]
    assert added.count(True) == MAX_CONFLICTING_VOTES


def test_votes_of_other_sets_or_non_validators_are_refused() -> None:
    vs = VoteSet(validator_set((1, 1, 1, 0)), 1, 0, PREVOTE)
    with pytest.raises(ValueError):
        vs.add(_vote(0, A, round_=1))
    with pytest.raises(ValueError):
        vs.add(_vote(3, A))  # power 0
