"""What each committed block tells an operator: one INFO log line and the block metrics
(interval, rounds, missed proposals, validators' signing), fed by
``Application.commit_listeners`` (docs/metrics.md).

Everything here is read from the committed block, its commit and the stored validator
sets, so it is the same whether the block was decided by this node's consensus or
fetched by block sync (sync commits are logged at DEBUG: hundreds a second would drown
the log)."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from node.metrics import REGISTRY
from vm.cost import settlement_steps_per_block
from vm.modules.rewards import get_settlement_backlog

log = logging.getLogger("motus.chain")

# Blocks over which each validator's missed signatures are counted (CometBFT's
# validator_missed_blocks counts since start; a window tells whether it is missing now).
SIGNING_WINDOW = 100

BLOCK_INTERVAL = Histogram(
    "motus_consensus_block_interval_seconds",
    "Time between a block's timestamp and its parent's",
    registry=REGISTRY,
    buckets=(0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0),
)
BLOCK_ROUNDS = Histogram(
    "motus_consensus_block_rounds",
    "Round in which each block was decided (0: the first proposal was committed)",
    registry=REGISTRY,
    buckets=(0, 1, 2, 3, 5, 10),
)
BLOCK_LATENCY = Histogram(
    "motus_consensus_commit_latency_seconds",
    "Time from a block's timestamp (its proposal) to its commit on this node",
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
MISSED_PROPOSALS = Counter(
    "motus_consensus_missed_proposals",
    "Rounds that did not decide, by their proposer (a block decided in round r counts "
    "the proposers of rounds 0..r-1)",
    ["proposer"],
    registry=REGISTRY,
)
BLOCKS = Counter(
    "motus_consensus_blocks", "Blocks committed, by how (consensus or sync)", ["source"],
    registry=REGISTRY,
)
TRANSACTIONS = Counter(
    "motus_consensus_transactions", "Transactions in committed blocks", registry=REGISTRY
)
ATTESTATIONS = Counter(
    "motus_consensus_attestations", "Attestations in committed blocks", registry=REGISTRY
)
BLOCK_SIZE = Histogram(
    "motus_consensus_block_size_bytes",
    "Size of committed blocks (RLP)",
    registry=REGISTRY,
    buckets=(1_000, 10_000, 100_000, 500_000, 1_000_000, 2_000_000, 5_000_000),
)
LAST_SIGNED = Gauge(
    "motus_consensus_validator_last_signed_height",
    "Last height whose commit carries this validator's precommit",
    ["validator"],
    registry=REGISTRY,
)
MISSED_SIGNATURES = Gauge(
    "motus_consensus_validator_missed_blocks",
    f"Commits among the last {SIGNING_WINDOW} without this validator's precommit",
    ["validator"],
    registry=REGISTRY,
)
MISSING_VALIDATORS = Gauge(
    "motus_consensus_missing_validators",
    "Validators whose precommit is missing from the latest commit",
    registry=REGISTRY,
)
MISSING_POWER = Gauge(
    "motus_consensus_missing_validators_power",
    "Voting power of the validators missing from the latest commit",
    registry=REGISTRY,
)
SETTLEMENT_EPOCHS = Gauge(
    "motus_settlement_backlog_epochs",
    "Ended epochs whose reward settlement is not finished (0 keeps up, 1 while one settles, "
    "2 or more: the fleet outgrows the epoch)",
    registry=REGISTRY,
)
SETTLEMENT_VEHICLES = Gauge(
    "motus_settlement_backlog_vehicles",
    "Vehicles of those epochs not yet paid (scored or not)",
    registry=REGISTRY,
)
SETTLEMENT_STEPS = Gauge(
    "motus_settlement_backlog_steps",
    "Vehicle-steps of settlement work left to finalize those epochs",
    registry=REGISTRY,
)
SETTLEMENT_BLOCKS = Gauge(
    "motus_settlement_backlog_blocks",
    "Blocks that work takes at the current settlement steps a block",
    registry=REGISTRY,
)


class BlockObserver:
    """``on_commit(block, result)``: log the block and update the block metrics."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.store = node.store
        self._signed: dict[bytes, deque[bool]] = {}
        self._last_commit_at: float | None = None
        self._last_header: Any = None  # saves reading the parent back for the interval
        self._backlog_epochs = 0  # settlement backlog after the last block (warned on a rise)

    def on_commit(self, block: Any, result: Any) -> None:
        header = block.header
        height = header.height
        now = time.time()
        parent = self._last_header
        if height > 1 and (parent is None or parent.height != height - 1):
            stored = self.store.block_by_height(height - 1)
            parent = stored.header if stored is not None else None
        elif height <= 1:
            parent = None  # genesis time is when the file was made, not a block interval
        self._last_header = header
        interval = (header.timestamp_ms - parent.timestamp_ms) / 1000 if parent else None
        commit = self.store.commit_at(height)
        round_ = commit.round if commit is not None else 0
        syncing = bool(getattr(getattr(self.node, "network", None), "syncing", False))
        source = "sync" if syncing else "consensus"
        BLOCKS.labels(source).inc()
        TRANSACTIONS.inc(len(block.transactions))
        ATTESTATIONS.inc(len(block.attestations))
        raw = self.store.raw_block(height)
        if raw is not None:
            BLOCK_SIZE.observe(len(raw))
        if interval is not None:
            BLOCK_INTERVAL.observe(max(0.0, interval))
        latency = max(0.0, now - header.timestamp_ms / 1000)
        if not syncing:
            BLOCK_ROUNDS.observe(round_)
            BLOCK_LATENCY.observe(latency)
        self._count_missed_proposals(height, round_)
        self._count_signatures(block)
        self._settlement_backlog(block, syncing)
        since_last = None if self._last_commit_at is None else now - self._last_commit_at
        self._last_commit_at = now
        log.log(
            logging.DEBUG if syncing else logging.INFO,
            "committed block %d 0x%s txs=%d attestations=%d round=%d interval=%s took=%.2fs "
            "since_last=%s source=%s",
            height, block.hash.hex()[:12], len(block.transactions), len(block.attestations),
            round_, "-" if interval is None else f"{interval:.2f}s", latency,
            "-" if since_last is None else f"{since_last:.2f}s", source,
        )

    def _settlement_backlog(self, block: Any, syncing: bool) -> None:
        """Export the reward settlement backlog of the state after ``block``; warn when
        the epochs behind change while they are more than one (docs/rewards.md
        "Backlog")."""
        app = self.node.app
        state = app.head_state() if app.head.hash == block.hash else app.state_at(block.header)
        backlog = get_settlement_backlog(state)
        per_block = settlement_steps_per_block(state)
        blocks = -(-backlog.steps // per_block) if per_block else 0
        SETTLEMENT_EPOCHS.set(backlog.epochs)
        SETTLEMENT_VEHICLES.set(backlog.vehicles)
        SETTLEMENT_STEPS.set(backlog.steps)
        SETTLEMENT_BLOCKS.set(blocks)
        if backlog.spans_epochs and backlog.epochs != self._backlog_epochs:
            log.log(
                logging.DEBUG if syncing else logging.WARNING,
                "settlement backlog: %d ended epochs not settled (oldest %d), %d vehicles "
                "unpaid, ~%d blocks of settlement work at %d steps a block: the fleet outgrows "
                "the epoch; governance should raise settle_vehicles_per_block or "
                "epoch_length_blocks (docs/rewards.md)",
                backlog.epochs, backlog.oldest, backlog.vehicles, blocks, per_block,
            )
        self._backlog_epochs = backlog.epochs

    def _count_missed_proposals(self, height: int, round_: int) -> None:
        if round_ == 0:
            return
        validators = self.store.validators_for(height)
        if validators is None or not validators.validators:
            return
        for r in range(min(round_, 10)):  # a long outage says enough in its first rounds
            MISSED_PROPOSALS.labels(_hex(validators.proposer_for_round(r).address)).inc()

    def _count_signatures(self, block: Any) -> None:
        """Signers of ``block.last_commit`` (the commit of the parent) against the parent's
        validator set."""
        last_commit = block.last_commit
        if last_commit is None or not getattr(last_commit, "signatures", None):
            return
        signed_height = last_commit.height
        validators = self.store.validators_for(signed_height)
        if validators is None:
            return
        signers = {s.validator for s in last_commit.signatures}
        members = {v.address: v.power for v in validators.validators}
        missing = [a for a in members if a not in signers]
        MISSING_VALIDATORS.set(len(missing))
        MISSING_POWER.set(sum(members[a] for a in missing))
        for address in members:
            window = self._signed.setdefault(address, deque(maxlen=SIGNING_WINDOW))
            signed = address in signers
            window.append(signed)
            label = _hex(address)
            if signed:
                LAST_SIGNED.labels(label).set(signed_height)
            MISSED_SIGNATURES.labels(label).set(window.count(False))
        for gone in [a for a in self._signed if a not in members]:  # left the set
            del self._signed[gone]
            for gauge in (LAST_SIGNED, MISSED_SIGNATURES):
                try:
                    gauge.remove(_hex(gone))
                except KeyError:
                    pass


def _hex(address: bytes) -> str:
    return "0x" + address.hex()
