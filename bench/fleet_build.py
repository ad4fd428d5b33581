"""A large genesis state written fast: a million vehicles in minutes rather than hours.

:meth:`bench.bench_costs.Fleet.builder` makes its fleet through py-evm's state: every
slot a vehicle's identity and telemetry calls touch goes through py-evm's journals and
the storage trie, batch after batch, and the node then walks the whole trie again for
its flat snapshot: 255 s at 100,000 vehicles on the idle machine, 40 min to 2 h at
1,000,000. :func:`build_fast` makes the same state (same state root, same trie nodes,
same flat snapshot entries: tests/bench/test_fleet_build.py) another way:

1. The same module calls (the fleet's own ``_register`` and ``_history``: identity's
   ``mintVehicle`` ... ``pairDevice``, telemetry's ``TelemetryView.apply``/``commit``)
   run against a :class:`RecordingState`, a stand-in for py-evm's state that keeps
   storage and balances in dicts. No slot layout is written here: every slot is the
   modules' own.
2. After each batch of vehicles, the slots only one vehicle touched go to bucket files on
   disk, by the first nibble of their trie key (keccak of the slot), and leave memory;
   slots several vehicles touched (counters, list lengths, parameters) stay in memory
   until the end. A slot that a later batch writes again is caught (two records of one
   key) and the build fails rather than writing a wrong state.
3. Each storage trie, then the account trie, is written once, a bucket at a time in key
   order, by :func:`vm.trie.update_trie` (the node's one trie writer), with the flat
   snapshot entries beside it, in large LevelDB write batches. Keys of one first nibble
   lie under one child of the root, so each bucket's nodes are final when written; only
   the root changes from bucket to bucket and it is written once, at the end: the store
   holds no garbage and needs no sweep.

``ChainStore.init_genesis(spec, build=..., flat_written=True)`` then writes the genesis
block around it without walking the trie again.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3
from eth.db.atomic import AtomicDB
from eth.rlp.accounts import Account

from genesis.builder import build_genesis
from node.db import FLAT_ACCOUNT, FLAT_SLOT, TRIE
from vm.block import rlp_uint
from vm.crypto import keccak256
from vm.flat import iter_trie_items
from vm.state import decode_account, encode_account
from vm.trie import TrieNodes, update_trie

SHARED = -1  # the scope of a slot touched by more than one vehicle
BUCKETS = 16  # by the first nibble of the trie key: one child of the root each
WRITE_BATCH = 100_000  # LevelDB puts per write batch


def _decode_uint(raw: bytes) -> int:
    """A storage value's RLP (an integer of at most 32 bytes) as an int."""
    return raw[0] if raw[0] < 0x80 else int.from_bytes(raw[1:], "big")


class RecordingState:
    """What the modules' functions read and write of py-evm's state (``get_storage``,
    ``set_storage``, ``set_balance``), over dicts: the genesis state's values underneath
    (``base``: hashed address -> hashed slot -> value), this build's on top.

    ``scope`` names the vehicle being built; :meth:`flush` hands over (and forgets) what
    only one vehicle touched since the last flush, and keeps what several touched."""

    def __init__(self, base: dict[bytes, dict[bytes, int]]) -> None:
        self._base = base
        self._hashed: dict[bytes, bytes] = {}
        self._values: dict[bytes, dict[int, int]] = {}  # address -> slot -> value
        self._scopes: dict[bytes, dict[int, int]] = {}  # address -> slot -> scope or SHARED
        self._dirty: dict[bytes, set[int]] = {}  # address -> slots written, not flushed
        self.balances: dict[bytes, int] = {}  # address -> balance set, not flushed
        self.scope = 0
        # the account of the previous call (modules call with the same address object)
        self._last_address: object = None
        self._last: tuple[dict[int, int], dict[int, int], set[int]] = ({}, {}, set())

    def _account(self, address: bytes) -> tuple[dict[int, int], dict[int, int], set[int]]:
        values = self._values.get(address)
        if values is None:
            key = bytes(address)
            values = self._values[key] = {}
            self._scopes[key] = {}
            self._dirty[key] = set()
            self._hashed[key] = keccak256(key)
        self._last_address = address
        self._last = (values, self._scopes[address], self._dirty[address])
        return self._last

    def _touch(self, address: bytes, slot: int) -> tuple[dict, set]:
        """The account's values and dirty set, with ``slot`` recorded as touched by the
        current scope (or SHARED once a second scope touches it)."""
        if address is self._last_address:
            values, scopes, dirty = self._last
        else:
            values, scopes, dirty = self._account(address)
        scope = scopes.get(slot)
        if scope is None:
            scopes[slot] = self.scope
        elif scope != self.scope:
            scopes[slot] = SHARED
        return values, dirty

    def get_storage(self, address: bytes, slot: int, from_journal: bool = True) -> int:
        values, _ = self._touch(address, slot)
        value = values.get(slot)
        if value is None:
            base = self._base.get(self._hashed[address])
            value = values[slot] = 0 if base is None else base.get(
                keccak256(slot.to_bytes(32, "big")), 0)
        return value

    def set_storage(self, address: bytes, slot: int, value: int) -> None:
        values, dirty = self._touch(address, slot)
        values[slot] = value
        dirty.add(slot)

    def set_balance(self, address: bytes, balance: int) -> None:
        self.balances[bytes(address)] = balance

    def flush(self, final: bool = False) -> Iterator[tuple[bytes, int, int]]:
        """(address, slot, value) of every slot written since the last flush that only
        one vehicle touched (with ``final``: every slot written), forgetting those slots;
        slots several vehicles touched stay (and stay to be written)."""
        for address, scopes in self._scopes.items():
            values, dirty = self._values[address], self._dirty[address]
            kept_dirty = set()
            for slot in dirty:
                if final or scopes[slot] != SHARED:
                    yield address, slot, values[slot]
                else:
                    kept_dirty.add(slot)
            self._dirty[address] = kept_dirty
            shared = {slot for slot, scope in scopes.items() if scope == SHARED}
            self._scopes[address] = dict.fromkeys(shared, SHARED)
            self._values[address] = {slot: values[slot] for slot in shared}
        self._last_address = None


class _Buckets:
    """Records (32-byte key, value) in BUCKETS files by the key's first nibble."""

    def __init__(self, directory: Path, name: str) -> None:
        self.paths = [directory / f"{name}.{i:x}" for i in range(BUCKETS)]
        self._buffers = [bytearray() for _ in range(BUCKETS)]
        self.records = 0

    def add(self, key: bytes, value: bytes) -> None:
        buf = self._buffers[key[0] >> 4]
        buf += key
        buf.append(len(value))
        buf += value
        self.records += 1

    def spill(self) -> None:
        for path, buf in zip(self.paths, self._buffers, strict=True):
            if buf:
                with open(path, "ab") as f:
                    f.write(buf)
                buf.clear()

    def read(self, bucket: int) -> Iterator[tuple[bytes, bytes]]:
        path = self.paths[bucket]
        if not path.exists():
            return
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            n = data[pos + 32]
            yield data[pos:pos + 32], data[pos + 33:pos + 33 + n]
            pos += 33 + n


@dataclass
class TrieStats:
    """What the build wrote of one trie: nodes, bytes (33-byte key + node, as stored),
    flat entries and their bytes (key + value, as stored)."""

    nodes: int = 0
    node_bytes: int = 0
    entries: int = 0
    entry_bytes: int = 0


@dataclass
class BuildReport:
    vehicles: int = 0
    record_s: float = 0.0  # the module calls (CPU)
    write_s: float = 0.0  # tries and flat entries (CPU)
    wall_s: float = 0.0
    max_rss: int = 0  # bytes, peak resident set of the process so far
    tries: dict[str, TrieStats] = field(default_factory=dict)  # "accounts", or a hex address


class _Writer:
    """LevelDB puts in write batches of WRITE_BATCH."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.batch = db.write_batch()
        self.n = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.batch.put(key, value)
        self.n += 1
        if self.n % WRITE_BATCH == 0:
            self.write()

    def put_all(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        put, n = self.batch.put, 0
        for key, value in items:
            put(key, value)
            n += 1
            if n == WRITE_BATCH:
                self.write()
                put, n = self.batch.put, 0
        self.n += n

    def write(self) -> None:
        self.batch.write()
        self.batch = self.db.write_batch()


class _NodeReader:
    """Trie nodes for update_trie: the held-back root, else LevelDB."""

    def __init__(self, db: Any) -> None:
        self.get = db.get
        self.held: dict[bytes, bytes] = {}

    def __getitem__(self, key: bytes) -> bytes:
        value = self.held.get(key)
        if value is None:
            value = self.get(TRIE + key)
            if value is None:
                raise KeyError(key)
        return value


def _write_trie(out: _Writer, reader: _NodeReader, base: dict[bytes, bytes],
                records: Callable[[int], Iterator[tuple[bytes, bytes]]], flat_prefix: bytes,
                stats: TrieStats) -> bytes:
    """Write the trie holding ``base`` (key -> value) overridden by ``records(bucket)``
    (b"" deletes), bucket by bucket, and its flat entries (``flat_prefix`` + key); returns
    its root. Fails on two records of one key (a slot written in two batches)."""
    root = BLANK_ROOT_HASH
    reader.held.clear()
    for bucket in range(BUCKETS):
        recorded = sorted(records(bucket))
        for i in range(1, len(recorded)):
            if recorded[i][0] == recorded[i - 1][0]:
                raise RuntimeError(f"fleet build: key {recorded[i][0].hex()} recorded twice (a "
                                   "slot one vehicle touched was written again in a later batch)")
        olds = {k: v for k, v in base.items() if k[0] >> 4 == bucket}
        if olds:
            olds.update(recorded)
            recorded = sorted(olds.items())
        changes = [item for item in recorded if item[1]]
        if not changes:
            continue
        root, writes = update_trie(TrieNodes(reader, max_nodes=1_000), root, changes,
                                   keep=False)
        reader.held = {root: writes.pop(root)}  # the root changes with every bucket
        out.put_all((TRIE + digest, node) for digest, node in writes.items())
        stats.nodes += len(writes)
        stats.node_bytes += 33 * len(writes) + sum(map(len, writes.values()))
        out.put_all((flat_prefix + key, value) for key, value in changes)
        stats.entries += len(changes)
        stats.entry_bytes += (len(flat_prefix) + 32) * len(changes) + sum(len(v) for _, v in changes)
        out.write()  # the next bucket may read these nodes
    for digest, node in reader.held.items():
        out.put(TRIE + digest, node)
        stats.nodes += 1
        stats.node_bytes += 33 + len(node)
    reader.held.clear()
    return root


def build_fast(db: Any, spec: Any, vehicles: int, per_vehicle: Callable[[RecordingState, int], None],
               batch: int = 20_000, report: BuildReport | None = None,
               scratch_dir: str | None = None) -> Any:
    """Write into LevelDB ``db`` (plyvel, the node's key layout) the state of ``spec``'s
    genesis plus ``vehicles`` vehicles, ``per_vehicle(state, vid)`` making vehicle ``vid``
    (1..vehicles) with the modules' own functions; the flat snapshot entries of every
    account and slot too. Returns the genesis header with the new state root (for
    ``ChainStore.init_genesis(..., flat_written=True)``)."""
    if batch < 2:
        raise ValueError("batch must hold at least two vehicles (shared slots are found by "
                         "two vehicles touching them)")
    report = report if report is not None else BuildReport()
    report.vehicles = vehicles
    t0, c0 = time.perf_counter(), time.process_time()
    scratch = AtomicDB()
    header = build_genesis(scratch, spec)
    accounts = dict(iter_trie_items(scratch.__getitem__, header.state_root))
    base_storage: dict[bytes, dict[bytes, bytes]] = {}
    for hashed, raw in accounts.items():
        storage_root = decode_account(raw).storage_root
        if storage_root != BLANK_ROOT_HASH:
            base_storage[hashed] = dict(iter_trie_items(scratch.__getitem__, storage_root))
    state = RecordingState({h: {k: _decode_uint(v) for k, v in s.items()}
                            for h, s in base_storage.items()})
    tmp = Path(tempfile.mkdtemp(prefix="motus-fleet-build-", dir=scratch_dir))
    try:
        storage_buckets: dict[bytes, _Buckets] = {}
        account_buckets = _Buckets(tmp, "accounts")

        def flush(final: bool) -> None:
            for address, slot, value in state.flush(final):
                hashed = state._hashed[address]
                buckets = storage_buckets.get(hashed)
                if buckets is None:
                    buckets = storage_buckets[hashed] = _Buckets(tmp, hashed.hex())
                buckets.add(keccak256(slot.to_bytes(32, "big")), rlp_uint(value) if value else b"")
            for address, balance in state.balances.items():
                hashed = keccak256(address)
                old = accounts.get(hashed)
                a = decode_account(old) if old else Account(0, 0, BLANK_ROOT_HASH, EMPTY_SHA3)
                account_buckets.add(hashed, encode_account(
                    Account(a.nonce, balance, a.storage_root, a.code_hash)))
            state.balances.clear()
            for buckets in (*storage_buckets.values(), account_buckets):
                buckets.spill()

        for first in range(1, vehicles + 1, batch):
            for vid in range(first, min(vehicles, first + batch - 1) + 1):
                state.scope = vid
                per_vehicle(state, vid)
            flush(False)
        flush(True)
        report.record_s = time.process_time() - c0
        report.max_rss = max(report.max_rss, _max_rss())

        c1 = time.process_time()
        out = _Writer(db)
        reader = _NodeReader(db)
        changed_roots: dict[bytes, bytes] = {}
        for hashed, buckets in storage_buckets.items():
            stats = report.tries[hashed.hex()] = TrieStats()
            changed_roots[hashed] = _write_trie(out, reader, base_storage.get(hashed, {}),
                                                buckets.read, FLAT_SLOT + hashed, stats)
        base_accounts = dict(accounts)
        for hashed, storage_root in changed_roots.items():
            old = accounts.get(hashed)
            a = decode_account(old) if old else Account(0, 0, BLANK_ROOT_HASH, EMPTY_SHA3)
            base_accounts[hashed] = encode_account(Account(a.nonce, a.balance, storage_root,
                                                           a.code_hash))
        balance_changed = set()

        def account_records(bucket: int) -> Iterator[tuple[bytes, bytes]]:
            for hashed, raw in account_buckets.read(bucket):
                if hashed in changed_roots:
                    raise RuntimeError("fleet build: an account with new storage had its "
                                       "balance set too (not supported)")
                balance_changed.add(hashed)
                yield hashed, raw

        stats = report.tries["accounts"] = TrieStats()
        state_root = _write_trie(out, reader, base_accounts, account_records, FLAT_ACCOUNT, stats)
        # the genesis accounts' storage left as it was, and their code
        for hashed, raw in accounts.items():
            a = decode_account(raw)
            if hashed in base_storage and hashed not in changed_roots:
                stats = report.tries[hashed.hex()] = TrieStats()
                for digest, node in _trie_nodes(scratch, a.storage_root):
                    out.put(TRIE + digest, node)
                    stats.nodes += 1
                    stats.node_bytes += 33 + len(node)
                for key, value in base_storage[hashed].items():
                    out.put(FLAT_SLOT + hashed + key, value)
                    stats.entries += 1
                    stats.entry_bytes += 65 + len(value)
            if a.code_hash != EMPTY_SHA3:
                out.put(TRIE + a.code_hash, scratch[a.code_hash])
        out.write()
        report.write_s = time.process_time() - c1
        report.wall_s = time.perf_counter() - t0
        report.max_rss = max(report.max_rss, _max_rss())
        return header.copy(state_root=state_root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _trie_nodes(db: Any, root: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every stored node (hash, bytes) of the trie at ``root`` in ``db``."""
    from vm.trie import NODE_BRANCH, NODE_EXTENSION

    nodes = TrieNodes(db, max_nodes=2)
    stack = [root]
    while stack:
        ref = stack.pop()
        if type(ref) is bytes:
            yield ref, db[ref]
        node = nodes.node(ref)
        if node is None:
            continue
        if node[0] == NODE_BRANCH:
            stack.extend(c for c in node[1] if c is not None)
        elif node[0] == NODE_EXTENSION:
            stack.append(node[2])


def _max_rss() -> int:
    """Peak resident set of this process, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def format_report(r: BuildReport, names: dict[str, str] | None = None) -> list[str]:
    """Lines for a benchmark's output: time, memory, and what each trie took."""
    names = names or {}
    load = os.getloadavg()[0]
    lines = [f"fast build of {r.vehicles:,} vehicles: {r.wall_s:.1f} s wall (module calls "
             f"{r.record_s:.1f} s CPU, tries and flat entries {r.write_s:.1f} s CPU), peak RSS "
             f"{r.max_rss / 2**20:,.0f} MiB, load average {load:.1f}"]
    for key, s in r.tries.items():
        lines.append(f"  {names.get(key, key):12s} {s.nodes:>11,} nodes {s.node_bytes / 1e6:9.1f} MB, "
                     f"{s.entries:>11,} flat entries {s.entry_bytes / 1e6:9.1f} MB")
    return lines
