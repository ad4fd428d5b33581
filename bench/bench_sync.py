"""Block sync: a late node catching up N blocks from a peer, against raw block execution.

A single validator makes N blocks quickly (50 ms interval, transfers submitted
throughout), then is restarted with a very long interval so the head stays put. A fresh
non-validator with the same genesis bootstraps to it and syncs (``/motus/blocks/1``,
each block's commit verified against its validator set, then executed and committed).
The baseline replays the same blocks with ``Application.commit`` on an in-process store,
in the same run, so the ratio shows what networking and commit checks cost.

    python -m bench.bench_sync [--blocks 300] [--tx-rate 60]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from eth_account import Account

from bench.bench_consensus import CHAIN_ID, free_port, rpc, wait_rpc
from codec.files import write_atomic
from devnet.launcher import stop
from genesis.devnet import dev_accounts
from genesis.spec import GenesisSpec
from node.app import Application
from node.config import Config
from node.db import Database
from node.mempool import Mempool
from node.store import ChainStore
from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of

MOTUS = [sys.executable, "-m", "cli.main"]


def init_home(home: Path, genesis: Path | None, **consensus: int) -> None:
    cmd = [*MOTUS, "init", "--home", str(home)]
    if genesis is not None:
        cmd += ["--genesis", str(genesis)]
    subprocess.run(cmd, check=True, capture_output=True)
    cfg = Config.load(home / "config.toml")
    for key, value in consensus.items():
        setattr(cfg.consensus, key, value)
    write_atomic(home / "config.toml", cfg.to_toml().encode(), mode=0o644)


def set_block_interval(home: Path, interval_ms: int) -> None:
    cfg = Config.load(home / "config.toml")
    cfg.consensus.block_interval_ms = interval_ms
    write_atomic(home / "config.toml", cfg.to_toml().encode(), mode=0o644)


def launch(home: Path, rpc_port: int, p2p_port: int) -> subprocess.Popen:
    log = open(home / "node.log", "ab")
    return subprocess.Popen(
        [*MOTUS, "node", "start", "--home", str(home), "--rpc-port", str(rpc_port),
         "--p2p-port", str(p2p_port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def make_chain(url: str, blocks: int, tx_rate: float) -> int:
    """Submit transfers until the node's head reaches ``blocks``; returns transactions sent."""
    senders = dev_accounts()[:8]
    nonces = [int(rpc(url, "eth_getTransactionCount", ["0x" + a.hex(), "pending"]), 16)
              for a, _ in senders]
    recipient = Account.create().address
    sent = 0
    while int(rpc(url, "eth_blockNumber"), 16) < blocks:
        for _ in range(max(1, int(tx_rate / 10))):
            s = sent % len(senders)
            tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonces[s], "to": recipient, "value": 1,
                  "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
            raw = Account.sign_transaction(tx, senders[s][1]).raw_transaction
            try:
                rpc(url, "eth_sendRawTransaction", ["0x" + raw.hex()])
                nonces[s] += 1
                sent += 1
            except RuntimeError:
                time.sleep(0.05)  # pool full for that sender: let blocks drain it
        time.sleep(0.1)
    return sent


def replay(source: Path, genesis: Path, upto: int) -> tuple[float, int]:
    """Blocks per second of ``Application.commit`` re-executing blocks 1..``upto`` of the
    node at ``source`` on a fresh in-process store; also returns the transactions seen."""
    src = Database(source / "data")
    blocks = []
    try:
        store = ChainStore(src)
        for h in range(1, upto + 1):
            raw, commit = store.raw_block(h), store.commit_at(h)
            assert raw is not None and commit is not None
            blocks.append((raw, commit))
    finally:
        src.close()
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(tmp)
        store = ChainStore(database)
        store.init_genesis(GenesisSpec.load(genesis))
        app = Application(store, Mempool(CHAIN_ID, min_fee=0))
        txs = 0
        t0 = time.perf_counter()
        for h, (raw, commit) in enumerate(blocks, start=1):
            txs += len(app.commit(h, raw, commit).transactions)
        elapsed = time.perf_counter() - t0
        database.close()
    return upto / elapsed, txs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_sync")
    p.add_argument("--blocks", type=int, default=300)
    p.add_argument("--tx-rate", type=float, default=60.0, help="transfers per second while building")
    p.add_argument("--keep", action="store_true", help="keep the node homes and logs")
    args = p.parse_args(argv or [])
    root = Path(tempfile.mkdtemp(prefix="motus-bench-sync-"))
    procs: list[subprocess.Popen] = []
    try:
        source = root / "source"
        init_home(source, None, block_interval_ms=50)
        rpc_port, p2p_port = free_port(), free_port()
        procs = [launch(source, rpc_port, p2p_port)]
        url = f"http://127.0.0.1:{rpc_port}"
        wait_rpc([url])
        t0 = time.monotonic()
        sent = make_chain(url, args.blocks, args.tx_rate)
        print(f"built {args.blocks} blocks with {sent} transfers in {time.monotonic() - t0:.1f} s")
        stop(procs)
        # Restart it with a long interval: the head must stay put while the peer syncs.
        set_block_interval(source, 3_600_000)
        procs = [launch(source, rpc_port, p2p_port)]
        wait_rpc([url])
        time.sleep(2.0)  # it commits at most one more block on restart
        target = int(rpc(url, "eth_blockNumber"), 16)
        peer_id = peer_id_of(load_or_create_node_key(source / "keys" / "node.key"))
        late = root / "late"
        init_home(late, source / "genesis.json")
        cfg = Config.load(late / "config.toml")
        cfg.p2p.bootstrap = [node_multiaddr("127.0.0.1", p2p_port, peer_id)]
        write_atomic(late / "config.toml", cfg.to_toml().encode(), mode=0o644)
        late_rpc = free_port()
        t_launch = time.monotonic()
        procs.append(launch(late, late_rpc, free_port()))
        late_url = f"http://127.0.0.1:{late_rpc}"
        wait_rpc([late_url])
        t_up = time.monotonic()
        done = threading.Event()
        while not done.is_set():
            if int(rpc(late_url, "eth_blockNumber"), 16) >= target:
                done.set()
            else:
                time.sleep(0.05)
        t_synced = time.monotonic()
        stop(procs)
        procs = []
        log = (late / "node.log").read_text()
        rounds = re.findall(r"block sync: committed (\d+) blocks in ([\d.]+) s", log)
        raw_rate, txs = replay(source, source / "genesis.json", target)
    finally:
        stop(procs)
        if args.keep:
            print(f"homes and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    end_to_end = target / (t_synced - t_up)
    synced = sum(int(n) for n, _ in rounds)
    sync_rate = synced / sum(float(s) for _, s in rounds) if rounds else 0.0
    print(f"late node reached {target} blocks ({txs} txs) {t_synced - t_up:.2f} s after its RPC "
          f"came up ({t_synced - t_launch:.2f} s after launch); sync rounds (blocks, s): {rounds}")
    print(f"sync (fetch + verify commit + execute + commit): {sync_rate:7.1f} blocks/s")
    print(f"  end to end, p2p start and peer discovery too: {end_to_end:7.1f} blocks/s")
    print(f"raw Application.commit replay, in-process:     {raw_rate:7.1f} blocks/s")
    print(f"ratio sync / raw: {sync_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
