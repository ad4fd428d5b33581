"""The method table: JSON-RPC method name -> handler with declared parameters.

How another package adds methods (see docs/rpc.md, "Adding methods"):

    # node/rpc/vehicles.py (or any module)
    from node.rpc import params as p
    from node.rpc.registry import MethodTable, Param, RPCContext

    methods = MethodTable()

    @methods.method("motus_getVehicle", Param("id", p.quantity),
                    Param("block", p.block_ref, p.LATEST))
    def get_vehicle(ctx: RPCContext, vehicle_id: int, block: p.BlockRef) -> dict:
        ...

    def register(table: MethodTable) -> None:
        table.include(methods)

then add "node.rpc.vehicles" to ``METHOD_MODULES`` below. The table parses and
validates parameters (positional or by name) before the handler runs, so a handler
only sees parsed values; bad input is answered ``-32602`` naming the argument.
Handlers return JSON-ready values and raise :class:`node.rpc.errors.RPCError`.

Handlers run on the node's trio thread, one at a time, so they see a consistent
chain (blocks are committed on the same thread). A handler that may take long and
only *reads* the store (eth_call, eth_getLogs) is declared ``blocking=True`` and runs
in a worker thread instead, which is safe because committed trie nodes and blocks are
never changed or deleted.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node.rpc.errors import RPCError, invalid_params
from node.rpc.params import ParamError, show

if TYPE_CHECKING:
    from node.rpc.nodeapi import NodeAPI
    from node.rpc.subscriptions import SubscriptionHub
    from node.rpc.websocket import WebSocketSession

# Modules whose ``register(table)`` the server calls at start, in this order.
METHOD_MODULES: tuple[str, ...] = (
    "node.rpc.eth",
    "node.rpc.motus",
    "node.rpc.identity",
    "node.rpc.telemetry",
    "node.rpc.rewards",
    "node.rpc.governance",
    "node.rpc.subscriptions",
    "node.rpc.filters",
    "node.rpc.debug",
    "node.rpc.txpool",
    "node.rpc.licenses",
    "node.rpc.data",
    "node.rpc.webhooks",
    "node.rpc.explorer",
)

REQUIRED: Any = object()

Handler = Callable[..., Any]


@dataclass(frozen=True)
class Param:
    """One positional parameter: its name (also its key for by-name calls), its parser
    and, for an optional one, its default (JSON null counts as absent, as in geth)."""

    name: str
    parse: Callable[[Any], Any]
    default: Any = REQUIRED


@dataclass
class RPCContext:
    """What a handler may use: the node (``node.app``, ``node.store``, ``node.mempool``,
    ``node.config``...), the subscription hub, the WebSocket session (None over HTTP)
    and the client's address."""

    node: NodeAPI
    hub: SubscriptionHub | None = None
    session: WebSocketSession | None = None
    client: str = ""

    @property
    def app(self):
        return self.node.app

    @property
    def store(self):
        return self.node.store

    @property
    def mempool(self):
        return self.node.mempool

    @property
    def chain_id(self) -> int:
        return self.node.chain_id


@dataclass(frozen=True)
class RPCMethod:
    name: str
    handler: Handler
    params: tuple[Param, ...] = ()
    blocking: bool = False  # read-only and possibly slow: run in a worker thread
    is_async: bool = field(default=False)

    def bind(self, raw: Any) -> list[Any]:
        """Parse raw JSON params (array, object or absent) into handler arguments."""
        if raw is None:
            raw = []
        if isinstance(raw, dict):
            unknown = set(raw) - {p.name for p in self.params}
            if unknown:
                raise invalid_params(f"unknown argument {show(sorted(unknown)[0])}")
            raw = [raw.get(p.name) for p in self.params]
        if not isinstance(raw, list):
            raise invalid_params("params must be an array or an object")
        if len(raw) > len(self.params):
            raise invalid_params(f"too many arguments, want at most {len(self.params)}")
        args = []
        for i, p in enumerate(self.params):
            value = raw[i] if i < len(raw) else None
            if value is None:
                if p.default is REQUIRED:
                    raise invalid_params(f"missing value for required argument {i} ({p.name})")
                args.append(p.default)
                continue
            try:
                args.append(p.parse(value))
            except ParamError as exc:
                raise invalid_params(f"invalid argument {i} ({p.name}): {exc}") from None
        return args


class MethodTable:
    """Name -> :class:`RPCMethod`. Registering a name twice is an error, so two
    packages cannot silently shadow each other's methods."""

    def __init__(self) -> None:
        self._methods: dict[str, RPCMethod] = {}

    def method(
        self, name: str, *params: Param, blocking: bool = False
    ) -> Callable[[Handler], Handler]:
        """Decorator: register ``fn(ctx, *args)`` as ``name`` with the given parameters."""

        def decorate(fn: Handler) -> Handler:
            self.add(RPCMethod(name, fn, tuple(params), blocking, inspect.iscoroutinefunction(fn)))
            return fn

        return decorate

    def add(self, method: RPCMethod) -> None:
        if method.name in self._methods:
            raise ValueError(f"RPC method {method.name} registered twice")
        if method.blocking and method.is_async:
            raise ValueError(f"{method.name}: a blocking handler must be a plain function")
        self._methods[method.name] = method

    def include(self, other: MethodTable) -> None:
        for m in other._methods.values():
            self.add(m)

    def get(self, name: str) -> RPCMethod | None:
        return self._methods.get(name)

    def names(self) -> list[str]:
        return sorted(self._methods)

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __len__(self) -> int:
        return len(self._methods)


def build_method_table(modules: Iterable[str] = METHOD_MODULES) -> MethodTable:
    """Import each module and call its ``register(table)``."""
    table = MethodTable()
    for name in modules:
        importlib.import_module(name).register(table)
    return table


__all__ = [
    "METHOD_MODULES",
    "MethodTable",
    "Param",
    "RPCContext",
    "RPCError",
    "RPCMethod",
    "build_method_table",
]
