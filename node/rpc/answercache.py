"""Answers of head-dependent reads, kept until the head moves.

Between two blocks the chain's state does not change, so ``eth_getBalance`` of the
same address at ``latest`` has the same answer for every client that asks. Wallets and
dapps poll exactly these reads (balances, nonces, the latest block, a vehicle), often
many clients the same ones: the first call of a (method, params) pair on a head runs
the handler, the others reuse its encoded result until the next commit.

Only methods whose result is a function of their parameters and the head (state and
chain, no mempool, no wall clock, no caller) are kept, listed in ``CACHED_METHODS``;
a call naming ``pending`` (the mempool's view) is never kept, and neither are errors.
Every entry belongs to one head (the store's head header object, which a commit
replaces): the first lookup after a commit finds another head and empties the table, so an answer is never served from an older
block than the one the handler would read. Handlers of these methods run on the
event loop's thread, as do commits (node/rpc/registry.py), so a result is always
stored under the head it was computed on.

The table is bounded by the bytes of the results it holds (``rpc.answer_cache_bytes``,
0 turns it off); when full it is emptied, so filling it with distinct reads costs
an attacker as much as the reads themselves and keeps nothing alive.
"""

from __future__ import annotations

from typing import Any

# Read-only, head-dependent, non-blocking (their handlers run on the loop thread).
CACHED_METHODS = frozenset({
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getBlockTransactionCountByNumber",
    "motus_getVehicle",
    "motus_getDevice",
})

MAX_ANSWER_BYTES = 64 * 1024  # larger results (full blocks) are encoded per call, not kept


def cache_key(name: str, params: Any) -> tuple | None:
    """A hashable identity of the call, or None when it must not be cached: params
    other than a list of strings, booleans and nulls (objects, numbers), or one
    naming ``pending``. Booleans and nulls are wrapped so that ``true`` and
    ``"true"`` never share an entry."""
    if params is None:
        return (name,)
    if type(params) is not list:
        return None
    key: list[Any] = [name]
    for value in params:
        kind = type(value)
        if kind is str:
            if value.lower() == "pending":
                return None
            key.append(value)
        elif kind is bool or value is None:
            key.append((value,))
        else:
            return None
    return tuple(key)


class AnswerCache:
    """Encoded results of ``CACHED_METHODS`` calls on one head."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.head: object = None
        self.results: dict[tuple, bytes] = {}
        self.size = 0
        self.hits = 0
        self.misses = 0

    def get(self, head: object, key: tuple) -> bytes | None:
        """The encoded result of ``key`` on ``head``, if it was computed there."""
        if head is not self.head:
            self.head = head
            self.results.clear()
            self.size = 0
        found = self.results.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, head: object, key: tuple, result: bytes) -> None:
        """Keep ``result`` for ``key`` on ``head`` (ignored if the head moved since)."""
        if head is not self.head or len(result) > MAX_ANSWER_BYTES:
            return
        if self.size + len(result) > self.max_bytes:
            self.results.clear()
            self.size = 0
        self.results[key] = result
        self.size += len(result)
