"""Peer scoring: our own per-peer score with bans, and gossipsub's scorer settings.

Two layers, on purpose:

* ``PeerScoreboard`` is ours. Every misbehaviour we can attribute to a peer
  (an invalid or oversized gossip message it forwarded, a malformed or
  oversized request, a bad response, or anything the node reports through
  ``P2PNode.penalise``) lowers its score by the reason's weight. Scores recover
  toward 0 with a half-life. A peer whose score falls to the threshold is
  banned: disconnected, its gossip dropped, not redialled, and refused when it
  dials us, until the ban ends. Repeat offenders get doubled bans. The
  scoreboard outlives connections (gossipsub forgets a peer's score the moment
  it disconnects, so reconnecting would launder it).
* gossipsub's own scorer (``gossipsub_score_params``) is a backstop inside the
  router: its invalid-message weight is set (it is 0 by default, i.e. off),
  IP colocation is weighted 0 because every devnet peer is 127.0.0.1, and its
  thresholds sit below our ban threshold so our ban acts first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from libp2p.peer.id import ID
from libp2p.pubsub.score import PeerScorer, ScoreParams, TopicScoreParams

logger = logging.getLogger(__name__)


class Misbehaviour(StrEnum):
    """Reasons a peer is penalised for: by p2p itself, and (the ``SYNC_*`` ones) by the
    node's block sync. The node may use its own strings too (``unknown_reason_weight``).

    A weight of 100 bans at the first offence: it is reserved for what no honest peer
    ever sends, whatever its state or timing (bytes that do not decode, a message over
    the topic limit, a head height no chain could have reached)."""

    INVALID_MESSAGE = "invalid_message"  # the node's validator said REJECT
    MALFORMED_MESSAGE = "malformed_message"  # the node's validator said MALFORMED
    OVERSIZE_MESSAGE = "oversize_message"  # over the topic's size limit
    OVER_BUDGET = "over_budget"  # a second of gossip beyond the peer's topic budget
    MALFORMED_REQUEST = "malformed_request"  # undecodable or out-of-range request
    OVERSIZE_REQUEST = "oversize_request"  # request frame over the protocol limit
    REQUEST_FLOOD = "request_flood"  # too many concurrent requests from one peer
    BAD_RESPONSE = "bad_response"  # a response that breaks the protocol or its bounds
    WRONG_CHAIN = "wrong_chain"  # peer is on another chain id
    # Block sync (node/network.py): a peer's claimed head is what it must deliver.
    SYNC_IMPLAUSIBLE_HEAD = "sync_implausible_head"  # beyond what block timestamps allow
    SYNC_UNBACKED_HEAD = "sync_unbacked_head"  # claimed a head, then served no block of it
    SYNC_BAD_BLOCK = "sync_bad_block"  # served a block that fails verification
    SYNC_TIMEOUT = "sync_timeout"  # did not answer a block request in time
    # Compact proposals (node/network.py, docs/network.md "Compact proposals").
    COMPACT_UNSERVED = "compact_unserved"  # a proposer did not serve its own proposal's parts
    COMPACT_BAD_PART = "compact_bad_part"  # served a part that is not what was asked for
    COMPACT_WRONG_IDS = "compact_wrong_ids"  # a proposal whose ids do not make its block


DEFAULT_WEIGHTS: dict[str, float] = {
    Misbehaviour.INVALID_MESSAGE: 20.0,
    Misbehaviour.MALFORMED_MESSAGE: 100.0,
    Misbehaviour.OVERSIZE_MESSAGE: 100.0,
    Misbehaviour.OVER_BUDGET: 25.0,
    Misbehaviour.MALFORMED_REQUEST: 20.0,
    Misbehaviour.OVERSIZE_REQUEST: 25.0,
    Misbehaviour.REQUEST_FLOOD: 5.0,
    Misbehaviour.BAD_RESPONSE: 20.0,
    Misbehaviour.WRONG_CHAIN: 100.0,
    Misbehaviour.SYNC_IMPLAUSIBLE_HEAD: 100.0,
    # Never honest either, but a block that fails *our* execution could be our own
    # bug: two such peers, not one, before a ban, so a buggy node does not cut itself
    # off from every honest peer at once.
    Misbehaviour.SYNC_UNBACKED_HEAD: 50.0,
    Misbehaviour.SYNC_BAD_BLOCK: 50.0,
    # An honest peer can be slow (loaded, far away): the sync skips it for a while
    # (node/network.py) and only a habit of it bans.
    Misbehaviour.SYNC_TIMEOUT: 10.0,
    # A proposer may be slow to answer (loaded): only a habit of it bans.
    Misbehaviour.COMPACT_UNSERVED: 10.0,
    # Bytes that do not hash to the id asked for, a block that is not the one named,
    # ids that do not hash to the signed header's root: no honest node sends them.
    Misbehaviour.COMPACT_BAD_PART: 50.0,
    Misbehaviour.COMPACT_WRONG_IDS: 50.0,
}
# Weight of a reason the node names that is not in ``weights``.
DEFAULT_UNKNOWN_REASON_WEIGHT = 20.0
# Peers remembered at most; fresh peer ids cost an attacker nothing, so the
# table must not grow with them. Banned peers are evicted last.
MAX_TRACKED_PEERS = 10_000


@dataclass(frozen=True)
class ScoreConfig:
    """Tuning of ``PeerScoreboard`` (scores are <= 0; 0 is a clean record)."""

    # With weights of 20-25, the fourth or fifth bad message in quick
    # succession bans; a weight of 100 bans at once. Not a round -100: scores
    # decay continuously, so five penalties of 20 a few milliseconds apart add
    # up to a hair above -100.
    ban_threshold: float = -99.0
    # A peer that misbehaves rarely (a flaky relay) drifts back to 0.
    half_life: float = 120.0
    ban_seconds: float = 300.0
    max_ban_seconds: float = 3600.0
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    unknown_reason_weight: float = DEFAULT_UNKNOWN_REASON_WEIGHT


@dataclass(frozen=True)
class PeerScore:
    """A snapshot of one peer's standing, for status pages and metrics."""

    score: float
    banned_for: float  # seconds left in the current ban, 0 if not banned
    bans: int  # bans so far (the next one lasts ban_seconds * 2**bans)
    penalties: dict[str, int]  # count of penalties per reason


@dataclass
class _PeerRecord:
    score: float = 0.0
    updated_at: float = 0.0
    banned_until: float = 0.0
    bans: int = 0
    penalties: dict[str, int] = field(default_factory=dict)


class PeerScoreboard:
    """Per-peer scores keyed by base58 peer id; pure bookkeeping, no I/O."""

    def __init__(self, config: ScoreConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._peers: dict[str, _PeerRecord] = {}
        # Process-wide totals, kept apart from the per-peer records (which are evicted):
        # counters that never go down, for metrics.
        self.bans_total = 0
        self.penalties_total: dict[str, int] = {}

    def penalise(self, peer_id: str, reason: str) -> bool:
        """Lower ``peer_id``'s score for ``reason``; True if this starts a ban.

        Penalties on a peer already banned are counted but do not extend the ban.
        """
        reason = str(reason)
        now = self._clock()
        if peer_id not in self._peers and len(self._peers) >= MAX_TRACKED_PEERS:
            self._evict(now)
        record = self._peers.setdefault(peer_id, _PeerRecord(updated_at=now))
        self._decay(record, now)
        weight = self.config.weights.get(reason, self.config.unknown_reason_weight)
        record.score -= abs(weight)
        record.penalties[reason] = record.penalties.get(reason, 0) + 1
        self.penalties_total[reason] = self.penalties_total.get(reason, 0) + 1
        if record.banned_until > now or record.score > self.config.ban_threshold:
            return False
        duration = min(self.config.ban_seconds * 2**record.bans, self.config.max_ban_seconds)
        record.banned_until = now + duration
        record.bans += 1
        self.bans_total += 1
        # The ban is the punishment; starting clean afterwards (rather than at
        # the threshold) lets a peer that recovers from a bug rejoin for good.
        record.score = 0.0
        logger.warning(
            "banning peer %s for %.0f s (last reason %s, penalties %s)",
            peer_id,
            duration,
            reason,
            record.penalties,
        )
        return True

    def is_banned(self, peer_id: str) -> bool:
        """True while ``peer_id`` serves a ban."""
        record = self._peers.get(peer_id)
        return record is not None and record.banned_until > self._clock()

    def ban_remaining(self, peer_id: str) -> float:
        """Seconds left in ``peer_id``'s ban (0 when not banned)."""
        record = self._peers.get(peer_id)
        if record is None:
            return 0.0
        return max(0.0, record.banned_until - self._clock())

    def score(self, peer_id: str) -> float:
        """Current score of ``peer_id`` (0 for a peer never penalised)."""
        record = self._peers.get(peer_id)
        if record is None:
            return 0.0
        self._decay(record, self._clock())
        return record.score

    def banned_peers(self) -> list[str]:
        """Peers currently banned."""
        now = self._clock()
        return [peer for peer, record in self._peers.items() if record.banned_until > now]

    def snapshot(self) -> dict[str, PeerScore]:
        """Standing of every peer ever penalised."""
        now = self._clock()
        result = {}
        for peer, record in self._peers.items():
            self._decay(record, now)
            result[peer] = PeerScore(
                score=record.score,
                banned_for=max(0.0, record.banned_until - now),
                bans=record.bans,
                penalties=dict(record.penalties),
            )
        return result

    def _evict(self, now: float) -> None:
        """Forget the tenth of peers least worth remembering (not banned, best score)."""
        for record in self._peers.values():
            self._decay(record, now)
        ranked = sorted(
            self._peers,
            key=lambda peer: (self._peers[peer].banned_until > now, -self._peers[peer].score),
        )
        for peer in ranked[: max(1, len(ranked) // 10)]:
            del self._peers[peer]

    def _decay(self, record: _PeerRecord, now: float) -> None:
        elapsed = now - record.updated_at
        if elapsed > 0 and record.score < 0:
            record.score *= 0.5 ** (elapsed / self.config.half_life)
            if record.score > -0.01:
                record.score = 0.0
        record.updated_at = now


def gossipsub_score_params() -> ScoreParams:
    """gossipsub router scoring: invalid messages weighted, IP colocation off.

    Only P4 (invalid messages) and P5 (behaviour: the router's own spam and
    GRAFT-flood penalties) count. P1-P3 stay 0: this py-libp2p version adds them
    as plain rewards, which would let a busy peer buy credit for bad messages.
    The cap matters: P4 is ``weight * min(count, cap)`` and the default cap is
    0, so a weight alone does nothing.
    """
    return ScoreParams(
        p4_invalid_messages=TopicScoreParams(weight=10.0, cap=1000.0, decay=0.99),
        p5_behavior_penalty_weight=1.0,
        p5_behavior_penalty_decay=0.9,
        p5_behavior_penalty_threshold=0.0,
        # Every devnet peer shares 127.0.0.1; colocation would punish them all.
        p7_ip_colocation_weight=0.0,
        # Backstops below our ban threshold (ours acts at 4-5 invalid
        # messages, i.e. -50 here): stop gossiping to a peer, then stop
        # accepting from it, then ignore it entirely.
        gossip_threshold=-200.0,
        publish_threshold=-400.0,
        graylist_threshold=-800.0,
        accept_px_threshold=0.0,
    )


class RouterScorer(PeerScorer):
    """gossipsub's scorer, but P4 counts only the rejections we attribute.

    Pubsub calls ``on_invalid_message`` for every failed validation, including
    our IGNORE verdicts, validator timeouts and cached failures re-hit by
    honest duplicate forwarders. We count P4 ourselves from the validator
    wrapper (``record_rejected``) so only real REJECTs cost a peer.
    """

    def on_invalid_message(self, peer: ID, topic: str) -> None:
        """Ignored: see the class docstring."""

    def record_rejected(self, peer: ID, topic: str) -> None:
        """Count one REJECTed message forwarded by ``peer`` on ``topic``."""
        super().on_invalid_message(peer, topic)
