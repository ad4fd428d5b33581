"""Attestation batches: canonical envelope, strict decoder, time/size flushing."""

from __future__ import annotations

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p.batch import (
    AttestationBatcher,
    compute_array_header_size,
    compute_bin_size,
    decode_batch,
    encode_batch,
)
from p2p.errors import BatchDecodeError, MessageTooLarge

items_strategy = st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=50)


@given(items_strategy)
def test_round_trip(items: list[bytes]) -> None:
    data = encode_batch(items)
    assert decode_batch(data) == items
    # The size arithmetic the batcher relies on is exact.
    assert len(data) == compute_array_header_size(len(items)) + sum(
        compute_bin_size(len(item)) for item in items
    )


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_random_bytes_only_raise_the_typed_error(data: bytes) -> None:
    try:
        items = decode_batch(data, max_items=64, max_bytes=1024)
    except BatchDecodeError as exc:
        assert exc.code == "malformed_batch"
    else:
        assert items and all(isinstance(item, bytes) and item for item in items)


@settings(max_examples=300)
@given(
    st.recursive(
        st.none() | st.integers(-(2**63), 2**64 - 1) | st.binary() | st.text(),
        st.lists,
        max_leaves=8,
    )
)
def test_arbitrary_msgpack_only_raises_the_typed_error(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    try:
        decode_batch(data)
    except BatchDecodeError:
        pass


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (msgpack.packb([]), "no items"),
        (msgpack.packb({"a": b"x"}), "map"),
        (msgpack.packb(["text"]), "str item"),
        (msgpack.packb([1]), "int item"),
        (msgpack.packb([b""]), "empty item"),
        (msgpack.packb([b"x"]) + b"\x00", "trailing byte"),
        (b"\xdc\x00\x01\xc4\x01x", "array16 header for one item"),
        (b"\x91\xc5\x00\x01x", "bin16 header for one byte"),
        (b"\xdd\xff\xff\xff\xff", "hostile array length"),
    ],
)
def test_malformed_batches_rejected(data: bytes, why: str) -> None:
    with pytest.raises(BatchDecodeError):
        decode_batch(data)


def test_decoder_limits() -> None:
    data = encode_batch([b"a"] * 10)
    assert len(decode_batch(data, max_items=10)) == 10
    with pytest.raises(BatchDecodeError):
        decode_batch(data, max_items=9)
    with pytest.raises(BatchDecodeError):
        decode_batch(data, max_bytes=len(data) - 1)


class Sink:
    """Collects published batches with the (virtual) time they were published."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[bytes]]] = []

    async def publish(self, data: bytes) -> None:
        self.batches.append((trio.current_time(), decode_batch(data)))


async def test_flush_after_interval(autojump_clock: trio.abc.Clock) -> None:
    sink = Sink()
    batcher = AttestationBatcher(sink.publish, flush_interval=0.075)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        start = trio.current_time()
        assert batcher.add(b"one")
        await trio.sleep(0.05)
        assert batcher.add(b"two")
        await trio.sleep(0.01)
        assert sink.batches == []
        await trio.sleep(0.1)
        assert [items for _, items in sink.batches] == [[b"one", b"two"]]
        assert sink.batches[0][0] - start == pytest.approx(0.075)
        batcher.add(b"three")
        await trio.sleep(1)
        assert [items for _, items in sink.batches] == [[b"one", b"two"], [b"three"]]
        nursery.cancel_scope.cancel()
    assert batcher.stats.batches_published == 2


async def test_flush_at_size_limit(autojump_clock: trio.abc.Clock) -> None:
    sink = Sink()
    batcher = AttestationBatcher(sink.publish, flush_interval=0.075, max_batch_bytes=1024)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        for i in range(20):
            assert batcher.add(bytes([i]) * 100)  # 102 encoded bytes each
        await trio.sleep(0)
        await trio.sleep(0)
        # The first batch filled up (an 11th item would pass 1024 bytes) and
        # went out at once; the second waits for the interval.
        assert [len(items) for _, items in sink.batches] == [10]
        await trio.sleep(0.2)
        assert [len(items) for _, items in sink.batches] == [10, 10]
        assert all(len(encode_batch(items)) <= 1024 for _, items in sink.batches)
        nursery.cancel_scope.cancel()


async def test_full_buffer_drops_and_counts(autojump_clock: trio.abc.Clock) -> None:
    sink = Sink()
    batcher = AttestationBatcher(
        sink.publish, max_batch_bytes=1024, max_pending_bytes=1024
    )  # not running: nothing drains
    accepted = sum(batcher.add(b"x" * 100) for _ in range(20))
    assert accepted == 10
    assert batcher.stats.items_dropped == 10
    assert batcher.pending_items == 10
    with pytest.raises(MessageTooLarge):
        batcher.add(b"y" * 2000)
    await batcher.flush()
    assert batcher.pending_items == 0
    assert sum(len(items) for _, items in sink.batches) == 10
