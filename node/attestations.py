"""The node's attestation service (docs/telemetry.md, "Node wiring").

Owns the attestation pool, the admission cache that follows the head, the reject
counters and the off-chain signal store, and connects them to the rest of the node:

  RPC motus_submitAttestations --+
                                 +--> stateless checks (worker processes fed from the
                                 |      trio thread; or a worker thread)
  gossip attestation batches ----+      -> stateful checks against the head (trio thread)
                                        -> pool;  RPC-accepted items -> gossip batcher
  Application.propose   -> ``take`` (oldest first);  what building refused -> ``on_built``
  Application.commit    -> ``on_commit`` for every committed block, in height order
                           (consensus and block sync alike): included items leave the
                           pool, the cache advances, the rest is rechecked on the new head

The CPU-heavy part (signature recovery) runs off the trio thread, which also runs
consensus, for up to ADMISSION_CHECKS_AT_ONCE batches at a time (both cores: while one
batch's signatures are checked, the next one's are too, and the trio thread does the
stateful part of an earlier one); only the cheap stateful checks and the pool
bookkeeping (~12 us an attestation) run on it, one batch at a time in arrival order
(:class:`ArrivalOrder`), so attestations of one device chain in the order they came.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from node.attestation_pool import (
    POOL_FULL,
    STATELESS_CODES,
    THROTTLED,
    AddResult,
    AdmissionCache,
    AttestationPool,
    AttestationStatus,
    ProcessPoolChecker,
    RejectCounters,
    StatefulCheck,
    check_stateless_unshared,
    view_check,
)
from node.signal_store import SignalStore, SignalStoreError, UsedNonces
from vm.attestation import (
    MAX_SIGNALS_BYTES,
    OK,
    TIME_UNIT_MS,
    AttestationError,
    SignalsError,
    compute_attestation_id,
    decode_attestation,
    open_commitment,
    set_verified_capacity,
)
from vm.attestation_ahead import SignatureWorker
from vm.modules.telemetry import DEFERRED

if TYPE_CHECKING:
    from node.block import Block
    from node.config import TelemetrySection
    from node.store import ChainStore
    from p2p.batch import Batcher
    from p2p.host import P2PNode, Verdict
    from vm.execute import BlockResult

log = logging.getLogger("motus.attestations")

MAX_SUBMIT = 1000  # attestations per motus_submitAttestations call (docs/telemetry.md)
GOSSIP_MAX_ITEMS = 4096  # items one gossip batch may carry (a 1 MiB batch holds ~6,000)
SIGNAL_BATCH_BYTES = 256 * 1024  # a signals gossip batch closes at this size
SIGNAL_ITEM_MAX_BYTES = 256 + MAX_SIGNALS_BYTES + 16  # [attestation, payload], msgpack
SIGNAL_FLUSH_S = 0.1  # a signals batch leaves at most this long after its first item
PRUNE_INTERVAL_S = 600.0  # signal store retention sweep
THREAD_MIN_BATCH = 8  # below this the stateless checks run inline: a thread hop costs more
# Batches whose stateless checks may run at once (threads, or feeding the worker
# processes): one per core of the 2-core reference machine. More only queue for the
# same cores while holding their batches in memory.
ADMISSION_CHECKS_AT_ONCE = 2
# Items whose stateful checks run between two checkpoints of the trio thread: ~1 ms
# with a warm admission cache (~12 us an item), tens of ms at worst (a cold device is a
# state read), so consensus messages and timers never wait behind a whole batch.
ADMISSION_SLICE = 64
# Codes that block building reports without the attestation being invalid for good:
# the block was full, or its time is still before the attestation's (the node admitted
# it by its own clock, up to attestation_future_ms ahead).
KEEP_AFTER_BUILDING = frozenset({OK, DEFERRED, "future"})


class PayloadError(ValueError):
    """A signal payload that does not belong to its attestation; ``code`` is one of
    ``hash_mismatch``, ``bad_payload``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def check_payload(raw: bytes, payload: bytes) -> None:
    """Raise :class:`PayloadError` unless ``payload`` opens the attestation's salted
    commitment and is consistent with it (``vm.attestation.open_commitment``). An
    undecodable attestation passes: the attestation itself is refused (``malformed``)
    and its payload never stored."""
    try:
        att = decode_attestation(raw)
    except AttestationError:
        return
    try:
        open_commitment(att, payload)
    except SignalsError as exc:
        raise PayloadError(exc.code, str(exc)) from None


def encode_signal_item(raw: bytes, payload: bytes) -> bytes:
    """One item of the signals gossip topic: canonical msgpack ``[attestation, payload]``."""
    return msgpack.packb([bytes(raw), bytes(payload)], use_bin_type=True)


def decode_signal_item(item: bytes) -> tuple[bytes, bytes]:
    """Inverse of :func:`encode_signal_item`; ValueError unless canonical and in bounds."""
    if len(item) > SIGNAL_ITEM_MAX_BYTES:
        raise ValueError(f"signal item of {len(item)} bytes")
    try:
        pair = msgpack.unpackb(item, raw=False, max_bin_len=MAX_SIGNALS_BYTES, max_str_len=0,
                               max_array_len=2, max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises ValueError, ExtraData, TypeError...
        raise ValueError(f"signal item is not msgpack: {exc}") from None
    if (not isinstance(pair, list) or len(pair) != 2
            or not all(isinstance(x, bytes) for x in pair)):
        raise ValueError("signal item is not [bin, bin]")
    if encode_signal_item(*pair) != item:
        raise ValueError("signal item is not canonical")
    return pair[0], pair[1]


class ArrivalOrder:
    """Admits tasks to a section one at a time, in the order they arrived (took their
    place), whatever order they become ready in; a task that leaves before its turn
    (cancelled, or done early) gives up its turn without holding up those behind it."""

    def __init__(self) -> None:
        self._issued = 0  # places handed out
        self._next = 0  # the place whose turn it is
        self._left: set[int] = set()  # places given up, not yet passed
        self._lot = trio.lowlevel.ParkingLot()

    @asynccontextmanager
    async def place(self) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        """Take the next place; yields ``turn()``, which returns once every earlier place
        has been left. The turn lasts until the block exits."""
        ticket = self._issued
        self._issued += 1

        async def turn() -> None:
            while self._next != ticket:
                await self._lot.park()

        try:
            yield turn
        finally:
            self._left.add(ticket)
            while self._next in self._left:
                self._left.discard(self._next)
                self._next += 1
            self._lot.unpark_all()


class _Checked:
    """How far the stateless checks of one admitted batch have come: ``todo`` are the
    batch's indices being checked (ascending), the first ``filled`` of them have their
    outcome; :meth:`until` waits until every checked index below a bound has one."""

    def __init__(self, todo: list[int], n: int) -> None:
        self.todo = todo
        self.n = n
        self.filled = 0
        self._event = trio.Event()

    def ready(self) -> int:
        """The batch index below which every item checked has its outcome."""
        return self.todo[self.filled] if self.filled < len(self.todo) else self.n

    def advance(self, count: int) -> None:
        self.filled += count
        event, self._event = self._event, trio.Event()
        event.set()

    async def until(self, bound: int) -> bool:
        """Wait until :meth:`ready` reaches ``bound``; whether it waited."""
        waited = False
        while self.ready() < bound:
            await self._event.wait()
            waited = True
        return waited


class AttestationService:
    """Pool, admission cache, counters and signal store of one node (see module doc).

    Not thread-safe: every method runs on the node's trio thread; only the stateless
    checks are handed to a worker thread (or worker processes) by :meth:`submit`.
    """

    def __init__(self, store: ChainStore, chain_id: int, config: TelemetrySection,
                 signals_path: Path | str | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.chain_id = chain_id
        self.clock = clock
        self.counters = RejectCounters()
        self.pool = AttestationPool(chain_id, max_items=config.pool_max, counters=self.counters)
        set_verified_capacity(config.pool_max)  # the memo holds what the pool may hold
        self.cache = AdmissionCache(store.state_db)
        self.workers: ProcessPoolChecker | None = None
        if config.verify_workers > 0:
            self.workers = ProcessPoolChecker(workers=config.verify_workers)
        # the signatures of a peer's block this node never admitted, checked beside its
        # execution (Application.check_block; vm.attestation_ahead); started by the
        # first such check
        self.block_signatures = SignatureWorker()
        self.signals: SignalStore | None = None
        if signals_path is not None:
            Path(signals_path).mkdir(parents=True, exist_ok=True)
            self.signals = SignalStore(str(signals_path), chain_id, config.signal_retention_days)
        self.request_nonces = UsedNonces()  # motus_getTelemetry: each request answered once
        # called with the (attestation, payload) pairs stored now, on the trio thread, after
        # they are in the store (live streams, webhooks); a listener must not block or raise
        self.signal_listeners: list[Callable[[list[tuple[bytes, bytes]]], None]] = []
        self.accepted = 0  # attestations admitted into the pool since start
        self.signatures_checked = 0  # items admission ran the stateless checks on
        self.built_rejects = 0  # pending attestations that block building refused
        self.gossip: Counter[str] = Counter()  # batches in/out, items relayed
        self._publish: Callable[[bytes], bool] | None = None
        self.signal_batcher: Batcher | None = None  # payloads to the signals topic
        self._signal_inbox: Any = None
        self._order = ArrivalOrder()  # the stateful part of admission, in arrival order
        self._checking = trio.CapacityLimiter(ADMISSION_CHECKS_AT_ONCE)
        self._view: Any = None
        self._view_dropped = 0  # pool.dropped when the view was last rebuilt
        self.light_rechecks = 0  # new heads followed without rechecking the pool (tests)
        self._check: StatefulCheck | None = None
        self._follow(self.store.head.state_root, self.store.head.height)

    # --- following the chain ------------------------------------------------------------

    def _follow(self, state_root: bytes, height: int) -> None:
        """A fresh admission view on the head with ``state_root`` (block ``height``)."""
        self._view = self.cache.view(state_root, self._now_ms(), height + 1)
        self._check = view_check(self._view)

    def _rule_inputs(self) -> tuple[Any, ...] | None:
        """What the stateful checks read besides device records in telemetry: the epoch,
        the deny-list version, and the storage roots of identity (pairings), params (the
        limits) and governance, at the cache's head."""
        from vm.epoch import get_epoch
        from vm.modules import addresses
        from vm.modules.telemetry import get_deny_version

        head = self.cache.head()
        if head is None:
            return None
        return (get_epoch(head), get_deny_version(head),  # type: ignore[arg-type]
                head.storage_root(addresses.IDENTITY), head.storage_root(addresses.PARAMS),
                head.storage_root(addresses.GOVERNANCE))

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _head_check(self) -> StatefulCheck:
        """The stateful check over the head, its clock set to now."""
        assert self._check is not None
        self._view.now_ms = self._now_ms()
        return self._check

    def take_with_ids(self, max_n: int) -> tuple[list[bytes], list[bytes]]:
        """The oldest ``max_n`` pending attestations, for a block on the head, with each
        one's id beside (the pool's key)."""
        return self.pool.take_with_ids(max_n)

    def on_built(self, results: Sequence[tuple[bytes, str]]) -> None:
        """Block building's verdict on what :meth:`take` gave it: refused attestations
        leave the pool (counted by code, status rejected); full-block and future-dated
        ones stay for a later block."""
        rejected = [(att_id, code) for att_id, code in results if code not in KEEP_AFTER_BUILDING]
        if rejected:
            self.built_rejects += self.pool.reject_pending(rejected)

    def on_commit(self, block: Block, result: BlockResult, parent_state_root: bytes) -> None:
        """A block was committed (consensus or block sync; called for every block, in
        order): its attestations leave the pool as included, the admission cache follows
        the new head, and what is still pending is rechecked against it. Never raises:
        on an internal failure the cache restarts from the head."""
        header = block.header
        try:
            included = result.included_attestation_ids()
            before = self._rule_inputs() if self.cache.state_root == parent_state_root else None
            quiet = before is not None and self.pool.is_oldest_pending(included)
            self.pool.remove_included(included, header.height)
            self.cache.advance(parent_state_root, header.state_root, result.attestations,
                               result.decoded_attestations())
            dropped = []
            light = False
            if (quiet and self._view is not None and self.pool.dropped == self._view_dropped
                    and self._rule_inputs() == before):
                # The block applied to each device exactly what the view had applied first,
                # nothing the view applied left the pool otherwise, and nothing else the
                # rules read changed: the view (head + what is still pending, in order) is
                # what a full recheck would build; only time can have changed an answer.
                self._view.height = header.height + 1
                dropped = self.pool.drop_stale(self._now_ms(), self._view.limits.stale_ms)
                light = not dropped  # a stale one is still applied in the view: rebuild it
                self.light_rechecks += light
            if not light:
                self._follow(header.state_root, header.height)
                dropped += self.pool.recheck(self._head_check())
                self._view_dropped = self.pool.dropped
            if dropped:
                # admitted (answered ok), now refused: lost unless another pool has them
                log.info("%d pending attestations refused by the head at %d: %s", len(dropped),
                         header.height, dict(Counter(code for _, code in dropped)))
        except Exception:
            log.exception("attestation pool could not follow block %d; restarting its cache",
                          header.height)
            self.cache = AdmissionCache(self.store.state_db)
            self._follow(header.state_root, header.height)
        if self.signals is not None and result.attestations:
            try:
                self.signals.note_included(_included_keys(result))
            except Exception:
                log.exception("signal store could not note the attestations of block %d",
                              header.height)

    # --- admission ----------------------------------------------------------------------

    async def submit(self, raws: Sequence[bytes], source: str, *,
                     payloads: Sequence[bytes | None] | None = None,
                     gossip: bool = True) -> list[AddResult]:
        """Admit attestations; one :class:`AddResult` per item, in order.

        Signatures are checked off the trio thread, several batches at once; the stateful
        checks against the head and the insertion run on it, one batch at a time in
        arrival order. ``source`` (``rpc:<address>`` or ``peer:<id>``) is charged for
        the pool's per-source quota.
        ``payloads`` (per item, or None) are stored in the signal store for accepted
        items; they must have passed :func:`check_payload`. With ``gossip``, items that
        entered the pool now are handed to the gossip batcher.
        """
        raws = [bytes(r) for r in raws]
        async with self._order.place() as turn:
            ids = [compute_attestation_id(r) for r in raws]
            if not self.pool.admits(source, len(raws)):  # before any signature is checked
                self.counters.add(THROTTLED, len(raws))
                return [AddResult(att_id, False, THROTTLED) for att_id in ids]
            # What is pending or refused for its bytes now is not checked again; the pool
            # may change before our turn, and add_many checks inline whatever then
            # needs it and has no outcome here.
            todo = [i for i, att_id in enumerate(ids) if self.pool.needs_check(att_id)]
            stateless: list[Any] = [None] * len(raws)
            # Items past the room the pool has for this source now would be refused
            # pool_full after their signatures were checked (a gateway above what blocks
            # take keeps its quota full): refused unchecked instead, so the signature
            # core and the trio thread spend nothing on them. Room freed before our turn
            # is taken by later calls (pool_full means: submit again later). Not for a
            # peer's gossip batch: its verdict (REJECT for a forged item, else relayed)
            # needs every item checked, or a batch of one held item and forged ones
            # past the room would be relayed and get this honest node banned.
            room = len(todo) if source.startswith("peer:") else self.pool.room(source)
            if len(todo) > room:
                for i in todo[room:]:
                    stateless[i] = POOL_FULL
                todo = todo[:room]
            checked = _Checked(todo if len(todo) >= THREAD_MIN_BATCH else [], len(raws))
            self.signatures_checked += len(todo)
            results = []
            async with trio.open_nursery() as nursery:
                if checked.todo:
                    nursery.start_soon(self._check_into, [raws[i] for i in todo], stateless,
                                       checked)
                await turn()
                was_pending = [att_id in self.pool for att_id in ids]
                # The stateful part in slices, with a checkpoint between them: consensus
                # runs on this thread, and a whole batch (4,096 gossip items; a device the
                # admission cache never saw costs a state read) held it for up to 0.8 s at
                # a burst's start, so votes waited and rounds failed. Each slice sees the
                # head and pool as they are then (a block committed meanwhile is
                # followed). A slice starts as soon as its items' signatures are checked,
                # while the workers go on with the batch's later items.
                for a in range(0, len(raws), ADMISSION_SLICE):
                    b = a + ADMISSION_SLICE
                    if not await checked.until(min(b, len(raws))) and a:
                        await trio.lowlevel.checkpoint()
                    results += self.pool.add_many(raws[a:b], self._head_check(), source,
                                                  stateless=stateless[a:b], ids=ids[a:b],
                                                  admitted=True)
        fresh = [raws[i] for i, r in enumerate(results) if r.accepted and not was_pending[i]]
        self.accepted += len(fresh)
        if gossip and fresh and self._publish is not None:
            for raw in fresh:
                self._publish(raw)
            self.gossip["items_out"] += len(fresh)
        if payloads is not None and self.signals is not None:
            stored = self._store_payloads(raws, results, payloads)
            if gossip:
                self._gossip_payloads(stored)
        return results

    async def _check_into(self, work: list[bytes], stateless: list[Any],
                          checked: _Checked) -> None:
        """The stateless checks of ``work`` (the items ``checked.todo`` of a batch), their
        outcomes written into ``stateless`` as they come, ``checked`` told each time."""
        todo = checked.todo

        def on_part(start: int, outcomes: list[Any]) -> None:
            if start != checked.filled:
                return  # (not the next ones: filled from the whole answer below)
            for i, outcome in zip(todo[start:start + len(outcomes)], outcomes, strict=True):
                stateless[i] = outcome
            checked.advance(len(outcomes))

        async with self._checking:
            outcomes = await self._check_stateless(work, on_part)
        if checked.filled < len(todo):  # a checker that does not tell its parts
            on_part(checked.filled, outcomes[checked.filled:])

    async def _check_stateless(self, raws: list[bytes],
                               on_part: Callable[[int, list[Any]], None] | None = None,
                               ) -> list[Any]:
        """The stateless outcome of each item: on the worker processes, fed from this
        thread, or (``verify_workers = 0``) in a worker thread that touches nothing the
        trio thread uses. ``on_part(start, outcomes)``: told the outcomes as they come
        (:meth:`ProcessPoolChecker.check_async`), in order."""
        if self.workers is not None:
            return await self.workers.check_async(raws, self.chain_id, on_part)
        out = await trio.to_thread.run_sync(check_stateless_unshared, raws, self.chain_id)
        if on_part is not None:
            on_part(0, out)
        return out

    def _store_payloads(self, raws: Sequence[bytes], results: Sequence[AddResult],
                        payloads: Sequence[bytes | None]) -> list[tuple[bytes, bytes]]:
        """Store the payloads of items that are in the pool or already on chain; returns
        the (attestation, payload) pairs stored now (not those held already)."""
        assert self.signals is not None
        stored = []
        for raw, result, payload in zip(raws, results, payloads, strict=True):
            if payload is None:
                continue
            if not result.accepted and self.store.attestation_location(result.id) is None:
                continue
            if self.signals.get(result.id) is not None:
                continue  # held already (and gossiped when it was first stored)
            try:
                self.signals.put(raw, payload)
            except SignalStoreError as exc:  # checked before admission: a node bug
                log.warning("signal payload of 0x%s not stored: %s", result.id.hex(), exc)
                continue
            stored.append((raw, payload))
        self._announce(stored)
        return stored

    def _announce(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Tell the signal listeners about payloads stored now."""
        if not pairs:
            return
        for listener in list(self.signal_listeners):
            try:
                listener(pairs)
            except Exception:  # a listener's bug must not cost the store its payloads
                log.exception("signal listener failed")

    def _gossip_payloads(self, pairs: Sequence[tuple[bytes, bytes]]) -> None:
        """Hand stored payloads to the signals topic, so every node holds them."""
        if self.signal_batcher is None:
            return
        for raw, payload in pairs:
            self.signal_batcher.add(encode_signal_item(raw, payload))
        self.gossip["signals_out"] += len(pairs)

    def store_signals(self, raw: bytes, payload: bytes) -> str:
        """``motus_submitSignals``: store the payload of an attestation this node knows
        (pending or included); returns ``ok`` or why not (``unknown_attestation``,
        ``bad_attestation``, ``hash_mismatch``, ``bad_payload``, ``no_signal_store``)."""
        if self.signals is None:
            return "no_signal_store"
        status = self.status(compute_attestation_id(raw))
        if status is None or status.status == "rejected":
            return "unknown_attestation"
        held = self.signals.get(compute_attestation_id(raw)) is not None
        try:
            self.signals.put(raw, payload)
        except SignalStoreError as exc:
            return exc.code
        if not held:
            self._gossip_payloads([(raw, payload)])
            self._announce([(raw, payload)])
        return OK

    def status(self, att_id: bytes) -> AttestationStatus | None:
        """Pending, included (height) or rejected (code); None when unknown. Inclusion is
        read from the chain when the pool has forgotten it or never saw it."""
        found = self.pool.status(att_id)
        if found is not None and found.status != "rejected":
            return found
        where = self.store.attestation_location(att_id)
        if where is not None:
            return AttestationStatus("included", height=where[0])
        return found

    # --- gossip ---------------------------------------------------------------------------

    def attach_gossip(self, p2p: P2PNode | None) -> trio.MemoryReceiveChannel[Any] | None:
        """Subscribe to the attestation topic (before ``p2p.run``) and publish admitted
        RPC attestations through the node's batcher. Returns the topic's inbox, which
        :meth:`run` drains (admission happens in the topic check)."""
        if p2p is None:
            return None
        inbox = p2p.register_topic("attestation", self.check_gossip_batch)
        self._publish = p2p.attestations.add
        if self.signals is not None:
            from p2p.batch import Batcher

            self._signal_inbox = p2p.register_topic("signals", self.check_signal_batch)

            async def publish(data: bytes) -> None:
                await p2p.publish("signals", data)

            self.signal_batcher = Batcher(publish, flush_interval=SIGNAL_FLUSH_S,
                                          max_batch_bytes=SIGNAL_BATCH_BYTES,
                                          max_item_bytes=SIGNAL_ITEM_MAX_BYTES, name="signal")
        return inbox

    async def check_gossip_batch(self, peer: str, data: bytes) -> Verdict:
        """Topic check of one attestation batch from ``peer`` (the forwarder).

        Malformed envelope (no honest publisher or relay sends one): MALFORMED, the
        forwarder is banned at once. Any item failing the stateless checks (every
        honest node checked them before publishing or relaying): REJECT, the forwarder
        is penalised. Otherwise every item goes through admission like an RPC one (the
        forwarder is the quota source); the batch is relayed (ACCEPT) when some item is
        in our pool, else dropped without penalty (IGNORE: refusals that depend on the
        head may differ between nodes)."""
        from p2p.batch import decode_batch
        from p2p.errors import BatchDecodeError
        from p2p.host import Verdict

        self.gossip["batches_in"] += 1
        try:
            items = decode_batch(data, max_items=GOSSIP_MAX_ITEMS)
        except BatchDecodeError:
            self.gossip["batches_rejected"] += 1
            return Verdict.MALFORMED
        results = await self.submit(items, f"peer:{peer}", gossip=False)
        self.gossip["items_in"] += len(items)
        if any(r.code in STATELESS_CODES for r in results):
            self.gossip["batches_rejected"] += 1
            return Verdict.REJECT
        if any(r.accepted for r in results):
            return Verdict.ACCEPT
        # refused for the forwarder's quota: the same batch from another peer is checked
        return (Verdict.IGNORE_FORWARDER if results and all(r.code == THROTTLED for r in results)
                else Verdict.IGNORE)

    async def check_signal_batch(self, peer: str, data: bytes) -> Verdict:
        """Topic check of one signals batch (``[attestation, payload]`` items) from
        ``peer``. Envelope or item not canonical: MALFORMED. A payload that does not hash
        to its attestation's ``signals_hash``, or an attestation failing the stateless
        checks: REJECT (every honest publisher checked both). Otherwise each attestation
        goes through admission like an RPC one and the payloads of those in the pool or
        on chain are stored: ACCEPT (relayed) when one was, else IGNORE."""
        from p2p.batch import decode_batch
        from p2p.errors import BatchDecodeError
        from p2p.host import Verdict

        self.gossip["signal_batches_in"] += 1
        try:
            items = decode_batch(data, max_items=GOSSIP_MAX_ITEMS,
                                 max_item_bytes=SIGNAL_ITEM_MAX_BYTES)
            pairs = [decode_signal_item(item) for item in items]
        except (BatchDecodeError, ValueError):
            self.gossip["signal_batches_rejected"] += 1
            return Verdict.MALFORMED
        try:
            for raw, payload in pairs:
                check_payload(raw, payload)
        except PayloadError:
            self.gossip["signal_batches_rejected"] += 1
            return Verdict.REJECT
        raws = [raw for raw, _ in pairs]
        results = await self.submit(raws, f"peer:{peer}", payloads=[p for _, p in pairs],
                                    gossip=False)
        if any(r.code in STATELESS_CODES for r in results):
            self.gossip["signal_batches_rejected"] += 1
            return Verdict.REJECT
        held = sum(1 for r in results if self._holds(r.id))
        self.gossip["signals_in"] += held
        if held:
            return Verdict.ACCEPT
        return (Verdict.IGNORE_FORWARDER if results and all(r.code == THROTTLED for r in results)
                else Verdict.IGNORE)

    def _holds(self, att_id: bytes) -> bool:
        return self.signals is not None and self.signals.get(att_id) is not None

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, inbox: trio.MemoryReceiveChannel[Any] | None = None, *,
                  task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled: metrics on the node's registry, the gossip inbox drained,
        the signal store pruned every ``PRUNE_INTERVAL_S``."""
        from node.metrics import register_collector

        unregister = register_collector(AttestationCollector(self))
        try:
            async with trio.open_nursery() as nursery:
                if inbox is not None:
                    nursery.start_soon(_drain, inbox)
                if self.signal_batcher is not None:
                    nursery.start_soon(_drain, self._signal_inbox)
                    nursery.start_soon(self.signal_batcher.run)
                if self.signals is not None:
                    nursery.start_soon(self._prune_loop)
                task_status.started()
                await trio.sleep_forever()
        finally:
            unregister()

    async def _prune_loop(self) -> None:
        assert self.signals is not None
        signals = self.signals
        while True:
            try:
                n = await trio.to_thread.run_sync(signals.prune, self._now_ms())
                if n:
                    log.info("signal store: %d payloads past retention deleted", n)
            except Exception:
                log.exception("signal store prune failed")
            await trio.sleep(PRUNE_INTERVAL_S)

    def close(self) -> None:
        """Release the signal store and worker processes (after :meth:`run` ended)."""
        if self.workers is not None:
            self.workers.close()
            self.workers = None
        self.block_signatures.close()
        if self.signals is not None:
            self.signals.close()
            self.signals = None


def _included_keys(result: BlockResult) -> list[tuple[bytes, int, int]]:
    """``(id, vehicle_id, timestamp_ms)`` of the block's included attestations (executed,
    so valid: read by :func:`vm.attestation.decode_accepted`, on the trio thread for
    every attestation of every block)."""
    return [(att_id, att.vehicle_id, att.timestamp_s * TIME_UNIT_MS) for att_id, att
            in zip(result.included_attestation_ids(), result.decoded_attestations(), strict=True)]


async def _drain(inbox: trio.MemoryReceiveChannel[Any]) -> None:
    async for _ in inbox:
        pass  # admitted by the topic check already; keep the inbox from filling


class AttestationCollector(Collector):
    """Prometheus metrics of the attestation service, read at scrape time."""

    def __init__(self, service: AttestationService) -> None:
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.service
        rejects = CounterMetricFamily(
            "motus_attestation_rejects",
            "Attestations refused, by reject code (pool_full: pool at a limit)", labels=["code"])
        for code, count in s.counters.snapshot().items():
            rejects.add_metric([code], count)
        yield rejects
        yield CounterMetricFamily("motus_attestations_accepted",
                                  "Attestations admitted into the pool", value=s.accepted)
        yield CounterMetricFamily(
            "motus_attestation_signature_checks",
            "Attestation signatures admission scheduled for checking (items neither pending "
            "nor refused for their bytes when their call came; from clients and peers)",
            value=s.signatures_checked)
        dropped = CounterMetricFamily(
            "motus_attestations_dropped",
            "Attestations admitted into the pool that left it without a block, by the code "
            "a later head, the clock or block building refused them with", labels=["code"])
        for code, count in sorted(s.pool.dropped_codes.items()):
            dropped.add_metric([code], count)
        yield dropped
        yield GaugeMetricFamily("motus_attestation_pool_size", "Attestations pending",
                                value=len(s.pool))
        yield GaugeMetricFamily("motus_attestation_pool_bytes", "Bytes of pending attestations",
                                value=s.pool.size_bytes)
        gossip = CounterMetricFamily("motus_attestation_gossip",
                                     "Attestation and signal gossip: batches in/rejected, items in/out",
                                     labels=["kind"])
        for kind in ("batches_in", "batches_rejected", "items_in", "items_out",
                     "signal_batches_in", "signal_batches_rejected", "signals_in",
                     "signals_out"):
            gossip.add_metric([kind], s.gossip[kind])
        yield gossip

    def describe(self) -> list[Any]:
        return []  # dynamic: nothing to check at registration time
