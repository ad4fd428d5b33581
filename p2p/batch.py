"""Gossip batches: many small items in one gossip message.

Gossip cost is per message, not per byte (about 1000 messages/s per hop with
py-libp2p here), so the node that receives items from clients packs them into
one envelope and publishes it every ``flush_interval`` or when it reaches
``max_batch_bytes``, whichever comes first. Two topics carry batches:
attestations (from devices) and transactions (from RPC clients).

Envelope: a msgpack array of bin, in canonical (shortest) form. Nothing else:
each item is self-describing (an attestation carries its own version, a
transaction its EIP-2718 type). Decoding is strict: any deviation (wrong
types, trailing bytes, non-canonical headers, empty items, too many items or
bytes, an item over the per-item limit) raises ``BatchDecodeError``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import msgpack
import trio

from p2p.errors import BatchDecodeError, MessageTooLarge, P2PError
from p2p.topics import DEFAULT_MAX_MESSAGE_SIZE, KIB, MIB, TopicName

logger = logging.getLogger(__name__)

DEFAULT_FLUSH_INTERVAL = 0.075  # seconds: inside the 50-100 ms latency budget
DEFAULT_MAX_BATCH_BYTES = 64 * KIB
# The attestation batcher closes its batches at this size: a gateway's call of 1,000
# (~190 KB) leaves in one message, not three. In a four-validator devnet every message
# reaches each node three times (origin and two relays), each copy a receive and each
# first copy a topic check, a signature check and two relays, whatever its size.
ATTESTATION_MAX_BATCH_BYTES = 256 * KIB
# Decoder defaults match the attestation topic limit (1 MiB) and the smallest
# useful item (an attestation is ~150 bytes; 1 MiB / 64 B leaves slack).
DEFAULT_DECODE_MAX_BYTES = 1 * MIB
DEFAULT_DECODE_MAX_ITEMS = 16_384
# Items waiting for the next flush; beyond this ``add`` drops and counts, so a
# stalled publisher cannot grow memory without bound.
DEFAULT_MAX_PENDING_BYTES = 4 * MIB

# Transaction batches (topic ``/motus/<chain>/tx/2``). One transaction is at most
# 128 KiB (go-ethereum's txMaxSize, vm.execute.MAX_TX_BYTES). A batch closes at
# 64 KiB (~550 transfers) or 50 ms after its first transaction, so a transaction
# waits at most 50 ms at its first node; a larger transaction travels alone, so
# the topic limit is one maximal transaction plus its envelope, rounded up.
MAX_TX_BYTES = 128 * KIB
TX_FLUSH_INTERVAL = 0.05
TX_MAX_BATCH_BYTES = 64 * KIB
TX_BATCH_LIMIT = DEFAULT_MAX_MESSAGE_SIZE[TopicName.TX]  # 256 KiB
# A typed transaction is never under ~80 bytes; the item count bound only stops a
# batch of tiny garbage items from costing a full decode.
TX_BATCH_MAX_ITEMS = TX_BATCH_LIMIT // 64


def compute_array_header_size(count: int) -> int:
    """Bytes msgpack uses for the header of an array of ``count`` elements."""
    if count < 16:
        return 1
    if count < 1 << 16:
        return 3
    return 5


def compute_bin_size(length: int) -> int:
    """Bytes msgpack uses to encode one bin of ``length`` bytes, header included."""
    if length < 1 << 8:
        return 2 + length
    if length < 1 << 16:
        return 3 + length
    return 5 + length


def encode_batch(items: Sequence[bytes]) -> bytes:
    """Return the canonical envelope holding ``items`` in order (at least one)."""
    if not items:
        raise ValueError("a batch holds at least one item")
    if any(len(item) == 0 for item in items):
        raise ValueError("batch items must not be empty")
    return msgpack.packb([bytes(item) for item in items], use_bin_type=True)


def decode_batch(
    data: bytes,
    *,
    max_items: int = DEFAULT_DECODE_MAX_ITEMS,
    max_bytes: int = DEFAULT_DECODE_MAX_BYTES,
    max_item_bytes: int | None = None,
) -> list[bytes]:
    """Return the items of an envelope, or raise ``BatchDecodeError``.

    Never raises anything else, whatever ``data`` holds: limits are checked
    before and during unpacking so a hostile header cannot make it allocate
    more than ``max_bytes``.
    """
    if len(data) > max_bytes:
        raise BatchDecodeError(f"batch is {len(data)} bytes, limit {max_bytes}")
    if not data:
        raise BatchDecodeError("batch is empty")
    try:
        items = msgpack.unpackb(
            data,
            use_list=True,
            raw=False,
            max_bin_len=max_bytes if max_item_bytes is None else min(max_bytes, max_item_bytes),
            max_array_len=max_items,
            max_str_len=0,
            max_map_len=0,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises ValueError, ExtraData, TypeError...
        raise BatchDecodeError(f"batch is not valid msgpack: {exc}") from exc
    if not isinstance(items, list):
        raise BatchDecodeError("batch is not a msgpack array")
    if not items:
        raise BatchDecodeError("batch has no items")
    if len(items) > max_items:
        raise BatchDecodeError(f"batch has {len(items)} items, limit {max_items}")
    for index, item in enumerate(items):
        if not isinstance(item, bytes):
            raise BatchDecodeError(f"item {index} is {type(item).__name__}, not bin")
        if not item:
            raise BatchDecodeError(f"item {index} is empty")
        if max_item_bytes is not None and len(item) > max_item_bytes:
            raise BatchDecodeError(f"item {index} is {len(item)} bytes, limit {max_item_bytes}")
    # Canonical form only: one batch has exactly one encoding, so its hash (the
    # gossip message id on content-addressed networks) cannot be varied.
    if msgpack.packb(items, use_bin_type=True) != data:
        raise BatchDecodeError("batch is not in canonical msgpack form")
    return items


def decode_tx_batch(data: bytes) -> list[bytes]:
    """The raw transactions of a ``tx`` topic message, or ``BatchDecodeError``
    (over 256 KiB, over 128 KiB for one transaction, or not a canonical batch)."""
    return decode_batch(data, max_items=TX_BATCH_MAX_ITEMS, max_bytes=TX_BATCH_LIMIT,
                        max_item_bytes=MAX_TX_BYTES)


@dataclass
class BatcherStats:
    """Counters of one ``Batcher`` (monotonic, for metrics)."""

    items_added: int = 0
    items_dropped: int = 0
    batches_published: int = 0
    publish_errors: int = 0


class Batcher:
    """Collect small items and publish them as batches.

    ``add`` never blocks; ``run`` (a task in the caller's nursery) publishes a
    batch ``flush_interval`` after its first item, or as soon as the next item
    would push it over ``max_batch_bytes``. An item too big for a batch of
    ``max_batch_bytes`` but within ``max_item_bytes`` is published alone, at
    once (by default ``max_item_bytes`` is what fits a batch: larger items raise).

    With ``eager``, the interval is the least gap between publishes rather than a
    delay: an item that finds the batcher idle (nothing published for
    ``flush_interval``) goes out at once, and items arriving meanwhile wait for the
    interval to pass since that publish. Light load then adds no latency; heavy load
    still makes at most one batch per interval (plus full ones).
    """

    def __init__(
        self,
        publish: Callable[[bytes], Awaitable[None]],
        *,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_item_bytes: int | None = None,
        name: str = "attestation",
        eager: bool = False,
    ) -> None:
        if not 0 < flush_interval <= 10:
            raise ValueError("flush_interval must be in (0, 10] seconds")
        if max_batch_bytes < 64:
            raise ValueError("max_batch_bytes must be at least 64")
        self._publish = publish
        self.name = name
        self.flush_interval = flush_interval
        self.max_batch_bytes = max_batch_bytes
        self.max_item_bytes = max_item_bytes
        self.eager = eager
        self._last_publish = -math.inf
        self.max_pending_bytes = max(max_pending_bytes, max_batch_bytes,
                                     compute_bin_size(max_item_bytes or 0) + 5)
        self.stats = BatcherStats()
        # Closed batches waiting to be published, then the open one.
        self._ready: list[list[bytes]] = []
        self._open: list[bytes] = []
        self._open_size = 0  # encoded size of the open batch's items, no header
        self._open_since = math.inf
        self._pending_bytes = 0
        self._wakeup = trio.Event()

    @property
    def pending_items(self) -> int:
        """Items accepted by ``add`` and not yet handed to ``publish``."""
        return sum(len(batch) for batch in self._ready) + len(self._open)

    def add(self, item: bytes) -> bool:
        """Queue ``item`` for the next batch; False (and counted) if the buffer is full.

        Raises ``MessageTooLarge`` if ``item`` is over ``max_item_bytes`` (by
        default: cannot fit in a batch), and ``ValueError`` if it is empty.
        """
        if not item:
            raise ValueError("batch items must not be empty")
        cost = compute_bin_size(len(item))
        alone = compute_array_header_size(1) + cost > self.max_batch_bytes
        if alone and (self.max_item_bytes is None or len(item) > self.max_item_bytes):
            limit = self.max_item_bytes
            raise MessageTooLarge(
                f"item of {len(item)} bytes cannot fit a {self.max_batch_bytes}-byte batch"
                if limit is None else f"item of {len(item)} bytes is over {limit} bytes"
            )
        if self._pending_bytes + cost > self.max_pending_bytes:
            self.stats.items_dropped += 1
            if self.stats.items_dropped == 1 or self.stats.items_dropped % 1000 == 0:
                logger.warning(
                    "%s batcher full (%d bytes pending): %d items dropped so far",
                    self.name,
                    self._pending_bytes,
                    self.stats.items_dropped,
                )
            return False
        if alone:  # keeps order: what was pending goes first
            if self._open:
                self._close_open_batch()
            self._ready.append([bytes(item)])
            self._pending_bytes += cost
            self.stats.items_added += 1
            self._wakeup.set()
            return True
        header = compute_array_header_size(len(self._open) + 1)
        if self._open and header + self._open_size + cost > self.max_batch_bytes:
            self._close_open_batch()
        if not self._open:
            self._open_since = trio.current_time()
        self._open.append(bytes(item))
        self._open_size += cost
        self._pending_bytes += cost
        self.stats.items_added += 1
        if compute_array_header_size(len(self._open)) + self._open_size >= self.max_batch_bytes:
            self._close_open_batch()
        self._wakeup.set()
        return True

    async def run(self) -> None:
        """Publish batches until cancelled.

        Items still pending at cancellation are dropped: on shutdown the
        network is going away too, and the items remain in the caller's pool.
        """
        while True:
            if not self._ready:
                deadline = self._open_since + self.flush_interval
                if self.eager:
                    deadline = max(self._open_since, self._last_publish + self.flush_interval)
                with trio.move_on_at(deadline):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
                if not self._ready and self._open and trio.current_time() >= deadline:
                    self._close_open_batch()
            while self._ready:
                await self._publish_one(self._ready.pop(0))

    async def flush(self) -> None:
        """Publish every pending item now, without waiting for the interval."""
        if self._open:
            self._close_open_batch()
        while self._ready:
            await self._publish_one(self._ready.pop(0))

    def _close_open_batch(self) -> None:
        self._ready.append(self._open)
        self._open = []
        self._open_size = 0
        self._open_since = math.inf

    async def _publish_one(self, batch: list[bytes]) -> None:
        self._pending_bytes -= sum(compute_bin_size(len(item)) for item in batch)
        self._last_publish = trio.current_time()
        try:
            await self._publish(encode_batch(batch))
            self.stats.batches_published += 1
        except P2PError as exc:
            # A batch lost to a transient state (not running yet) must not kill
            # the batcher: count it, log it, and go on with the next one.
            self.stats.publish_errors += 1
            self.stats.items_dropped += len(batch)
            logger.warning("%s batch of %d items not published: %s", self.name, len(batch), exc)


class AttestationBatcher(Batcher):
    """The batcher of the attestation topic (``P2PNode.attestations``)."""
