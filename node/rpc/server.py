"""``serve_rpc``: the RPC server task the node starts in its nursery.

It builds the method table (``registry.METHOD_MODULES``), the subscription hub (fed
by ``app.commit_listeners``), the dispatcher with its limits, and serves HTTP and
WebSocket on ``rpc.host:rpc.port`` (127.0.0.1 by default). ``task_status.started``
receives the bound port (useful with port 0).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from node.rpc.answercache import AnswerCache
from node.rpc.dispatch import Dispatcher
from node.rpc.http import HTTPServer
from node.rpc.loopguard import LoopGuard
from node.rpc.metrics import NodeCollector, register_collector
from node.rpc.ratelimit import RateLimiter
from node.rpc.registry import MethodTable, build_method_table
from node.rpc.subscriptions import SubscriptionHub

if TYPE_CHECKING:
    from node.rpc.nodeapi import NodeAPI

log = logging.getLogger("motus.rpc")


async def serve_rpc(
    node: NodeAPI, *, methods: MethodTable | None = None, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """Serve JSON-RPC for ``node`` until cancelled; reports the bound port when listening."""
    cfg = node.config.rpc
    table = methods if methods is not None else build_method_table()
    hub = SubscriptionHub(node)  # subscriptions and polled filters
    limiter = None
    if cfg.rate_limit_per_second > 0:
        # a full batch must fit in a burst, or batches could never pass
        limiter = RateLimiter(
            cfg.rate_limit_per_second, burst=max(cfg.rate_limit_per_second, cfg.max_batch)
        )
    # consensus first: requests wait while the loop is behind, take a bounded share of
    # each pass of the loop, and of the CPU while the machine is short of it
    guard = LoopGuard(cpu_share=cfg.cpu_share_percent / 100)
    cache = AnswerCache(cfg.answer_cache_bytes) if cfg.answer_cache_bytes > 0 else None
    dispatcher = Dispatcher(node, table, max_batch=cfg.max_batch, rate_limiter=limiter, hub=hub,
                            guard=guard, answer_cache=cache)
    server = HTTPServer(node, dispatcher, hub, cfg)
    listeners = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
    node.app.commit_listeners.append(hub.on_commit)
    node.app.pool_listeners.append(hub.on_pending_tx)
    signal_listeners = getattr(node.attestations, "signal_listeners", None)
    if signal_listeners is not None:
        signal_listeners.append(hub.on_signals)
    unregister = register_collector(NodeCollector(node))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard.run)
            nursery.start_soon(server.sweep_idle)
            await nursery.start(trio.serve_listeners, server.handle, listeners)
            port = listeners[0].socket.getsockname()[1]
            log.info(
                "JSON-RPC (HTTP and WebSocket) on %s:%d, %d methods", cfg.host, port, len(table)
            )
            task_status.started(port)
    finally:
        if hub.on_commit in node.app.commit_listeners:
            node.app.commit_listeners.remove(hub.on_commit)
        if hub.on_pending_tx in node.app.pool_listeners:
            node.app.pool_listeners.remove(hub.on_pending_tx)
        if signal_listeners is not None and hub.on_signals in signal_listeners:
            signal_listeners.remove(hub.on_signals)
        unregister()
