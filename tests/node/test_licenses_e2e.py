"""Developer licenses end to end on a 2-validator devnet (issue 17; docs/developers.md).

Validator 0 and validator 1 run as real processes connected by libp2p. A developer mints a
license with ``motus license mint``; a car owner connects the car through the developer's
integration (a synthetic device) and consents with ``motus grant``; the integration's key
drives. The module's tests share that chain and run in file order:

1. web3.py sees the license as an ERC-721 (balanceOf, ownerOf, tokenURI, name, symbol);
2. ``motus_getGrants`` lists the consented vehicle with its bits;
3. a token issued by validator 0 (``motus token issue``) reads the car's telemetry on
   validator 1; a token for validator 0 only is ``wrong_audience`` on validator 1; a
   signed request is answered once, by the validator it names;
4. the synthetic device is rewarded at its own data level (``synthetic_max_data_level``);
5. a revocation ends the token on both nodes in the block that carries it (``revoked``);
6. a transfer does the same for a fresh token (``vehicle_transferred``);
7. rotating the signer key out of the license does the same for the tokens that key
   asked for (``signer_removed``), while the new key's tokens read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3

from devnet.device import Device, Drive
from genesis.devnet import dev_accounts
from node.tokens import sign_token_request, token_request_json
from rpcclient.txsend import decode_logs, encode_call, send_call
from tests.procs import NodeProcess, motus, rpc, validator_pair, wait_until
from vm.modules.base import load_abi
from vm.modules.identity import SYNTHETIC_DEVICE, typed_data
from vm.vin import with_check_digit

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("licenses_e2e"),
              pytest.mark.timeout(300)]

CHAIN_ID = 7077
EPOCH = 30  # blocks
GENESIS_PARAMS = {"epoch_length_blocks": EPOCH, "min_attestations": 3}
IDENTITY = "0x00000000000000000000000000000000004d0703"
LICENSES = "0x00000000000000000000000000000000004d0707"
DEVELOPER, OWNER, SIGNER, BUYER = 2, 3, 5, 6  # dev accounts
READINGS = 12  # 4x min_attestations: data level 3 for a hardware device
INTEGRATION_KEY = bytes.fromhex("5e" * 32)


def hexs(data: bytes) -> str:
    return "0x" + data.hex()


@dataclass
class World:
    nodes: list[NodeProcess]
    node_ids: list[str]
    keys: dict[int, Path]  # dev account -> its key file (mode 0600)
    vehicle_id: int = 0
    token: str = ""

    def account(self, i: int) -> tuple[bytes, bytes]:
        return dev_accounts()[i]

    def cli(self, *args: str, node: int = 0, check: bool = True) -> dict[str, Any]:
        done = motus(*args, "--rpc", self.nodes[node].url, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"motus {' '.join(args)}: {done.returncode}\n{done.stderr}")
        return json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr}

    def refusal(self, node: int, token: str) -> str:
        with pytest.raises(RuntimeError) as info:
            rpc(self.nodes[node].url, "motus_verifyToken", [token])
        error = info.value.args[0]
        assert error["code"] == -32000, error
        return error["data"]["code"]

    def at_least(self, node: int, height: int) -> None:
        wait_until(lambda: rpc(self.nodes[node].url, "eth_blockNumber") and
                   int(rpc(self.nodes[node].url, "eth_blockNumber"), 16) >= height, 30,
                   f"node {node} at height {height}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("licenses_e2e")
    keys = {}
    for i in (DEVELOPER, OWNER, SIGNER, BUYER):
        path = root / f"dev{i}.key"
        path.write_text(dev_accounts()[i][1].hex())
        path.chmod(0o600)
        keys[i] = path
    with validator_pair(root, GENESIS_PARAMS) as (nodes, node_ids):
        yield World(nodes, node_ids, keys)


def test_license_is_an_erc721_a_wallet_sees(world: World) -> None:
    out = world.cli("license", "mint", "--name", "Fleet App", "--client-id", "fleet-app",
                    "--redirect-uri", "https://fleet.example/cb",
                    "--signer", hexs(world.account(SIGNER)[0]),
                    "--private-key-file", str(world.keys[DEVELOPER]))
    assert out["licenseId"] == 1 and out["feeWei"] == str(100 * 10**18)
    w3 = Web3(Web3.HTTPProvider(world.nodes[1].url, request_kwargs={"timeout": 10}))
    lic = w3.eth.contract(address=Web3.to_checksum_address(LICENSES), abi=load_abi("licenses"))
    developer = Web3.to_checksum_address(world.account(DEVELOPER)[0])
    wait_until(lambda: lic.functions.balanceOf(developer).call() == 1, 15,
               "validator 1 to see the license")
    assert lic.functions.ownerOf(1).call() == developer
    assert lic.functions.name().call() == "Motus Developer License"
    assert lic.functions.symbol().call() == "MDL"
    assert lic.functions.supportsInterface(bytes.fromhex("80ac58cd")).call() is True
    assert lic.functions.tokenURI(1).call().startswith("data:application/json;base64,")
    transfers = lic.events.Transfer().get_logs(from_block=0)
    assert [(e.args["to"], e.args["tokenId"]) for e in transfers] == [(developer, 1)]
    shown = world.cli("license", "show", "fleet-app", node=1)
    assert shown["signers"] == [hexs(world.account(SIGNER)[0])]
    assert shown["redirectUris"] == ["https://fleet.example/cb"]


def test_owner_connects_the_car_and_consents_in_one_transaction(world: World) -> None:
    _, owner_key = world.account(OWNER)
    vin = with_check_digit("1FTFW1E50A0000017")
    receipt = send_call(world.nodes[0].url, owner_key, IDENTITY,
                        encode_call(load_abi("identity"), "mintVehicle", "Make", "Model", 2024, vin))
    minted = [e for e in decode_logs(load_abi("identity"), receipt["logs"], IDENTITY)
              if e["event"] == "VehicleMinted"]
    world.vehicle_id = minted[0]["args"]["vehicleId"]
    # the integration (its license's signer key) consents to connect this car with its key
    device = Device(INTEGRATION_KEY, CHAIN_ID)
    deadline = int(time.time()) + 600
    doc = typed_data(SYNTHETIC_DEVICE, CHAIN_ID, {
        "vehicleId": world.vehicle_id, "licenseId": 1, "device": hexs(device.address),
        "owner": hexs(world.account(OWNER)[0]), "deadline": deadline})
    consent = bytes(Account.sign_typed_data(world.account(SIGNER)[1], full_message=doc).signature)
    send_call(world.nodes[0].url, owner_key, IDENTITY,
              encode_call(load_abi("identity"), "mintSyntheticDevice", world.vehicle_id, 1,
                          hexs(device.address), deadline, consent))
    out = world.cli("grant", "--license", "1", "--vehicle", str(world.vehicle_id),
                    "--template", "full", "--expires", "+1d",
                    "--private-key-file", str(world.keys[OWNER]))
    assert out["status"] == "success"
    grants = wait_until(lambda: (lambda g: g if g["total"] else None)(
        rpc(world.nodes[1].url, "motus_getGrants", ["fleet-app"])), 15, "the grant on validator 1")
    assert [(g["vehicleId"], g["bits"]) for g in grants["grants"]] == [(world.vehicle_id, 0xED)]


def test_token_issued_by_one_validator_reads_on_the_other(world: World) -> None:
    device = Device(INTEGRATION_KEY, CHAIN_ID)
    drive = Drive(48.137, 11.575, heading_deg=45.0, odometer_m=20_000)
    drive.timestamp_ms = int(time.time() * 1000) - (READINGS + 2) * 1_000
    readings = list(drive.readings(device, world.vehicle_id, READINGS, 1_000, signals={"soc": 71.0}))
    results = rpc(world.nodes[0].url, "motus_submitAttestations",
                  [[hexs(r.raw) for r in readings], [hexs(r.payload) for r in readings]])
    assert [r["code"] for r in results] == ["ok"] * READINGS, results
    out = world.cli("token", "issue", "--license", "1", "--vehicle", str(world.vehicle_id),
                    "--signer-key-file", str(world.keys[SIGNER]), node=0)
    world.token = out["token"]
    assert out["bits"] == 0xED and out["audience"] == "*"

    def on_node1() -> dict[str, Any] | None:
        got = rpc(world.nodes[1].url, "motus_getTelemetry", [{"token": world.token}])
        return got if len(got["records"]) == READINGS else None

    got = wait_until(on_node1, 30, "validator 1 to serve the car's readings to the token")
    assert got["records"][0]["signals"]["soc"] == 71.0
    assert rpc(world.nodes[1].url, "motus_verifyToken", [world.token])["bitsNow"] == 0xED
    # the query API takes the same credential
    latest = rpc(world.nodes[1].url, "motus_getLatestSignals",
                 [{"token": world.token}, {"vehicleId": world.vehicle_id}])
    assert latest["vehicleId"] == world.vehicle_id and latest["signals"]["soc"]["value"] == 71.0
    # a token for validator 0 only
    only0 = world.cli("token", "issue", "--license", "1", "--vehicle", str(world.vehicle_id),
                      "--signer-key-file", str(world.keys[SIGNER]), "--audience",
                      world.node_ids[0], node=0)["token"]
    assert rpc(world.nodes[0].url, "motus_verifyToken", [only0])["audience"] == world.node_ids[0]
    assert world.refusal(1, only0) == "wrong_audience"
    # a key that is not the license's signer gets nothing, with its reason
    done = motus("token", "issue", "--license", "1", "--vehicle", str(world.vehicle_id),
                 "--signer-key-file", str(world.keys[OWNER]), "--rpc", world.nodes[0].url,
                 check=False)
    assert done.returncode == 1 and json.loads(done.stdout)["code"] == "not_signer"
    # a copy of a signed request mints nothing: not again here, not at the other validator
    validator0 = bytes.fromhex(rpc(world.nodes[0].url, "motus_nodeStatus")["validator"][2:])
    request = token_request_json(sign_token_request(
        world.account(SIGNER)[1], CHAIN_ID, validator0, 1, world.vehicle_id,
        int(time.time() * 1000)))
    assert rpc(world.nodes[0].url, "motus_issueToken", [request])["signer"] == \
        hexs(world.account(SIGNER)[0])
    for node, code in ((0, "replayed"), (1, "wrong_audience")):
        with pytest.raises(RuntimeError) as info:
            rpc(world.nodes[node].url, "motus_issueToken", [request])
        assert info.value.args[0]["data"]["code"] == code


def test_synthetic_device_is_rewarded_at_its_own_data_level(world: World) -> None:
    epoch = rpc(world.nodes[1].url, "motus_getEpoch")["epoch"]

    def settled() -> list[dict[str, Any]] | None:
        got = rpc(world.nodes[1].url, "motus_getRewards", [world.vehicle_id, 0, epoch])["rewards"]
        return got or None

    rewards = wait_until(settled, 3 * EPOCH, "the epoch with the car's readings to settle")
    assert rewards[0]["qualified"] is True
    assert rewards[0]["dataLevel"] == 1  # synthetic_max_data_level; a dongle would get 3
    assert int(rewards[0]["reward"]) > 0
    device = Device(INTEGRATION_KEY, CHAIN_ID)
    record = rpc(world.nodes[1].url, "motus_getDevice", [hexs(device.address)])
    assert record["vehicleId"] == world.vehicle_id


def test_revocation_ends_outstanding_tokens_within_one_block(world: World) -> None:
    assert rpc(world.nodes[1].url, "motus_verifyToken", [world.token])["bitsNow"] == 0xED
    out = world.cli("grant", "--license", "1", "--vehicle", str(world.vehicle_id), "--revoke",
                    "--private-key-file", str(world.keys[OWNER]))
    height = out["blockNumber"]
    for node in (0, 1):
        world.at_least(node, height)
        assert world.refusal(node, world.token) == "revoked"
    with pytest.raises(RuntimeError) as info:
        rpc(world.nodes[1].url, "motus_getTelemetry", [{"token": world.token}])
    assert info.value.args[0]["data"]["code"] == "revoked"
    assert rpc(world.nodes[1].url, "motus_getGrants", [1])["total"] == 0


def test_transfer_ends_outstanding_tokens_within_one_block(world: World) -> None:
    world.cli("grant", "--license", "1", "--vehicle", str(world.vehicle_id), "--template",
              "basic", "--expires", "+1d", "--private-key-file", str(world.keys[OWNER]))
    token = world.cli("token", "issue", "--license", "1", "--vehicle", str(world.vehicle_id),
                      "--signer-key-file", str(world.keys[SIGNER]), node=0)["token"]
    wait_until(lambda: rpc(world.nodes[1].url, "motus_verifyToken", [token]), 15,
               "validator 1 to accept the fresh token")
    owner, owner_key = world.account(OWNER)
    receipt = send_call(world.nodes[0].url, owner_key, IDENTITY,
                        encode_call(load_abi("identity"), "transferFrom", hexs(owner),
                                    hexs(world.account(BUYER)[0]), world.vehicle_id))
    height = int(receipt["blockNumber"], 16)
    for node in (0, 1):
        world.at_least(node, height)
        assert world.refusal(node, token) == "vehicle_transferred"


def test_rotating_a_signer_out_ends_its_tokens_within_one_block(world: World) -> None:
    # the buyer consents to the same license; the old signer key asks for a token
    world.cli("grant", "--license", "1", "--vehicle", str(world.vehicle_id), "--template",
              "basic", "--expires", "+1d", "--private-key-file", str(world.keys[BUYER]))
    old = world.cli("token", "issue", "--license", "1", "--vehicle", str(world.vehicle_id),
                    "--signer-key-file", str(world.keys[SIGNER]), node=0)
    assert old["signer"] == hexs(world.account(SIGNER)[0])
    wait_until(lambda: rpc(world.nodes[1].url, "motus_verifyToken", [old["token"]]), 15,
               "validator 1 to accept the old signer's token")
    new_signer = world.account(OWNER)  # any key the developer trusts
    out = world.cli("license", "rotate-signer", "--license", "1",
                    "--old", hexs(world.account(SIGNER)[0]), "--new", hexs(new_signer[0]),
                    "--private-key-file", str(world.keys[DEVELOPER]))
    height = out["blockNumber"]
    for node in (0, 1):
        world.at_least(node, height)
        assert world.refusal(node, old["token"]) == "signer_removed"
    with pytest.raises(RuntimeError) as info:
        rpc(world.nodes[1].url, "motus_getTelemetry", [{"token": old["token"]}])
    assert info.value.args[0]["data"]["code"] == "signer_removed"
    fresh = world.cli("token", "issue", "--license", "1", "--vehicle", str(world.vehicle_id),
                      "--signer-key-file", str(world.keys[OWNER]), node=0)
    assert rpc(world.nodes[0].url, "motus_verifyToken", [fresh["token"]])["bitsNow"] == 0x81
