"""Disk per account and per transfer, archive against pruned (node/prune.py), in the same run.

A genesis funds ``--accounts`` accounts; the same signed transfers (random funded senders
to random existing accounts, ``--txs`` a block, ``--blocks`` blocks) are committed by the
node's own ``Application`` on two real LevelDB stores: one archive, one pruned (window
``--keep`` states, a sweep whenever due, run synchronously after the block so its CPU is
measured). Sizes are the trie's logical bytes (keys + values under prefix ``t``, what a
fully compacted LevelDB holds, before its compression) and the directory's bytes on disk
after a full compaction. Prints the ratio pruned/archive, and the sweeps' CPU per block
against the CPU of committing a block (the same-run baseline).

    python -m bench.bench_disk [--accounts 1000] [--blocks 2000] [--txs 10] [--keep 128] [--growth 50]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from eth_account import Account
from eth_hash.auto import keccak

from consensus.crypto import address_of_private_key
from genesis.devnet import new_genesis
from node.app import Application
from node.block import EMPTY_COMMIT
from node.db import TRIE, Database
from node.mempool import Mempool
from node.prune import Pruner
from node.store import ChainStore

CHAIN_ID = 7077
VALIDATOR = b"\x11" * 20
SENDERS = 200


def trie_bytes(store: ChainStore) -> tuple[int, int]:
    """(keys, bytes) under prefix ``t``."""
    n = size = 0
    for k, v in store.db.iterator(prefix=TRIE):
        n += 1
        size += len(k) + len(v)
    return n, size


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_disk")
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--blocks", type=int, default=2000)
    ap.add_argument("--txs", type=int, default=10, help="transfers a block")
    ap.add_argument("--keep", type=int, default=128, help="storage.keep_states")
    ap.add_argument("--sweep-min-mib", type=float, default=1.0,
                    help="storage.sweep_min_bytes in MiB (the node's default is 64: at these "
                         "sizes it would sweep once or never; 1 shows the steady state)")
    ap.add_argument("--growth", type=int, default=50, help="storage.sweep_growth_percent")
    args = ap.parse_args(argv or [])

    rng = random.Random(15)
    keys = [keccak(b"bench_disk sender %d" % i) for i in range(SENDERS)]
    senders = [address_of_private_key(k) for k in keys]
    others = [keccak(b"bench_disk account %d" % i)[:20] for i in range(max(0, args.accounts - SENDERS))]
    everyone = senders + others
    alloc = {a: 10**24 for a in everyone}
    t0 = time.perf_counter()
    nonces = [0] * SENDERS
    blocks: list[list[bytes]] = []
    for _ in range(args.blocks):
        txs = []
        for s in rng.sample(range(SENDERS), min(args.txs, SENDERS)):
            to = everyone[rng.randrange(len(everyone))]
            tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonces[s], "to": to, "value": 1, "gas": 21_000,
                  "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
            txs.append(bytes(Account.sign_transaction(tx, keys[s]).raw_transaction))
            nonces[s] += 1
        blocks.append(txs)
    transfers = sum(len(b) for b in blocks)
    print(f"signed {transfers} transfers among {len(everyone)} accounts in {time.perf_counter() - t0:.1f} s")

    root = Path(tempfile.mkdtemp(prefix="motus-bench-disk-"))
    spec = new_genesis(CHAIN_ID, [(VALIDATOR, 10)], fund_dev_accounts=False, extra_alloc=alloc,
                       genesis_time_ms=int(time.time() * 1000) - 3_600_000)
    results = {}
    try:
        for mode in ("archive", "pruned"):
            path = root / mode
            database = Database(path)
            store = ChainStore(database)
            store.init_genesis(spec)
            genesis_keys, genesis_bytes = trie_bytes(store)
            app = Application(store, Mempool(CHAIN_ID, min_fee=0, max_per_sender=64))
            pruner = Pruner(store, args.keep, sweep_min_bytes=int(args.sweep_min_mib * 2**20),
                            sweep_growth_percent=args.growth, pace=False) if mode == "pruned" else None
            commit_cpu = sweep_cpu = 0.0
            sweeps = 0
            t_start = time.perf_counter()
            for h, txs in enumerate(blocks, start=1):
                c0 = time.thread_time()
                for raw in txs:
                    app.submit_transaction(raw, gossip=False)
                app.commit(h, app.propose(h, VALIDATOR), EMPTY_COMMIT)
                commit_cpu += time.thread_time() - c0
                if pruner is not None and pruner.due():
                    report = pruner.sweep()
                    sweep_cpu += report.mark_s + report.sweep_s
                    sweeps += 1
            wall = time.perf_counter() - t_start
            n_keys, n_bytes = trie_bytes(store)
            database.db.compact_range()
            database.close()
            results[mode] = dict(genesis_bytes=genesis_bytes, genesis_keys=genesis_keys, keys=n_keys,
                                 bytes=n_bytes, disk=dir_bytes(path), commit_cpu=commit_cpu,
                                 sweep_cpu=sweep_cpu, sweeps=sweeps, wall=wall)
            shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    a, p = results["archive"], results["pruned"]
    accounts = len(everyone)
    load = os.getloadavg()[0]
    print(f"accounts {accounts}, blocks {args.blocks} x {args.txs} transfers, keep_states {args.keep}, "
          f"sweep_min {args.sweep_min_mib} MiB, growth {args.growth} %, load average {load:.1f}")
    print(f"genesis trie: {a['genesis_bytes'] / accounts:.0f} bytes/account ({a['genesis_keys']} keys)")
    for name, r in (("archive", a), ("pruned", p)):
        grown = r["bytes"] - r["genesis_bytes"]
        print(f"{name:8} trie {r['bytes'] / 1e6:8.2f} MB ({r['keys']} keys), grown {grown / transfers:7.1f} "
              f"bytes/transfer, on disk {r['disk'] / 1e6:8.2f} MB (compacted), commit CPU "
              f"{1000 * r['commit_cpu'] / args.blocks:.2f} ms/block, wall {r['wall']:.1f} s")
    print(f"ratio pruned/archive: trie {p['bytes'] / a['bytes']:.3f}, growth "
          f"{(p['bytes'] - p['genesis_bytes']) / max(1, a['bytes'] - a['genesis_bytes']):.3f}, "
          f"on disk {p['disk'] / a['disk']:.3f}")
    print(f"sweeps {p['sweeps']}, sweep CPU {1000 * p['sweep_cpu'] / args.blocks:.2f} ms/block = "
          f"{p['sweep_cpu'] / p['commit_cpu']:.3f} of commit CPU; per sweep "
          f"{p['sweep_cpu'] / max(1, p['sweeps']):.2f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
