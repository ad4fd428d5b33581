"""Prometheus metrics served at ``GET /metrics``.

``REGISTRY`` is the node's registry: any component adds its own metrics to it, e.g.

    from prometheus_client import Counter
    from node.rpc.metrics import REGISTRY

    ATTESTATIONS = Counter("motus_attestations", "Attestations by result", ["code"],
                           registry=REGISTRY)

Values read from the node at scrape time (head height, mempool size) come from
collectors registered with :func:`register_collector`, which the RPC server does for
the node it serves. Method labels are limited to registered method names (others are
counted as ``unknown``) so a client cannot blow up the number of time series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from node.node import Node

REGISTRY = CollectorRegistry()
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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


class NodeCollector(Collector):
    """Gauges read from the node when scraped."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily]:
        head = self.node.store.head
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
            value=len(self.node.mempool),
        )

    def describe(self) -> list:
        return []  # dynamic: nothing to check at registration time


def register_collector(collector: Collector) -> Callable[[], None]:
    """Register a scrape-time collector; returns the function that unregisters it."""
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)


def method_label(name: str, known: Callable[[str], bool]) -> str:
    return name if known(name) else "unknown"


def render() -> bytes:
    return generate_latest(REGISTRY)
