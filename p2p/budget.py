"""Per-peer gossip budgets: how much of one topic a single peer may make us check.

Every gossip message a peer hands us costs a signature check, then the node's
validator (decoding, and for some topics signature recovery or a pool
admission). Validators answer IGNORE, without penalty, for much that is merely
late or for another height, so without a bound one peer could keep a node busy
with messages that are never its fault. A ``TopicBudget`` caps, per peer and
per topic, the messages and bytes per second that reach those checks: two token
buckets, refilled continuously, ``burst_seconds`` deep. A message over budget
is dropped before its signature is checked or its bytes are decoded, and each
second in which a peer runs over budget costs it ``over_budget`` once (see
``p2p.scoring``), so a peer that stays over budget for a few seconds is banned.

Budgets count first deliveries only (a duplicate is dropped by pubsub's seen
cache before this, for the price of a hash lookup), so they are sized against
a topic's whole traffic, several times over: an honest peer never reaches them
(docs/p2p.md, "Per-peer budgets").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from enum import Enum

from p2p.errors import ConfigError

# Buckets kept at most: one per (peer, topic) that sent anything recently. A
# full bucket holds no state worth keeping, so those go first.
MAX_TRACKED_BUCKETS = 8192
# A peer over budget is penalised at most once per this many seconds per topic.
PENALTY_INTERVAL = 1.0


@dataclass(frozen=True)
class TopicBudget:
    """What one peer may make us check on one topic, per second, with bursts."""

    messages_per_second: float
    bytes_per_second: float
    # Bucket depth in seconds of the rate: absorbs bursts, such as the message
    # cache a peer replays to us when it (re)subscribes.
    burst_seconds: float = 4.0

    def __post_init__(self) -> None:
        if self.messages_per_second <= 0 or self.bytes_per_second <= 0:
            raise ConfigError("a topic budget needs positive message and byte rates")
        if self.burst_seconds < 1:
            raise ConfigError("a topic budget's burst must be at least 1 s")


class Admission(Enum):
    """``GossipBudgets.admit``'s answer about one message."""

    ADMIT = "admit"  # within budget: check it
    DROP = "drop"  # over budget: drop it unchecked
    DROP_AND_PENALISE = "drop_and_penalise"  # over budget, first time this interval


@dataclass
class _Bucket:
    messages: float
    bytes: float
    updated_at: float
    penalised_at: float = float("-inf")


class GossipBudgets:
    """Token buckets per (peer, topic); pure bookkeeping, no I/O.

    Peers are any hashable key (the host uses libp2p ``ID`` objects: no base58
    encoding per message)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._budgets: dict[str, tuple[TopicBudget, float, float]] = {}
        self._buckets: dict[tuple[Hashable, str], _Bucket] = {}
        self.dropped = 0  # messages dropped over budget, all peers and topics

    def set_topic(self, topic: str, budget: TopicBudget, max_size: int) -> None:
        """Budget ``topic``; its byte bucket always holds at least two messages of
        ``max_size``, so a peer with a full bucket can send the largest one."""
        message_depth = budget.messages_per_second * budget.burst_seconds
        byte_depth = max(budget.bytes_per_second * budget.burst_seconds, 2.0 * max_size)
        self._budgets[topic] = (budget, message_depth, byte_depth)

    def budget(self, topic: str) -> TopicBudget | None:
        """The budget of ``topic``, if it has one."""
        entry = self._budgets.get(topic)
        return entry[0] if entry is not None else None

    def admit(self, peer: Hashable, topic: str, size: int) -> Admission:
        """Charge one message of ``size`` bytes from ``peer`` on ``topic``."""
        entry = self._budgets.get(topic)
        if entry is None:
            return Admission.ADMIT
        budget, message_depth, byte_depth = entry
        now = self._clock()
        key = (peer, topic)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_BUCKETS:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(message_depth, byte_depth, now)
        else:
            elapsed = max(0.0, now - bucket.updated_at)
            bucket.messages = min(
                message_depth, bucket.messages + elapsed * budget.messages_per_second
            )
            bucket.bytes = min(byte_depth, bucket.bytes + elapsed * budget.bytes_per_second)
            bucket.updated_at = now
        if bucket.messages >= 1 and bucket.bytes >= size:
            bucket.messages -= 1
            bucket.bytes -= size
            return Admission.ADMIT
        self.dropped += 1
        if now - bucket.penalised_at >= PENALTY_INTERVAL:
            bucket.penalised_at = now
            return Admission.DROP_AND_PENALISE
        return Admission.DROP

    def _evict(self, now: float) -> None:
        """Forget the buckets idle longest (a refilled bucket equals a new one)."""
        ranked = sorted(self._buckets, key=lambda key: self._buckets[key].updated_at)
        for key in ranked[: max(1, len(ranked) // 10)]:
            del self._buckets[key]
