"""The rules of Algorithm 1, one by one, on a single machine fed by hand-made messages."""

from __future__ import annotations

import pytest

from consensus.effects import Broadcast, ScheduleTimeout, Step
from consensus.machine import MAX_ROUNDS_AHEAD, ConsensusMachine, Timeouts
from consensus.messages import CommitMessage, ProposalMessage
from consensus.types import Commit, Proposal, Vote
from consensus.wal import Signer, SigningGuard
from tests.consensus.helpers import (
    ADDRESSES,
    CHAIN_ID,
    KEYS,
    NIL,
    PRECOMMIT,
    PREVOTE,
    FakeApp,
    Harness,
    broadcasts,
    decisions,
    evidence,
    h,
    rejections,
    timeouts,
    votes_sent,
)

A = b"valid A"
B = b"valid B"
BAD = b"invalid C"

# --- starting a height and proposing -------------------------------------------


def test_start_height_as_non_proposer_only_schedules_timeouts() -> None:
    t = Harness()
    assert t.start_effects == [
        ScheduleTimeout(Step.REBROADCAST, 1, 0, 1.0),
        ScheduleTimeout(Step.PROPOSE, 1, 0, 1.0),
    ]
    assert (t.machine.height, t.machine.round, t.machine.step) == (1, 0, Step.PROPOSE)


def test_start_height_as_proposer_proposes_and_prevotes_own_value() -> None:
    t = Harness(proposer_of_round=0)
    [proposal] = [m for m in broadcasts(t.start_effects) if isinstance(m, ProposalMessage)]
    assert proposal.value == b"valid h=1 r=0"
    assert proposal.proposal.pol_round == -1
    assert proposal.proposal.signer(CHAIN_ID) == ADDRESSES[t.me]
    assert votes_sent(t.start_effects) == [(PREVOTE, 0, h(proposal.value))]
    assert t.app.proposed == [(1, 0)]


def test_start_height_refuses_to_go_back() -> None:
    t = Harness()
    with pytest.raises(ValueError):
        t.machine.start_height(1, t.validators)


# --- line 22: prevote on a fresh proposal, and line 28: on a proof of lock ---------


def _unlocked(t: Harness) -> None:
    pass


def _locked_a_round0(t: Harness) -> None:
    t.lock_on(A, 0)
    assert (t.machine.locked_round, t.machine.locked_hash) == (0, h(A))


def _locked_a_round1_with_b_pol_round0(t: Harness) -> None:
    t.feed_votes(PREVOTE, 0, h(B), t.others())  # B had a quorum in round 0 that we missed
    t.feed(t.proposal(1, A))
    t.skip_to(1)
    t.feed_votes(PREVOTE, 1, h(A), t.others()[:2])
    assert (t.machine.locked_round, t.machine.locked_hash) == (1, h(A))


def _pol_round1_for(value: bytes):
    def setup(t: Harness) -> None:
        t.feed_votes(PREVOTE, 1, h(value), t.others())
    return setup


PREVOTE_RULES = [
    # (scenario, setup, proposal value, pol_round, setup of the proof of lock, expected prevote)
    ("unlocked, valid value", _unlocked, A, -1, None, h(A)),
    ("unlocked, invalid value", _unlocked, BAD, -1, None, NIL),
    ("locked on A, fresh B", _locked_a_round0, B, -1, None, NIL),
    ("locked on A, fresh A", _locked_a_round0, A, -1, None, h(A)),
    ("locked on A@0, B with POL@1", _locked_a_round0, B, 1, _pol_round1_for(B), h(B)),
    ("locked on A@0, A with POL@1", _locked_a_round0, A, 1, _pol_round1_for(A), h(A)),
    ("unlocked, invalid value with POL@1", _unlocked, BAD, 1, _pol_round1_for(BAD), NIL),
    ("locked on A@1, B with POL@0", _locked_a_round1_with_b_pol_round0, B, 0, None, NIL),
    ("unlocked, POL round not seen", _unlocked, A, 1, None, None),
]


@pytest.mark.parametrize("name,setup,value,pol_round,pol,expected", PREVOTE_RULES,
                         ids=[r[0] for r in PREVOTE_RULES])
def test_prevote_on_proposal(name, setup, value, pol_round, pol, expected) -> None:
    t = Harness()
    setup(t)
    if pol is not None:
        pol(t)
    t.feed(t.proposal(2, value, pol_round))
    effects = t.skip_to(2) if t.machine.round < 2 else []
    assert t.machine.round == 2
    prevotes = [v for v in votes_sent(effects, PREVOTE) if v[1] == 2]
    if expected is None:
        assert prevotes == [] and t.machine.step == Step.PROPOSE  # waits for the proof of lock
    else:
        assert prevotes == [(PREVOTE, 2, expected)]
        assert t.machine.step == Step.PREVOTE


def test_proposal_validity_is_asked_once_per_value() -> None:
    t = Harness()
    t.feed(t.proposal(0, A))
    t.feed_votes(PREVOTE, 0, h(A), t.others())
    t.feed_votes(PRECOMMIT, 0, h(A), t.others())
    assert t.app.validated == [A]


# --- lines 34-48: prevote and precommit steps ---------------------------------------


def test_quorum_of_any_prevotes_schedules_prevote_timeout_once() -> None:
    t = Harness()
    t.feed(t.proposal(0, BAD))  # we prevote nil
    a, b, c = t.others()
    effects = t.feed(t.vote(a, PREVOTE, 0, h(A)))
    assert timeouts(effects) == []
    effects = t.feed(t.vote(b, PREVOTE, 0, h(B)))
    assert timeouts(effects) == [ScheduleTimeout(Step.PREVOTE, 1, 0, 0.5)]
    assert timeouts(t.feed(t.vote(c, PREVOTE, 0, h(B)))) == []


def test_prevote_timeout_precommits_nil() -> None:
    t = Harness()
    t.feed(t.proposal(0, BAD))
    effects = t.machine.on_timeout(Step.PREVOTE, 1, 0)
    assert votes_sent(effects) == [(PRECOMMIT, 0, NIL)]
    assert t.machine.step == Step.PRECOMMIT


def test_prevote_quorum_for_value_locks_and_precommits() -> None:
    t = Harness()
    effects = t.lock_on(A, 0)
    assert votes_sent(effects) == [(PREVOTE, 0, h(A)), (PRECOMMIT, 0, h(A))]
    m = t.machine
    assert (m.locked_round, m.locked_hash, m.valid_round, m.valid_hash) == (0, h(A), 0, h(A))
    assert m.step == Step.PRECOMMIT


def test_prevote_quorum_after_precommit_updates_valid_value_only() -> None:
    t = Harness()
    t.feed(t.proposal(0, A))
    t.feed_votes(PREVOTE, 0, NIL, t.others()[:1])
    t.feed(t.vote(t.others()[1], PREVOTE, 0, h(A)))
    assert votes_sent(t.machine.on_timeout(Step.PREVOTE, 1, 0)) == [(PRECOMMIT, 0, NIL)]
    effects = t.feed(t.vote(t.others()[2], PREVOTE, 0, h(A)))  # now A has 3 of 4
    assert votes_sent(effects) == []
    m = t.machine
    assert (m.locked_round, m.valid_round, m.valid_hash) == (-1, 0, h(A))


def test_prevote_quorum_for_value_without_its_proposal_does_not_lock() -> None:
    t = Harness()
    t.machine.on_timeout(Step.PROPOSE, 1, 0)
    effects = t.feed_votes(PREVOTE, 0, h(A), t.others())
    assert votes_sent(effects) == [] and t.machine.locked_round == -1


def test_prevote_quorum_for_nil_precommits_nil() -> None:
    t = Harness()
    t.machine.on_timeout(Step.PROPOSE, 1, 0)
    effects = t.feed_votes(PREVOTE, 0, NIL, t.others()[:2])
    assert votes_sent(effects) == [(PRECOMMIT, 0, NIL)]


def test_quorum_of_any_precommits_schedules_precommit_timeout_once() -> None:
    t = Harness()
    a, b, c = t.others()
    effects = t.feed(t.vote(a, PRECOMMIT, 0, h(A)), t.vote(b, PRECOMMIT, 0, NIL))
    assert [x for x in timeouts(effects) if x.step == Step.PRECOMMIT] == []
    effects = t.feed(t.vote(c, PRECOMMIT, 0, h(B)))
    assert timeouts(effects) == [ScheduleTimeout(Step.PRECOMMIT, 1, 0, 0.5)]
    assert timeouts(t.machine.on_timeout(Step.PROPOSE, 1, 0)) == []  # still once


def test_precommit_timeout_starts_next_round() -> None:
    t = Harness(proposer_of_round=1)
    effects = t.machine.on_timeout(Step.PRECOMMIT, 1, 0)
    assert t.machine.round == 1 and t.machine.step == Step.PREVOTE
    [proposal] = [m for m in broadcasts(effects) if isinstance(m, ProposalMessage)]
    assert proposal.value == b"valid h=1 r=1"
    assert ScheduleTimeout(Step.PROPOSE, 1, 1, 1.5) in effects


@pytest.mark.parametrize("step,height,round_", [
    (Step.PROPOSE, 1, 1),  # another round
    (Step.PROPOSE, 2, 0),  # another height
    (Step.PREVOTE, 1, 0),  # step already left
    (Step.PRECOMMIT, 0, 0),
])
def test_stale_timeouts_are_ignored(step, height, round_) -> None:
    t = Harness()
    assert t.machine.on_timeout(step, height, round_) == []
    assert (t.machine.round, t.machine.step) == (0, Step.PROPOSE)


def test_propose_timeout_prevotes_nil() -> None:
    t = Harness()
    assert votes_sent(t.machine.on_timeout(Step.PROPOSE, 1, 0)) == [(PREVOTE, 0, NIL)]


# --- line 49: deciding, line 55: skipping rounds -----------------------------------


def test_precommit_quorum_decides_with_a_verifiable_commit() -> None:
    t = Harness()
    t.lock_on(A, 0)
    effects = t.feed_votes(PRECOMMIT, 0, h(A), t.others()[:2])
    [decide] = decisions(effects)
    assert (decide.height, decide.round, decide.value) == (1, 0, A)
    t.validators.verify_commit(CHAIN_ID, 1, h(A), decide.commit)
    assert t.machine.step == Step.COMMIT and t.machine.decision == decide
    assert t.feed_votes(PRECOMMIT, 0, h(A), t.others()[2:]) == []  # decided once


def test_decides_on_precommits_of_an_older_round() -> None:
    t = Harness()
    t.skip_to(2)
    effects = t.feed_votes(PRECOMMIT, 0, h(A), t.others())
    assert decisions(effects) == []  # no value for that hash yet
    [decide] = decisions(t.feed(t.proposal(0, A)))
    assert (decide.round, decide.value) == (0, A)


def test_never_decides_an_invalid_value() -> None:
    t = Harness()
    t.feed(t.proposal(0, BAD))
    assert decisions(t.feed_votes(PRECOMMIT, 0, h(BAD), t.others())) == []


@pytest.mark.parametrize("senders,expected_round", [(1, 0), (2, 3)])
def test_f_plus_one_messages_of_a_higher_round_skip_to_it(senders, expected_round) -> None:
    t = Harness()
    effects = t.feed_votes(PREVOTE, 3, NIL, t.others()[:senders])
    assert t.machine.round == expected_round
    if expected_round == 3:
        assert ScheduleTimeout(Step.PROPOSE, 1, 3, 1.0 + 0.5 * 3) in effects


def test_round_skip_counts_power_not_heads() -> None:
    t = Harness(powers=(1, 1, 1, 4))
    strong = ADDRESSES.index(max(t.validators.validators, key=lambda v: v.power).address)
    if strong == t.me:
        pytest.skip("the strong validator is the node under test")
    t.feed(t.vote(strong, PREVOTE, 2, NIL))  # 4 of 7 > 1/3 on its own
    assert t.machine.round == 2


# --- timeouts ------------------------------------------------------------------------


@pytest.mark.parametrize("step,round_,seconds", [
    (Step.PROPOSE, 0, 1.0), (Step.PROPOSE, 1, 1.5), (Step.PROPOSE, 4, 3.0),
    (Step.PREVOTE, 0, 0.5), (Step.PREVOTE, 2, 1.5),
    (Step.PRECOMMIT, 0, 0.5), (Step.PRECOMMIT, 3, 2.0),
    (Step.REBROADCAST, 7, 1.0),
])
def test_default_timeouts_grow_half_a_second_per_round(step, round_, seconds) -> None:
    assert Timeouts().compute_duration(step, round_) == pytest.approx(seconds)


def test_timeouts_are_configurable() -> None:
    t = Timeouts(propose=3.0, propose_delta=1.0)
    assert t.compute_duration(Step.PROPOSE, 2) == 5.0
    with pytest.raises(ValueError):
        t.compute_duration(Step.COMMIT, 0)


# --- invalid and unwanted messages --------------------------------------------------


def _forged_vote(t: Harness) -> Vote:
    v = t.vote(t.others()[0], PREVOTE, 0, h(A))
    return Vote(v.type, v.height, v.round, v.block_hash, ADDRESSES[t.others()[1]], v.signature)


def _outsider_vote(t: Harness) -> Vote:
    key = b"\x42" * 32
    from consensus.crypto import address_of_private_key
    return Vote.create(CHAIN_ID, key, PREVOTE, 1, 0, h(A), address_of_private_key(key))


def _wrong_proposer(t: Harness) -> ProposalMessage:
    return t.proposal(0, A, proposer=t.proposer_index(1))


def _bad_block_hash(t: Harness) -> ProposalMessage:
    return ProposalMessage(t.proposal(0, A).proposal, B)


def _pol_not_below_round(t: Harness) -> ProposalMessage:
    i = t.proposer_index(0)
    p = Proposal.create(CHAIN_ID, KEYS[i], 1, 0, 0, h(A), ADDRESSES[i])
    return ProposalMessage(p, A)


def _bad_vote_type(t: Harness) -> Vote:
    i = t.others()[0]
    return Vote.create(CHAIN_ID, KEYS[i], 7, 1, 0, h(A), ADDRESSES[i])


def _other_chain_vote(t: Harness) -> Vote:
    i = t.others()[0]
    return Vote.create(CHAIN_ID + 1, KEYS[i], PREVOTE, 1, 0, h(A), ADDRESSES[i])


def _weak_commit(t: Harness) -> CommitMessage:
    votes = [t.vote(i, PRECOMMIT, 0, h(A)) for i in t.others()[:2]]
    return CommitMessage(Commit.from_votes(1, 0, h(A), votes), A)


INVALID = [
    ("forged vote signature", _forged_vote, "bad_signature"),
    ("vote signed for another chain", _other_chain_vote, "bad_signature"),
    ("vote from a non-validator", _outsider_vote, "unknown_validator"),
    ("vote of unknown type", _bad_vote_type, "malformed"),
    ("proposal from the wrong proposer", _wrong_proposer, "wrong_proposer"),
    ("proposal whose value does not hash to it", _bad_block_hash, "bad_block_hash"),
    ("proposal with pol_round >= round", _pol_not_below_round, "malformed"),
    ("commit with 2 of 4 signatures", _weak_commit, "invalid_commit"),
]


@pytest.mark.parametrize("name,make,code", INVALID, ids=[r[0] for r in INVALID])
def test_invalid_messages_are_rejected_with_a_code(name, make, code) -> None:
    t = Harness()
    effects = t.feed(make(t))
    assert [r.code for r in rejections(effects)] == [code]
    assert t.machine.stats[f"rejected_{code}"] == 1
    assert broadcasts(effects) == [] and decisions(effects) == []
    assert (t.machine.round, t.machine.step) == (0, Step.PROPOSE)


def test_duplicate_messages_are_ignored_without_penalty() -> None:
    t = Harness()
    vote = t.vote(t.others()[0], PREVOTE, 0, h(A))
    proposal = t.proposal(0, A)
    assert rejections(t.feed(vote, vote, proposal, proposal)) == []
    assert t.machine.stats["duplicate_vote"] == 1
    assert t.machine.stats["duplicate_proposal"] == 1


def test_far_future_rounds_and_heights_are_dropped() -> None:
    t = Harness()
    i = t.others()[0]
    far_round = t.vote(i, PREVOTE, MAX_ROUNDS_AHEAD + 1, NIL)
    far_height = t.vote(i, PREVOTE, 0, NIL, height=3)
    assert t.feed(far_round, far_height) == []
    assert t.machine.stats["dropped_far_future_round"] == 1
    assert t.machine.stats["dropped_far_future_height"] == 1


# --- equivocation ----------------------------------------------------------------


def test_conflicting_votes_produce_evidence_once_and_the_first_vote_stays_counted() -> None:
    t = Harness()
    i = t.others()[0]
    first, second, third = (t.vote(i, PREVOTE, 0, x) for x in (h(A), h(B), NIL))
    assert evidence(t.feed(first)) == []
    [found] = evidence(t.feed(second))
    assert found.evidence.verify(CHAIN_ID, t.validators) == ADDRESSES[i]
    assert {found.evidence.vote_a, found.evidence.vote_b} == {first, second}
    assert evidence(t.feed(third)) == []
    prevotes = t.machine._get_vote_set(0, PREVOTE)
    assert prevotes.power_any == 1 and prevotes.get_first_votes() == [first]


# --- heights: buffering, following, re-proposing, catching up --------------------


def test_messages_for_the_next_height_are_replayed_when_it_starts() -> None:
    t = Harness()
    t.lock_on(A, 0)
    t.feed_votes(PRECOMMIT, 0, h(A), t.others()[:2])
    assert t.machine.decision is not None
    next_set = t.validators.next_for_height()
    t.validators = next_set
    t.height = 2
    value = b"valid next"
    early = [t.proposal(0, value)] + [t.vote(i, PRECOMMIT, 0, h(value)) for i in t.others()]
    assert t.feed(*early) == []
    effects = t.machine.start_height(2, next_set)
    [decide] = decisions(effects)
    assert (decide.height, decide.value) == (2, value)


def test_a_non_validator_follows_and_decides_without_sending() -> None:
    t = Harness(voting=False)
    effects = t.feed(t.proposal(0, A))
    effects += t.feed_votes(PREVOTE, 0, h(A), t.others())
    effects += t.feed_votes(PRECOMMIT, 0, h(A), t.others())
    assert broadcasts(effects) == []
    assert [d.value for d in decisions(effects)] == [A]


def test_proposer_re_proposes_its_valid_value_with_the_proof_of_lock() -> None:
    t = Harness(proposer_of_round=1)
    t.lock_on(A, 0)
    t.feed_votes(PRECOMMIT, 0, NIL, t.others()[:2])
    effects = t.machine.on_timeout(Step.PRECOMMIT, 1, 0)
    sent = broadcasts(effects)
    [proposal] = [m for m in sent if isinstance(m, ProposalMessage)]
    assert (proposal.value, proposal.proposal.pol_round, proposal.round) == (A, 0, 1)
    pol = [m for m in sent if isinstance(m, Vote) and m.round == 0]
    assert len(pol) == 3 and all(v.block_hash == h(A) and v.type == PREVOTE for v in pol)
    assert t.app.proposed == []  # the value came from validValue, not from the app


def test_rebroadcast_tick_resends_own_messages_and_reschedules() -> None:
    t = Harness()
    t.feed(t.proposal(0, A))
    # sent since the last tick: not re-sent yet (it has not been out a whole period)
    effects = t.machine.on_timeout(Step.REBROADCAST, 1, 0)
    assert ScheduleTimeout(Step.REBROADCAST, 1, 0, 1.0) in effects
    assert votes_sent(effects) == []
    for _ in range(2):  # then on every tick
        effects = t.machine.on_timeout(Step.REBROADCAST, 1, 0)
        assert ScheduleTimeout(Step.REBROADCAST, 1, 0, 1.0) in effects
        assert votes_sent(effects) == [(PREVOTE, 0, h(A))]


def test_own_votes_wait_a_period_but_the_proof_of_a_valid_value_does_not() -> None:
    t = Harness()
    t.feed(t.proposal(0, A))
    t.feed_votes(PREVOTE, 0, h(A), t.others()[:2])  # a quorum: A is our valid value
    assert t.machine.valid_hash == h(A)
    first = votes_sent(t.machine.on_timeout(Step.REBROADCAST, 1, 0))
    assert first.count((PREVOTE, 0, h(A))) == 3  # the proof (ours among its three) at once
    assert (PRECOMMIT, 0, h(A)) not in first  # our own votes are new
    second = votes_sent(t.machine.on_timeout(Step.REBROADCAST, 1, 0))
    assert second.count((PREVOTE, 0, h(A))) == 1 + 3  # ours, and the proof
    assert (PRECOMMIT, 0, h(A)) in second


def _proposals_sent(effects) -> list[ProposalMessage]:
    return [m for m in broadcasts(effects) if isinstance(m, ProposalMessage)]


def test_rebroadcast_tick_does_not_resend_a_proposal_nobody_asked_for() -> None:
    t = Harness(proposer_of_round=0)
    [proposal] = _proposals_sent(t.start_effects)
    t.feed_votes(PREVOTE, 0, proposal.proposal.block_hash, t.others()[:2])  # a quorum has it
    for tick in range(5):
        effects = t.machine.on_timeout(Step.REBROADCAST, 1, 0)
        assert _proposals_sent(effects) == []
        if tick:  # (from the second tick after they were sent)
            assert (PREVOTE, 0, proposal.proposal.block_hash) in votes_sent(effects)  # votes are
    assert t.machine.stats["proposal_rebroadcast"] == 0


def test_the_first_tick_after_proposing_resends_once_while_the_proposal_lacks_a_quorum() -> None:
    t = Harness(proposer_of_round=0)
    [proposal] = _proposals_sent(t.start_effects)
    t.feed_votes(PREVOTE, 0, proposal.proposal.block_hash, t.others()[:1])  # 2 of 4: no quorum
    assert _proposals_sent(t.machine.on_timeout(Step.REBROADCAST, 1, 0)) == [proposal]
    for _ in range(3):  # then only a peer's vote asks for it again
        assert _proposals_sent(t.machine.on_timeout(Step.REBROADCAST, 1, 0)) == []


def test_a_peer_voting_nil_in_our_round_gets_the_proposal_at_most_once_a_period() -> None:
    t = Harness(proposer_of_round=0)
    [proposal] = _proposals_sent(t.start_effects)
    first, second, third = t.others()
    # just proposed: a nil vote may have crossed it in flight, so wait for the tick
    assert _proposals_sent(t.feed(t.vote(first, PREVOTE, 0, NIL))) == []
    assert _proposals_sent(t.machine.on_timeout(Step.REBROADCAST, 1, 0)) == [proposal]
    assert _proposals_sent(t.machine.on_timeout(Step.REBROADCAST, 1, 0)) == []  # answered
    # a new request in a fresh period is answered at once, the next one on the tick
    assert _proposals_sent(t.feed(t.vote(second, PREVOTE, 0, NIL))) == [proposal]
    assert _proposals_sent(t.feed(t.vote(third, PREVOTE, 0, NIL))) == []
    assert _proposals_sent(t.feed(t.vote(third, PREVOTE, 0, NIL))) == []  # a repeat asks nothing
    assert _proposals_sent(t.machine.on_timeout(Step.REBROADCAST, 1, 0)) == [proposal]
    assert _proposals_sent(t.machine.on_timeout(Step.REBROADCAST, 1, 0)) == []
    assert t.machine.stats["proposal_rebroadcast"] == 3


def test_a_peer_still_voting_at_our_decided_height_gets_the_commit() -> None:
    t = Harness()
    t.lock_on(A, 0)
    [decide] = decisions(t.feed_votes(PRECOMMIT, 0, h(A), t.others()[:2]))
    t.machine.start_height(2, t.validators.next_for_height())
    lagging = t.others()[2]
    t.feed(t.vote(lagging, PREVOTE, 1, NIL))  # a late vote alone is normal
    first_tick = broadcasts(t.machine.on_timeout(Step.REBROADCAST, 2, 0))
    assert not any(isinstance(m, CommitMessage) for m in first_tick)
    t.feed(t.vote(lagging, PRECOMMIT, 1, NIL))  # still voting a tick later: it is stuck
    second_tick = broadcasts(t.machine.on_timeout(Step.REBROADCAST, 2, 0))
    [catchup] = [m for m in second_tick if isinstance(m, CommitMessage)]
    assert (catchup.commit, catchup.value) == (decide.commit, A)

    # and the lagging machine decides from it
    behind = ConsensusMachine(CHAIN_ID, FakeApp(), Signer.in_memory(KEYS[lagging], CHAIN_ID))
    behind.start_height(1, t.validators)
    [decided] = decisions(behind.on_message(catchup))
    assert (decided.height, decided.value, decided.commit) == (1, A, decide.commit)


# --- signing only through the guard -----------------------------------------------


def test_restarted_machine_never_signs_a_conflicting_vote(tmp_path) -> None:
    path = tmp_path / "signing.json"
    with SigningGuard(path) as guard:
        t = Harness(guard=guard)
        [first] = [m for m in broadcasts(t.feed(t.proposal(0, A))) if isinstance(m, Vote)]

    # crash and restart at the same height: it resumes where its guard says it was
    with SigningGuard(path) as guard:
        again = Harness(guard=guard)
        assert (again.machine.round, again.machine.step) == (0, Step.PREVOTE)
        assert first in broadcasts(again.start_effects)  # the prevote it signed, re-sent
        effects = again.feed(again.proposal(0, B))  # e.g. a byzantine proposer's other value
        assert votes_sent(effects) == []  # no second prevote is even attempted
        assert again.machine.stats["double_sign_refused"] == 0

    with SigningGuard(path) as guard:
        same = Harness(guard=guard)
        [resent] = [m for m in broadcasts(same.start_effects) if isinstance(m, Vote)]
        assert resent == first  # identical message, identical signature


def test_broadcast_effects_carry_signed_messages() -> None:
    t = Harness(proposer_of_round=0)
    for effect in t.start_effects:
        if isinstance(effect, Broadcast):
            m = effect.message
            if isinstance(m, ProposalMessage):
                assert m.proposal.signer(CHAIN_ID) == ADDRESSES[t.me]
            elif isinstance(m, Vote):
                assert m.signer(CHAIN_ID) == ADDRESSES[t.me]
