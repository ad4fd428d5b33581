"""A burst of transactions sent to one validator of a four-validator devnet (real
processes, real libp2p on loopback) reaches the other proposers in tx batches and is
included in full: every node ends with the same receipts, and no honest peer is
penalised for what it relayed."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account

from devnet.launcher import Member, prepare
from genesis.devnet import dev_accounts
from tests.procs import NodeProcess, free_port, rpc

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("network"), pytest.mark.timeout(90)]

CHAIN_ID = 7077
BLOCK_INTERVAL_MS = 500
SENDERS = 10  # every funded dev account
PER_SENDER = 30  # 300 transactions; the pool holds 64 per sender
CHUNKS = 6  # JSON-RPC batch requests, spread over about two seconds (several proposers)


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Member], list[NodeProcess]]]:
    root: Path = tmp_path_factory.mktemp("txgossip")
    ports = [(free_port(), free_port()) for _ in range(4)]
    members = prepare(root, 4, 0, 0, CHAIN_ID, BLOCK_INTERVAL_MS, ports=ports)
    nodes = [NodeProcess(m.home.root, m.rpc_port, m.p2p_port) for m in members]
    try:
        for node in nodes:
            node.start(wait=60)
        yield members, nodes
    finally:
        for node in nodes:
            node.stop()


def send_batch(url: str, raws: list[bytes]) -> list[str]:
    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction",
                        "params": ["0x" + raw.hex()]} for i, raw in enumerate(raws)]).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        answers = json.loads(resp.read())
    assert all("result" in a for a in answers), [a for a in answers if "error" in a][:3]
    return [a["result"] for a in sorted(answers, key=lambda a: a["id"])]


def test_burst_sent_to_one_node_is_included_everywhere(
    devnet: tuple[list[Member], list[NodeProcess]],
) -> None:
    members, nodes = devnet
    entry = nodes[0]
    for node in nodes:
        node.wait_height(2, timeout=40)
    recipient = Account.create().address
    accounts = dev_accounts()[:SENDERS]
    raws = []
    for nonce in range(PER_SENDER):  # interleaved, as many clients would send them
        for _, key in accounts:
            tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": recipient, "value": 1,
                  "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
            raws.append(bytes(Account.sign_transaction(tx, key).raw_transaction))
    start_height = int(rpc(entry.url, "eth_blockNumber"), 16)
    hashes: list[str] = []
    size = len(raws) // CHUNKS
    for i in range(CHUNKS):
        hashes += send_batch(entry.url, raws[i * size:(i + 1) * size])
        time.sleep(0.35)
    assert len(hashes) == SENDERS * PER_SENDER

    # Every node includes all of them: each sender's committed nonce reaches PER_SENDER.
    deadline = time.monotonic() + 30
    for node in nodes:
        for address, _ in accounts:
            while int(rpc(node.url, "eth_getTransactionCount", ["0x" + address.hex(), "latest"]),
                      16) < PER_SENDER:
                assert time.monotonic() < deadline, f"{node.home.name} is missing transactions"
                time.sleep(0.2)

    # Same receipts everywhere; blocks proposed by validators that only got the
    # transactions by gossip hold some of them.
    receipts = [rpc(nodes[0].url, "eth_getTransactionReceipt", [h]) for h in hashes]
    assert all(r is not None and r["status"] == "0x1" for r in receipts)
    for node in nodes[1:]:
        for h, r in zip(hashes[::25], receipts[::25], strict=True):
            assert rpc(node.url, "eth_getTransactionReceipt", [h])["blockHash"] == r["blockHash"]
    heights = sorted({int(r["blockNumber"], 16) for r in receipts})
    assert heights[0] > start_height
    proposers = {rpc(entry.url, "motus_getHeader", [h])["proposer"].lower() for h in heights}
    assert proposers - {"0x" + members[0].address.hex()}, (heights, proposers)

    logs = "\n".join(n.log_path.read_text(errors="replace") for n in nodes)
    assert "banning peer" not in logs
    assert "transaction batch from" not in logs  # no batch was rejected
    for node in nodes:
        assert rpc(node.url, "motus_nodeStatus")["bannedPeers"] == 0
