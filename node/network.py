"""The node's network side: consensus driven over libp2p gossip, block sync, and the
gossip of transactions and evidence (docs/network.md).

Wiring (CometBFT's reactors, in one trio nursery):
  consensus topic -> checked (signature against the height's validator set) ->
                     ConsensusRunner.submit;  runner broadcast -> consensus topic
  runner decide   -> Application.commit -> block announcement on the block topic
  tx topic        -> Mempool (each transaction of a batch, before relay);
                     RPC tx -> node.localtxs (journal, announce) -> transaction batcher
                     -> tx topic
  evidence topic  -> Application.add_evidence (verified before relay)
  status/blocks request-response -> block sync of a node that is behind, before it
                     joins consensus and whenever it falls behind or stalls
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import rlp
import trio
from eth_hash.auto import keccak
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from codec.rlp import decode as decode_bounded
from consensus.effects import InvalidMessage
from consensus.errors import ConsensusError, InvalidEvidence
from consensus.machine import (
    MAX_PROPOSALS_PER_ROUND,
    MAX_ROUNDS_AHEAD,
    ConsensusMachine,
    Timeouts,
    compute_proposal_signer,
    compute_vote_signer,
)
from consensus.messages import (
    CommitMessage,
    ConsensusMessage,
    ProposalMessage,
    decode_message,
    encode_message,
)
from consensus.runner import TIMELINE_PHASES, ConsensusRunner, HeightTimeline
from consensus.types import Commit, DuplicateVoteEvidence, ValidatorSet, Vote
from consensus.wal import MessageLog, Signer, SigningGuard
from node.app import MAX_CLOCK_DRIFT_MS, Application, ProposalBudget
from node.block import Block, MalformedBlock
from node.compact import (
    CompactProposal,
    assemble,
    decode_compact,
    encode_compact,
    fill,
    gather,
    is_compact,
)
from node.gcpolicy import FullCollections
from node.mempool import TxRejected
from node.metrics import REGISTRY
from vm.modules.params import get_param

if TYPE_CHECKING:
    from p2p.host import P2PNode, Verdict

log = logging.getLogger("motus.network")
# One line per decided height with its phases (docs/network.md, "Where a height's time
# goes"), whatever the node's log level, when MOTUS_CONSENSUS_TIMELINE is set.
timeline_log = logging.getLogger("motus.consensus.timeline")
if os.environ.get("MOTUS_CONSENSUS_TIMELINE"):
    timeline_log.setLevel(logging.DEBUG)

# Where a height's time goes at this node (consensus.runner.HeightTimeline): each phase in
# seconds after the height started here; "interval" the whole height, start to next start;
# "durable" the fsyncs of the consensus log and signing guard in it.
CONSENSUS_PHASE_SECONDS = Histogram(
    "motus_consensus_phase_seconds",
    "When each phase of a decided height happened, in seconds after the height started at "
    "this node (interval: to the next height's start; durable: time in fsyncs)",
    ["phase"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0),
)
COMPACT_PROPOSALS = PromCounter(
    "motus_compact_proposals",
    "Compact proposals received, by how their block was rebuilt: pool (every attestation "
    "was in our pool), parts (some fetched from peers), whole (the whole block fetched), "
    "dropped (not rebuilt)",
    ["outcome"],
    registry=REGISTRY,
)
COMPACT_MISSING = PromCounter(
    "motus_compact_missing_attestations",
    "Attestations of compact proposals our pool lacked (asked of peers)",
    registry=REGISTRY,
)
LATE_PROPOSALS = PromCounter(
    "motus_proposal_late_cuts",
    "Round-0 proposals whose build budget was cut because this node started the height "
    "late (LATE_ARRIVAL_MARGIN_S)",
    registry=REGISTRY,
)
CONSENSUS_ROUNDS = Histogram(
    "motus_consensus_decided_round",
    "The round in which each height was decided (0: the first proposal)",
    registry=REGISTRY,
    buckets=(0, 1, 2, 4, 8),
)

SYNC_BATCH = 64  # blocks asked for per request (the protocol serves at most 128)
SYNC_POLL_S = 1.0  # how often the sync loop looks at the head
# A head that has not moved for this long while a peer is ahead means we missed a
# decision (a follower sends no votes, so nobody sends it the catch-up commit).
SYNC_STALL_S = 2.0
INITIAL_PEER_WAIT_S = 5.0  # how long a node with bootstrap peers waits for one before syncing
SYNC_STATUS_TIMEOUT_S = 2.0  # peers are asked for their heads at once; slower answers are dropped
# A peer that failed to back its claimed head (no blocks, bad blocks, a timeout) is not
# asked again for this long, doubled for each failure in a row, up to SYNC_EXCLUDE_MAX_S.
SYNC_EXCLUDE_S = 60.0
SYNC_EXCLUDE_MAX_S = 900.0
# A failure we cannot blame on the peer (an error answer, a lost connection, a
# malformed answer that p2p already penalised) only skips it briefly, with no strike:
# a follower whose one peer dropped a connection must not wait minutes to catch up.
SYNC_RETRY_S = 5.0
# Block announcements more than this many heights above our head are not relayed
# (IGNORE): we cannot check them, and a lagging node vouches for nothing it has not
# verified. They still wake the sync. Honest announcers are at most a height or two
# ahead of any node that keeps up; a node further behind fetches by block sync.
ANNOUNCE_RELAY_LEAD = 2
ANNOUNCE_SEDES = rlp.sedes.List([rlp.sedes.big_endian_int, rlp.sedes.Binary.fixed_length(32)])
SYNC_ITEM_SEDES = rlp.sedes.List([rlp.sedes.binary, rlp.sedes.binary])


def decode_announce(data: bytes) -> tuple[int, bytes]:
    """``[height, hash]`` of a block announcement; raises RLPDecodeError."""
    height, block_hash = decode_bounded(data, ANNOUNCE_SEDES, max_depth=1, max_items=3)
    return height, block_hash


def decode_sync_item(data: bytes) -> tuple[bytes, Block, Commit]:
    """One ``/motus/blocks/1`` item, ``[block, commit]``: the block's bytes, the block and
    its commit; raises RLPDecodeError, MalformedBlock or MalformedMessage."""
    raw, raw_commit = decode_bounded(data, SYNC_ITEM_SEDES, max_depth=1, max_items=3)
    return raw, Block.decode(raw), Commit.decode(raw_commit)
EVIDENCE_MAX_BYTES = 64 * 1024
# Compact proposals (node/compact.py, docs/network.md "Compact proposals"). A receiver
# asks at most this many peers for the attestations its pool lacks, each within the
# fetch timeout, then (or when the ids do not make the block) for the whole block; what
# is not rebuilt by then is dropped and the propose timeout moves the round on.
COMPACT_FETCH_PEERS = 4
COMPACT_FETCH_TIMEOUT_S = 2.0
# A peer asked for a proposal it is rebuilding itself answers once it has it, within this.
COMPACT_SERVE_WAIT_S = 1.0
COMPACT_KEEP_PROPOSALS = 8  # proposals (whole blocks) kept to serve peers' requests
COMPACT_DECODED_MEMO = 16  # compact messages decoded by the topic check, for the pump
# Votes, proposals and commits the topic check accepted, decoded, for the pump: the
# runner would decode the same bytes again (~0.7 ms each with the canonical check, 1.2 s
# of a validator's profile in the four-validator attestation bench). Accepted messages
# reach the pump in order soon after their check; more than this many in between only
# costs a second decode.
CONSENSUS_DECODED_MEMO = 256
# A peer's vote that our topic check accepted was relayed by gossip to our whole mesh
# there and then. The machine re-sends the prevotes that justify its valid value on every
# rebroadcast tick (they also carry an equivocator's votes to peers it withheld them
# from), so in a height that runs past a tick each of them went out again at once, a new
# gossip message each: in the four-validator attestation bench ~18 of the ~40 consensus
# copies a node received a height. A peer's vote we relayed less than this long ago is
# not published again (our own votes wait as long in the machine: docs/consensus.md,
# "Rebroadcast"); older ones are, as before. At most RELAYED_VOTES_MEMO remembered.
RELAYED_VOTE_REPAIR_S = 1.0
RELAYED_VOTES_MEMO = 1024
# Consensus-topic bytes the topic check accepted, decoded (decoding is a function of the
# bytes alone): a re-sent proposal or vote is the same bytes under a new gossip message
# id, and a compact proposal's decode with its canonical check takes ~5 ms at 2,500
# attestations (~16 ms profiled); in the four-validator bench ~40 % of a node's compact
# checks were of re-sends. Every check after the decode (height, round, signer) runs as
# before. Only accepted bytes are kept (signed by a validator of a height we check), and
# few compact ones (up to 2 MiB each).
ACCEPTED_MESSAGES_MEMO = 256
# Only messages up to this size are kept decoded (votes, commits, small proposals): a
# full proposal may be 2 MiB, and a byzantine proposer signing many distinct ones could
# otherwise pin the memos' entries at 2 MiB each (256 of them) (review note).
DECODED_MEMO_MAX_BYTES = 64 * 1024
ACCEPTED_COMPACTS_MEMO = 4
# Validator sets the topic checks read, by height: the store decodes one per call (~0.45
# ms; ~2,000 calls, 0.9 s of a validator's profile in the same bench). A height's set
# never changes once stored; the checks only read it (proposer_for_round copies).
CHECK_VALIDATORS_MEMO = 16
# Proposal size, by time. A full 30 M-gas block of transfers (1428) takes ~0.85 s to
# build here and as long again for every validator to check, on the same cores, so
# under load a full block misses the 1 s propose timeout, rounds fail, the backlog
# grows and the next blocks are full too: at 450-600 tx/s four validators stalled
# (0-0.3 blocks/s). Capping what one proposal holds keeps every round in time.
PROPOSAL_BUDGET_S = 0.3  # target time to build a proposal (a third of propose timeout)
PROPOSAL_MIN_TXS = 200  # the cap never goes below this (a slow moment must not starve)
PROPOSAL_MAX_TXS = 5_000  # the pool's own bound on one selection
PROPOSAL_START_TXS = 500  # measured here: ~0.3 s to build on a busy 2-core machine
PROPOSAL_SAMPLE_TXS = 50  # smaller proposals say too little about per-transaction cost
# Attestations too: each costs a signature check to build and as much to validate, and
# after a restart the pool holds a backlog, so a block of the governed maximum (2000)
# next to a full share of transactions can miss the propose timeout. Same rule: the
# cap follows the measured build time, within [MIN, the governed max_block_attestations].
PROPOSAL_MIN_ATTESTATIONS = 100
PROPOSAL_MAX_ATTESTATIONS = 20_000  # the governed parameter's own upper bound
PROPOSAL_START_ATTESTATIONS = 1_000  # when the chain's weight is not known
PROPOSAL_SAMPLE_ATTESTATIONS = 50
# The caps are learnt from every block this node executes, a peer's too: checking a
# peer's block costs what building it costs (the same execution; more when its
# signatures were not verified at admission, so a check-learnt cap errs small), and a
# validator proposes only one height in n. Learnt from its own proposals only, each of
# four validators had grown its cap once in four heights, and a burst of 20,000
# attestations was mostly over before the caps were (docs/benchmarks.md).
# A block shrinks a cap only if it took at least half the budget, and then at most by
# this factor: a small block's time is mostly fixed costs (a 200-attestation block
# checked in 0.157 s at a burst's start would have made the cap 381; one of 100 checked
# in 0.064 s, 468), and the budget's hard stop, not the cap, keeps a build in time.
PROPOSAL_MAX_SHRINK = 2
# A proposer holding a quorum of the voting power alone (a single-validator chain)
# decides its block on its own votes: no peer executes it on the way to the decision,
# so the propose timeout does not bound its build. What bounds it is the block interval:
# building, committing and the RPC/admission work of the trio thread must fit in it, and
# a follower must check a block within it to keep up (it takes about the build time).
# This share of the interval is the build budget then (if above the usual one): at the
# default 1 s interval 0.6 s, twice the attestations of the 0.3 s budget per block.
ALONE_BUDGET_SHARE = 0.6
# A proposer that starts its height late (it decided the last one after its peers, whose
# propose timers started on time) must still reach them within their propose timeout,
# or the round is lost (3-6 s here): measured in four-validator runs under attestation
# load, a validator deciding 0.6-1 s after the others then proposed 1.1-1.3 s after their
# start and every such round failed. Its round-0 build budget is cut to what is left of
# the peers' propose timeout after its lateness and this margin for the proposal's
# transit and check-in (at least LATE_MIN_BUDGET_S: a small block rather than none).
LATE_ARRIVAL_MARGIN_S = 0.25
# A round-0 proposal that starts at most this long after the instant every node aims at
# (the last block's timestamp plus the block interval) carries that instant as its
# timestamp rather than its own clock's: the next height is aimed from it, so the time
# from a height's aimed start to the proposal's clock reading (~15 ms: the timer's wake-up,
# the height's first steps) no longer adds to every interval (1,015 ms measured with one
# validator, so blocks capped at 10,000 attestations carried at most 9,850 a second).
STAMP_AIMED_MAX_S = 0.1
LATE_MIN_BUDGET_S = 0.02
# Lateness is counted from the instant every node aims at, unless the last height ran
# long at every node: then none started before its own decision plus the commit wait.
# We know we decided with our peers, not after them, when our own precommit went out at
# least this long before our decision (we waited for another's). Measured: at a burst's
# start heights took 2-3 s at all four validators, each proposer counted itself ~1 s
# late against the aimed instant though it started within 0.2 s of its peers, and built
# 100 attestations instead of ~2,000 in heights whose time the block's size hardly moved.
LATE_LAST_PRECOMMIT_S = 0.05

# Mempool reject codes that depend on the receiver's pool or head, not on the bytes:
# the forwarder may have seen a different state, so they cost it nothing. The block
# gas limit is a governed parameter the pool reads at start-up, so a transaction over
# it may be fine for a node started since a change.
STATE_DEPENDENT_TX_CODES = frozenset({
    "already_known", "nonce_too_low", "nonce_too_high", "pool_full", "replacement_underpriced",
    "insufficient_funds", "fee_too_low", "gas_limit_exceeded", "underpriced",
})


def proposal_budget_s(consensus: Any) -> float:
    """The proposal budget of a ``[consensus]`` config section: ``proposal_budget_pct`` of
    the round-0 propose timeout (docs/config.md)."""
    return consensus.timeout_propose_ms * consensus.proposal_budget_pct / 100_000


class ConsensusApp:
    """The application as the consensus machine sees it (consensus.app.Application).

    Heights at or below our head were committed already (by block sync, possibly while
    the machine was still on that height): for them the committed block is the only
    valid value, so a lagging machine can still finish the height harmlessly."""

    def __init__(self, app: Application, proposer: bytes | None,
                 budget_s: float = PROPOSAL_BUDGET_S, alone_budget_s: float | None = None,
                 interval_s: float | None = None, propose_timeout_s: float | None = None,
                 clock: Any = time.time,
                 attestation_cost: Callable[[], int] | None = None,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.app = app
        self.timer = timer  # measures builds and checks (wall time, like the budget)
        # the block interval and round-0 propose timeout, for a late start's budget
        # (LATE_ARRIVAL_MARGIN_S); None: not cut
        self.interval_s = interval_s
        self.propose_timeout_s = propose_timeout_s
        # (height, when our peers started it at the earliest): set when we decided the
        # height before with our peers, not after them (NetworkService._on_decide)
        self.peers_start: tuple[int, float] | None = None
        self.clock = clock
        self.proposer = proposer
        self.budget_s = budget_s
        # the budget while this proposer decides alone (ALONE_BUDGET_SHARE); None: never
        self.alone_budget_s = alone_budget_s
        # How many transactions a proposal may hold, learnt from how long the last
        # sizeable one took to build (execution speed on this machine, under its load).
        self.max_txs = PROPOSAL_START_TXS
        self.max_attestations = PROPOSAL_START_ATTESTATIONS
        # Until a block has taught the attestation cap, it is the chain's own estimate:
        # the budget divided by attestation_cost (microseconds of the reference
        # machine's CPU for the worst-case attestation), read from this callable.
        self.attestation_cost = attestation_cost
        self.attestations_learnt = False
        # The hard stop inside one build (CPU time, docs/consensus.md "Proposal budget");
        # the count caps above are the first guess it refines.
        self.budget = ProposalBudget(budget_s)

    def propose(self, height: int, round_: int) -> bytes:
        if height <= self.app.head.height:
            raw = self.app.store.raw_block(height)
            assert raw is not None
            return raw
        assert self.proposer is not None
        budget_s = self.budget_for(height)
        # the learnt fill share is a ratio: it carries over
        self.budget.seconds = self.late_budget(budget_s, height) if round_ == 0 else budget_s
        # a cut budget's build says little about a full one's (fixed costs): not learnt
        learn = self.budget.learn = self.budget.seconds >= budget_s
        if not self.attestations_learnt:
            self.max_attestations = self.first_attestations_guess(budget_s)
        started = self.timer()
        aimed_ms = self.aimed_timestamp_ms() if round_ == 0 else None
        stamp = {} if aimed_ms is None else {"timestamp_ms": aimed_ms}
        value = self.app.propose(height, self.proposer, max_txs=self.max_txs,
                                 max_attestations=self.max_attestations, budget=self.budget,
                                 **stamp)
        elapsed_s = self.timer() - started
        block = self.app.block_of(value)  # just built: from the cache, not decoded again
        if learn:
            self.learn_proposal_cost(len(block.transactions), len(block.attestations),
                                     elapsed_s, budget_s)
        return value

    def budget_for(self, height: int) -> float:
        """The build budget of a proposal at ``height``: ``budget_s``, or the larger
        ``alone_budget_s`` when this proposer holds a quorum of that height's voting
        power by itself (no peer's check is on the way to the decision)."""
        if self.alone_budget_s is None or self.alone_budget_s <= self.budget_s:
            return self.budget_s
        return self.alone_budget_s if self.decides_alone(height) else self.budget_s

    def decides_alone(self, height: int) -> bool:
        """Whether this proposer holds a quorum of ``height``'s voting power by itself."""
        validators = self.app.store.validators_for(height)
        me = validators.get(self.proposer) if validators is not None else None
        return me is not None and me.power >= validators.quorum()

    def aimed_timestamp_ms(self) -> int | None:
        """The timestamp of a round-0 proposal on the head: the instant every node aimed
        to start the height at (the head's timestamp plus the block interval) when this
        proposer started at most STAMP_AIMED_MAX_S after it; None (its clock) otherwise,
        or without an interval."""
        if self.interval_s is None:
            return None
        aimed_ms = self.app.head.timestamp_ms + round(self.interval_s * 1000)
        late_s = self.clock() - aimed_ms / 1000
        return aimed_ms if 0 <= late_s <= STAMP_AIMED_MAX_S else None

    def late_budget(self, budget_s: float, height: int) -> float:
        """``budget_s``, cut when this node starts its height late: the peers started
        theirs at the last block's timestamp plus the block interval (where every node
        aims) and prevote nil ``propose_timeout_s`` later, so the proposal must be built
        and on its way before then (LATE_ARRIVAL_MARGIN_S). Not cut for a proposer that
        decides alone (nobody waits for it) or without the interval and timeout."""
        if self.interval_s is None or self.propose_timeout_s is None:
            return budget_s
        if self.decides_alone(height):
            return budget_s
        aimed_start = self.app.head.timestamp_ms / 1000 + self.interval_s
        if self.peers_start is not None and self.peers_start[0] == height:
            # the last height ran long at every node: none started before its commit
            aimed_start = max(aimed_start, self.peers_start[1])
        late_s = self.clock() - aimed_start
        if late_s <= 0:
            return budget_s
        left = self.propose_timeout_s - late_s - LATE_ARRIVAL_MARGIN_S
        if left >= budget_s:
            return budget_s
        cut = max(LATE_MIN_BUDGET_S, left)
        LATE_PROPOSALS.inc()
        log.info("late by %.2f s for a proposal: build budget %.2f s instead of %.2f s",
                 late_s, cut, budget_s)
        return cut

    def first_attestations_guess(self, budget_s: float) -> int:
        """The attestation cap before any block has taught it: as many as the chain's
        ``attestation_cost`` says the reference machine executes in ``budget_s`` (2,000
        at the default 150 and 0.3 s), or PROPOSAL_START_ATTESTATIONS without it."""
        if self.attestation_cost is None:
            return PROPOSAL_START_ATTESTATIONS
        try:
            cost_us = self.attestation_cost()
        except Exception:  # a guess must never stop a proposal
            log.exception("reading attestation_cost for the first attestation cap")
            return PROPOSAL_START_ATTESTATIONS
        if cost_us <= 0:
            return PROPOSAL_START_ATTESTATIONS
        return max(PROPOSAL_MIN_ATTESTATIONS,
                   min(PROPOSAL_MAX_ATTESTATIONS, int(budget_s * 1_000_000 / cost_us)))

    def learn_proposal_cost(self, count: int, attestations: int, elapsed_s: float,
                            budget_s: float | None = None) -> None:
        """Size the next proposals so one takes about ``budget_s`` (default: the usual
        budget) to build: transactions and attestations are each scaled by budget /
        elapsed (so both together take the budget), each only when the block held
        enough of them to measure. Called after each of our proposals and after each
        check of a peer's block (``validate``)."""
        if elapsed_s <= 0:
            return
        budget_s = budget_s or self.budget_s
        if count >= PROPOSAL_SAMPLE_TXS:
            self.max_txs = max(PROPOSAL_MIN_TXS, min(PROPOSAL_MAX_TXS, _learnt_cap(
                self.max_txs, count, elapsed_s, budget_s)))
        if attestations >= PROPOSAL_SAMPLE_ATTESTATIONS:
            # Above the governed cap only matters if governance raises it later.
            self.max_attestations = max(PROPOSAL_MIN_ATTESTATIONS, min(
                PROPOSAL_MAX_ATTESTATIONS,
                _learnt_cap(self.max_attestations, attestations, elapsed_s, budget_s)))
            self.attestations_learnt = True

    def block_hash(self, value: bytes) -> bytes:
        try:
            return self.app.block_hash(value)  # our own proposals are not decoded again
        except MalformedBlock:
            return keccak(b"malformed block:" + value[:64])  # matches no honest proposal

    def validate(self, height: int, value: bytes) -> bool:
        if height <= self.app.head.height:
            return value == self.app.store.raw_block(height)
        # a value checked before (a commit message for a proposal already checked) is a
        # cache hit: its microseconds would teach a cap of the maximum
        measured = not self.app.executed_already(value)
        started = self.timer()
        valid = self.app.validate(height, value)
        elapsed_s = self.timer() - started
        if valid and measured:
            block = self.app.block_of(value)  # decoded by the check: from the cache
            if block.header.proposer != self.proposer:  # ours was learnt from at build
                # sized to the budget a proposal of ours at this height would have had
                self.learn_proposal_cost(len(block.transactions), len(block.attestations),
                                         elapsed_s, self.budget_for(height))
        return valid


class NetworkService:
    """Owns the P2P node, the consensus runner and block sync for one node.

    ``run`` starts p2p, catches up with the peers it reaches (block sync), then
    starts consensus at the height after the synced head; ``syncing`` is True while
    blocks are being fetched."""

    def __init__(self, node: Any) -> None:
        from p2p.host import P2PConfig, P2PNode

        self.node = node
        self.app: Application = node.app
        self.store = node.store
        self.chain_id: int = node.chain_id
        cfg = node.config
        self.p2p: P2PNode | None = None
        if cfg.p2p.enabled:
            self.p2p = P2PNode(P2PConfig(
                key_path=node.home.node_key, chain_id=self.chain_id, listen_host=cfg.p2p.host,
                listen_port=cfg.p2p.port, bootstrap=tuple(cfg.p2p.bootstrap),
                target_peers=cfg.p2p.target_peers, max_peers=cfg.p2p.max_peers,
            ))
            self._consensus_inbox = self.p2p.register_topic("consensus", self._check_consensus)
            self._tx_inbox = self.p2p.register_topic("tx", self._check_tx)
            self._evidence_inbox = self.p2p.register_topic(
                "evidence", self._check_evidence, max_size=EVIDENCE_MAX_BYTES)
            self._block_inbox = self.p2p.register_topic("block", self._check_announce)
            self.p2p.set_status_handler(self._serve_status)
            self.p2p.set_blocks_handler(self._serve_blocks)
            self.p2p.set_proposal_handler(self._serve_proposal)
        self.compact_proposals = cfg.p2p.compact_proposals
        # Compact proposals: whole proposals held (block hash -> (block, value)), ours and
        # those rebuilt, to serve peers; wire bytes of our proposals (by signature, so a
        # re-send costs nothing); compact messages the topic check decoded; the proposals
        # being rebuilt (block hash -> set once held) and those handled (by signature).
        self._held: OrderedDict[bytes, tuple[Block, bytes]] = OrderedDict()
        self._compact_wire: OrderedDict[bytes, bytes] = OrderedDict()
        self._compact_decoded: OrderedDict[bytes, CompactProposal] = OrderedDict()
        self._consensus_decoded: OrderedDict[bytes, ConsensusMessage] = OrderedDict()
        # peers' votes (wire bytes) our topic check accepted (so gossip relayed them): when
        # (monotonic), for _broadcast (RELAYED_VOTE_REPAIR_S)
        self._relayed_votes: OrderedDict[bytes, float] = OrderedDict()
        # consensus-topic bytes the topic check accepted, decoded (ACCEPTED_MESSAGES_MEMO)
        self._accepted_messages: OrderedDict[bytes, ConsensusMessage] = OrderedDict()
        self._accepted_compacts: OrderedDict[bytes, CompactProposal] = OrderedDict()
        self._check_validators: OrderedDict[int, ValidatorSet] = OrderedDict()
        self._rebuilding: dict[bytes, trio.Event] = {}
        self._compact_seen: OrderedDict[bytes, None] = OrderedDict()
        self._compact_rounds: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self.signer: Signer | None = None
        message_log: MessageLog | None = None
        if node.validator_key is not None:
            node.home.signing_state.parent.mkdir(mode=0o700, exist_ok=True)
            guard = SigningGuard(node.home.signing_state)
            self.signer = Signer(node.validator_key, self.chain_id, guard)
            # with the guard, what lets a restart resume the height it stopped in
            message_log = MessageLog.at(node.home.consensus_wal)
        c = cfg.consensus
        delta = c.timeout_delta_ms / 1000
        self.timeouts = Timeouts(
            propose=c.timeout_propose_ms / 1000, prevote=c.timeout_prevote_ms / 1000,
            precommit=c.timeout_precommit_ms / 1000, propose_delta=delta, prevote_delta=delta,
            precommit_delta=delta,
        )
        self.commit_wait_s = c.commit_wait_ms / 1000
        self.block_interval_s = c.block_interval_ms / 1000
        self.consensus_app = ConsensusApp(
            self.app, node.address, proposal_budget_s(c),
            alone_budget_s=ALONE_BUDGET_SHARE * c.block_interval_ms / 1000,
            interval_s=c.block_interval_ms / 1000, propose_timeout_s=c.timeout_propose_ms / 1000,
            attestation_cost=lambda: get_param(self.app.head_state(), "attestation_cost"))
        self.machine = ConsensusMachine(
            self.chain_id, self.consensus_app, self.signer, self.timeouts,
            message_log=message_log)
        # Built once the initial sync is done, at the height after the synced head.
        self.runner: ConsensusRunner | None = None
        self.syncing = False
        # Height the running sync round fetches up to, once its peer served a verified block.
        self.sync_target: int | None = None
        self._sync_wanted = trio.Event()
        # Block sync's memory of peers that failed to back their claimed heads.
        self._sync_excluded: dict[str, float] = {}  # peer -> monotonic time it may be asked again
        self._sync_strikes: dict[str, int] = {}  # peer -> failures in a row
        self._proposers: dict[tuple[int, int], bytes] = {}
        # full garbage collections in the wait for the next height (node/gcpolicy.py)
        self.full_gc = FullCollections()

    # --- lifecycle -----------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run p2p, sync and consensus until cancelled; started once consensus runs."""
        self.full_gc.install()
        try:
            await self._run(task_status)
        finally:
            self.full_gc.uninstall()

    async def _run(self, task_status: Any) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.p2p is not None:
                await nursery.start(self.p2p.run)
                nursery.start_soon(self._pump_consensus)
                nursery.start_soon(self._drain, self._tx_inbox)  # pooled by the validator
                nursery.start_soon(self._drain, self._evidence_inbox)  # likewise
                nursery.start_soon(self._drain, self._block_inbox)
                await self._initial_sync()
            height = self.store.head_height + 1
            self.runner = ConsensusRunner(
                self.machine, height, self.store.validators_for(height),
                broadcast=self._broadcast, on_decide=self._on_decide,
                next_validators=self._validators_for, on_evidence=self._on_evidence,
                on_invalid=self._on_invalid, on_timeline=self._on_timeline,
                encode=self._encode_for_wire,
                commit_wait_s=max(self.commit_wait_s, self.block_interval_s),
            )
            await nursery.start(self.runner.run)
            if self.p2p is not None:
                nursery.start_soon(self._sync_loop)
            task_status.started()

    def peer_count(self) -> int:
        return len(self.p2p.peers()) if self.p2p is not None else 0

    def banned_peer_count(self) -> int:
        """Peers serving a ban for misbehaviour (they are disconnected and refused)."""
        return len(self.p2p.scoreboard.banned_peers()) if self.p2p is not None else 0

    def consensus_status(self) -> dict[str, Any]:
        """Where the machine is: height, round, step (for status pages and tests)."""
        m = self.machine
        return {"height": m.height, "round": m.round, "step": m.step.name.lower(),
                "lockedRound": m.locked_round}

    # --- consensus -------------------------------------------------------------------

    async def _broadcast(self, data: bytes) -> None:
        if self.p2p is None:
            return
        relayed_at = self._relayed_votes.get(data)
        if relayed_at is not None and time.monotonic() - relayed_at < RELAYED_VOTE_REPAIR_S:
            if self.runner is not None:  # motus_consensus_events_total{source="runner"}
                self.runner.stats["relayed_vote_not_repeated"] += 1
            return  # gossip took it to our mesh moments ago (RELAYED_VOTE_REPAIR_S)
        await self.p2p.publish("consensus", data)

    async def _on_decide(self, height: int, value: bytes, commit: Commit) -> None:
        if height <= self.store.head_height:
            return  # block sync got there first; the machine only caught up
        decided_at = decided_with_peers(
            self.runner.timeline if self.runner is not None else None, height)
        block = await self.app.commit_async(height, value, commit)
        self.consensus_app.peers_start = (
            None if decided_at is None else (height + 1, decided_at + self.commit_wait_s))
        if self.runner is not None:
            wait = self._next_height_wait(block.header.timestamp_ms)
            self.runner.commit_wait_s = wait
            if self._nursery is not None and self.full_gc.due(wait):
                # in the wait for the next height, not whenever the pool grew
                self._nursery.start_soon(self._collect_garbage)
        await self._announce(height, block.hash)

    async def _collect_garbage(self) -> None:
        took = self.full_gc.collect()
        log.debug("full garbage collection in the wait for the next height: %.3f s", took)

    def _on_timeline(self, timeline: HeightTimeline) -> None:
        phases = timeline.phases or {}
        for phase in TIMELINE_PHASES:
            if phase in phases:
                CONSENSUS_PHASE_SECONDS.labels(phase).observe(phases[phase])
        if timeline.interval_s is not None:
            CONSENSUS_PHASE_SECONDS.labels("interval").observe(timeline.interval_s)
        CONSENSUS_PHASE_SECONDS.labels("durable").observe(timeline.durable_s)
        CONSENSUS_ROUNDS.observe(timeline.round)
        if timeline_log.isEnabledFor(logging.DEBUG):
            timeline_log.debug(
                "height %d round %d started %.3f: %s; interval %.3f s, durable %.3f s",
                timeline.height, timeline.round, timeline.started,
                " ".join(f"{k}={v:.3f}" for k, v in phases.items()),
                timeline.interval_s or 0.0, timeline.durable_s)

    def _next_height_wait(self, timestamp_ms: int) -> float:
        """How long to wait before starting the next height: the block interval counted
        from the decided block's timestamp (its proposal time), at least the commit wait.

        Counting from the proposal rather than from our decision keeps the cadence at
        the interval whatever consensus took, and every node aims at the same instant,
        so they start the next height together however late each one decided."""
        since_proposal = time.time() - timestamp_ms / 1000
        return min(self.block_interval_s,
                   max(self.commit_wait_s, self.block_interval_s - since_proposal))

    async def _announce(self, height: int, block_hash: bytes) -> None:
        if self.p2p is None:
            return
        try:
            await self.p2p.publish("block", rlp.encode([height, block_hash]))
        except Exception:  # an announcement is a hint; losing one costs a sync poll
            log.exception("block announcement failed")

    def _validators_for(self, height: int) -> ValidatorSet:
        return self.store.validators_for(height)

    async def _on_evidence(self, ev: DuplicateVoteEvidence) -> None:
        try:
            added = self.app.add_evidence(ev)
        except InvalidEvidence as exc:  # the machine pairs only conflicting signed votes
            log.error("our own evidence against 0x%s is invalid: %s", ev.validator.hex(), exc)
            return
        if added:
            log.warning("double-sign evidence against 0x%s at height %d round %d",
                        ev.validator.hex(), ev.height, ev.vote_a.round)
            if self.p2p is not None:
                await self.p2p.publish("evidence", ev.encode())

    def _on_invalid(self, peer: Any, effect: InvalidMessage) -> None:
        """The machine refused a message the topic check let through.

        Only the message's author is at fault: every relay ran the same topic check and
        passed it (what the machine still refuses depends on its height and round). The
        author is known because pubsub messages are signed; we penalise it only when it
        handed us the message itself, so an honest relay is never punished."""
        if self.p2p is None or not isinstance(peer, tuple):
            return
        origin, forwarder = peer
        log.info("consensus message from %s refused: %s (%s)", origin, effect.code, effect.reason)
        if origin is not None and origin == forwarder:
            self.p2p.penalise(origin, f"consensus:{effect.code}")

    # --- compact proposals (node/compact.py) --------------------------------------------

    def _encode_for_wire(self, message: ConsensusMessage) -> bytes:
        """A message's consensus-topic bytes: our proposals in compact form (when
        enabled), everything else as consensus.messages encodes it."""
        if not (self.compact_proposals and isinstance(message, ProposalMessage)
                and self.p2p is not None and self.p2p.peers()):
            return encode_message(message)  # (with no peer, nobody needs the ids)
        key = message.proposal.signature
        wire = self._compact_wire.get(key)
        if wire is None:
            block = self.app.block_of(message.value)
            self._hold(block, message.value)
            wire = encode_compact(message.proposal, block, prefill=self._not_from_gossip())
            _remember(self._compact_wire, key, wire, COMPACT_KEEP_PROPOSALS)
        return wire

    def _hold(self, block: Block, value: bytes) -> None:
        _remember(self._held, block.hash, (block, value), COMPACT_KEEP_PROPOSALS)
        event = self._rebuilding.pop(block.hash, None)
        if event is not None:
            event.set()

    def _not_from_gossip(self) -> Any:
        """Which of our proposal's attestations go in full: those that did not reach us
        by gossip (admitted over RPC, or unknown to the pool), which our peers may not
        have received yet; what a peer gossiped to us, every peer of the mesh has seen."""
        service = getattr(self.node, "attestations", None)
        pool = getattr(service, "pool", None)
        if pool is None:
            return lambda att_id: True

        def prefill(att_id: bytes) -> bool:
            source = pool.pending_source(att_id)
            return source is None or not source.startswith("peer:")

        return prefill

    def _pool_lookup(self) -> Any:
        service = getattr(self.node, "attestations", None)
        pool = getattr(service, "pool", None)
        return pool.pending_raw if pool is not None else (lambda att_id: None)

    async def _serve_proposal(self, peer: str, block_hash: bytes,
                              indices: list[int]) -> list[bytes] | None:
        """``/motus/proposal/1``: parts of a proposal we hold (ours, or one we rebuilt);
        one we are rebuilding is answered once rebuilt (within COMPACT_SERVE_WAIT_S)."""
        from p2p.errors import BadRequest

        held = self._held.get(block_hash)
        if held is None and block_hash in self._rebuilding:
            with trio.move_on_after(COMPACT_SERVE_WAIT_S):
                await self._rebuilding[block_hash].wait()
            held = self._held.get(block_hash)
        if held is None:
            return None
        block, value = held
        if not indices:
            return [value]
        if max(indices) >= len(block.attestations):
            raise BadRequest(f"the proposal has {len(block.attestations)} attestations")
        return [block.attestations[i] for i in indices]

    def _fetch_candidates(self, origin: str | None, forwarder: str | None) -> list[str]:
        """Who to ask for a proposal's parts: its author first (it holds the proposal),
        then whoever forwarded it, then the other connected peers."""
        assert self.p2p is not None
        connected = [p.peer_id for p in self.p2p.peers()]
        ordered = [p for p in (origin, forwarder) if p is not None and p in connected]
        ordered += [p for p in connected if p not in ordered]
        return list(dict.fromkeys(ordered))[:COMPACT_FETCH_PEERS]

    async def _receive_compact(self, compact: CompactProposal, origin: str | None,
                               forwarder: str | None) -> None:
        """Rebuild a compact proposal's block (our pool, then peers), then hand the whole
        proposal to consensus; a proposal that cannot be rebuilt is dropped."""
        assert self.p2p is not None and self.runner is not None
        block_hash = compact.proposal.block_hash
        held = self._held.get(block_hash)
        if held is None:
            self._rebuilding.setdefault(block_hash, trio.Event())
            try:
                held = await self._rebuild(compact, origin, forwarder)
            finally:
                event = self._rebuilding.pop(block_hash, None)
                if event is not None:
                    event.set()  # peers waiting on us get "unknown" rather than wait on
            if held is None:
                log.warning("compact proposal %d/%d (%s) from %s could not be rebuilt: dropped",
                            compact.height, compact.round, block_hash.hex()[:16], origin)
                return
        await self.runner.submit(ProposalMessage(compact.proposal, held[1]),
                                 peer=(origin, forwarder))

    async def _rebuild(self, compact: CompactProposal, origin: str | None,
                       forwarder: str | None) -> tuple[Block, bytes] | None:
        """The whole proposal: its attestations from our pool, those we lack from peers
        (its author first), or, when that fails or the ids do not make the header's
        attestation root, the whole block from a peer. None once every peer asked has
        failed, or the height was committed meanwhile."""
        from p2p.errors import P2PError
        from p2p.scoring import Misbehaviour

        assert self.p2p is not None
        block_hash = compact.proposal.block_hash
        found, missing = gather(compact.block, self._pool_lookup())
        candidates = self._fetch_candidates(origin, forwarder)
        outcome = "parts" if missing else "pool"
        COMPACT_MISSING.inc(len(missing))
        for peer in candidates:
            if not missing or self.store.head_height >= compact.height:
                break
            started = time.monotonic()
            try:
                items = await self.p2p.request_proposal(peer, block_hash, missing,
                                                        COMPACT_FETCH_TIMEOUT_S)
            except P2PError as exc:
                self._note_unserved(peer, origin, exc, time.monotonic() - started)
                continue
            bad = fill(compact.block, found, missing, items)
            if bad:
                log.warning("peer %s served %d attestations that are not the ones asked for "
                            "(proposal %s)", peer, len(bad), block_hash.hex()[:16])
                self.p2p.penalise(peer, Misbehaviour.COMPACT_BAD_PART)
            missing = bad
        if not missing:
            built = assemble(compact.block, found)  # type: ignore[arg-type]
            if built is not None:
                value, block = built
                COMPACT_PROPOSALS.labels(outcome).inc()
                self.app.note_assembled(value, block)
                self._hold(block, value)
                return block, value
            log.warning("compact proposal %d/%d from %s: its ids do not hash to the header's "
                        "attestations root", compact.height, compact.round, origin)
            if origin is not None:
                self.p2p.penalise(origin, Misbehaviour.COMPACT_WRONG_IDS)
        # Fall back to the whole block, from whoever has it.
        for peer in candidates:
            if self.store.head_height >= compact.height:
                break
            started = time.monotonic()
            try:
                items = await self.p2p.request_proposal(peer, block_hash, [],
                                                        COMPACT_FETCH_TIMEOUT_S)
                block = Block.decode(items[0])
            except P2PError as exc:
                self._note_unserved(peer, origin, exc, time.monotonic() - started)
                continue
            except MalformedBlock:
                block = None
            if block is None or block.hash != block_hash:
                log.warning("peer %s served a block that is not proposal %s", peer,
                            block_hash.hex()[:16])
                self.p2p.penalise(peer, Misbehaviour.COMPACT_BAD_PART)
                continue
            COMPACT_PROPOSALS.labels("whole").inc()
            self.app.note_assembled(items[0], block)
            self._hold(block, items[0])
            return block, items[0]
        COMPACT_PROPOSALS.labels("dropped").inc()
        return None

    def _note_unserved(self, peer: str, origin: str | None, exc: Exception,
                       elapsed_s: float) -> None:
        """A request for a proposal's parts failed: a relay may simply not hold it (yet);
        its author always does, so the author is penalised."""
        from p2p.scoring import Misbehaviour

        assert self.p2p is not None
        if peer != origin:
            log.info("proposal parts from relay %s: %s (%.2f s)", peer, exc, elapsed_s)
            return
        log.warning("proposal parts from their proposer %s: %s (%.2f s)", peer, exc, elapsed_s)
        self.p2p.penalise(peer, Misbehaviour.COMPACT_UNSERVED)

    def _check_compact(self, data: bytes) -> Verdict:
        """Topic check of a compact proposal: as a proposal's (signed by the round's
        proposer, at a height we can check), and its header must be the block the
        proposal signs (REJECT otherwise: no honest proposer or relay sends that)."""
        from p2p.host import Verdict

        compact = self._accepted_compacts.get(data)
        if compact is None:
            try:
                compact = decode_compact(data)
            except ConsensusError:
                return Verdict.MALFORMED
        proposal = compact.proposal
        if self._is_forged(ProposalMessage(proposal, b"")):
            return Verdict.REJECT
        head = self.store.decided_height
        if not head < proposal.height <= head + 1:
            return Verdict.IGNORE  # a proposal for a height we have is of no use
        if proposal.round > max(self.machine.round, 0) + MAX_ROUNDS_AHEAD:
            return Verdict.IGNORE
        validators = self._validators_to_check(proposal.height)
        if validators is None:
            return Verdict.IGNORE
        if not self._is_signed_by_set(ProposalMessage(proposal, b""), validators):
            return Verdict.REJECT
        if compact.block.header.hash != proposal.block_hash:
            return Verdict.REJECT
        _remember(self._compact_decoded, data, compact, COMPACT_DECODED_MEMO)
        _remember(self._accepted_compacts, data, compact, ACCEPTED_COMPACTS_MEMO)
        return Verdict.ACCEPT

    def _check_consensus(self, peer: str, data: bytes) -> Verdict:
        """Topic check: relay only messages every honest node would accept.

        MALFORMED (the forwarder is banned at once): undecodable or not canonical; no
        honest node relays what it could not decode. REJECT (penalised): a vote or
        proposal whose signature is not by the validator it names, at any height and
        round (``_is_forged``); a vote/proposal/commit for a height whose validator set
        we know (head to head + 1) that is not signed by a member (by the round's
        proposer, for a proposal); a vote for a passed height whose set we hold, by a
        non-member. IGNORE (dropped, not relayed, no penalty): everything else outside
        head to head + 1, and rounds far ahead."""
        from p2p.host import Verdict

        if is_compact(data):
            return self._check_compact(data)
        message = self._accepted_messages.get(data)
        if message is None:
            try:
                message = decode_message(data)
            except ConsensusError:
                return Verdict.MALFORMED
        if self._is_forged(message):
            return Verdict.REJECT
        head = self.store.decided_height
        height = message.height
        if height < head and isinstance(message, Vote):
            # A late vote (a slow relay, a loaded node): not relayed, but a forger must not
            # hide among them. Its signature is already checked; its signer is checked
            # against that height's set where we still hold it.
            validators = self._validators_to_check(height)
            if validators is not None and validators.get(message.validator) is None:
                return Verdict.REJECT
            return Verdict.IGNORE
        if not head <= height <= head + 1:
            return Verdict.IGNORE
        if isinstance(message, CommitMessage) and height <= head:
            return Verdict.IGNORE  # we have that block already
        if message.round > max(self.machine.round, 0) + MAX_ROUNDS_AHEAD:
            return Verdict.IGNORE
        validators = self._validators_to_check(height)
        if validators is None:
            return Verdict.IGNORE
        if not self._is_signed_by_set(message, validators):
            return Verdict.REJECT
        if len(data) <= DECODED_MEMO_MAX_BYTES:
            _remember(self._consensus_decoded, data, message, CONSENSUS_DECODED_MEMO)
            _remember(self._accepted_messages, data, message, ACCEPTED_MESSAGES_MEMO)
        if isinstance(message, Vote):
            _remember(self._relayed_votes, data, time.monotonic(), RELAYED_VOTES_MEMO)
        return Verdict.ACCEPT

    def _validators_to_check(self, height: int) -> ValidatorSet | None:
        """The store's validator set of ``height`` for the topic checks, memoised (see
        CHECK_VALIDATORS_MEMO; a height not stored yet is asked again next time)."""
        validators = self._check_validators.get(height)
        if validators is None:
            validators = self.store.validators_for(height)
            if validators is not None:
                _remember(self._check_validators, height, validators, CHECK_VALIDATORS_MEMO)
        return validators

    def _is_forged(self, message: ConsensusMessage) -> bool:
        """Whether a vote's or proposal's signature is not by the validator it names.

        True whatever our height or round: the signature covers the chain id, height,
        round and block hash, and recovers to one address, so no honest node signs or
        relays such a message and no later knowledge can make it valid. Checked before
        the height window so that a forgery counts against its sender however late or
        early it arrives (under load a forged vote for the current height reached
        validators 1-9 heights later, and used to be dropped unchecked). A memoised
        recovery (~0.1 ms); commits, whose signers only a validator set names, are not
        covered."""
        if isinstance(message, Vote):
            return compute_vote_signer(self.chain_id, message) != message.validator
        if isinstance(message, ProposalMessage):
            proposal = message.proposal
            return compute_proposal_signer(self.chain_id, proposal) != proposal.proposer
        return False

    def _is_signed_by_set(self, message: ConsensusMessage, validators: ValidatorSet) -> bool:
        if isinstance(message, Vote):
            return (validators.get(message.validator) is not None
                    and compute_vote_signer(self.chain_id, message) == message.validator)
        if isinstance(message, ProposalMessage):
            proposal = message.proposal
            return (proposal.proposer == self._proposer(validators, proposal.height, proposal.round)
                    and compute_proposal_signer(self.chain_id, proposal) == proposal.proposer)
        try:
            validators.verify_commit(self.chain_id, message.height, message.commit.block_hash,
                                     message.commit)
        except ConsensusError:
            return False
        return True

    def _proposer(self, validators: ValidatorSet, height: int, round_: int) -> bytes:
        key = (height, round_)
        proposer = self._proposers.get(key)
        if proposer is None:
            proposer = validators.proposer_for_round(round_).address
            if len(self._proposers) > 256:
                self._proposers.clear()
            self._proposers[key] = proposer
        return proposer

    async def _pump_consensus(self) -> None:
        async for msg in self._consensus_inbox:
            if self.runner is None:
                continue  # still syncing: the machine starts after the synced head
            if is_compact(msg.data):
                self._start_compact(msg.data, msg.origin, msg.forwarder)
                continue
            decoded = self._consensus_decoded.pop(msg.data, None)
            await self.runner.submit(msg.data if decoded is None else decoded,
                                     peer=(msg.origin, msg.forwarder))

    def _start_compact(self, data: bytes, origin: str | None, forwarder: str | None) -> None:
        compact = self._compact_decoded.pop(data, None)
        if compact is None:
            try:
                compact = decode_compact(data)
            except ConsensusError:
                return  # the topic check let it through, so it cannot be malformed
        key = compact.proposal.signature
        if key in self._compact_seen:
            return  # a re-send: the first copy is rebuilt (or was dropped) already
        # An equivocating proposer signs as many proposals as it likes: rebuild no more
        # per round than the machine would keep (the rest it would drop anyway).
        slot = (compact.height, compact.round)
        if self._compact_rounds.get(slot, 0) >= MAX_PROPOSALS_PER_ROUND:
            return
        _remember(self._compact_rounds, slot, self._compact_rounds.get(slot, 0) + 1, 64)
        _remember(self._compact_seen, key, None, 64)
        assert self._nursery is not None
        self._nursery.start_soon(self._receive_compact_safely, compact, origin, forwarder)

    async def _receive_compact_safely(self, compact: CompactProposal, origin: str | None,
                                      forwarder: str | None) -> None:
        # A task of the network nursery: whatever a peer's bytes make go wrong in it must
        # drop that one proposal, never the node.
        try:
            await self._receive_compact(compact, origin, forwarder)
        except Exception:
            COMPACT_PROPOSALS.labels("dropped").inc()
            log.exception("compact proposal %d/%d from %s could not be handled",
                          compact.height, compact.round, origin)

    async def _drain(self, inbox: trio.MemoryReceiveChannel[Any]) -> None:
        async for _ in inbox:
            pass  # the topic check already did the work; keep the inbox from filling

    # --- transactions and evidence ------------------------------------------------------

    def _check_tx(self, peer: str, data: bytes) -> Verdict:
        """Topic check of a transaction batch; every transaction is offered to the pool.

        MALFORMED (the forwarder is banned at once) when the envelope is not a canonical
        batch (or a transaction is over 128 KiB): bytes no honest publisher or relay
        sends. REJECT (the forwarder is penalised) when one transaction is invalid whatever
        the state (undecodable, bad signature, wrong chain, below intrinsic gas...):
        every honest node rejects the same batch, so an honest relay never forwards
        one. Otherwise ACCEPT (relay the batch) if at least one transaction was new to
        our pool, else IGNORE: rejections that depend on our pool or head (known,
        stale nonce, pool full...) are not the forwarder's fault. Transactions pooled
        before a malformed one stay pooled: they are valid whoever sent them."""
        from p2p.batch import decode_tx_batch
        from p2p.errors import BatchDecodeError
        from p2p.host import Verdict

        try:
            raws = decode_tx_batch(data)
        except BatchDecodeError:
            return Verdict.MALFORMED
        pooled = 0
        for raw in raws:
            try:
                self.app.submit_transaction(raw, gossip=False)
            except TxRejected as exc:
                if exc.code in STATE_DEPENDENT_TX_CODES:
                    continue  # may be valid elsewhere or stale: not the peer's fault
                log.info("transaction batch from %s rejected: %s (%s)", peer, exc.code,
                         exc.message)
                return Verdict.REJECT
            pooled += 1
        return Verdict.ACCEPT if pooled else Verdict.IGNORE

    def _check_evidence(self, peer: str, data: bytes) -> Verdict:
        """Topic check of double-sign evidence (``Application.add_evidence``).

        MALFORMED (the forwarder is banned at once): undecodable. REJECT (penalised) what
        is invalid in every state: votes that do not conflict (type, height, round or
        validator differ, or the same block), a bad signature, or an offender outside the validator set of its height
        when we have that set. IGNORE what is only not new or not checkable here: already
        pending or committed, or a height whose validator set we do not have. ACCEPT
        (relay) new evidence that verifies."""
        from p2p.host import Verdict

        try:
            ev = DuplicateVoteEvidence.decode(data)
        except ConsensusError:
            return Verdict.MALFORMED
        try:
            added = self.app.add_evidence(ev)
        except InvalidEvidence as exc:
            log.info("evidence from %s rejected: %s", peer, exc)
            return Verdict.REJECT
        if not added:
            return Verdict.IGNORE  # known, committed, or not checkable at our head
        log.warning("double-sign evidence against 0x%s at height %d received by gossip",
                    ev.validator.hex(), ev.height)
        return Verdict.ACCEPT

    # --- block sync ------------------------------------------------------------------------

    def _check_announce(self, peer: str, data: bytes) -> Verdict:
        """Topic check of a block announcement ``[height, hash]``.

        MALFORMED (banned at once): undecodable. IGNORE (dropped, not relayed, no
        penalty): a height more than ANNOUNCE_RELAY_LEAD below or above our head; one
        above it still wakes the sync (if some chain could have reached it: see
        ``compute_max_plausible_height``), since it says we may be behind, but we do
        not vouch for it. ACCEPT (relay) otherwise; two or more above our head wakes
        the sync too."""
        from p2p.host import Verdict

        try:
            height, _ = decode_announce(data)
        except Exception:
            return Verdict.MALFORMED
        head = self.store.head_height
        if height > head + 1 and height <= self._max_plausible_height():
            self._sync_wanted.set()
        if not head - ANNOUNCE_RELAY_LEAD <= height <= head + ANNOUNCE_RELAY_LEAD:
            return Verdict.IGNORE
        return Verdict.ACCEPT

    def _max_plausible_height(self) -> int:
        head = self.store.head
        return compute_max_plausible_height(head.height, head.timestamp_ms, int(time.time() * 1000))

    async def _serve_status(self, peer: str) -> Any:
        from p2p.reqresp import Head

        head = self.store.head
        return Head(head.height, head.hash)

    async def _serve_blocks(self, peer: str, start: int, end: int) -> list[bytes]:
        out = []
        for h in range(max(1, start), min(end, self.store.head_height) + 1):
            raw = self.store.raw_block(h)
            commit = self.store.commit_at(h)
            if raw is None or commit is None:
                break
            out.append(rlp.encode([raw, commit.encode()]))
        return out

    async def _initial_sync(self) -> None:
        """Before joining consensus, catch up with whatever peers we reach within a few seconds."""
        assert self.p2p is not None
        if not self.node.config.p2p.bootstrap:
            return
        with trio.move_on_after(INITIAL_PEER_WAIT_S):
            while not self.p2p.peers():
                await trio.sleep(0.1)
        await trio.sleep(0.2)  # let the other bootstrap peers connect: ask the best of them
        try:
            await self._sync_once(min_lead=1)
        except Exception:
            log.exception("initial block sync failed")

    async def _sync_loop(self) -> None:
        """Sync when an announcement shows we are two or more blocks behind, or when our
        head has not moved for SYNC_STALL_S while some peer is ahead."""
        last_head, moved_at = self.store.head_height, time.monotonic()
        while True:
            with trio.move_on_after(SYNC_POLL_S):
                await self._sync_wanted.wait()
            announced = self._sync_wanted.is_set()
            self._sync_wanted = trio.Event()
            head = self.store.head_height
            if head != last_head:
                last_head, moved_at = head, time.monotonic()
            stalled = time.monotonic() - moved_at >= SYNC_STALL_S
            if not (announced or stalled):
                continue
            round_started = time.monotonic()
            try:
                await self._sync_once(min_lead=1 if stalled else 2)
            except Exception:
                log.exception("block sync round failed")
            if stalled:
                moved_at = time.monotonic()  # poll peers once per stall period, not per second
            # Any peer can send announcements (up to its block-topic budget) and each round
            # asks every peer for its head: one round per poll period at most.
            await trio.sleep(max(0.0, round_started + SYNC_POLL_S - time.monotonic()))

    async def _sync_once(self, min_lead: int) -> int:
        """Catch up from peers at least ``min_lead`` blocks ahead; returns the number of
        blocks committed.

        Peers are chosen by what they deliver, not by what they claim: the highest
        claimed head goes first, and a peer that cannot back its claim (an empty answer
        before reaching it, a block that fails verification, a timeout) is penalised,
        left out of sync for a while (``SYNC_EXCLUDE_S``, doubling) and the next peer is
        tried in the same round, from wherever the last one stopped. A head no chain
        could have reached by now is not believed at all (``_poll_heads``)."""
        assert self.p2p is not None
        claims = await self._poll_heads()
        floor = self.store.head_height + min_lead
        ranked = sorted((claim for claim in claims.items() if claim[1] >= floor),
                        key=lambda claim: -claim[1])
        if not ranked:
            return 0
        committed = 0
        started = time.monotonic()
        self.syncing = True
        try:
            for peer_id, claimed in ranked:
                if claimed <= self.store.head_height:
                    continue  # an earlier peer already brought us there
                got, failure = await self._sync_from(peer_id, claimed)
                committed += got
                if failure is None:
                    self._sync_strikes.pop(peer_id, None)
                    break
                self._sync_failed(peer_id, claimed, failure)
            if committed:
                height = self.store.head_height + 1
                elapsed = time.monotonic() - started
                log.info("block sync: committed %d blocks in %.2f s (%.0f blocks/s), now at %d",
                         committed, elapsed, committed / max(elapsed, 1e-6), height - 1)
                if self.runner is not None and self.machine.height < height:
                    await self.runner.jump_to_height(height, self.store.validators_for(height))
        finally:
            self.syncing = False
            self.sync_target = None
        return committed

    async def _poll_heads(self) -> dict[str, int]:
        """Ask every connected peer not left out of sync for its head, all at once.

        A claim above ``compute_max_plausible_height`` is a lie no honest node can
        tell (block timestamps would have to run ahead of the clock): the peer is
        penalised ``sync_implausible_head``, which bans it, and its claim dropped."""
        from p2p.errors import P2PError
        from p2p.scoring import Misbehaviour

        assert self.p2p is not None
        p2p = self.p2p
        now = time.monotonic()
        self._sync_excluded = {p: t for p, t in self._sync_excluded.items() if t > now}
        ceiling = self._max_plausible_height()
        claims: dict[str, int] = {}

        async def ask(peer_id: str) -> None:
            with trio.move_on_after(SYNC_STATUS_TIMEOUT_S):
                try:
                    status = await p2p.request_status(peer_id)
                except P2PError:
                    return
                if status.height > ceiling:
                    log.warning("peer %s claims head %d, beyond the %d any chain could have "
                                "reached by now: not believed", peer_id, status.height, ceiling)
                    p2p.penalise(peer_id, Misbehaviour.SYNC_IMPLAUSIBLE_HEAD)
                    return
                claims[peer_id] = status.height

        async with trio.open_nursery() as nursery:
            for peer in p2p.peers():
                if peer.peer_id not in self._sync_excluded:
                    nursery.start_soon(ask, peer.peer_id)
        return claims

    def _sync_failed(self, peer_id: str, claimed: int, failure: str) -> None:
        """``peer_id`` did not deliver up to ``claimed``: penalise it for ``failure``
        (unless that was done where it was found) and leave it out of sync for a while."""
        from p2p.scoring import Misbehaviour

        assert self.p2p is not None
        faults = (Misbehaviour.SYNC_UNBACKED_HEAD, Misbehaviour.SYNC_BAD_BLOCK,
                  Misbehaviour.SYNC_TIMEOUT)
        if failure in faults:
            strikes = self._sync_strikes.get(peer_id, 0)
            self._sync_strikes[peer_id] = strikes + 1
            if len(self._sync_strikes) > 4096:  # peer ids are free: keep the table bounded
                self._sync_strikes.clear()
            pause = min(SYNC_EXCLUDE_S * 2**strikes, SYNC_EXCLUDE_MAX_S)
        else:
            pause = SYNC_RETRY_S
        self._sync_excluded[peer_id] = time.monotonic() + pause
        log.warning("block sync: peer %s claimed head %d but %s; not asked again for %.0f s",
                    peer_id, claimed, failure, pause)
        if failure in (Misbehaviour.SYNC_UNBACKED_HEAD, Misbehaviour.SYNC_TIMEOUT):
            self.p2p.penalise(peer_id, failure)

    async def _sync_from(self, peer_id: str, target: int) -> tuple[int, str | None]:
        """Fetch, verify and commit blocks from ``peer_id`` up to ``target`` (its claimed
        head). Returns the blocks committed and, if it stopped short, why: a
        ``Misbehaviour.SYNC_*`` reason, or ``"failed: ..."`` for what p2p already
        penalised or cannot blame on the peer (a malformed answer, a lost connection)."""
        from p2p.scoring import Misbehaviour

        committed = 0
        stopped: list[str] = []  # why the fetcher gave up early, if it did
        # The next batch is fetched while this one executes: the response then
        # arrives during the yields between blocks instead of after the batch.
        batches_send, batches = trio.open_memory_channel[list[bytes]](1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fetch_batches, peer_id, target, batches_send, stopped)
            async with batches:
                async for items in batches:
                    for item in items:
                        while self.app.committing is not None:
                            await trio.sleep(0.005)  # consensus is writing a block: after it
                        result = self._commit_synced(peer_id, item)
                        if result is None:
                            stopped.append(Misbehaviour.SYNC_BAD_BLOCK)
                            nursery.cancel_scope.cancel()
                            break
                        committed += result
                        self.sync_target = target  # the peer served a block that verified
                        await trio.sleep(0)  # let consensus and RPC breathe
        if stopped:
            return committed, stopped[-1]
        if committed:
            log.info("block sync: %d blocks from %s", committed, peer_id)
        return committed, None

    async def _fetch_batches(self, peer_id: str, target: int,
                             out: trio.MemorySendChannel[list[bytes]], stopped: list[str]) -> None:
        """Request consecutive batches up to ``target`` from ``peer_id`` into ``out``. A
        short answer is fine (the byte budget ran out: ask again from where it stopped);
        an empty one, an error or a timeout stops, with the reason in ``stopped``."""
        from p2p.errors import P2PError, RequestTimeout
        from p2p.scoring import Misbehaviour

        assert self.p2p is not None
        async with out:
            start = self.store.head_height + 1
            while start <= target:
                try:
                    items = await self.p2p.request_blocks(
                        peer_id, start, min(target, start + SYNC_BATCH - 1))
                except RequestTimeout:
                    stopped.append(Misbehaviour.SYNC_TIMEOUT)
                    return
                except P2PError as exc:
                    stopped.append(f"failed: {getattr(exc, 'code', 'p2p_error')}: {exc}")
                    return
                if not items:
                    # It claimed ``target`` and an honest node serves every height up
                    # to its head: there is no innocent empty answer below it.
                    stopped.append(Misbehaviour.SYNC_UNBACKED_HEAD)
                    return
                await out.send(items)
                start += len(items)

    def _commit_synced(self, peer_id: str, item: bytes) -> int | None:
        """Verify a fetched block's commit against the validator set of its height, then
        execute and commit it. Returns 1 if committed, 0 if consensus committed that
        height meanwhile, None (and the peer is penalised) if the item is bad."""
        from p2p.scoring import Misbehaviour

        assert self.p2p is not None
        head = self.store.head_height
        try:
            raw, block, commit = decode_sync_item(item)
            if block.height <= head and self.store.hash_at(block.height) == block.hash:
                return 0  # decided by consensus while the response was in flight
            if block.height != head + 1:
                raise MalformedBlock(f"expected height {head + 1}, got {block.height}")
            self.store.validators_for(block.height).verify_commit(
                self.chain_id, block.height, block.hash, commit)
            self.app.commit(block.height, raw, commit)
        except Exception as exc:
            log.warning("peer %s sent a bad block %d: %s", peer_id, head + 1, exc)
            self.p2p.penalise(peer_id, Misbehaviour.SYNC_BAD_BLOCK)
            return None
        return 1


def decided_with_peers(timeline: HeightTimeline | None, height: int) -> float | None:
    """When we decided ``height`` (wall clock, from its timeline), if we decided it with our
    peers: our own precommit of the decided round went out at least LATE_LAST_PRECOMMIT_S
    before the decision, so we waited for another's precommit and were not the last to
    get there. None otherwise (we were last, or decided without precommitting)."""
    if timeline is None or timeline.height != height or timeline.phases is None:
        return None
    decide = timeline.phases.get("decide")
    precommit = timeline.phases.get(f"precommit@{timeline.round}")
    if decide is None or precommit is None or decide - precommit < LATE_LAST_PRECOMMIT_S:
        return None
    return timeline.started + decide


def _learnt_cap(cap: int, count: int, elapsed_s: float, budget_s: float) -> int:
    """The count cap after a block of ``count`` items executed in ``elapsed_s``: as many
    as would take ``budget_s`` at that pace; a smaller cap only from a block that took at
    least half the budget, and at most PROPOSAL_MAX_SHRINK times smaller."""
    learnt = int(count * budget_s / elapsed_s)
    if learnt >= cap:
        return learnt
    if elapsed_s < budget_s / 2:
        return cap  # a quick block proves nothing against the cap
    return max(learnt, cap // PROPOSAL_MAX_SHRINK)


def _remember(memo: OrderedDict[Any, Any], key: Any, value: Any, size: int) -> None:
    """Put ``key`` in an insertion-ordered memo of at most ``size`` entries."""
    memo[key] = value
    memo.move_to_end(key)
    while len(memo) > size:
        memo.popitem(last=False)


def compute_max_plausible_height(head_height: int, head_timestamp_ms: int, now_ms: int) -> int:
    """The highest head any chain sharing our verified head could have reached by
    ``now_ms``: each block's timestamp is at least 1 ms after its parent's, and no more
    than MAX_CLOCK_DRIFT_MS ahead of a validator's clock (node/app.py), so at most one
    block per millisecond since our head, plus the drift. A peer claiming more is lying."""
    return head_height + max(0, now_ms + MAX_CLOCK_DRIFT_MS - head_timestamp_ms)
