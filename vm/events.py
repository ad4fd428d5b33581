"""Block events: EVM-shaped logs emitted by block execution outside any transaction
(epoch payouts, proposal tallies and activations), as Cosmos SDK's begin-block events.

A transaction's logs live in its receipt. Epoch work runs before the block's
transactions, with no transaction and no receipt, so its events are collected here
instead: :func:`collect_block_events` opens a sink for one block execution, and
:meth:`vm.modules.base.SystemModule.emit` called without a computation appends to it.
Each event is a log like any other (address = the emitting module, topics, ABI data),
so the modules' shipped ABIs decode them.

Consensus: receipts stay Ethereum-exact (no synthetic receipt), and the header keeps
its fields. The block's events are committed by the state root instead: when a block
has events, execution stores ``keccak(rlp(events))`` in the params account at slot
``keccak(b"block-events:" + height as 8 bytes)`` (:func:`record_block_events`), so a
node that served forged or missing events is caught with ``eth_getProof`` against a
verified header. The node keeps the events themselves next to the block and serves them
from ``eth_getLogs`` (docs/rpc.md, "Block events").
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import rlp
from eth.abc import StateAPI
from eth_hash.auto import keccak
from eth_typing import Address
from rlp.sedes import Binary, CountableList, binary

from vm.modules import addresses

MAX_TOPICS = 4
# the transactionHash eth_getLogs gives a block event: keccak(BLOCK_EVENTS_TAG + block hash)
BLOCK_EVENTS_TAG = b"motus:block-events"


@dataclass(frozen=True)
class BlockEvent:
    """One event of block execution: a log without a transaction."""

    address: bytes  # 20 bytes: the module that emitted it
    topics: tuple[bytes, ...]  # 32 bytes each, the first is the event signature hash
    data: bytes  # ABI-encoded non-indexed arguments


_sedes = CountableList(
    rlp.sedes.List([Binary.fixed_length(20), CountableList(Binary.fixed_length(32)), binary])
)
_SINK: ContextVar[list[BlockEvent] | None] = ContextVar("motus_block_events", default=None)


@contextmanager
def collect_block_events() -> Iterator[list[BlockEvent]]:
    """Collect, in emission order, the events emitted outside transactions while the
    context is open; yields the list they are appended to."""
    events: list[BlockEvent] = []
    token = _SINK.set(events)
    try:
        yield events
    finally:
        _SINK.reset(token)


def emit_block_event(address: bytes, topics: Sequence[int | bytes], data: bytes) -> bool:
    """Append an event to the open sink; False (dropped) when no block is being executed
    (a module's epoch function called directly, e.g. by a unit test)."""
    sink = _SINK.get()
    if sink is None:
        return False
    if len(topics) > MAX_TOPICS:
        raise ValueError(f"an event has at most {MAX_TOPICS} topics")
    words = tuple(
        t.to_bytes(32, "big") if isinstance(t, int) else bytes(t).rjust(32, b"\x00") for t in topics
    )
    sink.append(BlockEvent(bytes(address), words, bytes(data)))
    return True


def encode_block_events(events: Sequence[BlockEvent]) -> bytes:
    """RLP ``[[address, [topic, ...], data], ...]``: what the node stores and hashes."""
    return rlp.encode([[e.address, list(e.topics), e.data] for e in events], sedes=_sedes)


def decode_block_events(raw: bytes) -> list[BlockEvent]:
    return [BlockEvent(a, tuple(t), d) for a, t, d in rlp.decode(raw, sedes=_sedes)]


def compute_block_events_hash(events: Sequence[BlockEvent]) -> bytes:
    """keccak256 of :func:`encode_block_events`."""
    return keccak(encode_block_events(events))


def block_events_slot(height: int) -> int:
    """Slot of the params account holding the events hash of block ``height``."""
    return int.from_bytes(keccak(b"block-events:" + height.to_bytes(8, "big")), "big")


def record_block_events(state: StateAPI, height: int, events: Sequence[BlockEvent]) -> None:
    """Commit the block's events into state (nothing is written for a block without)."""
    if events:
        state.set_storage(
            Address(addresses.PARAMS),
            block_events_slot(height),
            int.from_bytes(compute_block_events_hash(events), "big"),
        )


def get_block_events_hash(state: StateAPI, height: int) -> bytes | None:
    """The events hash recorded for block ``height``; None if it had no events."""
    value = state.get_storage(Address(addresses.PARAMS), block_events_slot(height))
    return value.to_bytes(32, "big") if value else None


def compute_block_events_tx_hash(block_hash: bytes) -> bytes:
    """The ``transactionHash`` of a block's events: the hash of the block's system
    transaction, which the RPC serves with the events as its receipt's logs (docs/rpc.md,
    "System transactions"); no signed transaction has it (a transaction hash is the
    keccak of a signed envelope)."""
    return keccak(BLOCK_EVENTS_TAG + block_hash)
