"""Kill -9 the node at random moments while it makes blocks under transaction load;
after every kill the database must check clean and every transaction whose receipt was
seen before the kill must still be there, in the same block."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from eth_account import Account

from genesis.devnet import dev_accounts
from tests.procs import NodeProcess, init_home, motus, rpc

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


def test_sigkill_at_random_moments_keeps_a_consistent_chain(tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    home = init_home(tmp_path, "crash")
    cfg = (home / "config.toml").read_text().replace("block_interval_ms = 200", "block_interval_ms = 100")
    cfg = cfg.replace("enabled = true", "enabled = false")  # storage is under test, not networking
    (home / "config.toml").write_text(cfg)
    seen: dict[str, str] = {}
    keys = [k for _, k in dev_accounts()[:4]]
    last_height = 0
    for i in range(KILLS):
        node = NodeProcess(home).start()
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
            node.kill()  # SIGKILL: no cleanup of any kind
            stop.set()
            worker.join(10)
        finally:
            node.kill()
            node.stop()
        check = motus("db", "check", "--home", str(home), check=False)
        report = json.loads(check.stdout)
        assert check.returncode == 0 and report["ok"], f"seed {seed}: db check after kill {i}: {report}"
        assert report["head"] >= last_height
    assert len(seen) > 20, f"seed {seed}: load produced only {len(seen)} committed txs"
