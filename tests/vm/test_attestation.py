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
    compute_commitment,
    compute_signing_digest,
    decode_accepted,
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
    version=2, device=VECTOR_DEVICE, vehicle_id=42, seq=7, timestamp_s=1_700_000_000,
    cell=0x871F8D7A4FFFFFF,  # res 7, Munich Marienplatz
    odometer_hm=1_234, commitment=bytes(range(32)),
    challenge=bytes.fromhex("0102030405060708"),
)
VECTOR_RLP = bytes.fromhex(
    "f85302942c7536e3605d9c16a7a3d7b1898e529396a65c232a07846553f100880871f8d7a4ffffff8204d2"
    "a0000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f880102030405060708")
VECTOR_DIGEST = bytes.fromhex("42645f32ae74a30b5a818af6476832efb02b6f420774b4146ccc643b38824588")
VECTOR_SIGNATURE = bytes.fromhex(
    "c3bfb46fe6274d6004f573b751677855149c70bfb7e11f04774216d2a8ac3c08"
    "3dd48d8d76a5357e4ab491da384d677b3875b67b686556e083861f67a3c8db2500")
VECTOR_RAW = bytes.fromhex(
    "9a02c4142c7536e3605d9c16a7a3d7b1898e529396a65c232a07ce6553f100cf0871f8d7a4ffffffcd04d2"
    "c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc4080102030405060708"
    "c441c3bfb46fe6274d6004f573b751677855149c70bfb7e11f04774216d2a8ac3c083dd48d8d76a5357e4ab4"
    "91da384d677b3875b67b686556e083861f67a3c8db2500")
VECTOR_ID = bytes.fromhex("a68e3dcae64c685868f8e71681185f5739aac6e2c44efb45429bfcb9bdbb3482")


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
    ("nine elements", _raw(_items()[:9]), "malformed"),
    ("eleven elements", _raw([*_items(), 0]), "malformed"),
    ("version 1", _with(0, 1), "malformed"),
    ("version 3", _with(0, 3), "malformed"),
    ("device 19 bytes", _with(1, VECTOR_DEVICE[:19]), "malformed"),
    ("device as str", _with(1, "0x" + VECTOR_DEVICE.hex()), "malformed"),
    ("negative seq", _with(3, -1), "malformed"),
    ("bool vehicle", _with(2, True), "malformed"),
    ("float timestamp", _with(4, 1.5), "malformed"),
    ("commitment 31 bytes", _with(7, bytes(31)), "malformed"),
    ("challenge 7 bytes", _with(8, bytes(7)), "malformed"),
    ("signature 64 bytes", _with(9, VECTOR_SIGNATURE[:64]), "malformed"),
    ("bin as str8", VECTOR_RAW.replace(bytes.fromhex("c408"), bytes.fromhex("d908"), 1),
     "malformed"),
    ("int not shortest", VECTOR_RAW.replace(bytes.fromhex("2a07"), bytes.fromhex("cc2a07"), 1),
     "malformed"),
    ("v = 27", _with(9, VECTOR_SIGNATURE[:64] + b"\x1b"), "bad_signature"),
    ("high s", _with(9, _flip_s(VECTOR_SIGNATURE)), "bad_signature"),
    ("r = 0", _with(9, bytes(32) + VECTOR_SIGNATURE[32:]), "bad_signature"),
    ("other field signed", _with(3, 8), "bad_signature"),
    ("other device", _with(1, b"\x11" * 20), "bad_signature"),
    ("garbage signature", _with(9, b"\x42" * 64 + b"\x00"), "bad_signature"),
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
    version=st.just(2), device=st.binary(min_size=20, max_size=20), vehicle_id=u64, seq=u64,
    timestamp_s=u64, cell=u64, odometer_hm=u64,
    commitment=st.binary(min_size=32, max_size=32),
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
    assert decode_accepted(raw) == att  # the unchecked read of accepted bytes agrees
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
    assert compute_commitment(a) == keccak(b"motus.signals.v2\x00" + a)
    unsorted = msgpack.packb({"z": 1, "a": 2})
    for bad in (unsorted, b"\xc1", msgpack.packb([1]), msgpack.packb({1: 2})):
        with pytest.raises(SignalsError):
            decode_signals(bad)
    with pytest.raises(SignalsError):
        encode_signals({"x": object()})


def test_version_1_record_is_refused_as_unsupported():
    """An old 11-field version-1 record (fine cell, ms time, speed, unsalted hash) names
    its version, not its shape."""
    old = _raw([1, VECTOR_DEVICE, 42, 7, 1_700_000_000_000, 0x881F8D7A49FFFFF, 123_456, 1_500,
                bytes(32), b"", VECTOR_SIGNATURE])
    with pytest.raises(AttestationError, match="unsupported version 1"):
        check_stateless(old, CHAIN_ID)


def _opened(**signals):
    from vm.attestation import open_commitment

    payload = encode_signals(signals)
    att = Attestation(**{**VECTOR_FIELDS, "commitment": compute_commitment(payload)})
    return open_commitment(att, payload)


def test_payload_opens_the_commitment_only_with_salt_and_consistent_cells():
    """open_commitment: the payload carries its salt, its fine cell lies in the public
    cell and its position in the fine cell; each refusal has its stable code."""
    import h3.api.basic_int as h3

    lat, lon = h3.cell_to_latlng(0x881F8D7A49FFFFF)  # a resolution-8 child of the vector cell
    good = dict(lat=lat, lon=lon, cell=0x881F8D7A49FFFFF, salt=b"s" * 16, soc=81)
    assert _opened(**good)["soc"] == 81
    payload = encode_signals(good)
    from vm.attestation import open_commitment

    with pytest.raises(SignalsError) as exc:
        open_commitment(Attestation(**VECTOR_FIELDS), payload)  # commitment of something else
    assert exc.value.code == "hash_mismatch"
    other_res8 = h3.latlng_to_cell(52.52, 13.405, 8)  # Berlin: not inside the Munich cell
    for bad in ({**good, "salt": b"s" * 15}, {k: v for k, v in good.items() if k != "salt"},
                {**good, "salt": "s" * 16}, {**good, "cell": other_res8},
                {**good, "cell": 0x871F8D7A4FFFFFF},  # the coarse cell itself, not res 8
                {k: v for k, v in good.items() if k != "cell"},
                {**good, "lat": 52.52, "lon": 13.405}):
        with pytest.raises(SignalsError) as exc:
            _opened(**bad)
        assert exc.value.code == "bad_payload", bad


def test_verified_memo_is_sized_to_the_pool_and_drops_the_oldest() -> None:
    from vm import attestation as memo

    saved = memo._VERIFIED_MAX
    try:
        memo._VERIFIED.clear()
        memo.set_verified_capacity(10)  # below the floor: a block's worth at least
        assert memo._VERIFIED_MAX == memo.VERIFIED_MIN == 1_000
        ids = [i.to_bytes(32, "big") for i in range(1_050)]
        for att_id in ids:
            memo.mark_verified(att_id, 7)
        assert len(memo._VERIFIED) <= 1_000
        assert memo.is_verified(ids[-1], 7) and not memo.is_verified(ids[0], 7)
        assert memo.is_verified(ids[200], 7)  # a tenth goes at a time, not half
        memo.set_verified_capacity(1_000)
        memo.set_verified_capacity(100_000)
        assert memo._VERIFIED_MAX == 100_000 and memo.is_verified(ids[-1], 7)
    finally:
        memo._VERIFIED.clear()
        memo._VERIFIED_MAX = saved
