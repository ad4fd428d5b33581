"""The log index: which blocks hold a log of an address, or a topic at a position, so
that ``eth_getLogs`` reads only the blocks that can match (docs/storage.md, "Log index").

Written by ``ChainStore.commit_block`` in the block's own synced batch, from the
block's receipts and its block events (docs/rpc.md, "Block events"). Key layout, every
value empty (the key is the posting):

  La<address:20><height:8>             the block has a log emitted by address
  Lt<position:1><topic:32><height:8>   the block has a log with topic at position (0-3)
  Ln<height:8>                         the block has at least one log
  LF                                   <height:8>: every block from this height up is indexed

A node whose database predates the index starts with ``LF`` = head + 1 (blocks it
commits from then on are indexed) and builds the older part in the background, newest
first, a chunk of blocks per batch that also lowers ``LF`` (:meth:`LogIndex.backfill`).
Queries read blocks below ``LF`` the old way, so an answer never depends on how far
the build has got.

The index only narrows: the blocks it returns are a superset of those with a matching
log, and the caller applies the exact filter to each (same answer as a full scan).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from node.db import Database

PREFIX = b"L"
ADDRESS = b"La"
TOPIC = b"Lt"
ANY_LOG = b"Ln"
INDEXED_FROM = b"LF"
# EVM logs have at most 4 topics (LOG0-LOG4); a filter's positions past these are
# checked on the block only, never narrowed by the index.
INDEXED_POSITIONS = 4
BACKFILL_CHUNK = 500  # blocks per backfill batch: one batch is short, a restart loses little


class _Writer(Protocol):
    def put(self, key: bytes, value: bytes) -> Any: ...


def _h(height: int) -> bytes:
    return height.to_bytes(8, "big")


def _topic_bytes(topic: int | bytes) -> bytes:
    return topic.to_bytes(32, "big") if isinstance(topic, int) else bytes(topic)


def block_log_keys(height: int, logs: Iterable[tuple[bytes, Sequence[int | bytes]]]) -> set[bytes]:
    """The index keys of one block's logs, each ``(address, topics)`` (topics as py-evm's
    ints or as 32-byte strings); one key per distinct posting."""
    hb = _h(height)
    keys: set[bytes] = set()
    for address, topics in logs:
        keys.add(ADDRESS + bytes(address) + hb)
        for position, topic in enumerate(topics[:INDEXED_POSITIONS]):
            keys.add(TOPIC + bytes((position,)) + _topic_bytes(topic) + hb)
    if keys:
        keys.add(ANY_LOG + hb)
    return keys


def receipt_and_event_logs(receipts: Iterable[Any], events: Iterable[Any]) -> list[tuple[bytes, Sequence[Any]]]:
    """``(address, topics)`` of every log of a block: its receipts' logs, then its block
    events (``vm.events.BlockEvent``)."""
    out: list[tuple[bytes, Sequence[Any]]] = [
        (log.address, log.topics) for receipt in receipts for log in receipt.logs
    ]
    out.extend((ev.address, ev.topics) for ev in events)
    return out


def put_block_logs(wb: _Writer, height: int, receipts: Iterable[Any], events: Iterable[Any]) -> None:
    """Write the block's postings into ``wb`` (the block's commit batch)."""
    for key in block_log_keys(height, receipt_and_event_logs(receipts, events)):
        wb.put(key, b"")


# --- reading a block's logs without decoding its receipts whole -------------------------


def _item(data: bytes, pos: int) -> tuple[int, int]:
    """(payload start, payload end) of the RLP item at ``pos``."""
    b = data[pos]
    if b < 0x80:
        return pos, pos + 1
    if b < 0xB8:
        return pos + 1, pos + 1 + b - 0x80
    if b < 0xC0:
        n = b - 0xB7
        start = pos + 1 + n
        return start, start + int.from_bytes(data[pos + 1:start], "big")
    if b < 0xF8:
        return pos + 1, pos + 1 + b - 0xC0
    n = b - 0xF7
    start = pos + 1 + n
    return start, start + int.from_bytes(data[pos + 1:start], "big")


def _list_items(data: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """(payload start, payload end) of each item of the list payload ``data[start:end]``."""
    out = []
    pos = start
    while pos < end:
        s, e = _item(data, pos)
        out.append((s, e))
        pos = e
    return out


def receipts_logs(raw: bytes | None) -> list[list[tuple[bytes, list[bytes], bytes]]]:
    """The logs of each receipt of a block's stored receipts (``r<hash>``: the RLP list of
    the receipts' consensus encodings), as (address, topics, data); the status, gas and
    bloom fields are skipped, not decoded. For the node's own database only."""
    if not raw:
        return []
    out = []
    s, e = _item(raw, 0)
    for rs, re_ in _list_items(raw, s, e):
        body = raw[rs:re_]
        if body[0] < 0xC0:  # typed receipt: type || rlp([...])
            body = body[1:]
        ls, le = _item(body, 0)
        fields = _list_items(body, ls, le)
        logs_s, logs_e = fields[3]
        logs = []
        for gs, ge in _list_items(body, logs_s, logs_e):
            (a_s, a_e), (t_s, t_e), (d_s, d_e) = _list_items(body, gs, ge)
            topics = [body[x:y] for x, y in _list_items(body, t_s, t_e)]
            logs.append((body[a_s:a_e], topics, body[d_s:d_e]))
        out.append(logs)
    return out


def tx_hashes_of_extras(raw: bytes | None) -> list[bytes]:
    """The transaction hashes of a block's per-transaction extras (``e<hash>``, rows
    whose first field is the 32-byte hash)."""
    if not raw:
        return []
    s, e = _item(raw, 0)
    out = []
    for rs, _ in _list_items(raw, s, e):
        hs, he = _item(raw, rs)
        out.append(raw[hs:he])
    return out


class LogIndex:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.db = database.db

    # --- coverage ----------------------------------------------------------------------

    def indexed_from(self) -> int | None:
        """Lowest height from which every block is indexed; None before the store is
        initialised (``mark_start``)."""
        raw = self.db.get(INDEXED_FROM)
        return None if raw is None else int.from_bytes(raw, "big")

    def mark_start(self, wb: _Writer, height: int) -> None:
        """Blocks from ``height`` up will be indexed at commit (genesis: 0; an existing
        database opened the first time by an indexing node: head + 1)."""
        wb.put(INDEXED_FROM, _h(height))

    def backfill(self, store: Any, max_blocks: int = BACKFILL_CHUNK) -> int:
        """Index up to ``max_blocks`` blocks just below ``indexed_from`` and lower it, in
        one synced batch. Returns the new ``indexed_from`` (0: the index is complete).
        Only one backfill may run at a time; commits may run beside it."""
        start = self.indexed_from()
        if not start:
            return 0
        low = max(0, start - max_blocks)
        with self.database.batch() as wb:
            for height in range(low, start):
                block_hash = store.hash_at(height)
                if block_hash is None:  # not stored (pruned): nothing to index
                    continue
                put_block_logs(wb, height, store.receipts(block_hash), store.block_events(block_hash))
            wb.put(INDEXED_FROM, _h(low))
        return low

    # --- queries -----------------------------------------------------------------------

    def _heights(self, prefix: bytes, low: int, high: int) -> set[int]:
        start, stop = prefix + _h(low), prefix + _h(high + 1)
        n = len(prefix)
        return {
            int.from_bytes(key[n:], "big")
            for key in self.db.iterator(start=start, stop=stop, include_value=False)
        }

    def candidate_heights(
        self,
        addresses: Iterable[bytes],
        topics: Sequence[Iterable[bytes] | None],
        low: int,
        high: int,
    ) -> list[int]:
        """Ascending heights in ``[low, high]`` whose blocks may hold a log from one of
        ``addresses`` (any when empty) with, at each position, one of ``topics[i]`` (any
        when None). Every block with a matching log is among them."""
        if low > high:
            return []
        found: set[int] | None = None

        def narrow(heights: set[int]) -> None:
            nonlocal found
            found = heights if found is None else found & heights

        addresses = list(addresses)
        if addresses:
            narrow(set().union(*(self._heights(ADDRESS + a, low, high) for a in addresses)))
        for position, wanted in enumerate(topics[:INDEXED_POSITIONS]):
            if wanted is None or found == set():
                continue
            pos = bytes((position,))
            narrow(set().union(*(self._heights(TOPIC + pos + t, low, high) for t in wanted)))
        if found is None:
            found = self._heights(ANY_LOG, low, high)
        return sorted(found)


async def build_in_background(store: Any, chunk: int = BACKFILL_CHUNK) -> None:
    """Complete the index of a database from before it (no-op when complete): one chunk
    at a time in a worker thread, so consensus and RPC keep running meanwhile."""
    import logging

    import trio

    log = logging.getLogger("motus.logindex")
    index: LogIndex = store.log_index
    start = index.indexed_from()
    if not start:
        return
    log.info("building the log index of blocks 0-%d in the background", start - 1)
    began = trio.current_time()
    low = start
    while low:
        low = await trio.to_thread.run_sync(index.backfill, store, chunk)
        await trio.sleep(0)
    log.info("log index complete: %d blocks in %.1f s", start, trio.current_time() - began)
