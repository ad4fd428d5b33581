"""Per-peer gossip budgets: how much of one topic a single peer may make us check.

Every gossip message a peer hands us costs a signature check, then the node's
validator (decoding, and for some topics signature recovery or a pool
admission). Validators answer IGNORE, without penalty, for much that is merely
late or for another height, so without a bound one peer could keep a node busy
with messages that are never its fault. A ``TopicBudget`` caps, per peer and
per topic, the messages and bytes per second that reach those checks: two token
buckets, refilled continuously, ``burst_seconds`` deep. A message over budget
is dropped before its signature is checked or its bytes are decoded, and each
second in which a peer sends at least a second's budget beyond it (twice the rate)
costs it ``over_budget`` once (see ``p2p.scoring``), so a peer that floods for a few
seconds is banned, while one merely over budget only loses what is over.

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

# Buckets kept at most: one per (peer, topic) that sent anything recently; the ones
# idle longest go first (a refilled bucket equals a new one).
MAX_TRACKED_BUCKETS = 8192
# A peer is penalised when, within one such window, it has sent another full second's
# budget beyond it (at least twice the rate), at most once per window per topic. Just
# over budget only drops: a relay on a network larger than the budgets were sized for
# loses some messages (gossip has other paths) instead of being banned.
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
    window_start: float = float("-inf")  # the current penalty window
    window_drops: int = 0  # messages dropped in it


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
        if now - bucket.window_start >= PENALTY_INTERVAL:
            bucket.window_start, bucket.window_drops = now, 0
        bucket.window_drops += 1
        if bucket.window_drops == max(1, int(budget.messages_per_second * PENALTY_INTERVAL)):
            return Admission.DROP_AND_PENALISE
        return Admission.DROP

    def _evict(self, now: float) -> None:
        """Forget the buckets idle longest (a refilled bucket equals a new one)."""
        ranked = sorted(self._buckets, key=lambda key: self._buckets[key].updated_at)
        for key in ranked[: max(1, len(ranked) // 10)]:
            del self._buckets[key]
