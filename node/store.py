"""Chain store: blocks, commits, receipts, indexes, validator sets and the head, on one
LevelDB, with the rule of docs/storage.md: everything a block changes (trie nodes,
block, receipts, indexes, head pointer) lands in one synced write batch, so a crash at
any instant leaves either the old head or the new one.

Key layout (one-byte prefixes):
  t<key>            state trie nodes and code (see node.db.StateDB)
  s<keccak(addr)>   flat account snapshot of the head state: account RLP (vm.flat)
  S                 state root the s-entries hold (absent while they are rebuilt)
  o<keccak(addr)><keccak(slot)>  flat storage snapshot of the head state: the slot's RLP
  O                 state root the o-entries hold (the snapshot is used when O == S)
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
  P                 lowest height whose state is kept whole (node.prune); absent: 0
  X...              the explorer's indexes (node.explorer_index)
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import rlp
from eth.abc import ReceiptAPI
from eth.constants import BLANK_ROOT_HASH
from eth.vm.forks.cancun.receipts import CancunReceiptBuilder
from rlp.sedes import Binary, CountableList, big_endian_int, binary

from consensus.types import Commit, Validator, ValidatorSet
from genesis.builder import build_genesis
from genesis.spec import GenesisSpec
from node import explorer_index
from node.block import EMPTY_COMMIT, Block
from node.db import FLAT_ACCOUNT, FLAT_ROOT, FLAT_SLOT, FLAT_SLOT_ROOT, TRIE, Database, StateDB
from node.logindex import LogIndex, put_block_logs
from vm.block import Header, rlp_uint
from vm.db import OverlayDB
from vm.events import (
    BlockEvent,
    compute_block_events_tx_hash,
    decode_block_events,
    encode_block_events,
)
from vm.execute import BlockResult, encode_receipt
from vm.flat import iter_trie_items
from vm.state import decode_account

PRIORITY_OFFSET = 2**127
PRUNED_FLOOR = b"P"
log = logging.getLogger("motus.store")


class StoreError(Exception):
    code = "store_error"


class CommitInProgress(StoreError):
    """A block is being written (:meth:`ChainStore.stage_commit`, then
    :meth:`StagedCommit.write`): nothing else may commit until it is the head. Local
    and passing: never a peer's fault (block sync waits for it)."""

    code = "commit_in_progress"


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
    def __init__(self, database: Database, *, rebuild_flat: bool = True) -> None:
        """``rebuild_flat``: rebuild the flat account snapshot now if it is not the
        head's (an upgraded node); ``motus db check`` opens without, to report it."""
        self.database = database
        self.db = database.db
        self.state_db = StateDB(database)
        self._head: Header | None = None
        self._genesis_hash: bytes | None = self.db.get(b"G")
        # node.prune: block commits and the pruner's delete batches take turns under this
        # lock, and the pruner hears of every trie key a commit writes (docs/storage.md,
        # "Pruning"): a node re-created by a block while a sweep runs is never deleted.
        self.commit_lock = threading.Lock()
        self.trie_listener: Callable[[dict[bytes, bytes]], None] | None = None
        # the decided block whose batch is filled and being written (stage_commit to
        # finish_commit, or the write's failure): the head is its parent meanwhile
        self.staged: StagedCommit | None = None
        if rebuild_flat and self.initialised and self.state_db.flat.root != self.head.state_root:
            self.rebuild_flat_state()
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

    def init_genesis(self, spec: GenesisSpec, build=build_genesis, *,
                     flat_written: bool = False) -> Header:
        """Write genesis state, block and validator set in one batch (idempotent for the
        same spec). ``build(db, spec) -> Header`` makes the state (benchmarks add to it).
        ``flat_written``: ``build`` wrote the flat snapshot entries of the state it returns
        into the database itself (a benchmark's bulk build of a million vehicles), so the
        state trie is not walked again to write them."""
        overlay = OverlayDB(self.state_db)
        header = build(overlay, spec)
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
            for hashed, account in (() if flat_written else
                                    iter_trie_items(overlay.__getitem__, header.state_root)):
                wb.put(FLAT_ACCOUNT + hashed, account)
                for slot, value in _storage_items(overlay.__getitem__, account):
                    wb.put(FLAT_SLOT + hashed + slot, value)
            wb.put(FLAT_ROOT, header.state_root)
            wb.put(FLAT_SLOT_ROOT, header.state_root)
            wb.put(b"b" + header.hash, block.encode())
            wb.put(b"h" + _h(0), header.hash)
            wb.put(b"v" + _h(1), encode_validator_set(valset))
            wb.put(b"G", header.hash)
            wb.put(b"H", _h(0))
            self.log_index.mark_start(wb, 0)
        self._genesis_hash = header.hash
        self._head = header
        self.state_db.flat.root = header.state_root
        return header

    def rebuild_flat_state(self, batch_entries: int = 20_000) -> int:
        """Rebuild the flat account snapshot from the head's state trie (an upgraded
        node, or a snapshot a commit could not update); returns the number of accounts.
        The root marker goes first and comes back last, each step synced, so a crash
        midway leaves no marker and the next start rebuilds again."""
        started = time.monotonic()
        log.info("building the flat account snapshot of the head state (one pass over the state trie)")
        flat = self.state_db.flat
        flat.root = None
        self.db.delete(FLAT_ROOT, sync=True)
        self.db.delete(FLAT_SLOT_ROOT, sync=True)
        wb = self.db.write_batch()
        n = 0
        for prefix in (FLAT_ACCOUNT, FLAT_SLOT):
            for key in self.db.iterator(prefix=prefix, include_value=False):
                wb.delete(key)
                n += 1
                if n % batch_entries == 0:
                    wb.write()
                    wb = self.db.write_batch()
        wb.write()
        root = self.head.state_root
        count = slots = 0
        wb = self.db.write_batch()
        get = self.state_db.__getitem__
        for hashed, account in iter_trie_items(get, root):
            wb.put(FLAT_ACCOUNT + hashed, account)
            count += 1
            for slot, value in _storage_items(get, account):
                wb.put(FLAT_SLOT + hashed + slot, value)
                slots += 1
                if slots % batch_entries == 0:
                    wb.write()
                    wb = self.db.write_batch()
            if count % batch_entries == 0:
                wb.write()
                wb = self.db.write_batch()
        wb.write()
        self.db.put(FLAT_SLOT_ROOT, root, sync=True)
        self.db.put(FLAT_ROOT, root, sync=True)
        flat.root = root
        log.info("flat state snapshot built: %d accounts, %d storage slots in %.1f s",
                 count, slots, time.monotonic() - started)
        return count

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
        """The validator set of ``height``: stored with the block before it, or, while that
        block is being written (``staged``), the set it decided."""
        raw = self.db.get(b"v" + _h(height))
        if raw is None:
            staged = self.staged
            if staged is not None and height == staged.header.height + 1:
                return staged.next_validators
            return None
        return decode_validator_set(raw)

    @property
    def decided_height(self) -> int:
        """The newest height this node has decided: the head's, or the staged block's while
        it is written. Gossip checks judge heights against it (a vote for the next height
        that arrives during the write is the current one's, not one too far ahead)."""
        staged = self.staged
        return self.head_height if staged is None else staged.header.height

    @property
    def oldest_state_height(self) -> int:
        """The lowest height whose state is whole: below it a pruning node may have deleted
        trie nodes (node.prune); 0 on an archive node that never pruned."""
        raw = self.db.get(PRUNED_FLOOR)
        return 0 if raw is None else int.from_bytes(raw, "big")

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
        staged = self.stage_commit(block, result, commit, overlay, next_validators, extras,
                                   attestation_ids)
        staged.write()
        self.finish_commit(staged)

    def stage_commit(self, block: Block, result: BlockResult, commit: Commit, overlay: OverlayDB,
                     next_validators: ValidatorSet, extras: Iterable[TxExtra],
                     attestation_ids: Iterable[bytes]) -> StagedCommit:
        """:meth:`commit_block` in three steps: this one fills the block's write batch
        (nothing is written yet), :meth:`StagedCommit.write` writes it (synced; it takes
        no Python object another thread uses but the pruner's, under ``commit_lock``, so
        it may run in a worker thread while the event loop goes on), :meth:`finish_commit`
        makes the block the head. Until then the head is the parent, and nothing else may
        commit."""
        height = block.header.height
        if self.staged is not None:
            raise CommitInProgress(f"height {self.staged.header.height} is being committed")
        if height != self.head_height + 1:
            raise StoreError(f"commit of height {height} on head {self.head_height}")
        if block.header.parent_hash != self.head.hash:
            raise StoreError("block does not extend the head")
        puts, _ = overlay.pending()
        bh = block.hash
        # the flat snapshot moves with the head in the same batch (docs/storage.md);
        # without the block's diff from the snapshot's root it is dropped, and rebuilt
        # at the next start, rather than left holding another state
        flat = self.state_db.flat
        parent_root, flat_diff = flat.root, overlay.flat_diffs.get(block.header.state_root)
        if flat_diff is not None and (parent_root is None or flat_diff.parent_root != parent_root):
            flat_diff = None
        flat.root = None  # readers fall back to the trie until the batch is on disk
        # the block's one batch (Database.batch: written on a clean exit, dropped on an
        # exception), entered here and left by StagedCommit.write
        batch = self.database.batch()
        wb = batch.__enter__()
        try:
            for k, v in puts.items():
                wb.put(TRIE + k, v)
            if flat_diff is not None:
                for hashed, account in flat_diff.accounts.items():
                    if account is None:
                        wb.delete(FLAT_ACCOUNT + hashed)
                    else:
                        wb.put(FLAT_ACCOUNT + hashed, account)
                for hashed, storage_root in flat_diff.wiped.items():
                    # a wiped storage (rare: an account deleted, a contract created
                    # over one): its entries replaced by the final trie's, which holds
                    # only what was written since the wipe
                    for key in self.db.iterator(prefix=FLAT_SLOT + hashed, include_value=False):
                        wb.delete(key)
                    if storage_root != BLANK_ROOT_HASH:
                        for slot, value in iter_trie_items(overlay.__getitem__, storage_root):
                            wb.put(FLAT_SLOT + hashed + slot, value)
                for hashed, slots in flat_diff.slots.items():
                    if hashed in flat_diff.wiped:
                        continue
                    prefix = FLAT_SLOT + hashed
                    for slot, value in slots.items():
                        if value:
                            wb.put(prefix + slot, value)
                        else:
                            wb.delete(prefix + slot)
                wb.put(FLAT_ROOT, block.header.state_root)
                wb.put(FLAT_SLOT_ROOT, block.header.state_root)
            else:
                wb.delete(FLAT_ROOT)
                wb.delete(FLAT_SLOT_ROOT)
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
            put = wb.put
            for att_id, location in zip(attestation_ids, attestation_locations(height), strict=False):
                put(b"a" + att_id, location)
            # In the block's own batch: a crash between two batches would let the node
            # accept, gossip or propose evidence its chain has already punished.
            for ev in block.evidence:
                wb.put(b"E" + ev.hash(), _h(height))
            wb.put(b"v" + _h(height + 1), encode_validator_set(next_validators))
            explorer_index.index_block(self.db, wb, height, result.epoch, extras,
                                       result.transactions, result.attestations,
                                       result.attestation_records)
            wb.put(b"H", _h(height))
        except BaseException as exc:
            # nothing written (the snapshot stays dropped, as a failed write leaves it)
            batch.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self.staged = StagedCommit(self, block.header, batch, puts,
                                   block.header.state_root if flat_diff is not None else None,
                                   next_validators)
        return self.staged

    def finish_commit(self, staged: StagedCommit) -> None:
        """The written block of ``staged`` becomes the head (:meth:`stage_commit`)."""
        if not staged.written:
            raise StoreError("finish_commit before the block's batch was written")
        self.staged = None
        self._head = staged.header
        if staged.flat_root is not None:
            self.state_db.flat.root = staged.flat_root

    def evidence_height(self, evidence_hash: bytes) -> int | None:
        """Height of the block that committed this evidence, or None if none has."""
        raw = self.database.get(b"E" + evidence_hash)
        return None if raw is None else int.from_bytes(raw, "big")

    def put_commit(self, height: int, commit: Commit) -> None:
        """Replace the stored commit of a block (e.g. with a fuller one); never changes the block."""
        self.database.put(b"c" + _h(height), commit.encode())


class StagedCommit:
    """A block's filled write batch, not yet written (:meth:`ChainStore.stage_commit`)."""

    def __init__(self, store: ChainStore, header: Header, batch: Any, puts: dict[bytes, bytes],
                 flat_root: bytes | None, next_validators: ValidatorSet) -> None:
        self.store = store
        self.header = header
        self.batch = batch
        self.puts = puts
        self.flat_root = flat_root  # the snapshot's root once written (None: dropped)
        self.next_validators = next_validators  # the set of the height after it
        self.written = False

    def write(self) -> None:
        """Write the batch, synced, under the store's ``commit_lock``, the pruner told of
        its trie keys first (node.prune: a key it hears of is never deleted, so telling
        it of a write that then fails costs nothing); safe in a worker thread (LevelDB's
        write releases the GIL). On a failure nothing is written and the store may
        commit again (the block is staged anew)."""
        store = self.store
        with store.commit_lock:
            try:
                if store.trie_listener is not None:
                    store.trie_listener(self.puts)
            except BaseException as exc:
                self.batch.__exit__(type(exc), exc, exc.__traceback__)  # (dropped)
                store.staged = None
                raise
            try:
                self.batch.__exit__(None, None, None)  # (the clean exit: written, synced)
            except BaseException:
                store.staged = None
                raise
            self.written = True


def attestation_locations(height: int) -> Iterator[bytes]:
    """``rlp.encode([height, i])`` for i = 0, 1, ...: the value of each attestation's
    location entry (``a<id>``), without the generic encoder (~3 us an entry, ten
    thousand a block at one validator's rate; tests compare the two)."""
    prefix = rlp_uint(height)
    for i in itertools.count():
        payload = prefix + rlp_uint(i)
        yield bytes((0xC0 + len(payload),)) + payload  # (at most 18 bytes: a short list)


def _storage_items(get, account: bytes):
    """Every (hashed slot, RLP) of the account's storage trie, in key order."""
    storage_root = decode_account(account).storage_root
    if storage_root == BLANK_ROOT_HASH:
        return iter(())
    return iter_trie_items(get, storage_root)


def encode_validator_set(vs: ValidatorSet) -> bytes:
    return rlp.encode([[v.address, v.power, vs.priorities.get(v.address, 0) + PRIORITY_OFFSET] for v in vs.validators])


def decode_validator_set(raw: bytes) -> ValidatorSet:
    rows = rlp.decode(raw, sedes=_valset_sedes)
    return ValidatorSet([Validator(a, p) for a, p, _ in rows], {a: q - PRIORITY_OFFSET for a, _, q in rows})
