"""The devnet's commands without a running chain: chain parameters checked before
anything is made (one-line errors that list the names), a devnet home made with other
parameters refused with the reset hint, ``devnet reset``, ``device new`` key files,
routes and GPX files for ``device drive``, and the plain status log."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from cli.main import main
from cli.telemetry import parse_time_ms
from devnet.launcher import BlockLog, ChainSample, ChainWatch, DevnetError, prepare
from devnet.routes import RouteDrive, RouteError, distance_m, load_gpx, load_route
from genesis.devnet import PRESETS, parse_param_assignment, preset_params
from tests.procs import motus
from vm.errors import InvalidGenesis


class Done:
    """What ``motus ARGS`` printed and returned, run in this process (fast); one real
    process per test keeps the entry point itself honest."""

    def __init__(self, capsys: pytest.CaptureFixture[str], *args: str) -> None:
        self.returncode = main(list(args))
        self.stdout, self.stderr = capsys.readouterr()

pytestmark = pytest.mark.timeout(60)


def test_params_are_checked_with_one_line_errors(tmp_path: Path, capsys) -> None:
    assert parse_param_assignment("epoch_length_blocks=1_000") == ("epoch_length_blocks", 1000)
    assert preset_params("fast", ["min_attestations=3"])["epoch_length_blocks"] == 30
    assert preset_params("fast", ["min_attestations=3"])["min_attestations"] == 3
    with pytest.raises(InvalidGenesis, match="outside"):
        parse_param_assignment("epoch_length_blocks=5")
    home = tmp_path / "dn"
    unknown = motus("devnet", "up", "--home", str(home), "--param", "epoch_lenght=30", check=False)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "unknown chain parameter 'epoch_lenght'; known: epoch_length_blocks," in unknown.stderr
    for bad, says in (("epoch_length_blocks", "wants NAME=VALUE"), ("min_attestations=x", "not an integer"),
                      ("min_attestations=0", "outside [1, 100000]")):
        done = Done(capsys, "devnet", "up", "--home", str(home), "--param", bad)
        assert done.returncode == 2 and says in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not home.exists()  # refused before anything was made
    gen = Done(capsys, "genesis", "new", "--validator", "0x" + "11" * 20, "--param", "nope=1")
    assert gen.returncode == 2 and "unknown chain parameter 'nope'" in gen.stderr


def test_a_home_made_with_other_parameters_is_refused_with_the_reset_hint(tmp_path: Path) -> None:
    root = tmp_path / "dn"
    prepare(root, 1, 0, 0, 7077, params=PRESETS["fast"])
    prepare(root, 1, 0, 0, 7077, params=None)  # no preset asked: the home is kept as it is
    prepare(root, 1, 0, 0, 7077, params=dict(PRESETS["fast"]))
    with pytest.raises(DevnetError, match=r"epoch_length_blocks=30 \(asked 600\).*motus devnet reset"):
        prepare(root, 1, 0, 0, 7077, params={"epoch_length_blocks": 600})
    genesis = json.loads((root / "genesis.json").read_text())
    assert genesis["params"]["epoch_length_blocks"] in (30, "30")


def test_reset_deletes_a_devnet_home_and_nothing_else(tmp_path: Path, capsys) -> None:
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"x")
    refused = Done(capsys, "devnet", "reset", "--home", str(other))
    assert refused.returncode == 2 and "does not look like a devnet home" in refused.stderr
    assert (other / "cat.jpg").exists()
    root = tmp_path / "dn"
    prepare(root, 1, 0, 0, 7077)
    done = motus("devnet", "reset", "--home", str(root))
    assert json.loads(done.stdout) == {"home": str(root), "reset": True} and not root.exists()
    again = Done(capsys, "devnet", "reset", "--home", str(root))
    assert json.loads(again.stdout)["reset"] is False


def test_device_new_writes_an_owner_only_key_and_never_overwrites(tmp_path: Path, capsys) -> None:
    made = json.loads(motus("device", "new", "--home", str(tmp_path / "me")).stdout)
    path = Path(made["keyFile"])
    assert path == tmp_path / "me" / "devices" / f"{made['device']}.key"
    assert path.stat().st_mode & 0o777 == 0o600
    from eth_account import Account

    assert Account.from_key(path.read_text().strip()).address.lower() == made["device"]
    again = Done(capsys, "device", "new", "--out", str(path))
    assert again.returncode == 2 and "exists: not overwriting" in again.stderr


GPX = """<?xml version="1.0"?>
<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>
<trkpt lat="48.1000" lon="11.5000"><time>2024-01-01T00:00:00Z</time></trkpt>
<trkpt lat="48.1100" lon="11.5000"/><trkpt lat="48.1100" lon="11.5150"/>
</trkseg></trk></gpx>"""


def test_routes_and_gpx_files(tmp_path: Path, capsys) -> None:
    gpx = tmp_path / "trip.gpx"
    gpx.write_text(GPX)
    points = load_gpx(gpx)
    assert points == [(48.1, 11.5), (48.11, 11.5), (48.11, 11.515)]
    car = RouteDrive(points, speed_mps=10.0, odometer_m=100)
    where = [car.advance(10_000) for _ in range(300)]  # 30 km on a 2.2 km open track
    assert car.odometer_m == 100 + 30_000
    # there and back: never a jump, never off the track's box
    assert all(distance_m(a, b) <= 100.5 for a, b in zip(where, where[1:], strict=False))
    assert all(48.1 - 1e-9 <= lat <= 48.11 + 1e-9 for lat, _ in where)
    assert load_route("munich")[0] == load_route("munich")[-1]
    for text, says in (("<gpx/>", "at least two track points"), ("<gpx", "not GPX"),
                       ('<gpx><trkpt lat="95" lon="0"/><trkpt lat="0" lon="0"/></gpx>', "not on Earth")):
        gpx.write_text(text)
        with pytest.raises(RouteError, match=says):
            load_gpx(gpx)
    with pytest.raises(RouteError, match="unknown route 'atlantis': use one of munich"):
        load_route("atlantis")
    key = tmp_path / "dev.key"
    key.write_text("0x" + "11" * 32)
    os.chmod(key, 0o600)
    done = Done(capsys, "device", "drive", "--vehicle", "1", "--device-key-file", str(key),
                "--route", str(gpx), "--rpc", "http://127.0.0.1:9")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "not on Earth" in done.stderr


def test_time_arguments_of_telemetry_read() -> None:
    import time

    now = time.time() * 1000
    assert abs(parse_time_ms("now") - now) < 2000
    assert abs(parse_time_ms("-30m") - (now - 1_800_000)) < 2000
    assert parse_time_ms("1700000000") == 1_700_000_000_000
    assert parse_time_ms("2024-01-01T00:00:00") == 1_704_067_200_000


def test_the_plain_log_is_a_line_per_block_and_says_each_event_once(tmp_path: Path) -> None:
    watch = ChainWatch(tmp_path, "http://127.0.0.1:9")
    epoch = {"epoch": 1, "startHeight": 31, "endHeight": 60, "vehiclesWithData": 3}
    rows = ["validator    rpc ...", "validator-0  http://127.0.0.1:8545  40  0  0  0 commit 0xab"]
    log = BlockLog()
    out = []
    for height in (40, 40, 41, 43):
        watch.samples.append(ChainSample(float(height), height, 10 * height, {"stale": height}, epoch))
        watch.payouts = {0: ["epoch 0: 3 vehicle(s) paid 1.00 MOTUS"]}
        out += log.lines(rows, watch)
    assert all(re.match(r"\d\d:\d\d:\d\d ", line) for line in out if line not in rows)
    blocks = [line[9:] for line in out if line[9:].startswith("block ")]
    assert [b.split()[1] for b in blocks] == ["40", "41", "43"]
    assert "block 43 epoch 1 (18 left)" in blocks[-1] and "ok=10.0 stale=1.0" in blocks[-1]
    assert out.count(rows[0]) == 1  # the table once
    assert [x[9:] for x in out if x[9:].startswith("payout")] == [
        "payout epoch 0: 3 vehicle(s) paid 1.00 MOTUS"]
