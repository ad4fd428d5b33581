"""Finality and throughput under load: a four-validator loopback devnet with the default
consensus timeouts, transfers submitted at a steady rate to every node in turn, and the
time from submission until the receipt is visible on the node it was submitted to (a
``newHeads`` notification carrying the transaction's block). Prints the throughput
achieved, p50/p95 finality and blocks per second, with a single-validator node measured
the same way in the same run as the baseline, and, for the multi-validator devnet, the
bytes per second each node published on the consensus gossip topic during the load
(``motus_p2p_topic_published_bytes_total``) with the proposals it re-sent.

    python -m bench.bench_consensus [--rate 8] [--duration 40]
    python -m bench.bench_consensus --high-load          # 300 tx/s for 30 s
    python -m bench.bench_consensus --rate 300 --profile DIR   # nodes under cProfile

Transactions are signed before the load starts (by fresh accounts the bench funds first,
a few transactions per second each, so no sender nears the pool's per-sender limit) and
sent as JSON-RPC batch requests of ``eth_sendRawTransaction`` every 50 ms, so the client
is not what limits the rate.

Goal: p50 finality under 1.5 s with four validators on one 2-core machine, at several
hundred transactions per second.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from eth_account import Account

from devnet.launcher import Member, prepare, start, stop
from genesis.devnet import dev_accounts
from node.config import Config, ConsensusSection

CHAIN_ID = 7077
TICK_S = 0.05  # submission period: each node gets one batch request per tick
PER_SENDER_RATE = 4.0  # tx/s per sending account (the pool holds 64 per sender)
FUNDING = 50 * 10**18  # per load account, from the dev accounts
HIGH_LOAD_RATE = 300.0
HIGH_LOAD_DURATION = 30.0
WARMUP_S = 3.0  # throughput is counted from this long after the load starts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, doc: object, timeout: float = 10.0) -> object:
    req = urllib.request.Request(url, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def rpc(url: str, method: str, params: list | None = None, timeout: float = 5.0):
    doc = post(url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []},
               timeout)
    assert isinstance(doc, dict)
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


def wait_height(url: str, height: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while int(rpc(url, "eth_blockNumber"), 16) < height:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not reach height {height}")
        time.sleep(0.2)


def consensus_gossip(url: str) -> tuple[float, float]:
    """(payload bytes published on the consensus topic, proposals re-sent) so far,
    read from the node's ``GET /metrics``."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    published = resent = 0.0
    for line in text.splitlines():
        if line.startswith("motus_p2p_topic_published_bytes_total{") and "consensus" in line:
            published += float(line.rsplit(" ", 1)[1])
        elif line.startswith("motus_consensus_proposal_rebroadcasts_total"):
            resent += float(line.rsplit(" ", 1)[1])
    return published, resent


def sign_transfer(key: bytes, nonce: int, to: str, value: int) -> bytes:
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": to, "value": value,
          "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


@dataclass
class Load:
    """Accounts to fund and the transfers they will send, signed ahead of time."""

    accounts: list[tuple[str, bytes]]  # address, key
    txs: list[bytes]  # in submission order

    @classmethod
    def make(cls, rate: float, duration: float) -> Load:
        count = max(8, math.ceil(rate / PER_SENDER_RATE))
        accounts = []
        for _ in range(count):
            acct = Account.create()
            accounts.append((acct.address, bytes(acct.key)))
        recipient = Account.create().address
        total = int(rate * duration)
        txs = [sign_transfer(accounts[i % count][1], i // count, recipient, 1)
               for i in range(total)]
        return cls(accounts, txs)

    def fund(self, url: str) -> None:
        """Send each load account its funds from the dev accounts; wait until included."""
        devs = dev_accounts()
        nonces = {a: int(rpc(url, "eth_getTransactionCount", ["0x" + a.hex(), "pending"]), 16)
                  for a, _ in devs}
        hashes = []
        for i, (address, _) in enumerate(self.accounts):
            dev, key = devs[i % len(devs)]
            raw = sign_transfer(key, nonces[dev], address, FUNDING)
            nonces[dev] += 1
            hashes.append(rpc(url, "eth_sendRawTransaction", ["0x" + raw.hex()]))
        deadline = time.monotonic() + 60
        for tx_hash in hashes:
            while rpc(url, "eth_getTransactionReceipt", [tx_hash]) is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("funding transactions were not included")
                time.sleep(0.2)


@dataclass
class HeadWatcher:
    """Follows one node's ``newHeads`` over WebSocket and notes when each transaction's
    block became visible there (the notification is sent after the commit is durable)."""

    url: str
    seen_tx: dict[str, float] = field(default_factory=dict)
    block_times: list[tuple[int, float, int]] = field(default_factory=list)  # height, t, txs
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from websockets.exceptions import ConnectionClosed
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
                except ConnectionClosed:
                    return  # the node stopped
                now = time.monotonic()
                head = doc["params"]["result"]
                height = int(head["number"], 16)
                block = rpc(self.url, "eth_getBlockByNumber", [head["number"], False])
                self.block_times.append((height, now, len(block["transactions"])))
                for tx_hash in block["transactions"]:
                    self.seen_tx.setdefault(tx_hash, now)


@dataclass
class Result:
    finality: list[float]
    lost: int
    blocks_per_s: float
    txs: int
    throughput: float  # transactions included per second of load
    refused: Counter[str]
    late_rounds: int  # blocks of the load decided in a round after 0 (a failed round)
    offered: float  # transactions per second the client managed to send


def measure(urls: list[str], load: Load, rate: float) -> Result:
    """Submit ``load.txs`` at ``rate`` per second round-robin over ``urls`` (one batch
    request per node every tick); wait for them to be final; return finality times
    (receipt visible where submitted) and the throughput."""
    watchers = [HeadWatcher(url) for url in urls]
    threads = [threading.Thread(target=w.run, daemon=True) for w in watchers]
    for t in threads:
        t.start()
    time.sleep(1.0)
    submitted: list[tuple[str, int, float]] = []  # tx hash, node index, time
    refused: Counter[str] = Counter()
    first_height = int(rpc(urls[0], "eth_blockNumber"), 16) + 1
    start_wall = time.time()
    start_at = time.monotonic()
    lock = threading.Lock()

    def submit(node: int) -> None:
        """Send node ``node``'s share (every len(urls)-th transaction) on its own
        schedule, so one slow answer does not hold back the other nodes' load."""
        mine = list(range(node, len(load.txs), len(urls)))
        sent = 0
        tick = 0
        while sent < len(mine):
            tick += 1
            due = int(rate * tick * TICK_S)  # global index the load has reached
            raws = []
            while sent < len(mine) and mine[sent] < due:
                raws.append(load.txs[mine[sent]])
                sent += 1
            if raws:
                batch = [{"jsonrpc": "2.0", "id": j, "method": "eth_sendRawTransaction",
                          "params": ["0x" + raw.hex()]} for j, raw in enumerate(raws)]
                t0 = time.monotonic()
                try:
                    answers = post(urls[node], batch)
                except urllib.error.HTTPError as exc:  # 429: over the RPC rate limit
                    with lock:
                        refused[f"http_{exc.code}"] += len(batch)
                    answers = []
                assert isinstance(answers, list)
                with lock:
                    for answer in answers:
                        if "result" in answer:
                            submitted.append((answer["result"], node, t0))
                        else:
                            refused[str(answer["error"].get("data", {}).get("reason")
                                        or answer["error"]["message"])] += 1
            time.sleep(max(0.0, start_at + tick * TICK_S - time.monotonic()))

    submitters = [threading.Thread(target=submit, args=(n,)) for n in range(len(urls))]
    for t in submitters:
        t.start()
    for t in submitters:
        t.join()
    load_s = time.monotonic() - start_at
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
    blocks = [t for _, t, _ in watchers[0].block_times if start_at <= t <= start_at + load_s]
    # Throughput: load transactions in the blocks proposed (header timestamp) during the
    # load, after a warm-up of WARMUP_S, per second. Read from the chain afterwards, so a
    # slow watcher cannot skew it. A chain that keeps up takes the offered rate; one
    # that does not takes less and its pools grow.
    ours = {h for h, _, _ in submitted}
    window = (start_wall + min(WARMUP_S, load_s / 4), start_wall + load_s)
    taken = late_rounds = 0
    for height in range(first_height, int(rpc(urls[0], "eth_blockNumber"), 16) + 1):
        proposed = rpc(urls[0], "motus_getHeader", [height])["timestampMs"] / 1000
        if window[0] <= proposed <= window[1]:
            block = rpc(urls[0], "eth_getBlockByNumber", [hex(height), False])
            taken += sum(1 for h in block["transactions"] if h in ours)
        if proposed <= start_wall + load_s + 2:
            late_rounds += rpc(urls[0], "motus_getCommit", [height])["round"] > 0
    return Result(finality, len(submitted) - len(finality), len(blocks) / load_s,
                  len(submitted), taken / (window[1] - window[0]), refused, late_rounds,
                  len(load.txs) / load_s)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lift_rpc_rate_limit(config_path: Path) -> None:
    """The load comes from one client address, above the default 500 requests/s per
    address at the higher rates; the bench measures consensus, not the RPC limiter."""
    cfg = Config.load(config_path)
    cfg.rpc.rate_limit_per_second = 0
    config_path.write_text(cfg.to_toml())


def node_command(home: Path, rpc_port: int, p2p_port: int, profile: Path | None,
                 log_level: str) -> list[str]:
    prefix = [sys.executable]
    if profile is not None:
        prefix += ["-m", "cProfile", "-o", str(profile)]
    return [*prefix, "-m", "cli.main", "node", "start", "--home", str(home), "--rpc-port",
            str(rpc_port), "--p2p-port", str(p2p_port), "--log-level", log_level]


def start_devnet(members: list[Member], profile_dir: Path | None,
                 log_level: str) -> list[subprocess.Popen]:
    if profile_dir is None:
        start(members, log_level=log_level)
        return [m.proc for m in members if m.proc is not None]
    procs = []
    for m in members:
        log = open(m.home.root / "node.log", "ab")
        procs.append(subprocess.Popen(
            node_command(m.home.root, m.rpc_port, m.p2p_port,
                         profile_dir / f"validator-{m.index}.prof", log_level),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def single_validator(root: Path, profile_dir: Path | None,
                     log_level: str) -> tuple[list[str], list[subprocess.Popen]]:
    """One validator on its own chain with the same (default) config."""
    home = root / "single"
    subprocess.run([sys.executable, "-m", "cli.main", "init", "--home", str(home)], check=True,
                   capture_output=True)
    lift_rpc_rate_limit(home / "config.toml")
    rpc_port = free_port()
    log = open(home / "node.log", "ab")
    profile = profile_dir / "single.prof" if profile_dir is not None else None
    proc = subprocess.Popen(node_command(home, rpc_port, free_port(), profile, log_level),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return [f"http://127.0.0.1:{rpc_port}"], [proc]


def report(name: str, r: Result, rate: float) -> None:
    if not r.finality:
        print(f"{name}: {r.txs} txs accepted, nothing finalized; refused {dict(r.refused)}")
        return
    refused = f", refused {dict(r.refused)}" if r.refused else ""
    print(f"{name}: {r.txs} txs, {r.throughput:.0f} tx/s taken of {r.offered:.0f} offered "
          f"({rate:g} asked), "
          f"finality p50 {statistics.median(r.finality):.2f} s, "
          f"p95 {percentile(r.finality, 0.95):.2f} s, max {max(r.finality):.2f} s, "
          f"{r.blocks_per_s:.2f} blocks/s, {r.late_rounds} decided after round 0, "
          f"lost {r.lost}{refused}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.bench_consensus")
    p.add_argument("--rate", type=float, default=None, help="transactions per second, all nodes")
    p.add_argument("--duration", type=float, default=None, help="seconds of load per network")
    p.add_argument("--high-load", action="store_true",
                   help=f"{HIGH_LOAD_RATE:g} tx/s for {HIGH_LOAD_DURATION:g} s")
    p.add_argument("--validators", type=int, default=4)
    p.add_argument("--profile", type=Path, help="run the nodes under cProfile, .prof files here")
    p.add_argument("--keep", action="store_true", help="keep the node homes and logs")
    p.add_argument("--log-level", default="warning", help="the nodes' log level")
    args = p.parse_args(argv or [])
    rate = args.rate or (HIGH_LOAD_RATE if args.high_load else 8.0)
    duration = args.duration or (HIGH_LOAD_DURATION if args.high_load else 40.0)
    defaults = ConsensusSection()
    print(f"timeouts: propose {defaults.timeout_propose_ms} ms, prevote "
          f"{defaults.timeout_prevote_ms} ms, precommit {defaults.timeout_precommit_ms} ms "
          f"(+{defaults.timeout_delta_ms} ms per round), commit wait {defaults.commit_wait_ms} ms, "
          f"block interval {defaults.block_interval_ms} ms; load {rate:g} tx/s for "
          f"{duration:g} s", flush=True)
    # Fresh accounts start at nonce 0 on both chains: one signed load serves both runs.
    load = Load.make(rate, duration)
    root = Path(tempfile.mkdtemp(prefix="motus-bench-consensus-"))
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        ports = [(free_port(), free_port()) for _ in range(args.validators)]
        members: list[Member] = prepare(root / "devnet", args.validators, 0, 0, CHAIN_ID,
                                        ports=ports)
        assert Config.load(members[0].home.config).consensus == defaults
        for m in members:
            lift_rpc_rate_limit(m.home.config)
        procs = start_devnet(members, args.profile, args.log_level)
        urls = [m.url for m in members]
        wait_rpc(urls)
        wait_height(urls[0], 2)  # consensus is running
        load.fund(urls[0])
        gossip_before = [consensus_gossip(u) for u in urls]
        gossip_t0 = time.monotonic()
        multi = measure(urls, load, rate)
        gossip_s = time.monotonic() - gossip_t0
        gossip = [(a[0] - b[0], a[1] - b[1])
                  for a, b in zip([consensus_gossip(u) for u in urls], gossip_before, strict=True)]
        report(f"{args.validators} validators", multi, rate)
        print("consensus gossip published per node: "
              + ", ".join(f"{b / gossip_s / 1024:.0f} KiB/s" for b, _ in gossip)
              + f"; proposals re-sent: {[int(r) for _, r in gossip]} in {gossip_s:.0f} s",
              flush=True)
        stop(procs)
        procs = []
        single_urls, procs = single_validator(root, args.profile, args.log_level)
        wait_rpc(single_urls)
        wait_height(single_urls[0], 2)
        load.fund(single_urls[0])
        single = measure(single_urls, load, rate)
        report("1 validator   ", single, rate)
    finally:
        stop(procs)
        if args.keep:
            print(f"homes and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if multi.finality and single.finality:
        p50 = statistics.median(multi.finality)
        print(f"ratio {args.validators} validators / 1 validator: throughput "
              f"{multi.throughput / single.throughput:.2f}, p50 "
              f"{p50 / statistics.median(single.finality):.2f}; p50 / block interval: "
              f"{p50 / (defaults.block_interval_ms / 1000):.2f} (goal: p50 < 1.5 s)")


if __name__ == "__main__":
    main(sys.argv[1:])
