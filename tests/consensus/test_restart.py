"""A validator restarted in the middle of a height resumes it: from its signing guard
and its consensus message log it re-enters the round it last signed in, re-sends what
it signed there and always has a timeout pending, so neither a restart nor a refusal of
its guard can leave it silent (docs/consensus.md, "Restart")."""

from __future__ import annotations

from pathlib import Path

from consensus.effects import Step
from consensus.messages import ProposalMessage
from consensus.types import NIL, PRECOMMIT, PREVOTE, Vote
from consensus.wal import MemoryDisk, MessageLog, SigningGuard
from tests.consensus.helpers import Harness, broadcasts, h, timeouts, votes_sent

A = b"valid block A"
B = b"valid block B"


def _node(tmp: Path, **kw) -> Harness:
    """A harness whose guard and message log are files in ``tmp``, as a node's are."""
    t = Harness(guard=SigningGuard(tmp / "signing.json"), start=False, **kw)
    t.machine.message_log = MessageLog.at(tmp / "wal")
    t.start_effects = t.machine.start_height(t.height, t.validators)
    return t


def _crash(t: Harness) -> None:
    t.machine.signer.guard.close()  # type: ignore[union-attr]
    t.machine.message_log.close()  # type: ignore[union-attr]


def _pending(effects, step: Step, round_: int) -> bool:
    return any(e.step == step and e.round == round_ for e in timeouts(effects))


def test_the_frozen_devnet_case_prevoted_in_round_1_resumes_round_1(tmp_path) -> None:
    # every validator had prevoted in round 1 of the height when the devnet stopped
    t = _node(tmp_path)
    t.feed(t.proposal(0, A))  # prevote A in round 0
    t.feed_votes(PREVOTE, 0, NIL, t.others())  # round 0 fails: precommit nil
    t.feed_votes(PRECOMMIT, 0, NIL, t.others())
    t.machine.on_timeout(Step.PRECOMMIT, 1, 0)
    t.machine.on_timeout(Step.PROPOSE, 1, 1)  # no proposal in round 1: prevote nil
    [prevote] = [m for m in t.machine._own if isinstance(m, Vote) and m.round == 1]
    _crash(t)

    again = _node(tmp_path)  # nobody else re-sends anything yet
    assert (again.machine.round, again.machine.step) == (1, Step.PREVOTE)
    assert prevote in broadcasts(again.start_effects)  # peers can count it again
    assert _pending(again.start_effects, Step.PREVOTE, 1)  # and it does not wait forever
    effects = again.machine.on_timeout(Step.PREVOTE, 1, 1)
    assert votes_sent(effects) == [(PRECOMMIT, 1, NIL)]
    assert again.machine.stats["double_sign_refused"] == 0
    _crash(again)


def test_a_restarted_locked_proposer_re_proposes_its_locked_value_with_the_proof(tmp_path) -> None:
    # locked on A in round 0; restarted, it is the proposer of round 3 and must
    # re-propose A, with the prevotes that let the others accept it (line 28)
    t = _node(tmp_path)
    t.lock_on(A)
    pol = [t.vote(i, PREVOTE, 0, h(A)) for i in t.others()[:2]]
    _crash(t)

    again = _node(tmp_path)
    assert (again.machine.locked_round, again.machine.locked_hash) == (0, h(A))
    assert (again.machine.round, again.machine.step) == (0, Step.PRECOMMIT)
    assert (again.machine.valid_round, again.machine.valid_hash) == (0, h(A))
    sent = broadcasts(again.skip_to(3))  # its turn to propose: round 3
    [proposal] = [m for m in sent if isinstance(m, ProposalMessage)]  # broadcast, not only kept
    assert (proposal.value, proposal.proposal.pol_round) == (A, 0)
    assert all(v in again.machine._get_pol_votes(proposal) for v in pol)
    _crash(again)


def test_votes_of_a_higher_round_after_a_restart_move_it_there(tmp_path) -> None:
    t = _node(tmp_path)
    t.feed(t.proposal(0, A))
    _crash(t)
    again = _node(tmp_path)
    assert (again.machine.round, again.machine.step) == (0, Step.PREVOTE)
    again.feed_votes(PREVOTE, 4, NIL, again.others()[:2])  # f + 1 of the power is in round 4
    assert again.machine.round == 4
    _crash(again)


def test_a_guard_ahead_of_the_machine_never_leaves_it_silent(tmp_path) -> None:
    # something signed ahead of the machine (another tool on the same guard, a
    # restored backup of the log): every refusal still schedules the step's timeout,
    # so the machine walks up the rounds until it may sign again
    t = _node(tmp_path)
    t.machine.signer.sign_vote(PRECOMMIT, 1, 2, NIL)  # type: ignore[union-attr]
    effects = t.feed(t.proposal(0, A))
    assert votes_sent(effects) == [] and t.machine.stats["double_sign_refused"] == 1
    pending, last = timeouts(effects), effects
    for _ in range(20):
        if t.machine.round == 3:
            break
        if not pending:  # waiting on peers is fine once it has sent its own vote
            assert (PRECOMMIT, 2, NIL) in votes_sent(last), f"silent at {t.machine.round}"
            pending = timeouts(t.feed_votes(PRECOMMIT, 2, NIL, t.others()))
        effect = pending.pop(0)
        last = t.machine.on_timeout(effect.step, effect.height, effect.round)
        pending += timeouts(last)
    assert t.machine.round == 3
    # above the guard's record it signs again: as the proposer of round 3, its proposal
    # and its prevote for it
    own = {(type(m).__name__, m.round) for m in t.machine._own}
    assert {("ProposalMessage", 3), ("Vote", 3)} <= own
    _crash(t)


def test_a_refused_vote_at_the_same_position_sends_the_one_signed_there(tmp_path) -> None:
    t = _node(tmp_path)
    signed = t.machine.signer.sign_vote(PREVOTE, 1, 0, h(B))  # type: ignore[union-attr]
    effects = t.feed(t.proposal(0, A))
    assert broadcasts(effects) == [signed]  # not silence, not a second prevote
    assert t.machine.step == Step.PREVOTE
    _crash(t)


def test_the_message_log_cuts_a_torn_tail_and_restarts_at_a_new_height(tmp_path, caplog) -> None:
    t = _node(tmp_path)
    t.feed(t.proposal(0, A))
    t.feed_votes(PREVOTE, 0, h(A), t.others()[:1])
    _crash(t)
    path = tmp_path / "wal"
    whole = path.read_bytes()
    path.write_bytes(whole + b"\x00\x00\x01\x00garbage")  # a crash in the middle of a write
    log = MessageLog.at(path)
    logged = log.open_height(1)
    assert len(logged) == 3 and log.dropped_records == 1  # proposal, peer's prevote, own prevote
    assert "wal_torn_tail" in caplog.text  # an operator is told, with a stable token
    assert path.read_bytes() == whole
    assert log.open_height(2) == [] and MessageLog.at(path).open_height(1) == []
    log.close()


def test_a_full_log_counts_skips_per_height(tmp_path, caplog) -> None:
    """``skipped`` says this height's log is full (the machine then logs what a lock
    rests on as essential); it must not stay set for every later height."""
    t = _node(tmp_path)  # only to sign a proposal
    log = MessageLog(MemoryDisk(), max_bytes=64)
    log.open_height(1)
    proposal = t.proposal(0, A)
    log.append(proposal)
    assert log.skipped == 1 and "wal_full" in caplog.text
    log.append(proposal, essential=True)
    assert log.skipped == 1 and log.open_height(1)  # essential ones are logged anyway
    assert log.open_height(2) == [] and log.skipped == 0


def test_a_proposer_whose_proposal_the_guard_refuses_still_has_its_propose_timeout(tmp_path) -> None:
    t = _node(tmp_path, proposer_of_round=1)
    t.machine.signer.sign_vote(PREVOTE, 1, 1, NIL)  # type: ignore[union-attr]
    effects = t.skip_to(1)  # its turn to propose, but it already prevoted in round 1
    assert _pending(effects, Step.PROPOSE, 1)
    assert t.machine.round == 1 and t.machine.stats["double_sign_refused"] == 1
    assert not [m for m in t.machine._own if isinstance(m, ProposalMessage)]
    effects = t.machine.on_timeout(Step.PROPOSE, 1, 1)  # the timeout _start_round scheduled
    assert votes_sent(effects) == [(PREVOTE, 1, NIL)]  # the prevote it had signed, re-sent
    _crash(t)


def test_a_restarted_proposer_resends_its_proposal_once_then_only_when_asked(tmp_path) -> None:
    # the proposal carries a whole block: re-sent on resume, not on every tick
    t = _node(tmp_path, proposer_of_round=0)
    [proposal] = [m for m in broadcasts(t.start_effects) if isinstance(m, ProposalMessage)]
    _crash(t)

    again = _node(tmp_path, proposer_of_round=0)
    assert (again.machine.round, again.machine.step) == (0, Step.PREVOTE)
    assert proposal in broadcasts(again.start_effects)
    tick = broadcasts(again.machine.on_timeout(Step.REBROADCAST, 1, 0))
    assert not any(isinstance(m, ProposalMessage) for m in tick)
    assert votes_sent(again.machine.on_timeout(Step.REBROADCAST, 1, 0)) == [
        (PREVOTE, 0, proposal.proposal.block_hash)]
    # a peer that lost it votes nil in the round: that asks for it again
    asked = again.feed(again.vote(again.others()[0], PREVOTE, 0, NIL))
    assert proposal in broadcasts(asked)
    _crash(again)
