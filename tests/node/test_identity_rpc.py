"""The motus_ identity methods (motus_getVehicle, motus_getDevice, motus_vehiclesOf,
motus_getPermissions) on a real node: answers at the head and at past blocks, every block
form, null for what does not exist, -32001 for unknown blocks, -32602 naming the bad
parameter; and node.txsend, which the state is made with (send, revert reasons before
sending, node refusals, calls, ABI encoding and log decoding)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from eth_account import Account
from eth_hash.auto import keccak
from web3 import Web3

from node.rpc.client import RPCError, rpc_call
from node.txsend import (
    TxRejected,
    TxReverted,
    decode_logs,
    decode_result,
    decode_revert_reason,
    encode_call,
    eth_call,
    send_call,
)
from tests.fixtures.rpc_node import dev_accounts, start_node
from tests.procs import NodeProcess

pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("identity_node"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = "0x00000000000000000000000000000000004d0703"
ABI = json.loads((ROOT / "vm" / "abi" / "identity.json").read_text())
ALICE, MANUFACTURER, GRANTEE = (dev_accounts()[i] for i in (0, 1, 2))


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = start_node(tmp_path_factory.mktemp("identity_rpc"))
    yield proc
    proc.stop()


def call(url: str, method: str, *params: Any) -> Any:
    return rpc_call(url, method, list(params))


def send(url: str, acct: Any, fn: str, *args: Any) -> dict[str, Any]:
    return send_call(url, bytes(acct.key), IDENTITY, encode_call(ABI, fn, *args), timeout=15)


@pytest.fixture(scope="module")
def chain(node: NodeProcess) -> dict[str, Any]:
    """Alice's vehicle paired with her device and one grant, made with node.txsend; the
    heights before and after each step."""
    url = node.url
    device = Account.create()
    start = int(call(url, "eth_blockNumber"), 16)
    vin_hash = keccak(b"1HGCM82633A004352")
    minted = send(url, ALICE, "mintVehicle", "Saab", "900", 1991, vin_hash)
    (event,) = [
        e for e in decode_logs(ABI, minted["logs"], IDENTITY) if e["event"] == "VehicleMinted"
    ]
    vehicle_id = event["args"]["vehicleId"]
    send(url, MANUFACTURER, "mintDevice", device.address)

    def sign(primary: str, message: dict[str, Any]) -> bytes:
        from vm.modules.identity import CLAIM_DEVICE, PAIR_DEVICE, typed_data

        struct = CLAIM_DEVICE if primary == "ClaimDevice" else PAIR_DEVICE
        doc = typed_data(struct, 7077, message)
        return bytes(Account.sign_typed_data(device.key, full_message=doc).signature)

    deadline = 2**40
    owner = ALICE.address
    claim = {"device": device.address, "owner": owner, "nonce": 0, "deadline": deadline}
    send(url, ALICE, "claimDevice", device.address, 0, deadline, sign("ClaimDevice", claim))
    pair = {"vehicleId": vehicle_id, **claim, "nonce": 1}
    paired = send(
        url, ALICE, "pairDevice", vehicle_id, device.address, 1, deadline, sign("PairDevice", pair)
    )
    granted = send(url, ALICE, "grantPermissions", vehicle_id, GRANTEE.address, 0x81, 2**64)
    return {
        "url": url,
        "before": start,
        "minted": int(minted["blockNumber"], 16),
        "paired": int(paired["blockNumber"], 16),
        "granted": int(granted["blockNumber"], 16),
        "vehicle": vehicle_id,
        "vin_hash": vin_hash,
        "device": device.address.lower(),
    }


def test_vehicle_at_head_and_in_the_past(chain: dict[str, Any]) -> None:
    url, vid = chain["url"], chain["vehicle"]
    got = call(url, "motus_getVehicle", vid)
    assert got["blockNumber"] >= chain["granted"]
    assert {k: v for k, v in got.items() if k != "blockNumber"} == {
        "id": vid,
        "owner": ALICE.address.lower(),
        "make": "Saab",
        "model": "900",
        "year": 1991,
        "vinHash": "0x" + chain["vin_hash"].hex(),
        "device": chain["device"],
        "permissionsCount": 1,
        "activePermissionsCount": 1,
    }
    at_mint = call(url, "motus_getVehicle", vid, chain["minted"])
    assert at_mint["device"] is None and at_mint["permissionsCount"] == 0
    assert at_mint["blockNumber"] == chain["minted"]
    assert call(url, "motus_getVehicle", vid, chain["minted"] - 1) is None
    assert call(url, "motus_getVehicle", vid + 1000) is None
    assert call(url, "motus_getVehicle", 0) is None


def test_device_vehicles_of_and_permissions(chain: dict[str, Any]) -> None:
    url, vid = chain["url"], chain["vehicle"]
    device = call(url, "motus_getDevice", chain["device"])
    assert device["vehicleId"] == vid and device["claimed"] is True and device["nonce"] == 2
    assert device["owner"] == ALICE.address.lower()
    assert device["manufacturer"] == MANUFACTURER.address.lower()
    before_pair = call(url, "motus_getDevice", chain["device"], chain["paired"] - 1)
    assert before_pair["vehicleId"] is None and before_pair["nonce"] == 1
    assert call(url, "motus_getDevice", "0x" + "42" * 20) is None
    # addresses in any letter case
    assert call(url, "motus_getDevice", Web3.to_checksum_address(chain["device"])) is not None

    assert vid in call(url, "motus_vehiclesOf", ALICE.address)
    assert call(url, "motus_vehiclesOf", ALICE.address, chain["before"]) == []
    assert call(url, "motus_vehiclesOf", "0x" + "42" * 20) == []

    assert call(url, "motus_getPermissions", vid) == [
        {
            "grantee": GRANTEE.address.lower(),
            "bits": 0x81,
            "bitNames": ["non_location_history", "approximate_location"],
            "expiry": str(2**64),
            "active": True,
        }
    ]
    assert call(url, "motus_getPermissions", vid, chain["granted"] - 1) == []
    assert call(url, "motus_getPermissions", vid + 1000) is None


def test_block_forms_and_params_by_name(chain: dict[str, Any]) -> None:
    url, vid, h = chain["url"], chain["vehicle"], chain["minted"]
    block_hash = call(url, "eth_getBlockByNumber", hex(h), False)["hash"]
    for ref in (h, hex(h), str(h), {"blockNumber": hex(h)}, {"blockHash": block_hash}):
        assert call(url, "motus_getVehicle", vid, ref)["blockNumber"] == h, ref
    for tag in ("latest", "safe", "finalized", "pending"):
        assert call(url, "motus_getVehicle", vid, tag) is not None
    assert call(url, "motus_getVehicle", vid, "earliest") is None  # genesis has no vehicles
    by_name = rpc_call(url, "motus_getVehicle", {"vehicleId": hex(vid), "block": h})
    assert by_name["blockNumber"] == h
    assert rpc_call(url, "motus_vehiclesOf", {"owner": ALICE.address}) == call(
        url, "motus_vehiclesOf", ALICE.address
    )


@pytest.mark.parametrize(
    ("method", "params", "code", "message"),
    [
        ("motus_getVehicle", [], -32602, "missing value for required argument 0 (vehicleId)"),
        ("motus_getVehicle", ["car"], -32602, "invalid argument 0 (vehicleId)"),
        ("motus_getVehicle", [-1], -32602, "invalid argument 0 (vehicleId)"),
        ("motus_getVehicle", [True], -32602, "invalid argument 0 (vehicleId)"),
        ("motus_getVehicle", [2**256], -32602, "invalid argument 0 (vehicleId)"),
        ("motus_getVehicle", [1, "tomorrow"], -32602, "invalid argument 1 (block)"),
        ("motus_getVehicle", [1, {"blockHash": "0x12"}], -32602, "invalid argument 1 (block)"),
        ("motus_getVehicle", [1, "latest", 3], -32602, "too many arguments, want at most 2"),
        ("motus_getVehicle", [1, 10**9], -32001, "header not found"),
        ("motus_getVehicle", [1, {"blockHash": "0x" + "ab" * 32}], -32000, "header for hash not found"),
        ("motus_getDevice", [], -32602, "missing value for required argument 0 (address)"),
        ("motus_getDevice", ["0x12"], -32602, "invalid argument 0 (address)"),
        ("motus_getDevice", ["0x" + "42" * 20, -5], -32602, "invalid argument 1 (block)"),
        ("motus_vehiclesOf", [7], -32602, "invalid argument 0 (owner)"),
        ("motus_vehiclesOf", ["0x" + "42" * 20, 10**9], -32001, "header not found"),
        ("motus_getPermissions", [None], -32602, "required argument 0 (vehicleId)"),
        ("motus_getPermissions", ["0x"], -32602, "invalid argument 0 (vehicleId)"),
    ],
)
def test_bad_params_name_the_parameter(
    node: NodeProcess, method: str, params: list, code: int, message: str
) -> None:
    with pytest.raises(RPCError) as exc:
        rpc_call(node.url, method, params)
    assert exc.value.code == code
    assert message in exc.value.message


def test_unknown_named_argument(node: NodeProcess) -> None:
    with pytest.raises(RPCError) as exc:
        rpc_call(node.url, "motus_getVehicle", {"id": 1})
    assert exc.value.code == -32602 and "unknown argument 'id'" in exc.value.message


# --- node.txsend ----------------------------------------------------------------------


def test_txsend_refuses_a_reverting_call_before_sending(chain: dict[str, Any]) -> None:
    url = chain["url"]
    nonce = call(url, "eth_getTransactionCount", ALICE.address, "pending")
    with pytest.raises(TxReverted) as exc:
        send(url, ALICE, "mintVehicle", "Saab", "900", 1991, chain["vin_hash"])
    assert exc.value.reason == "VIN already registered"
    assert exc.value.tx_hash is None and exc.value.receipt is None
    assert exc.value.to_json() == {
        "status": "reverted",
        "reason": "VIN already registered",
        "txHash": None,
    }
    assert call(url, "eth_getTransactionCount", ALICE.address, "pending") == nonce  # not sent


def test_txsend_mined_failure_carries_receipt_and_reason(
    chain: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that passed its estimate but failed when mined (state moved in between):
    simulated by an estimate that does not run the call."""
    import node.txsend

    def no_estimate(url: str, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        return hex(300_000) if method == "eth_estimateGas" else rpc_call(url, method, params)

    monkeypatch.setattr(node.txsend, "rpc_call", no_estimate)
    with pytest.raises(TxReverted) as exc:
        send(chain["url"], ALICE, "mintVehicle", "Saab", "900", 1991, chain["vin_hash"])
    err = exc.value
    assert err.reason == "VIN already registered"
    assert err.tx_hash is not None and err.receipt is not None
    assert int(err.receipt["status"], 16) == 0
    assert err.to_json()["txHash"] == err.tx_hash and err.to_json()["gasUsed"] > 21_000


def test_txsend_reports_node_refusals(chain: dict[str, Any]) -> None:
    pauper = Account.create()  # no balance: calls run at gas price 0, the pool refuses
    with pytest.raises(TxRejected) as exc:
        send(chain["url"], pauper, "mintVehicle", "Saab", "900", 1991, keccak(b"other vin"))
    assert exc.value.reason.startswith("insufficient funds")
    assert exc.value.data == {"reason": "insufficient_funds"}


def test_txsend_calls_and_abi_helpers(chain: dict[str, Any]) -> None:
    url, vid = chain["url"], chain["vehicle"]
    out = eth_call(url, IDENTITY, encode_call(ABI, "ownerOf", vid))
    assert decode_result(ABI, "ownerOf", 1, out) == (ALICE.address.lower(),)
    with pytest.raises(TxReverted, match="nonexistent token"):
        eth_call(url, IDENTITY, encode_call(ABI, "ownerOf", 10**9))
    # the same calldata as web3.py's
    contract = Web3().eth.contract(address=Web3.to_checksum_address(IDENTITY), abi=ABI)
    args = ("Saab", "900", 1991, chain["vin_hash"])
    assert encode_call(ABI, "mintVehicle", *args) == bytes.fromhex(
        contract.encode_abi("mintVehicle", args=args)[2:]
    )
    four = encode_call(ABI, "safeTransferFrom", ALICE.address, GRANTEE.address, vid, b"hi")
    assert four == bytes.fromhex(
        contract.get_function_by_signature("safeTransferFrom(address,address,uint256,bytes)")(
            ALICE.address, GRANTEE.address, vid, b"hi"
        )._encode_transaction_data()[2:]
    )
    with pytest.raises(ValueError, match="no function nope"):
        encode_call(ABI, "nope")


def test_decode_revert_reason() -> None:
    error = bytes.fromhex("08c379a0") + eth_abi.encode(["string"], ["no way"])
    assert decode_revert_reason(error) == "no way"
    panic = bytes.fromhex("4e487b71") + eth_abi.encode(["uint256"], [0x11])
    assert decode_revert_reason(panic) == "panic 0x11"
    assert decode_revert_reason(b"") is None
    assert decode_revert_reason(bytes.fromhex("deadbeef")) is None
    assert decode_revert_reason(bytes.fromhex("08c379a0") + b"\x01") is None
