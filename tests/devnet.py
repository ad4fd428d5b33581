"""Helpers for tests of real multi-process devnets on loopback: a four-validator devnet
(``Devnet``), reads of node state over RPC, waits with bounds, chain checks, and hostile
p2p peers. Shared by the network-fault, restart-campaign and peer-attack tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import trio
from eth_account import Account

from codec.files import write_atomic
from consensus.types import Commit, Validator, ValidatorSet
from consensus.wal import SignedRecord
from devnet.launcher import Member, prepare, status_lines
from genesis.devnet import dev_accounts
from node.config import Config
from p2p.host import P2PConfig, P2PNode
from p2p.identity import node_multiaddr
from tests.procs import NodeProcess, free_port, motus, rpc

CHAIN_ID = 7077
BLOCK_INTERVAL_MS = 500  # faster than the default 1 s: the module makes many blocks
ZERO_HASH = "0x" + "00" * 32


# --- the shared devnet ---------------------------------------------------------------


class Devnet:
    """Four validators made by devnet.launcher.prepare, each on its own free ports."""

    def __init__(self, root: Path, validators: int = 4) -> None:
        self.root = root
        ports = [(free_port(), free_port()) for _ in range(validators)]
        self.members: list[Member] = prepare(root, validators, 0, 0, CHAIN_ID, BLOCK_INTERVAL_MS,
                                             ports=ports)
        self.bootstrap = [node_multiaddr("127.0.0.1", m.p2p_port, m.peer_id) for m in self.members]
        self.nodes = [NodeProcess(m.home.root, m.rpc_port, m.p2p_port) for m in self.members]
        self.follower: NodeProcess | None = None

    def start(self) -> None:
        for node in self.nodes:
            node.start(wait=60)

    def close(self) -> None:
        for node in [*self.nodes, self.follower]:
            if node is not None:
                node.stop()

    def running(self) -> list[NodeProcess]:
        """Every node process that is up (validators and the follower)."""
        nodes = [*self.nodes, self.follower]
        return [n for n in nodes if n is not None and n.proc is not None and n.proc.poll() is None]

    def start_follower(self) -> NodeProcess:
        """A non-validator with its own home, the same genesis and the validators as
        bootstrap peers (``motus init --genesis``, then ``p2p.bootstrap``)."""
        if self.follower is None:
            home = self.root / "follower"
            motus("init", "--home", str(home), "--genesis", str(self.root / "genesis.json"))
            cfg = Config.load(home / "config.toml")
            cfg.p2p.bootstrap = list(self.bootstrap)
            cfg.consensus.block_interval_ms = BLOCK_INTERVAL_MS
            write_atomic(home / "config.toml", cfg.to_toml().encode(), mode=0o644)
            self.follower = NodeProcess(home).start(wait=60)
        return self.follower

    def status_view(self) -> list[str]:
        """The rows ``motus devnet up`` would show now, one per validator."""
        for m, node in zip(self.members, self.nodes, strict=True):
            m.proc = node.proc
        return status_lines(self.members, None)[1:]

    def logs(self) -> str:
        return "\n".join(n.log_path.read_text(errors="replace") for n in [*self.nodes, self.follower]
                         if n is not None and n.log_path.exists())


# --- helpers -----------------------------------------------------------------------------


def head(node: NodeProcess) -> int:
    return int(rpc(node.url, "eth_blockNumber", timeout=5), 16)


def status(node: NodeProcess) -> dict[str, Any]:
    return rpc(node.url, "motus_nodeStatus", timeout=5)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` (exceptions count as "not yet") until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_heads(nodes: list[NodeProcess], height: int, timeout: float = 30) -> None:
    for node in nodes:
        wait_for(lambda n=node: head(n) >= height, timeout, f"{node.home.name} at height {height}")


def assert_one_chain(nodes: list[NodeProcess], since: int = 1) -> int:
    """Every node has the same block hash at every height they all have; returns that height."""
    top = min(head(n) for n in nodes)
    for height in range(since, top + 1):
        hashes = {n.home.name: rpc(n.url, "motus_getHeader", [height])["hash"] for n in nodes}
        assert len(set(hashes.values())) == 1, f"fork at height {height}: {hashes}"
    return top


def verify_commit(node: NodeProcess, height: int) -> tuple[dict[str, Any], Commit, ValidatorSet]:
    """Check the commit of ``height`` served by ``node`` against the validator set it serves."""
    header = rpc(node.url, "motus_getHeader", [height])
    commit = Commit.decode(bytes.fromhex(rpc(node.url, "motus_getCommit", [height])["rlp"][2:]))
    doc = rpc(node.url, "motus_getValidators", [height])
    validators = ValidatorSet(
        [Validator(bytes.fromhex(v["address"][2:]), v["power"]) for v in doc["validators"]])
    assert "0x" + validators.hash().hex() == header["validatorsHash"] == doc["hash"]
    validators.verify_commit(CHAIN_ID, height, bytes.fromhex(header["hash"][2:]), commit)
    signed = sum(validators.get(s.validator).power for s in commit.signatures)  # type: ignore[union-attr]
    assert 3 * signed > 2 * validators.total_power
    return header, commit, validators


def send_transfer(node: NodeProcess, account: int) -> str:
    """Sign a 1-wei transfer from dev account ``account`` and submit it to ``node``."""
    address, key = dev_accounts()[account]
    nonce = int(rpc(node.url, "eth_getTransactionCount", ["0x" + address.hex(), "pending"]), 16)
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": Account.create().address,
          "value": 1, "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
    raw = Account.sign_transaction(tx, key).raw_transaction
    return rpc(node.url, "eth_sendRawTransaction", ["0x" + raw.hex()])


def receipt_everywhere(nodes: list[NodeProcess], tx_hash: str, timeout: float = 30) -> dict:
    receipts = [wait_for(lambda n=n: rpc(n.url, "eth_getTransactionReceipt", [tx_hash]), timeout,
                         f"receipt of {tx_hash} on {n.home.name}") for n in nodes]
    assert len({r["blockHash"] for r in receipts}) == 1, receipts
    assert receipts[0]["status"] == "0x1"
    return receipts[0]


def signing_record(node: NodeProcess) -> SignedRecord | None:
    path = node.home / "consensus" / "signing_state.json"
    return SignedRecord.from_json(path.read_text()) if path.exists() else None


def evidence_free(nodes: list[NodeProcess], since: int = 1) -> None:
    top = min(head(n) for n in nodes)
    for height in range(since, top + 1):
        assert rpc(nodes[0].url, "motus_getHeader", [height])["evidenceHash"] == ZERO_HASH


def p2p_peer(tmp_path: Path, name: str, bootstrap: list[str]) -> P2PNode:
    return P2PNode(P2PConfig(key_path=tmp_path / f"{name}.key", chain_id=CHAIN_ID, listen_port=0,
                             bootstrap=tuple(bootstrap), reconnect_max_backoff=1.0))


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking call (RPC, file reads) off the trio thread."""
    return await trio.to_thread.run_sync(fn, *args)


@contextlib.contextmanager
def phase(what: str, seconds: float) -> Iterator[None]:
    """Bound one phase of a trio test; an overrun names the phase."""
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise AssertionError(f"timed out after {seconds} s: {what}") from None


async def wait_meshed(peer: P2PNode, members: list[Member], topic: str, timeout: float) -> None:
    wanted = {m.peer_id for m in members}
    with trio.fail_after(timeout):
        while not wanted <= {p.peer_id for p in peer.peers() if topic in p.mesh}:
            await trio.sleep(0.1)


def accept_all(peer: str, data: bytes) -> bool:
    return True
