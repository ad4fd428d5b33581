"""Licenses module and consent to licenses through LocalChain: real signed transactions,
fees, ERC-721 behaviour, signer rotation, grants by template, revocation, the reverse
index of motus_getGrants, synthetic devices and their capped data level."""

from __future__ import annotations

import pytest
from eth_account import Account

from tests.harness import CHAIN_ID, LocalChain, Module, Reverted
from vm.modules import addresses
from vm.modules.identity import (
    PERMISSION_TEMPLATES,
    SYNTHETIC_DEVICE,
    get_device,
    get_grants_of,
    typed_data,
)
from vm.modules.licenses import get_license, license_grantee
from vm.scoring import Streak, compute_vehicle_score
from vm.vin import with_check_digit

ETHER = 10**18
FEE = 100 * ETHER
FAR = 2**40
ZERO = "0x" + "00" * 20


@pytest.fixture
def chain() -> LocalChain:
    return LocalChain()


def mods(chain: LocalChain) -> tuple[Module, Module]:
    return (Module(chain, "licenses", addresses.LICENSES),
            Module(chain, "identity", addresses.IDENTITY))


def addr(chain: LocalChain, i: int) -> str:
    return "0x" + chain.accounts[i][0].hex()


def key(chain: LocalChain, i: int) -> bytes:
    return chain.accounts[i][1]


def mint_vehicle(chain: LocalChain, i: int, n: int) -> int:
    _, ident = mods(chain)
    vin = with_check_digit(f"1HGCM8263{n % 10}A{n:06d}")
    ident.send(key(chain, i), "mintVehicle", "Make", "Model", 2020, vin)
    return ident.call("vehicleIdByVin", ident.call("hashVin", vin))


def test_mint_needs_the_exact_fee_and_a_unique_client_id(chain: LocalChain) -> None:
    lic, _ = mods(chain)
    assert chain.param("license_fee") == FEE
    with pytest.raises(Reverted, match="wrong_fee"):
        lic.send(key(chain, 2), "mintLicense", "App", "app-1", [], ZERO, value=FEE - 1)
    lic.send(key(chain, 2), "mintLicense", "App", "app-1", ["https://app.example/cb"], ZERO,
             value=FEE)
    with pytest.raises(Reverted, match="client_id_taken"):
        lic.send(key(chain, 3), "mintLicense", "Other", "app-1", [], ZERO, value=FEE)
    with pytest.raises(Reverted, match="bad_redirect_uri"):
        lic.send(key(chain, 3), "mintLicense", "Other", "app-2", ["http://evil.example"], ZERO,
                 value=FEE)
    with pytest.raises(Reverted, match="bad_client_id"):
        lic.send(key(chain, 3), "mintLicense", "Other", "has space", [], ZERO, value=FEE)
    for bad in ("42", "0xabc", "app\n", ""):
        with pytest.raises(Reverted, match="bad_client_id"):
            lic.send(key(chain, 3), "mintLicense", "Other", bad, [], ZERO, value=FEE)
    assert chain.state().get_balance(addresses.LICENSES) == FEE
    owner, name, client_id, uris, signers = lic.call("getLicense", 1)
    assert (owner, name, client_id, list(uris)) == (addr(chain, 2), "App", "app-1",
                                                    ["https://app.example/cb"])
    assert list(signers) == [addr(chain, 2)]  # zero signer: the minter's key
    assert lic.call("licenseIdByClientId", "app-1") == 1


def test_erc721_surface_and_transfer(chain: LocalChain) -> None:
    lic, _ = mods(chain)
    lic.send(key(chain, 2), "mintLicense", "App", "app", [], ZERO, value=FEE)
    assert lic.call("name") == "Motus Developer License"
    assert lic.call("symbol") == "MDL"
    assert lic.call("supportsInterface", bytes.fromhex("80ac58cd")) is True
    assert lic.call("balanceOf", addr(chain, 2)) == 1
    assert lic.call("ownerOf", 1) == addr(chain, 2)
    assert lic.call("tokenURI", 1).startswith("data:application/json;base64,")
    with pytest.raises(Reverted, match="not owner nor approved"):
        lic.send(key(chain, 3), "transferFrom", addr(chain, 2), addr(chain, 3), 1)
    lic.send(key(chain, 2), "safeTransferFrom", addr(chain, 2), addr(chain, 3), 1, b"")
    assert lic.call("ownerOf", 1) == addr(chain, 3)
    assert lic.call("balanceOf", addr(chain, 2)) == 0
    with pytest.raises(Reverted, match="nonexistent token"):
        lic.call("ownerOf", 2)


def test_signers_rotate_and_are_bounded(chain: LocalChain) -> None:
    lic, _ = mods(chain)
    lic.send(key(chain, 2), "mintLicense", "App", "app", [], addr(chain, 5), value=FEE)
    assert lic.call("isSigner", 1, addr(chain, 5)) is True
    with pytest.raises(Reverted, match="not_license_owner"):
        lic.send(key(chain, 5), "rotateSigner", 1, addr(chain, 5), addr(chain, 6))
    lic.send(key(chain, 2), "rotateSigner", 1, addr(chain, 5), addr(chain, 6))
    assert lic.call("isSigner", 1, addr(chain, 5)) is False
    assert lic.call("isSigner", 1, addr(chain, 6)) is True
    for i in range(7):
        lic.send(key(chain, 2), "addSigner", 1, "0x" + f"{i + 1:040x}")
    with pytest.raises(Reverted, match="too_many_signers"):
        lic.send(key(chain, 2), "addSigner", 1, "0x" + "ee" * 20)
    lic.send(key(chain, 2), "removeSigner", 1, "0x" + f"{3:040x}")
    found = get_license(chain.state(), 1)
    assert found is not None and len(found.signers) == 7


def test_consent_by_template_in_one_transaction_and_revocation(chain: LocalChain) -> None:
    lic, ident = mods(chain)
    lic.send(key(chain, 2), "mintLicense", "App", "app", [], ZERO, value=FEE)
    v1, v2 = mint_vehicle(chain, 4, 1), mint_vehicle(chain, 4, 2)
    with pytest.raises(Reverted, match="unknown_license"):
        ident.send(key(chain, 4), "grantLicense", [v1], 9, 1, FAR)
    with pytest.raises(Reverted, match="not owner"):
        ident.send(key(chain, 5), "grantLicense", [v1], 1, 1, FAR)
    receipt = ident.send(key(chain, 4), "grantLicenseTemplate", [v1, v2], 1, 2, FAR)
    assert receipt is not None
    bits = PERMISSION_TEMPLATES[2][1]
    assert ident.call("getLicenseGrant", v1, 1) == (bits, FAR)
    grantee = license_grantee(1)
    assert ident.call("hasPermission", v2, "0x" + grantee.hex(), 1) is True
    now = chain.head.timestamp_ms // 1000
    assert get_grants_of(chain.state(), grantee, now) == [(v1, bits, FAR), (v2, bits, FAR)]
    ident.send(key(chain, 4), "revokeLicense", [v1], 1)
    assert get_grants_of(chain.state(), grantee, now) == [(v2, bits, FAR)]
    # a transfer resets the new owner's grants: the license loses vehicle 2
    ident.send(key(chain, 4), "transferFrom", addr(chain, 4), addr(chain, 7), v2)
    assert get_grants_of(chain.state(), grantee, now) == []
    with pytest.raises(Reverted, match="unknown_template"):
        ident.send(key(chain, 7), "grantLicenseTemplate", [v2], 1, 9, FAR)


def consent(signer: bytes, vid: int, license_id: int, device: str, owner: str,
            deadline: int = FAR) -> bytes:
    """The integration's EIP-712 consent to a synthetic device, signed by ``signer``."""
    message = {"vehicleId": vid, "licenseId": license_id, "device": device, "owner": owner,
               "deadline": deadline}
    doc = typed_data(SYNTHETIC_DEVICE, CHAIN_ID, message)
    return bytes(Account.sign_typed_data(signer, full_message=doc).signature)


def test_synthetic_device_is_marked_and_paired(chain: LocalChain) -> None:
    lic, ident = mods(chain)
    lic.send(key(chain, 2), "mintLicense", "Integration", "oem-api", [], addr(chain, 5),
             value=FEE)
    vid = mint_vehicle(chain, 4, 3)
    device = "0x" + "5e" * 20
    good = consent(key(chain, 5), vid, 1, device, addr(chain, 4))
    with pytest.raises(Reverted, match="not owner"):
        ident.send(key(chain, 2), "mintSyntheticDevice", vid, 1, device, FAR, good)
    # an owner cannot claim a synthetic device in an integration's name by itself
    own = consent(key(chain, 4), vid, 1, device, addr(chain, 4))
    with pytest.raises(Reverted, match="bad_consent"):
        ident.send(key(chain, 4), "mintSyntheticDevice", vid, 1, device, FAR, own)
    other_car = consent(key(chain, 5), vid + 1, 1, device, addr(chain, 4))
    with pytest.raises(Reverted, match="bad_consent"):
        ident.send(key(chain, 4), "mintSyntheticDevice", vid, 1, device, FAR, other_car)
    late = consent(key(chain, 5), vid, 1, device, addr(chain, 4), deadline=1)
    with pytest.raises(Reverted, match="bad_consent: signature expired"):
        ident.send(key(chain, 4), "mintSyntheticDevice", vid, 1, device, 1, late)
    ident.send(key(chain, 4), "mintSyntheticDevice", vid, 1, device, FAR, good)
    record = get_device(chain.state(), bytes.fromhex(device[2:]))
    assert record is not None and record.synthetic and record.synthetic_license == 1
    assert record.vehicle_id == vid and record.owner == chain.accounts[4][0]
    assert record.manufacturer == chain.accounts[2][0]  # the integration
    assert ident.call("syntheticLicenseOf", device) == 1
    with pytest.raises(Reverted, match="vehicle already paired"):
        ident.send(key(chain, 4), "mintSyntheticDevice", vid, 1, "0x" + "5f" * 20, FAR,
                   consent(key(chain, 5), vid, 1, "0x" + "5f" * 20, addr(chain, 4)))


def test_synthetic_data_level_is_capped() -> None:
    class Busy:
        accepted = moving = 100
        challenged = challenge_passed = False

    full = compute_vehicle_score(Busy(), min_attestations=12, registered=True, paired=True,
                                 streak=Streak(), locked=0)
    capped = compute_vehicle_score(Busy(), min_attestations=12, registered=True, paired=True,
                                   streak=Streak(), locked=0, max_data_level=1)
    assert (full.data_level, capped.data_level) == (3, 1)
    assert capped.points < full.points
