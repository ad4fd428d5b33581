"""Chain store: blocks, commits, receipts, indexes, validator sets and the head, on one
LevelDB, with the rule of docs/storage.md: everything a block changes (trie nodes,
block, receipts, indexes, head pointer) lands in one synced write batch, so a crash at
any instant leaves either the old head or the new one.

Key layout (one-byte prefixes):
  t<key>            state trie nodes and code (see node.db.StateDB)
  h<height:8>       block hash at height
  b<hash>           block RLP
  c<height:8>       commit that finalised the block at height ("seen commit")
  r<hash>           receipts of the block: RLP list of encoded receipts
  e<hash>           per-transaction extras: [tx_hash, sender, contract, gas_used, effective_gas_price]
  l<hash>           block events (vm.events encoding), only for blocks that have some
  x<tx_hash>        [height, index]
  a<attestation id> [height, index]
  E<evidence hash>  height of the block that committed the evidence
  L...              the log index (node.logindex: La address, Lt topic, Ln any log, LF coverage)
  v<height:8>       validator set (with proposer priorities) for height
  H                 head height
  G                 genesis hash
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import rlp
from eth.abc import ReceiptAPI
from eth.vm.forks.cancun.receipts import CancunReceiptBuilder
from rlp.sedes import Binary, CountableList, big_endian_int, binary

from consensus.types import Commit, Validator, ValidatorSet
from genesis.builder import build_genesis
from genesis.spec import GenesisSpec
from node.block import EMPTY_COMMIT, Block
from node.db import TRIE, Database, StateDB
from node.logindex import LogIndex, put_block_logs
from vm.block import Header
from vm.db import OverlayDB
from vm.events import (
    BlockEvent,
    compute_block_events_tx_hash,
    decode_block_events,
    encode_block_events,
)
from vm.execute import BlockResult, encode_receipt

PRIORITY_OFFSET = 2**127


class StoreError(Exception):
    code = "store_error"


@dataclass(frozen=True)
class TxExtra:
    tx_hash: bytes
    sender: bytes
    contract_address: bytes  # empty unless the transaction created a contract
    gas_used: int
    effective_gas_price: int


_extra_sedes = CountableList(
    rlp.sedes.List([Binary.fixed_length(32), Binary.fixed_length(20), binary, big_endian_int, big_endian_int])
)
_valset_sedes = CountableList(rlp.sedes.List([Binary.fixed_length(20), big_endian_int, big_endian_int]))


def _h(height: int) -> bytes:
    return height.to_bytes(8, "big")


class ChainStore:
    def __init__(self, database: Database) -> None:
        self.database = database
        self.db = database.db
        self.state_db = StateDB(database)
        self._head: Header | None = None
        self._genesis_hash: bytes | None = self.db.get(b"G")
        self.log_index = LogIndex(database)
        if self.initialised and self.log_index.indexed_from() is None:
            # a database from before the log index: index from the next block on, the
            # node builds the older part in the background (node.logindex)
            with database.batch() as wb:
                self.log_index.mark_start(wb, self.head_height + 1)

    # --- initialisation ---------------------------------------------------------

    @property
    def initialised(self) -> bool:
        return self.db.get(b"H") is not None

    def init_genesis(self, spec: GenesisSpec) -> Header:
        """Write genesis state, block and validator set in one batch (idempotent for the same spec)."""
        overlay = OverlayDB(self.state_db)
        header = build_genesis(overlay, spec)
        if self.initialised:
            if self.genesis_hash != header.hash:
                raise StoreError("database holds a different chain (genesis hash mismatch)")
            return header
        block = Block(header, [], [], EMPTY_COMMIT, [])
        valset = ValidatorSet([Validator(v.address, v.power) for v in spec.validators])
        puts, _ = overlay.pending()
        with self.database.batch() as wb:
            for k, v in puts.items():
                wb.put(TRIE + k, v)
            wb.put(b"b" + header.hash, block.encode())
            wb.put(b"h" + _h(0), header.hash)
            wb.put(b"v" + _h(1), encode_validator_set(valset))
            wb.put(b"G", header.hash)
            wb.put(b"H", _h(0))
            self.log_index.mark_start(wb, 0)
        self._genesis_hash = header.hash
        self._head = header
        return header

    # --- reads ---------------------------------------------------------------------

    @property
    def genesis_hash(self) -> bytes:
        if self._genesis_hash is None:
            raise StoreError("chain not initialised")
        return self._genesis_hash

    @property
    def head_height(self) -> int:
        raw = self.db.get(b"H")
        if raw is None:
            raise StoreError("chain not initialised")
        return int.from_bytes(raw, "big")

    @property
    def head(self) -> Header:
        if self._head is None:
            block = self.block_by_height(self.head_height)
            if block is None:
                raise StoreError("head block missing")
            self._head = block.header
        return self._head

    def hash_at(self, height: int) -> bytes | None:
        return self.db.get(b"h" + _h(height))

    def block_by_hash(self, block_hash: bytes) -> Block | None:
        raw = self.db.get(b"b" + block_hash)
        return None if raw is None else Block.decode(raw)

    def block_by_height(self, height: int) -> Block | None:
        h = self.hash_at(height)
        return None if h is None else self.block_by_hash(h)

    def raw_block(self, height: int) -> bytes | None:
        h = self.hash_at(height)
        return None if h is None else self.db.get(b"b" + h)

    def header_by_height(self, height: int) -> Header | None:
        block = self.block_by_height(height)
        return None if block is None else block.header

    def commit_at(self, height: int) -> Commit | None:
        raw = self.db.get(b"c" + _h(height))
        return None if raw is None else Commit.decode(raw)

    def receipts(self, block_hash: bytes) -> list[ReceiptAPI]:
        raw = self.db.get(b"r" + block_hash)
        if raw is None:
            return []
        return [CancunReceiptBuilder.decode(r) for r in rlp.decode(raw, sedes=CountableList(binary))]

    def raw_receipts(self, block_hash: bytes) -> bytes | None:
        """The stored receipts of the block undecoded (``node.logindex.receipts_logs``)."""
        return self.db.get(b"r" + block_hash)

    def raw_tx_extras(self, block_hash: bytes) -> bytes | None:
        """The stored per-transaction extras undecoded (``node.logindex.tx_hashes_of_extras``)."""
        return self.db.get(b"e" + block_hash)

    def block_events(self, block_hash: bytes) -> list[BlockEvent]:
        """The events of the block's epoch work (logs without a transaction), in order."""
        raw = self.db.get(b"l" + block_hash)
        return [] if raw is None else decode_block_events(raw)

    def tx_extras(self, block_hash: bytes) -> list[TxExtra]:
        raw = self.db.get(b"e" + block_hash)
        if raw is None:
            return []
        return [TxExtra(*row) for row in rlp.decode(raw, sedes=_extra_sedes)]

    def tx_location(self, tx_hash: bytes) -> tuple[int, int] | None:
        raw = self.db.get(b"x" + tx_hash)
        if raw is None:
            return None
        height, index = rlp.decode(raw, sedes=rlp.sedes.List([big_endian_int, big_endian_int]))
        return height, index

    def attestation_location(self, att_id: bytes) -> tuple[int, int] | None:
        raw = self.db.get(b"a" + att_id)
        if raw is None:
            return None
        height, index = rlp.decode(raw, sedes=rlp.sedes.List([big_endian_int, big_endian_int]))
        return height, index

    def validators_for(self, height: int) -> ValidatorSet | None:
        raw = self.db.get(b"v" + _h(height))
        return None if raw is None else decode_validator_set(raw)

    def recent_hashes(self, height: int, count: int = 256) -> tuple[bytes, ...]:
        """Hashes of blocks ``height-1, height-2, ...`` (newest first) for BLOCKHASH."""
        out = []
        for h in range(height - 1, max(-1, height - 1 - count), -1):
            bh = self.hash_at(h)
            if bh is None:
                break
            out.append(bh)
        return tuple(out)

    # --- the one write path ------------------------------------------------------------

    def commit_block(self, block: Block, result: BlockResult, commit: Commit, overlay: OverlayDB,
                     next_validators: ValidatorSet, extras: Iterable[TxExtra], attestation_ids: Iterable[bytes]) -> None:
        """Persist an executed, committed block atomically and make it the head."""
        height = block.header.height
        if height != self.head_height + 1:
            raise StoreError(f"commit of height {height} on head {self.head_height}")
        if block.header.parent_hash != self.head.hash:
            raise StoreError("block does not extend the head")
        puts, _ = overlay.pending()
        bh = block.hash
        with self.database.batch() as wb:
            for k, v in puts.items():
                wb.put(TRIE + k, v)
            wb.put(b"b" + bh, block.encode())
            wb.put(b"h" + _h(height), bh)
            wb.put(b"c" + _h(height), commit.encode())
            wb.put(b"r" + bh, rlp.encode(result.encoded_receipts or [encode_receipt(r) for r in result.receipts]))
            extras = list(extras)
            if result.block_events:
                wb.put(b"l" + bh, encode_block_events(result.block_events))
                # the block's system transaction (docs/rpc.md, "Block events") is found by
                # hash like a transaction, one past the last one
                wb.put(b"x" + compute_block_events_tx_hash(bh), rlp.encode([height, len(extras)]))
            wb.put(b"e" + bh, rlp.encode(
                [[e.tx_hash, e.sender, e.contract_address, e.gas_used, e.effective_gas_price] for e in extras]))
            for i, e in enumerate(extras):
                wb.put(b"x" + e.tx_hash, rlp.encode([height, i]))
            put_block_logs(wb, height, result.receipts, result.block_events)
            for i, att_id in enumerate(attestation_ids):
                wb.put(b"a" + att_id, rlp.encode([height, i]))
            # In the block's own batch: a crash between two batches would let the node
            # accept, gossip or propose evidence its chain has already punished.
            for ev in block.evidence:
                wb.put(b"E" + ev.hash(), _h(height))
            wb.put(b"v" + _h(height + 1), encode_validator_set(next_validators))
            wb.put(b"H", _h(height))
        self._head = block.header

    def evidence_height(self, evidence_hash: bytes) -> int | None:
        """Height of the block that committed this evidence, or None if none has."""
        raw = self.database.get(b"E" + evidence_hash)
        return None if raw is None else int.from_bytes(raw, "big")

    def put_commit(self, height: int, commit: Commit) -> None:
        """Replace the stored commit of a block (e.g. with a fuller one); never changes the block."""
        self.database.put(b"c" + _h(height), commit.encode())


def encode_validator_set(vs: ValidatorSet) -> bytes:
    return rlp.encode([[v.address, v.power, vs.priorities.get(v.address, 0) + PRIORITY_OFFSET] for v in vs.validators])


def decode_validator_set(raw: bytes) -> ValidatorSet:
    rows = rlp.decode(raw, sedes=_valset_sedes)
    return ValidatorSet([Validator(a, p) for a, p, _ in rows], {a: q - PRIORITY_OFFSET for a, _, q in rows})
