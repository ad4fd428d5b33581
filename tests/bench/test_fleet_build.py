"""The fast fleet builder (bench.fleet_build) against the slow one it replaces in the
benchmarks (bench.bench_costs.Fleet.builder, through py-evm's state): the same state
root, and the same LevelDB contents for the state: every trie node (the slow store
after the node's own sweep of its build's intermediate nodes; the fast one has none to
sweep) and every flat snapshot entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import bench_costs as costs
from bench.fleet_build import BuildReport
from genesis.devnet import new_genesis
from node.db import FLAT_ACCOUNT, FLAT_SLOT, TRIE, Database
from node.prune import Pruner
from node.store import ChainStore
from vm.modules.identity import get_device, get_vehicle, total_supply
from vm.modules.telemetry import epoch_vehicle_count, get_device_state


def _spec():
    proposer = costs.address_of_private_key(costs.VALIDATOR_KEY)
    return new_genesis(costs.CHAIN_ID, [(proposer, 10)], genesis_time_ms=costs.GENESIS_MS)


def _state_entries(database: Database) -> dict[bytes, bytes]:
    return {k: v for prefix in (TRIE, FLAT_ACCOUNT, FLAT_SLOT)
            for k, v in database.db.iterator(prefix=prefix)}


def _build(path: Path, n: int, fast: bool, batch: int) -> tuple[bytes, dict[bytes, bytes], BuildReport]:
    spec = _spec()
    fleet = costs.Fleet(n, spec.params.get("h3_resolution", 7))
    database = Database(path)
    try:
        store = ChainStore(database)
        report = BuildReport()
        if fast:
            store.init_genesis(spec, build=fleet.fast_builder(store, batch, [], report),
                               flat_written=True)
        else:
            store.init_genesis(spec, build=fleet.builder(store, batch, []))
            Pruner(store, 1, pace=False).sweep()
        return store.head.state_root, _state_entries(database), report
    finally:
        database.close()


@pytest.mark.parametrize("n", [300])
def test_fast_fleet_build_writes_the_slow_builds_state(tmp_path: Path, n: int) -> None:
    slow_root, slow, _ = _build(tmp_path / "slow", n, fast=False, batch=5_000)
    # small batches: the slots several vehicles share cross many flushes
    fast_root, fast, report = _build(tmp_path / "fast", n, fast=True, batch=37)
    assert fast_root == slow_root
    assert fast.keys() == slow.keys()
    assert fast == slow
    assert report.tries["accounts"].entries == sum(1 for k in fast if k[:1] == FLAT_ACCOUNT)


def test_fast_fleet_store_reads_as_a_fleet(tmp_path: Path) -> None:
    n = 50
    _build(tmp_path / "fast", n, fast=True, batch=7)
    database = Database(tmp_path / "fast")
    try:
        store = ChainStore(database)
        assert store.state_db.flat.root == store.head.state_root  # no rebuild needed
        from vm.state import BlockEnv, make_state

        head = store.head
        state = make_state(store.state_db, head.state_root, BlockEnv(
            costs.CHAIN_ID, 1, head.timestamp_ms + 1_000, b"\0" * 20, head.gas_limit,
            head.base_fee_per_gas, head.hash))
        fleet = costs.Fleet(n, 8)
        assert total_supply(state) == n
        for vid in (1, 8, n):
            device = fleet.device(vid)
            assert get_vehicle(state, vid).device == device
            assert get_vehicle(state, vid).owner == costs.owner_of(vid)
            assert get_device(state, device).vehicle_id == vid
            assert get_device_state(state, device).seq == costs.HISTORY
        assert epoch_vehicle_count(state, 0) == n
    finally:
        database.close()
