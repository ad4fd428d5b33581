"""py-libp2p settings that are module-level constants, set deliberately.

Some of the library's limits are not constructor arguments. We set them once
per process, before any host starts, with values chosen for Motus's load (see
docs/p2p.md, "Tuning"). Every value here is a measured trap, not a guess.
"""

from __future__ import annotations

import logging

import libp2p.pubsub.pubsub as libp2p_pubsub
from libp2p.pubsub.rpc_queue import RpcQueue

from p2p.topics import MAX_TOPIC_MESSAGE_SIZE, MIB

logger = logging.getLogger(__name__)

# Per-peer outbound pubsub queue, in RPCs. The library default (32) drops
# silently once a publisher outruns one peer for a few tens of milliseconds;
# 1024 carried 1000 msg/s over one hop without loss in our measurements.
OUTBOUND_QUEUE_SIZE = 1024
# Largest pubsub RPC frame we send or accept. The default (1 MiB) is below the
# consensus topic's 2 MiB limit: a proposal would be dropped without a word by
# the sender's queue. Twice the largest topic message leaves room for framing
# and for an RPC that carries a control message alongside.
MAX_RPC_SIZE = 2 * MAX_TOPIC_MESSAGE_SIZE
# Buffer between pubsub and our drain task, per subscribed topic. The library
# default (32) drops (with a log line) when the consumer is slow; our drain
# task reads it promptly into the node's own bounded inbox, and this buffer
# covers the moments our task is not scheduled.
SUBSCRIPTION_CHANNEL_SIZE = 1024

assert MAX_RPC_SIZE >= MAX_TOPIC_MESSAGE_SIZE + 1 * MIB


class TunedRpcQueue(RpcQueue):
    """The per-peer outbound queue with our size and frame limits."""

    def __init__(
        self, max_size: int = OUTBOUND_QUEUE_SIZE, max_message_size: int = MAX_RPC_SIZE
    ) -> None:
        super().__init__(max_size=max_size, max_message_size=max_message_size)


def apply_library_tuning() -> None:
    """Set py-libp2p's module-level limits to ours. Idempotent; call before hosts start.

    ``rpc_queue.OutBoundQueueSize`` cannot be tuned by assignment: it is bound
    as ``RpcQueue.__init__``'s default argument when the module is imported.
    Pubsub creates each peer's queue with a bare ``RpcQueue()`` looked up in its
    own module, so we substitute our subclass there.
    """
    if libp2p_pubsub.RpcQueue is not TunedRpcQueue:
        libp2p_pubsub.RpcQueue = TunedRpcQueue  # type: ignore[misc]
        libp2p_pubsub.SUBSCRIPTION_CHANNEL_SIZE = SUBSCRIPTION_CHANNEL_SIZE
        logger.debug(
            "py-libp2p tuned: outbound queue %d RPCs, RPC frame %d bytes, subscription buffer %d",
            OUTBOUND_QUEUE_SIZE,
            MAX_RPC_SIZE,
            SUBSCRIPTION_CHANNEL_SIZE,
        )
