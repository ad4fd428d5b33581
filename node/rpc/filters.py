"""The polled filter API, as geth serves it: ``eth_newFilter``, ``eth_newBlockFilter``,
``eth_newPendingTransactionFilter``, ``eth_getFilterChanges``, ``eth_getFilterLogs``,
``eth_uninstallFilter`` (docs/rpc.md, "Filters").

A filter collects what happens after it is installed (logs of new blocks, new block
hashes, transactions entering the pool) until its owner polls it. Bounds, so that
forgotten filters cannot grow the node:

- an idle filter expires ``rpc.filter_timeout_seconds`` (300, geth's 5 minutes) after it
  was installed or last polled by ``eth_getFilterChanges``; then it is "filter not found";
- at most ``rpc.max_filters`` filters in all and ``rpc.max_filters_per_client`` per
  client address (``-32005`` with ``data.reason`` ``too_many_filters`` /
  ``too_many_filters_per_client``);
- at most ``rpc.max_filter_changes`` changes wait in one filter: beyond it the oldest
  are dropped and counted (``motus_rpc_filter_changes_dropped_total``).

A log filter's logs are ``eth_getLogs``'s (:func:`node.rpc.eth.logs_of_block`, block
events included), computed once per block for all filters, so that polling and
``eth_getLogs`` over the same blocks give the same entries. ``removed`` is always false:
a committed block is final, there are no reorgs.

Everything here runs on the node's trio thread (handlers are not ``blocking``, and
the commit and pool listeners run there), so no lock is needed.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node.rpc import metrics
from node.rpc import params as p
from node.rpc.errors import INVALID_INPUT, RPCError, invalid_params, limit_exceeded
from node.rpc.ethjson import hexb
from node.rpc.registry import MethodTable, Param, RPCContext

if TYPE_CHECKING:
    from node.block import Block
    from node.rpc.nodeapi import NodeAPI
    from vm.execute import BlockResult

KIND_LOGS = "logs"
KIND_BLOCKS = "blocks"
KIND_PENDING = "pendingTransactions"

methods = MethodTable()


def filter_not_found() -> RPCError:
    # geth's words (eth/filters/api.go, errFilterNotFound), which clients match on to
    # reinstall an expired filter
    return RPCError(INVALID_INPUT, "filter not found")


@dataclass
class Filter:
    id: str
    kind: str
    client: str
    deadline: float  # time.monotonic() after which an unpolled filter is dropped
    criteria: p.LogFilter | None = None
    full_tx: bool = False  # pending filter: whole transactions instead of hashes
    changes: deque[Any] = field(default_factory=deque)

    def accepts_height(self, height: int) -> bool:
        """Whether a log of a block at ``height`` is in the criteria's block range (geth's
        rule for installed filters: a number bounds the range, a tag does not)."""
        crit = self.criteria
        assert crit is not None
        if crit.block_hash is not None:
            return False  # that block is already final: no new log can be in it
        lo, hi = _bound(crit.from_block), _bound(crit.to_block)
        return (lo is None or height >= lo) and (hi is None or height <= hi)


def _bound(ref: p.BlockRef) -> int | None:
    """A range end of an installed filter: its number (``earliest`` is 0), or None for
    the other tags, which follow the head and so bound nothing."""
    return 0 if ref.tag == "earliest" else ref.number


class FilterRegistry:
    """The installed filters of one RPC server, fed by the node's commit and pool hooks."""

    def __init__(self, node: NodeAPI, clock=time.monotonic) -> None:
        self.node = node
        self.clock = clock
        self.filters: dict[str, Filter] = {}

    @property
    def _cfg(self):
        return self.node.config.rpc

    # --- lifecycle --------------------------------------------------------------------

    def expire(self) -> None:
        """Drop the filters whose deadline has passed."""
        now = self.clock()
        for fid in [fid for fid, f in self.filters.items() if f.deadline <= now]:
            self._remove(fid)

    def install(self, kind: str, client: str, **kw: Any) -> str:
        self.expire()
        cfg = self._cfg
        if len(self.filters) >= cfg.max_filters:
            raise limit_exceeded(
                f"at most {cfg.max_filters} filters are installed on this node "
                "(max_filters); uninstall unused ones or use eth_getLogs",
                reason="too_many_filters",
            )
        if sum(1 for f in self.filters.values() if f.client == client) >= cfg.max_filters_per_client:
            raise limit_exceeded(
                f"at most {cfg.max_filters_per_client} filters per client address "
                "(max_filters_per_client); uninstall unused ones",
                reason="too_many_filters_per_client",
            )
        # A quantity as the spec's `uint` (and geth's rpc.NewID): 128 random bits, no leading zeros.
        fid = hex(secrets.randbits(128))
        self.filters[fid] = Filter(fid, kind, client, self.clock() + cfg.filter_timeout_seconds, **kw)
        metrics.RPC_FILTERS.inc()
        return fid

    def get(self, fid: Any) -> Filter:
        self.expire()
        f = self.filters.get(fid) if isinstance(fid, str) else None
        if f is None:
            raise filter_not_found()
        return f

    def uninstall(self, fid: Any) -> bool:
        if not isinstance(fid, str) or fid not in self.filters:
            return False
        self._remove(fid)
        return True

    def _remove(self, fid: str) -> None:
        del self.filters[fid]
        metrics.RPC_FILTERS.dec()

    def poll(self, fid: Any) -> list[Any]:
        """The changes since the last poll; restarts the filter's idle deadline."""
        f = self.get(fid)
        f.deadline = self.clock() + self._cfg.filter_timeout_seconds
        out = list(f.changes)
        f.changes.clear()
        return out

    def _push(self, f: Filter, item: Any) -> None:
        if len(f.changes) >= self._cfg.max_filter_changes:
            f.changes.popleft()
            metrics.RPC_FILTER_CHANGES_DROPPED.labels(f.kind).inc()
        f.changes.append(item)

    # --- feeds (trio thread; never raise into the caller's loop) ------------------------

    def on_commit(self, block: Block, result: BlockResult) -> None:
        """A block was committed: its hash to block filters, its matching logs to log filters."""
        if not self.filters:
            return
        self.expire()
        block_hash: str | None = None
        logs: list[tuple[bytes, list[bytes], dict[str, Any]]] | None = None
        for f in list(self.filters.values()):
            if f.kind == KIND_BLOCKS:
                block_hash = block_hash or hexb(block.hash)
                self._push(f, block_hash)
            elif f.kind == KIND_LOGS and f.accepts_height(block.height):
                if logs is None:
                    logs = self._block_logs(block)
                assert f.criteria is not None
                for address, topics, doc in logs:
                    if f.criteria.matches(address, topics):
                        self._push(f, doc)

    def _block_logs(self, block: Block) -> list[tuple[bytes, list[bytes], dict[str, Any]]]:
        """Every log of the block, exactly as eth_getLogs serves it, with the raw address
        and topics to match each filter against."""
        from node.rpc.eth import logs_of_block

        docs = logs_of_block(RPCContext(self.node), block, MATCH_ALL)
        return [
            (bytes.fromhex(d["address"][2:]), [bytes.fromhex(t[2:]) for t in d["topics"]], d)
            for d in docs
        ]

    def on_pending(self, tx_hash: bytes, full: dict[str, Any] | None) -> None:
        """A transaction entered the pool: its hash (or ``full``) to pending filters."""
        if not self.filters:
            return
        hash_hex = hexb(tx_hash)
        for f in self.filters.values():
            if f.kind == KIND_PENDING:
                self._push(f, full if f.full_tx and full is not None else hash_hex)

    def wants_full_pending(self) -> bool:
        return any(f.kind == KIND_PENDING and f.full_tx for f in self.filters.values())


MATCH_ALL = p.LogFilter(p.LATEST, p.LATEST, None, frozenset(), ())


def _registry(ctx: RPCContext) -> FilterRegistry:
    filters = getattr(ctx.hub, "filters", None)
    if filters is None:  # only a server started without its hub (never over the network)
        raise RPCError(INVALID_INPUT, "filters are not available on this server")
    return filters


def _new_filter_criteria(value: Any) -> p.LogFilter:
    try:
        crit = p.log_filter(value)
    except p.ParamError as exc:
        raise invalid_params(f"invalid argument 0 (filter): {exc}") from None
    lo, hi = crit.from_block, crit.to_block
    if lo.number is not None and hi.number is not None and lo.number > hi.number:
        # geth: "invalid from and to block combination"
        raise invalid_params("invalid from and to block combination: fromBlock is after toBlock")
    return crit


@methods.method("eth_newFilter", Param("filter", p.any_value))
def new_filter(ctx: RPCContext, value: Any) -> str:
    """A log filter: changes are the logs of blocks committed after it is installed that
    match address/topics and fall in fromBlock..toBlock (numbers bound, tags do not)."""
    crit = _new_filter_criteria(value)
    return _registry(ctx).install(KIND_LOGS, ctx.client, criteria=crit)


@methods.method("eth_newBlockFilter")
def new_block_filter(ctx: RPCContext) -> str:
    """Changes are the hashes of blocks committed after it is installed."""
    return _registry(ctx).install(KIND_BLOCKS, ctx.client)


@methods.method("eth_newPendingTransactionFilter", Param("fullTx", p.boolean, False))
def new_pending_transaction_filter(ctx: RPCContext, full_tx: bool) -> str:
    """Changes are the hashes (with ``fullTx``: the transactions) of transactions that
    entered this node's pool after it is installed."""
    return _registry(ctx).install(KIND_PENDING, ctx.client, full_tx=full_tx)


@methods.method("eth_getFilterChanges", Param("id", p.any_value))
def get_filter_changes(ctx: RPCContext, fid: Any) -> list[Any]:
    return _registry(ctx).poll(fid)


@methods.method("eth_getFilterLogs", Param("id", p.any_value), blocking=True)
def get_filter_logs(ctx: RPCContext, fid: Any) -> list[dict[str, Any]]:
    """Every log matching a log filter's criteria, as ``eth_getLogs`` with them (same
    range and result bounds). Does not restart the idle deadline (as geth)."""
    f = _registry(ctx).filters.get(fid) if isinstance(fid, str) else None
    if f is None or f.kind != KIND_LOGS or f.deadline <= _registry(ctx).clock():
        raise filter_not_found()
    from node.rpc.eth import get_logs

    assert f.criteria is not None
    return get_logs(ctx, f.criteria)


@methods.method("eth_uninstallFilter", Param("id", p.any_value))
def uninstall_filter(ctx: RPCContext, fid: Any) -> bool:
    return _registry(ctx).uninstall(fid)


def register(table: MethodTable) -> None:
    table.include(methods)
