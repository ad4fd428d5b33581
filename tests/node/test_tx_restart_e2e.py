"""Nothing the RPC accepted is lost across a kill or a restart (real processes, real
libp2p on loopback; docs/network.md "Transactions", docs/storage.md "Transaction
journal"): a transaction accepted by a node that is killed at once is pending again
when it restarts, and mined; one accepted right after a restart, before the initial
sync ends, reaches the validators; a validator that lost its pool to a kill gets the
pending transactions re-announced; and a short kill/restart campaign under transfer
load ends with every accepted transaction mined."""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from eth_account import Account
from eth_hash.auto import keccak

from codec.files import write_atomic
from devnet.launcher import prepare
from genesis.devnet import dev_accounts
from node.config import Config
from p2p.identity import node_multiaddr
from tests.procs import NodeProcess, free_port, motus, rpc

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("network"), pytest.mark.timeout(240)]

CHAIN_ID = 7077
BLOCK_INTERVAL_MS = 500
RECIPIENT = "0x" + "22" * 20
# A longer run: MOTUS_TX_CAMPAIGN_CYCLES=30 (docs/network.md, "Transactions").
CAMPAIGN_CYCLES = int(os.environ.get("MOTUS_TX_CAMPAIGN_CYCLES", "3"))
CAMPAIGN_SENDERS = range(3, 10)  # dev accounts 0-2 are the targeted tests'


class Net:
    def __init__(self, root: Path) -> None:
        self.root = root
        ports = [(free_port(), free_port()) for _ in range(4)]
        members = prepare(root, 4, 0, 0, CHAIN_ID, BLOCK_INTERVAL_MS, ports=ports)
        self.bootstrap = [node_multiaddr("127.0.0.1", m.p2p_port, m.peer_id) for m in members]
        self.nodes = [NodeProcess(m.home.root, m.rpc_port, m.p2p_port) for m in members]
        self.extra: list[NodeProcess] = []

    def close(self) -> None:
        for node in [*self.nodes, *self.extra]:
            node.stop()

    def follower_home(self, bootstrap: list[str]) -> Path:
        home = self.root / "follower"
        if not home.exists():
            motus("init", "--home", str(home), "--genesis", str(self.root / "genesis.json"))
        cfg = Config.load(home / "config.toml")
        cfg.p2p.bootstrap = bootstrap
        cfg.consensus.block_interval_ms = BLOCK_INTERVAL_MS
        write_atomic(home / "config.toml", cfg.to_toml().encode(), mode=0o644)
        return home


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    devnet = Net(tmp_path_factory.mktemp("txrestart"))
    try:
        for node in devnet.nodes:
            node.start(wait=60)
        for node in devnet.nodes:
            node.wait_height(2, timeout=60)
        yield devnet
    finally:
        devnet.close()


def transfer(account: int, nonce: int) -> bytes:
    key = dev_accounts()[account][1]
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": RECIPIENT, "value": 1,
          "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def send(node: NodeProcess, raw: bytes) -> str:
    return rpc(node.url, "eth_sendRawTransaction", ["0x" + raw.hex()])


def restart(node: NodeProcess) -> None:
    node.log.close()
    node.start(wait=60)


def wait_for(what: str, check, timeout: float, nodes: list[NodeProcess]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (OSError, RuntimeError):
            pass  # a node between restarts
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {n.home.name}\n{n.tail(1500)}" for n in nodes)
            raise AssertionError(f"{what} not within {timeout}s\n{tails}")
        time.sleep(0.2)


def mined(node: NodeProcess, tx_hash: str) -> bool:
    receipt = rpc(node.url, "eth_getTransactionReceipt", [tx_hash], timeout=3)
    return receipt is not None and receipt["status"] == "0x1"


def pending(node: NodeProcess, tx_hash: str) -> bool:
    tx = rpc(node.url, "eth_getTransactionByHash", [tx_hash], timeout=3)
    return tx is not None and tx["blockHash"] is None


def test_killed_at_once_and_accepted_before_sync_are_mined(net: Net) -> None:
    """(a) an isolated node accepts a transaction (it reached nobody) and is SIGKILLed
    at once: restarted with peers, the transaction is pending again and mined.
    (b) a transaction accepted by that node's RPC as soon as it is up again, while it is
    still far behind, reaches the validators and is mined."""
    head = net.nodes[0].wait_height(8, timeout=60)
    follower = NodeProcess(net.follower_home([]))  # no peers: nothing can leave it
    net.extra.append(follower)
    follower.start(wait=60)
    killed_tx = send(follower, transfer(0, 0))
    follower.kill()
    assert b"motus-txjournal" in (follower.home / "txpool" / "journal").read_bytes()

    net.follower_home(net.bootstrap)
    restart(follower)
    early_tx = send(follower, transfer(1, 0))
    behind = int(rpc(follower.url, "eth_blockNumber"), 16)
    assert behind < head, "the follower had synced before the transaction was sent"
    assert pending(follower, killed_tx)  # replayed from the journal before the RPC opened
    validator = net.nodes[1]
    wait_for("both transactions mined",
             lambda: mined(validator, killed_tx) and mined(validator, early_tx), 60, [follower])
    wait_for("the follower caught up", lambda: mined(follower, killed_tx), 60, [follower])
    follower.stop()
    # A clean stop leaves a compacted journal: the mined transactions are gone from it.
    assert (follower.home / "txpool" / "journal").read_bytes() == b"motus-txjournal/1\n"


def test_restarted_validator_gets_the_pending_pool_again(net: Net) -> None:
    """(c) a transaction that cannot be mined yet (a nonce gap) sits in every pool; a
    validator killed and restarted gets it re-announced, and it is mined once the gap
    is filled."""
    origin, victim, other = net.nodes[0], net.nodes[1], net.nodes[2]
    future_tx = send(origin, transfer(2, 1))
    wait_for("the gapped transaction gossiped", lambda: pending(victim, future_tx), 30, [victim])
    victim.kill()
    # Past gossipsub's message cache (5 heartbeats of 1 s): peers can no longer offer
    # the old batch by IHAVE, only a re-announce brings the transaction back.
    time.sleep(5)
    restart(victim)
    wait_for("the gapped transaction re-announced", lambda: pending(victim, future_tx), 30,
             [victim, origin])
    first_tx = send(other, transfer(2, 0))
    for node in net.nodes:
        wait_for("the filled gap mined", lambda n=node: mined(n, first_tx) and mined(n, future_tx),
                 60, [node])


class Load:
    """Transfers from ``senders`` (dev accounts), each sender's nonces in order, one every
    ``pause`` seconds to a random running validator; a transaction counts as accepted
    once an RPC answered its hash (or said it is already known), and its hash is kept in
    ``hashes``; one refused is sent again, to another node, and the refusal kept for the
    test to judge. Nonces kept here, not asked of a node, so no two accepted
    transactions compete for one nonce: each one accepted can be mined."""

    def __init__(self, nodes: list[NodeProcess], senders: Sequence[int] = CAMPAIGN_SENDERS,
                 pause: float = 0.03) -> None:
        self.nodes = nodes
        self.senders = list(senders)
        self.pause = pause
        self.down: set[int] = set()
        self.accepted: dict[int, int] = {a: 0 for a in self.senders}  # next nonce to send
        self.hashes: list[str] = []
        self.refused: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def send_to(self, index: int, account: int) -> bool:
        raw = transfer(account, self.accepted[account])
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
                           "params": ["0x" + raw.hex()]}).encode()
        req = urllib.request.Request(self.nodes[index].url, body,
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                doc = json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            return False  # down or restarting: not accepted, sent again elsewhere
        error = doc.get("error")
        if error is None or "already known" in error.get("message", ""):
            self.accepted[account] += 1
            self.hashes.append("0x" + keccak(raw).hex())
            return True
        self.refused.append(error.get("message", str(error)))
        return False

    def _run(self) -> None:
        rng = random.Random(7)
        while not self.stop.is_set():
            with self.lock:
                up = [i for i in range(len(self.nodes)) if i not in self.down]
                self.send_to(rng.choice(up), rng.choice(self.senders))
            time.sleep(self.pause)


@pytest.mark.timeout(240 + 10 * CAMPAIGN_CYCLES)
def test_kill_restart_campaign_loses_nothing_accepted(net: Net) -> None:
    """SIGKILL a random validator right after its RPC accepted a transaction, send more
    to the others, restart it and send to it at once; after CAMPAIGN_CYCLES cycles every
    accepted transaction is mined on every node."""
    load = Load(net.nodes)
    load.thread.start()
    rng = random.Random(11)
    killed_after_accept = 0
    try:
        for _ in range(CAMPAIGN_CYCLES):
            time.sleep(1.5)
            victim = rng.randrange(len(net.nodes))
            with load.lock:  # accepted, then killed before it could gossip
                account = rng.choice(list(CAMPAIGN_SENDERS))
                killed_after_accept += load.send_to(victim, account)
                net.nodes[victim].kill()
                load.down.add(victim)
            time.sleep(1.0)
            restart(net.nodes[victim])
            with load.lock:  # accepted before the restarted node's initial sync ends
                load.down.discard(victim)
                load.send_to(victim, rng.choice(list(CAMPAIGN_SENDERS)))
    finally:
        load.stop.set()
        load.thread.join(10)
    total = sum(load.accepted.values())
    # The one refusal a client may see: a node still behind after its restart refuses
    # nonces 64 or more past its stale head (the sender sends it again elsewhere).
    others = [r for r in load.refused if not r.startswith("nonce too high")]
    assert total > 50 and not others, (total, others[:5])
    assert killed_after_accept >= CAMPAIGN_CYCLES // 2

    def lost() -> int:
        out = 0
        for node in net.nodes:
            for account in CAMPAIGN_SENDERS:
                address = "0x" + dev_accounts()[account][0].hex()
                count = int(rpc(node.url, "eth_getTransactionCount", [address, "latest"]), 16)
                out += load.accepted[account] - count
        return out

    try:
        wait_for("every accepted transaction mined everywhere", lambda: lost() == 0, 90, net.nodes)
    except AssertionError as exc:
        raise AssertionError(f"{CAMPAIGN_CYCLES} cycles, {total} accepted, {lost()} missing "
                             f"(summed over the 4 nodes)\n{exc}") from None
    print(f"campaign: {CAMPAIGN_CYCLES} kill/restart cycles ({killed_after_accept} right after "
          f"an accept), {total} transactions accepted, {len(load.refused)} refused by a node "
          f"behind, 0 lost")
