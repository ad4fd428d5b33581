"""Identity module through LocalChain: real signed transactions, EIP-712 device signatures
made by eth-account from hand-written typed data, receipts and state checked after each."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import eth_abi
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from tests.eip712_types import CLAIM_TYPES, PAIR_TYPES
from tests.harness import CHAIN_ID, LocalChain, Module, Reverted
from vm.errors import InvalidGenesis
from vm.execute import receipt_status
from vm.modules import addresses
from vm.modules.identity import (
    ZERO_ADDRESS,
    DeviceRecord,
    VehicleRecord,
    balance_of,
    get_device,
    get_permissions,
    get_vehicle,
    has_permission,
    is_manufacturer,
    list_manufacturers,
    set_manufacturer,
    total_supply,
    vehicle_by_vin,
    vehicle_owner_slot,
    vehicles_of,
)
from vm.vin import vin_hash, with_check_digit

IDENTITY = addresses.IDENTITY
FAR = 2**40  # a deadline/expiry far beyond any block time in these tests
TRANSFER_TOPIC = (
    0xDDF252AD1BE2C89B69C2B068FC378DAA952BA7F163C4A11628F55A4DF523B3EF  # ERC-721/ERC-20
)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# --- EIP-712, written out by hand so the module is checked against eth-account -------



def domain(
    chain_id: int = CHAIN_ID,
    contract: bytes = IDENTITY,
    name: str = "Motus Identity",
    version: str = "1",
) -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(contract),
    }


def claim_sig(
    device: LocalAccount, owner: bytes, nonce: int, deadline: int = FAR, **dom: Any
) -> bytes:
    message = {
        "device": device.address,
        "owner": to_checksum_address(owner),
        "nonce": nonce,
        "deadline": deadline,
    }
    return bytes(Account.sign_typed_data(device.key, domain(**dom), CLAIM_TYPES, message).signature)


def pair_sig(
    device: LocalAccount, vehicle_id: int, owner: bytes, nonce: int, deadline: int = FAR, **dom: Any
) -> bytes:
    message = {
        "vehicleId": vehicle_id,
        "device": device.address,
        "owner": to_checksum_address(owner),
        "nonce": nonce,
        "deadline": deadline,
    }
    return bytes(Account.sign_typed_data(device.key, domain(**dom), PAIR_TYPES, message).signature)


def device_key(i: int) -> LocalAccount:
    return Account.from_key(keccak(b"motus test device %d" % i))


def vin_text(i: int) -> str:
    """A valid North American VIN (its check digit computed), one per ``i``."""
    return with_check_digit(f"1HGCM82603A{i:06d}")


def vin(i: int) -> bytes:
    """The chain's hash of ``vin_text(i)``."""
    return vin_hash(vin_text(i))


def addr(account: LocalAccount) -> bytes:
    return bytes.fromhex(account.address[2:])


def identity_root(chain: LocalChain) -> bytes:
    """Storage root of the identity account: equal roots mean no module state changed."""
    return chain.state()._account_db._get_storage_root(IDENTITY)


def events(receipt: Any, module: Module) -> list[tuple[str, dict[str, Any]]]:
    """Decode the identity logs of a receipt with the shipped ABI."""
    by_topic = {}
    for ev in module.abi:
        if ev.get("type") == "event":
            sig = f"{ev['name']}({','.join(i['type'] for i in ev['inputs'])})"
            by_topic[int.from_bytes(keccak(sig.encode()), "big")] = ev
    out = []
    for log in receipt.logs:
        if log.address != IDENTITY:
            continue
        ev = by_topic[log.topics[0]]
        indexed = [i for i in ev["inputs"] if i["indexed"]]
        plain = [i for i in ev["inputs"] if not i["indexed"]]
        values = {}
        for spec, topic in zip(indexed, log.topics[1:], strict=True):
            values[spec["name"]] = eth_abi.decode([spec["type"]], topic.to_bytes(32, "big"))[0]
        for spec, value in zip(
            plain, eth_abi.decode([i["type"] for i in plain], log.data), strict=True
        ):
            values[spec["name"]] = value
        out.append((ev["name"], values))
    return out


def cs(a: bytes) -> str:
    return to_checksum_address(a).lower()


# --- a small world: three owners, one manufacturer, four devices ------------------


@dataclass
class World:
    chain: LocalChain
    m: Module
    a0: bytes  # owns vehicle 1 (paired with d0) and vehicle 3; owns d0, d3
    k0: bytes
    maker: bytes  # dev account 1, licensed in the devnet genesis
    kmaker: bytes
    a2: bytes  # owns vehicle 2 and device d1
    k2: bytes
    a3: bytes  # owns nothing
    k3: bytes
    d: list[LocalAccount]  # d2 is still the manufacturer's (unclaimed)


def make_world() -> World:
    chain = LocalChain()
    m = Module(chain, "identity", IDENTITY)
    (a0, k0), (a1, k1), (a2, k2), (a3, k3) = chain.accounts[:4]
    d = [device_key(i) for i in range(4)]
    m.send(k0, "mintVehicle", "Tesla", "Model 3", 2021, vin_text(1))
    m.send(k2, "mintVehicle", "Renault", "Zoe", 2019, vin_text(2))
    m.send(k0, "mintVehicle", "Fiat", "500", 2015, vin_text(3))
    for dev in d:
        m.send(k1, "mintDevice", dev.address)
    m.send(k0, "claimDevice", d[0].address, 0, FAR, claim_sig(d[0], a0, 0))
    m.send(k2, "claimDevice", d[1].address, 0, FAR, claim_sig(d[1], a2, 0))
    m.send(k0, "claimDevice", d[3].address, 0, FAR, claim_sig(d[3], a0, 0))
    m.send(k0, "pairDevice", 1, d[0].address, 1, FAR, pair_sig(d[0], 1, a0, 1))
    return World(chain, m, a0, k0, a1, k1, a2, k2, a3, k3, d)


@pytest.fixture(scope="module")
def shared() -> World:
    """One world for refusal cases: refusals leave module state unchanged (asserted)."""
    return make_world()


@pytest.fixture
def w() -> World:
    return make_world()


def refused(w: World, key: bytes, fn: str, *args: Any, reason: str) -> None:
    before_root = identity_root(w.chain)
    sender = bytes.fromhex(Account.from_key(key).address[2:])
    balance = w.chain.state().get_balance(sender)
    with pytest.raises(Reverted) as err:
        w.m.send(key, fn, *args)
    assert str(err.value) == f"execution reverted: {reason}"
    assert identity_root(w.chain) == before_root
    assert w.chain.state().get_balance(sender) < balance  # a refused call still pays for its gas


# --- vehicles ---------------------------------------------------------------------


def test_mint_vehicle_records_owner_attributes_and_events():
    chain = LocalChain()
    m = Module(chain, "identity", IDENTITY)
    a0, k0 = chain.accounts[0]
    assert m.call("mintVehicle", "Tesla", "Model 3", 2021, vin_text(1), sender=a0) == 1
    receipt = m.send(k0, "mintVehicle", "Tesla", "Model 3", 2021, vin_text(1))
    assert receipt.gas_used > 200_000  # storage writes are charged: spam costs money
    transfer = receipt.logs[0]
    assert transfer.address == IDENTITY
    assert transfer.topics == (TRANSFER_TOPIC, 0, int.from_bytes(a0, "big"), 1)
    assert transfer.data == b""
    assert events(receipt, m) == [
        ("Transfer", {"from": cs(ZERO_ADDRESS), "to": cs(a0), "tokenId": 1}),
        (
            "VehicleMinted",
            {
                "vehicleId": 1,
                "owner": cs(a0),
                "vinHash": vin(1),
                "make": "Tesla",
                "model": "Model 3",
                "year": 2021,
            },
        ),
    ]
    assert m.call("ownerOf", 1) == cs(a0)
    assert m.call("balanceOf", a0) == 1
    assert m.call("totalSupply") == 1
    assert m.call("getVehicle", 1) == (cs(a0), "Tesla", "Model 3", 2021, vin(1), cs(ZERO_ADDRESS))
    assert m.call("vehicleIdByVin", vin(1)) == 1
    assert m.call("tokenOfOwnerByIndex", a0, 0) == 1
    s = chain.state()
    assert get_vehicle(s, 1) == VehicleRecord(1, a0, "Tesla", "Model 3", 2021, vin(1), ZERO_ADDRESS)
    assert get_vehicle(s, 2) is None
    assert vehicles_of(s, a0) == [1]
    assert vehicle_by_vin(s, vin(1)) == 1
    # ids count up from 1
    assert m.send(k0, "mintVehicle", "Tesla", "Model Y", 2023, vin_text(2))
    assert vehicles_of(chain.state(), a0) == [1, 2]


def test_owner_slot_is_the_documented_solidity_mapping_slot():
    """eth_getProof of keccak(pad32(vehicleId) ++ pad32(10)) proves a vehicle's owner."""
    w = make_world()
    slot = int.from_bytes(keccak((2).to_bytes(32, "big") + (10).to_bytes(32, "big")), "big")
    assert vehicle_owner_slot(2) == slot
    assert w.chain.state().get_storage(IDENTITY, slot) == int.from_bytes(w.a2, "big")


def test_erc721_metadata_and_interfaces(w: World):
    m = w.m
    assert m.call("name") == "Motus Vehicle"
    assert m.call("symbol") == "MVEH"
    uri = m.call("tokenURI", 2)
    prefix = "data:application/json;base64,"
    assert uri.startswith(prefix)
    meta = json.loads(base64.b64decode(uri[len(prefix) :]))
    assert meta["name"] == "Motus Vehicle #2"
    assert {"trait_type": "Make", "value": "Renault"} in meta["attributes"]
    for iface, expected in [
        ("01ffc9a7", True),
        ("80ac58cd", True),
        ("5b5e139f", True),
        ("ffffffff", False),
        ("780e9d63", False),
    ]:
        assert m.call("supportsInterface", bytes.fromhex(iface)) is expected
    for fn, args in [
        ("ownerOf", (9,)),
        ("tokenURI", (9,)),
        ("getApproved", (9,)),
        ("getVehicle", (9,)),
    ]:
        with pytest.raises(Reverted, match="nonexistent token"):
            m.call(fn, *args)
    with pytest.raises(Reverted, match="zero address"):
        m.call("balanceOf", ZERO_ADDRESS)
    with pytest.raises(Reverted, match="owner index out of bounds"):
        m.call("tokenOfOwnerByIndex", w.a2, 1)


def test_transfer_moves_ownership_clears_approval_and_permissions(w: World):
    m = w.m
    now = w.chain.head.timestamp_ms // 1000
    m.send(w.k2, "grantPermissions", 2, w.a3, 0b101, now + 3600)
    m.send(w.k2, "approve", w.a3, 2)
    assert m.call("hasPermission", 2, w.a3, 0b1)
    receipt = m.send(w.k3, "transferFrom", w.a2, w.a0, 2)  # by the approved address
    assert events(receipt, m) == [
        ("Transfer", {"from": cs(w.a2), "to": cs(w.a0), "tokenId": 2}),
        ("PermissionsReset", {"vehicleId": 2}),
    ]
    assert m.call("ownerOf", 2) == cs(w.a0)
    assert m.call("getApproved", 2) == cs(ZERO_ADDRESS)
    assert m.call("hasPermission", 2, w.a3, 0b1) is False
    assert m.call("getPermissions", 2) == ((), (), ())
    s = w.chain.state()
    assert get_permissions(s, 2) == []
    assert vehicles_of(s, w.a0) == [1, 2, 3]
    assert vehicles_of(s, w.a2) == []
    assert balance_of(s, w.a0) == 3
    # the new owner grants afresh; the old grantee does not come back
    m.send(w.k0, "grantPermissions", 2, w.a2, 0b1000, now + 3600)
    assert get_permissions(w.chain.state(), 2) == [(w.a2, 0b1000, now + 3600)]


def test_operator_transfers_and_approval_events(w: World):
    m = w.m
    r = m.send(w.k0, "setApprovalForAll", w.a3, True)
    assert events(r, m) == [
        ("ApprovalForAll", {"owner": cs(w.a0), "operator": cs(w.a3), "approved": True})
    ]
    assert m.call("isApprovedForAll", w.a0, w.a3) is True
    r = m.send(w.k3, "approve", w.a2, 3)  # an operator may approve
    assert events(r, m) == [("Approval", {"owner": cs(w.a0), "approved": cs(w.a2), "tokenId": 3})]
    m.send(w.k3, "transferFrom", w.a0, w.a3, 3)
    assert m.call("ownerOf", 3) == cs(w.a3)
    m.send(w.k0, "setApprovalForAll", w.a3, False)
    refused(w, w.k3, "transferFrom", w.a0, w.a3, 1, reason="not owner nor approved")


def test_transfer_of_paired_vehicle_keeps_pairing_and_either_owner_unpairs(w: World):
    m = w.m
    m.send(w.k0, "transferFrom", w.a0, w.a2, 1)
    vehicle = get_vehicle(w.chain.state(), 1)
    assert vehicle is not None and vehicle.owner == w.a2 and vehicle.device == addr(w.d[0])
    # a0 still owns the device and may unpair it from a2's vehicle
    r = m.send(w.k0, "unpairDevice", 1)
    assert events(r, m) == [
        ("DeviceUnpaired", {"vehicleId": 1, "device": cs(addr(w.d[0])), "by": cs(w.a0)})
    ]
    s = w.chain.state()
    assert get_vehicle(s, 1).device == ZERO_ADDRESS
    assert get_device(s, addr(w.d[0])).vehicle_id == 0


def test_burn_frees_vin_and_updates_supply(w: World):
    m = w.m
    r = m.send(w.k0, "burnVehicle", 3)
    assert events(r, m) == [
        ("Transfer", {"from": cs(w.a0), "to": cs(ZERO_ADDRESS), "tokenId": 3}),
        ("PermissionsReset", {"vehicleId": 3}),
    ]
    s = w.chain.state()
    assert get_vehicle(s, 3) is None
    assert total_supply(s) == 2 and m.call("totalSupply") == 2
    assert vehicles_of(s, w.a0) == [1]
    assert vehicle_by_vin(s, vin(3)) is None
    with pytest.raises(Reverted, match="nonexistent token"):
        m.call("ownerOf", 3)
    m.send(w.k3, "mintVehicle", "Fiat", "500", 2015, vin_text(3))  # the VIN can be registered again
    assert m.call("vehicleIdByVin", vin(3)) == 4  # ids are never reused


# --- devices, claiming, pairing ----------------------------------------------------


def test_device_lifecycle_mint_claim_pair_unpair():
    chain = LocalChain()
    m = Module(chain, "identity", IDENTITY)
    (a0, k0), (maker, kmaker) = chain.accounts[:2]
    dev = device_key(7)
    m.send(k0, "mintVehicle", "VW", "ID.3", 2022, vin_text(7))
    r = m.send(kmaker, "mintDevice", dev.address)
    assert events(r, m) == [
        ("DeviceMinted", {"device": cs(addr(dev)), "tokenId": 1, "manufacturer": cs(maker)})
    ]
    assert get_device(chain.state(), addr(dev)) == DeviceRecord(
        addr(dev), 1, maker, maker, 0, False, 0
    )
    assert m.call("deviceOfToken", 1) == cs(addr(dev))
    assert m.call("nonces", dev.address) == 0

    r = m.send(k0, "claimDevice", dev.address, 0, FAR, claim_sig(dev, a0, 0))
    assert events(r, m) == [
        ("DeviceClaimed", {"device": cs(addr(dev)), "owner": cs(a0), "tokenId": 1})
    ]
    assert m.call("getDevice", dev.address) == (1, cs(maker), cs(a0), 0, 1, True)

    r = m.send(k0, "pairDevice", 1, dev.address, 1, FAR, pair_sig(dev, 1, a0, 1))
    assert events(r, m) == [
        ("DevicePaired", {"vehicleId": 1, "device": cs(addr(dev)), "owner": cs(a0)})
    ]
    s = chain.state()
    assert get_device(s, addr(dev)) == DeviceRecord(addr(dev), 1, maker, a0, 1, True, 2)
    assert get_vehicle(s, 1).device == addr(dev)

    m.send(k0, "unpairDevice", 1)
    assert get_device(chain.state(), addr(dev)).vehicle_id == 0
    # pairing again needs a fresh signature with the next nonce
    m.send(k0, "pairDevice", 1, dev.address, 2, FAR, pair_sig(dev, 1, a0, 2))
    assert get_vehicle(chain.state(), 1).device == addr(dev)


def test_replayed_pair_signature_is_refused(w: World):
    sig = pair_sig(w.d[3], 3, w.a0, 1)  # d3 used nonce 0 for its claim
    w.m.send(w.k0, "pairDevice", 3, w.d[3].address, 1, FAR, sig)
    w.m.send(w.k0, "unpairDevice", 3)
    refused(w, w.k0, "pairDevice", 3, w.d[3].address, 1, FAR, sig, reason="signature replay")


def test_device_owner_unpairs_and_device_transfer(w: World):
    m = w.m
    # a0 sells d0 (still paired with vehicle 1) to a3; a3 may then unpair it
    r = m.send(w.k0, "transferDevice", w.d[0].address, w.a3)
    assert events(r, m) == [
        ("DeviceTransfer", {"device": cs(addr(w.d[0])), "from": cs(w.a0), "to": cs(w.a3)})
    ]
    assert get_device(w.chain.state(), addr(w.d[0])).owner == w.a3
    m.send(w.k3, "unpairDevice", 1)
    assert get_vehicle(w.chain.state(), 1).device == ZERO_ADDRESS


def test_signature_deadline_is_block_time_inclusive():
    chain = LocalChain()
    m = Module(chain, "identity", IDENTITY)
    (a0, k0), (_, kmaker) = chain.accounts[:2]
    dev = device_key(9)
    m.send(kmaker, "mintDevice", dev.address)
    next_block_time = (chain.head.timestamp_ms + 1000) // 1000
    m.send(
        k0, "claimDevice", dev.address, 0, next_block_time, claim_sig(dev, a0, 0, next_block_time)
    )
    assert get_device(chain.state(), addr(dev)).owner == a0


# --- manufacturers and genesis ----------------------------------------------------


def test_genesis_licenses_devnet_manufacturer():
    chain = LocalChain()
    maker = chain.accounts[1][0]
    s = chain.state()
    assert is_manufacturer(s, maker)
    assert not is_manufacturer(s, chain.accounts[0][0])
    assert list_manufacturers(s) == [(maker, "Motus Dev Devices", True)]
    assert Module(chain, "identity", IDENTITY).call("getManufacturer", maker) == (
        True,
        "Motus Dev Devices",
    )


def test_genesis_section_replaces_manufacturers_and_unlicensed_cannot_mint():
    chain = LocalChain(
        modules={
            "identity": {
                "manufacturers": [
                    {"address": "0x" + bytes(19).hex() + "aa", "name": "Acme"},
                    {"address": "0x" + LocalChain().accounts[3][0].hex(), "name": "Fleet OEM"},
                ]
            }
        }
    )
    m = Module(chain, "identity", IDENTITY)
    w = World(
        chain,
        m,
        *chain.accounts[0],
        *chain.accounts[1],
        *chain.accounts[2],
        *chain.accounts[3],
        [device_key(0)],
    )
    refused(w, w.kmaker, "mintDevice", w.d[0].address, reason="manufacturer not licensed")
    m.send(w.k3, "mintDevice", w.d[0].address)
    assert get_device(chain.state(), addr(w.d[0])).manufacturer == w.a3


@pytest.mark.parametrize(
    "entry",
    [
        {"address": "0x1234", "name": "short"},
        {"address": "0x" + "00" * 20},
        {"name": "no address"},
        "0x" + "11" * 20,
    ],
)
def test_bad_genesis_manufacturer_is_refused(entry: Any):
    with pytest.raises(InvalidGenesis):
        LocalChain(modules={"identity": {"manufacturers": [entry]}})


def test_set_manufacturer_for_governance():
    chain = LocalChain()
    s = chain.state()
    maker = chain.accounts[1][0]
    new = chain.accounts[5][0]
    set_manufacturer(s, new, True, "Second OEM")
    set_manufacturer(s, maker, False)
    assert is_manufacturer(s, new) and not is_manufacturer(s, maker)
    assert list_manufacturers(s) == [(maker, "Motus Dev Devices", False), (new, "Second OEM", True)]
    set_manufacturer(s, maker, True)  # relicensing keeps its name and list position
    assert list_manufacturers(s)[0] == (maker, "Motus Dev Devices", True)
    with pytest.raises(ValueError):
        set_manufacturer(s, ZERO_ADDRESS, True)


# --- permissions ----------------------------------------------------------------


def test_permissions_grant_expire_by_block_time_and_revoke(w: World):
    m = w.m
    now = w.chain.head.timestamp_ms // 1000
    expiry = now + 10
    r = m.send(w.k2, "grantPermissions", 2, w.a3, 0b1000_0001, expiry)
    assert events(r, m) == [
        (
            "PermissionsGranted",
            {"vehicleId": 2, "grantee": cs(w.a3), "bits": 0b1000_0001, "expiry": expiry},
        )
    ]
    assert m.call("getPermission", 2, w.a3) == (0b1000_0001, expiry)
    assert m.call("getPermissions", 2) == ((cs(w.a3),), (0b1000_0001,), (expiry,))
    assert m.call("hasPermission", 2, w.a3, 0b1)
    assert m.call("hasPermission", 2, w.a3, 0b1000_0001)
    assert not m.call("hasPermission", 2, w.a3, 0b1001)  # location history was not granted
    assert not m.call("hasPermission", 2, w.a3, 0)
    assert not m.call("hasPermission", 2, w.a0, 0b1)
    assert m.call("hasPermission", 2, w.a2, 0xED)  # the owner always may (every bit there is)
    assert not m.call("hasPermission", 2, w.a2, 0xFF)  # bits 1 and 4 do not exist
    assert not m.call("hasPermission", 99, w.a3, 0b1)
    s = w.chain.state()
    assert has_permission(s, 2, w.a3, 0b1, expiry - 1)
    assert not has_permission(s, 2, w.a3, 0b1, expiry)
    assert not has_permission(s, 2, w.a3, 1 << 8, now)

    # calls run in a block one second after the head
    w.chain.advance(1, dt_ms=(expiry - 2) * 1000 - w.chain.head.timestamp_ms)
    assert m.call("hasPermission", 2, w.a3, 0b1)  # at expiry - 1
    w.chain.advance(1, dt_ms=1_000)
    assert not m.call("hasPermission", 2, w.a3, 0b1)
    assert get_permissions(w.chain.state(), 2) == [
        (w.a3, 0b1000_0001, expiry)
    ]  # expired, still listed

    # re-granting replaces bits and expiry without listing the grantee twice
    m.send(w.k2, "grantPermissions", 2, w.a3, 0b1000, FAR)
    m.send(w.k2, "grantPermissions", 2, w.a0, 0b100, FAR)
    assert get_permissions(w.chain.state(), 2) == [(w.a3, 0b1000, FAR), (w.a0, 0b100, FAR)]
    r = m.send(w.k2, "revokePermissions", 2, w.a3)
    assert events(r, m) == [("PermissionsRevoked", {"vehicleId": 2, "grantee": cs(w.a3)})]
    assert not m.call("hasPermission", 2, w.a3, 0b1000)
    assert get_permissions(w.chain.state(), 2) == [(w.a0, 0b100, FAR)]


# --- safe transfers and ERC721 receivers ---------------------------------------------


def _deploy(chain: LocalChain, key: bytes, runtime: bytes) -> bytes:
    init = (
        bytes([0x60, len(runtime), 0x80, 0x60, 0x0B, 0x60, 0x00, 0x39, 0x60, 0x00, 0xF3]) + runtime
    )
    result = chain.block([chain.sign(key, None, init)])
    assert receipt_status(result.receipts[0]) == 1
    address = result.contract_addresses[0]
    assert chain.state().get_code(address) == runtime
    return address


# stores keccak(calldata) at slot 0 and msg.sender at slot 1, returns onERC721Received's selector
RECORDING_RECEIVER = bytes.fromhex(
    "366000600037366000206000553360015563150b7a0260e01b60005260206000f3"
)
WRONG_VALUE_RECEIVER = bytes.fromhex("63deadbeef60e01b60005260206000f3")
EMPTY_REVERT_RECEIVER = bytes.fromhex("60006000fd")
STOP_RECEIVER = bytes.fromhex("00")


def _reason_receiver(reason: str) -> bytes:
    data = bytes.fromhex("08c379a0") + eth_abi.encode(["string"], [reason])
    return (
        bytes([0x60, len(data), 0x60, 0x0C, 0x60, 0x00, 0x39, 0x60, len(data), 0x60, 0x00, 0xFD])
        + data
    )


SAFE3 = function_signature_to_4byte_selector("safeTransferFrom(address,address,uint256)")
SAFE4 = function_signature_to_4byte_selector("safeTransferFrom(address,address,uint256,bytes)")


def _safe_transfer(
    w: World, key: bytes, from_: bytes, to: bytes, vehicle_id: int, data: bytes | None
) -> Any:
    if data is None:
        calldata = SAFE3 + eth_abi.encode(
            ["address", "address", "uint256"], [from_, to, vehicle_id]
        )
    else:
        calldata = SAFE4 + eth_abi.encode(
            ["address", "address", "uint256", "bytes"], [from_, to, vehicle_id, data]
        )
    sender = bytes.fromhex(Account.from_key(key).address[2:])
    pre = w.chain.call(IDENTITY, calldata, sender=sender)
    receipt = w.chain.transact(key, IDENTITY, calldata)
    return receipt, pre


@pytest.mark.parametrize("data", [None, b"", b"hello receiver"])
def test_safe_transfer_calls_receiver_contract(w: World, data: bytes | None):
    receiver = _deploy(w.chain, w.k3, RECORDING_RECEIVER)
    w.m.send(w.k0, "setApprovalForAll", w.a3, True)
    receipt, _ = _safe_transfer(w, w.k3, w.a0, receiver, 3, data)  # an operator sends
    assert receipt_status(receipt) == 1
    assert w.m.call("ownerOf", 3) == cs(receiver)
    expected = bytes.fromhex("150b7a02") + eth_abi.encode(
        ["address", "address", "uint256", "bytes"], [w.a3, w.a0, 3, data or b""]
    )
    s = w.chain.state()
    assert s.get_storage(receiver, 0) == int.from_bytes(keccak(expected), "big")
    assert s.get_storage(receiver, 1) == int.from_bytes(IDENTITY, "big")  # msg.sender is the token


@pytest.mark.parametrize(
    ("runtime", "reason"),
    [
        (WRONG_VALUE_RECEIVER, "transfer to non ERC721Receiver implementer"),
        (EMPTY_REVERT_RECEIVER, "transfer to non ERC721Receiver implementer"),
        (_reason_receiver("receiver says no"), "receiver says no"),
        (STOP_RECEIVER, "transfer to non ERC721Receiver implementer"),
    ],
    ids=["wrong value", "empty revert", "revert with reason", "returns nothing"],
)
def test_safe_transfer_to_refusing_receiver_reverts(w: World, runtime: bytes, reason: str):
    receiver = _deploy(w.chain, w.k3, runtime)
    before = identity_root(w.chain)
    for data in (None, b"x"):
        receipt, pre = _safe_transfer(w, w.k0, w.a0, receiver, 3, data)
        assert receipt_status(receipt) == 0
        assert pre.revert_reason == reason
        assert identity_root(w.chain) == before
    w.m.send(w.k0, "transferFrom", w.a0, receiver, 3)  # the unsafe transfer does not ask
    assert w.m.call("ownerOf", 3) == cs(receiver)


def test_safe_transfer_to_accounts_without_code(w: World):
    receipt, _ = _safe_transfer(w, w.k0, w.a0, w.a3, 3, None)
    assert receipt_status(receipt) == 1
    receipt, _ = _safe_transfer(w, w.k3, w.a3, addresses.PARAMS, 3, b"")
    assert receipt_status(receipt) == 1
    assert w.m.call("ownerOf", 3) == cs(addresses.PARAMS)


# --- every refusal, with its reason, leaving module state unchanged --------------

V1, V2, V3 = 1, 2, 3  # see World
UNKNOWN = bytes.fromhex("00000000000000000000000000000000000000ee")

Case = tuple[str, Callable[[World], tuple[bytes, str, tuple[Any, ...]]], str]
REFUSALS: list[Case] = [
    (
        "duplicate VIN",
        lambda w: (w.k3, "mintVehicle", ("Tesla", "Model 3", 2021, vin_text(1))),
        "vin_taken: the VIN is bound to another vehicle",
    ),
    (
        "duplicate VIN in lower case",
        lambda w: (w.k3, "mintVehicle", ("Tesla", "Model 3", 2021, vin_text(1).lower())),
        "vin_taken: the VIN is bound to another vehicle",
    ),
    (
        "not a VIN",
        lambda w: (w.k3, "mintVehicle", ("Tesla", "S", 2021, "NOT-A-VIN")),
        "bad_vin: 9 characters; a VIN has 17",
    ),
    (
        "year too early",
        lambda w: (w.k3, "mintVehicle", ("Tesla", "S", 1885, vin_text(9))),
        "invalid year",
    ),
    (
        "year too late",
        lambda w: (w.k3, "mintVehicle", ("Tesla", "S", 2201, vin_text(9))),
        "invalid year",
    ),
    ("empty make", lambda w: (w.k3, "mintVehicle", ("", "S", 2021, vin_text(9))), "invalid make"),
    (
        "long model",
        lambda w: (w.k3, "mintVehicle", ("Tesla", "S" * 65, 2021, vin_text(9))),
        "invalid model",
    ),
    ("burn paired", lambda w: (w.k0, "burnVehicle", (V1,)), "paired vehicle cannot be burned"),
    ("burn not owner", lambda w: (w.k0, "burnVehicle", (V2,)), "not owner"),
    ("burn stranger", lambda w: (w.k3, "burnVehicle", (V3,)), "not owner"),
    ("burn nonexistent", lambda w: (w.k0, "burnVehicle", (99,)), "nonexistent token"),
    (
        "transfer stranger",
        lambda w: (w.k3, "transferFrom", (w.a0, w.a3, V3)),
        "not owner nor approved",
    ),
    (
        "transfer wrong from",
        lambda w: (w.k0, "transferFrom", (w.a2, w.a3, V3)),
        "transfer from incorrect owner",
    ),
    (
        "transfer to zero",
        lambda w: (w.k0, "transferFrom", (w.a0, ZERO_ADDRESS, V3)),
        "transfer to the zero address",
    ),
    (
        "transfer nonexistent",
        lambda w: (w.k0, "transferFrom", (w.a0, w.a3, 99)),
        "nonexistent token",
    ),
    ("approve stranger", lambda w: (w.k3, "approve", (w.a3, V3)), "not owner nor approved for all"),
    ("approve owner", lambda w: (w.k0, "approve", (w.a0, V3)), "approval to current owner"),
    ("approve nonexistent", lambda w: (w.k0, "approve", (w.a3, 99)), "nonexistent token"),
    ("operator self", lambda w: (w.k0, "setApprovalForAll", (w.a0, True)), "approve to caller"),
    (
        "mint device unlicensed",
        lambda w: (w.k0, "mintDevice", (UNKNOWN,)),
        "manufacturer not licensed",
    ),
    (
        "mint device twice",
        lambda w: (w.kmaker, "mintDevice", (w.d[0].address,)),
        "device already minted",
    ),
    ("mint zero device", lambda w: (w.kmaker, "mintDevice", (ZERO_ADDRESS,)), "zero address"),
    ("claim unknown", lambda w: (w.k3, "claimDevice", (UNKNOWN, 0, FAR, b"")), "unknown device"),
    (
        "claim claimed",
        lambda w: (w.k3, "claimDevice", (w.d[1].address, 1, FAR, claim_sig(w.d[1], w.a3, 1))),
        "device already claimed",
    ),
    (
        "claim wrong key",
        lambda w: (w.k3, "claimDevice", (w.d[2].address, 0, FAR, claim_sig(w.d[1], w.a3, 0))),
        "bad device signature",
    ),
    (
        "claim someone else's sig",
        lambda w: (w.k3, "claimDevice", (w.d[2].address, 0, FAR, claim_sig(w.d[2], w.a2, 0))),
        "bad device signature",
    ),
    (
        "claim other chain",
        lambda w: (
            w.k3,
            "claimDevice",
            (w.d[2].address, 0, FAR, claim_sig(w.d[2], w.a3, 0, chain_id=1)),
        ),
        "bad device signature",
    ),
    (
        "claim other contract",
        lambda w: (
            w.k3,
            "claimDevice",
            (w.d[2].address, 0, FAR, claim_sig(w.d[2], w.a3, 0, contract=UNKNOWN)),
        ),
        "bad device signature",
    ),
    (
        "claim other domain name",
        lambda w: (
            w.k3,
            "claimDevice",
            (w.d[2].address, 0, FAR, claim_sig(w.d[2], w.a3, 0, name="DIMO")),
        ),
        "bad device signature",
    ),
    (
        "claim signed deadline differs",
        lambda w: (w.k3, "claimDevice", (w.d[2].address, 0, FAR + 1, claim_sig(w.d[2], w.a3, 0))),
        "bad device signature",
    ),
    (
        "claim high-s twin",
        lambda w: (
            w.k3,
            "claimDevice",
            (w.d[2].address, 0, FAR, _high_s(claim_sig(w.d[2], w.a3, 0))),
        ),
        "bad device signature",
    ),
    (
        "claim short sig",
        lambda w: (w.k3, "claimDevice", (w.d[2].address, 0, FAR, b"\x01" * 64)),
        "bad device signature",
    ),
    (
        "claim expired",
        lambda w: (w.k3, "claimDevice", (w.d[2].address, 0, 1, claim_sig(w.d[2], w.a3, 0, 1))),
        "signature expired",
    ),
    (
        "claim future nonce",
        lambda w: (w.k3, "claimDevice", (w.d[2].address, 1, FAR, claim_sig(w.d[2], w.a3, 1))),
        "invalid nonce",
    ),
    (
        "pair nonexistent",
        lambda w: (w.k0, "pairDevice", (99, w.d[3].address, 1, FAR, b"")),
        "nonexistent token",
    ),
    (
        "pair not owner",
        lambda w: (w.k0, "pairDevice", (V2, w.d[3].address, 1, FAR, pair_sig(w.d[3], V2, w.a0, 1))),
        "not owner",
    ),
    (
        "pair unknown device",
        lambda w: (w.k0, "pairDevice", (V3, UNKNOWN, 0, FAR, b"")),
        "unknown device",
    ),
    (
        "pair unclaimed",
        lambda w: (w.k0, "pairDevice", (V3, w.d[2].address, 0, FAR, pair_sig(w.d[2], V3, w.a0, 0))),
        "device not claimed",
    ),
    (
        "pair others' device",
        lambda w: (w.k0, "pairDevice", (V3, w.d[1].address, 1, FAR, pair_sig(w.d[1], V3, w.a0, 1))),
        "not device owner",
    ),
    (
        "pair vehicle paired",
        lambda w: (w.k0, "pairDevice", (V1, w.d[3].address, 1, FAR, pair_sig(w.d[3], V1, w.a0, 1))),
        "vehicle already paired",
    ),
    (
        "pair device paired",
        lambda w: (w.k0, "pairDevice", (V3, w.d[0].address, 2, FAR, pair_sig(w.d[0], V3, w.a0, 2))),
        "device already paired",
    ),
    (
        "pair expired",
        lambda w: (
            w.k0,
            "pairDevice",
            (V3, w.d[3].address, 1, 5, pair_sig(w.d[3], V3, w.a0, 1, 5)),
        ),
        "signature expired",
    ),
    (
        "pair old nonce",
        lambda w: (w.k0, "pairDevice", (V3, w.d[3].address, 0, FAR, pair_sig(w.d[3], V3, w.a0, 0))),
        "signature replay",
    ),
    (
        "pair future nonce",
        lambda w: (w.k0, "pairDevice", (V3, w.d[3].address, 2, FAR, pair_sig(w.d[3], V3, w.a0, 2))),
        "invalid nonce",
    ),
    (
        "pair sig for other vehicle",
        lambda w: (w.k0, "pairDevice", (V3, w.d[3].address, 1, FAR, pair_sig(w.d[3], V1, w.a0, 1))),
        "bad device signature",
    ),
    (
        "pair claim sig reused",
        lambda w: (w.k0, "pairDevice", (V3, w.d[3].address, 1, FAR, claim_sig(w.d[3], w.a0, 1))),
        "bad device signature",
    ),
    (
        "pair other chain",
        lambda w: (
            w.k0,
            "pairDevice",
            (V3, w.d[3].address, 1, FAR, pair_sig(w.d[3], V3, w.a0, 1, chain_id=1)),
        ),
        "bad device signature",
    ),
    (
        "pair other contract",
        lambda w: (
            w.k0,
            "pairDevice",
            (V3, w.d[3].address, 1, FAR, pair_sig(w.d[3], V3, w.a0, 1, contract=addresses.PARAMS)),
        ),
        "bad device signature",
    ),
    ("unpair unpaired", lambda w: (w.k0, "unpairDevice", (V3,)), "vehicle not paired"),
    ("unpair stranger", lambda w: (w.k3, "unpairDevice", (V1,)), "not vehicle or device owner"),
    ("unpair nonexistent", lambda w: (w.k0, "unpairDevice", (99,)), "nonexistent token"),
    (
        "device transfer unknown",
        lambda w: (w.k0, "transferDevice", (UNKNOWN, w.a3)),
        "unknown device",
    ),
    (
        "device transfer unclaimed",
        lambda w: (w.kmaker, "transferDevice", (w.d[2].address, w.a3)),
        "device not claimed",
    ),
    (
        "device transfer stranger",
        lambda w: (w.k3, "transferDevice", (w.d[0].address, w.a3)),
        "not device owner",
    ),
    (
        "device transfer to zero",
        lambda w: (w.k0, "transferDevice", (w.d[0].address, ZERO_ADDRESS)),
        "transfer to the zero address",
    ),
    ("grant not owner", lambda w: (w.k3, "grantPermissions", (V1, w.a3, 1, FAR)), "not owner"),
    (
        "grant nonexistent",
        lambda w: (w.k0, "grantPermissions", (99, w.a3, 1, FAR)),
        "nonexistent token",
    ),
    (
        "grant zero grantee",
        lambda w: (w.k0, "grantPermissions", (V1, ZERO_ADDRESS, 1, FAR)),
        "zero address",
    ),
    (
        "grant no bits",
        lambda w: (w.k0, "grantPermissions", (V1, w.a3, 0, FAR)),
        "no permission bits",
    ),
    (
        "grant unknown bits",
        lambda w: (w.k0, "grantPermissions", (V1, w.a3, 0x1FF, FAR)),
        "unknown permission bits",
    ),
    (
        "grant commands (gates nothing: removed)",
        lambda w: (w.k0, "grantPermissions", (V1, w.a3, 0b10, FAR)),
        "unknown permission bits",
    ),
    (
        "grant VIN credential (gates nothing: removed)",
        lambda w: (w.k0, "grantPermissions", (V1, w.a3, 0b1_0000, FAR)),
        "unknown permission bits",
    ),
    (
        "grant expired",
        lambda w: (w.k0, "grantPermissions", (V1, w.a3, 1, 1000)),
        "expiry in the past",
    ),
    ("revoke none", lambda w: (w.k0, "revokePermissions", (V1, w.a3)), "no permissions granted"),
    ("revoke not owner", lambda w: (w.k3, "revokePermissions", (V1, w.a3)), "not owner"),
]


def _high_s(signature: bytes) -> bytes:
    """The other valid ECDSA encoding of the same signature (s -> n - s, v flipped)."""
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    flipped = 27 + 28 - v if v >= 27 else 1 - v
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([flipped])


@pytest.mark.parametrize(
    ("build", "reason"), [(c[1], c[2]) for c in REFUSALS], ids=[c[0] for c in REFUSALS]
)
def test_refusal(
    shared: World, build: Callable[[World], tuple[bytes, str, tuple[Any, ...]]], reason: str
):
    key, fn, args = build(shared)
    refused(shared, key, fn, *args, reason=reason)


def test_refusals_cover_the_documented_reasons():
    doc = (Path(__file__).parents[2] / "docs" / "identity.md").read_text()
    for _, _, reason in REFUSALS:
        assert f"`{reason}`" in doc, reason
