"""The Tendermint consensus state machine (Algorithm 1 of Buchman, Kwon, Milosevic,
"The latest gossip on BFT consensus", 2018), pure and synchronous.

The machine does no I/O and reads no clock. Its inputs are method calls
(``start_height``, ``on_proposal``, ``on_vote``, ``on_timeout``); each returns
the list of :mod:`consensus.effects` the driver must carry out, in order. The
application is reached only through :class:`consensus.app.Application`, and
signatures are made only through a :class:`consensus.wal.Signer`, so a machine
cannot double-sign even if its inputs are replayed after a crash.

Line numbers in comments refer to Algorithm 1 of the paper. Two additions
make the paper's gossip assumption hold over a lossy network: every node
re-sends its own votes of the current height on a periodic timer (its
proposal, which carries a whole block, only when a peer's vote shows it lacks
it: see ``_note_proposal_wanted``), and a
node that sees a peer still voting at the height it just decided sends the
decided value with its commit (:class:`CommitMessage`), which the peer checks
against its validator set and decides on. Peers further behind catch up by
block sync, outside consensus, and tell the machine through ``on_commit``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from consensus.app import Application
from consensus.crypto import recover_address
from consensus.effects import (
    Broadcast,
    Decide,
    Effect,
    EvidenceFound,
    InvalidMessage,
    ScheduleTimeout,
    Step,
)
from consensus.errors import BadSignature, DoubleSignRefused, MalformedMessage
from consensus.messages import (
    MAX_VALUE_BYTES,
    CommitMessage,
    ConsensusMessage,
    ProposalMessage,
    check_commit_fields,
    check_proposal_fields,
    check_vote_fields,
)
from consensus.types import (
    NIL,
    PRECOMMIT,
    PREVOTE,
    Commit,
    Proposal,
    ValidatorSet,
    Vote,
    proposal_digest,
    vote_digest,
)
from consensus.votes import VoteSet
from consensus.wal import MessageLog, Signer

# Bounds on what the machine stores for a peer; beyond them messages are dropped
# (not penalised: an honest peer far ahead of us sends them too).
MAX_ROUNDS_AHEAD = 32  # votes/proposals for rounds above round + this are dropped
MAX_PROPOSALS_PER_ROUND = 4  # distinct values kept per round (a byzantine proposer equivocates)
MAX_FUTURE_MESSAGES = 4096  # messages kept for height + 1 until it starts
MAX_FUTURE_BYTES = 16 * 1024 * 1024  # block values among them
REBROADCAST_ROUNDS = 2  # own votes of this many latest rounds are re-sent on each tick
# An own vote is re-sent on a tick only once it has been out for a whole period: sent
# between two ticks, it is first re-sent on the second tick after (1-2 periods old). Re-sent
# on the very next tick, a vote of a height that decides in time (most) was sent twice:
# in a four-validator devnet under attestation load each validator published ~7.5
# consensus messages a height for its ~2.3 own (votes, a quarter of the proposals), and
# each copy costs every peer a receive, a topic check and two relays (docs/network.md,
# "What a validator re-sends on the consensus topic"). A lost vote is repaired that much
# later, within two periods. Proposals keep their own rules (_note_proposal_wanted).

# Reject codes of InvalidMessage effects (stable, counted in ``ConsensusMachine.stats``).
REJECT_MALFORMED = MalformedMessage.code
REJECT_BAD_SIGNATURE = BadSignature.code
REJECT_UNKNOWN_VALIDATOR = "unknown_validator"
REJECT_WRONG_PROPOSER = "wrong_proposer"
REJECT_BAD_BLOCK_HASH = "bad_block_hash"
REJECT_INVALID_COMMIT = "invalid_commit"


@dataclass(frozen=True)
class Timeouts:
    """Step timeouts in seconds: ``base + delta * round`` (a LAN devnet's defaults)."""

    propose: float = 1.0
    prevote: float = 0.5
    precommit: float = 0.5
    propose_delta: float = 0.5
    prevote_delta: float = 0.5
    precommit_delta: float = 0.5
    rebroadcast: float = 1.0  # period of re-sending our own messages of the current height

    def compute_duration(self, step: Step, round_: int) -> float:
        """How long to wait for ``step`` in ``round_``; grows with the round so that
        after the network stabilises some round is long enough for everyone."""
        if step == Step.PROPOSE:
            return self.propose + self.propose_delta * round_
        if step == Step.PREVOTE:
            return self.prevote + self.prevote_delta * round_
        if step == Step.PRECOMMIT:
            return self.precommit + self.precommit_delta * round_
        if step == Step.REBROADCAST:
            return self.rebroadcast
        raise ValueError(f"no timeout for step {step!r}")


class ConsensusMachine:
    """One node's view of consensus, one height at a time.

    ``signer`` is None for a node that follows consensus without voting; a
    signer whose address is not in a height's validator set also only follows.
    ``message_log`` is the validator's consensus WAL: with it (and the signer's
    guard) a machine started at a height it had already voted at resumes the
    round it was in (see ``start_height``). Call ``start_height`` first, and
    again with the next height's validator set after each :class:`Decide`.
    """

    def __init__(
        self, chain_id: int, app: Application, signer: Signer | None = None,
        timeouts: Timeouts | None = None, message_log: MessageLog | None = None,
    ) -> None:
        if signer is not None and signer.chain_id != chain_id:
            raise ValueError("signer is for another chain")
        self.chain_id = chain_id
        self.app = app
        self.signer = signer
        self.timeouts = timeouts or Timeouts()
        self.message_log = message_log
        self._replaying = False
        self.stats: Counter[str] = Counter()
        self.height = -1  # not started
        self.round = 0
        self.step = Step.PROPOSE
        self.validators = ValidatorSet([])
        self._rebroadcast_scheduled = False
        # rebroadcast ticks so far: what a message's age is counted in (see REBROADCAST_ROUNDS)
        self._ticks = 0
        # our proposal is re-sent at most once per rebroadcast period (see _note_proposal_wanted)
        self._proposal_resent_this_period = False
        self._proposal_wanted = False
        self._future: list[ProposalMessage | Vote] = []
        self._future_bytes = 0
        # the last decision, re-sent to peers that missed it (see module docstring)
        self._decided_height = -1
        self._decided_proof: CommitMessage | None = None
        self._catchup_seen_now = False
        self._catchup_seen_before = False
        self._reset_height_state()

    def _reset_height_state(self) -> None:
        self.locked_hash: bytes | None = None
        self.locked_round = -1
        self.valid_hash: bytes | None = None
        self.valid_round = -1
        self.decision: Decide | None = None
        self._proposals: dict[int, list[ProposalMessage]] = {}
        self._proposal_by_hash: dict[bytes, ProposalMessage] = {}
        self._validity: dict[bytes, bool] = {}
        self._votes: dict[tuple[int, int], VoteSet] = {}
        self._senders: dict[int, set[bytes]] = {}  # round -> validators heard from
        self._fired: set[tuple[str, int]] = set()  # "for the first time" rules already run
        self._own: list[ConsensusMessage] = []
        # tick count when each own message (by id) was first sent; absent: re-sent on any tick
        self._own_sent: dict[int, int] = {}
        self._proposers: dict[int, bytes] = {}
        self._proposal_wanted = False
        self._proposal_check_on_tick = False

    # --- inputs -------------------------------------------------------------

    def start_height(self, height: int, validators: ValidatorSet) -> list[Effect]:
        """Enter ``height`` (validated by the node: the next one after the last commit)
        with its validator set, replay messages buffered for it and start round 0.

        After a restart in the middle of ``height`` the machine resumes instead:
        it replays what its message log holds for the height, re-enters the round
        and step of the last message its guard signed there (never a position the
        guard would refuse), re-sends its own messages of that round and
        schedules that step's timeout, so it can neither sit silent below its
        own signatures nor wait for a quorum that needed a vote it lost."""
        if height <= self.height:
            raise ValueError(f"height {height} is not above the current height {self.height}")
        if not len(validators):
            raise ValueError("empty validator set")
        if self.decision is not None and height == self.height + 1:
            self._decided_height = self.height
            self._decided_proof = CommitMessage(self.decision.commit, self.decision.value)
        else:  # first height, or the node jumped past heights it did not decide
            self._decided_height = -1
            self._decided_proof = None
        self.height = height
        self.validators = validators
        self._reset_height_state()
        if self.signer is not None:
            # Restarted mid-height: keep the lock we had (the guard recorded it with
            # our precommit), or a later round could prevote against it.
            lock = self.signer.guard.lock_at(height)
            if lock is not None:
                self.locked_round, self.locked_hash = lock
                self.stats["lock_restored"] += 1
        effects: list[Effect] = []
        if not self._rebroadcast_scheduled:
            self._rebroadcast_scheduled = True
            effects.append(self._schedule(Step.REBROADCAST, 0))
        effects += self._resume(height)
        buffered, self._future, self._future_bytes = self._future, [], 0
        for message in buffered:
            if message.height == height:
                effects += self._on_current_height_message(message, evaluate=False)
        effects += self._evaluate()
        return effects

    def on_message(self, message: ConsensusMessage) -> list[Effect]:
        """Dispatch a decoded wire message to ``on_proposal``, ``on_vote`` or ``on_commit``."""
        if isinstance(message, ProposalMessage):
            return self.on_proposal(message.proposal, message.value)
        if isinstance(message, CommitMessage):
            return self.on_commit(message.commit, message.value)
        return self.on_vote(message)

    def on_proposal(self, proposal: Proposal, value: bytes) -> list[Effect]:
        """A proposal with its block value, from the network (or replayed)."""
        return self._on_message(ProposalMessage(proposal, value))

    def on_vote(self, vote: Vote) -> list[Effect]:
        """A prevote or precommit from the network (or replayed)."""
        return self._on_message(vote)

    def on_commit(self, commit: Commit, value: bytes) -> list[Effect]:
        """A decided value with its commit, from a peer or from block sync.

        If it is for the current, undecided height and the commit holds more
        than 2/3 of the power of this height's validator set, the machine
        decides it (emits :class:`Decide`) as if it had seen the precommits.
        Commits for other heights are ignored."""
        if self.height < 0 or commit.height != self.height or self.decision is not None:
            self.stats["ignored_commit"] += 1
            return []
        try:
            check_commit_fields(commit)
        except MalformedMessage as exc:
            return self._reject(REJECT_MALFORMED, str(exc))
        if len(value) > MAX_VALUE_BYTES:
            return self._reject(REJECT_MALFORMED, f"block value exceeds {MAX_VALUE_BYTES} bytes")
        if self.app.block_hash(value) != commit.block_hash:
            return self._reject(REJECT_BAD_BLOCK_HASH, "block value does not match the commit")
        problem = self._check_commit(commit)
        if problem is not None:
            return self._reject(REJECT_INVALID_COMMIT, problem)
        if not self.app.validate(self.height, value):
            # only possible if more than 1/3 of the power is byzantine; never decide it
            self.stats["invalid_committed_value"] += 1
            return []
        self.decision = Decide(self.height, commit.round, value, commit)
        self.step = Step.COMMIT
        return [self.decision]

    def _check_commit(self, commit: Commit) -> str | None:
        """Why ``commit`` does not prove a decision at this height, or None if it does."""
        seen: set[bytes] = set()
        power = 0
        for vote in commit.votes():
            validator = self.validators.get(vote.validator)
            if validator is None:
                return "commit signed by a non-validator"
            if vote.validator in seen:
                return "validator signed the commit twice"
            if compute_vote_signer(self.chain_id, vote) != vote.validator:
                return "bad commit signature"
            seen.add(vote.validator)
            power += validator.power
        if power < self.validators.quorum():
            return f"commit has {power} of {self.validators.total_power} voting power"
        return None

    def _resume(self, height: int) -> list[Effect]:
        """Rebuild this height from the message log and the guard's record, or start
        round 0 if this node never signed anything at ``height``."""
        logged = self.message_log.open_height(height) if self.message_log is not None else []
        last = self.signer.guard.last if self.signer is not None else None
        if last is not None and last.height == height and self.is_validator():
            self.round = last.round  # before replaying, so no logged round is "too far ahead"
        evidence: list[Effect] = []  # the crash may have come before it was reported
        self._replaying = True
        try:
            for message in logged:
                if isinstance(message, ProposalMessage | Vote) and message.height == height:
                    evidence += [e for e in self._on_current_height_message(message, evaluate=False)
                                 if isinstance(e, EvidenceFound)]
                    if self._is_own(message) and message not in self._own:
                        self._own.append(message)
        finally:
            self._replaying = False
        self.stats["log_replayed"] += len(logged)
        if last is None or last.height != height or not self.is_validator():
            return evidence + self._start_round(0)
        assert self.signer is not None
        recorded = self.signer.guard.recorded_vote(self.signer.address)
        if recorded is not None and recorded not in self._own:
            # signed, but the crash came before it was logged (or sent): it is ours all the same
            self._get_vote_set(recorded.round, recorded.type).add(recorded)
            self._senders.setdefault(recorded.round, set()).add(recorded.validator)
            self._own.append(recorded)
            self._log(recorded, essential=True)
        self.step = Step(last.step)
        self.stats["resumed"] += 1
        effects = evidence
        if self.step == Step.PROPOSE:  # we proposed; prevote comes from the rules or the timeout
            effects.append(self._schedule(Step.PROPOSE, self.round))
        elif self.step == Step.PREVOTE:  # the quorum we waited for may need votes nobody has now
            self._fire_once("timeout_prevote", effects, Step.PREVOTE)
        else:
            self._fire_once("timeout_precommit", effects, Step.PRECOMMIT)
        effects += self._own_messages_to_resend()
        return effects

    def _is_own(self, message: ProposalMessage | Vote) -> bool:
        if self.signer is None:
            return False
        if isinstance(message, ProposalMessage):
            return message.proposal.proposer == self.signer.address
        return message.validator == self.signer.address

    def _log(self, message: ProposalMessage | Vote, essential: bool = False) -> None:
        if self.message_log is not None and not self._replaying:
            self.message_log.append(message, essential)

    def on_timeout(self, step: Step, height: int, round_: int) -> list[Effect]:
        """A timeout scheduled earlier by ``ScheduleTimeout`` has expired."""
        if step == Step.REBROADCAST:
            return self._on_rebroadcast_tick()
        if height != self.height or round_ != self.round or self.decision is not None:
            return []
        effects: list[Effect] = []
        if step == Step.PROPOSE and self.step == Step.PROPOSE:  # line 57
            effects += self._vote(PREVOTE, NIL)
            self.step = Step.PREVOTE
        elif step == Step.PREVOTE and self.step == Step.PREVOTE:  # line 61
            effects += self._vote(PRECOMMIT, NIL)
            self.step = Step.PRECOMMIT
        elif step == Step.PRECOMMIT:  # line 65
            effects += self._start_round(self.round + 1)
        else:
            return []
        return effects + self._evaluate()

    # --- message intake -----------------------------------------------------

    def _on_message(self, message: ProposalMessage | Vote) -> list[Effect]:
        if self.height < 0:
            self.stats["not_started"] += 1
            return []
        height = message.height
        if height == self.height:
            return self._on_current_height_message(message, evaluate=True)
        if height == self.height + 1:
            self._buffer_future(message)
        elif height > self.height + 1:
            self.stats["dropped_far_future_height"] += 1
        elif height == self._decided_height:
            self._note_lagging_peer(message)
        else:
            self.stats["dropped_old_height"] += 1
        return []

    def _buffer_future(self, message: ProposalMessage | Vote) -> None:
        size = len(message.value) if isinstance(message, ProposalMessage) else 0
        if (len(self._future) >= MAX_FUTURE_MESSAGES
                or self._future_bytes + size > MAX_FUTURE_BYTES):
            self.stats["dropped_future_buffer_full"] += 1
            return
        if message in self._future:
            return
        self._future.append(message)
        self._future_bytes += size

    def _note_lagging_peer(self, message: ProposalMessage | Vote) -> None:
        if isinstance(message, Vote):  # a peer still voting there has not decided
            self._catchup_seen_now = True

    def _on_current_height_message(
        self, message: ProposalMessage | Vote, evaluate: bool
    ) -> list[Effect]:
        if isinstance(message, ProposalMessage):
            effects = self._add_proposal(message)
        else:
            effects = self._add_vote(message)
        if evaluate and self.decision is None:
            effects += self._evaluate()
        return effects

    def _reject(self, code: str, reason: str) -> list[Effect]:
        self.stats[f"rejected_{code}"] += 1
        return [InvalidMessage(code, reason)]

    def _add_vote(self, vote: Vote) -> list[Effect]:
        try:
            check_vote_fields(vote)
        except MalformedMessage as exc:
            return self._reject(REJECT_MALFORMED, str(exc))
        if vote.round > self.round + MAX_ROUNDS_AHEAD:
            self.stats["dropped_far_future_round"] += 1
            return []
        if self.validators.get(vote.validator) is None:
            return self._reject(REJECT_UNKNOWN_VALIDATOR, "vote from a non-validator")
        vote_set = self._get_vote_set(vote.round, vote.type)
        if vote in vote_set:
            self.stats["duplicate_vote"] += 1
            return []
        if compute_vote_signer(self.chain_id, vote) != vote.validator:
            return self._reject(REJECT_BAD_SIGNATURE, "vote signature is not the validator's")
        added, evidence = vote_set.add(vote)
        self._senders.setdefault(vote.round, set()).add(vote.validator)
        if added or evidence is not None:
            self._log(vote)
        if evidence is not None:
            self.stats["evidence"] += 1
            return [EvidenceFound(evidence)]
        if not added:
            self.stats["duplicate_vote"] += 1
            return []
        return self._note_proposal_wanted(vote)

    def _add_proposal(self, message: ProposalMessage) -> list[Effect]:
        proposal, value = message.proposal, message.value
        try:
            check_proposal_fields(proposal)
        except MalformedMessage as exc:
            return self._reject(REJECT_MALFORMED, str(exc))
        if len(value) > MAX_VALUE_BYTES:
            return self._reject(REJECT_MALFORMED, f"block value exceeds {MAX_VALUE_BYTES} bytes")
        if proposal.round > self.round + MAX_ROUNDS_AHEAD:
            self.stats["dropped_far_future_round"] += 1
            return []
        known = self._proposals.setdefault(proposal.round, [])
        if any(m.proposal == proposal for m in known):
            self.stats["duplicate_proposal"] += 1
            return []
        if proposal.proposer != self.get_proposer(proposal.round):
            return self._reject(REJECT_WRONG_PROPOSER, f"not the proposer of round {proposal.round}")
        if compute_proposal_signer(self.chain_id, proposal) != proposal.proposer:
            return self._reject(REJECT_BAD_SIGNATURE, "proposal signature is not the proposer's")
        if self.app.block_hash(value) != proposal.block_hash:
            return self._reject(REJECT_BAD_BLOCK_HASH, "block value does not match the proposal")
        if len(known) >= MAX_PROPOSALS_PER_ROUND:
            self.stats["dropped_proposal_limit"] += 1
            return []
        if known:
            self.stats["equivocating_proposal"] += 1  # no slashable evidence for proposals
        known.append(message)
        self._proposal_by_hash.setdefault(proposal.block_hash, message)
        self._senders.setdefault(proposal.round, set()).add(proposal.proposer)
        self._log(message)
        return []

    def _get_vote_set(self, round_: int, vote_type: int) -> VoteSet:
        vote_set = self._votes.get((round_, vote_type))
        if vote_set is None:
            vote_set = VoteSet(self.validators, self.height, round_, vote_type)
            self._votes[(round_, vote_type)] = vote_set
        return vote_set

    # --- Algorithm 1 --------------------------------------------------------

    def get_proposer(self, round_: int) -> bytes:
        """Address of the proposer of ``round_`` at the current height."""
        proposer = self._proposers.get(round_)
        if proposer is None:
            proposer = self.validators.proposer_for_round(round_).address
            self._proposers[round_] = proposer
        return proposer

    def _get_power(self, address: bytes) -> int:
        validator = self.validators.get(address)
        return validator.power if validator is not None else 0

    def is_validator(self) -> bool:
        """Whether this node votes at the current height."""
        return self.signer is not None and self.validators.get(self.signer.address) is not None

    def _is_valid(self, block_hash: bytes) -> bool:
        valid = self._validity.get(block_hash)
        if valid is None:
            message = self._proposal_by_hash[block_hash]
            valid = bool(self.app.validate(self.height, message.value))
            self._validity[block_hash] = valid
        return valid

    def _start_round(self, round_: int) -> list[Effect]:  # StartRound, line 11
        self.round = round_
        self.step = Step.PROPOSE
        self._proposal_wanted = False
        self._proposal_check_on_tick = False
        effects: list[Effect] = []
        if self.is_validator() and self.get_proposer(round_) == self.signer.address:  # type: ignore[union-attr]
            effects += self._propose()
        # Scheduled by the proposer too: if its guard refused to sign, it must still move on.
        effects.append(self._schedule(Step.PROPOSE, round_))
        return effects

    def _propose(self) -> list[Effect]:
        assert self.signer is not None
        if self.valid_hash is not None:
            value = self._proposal_by_hash[self.valid_hash].value
        else:
            value = self.app.propose(self.height, self.round)
        block_hash = self.app.block_hash(value)
        self._sync_log()
        try:
            proposal = self.signer.sign_proposal(self.height, self.round, self.valid_round, block_hash)
        except DoubleSignRefused:
            # the propose timeout, scheduled by _start_round, still moves the round on
            self.stats["double_sign_refused"] += 1
            return []
        message = ProposalMessage(proposal, value)
        self._proposals.setdefault(self.round, []).append(message)
        self._proposal_by_hash.setdefault(block_hash, message)
        self._senders.setdefault(self.round, set()).add(proposal.proposer)
        self._own.append(message)
        self._own_sent[id(message)] = self._ticks
        self._log(message, essential=True)
        # a peer's nil vote right after this may cross it in flight: answer it on the next tick
        self._proposal_resent_this_period = True
        self._proposal_check_on_tick = True
        effects: list[Effect] = [Broadcast(message)]
        # Relay the proof of lock with a re-proposal: peers that missed those
        # prevotes could not accept it (line 28) and the round would be lost.
        effects += [Broadcast(v) for v in self._get_pol_votes(message)]
        return effects

    def _get_pol_votes(self, message: ProposalMessage) -> list[Vote]:
        pol_round = message.proposal.pol_round
        if pol_round < 0:
            return []
        return self._get_vote_set(pol_round, PREVOTE).get_votes_for(message.proposal.block_hash)

    def _vote(self, vote_type: int, block_hash: bytes) -> list[Effect]:
        """Sign and send a vote of the current round. The caller moves to the next step
        whatever happens, so a refusal by the guard must not leave the machine silent:
        it sends the vote it did sign at this position, or schedules the step's timeout."""
        if not self.is_validator():
            return []
        assert self.signer is not None
        self._sync_log()
        try:
            vote = self.signer.sign_vote(vote_type, self.height, self.round, block_hash)
        except DoubleSignRefused:
            self.stats["double_sign_refused"] += 1
            recorded = self.signer.guard.recorded_vote(self.signer.address)
            if recorded is None or (recorded.height, recorded.round, recorded.type) != (
                    self.height, self.round, vote_type):
                step = Step.PREVOTE if vote_type == PREVOTE else Step.PRECOMMIT
                effects: list[Effect] = []
                self._fire_once(f"timeout_{step.name.lower()}", effects, step)
                return effects
            vote = recorded  # signed before a restart: peers must count that one
            lock = self.signer.guard.lock_at(self.height)
            if lock is not None:  # and a precommit for a block is a lock (line 36)
                self.locked_round, self.locked_hash = lock
        self._get_vote_set(self.round, vote_type).add(vote)
        self._senders.setdefault(self.round, set()).add(vote.validator)
        if vote not in self._own:
            self._own.append(vote)
            self._own_sent[id(vote)] = self._ticks
            self._log(vote, essential=True)
        return [Broadcast(vote)]

    def _sync_log(self) -> None:
        # what a signature rests on (the proposal, the prevotes) is durable before it is
        if self.message_log is not None:
            self.message_log.sync()

    def _schedule(self, step: Step, round_: int) -> ScheduleTimeout:
        return ScheduleTimeout(step, self.height, round_, self.timeouts.compute_duration(step, round_))

    def _evaluate(self) -> list[Effect]:
        """Run every rule whose condition holds until none does (the paper's ``upon``s)."""
        effects: list[Effect] = []
        while self.decision is None:
            if self._try_decide(effects):
                break
            if self._try_round_skip(effects):
                continue
            if self.step == Step.PROPOSE and self._try_prevote_proposal(effects):
                continue
            self._update_valid_from_past_rounds()
            prevotes = self._get_vote_set(self.round, PREVOTE)
            if self.step == Step.PREVOTE and prevotes.is_quorum_any():  # line 34
                self._fire_once("timeout_prevote", effects, Step.PREVOTE)
            if self.step >= Step.PREVOTE and self._try_lock(prevotes, effects):
                continue
            if self.step == Step.PREVOTE and prevotes.is_quorum_for(NIL):  # line 44
                effects += self._vote(PRECOMMIT, NIL)
                self.step = Step.PRECOMMIT
                continue
            if self._get_vote_set(self.round, PRECOMMIT).is_quorum_any():  # line 47
                self._fire_once("timeout_precommit", effects, Step.PRECOMMIT)
            break
        return effects

    def _fire_once(self, rule: str, effects: list[Effect], step: Step) -> None:
        if (rule, self.round) not in self._fired:
            self._fired.add((rule, self.round))
            effects.append(self._schedule(step, self.round))

    def _try_decide(self, effects: list[Effect]) -> bool:  # line 49, for any round
        for (round_, vote_type), vote_set in self._votes.items():
            if vote_type != PRECOMMIT:
                continue
            block_hash = vote_set.get_majority()
            if block_hash is None or block_hash == NIL or block_hash not in self._proposal_by_hash:
                continue
            if not self._is_valid(block_hash):
                continue
            commit = Commit.from_votes(
                self.height, round_, block_hash, vote_set.get_votes_for(block_hash)
            )
            value = self._proposal_by_hash[block_hash].value
            self.decision = Decide(self.height, round_, value, commit)
            self.step = Step.COMMIT
            effects.append(self.decision)
            return True
        return False

    def _try_round_skip(self, effects: list[Effect]) -> bool:  # line 55
        threshold = self.validators.total_power // 3 + 1  # f + 1: at least one correct node
        target = -1
        for round_, senders in self._senders.items():
            if round_ > self.round and round_ > target:
                power = sum(self._get_power(a) for a in senders)
                if power >= threshold:
                    target = round_
        if target < 0:
            return False
        effects += self._start_round(target)
        return True

    def _try_prevote_proposal(self, effects: list[Effect]) -> bool:  # lines 22 and 28
        for message in self._proposals.get(self.round, ()):
            block_hash = message.proposal.block_hash
            pol_round = message.proposal.pol_round
            if pol_round == -1:
                accept = self._is_valid(block_hash) and (
                    self.locked_round == -1 or self.locked_hash == block_hash
                )
            elif self._get_vote_set(pol_round, PREVOTE).is_quorum_for(block_hash):
                accept = self._is_valid(block_hash) and (
                    self.locked_round <= pol_round or self.locked_hash == block_hash
                )
            else:
                continue  # proof of lock not seen (yet): wait for it or for the timeout
            effects += self._vote(PREVOTE, block_hash if accept else NIL)
            self.step = Step.PREVOTE
            return True
        return False

    def _try_lock(self, prevotes: VoteSet, effects: list[Effect]) -> bool:  # line 36
        if ("lock", self.round) in self._fired:
            return False
        block_hash = prevotes.get_majority()
        if block_hash is None or block_hash == NIL:
            return False
        if not any(m.proposal.block_hash == block_hash for m in self._proposals.get(self.round, ())):
            return False
        if not self._is_valid(block_hash):
            return False
        self._fired.add(("lock", self.round))
        if self.step == Step.PREVOTE:
            if self.message_log is not None and self.message_log.skipped:
                # a full log may have skipped them: a restart must find what it locks on
                message = self._proposal_by_hash[block_hash]
                self._log(message, essential=True)
                for vote in prevotes.get_votes_for(block_hash):
                    self._log(vote, essential=True)
            self.locked_hash = block_hash
            self.locked_round = self.round
            effects += self._vote(PRECOMMIT, block_hash)
            self.step = Step.PRECOMMIT
        self.valid_hash = block_hash
        self.valid_round = self.round
        return True

    def _update_valid_from_past_rounds(self) -> None:
        """Adopt a value with more than 2/3 prevotes in an earlier round as our valid value.

        Not in Algorithm 1 (line 36 only looks at the current round), but safe:
        which value a proposer re-proposes never affects safety, only whether
        others accept it (lines 22 and 28). It matters for liveness when a node
        learns of a proof of lock late, e.g. after a partition: without it, only
        the nodes that saw the proof in time ever re-propose the locked value,
        and every other proposer's fresh value is refused by the locked nodes.
        """
        for (round_, vote_type), vote_set in self._votes.items():
            if vote_type != PREVOTE or not (self.valid_round < round_ < self.round):
                continue
            block_hash = vote_set.get_majority()
            if (block_hash is not None and block_hash != NIL
                    and block_hash in self._proposal_by_hash and self._is_valid(block_hash)):
                self.valid_hash = block_hash
                self.valid_round = round_

    # --- gossip repair ------------------------------------------------------

    def _own_messages_to_resend(self, with_proposal: bool = True,
                                sent_before: int | None = None) -> list[Effect]:
        """Our votes of the last ``REBROADCAST_ROUNDS`` rounds (with ``sent_before``, those
        first sent before that tick count) and, if ``with_proposal``, our proposal of the
        current round (with its proof of lock)."""
        effects: list[Effect] = []
        if with_proposal:
            effects += self._own_proposal_to_resend()
        oldest = self.round - REBROADCAST_ROUNDS + 1
        for message in self._own:
            if isinstance(message, Vote) and message.round >= oldest and (
                    sent_before is None or self._own_sent.get(id(message), -1) < sent_before):
                effects.append(Broadcast(message))
        return effects

    def _own_proposal_to_resend(self) -> list[Effect]:
        """Our proposal of the current round with its proof of lock (empty if we have none)."""
        for message in self._own:
            if isinstance(message, ProposalMessage) and message.round == self.round:
                self.stats["proposal_rebroadcast"] += 1
                self._proposal_resent_this_period = True
                self._proposal_wanted = False
                effects: list[Effect] = [Broadcast(message)]
                return effects + [Broadcast(v) for v in self._get_pol_votes(message)]
        return []

    def _note_proposal_wanted(self, vote: Vote) -> list[Effect]:
        """Re-send our proposal when a peer's new vote shows it may lack it.

        A proposal carries a whole block (up to ``MAX_VALUE_BYTES``), so unlike
        votes it is not re-sent on every tick: a validator that missed it votes
        for something else (nil, once its propose timeout expires) in that round,
        and that first vote is the request. It is answered at once, but at most
        once per rebroadcast period: a further request in the same period is
        answered on the next tick. Besides, the first tick after proposing sends
        one more copy if the proposal has no quorum of prevotes yet (see
        ``_on_rebroadcast_tick``). A peer that never votes (a follower) gets
        the block by block sync; one a height behind by the ``CommitMessage``.
        Votes replayed from the log after a restart ask nothing: they are old."""
        if (self._replaying or vote.round != self.round or self.signer is None
                or vote.validator == self.signer.address
                or self.get_proposer(self.round) != self.signer.address):
            return []
        if any(isinstance(m, ProposalMessage) and m.round == self.round
               and m.proposal.block_hash == vote.block_hash for m in self._own):
            return []  # it voted for our proposal, so it has it
        self.stats["proposal_wanted"] += 1
        if self._proposal_resent_this_period:
            self._proposal_wanted = True
            return []
        return self._own_proposal_to_resend()

    def _round_lacks_our_proposal(self) -> bool:
        """Whether our proposal of the current round still lacks more than 2/3 prevotes
        for it (if it has them, the round can decide without another copy)."""
        for message in self._own:
            if isinstance(message, ProposalMessage) and message.round == self.round:
                prevotes = self._get_vote_set(self.round, PREVOTE)
                return not prevotes.is_quorum_for(message.proposal.block_hash)
        return False

    def _on_rebroadcast_tick(self) -> list[Effect]:
        effects: list[Effect] = [self._schedule(Step.REBROADCAST, self.round)]
        previous, self._ticks = self._ticks, self._ticks + 1
        self._proposal_resent_this_period = False
        if self._proposal_check_on_tick:
            # One more copy on the first tick after proposing, before the others'
            # propose timers expire, if the round is not yet safe: the first copy
            # may have been lost, and waiting for the nil votes would lose the round.
            self._proposal_check_on_tick = False
            self._proposal_wanted = self._proposal_wanted or self._round_lacks_our_proposal()
        effects += self._own_messages_to_resend(with_proposal=self._proposal_wanted,
                                                sent_before=previous)
        if self.valid_hash is not None:
            # Relay the proof of our valid value: a byzantine proposer re-proposing it
            # may show its own prevote to only some peers, and without the whole
            # proof the others reject every later re-proposal of it (line 28). Not held
            # back by age like our own votes: these copies also carry an equivocator's
            # votes to the peers it withheld them from (tests/consensus/test_simulation:
            # held back a period, half as many schedules caught the equivocation).
            prevotes = self._get_vote_set(self.valid_round, PREVOTE)
            effects += [Broadcast(v) for v in prevotes.get_votes_for(self.valid_hash)]
        # A single late vote right after we decided is normal; a peer that keeps
        # voting at that height over two ticks has missed the decision.
        if self._catchup_seen_now and self._catchup_seen_before and self._decided_proof:
            self.stats["catchup_sent"] += 1
            effects.append(Broadcast(self._decided_proof))
        self._catchup_seen_before = self._catchup_seen_now
        self._catchup_seen_now = False
        return effects


def compute_vote_signer(chain_id: int, vote: Vote) -> bytes | None:
    """The address that signed ``vote``, or None for an invalid signature.

    Memoised: gossip delivers the same vote several times, and recovering a
    secp256k1 key dominates the cost of handling a vote."""
    return _recover_vote_signer(
        chain_id, vote.type, vote.height, vote.round, vote.block_hash, vote.signature
    )


def compute_proposal_signer(chain_id: int, proposal: Proposal) -> bytes | None:
    """The address that signed ``proposal``, or None for an invalid signature."""
    return _recover_proposal_signer(
        chain_id, proposal.height, proposal.round, proposal.pol_round, proposal.block_hash,
        proposal.signature,
    )


@lru_cache(maxsize=16384)
def _recover_vote_signer(
    chain_id: int, vote_type: int, height: int, round_: int, block_hash: bytes, signature: bytes
) -> bytes | None:
    digest = vote_digest(chain_id, vote_type, height, round_, block_hash)
    try:
        return recover_address(digest, signature)
    except BadSignature:
        return None


@lru_cache(maxsize=1024)
def _recover_proposal_signer(
    chain_id: int, height: int, round_: int, pol_round: int, block_hash: bytes, signature: bytes
) -> bytes | None:
    digest = proposal_digest(chain_id, height, round_, pol_round, block_hash)
    try:
        return recover_address(digest, signature)
    except BadSignature:
        return None
