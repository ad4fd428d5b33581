"""``eth_subscribe`` / ``eth_unsubscribe`` over WebSocket: ``newHeads`` and ``logs``
(with address/topics filters), fed by the application's commit listeners, and
``newPendingTransactions`` (hashes, or whole transactions with ``true``), fed by its pool
listeners.

A session holds at most ``MAX_SUBSCRIPTIONS_PER_SESSION`` subscriptions, and all the
sessions of one remote address together at most ``rpc.max_subscriptions_per_client``
(each subscription costs work at every block). Notifications
go to the session's bounded outgoing queue; a session whose queue is full is closed
with a reason (its client reads too slowly) rather than letting memory grow or
blocking block commits. Pending transactions come faster than blocks and matter less:
their notifications are dropped (and counted, ``motus_rpc_pending_tx_notifications_dropped``)
while the session has ``PENDING_TX_QUEUE_LIMIT`` messages queued, so a busy pool never
closes a subscriber nor waits for one.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from node.block import Block
from node.rpc import metrics
from node.rpc import params as p
from node.rpc.errors import (
    METHOD_NOT_FOUND,
    RPCError,
    invalid_params,
    limit_exceeded,
)
from node.rpc.ethjson import block_logs, header_json, tx_json
from node.rpc.filters import FilterRegistry
from node.rpc.registry import MethodTable, Param, RPCContext
from node.rpc.streams import TelemetryStreams
from vm.execute import BlockResult

if TYPE_CHECKING:
    from node.rpc.nodeapi import NodeAPI
    from node.rpc.websocket import WebSocketSession

log = logging.getLogger("motus.rpc")

MAX_SUBSCRIPTIONS_PER_SESSION = 100
KINDS = ("newHeads", "logs", "newPendingTransactions", "motus_telemetry")
# newPendingTransactions notifications are dropped while a session has this many messages
# queued (of its OUTGOING_QUEUE), leaving room for answers and block notifications
PENDING_TX_QUEUE_LIMIT = 500

methods = MethodTable()


@dataclass(frozen=True)
class Subscription:
    id: str
    kind: str
    filter: p.LogFilter | None = None
    full_tx: bool = False  # newPendingTransactions: whole transactions instead of hashes
    stream: Any = None  # motus_telemetry: its node.rpc.streams.Stream


class SubscriptionHub:
    """Knows the open WebSocket sessions and publishes each committed block to their
    subscriptions. ``on_commit`` is the callback put in ``app.commit_listeners``."""

    def __init__(self, node: NodeAPI | None = None) -> None:
        self.node = node
        self.sessions: set[WebSocketSession] = set()
        self._trio_token = trio.lowlevel.current_trio_token()
        # the polled filters (node/rpc/filters.py), fed by the same hooks
        self.filters: FilterRegistry | None = FilterRegistry(node) if node is not None else None
        # live telemetry streams (node/rpc/streams.py), fed by stored signal payloads
        self.streams = TelemetryStreams(node)

    def attach(self, session: WebSocketSession) -> None:
        self.sessions.add(session)

    def subscriptions_of(self, client: str) -> int:
        """Subscriptions held by all the sessions of ``client`` (a remote address)."""
        return sum(len(s.subscriptions) for s in self.sessions if s.client == client)

    def detach(self, session: WebSocketSession) -> None:
        self.sessions.discard(session)
        for sub in session.subscriptions.values():
            if sub.stream is not None:
                self.streams.close(sub.stream)
        metrics.RPC_SUBSCRIPTIONS.dec(len(session.subscriptions))
        session.subscriptions.clear()

    def on_commit(self, block: Block, result: BlockResult) -> None:
        """Commit listener: never raises, never blocks; hops to the trio thread if a
        block is ever committed from another thread."""
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            self._trio_token.run_sync_soon(self.publish, block, result)
            return
        self.publish(block, result)

    def on_signals(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Signal listener (``attestations.signal_listeners``): payloads just stored go
        to the telemetry streams. Never raises, never blocks."""
        self.streams.on_signals(pairs)

    def publish(self, block: Block, result: BlockResult) -> None:
        try:
            self.streams.on_commit()
        except Exception:  # a stream's re-check must never cost the others their block
            log.exception("telemetry stream re-check failed")
        if self.filters is not None:
            try:
                self.filters.on_commit(block, result)
            except Exception:  # a filter must never cost the subscribers their block
                log.exception("filter update failed")
        subs = [(s, sub) for s in list(self.sessions) for sub in list(s.subscriptions.values())]
        if not subs:
            return
        head: dict[str, Any] | None = None
        logs: list[tuple[bytes, list[bytes], dict[str, Any]]] | None = None
        for session, sub in subs:
            if session.closing:
                continue
            if sub.kind in ("newPendingTransactions", "motus_telemetry"):
                continue
            if sub.kind == "newHeads":
                if head is None:
                    head = header_json(block.header, motus=False)
                session.notify(sub.id, head)
                continue
            if logs is None:
                logs = _block_logs(block, result)
            assert sub.filter is not None
            for address, topics, doc in logs:
                if sub.filter.matches(address, topics) and not session.notify(sub.id, doc):
                    break


    def on_pending_tx(self, raw: bytes, tx_hash: bytes) -> None:
        """Pool listener (``app.pool_listeners``): a transaction entered the pool. Never
        raises, never blocks: a notification that does not fit is dropped and counted."""
        try:
            self._pending_tx(tx_hash)
        except Exception:  # a subscriber must never make a submission fail
            log.exception("pending transaction notification failed")

    def _pending_tx(self, tx_hash: bytes) -> None:
        full: dict[str, Any] | None = None
        needs_full = self.filters is not None and self.filters.wants_full_pending()
        subs = [
            (s, sub) for s in list(self.sessions) for sub in list(s.subscriptions.values())
            if sub.kind == "newPendingTransactions"
        ]
        if needs_full or any(sub.full_tx for _, sub in subs):
            full = self._pending_json(tx_hash)
        if self.filters is not None:
            self.filters.on_pending(tx_hash, full)
        hash_hex = "0x" + tx_hash.hex()
        for session, sub in subs:
            if session.closing:
                continue
            if session.queued() >= PENDING_TX_QUEUE_LIMIT:
                metrics.RPC_PENDING_TX_DROPPED.inc()
                continue
            session.notify(sub.id, full if sub.full_tx and full is not None else hash_hex)

    def _pending_json(self, tx_hash: bytes) -> dict[str, Any] | None:
        """The pooled transaction as eth_getTransactionByHash shows a pending one."""
        pooled = self.node.mempool.get(tx_hash) if self.node is not None else None
        if pooled is None:
            return None
        return tx_json(pooled.tx, sender=pooled.sender, block_hash=None, height=None, index=None)


def _block_logs(
    block: Block, result: BlockResult
) -> list[tuple[bytes, list[bytes], dict[str, Any]]]:
    """Every log of the block as (address, topics, JSON)."""
    seen: list[tuple[bytes, list[bytes]]] = []

    def keep(address: bytes, topics: list[bytes]) -> bool:
        seen.append((address, topics))
        return True

    docs = block_logs(block.header, result.receipts, [tx.hash for tx in result.transactions], keep)
    out = [(a, t, d) for (a, t), d in zip(seen, docs, strict=True)]
    # block events (rewards, tallies) after the receipts' logs, as eth_getLogs serves them
    events = getattr(result, "block_events", None) or []
    if events:
        from node.rpc.eth import block_event_logs

        first = sum(len(r.logs) for r in result.receipts)
        docs = block_event_logs(block, events, first, _MATCH_ALL)
        out.extend((ev.address, list(ev.topics), d) for ev, d in zip(events, docs, strict=True))
    return out


class _MatchAll:
    def matches(self, address: bytes, topics: list[bytes]) -> bool:
        return True


_MATCH_ALL: Any = _MatchAll()


def _require_session(ctx: RPCContext) -> WebSocketSession:
    if ctx.session is None or ctx.hub is None:
        # geth's answer over HTTP
        raise RPCError(METHOD_NOT_FOUND, "notifications not supported")
    return ctx.session


@methods.method("eth_subscribe", Param("kind", p.any_value), Param("options", p.any_value, None))
def subscribe(ctx: RPCContext, kind: Any, options: Any) -> str:
    """Start a subscription on this WebSocket session; returns its id."""
    session = _require_session(ctx)
    if kind not in KINDS:
        raise invalid_params(
            f"invalid argument 0 (kind): unsupported subscription type {p.show(kind)}; "
            f"supported: {', '.join(KINDS)}"
        )
    flt = None
    full_tx = False
    if kind == "newPendingTransactions":
        if options is not None and not isinstance(options, bool):
            raise invalid_params(
                "invalid argument 1 (fullTx): newPendingTransactions takes true or false"
            )
        full_tx = bool(options)
    elif kind == "logs":
        try:
            flt = p.log_filter(options or {}, allow_blocks=False)
        except p.ParamError as exc:
            raise invalid_params(f"invalid argument 1 (options): {exc}") from None
    elif kind == "motus_telemetry":
        return _subscribe_telemetry(ctx, session, options)
    elif options is not None:
        raise invalid_params("invalid argument 1 (options): newHeads takes no options")
    _check_room(ctx, session)
    sub = Subscription("0x" + secrets.token_hex(16), kind, flt, full_tx)
    session.subscriptions[sub.id] = sub
    metrics.RPC_SUBSCRIPTIONS.inc()
    return sub.id


def _subscribe_telemetry(ctx: RPCContext, session: WebSocketSession, options: Any) -> str:
    """``{vehicleId, signals?, credential}``: a live stream of the vehicle's signals for a
    holder of the live-data permission (node/rpc/streams.py)."""
    from node.rpc.credentials import parse_credential_param, parse_vehicle_id, refused
    from node.signal_query import names_param
    from node.signal_store import TelemetryAccessError

    keys = {"vehicleId", "signals", "credential"}
    if not isinstance(options, dict) or not {"vehicleId", "credential"} <= set(options) \
            or not set(options) <= keys:
        raise invalid_params("invalid argument 1 (options): motus_telemetry takes "
                             "{vehicleId, signals?, credential}")
    try:
        vehicle_id = parse_vehicle_id(options["vehicleId"])
        credential = parse_credential_param(options["credential"])
    except p.ParamError as exc:
        raise invalid_params(f"invalid argument 1 (options): {exc}") from None
    _check_room(ctx, session)
    sub_id = "0x" + secrets.token_hex(16)
    assert ctx.hub is not None
    try:
        names = names_param(options.get("signals"))
        stream = ctx.hub.streams.open(session, sub_id, credential, vehicle_id, names)
    except TelemetryAccessError as exc:
        raise refused(exc) from None
    session.subscriptions[sub_id] = Subscription(sub_id, "motus_telemetry", stream=stream)
    metrics.RPC_SUBSCRIPTIONS.inc()
    return sub_id


def _check_room(ctx: RPCContext, session: WebSocketSession) -> None:
    """-32005 when the session or its client address holds its most subscriptions."""
    if len(session.subscriptions) >= MAX_SUBSCRIPTIONS_PER_SESSION:
        raise limit_exceeded(
            f"at most {MAX_SUBSCRIPTIONS_PER_SESSION} subscriptions per connection",
            reason="too_many_subscriptions_per_connection",
        )
    per_client = ctx.node.config.rpc.max_subscriptions_per_client
    assert ctx.hub is not None  # _require_session checked it
    if ctx.hub.subscriptions_of(session.client) >= per_client:
        raise limit_exceeded(
            f"at most {per_client} subscriptions per client address "
            "(max_subscriptions_per_client)",
            reason="too_many_subscriptions_per_client",
        )


@methods.method("eth_unsubscribe", Param("id", p.any_value))
def unsubscribe(ctx: RPCContext, sub_id: Any) -> bool:
    """End a subscription of this session; false if it has no such subscription."""
    session = _require_session(ctx)
    sub = session.subscriptions.pop(sub_id, None) if isinstance(sub_id, str) else None
    if sub is None:
        return False
    if sub.stream is not None and ctx.hub is not None:
        ctx.hub.streams.close(sub.stream)
    metrics.RPC_SUBSCRIPTIONS.dec()
    return True


def register(table: MethodTable) -> None:
    table.include(methods)
