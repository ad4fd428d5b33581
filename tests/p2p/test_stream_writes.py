"""Writes to one peer's pubsub stream are serialised (docs/p2p.md, trap 22).

py-libp2p writes a peer's stream from its queue task and, directly, from the replay of
recent messages when the peer (re)subscribes; a yamux write goes out in frames with
yields in between whenever the send window is short. A stream that yields between
chunks stands in for that: without the lock two RPCs interleave and the receiver
would read garbage."""

from __future__ import annotations

from collections.abc import Callable

import trio
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils.varint import decode_uvarint_from_stream

from p2p.host import P2PNode


class ChunkedStream:
    """Writes each call's bytes in small chunks, yielding to trio after each one."""

    def __init__(self) -> None:
        self.received = bytearray()

    async def write(self, data: bytes) -> None:
        for i in range(0, len(data), 7):
            self.received += data[i:i + 7]
            await trio.sleep(0)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    async def read(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk


async def test_concurrent_writes_to_one_stream_do_not_interleave(
    node_factory: Callable[..., P2PNode],
) -> None:
    pubsub = node_factory("writer").gossip.pubsub
    stream = ChunkedStream()
    sent = [rpc_pb2.RPC(publish=[rpc_pb2.Message(data=bytes([i]) * 60, topicIDs=["t"])])
            for i in range(8)]
    async with trio.open_nursery() as nursery:
        for rpc in sent:
            nursery.start_soon(pubsub.write_msg, stream, rpc)
    reader = _Reader(bytes(stream.received))
    frames = []
    while reader.pos < len(reader.data):
        length = await decode_uvarint_from_stream(reader)
        frames.append(rpc_pb2.RPC.FromString(await reader.read(length)))
    assert sorted(f.publish[0].data for f in frames) == sorted(r.publish[0].data for r in sent)
