"""The devnet fleet simulator (``python -m devnet.fleet``) against a real node: it sets its
cars up through transactions, drives them for a while and gets attestations included;
run again with the same seed it finds the same cars and mints nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from devnet import fleet
from rpcclient.txsend import decode_result, encode_call, eth_call
from tests.procs import ROOT, NodeProcess, init_home, rpc
from vm.modules.base import load_abi

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("attest_node"), pytest.mark.timeout(150)]

SEED = "fleet test"
IDENTITY = "0x00000000000000000000000000000000004d0703"
ABI = load_abi("identity")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(init_home(tmp_path_factory.mktemp("fleet"))).start()
    yield proc
    proc.stop()


def run_fleet(url: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devnet.fleet", "--rpc", url, "--seed", SEED, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def done_line(out: str) -> dict[str, int]:
    """sent/accepted of the final summary line."""
    found = re.search(r"^fleet: done: height (\d+) epoch (\d+) vehicles (\d+) sent (\d+) "
                      r"accepted (\d+) ", out, re.M)
    assert found, out
    height, epoch, vehicles, sent, accepted = map(int, found.groups())
    return {"height": height, "epoch": epoch, "vehicles": vehicles, "sent": sent,
            "accepted": accepted}


def test_fleet_gets_attestations_accepted_and_included(node: NodeProcess) -> None:
    node.wait_height(1)
    out = run_fleet(node.url, "--vehicles", "3", "--interval", "1", "--duration", "15",
                    "--report", "5")
    assert out.returncode == 0, out.stderr
    assert "minting 3 devices" in out.stderr
    assert "minting 3 vehicles with their devices' VIN readings" in out.stderr
    done = done_line(out.stdout)
    assert done["vehicles"] == 3 and done["sent"] >= 3 * 10
    assert done["accepted"] == done["sent"]
    # each VIN is bound with its device's evidence (docs/identity.md, "VINs")
    for vid in (1, 2, 3):
        out = eth_call(node.url, IDENTITY, encode_call(ABI, "getVinEvidence", vid))
        assert decode_result(ABI, "getVinEvidence", 1, out) == (1,)
    # what the chain shows: each car's device paired, its attestations in blocks and counted
    head = int(rpc(node.url, "eth_blockNumber"), 16)
    included = [a for h in range(1, head + 1)
                for a in rpc(node.url, "motus_getBlockAttestations", [h])]
    distance = 0
    for vid in (1, 2, 3):
        vehicle = rpc(node.url, "motus_getVehicle", [vid])
        assert vehicle["device"] is not None
        mine = [a for a in included if a["vehicleId"] == vid]
        assert len(mine) >= 10 and all(a["device"] == vehicle["device"] for a in mine)
        stats = rpc(node.url, "motus_getEpochStats", [vid, 0])
        assert stats["accepted"] == len(mine) and stats["moving"] >= len(mine) - 1
        distance += stats["distanceM"]
    # the chain counts whole hectometres: the slowest car (~9 m/s) may not tick in 15 s
    assert distance > 0
    assert sum(rpc(node.url, "motus_getRejectCounts").values()) == 0


def test_fleet_rerun_finds_its_cars_and_mints_nothing(node: NodeProcess) -> None:
    before = [rpc(node.url, "motus_getEpochStats", [vid, 0])["accepted"] for vid in (1, 2, 3)]
    out = run_fleet(node.url, "--vehicles", "3", "--interval", "1", "--duration", "3")
    assert out.returncode == 0, out.stderr
    assert "minting" not in out.stderr and "pairing" not in out.stderr
    assert "3 vehicles ready (ids 1, 2, 3)" in out.stdout
    done = done_line(out.stdout)
    # it carries on from where the chain last saw each device: nothing refused
    assert done["accepted"] == done["sent"] >= 3
    assert rpc(node.url, "motus_getVehicle", [4]) is None
    node.wait_height(int(rpc(node.url, "eth_blockNumber"), 16) + 2)
    after = [rpc(node.url, "motus_getEpochStats", [vid, 0])["accepted"] for vid in (1, 2, 3)]
    assert sum(after) - sum(before) == done["accepted"]


def test_fleet_keys_and_vins_are_derived_from_the_seed() -> None:
    assert fleet.device_key(SEED, 0) == fleet.device_key(SEED, 0)
    assert fleet.device_key(SEED, 0) != fleet.device_key(SEED, 1)
    assert fleet.device_key("other", 0) != fleet.device_key(SEED, 0)
    vins = {fleet.vin(SEED, i) for i in range(100)}
    assert len(vins) == 100 and all(len(v) == 17 and v.isalnum() for v in vins)
    cars = fleet.plan_fleet(SEED, 10, 7077, 7)
    owners = [c.owner for c in cars]
    accounts = fleet.dev_accounts()
    assert owners[:8] == [accounts[i][0] for i in range(2, 10)] and owners[8] == owners[0]
