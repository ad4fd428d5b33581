"""Transaction batches on ``/motus/<chain>/tx/2``: the envelope codec with its per-message
and per-transaction limits, and the batcher's handling of transactions too big to share
a batch."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p.batch import (
    MAX_TX_BYTES,
    TX_BATCH_LIMIT,
    TX_MAX_BATCH_BYTES,
    Batcher,
    decode_batch,
    decode_tx_batch,
    encode_batch,
)
from p2p.errors import BatchDecodeError, MessageTooLarge
from p2p.topics import DEFAULT_MAX_MESSAGE_SIZE, TopicName, topic_id

# Transactions are 80 bytes and up; anything non-empty must round-trip anyway.
raw_txs = st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=80)


@given(raw_txs)
def test_round_trip(txs: list[bytes]) -> None:
    assert decode_tx_batch(encode_batch(txs)) == txs


@settings(max_examples=500)
@given(st.binary(max_size=4096))
def test_random_bytes_only_raise_the_typed_error(data: bytes) -> None:
    try:
        txs = decode_tx_batch(data)
    except BatchDecodeError as exc:
        assert exc.code == "malformed_batch"
    else:
        assert txs and all(isinstance(tx, bytes) and tx for tx in txs)


@settings(max_examples=200)
@given(raw_txs, st.data())
def test_corrupted_batches_only_raise_the_typed_error(txs: list[bytes], data: st.DataObject) -> None:
    encoded = bytearray(encode_batch(txs))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] ^= data.draw(st.integers(1, 255))
    try:
        decode_tx_batch(bytes(encoded))
    except BatchDecodeError:
        pass


def test_limits_per_transaction_and_per_message() -> None:
    assert TX_BATCH_LIMIT == DEFAULT_MAX_MESSAGE_SIZE[TopicName.TX]
    biggest = b"t" * MAX_TX_BYTES
    assert decode_tx_batch(encode_batch([biggest])) == [biggest]  # one maximal tx fits alone
    with pytest.raises(BatchDecodeError):  # one byte over, alone in its batch
        decode_tx_batch(encode_batch([biggest + b"!"]))
    with pytest.raises(BatchDecodeError, match="limit"):
        decode_tx_batch(encode_batch([biggest, biggest]))  # over the message limit
    # The attestation decoder keeps its own limits.
    assert decode_batch(encode_batch([biggest + b"!"])) == [biggest + b"!"]


def test_topic_version_changed_with_the_encoding() -> None:
    assert topic_id(7077, TopicName.TX) == "/motus/7077/tx/2"
    assert topic_id(7077, TopicName.CONSENSUS) == "/motus/7077/consensus/1"


async def test_a_transaction_too_big_to_share_travels_alone_in_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    published: list[list[bytes]] = []

    async def publish(data: bytes) -> None:
        published.append(decode_tx_batch(data))

    batcher = Batcher(publish, flush_interval=0.05, max_batch_bytes=TX_MAX_BATCH_BYTES,
                      max_item_bytes=MAX_TX_BYTES, name="transaction")
    big = b"b" * (TX_MAX_BATCH_BYTES + 1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        assert batcher.add(b"small 1")
        assert batcher.add(big)
        assert batcher.add(b"small 2")
        with pytest.raises(MessageTooLarge):
            batcher.add(b"x" * (MAX_TX_BYTES + 1))
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    assert published == [[b"small 1"], [big], [b"small 2"]]
    assert batcher.stats.items_added == 3 and batcher.pending_items == 0


async def test_eager_batcher_sends_a_lone_item_at_once_and_spaces_the_rest(
    autojump_clock: trio.abc.Clock,
) -> None:
    published: list[tuple[float, list[bytes]]] = []

    async def publish(data: bytes) -> None:
        published.append((trio.current_time(), decode_tx_batch(data)))

    batcher = Batcher(publish, flush_interval=0.05, max_item_bytes=MAX_TX_BYTES, eager=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        start = trio.current_time()
        batcher.add(b"idle: at once")
        await trio.sleep(0.01)
        batcher.add(b"busy 1")
        await trio.sleep(0.01)
        batcher.add(b"busy 2")
        await trio.sleep(0.5)
        batcher.add(b"idle again")
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    times = [round(t - start, 3) for t, _ in published]
    assert [items for _, items in published] == [
        [b"idle: at once"], [b"busy 1", b"busy 2"], [b"idle again"]]
    assert times == [0.0, 0.05, 0.52]
