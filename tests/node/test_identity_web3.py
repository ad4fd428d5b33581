"""The identity module as a wallet sees it: web3.py contract objects built from the shipped
ABI (vm/abi/identity.json) against a real node. Happy paths (mint a vehicle, a
manufacturer mints a device, claim and pair with device EIP-712 signatures made by
eth_account, grant, expiry by block time, transfer resets grants, unpair, burn),
refusals as ContractLogicError with the module's reason, Transfer/DevicePaired logs by
eth_getLogs topic filters, an eth_getProof of a vehicle's owner slot checked against the
block's stateRoot with the trie library, and the motus_ identity methods agreeing with
the contract's own views."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from trie import HexaryTrie
from trie.exceptions import BadTrieProof
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from tests.eip712_types import CLAIM_TYPES, PAIR_TYPES
from tests.fixtures.rpc_node import CHAIN_ID, dev_accounts, start_node
from tests.procs import NodeProcess, rpc
from vm.vin import vin_hash as compute_vin_hash

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("identity_node"), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = "0x00000000000000000000000000000000004d0703"
ABI = json.loads((ROOT / "vm" / "abi" / "identity.json").read_text())
OWNER_SLOT = 10  # docs/identity.md: mapping(uint256 vehicleId => address owner)
DOMAIN = {
    "name": "Motus Identity",
    "version": "1",
    "chainId": CHAIN_ID,
    "verifyingContract": IDENTITY,
}
LIVE_DATA, RAW_DATA = 1 << 5, 1 << 6


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = start_node(tmp_path_factory.mktemp("identity_web3"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def w3(node: NodeProcess) -> Web3:
    return Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 10}))


@pytest.fixture(scope="module")
def ident(w3: Web3) -> Contract:
    return w3.eth.contract(address=Web3.to_checksum_address(IDENTITY), abi=ABI)


alice, manufacturer, bob, stranger = (dev_accounts()[i] for i in (0, 1, 2, 3))


def transact(w3: Web3, acct: LocalAccount, fn: Any) -> Any:
    """Build (web3 estimates gas: a revert raises ContractLogicError), sign, send, wait."""
    tx = fn.build_transaction(
        {
            "from": acct.address,
            "chainId": CHAIN_ID,
            "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
        }
    )
    h = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(h, timeout=15, poll_latency=0.1)
    assert receipt["status"] == 1
    return receipt


def new_vin() -> str:
    return "WMZ" + uuid.uuid4().hex[:14].upper()  # Europe: no check digit


def mint_vehicle(w3: Web3, ident: Contract, acct: LocalAccount = alice,
                 vin: str | None = None) -> tuple[int, bytes]:
    vin = vin or new_vin()
    vin_hash = compute_vin_hash(vin)
    receipt = transact(w3, acct, ident.functions.mintVehicle("Volvo", "XC40", 2022, vin))
    (minted,) = ident.events.VehicleMinted().process_receipt(receipt, errors=DISCARD)
    return minted["args"]["vehicleId"], vin_hash


def sign(device: LocalAccount, types: dict, message: dict) -> bytes:
    return bytes(Account.sign_typed_data(device.key, DOMAIN, types, message).signature)


def deadline(w3: Web3) -> int:
    return w3.eth.get_block("latest")["timestamp"] + 600


def claim_signature(w3: Web3, ident: Contract, device: LocalAccount, owner: str) -> tuple:
    nonce = ident.functions.nonces(device.address).call()
    d = deadline(w3)
    msg = {"device": device.address, "owner": owner, "nonce": nonce, "deadline": d}
    return nonce, d, sign(device, CLAIM_TYPES, msg)


def pair_signature(
    w3: Web3, ident: Contract, vehicle_id: int, device: LocalAccount, owner: str
) -> tuple:
    nonce = ident.functions.nonces(device.address).call()
    d = deadline(w3)
    msg = {
        "vehicleId": vehicle_id,
        "device": device.address,
        "owner": owner,
        "nonce": nonce,
        "deadline": d,
    }
    return nonce, d, sign(device, PAIR_TYPES, msg)


def topic(value: int | str) -> str:
    """A uint or address as a 32-byte log topic."""
    if isinstance(value, str):
        return "0x" + value[2:].lower().rjust(64, "0")
    return "0x" + value.to_bytes(32, "big").hex()


def event_topic(signature: str) -> str:
    return "0x" + keccak(signature.encode()).hex()


# --- tests --------------------------------------------------------------------------------


def test_shipped_abi_is_what_the_node_serves(w3: Web3, ident: Contract, node: NodeProcess):
    served = rpc(node.url, "motus_systemContracts")["identity"]
    assert served == {"address": IDENTITY, "abi": ABI}
    assert ident.functions.name().call() == "Motus Vehicle"
    assert ident.functions.symbol().call() == "MVEH"
    assert ident.functions.supportsInterface(bytes.fromhex("80ac58cd")).call() is True
    assert ident.functions.isManufacturer(manufacturer.address).call() is True
    assert ident.functions.isManufacturer(stranger.address).call() is False


def test_mint_vehicle_and_read_it_back(w3: Web3, ident: Contract, node: NodeProcess):
    before = rpc(node.url, "motus_vehiclesOf", [bob.address])
    vin = new_vin()
    vehicle_id, vin_hash = mint_vehicle(w3, ident, bob, vin)
    assert ident.functions.ownerOf(vehicle_id).call() == bob.address
    assert ident.functions.vehicleIdByVin(vin_hash).call() == vehicle_id
    owner, make, model, year, stored_hash, device = ident.functions.getVehicle(vehicle_id).call()
    assert (owner, make, model, year, stored_hash) == (bob.address, "Volvo", "XC40", 2022, vin_hash)
    assert int(device, 16) == 0
    got = rpc(node.url, "motus_getVehicle", [vehicle_id])
    assert {k: got[k] for k in ("id", "owner", "make", "model", "year", "vinHash", "device")} == {
        "id": vehicle_id,
        "owner": bob.address.lower(),
        "make": "Volvo",
        "model": "XC40",
        "year": 2022,
        "vinHash": "0x" + vin_hash.hex(),
        "device": None,
    }
    assert got["permissionsCount"] == 0
    assert rpc(node.url, "motus_vehiclesOf", [bob.address]) == sorted([*before, vehicle_id])
    assert ident.functions.balanceOf(bob.address).call() == len(before) + 1

    assert ident.functions.hashVin(vin.lower()).call() == vin_hash
    with pytest.raises(ContractLogicError, match="vin_taken"):
        transact(w3, alice, ident.functions.mintVehicle("Volvo", "XC40", 2022,
                                                         vin.lower()))
    with pytest.raises(ContractLogicError, match="bad_vin"):
        ident.functions.mintVehicle("Volvo", "XC40", 2022, "NOT-A-VIN").call({"from": alice.address})
    with pytest.raises(ContractLogicError, match="invalid year"):
        ident.functions.mintVehicle("Volvo", "XC40", 1800, "WMZ00000000000001").call(
            {"from": alice.address}
        )
    with pytest.raises(ContractLogicError, match="nonexistent token"):
        ident.functions.ownerOf(10**9).call()


def test_device_claim_pair_unpair_burn(w3: Web3, ident: Contract, node: NodeProcess):
    vehicle_id, _ = mint_vehicle(w3, ident)
    device = Account.create()
    with pytest.raises(ContractLogicError, match="manufacturer not licensed"):
        transact(w3, stranger, ident.functions.mintDevice(device.address))
    minted = transact(w3, manufacturer, ident.functions.mintDevice(device.address))
    (event,) = ident.events.DeviceMinted().process_receipt(minted, errors=DISCARD)
    token_id = event["args"]["tokenId"]
    got = rpc(node.url, "motus_getDevice", [device.address])
    assert got.pop("blockNumber") >= minted["blockNumber"]
    assert got == {
        "address": device.address.lower(),
        "tokenId": token_id,
        "manufacturer": manufacturer.address.lower(),
        "owner": manufacturer.address.lower(),
        "vehicleId": None,
        "claimed": False,
        "nonce": 0,
    }

    # the claim needs the device key's signature, for this buyer
    impostor = Account.create()
    nonce, d, forged = claim_signature(w3, ident, impostor, alice.address)
    with pytest.raises(ContractLogicError, match="bad device signature"):
        transact(w3, alice, ident.functions.claimDevice(device.address, nonce, d, forged))
    nonce, d, sig = claim_signature(w3, ident, device, alice.address)
    with pytest.raises(ContractLogicError, match="bad device signature"):
        transact(w3, bob, ident.functions.claimDevice(device.address, nonce, d, sig))
    transact(w3, alice, ident.functions.claimDevice(device.address, nonce, d, sig))
    with pytest.raises(ContractLogicError, match="device already claimed"):
        transact(w3, alice, ident.functions.claimDevice(device.address, nonce, d, sig))

    nonce, d, pair_sig = pair_signature(w3, ident, vehicle_id, device, alice.address)
    paired = transact(
        w3, alice, ident.functions.pairDevice(vehicle_id, device.address, nonce, d, pair_sig)
    )
    (event,) = ident.events.DevicePaired().process_receipt(paired, errors=DISCARD)
    assert event["args"]["vehicleId"] == vehicle_id and event["args"]["device"] == device.address
    logs = w3.eth.get_logs(
        {
            "address": ident.address,
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [
                event_topic("DevicePaired(uint256,address,address)"),
                topic(vehicle_id),
                topic(device.address),
            ],
        }
    )
    assert [log["transactionHash"] for log in logs] == [paired["transactionHash"]]
    assert ident.functions.getVehicle(vehicle_id).call()[5] == device.address
    tid, mfr, owner, vid, dnonce, claimed = ident.functions.getDevice(device.address).call()
    got = rpc(node.url, "motus_getDevice", [device.address])
    assert (got["tokenId"], got["manufacturer"], got["owner"]) == (
        tid,
        mfr.lower(),
        owner.lower(),
    )
    assert (got["vehicleId"], got["nonce"], got["claimed"]) == (vid, dnonce, claimed)
    assert (vid, dnonce, claimed) == (vehicle_id, 2, True)
    assert rpc(node.url, "motus_getVehicle", [vehicle_id])["device"] == device.address.lower()

    with pytest.raises(ContractLogicError, match="paired vehicle cannot be burned"):
        transact(w3, alice, ident.functions.burnVehicle(vehicle_id))
    transact(w3, alice, ident.functions.unpairDevice(vehicle_id))
    assert rpc(node.url, "motus_getDevice", [device.address])["vehicleId"] is None
    # the spent pairing signature does not work twice
    with pytest.raises(ContractLogicError, match="signature replay"):
        transact(
            w3, alice, ident.functions.pairDevice(vehicle_id, device.address, nonce, d, pair_sig)
        )

    burned = transact(w3, alice, ident.functions.burnVehicle(vehicle_id))
    (event,) = ident.events.Transfer().process_receipt(burned, errors=DISCARD)
    assert event["args"]["to"] == "0x" + "00" * 20 and event["args"]["tokenId"] == vehicle_id
    assert rpc(node.url, "motus_getVehicle", [vehicle_id]) is None
    # ... but it is still there at the block before the burn
    earlier = rpc(node.url, "motus_getVehicle", [vehicle_id, burned["blockNumber"] - 1])
    assert earlier["owner"] == alice.address.lower()
    with pytest.raises(ContractLogicError, match="nonexistent token"):
        ident.functions.ownerOf(vehicle_id).call()

    mints_and_burn = w3.eth.get_logs(
        {
            "address": ident.address,
            "fromBlock": 0,
            "toBlock": "latest",
            "topics": [
                event_topic("Transfer(address,address,uint256)"),
                None,
                None,
                topic(vehicle_id),
            ],
        }
    )
    assert [
        (int(log["topics"][1].hex(), 16), int(log["topics"][2].hex(), 16)) for log in mints_and_burn
    ] == [(0, int(alice.address, 16)), (int(alice.address, 16), 0)]


def test_permissions_end_at_expiry_by_block_time(w3: Web3, ident: Contract, node: NodeProcess):
    vehicle_id, _ = mint_vehicle(w3, ident)
    expiry = w3.eth.get_block("latest")["timestamp"] + 3
    granted = transact(
        w3,
        alice,
        ident.functions.grantPermissions(vehicle_id, bob.address, LIVE_DATA | RAW_DATA, expiry),
    )
    at_grant = granted["blockNumber"]
    has = ident.functions.hasPermission
    assert has(vehicle_id, bob.address, LIVE_DATA).call(block_identifier=at_grant) is True
    assert has(vehicle_id, bob.address, LIVE_DATA | RAW_DATA).call(block_identifier=at_grant)
    assert has(vehicle_id, bob.address, 1).call(block_identifier=at_grant) is False
    assert has(vehicle_id, alice.address, 0xED).call(block_identifier=at_grant) is True  # owner
    assert rpc(node.url, "motus_getPermissions", [vehicle_id, at_grant]) == [
        {
            "grantee": bob.address.lower(),
            "bits": LIVE_DATA | RAW_DATA,
            "bitNames": ["live_data", "raw_data"],
            "expiry": str(expiry),
            "active": True,
        }
    ]
    assert rpc(node.url, "motus_getVehicle", [vehicle_id, at_grant])["activePermissionsCount"] == 1

    until = time.monotonic() + 15
    while (block := w3.eth.get_block("latest"))["timestamp"] < expiry:
        assert time.monotonic() < until, "no block reached the expiry time"
        time.sleep(0.2)
    assert has(vehicle_id, bob.address, LIVE_DATA).call(block_identifier=block["number"]) is False
    (grant,) = rpc(node.url, "motus_getPermissions", [vehicle_id, block["number"]])
    assert grant["active"] is False and grant["expiry"] == str(expiry)
    got = rpc(node.url, "motus_getVehicle", [vehicle_id, block["number"]])
    assert (got["permissionsCount"], got["activePermissionsCount"]) == (1, 0)

    with pytest.raises(ContractLogicError, match="expiry in the past"):
        transact(w3, alice, ident.functions.grantPermissions(vehicle_id, bob.address, 1, 1))
    with pytest.raises(ContractLogicError, match="not owner"):
        transact(w3, bob, ident.functions.grantPermissions(vehicle_id, bob.address, 1, 2**40))


def test_transfer_resets_permissions(w3: Web3, ident: Contract, node: NodeProcess):
    vehicle_id, _ = mint_vehicle(w3, ident)
    grantee = Account.create().address
    transact(w3, alice, ident.functions.grantPermissions(vehicle_id, grantee, LIVE_DATA, 2**40))
    assert ident.functions.hasPermission(vehicle_id, grantee, LIVE_DATA).call() is True
    assert len(rpc(node.url, "motus_getPermissions", [vehicle_id])) == 1
    moved = transact(
        w3, alice, ident.functions.transferFrom(alice.address, bob.address, vehicle_id)
    )
    (transfer,) = ident.events.Transfer().process_receipt(moved, errors=DISCARD)
    (reset,) = ident.events.PermissionsReset().process_receipt(moved, errors=DISCARD)
    assert transfer["args"]["to"] == bob.address and reset["args"]["vehicleId"] == vehicle_id
    assert transfer["logIndex"] < reset["logIndex"]
    assert ident.functions.hasPermission(vehicle_id, grantee, LIVE_DATA).call() is False
    assert ident.functions.getPermissions(vehicle_id).call() == [[], [], []]
    assert rpc(node.url, "motus_getPermissions", [vehicle_id]) == []
    assert rpc(node.url, "motus_getVehicle", [vehicle_id])["owner"] == bob.address.lower()
    assert vehicle_id in rpc(node.url, "motus_vehiclesOf", [bob.address])
    assert vehicle_id not in rpc(node.url, "motus_vehiclesOf", [alice.address])
    # the old owner's view at the block before is unchanged (state at any block)
    before = moved["blockNumber"] - 1
    assert vehicle_id in rpc(node.url, "motus_vehiclesOf", [alice.address, before])
    assert len(rpc(node.url, "motus_getPermissions", [vehicle_id, before])) == 1
    with pytest.raises(ContractLogicError, match="not owner nor approved"):
        transact(w3, alice, ident.functions.transferFrom(bob.address, alice.address, vehicle_id))


def test_owner_slot_proof_verifies_against_state_root(w3: Web3, ident: Contract):
    vehicle_id, _ = mint_vehicle(w3, ident)
    slot = keccak(vehicle_id.to_bytes(32, "big") + OWNER_SLOT.to_bytes(32, "big"))
    from vm.modules.identity import vehicle_owner_slot

    assert int.from_bytes(slot, "big") == vehicle_owner_slot(vehicle_id)  # docs agree with code
    missing_slot = keccak((10**9).to_bytes(32, "big") + OWNER_SLOT.to_bytes(32, "big"))
    block = w3.eth.get_block("latest")
    proof = w3.eth.get_proof(ident.address, [slot, missing_slot], block["number"])

    account_nodes = [rlp.decode(bytes(n)) for n in proof["accountProof"]]
    raw_account = HexaryTrie.get_from_proof(
        bytes(block["stateRoot"]), keccak(bytes.fromhex(IDENTITY[2:])), account_nodes
    )
    nonce, balance, storage_root, code_hash = rlp.decode(raw_account)
    assert int.from_bytes(nonce, "big") == 1  # system accounts get nonce 1 (EIP-161)
    assert storage_root == bytes(proof["storageHash"])

    owner_item, missing_item = proof["storageProof"]
    raw_owner = HexaryTrie.get_from_proof(
        storage_root, keccak(slot), [rlp.decode(bytes(n)) for n in owner_item["proof"]]
    )
    owner = rlp.decode(raw_owner).rjust(32, b"\x00")[-20:]
    assert owner == bytes.fromhex(alice.address[2:])
    assert owner == bytes(owner_item["value"]).rjust(32, b"\x00")[-20:]
    absent = HexaryTrie.get_from_proof(
        storage_root, keccak(missing_slot), [rlp.decode(bytes(n)) for n in missing_item["proof"]]
    )
    assert absent == b""  # vehicle 10^9 proven not to exist

    tampered = [list(n) for n in account_nodes]
    tampered[-1][-1] = bytes(tampered[-1][-1])[:-1] + b"\x00"
    with pytest.raises(BadTrieProof):
        HexaryTrie.get_from_proof(
            bytes(block["stateRoot"]), keccak(bytes.fromhex(IDENTITY[2:])), tampered
        )
