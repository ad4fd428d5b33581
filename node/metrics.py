"""The node's Prometheus registry: every component adds its metrics here, and the RPC
server serves it at ``GET /metrics`` (node/rpc/metrics.py). A module of its own so
that the services (attestations, the block observer) and the RPC layer share it
without importing each other, e.g.

    from prometheus_client import Counter
    from node.metrics import REGISTRY

    ATTESTATIONS = Counter("motus_attestations", "Attestations by result", ["code"],
                           registry=REGISTRY)

Values read at scrape time come from collectors registered with
:func:`register_collector`.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

# ``*_created`` series (a counter's creation time) double the series for no use here.
disable_created_metrics()
REGISTRY = CollectorRegistry()
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The process (CPU, memory, open files, start time), the interpreter and its garbage
# collector: prometheus_client's standard collectors, which it registers on its own
# default registry only. ``process_*`` is empty where /proc is missing (not Linux).
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)


def register_collector(collector: Collector) -> Callable[[], None]:
    """Register a scrape-time collector; returns the function that unregisters it."""
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)


def render() -> bytes:
    return generate_latest(REGISTRY)
