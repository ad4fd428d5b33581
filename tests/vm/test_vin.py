"""VINs (vm/vin.py) and the identity module's VIN binding: normalisation, validation,
the domain-separated hash, minting with the paired device's signed reading, and
reclaiming a VIN squatted without evidence (docs/identity.md, "VINs")."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from tests.harness import CHAIN_ID
from tests.vm.test_identity import (
    FAR,
    addr,
    cs,
    events,
    make_world,
    refused,
    vin_text,
)
from vm.crypto import keccak256
from vm.modules.identity import (
    EVIDENCE_DEVICE,
    EVIDENCE_NONE,
    VIN_READING,
    get_vehicle,
    typed_data,
    vehicle_by_vin,
    vin_evidence,
)
from vm.vin import VinError, check_digit, normalize_vin, vin_hash

# --- normalisation and validation ------------------------------------------------------


@pytest.mark.parametrize("text,normal", [
    ("1HGCM82633A004352", "1HGCM82633A004352"),  # a real North American VIN
    ("  1hgcm82633a004352\n", "1HGCM82633A004352"),  # case and surrounding space
    ("11111111111111111", "11111111111111111"),  # check digit 1
    ("WVWZZZ1JZXW000001", "WVWZZZ1JZXW000001"),  # Europe: position 9 is no check digit
    ("1M8GDM9AXKP042788", "1M8GDM9AXKP042788"),  # check digit X
])
def test_valid_vins_normalise(text, normal):
    assert normalize_vin(text) == normal
    assert vin_hash(text) == keccak256(b"motus.vin.v1\x00" + normal.encode())


@pytest.mark.parametrize("text,why", [
    ("NOT-A-VIN", "9 characters"),
    ("1HGCM82633A00435", "16 characters"),
    ("1HGCM82633A0043521", "18 characters"),
    ("1HGCM82633A00435O", "'O'"),  # O, I and Q are not VIN characters
    ("IHGCM82633A004352", "'I'"),
    ("1HGCM82633A00435Q", "'Q'"),
    ("1HGCM82633A00435-", "'-'"),
    ("1HGCM82643A004352", "check digit '4' at position 9 should be '3'"),
    ("x" * 10_000, "10000 characters"),
    ("1HGCM82633A00435\u00df", "'SS'"),  # upper() of a German sharp s: 18 characters
])
def test_bad_vins_are_refused_with_bad_vin(text, why):
    with pytest.raises(VinError) as exc:
        normalize_vin(text)
    assert exc.value.code == "bad_vin" and str(exc.value).startswith("bad_vin: ")
    assert why in str(exc.value) or why == "'SS'"


def test_check_digit_weights_follow_49_cfr_565():
    assert check_digit("1HGCM82633A004352") == "3"
    assert check_digit("1M8GDM9AXKP042788") == "X"


# --- on chain ---------------------------------------------------------------------------


def vin_sig(device: LocalAccount, vin: str, owner: bytes, nonce: int, deadline: int = FAR) -> bytes:
    message = {"vin": vin, "device": device.address, "owner": cs(owner), "nonce": nonce,
               "deadline": deadline}
    doc = typed_data(VIN_READING, CHAIN_ID, message)
    return bytes(Account.sign_typed_data(device.key, full_message=doc).signature)


def test_mint_with_device_evidence_binds_the_vin_and_pairs_the_device():
    w = make_world()
    vin = vin_text(40)
    d3 = w.d[3]  # claimed by a0, unpaired; its next identity nonce is 1
    receipt = w.m.send(w.k0, "mintVehicleWithDevice", "Volvo", "EX30", 2024, vin.lower(),
                       d3.address, 1, FAR, vin_sig(d3, vin, w.a0, 1))
    names = [name for name, _ in events(receipt, w.m)]
    assert names == ["Transfer", "VehicleMinted", "DevicePaired"]
    s = w.chain.state()
    vid = vehicle_by_vin(s, vin_hash(vin))
    assert vid == 4 and vin_evidence(s, vid) == EVIDENCE_DEVICE
    assert get_vehicle(s, vid).device == addr(d3) and get_vehicle(s, vid).owner == w.a0
    assert w.m.call("getVinEvidence", vid) == EVIDENCE_DEVICE
    assert w.m.call("hashVin", vin.lower()) == vin_hash(vin)
    # the same reading cannot be used twice (nonce consumed), and the VIN is taken anyway
    refused(w, w.k0, "mintVehicleWithDevice", "Volvo", "EX30", 2024, vin, d3.address, 1, FAR,
            vin_sig(d3, vin, w.a0, 1), reason="vin_taken: the VIN is bound to another vehicle")


def test_squatted_vin_is_reclaimed_with_device_evidence():
    w = make_world()
    vin = vin_text(50)
    # a2 registers the VIN first, with nothing to back it
    w.m.send(w.k2, "mintVehicle", "Squat", "Car", 2020, vin)
    s = w.chain.state()
    squat = vehicle_by_vin(s, vin_hash(vin))
    assert vin_evidence(s, squat) == EVIDENCE_NONE
    d3 = w.d[3]
    # the real owner's device evidence: minting refuses (taken), naming the way out
    refused(w, w.k0, "mintVehicleWithDevice", "Volvo", "EX30", 2024, vin, d3.address, 1, FAR,
            vin_sig(d3, vin, w.a0, 1),
            reason="vin_taken: the VIN is bound to another vehicle without evidence; "
                   "reclaimVin moves it")
    receipt = w.m.send(w.k0, "reclaimVin", "Volvo", "EX30", 2024, vin, d3.address, 1, FAR,
                       vin_sig(d3, vin, w.a0, 1))
    evs = events(receipt, w.m)
    reclaimed = [args for name, args in evs if name == "VinReclaimed"]
    s = w.chain.state()
    new = vehicle_by_vin(s, vin_hash(vin))
    assert new != squat and get_vehicle(s, new).owner == w.a0
    assert reclaimed == [{"vinHash": vin_hash(vin), "fromVehicleId": squat, "toVehicleId": new}]
    assert vin_evidence(s, new) == EVIDENCE_DEVICE and get_vehicle(s, new).device == addr(d3)
    # the squatter keeps its NFT, without the VIN
    assert get_vehicle(s, squat).owner == w.a2 and get_vehicle(s, squat).vin_hash == bytes(32)
    # device evidence cannot be displaced by more device evidence: d1 is a2's device
    d1 = w.d[1]
    refused(w, w.k2, "reclaimVin", "Squat", "Car", 2020, vin, d1.address, 1, FAR,
            vin_sig(d1, vin, w.a2, 1),
            reason="vin_taken: the VIN is bound with device evidence already")
    # the squatter's VIN-less vehicle can be burned without touching the new binding
    w.m.send(w.k2, "burnVehicle", squat)
    assert vehicle_by_vin(w.chain.state(), vin_hash(vin)) == new


def test_bad_evidence_is_refused_and_changes_nothing():
    w = make_world()
    vin = vin_text(60)
    d0, d1, d2, d3 = w.d
    cases = [
        # a reading signed by another key than the device's
        ((w.k0, d3.address, 1, vin_sig(d0, vin, w.a0, 1)), "bad_evidence: bad device signature"),
        # d3's reading of another VIN
        ((w.k0, d3.address, 1, vin_sig(d3, vin_text(61), w.a0, 1)),
         "bad_evidence: bad device signature"),
        # d3's reading made out to another owner
        ((w.k0, d3.address, 1, vin_sig(d3, vin, w.a2, 1)), "bad_evidence: bad device signature"),
        # someone else's device (d1 is a2's)
        ((w.k0, d1.address, 1, vin_sig(d1, vin, w.a0, 1)),
         "bad_evidence: the device is not claimed by the caller"),
        # an unclaimed device
        ((w.k0, d2.address, 0, vin_sig(d2, vin, w.a0, 0)),
         "bad_evidence: the device is not claimed by the caller"),
        # a device already paired (d0 with vehicle 1)
        ((w.k0, d0.address, 2, vin_sig(d0, vin, w.a0, 2)),
         "bad_evidence: the device is paired with another vehicle"),
        ((w.k0, d3.address, 1, vin_sig(d3, vin, w.a0, 1, deadline=1)),
         "bad_evidence: signature expired"),
        ((w.k0, d3.address, 0, vin_sig(d3, vin, w.a0, 0)), "bad_evidence: signature replay"),
        ((w.k0, "0x" + "ee" * 20, 0, b""), "bad_evidence: unknown device"),
    ]
    for (key, device, nonce, sig), reason in cases:
        deadline = 1 if reason.endswith("expired") else FAR
        for fn in ("mintVehicleWithDevice", "reclaimVin"):
            refused(w, key, fn, "Volvo", "EX30", 2024, vin, device, nonce, deadline, sig,
                    reason=reason)
    refused(w, w.k0, "mintVehicleWithDevice", "Volvo", "EX30", 2024, "NOT-A-VIN", d3.address, 1,
            FAR, b"", reason="bad_vin: 9 characters; a VIN has 17")
