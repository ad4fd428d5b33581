"""A pruning node process (a window of 4 states, a sweep after nearly every block) under
transfers: the light client verifies its headers and proofs at the head, an old state
answers ``state_pruned`` over HTTP, and a fresh node syncs the whole chain from it (block
sync needs blocks and commits, never old state: docs/storage.md, "Pruning")."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from eth_account import Account

from codec.files import write_atomic
from genesis.devnet import dev_accounts
from genesis.spec import GenesisSpec
from light.client import LightClient, http_rpc
from node.config import Config
from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of
from rpcclient import RPCError, rpc_call
from tests.procs import NodeProcess, free_port, init_home, motus, rpc, set_config, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

KEEP = 4


def _transfers(url: str, stop: threading.Event) -> None:
    keys = [k for _, k in dev_accounts()[:4]]
    nonces = {k: 0 for k in keys}
    while not stop.is_set():
        for key in keys:
            to = Account.create().address  # a new account each time: the trie grows too
            tx = {"type": 2, "chainId": 7077, "nonce": nonces[key], "to": to, "value": 1,
                  "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
            try:
                rpc(url, "eth_sendRawTransaction", ["0x" + Account.sign_transaction(tx, key).raw_transaction.hex()],
                    timeout=2)
                nonces[key] += 1
            except Exception:
                time.sleep(0.05)
        time.sleep(0.05)


def test_pruning_node_serves_light_clients_and_syncs_a_new_node(tmp_path: Path) -> None:
    home = init_home(tmp_path, "pruned")
    set_config(home, keep_states=KEEP, sweep_min_bytes=0, sweep_growth_percent=1)
    p2p_port = free_port()
    source = NodeProcess(home, p2p_port=p2p_port).start()
    late = None
    late_home = tmp_path / "late"
    stop = threading.Event()
    load = threading.Thread(target=_transfers, args=(source.url, stop), daemon=True)
    try:
        load.start()
        source.wait_height(30, timeout=90)
        wait_until(lambda: source.log_path.read_bytes().count(b"pruned: states") >= 3, 30,
                   "no sweeps in the log")

        # an old state: refused with the stable reason, over HTTP
        addr = dev_accounts()[0][0]
        with pytest.raises(RPCError) as refused:
            rpc_call(source.url, "eth_getBalance", ["0x" + addr.hex(), "0x1"])
        assert refused.value.code == -32000
        assert refused.value.data["reason"] == "state_pruned"
        oldest = int(refused.value.data["oldestState"], 16)
        assert oldest > 1
        # the light client verifies the headers up to the head and a proof there
        client = LightClient.from_genesis(http_rpc(source.url), GenesisSpec.load(home / "genesis.json"))
        account = client.get_account(addr)
        assert account.nonce > 0 and account.header.height >= 30

        # a fresh node syncs every block from the pruned one, and follows it
        motus("init", "--home", str(late_home), "--genesis", str(home / "genesis.json"))
        cfg = Config.load(late_home / "config.toml")
        peer = peer_id_of(load_or_create_node_key(home / "keys" / "node.key"))
        cfg.p2p.bootstrap = [node_multiaddr("127.0.0.1", p2p_port, peer)]
        write_atomic(late_home / "config.toml", cfg.to_toml().encode(), mode=0o644)
        target = int(rpc(source.url, "eth_blockNumber"), 16)
        late = NodeProcess(late_home).start()
        late.wait_height(target, timeout=90)
        for h in (1, target // 2, target):
            ours = rpc(source.url, "eth_getBlockByNumber", [hex(h), False])["hash"]
            assert rpc(late.url, "eth_getBlockByNumber", [hex(h), False])["hash"] == ours
    finally:
        stop.set()
        load.join(10)
        if late is not None:
            late.stop()
        source.stop()
    for h in (home, late_home):
        check = motus("db", "check", "--home", str(h), check=False)
        report = json.loads(check.stdout)
        assert check.returncode == 0 and report["ok"], report
        if h == home:
            assert report["oldest_state"] >= oldest > 1
