"""The reward settlement backlog an operator sees (docs/rewards.md "Backlog",
docs/metrics.md): on a real node's store and application, in-process, a fleet larger
than an epoch's settlement work (12 vehicles with data in a 10-block epoch, 2 steps a
block: 25 steps, 13 blocks) makes the backlog span two epochs; the gauges say how much
is left, the log warns and ``/health`` lists a ``settlement_backlog`` warning, until the
settlement catches up again (vehicles come from the rewards tests' fake world: the
scoring inputs are not under test here)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from node.health import health_document
from node.metrics import REGISTRY
from node.observer import BlockObserver
from tests.node.test_rewards_rpc import InProcessChain
from tests.procs import init_home
from tests.vm.test_rewards import FakeWorld, active, fake_world
from vm.epoch import get_epoch
from vm.modules.rewards import get_settlement_backlog

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("rewards_inproc")]

PARAMS = {"epoch_length_blocks": 10, "settle_vehicles_per_block": 2, "challenge_fraction_bps": 0}
VEHICLES = 12


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(f"motus_settlement_backlog_{name}")


def to_epoch(chain: InProcessChain, epoch: int) -> None:
    """Blocks up to and including the boundary block that starts ``epoch``."""
    while get_epoch(chain.app.head_state()) < epoch:
        chain.block()


def test_backlog_gauges_warning_and_health(tmp_path: Path, caplog) -> None:
    home = init_home(tmp_path, "node")
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["params"].update(PARAMS)
    (home / "genesis.json").write_text(json.dumps(genesis))
    chain = InProcessChain(home)
    chain.app.commit_listeners.append(BlockObserver(chain.node).on_commit)
    owner = chain.node.address
    world = FakeWorld(vehicles={v: (owner, True) for v in range(1, VEHICLES + 1)})
    for epoch in (0, 1):
        world.activity[epoch] = {v: active(12) for v in range(1, VEHICLES + 1)}
    caplog.set_level(logging.WARNING, logger="motus.chain")
    try:
        with fake_world(world):
            to_epoch(chain, 1)  # the boundary block opens epoch 0 and does 2 steps
            assert (gauge("epochs"), gauge("vehicles"), gauge("steps"), gauge("blocks")) == (
                1, 12, 23, 12)
            assert "warnings" not in health_document(chain.node)[1]
            assert not caplog.records
            # 11 blocks of 2 steps later (both boundaries included) epoch 1 ends with epoch
            # 0 scored and 10 of its 12 vehicles paid: 3 steps left there, 25 in epoch 1
            to_epoch(chain, 2)
            state = chain.app.head_state()
            backlog = get_settlement_backlog(state)
            assert backlog.epochs == 2 and backlog.spans_epochs and backlog.oldest == 0
            assert gauge("epochs") == 2 and gauge("steps") == backlog.steps == 3 + 25
            assert gauge("blocks") == 14 and gauge("vehicles") == 2 + 12
            [record] = caplog.records
            assert record.levelname == "WARNING"
            assert "settlement backlog: 2 ended epochs not settled (oldest 0)" in record.message
            status, doc = health_document(chain.node)
            assert doc["warnings"][0]["code"] == "settlement_backlog"
            assert "2 epochs behind" in doc["warnings"][0]["message"]
            assert status == (200 if doc["status"] == "ok" else 503)  # warnings never set it
            while get_settlement_backlog(chain.app.head_state()).epochs > 1:
                chain.block()
            assert "warnings" not in health_document(chain.node)[1]
            assert len(caplog.records) == 1  # one warning a change of the epochs behind
            to_epoch(chain, 4)
            assert (gauge("epochs"), gauge("vehicles"), gauge("steps"), gauge("blocks")) == (0, 0, 0, 0)
    finally:
        chain.close()
