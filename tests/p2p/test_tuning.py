"""The protocol stack and py-libp2p limits are the ones docs/p2p.md describes."""

from __future__ import annotations

from collections.abc import Callable

import libp2p.pubsub.pubsub as libp2p_pubsub
import pytest
import trio
from libp2p.pubsub.pb import rpc_pb2

from p2p import tuning
from p2p.host import P2PNode
from p2p.topics import TopicName
from tests.p2p.conftest import accept_all, meshed, wait_until


def test_stack_is_noise_yamux_gossipsub_v11(node_factory: Callable[..., P2PNode]) -> None:
    node = node_factory("stack")
    upgrader = node.host.get_network().upgrader  # type: ignore[attr-defined]
    assert list(upgrader.security_multistream.transports) == ["/noise"]
    assert list(upgrader.muxer_multistream.transports) == ["/yamux/1.0.0"]
    router = node._gossipsub
    assert router.protocols == ["/meshsub/1.1.0"]
    assert (router.degree, router.degree_low, router.degree_high) == (6, 4, 12)
    assert router.heartbeat_interval == 1 and not router.adaptive_gossip_enabled
    assert router.max_messages_per_topic_per_second >= 10_000
    assert router.scorer.params.p7_ip_colocation_weight == 0
    assert node._pubsub.max_inbound_rpc_size == tuning.MAX_RPC_SIZE


async def test_pubsub_queues_use_our_sizes(node_factory: Callable[..., P2PNode]) -> None:
    assert libp2p_pubsub.SUBSCRIPTION_CHANNEL_SIZE == tuning.SUBSCRIPTION_CHANNEL_SIZE
    with trio.fail_after(20):
        a = node_factory("a")
        a.register_topic(TopicName.TX, accept_all)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(a.run)
            b = node_factory("b", bootstrap=(address,))
            b.register_topic(TopicName.TX, accept_all)
            await nursery.start(b.run)
            await wait_until(lambda: meshed(a, b, TopicName.TX))
            queue = a._pubsub.peer_queues[b.host.get_id()]
            assert queue._queue.max_size == tuning.OUTBOUND_QUEUE_SIZE
            assert queue.max_message_size == tuning.MAX_RPC_SIZE
            nursery.cancel_scope.cancel()


def test_full_outbound_queue_counts_drops() -> None:
    queue = tuning.TunedRpcQueue(max_size=2)
    before = tuning.TunedRpcQueue.dropped_total
    assert [queue.push(rpc_pb2.RPC()) for _ in range(3)] == [True, True, False]
    assert queue.dropped == 1 and tuning.TunedRpcQueue.dropped_total == before + 1


@pytest.mark.slow
async def test_publish_burst_is_not_lost(node_factory: Callable[..., P2PNode]) -> None:
    """A burst beyond the outbound queue slows the publisher instead of being dropped."""
    burst = 1500
    with trio.fail_after(60):
        a = node_factory("a")
        a.register_topic(TopicName.TX, accept_all)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(a.run)
            b = node_factory("b", bootstrap=(address,), inbox_size=burst)
            inbox = b.register_topic(TopicName.TX, accept_all)
            await nursery.start(b.run)
            await wait_until(lambda: meshed(a, b, TopicName.TX))
            for i in range(burst):
                await a.publish(TopicName.TX, i.to_bytes(4, "big") * 50)
            received = [
                int.from_bytes((await inbox.receive()).data[:4], "big") for _ in range(burst)
            ]
            assert received == list(range(burst))
            assert [peer.outbound_dropped for peer in a.peers()] == [0]
            nursery.cancel_scope.cancel()
