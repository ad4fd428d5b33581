"""A restart campaign of real processes: four validators (``motus node start``) under
light transaction load; each cycle stops one, two or all four of them with SIGINT
(Ctrl-C) or SIGKILL at a random instant, mid-height included, and starts them again.
"All four, staggered" stops two first and the other two a few seconds later, when
they have gone through rounds of a height they cannot finish alone: what Ctrl-C of
``motus devnet up`` does, and the case that froze the devnet.
After each cycle the chain must make a new block within ``NEXT_BLOCK_BOUND_S``; at the
end every node has the same block hash at every height and ``motus db check`` passes
on every home. Before validators resumed the round they had signed in, restarting all
four mid-height froze the chain on most attempts (issue 11).

``make test`` runs ``SHORT_CYCLES`` cycles (one of each kind); ``make restart-campaign``
(``MOTUS_RESTART_CYCLES=200``) runs the long one and prints its numbers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from devnet.launcher import prepare
from tests.node.test_network_faults import (
    CHAIN_ID,
    assert_one_chain,
    head,
    send_transfer,
    wait_for,
    wait_heads,
)
from tests.procs import NodeProcess, free_port, motus

CYCLES = int(os.environ.get("MOTUS_RESTART_CYCLES", "0"))
SHORT_CYCLES = 5
BLOCK_INTERVAL_MS = 500
NEXT_BLOCK_BOUND_S = 45.0  # from the last restarted node's RPC answering to a new block
# (how many, how, staggered): every kind of cycle; the short run does each once
KINDS = [(1, signal.SIGKILL, False), (2, signal.SIGINT, False), (4, signal.SIGKILL, False),
         (4, signal.SIGKILL, True), (4, signal.SIGINT, True)]

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("network"),
              pytest.mark.timeout(max(300, 60 * CYCLES))]


def _load(nodes: list[NodeProcess], stop: threading.Event, accepted: list[str]) -> None:
    """A transfer every ~0.3 s to a random running validator, from rotating accounts."""
    rng = random.Random()
    account = 0
    while not stop.wait(0.3):
        up = [n for n in nodes if n.proc is not None and n.proc.poll() is None]
        if not up:
            continue
        try:
            accepted.append(send_transfer(rng.choice(up), 1 + account % 8))
            account += 1
        except Exception:
            pass  # a node going down under us is the point


def _stop(node: NodeProcess, how: signal.Signals) -> None:
    assert node.proc is not None
    if how == signal.SIGKILL:
        node.kill()
    else:  # Ctrl-C: the node's own shutdown runs
        os.killpg(node.proc.pid, signal.SIGINT)
        try:
            node.proc.wait(20)
        except Exception:
            node.kill()
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
    accepted: list[str] = []
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(nodes, stop, accepted), daemon=True)
    waits: list[float] = []
    try:
        _start_all(nodes)
        wait_heads(nodes, 2, timeout=60)
        loader.start()
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
        stop.set()
        loader.join(10)
        top = _top(nodes)
        wait_heads(nodes, top, timeout=60)
        assert_one_chain(nodes)
    finally:
        stop.set()
        for node in nodes:
            node.stop()
    for m in members:
        check = motus("db", "check", "--home", str(m.home.root), check=False)
        report = json.loads(check.stdout)
        assert check.returncode == 0 and report["ok"], f"seed {seed}: db check {m.home.root}: {report}"
    return {"seed": seed, "cycles": cycles, "height": top, "accepted_txs": len(accepted),
            "max_wait_s": round(max(waits), 2), "mean_wait_s": round(sum(waits) / len(waits), 2)}


def test_restarts_of_one_two_or_all_validators_never_freeze_the_chain(tmp_path) -> None:
    seed = random.randrange(2**32)
    result = run_campaign(tmp_path / "devnet", CYCLES or SHORT_CYCLES, seed)
    print(f"\nrestart campaign: {json.dumps(result)}")
    assert result["accepted_txs"] > 0
