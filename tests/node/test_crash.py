"""Kill -9 the node at random moments while it makes blocks under transaction load;
after every kill the database must check clean and every transaction whose receipt was
seen before the kill must still be there, in the same block. The node prunes (the default
mode) with a window of 4 states and a sweep after nearly every block, so the kills also
land in sweeps (docs/storage.md, "Pruning"): the head's and the oldest kept state must
check whole after each."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from eth_account import Account

from genesis.devnet import dev_accounts
from tests.procs import NodeProcess, init_home, motus, rpc, set_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

KILLS = 10


def _load(url: str, stop: threading.Event, seen: dict[str, str], keys: list[bytes]) -> None:
    """Send transfers from several accounts; record tx hash -> block hash once a receipt shows."""
    recipient = Account.create().address
    pending: list[str] = []
    nonces = {}
    for key in keys:
        addr = Account.from_key(key).address
        nonces[key] = int(rpc(url, "eth_getTransactionCount", [addr, "latest"]), 16)
    while not stop.is_set():
        try:
            for key in keys:
                tx = {"type": 2, "chainId": 7077, "nonce": nonces[key], "to": recipient, "value": 1,
                      "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
                raw = Account.sign_transaction(tx, key).raw_transaction
                pending.append(rpc(url, "eth_sendRawTransaction", ["0x" + raw.hex()], timeout=2))
                nonces[key] += 1
            still = []
            for h in pending:
                r = rpc(url, "eth_getTransactionReceipt", [h], timeout=2)
                if r is None:
                    still.append(h)
                else:
                    seen[h] = r["blockHash"]
            pending = still
        except Exception:
            return  # the node died under us: that is the point
        time.sleep(0.02)


def _wait_for_sweep(node: NodeProcess, log_start: int, timeout: float = 10) -> None:
    """Return once the node's log shows a sweep begun and not finished (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = node.log_path.read_bytes()[log_start:]
        if log.rfind(b"pruning: sweep") > log.rfind(b"pruned: states"):
            return
        time.sleep(0.002)


def test_sigkill_at_random_moments_keeps_a_consistent_chain(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    home = init_home(tmp_path, "crash")
    cfg = (home / "config.toml").read_text().replace("block_interval_ms = 200", "block_interval_ms = 100")
    cfg = cfg.replace("enabled = true", "enabled = false")  # storage is under test, not networking
    (home / "config.toml").write_text(cfg)
    set_config(home, keep_states=4, sweep_min_bytes=0, sweep_growth_percent=1)
    sweeps = killed_in_sweep = 0
    seen: dict[str, str] = {}
    keys = [k for _, k in dev_accounts()[:4]]
    last_height = 0
    for i in range(KILLS):
        node = NodeProcess(home)
        log_start = node.log_path.stat().st_size if node.log_path.exists() else 0
        node.start()
        try:
            height = int(rpc(node.url, "eth_blockNumber"), 16)
            assert height >= last_height, f"seed {seed}: head went back from {last_height} to {height}"
            for tx_hash, block_hash in seen.items():  # nothing committed was lost
                receipt = rpc(node.url, "eth_getTransactionReceipt", [tx_hash])
                assert receipt is not None, f"seed {seed}: committed tx {tx_hash} lost after kill {i}"
                assert receipt["blockHash"] == block_hash
            stop = threading.Event()
            worker = threading.Thread(target=_load, args=(node.url, stop, seen, keys), daemon=True)
            worker.start()
            time.sleep(rng.uniform(0.3, 2.0))
            last_height = int(rpc(node.url, "eth_blockNumber"), 16)
            if i % 2:  # every other kill aims at a sweep: as soon as the log shows one begun
                _wait_for_sweep(node, log_start)
            node.kill()  # SIGKILL: no cleanup of any kind
            stop.set()
            worker.join(10)
        finally:
            node.kill()
            node.stop()
        log = node.log_path.read_bytes()[log_start:].decode(errors="replace")
        sweeps += log.count("pruning: sweep")
        killed_in_sweep += log.rfind("pruning: sweep") > log.rfind("pruned: states")
        check = motus("db", "check", "--home", str(home), check=False)
        report = json.loads(check.stdout)
        assert check.returncode == 0 and report["ok"], f"seed {seed}: db check after kill {i}: {report}"
        assert report["head"] >= last_height
        assert report["oldest_state"] >= report["head"] - 8, f"seed {seed}: no sweep ran: {report}"
    print(f"sweeps begun {sweeps}, kills inside a sweep {killed_in_sweep} of {KILLS}")
    assert sweeps >= KILLS and killed_in_sweep >= 2, f"seed {seed}: {sweeps} sweeps, {killed_in_sweep} killed"
    assert len(seen) > 20, f"seed {seed}: load produced only {len(seen)} committed txs"
