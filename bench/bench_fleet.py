"""A fleet's store measured at 100,000 and 1,000,000 vehicles rather than extrapolated
(docs/storage.md, "Costs per vehicle, account and block"; docs/benchmarks.md).

For each size N the fleet of ``bench.bench_costs.Fleet`` (vehicle, owner account, paired
device, twelve earlier readings each) is built by the fast builder (``bench.fleet_build``)
into ``DIR/fleet-N``, the store ``bench.bench_attest_block --fleet N --keep-dir DIR``
reuses (and an existing one is reused here). Then:

1. **Bytes**: every state entry of the store by kind (trie nodes ``t``, flat accounts
   ``s``, flat slots ``o``: key + value), per vehicle beyond the genesis state of the
   same spec, and the LevelDB directory after a full compaction; baseline: a plain
   account's bytes in the same store (its account-trie share plus its flat entry).
2. **Start**: a fresh process does what a node does with its store when it starts
   (``Database``, ``ChainStore``, the head state, ``warm_system_storage``): wall and CPU
   time, peak RSS; baseline: the same process on the genesis-only store.
3. ``--check``: ``motus db check`` (``node.dbcheck.check_database``) in a fresh process:
   wall, CPU, peak RSS (and of it the anonymous memory, sampled: RSS also counts LevelDB's
   mapped tables), nodes checked; baseline: the CPU per node at the smallest size.
4. ``--settle K``: the epoch settlement's CPU per vehicle-step: blocks through the node's
   ``Application`` to the end of epoch 0 (600 empty blocks), then the boundary block and
   K settlement blocks; baseline: an empty block of the same run. This commits blocks:
   the store is no longer at genesis afterwards (run it last).

    python -m bench.bench_fleet [--vehicles 100000,1000000] [--dir DIR] [--check]
        [--settle K] [--batch 20000]      (make bench-fleet: both sizes, kept in FLEET_DIR)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import bench_costs as costs
from bench.fleet_build import BuildReport
from genesis.devnet import new_genesis
from node.db import FLAT_ACCOUNT, FLAT_SLOT, TRIE, Database
from node.store import ChainStore

KINDS = {TRIE: "trie nodes", FLAT_ACCOUNT: "flat accounts", FLAT_SLOT: "flat slots"}


def spec():
    """The spec of ``bench_attest_block --fleet`` (its stores are these)."""
    proposer = costs.address_of_private_key(costs.VALIDATOR_KEY)
    return new_genesis(costs.CHAIN_ID, [(proposer, 10)], genesis_time_ms=costs.GENESIS_MS)


def build(path: Path, n: int, batch: int) -> dict[str, Any]:
    """Build (or reopen) the store of ``n`` vehicles; the build's figures."""
    meta = path.with_suffix(".build.json")
    if path.exists():
        out = json.loads(meta.read_text()) if meta.exists() else {}
        out["reused"] = True
        return out
    s = spec()
    database = Database(path)
    try:
        store = ChainStore(database)
        report = BuildReport()
        log: list[str] = []
        load0 = os.getloadavg()[0]
        if n:
            store.init_genesis(s, build=costs.Fleet(n, s.params.get("h3_resolution", 7)).fast_builder(
                store, batch, log, report), flat_written=True)
        else:
            store.init_genesis(s)
        print("\n".join(log), flush=True)
        out = {"n": n, "wall_s": report.wall_s, "record_s": report.record_s,
               "write_s": report.write_s, "max_rss": report.max_rss,
               "load": [load0, os.getloadavg()[0]],
               "tries": {k: vars(v) for k, v in report.tries.items()}}
    finally:
        database.close()
    meta.write_text(json.dumps(out))
    return out


def state_bytes(path: Path) -> dict[str, Any]:
    """Entries and bytes (key + value) of the state by kind, the account trie's share per
    account, and the directory after a full compaction."""
    database = Database(path)
    try:
        out: dict[str, Any] = {}
        for prefix, name in KINDS.items():
            n = size = 0
            for k, v in database.db.iterator(prefix=prefix):
                n += 1
                size += len(k) + len(v)
            out[name] = (n, size)
        t0 = time.perf_counter()
        database.db.compact_range()
        out["compact_s"] = time.perf_counter() - t0
    finally:
        database.close()
    out["disk"] = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return out


_START = """
import json, resource, sys, time
t0, c0 = time.perf_counter(), time.process_time()
from node.db import Database
from node.store import ChainStore
from vm.state import warm_system_storage
from vm.db import OverlayDB
from vm.state import BlockEnv, make_state
t1, c1 = time.perf_counter(), time.process_time()
database = Database(sys.argv[1])
store = ChainStore(database)
head = store.head
state = make_state(OverlayDB(store.state_db), head.state_root, BlockEnv(
    head.chain_id, head.height + 1, head.timestamp_ms + 1000, head.proposer, head.gas_limit,
    head.base_fee_per_gas, head.hash))
warmed = warm_system_storage(state)
t2, c2 = time.perf_counter(), time.process_time()
status = open("/proc/self/status").read()
kib = lambda name: int(status.split(name + ":")[1].split()[0]) * 1024
print(json.dumps({"import_wall": t1 - t0, "open_wall": t2 - t1, "open_cpu": c2 - c1,
                  "warmed": warmed, "rss": kib("VmRSS"), "anon": kib("RssAnon"), "file": kib("RssFile"),
                  "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "flat_whole": store.state_db.flat.root == head.state_root}))
database.close()
"""

_CHECK = """
import json, resource, sys, threading, time
from node.db import Database
from node.store import ChainStore
from node.dbcheck import check_database
peak_anon = [0]
def sample():  # the process's own memory, apart from LevelDB's mapped tables
    while True:
        status = open("/proc/self/status").read()
        peak_anon[0] = max(peak_anon[0], int(status.split("RssAnon:")[1].split()[0]) * 1024)
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
t0, c0 = time.perf_counter(), time.process_time()
database = Database(sys.argv[1])
report = check_database(ChainStore(database, rebuild_flat=False))
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "nodes": report.nodes, "ok": report.ok, "problems": report.problems[:3],
                  "oldest_nodes": report.oldest_nodes, "peak_anon": peak_anon[0],
                  "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
database.close()
"""


def child(code: str, path: Path) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter on the store at ``path``; its JSON answer."""
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", os.getcwd()))
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def settle(path: Path, blocks: int) -> dict[str, Any]:
    """Blocks to the end of epoch 0, the boundary block, ``blocks`` settlement blocks:
    the CPU of building each (``Application.propose``) and the steps each settled."""
    from node.app import Application
    from node.block import EMPTY_COMMIT
    from node.mempool import Mempool
    from vm.modules.params import get_param

    database = Database(path)
    try:
        store = ChainStore(database)
        now = [store.head.timestamp_ms / 1000 + 1]

        def clock() -> float:
            now[0] += 1.0
            return now[0]

        app = Application(store, Mempool(costs.CHAIN_ID, min_fee=0), attestation_pool=costs._Attestations(),
                          clock=clock)
        proposer = costs.address_of_private_key(costs.VALIDATOR_KEY)
        epoch_blocks = get_param(app.head_state(), "epoch_length_blocks")

        def block() -> float:
            h = store.head_height + 1
            c0 = time.thread_time()
            value = app.propose(h, proposer)
            cpu = time.thread_time() - c0
            app.commit(h, value, EMPTY_COMMIT)
            return cpu

        empty = []
        while store.head_height + 1 < epoch_blocks:
            empty.append(block())
        rows = []
        for _ in range(blocks + 1):
            before = costs.settled_steps(app.head_state())
            cpu = block()
            after = costs.settled_steps(app.head_state())
            rows.append((cpu, [a - b for a, b in zip(after, before, strict=True)]))
        empties = sorted(empty[-50:])
        return {"empty_cpu": empties[len(empties) // 2], "rows": rows,
                "per_block": get_param(app.head_state(), "settle_vehicles_per_block")}
    finally:
        database.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_fleet", description=__doc__.splitlines()[0])
    p.add_argument("--vehicles", type=lambda s: [int(x) for x in s.split(",")], default=[100_000],
                   help="comma-separated fleet sizes (1000000: ~6 GB of store)")
    p.add_argument("--dir", default=None,
                   help="keep the stores here and reuse them (default: a temporary directory)")
    p.add_argument("--batch", type=int, default=20_000)
    p.add_argument("--check", action="store_true", help="time motus db check on each store")
    p.add_argument("--settle", type=int, default=0, help="settlement blocks to time (commits blocks)")
    args = p.parse_args(argv or [])
    if args.dir is None:
        with tempfile.TemporaryDirectory(prefix="motus-bench-fleet-",
                                         dir=os.environ.get("MOTUS_BENCH_DIR")) as tmp:
            run(args, Path(tmp))
    else:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
        run(args, Path(args.dir))


def run(args: argparse.Namespace, root: Path) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)", flush=True)
    genesis = root / "fleet-0"
    build(genesis, 0, args.batch)
    base = state_bytes(genesis)
    base_start = child(_START, genesis)
    base_check = child(_CHECK, genesis) if args.check else None
    for n in args.vehicles:
        path = root / f"fleet-{n}"
        b = build(path, n, args.batch)
        print(f"--- {n:,} vehicles in {path} "
              f"({'reused' if b.get('reused') else 'built'}; build {b.get('wall_s', 0):.0f} s wall, "
              f"module calls {b.get('record_s', 0):.0f} s CPU, tries {b.get('write_s', 0):.0f} s CPU, "
              f"peak RSS {b.get('max_rss', 0) / 2**20:,.0f} MiB, load {b.get('load')})", flush=True)
        sb = state_bytes(path)
        accounts = sb["flat accounts"][0]
        acct = b.get("tries", {}).get("accounts")
        if acct:
            plain = acct["node_bytes"] / accounts + acct["entry_bytes"] / accounts
            print(f"  plain account (same store): account trie {acct['node_bytes'] / accounts:.0f} B "
                  f"+ flat entry {acct['entry_bytes'] / accounts:.0f} B = {plain:.0f} B")
            names = costs._trie_names()
            for key, t in b["tries"].items():
                if key != "accounts" and t["nodes"] > 1_000:
                    print(f"  {names.get(key, key):9s} trie {t['node_bytes'] / n:6.0f} B/vehicle "
                          f"({t['nodes'] / n:.2f} nodes), flat slots {t['entry_bytes'] / n:5.0f} B/vehicle "
                          f"({t['entries'] / n:.1f} slots)")
        total = sum(sb[k][1] for k in KINDS.values()) - sum(base[k][1] for k in KINDS.values())
        line = ", ".join(f"{k} {(sb[k][1] - base[k][1]) / n:.0f}" for k in KINDS.values())
        print(f"  state per vehicle (keys + values beyond genesis): {total / n:.0f} B ({line})"
              + (f" = {total / n / plain:.1f} x a plain account" if acct else ""))
        print(f"  LevelDB directory after a full compaction: {sb['disk'] / 1e9:.2f} GB = "
              f"{(sb['disk'] - base['disk']) / n:.0f} B/vehicle (compaction {sb['compact_s']:.0f} s)",
              flush=True)
        st = child(_START, path)
        print(f"  start (open the store, head state, warm-up of {st['warmed']:,} nodes): "
              f"{st['open_wall']:.2f} s wall, {st['open_cpu']:.2f} s CPU, RSS {st['rss'] / 2**20:.0f} MiB "
              f"(anonymous {st['anon'] / 2**20:.0f}, file-backed {st['file'] / 2**20:.0f}: LevelDB's mapped "
              f"tables; peak {st['max_rss'] / 2**20:.0f}); genesis-only store {base_start['open_wall']:.2f} s, "
              f"RSS {base_start['rss'] / 2**20:.0f} MiB (anonymous {base_start['anon'] / 2**20:.0f}): "
              f"x{st['open_wall'] / base_start['open_wall']:.1f} time, x{st['anon'] / base_start['anon']:.2f} "
              f"anonymous memory; flat snapshot whole: {st['flat_whole']}",
              flush=True)
        if args.check:
            ck = child(_CHECK, path)
            print(f"  motus db check: {ck['wall']:.0f} s wall, {ck['cpu']:.0f} s CPU, {ck['nodes']:,} nodes "
                  f"({ck['cpu'] / ck['nodes'] * 1e6:.1f} us CPU a node; oldest state {ck['oldest_nodes']:,} more), "
                  f"peak RSS {ck['max_rss'] / 2**20:,.0f} MiB (anonymous {ck['peak_anon'] / 2**20:,.0f}), "
                  f"ok={ck['ok']}; genesis-only store {base_check['cpu']:.2f} s CPU", flush=True)
        if args.settle:
            s = settle(path, args.settle)
            rows = s["rows"]
            steps = [sum(k) for _, k in rows]
            beyond = [(c - s["empty_cpu"]) / k for (c, _), k in zip(rows, steps, strict=True) if k]
            print(f"  settlement: empty block {s['empty_cpu'] * 1e3:.1f} ms CPU; boundary block "
                  f"{rows[0][0]:.3f} s ({steps[0]} steps); next {len(rows) - 1} blocks max "
                  f"{max(c for c, _ in rows[1:]):.3f} s, {len(beyond)} blocks with steps: "
                  f"{sorted(beyond)[len(beyond) // 2] * 1e6:.0f} us CPU per vehicle-step beyond an empty block "
                  f"(median); steps by phase {[k for _, k in rows]}", flush=True)
        print(f"  (load average {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
