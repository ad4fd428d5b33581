"""Epoch settlement spread over blocks on a real node's store (LevelDB), in-process as
test_rewards_rpc.py: with two settlement steps a block, two vehicles take three blocks to
settle (docs/rewards.md "Settlement"). While they do, motus_getEpoch says "settling" with
the progress and motus_getRewards serves settled epochs only; the node is closed in the
middle and reopened from its store, finishes the epoch and reaches the same state root
as a twin that was never stopped; an epoch out of the history window is named by its
error code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from consensus.types import Commit
from node.rpc.errors import LIMIT_EXCEEDED
from tests.node.test_rewards_rpc import (
    PARAMS,
    InProcessChain,
    make_fleet,
    rpc_error,
    run_to_boundary,
)
from tests.procs import init_home

pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("rewards_inproc")]

SPREAD = {**PARAMS, "settle_vehicles_per_block": 2, "reward_history_epochs": 1}
PLAN = {0: 5, 1: 4}


def home_with(tmp: Path, params: dict[str, int]) -> Path:
    home = init_home(tmp, "node")
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["params"].update(params)
    (home / "genesis.json").write_text(json.dumps(genesis))
    return home


def decided(chain: InProcessChain, since: int) -> list[tuple[int, bytes, Commit]]:
    """The blocks ``since ..`` head as the store keeps them, with their commits: what a
    peer would be sent to sync."""
    out = []
    for h in range(since, chain.height + 1):
        block = chain.node.store.block_by_height(h)
        out.append((h, block.encode(), chain.node.store.commit_at(h)))
    return out


def settle(chain: InProcessChain, epoch: int) -> int:
    """Empty blocks until ``epoch`` is settled; returns the height that settled it."""
    while chain.call("motus_getEpoch", epoch)["status"] != "settled":
        chain.block()
    return chain.call("motus_getEpoch", epoch)["settledAt"]


def test_a_spread_settlement_reads_truthfully_survives_a_restart_and_ages_out(tmp_path) -> None:
    home = home_with(tmp_path / "a", SPREAD)
    twin_home = Path(shutil.copytree(home, tmp_path / "twin"))  # same keys, same genesis

    chain = InProcessChain(home)
    fleet = make_fleet(chain)
    epoch, boundary = run_to_boundary(chain, fleet, PLAN, settles=False)
    info = chain.call("motus_getEpoch", epoch)
    assert info["status"] == "settling" and info["settledAt"] is None
    assert info["endHeight"] == boundary - 1 and info["minted"] is None
    assert info["settlement"] == {"scored": 2, "paid": 0, "vehicles": 2, "backlog": 1}
    vehicle = fleet["vehicles"][0]
    assert chain.call("motus_getRewards", vehicle)["rewards"] == []  # not settled: not served
    chain.block()  # both vehicles paid, not finalized; then stop the node in the middle
    assert chain.call("motus_getEpoch", epoch)["settlement"]["paid"] == 2
    chain.close()

    chain = InProcessChain(home)  # reopened from its LevelDB store
    settled_at = settle(chain, epoch)
    assert settled_at == boundary + 2  # 2 scoring + 2 paying + 1 finalizing steps, two a block
    info = chain.call("motus_getEpoch", epoch)
    assert int(info["minted"]) > 0 and info["vehicles"] == 2 and "settlement" not in info
    paid = chain.call("motus_getRewards", vehicle, epoch, epoch)["rewards"]
    assert len(paid) == 1 and int(paid[0]["reward"]) > 0
    root = chain.app.head.state_root

    # a peer never stopped, executing the same blocks (each checked as a validator does)
    twin = InProcessChain(twin_home)
    for height, value, commit in decided(chain, 1):
        twin.app.commit(height, value, commit)
    assert twin.app.head.state_root == root
    assert twin.call("motus_getEpoch", epoch)["settledAt"] == settled_at
    twin.close()

    # one epoch of history: once the next epoch is settled, this one's records are cleared
    chain.nonces.clear()
    next_epoch, _ = run_to_boundary(chain, fleet, {}, settles=False)
    settle(chain, next_epoch)
    chain.block()  # the clearing: 2 steps a vehicle + 1 closing, two a block
    chain.block()
    chain.block()
    err = rpc_error(chain, "motus_getRewards", vehicle, epoch, epoch)
    assert err.code == LIMIT_EXCEEDED
    assert err.data == {"reason": "reward_history_cleared", "historyStart": epoch + 1}
    assert chain.call("motus_getRewards", vehicle)["fromEpoch"] == epoch + 1  # default range
    assert int(chain.call("motus_getEpoch", epoch)["minted"]) > 0  # the summary stays
    chain.close()
