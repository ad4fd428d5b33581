"""JSON-RPC 2.0 processing shared by HTTP and WebSocket: parse, check the envelope and
the limits (batch size, rate), call the handler, shape the answer, count it.

A request body goes in, the bytes to send back come out (or nothing, for a batch of
notifications). Errors never carry Python exception text of unexpected failures.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import trio
from eth.vm.interrupt import EVMMissingData
from trie.exceptions import MissingTrieNode

from codec.json import JSONParseError, parse_json
from node.rpc import metrics
from node.rpc.answercache import CACHED_METHODS, AnswerCache, cache_key
from node.rpc.errors import (
    PARSE_ERROR,
    RPCError,
    internal_error,
    invalid_request,
    limit_exceeded,
    method_not_found,
    state_pruned,
)
from node.rpc.ratelimit import RateLimiter
from node.rpc.registry import MethodTable, RPCContext

if TYPE_CHECKING:
    from node.rpc.loopguard import LoopGuard
    from node.rpc.nodeapi import NodeAPI
    from node.rpc.subscriptions import SubscriptionHub
    from node.rpc.websocket import WebSocketSession

log = logging.getLogger("motus.rpc")

WORKER_THREADS = 4  # concurrent blocking handlers (eth_call, eth_getLogs)


@dataclass(frozen=True)
class Reply:
    """What to send back: ``body`` (None when every request was a notification) and
    whether the request was refused as a whole (HTTP maps it to a status code)."""

    body: bytes | None
    refused: str | None = None  # "rate_limited" / "batch_too_large" / "parse_error"


# json's encoder for what orjson does not take; one instance: json.dumps with any
# non-default option builds a new JSONEncoder per call (~2 us)
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _dumps(doc: Any) -> bytes:
    """Compact UTF-8 JSON. orjson encodes an answer ~10-20x faster than json (a block's
    header ~2 us instead of ~30 us); integers beyond 64 bits and non-string keys, which
    it refuses, go through json's encoder, which writes them as before. Differences a
    JSON parser does not see: non-ASCII characters are sent as UTF-8, not ``\\u``
    escapes, and a non-finite float (a device may sign a NaN signal value) becomes
    ``null``, as in JavaScript's JSON.stringify, where json failed the whole call with
    -32603 (docs/rpc.md)."""
    try:
        return orjson.dumps(doc)
    except TypeError:
        return _ENCODER.encode(doc).encode()


def _result_answer(req_id: Any, result: bytes) -> bytes:
    """The bytes ``_dumps`` gives for a result object, from the encoded result."""
    return b'{"jsonrpc":"2.0","id":' + _dumps(req_id) + b',"result":' + result + b"}"


def _error_doc(err: RPCError, req_id: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req_id, "error": err.to_json()}


def _valid_id(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int) and not isinstance(value, bool))
    )


class Dispatcher:
    def __init__(
        self,
        node: NodeAPI,
        table: MethodTable,
        *,
        max_batch: int,
        rate_limiter: RateLimiter | None,
        hub: SubscriptionHub | None = None,
        guard: LoopGuard | None = None,
        answer_cache: AnswerCache | None = None,
    ) -> None:
        self.node = node
        self.guard = guard  # when set, requests wait while the event loop is behind
        self.table = table
        self.answer_cache = answer_cache
        # cached only where the handler runs on the loop's thread, as commits do
        self.cached_methods = frozenset(
            name for name in CACHED_METHODS
            if (m := table.get(name)) is not None and not m.blocking and not m.is_async
        )
        self.max_batch = max_batch
        self.rate_limiter = rate_limiter
        self.hub = hub
        self.threads = trio.CapacityLimiter(WORKER_THREADS)
        self._metric_children: dict[tuple[str, str], tuple[Any, Any]] = {}

    async def handle(
        self, body: bytes, *, transport: str, client: str, session: WebSocketSession | None = None
    ) -> Reply:
        """Answer one HTTP body or WebSocket message."""
        if self.guard is not None and not self.guard.may_run():
            await self.guard.admit()
        try:
            # Depth-checked before json.loads (codec.json): nesting deeper than
            # MAX_JSON_DEPTH is refused. The size is the transports' limit
            # (rpc.max_request_bytes), checked before the body was read.
            doc = parse_json(body, max_bytes=None)
        except JSONParseError as exc:
            metrics.RPC_ERRORS.labels("unknown", str(PARSE_ERROR)).inc()
            message = "parse error: invalid JSON" if exc.code == "json_malformed" else f"parse error: {exc}"
            return Reply(
                _dumps(_error_doc(RPCError(PARSE_ERROR, message, {"code": exc.code}))),
                refused="parse_error",
            )
        is_batch = isinstance(doc, list)
        items = doc if is_batch else [doc]
        if is_batch and not items:
            return Reply(_dumps(_error_doc(invalid_request("empty batch"))))
        if len(items) > self.max_batch:
            metrics.RPC_REFUSED.labels("batch_too_large").inc()
            err = limit_exceeded(
                f"batch of {len(items)} requests exceeds max_batch {self.max_batch}",
                reason="batch_too_large",
            )
            return Reply(_dumps(_error_doc(err)), refused="batch_too_large")
        if self.rate_limiter is not None and not self.rate_limiter.take(client, len(items)):
            metrics.RPC_REFUSED.labels("rate_limited").inc()
            err = limit_exceeded(
                f"rate limit of {self.rate_limiter.rate} requests per second "
                "per client exceeded, retry later",
                reason="rate_limited",
            )
            req_id = doc.get("id") if isinstance(doc, dict) and _valid_id(doc.get("id")) else None
            return Reply(_dumps(_error_doc(err, req_id)), refused="rate_limited")
        ctx = RPCContext(self.node, self.hub, session, client)
        answers = []
        for item in items:
            answer = await self.call(item, ctx, transport)
            if answer is not None:
                answers.append(answer)
        if not answers:
            return Reply(None)
        if is_batch:
            return Reply(b"[" + b",".join(answers) + b"]")
        return Reply(answers[0])

    async def call(self, item: Any, ctx: RPCContext, transport: str) -> bytes | None:
        """One request object -> its encoded answer, or None for a notification."""
        if not isinstance(item, dict):
            return _dumps(_error_doc(invalid_request("invalid request: expected a JSON object")))
        req_id = item.get("id")
        if not _valid_id(req_id):
            return _dumps(
                _error_doc(
                    invalid_request("invalid request: id must be a string, an integer or null")
                )
            )
        notification = "id" not in item
        name = item.get("method")
        if item.get("jsonrpc") != "2.0":
            err = invalid_request('invalid request: "jsonrpc" must be "2.0"')
            return None if notification else _dumps(_error_doc(err, req_id))
        if not isinstance(name, str):
            err = invalid_request('invalid request: "method" must be a string')
            return None if notification else _dumps(_error_doc(err, req_id))
        method = self.table.get(name)
        label = name if method is not None else "unknown"
        calls, seconds = self._metrics(label, transport)
        calls.inc()
        started = time.perf_counter()
        try:
            if method is None:
                raise method_not_found(name)
            params = item.get("params")
            key = None
            if self.answer_cache is not None and name in self.cached_methods:
                key = cache_key(name, params)
                if key is not None:
                    head = self.node.store.head
                    cached = self.answer_cache.get(head, key)
                    if cached is not None:
                        return None if notification else _result_answer(req_id, cached)
            args = method.bind(params)
            if method.blocking:
                result = await trio.to_thread.run_sync(
                    method.handler, ctx, *args, limiter=self.threads
                )
            elif method.is_async:
                result = await method.handler(ctx, *args)
            else:
                result = method.handler(ctx, *args)
            encoded = _dumps(result)
            if key is not None:
                self.answer_cache.put(head, key, encoded)  # type: ignore[union-attr]
            answer = None if notification else _result_answer(req_id, encoded)
        except RPCError as err:
            metrics.RPC_ERRORS.labels(label, str(err.code)).inc()
            answer = None if notification else _dumps(_error_doc(err, req_id))
        except (MissingTrieNode, EVMMissingData):
            # A read that began on a kept state whose nodes a pruning sweep deleted as the
            # window moved on (docs/storage.md, "Pruning"); reads below the floor are
            # refused before they start (node/rpc/eth.py).
            err = state_pruned(ctx.store.oldest_state_height, "the requested state is no longer kept")
            metrics.RPC_ERRORS.labels(label, str(err.code)).inc()
            answer = None if notification else _dumps(_error_doc(err, req_id))
        except Exception:
            log.exception("RPC method %s failed", name)
            failure = internal_error()
            metrics.RPC_ERRORS.labels(label, str(failure.code)).inc()
            answer = None if notification else _dumps(_error_doc(failure, req_id))
        finally:
            seconds.observe(time.perf_counter() - started)
        return answer

    def _metrics(self, label: str, transport: str) -> tuple[Any, Any]:
        """The call counter and the timing histogram of (method, transport), looked up
        once: ``labels()`` takes a lock and builds a key on every call. Labels are
        registered method names or ``unknown``, so the cache is bounded."""
        key = (label, transport)
        found = self._metric_children.get(key)
        if found is None:
            found = (metrics.RPC_CALLS.labels(label, transport), metrics.RPC_SECONDS.labels(label))
            self._metric_children[key] = found
        return found
