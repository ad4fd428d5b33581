"""CPU of epoch settlement per vehicle-step, by phase, and of clearing (docs/rewards.md
"Settlement", "History window"; the ``settle_cost`` weight), on a real LevelDB store
driven by the node's ``Application``, against an empty block of the same run.

The fleet (``--vehicles``, default 5,000, every vehicle with twelve moving readings in
epoch 0) is built in the genesis state as ``bench_costs`` builds it (identity's and
telemetry's own functions). Then empty blocks to the end of epoch 0, the boundary block,
the blocks that settle epoch 0 (``settle_vehicles_per_block`` steps each: scoring, then
paying), the blocks of epoch 1 and, with ``reward_history_epochs`` 1, the blocks that
clear epoch 0's records. Each block's CPU is the proposer's ``Application.propose``
(execution and roots, thread CPU); a step's cost is its block's CPU beyond the median
empty block's, over the block's steps. Prints the median and worst block of each phase
and the load average at start and end (the ratio to the empty block cancels load).

    python -m bench.bench_settle [--vehicles 5000] [--per-block 250] [--profile]

``--profile`` prints cProfile's top functions of the settlement blocks instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_costs import CHAIN_ID, GENESIS_MS, VALIDATOR_KEY, Fleet, _Attestations
from consensus.crypto import address_of_private_key
from genesis.devnet import new_genesis
from node.app import Application
from node.block import EMPTY_COMMIT
from node.db import Database
from node.mempool import Mempool
from node.prune import Pruner
from node.store import ChainStore
from vm.modules import addresses, rewards
from vm.modules.base import Store, mapping_slot

EPOCH_BLOCKS = 10


def progress(state: Any) -> tuple[int, int, int, int]:
    """(scored, paid, finalized, cleared entries) of epoch 0 so far."""
    st = Store(state, addresses.REWARDS)
    base = mapping_slot(rewards.M_EPOCH, 0)
    cleared = st.load(rewards.S_CLEARED)
    entries = st.load(base + rewards.E_LISTED) if cleared else st.load(rewards.S_CLEAR_CURSOR)
    return (st.load(base + rewards.E_SCORED), st.load(base + rewards.E_PAID),
            st.load(base + rewards.E_PROCESSED), entries + cleared)


def run(n: int, per_block: int, profile: bool) -> dict[str, Any]:
    root_dir = Path(tempfile.mkdtemp(prefix="motus-bench-settle-", dir=os.environ.get("MOTUS_BENCH_DIR")))
    try:
        proposer = address_of_private_key(VALIDATOR_KEY)
        spec = new_genesis(CHAIN_ID, [(proposer, 10)], genesis_time_ms=GENESIS_MS, params={
            "epoch_length_blocks": EPOCH_BLOCKS, "reward_history_epochs": 1,
            "settle_vehicles_per_block": per_block, "max_block_cost": 0})
        database = Database(root_dir / "data")
        store = ChainStore(database)
        fleet = Fleet(n, spec.params.get("h3_resolution", 7))
        log: list[str] = []
        t0 = time.perf_counter()
        store.init_genesis(spec, build=fleet.builder(store, 5_000, log))
        build_s = time.perf_counter() - t0
        Pruner(store, 1, pace=False).sweep()
        now = [GENESIS_MS / 1000 + 1]

        def clock() -> float:
            now[0] += 1.0
            return now[0]

        app = Application(store, Mempool(CHAIN_ID, min_fee=0), attestation_pool=_Attestations(), clock=clock)
        profiler = None
        if profile:
            import cProfile

            profiler = cProfile.Profile()

        def block(measured: bool = False) -> float:
            h = store.head_height + 1
            if measured and profiler is not None:
                profiler.enable()
            c0 = time.thread_time()
            value = app.propose(h, proposer)
            cpu = time.thread_time() - c0
            if measured and profiler is not None:
                profiler.disable()
            app.commit(h, value, EMPTY_COMMIT)
            return cpu

        empties = []
        while store.head_height < EPOCH_BLOCKS - 1:
            empties.append(block())
        rows: list[tuple[float, tuple[int, int, int, int]]] = []  # (cpu, steps by kind)
        while not progress(app.head_state())[3] or progress(app.head_state())[3] < n + 1:
            before = progress(app.head_state())
            cpu = block(measured=True)
            after = progress(app.head_state())
            steps = tuple(a - b for a, b in zip(after, before, strict=True))
            if any(steps):
                rows.append((cpu, steps))  # type: ignore[arg-type]
            else:
                empties.append(cpu)
        empty = statistics.median(empties)
        if profiler is not None:
            import pstats

            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return {"n": n, "build_s": build_s, "empty": empty, "rows": rows}
    finally:
        shutil.rmtree(root_dir, ignore_errors=True)


def per_step(rows: list[tuple[float, tuple[int, ...]]], empty: float, kind: int) -> tuple[float, float, int]:
    """(median, worst) CPU per step beyond an empty block of the blocks doing only steps of
    ``kind`` (0 scoring, 1 paying, 3 clearing), and how many such blocks."""
    only = [(c - empty) / s[kind] for c, s in rows if s[kind] and sum(s) - s[kind] <= 1]
    if not only:
        return 0.0, 0.0, 0
    return statistics.median(only), max(only), len(only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=5_000)
    parser.add_argument("--per-block", type=int, default=250)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args([] if __name__ != "__main__" else None)
    load0 = os.getloadavg()
    r = run(args.vehicles, args.per_block, args.profile)
    load1 = os.getloadavg()
    print(f"bench_settle: {r['n']:,} vehicles (built in {r['build_s']:.1f} s), "
          f"{args.per_block} steps a block; empty block {r['empty'] * 1e3:.1f} ms CPU")
    for name, kind in (("scoring", 0), ("paying", 1), ("clearing", 3)):
        med, worst, blocks = per_step(r["rows"], r["empty"], kind)
        weight = 2 if kind == 3 else 1  # clearing is charged rewards.CLEAR_STEPS steps an entry
        largest = max((c for c, s in r["rows"] if s[kind]), default=0.0)
        print(f"  {name:9s} {blocks:3d} blocks: per step beyond empty median {med * 1e6 / weight:6.0f} us, "
              f"worst {worst * 1e6 / weight:6.0f} us (charged per step); largest block {largest * 1e3:.0f} ms "
              f"= {largest / r['empty']:.0f}x empty")
    print(f"  load average {load0[0]:.1f} at start, {load1[0]:.1f} at end")


if __name__ == "__main__":
    main()
