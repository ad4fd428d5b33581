"""Location privacy on chain and VIN binding (docs/privacy.md, docs/identity.md "VINs"),
against a real node process.

An observer of the chain sees each attestation's public fields. The test runs the brute
force that recovered an exact 5-decimal GPS fix from version 1's unsalted ``signals_hash``
over the public fields of a real, included attestation, with the attacker handed every
payload field except the position and the salt; it recovers nothing. The same search
finds the position at once when the same reading is hashed without a salt (version 1's
construction, or version 2's commitment with the salt dropped), so the test would catch a
device or a change that stops salting.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3
import pytest

from devnet import fleet
from tests.procs import NodeProcess, init_home, motus, rpc
from vm.attestation import (
    FINE_CELL_RESOLUTION,
    FINE_CELL_SIGNAL,
    compute_commitment,
    encode_signals,
    keccak256,
)
from vm.modules.base import load_abi
from vm.vin import vin_hash

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SEED = "privacy test"
CHAIN_ID = 7077
POSITION = (48.13715, 11.57612)  # a 5-decimal fix (about 1 m), as a phone or dongle gives it
STEP = 0.00001  # the attacker's grid: 5 decimals
IDENTITY = "0x00000000000000000000000000000000004d0703"
WINDOW = 150  # steps either side: a 300 m square around a hint; 90,601 candidates


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    proc = NodeProcess(init_home(tmp_path_factory.mktemp("privacy"))).start()
    try:
        proc.wait_height(1)
        yield proc
    finally:
        proc.stop()


def wait_included(url: str, att_id: bytes, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = rpc(url, "motus_getAttestation", ["0x" + att_id.hex()])
        if status and status["status"] == "included":
            return int(status["height"])
        assert not status or status["status"] != "rejected", status
        time.sleep(0.2)
    raise AssertionError("attestation not included in time")


def brute_force(known: dict[str, Any], target: bytes, centre: tuple[float, float],
                hash_of: Any, with_fine_cell: bool) -> tuple[float, float] | None:
    """Try every 5-decimal position in a (2 * WINDOW + 1)^2 grid around ``centre``:
    the payload ``known + {lat, lon}`` (and the fine cell it implies, when the construction
    has one) hashed with ``hash_of``; the position whose hash is ``target``, or None."""
    lat0, lon0 = round(centre[0], 5), round(centre[1], 5)
    for i in range(-WINDOW, WINDOW + 1):
        lat = round(lat0 + i * STEP, 5)
        for j in range(-WINDOW, WINDOW + 1):
            lon = round(lon0 + j * STEP, 5)
            guess = dict(known, lat=lat, lon=lon)
            if with_fine_cell:
                guess[FINE_CELL_SIGNAL] = h3.latlng_to_cell(lat, lon, FINE_CELL_RESOLUTION)
            if hash_of(encode_signals(guess)) == target:
                return lat, lon
    return None


def test_brute_force_over_public_fields_recovers_no_position(node: NodeProcess) -> None:
    (car,) = fleet.setup_fleet(node.url, fleet.plan_fleet(SEED, 1, CHAIN_ID, 7))
    now_ms = int(time.time() * 1000)
    signals = {"soc": 81.5, "speed_kmh": 43.2}
    reading = car.device.attest(vehicle_id=car.vehicle_id, timestamp_ms=now_ms,
                                lat=POSITION[0], lon=POSITION[1], odometer_m=123_456,
                                speed_cmps=1_200, signals=signals)
    results = rpc(node.url, "motus_submitAttestations",
                  [["0x" + reading.raw.hex()], ["0x" + reading.payload.hex()]])
    assert results[0]["code"] == "ok", results
    height = wait_included(node.url, reading.id)

    # --- what every observer of the chain sees ---
    (public,) = [a for a in rpc(node.url, "motus_getBlockAttestations", [height])
                 if a["id"] == "0x" + reading.id.hex()]
    assert set(public) == {"id", "blockNumber", "device", "vehicleId", "seq", "timestampS",
                           "cell", "odometerHm", "commitment", "challenge", "raw"}
    cell = int(public["cell"], 16)
    assert h3.get_resolution(cell) == 7  # about 5 km2, not the 0.7 km2 of version 1
    assert public["timestampS"] == now_ms // 1000 and public["odometerHm"] == 1_234
    commitment = bytes.fromhex(public["commitment"][2:])
    # the position lies in the public cell's area, well inside the searched window
    centre = h3.cell_to_latlng(cell)
    assert h3.great_circle_distance(centre, POSITION, "m") < 2_000

    # --- the attacker: every payload field except position and salt, handed over exactly,
    # and a hint that puts the true position inside the window ---
    known = dict(signals, timestamp_ms=now_ms, odometer_m=123_456, speed_cmps=1_200)
    hint = (POSITION[0] + 37 * STEP, POSITION[1] - 52 * STEP)
    t0 = time.monotonic()
    assert brute_force(known, commitment, hint, compute_commitment, True) is None
    assert brute_force(known, commitment, hint, keccak256, False) is None
    spent = time.monotonic() - t0

    # --- the same search against the same reading without a salt finds the exact fix ---
    # version 1: keccak of the payload without salt or fine cell (its timestamp, odometer
    # and speed were public on chain)
    v1_hash = keccak256(encode_signals(dict(known, lat=POSITION[0], lon=POSITION[1])))
    assert brute_force(known, v1_hash, hint, keccak256, False) == POSITION
    # version 2's commitment of a payload whose salt was dropped
    unsalted = compute_commitment(encode_signals(dict(
        known, lat=POSITION[0], lon=POSITION[1],
        **{FINE_CELL_SIGNAL: h3.latlng_to_cell(*POSITION, FINE_CELL_RESOLUTION)})))
    assert brute_force(known, unsalted, hint, compute_commitment, True) == POSITION
    assert spent < 60

    # --- the payload the owner's node stored carries its salt and opens the commitment ---
    assert len(reading.signals["salt"]) == 16
    assert compute_commitment(reading.payload) == commitment


# --- VINs: validated and hashed by the node, bound to device evidence, reclaimable ---------


def _call(url: str, key: bytes, fn: str, *args: Any) -> dict[str, Any]:
    from rpcclient.txsend import encode_call, send_call

    return send_call(url, key, IDENTITY, encode_call(load_abi("identity"), fn, *args))


def _refusal(url: str, key: bytes, fn: str, *args: Any) -> str:
    from rpcclient.txsend import TxReverted

    with pytest.raises(TxReverted) as exc:
        _call(url, key, fn, *args)
    return str(exc.value.reason)


def _key_file(path: Path, key: bytes) -> str:
    path.write_text(key.hex())
    os.chmod(path, 0o600)
    return str(path)


def test_vins_are_validated_and_a_squatted_vin_is_reclaimed_with_device_evidence(
        node: NodeProcess, tmp_path: Path) -> None:
    from devnet.device import Device
    from genesis.devnet import dev_accounts

    url = node.url
    accounts = dev_accounts()
    (_, maker_key), (squatter, squatter_key) = accounts[1], accounts[5]
    owner, owner_key = accounts[6]
    vin = "1HGCM82633A004352"  # a real North American VIN: check digit 3

    # malformed VINs are refused by the node, whoever built the transaction
    for bad, why in (("NOT-A-VIN", "9 characters"), ("1HGCM82643A004352", "check digit"),
                     ("1HGCM82633A00435O", "'O'")):
        reason = _refusal(url, squatter_key, "mintVehicle", "Fake", "Car", 2020, bad)
        assert reason.startswith("bad_vin: ") and why in reason, reason

    # the squatter registers the car's VIN first, without evidence...
    _call(url, squatter_key, "mintVehicle", "Squat", "Car", 2003, vin)
    squat_id = rpc(url, "motus_vehiclesOf", ["0x" + squatter.hex()])[-1]
    assert rpc(url, "motus_getVehicle", [squat_id])["vinHash"] == "0x" + vin_hash(vin).hex()
    # ...and cannot mint a second NFT for the same car by spelling it in lower case
    assert _refusal(url, squatter_key, "mintVehicle", "Squat", "Car", 2003,
                    vin.lower()) == "vin_taken: the VIN is bound to another vehicle"

    # the real owner holds the device plugged into the car: minted, then claimed
    device = Device.generate(CHAIN_ID, seed=b"privacy e2e vin device")
    _call(url, maker_key, "mintDevice", device.checksum_address)
    deadline = int(time.time()) + 600
    _call(url, owner_key, "claimDevice", device.checksum_address, 0, deadline,
          device.claim_signature(owner, 0, deadline))
    reading = device.vin_signature(vin, owner, 1, deadline)
    assert _refusal(url, owner_key, "mintVehicleWithDevice", "Honda", "Accord", 2003, vin,
                    device.checksum_address, 1, deadline, reading) == (
        "vin_taken: the VIN is bound to another vehicle without evidence; reclaimVin moves it")
    # someone else's reading (the squatter's claim on the owner's device) is no evidence
    assert _refusal(url, squatter_key, "reclaimVin", "Squat", "Car", 2003, vin,
                    device.checksum_address, 1, deadline,
                    device.vin_signature(vin, squatter, 1, deadline)).startswith("bad_evidence: ")

    # the documented path: motus vehicle reclaim-vin with the device's key
    result = motus("vehicle", "reclaim-vin", "--make", "Honda", "--model", "Accord", "--year",
                   "2003", "--vin", vin.lower(), "--device", device.checksum_address.lower(),
                   "--device-key-file", _key_file(tmp_path / "device.key", device.private_key),
                   "--private-key-file", _key_file(tmp_path / "owner.key", owner_key),
                   "--rpc", url, check=False)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    new_id = out["vehicleId"]
    assert out["vinEvidence"] == "device" and out["vinHash"] == "0x" + vin_hash(vin).hex()
    assert [e["event"] for e in out["events"]] == [
        "Transfer", "VehicleMinted", "VinReclaimed", "DevicePaired"]
    new = rpc(url, "motus_getVehicle", [new_id])
    assert new["owner"] == "0x" + owner.hex() and new["vinHash"] == "0x" + vin_hash(vin).hex()
    assert new["device"] == "0x" + device.address.hex()
    # the squatter keeps its NFT without the VIN, and cannot take it back
    assert rpc(url, "motus_getVehicle", [squat_id])["vinHash"] == "0x" + "00" * 32
    other = Device.generate(CHAIN_ID, seed=b"privacy e2e squatter device")
    _call(url, maker_key, "mintDevice", other.checksum_address)
    _call(url, squatter_key, "claimDevice", other.checksum_address, 0, deadline,
          other.claim_signature(squatter, 0, deadline))
    assert _refusal(url, squatter_key, "reclaimVin", "Squat", "Car", 2003, vin,
                    other.checksum_address, 1, deadline,
                    other.vin_signature(vin, squatter, 1, deadline)) == (
        "vin_taken: the VIN is bound with device evidence already")
