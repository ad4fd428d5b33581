"""The RPC server's metrics and the node's scrape-time collector, served with the rest of
the node's registry (:mod:`node.metrics`) at ``GET /metrics``. Method labels are limited
to registered method names (others are counted as ``unknown``) so a client cannot blow
up the number of time series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from node.metrics import CONTENT_TYPE, REGISTRY, register_collector, render

if TYPE_CHECKING:
    from node.rpc.nodeapi import NodeAPI

__all__ = ["CONTENT_TYPE", "REGISTRY", "NodeCollector", "method_label", "register_collector", "render"]



RPC_CALLS = Counter(
    "motus_rpc_calls",
    "JSON-RPC calls answered, by method and transport",
    ["method", "transport"],
    registry=REGISTRY,
)
RPC_ERRORS = Counter(
    "motus_rpc_errors",
    "JSON-RPC error answers, by method and error code",
    ["method", "code"],
    registry=REGISTRY,
)
RPC_SECONDS = Histogram(
    "motus_rpc_call_seconds",
    "Time to answer a JSON-RPC call, by method",
    ["method"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2.0, 10.0),
)
RPC_REFUSED = Counter(
    "motus_rpc_refused",
    "Requests refused before dispatch, by reason "
    "(too_large, batch_too_large, rate_limited, too_many_connections, "
    "too_many_connections_per_client, timeout, bad_http)",
    ["reason"],
    registry=REGISTRY,
)
RPC_DEFERRED = Counter(
    "motus_rpc_deferred",
    "JSON-RPC requests held back because the event loop was behind (consensus first, "
    "node/rpc/loopguard.py)",
    registry=REGISTRY,
)
RPC_CONNECTIONS = Gauge(
    "motus_rpc_connections", "Open RPC connections, by transport", ["transport"], registry=REGISTRY
)
RPC_SUBSCRIPTIONS = Gauge(
    "motus_rpc_subscriptions", "Active WebSocket subscriptions", registry=REGISTRY
)
RPC_SLOW_SUBSCRIBERS = Counter(
    "motus_rpc_slow_subscribers_dropped",
    "WebSocket connections closed because their outgoing queue was full",
    registry=REGISTRY,
)
RPC_FILTERS = Gauge(
    "motus_rpc_filters", "Installed eth_newFilter / eth_newBlockFilter / pending filters",
    registry=REGISTRY,
)
RPC_FILTER_CHANGES_DROPPED = Counter(
    "motus_rpc_filter_changes_dropped",
    "Filter changes dropped (oldest first) because a filter held rpc.max_filter_changes, by kind",
    ["kind"],
    registry=REGISTRY,
)
RPC_PENDING_TX_DROPPED = Counter(
    "motus_rpc_pending_tx_notifications_dropped",
    "newPendingTransactions notifications dropped because the session's queue was busy",
    registry=REGISTRY,
)
RPC_TELEMETRY_DROPPED = Counter(
    "motus_rpc_telemetry_notifications_dropped",
    "motus_telemetry notifications dropped because the session's queue was busy",
    registry=REGISTRY,
)
RPC_TELEMETRY_SENT = Counter(
    "motus_rpc_telemetry_notifications",
    "motus_telemetry notifications queued to subscribers",
    registry=REGISTRY,
)


class NodeCollector(Collector):
    """Gauges and counters read from the node when scraped (docs/metrics.md)."""

    def __init__(self, node: NodeAPI) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from node.health import assess, observe

        node = self.node
        head = node.store.head
        yield GaugeMetricFamily(
            "motus_head_height", "Height of the latest committed block", value=head.height
        )
        yield GaugeMetricFamily(
            "motus_head_timestamp_seconds",
            "Timestamp of the latest block",
            value=head.timestamp_ms / 1000,
        )
        yield GaugeMetricFamily(
            "motus_mempool_transactions",
            "Transactions in the mempool",
            value=len(node.mempool),
        )
        yield from self._mempool(node.mempool)
        observation = observe(node)
        health = assess(observation)
        yield GaugeMetricFamily(
            "motus_head_age_seconds", "Seconds since the head block's timestamp",
            value=observation.head_age_s,
        )
        status = GaugeMetricFamily(
            "motus_health_status",
            "1 for the /health status the node answers now (ok, syncing, no_peers, stalled)",
            labels=["status"],
        )
        for name in ("ok", "syncing", "no_peers", "stalled"):
            status.add_metric([name], 1.0 if health.status == name else 0.0)
        yield status
        network = getattr(node, "network", None)
        if network is not None:
            yield from self._consensus(network)
            yield from self._sync(network)
            if network.p2p is not None:
                yield from self._p2p(network.p2p)

    def _mempool(self, mempool: Any) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from node.mempool import REMOVAL_REASONS

        pending, queued = mempool.stats()
        yield GaugeMetricFamily("motus_mempool_pending_transactions",
                                "Executable transactions in the mempool", value=pending)
        yield GaugeMetricFamily("motus_mempool_queued_transactions",
                                "Mempool transactions waiting behind a nonce gap", value=queued)
        removed = CounterMetricFamily(
            "motus_mempool_removed",
            "Transactions that left the mempool, by reason (mined, replaced, evicted, "
            "expired, stale, underfunded)", labels=["reason"])
        for reason in REMOVAL_REASONS:
            removed.add_metric([reason], mempool.removed.get(reason, 0))
        yield removed
        refused = CounterMetricFamily(
            "motus_mempool_refused",
            "Transactions the mempool refused (RPC and gossip), by reason code", labels=["reason"])
        for reason, count in sorted(mempool.refused.items()):
            refused.add_metric([reason], count)
        yield refused

    def _consensus(self, network: Any) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        m = network.machine
        yield GaugeMetricFamily("motus_consensus_height", "Height the consensus machine is on",
                                value=m.height)
        yield GaugeMetricFamily("motus_consensus_round", "Round the consensus machine is in",
                                value=m.round)
        yield GaugeMetricFamily(
            "motus_consensus_step",
            "Step of the round: 0 propose, 1 prevote, 2 precommit, 3 commit", value=int(m.step))
        yield GaugeMetricFamily(
            "motus_consensus_locked_round", "Round of the locked value, -1 when not locked",
            value=m.locked_round)
        validators = getattr(m, "validators", None)
        members = validators.validators if validators is not None else []
        yield GaugeMetricFamily("motus_consensus_validators",
                                "Validators of the current height", value=len(members))
        yield GaugeMetricFamily("motus_consensus_validators_power",
                                "Total voting power of the current height's validators",
                                value=sum(v.power for v in members))
        yield CounterMetricFamily(
            "motus_consensus_proposal_rebroadcasts",
            "Own proposals re-sent: a peer's vote showed it lacked them, or on resume",
            value=m.stats.get("proposal_rebroadcast", 0),
        )
        events = CounterMetricFamily(
            "motus_consensus_events",
            "Consensus machine and runner events by name (dropped, rejected_<code>, "
            "double_sign_refused, catchup_sent, evidence...)",
            labels=["source", "event"],
        )
        runner = network.runner
        for source, stats in (("machine", m.stats),
                              ("runner", runner.stats if runner is not None else {})):
            for event, count in sorted(stats.items()):
                events.add_metric([source, event], count)
        yield events

    def _sync(self, network: Any) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("motus_sync_syncing", "1 while a block sync round runs",
                                value=1.0 if network.syncing else 0.0)
        target = getattr(network, "sync_target", None)
        yield GaugeMetricFamily(
            "motus_sync_target_height",
            "Height the running sync round fetches up to (the head when not syncing)",
            value=target if target is not None else self.node.store.head_height)

    def _p2p(self, p2p: Any) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        peers = p2p.peers()
        yield GaugeMetricFamily("motus_p2p_peers", "Connected peers", value=len(peers))
        score = GaugeMetricFamily(
            "motus_p2p_peer_score", "Our score of each connected peer (0 clean, ban at -99)",
            labels=["peer"])
        for peer in peers:
            score.add_metric([peer.peer_id], peer.score)
        yield score
        yield GaugeMetricFamily(
            "motus_p2p_peer_score_min", "Lowest score among connected peers (0 with none)",
            value=min((p.score for p in peers), default=0.0))
        board = p2p.scoreboard
        yield GaugeMetricFamily("motus_p2p_banned_peers", "Peers serving a ban now",
                                value=len(board.banned_peers()))
        yield CounterMetricFamily("motus_p2p_bans", "Bans handed out since the node started",
                                  value=board.bans_total)
        penalties = CounterMetricFamily(
            "motus_p2p_penalties", "Penalties by reason since the node started",
            labels=["reason"])
        for reason, count in sorted(board.penalties_total.items()):
            penalties.add_metric([reason], count)
        yield penalties
        messages = CounterMetricFamily(
            "motus_p2p_topic_messages",
            "Gossip messages by topic and result (published, received: every copy from a "
            "peer, duplicates included; accepted, ignored, rejected, over_budget, delivered, "
            "dropped_inbox_full)",
            labels=["topic", "result"])
        received = CounterMetricFamily(
            "motus_p2p_topic_received_bytes",
            "Payload bytes of gossip messages received, by topic (before validation)",
            labels=["topic"])
        published = CounterMetricFamily(
            "motus_p2p_topic_published_bytes",
            "Payload bytes of gossip messages this node published, by topic",
            labels=["topic"])
        stats = p2p.stats()
        for name, st in sorted(stats["topics"].items()):
            for result in ("published", "received", "accepted", "ignored", "over_budget", "delivered",
                           "dropped_inbox_full"):
                messages.add_metric([name, result], getattr(st, result))
            messages.add_metric([name, "rejected"], sum(st.rejected.values()))
            received.add_metric([name], getattr(st, "bytes_received", 0))
            published.add_metric([name], getattr(st, "bytes_published", 0))
        yield messages
        yield received
        yield published
        yield CounterMetricFamily(
            "motus_p2p_outbound_dropped",
            "Gossip RPCs lost to full per-peer outbound queues (process-wide)",
            value=stats["outbound_dropped"])
        yield CounterMetricFamily(
            "motus_p2p_banned_disconnects",
            "Connections to banned peers closed (the ban, then each redial)",
            value=stats["banned_disconnects"])

    def describe(self) -> list:
        return []  # dynamic: nothing to check at registration time


def method_label(name: str, known: Callable[[str], bool]) -> str:
    return name if known(name) else "unknown"

