"""The protocol stack and py-libp2p limits are the ones docs/p2p.md describes."""

from __future__ import annotations

from collections.abc import Callable

import libp2p.pubsub.pubsub as libp2p_pubsub
import trio

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
