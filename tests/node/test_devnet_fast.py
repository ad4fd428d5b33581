"""``motus devnet up --preset fast`` as a new user meets it, with one validator (to save
CPU) and the fleet with one spoofer of each kind: spoofers are refused by the codes
they are built to earn, a vehicle is paid within two minutes of start, and the
commands around it work against the running devnet: rewards in the first epoch, an
owner's own car (device new, mint, claim, pair, drive) earning, telemetry read with and
without a permission, a governance change applied at the block ``gov show`` predicted,
``motus status`` naming the peer id a node joining by hand (``--bootstrap``) dials,
and ``devnet reset`` refused while it runs. Steps share one devnet, in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from devnet.spoofers import EXPECTED_CODE
from genesis.devnet import dev_accounts
from tests.node.test_network_devnet import free_base
from tests.procs import MOTUS, ROOT, NodeProcess, motus, rpc

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("devnet_fast"), pytest.mark.timeout(150)]

START_BOUND_S = 120  # a payout to a vehicle within two minutes of `devnet up`


class Devnet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "devnet"
        self.rpc_base, self.p2p_base = free_base(1), free_base(1)
        self.url = f"http://127.0.0.1:{self.rpc_base}"
        self.out_path = root / "devnet.out"
        self.out = open(self.out_path, "wb")
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.proc = subprocess.Popen(
            [*MOTUS, "devnet", "up", "--preset", "fast", "--validators", "1", "--home",
             str(self.home), "--rpc-port", str(self.rpc_base), "--p2p-port", str(self.p2p_base)],
            cwd=ROOT, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        self.keys: dict[int, Path] = {}

    def key_file(self, account: int) -> Path:
        """A 0600 file with development account ``account``'s key."""
        if account not in self.keys:
            path = self.root / f"account-{account}.key"
            path.write_text("0x" + dev_accounts()[account][1].hex())
            os.chmod(path, 0o600)
            self.keys[account] = path
        return self.keys[account]

    def cli(self, *args: str, check: bool = True, rpc: bool = True) -> tuple[int, dict[str, Any], str]:
        done = motus(*args, *(("--rpc", self.url) if rpc else ()), check=False, timeout=90)
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}, done.stderr

    def height(self) -> int:
        return int(rpc(self.url, "eth_blockNumber"), 16)

    def wait(self, what: str, check, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                found = check()
            except Exception:
                found = None
            if found:
                return found
            time.sleep(0.5)
        raise TimeoutError(f"{what} after {timeout}s; devnet output:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.out.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    net = Devnet(tmp_path_factory.mktemp("fast"))
    try:
        net.wait("RPC up", lambda: net.height() >= 1, 40)
        yield net
    finally:
        net.stop()


def propose_and_vote(devnet: Devnet) -> dict[str, Any]:
    owner = str(devnet.key_file(9))
    devnet.cli("gov", "lock", "--amount", "2000", "--private-key-file", owner)
    _, proposed, _ = devnet.cli("gov", "propose", "param", "challenge_fraction_bps", "2000",
                                "--deposit", "1000", "--private-key-file", owner)
    pid = str(proposed["proposalId"])
    devnet.cli("gov", "vote", pid, "yes", "--private-key-file", owner)
    _, shown, _ = devnet.cli("gov", "show", pid)
    return {"id": pid, "shown": shown}


@pytest.fixture(scope="module")
def proposal(devnet: Devnet) -> dict[str, Any]:
    """A parameter change proposed, voted and shown by account 9 early on: its wait for
    the epoch boundary overlaps the other steps."""
    return propose_and_vote(devnet)


@pytest.fixture(scope="module")
def own_car(devnet: Devnet) -> dict[str, Any]:
    """Account 0's own car: a new device key, minted by account 1 (the devnet's licensed
    manufacturer), claimed and paired, then driven in the background on the Munich loop."""
    owner, maker = devnet.key_file(0), devnet.key_file(1)
    _, made, _ = devnet.cli("device", "new", "--home", str(devnet.root / "me"), rpc=False)
    key_file, device = made["keyFile"], made["device"]
    assert oct(Path(key_file).stat().st_mode & 0o777) == "0o600"
    devnet.cli("device", "mint", "--device", device, "--private-key-file", str(maker))
    _, minted, _ = devnet.cli("vehicle", "mint", "--make", "Motus", "--model", "Mine",
                              "--year", "2024", "--vin", "WM0TUS00000000042",
                              "--private-key-file", str(owner))
    vehicle = minted["vehicleId"]
    devnet.cli("device", "claim", "--device", device, "--device-key-file", key_file,
               "--private-key-file", str(owner))
    devnet.cli("vehicle", "pair", "--vehicle", str(vehicle), "--device", device,
               "--device-key-file", key_file, "--private-key-file", str(owner))
    log = open(devnet.root / "drive.err", "wb")
    drive = subprocess.Popen(
        [*MOTUS, "device", "drive", "--vehicle", str(vehicle), "--device-key-file", key_file,
         "--duration", "45", "--rpc", devnet.url],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
    yield {"vehicle": vehicle, "device": device, "drive": drive, "key_file": key_file}
    if drive.poll() is None:
        os.killpg(drive.pid, signal.SIGKILL)
        drive.wait()
    log.close()


def test_rewards_in_the_first_epoch_say_nothing_yet(devnet: Devnet) -> None:
    assert devnet.height() < 30  # epoch 0 of the fast preset (30 blocks) is still running
    code, shown, err = devnet.cli("rewards", "show", "--vehicle", "1")
    assert code == 0, err
    assert shown["rewards"] == [] and shown["total"] == "0" and shown["unit"] == "MOTUS"
    assert shown["note"].startswith("nothing yet: epoch 0 is still running (it ends at block 30")


def test_an_owner_drives_their_own_car(devnet: Devnet, proposal: dict[str, Any],
                                      own_car: dict[str, Any],
                                      joiner: tuple[NodeProcess, str, int]) -> None:
    devnet.wait("the car's first readings accepted",
                lambda: rpc(devnet.url, "motus_getEpochStats", [own_car["vehicle"]])["accepted"] >= 2
                or rpc(devnet.url, "motus_getEpochStats", [own_car["vehicle"], 1])["accepted"] >= 2,
                40)


def test_gov_show_says_when_a_change_will_apply(proposal: dict[str, Any]) -> None:
    shown = proposal["shown"]
    assert shown["status"] == "voting" and shown["effectiveAt"] > shown["votingEndBlock"]
    assert (shown["effectiveAt"] - 1) % 30 == 0  # an epoch boundary of the fast preset


@pytest.fixture(scope="module")
def joiner(devnet: Devnet) -> Iterator[tuple[NodeProcess, str, int]]:
    """A node on another home joining by hand: the devnet's genesis and --bootstrap with
    the multiaddr ``motus status`` prints."""
    _, status, _ = devnet.cli("status")
    (addr,) = status["listenAddrs"]
    home = devnet.root / "joiner"
    motus("init", "--home", str(home), "--genesis", str(devnet.home / "genesis.json"))
    joined_at = devnet.height()
    node = NodeProcess(home, extra_args=("--bootstrap", addr)).start()
    try:
        yield node, addr, joined_at
    finally:
        node.stop()


def test_status_names_the_peer_id_and_a_node_joins_with_bootstrap(
        devnet: Devnet, joiner: tuple[NodeProcess, str, int]) -> None:
    node, addr, joined_at = joiner
    peer_id = rpc(devnet.url, "motus_nodeStatus")["peerId"]
    assert addr == f"/ip4/127.0.0.1/tcp/{devnet.p2p_base}/p2p/{peer_id}"
    node.wait_height(joined_at, timeout=60)  # it synced what the chain had when it joined
    assert rpc(node.url, "motus_nodeStatus")["peers"] >= 1
    bad = motus("node", "start", "--home", str(node.home), "--bootstrap", "/ip4/127.0.0.1/tcp/1",
                check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "is not a peer multiaddr" in bad.stderr


def test_spoofers_are_refused_by_code_and_a_vehicle_is_paid_within_two_minutes(
        devnet: Devnet, own_car: dict[str, Any]) -> None:
    left = START_BOUND_S - (time.monotonic() - devnet.started)
    devnet.wait("a payout to a fleet vehicle",
                lambda: int(rpc(devnet.url, "motus_getRewards", [1])["total"]) > 0, max(5, left))
    # when it was paid, by the chain's clock (the steps before may have taken a while)
    first = next(r for r in rpc(devnet.url, "motus_getRewards", [1])["rewards"] if int(r["reward"]))
    settled = rpc(devnet.url, "motus_getEpoch", [first["epoch"]])["settledAt"]
    paid_at = int(rpc(devnet.url, "eth_getBlockByNumber", [hex(settled), False])["timestamp"], 16)
    assert paid_at - devnet.started_wall <= START_BOUND_S, (first, settled)
    counts = rpc(devnet.url, "motus_getRejectCounts")
    status = json.loads((devnet.home / "fleet-status.json").read_text())
    for kind, code in EXPECTED_CODE.items():
        got = status["kinds"][kind]["refused"]
        assert got.get(code, 0) >= 1, (kind, got)
        assert counts[code] >= got[code]
    honest = status["kinds"]["honest"]
    assert honest["refused"] == {} and honest["accepted"] == honest["sent"] > 0
    # spoofers that are refused every time earn nothing
    settled = rpc(devnet.url, "motus_getEpoch")["epoch"] - 1
    for kind in ("teleporter", "backdater", "desk"):
        (vid,) = status["kinds"][kind]["vehicleIds"]
        assert rpc(devnet.url, "motus_getRewards", [vid, 0, settled])["total"] == "0", kind


def test_the_change_applied_where_gov_show_said(devnet: Devnet, proposal: dict[str, Any]) -> None:
    pid, predicted = proposal["id"], proposal["shown"]["effectiveAt"]
    _, shown, _ = devnet.wait("the proposal executed",
                              lambda: (s := devnet.cli("gov", "show", pid))[1]["status"] == "executed"
                              and s, 70)
    assert shown["executedAt"] == predicted and shown["effectiveAt"] is None
    _, params, _ = devnet.cli("gov", "params")
    assert params["params"]["challenge_fraction_bps"]["value"] == "2000"


def test_own_car_earns_and_its_owner_sees_it_in_motus(devnet: Devnet, own_car: dict[str, Any]) -> None:
    vehicle = str(own_car["vehicle"])
    _, shown, _ = devnet.wait(
        "a reward to the owner's own car",
        lambda: Decimal((s := devnet.cli("rewards", "show", "--vehicle", vehicle))[1]["total"]) > 0
        and s, 60)
    assert shown["unit"] == "MOTUS" and Decimal(shown["total"]) > 0 and "note" not in shown
    _, in_wei, _ = devnet.cli("rewards", "show", "--vehicle", vehicle, "--wei",
                              "--to", str(shown["toEpoch"]))
    assert Decimal(in_wei["total"]) == Decimal(shown["total"]) * 10**18


def test_telemetry_read_needs_a_permission(devnet: Devnet, own_car: dict[str, Any]) -> None:
    vehicle = str(own_car["vehicle"])
    reader, stranger = devnet.key_file(9), devnet.key_file(8)
    devnet.cli("vehicle", "grant", "--vehicle", vehicle, "--grantee",
               "0x" + dev_accounts()[9][0].hex(), "--perms", "non_location_history",
               "--expires", "+1h", "--private-key-file", str(devnet.key_file(0)))
    _, got, _ = devnet.cli("telemetry", "read", "--vehicle", vehicle, "--since=-10m",
                           "--private-key-file", str(reader))
    assert got["vehicleId"] == own_car["vehicle"] and len(got["records"]) >= 3
    assert all(r["signals"].get("speed_kmh") == 50.0 for r in got["records"])
    assert all("lat" not in r["signals"] for r in got["records"])  # no location permission
    code, refused, err = devnet.cli("telemetry", "read", "--vehicle", vehicle,
                                    "--private-key-file", str(stranger), check=False)
    assert code == 1 and refused["status"] == "denied" and err.startswith("motus: denied: ")


def test_the_drive_ends_with_a_summary(devnet: Devnet, own_car: dict[str, Any]) -> None:
    out, _ = own_car["drive"].communicate(timeout=70)
    summary = json.loads(out)
    assert summary["vehicleId"] == own_car["vehicle"] and summary["refused"] == {}
    assert summary["accepted"] == summary["sent"] >= 15


def test_reset_is_refused_while_running_and_the_log_is_a_line_per_block(devnet: Devnet) -> None:
    code = motus("devnet", "reset", "--home", str(devnet.home), check=False)
    assert code.returncode == 2 and "a devnet is running on" in code.stderr
    assert code.stderr.count("\n") == 1
    assert devnet.stop() == 0
    out = devnet.output()
    assert "DEVNET ONLY" in out and dev_accounts()[0][1].hex() in out  # anvil's manners
    assert out.count("validator    rpc") == 2  # the table at start and at the end, no more
    blocks = [line for line in out.splitlines() if line[9:].startswith("block ")]
    assert len(blocks) >= 40 and all(len(line) < 200 for line in blocks)
    assert "payout epoch 0:" in out and "devnet: stopped" in out
    done = motus("devnet", "reset", "--home", str(devnet.home))
    assert json.loads(done.stdout)["reset"] is True and not devnet.home.exists()
