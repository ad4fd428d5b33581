"""``motus vehicle ...`` / ``motus device ...`` as subprocesses against a real node, signing
with a keystore made by ``motus keys new --password-file`` (found by --from or given by
--keystore, password by file or MOTUS_PASSWORD) and with 0600 raw key files: JSON output,
exit status 1 with the revert reason when the chain refuses, 2 for local problems. Plus
the argument parsers (permissions, expiry, ids, key files) without a node."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from cli.common import UsageError, load_key_file, parse_id
from cli.identity import parse_expiry, parse_permissions
from node.keys import KeyError_
from rpcclient import rpc_call
from rpcclient.txsend import send_call
from tests.fixtures.rpc_node import MOTUS, dev_accounts, start_node
from tests.procs import MOTUS as MOTUS_CMD
from tests.procs import ROOT, NodeProcess, free_port
from vm.vin import vin_hash as compute_vin_hash

# The tests against a node run up to 16 CLI subprocesses each (the lifecycle also makes
# the wallet's keystore). One costs about 1 s of CPU, most of it imports, and took 2 s of
# wall time at load 8 but 20 s at load 10 beside busy loops (CPU-bound neighbours): the
# lifecycle then took 330 s and its fixtures 72 s. 120 s held only on a quiet machine.
pytestmark = [pytest.mark.timeout(600), pytest.mark.xdist_group("identity_node")]

PASSWORD = "correct horse battery staple"


# --- argument parsers (no node) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("33", 33),
        ("0x21", 0x21),
        ("live_data", 0x20),
        ("live-data, raw_data", 0x60),
        ("NON_LOCATION_HISTORY,approximate_location", 0x81),
        ("all", 0xED),  # bits 1 and 4 gate nothing: not granted
    ],
)
def test_parse_permissions(text: str, bits: int) -> None:
    assert parse_permissions(text) == bits


@pytest.mark.parametrize("text", ["0", "speed", "live_data,speed", ""])
def test_parse_permissions_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_permissions(text)


def test_parse_expiry() -> None:
    now = 1_700_000_000.5
    assert parse_expiry("1767225600", now) == 1_767_225_600
    assert parse_expiry("+3600", now) == 1_700_003_600
    assert parse_expiry("+30d", now) == 1_700_000_000 + 30 * 86_400
    assert parse_expiry("+2h", now) == 1_700_007_200
    assert parse_expiry("2026-01-01", now) == 1_767_225_600  # UTC when no zone is given
    assert parse_expiry("2026-01-01T01:00:00+01:00", now) == 1_767_225_600
    for bad in ("3600", "+3x", "+", "soon", "2026-13-01"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_expiry(bad, now)


def test_parse_id() -> None:
    assert parse_id("7") == 7 and parse_id("0x10") == 16
    for bad in ("0", "-1", "seven"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_id(bad)


def test_key_file_must_be_private(tmp_path: Path) -> None:
    key = Account.create()
    path = tmp_path / "key"
    path.write_text("0x" + key.key.hex() + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(KeyError_, match="chmod 600"):
        load_key_file(path)
    os.chmod(path, 0o600)
    assert load_key_file(path) == bytes(key.key)
    path.write_text("abcd")
    with pytest.raises(UsageError, match="32 bytes"):
        load_key_file(path)


# --- against a node ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = start_node(tmp_path_factory.mktemp("identity_cli"))
    yield proc
    proc.stop()


def motus(*args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """Run ``python -m cli.main ARGS``; (exit status, stdout as JSON or None, stderr)."""
    base = {k: v for k, v in os.environ.items() if k != "MOTUS_PASSWORD"}
    proc = subprocess.run(
        [*MOTUS_CMD, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        out = None
    return proc.returncode, out, proc.stderr


def key_file(path: Path, key: bytes) -> str:
    path.write_text(key.hex())
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture(scope="module")
def wallet(node: NodeProcess, tmp_path_factory) -> dict[str, Any]:
    """A keystore made by ``motus keys new``, funded by dev account 0; the manufacturer's
    raw key file; a device key file."""
    tmp = tmp_path_factory.mktemp("wallet")
    home = tmp / "home"
    password_file = tmp / "password"
    password_file.write_text(PASSWORD + "\n")
    code, out, err = motus(
        "keys", "new", "--home", str(home), "--password-file", str(password_file)
    )
    assert code == 0, err
    address = out["address"]
    send_call(node.url, bytes(dev_accounts()[0].key), address, b"", 10 * MOTUS, timeout=15)
    device = Account.create()
    return {
        "home": str(home),
        "address": address,
        "keystore": out["keystore"],
        "password_file": str(password_file),
        "manufacturer_key": key_file(tmp / "manufacturer.key", bytes(dev_accounts()[1].key)),
        "device": device.address.lower(),
        "device_key": key_file(tmp / "device.key", bytes(device.key)),
    }


@pytest.mark.slow
def test_vehicle_and_device_lifecycle(node: NodeProcess, wallet: dict[str, Any]) -> None:
    url = node.url
    by_from = ["--from", wallet["address"], "--home", wallet["home"]]
    by_from += ["--password-file", wallet["password_file"], "--rpc", url]
    by_keystore = ["--keystore", wallet["keystore"], "--rpc", url]
    env_password = {"MOTUS_PASSWORD": PASSWORD}
    device_args = ["--device", wallet["device"], "--device-key-file", wallet["device_key"]]

    code, out, err = motus(
        "vehicle",
        "mint",
        "--make",
        "Renault",
        "--model",
        "Zoe",
        "--year",
        "2019",
        "--vin",
        "vf1ag000X12345678",
        *by_from,
    )
    assert code == 0, err
    assert out["status"] == "success" and out["from"] == wallet["address"]
    assert out["txHash"].startswith("0x") and out["blockNumber"] > 0 and out["gasUsed"] > 21_000
    # upper-cased, hashed with the chain's domain
    assert out["vinHash"] == "0x" + compute_vin_hash("VF1AG000X12345678").hex()
    vid = out["vehicleId"]
    assert [e["event"] for e in out["events"]] == ["Transfer", "VehicleMinted"]
    assert out["events"][1]["args"] == {
        "vehicleId": vid,
        "owner": wallet["address"],
        "vinHash": out["vinHash"],
        "make": "Renault",
        "model": "Zoe",
        "year": 2019,
    }

    code, out, err = motus(
        "device",
        "mint",
        "--device",
        wallet["device"],
        "--private-key-file",
        wallet["manufacturer_key"],
        "--rpc",
        url,
    )
    assert code == 0, err
    assert out["events"][0]["event"] == "DeviceMinted" and out["tokenId"] >= 1

    code, out, err = motus("device", "claim", *device_args, *by_keystore, env=env_password)
    assert code == 0, err
    assert out["owner"] == wallet["address"] and out["events"][0]["event"] == "DeviceClaimed"

    code, out, err = motus("vehicle", "pair", "--vehicle", str(vid), *device_args, *by_from)
    assert code == 0, err
    assert out["events"][0]["event"] == "DevicePaired"
    assert out["events"][0]["args"]["vehicleId"] == vid

    grantee = Account.create().address.lower()
    code, out, err = motus(
        "vehicle",
        "grant",
        "--vehicle",
        str(vid),
        "--grantee",
        grantee,
        "--perms",
        "live_data,raw_data",
        "--expires",
        "2100-01-01",
        *by_from,
    )
    assert code == 0, err
    expiry = int(dt.datetime(2100, 1, 1, tzinfo=dt.UTC).timestamp())
    assert out["events"][0]["args"] == {
        "vehicleId": vid,
        "grantee": grantee,
        "bits": 0x60,
        "expiry": expiry,
    }

    code, shown, err = motus("vehicle", "show", str(vid), "--rpc", url)
    assert code == 0, err
    assert shown["owner"] == wallet["address"] and shown["device"] == wallet["device"]
    assert shown["permissions"] == [
        {
            "grantee": grantee,
            "bits": 0x60,
            "bitNames": ["live_data", "raw_data"],
            "expiry": str(expiry),
            "active": True,
        }
    ]
    rpc_view = rpc_call(url, "motus_getVehicle", [vid, shown["blockNumber"]])
    assert {k: v for k, v in shown.items() if k != "permissions"} == rpc_view
    code, listed, _ = motus("vehicle", "list", "--owner", wallet["address"], "--rpc", url)
    assert code == 0 and listed["vehicles"] == [vid]
    code, dev, _ = motus("device", "show", wallet["device"], "--rpc", url)
    assert code == 0 and dev["vehicleId"] == vid and dev["owner"] == wallet["address"]

    # refusals: exit 1, the reason on stderr and in the JSON, nothing sent
    nonce = rpc_call(url, "eth_getTransactionCount", [wallet["address"], "pending"])
    code, out, err = motus("vehicle", "burn", "--vehicle", str(vid), *by_from)
    assert code == 1
    assert out == {
        "status": "reverted",
        "reason": "paired vehicle cannot be burned",
        "txHash": None,
    }
    assert "paired vehicle cannot be burned" in err
    code, out, err = motus(
        "vehicle",
        "mint",
        "--make",
        "Renault",
        "--model",
        "Zoe",
        "--year",
        "2019",
        "--vin",
        "VF1AG000X12345678",
        *by_from,
    )
    assert code == 1 and out["reason"] == "vin_taken: the VIN is bound to another vehicle"
    assert "vin_taken" in err
    code, out, _ = motus("device", "claim", *device_args, *by_from)
    assert code == 1 and out["reason"] == "device already claimed"
    assert rpc_call(url, "eth_getTransactionCount", [wallet["address"], "pending"]) == nonce

    code, out, err = motus(
        "vehicle", "revoke", "--vehicle", str(vid), "--grantee", grantee, *by_from
    )
    assert code == 0, err
    assert out["events"][0]["event"] == "PermissionsRevoked"
    code, out, err = motus("vehicle", "unpair", "--vehicle", str(vid), *by_from)
    assert code == 0, err
    assert out["device"] == wallet["device"]
    code, out, err = motus("vehicle", "burn", "--vehicle", str(vid), *by_from)
    assert code == 0, err
    assert out["events"][0]["args"]["to"] == "0x" + "00" * 20
    code, out, err = motus("vehicle", "show", str(vid), "--rpc", url)
    assert code == 1 and out["status"] == "not_found" and f"no vehicle {vid}" in err


@pytest.mark.slow
def test_local_problems_exit_2(node: NodeProcess, wallet: dict[str, Any], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not the password")
    mint = ["vehicle", "mint", "--make", "A", "--model", "B", "--year", "2000",
            "--vin", "VF1AG000X12345679"]
    code, out, err = motus(
        *mint, "--keystore", wallet["keystore"], "--password-file", str(wrong), "--rpc", node.url
    )
    assert code == 2 and out is None and "cannot decrypt" in err
    code, _, err = motus(*mint, "--from", wallet["address"], "--rpc", node.url)
    assert code == 2 and "--from needs --home" in err
    code, _, err = motus(
        *mint, "--from", "0x" + "42" * 20, "--home", wallet["home"], "--rpc", node.url
    )
    assert code == 2 and "no keystore for 0x4242" in err
    other = key_file(tmp_path / "other.key", bytes(Account.create().key))
    code, _, err = motus(
        "device",
        "claim",
        "--device",
        wallet["device"],
        "--device-key-file",
        other,
        "--private-key-file",
        wallet["manufacturer_key"],
        "--rpc",
        node.url,
    )
    assert code == 2 and f"not {wallet['device']}" in err
    code, _, err = motus(
        *mint,
        "--private-key-file",
        wallet["manufacturer_key"],
        "--rpc",
        f"http://127.0.0.1:{free_port()}",
    )
    assert code == 2 and "cannot reach node" in err
    # a VIN that is no VIN is refused before anything is signed or sent
    for bad in ("NOT-A-VIN", "1HGCM82643A004352", "VF1AG000O12345679"):
        code, out, err = motus("vehicle", "mint", "--make", "A", "--model", "B", "--year", "2000",
                               "--vin", bad, "--private-key-file", wallet["manufacturer_key"],
                               "--rpc", node.url)
        assert code == 2 and out is None and "bad_vin: " in err, (bad, err)
    code, _, err = motus(*mint, "--vin-hash", "0x" + "11" * 32,
                         "--private-key-file", wallet["manufacturer_key"], "--rpc", node.url)
    assert code == 2 and "--vin-hash" in err  # a raw hash is no longer taken
    code, _, err = motus(
        "vehicle",
        "grant",
        "--vehicle",
        "1",
        "--grantee",
        "0x" + "42" * 20,
        "--perms",
        "speed",
        "--expires",
        "+1d",
        "--private-key-file",
        wallet["manufacturer_key"],
    )
    assert code == 2 and "unknown permission 'speed'" in err  # argparse's usage error
