"""``debug_traceTransaction``, ``debug_traceCall``, ``debug_traceBlockByNumber`` and
``debug_traceBlockByHash``, with geth's default struct logger and its ``callTracer``
(docs/rpc.md, "Tracing"; the py-evm hooks are in vm/trace.py).

A transaction is traced by re-executing its block on the parent state up to it (the
epoch boundary and evidence first, then the transactions before it), on a scratch view:
nothing is written. Bounds: one trace runs at a time (another waits up to
``TRACE_QUEUE_WAIT`` seconds, holding one of the dispatcher's worker threads, then gets
``-32005`` ``trace_busy``); a trace still running after
``rpc.trace_timeout_seconds`` is stopped (``trace_timeout``); a struct log over
``MAX_STRUCT_LOGS`` entries or ``MAX_TRACE_BYTES`` of JSON, or a call trace over
``MAX_CALL_FRAMES`` frames or ``MAX_TRACE_BYTES``, is refused (``trace_too_large``)
rather than truncated.
"""

from __future__ import annotations

import threading
from typing import Any

from node.block import Block
from node.rpc import params as p
from node.rpc.errors import (
    INVALID_INPUT,
    RPCError,
    invalid_params,
    limit_exceeded,
    method_not_found,
)
from node.rpc.ethjson import hexb
from node.rpc.registry import MethodTable, Param, RPCContext
from vm.call import CallError
from vm.execute import BlockBody, Misbehavior
from vm.state import BlockEnv, decode_transaction
from vm.trace import (
    Budget,
    CallTracer,
    StructLogger,
    StructLogOptions,
    TracedTx,
    TraceLimitExceeded,
    Tracer,
    replay_block,
    trace_call,
    vm_error_text,
)

methods = MethodTable()

MAX_STRUCT_LOGS = 100_000  # struct log entries in one answer
MAX_CALL_FRAMES = 100_000  # call frames in one callTracer answer
MAX_TRACE_BYTES = 32 * 1024 * 1024  # estimated JSON size of one trace (a block: all of its)
TRACERS = ("callTracer",)  # besides the default struct logger
OPTION_KEYS = {"tracer", "tracerConfig", "disableStack", "disableStorage", "enableMemory",
               "enableReturnData", "limit", "timeout", "reexec", "stateOverrides",
               "blockOverrides"}

TRACE_QUEUE_WAIT = 2.0  # seconds a trace waits for the running one, holding a worker thread
_one_at_a_time = threading.Semaphore(1)  # traces are CPU-bound: one at a time


class TraceOptions:
    """geth's TraceConfig / TraceCallConfig, parsed."""

    def __init__(self, value: Any) -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise p.ParamError(f"expected a trace options object, got {p.show(value)}")
        unknown = set(value) - OPTION_KEYS
        if unknown:
            raise p.ParamError(f"unknown option {p.show(sorted(unknown)[0])}")
        for key in ("stateOverrides", "blockOverrides"):
            if value.get(key) is not None:
                raise p.ParamError(f"{key} are not supported")
        self.tracer = value.get("tracer")
        if self.tracer is not None and self.tracer not in TRACERS:
            raise p.ParamError(
                f"unsupported tracer {p.show(self.tracer)}; supported: the default struct "
                f"logger (no tracer), {', '.join(TRACERS)}"
            )
        config = value.get("tracerConfig") or {}
        if not isinstance(config, dict):
            raise p.ParamError("tracerConfig must be an object")
        if set(config) - {"onlyTopCall"}:
            # e.g. callTracer's withLog: refused rather than silently left out
            raise p.ParamError(
                f"tracerConfig {p.show(sorted(set(config) - {'onlyTopCall'})[0])} is not "
                "supported (only onlyTopCall)"
            )
        self.only_top_call = p.boolean(config.get("onlyTopCall", False))
        flags = {k: p.boolean(value.get(k, False)) for k in
                 ("disableStack", "disableStorage", "enableMemory", "enableReturnData")}
        limit = value.get("limit")
        self.struct = StructLogOptions(
            disable_stack=flags["disableStack"], disable_storage=flags["disableStorage"],
            enable_memory=flags["enableMemory"], enable_return_data=flags["enableReturnData"],
            limit=0 if limit is None else p.quantity(limit) if isinstance(limit, str) else _count(limit),
        )
        self.timeout = _duration(value.get("timeout"))

    def make(self, budget: Budget) -> Tracer:
        if self.tracer == "callTracer":
            return CallTracer(budget, only_top_call=self.only_top_call)
        return StructLogger(budget, self.struct, max_steps=MAX_STRUCT_LOGS, max_bytes=MAX_TRACE_BYTES)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise p.ParamError(f"limit must be a non-negative integer, got {p.show(value)}")
    return value


def _duration(value: Any) -> float | None:
    """geth's Go duration strings for ``timeout`` ("5s", "500ms", "1m"), or None."""
    if value is None:
        return None
    if isinstance(value, str):
        for suffix, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
            if value.endswith(suffix):
                try:
                    seconds = float(value[: -len(suffix)]) * scale
                except ValueError:
                    break
                if seconds > 0:
                    return seconds
                break
    raise p.ParamError(f'timeout must be a duration such as "5s" or "500ms", got {p.show(value)}')


def trace_options(value: Any) -> TraceOptions:
    return TraceOptions(value)


def _budget(ctx: RPCContext, opts: TraceOptions) -> Budget:
    limit = float(ctx.node.config.rpc.trace_timeout_seconds)
    return Budget(limit if opts.timeout is None else min(limit, opts.timeout))


def _result(tracer: Tracer, traced: TracedTx, *, top_gas: int) -> Any:
    """The tracer's answer for one traced transaction or call."""
    comp = traced.computation
    if isinstance(tracer, CallTracer):
        root = tracer.root
        assert root is not None
        # the top frame is the transaction's: its gas limit and what its receipt charges
        root["gas"] = hex(top_gas)
        root["gasUsed"] = hex(traced.gas_used)
        frames = _frames(root)
        if frames > MAX_CALL_FRAMES:
            raise TraceLimitExceeded(
                "trace_too_large",
                f"call trace of {frames} frames exceeds {MAX_CALL_FRAMES}; use "
                'tracerConfig {"onlyTopCall": true}',
            )
        return root
    assert isinstance(tracer, StructLogger)
    failed = comp.is_error
    output = bytes(comp.output)
    if failed and not vm_error_text(comp.error).startswith("execution reverted"):
        output = b""
    return {"gas": traced.gas_used, "failed": failed, "returnValue": hexb(output),
            "structLogs": tracer.logs}


def _frames(frame: dict[str, Any]) -> int:
    return 1 + sum(_frames(c) for c in frame.get("calls", ()))


def require_debug_api(ctx: RPCContext, name: str) -> None:
    """``rpc.debug_api = false`` hides the tracing methods as geth hides a disabled API."""
    if not ctx.node.config.rpc.debug_api:
        raise method_not_found(name)


def _run(ctx: RPCContext, opts: TraceOptions, work: Any) -> Any:
    """Run ``work(budget)`` alone, mapping the bounds to their errors."""
    budget = _budget(ctx, opts)
    if not _one_at_a_time.acquire(timeout=TRACE_QUEUE_WAIT):
        raise limit_exceeded(
            "another trace is running; retry when it is done", reason="trace_busy"
        )
    try:
        return work(budget)
    except TraceLimitExceeded as exc:
        raise limit_exceeded(exc.message, reason=exc.reason) from None
    finally:
        _one_at_a_time.release()


# --- blocks -------------------------------------------------------------------------


def _block_body(ctx: RPCContext, block: Block) -> tuple[bytes, BlockEnv, BlockBody]:
    """What ``execute_block`` was given for a committed block: the parent's state root,
    the block's environment and its body (evidence as the offenders it proved)."""
    h = block.header
    parent = ctx.store.block_by_height(h.height - 1) if h.height > 0 else None
    if parent is None:
        raise invalid_params("the genesis block has no transactions to trace")
    env = BlockEnv(ctx.chain_id, h.height, h.timestamp_ms, h.proposer, h.gas_limit,
                   h.base_fee_per_gas, h.parent_hash, ctx.store.recent_hashes(h.height))
    misbehavior = [
        Misbehavior(ev.verify(ctx.chain_id, ctx.store.validators_for(ev.height)), ev.height)
        for ev in block.evidence
    ]
    txs = [decode_transaction(raw) for raw in block.transactions]
    body = BlockBody(txs, list(block.attestations), misbehavior,
                     raw_transactions=list(block.transactions))
    return parent.header.state_root, env, body


def _trace_block(ctx: RPCContext, block: Block, opts: TraceOptions,
                 only: int | None = None) -> list[Any]:
    root, env, body = _block_body(ctx, block)

    def work(budget: Budget) -> list[Any]:
        tracers: dict[int, Tracer] = {}
        size = 0

        def tracer_for(index: int) -> Tracer | None:
            if only is not None and index != only:
                return None
            tracers[index] = opts.make(budget)
            return tracers[index]

        traced = replay_block(ctx.store.state_db, root, env, body, tracer_for, budget, last=only)
        out = []
        for index in sorted(traced):
            tracer = tracers[index]
            out.append(_result(tracer, traced[index], top_gas=body.transactions[index].gas))
            if isinstance(tracer, StructLogger):
                size += tracer.size
                if size > MAX_TRACE_BYTES:
                    raise TraceLimitExceeded(
                        "trace_too_large",
                        f"the block's struct logs exceed {MAX_TRACE_BYTES} bytes; trace its "
                        "transactions one by one or use the callTracer",
                    )
        return out

    return _run(ctx, opts, work)


@methods.method(
    "debug_traceTransaction", Param("hash", p.hash32), Param("options", trace_options, None),
    blocking=True,
)
def trace_transaction(ctx: RPCContext, tx_hash: bytes, opts: TraceOptions | None) -> Any:
    """The trace of a committed transaction."""
    require_debug_api(ctx, "debug_traceTransaction")
    loc = ctx.store.tx_location(tx_hash)
    block = ctx.store.block_by_height(loc[0]) if loc is not None else None
    if loc is None or block is None:
        raise RPCError(INVALID_INPUT, "transaction not found")  # geth's words
    return _trace_block(ctx, block, opts or TraceOptions(None), only=loc[1])[0]


def _block_traces(ctx: RPCContext, block: Block | None, ref: str, opts: TraceOptions | None) -> list[Any]:
    if block is None:
        raise RPCError(INVALID_INPUT, f"block {ref} not found")
    if not block.transactions:
        return []
    results = _trace_block(ctx, block, opts or TraceOptions(None))
    hashes = [e.tx_hash for e in ctx.store.tx_extras(block.hash)]
    return [{"txHash": hexb(h), "result": r} for h, r in zip(hashes, results, strict=True)]


@methods.method(
    "debug_traceBlockByNumber", Param("block", p.block_number),
    Param("options", trace_options, None), blocking=True,
)
def trace_block_by_number(ctx: RPCContext, ref: p.BlockRef, opts: TraceOptions | None) -> list[Any]:
    """``[{txHash, result}]``: every transaction of the block, traced."""
    require_debug_api(ctx, "debug_traceBlockByNumber")
    from node.rpc.eth import resolve_block

    return _block_traces(ctx, resolve_block(ctx, ref), ref.describe(), opts)


@methods.method(
    "debug_traceBlockByHash", Param("hash", p.hash32), Param("options", trace_options, None),
    blocking=True,
)
def trace_block_by_hash(ctx: RPCContext, block_hash: bytes, opts: TraceOptions | None) -> list[Any]:
    require_debug_api(ctx, "debug_traceBlockByHash")
    return _block_traces(ctx, ctx.store.block_by_hash(block_hash), hexb(block_hash), opts)


@methods.method(
    "debug_traceCall", Param("transaction", p.call_request),
    Param("block", p.block_ref, p.LATEST), Param("options", trace_options, None),
    blocking=True,
)
def trace_call_method(ctx: RPCContext, req: p.CallRequest, ref: p.BlockRef,
                      opts: TraceOptions | None) -> Any:
    """The trace of a call run as ``eth_call`` runs it (same block context, gas price 0)."""
    require_debug_api(ctx, "debug_traceCall")
    from node.rpc.eth import _cannot_start, call_env, resolve_header

    opts = opts or TraceOptions(None)
    header = resolve_header(ctx, ref)
    env = call_env(ctx, header, ref)

    def work(budget: Budget) -> Any:
        tracer = opts.make(budget)
        try:
            traced = trace_call(ctx.store.state_db, header.state_root, env, tracer,
                                sender=req.sender, to=req.to, data=req.data, value=req.value,
                                gas=req.gas)
        except CallError as exc:
            raise _cannot_start(exc) from None
        gas = env.gas_limit if req.gas is None else min(req.gas, env.gas_limit)
        return _result(tracer, traced, top_gas=gas)

    return _run(ctx, opts, work)


def register(table: MethodTable) -> None:
    table.include(methods)
