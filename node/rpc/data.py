"""The query API of the ``motus_`` namespace (docs/developers.md, "Query API"): latest
value per signal, a time range in pages, aggregates per interval, the signal catalogue
and the coverage answer. Every method takes a credential (node/access.py) first and an
options object second; refusals are -32000 with ``data.code`` as motus_getTelemetry's.
"""

from __future__ import annotations

import time
from typing import Any

from node.access import Scope, default_range
from node.rpc import params as p
from node.rpc.credentials import json_ready, parse_credential_param, refused
from node.rpc.registry import MethodTable, Param, RPCContext
from node.rpc.telemetry import checked_access, record_json, signal_store
from node.signal_query import (
    DEFAULT_PAGE,
    MAX_PAGE,
    Cursor,
    aggregate,
    catalogue,
    coverage,
    latest,
    names_param,
    page,
)
from node.signal_store import MAX_RANGE_MS, MINUTE_MS, TelemetryAccess, TelemetryAccessError

methods = MethodTable()

CREDENTIAL = Param("credential", parse_credential_param)


def _options(value: Any, allowed: set[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not set(value) <= allowed:
        raise p.ParamError(f"options: an object with keys among {sorted(allowed)}")
    return value


def options_param(*keys: str) -> Any:
    allowed = set(keys)

    def parse(value: Any) -> dict[str, Any]:
        return _options(value, allowed)
    return parse


def _int(options: dict[str, Any], key: str, default: int | None) -> int | None:
    value = options.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise TelemetryAccessError("bad_request", f"{key} must be a non-negative integer")
    return value


def _access(ctx: RPCContext, credential: Any, options: dict[str, Any]) -> TelemetryAccess:
    """The credential checked for the range the options name (default: the signed
    request's range, or for a token the last 31 days)."""
    try:
        from_ms, to_ms = _int(options, "fromMs", None), _int(options, "toMs", None)
        scope = None
        if credential.kind == "request":
            request = credential.request
            if from_ms is not None or to_ms is not None:
                scope = Scope(request.vehicle_id,
                              request.from_ms if from_ms is None else from_ms,
                              request.to_ms if to_ms is None else to_ms)
        else:
            lo, hi = default_range(p_now())
            vehicle = _int(options, "vehicleId", None)
            if vehicle is None:
                raise TelemetryAccessError("bad_request", "vehicleId is needed with a token")
            scope = Scope(vehicle, lo if from_ms is None else from_ms,
                          hi if to_ms is None else to_ms)
        if scope is not None and not 0 <= scope.from_ms <= scope.to_ms:
            raise TelemetryAccessError("bad_request", "need fromMs <= toMs")
        if scope is not None and scope.to_ms - scope.from_ms > MAX_RANGE_MS:
            raise TelemetryAccessError("bad_request", f"range at most {MAX_RANGE_MS} ms")
    except TelemetryAccessError as exc:
        raise refused(exc) from None
    return checked_access(ctx, credential, scope)[1]


def p_now() -> int:
    return int(time.time() * 1000)


def _names(options: dict[str, Any]) -> frozenset[str] | None:
    try:
        return names_param(options.get("signals"))
    except TelemetryAccessError as exc:
        raise refused(exc) from None


RANGE_KEYS = ("fromMs", "toMs", "vehicleId")


@methods.method("motus_getLatestSignals", CREDENTIAL,
                Param("options", options_param("signals", *RANGE_KEYS), {}), blocking=True)
def get_latest_signals(ctx: RPCContext, credential: Any, options: dict[str, Any]) -> dict:
    """The newest value the reader may see of each signal (or of the named ones):
    ``{vehicleId, signals: {name: {value, timestampMs, id, period}}, complete}``."""
    store = signal_store(ctx)
    names = _names(options)
    access = _access(ctx, credential, options)
    answer = latest(store, access, names)
    return {"vehicleId": access.vehicle_id, "complete": answer["complete"],
            "signals": {k: v | {"value": json_ready(v["value"])}
                        for k, v in answer["signals"].items()}}


@methods.method("motus_querySignals", CREDENTIAL,
                Param("options", options_param("signals", "cursor", "limit", *RANGE_KEYS), {}),
                blocking=True)
def query_signals(ctx: RPCContext, credential: Any, options: dict[str, Any]) -> dict:
    """One page (``limit``, default 100, at most 1000) of the records in the range,
    oldest first, after ``cursor``: ``{vehicleId, records, nextCursor}``."""
    store = signal_store(ctx)
    names = _names(options)
    try:
        limit = _int(options, "limit", DEFAULT_PAGE)
        assert limit is not None
        if not 1 <= limit <= MAX_PAGE:
            raise TelemetryAccessError("bad_request", f"limit must be 1..{MAX_PAGE}")
        cursor = options.get("cursor")
        if cursor is not None and not isinstance(cursor, str):
            raise TelemetryAccessError("bad_request", "cursor: a string from nextCursor")
        at = None if cursor is None else Cursor.decode(cursor)
    except TelemetryAccessError as exc:
        raise refused(exc) from None
    access = _access(ctx, credential, options)
    answer = page(store, access, at, limit, names)
    return {"vehicleId": access.vehicle_id,
            "records": [record_json(r) for r in answer["records"]],
            "nextCursor": answer["nextCursor"]}


@methods.method("motus_aggregateSignals", CREDENTIAL,
                Param("options", options_param("signals", "intervalMs", *RANGE_KEYS)),
                blocking=True)
def aggregate_signals(ctx: RPCContext, credential: Any, options: dict[str, Any]) -> dict:
    """min / max / avg / last / count of each numeric signal per ``intervalMs`` (whole
    minutes; at most 10000 intervals)."""
    store = signal_store(ctx)
    names = _names(options)
    try:
        interval = _int(options, "intervalMs", None)
        if interval is None:
            raise TelemetryAccessError("bad_request", "intervalMs is needed")
    except TelemetryAccessError as exc:
        raise refused(exc) from None
    access = _access(ctx, credential, options)
    try:
        answer = aggregate(store, access, interval, names)
    except TelemetryAccessError as exc:
        raise refused(exc) from None
    return {"vehicleId": access.vehicle_id} | answer


@methods.method("motus_getCoverage", CREDENTIAL,
                Param("options", options_param("intervalMs", *RANGE_KEYS), {}),
                blocking=True)
def get_coverage(ctx: RPCContext, credential: Any, options: dict[str, Any]) -> dict:
    """Which intervals of the range this node holds, lacks, has pruned, or the chain has
    no data for (docs/developers.md, "Coverage")."""
    store = signal_store(ctx)
    access = _access(ctx, credential, options)
    try:
        interval = _int(options, "intervalMs", None)
        if interval is None:  # about 100 intervals, whole minutes
            span = access.to_ms - access.from_ms + 1
            interval = max(MINUTE_MS, -(-span // 100 // MINUTE_MS) * MINUTE_MS)
        answer = coverage(store, access, interval, p_now())
    except TelemetryAccessError as exc:
        raise refused(exc) from None
    return {"vehicleId": access.vehicle_id} | answer


def _optional_credential(value: Any) -> Any:
    return None if value is None else parse_credential_param(value)


@methods.method("motus_getSignalCatalogue", Param("credential", _optional_credential, None),
                blocking=True)
def get_signal_catalogue(ctx: RPCContext, credential: Any) -> dict:
    """The signals with their units; with a credential, also the numeric signals the
    vehicle's readable records carry in its range."""
    if credential is None:
        return catalogue()
    store = signal_store(ctx)
    return catalogue(store, _access(ctx, credential, {}))


def register(table: MethodTable) -> None:
    table.include(methods)


