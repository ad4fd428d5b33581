"""State pruning: keep the states of the last ``keep_states`` blocks, delete the trie nodes
no kept state reaches (docs/storage.md, "Pruning").

Trie nodes and code live under prefix ``t``, keyed by their hash and shared between
states, so a node can only be deleted once no kept state reaches it. A sweep is a
mark-and-sweep over a LevelDB snapshot, in a background thread:

1. Under ``ChainStore.commit_lock``: start recording every trie key a block commit writes
   (``ChainStore.trie_listener``), and take the snapshot. The snapshot's head is ``H``.
2. Raise the floor ``P`` (``ChainStore.oldest_state_height``) to ``H - keep_states + 1``,
   synced, before anything is deleted: from then on reads below it are refused as pruned.
3. Mark every node reachable from the state roots of heights ``P..H`` (account trie, each
   account's storage trie, its code) in the snapshot.
4. Sweep: iterate the snapshot's ``t`` keys; delete the unmarked ones in batches, each
   under the commit lock, leaving out every key a commit wrote since step 1.

A state committed after the snapshot is made of nodes of state ``H`` (marked) and nodes its
own blocks wrote (recorded): a block that re-creates a node the snapshot holds as garbage
writes it again, and that write protects it. Deleting only unreachable nodes makes every
step crash-safe: a kill at any instant leaves every kept state whole, and the next sweep
(one starts after each restart) finishes the job.

The record of keys written during a sweep is bounded (``max_recorded_keys``): a sweep whose
record would pass it is abandoned at once, before its next delete batch (``SweepAbandoned``),
and tried again ``ABANDONED_RETRY_S`` later. Without a complete record no further key may be
deleted; the batches already deleted were checked against a record complete at their time.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import rlp
from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3

from node.db import TRIE
from node.store import PRUNED_FLOOR, ChainStore

log = logging.getLogger("motus.prune")

DELETE_BATCH = 5_000  # keys per delete batch: the commit lock is held for one batch's write
# Trie keys blocks may write during one sweep before it is abandoned: the record costs ~110
# bytes a key, so ~110 MB at most (a sweep of a 1,000,000-account state, ~46 s, records
# ~200,000 keys at 300 transfers a second). docs/storage.md, "Pruning".
MAX_RECORDED_KEYS = 1_000_000
ABANDONED_RETRY_S = 60.0  # wait after an abandoned sweep: the write burst that filled it may pass
# The sweep runs beside consensus in the same process: after this much work it pauses as
# long, so it takes at most half of the interpreter (the GIL) from the event loop.
WORK_SLICE_S = 0.02


class IncompleteState(Exception):
    """A node of a state that should be kept is missing: the sweep stops, deleting nothing."""


class SweepAbandoned(Exception):
    """Blocks wrote more trie keys during the sweep than it may record: it stopped before its
    next delete (deleting only what a complete record allowed) and will be tried again."""


class _Stopped(Exception):
    pass


@dataclass
class SweepReport:
    head: int  # the snapshot's head
    floor: int  # the lowest height whose state is kept
    marked_nodes: int = 0  # trie nodes and code reachable from the kept states
    live_bytes: int = 0  # their keys and values
    scanned: int = 0  # ``t`` keys in the snapshot
    deleted: int = 0
    spared: int = 0  # unmarked in the snapshot, but written again by a block since
    mark_s: float = 0.0  # CPU seconds of the sweep's thread
    sweep_s: float = 0.0


class Pruner:
    """Sweeps ``store`` (``sweep()`` in the caller's thread, or ``start()`` a background
    thread that sweeps when due). Only one sweep runs at a time."""

    def __init__(self, store: ChainStore, keep_states: int, *, sweep_min_bytes: int = 64 * 1024 * 1024,
                 sweep_growth_percent: int = 50, pace: bool = True,
                 max_recorded_keys: int = MAX_RECORDED_KEYS) -> None:
        if keep_states < 1:
            raise ValueError("keep_states must be at least 1")
        self.max_recorded_keys = max_recorded_keys
        self.store = store
        self.keep_states = keep_states
        self.sweep_min_bytes = sweep_min_bytes
        self.sweep_growth_percent = sweep_growth_percent
        self.pace = pace
        self._written_bytes = 0  # trie bytes committed since the last sweep began
        self._live_bytes: int | None = None  # of the last sweep; None: none since start
        self._recent: set[bytes] | None = None  # trie keys committed during a sweep
        self._abandoned = False  # the running sweep's record overflowed: it must delete nothing more
        self.abandoned = 0  # sweeps abandoned since start
        self._sweep_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slice_start = time.monotonic()
        self.last: SweepReport | None = None
        self.sweeps = 0
        store.trie_listener = self._on_trie_writes

    # --- the commit side (called by ChainStore.commit_block under commit_lock) ---------

    def _on_trie_writes(self, puts: dict[bytes, bytes]) -> None:
        self._written_bytes += sum(len(k) + len(v) + 1 for k, v in puts.items())
        if self._recent is not None:
            if len(self._recent) + len(puts) > self.max_recorded_keys:
                # past the cap the record would be incomplete: the sweep must not delete
                # again (checked under this same commit lock); free the record now
                self._abandoned = True
                self._recent = None
            else:
                self._recent.update(puts)
        self._wake.set()

    # --- when ---------------------------------------------------------------------------

    def target_floor(self) -> int:
        return max(0, self.store.head_height - self.keep_states + 1)

    def due(self) -> bool:
        """A kept window that moved past the floor, and enough written since the last sweep
        (the first sweep after a start is due as soon as the window moved)."""
        if self.target_floor() <= self.store.oldest_state_height:
            return False  # every state at or above the floor is kept: nothing can be garbage
        if self._live_bytes is None:
            return True
        threshold = max(self.sweep_min_bytes, self._live_bytes * self.sweep_growth_percent // 100)
        return self._written_bytes > 0 and self._written_bytes >= threshold

    # --- the sweep ----------------------------------------------------------------------

    def sweep(self) -> SweepReport:
        """One mark-and-sweep (module docstring). Raises IncompleteState, having deleted
        nothing, if a kept state misses a node; SweepAbandoned, having deleted only what a
        complete record of the blocks' writes allowed, if that record passed
        ``max_recorded_keys``."""
        with self._sweep_lock:
            store = self.store
            with store.commit_lock:
                self._recent = set()
                self._abandoned = False
                self._written_bytes = 0
                snapshot = store.db.snapshot()
            try:
                return self._sweep(snapshot)
            finally:
                with store.commit_lock:
                    self._recent = None
                snapshot.close()

    def _sweep(self, snapshot) -> SweepReport:
        store = self.store
        head = int.from_bytes(snapshot.get(b"H"), "big")
        raw_floor = snapshot.get(PRUNED_FLOOR)
        old_floor = 0 if raw_floor is None else int.from_bytes(raw_floor, "big")
        floor = max(old_floor, head - self.keep_states + 1, 0)
        report = SweepReport(head, floor)
        log.info("pruning: sweep keeping states %d..%d begins", floor, head)
        t0 = time.thread_time()
        self._slice_start = time.monotonic()
        marked = self._mark(snapshot, [self._state_root(snapshot, h) for h in range(head, floor - 1, -1)],
                            report)
        report.mark_s = time.thread_time() - t0
        if floor > old_floor:
            store.database.put(PRUNED_FLOOR, floor.to_bytes(8, "big"), sync=True)
        t1 = time.thread_time()
        batch: list[bytes] = []
        with snapshot.iterator(prefix=TRIE, include_value=False) as keys:
            for key in keys:
                report.scanned += 1
                if report.scanned % 5_000 == 0:
                    self._breathe()
                if key[1:] in marked:
                    continue
                batch.append(key)
                if len(batch) >= DELETE_BATCH:
                    self._delete(batch, report)
                    batch = []
                    self._breathe()
        self._delete(batch, report)
        report.sweep_s = time.thread_time() - t1
        self._live_bytes = report.live_bytes
        self.last = report
        self.sweeps += 1
        log.info("pruned: states %d..%d kept, %d nodes live (%d bytes), %d of %d keys deleted "
                 "(%d spared), mark %.2fs sweep %.2fs CPU", floor, head, report.marked_nodes,
                 report.live_bytes, report.deleted, report.scanned, report.spared,
                 report.mark_s, report.sweep_s)
        return report

    @staticmethod
    def _state_root(snapshot, height: int) -> bytes:
        from node.block import Block

        block_hash = snapshot.get(b"h" + height.to_bytes(8, "big"))
        raw = None if block_hash is None else snapshot.get(b"b" + block_hash)
        if raw is None:
            raise IncompleteState(f"no block at height {height}")
        return Block.decode(raw).header.state_root

    def _mark(self, snapshot, roots: list[bytes], report: SweepReport) -> set[bytes]:
        """The keys (without prefix) of every node and code reachable from ``roots``. A node
        already marked is not entered again: its whole subtree is marked (same hash, same
        content), so the cost is the newest state plus what the older ones differ by."""
        get = snapshot.get
        marked: set[bytes] = set()
        tries: list[tuple[bytes, bool]] = [(root, True) for root in roots]
        work = 0
        while tries:
            root, accounts = tries.pop()
            if root == BLANK_ROOT_HASH or root in marked:
                continue
            stack: list = [root]
            while stack:
                ref = stack.pop()
                if isinstance(ref, bytes):
                    if len(ref) != 32 or ref in marked:
                        continue
                    raw = get(TRIE + ref)
                    if raw is None:
                        raise IncompleteState(f"missing trie node {ref.hex()} of a kept state")
                    marked.add(ref)
                    report.live_bytes += len(raw) + 33
                    node = rlp.decode(raw)
                    work += 1
                    if work % 2_000 == 0:
                        self._breathe()
                else:
                    node = ref  # embedded in its parent (shorter than 32 bytes)
                if len(node) == 17:
                    stack.extend(child for child in node[:16] if child)
                    if accounts and node[16]:
                        self._account(node[16], marked, tries, report)
                elif len(node) == 2:
                    if node[0] and node[0][0] >> 4 in (2, 3):  # hex-prefix flag: a leaf
                        if accounts:
                            self._account(node[1], marked, tries, report)
                    else:
                        stack.append(node[1])
        report.marked_nodes = len(marked)
        return marked

    @staticmethod
    def _account(value: bytes, marked: set[bytes], tries: list, report: SweepReport) -> None:
        _nonce, _balance, storage_root, code_hash = rlp.decode(value)
        if storage_root != BLANK_ROOT_HASH and storage_root not in marked:
            tries.append((storage_root, False))
        if code_hash != EMPTY_SHA3 and code_hash not in marked:
            marked.add(code_hash)  # code is stored under its hash, like a node
            report.live_bytes += 33

    def _delete(self, keys: list[bytes], report: SweepReport) -> None:
        if not keys:
            return
        store = self.store
        with store.commit_lock:
            if self._abandoned or self._recent is None:
                raise SweepAbandoned(f"blocks wrote over {self.max_recorded_keys} trie keys during "
                                     f"the sweep ({report.deleted} keys deleted before)")
            recent = self._recent
            # Not synced: a delete lost in a crash leaves garbage the next sweep finds.
            with store.db.write_batch(sync=False) as wb:
                for key in keys:
                    if key[1:] in recent:
                        report.spared += 1
                    else:
                        wb.delete(key)
                        report.deleted += 1

    def _breathe(self) -> None:
        if self._stop.is_set():
            raise _Stopped
        if self._abandoned:
            raise SweepAbandoned(f"blocks wrote over {self.max_recorded_keys} trie keys during the sweep")
        if self.pace and time.monotonic() - self._slice_start >= WORK_SLICE_S:
            time.sleep(WORK_SLICE_S)
            self._slice_start = time.monotonic()

    # --- the background thread ----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="motus-prune", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a sweep in progress ends at its next pause) and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.due():
                    self.sweep()
            except _Stopped:
                return
            except SweepAbandoned as exc:
                self.abandoned += 1
                log.warning("pruning sweep abandoned: %s; retrying in %.0f s", exc, ABANDONED_RETRY_S)
                self._stop.wait(ABANDONED_RETRY_S)
            except IncompleteState as exc:
                log.error("pruning stopped: %s; run `motus db check`", exc)
                return
            except Exception:
                log.exception("pruning sweep failed; retrying in 60 s")
                self._stop.wait(60)
            self._wake.wait(1.0)
            self._wake.clear()
