"""The bounded RLP decoder agrees with pyrlp on every input and enforces its limits."""

from __future__ import annotations

import tracemalloc

import pytest
import rlp
from hypothesis import given, settings
from hypothesis import strategies as st

from codec import RLPDecodeError
from codec.rlp import decode, decode_items
from codec.transaction import check_transaction_shape
from tests.security.bombs import rlp_bomb

UNBOUNDED = {"max_depth": 10**9, "max_items": 10**9}

items = st.recursive(
    st.binary(max_size=70),  # crosses the 55-byte short/long boundary
    lambda children: st.lists(children, max_size=8),
    max_leaves=60,
)


def depth(item) -> int:
    return 0 if isinstance(item, bytes) else 1 + max((depth(i) for i in item), default=0)


def count(item) -> int:
    return 1 if isinstance(item, bytes) else 1 + sum(count(i) for i in item)


def pyrlp(data: bytes):
    try:
        return rlp.decode(data)
    except rlp.exceptions.DecodingError:
        return "error"


def bounded(data: bytes, **limits):
    try:
        return decode_items(data, **(limits or UNBOUNDED))
    except RLPDecodeError:
        return "error"


@given(items)
@settings(max_examples=300, deadline=None)
def test_round_trip_matches_pyrlp(item) -> None:
    data = rlp.encode(item)
    assert decode_items(data, **UNBOUNDED) == rlp.decode(data) == item
    assert decode_items(data, max_depth=depth(item), max_items=count(item)) == item


@given(items, st.data())
@settings(max_examples=300, deadline=None)
def test_mutations_match_pyrlp(item, data) -> None:
    """Flip, insert, delete or truncate bytes of a valid encoding: same result or both fail."""
    enc = bytearray(rlp.encode(item))
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = data.draw(st.integers(0, len(enc)))
        if op == "flip" and at < len(enc):
            enc[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            enc[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del enc[at : at + 1]
        else:
            del enc[at:]
    assert bounded(bytes(enc)) == pyrlp(bytes(enc))


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_random_bytes_match_pyrlp(data: bytes) -> None:
    assert bounded(data) == pyrlp(data)


@pytest.mark.parametrize("data", [
    b"", b"\x81\x00", b"\x81\x7f", b"\xb8\x00", b"\xb8\x37" + b"a" * 55, b"\xb9\x00\x38" + b"a" * 56,
    b"\xf8\x00", b"\xf8\x37" + b"\x80" * 55, b"\x83ab", b"\xc2\x83ab", b"\x80\x80", b"\xc1", b"\xc1\xc0\xc0",
])
def test_non_canonical_and_truncated_are_malformed(data: bytes) -> None:
    assert pyrlp(data) == "error"
    with pytest.raises(RLPDecodeError) as err:
        decode_items(data, **UNBOUNDED)
    assert err.value.code == "rlp_malformed"
    assert isinstance(err.value, rlp.exceptions.DecodingError)  # pyrlp's handlers still catch it


def test_depth_and_item_limits() -> None:
    nested = rlp.encode([[[b"x"]]])
    assert decode_items(nested, max_depth=3, max_items=4) == [[[b"x"]]]
    with pytest.raises(RLPDecodeError) as err:
        decode_items(nested, max_depth=2, max_items=4)
    assert err.value.code == "rlp_too_deep"
    with pytest.raises(RLPDecodeError) as err:
        decode_items(nested, max_depth=3, max_items=3)
    assert err.value.code == "rlp_too_many_items"
    with pytest.raises(RLPDecodeError) as err:
        decode_items(nested, max_depth=3, max_items=4, max_bytes=len(nested) - 1)
    assert err.value.code == "rlp_too_large"


def test_deep_bomb_memory_is_bounded_by_size() -> None:
    bomb = rlp_bomb(400, 100_000)
    tracemalloc.start()
    try:
        with pytest.raises(RLPDecodeError):
            decode_items(bomb, max_depth=4, max_items=10_000)
        _, refused_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        decode_items(bomb, **UNBOUNDED)
        _, accepted_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused_peak < 2 * len(bomb)  # the bytes() copy at most
    assert accepted_peak < 3 * len(bomb)  # pyrlp: ~400 x len(bomb)


def test_decode_with_sedes_sets_the_rlp_cache_and_types_shape_errors() -> None:
    sedes = rlp.sedes.List([rlp.sedes.big_endian_int, rlp.sedes.Binary.fixed_length(2)])
    assert decode(rlp.encode([5, b"ab"]), sedes, max_depth=1, max_items=3) == (5, b"ab")
    with pytest.raises(RLPDecodeError) as err:
        decode(rlp.encode([5, b"abc"]), sedes, max_depth=1, max_items=3)
    assert err.value.code == "rlp_bad_shape"


def test_transaction_shape() -> None:
    legacy = rlp.encode([1, 2, 3, b"\x11" * 20, 0, b"", 27, 1, 1])
    check_transaction_shape(legacy)
    typed = b"\x02" + rlp.encode([1, 0, 1, 2, 21000, b"\x11" * 20, 0, b"", [[b"\x22" * 20, [b"\x33" * 32]]], 0, 1, 1])
    check_transaction_shape(typed)
    # ~129 KB with 5,600 address-only access-list entries (16,800 items): valid, and
    # within the block gas limit; a fixed item cap used to refuse it.
    wide = b"\x02" + rlp.encode([1, 0, 1, 2, 13_460_000, b"\x11" * 20, 0, b"",
                                   [[b"\x22" * 20, []]] * 5_600, 0, 1, 1])
    check_transaction_shape(wide)
    for bad, code in [
        (rlp.encode([1, [2]]), "rlp_too_deep"),  # legacy is flat
        (b"\x02" + rlp.encode([[[[[b""]]]]]), "rlp_too_deep"),
        (b"\x02" + rlp.encode(b"abc"), "rlp_bad_shape"),
        (b"\x85abcde", "rlp_bad_shape"),
        (b"", "rlp_malformed"),
    ]:
        with pytest.raises(RLPDecodeError) as err:
            check_transaction_shape(bad)
        assert err.value.code == code
