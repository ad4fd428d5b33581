"""SIGKILL a real node process while an epoch's settlement is spread over blocks
(docs/rewards.md "Settlement"): restarted, it goes on from its cursor, finishes the epoch
and ends with exactly what a node that never crashed computes from the same blocks, and
with the records the one-shot ``process_epoch_end`` gives on the same inputs.

Eight cars of the devnet fleet simulator (one per owner) send readings in one epoch; with
``settle_vehicles_per_block`` 2 their 17 settlement steps take 9 blocks (200 ms each), and
the node is killed while ``motus_getEpoch`` says "settling" with work left."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from devnet import fleet
from tests.node.test_rewards_rpc import InProcessChain
from tests.procs import NodeProcess, init_home, rpc, wait_until
from vm.epoch import advance_clock
from vm.modules import SYSTEM_MODULES
from vm.modules.rewards import get_epoch_result, list_epoch_rewards, process_epoch_end

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CARS = 8
PARAMS = {
    "epoch_length_blocks": 25,  # 5 s at 200 ms blocks
    "min_attestations": 2,
    "challenge_fraction_bps": 0,
    "settle_vehicles_per_block": 2,
}


def home_with(tmp: Path, params: dict[str, int]) -> Path:
    home = init_home(tmp, "node")
    cfg = (home / "config.toml").read_text().replace("enabled = true", "enabled = false")  # no p2p
    (home / "config.toml").write_text(cfg)
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["params"].update(params)
    (home / "genesis.json").write_text(json.dumps(genesis))
    return home


def drive_one_epoch(url: str) -> int:
    """Set the fleet up, then three readings per car inside one epoch (started early in
    it, so all three fall in it); returns that epoch."""
    cars = fleet.setup_fleet(url, fleet.plan_fleet("settle crash", CARS, 7077,
                                                   fleet.chain_param(url, "h3_resolution")))
    assert len(cars) == CARS
    fleet.place_cars(url, cars, int(time.time() * 1000))
    # 3 rounds 1.1 s apart take ~2.3 s of an epoch's 5 s: go now if 15 of its blocks
    # (3 s at 200 ms) are left, else at the start of the next one
    info = rpc(url, "motus_getEpoch")
    if info["endHeight"] - int(info["blockNumber"]) < 15:
        wait_until(lambda: rpc(url, "motus_getEpoch")["epoch"] > info["epoch"], 15, "the next epoch")
    epoch = rpc(url, "motus_getEpoch")["epoch"]
    tally = fleet.Tally()
    for k in range(3):
        if k:
            time.sleep(1.1)
        fleet.submit_round(url, cars, tally, 1000)
    assert tally.accepted == 3 * CARS, tally
    assert rpc(url, "motus_getEpoch")["epoch"] == epoch, "the readings straddled a boundary"
    return epoch


def test_sigkill_mid_settlement_resumes_and_matches_a_node_that_never_crashed(tmp_path) -> None:
    home = home_with(tmp_path / "a", PARAMS)
    twin_home = Path(shutil.copytree(home, tmp_path / "twin"))  # same keys and genesis
    node = NodeProcess(home)
    try:
        node.start()
        epoch = drive_one_epoch(node.url)

        def settling() -> dict | None:
            info = rpc(node.url, "motus_getEpoch", [epoch])
            if info["status"] == "settled":
                raise AssertionError(f"epoch {epoch} settled before the kill: {info}")
            s = info.get("settlement")
            return info if s and s["scored"] >= 2 else None

        info = wait_until(settling, 30, f"epoch {epoch} to be settling")
        node.kill()  # SIGKILL in the middle of the settlement: no cleanup of any kind
        killed_progress = info["settlement"]
        assert killed_progress["paid"] < CARS
        killed_at = int(info["blockNumber"])

        node = NodeProcess(home, rpc_port=node.rpc_port, p2p_port=node.p2p_port)
        node.start()
        wait_until(lambda: rpc(node.url, "motus_getEpoch", [epoch])["status"] == "settled", 30,
                   f"epoch {epoch} to settle after the restart")
        settled = rpc(node.url, "motus_getEpoch", [epoch])
        assert settled["vehicles"] == CARS and int(settled["minted"]) > 0
        assert settled["settledAt"] > killed_at  # finished by the restarted process
        node.wait_height(settled["settledAt"] + 2)  # and the chain goes on
    finally:
        node.stop()

    # A node that never crashed: the same blocks (each checked as a validator does, from
    # genesis) must give the same state root, so the same balances and records.
    crashed = InProcessChain(home)
    twin = InProcessChain(twin_home)
    try:
        boundary = get_epoch_result(crashed.app.head_state(), epoch).ended_at
        one_shot = None
        for h in range(1, crashed.height + 1):
            block = crashed.node.store.block_by_height(h)
            if h == boundary:
                one_shot = one_shot_settlement(twin, block.header, epoch)
            twin.app.commit(h, block.encode(), crashed.node.store.commit_at(h))
        assert twin.app.head.state_root == crashed.app.head.state_root
        state = crashed.app.head_state()
        spread = list_epoch_rewards(state, epoch)
        assert len(spread) == CARS and all(r.reward > 0 for r in spread)
        # ... and what the one-shot settlement of the same inputs records
        assert one_shot is not None
        records, result = one_shot
        assert spread == records
        got = get_epoch_result(state, epoch)
        same = ("pool", "total_points", "minted", "vehicle_count", "carry_in", "carry_out", "evaluated")
        assert [getattr(got, f) for f in same] == [getattr(result, f) for f in same]
    finally:
        crashed.close()
        twin.close()


def one_shot_settlement(chain: InProcessChain, header, epoch: int):
    """On a scratch copy of ``chain``'s head state (the parent of the boundary block
    ``header``): that block's epoch clock and module hooks, then ``process_epoch_end``
    settling the ended ``epoch`` at once. Returns its records and result."""
    app = chain.app
    env = app.env_for(header.height, header.timestamp_ms, header.proposer, app.head)
    state = app.state_at(app.head, env)
    assert advance_clock(state, header.height)
    for module in SYSTEM_MODULES.values():
        module.begin_block(state, env, True)
    result = process_epoch_end(state, epoch)
    return list_epoch_rewards(state, epoch), result
