"""Attestation wire format, signing digest and stateless checks (vm/attestation.py)."""

from __future__ import annotations

import msgpack
import pytest
import rlp
from eth_hash.auto import keccak
from eth_keys import keys
from hypothesis import given, settings
from hypothesis import strategies as st

from devnet.device import Device
from vm.attestation import (
    MAX_ATTESTATION_BYTES,
    SECP256K1_N,
    Attestation,
    AttestationError,
    RejectCode,
    SignalsError,
    check_stateless,
    check_stateless_codes,
    compute_attestation_id,
    compute_signals_hash,
    compute_signing_digest,
    decode_attestation,
    decode_signals,
    encode_signals,
    encode_signed_fields,
    keccak256,
)

CHAIN_ID = 7077

# --- the fixed vector: the contract with device firmware (docs/telemetry.md) ---------
VECTOR_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
VECTOR_DEVICE = bytes.fromhex("2c7536e3605d9c16a7a3d7b1898e529396a65c23")
VECTOR_FIELDS = dict(
    version=1, device=VECTOR_DEVICE, vehicle_id=42, seq=7, timestamp_ms=1_700_000_000_000,
    cell=0x881F8D7A49FFFFF,  # res 8, Munich Marienplatz
    odometer_m=123_456, speed_cmps=1_500, signals_hash=bytes(range(32)),
    challenge=bytes.fromhex("0102030405060708"),
)
VECTOR_RLP = bytes.fromhex(
    "f85901942c7536e3605d9c16a7a3d7b1898e529396a65c232a0786018bcfe56800880881f8d7a49fffff"
    "8301e2408205dca0000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f8801"
    "02030405060708")
VECTOR_DIGEST = bytes.fromhex("f20552f882f72aebcf2aeeab1d73910fd5e0d187ab0c768cf31cadf45888e4a5")
VECTOR_SIGNATURE = bytes.fromhex(
    "5c9beb6126e2398607a4c3afd8c036be6f176b81c2e26cb6a7ac986a922a8c26"
    "33e1dc648ab58b9edb1b78831c83d3f8468288a26f8a5fce4f3a66131bef6d0f00")
VECTOR_RAW = bytes.fromhex(
    "9b01c4142c7536e3605d9c16a7a3d7b1898e529396a65c232a07cf0000018bcfe56800cf0881f8d7a49fffff"
    "ce0001e240cd05dcc420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc408"
    "0102030405060708c4415c9beb6126e2398607a4c3afd8c036be6f176b81c2e26cb6a7ac986a922a8c2633e1"
    "dc648ab58b9edb1b78831c83d3f8468288a26f8a5fce4f3a66131bef6d0f00")
VECTOR_ID = bytes.fromhex("3269040894612c4eb7dee88fead94940fdbe39c142530b608ffeb52c99a9e768")


def test_fixed_vector_digest_signature_bytes_and_id():
    att = Attestation(**VECTOR_FIELDS)
    assert Device(VECTOR_KEY, CHAIN_ID).address == VECTOR_DEVICE
    assert rlp.encode(att.signed_fields()) == VECTOR_RLP
    # the digest spelled out with the generic rlp package and eth_hash, as firmware would
    expected = keccak(b"\x19Motus Attestation:\n" + CHAIN_ID.to_bytes(8, "big") + VECTOR_RLP)
    assert compute_signing_digest(att, CHAIN_ID) == expected == VECTOR_DIGEST
    signed = Device(VECTOR_KEY, CHAIN_ID).sign(att)
    assert signed.signature == VECTOR_SIGNATURE
    # an independent signer (eth_keys, RFC 6979) agrees byte for byte
    assert keys.PrivateKey(VECTOR_KEY).sign_msg_hash(VECTOR_DIGEST).to_bytes() == VECTOR_SIGNATURE
    assert signed.encode() == VECTOR_RAW
    assert compute_attestation_id(VECTOR_RAW) == VECTOR_ID == keccak(VECTOR_RAW)
    assert check_stateless(VECTOR_RAW, CHAIN_ID) == signed


def test_vector_is_chain_specific():
    with pytest.raises(AttestationError) as exc:
        check_stateless(VECTOR_RAW, CHAIN_ID + 1)
    assert exc.value.code == "bad_signature"


def test_fast_keccak_matches_eth_hash():
    for data in (b"", b"\x00", bytes(range(256)) * 3):
        assert keccak256(data) == keccak(data)


# --- stateless reject codes, table-driven ------------------------------------------

def _signed(**changes) -> Attestation:
    return Device(VECTOR_KEY, CHAIN_ID).sign(Attestation(**{**VECTOR_FIELDS, **changes}))


def _raw(items: list) -> bytes:
    return msgpack.packb(items, use_bin_type=True)


def _items() -> list:
    return [*_signed().signed_fields(), _signed().signature]


def _with(index: int, value) -> bytes:
    items = _items()
    items[index] = value
    return _raw(items)


def _flip_s(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([sig[64] ^ 1])


STATELESS_CASES = [
    ("empty", b"", "malformed"),
    ("not msgpack", b"\xc1", "malformed"),
    ("trailing byte", VECTOR_RAW + b"\x00", "malformed"),
    ("too large", b"\x00" * (MAX_ATTESTATION_BYTES + 1), "malformed"),
    ("map not array", msgpack.packb({"a": 1}), "malformed"),
    ("ten elements", _raw(_items()[:10]), "malformed"),
    ("twelve elements", _raw([*_items(), 0]), "malformed"),
    ("version 2", _with(0, 2), "malformed"),
    ("device 19 bytes", _with(1, VECTOR_DEVICE[:19]), "malformed"),
    ("device as str", _with(1, "0x" + VECTOR_DEVICE.hex()), "malformed"),
    ("negative seq", _with(3, -1), "malformed"),
    ("bool vehicle", _with(2, True), "malformed"),
    ("float timestamp", _with(4, 1.5), "malformed"),
    ("signals_hash 31 bytes", _with(8, bytes(31)), "malformed"),
    ("challenge 7 bytes", _with(9, bytes(7)), "malformed"),
    ("signature 64 bytes", _with(10, VECTOR_SIGNATURE[:64]), "malformed"),
    ("bin as str8", VECTOR_RAW.replace(bytes.fromhex("c408"), bytes.fromhex("d908"), 1),
     "malformed"),
    ("int not shortest", VECTOR_RAW.replace(bytes.fromhex("2a07"), bytes.fromhex("cc2a07"), 1),
     "malformed"),
    ("v = 27", _with(10, VECTOR_SIGNATURE[:64] + b"\x1b"), "bad_signature"),
    ("high s", _with(10, _flip_s(VECTOR_SIGNATURE)), "bad_signature"),
    ("r = 0", _with(10, bytes(32) + VECTOR_SIGNATURE[32:]), "bad_signature"),
    ("other field signed", _with(3, 8), "bad_signature"),
    ("other device", _with(1, b"\x11" * 20), "bad_signature"),
    ("garbage signature", _with(10, b"\x42" * 64 + b"\x00"), "bad_signature"),
]


@pytest.mark.parametrize("name,raw,code", STATELESS_CASES, ids=[c[0] for c in STATELESS_CASES])
def test_stateless_reject_codes(name, raw, code):
    with pytest.raises(AttestationError) as exc:
        check_stateless(raw, CHAIN_ID)
    assert exc.value.code == code
    assert RejectCode(code) is exc.value.reject_code
    assert check_stateless_codes([raw, VECTOR_RAW], CHAIN_ID) == [code, "ok"]


def test_reject_codes_are_the_documented_set():
    assert [c.value for c in RejectCode] == [
        "malformed", "bad_signature", "unknown_device", "not_paired", "denied", "stale", "future",
        "replay", "too_frequent", "bad_cell", "implausible_speed", "odometer_rollback",
        "odometer_mismatch", "rate_cap"]


# --- properties --------------------------------------------------------------------

u64 = st.integers(min_value=0, max_value=2**64 - 1)
fields = st.fixed_dictionaries(dict(
    version=st.just(1), device=st.binary(min_size=20, max_size=20), vehicle_id=u64, seq=u64,
    timestamp_ms=u64, cell=u64, odometer_m=u64, speed_cmps=u64,
    signals_hash=st.binary(min_size=32, max_size=32),
    challenge=st.one_of(st.just(b""), st.binary(min_size=8, max_size=8)),
    signature=st.binary(min_size=65, max_size=65),
))


@settings(max_examples=300, deadline=None)
@given(fields)
def test_encode_decode_round_trip(f):
    att = Attestation(**f)
    raw = att.encode()
    assert len(raw) <= MAX_ATTESTATION_BYTES
    assert decode_attestation(raw) == att
    assert encode_signed_fields(att.signed_fields()) == rlp.encode(att.signed_fields())
    # the digest's fast path agrees with the generic rlp package for every field value
    assert compute_signing_digest(att, CHAIN_ID) == keccak(
        b"\x19Motus Attestation:\n" + CHAIN_ID.to_bytes(8, "big") + rlp.encode(att.signed_fields()))


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=300),
                 fields.map(lambda f: Attestation(**f).encode()).flatmap(
                     lambda raw: st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)).map(
                         lambda t: raw[:t[0]] + bytes([t[1]]) + raw[t[0] + 1:]))))
def test_random_bytes_only_raise_typed_errors(raw):
    try:
        check_stateless(raw, CHAIN_ID)
    except AttestationError as exc:
        assert exc.code in ("malformed", "bad_signature")


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(VECTOR_RAW) - 1), st.integers(1, 255))
def test_any_flipped_byte_of_the_vector_is_refused(position, xor):
    raw = VECTOR_RAW[:position] + bytes([VECTOR_RAW[position] ^ xor]) + VECTOR_RAW[position + 1:]
    with pytest.raises(AttestationError):
        check_stateless(raw, CHAIN_ID)


# --- signal payloads -------------------------------------------------------------

def test_signals_are_canonical_and_hashed():
    a = encode_signals({"soc": 81, "lat": 48.1, "lon": 11.5, "dtc": ["P0420"],
                        "b": {"y": 1, "x": 2}})
    b = encode_signals({"b": {"x": 2, "y": 1}, "dtc": ["P0420"], "lon": 11.5, "lat": 48.1,
                        "soc": 81})
    assert a == b
    assert decode_signals(a)["soc"] == 81
    assert compute_signals_hash(a) == keccak(a)
    unsorted = msgpack.packb({"z": 1, "a": 2})
    for bad in (unsorted, b"\xc1", msgpack.packb([1]), msgpack.packb({1: 2})):
        with pytest.raises(SignalsError):
            decode_signals(bad)
    with pytest.raises(SignalsError):
        encode_signals({"x": object()})
