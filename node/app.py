"""The application behind consensus (ABCI-like): build a proposal, validate one, commit
one. Commit order follows CometBFT: execute (or reuse the validation result), save
everything in one batch, update the mempool and pools, then fire events last."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from eth_hash.auto import keccak
from prometheus_client import Counter, Histogram

from consensus.errors import InvalidEvidence
from consensus.types import EMPTY_COMMIT, Commit, DuplicateVoteEvidence, Validator, ValidatorSet
from node.block import Block, MalformedBlock, commit_hash, evidence_hash
from node.mempool import Mempool, effective_tip
from node.metrics import REGISTRY
from node.store import ChainStore, CommitInProgress, StagedCommit, TxExtra
from vm.attestation_ahead import SignatureWorker
from vm.block import ZERO_HASH, Header, validators_hash
from vm.db import OverlayDB
from vm.errors import InvalidBlock, MalformedTransaction
from vm.execute import (
    BlockBody,
    BlockResult,
    Misbehavior,
    check_result,
    compute_base_fee,
    execute_block,
)
from vm.modules.params import get_param
from vm.state import BlockEnv, MotusState, decode_transaction, make_state

log = logging.getLogger("motus.app")

MAX_CLOCK_DRIFT_MS = 10_000
# The shared head view (``Application.head_state``) keeps one storage view per account
# whose storage it read (py-evm keeps them without bound; its account and trie-node
# caches are LRUs of 2,048): beyond this many it is replaced by a fresh view, so reads of
# many contracts' storage between two blocks cannot grow it without bound.
HEAD_STATE_MAX_STORAGE_VIEWS = 1024

BLOCK_EXECUTION_CPU = Histogram(
    "motus_block_execution_cpu_seconds",
    "CPU time of executing a block: building a proposal, or checking a peer's",
    ["kind"],
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
)
BLOCK_COST = Histogram(
    "motus_block_cost",
    "Deterministic cost of the blocks built or checked (vm/cost.py; max_block_cost caps it)",
    ["kind"],
    registry=REGISTRY,
    buckets=(10_000, 50_000, 100_000, 200_000, 300_000, 500_000, 750_000, 1_000_000),
)
# checks of peers' blocks with the signature worker (docs/telemetry.md, "Checking a
# peer's block"): how much it took off the executing thread, and what waiting cost
BLOCK_CHECK_WORKER_SIGNATURES = Counter(
    "motus_block_check_worker_signatures",
    "Attestation signatures that checks of peers' blocks had recovered by the signature "
    "worker process (those this node had not verified at admission)",
    registry=REGISTRY,
)
BLOCK_CHECK_UNSEEN_SIGNATURES = Counter(
    "motus_block_check_unseen_signatures",
    "Attestations in peers' blocks whose signatures this node had not verified at "
    "admission (recovered during the check, by the worker or the executing thread); "
    "counted only when the node has a block signature worker",
    registry=REGISTRY,
)
BLOCK_CHECK_WORKER_WAIT = Counter(
    "motus_block_check_worker_wait_seconds",
    "Wall time checks of peers' blocks waited for the signature worker's answers",
    registry=REGISTRY,
)
# the budget is wall time (ProposalBudget), so its outcome is measured in wall time too
PROPOSAL_BUILD_SECONDS = Histogram(
    "motus_proposal_build_seconds",
    "Wall time of building a proposal under the proposal budget (execution start to the "
    "encoded block)",
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0),
)
PROPOSAL_BUDGET_STOPS = Counter(
    "motus_proposal_budget_stops",
    "Proposals whose filling the proposal budget cut short (items were left in the pools)",
    registry=REGISTRY,
)


class ProposalBudget:
    """The time a proposal may take to build, so that every validator, executing it
    again on the same kind of machine, checks it within the propose timeout
    (docs/consensus.md, "Proposal budget").

    Measured in wall time, not CPU time: the propose timeout is wall time, and on a
    loaded machine executing a block takes several times its CPU time for the builder
    and its peers alike (at load 12 on two cores, blocks sized to 0.3 s of CPU took
    over 1 s and rounds failed). A busy moment therefore makes blocks smaller.

    The clock starts when execution starts (choosing from the pools is not what a
    validator repeats). Building fills the block while ``exhausted(kind)`` is false; it
    is asked between items (transactions, runs of attestations). What follows the
    filling (the state root, the receipts, the attestations' write-back) is paid after
    the last item, so filling stops at ``fill_share`` of the budget; the share is learnt
    from every build the budget cut short: scaled by budget / measured total, within
    [0.1, 1]. When the block has attestations to take, transactions stop at half the
    fill time, so neither kind can crowd the other out. A build under a cut budget
    (``learn`` false: a late proposer's, node.network.ConsensusApp.late_budget) teaches
    nothing: what follows the filling is a fixed cost, so a 0.02 s budget measured a
    share of 0.14, and the next full-budget blocks stopped filling at 42 ms."""

    MIN_SHARE, MAX_SHARE, START_SHARE = 0.1, 1.0, 0.5

    def __init__(self, seconds: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds = seconds
        self.clock = clock
        self.fill_share = self.START_SHARE
        self._deadline = self._tx_deadline = 0.0
        self._started = 0.0
        self.stopped = False  # the last build was cut short by the budget
        self.learn = True  # whether finish() learns the fill share (see above)

    def start(self, with_attestations: bool = False) -> None:
        self._started = self.clock()
        fill = self.seconds * self.fill_share
        self._deadline = self._started + fill
        self._tx_deadline = self._started + (fill / 2 if with_attestations else fill)
        self.stopped = False

    def exhausted(self, kind: str = "transactions") -> bool:
        now = self.clock()
        if now >= (self._tx_deadline if kind == "transactions" else self._deadline):
            self.stopped = True
            return True
        return False

    def finish(self) -> float:
        """End of a build: its wall seconds since start; learns the fill share from it."""
        elapsed = self.clock() - self._started
        if self.stopped and elapsed > 0 and self.learn:
            share = self.fill_share * self.seconds / elapsed
            self.fill_share = min(self.MAX_SHARE, max(self.MIN_SHARE, share))
        return elapsed


@dataclass
class Executed:
    block: Block
    result: BlockResult
    overlay: OverlayDB


class AttestationSource(Protocol):
    """What block building and commit need from the node's attestation pool
    (``node.attestations.AttestationService``)."""

    def take_with_ids(self, max_n: int) -> tuple[list[bytes], list[bytes]]:
        """Pending attestations for a block on the head, oldest first, and their ids
        (keccak of each: execution does not hash them again)."""
        ...

    def on_built(self, results: Sequence[tuple[bytes, str]]) -> None:
        """Block building's (id, code) for each attestation ``take`` gave it."""
        ...

    def on_commit(self, block: Block, result: BlockResult, parent_state_root: bytes) -> None:
        """``block`` was committed on the head with ``parent_state_root``; called for
        every block, in height order."""
        ...


class Application:
    def __init__(self, store: ChainStore, mempool: Mempool, *,
                 attestation_pool: AttestationSource | None = None,
                 clock: Callable[[], float] = time.time,
                 signature_worker: SignatureWorker | None = None) -> None:
        self.store = store
        # checks of peers' blocks recover the attestation signatures this node never
        # verified on this worker process, beside execution (vm.attestation_ahead)
        self.signature_worker = signature_worker
        self.mempool = mempool
        self.attestation_pool = attestation_pool
        self.clock = clock
        self.chain_id = store.head.chain_id
        self.pending_evidence: dict[bytes, DuplicateVoteEvidence] = {}
        self._executed: OrderedDict[bytes, Executed] = OrderedDict()
        self._by_value: OrderedDict[bytes, Executed] = OrderedDict()
        self._assembled: OrderedDict[bytes, Block] = OrderedDict()  # note_assembled
        self.commit_listeners: list[Callable[[Block, BlockResult], None]] = []
        self._head_state: tuple[bytes, MotusState] | None = None
        self.tx_listeners: list[Callable[[bytes, bytes], None]] = []  # (raw, tx hash)
        # (raw, tx hash) of every transaction the pool accepts, from RPC or gossip alike
        # (RPC pending-transaction subscriptions and filters); must not raise
        self.pool_listeners: list[Callable[[bytes, bytes], None]] = []

    # --- reads -----------------------------------------------------------------------

    @property
    def head(self) -> Header:
        return self.store.head

    def env_for(self, height: int, timestamp_ms: int, proposer: bytes, parent: Header) -> BlockEnv:
        state = self.state_at(parent)
        base_fee = compute_base_fee(parent.gas_used, parent.gas_limit, parent.base_fee_per_gas,
                                    get_param(state, "min_base_fee_per_gas"))
        return BlockEnv(self.chain_id, height, timestamp_ms, proposer, get_param(state, "block_gas_limit"),
                        base_fee, parent.hash, self.store.recent_hashes(height))

    def state_at(self, header: Header, env: BlockEnv | None = None) -> MotusState:
        """A scratch view of the state after ``header`` (writes go nowhere)."""
        env = env or BlockEnv(self.chain_id, header.height, header.timestamp_ms, header.proposer,
                              header.gas_limit, header.base_fee_per_gas, header.parent_hash)
        return make_state(OverlayDB(self.store.state_db), header.state_root, env)

    def head_state(self) -> MotusState:
        """A read view of the head state, shared until the next commit. Callers must only
        read from it (mempool checks, RPC); anything that executes uses ``state_at``."""
        head = self.head
        cached = self._head_state
        if (cached is None or cached[0] != head.hash
                # py-evm's per-account storage views, which it never drops (see the limit)
                or len(cached[1]._account_db._account_stores) > HEAD_STATE_MAX_STORAGE_VIEWS):
            cached = self._head_state = (head.hash, self.state_at(head))
        return cached[1]

    def next_base_fee(self) -> int:
        h = self.head
        return compute_base_fee(h.gas_used, h.gas_limit, h.base_fee_per_gas,
                                get_param(self.head_state(), "min_base_fee_per_gas"))

    def submit_transaction(self, raw: bytes, *, gossip: bool = True, source: str = "") -> bytes:
        """Check a raw transaction against the head and pool it; raises TxRejected.
        With ``gossip`` (RPC submissions) the transaction is handed to the network.
        ``source`` (``rpc:<client>``) pays for refused transactions (node/fairness.py)."""
        tx_hash = self.mempool.add(raw, self.head_state(), source)
        for pool_listener in list(self.pool_listeners):
            pool_listener(raw, tx_hash)
        if gossip:
            for listener in list(self.tx_listeners):
                listener(raw, tx_hash)
        return tx_hash

    # --- propose ------------------------------------------------------------------------

    def propose(self, height: int, proposer: bytes, *, max_txs: int = 5_000,
                max_attestations: int | None = None, budget: ProposalBudget | None = None,
                timestamp_ms: int | None = None) -> bytes:
        """Build a block on the head: mempool transactions by tip (at most ``max_txs``), pool
        attestations (at most ``max_attestations`` and the governed
        ``max_block_attestations``), evidence; never more than ``max_block_cost``
        (vm/cost.py), and with a ``budget`` only what fits its CPU time. ``timestamp_ms``:
        the block's timestamp if not after this node's clock (node.network: the height's
        aimed start), else the clock's."""
        parent = self.head
        if height != parent.height + 1:
            raise InvalidBlock(f"cannot propose height {height} on head {parent.height}")
        now_ms = int(self.clock() * 1000)
        # ``timestamp_ms``: the caller's (the instant the height was aimed at, passed: it
        # is never after this node's clock), else the clock's
        timestamp_ms = max(now_ms if timestamp_ms is None else min(timestamp_ms, now_ms),
                           parent.timestamp_ms + 1)
        env = self.env_for(height, timestamp_ms, proposer, parent)
        head_state = self.state_at(parent, env)
        txs = self.mempool.select(head_state, env.base_fee_per_gas, env.gas_limit, max_txs)
        attestations: list[bytes] = []
        attestation_ids: list[bytes] | None = None
        if self.attestation_pool is not None:
            cap = get_param(head_state, "max_block_attestations")
            if max_attestations is not None:
                cap = min(cap, max_attestations)
            attestations, attestation_ids = self.attestation_pool.take_with_ids(cap)
        evidence = self._evidence_for(height)
        last_commit = EMPTY_COMMIT if height == 1 else self.store.commit_at(height - 1)
        if last_commit is None:
            raise InvalidBlock(f"no commit stored for height {height - 1}")
        overlay = OverlayDB(self.store.state_db)
        body = BlockBody([p.tx for p in txs], attestations, [Misbehavior(e.validator, e.height) for e in evidence],
                         raw_transactions=[p.raw for p in txs], attestation_ids=attestation_ids)
        cpu_started = time.thread_time()
        if budget is not None:
            budget.start(with_attestations=bool(attestations))
        result = execute_block(overlay, parent.state_root, env, body, skip_invalid=True,
                               should_stop=budget.exhausted if budget is not None else None)
        if self.attestation_pool is not None and attestations:
            self.attestation_pool.on_built(result.attestation_results)
        valset = self.store.validators_for(height)
        header = Header(
            chain_id=self.chain_id, height=height, timestamp_ms=timestamp_ms, parent_hash=parent.hash,
            proposer=proposer, state_root=result.state_root, transactions_root=result.transactions_root,
            receipts_root=result.receipts_root, attestations_root=result.attestations_root,
            logs_bloom=result.logs_bloom, gas_limit=env.gas_limit, gas_used=result.gas_used,
            base_fee_per_gas=env.base_fee_per_gas, validators_hash=valset.hash(),
            next_validators_hash=validators_hash(result.next_validators),
            last_commit_hash=commit_hash(last_commit), evidence_hash=evidence_hash(evidence),
        )
        block = Block(header, result.raw_transactions, result.attestations, last_commit, evidence)
        value = block.encode()
        self._remember(Executed(block, result, overlay), value)
        if budget is not None:
            PROPOSAL_BUILD_SECONDS.observe(budget.finish())
            if budget.stopped:
                PROPOSAL_BUDGET_STOPS.inc()
        BLOCK_EXECUTION_CPU.labels("build").observe(time.thread_time() - cpu_started)
        BLOCK_COST.labels("build").observe(result.cost)
        return value

    def _evidence_for(self, height: int) -> list[DuplicateVoteEvidence]:
        out = []
        for h, ev in list(self.pending_evidence.items()):
            if self.store.evidence_height(h) is not None:
                del self.pending_evidence[h]
                continue
            if ev.height < height:
                out.append(ev)
        return out[:10]

    def add_evidence(self, ev: DuplicateVoteEvidence) -> bool:
        """Verify and keep evidence for inclusion. True if new and valid; False if already
        pending or committed, or not checkable here (no validator set for its height).

        Raises ``InvalidEvidence`` for evidence invalid in every state: votes that do not
        conflict, a bad signature, or an offender outside the validator set of its height
        (when that set is known)."""
        h = ev.hash()
        if h in self.pending_evidence or self.store.evidence_height(h) is not None:
            return False
        vs = self.store.validators_for(ev.height)
        # Without the set of its height the checks that need no state still run: against
        # a set of the named offender alone, membership is the only question left open.
        checked_against = vs if vs is not None else ValidatorSet([Validator(ev.validator, 1)])
        try:
            ev.verify(self.chain_id, checked_against)
        except InvalidEvidence:
            raise
        except Exception:
            log.exception("evidence check failed unexpectedly; evidence dropped")
            return False
        if vs is None:
            return False
        self.pending_evidence[h] = ev
        return True

    # --- validate ------------------------------------------------------------------------

    def block_of(self, value: bytes) -> Block:
        """The block ``value`` encodes: from the cache for a block this node built or
        checked recently (no decoding), else decoded (raises MalformedBlock)."""
        executed = self._by_value.get(value)
        if executed is not None:
            return executed.block
        known = self._assembled.get(value)
        return known if known is not None else Block.decode(value)

    def note_assembled(self, value: bytes, block: Block) -> None:
        """``block`` encodes to ``value`` (the node assembled it, e.g. from a compact
        proposal): checks of ``value`` take it instead of decoding the bytes again."""
        self._assembled[value] = block
        while len(self._assembled) > 4:
            self._assembled.popitem(last=False)

    def block_hash(self, value: bytes) -> bytes:
        return self.block_of(value).hash  # bytes cache their hash: cheap for our own proposals

    def validate(self, height: int, value: bytes, *, check_time: bool = True) -> bool:
        try:
            self.check_block(height, value, check_time=check_time)
            return True
        except (InvalidBlock, MalformedBlock) as exc:
            log.warning("invalid block at height %d: %s: %s", height, exc.code, exc)
            return False

    def executed_already(self, value: bytes) -> bool:
        """Whether ``value`` was executed on this head already (a check of it now is a
        cache hit, its time no measure of execution)."""
        if value in self._by_value:
            return True
        try:
            return self.block_of(value).hash in self._executed
        except MalformedBlock:
            return False

    def check_block(self, height: int, value: bytes, *, check_time: bool = True) -> Executed:
        """Full check of a block on the head; raises InvalidBlock naming the first failed rule."""
        executed = self._by_value.get(value)
        if executed is not None:
            return executed
        block = self.block_of(value)
        cached = self._executed.get(block.hash)
        if cached is not None:
            return cached
        h = block.header
        parent = self.head
        checks = [
            (h.chain_id == self.chain_id, "wrong chain id"),
            (h.height == height == parent.height + 1, f"height {h.height} does not follow head {parent.height}"),
            (h.parent_hash == parent.hash, "parent hash is not the head"),
            (h.timestamp_ms > parent.timestamp_ms, "timestamp not after parent"),
            (not check_time or h.timestamp_ms <= self.clock() * 1000 + MAX_CLOCK_DRIFT_MS, "timestamp in the future"),
        ]
        for ok, reason in checks:
            if not ok:
                raise InvalidBlock(reason)
        valset = self.store.validators_for(height)
        if valset is None or valset.get(h.proposer) is None:
            raise InvalidBlock("proposer is not a validator")
        if h.validators_hash != valset.hash():
            raise InvalidBlock("validators_hash mismatch")
        env = self.env_for(height, h.timestamp_ms, h.proposer, parent)
        if h.gas_limit != env.gas_limit or h.base_fee_per_gas != env.base_fee_per_gas:
            raise InvalidBlock("gas limit or base fee differs from the chain rule")
        self._check_last_commit(block)
        misbehavior = self._check_evidence(block)
        txs = []
        for i, raw_tx in enumerate(block.transactions):
            try:
                txs.append(decode_transaction(raw_tx))
            except MalformedTransaction as exc:
                raise InvalidBlock(f"undecodable transaction {i}: {exc}") from None
        overlay = OverlayDB(self.store.state_db)
        cpu_started = time.thread_time()
        result = execute_block(overlay, parent.state_root, env,
                               BlockBody(txs, list(block.attestations), misbehavior,
                                         raw_transactions=list(block.transactions)),
                               signature_worker=self.signature_worker)
        BLOCK_EXECUTION_CPU.labels("check").observe(time.thread_time() - cpu_started)
        BLOCK_COST.labels("check").observe(result.cost)
        if result.unseen_signatures:
            BLOCK_CHECK_UNSEEN_SIGNATURES.inc(result.unseen_signatures)
        if result.worker_signatures or result.worker_wait_s:
            BLOCK_CHECK_WORKER_SIGNATURES.inc(result.worker_signatures)
            BLOCK_CHECK_WORKER_WAIT.inc(result.worker_wait_s)
        check_result(h, result, validators_hash)
        executed = Executed(block, result, overlay)
        self._remember(executed, value)
        return executed

    def _check_last_commit(self, block: Block) -> None:
        h = block.header
        if h.height == 1:
            if block.last_commit.signatures or h.last_commit_hash != ZERO_HASH:
                raise InvalidBlock("first block must carry an empty last commit")
            return
        prev = self.store.validators_for(h.height - 1)
        try:
            prev.verify_commit(self.chain_id, h.height - 1, h.parent_hash, block.last_commit)
        except Exception as exc:
            raise InvalidBlock(f"last commit: {exc}") from None
        if h.last_commit_hash != block.last_commit.hash():
            raise InvalidBlock("last_commit_hash mismatch")

    def _check_evidence(self, block: Block) -> list[Misbehavior]:
        if block.header.evidence_hash != evidence_hash(list(block.evidence)):
            raise InvalidBlock("evidence_hash mismatch")
        seen = set()
        out = []
        for ev in block.evidence:
            eh = ev.hash()
            if eh in seen or self.store.evidence_height(eh) is not None:
                raise InvalidBlock("duplicate or already committed evidence")
            seen.add(eh)
            if ev.height >= block.header.height:
                raise InvalidBlock("evidence from the future")
            vs = self.store.validators_for(ev.height)
            try:
                offender = ev.verify(self.chain_id, vs)
            except Exception as exc:
                raise InvalidBlock(f"invalid evidence: {exc}") from None
            out.append(Misbehavior(offender, ev.height))
        return out

    def _remember(self, executed: Executed, value: bytes) -> None:
        self._executed[executed.block.hash] = executed
        self._by_value[value] = executed
        while len(self._executed) > 8:
            self._executed.popitem(last=False)
        while len(self._by_value) > 8:
            self._by_value.popitem(last=False)

    # --- commit ---------------------------------------------------------------------------

    @property
    def committing(self) -> int | None:
        """The height whose block is being written (``ChainStore.staged``), if any."""
        staged = self.store.staged
        return None if staged is None else staged.header.height

    def commit(self, height: int, value: bytes, commit: Commit, *, check_time: bool = False) -> Block:
        """Persist a decided block (executing it if this node has not yet) and fire events.
        ``CommitInProgress`` while :meth:`commit_async` writes one (refused before this
        block is executed)."""
        staged = self._stage(height, value, commit, check_time)
        staged.store.write()
        return self._finish(staged)

    async def commit_async(self, height: int, value: bytes, commit: Commit, *,
                           check_time: bool = False) -> Block:
        """:meth:`commit` with the block's synced LevelDB write in a worker thread (it
        releases the GIL): the event loop goes on meanwhile (RPC, admission against the
        parent, which the head still is), ~60-100 ms a block of 6,000-10,000 attestations
        on one validator. :attr:`committing` holds the height until the block is the
        head; :meth:`commit` refuses to run then (block sync: consensus is committing).
        A write that fails leaves the head the parent and nothing staged."""
        import trio

        staged = self._stage(height, value, commit, check_time)
        await trio.to_thread.run_sync(staged.store.write)  # (not cancellable: it completes)
        return self._finish(staged)

    def _stage(self, height: int, value: bytes, commit: Commit, check_time: bool) -> _Staged:
        if self.store.staged is not None:  # (the store refuses too: here before executing)
            raise CommitInProgress(f"height {self.committing} is being committed")
        executed = self.check_block(height, value, check_time=check_time)
        block, result = executed.block, executed.result
        current = self.store.validators_for(height)
        next_set = next_validator_set(current, result.next_validators)
        extras = []
        for i, tx in enumerate(result.transactions):
            created = result.contract_addresses[i]
            extras.append(TxExtra(
                keccak(result.raw_transactions[i]), tx.sender, created or b"", result.tx_gas_used[i],
                block.header.base_fee_per_gas + effective_tip(tx, block.header.base_fee_per_gas),
            ))
        att_ids = result.included_attestation_ids()
        result.decoded_attestations()  # once for all the commit reads (a built block has them)
        parent_state_root = self.head.state_root
        staged = self.store.stage_commit(block, result, commit, executed.overlay, next_set, extras,
                                         att_ids)
        return _Staged(staged, block, result, extras, parent_state_root)

    def _finish(self, staged: _Staged) -> Block:
        block, result = staged.block, staged.result
        self.store.finish_commit(staged.store)
        self._executed.clear()
        self._by_value.clear()
        self._assembled.clear()
        head_state = self.head_state()
        self.mempool.on_block(head_state, [e.tx_hash for e in staged.extras])
        if self.attestation_pool is not None:
            self.attestation_pool.on_commit(block, result, staged.parent_state_root)
        for ev in block.evidence:
            self.pending_evidence.pop(ev.hash(), None)
        for listener in list(self.commit_listeners):
            try:
                listener(block, result)
            except Exception:  # a listener (RPC subscription) must never break the chain
                log.exception("commit listener failed")
        return block


@dataclass
class _Staged:
    """A decided block whose batch is filled (node.store.StagedCommit), and what the
    steps after its write need."""

    store: StagedCommit
    block: Block
    result: BlockResult
    extras: list[TxExtra]
    parent_state_root: bytes


def next_validator_set(current: ValidatorSet, pairs: list[tuple[bytes, int]]) -> ValidatorSet:
    """The set for the next height: same members keep their proposer priorities (advanced
    one step); new members start at zero priority, minus the total power so that joining
    does not make them proposer at once (as in CometBFT)."""
    same = [(v.address, v.power) for v in current.validators] == sorted(pairs)
    if same:
        return current.next_for_height()
    total = sum(p for _, p in pairs)
    prios = {a: current.priorities.get(a, -total) for a, _ in pairs}
    vs = ValidatorSet([Validator(a, p) for a, p in pairs], prios)
    vs.increment_proposer_priority(1)
    return vs
