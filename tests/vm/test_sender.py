"""The fast sender recovery (vm/sender.py) must give py-evm's answer on every
transaction py-evm accepts, and py-evm's error on every one it refuses."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import rlp
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vm.crypto import keccak256, recover_address
from vm.sender import recover_sender, signing_message
from vm.state import decode_transaction

KEYS = st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k, "big") < 2**256 - 2**129)
ADDRESS = st.binary(min_size=20, max_size=20).map(to_checksum_address)
UINT = st.integers(min_value=0, max_value=2**64)
ACCESS_LIST = st.lists(
    st.fixed_dictionaries({
        "address": ADDRESS,
        "storageKeys": st.lists(st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex()), max_size=3),
    }),
    max_size=3,
)


@st.composite
def transactions(draw):
    kind = draw(st.sampled_from(["legacy", "eip155", "access_list", "dynamic_fee"]))
    tx = {
        "nonce": draw(UINT), "gas": draw(st.integers(21_000, 30_000_000)), "value": draw(UINT),
        "data": draw(st.binary(max_size=300)),
    }
    if draw(st.booleans()):
        tx["to"] = draw(ADDRESS)
    if kind == "dynamic_fee":
        tx.update(type=2, maxFeePerGas=draw(UINT), maxPriorityFeePerGas=draw(UINT))
    else:
        tx["gasPrice"] = draw(UINT)
    if kind == "access_list":
        tx["type"] = 1
    if kind in ("access_list", "dynamic_fee"):
        tx["accessList"] = draw(ACCESS_LIST)
    if kind != "legacy":
        tx["chainId"] = draw(st.integers(1, 2**32))
    return tx


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tx=transactions(), key=KEYS)
def test_fast_sender_matches_py_evm(tx, key):
    raw = bytes(Account.sign_transaction(tx, key).raw_transaction)
    fast = decode_transaction(raw)
    reference = decode_transaction(raw)
    assert recover_sender(raw, fast) == reference.sender == bytes.fromhex(Account.from_key(key).address[2:])
    assert fast.sender == reference.sender  # the cache py-evm reads holds the same value
    assert signing_message(raw, getattr(fast, "type_id", None), fast.chain_id if fast.type_id is None and fast.v >= 35
                           else None) == reference.get_message_for_signing()


def _resign(raw: bytes, **changes) -> bytes:
    """The same transaction with signature fields replaced (no longer a valid signature)."""
    tx = decode_transaction(raw)
    body = rlp.encode(getattr(tx, "_inner", tx).copy(**changes))
    return bytes((tx.type_id,)) + body if getattr(tx, "type_id", None) else body


@pytest.mark.parametrize("changes", [
    {"r": 0}, {"s": 0},
    {"r": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141},  # r = n
    {"y_parity": 2},
])
def test_bad_signatures_fail_like_py_evm(changes):
    tx = {"type": 2, "chainId": 7077, "nonce": 0, "to": "0x" + "22" * 20, "value": 1, "gas": 21_000,
          "maxFeePerGas": 10, "maxPriorityFeePerGas": 1}
    raw = _resign(bytes(Account.sign_transaction(tx, b"\x11" * 32).raw_transaction), **changes)
    with pytest.raises(Exception) as reference:
        _ = decode_transaction(raw).sender
    with pytest.raises(type(reference.value)):
        recover_sender(raw, decode_transaction(raw))


def test_legacy_v_outside_both_schemes_fails_like_py_evm():
    tx = {"nonce": 0, "to": "0x" + "22" * 20, "value": 1, "gas": 21_000, "gasPrice": 10}
    raw = _resign(bytes(Account.sign_transaction(tx, b"\x11" * 32).raw_transaction), v=30)
    with pytest.raises(Exception) as reference:
        _ = decode_transaction(raw).sender
    with pytest.raises(type(reference.value)):
        recover_sender(raw, decode_transaction(raw))


def test_recover_address_refuses_garbage():
    assert recover_address(b"\x00" * 65, b"\x01" * 32) is None
    assert recover_address(b"\x01" * 64 + b"\x04", b"\x01" * 32) is None
    assert recover_address(b"\x01" * 10, b"\x01" * 32) is None


@given(st.binary(max_size=600))
def test_keccak_matches_eth_hash(data):
    # vm/__init__ points eth_hash at pysha3 too, so eth_hash alone would compare pysha3 with
    # itself: pycryptodome's Keccak (eth_hash's default backend) is the independent reference
    from Crypto.Hash import keccak as pycryptodome_keccak

    assert keccak256(data) == keccak(data) == pycryptodome_keccak.new(digest_bits=256, data=data).digest()


def test_node_processes_hash_on_the_c_backend():
    # vm/__init__ asks eth_hash for pysha3 before its first hash (vm/crypto.py)
    code = ("import node.app; from eth_hash.auto import keccak; keccak(b''); "
            "print(type(keccak.hasher.__self__).__name__)")
    env = {k: v for k, v in os.environ.items() if k != "ETH_HASH_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.stdout.strip() == "PySha3Backend", out.stderr


@pytest.mark.parametrize("parity", [0, 1])
def test_eip155_chain_id_zero_matches_py_evm(parity):
    # v = 35 or 36 is EIP-155 with chain id 0: py-evm signs int_to_big_endian(0) = b"\x00"
    # (not the canonical RLP zero, 0x80) and validate() accepts the transaction
    from eth_keys import keys

    key = keys.PrivateKey(b"\x11" * 32)
    parts = [0, 10, 21_000, b"\x22" * 20, 1, b""]
    for attempt in range(64):  # a signature with the wanted recovery id
        parts[0] = attempt
        sig = key.sign_msg(rlp.encode([*parts, b"\x00", b"", b""]))
        if sig.v == parity:
            break
    raw = rlp.encode([*parts, 35 + sig.v, sig.r, sig.s])
    reference = decode_transaction(raw)
    reference.validate()
    assert reference.sender == key.public_key.to_canonical_address()
    assert recover_sender(raw, decode_transaction(raw)) == reference.sender
