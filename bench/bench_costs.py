"""Sizes and costs per vehicle, per account and per block at a fleet's scale (docs/storage.md,
"Costs per vehicle, account and block"; the headline in docs/benchmarks.md).

For each fleet size N (``--vehicles``, default 1,000, 10,000 and 100,000), on a real LevelDB
store opened by the node's ``ChainStore`` and driven by its ``Application``:

1. **The fleet is built in the genesis state**, in batches of ``--batch`` vehicles, through
   the identity module's own functions (``mintVehicle``, ``mintDevice``, ``claimDevice``,
   ``pairDevice``, called with a stand-in for the EVM call: no gas, no events, and the
   device's EIP-712 signature not produced or checked: its nonce is consumed as the real
   check does) and the telemetry rules' own ``TelemetryView.apply``/``commit`` (twelve
   moving readings per vehicle in epoch 0, as twelve accepted attestations leave them).
   Each vehicle has its own owner account holding 1 MOTUS (its reward account). Sending
   the ~4 N identity transactions and 12 N signed attestations would take hours at
   100,000; what is measured (state, blocks, epochs) does not depend on how the state was
   reached. The calls run over ``bench.fleet_build``'s recording state and each trie is
   written once (``Fleet.fast_builder``: the state root, trie nodes and flat entries of
   the py-evm build, ``Fleet.builder``; ``--slow-build`` uses the latter, whose
   intermediate trie nodes the node's pruner sweeps before anything is measured).
2. Blocks through ``Application.propose``/``commit``: 1,000 transfers (1,000 funded senders
   to random owner accounts), 2,000 attestations (signed by ``min(N, 2000)`` real device
   keys paired in step 1), empty blocks to the end of epoch 0, then the epoch boundary
   block, which opens epoch 0's settlement, and the blocks that settle it
   (``settle_vehicles_per_block`` vehicle-steps each, docs/rewards.md "Settlement"), then,
   with ``reward_history_epochs`` 1, the blocks that clear its records again.
3. Execution time of the transfer and attestation blocks: CPU of ``vm.execute_block`` on
   their parent state, best of ``--repeat`` (the path a validator checks a block on).
   Bytes each block adds to the store, by key prefix; trie bytes it writes (what an
   archive node keeps forever). Live state by trie (account trie, each module's storage),
   walked from the roots. LevelDB directory after a full compaction: archive (every state
   of the run kept) and pruned (the node's sweep, keeping the head's state only).
4. Reopening the store (``ChainStore``), rebuilding the flat snapshot
   (``rebuild_flat_state``), ``motus db check`` (``check_database``).

Ratios against same-run baselines: bytes per vehicle / bytes per plain account (account
trie and flat snapshot bytes per account of this very state), time per attestation / time
per transfer at the same scale, the payout block / an empty block; each settlement block's
CPU beyond an empty block per vehicle-step (the ``settle_cost`` weight's measurement). Separately, the owner's
node's signal store for one vehicle over a day at one reading a minute (records and the
minute index).

    python -m bench.bench_costs [--vehicles 1000,10000,100000] [--repeat 3] [--batch 5000]
        [--slow-build]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import rlp
from eth.constants import BLANK_ROOT_HASH
from eth_account import Account
from eth_typing import Address

import vm.attestation as attestation
from bench.fleet_build import BuildReport, RecordingState, build_fast, format_report
from consensus.crypto import address_of_private_key
from devnet.device import Device, Drive
from genesis.builder import build_genesis
from genesis.devnet import dev_accounts, new_genesis
from node.app import Application
from node.block import EMPTY_COMMIT
from node.db import FLAT_ACCOUNT, TRIE, Database
from node.dbcheck import check_database
from node.mempool import Mempool
from node.prune import Pruner
from node.signal_store import SignalStore
from node.store import ChainStore
from vm.attestation import Attestation
from vm.crypto import keccak256
from vm.db import OverlayDB
from vm.execute import BlockBody, execute_block
from vm.geo import coarse_cell_of
from vm.modules import SYSTEM_MODULES, addresses, rewards
from vm.modules.base import Store, mapping_slot
from vm.modules.identity import D_NONCE
from vm.modules.params import get_param
from vm.modules.rewards import get_epoch_result
from vm.modules.telemetry import TelemetryView
from vm.state import BlockEnv, decode_transaction, make_state

CHAIN_ID = 7077
VALIDATOR_KEY = bytes.fromhex("11" * 32)
EPOCH_BLOCKS = 10  # the smallest epoch_length_blocks governance allows: the payout comes soon
TRANSFERS = 1_000
ATTESTATIONS = 2_000
HISTORY = 13  # readings per vehicle in epoch 0: 12 moving ones (min_attestations), so every vehicle qualifies
OWNER_BALANCE = 10**18
SENDER_BALANCE = 10**24
FAR = 2**40
HOME = (48.137154, 11.576124)
GENESIS_MS = 1_700_000_000_000
PREFIX_NAMES = {b"b": "block", b"r": "receipts", b"e": "tx extras", b"l": "block events",
                b"x": "tx index", b"a": "attestation index", b"X": "explorer index",
                b"L": "log index", b"c": "commit", b"h": "height index", b"v": "validator set",
                b"s": "flat snapshot", b"o": "flat storage snapshot"}


# --- building the fleet through the modules' own functions ------------------------------


class _BuildCall:
    """What identity's functions read of ``vm.modules.base.Call``, for a call made by the
    genesis builder rather than a transaction: no gas, no events."""

    __slots__ = ("module", "computation", "state", "sender", "value", "store")

    def __init__(self, module: Any, state: Any, sender: bytes) -> None:
        self.module, self.state, self.sender, self.value = module, state, sender, 0
        self.computation = None
        self.store = Store(state, module.address)

    timestamp = property(lambda self: GENESIS_MS // 1000)
    timestamp_ms = property(lambda self: GENESIS_MS)
    block_number = property(lambda self: 0)
    chain_id = property(lambda self: CHAIN_ID)

    def gas(self, amount: int, reason: str) -> None:
        pass

    def emit(self, event: str, *args: Any) -> None:
        pass

    def require(self, condition: Any, reason: str) -> None:
        if not condition:
            raise RuntimeError(f"fleet build refused: {reason}")


def _consume_device_nonce(call, led, device, struct, message, signature, reason_prefix="") -> None:
    """identity's device-signature check without the signature: the nonce must be the next
    one and is consumed, exactly as ``_use_device_signature`` does after verifying."""
    expected = led.device_nonce(device)
    call.require(message["nonce"] == expected, "invalid nonce")
    call.store.store(led.device_field(device, D_NONCE), expected + 1)


@contextmanager
def _unsigned_device_calls():
    """identity's device-signature check replaced by :func:`_consume_device_nonce` (on the
    module instance only) while a fleet is built."""
    identity = SYSTEM_MODULES[addresses.IDENTITY]
    identity._use_device_signature = _consume_device_nonce
    try:
        yield
    finally:
        del identity._use_device_signature


def _trie_names() -> dict[str, str]:
    """Hex hashed address -> module name, for build reports."""
    return {keccak256(a).hex(): m.name for a, m in SYSTEM_MODULES.items()}


def owner_of(i: int) -> bytes:
    return keccak256(b"bench_costs owner" + i.to_bytes(4, "big"))[12:]


def sender_key(i: int) -> bytes:
    return keccak256(b"bench_costs sender" + i.to_bytes(4, "big"))


class Fleet:
    """N vehicles: vehicle i (from 1) owned by ``owner_of(i)``, paired with a device; the
    first ``len(real)`` devices have keys (they sign the attestation block)."""

    def __init__(self, n: int, resolution: int, signers: int = ATTESTATIONS) -> None:
        self.n = n
        self.signers = signers  # the attestation block's size (one reading each at most)
        self.real = [Device.generate(CHAIN_ID, resolution, seed=b"bench_costs %d" % i)
                     for i in range(min(n, signers))]
        self.resolution = resolution
        self._cells: dict[int, int] = {}

    def device(self, vid: int) -> bytes:
        if vid <= len(self.real):
            return self.real[vid - 1].address
        return keccak256(b"bench_costs device" + vid.to_bytes(4, "big"))[12:]

    def position(self, vid: int) -> tuple[float, float]:
        k = vid % 2500  # 2,500 places 0.01 degree apart: many cells, like a city's fleet
        return HOME[0] + 0.01 * (k % 50), HOME[1] + 0.01 * (k // 50)

    def cell(self, vid: int) -> int:
        k = vid % 2500
        if k not in self._cells:
            self._cells[k] = coarse_cell_of(*self.position(vid), self.resolution)
        return self._cells[k]

    def builder(self, store: ChainStore, batch: int, log: list[str]):
        """A genesis build function (``ChainStore.init_genesis``): the spec's genesis, then
        the fleet in batches, each batch's trie nodes written to LevelDB as it is done."""

        def build(db, spec):
            header = build_genesis(db, spec)
            identity = SYSTEM_MODULES[addresses.IDENTITY]
            maker = dev_accounts()[1][0]
            env = BlockEnv(CHAIN_ID, 0, GENESIS_MS, b"\x00" * 20, spec.gas_limit, spec.base_fee_per_gas,
                           b"\x00" * 32)
            root = header.state_root
            t0 = time.perf_counter()
            with _unsigned_device_calls():
                for first in range(1, self.n + 1, batch):
                    overlay = OverlayDB(db)
                    state = make_state(overlay, root, env)
                    ids = range(first, min(self.n, first + batch - 1) + 1)
                    for vid in ids:
                        self._register(identity, state, maker, vid)
                    view = TelemetryView(state, GENESIS_MS, 0)
                    for vid in ids:
                        self._history(view, vid)
                    view.commit()
                    state.persist()
                    root = state.state_root
                    puts, _ = overlay.pending()
                    with store.db.write_batch() as wb:
                        for k, v in puts.items():
                            wb.put(TRIE + k, v)
            log.append(f"fleet of {self.n:,} built in {time.perf_counter() - t0:.1f} s")
            return header.copy(state_root=root)

        return build

    def fast_builder(self, store: ChainStore, batch: int, log: list[str],
                     report: BuildReport | None = None):
        """A genesis build function giving the state :meth:`builder` gives (same state root,
        trie nodes and flat entries), written by ``bench.fleet_build.build_fast``: the same
        module calls over a recording state, each trie written once. For
        ``ChainStore.init_genesis(spec, build=..., flat_written=True)``."""
        report = report if report is not None else BuildReport()

        def build(db, spec):
            identity = SYSTEM_MODULES[addresses.IDENTITY]
            maker = dev_accounts()[1][0]

            def vehicle(state: RecordingState, vid: int) -> None:
                self._register(identity, state, maker, vid)
                # a view per vehicle (the slow build has one per batch: same state), so
                # that what one vehicle's readings touch is that vehicle's alone
                view = TelemetryView(state, GENESIS_MS, 0)
                self._history(view, vid)
                view.commit()

            with _unsigned_device_calls():
                header = build_fast(store.db, spec, self.n, vehicle, batch, report,
                                    scratch_dir=str(store.database.path.parent))
            log.extend(format_report(report, _trie_names()))
            return header

        return build

    def _register(self, identity: Any, state: Any, maker: bytes, vid: int) -> None:
        owner = owner_of(vid)
        device = "0x" + self.device(vid).hex()
        state.set_balance(Address(owner), OWNER_BALANCE)
        as_owner = _BuildCall(identity, state, owner)
        got = identity.mintVehicle(as_owner, "Motus", "Sim", 2024, "WMZ" + device[2:16].upper())
        assert got == vid, (got, vid)
        identity.mintDevice(_BuildCall(identity, state, maker), device)
        identity.claimDevice(as_owner, device, 0, FAR, b"")
        identity.pairDevice(as_owner, vid, device, 1, FAR, b"")

    def _history(self, view: TelemetryView, vid: int) -> None:
        device, cell = self.device(vid), self.cell(vid)
        start_s = GENESIS_MS // 1000 - 3_600
        for seq in range(1, HISTORY + 1):
            view.apply(Attestation(1, device, vid, seq, start_s + 60 * seq, cell, 100 + seq,
                                   keccak256(b"%d %d" % (vid, seq)), b"", b""))

    def attestations(self, head_ms: int) -> list[bytes]:
        """``signers`` (ATTESTATIONS) signed readings, spread over the real devices, timed
        before ``head_ms`` (the next block's time is later)."""
        per = -(-self.signers // len(self.real))  # readings per device (a second apart)
        out: list[bytes] = []
        for k in range(per):
            for i, dev in enumerate(self.real):
                vid = i + 1
                dev.seq = max(dev.seq, HISTORY)
                lat, lon = self.position(vid)
                out.append(dev.attest(vehicle_id=vid, timestamp_ms=head_ms - 1_000 * (per - k),
                                      lat=lat, lon=lon, odometer_m=100 * (100 + HISTORY + 1 + k),
                                      signals={"soc": 50.0 + k}).raw)
        return out[:self.signers]


# --- measuring --------------------------------------------------------------------------


def trie_size(get, root: bytes, accounts: bool = False, storage: dict | None = None) -> tuple[int, int]:
    """(nodes, bytes as stored: 33-byte key + value) of the trie at ``root``; with
    ``accounts``, ``storage`` gets each account's storage root by hashed address."""
    if root == BLANK_ROOT_HASH:
        return 0, 0
    nodes = size = 0
    stack: list[Any] = [(root, b"")]
    while stack:
        ref, path = stack.pop()
        if isinstance(ref, bytes) and len(ref) == 32:
            raw = get(ref)
            nodes += 1
            size += 33 + len(raw)
            node = rlp.decode(raw)
        else:
            node = ref
        if len(node) == 17:
            stack.extend((child, path) for child in node[:16] if child)
        elif len(node) == 2:
            if node[0] and node[0][0] >> 4 in (2, 3):
                if accounts and storage is not None:
                    _n, _b, storage_root, _code = rlp.decode(node[1])
                    storage[len(storage)] = storage_root
            else:
                stack.append((node[1], path))
    return nodes, size


def live_state(store: ChainStore, root: bytes) -> dict[str, tuple[int, int]]:
    """Live trie (nodes, bytes) of the head state by part: the account trie, the storage of
    each system module, every other account's storage; and ``accounts``: (count, 0)."""
    get = store.state_db.__getitem__
    storage_roots: dict[int, bytes] = {}
    out = {"account trie": trie_size(get, root, accounts=True, storage=storage_roots)}
    module_roots = {}
    for address, module in SYSTEM_MODULES.items():
        raw = store.state_db.flat.account(keccak256(address))  # the head's snapshot
        module_roots[module.name] = BLANK_ROOT_HASH if raw is None else rlp.decode(raw)[2]
    for name, r in module_roots.items():
        out[name] = trie_size(get, r)
    n = b = 0
    for r in storage_roots.values():
        if r != BLANK_ROOT_HASH and r not in module_roots.values():
            dn, db = trie_size(get, r)
            n, b = n + dn, b + db
    out["other storage"] = (n, b)
    out["accounts"] = (len(storage_roots), 0)
    return out


def prefix_bytes(db) -> dict[bytes, int]:
    """Bytes (key + value) under every one-byte prefix but the trie's (``t``), which
    ``trie_listener`` counts as blocks write it."""
    out: dict[bytes, int] = {}
    for it in (db.iterator(stop=TRIE), db.iterator(start=b"u")):
        for k, v in it:
            p = k[:1]
            out[p] = out.get(p, 0) + len(k) + len(v)
    return out


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def logical_bytes(db) -> tuple[int, int]:
    """(trie bytes, all bytes): keys + values, what a compacted LevelDB holds before its
    block compression (which does little for hashes)."""
    trie = total = 0
    for k, v in db.iterator():
        total += len(k) + len(v)
        if k[:1] == TRIE:
            trie += len(k) + len(v)
    return trie, total


def compacted_bytes(db) -> int:
    """Bytes on disk of a fresh LevelDB (the node's options, Snappy) holding exactly the keys
    of ``db``: what a full compaction reaches. (``compact_range`` on the node's own
    directory left deleted nodes in its tables here, so the directory itself over-counts
    the pruned store until LevelDB compacts in its own time.)"""
    with tempfile.TemporaryDirectory(dir=os.environ.get("MOTUS_BENCH_DIR")) as tmp:
        fresh = Database(tmp)
        wb = fresh.db.write_batch()
        for n, (k, v) in enumerate(db.iterator(), start=1):
            wb.put(k, v)
            if n % 20_000 == 0:
                wb.write()
                wb = fresh.db.write_batch()
        wb.write()
        fresh.db.compact_range()
        fresh.close()
        return dir_bytes(Path(tmp))


class _Attestations:
    """The Application's attestation source: a list handed out once."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def take_with_ids(self, max_n: int) -> tuple[list[bytes], list[bytes]]:
        out, self.items = self.items[:max_n], self.items[max_n:]
        return out, [keccak256(raw) for raw in out]

    def on_built(self, results) -> None:
        pass

    def on_commit(self, block, result, parent_state_root) -> None:
        pass


def _cpu(fn) -> float:
    c0 = time.thread_time()
    fn()
    return time.thread_time() - c0


def measure(n: int, repeat: int, batch: int, keep_dir: bool, slow_build: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"n": n, "log": []}
    root_dir = Path(tempfile.mkdtemp(prefix="motus-bench-costs-", dir=os.environ.get("MOTUS_BENCH_DIR")))
    path = root_dir / "data"
    try:
        proposer = address_of_private_key(VALIDATOR_KEY)
        senders = [(address_of_private_key(k), k) for k in (sender_key(i) for i in range(TRANSFERS))]
        spec = new_genesis(CHAIN_ID, [(proposer, 10)],
                           params={"epoch_length_blocks": EPOCH_BLOCKS, "reward_history_epochs": 1},
                           extra_alloc={a: SENDER_BALANCE for a, _ in senders}, genesis_time_ms=GENESIS_MS)
        database = Database(path)
        store = ChainStore(database)
        fleet = Fleet(n, spec.params.get("h3_resolution", 7))
        t0 = time.perf_counter()
        if slow_build:
            store.init_genesis(spec, build=fleet.builder(store, batch, out["log"]))
        else:
            store.init_genesis(spec, build=fleet.fast_builder(store, max(batch, 2), out["log"]),
                               flat_written=True)
        out["build_s"] = time.perf_counter() - t0
        # the batches' intermediate nodes are garbage: the node's own sweep removes them
        Pruner(store, 1, pace=False).sweep()
        store.trie_listener = None
        genesis_live = live_state(store, store.head.state_root)
        out["genesis_live"] = genesis_live

        now = [GENESIS_MS / 1000 + 1]

        def clock() -> float:
            now[0] += 1.0
            return now[0]

        source = _Attestations()
        app = Application(store, Mempool(CHAIN_ID, min_fee=0, max_per_sender=16, max_total=4 * TRANSFERS),
                          attestation_pool=source, clock=clock)
        written: list[int] = [0]
        store.trie_listener = lambda puts: written.__setitem__(
            0, written[0] + sum(33 + len(v) for v in puts.values()))

        def make_block(what: str) -> dict[str, Any]:
            """Propose, time the validator's execution (cold/warm), commit; sizes."""
            h = store.head_height + 1
            before = prefix_bytes(store.db)
            written[0] = 0
            c0 = time.thread_time()
            value = app.propose(h, proposer, max_txs=5_000)
            build_cpu = time.thread_time() - c0
            block = app.block_of(value)
            parent = store.head
            env = app.env_for(h, block.header.timestamp_ms, proposer, parent)
            txs = [decode_transaction(r) for r in block.transactions]
            row: dict[str, Any] = {"what": what, "height": h, "txs": len(txs),
                                   "attestations": len(block.attestations), "build_cpu": build_cpu,
                                   "block_bytes": len(value)}
            if txs or block.attestations:
                roots = set()

                def run() -> None:
                    # as Application.check_block: transactions decoded (senders recovered) here
                    body = BlockBody([decode_transaction(r) for r in block.transactions],
                                     list(block.attestations), raw_transactions=list(block.transactions))
                    roots.add(execute_block(OverlayDB(store.state_db), parent.state_root, env, body).state_root)

                def cold() -> None:
                    attestation._VERIFIED.clear()
                    run()

                row["warm"] = min(_cpu(run) for _ in range(repeat))
                row["cold"] = min(_cpu(cold) for _ in range(repeat))
                assert roots == {block.header.state_root}
            c0 = time.thread_time()
            app.commit(h, value, EMPTY_COMMIT)
            row["commit_cpu"] = time.thread_time() - c0
            after = prefix_bytes(store.db)
            row["prefixes"] = {p: after.get(p, 0) - before.get(p, 0) for p in set(after) | set(before)}
            row["trie_written"] = written[0]
            return row

        rng = random.Random(n)
        for _address, key in senders:
            tx = {"type": 2, "chainId": CHAIN_ID, "nonce": 0, "to": owner_of(rng.randrange(1, n + 1)),
                  "value": 1, "gas": 21_000, "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 10**9}
            app.submit_transaction(bytes(Account.sign_transaction(tx, key).raw_transaction), gossip=False)
        blocks = {"transfers": make_block("transfers")}
        assert blocks["transfers"]["txs"] == TRANSFERS
        source.items = fleet.attestations(store.head.timestamp_ms)
        blocks["attestations"] = make_block("attestations")
        assert blocks["attestations"]["attestations"] == ATTESTATIONS
        while store.head_height < EPOCH_BLOCKS:
            blocks["empty"] = make_block("empty")
        before_payout = live_state(store, store.head.state_root)
        empties = [blocks["empty"]["build_cpu"]]
        blocks["payout"] = make_block("payout")
        # the boundary block opened epoch 0 and settled its first slice; the next blocks
        # settle the rest (docs/rewards.md "Settlement"): each one's CPU and its steps
        settling = [(blocks["payout"], settled_steps(app.head_state()))]
        while not get_epoch_result(app.head_state(), 0).processed:
            before_steps = settled_steps(app.head_state())
            row = make_block("settlement")
            settling.append((row, tuple(a - b for a, b in zip(settled_steps(app.head_state()),
                                                              before_steps, strict=True))))
        after_payout = live_state(store, store.head.state_root)
        # with reward_history_epochs = 1, epoch 0's records are cleared once epoch 1 is
        # settled (docs/rewards.md "History window"): the blocks that clear them
        clearing = []
        while not Store(app.head_state(), addresses.REWARDS).load(rewards.S_CLEARED):
            before_steps = cleared_steps(app.head_state())
            row = make_block("clearing")
            clearing.append((row["build_cpu"], cleared_steps(app.head_state()) - before_steps))
        out["clearing"] = clearing
        out["after_clearing"] = live_state(store, store.head.state_root)
        blocks["empty"] = make_block("empty")  # after the settlement: the baseline again
        empties.append(blocks["empty"]["build_cpu"])
        blocks["empty"]["build_cpu"] = min(empties)
        out["settling"] = [(row["build_cpu"], steps) for row, steps in settling]  # steps by phase
        # what the payout writes is the sum over the blocks that settled it
        pay = blocks["payout"]
        for row, _ in settling[1:]:
            pay["trie_written"] += row["trie_written"]
            for prefix, size in row["prefixes"].items():
                pay["prefixes"][prefix] = pay["prefixes"].get(prefix, 0) + size
        result = get_epoch_result(app.head_state(), 0)
        out["paid"], out["evaluated"] = result.vehicle_count, result.evaluated
        out["before_payout"], out["after_payout"] = before_payout, after_payout
        out["blocks"] = blocks
        assert get_param(app.head_state(), "epoch_length_blocks") == EPOCH_BLOCKS

        # disk: archive (every state of the run), then pruned (the head's state only)
        out["logical_archive"] = logical_bytes(store.db)
        out["disk_archive"] = compacted_bytes(store.db)
        out["sweep"] = Pruner(store, 1, pace=False).sweep()
        out["flat_accounts"] = sum(1 for _ in store.db.iterator(prefix=FLAT_ACCOUNT, include_value=False))
        out["logical_pruned"] = logical_bytes(store.db)
        out["disk_pruned"] = compacted_bytes(store.db)
        database.close()

        # CPU of this thread (LevelDB reads are made in it), and wall time
        t0, c0 = time.perf_counter(), time.thread_time()
        database = Database(path)
        store = ChainStore(database)
        out["open_s"], out["open_wall"] = time.thread_time() - c0, time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.thread_time()
        store.rebuild_flat_state()
        out["rebuild_flat_s"], out["rebuild_flat_wall"] = time.thread_time() - c0, time.perf_counter() - t0
        database.close()
        t0, c0 = time.perf_counter(), time.thread_time()
        database = Database(path)
        report = check_database(ChainStore(database, rebuild_flat=False))
        out["check_s"], out["check_wall"] = time.thread_time() - c0, time.perf_counter() - t0
        out["check_ok"] = report.ok
        out["check_nodes"] = report.nodes
        assert report.ok, report.problems
        database.close()
    finally:
        if not keep_dir:
            shutil.rmtree(root_dir, ignore_errors=True)
    return out


def settled_steps(state: Any) -> tuple[int, int, int]:
    """Vehicle-steps of epoch 0's settlement done so far: (scored, paid, finalized)."""
    st = Store(state, addresses.REWARDS)
    base = mapping_slot(rewards.M_EPOCH, 0)
    return (st.load(base + rewards.E_SCORED), st.load(base + rewards.E_PAID),
            st.load(base + rewards.E_PROCESSED))


def cleared_steps(state: Any) -> int:
    """Clearing steps done so far on epoch 0 (CLEAR_STEPS an entry, one to close it)."""
    st = Store(state, addresses.REWARDS)
    if st.load(rewards.S_CLEARED):
        return max(st.load(mapping_slot(rewards.M_EPOCH, 0) + rewards.E_LISTED),
                   st.load(mapping_slot(rewards.M_EPOCH, 0) + rewards.E_EVALUATED)) * rewards.CLEAR_STEPS + 1
    return st.load(rewards.S_CLEAR_CURSOR) * rewards.CLEAR_STEPS


def signal_day() -> dict[str, int]:
    """The owner's node's signal store for one vehicle over a day at one reading a minute:
    bytes by key prefix (``v`` records, ``a`` id lookup, ``t`` retention, ``m`` minute
    index) and the directory after a full compaction."""
    device = Device.generate(CHAIN_ID, 7, seed=b"bench_costs day")
    drive = Drive(lat=HOME[0], lon=HOME[1], timestamp_ms=GENESIS_MS)
    out: dict[str, int] = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("MOTUS_BENCH_DIR")) as tmp:
        with SignalStore(tmp, CHAIN_ID) as ss:
            for reading in drive.readings(device, 1, 1_440, 60_000,
                                          signals={"soc": 64.5, "battery_v": 12.6, "coolant_c": 88.0,
                                                   "fuel_pct": 41.0}):
                ss.put(reading.raw, reading.payload)
            for k, v in ss._db.iterator():
                out[k[:1].decode()] = out.get(k[:1].decode(), 0) + len(k) + len(v)
            ss._db.compact_range()
        out["disk"] = dir_bytes(Path(tmp))
    return out


def report(r: dict[str, Any]) -> None:
    n = r["n"]
    g = r["genesis_live"]
    accounts = g["accounts"][0]
    acct_trie = g["account trie"][1]
    flat_per_account = 33 + 75  # s + keccak(address), an account's RLP (measured below)
    per_account = acct_trie / accounts
    print(f"--- {n:,} vehicles ({accounts:,} accounts: owners, 1,000 senders, system, dev) ---")
    print(f"  genesis written in {r['build_s']:.1f} s")
    for line in r["log"]:
        print(f"  {line}")
    vehicle_parts = {k: v for k, v in g.items() if k in ("identity", "telemetry", "rewards")}
    ident, tele = g["identity"][1], g["telemetry"][1]
    owner_bytes = per_account + flat_per_account
    state_per_vehicle = (ident + tele) / n + owner_bytes
    print(f"  plain account (same run): account trie {per_account:.0f} B + flat snapshot "
          f"~{flat_per_account} B = {owner_bytes:.0f} B")
    for name, (nodes, size) in vehicle_parts.items():
        print(f"  {name:9s} storage trie: {nodes:>10,} nodes {size / 1e6:9.1f} MB = {size / n:6.0f} B/vehicle")
    print(f"  state per vehicle (identity + telemetry with one epoch of counters + owner account): "
          f"{state_per_vehicle:.0f} B = {state_per_vehicle / owner_bytes:.1f} x a plain account")
    bp, ap = r["before_payout"], r["after_payout"]
    payout_bytes = sum(ap[k][1] for k in ap if k != "accounts") - sum(bp[k][1] for k in bp if k != "accounts")
    pay = r["blocks"]["payout"]
    empty = r["blocks"]["empty"]
    print(f"  epoch payout: {pay['build_cpu']:.2f} s CPU to build the boundary block ({pay['build_cpu'] / n * 1e6:.0f} "
          f"us/vehicle; empty block {empty['build_cpu'] * 1e3:.1f} ms, ratio {pay['build_cpu'] / empty['build_cpu']:.0f}x); "
          f"live state +{payout_bytes / n:.0f} B/vehicle; trie written {pay['trie_written'] / n:.0f} B/vehicle; "
          f"vehicles paid {r.get('paid')}")
    rows = [(c, sum(k), k) for c, k in r["settling"]]
    steps = sum(k for _, k, _ in rows)
    per_step = (sum(c for c, _, _ in rows) - len(rows) * empty["build_cpu"]) / max(1, steps)

    def phase(i: int) -> str:  # blocks that did only scoring (0) or only paying (1) steps
        only = [(c - empty["build_cpu"]) / k for c, k, by in rows if by[i] == k and k]
        return f"{sum(only) / len(only) * 1e6:.0f} us" if only else "-"

    cpus = sorted(c for c, _, _ in rows)
    print(f"  epoch settlement: {len(rows)} blocks of at most {max(k for _, k, _ in rows)} vehicle-steps "
          f"({steps:,} steps); max block CPU {cpus[-1]:.3f} s (median {cpus[len(cpus) // 2]:.3f}; "
          f"{cpus[-1] / empty['build_cpu']:.0f}x an empty block); "
          f"{per_step * 1e6:.0f} us CPU per vehicle-step beyond an empty block (scoring {phase(0)}, "
          f"paying {phase(1)})")
    clear = [(c, k) for c, k in r["clearing"] if k]
    if clear:
        per_clear = (sum(c for c, _ in clear) - len(clear) * empty["build_cpu"]) / sum(k for _, k in clear)
        left = sum(r["after_clearing"][k][1] for k in r["after_clearing"] if k != "accounts") - sum(
            bp[k][1] for k in bp if k != "accounts")
        print(f"  history clearing (reward_history_epochs 1): {len(clear)} blocks, max block CPU "
              f"{max(c for c, _ in clear):.3f} s; {per_clear * 1e6:.0f} us CPU per vehicle-step beyond an "
              f"empty block; live state left by the epoch after clearing {left / n:+.0f} B/vehicle")
    hist = {PREFIX_NAMES.get(p, p.decode()): v for p, v in pay["prefixes"].items() if v and p != b"s"}
    print(f"  payout block history: {pay['block_bytes'] / n:.0f} B/vehicle in the block; in store "
          f"{', '.join(f'{k} {v / n:.0f}' for k, v in sorted(hist.items()))} B/vehicle")
    t, a = r["blocks"]["transfers"], r["blocks"]["attestations"]
    for row, count in ((t, TRANSFERS), (a, ATTESTATIONS)):
        hist = {PREFIX_NAMES.get(p, p.decode()): v for p, v in row["prefixes"].items() if v}
        hist_total = sum(v for p, v in row["prefixes"].items() if p != b"s")
        print(f"  block of {count:,} {row['what']}: {row['cold']:.3f} s CPU ({row['cold'] / count * 1e6:.0f} us each; "
              f"attestations with their signatures verified at admission: {row['warm']:.3f} s); block {row['block_bytes'] / count:.0f} B each; "
              f"history in store {hist_total / count:.0f} B each ({', '.join(f'{k} {v / count:.0f}' for k, v in sorted(hist.items()))}); "
              f"trie written {row['trie_written'] / count:.0f} B each")
    print(f"  attestation / transfer, time each (signatures checked in the block for both): "
          f"{(a['cold'] / ATTESTATIONS) / (t['cold'] / TRANSFERS):.2f}; "
          f"pre-verified attestation / transfer {(a['warm'] / ATTESTATIONS) / (t['cold'] / TRANSFERS):.2f}")
    la, lp = r["logical_archive"], r["logical_pruned"]
    print(f"  store after the run (keys + values; compacted on disk): archive {la[1] / 1e6:.1f} MB "
          f"({r['disk_archive'] / 1e6:.1f} MB) = {la[1] / n:.0f} B/vehicle ({r['disk_archive'] / n:.0f}), "
          f"of which trie {la[0] / n:.0f}; pruned {lp[1] / 1e6:.1f} MB ({r['disk_pruned'] / 1e6:.1f} MB) = "
          f"{lp[1] / n:.0f} B/vehicle ({r['disk_pruned'] / n:.0f}), of which trie {lp[0] / n:.0f}")
    print(f"  CPU (wall): open {r['open_s']:.2f} s ({r['open_wall']:.2f}), flat snapshot rebuild "
          f"{r['rebuild_flat_s']:.2f} s ({r['rebuild_flat_wall']:.2f}; {r['flat_accounts']:,} accounts), db check "
          f"{r['check_s']:.1f} s ({r['check_wall']:.1f}; {r['check_nodes']:,} nodes, ok={r['check_ok']})", flush=True)


# (label, unit, how 1,000,000 is extrapolated from the two largest measured sizes:
# "per-vehicle" slope (totals that grow with the fleet), "total" (a total / N: the total
# by its per-vehicle slope, divided by N), "log" (per-item costs that grow with the tries'
# depth: one more level per 16x), "same")
SUMMARY = [
    ("state per vehicle: identity (NFT, device, pairing, ownership period)", "B", "log"),
    ("state per vehicle: telemetry (device record + one epoch's counters)", "B", "log"),
    ("state per vehicle: owner (reward) account, trie + flat snapshot", "B", "log"),
    ("state per vehicle: rewards records added by one epoch's payout", "B", "log"),
    ("plain account: account trie + flat snapshot (baseline)", "B", "log"),
    ("state per vehicle / plain account", "x", "log"),
    ("store per vehicle after the run, pruned (compacted)", "B", "total"),
    ("store per vehicle after the run, archive (compacted)", "B", "total"),
    ("block of 1,000 transfers: execution (CPU)", "s", "log"),
    ("block of 2,000 attestations: execution, signatures checked (CPU)", "s", "log"),
    ("block of 2,000 attestations: execution, pre-verified (CPU)", "s", "log"),
    ("time per attestation / per transfer", "x", "log"),
    ("attestation: bytes in the block", "B", "same"),
    ("attestation: history bytes in the store (block, index)", "B", "same"),
    ("attestation: trie bytes written (archive growth)", "B", "log"),
    ("transfer: history bytes in the store", "B", "same"),
    ("transfer: trie bytes written (archive growth)", "B", "log"),
    ("epoch payout block: build (CPU)", "s", "per-vehicle"),
    ("epoch payout block / empty block", "x", "per-vehicle"),
    ("epoch payout: history bytes per vehicle (events, log index)", "B", "same"),
    ("open the store (CPU)", "s", "same"),
    ("rebuild the flat snapshot (CPU)", "s", "per-vehicle"),
    ("motus db check (CPU)", "s", "per-vehicle"),
    ("epoch settlement: largest block (CPU)", "s", "log"),
    ("epoch settlement: CPU per vehicle-step beyond an empty block", "s", "log"),
    ("epoch settlement: blocks at the default settle_vehicles_per_block", "x", "per-vehicle"),
]


def summary_values(r: dict[str, Any]) -> list[float]:
    n, g = r["n"], r["genesis_live"]
    per_account = g["account trie"][1] / g["accounts"][0] + 108
    bp, ap = r["before_payout"], r["after_payout"]
    payout_bytes = sum(ap[k][1] for k in ap if k != "accounts") - sum(bp[k][1] for k in bp if k != "accounts")
    state = (g["identity"][1] + g["telemetry"][1]) / n + per_account
    t, a, pay, empty = (r["blocks"][k] for k in ("transfers", "attestations", "payout", "empty"))

    def history(row: dict[str, Any], count: int) -> float:
        return sum(v for p, v in row["prefixes"].items() if p != b"s") / count

    return [g["identity"][1] / n, g["telemetry"][1] / n, per_account, payout_bytes / n, per_account,
            state / per_account, r["disk_pruned"] / n, r["disk_archive"] / n,
            t["cold"], a["cold"], a["warm"], (a["cold"] / ATTESTATIONS) / (t["cold"] / TRANSFERS),
            a["block_bytes"] / ATTESTATIONS, history(a, ATTESTATIONS), a["trie_written"] / ATTESTATIONS,
            history(t, TRANSFERS), t["trie_written"] / TRANSFERS,
            pay["build_cpu"], pay["build_cpu"] / empty["build_cpu"], history(pay, n),
            r["open_s"], r["rebuild_flat_s"], r["check_s"], *settlement_values(r, empty["build_cpu"])]


def settlement_values(r: dict[str, Any], empty_cpu: float) -> list[float]:
    """Largest settlement block's CPU, CPU per vehicle-step beyond an empty block, blocks."""
    rows = [(c, sum(k)) for c, k in r["settling"]]
    steps = sum(k for _, k in rows)
    return [max(c for c, _ in rows), (sum(c for c, _ in rows) - len(rows) * empty_cpu) / max(1, steps),
            float(len(rows))]


def extrapolate(rule: str, n0: int, v0: float, n1: int, v1: float, n: int) -> float:
    if rule == "per-vehicle":  # never below the largest measured: noise must not shrink it
        return max(v1, v1 + (v1 - v0) / (n1 - n0) * (n - n1))
    if rule == "total":
        return (v1 * n1 + (v1 * n1 - v0 * n0) / (n1 - n0) * (n - n1)) / n
    if rule == "log":
        import math
        return v1 + (v1 - v0) * math.log(n / n1) / math.log(n1 / n0)
    return v1


def print_summary(results: list[dict[str, Any]], target: int = 1_000_000) -> None:
    """The table for docs/storage.md; a 1,000,000 column extrapolated (labelled) when the
    largest size measured is smaller."""
    sizes = [r["n"] for r in results]
    values = [summary_values(r) for r in results]
    extra = len(results) >= 2 and max(sizes) < target
    head = [f"{n:,}" for n in sizes] + ([f"{target:,} (extrapolated)"] if extra else [])
    print("\n| | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    for i, (label, unit, rule) in enumerate(SUMMARY):
        row = [v[i] for v in values]
        if extra:
            row.append(extrapolate(rule, sizes[-2], row[-2], sizes[-1], row[-1], target))

        def fmt(x: float, unit: str = unit) -> str:
            if unit == "B":
                return f"{x:,.0f} B"
            if unit == "x":
                return f"{x:,.2f}" if x < 10 else f"{x:,.0f}"
            if x < 0.01:
                return f"{x * 1e6:,.0f} us"
            return f"{x:.3f} s" if x < 10 else f"{x:,.0f} s"

        print(f"| {label} | " + " | ".join(fmt(x) for x in row) + " |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_costs", description=__doc__.splitlines()[0])
    p.add_argument("--vehicles", type=lambda s: [int(x) for x in s.split(",")], default=[1_000, 10_000, 100_000],
                   help="comma-separated fleet sizes (1000000: the full run did not fit a session here; "
                        "python -m bench.bench_fleet measures the store at that size)")
    p.add_argument("--repeat", type=int, default=3, help="executions of each timed block; best kept")
    p.add_argument("--batch", type=int, default=5_000, help="vehicles per build batch")
    p.add_argument("--slow-build", action="store_true",
                   help="build the fleet through py-evm's state (Fleet.builder), not the fast builder")
    p.add_argument("--keep-dir", action="store_true", help="leave the LevelDB directories in place")
    p.add_argument("--json", help="also write each size's figures to this file (JSON lines)")
    args = p.parse_args(argv or [])
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    day = signal_day()
    print(f"signal store, one vehicle, one day at one reading a minute: records {day.get('v', 0) / 1e3:.0f} KB, "
          f"minute index {day.get('m', 0) / 1e3:.0f} KB, id and time keys {(day.get('a', 0) + day.get('t', 0)) / 1e3:.0f} KB; "
          f"{day['disk'] / 1e3:.0f} KB on disk compacted", flush=True)
    results = []
    for n in args.vehicles:
        results.append(measure(n, args.repeat, args.batch, args.keep_dir, args.slow_build))
        report(results[-1])
        if args.json:
            import json

            with open(args.json, "a") as f:
                f.write(json.dumps({"n": n, "summary": dict(zip([s[0] for s in SUMMARY],
                                                                 summary_values(results[-1]), strict=True))}) + "\n")
    print_summary(results)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
