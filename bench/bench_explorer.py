"""What the explorer's indexes (node/explorer_index.py) add to a block's commit: the
synced LevelDB batch the store writes for a block anyway (block bytes, one location key
per transaction and per attestation, the extras), timed against the same batch with
``index_block`` added, on the same blocks in the same run. Prints both times, the
ratio, and the bytes the index adds per transaction and per attestation.

    python -m bench bench_explorer [--blocks 20] [--txs 200] [--attestations 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass

import rlp
from eth_hash.auto import keccak

from devnet.device import Device
from node import explorer_index
from node.db import Database
from vm.attestation import compute_attestation_id

CHAIN_ID = 7077
HOME = (48.137, 11.575)


@dataclass
class Extra:
    tx_hash: bytes
    sender: bytes


@dataclass
class Tx:
    to: bytes


def make_blocks(blocks: int, txs: int, atts: int) -> list[tuple[list[Extra], list[Tx], list[bytes]]]:
    devices = [Device.generate(CHAIN_ID, 7, seed=b"bench explorer %d" % i) for i in range(50)]
    out = []
    for b in range(blocks):
        extras = [Extra(keccak(b"tx %d %d" % (b, i)), keccak(b"s %d" % (i % 64))[:20]) for i in range(txs)]
        to = [Tx(keccak(b"r %d" % (i % 16))[:20]) for i in range(txs)]
        raws = []
        for i in range(atts):
            dev = devices[i % len(devices)]
            raws.append(dev.attest(vehicle_id=i % 50 + 1, timestamp_ms=1_700_000_000_000 + 1000 * (b * atts + i),
                                   lat=HOME[0] + 0.01 * (i % 20), lon=HOME[1] + 0.01 * (i // 20 % 20),
                                   odometer_m=1000 * (b * atts + i)).raw)
        out.append((extras, to, raws))
    return out


def commit(db: Database, height: int, block: tuple, with_index: bool) -> int:
    """Write one block's store records (and the index); the bytes the index added."""
    extras, txs, raws = block
    added = 0

    class Counting:
        def __init__(self, wb):
            self.wb = wb

        def put(self, key: bytes, value: bytes) -> None:
            nonlocal added
            added += len(key) + len(value)
            self.wb.put(key, value)

    with db.batch() as wb:
        wb.put(b"b" + keccak(b"%d" % height), rlp.encode([[bytes(r) for r in raws], [e.tx_hash for e in extras]]))
        for i, e in enumerate(extras):
            wb.put(b"x" + e.tx_hash, rlp.encode([height, i]))
        for i, raw in enumerate(raws):
            wb.put(b"a" + compute_attestation_id(raw), rlp.encode([height, i]))
        if with_index:
            explorer_index.index_block(db, Counting(wb), height, height // 30, extras, txs, raws)
    return added


def run(blocks: list, with_index: bool) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(tmp)
        t0 = time.perf_counter()
        added = sum(commit(db, h + 1, blk, with_index) for h, blk in enumerate(blocks))
        elapsed = time.perf_counter() - t0
        db.close()
    return elapsed, added


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_explorer")
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--txs", type=int, default=200)
    parser.add_argument("--attestations", type=int, default=1000)
    args = parser.parse_args(argv or [])
    blocks = make_blocks(args.blocks, args.txs, args.attestations)
    base, _ = run(blocks, False)
    indexed, added = run(blocks, True)
    base2, _ = run(blocks, False)  # again: the first run warms caches
    base = min(base, base2)
    n_tx, n_att = args.blocks * args.txs, args.blocks * args.attestations
    print(f"blocks {args.blocks} x ({args.txs} txs, {args.attestations} attestations); "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"store batch alone: {1000 * base / args.blocks:.2f} ms/block; with the explorer index: "
          f"{1000 * indexed / args.blocks:.2f} ms/block; ratio {indexed / base:.2f}")
    print(f"index: {added / args.blocks / 1024:.1f} KiB/block written "
          f"(132 B per transaction with a recipient, 66 B without; 26 B per distinct cell per block and epoch); "
          f"{1e6 * (indexed - base) / (n_tx + n_att):.1f} us per transaction or attestation")


if __name__ == "__main__":
    main()
