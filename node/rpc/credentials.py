"""Read credentials as JSON-RPC parameters (node/access.py is the rule): the signed
request object, the credential object, and how a refusal is answered. Kept apart from
the method modules so the subscription methods can take a credential without importing
the ``eth`` namespace."""

from __future__ import annotations

from typing import Any

from node.access import Credential, parse_credential
from node.rpc import params as p
from node.rpc.errors import INVALID_INPUT, RPCError
from node.signal_store import TelemetryAccessError, TelemetryRequest, json_ready  # noqa: F401


def parse_vehicle_id(value: Any) -> int:
    """A vehicle id: a JSON integer, a decimal string or a hex quantity, within 0..2^256-1."""
    return p.natural(value, "a vehicle id", p.UINT256_MAX)


TELEMETRY_REQUEST_KEYS = {"vehicleId", "fromMs", "toMs", "timestampMs", "nodeId", "nonce",
                          "signature"}


def parse_telemetry_request(value: Any) -> TelemetryRequest:
    """``{vehicleId, fromMs, toMs, timestampMs, chainId?, nodeId, nonce, signature}``: the
    EIP-191 signed request of docs/telemetry.md (``node.signal_store.sign_request`` makes
    one, ``request_json`` gives this object)."""
    if not isinstance(value, dict):
        raise p.ParamError("expected {vehicleId, fromMs, toMs, timestampMs, chainId, nodeId, "
                           "nonce, signature}")
    allowed = TELEMETRY_REQUEST_KEYS | {"chainId"}
    if not TELEMETRY_REQUEST_KEYS <= set(value) or not set(value) <= allowed:
        missing, extra = sorted(TELEMETRY_REQUEST_KEYS - set(value)), sorted(set(value) - allowed)
        hint = " (nodeId: motus_nodeStatus().peerId; nonce: 16 random bytes)" if missing else ""
        raise p.ParamError(f"missing {missing}{hint}" if missing else f"unknown keys {extra}")
    numbers: dict[str, Any] = {}
    for key in ("fromMs", "toMs", "timestampMs", "chainId"):
        v = value.get(key)
        if key == "chainId" and v is None:
            numbers[key] = None
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            raise p.ParamError(f"{key} must be a non-negative integer")
        numbers[key] = v
    node_id = value["nodeId"]
    if not isinstance(node_id, str) or not 0 < len(node_id) <= 128:
        raise p.ParamError("nodeId must be the node's peer id (a string)")
    return TelemetryRequest(parse_vehicle_id(value["vehicleId"]), numbers["fromMs"],
                            numbers["toMs"], numbers["timestampMs"], p.data(value["signature"]),
                            node_id, p.data(value["nonce"]), numbers["chainId"])


def parse_credential_param(value: Any) -> Credential:
    """A read credential (node/access.py): ``{"request": {signed request}}``,
    ``{"token": "0x..."}``, or, as ``motus_getTelemetry`` always took, the bare signed
    request."""
    if isinstance(value, dict) and "signature" in value:
        value = {"request": value}
    if isinstance(value, dict) and isinstance(value.get("request"), dict) and len(value) == 1:
        value = {"request": parse_telemetry_request(value["request"])}
    try:
        return parse_credential(value)
    except TelemetryAccessError as exc:
        raise p.ParamError(str(exc)) from None


def refused(exc: TelemetryAccessError) -> RPCError:
    """A refused credential as JSON-RPC: -32000 with ``data.code`` (and ``data.reason``,
    the same)."""
    return RPCError(INVALID_INPUT, f"telemetry request refused: {exc}",
                    {"code": exc.code, "reason": exc.code})
