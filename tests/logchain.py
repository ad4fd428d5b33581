"""A chain of many blocks with random logs in a real ChainStore (LevelDB), for the
``eth_getLogs`` differential test and ``bench_rpc``.

The blocks are committed through ``ChainStore.commit_block`` (so the log index is the
one the node writes) but not executed: a block's transactions are opaque bytes and its
receipts are made up, with their logs and the header's bloom. ``eth_getLogs`` reads
only headers, receipts, per-transaction extras and block events, all real here.
Some blocks also carry block events (logs of the epoch work, docs/rpc.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace

from eth.rlp.logs import Log
from eth.rlp.receipts import Receipt
from eth_bloom import BloomFilter
from eth_hash.auto import keccak

from consensus.types import EMPTY_COMMIT, Validator, ValidatorSet
from genesis.devnet import new_genesis
from node.block import Block
from node.config import Config
from node.db import Database
from node.rpc.errors import INVALID_PARAMS, LIMIT_EXCEEDED
from node.rpc.eth import block_event_logs, bloom_may_match, resolve_height
from node.rpc.ethjson import block_logs
from node.rpc.registry import RPCContext
from node.store import ChainStore, TxExtra
from vm.db import OverlayDB
from vm.events import BlockEvent
from vm.execute import BlockResult

CHAIN_ID = 7077
VALIDATOR = bytes.fromhex("00000000000000000000000000000000000000a1")
EVENT_MODULE = bytes.fromhex("0000000000000000000000000000000000000e01")


@dataclass
class LogMix:
    """What the random blocks hold: ``addresses`` emit logs with topics drawn from
    ``topics``; ``rare`` is an address that logs in about one block of ``rare_every``."""

    addresses: list[bytes]
    topics: list[bytes]
    rare: bytes = b"\x99" * 20
    rare_every: int = 100
    max_txs: int = 4
    event_every: int = 25  # one block in this many has block events
    empty_every: int = 5  # one block in this many has no transaction
    seed: int = 1
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @classmethod
    def default(cls, seed: int = 1) -> LogMix:
        r = random.Random(seed)
        return cls([r.randbytes(20) for _ in range(4)], [r.randbytes(32) for _ in range(6)], seed=seed)

    def log(self, address: bytes | None = None) -> tuple[bytes, tuple[bytes, ...], bytes]:
        r = self.rng
        topics = tuple(r.choice(self.topics) for _ in range(r.randint(0, 4)))
        return address or r.choice(self.addresses), topics, r.randbytes(r.choice((0, 32, 64)))


def open_store(path: str) -> tuple[Database, ChainStore]:
    database = Database(path)
    store = ChainStore(database)
    store.init_genesis(new_genesis(CHAIN_ID, [(VALIDATOR, 10)], genesis_time_ms=1_700_000_000_000))
    return database, store


def append_blocks(store: ChainStore, count: int, mix: LogMix) -> None:
    """Commit ``count`` more blocks with random transactions, logs and block events."""
    r = mix.rng
    valset = ValidatorSet([Validator(VALIDATOR, 10)])
    for _ in range(count):
        parent = store.head
        height = parent.height + 1
        n_txs = 0 if height % mix.empty_every == 0 else r.randint(1, mix.max_txs)
        raws = [r.randbytes(r.randint(100, 300)) for _ in range(n_txs)]
        receipts = []
        bloom = BloomFilter()
        for i in range(n_txs):
            logs = [mix.log() for _ in range(r.randint(0, 3))]
            if i == 0 and height % mix.rare_every == 1:
                logs.append(mix.log(mix.rare))
            for address, topics, _ in logs:
                bloom.add(address)
                for t in topics:
                    bloom.add(t)
            receipts.append(Receipt(b"\x01", 21_000 * (i + 1), [
                Log(address, tuple(int.from_bytes(t, "big") for t in topics), data)
                for address, topics, data in logs
            ]))
        events = []
        if height % mix.event_every == 0:
            events = [BlockEvent(EVENT_MODULE, topics, data)
                      for _, topics, data in (mix.log() for _ in range(r.randint(1, 3)))]
        header = parent.copy(height=height, parent_hash=parent.hash,
                             timestamp_ms=parent.timestamp_ms + 1000,
                             logs_bloom=int(bloom).to_bytes(256, "big"), gas_used=21_000 * n_txs)
        block = Block(header, raws, [], EMPTY_COMMIT, [])
        result = BlockResult(
            state_root=parent.state_root, receipts=receipts, gas_used=header.gas_used,
            logs_bloom=header.logs_bloom, receipts_root=header.receipts_root,
            transactions_root=header.transactions_root, attestations_root=header.attestations_root,
            next_validators=[(VALIDATOR, 10)], epoch=0, epoch_boundary=False, block_events=events,
        )
        extras = [TxExtra(keccak(raw), b"\x11" * 20, b"", 21_000, 10**9) for raw in raws]
        store.commit_block(block, result, EMPTY_COMMIT, OverlayDB(store.state_db), valset, extras, [])


def rpc_context(store: ChainStore, config: Config | None = None):
    """The ``RPCContext`` ``eth_getLogs`` needs: the store and the RPC limits."""
    node = SimpleNamespace(store=store, config=config or Config())
    return RPCContext(node)  # type: ignore[arg-type]


def full_scan(ctx, flt) -> list | tuple:
    """Today's answer without an index: every block of the range, in order (the loop
    ``eth_getLogs`` ran before the index), or ``("error", code, message)``."""
    limit = ctx.node.config.rpc.max_log_results
    if flt.block_hash is not None:
        logs = logs_before_index(ctx, ctx.store.block_by_hash(flt.block_hash), flt)
        if len(logs) > limit:
            return ("error", LIMIT_EXCEEDED, f"limit exceeded: query returned more than {limit} results")
        return logs
    start, end = resolve_height(ctx, flt.from_block), resolve_height(ctx, flt.to_block)
    if start is None:
        return []
    end = ctx.store.head_height if end is None else end
    if start > end:
        return ("error", INVALID_PARAMS,
                f"invalid block range: fromBlock {hex(start)} is after toBlock {hex(end)}")
    out: list = []
    for height in range(start, end + 1):
        out.extend(logs_before_index(ctx, ctx.store.block_by_height(height), flt))
        if len(out) > limit:
            return ("error", LIMIT_EXCEEDED, f"limit exceeded: query returned more than {limit} results; "
                    "narrow the block range or the filter")
    return out


def logs_before_index(ctx, block, flt) -> list:
    """A block's matching logs as ``eth_getLogs`` computed them before the index: the
    block decoded, its receipts decoded by py-evm (kept verbatim as the reference)."""
    out: list = []
    receipts = None
    if block.transactions and bloom_may_match(block.header.logs_bloom, flt):
        tx_hashes = [e.tx_hash for e in ctx.store.tx_extras(block.hash)]
        receipts = ctx.store.receipts(block.hash)
        out = block_logs(block.header, receipts, tx_hashes, flt.matches)
    events = ctx.store.block_events(block.hash)
    if events:
        if receipts is None:
            receipts = ctx.store.receipts(block.hash) if block.transactions else []
        first = sum(len(r.logs) for r in receipts)
        out.extend(block_event_logs(block, events, first, flt))
    return out
