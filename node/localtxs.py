"""Transactions this node accepted from its own clients (RPC): journaled so they survive
a restart, and (re-)announced on the tx topic until they leave the pool, so that none is
lost to a kill, to a restart before gossip is up, or to a peer that lost its pool
(docs/network.md "Transactions", docs/storage.md "Transaction journal").

Announce rules (``run``, one poll every ``POLL_S``):
  - gossip is "up" when at least one peer is in our tx-topic mesh (a publish before
    that reaches nobody); until then local transactions wait, announced = never;
  - a local transaction is announced when gossip is up, then again every
    ``REANNOUNCE_S`` while it stays in the pool (unmined: its first copies may have died
    with a peer that was killed);
  - a peer that joins our tx-topic mesh (a new or reconnected peer) gets the whole pool,
    local or not, oldest first, at most ``FULL_ANNOUNCE_MAX_BYTES`` per announce and at
    most one such announce per ``FULL_ANNOUNCE_GAP_S``.
Receivers answer transactions they already hold (or that are stale for their head)
with IGNORE, which costs the sender nothing, after one hash lookup.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import trio
from eth_hash.auto import keccak

from node.mempool import Mempool, TxRejected
from node.txjournal import SYNC_INTERVAL_S, TxJournal

log = logging.getLogger("motus.localtxs")

POLL_S = 0.5
REANNOUNCE_S = 5.0  # a pending local transaction is announced again this often
FULL_ANNOUNCE_MAX_BYTES = 1024 * 1024  # pool bytes announced to a newly joined peer
FULL_ANNOUNCE_GAP_S = 2.0
JOURNAL_REWRITE_S = 20.0  # compaction to the pool's locals: bounds the replay after a kill
MAX_LOCALS = 20_000  # hashes remembered as local (the pool holds at most 10,000 by default)


class LocalTransactions:
    """The node's own transactions: ``accepted`` on each RPC accept (before the answer),
    ``replay`` at start, ``run`` while the node runs, ``close`` at shutdown."""

    def __init__(self, mempool: Mempool, journal_path: Path | None, *,
                 journal_max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.mempool = mempool
        self.journal = TxJournal(journal_path, journal_max_bytes) if journal_path else None
        self.clock = clock
        # hash -> when last handed to the batcher (None: not yet), oldest first
        self._locals: OrderedDict[bytes, float | None] = OrderedDict()
        self._publish: Callable[[bytes], bool] | None = None
        self._mesh_peers: Callable[[], set[str]] | None = None
        self._journal_full = False
        self._gossip_up = False  # a peer is in our tx-topic mesh (updated each poll)
        self.unjournaled = 0  # accepted while the journal was at its bound
        self.replayed = 0

    # --- start ---------------------------------------------------------------------

    def replay(self, submit: Callable[[bytes], bytes]) -> None:
        """Offer the journal's transactions to the pool again through ``submit`` (the
        normal mempool checks against the head); those mined or now invalid are dropped.
        Then the journal is rewritten to what was pooled and opened for appends."""
        if self.journal is None:
            return
        dropped: dict[str, int] = {}
        try:
            raws = self.journal.load()
        except OSError as exc:  # unreadable: start without it rather than not at all
            log.error("transaction journal %s unreadable, not replayed: %s", self.journal.path, exc)
            raws = []
        for raw in raws:
            try:
                tx_hash = submit(raw)
            except TxRejected as exc:
                if exc.code == "already_known":
                    self._remember(keccak(raw), None)
                else:
                    dropped[exc.code] = dropped.get(exc.code, 0) + 1
                continue
            self._remember(tx_hash, None)
            self.replayed += 1
        if raws:
            log.info("transaction journal: %d of %d transactions pooled again, dropped %s",
                     self.replayed, len(raws), dropped or "none")
        self._rewrite()

    def attach(self, publish: Callable[[bytes], bool], mesh_peers: Callable[[], set[str]]) -> None:
        """Gossip: ``publish`` queues a raw transaction for the tx topic (False if it
        cannot), ``mesh_peers`` names the peers a publish reaches now."""
        self._publish = publish
        self._mesh_peers = mesh_peers

    # --- accept ----------------------------------------------------------------------

    def accepted(self, raw: bytes, tx_hash: bytes) -> None:
        """A client's transaction (``tx_hash``, as the pool computed it) was pooled:
        journal it, then announce it if gossip is up. Called before the RPC answers, so
        an acknowledged transaction is on disk."""
        if self.journal is not None and (self._journal_full or not self._append(raw)):
            if not self._journal_full:
                self._rewrite()  # compact now: mined transactions may free room
            if self._journal_full or not self._append(raw):
                self._journal_full = True
                self.unjournaled += 1
                if self.unjournaled == 1 or self.unjournaled % 1000 == 0:
                    log.warning("transaction journal at its bound (%d bytes): %d accepted "
                                "transactions not journaled", self.journal.max_bytes,
                                self.unjournaled)
        announced = None
        if self._gossip_up and self._publish is not None and self._publish(raw):
            announced = self.clock()
        self._remember(tx_hash, announced)

    # --- run -------------------------------------------------------------------------

    async def run(self) -> None:
        """Announce, fsync and compact until cancelled (see the module doc)."""
        known_peers: set[str] = set()
        full_due = False
        last_full = -FULL_ANNOUNCE_GAP_S
        last_sync = last_rewrite = self.clock()
        while True:
            await trio.sleep(POLL_S)
            now = self.clock()
            if self.journal is not None:
                if now - last_sync >= SYNC_INTERVAL_S:
                    self.journal.sync()
                    last_sync = now
                if now - last_rewrite >= JOURNAL_REWRITE_S:
                    # Only when something left the pool: a journal that holds exactly
                    # the pending local transactions is already compact (a rewrite is
                    # up to 16 MiB and two fsyncs on the event loop).
                    if self.journal.records != self.pending_locals():
                        self._rewrite()
                    last_rewrite = now
            peers = self._mesh_peers() if self._mesh_peers is not None else set()
            if peers - known_peers:
                full_due = True
            known_peers = peers
            self._gossip_up = bool(peers)
            if not peers or self._publish is None:
                continue
            if full_due and now - last_full >= FULL_ANNOUNCE_GAP_S:
                full_due = False
                last_full = now
                self._announce_pool(now)
            self._announce_due(now)

    def _announce_due(self, now: float) -> None:
        assert self._publish is not None
        for tx_hash, last in list(self._locals.items()):
            entry = self.mempool.get(tx_hash)
            if entry is None:
                del self._locals[tx_hash]  # mined, replaced or dropped
                continue
            if last is None or now - last >= REANNOUNCE_S:
                if not self._publish(entry.raw):
                    return  # batcher full: the rest waits for the next poll
                self._locals[tx_hash] = now

    def _announce_pool(self, now: float) -> None:
        assert self._publish is not None
        sent = size = 0
        for entry in self.mempool.all():
            if size + len(entry.raw) > FULL_ANNOUNCE_MAX_BYTES or not self._publish(entry.raw):
                break
            size += len(entry.raw)
            sent += 1
            if entry.hash in self._locals:
                self._locals[entry.hash] = now
        if sent:
            log.info("pool announced to a joining peer: %d transactions, %d bytes", sent, size)

    # --- journal -----------------------------------------------------------------------

    def _append(self, raw: bytes) -> bool:
        assert self.journal is not None
        try:
            return self.journal.append(raw)
        except (OSError, RuntimeError) as exc:  # disk full, or the journal never opened
            log.error("transaction journal append failed: %s", exc)
            return False

    def _remember(self, tx_hash: bytes, announced: float | None) -> None:
        self._locals[tx_hash] = announced
        self._locals.move_to_end(tx_hash)
        while len(self._locals) > MAX_LOCALS:
            self._locals.popitem(last=False)

    def _rewrite(self) -> None:
        """Compact the journal to the local transactions still in the pool, oldest first."""
        if self.journal is None:
            return
        raws = []
        for tx_hash in list(self._locals):
            entry = self.mempool.get(tx_hash)
            if entry is not None:
                raws.append(entry.raw)
        try:
            written = self.journal.rewrite(raws)
        except OSError as exc:
            log.error("transaction journal rewrite failed: %s", exc)
            return
        self._journal_full = written < len(raws)

    def close(self) -> None:
        """At shutdown: leave a compact journal of what is still pending."""
        if self.journal is not None:
            self._rewrite()
            self.journal.close()

    def pending_locals(self) -> int:
        return sum(1 for h in self._locals if h in self.mempool)
