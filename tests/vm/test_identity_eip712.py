"""vm.eip712 agrees with eth-account's EIP-712 encoder and recovers what any wallet signs."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from vm.eip712 import (
    SECP256K1_N,
    StructType,
    compute_digest,
    compute_domain_separator,
    recover_signer,
)
from vm.modules import addresses
from vm.modules.identity import (
    CLAIM_DEVICE,
    PAIR_DEVICE,
    compute_identity_domain_separator,
    typed_data,
)

MIXED = StructType(
    "Mixed",
    (
        ("address", "who"),
        ("uint256", "amount"),
        ("bool", "flag"),
        ("bytes32", "tag"),
        ("string", "note"),
        ("bytes", "blob"),
        ("uint64", "small"),
        ("int256", "signed"),
    ),
)

addresses_st = st.binary(min_size=20, max_size=20)
uint256 = st.integers(0, 2**256 - 1)


@settings(max_examples=40, deadline=None)
@given(
    who=addresses_st,
    amount=uint256,
    flag=st.booleans(),
    tag=st.binary(min_size=32, max_size=32),
    note=st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    blob=st.binary(max_size=80),
    small=st.integers(0, 2**64 - 1),
    signed=st.integers(-(2**255), 2**255 - 1),
    chain_id=st.integers(1, 2**63 - 1),
    contract=addresses_st,
)
def test_digest_matches_eth_account(
    who, amount, flag, tag, note, blob, small, signed, chain_id, contract
):
    message = {
        "who": who,
        "amount": amount,
        "flag": flag,
        "tag": tag,
        "note": note,
        "blob": blob,
        "small": small,
        "signed": signed,
    }
    domain = {
        "name": "Motus Identity",
        "version": "1",
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(contract),
    }
    wallet_message = dict(message, who=to_checksum_address(who))
    signable = encode_typed_data(domain, MIXED.eth_account_types(), wallet_message)
    assert signable.header == compute_domain_separator("Motus Identity", "1", chain_id, contract)
    assert signable.body == MIXED.hash_struct(message)


@settings(max_examples=10, deadline=None)
@given(seed=st.binary(min_size=1, max_size=8), nonce=uint256, deadline=uint256, vehicle=uint256)
def test_identity_typed_data_signatures_recover(seed, nonce, deadline, vehicle):
    device = Account.from_key(keccak(seed))
    owner = keccak(seed + b"owner")[:20]
    device_b = bytes.fromhex(device.address[2:])
    for struct, message in [
        (CLAIM_DEVICE, {"device": device_b, "owner": owner, "nonce": nonce, "deadline": deadline}),
        (
            PAIR_DEVICE,
            {
                "vehicleId": vehicle,
                "device": device_b,
                "owner": owner,
                "nonce": nonce,
                "deadline": deadline,
            },
        ),
    ]:
        wallet = {
            k: to_checksum_address(v) if isinstance(v, bytes) else v for k, v in message.items()
        }
        signed = Account.sign_typed_data(device.key, full_message=typed_data(struct, 7077, wallet))
        digest = compute_digest(
            compute_identity_domain_separator(7077), struct.hash_struct(message)
        )
        assert digest == bytes(signed.message_hash)
        assert recover_signer(digest, bytes(signed.signature)) == device_b
        # v as 0/1 (raw secp256k1) is accepted too
        raw = bytes(signed.signature[:64]) + bytes([signed.signature[64] - 27])
        assert recover_signer(digest, raw) == device_b


def test_identity_domain_is_pinned():
    """Changing the domain would invalidate every signature wallets and devices make."""
    assert (
        CLAIM_DEVICE.encode_type()
        == "ClaimDevice(address device,address owner,uint256 nonce,uint256 deadline)"
    )
    assert PAIR_DEVICE.encode_type() == (
        "PairDevice(uint256 vehicleId,address device,address owner,uint256 nonce,uint256 deadline)"
    )
    expected = keccak(
        keccak(
            b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
        )
        + keccak(b"Motus Identity")
        + keccak(b"1")
        + (7077).to_bytes(32, "big")
        + addresses.IDENTITY.rjust(32, b"\x00")
    )
    assert compute_identity_domain_separator(7077) == expected


def test_recover_refuses_malformed_and_high_s():
    key = Account.from_key(b"\x11" * 32)
    digest = keccak(b"motus")
    sig = bytes(Account.unsafe_sign_hash(digest, key.key).signature)
    assert recover_signer(digest, sig) == bytes.fromhex(key.address[2:])
    s = int.from_bytes(sig[32:64], "big")
    high = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    for bad in [
        sig[:64],
        sig + b"\x00",
        sig[:64] + b"\x1d",
        high,
        b"\x00" * 65,
        b"\xff" * 32 + sig[32:],
    ]:
        assert recover_signer(digest, bad) is None


def test_unsupported_field_types_are_refused():
    for typ in ("uint7", "bytes33", "Other", "address[]", "uint256[2]"):
        with pytest.raises(ValueError):
            StructType("T", ((typ, "x"),))
