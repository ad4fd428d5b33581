"""A restart campaign of real processes: four validators (``motus node start``) under
transaction load and attestation load (the fleet simulator, ``python -m devnet.fleet``,
as its own process); each cycle stops one, two or all four of them with SIGINT
(Ctrl-C) or SIGKILL at a random instant, mid-height included, and starts them again.
"All four, staggered" stops two first and the other two a few seconds later, when
they have gone through rounds of a height they cannot finish alone: what Ctrl-C of
``motus devnet up`` does, and the case that froze the devnet.
After each cycle the chain must make a new block within ``NEXT_BLOCK_BOUND_S``; at the
end every node has the same block hash at every height and ``motus db check`` passes
on every home, the fleet's attestations were included in blocks of the campaign, and
every transaction an RPC accepted is mined, or still pending in some node's pool after
``PENDING_WAIT_S`` more seconds of blocks: none is lost. Before validators resumed the
round they had signed in, restarting all four mid-height froze the chain on most
attempts (issue 11).

``make test`` runs ``SHORT_CYCLES`` cycles (one of each kind); ``make restart-campaign``
(``MOTUS_RESTART_CYCLES=200``) runs the long one and prints its numbers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from devnet.launcher import prepare
from tests.devnet import (
    CHAIN_ID,
    assert_one_chain,
    head,
    wait_for,
    wait_heads,
)
from tests.node.test_tx_restart_e2e import Load, mined, pending
from tests.procs import ROOT, NodeProcess, free_port, motus, rpc

CYCLES = int(os.environ.get("MOTUS_RESTART_CYCLES", "0"))
SHORT_CYCLES = 5
BLOCK_INTERVAL_MS = 500
PENDING_WAIT_S = 30.0  # blocks for the last accepted transactions to be mined
FLEET_SEED = "restart campaign"
FLEET_VEHICLES = 2  # set up from dev accounts 1 (manufacturer), 2 and 3 (owners)
TRANSFER_SENDERS = (0, 4, 5, 6, 7, 8, 9)  # none of the fleet's: their nonces never compete
FLEET_READY_S = 90.0
NEXT_BLOCK_BOUND_S = 45.0  # from the last restarted node's RPC answering to a new block
# (how many, how, staggered): every kind of cycle; the short run does each once
KINDS = [(1, signal.SIGKILL, False), (2, signal.SIGINT, False), (4, signal.SIGKILL, False),
         (4, signal.SIGKILL, True), (4, signal.SIGINT, True)]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("network"),
              pytest.mark.timeout(max(300, 60 * CYCLES))]


def _start_fleet(url: str, log: Path) -> subprocess.Popen:
    """The fleet simulator as ``motus devnet up`` runs it, against the node at ``url``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "devnet.fleet", "--rpc", url, "--seed", FLEET_SEED,
             "--vehicles", str(FLEET_VEHICLES), "--interval", "1", "--report", "5"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop_fleet(fleet: subprocess.Popen) -> None:
    if fleet.poll() is None:
        os.killpg(fleet.pid, signal.SIGINT)
        try:
            fleet.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(fleet.pid, signal.SIGKILL)
            fleet.wait(5)


def _account(nodes: list[NodeProcess], hashes: list[str]) -> dict[str, int]:
    """Where each accepted transaction is: mined (a receipt on some node), pending (in
    some node's pool) or lost (neither)."""
    counts = {"accepted": len(hashes), "mined": 0, "pending": 0, "lost": 0}
    for tx_hash in hashes:
        if any(_asks(mined, n, tx_hash) for n in nodes):
            counts["mined"] += 1
        elif any(_asks(pending, n, tx_hash) for n in nodes):
            counts["pending"] += 1
        else:
            counts["lost"] += 1
    return counts


def _asks(question, node: NodeProcess, tx_hash: str) -> bool:
    try:
        return bool(question(node, tx_hash))
    except (OSError, RuntimeError):
        return False


def _stop(node: NodeProcess, how: signal.Signals) -> None:
    assert node.proc is not None
    if how == signal.SIGKILL:
        node.kill()
    else:  # Ctrl-C: the node's own shutdown runs, and must finish (exit 0)
        os.killpg(node.proc.pid, signal.SIGINT)
        try:
            code = node.proc.wait(20)
        except subprocess.TimeoutExpired:
            node.kill()
            raise AssertionError(f"{node.home}: Ctrl-C did not stop the node in 20 s") from None
        assert code == 0, f"{node.home}: Ctrl-C exit status {code}"
    node.stop()  # closes its log


def _start_all(nodes: list[NodeProcess]) -> None:
    errors: list[BaseException] = []

    def start(node: NodeProcess) -> None:
        try:
            node.start(wait=60)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _top(nodes: list[NodeProcess]) -> int:
    heights = []
    for n in nodes:
        try:
            heights.append(head(n))
        except Exception:
            pass
    return max(heights, default=-1)


def run_campaign(root: Path, cycles: int, seed: int) -> dict:
    rng = random.Random(seed)
    members = prepare(root, 4, 0, 0, CHAIN_ID, BLOCK_INTERVAL_MS,
                      ports=[(free_port(), free_port()) for _ in range(4)])
    nodes = [NodeProcess(m.home.root, m.rpc_port, m.p2p_port) for m in members]
    load = Load(nodes, TRANSFER_SENDERS, pause=0.3)
    fleet_log = root / "fleet.log"
    fleet: subprocess.Popen | None = None
    fleet_restarts = 0
    waits: list[float] = []
    try:
        _start_all(nodes)
        wait_heads(nodes, 2, timeout=60)
        load.thread.start()
        fleet = _start_fleet(nodes[0].url, fleet_log)
        wait_for(lambda: b"vehicles ready" in fleet_log.read_bytes(), FLEET_READY_S,
                 f"the fleet set up (log {fleet_log})")
        first = _top(nodes)
        kinds = [KINDS[i % len(KINDS)] for i in range(cycles)]
        rng.shuffle(kinds)
        for cycle, (count, how, staggered) in enumerate(kinds):
            victims = rng.sample(nodes, count)
            # a random instant: anywhere in the next few heights, mid-height included
            time.sleep(rng.uniform(0.0, 3 * BLOCK_INTERVAL_MS / 1000))
            for i, node in enumerate(victims):
                if staggered and i == 2:  # the two left run rounds they cannot finish
                    time.sleep(rng.uniform(0.5, 4.0))
                _stop(node, how)
            time.sleep(rng.choice([0.0, rng.uniform(0.0, 2.0)]))
            _start_all(victims)
            before = _top(nodes)
            started = time.monotonic()
            wait_for(lambda b=before: _top(nodes) > b, NEXT_BLOCK_BOUND_S,
                     f"seed {seed} cycle {cycle} ({count} x {how.name}, staggered={staggered}): "
                     f"a block after height {before}")
            waits.append(time.monotonic() - started)
            if fleet.poll() is not None:  # it waits out a node that is down; if it gave up
                fleet_restarts += 1
                fleet = _start_fleet(rng.choice(nodes).url, fleet_log)
        load.stop.set()
        load.thread.join(10)
        _stop_fleet(fleet)
        top = _top(nodes)
        attestations = sum(
            int(rpc(nodes[0].url, "eth_getBlockByNumber", [hex(h), False])["attestationCount"], 16)
            for h in range(first + 1, top + 1))
        txs = _account(nodes, load.hashes)
        deadline = time.monotonic() + PENDING_WAIT_S
        while txs["pending"] and time.monotonic() < deadline:
            time.sleep(2)
            txs = _account(nodes, load.hashes)
        top = _top(nodes)
        wait_heads(nodes, top, timeout=60)
        assert_one_chain(nodes)
    finally:
        load.stop.set()
        if fleet is not None:
            _stop_fleet(fleet)
        for node in nodes:
            node.stop()
    # Restarts in the middle of a height went through the resume path (not only
    # restarts at a fresh height): the staggered stops of all four guarantee some.
    resumed = sum(node.log_path.read_text(errors="replace").count("consensus resumed height")
                  for node in nodes)
    for m in members:
        check = motus("db", "check", "--home", str(m.home.root), check=False)
        report = json.loads(check.stdout)
        assert check.returncode == 0 and report["ok"], f"seed {seed}: db check {m.home.root}: {report}"
    return {"seed": seed, "cycles": cycles, "height": top, "txs": txs,
            "refused_txs": len(load.refused), "attestations_included": attestations,
            "fleet_restarts": fleet_restarts, "resumed_mid_height": resumed, "max_wait_s": round(max(waits), 2), "mean_wait_s": round(sum(waits) / len(waits), 2)}


def test_restarts_of_one_two_or_all_validators_never_freeze_the_chain(tmp_path) -> None:
    seed = random.randrange(2**32)
    result = run_campaign(tmp_path / "devnet", CYCLES or SHORT_CYCLES, seed)
    print(f"\nrestart campaign: {json.dumps(result)}")
    txs = result["txs"]
    assert txs["accepted"] > 0 and txs["lost"] == 0, result
    assert result["attestations_included"] > 0, result
    assert result["resumed_mid_height"] > 0, result
