"""JSON-RPC errors: EIP-1474 codes, one exception type carrying code, message and data.

Handlers raise :class:`RPCError` (or a helper below); the dispatcher turns it into the
``error`` member. Any other exception becomes ``-32603 internal error`` without
details: a stack trace never reaches a client.
"""

from __future__ import annotations

from typing import Any

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
INVALID_INPUT = -32000  # geth uses it for every "your input cannot be processed" error
RESOURCE_NOT_FOUND = -32001
RESOURCE_UNAVAILABLE = -32002
TRANSACTION_REJECTED = -32003
METHOD_NOT_SUPPORTED = -32004
LIMIT_EXCEEDED = -32005
EXECUTION_REVERTED = 3  # geth: eth_call / eth_estimateGas revert, data = revert bytes


class RPCError(Exception):
    """An error answer: ``code`` (EIP-1474), a message for people, optional ``data``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out

    def __repr__(self) -> str:
        return f"RPCError({self.code}, {self.message!r}, {self.data!r})"


def invalid_params(message: str) -> RPCError:
    return RPCError(INVALID_PARAMS, message)


def invalid_request(message: str) -> RPCError:
    return RPCError(INVALID_REQUEST, message)


def not_found(message: str) -> RPCError:
    return RPCError(RESOURCE_NOT_FOUND, message)


def limit_exceeded(message: str, *, reason: str) -> RPCError:
    """``-32005``, with ``data.reason`` the limit's stable code (the same word as the
    ``motus_rpc_refused_total`` label where there is one), so a client can tell the
    rate limit from a connection cap or a range bound without parsing the message."""
    return RPCError(LIMIT_EXCEEDED, f"limit exceeded: {message}", {"reason": reason})


def method_not_found(name: str) -> RPCError:
    # geth's wording, which some tools match on
    return RPCError(METHOD_NOT_FOUND, f"the method {name} does not exist/is not available")


def internal_error() -> RPCError:
    return RPCError(INTERNAL_ERROR, "internal error")


def state_pruned(oldest: int, what: str) -> RPCError:
    """A state this node no longer keeps (docs/storage.md, "Pruning"): geth's "missing
    trie node" words and code, with ``data.reason`` ``state_pruned`` and the oldest block
    whose state the node serves."""
    return RPCError(INVALID_INPUT, f"missing trie node: {what} (state_pruned: this node keeps the "
                    f"states of blocks {oldest} and later; ask an archive node)",
                    {"reason": "state_pruned", "oldestState": hex(oldest)})
