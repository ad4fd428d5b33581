"""Finality under load: a four-validator loopback devnet with the default consensus
timeouts, transfers submitted at a steady rate to every node in turn, and the time from
submission until the receipt is visible on the node it was submitted to (a ``newHeads``
notification carrying the transaction's block). Prints p50/p95 finality and blocks per
second, with a single-validator node measured the same way in the same run as the
baseline, and the configured minimum block interval.

    python -m bench.bench_consensus [--rate 8] [--duration 40]

Goal: p50 finality under 1.5 s with four validators on one 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account

from devnet.launcher import Member, prepare, start, stop
from genesis.devnet import dev_accounts
from node.config import Config, ConsensusSection

CHAIN_ID = 7077
SENDERS = 8  # dev accounts used as senders (account 0 funds nothing here; all have 10k)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rpc(url: str, method: str, params: list | None = None, timeout: float = 5.0):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    req = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        doc = json.loads(resp.read())
    if "error" in doc:
        raise RuntimeError(doc["error"])
    return doc["result"]


def wait_rpc(urls: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            try:
                rpc(url, "eth_chainId", timeout=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} did not come up") from None
                time.sleep(0.2)


@dataclass
class HeadWatcher:
    """Follows one node's ``newHeads`` over WebSocket and notes when each transaction's
    block became visible there (the notification is sent after the commit is durable)."""

    url: str
    seen_tx: dict[str, float] = field(default_factory=dict)
    block_times: list[tuple[int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from websockets.sync.client import connect

        ws_url = self.url.replace("http://", "ws://")
        with connect(ws_url, max_size=None) as ws:
            ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                "params": ["newHeads"]}))
            ws.recv()  # the subscription id
            while not self.stop.is_set():
                try:
                    doc = json.loads(ws.recv(timeout=0.5))
                except TimeoutError:
                    continue
                now = time.monotonic()
                head = doc["params"]["result"]
                height = int(head["number"], 16)
                self.block_times.append((height, now))
                block = rpc(self.url, "eth_getBlockByNumber", [head["number"], False])
                for tx_hash in block["transactions"]:
                    self.seen_tx.setdefault(tx_hash, now)


@dataclass
class Result:
    finality: list[float]
    lost: int
    blocks_per_s: float
    txs: int


def measure(urls: list[str], rate: float, duration: float) -> Result:
    """Submit transfers at ``rate`` per second for ``duration`` s round-robin over ``urls``;
    wait for them to be final; return finality times (receipt visible where submitted)."""
    watchers = [HeadWatcher(url) for url in urls]
    threads = [threading.Thread(target=w.run, daemon=True) for w in watchers]
    for t in threads:
        t.start()
    time.sleep(1.0)
    senders = dev_accounts()[:SENDERS]
    nonces = [int(rpc(urls[0], "eth_getTransactionCount", ["0x" + a.hex(), "pending"]), 16)
              for a, _ in senders]
    recipient = Account.create().address
    submitted: list[tuple[str, int, float]] = []  # tx hash, node index, time
    interval = 1.0 / rate
    start_at = time.monotonic()
    i = 0
    while time.monotonic() - start_at < duration:
        sender = i % SENDERS
        node = i % len(urls)
        tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonces[sender], "to": recipient, "value": 1,
              "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
        raw = Account.sign_transaction(tx, senders[sender][1]).raw_transaction
        t0 = time.monotonic()
        tx_hash = rpc(urls[node], "eth_sendRawTransaction", ["0x" + raw.hex()])
        submitted.append((tx_hash, node, t0))
        nonces[sender] += 1
        i += 1
        time.sleep(max(0.0, start_at + i * interval - time.monotonic()))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(h in watchers[n].seen_tx for h, n, _ in submitted):
            break
        time.sleep(0.2)
    for w in watchers:
        w.stop.set()
    for t in threads:
        t.join(2)
    finality = [watchers[n].seen_tx[h] - t0 for h, n, t0 in submitted if h in watchers[n].seen_tx]
    blocks = [t for h, t in watchers[0].block_times if start_at <= t <= start_at + duration]
    return Result(finality, len(submitted) - len(finality), len(blocks) / duration, len(submitted))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def single_validator(root: Path) -> tuple[list[str], list[subprocess.Popen]]:
    """One validator on its own chain with the same (default) config."""
    home = root / "single"
    subprocess.run([sys.executable, "-m", "node.cli", "init", "--home", str(home)], check=True,
                   capture_output=True)
    rpc_port = free_port()
    log = open(home / "node.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "node", "start", "--home", str(home), "--rpc-port",
         str(rpc_port), "--p2p-port", str(free_port())],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return [f"http://127.0.0.1:{rpc_port}"], [proc]


def report(name: str, r: Result) -> None:
    if not r.finality:
        print(f"{name}: nothing finalized")
        return
    print(f"{name}: {r.txs} txs, finality p50 {statistics.median(r.finality):.2f} s, "
          f"p95 {percentile(r.finality, 0.95):.2f} s, max {max(r.finality):.2f} s, "
          f"{r.blocks_per_s:.2f} blocks/s, lost {r.lost}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_consensus")
    p.add_argument("--rate", type=float, default=8.0, help="transactions per second, all nodes")
    p.add_argument("--duration", type=float, default=40.0, help="seconds of load per network")
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--keep", action="store_true", help="keep the node homes and logs")
    args = p.parse_args(argv or [])
    defaults = ConsensusSection()
    print(f"timeouts: propose {defaults.timeout_propose_ms} ms, prevote "
          f"{defaults.timeout_prevote_ms} ms, precommit {defaults.timeout_precommit_ms} ms "
          f"(+{defaults.timeout_delta_ms} ms per round), commit wait {defaults.commit_wait_ms} ms, "
          f"block interval {defaults.block_interval_ms} ms; load {args.rate:g} tx/s for "
          f"{args.duration:g} s")
    root = Path(tempfile.mkdtemp(prefix="motus-bench-consensus-"))
    procs: list[subprocess.Popen] = []
    try:
        ports = [(free_port(), free_port()) for _ in range(args.validators)]
        members: list[Member] = prepare(root / "devnet", args.validators, 0, 0, CHAIN_ID,
                                        ports=ports)
        assert Config.load(members[0].home.config).consensus == defaults
        start(members, log_level="warning")
        procs = [m.proc for m in members if m.proc is not None]
        urls = [m.url for m in members]
        wait_rpc(urls)
        while int(rpc(urls[0], "eth_blockNumber"), 16) < 2:  # consensus is running
            time.sleep(0.2)
        multi = measure(urls, args.rate, args.duration)
        stop(procs)
        procs = []
        single_urls, procs = single_validator(root)
        wait_rpc(single_urls)
        while int(rpc(single_urls[0], "eth_blockNumber"), 16) < 2:
            time.sleep(0.2)
        single = measure(single_urls, args.rate, min(args.duration, 20.0))
    finally:
        stop(procs)
        if args.keep:
            print(f"homes and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(f"{args.validators} validators", multi)
    report("1 validator   ", single)
    if multi.finality and single.finality:
        p50 = statistics.median(multi.finality)
        print(f"ratio p50 {args.validators} validators / 1 validator: "
              f"{p50 / statistics.median(single.finality):.2f}; p50 / block interval: "
              f"{p50 / (defaults.block_interval_ms / 1000):.2f} (goal: p50 < 1.5 s)")


if __name__ == "__main__":
    main(sys.argv[1:])
