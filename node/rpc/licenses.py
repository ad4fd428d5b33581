"""The developer-platform methods of the ``motus_`` namespace (docs/developers.md; docs/rpc.md,
"Methods: motus developer licenses"): licenses, the grants a license holds, and access
tokens (issued by validators, verified by any node).

Refusals of token methods are -32000 with ``data.code`` (and ``data.reason``, the same),
never a bare "forbidden": the codes are listed in node/tokens.py and docs/developers.md.
"""

from __future__ import annotations

import time
from typing import Any

from node.rpc import params as p
from node.rpc.errors import INVALID_INPUT, METHOD_NOT_SUPPORTED, RPCError, invalid_params
from node.rpc.ethjson import hexb
from node.rpc.identity import BLOCK, parse_vehicle_id, state_for
from node.rpc.registry import MethodTable, Param, RPCContext
from node.signal_store import TelemetryAccessError
from node.tokens import (
    TokenRequest,
    issue_token,
    token_json,
    verify_token,
)
from vm.modules.identity import PERMISSION_BITS, get_grants_of
from vm.modules.licenses import License, get_license, license_by_client_id, license_grantee

methods = MethodTable()

MAX_GRANTS_LISTED = 1_000


def permission_names(bits: int) -> list[str]:
    return [name for name, bit in PERMISSION_BITS.items() if bits & (1 << bit)]


def parse_license_ref(value: Any) -> int | str:
    """A license: its id (number, decimal or hex quantity) or its client id (string)."""
    if isinstance(value, str) and value[:1].isalpha() and not value.startswith("0x"):
        if len(value.encode()) > 64:
            raise p.ParamError("client id at most 64 bytes")
        return value
    return p.natural(value, "a license id or client id", p.UINT256_MAX)


def _resolve(state: Any, ref: int | str) -> License:
    license_id = license_by_client_id(state, ref) if isinstance(ref, str) else ref
    found = get_license(state, license_id) if license_id else None
    if found is None:
        raise RPCError(INVALID_INPUT, f"no license {ref!r}", {"code": "unknown_license",
                                                               "reason": "unknown_license"})
    return found


def license_json(found: License) -> dict[str, Any]:
    return {"licenseId": found.license_id, "owner": hexb(found.owner), "name": found.name,
            "clientId": found.client_id, "redirectUris": list(found.redirect_uris),
            "signers": [hexb(s) for s in found.signers],
            "grantee": hexb(license_grantee(found.license_id))}


@methods.method("motus_getLicense", Param("license", parse_license_ref), BLOCK)
def get_license_info(ctx: RPCContext, ref: int | str, block: p.BlockRef) -> dict[str, Any]:
    """A developer license by id or client id: owner, name, client id, redirect URIs,
    signers and the grantee address its grants are kept under."""
    _, state = state_for(ctx, block)
    return license_json(_resolve(state, ref))


@methods.method("motus_getGrants", Param("license", parse_license_ref),
                Param("offset", p.count, 0), Param("limit", p.count, MAX_GRANTS_LISTED), BLOCK)
def get_grants(ctx: RPCContext, ref: int | str, offset: int, limit: int,
               block: p.BlockRef) -> dict[str, Any]:
    """Which vehicles the license may read at that block and with which bits: every live
    grant (not revoked, not expired at the block's time, made by the vehicle's current
    owner), ascending by vehicle id, ``limit`` (at most 1,000) from ``offset``;
    ``total`` counts them all."""
    header, state = state_for(ctx, block)
    found = _resolve(state, ref)
    grants = get_grants_of(state, license_grantee(found.license_id), header.timestamp_ms // 1000)
    page = grants[offset:offset + min(limit, MAX_GRANTS_LISTED)]
    return {"licenseId": found.license_id, "blockNumber": header.height, "total": len(grants),
            "grants": [{"vehicleId": v, "bits": b, "permissions": permission_names(b),
                        "expiry": e} for v, b, e in page]}


TOKEN_REQUEST_KEYS = {"licenseId", "vehicleId", "timestampMs", "issuer", "signature"}
TOKEN_REQUEST_OPTIONAL = {"bits", "audience", "ttlMs", "chainId"}


def parse_token_request(value: Any) -> TokenRequest:
    """``{licenseId, vehicleId, bits?, audience?, ttlMs?, timestampMs, chainId?, issuer,
    signature}`` (node.tokens.sign_token_request / token_request_json make one)."""
    from node.tokens import ANY_AUDIENCE, DEFAULT_TTL_MS

    if not isinstance(value, dict):
        raise p.ParamError("expected {licenseId, vehicleId, bits, audience, ttlMs, timestampMs, "
                           "chainId, issuer, signature}")
    keys = set(value)
    if not TOKEN_REQUEST_KEYS <= keys or not keys <= TOKEN_REQUEST_KEYS | TOKEN_REQUEST_OPTIONAL:
        missing = sorted(TOKEN_REQUEST_KEYS - keys)
        extra = sorted(keys - TOKEN_REQUEST_KEYS - TOKEN_REQUEST_OPTIONAL)
        hint = " (issuer: the validator's address, motus_nodeStatus().validator)" \
            if "issuer" in missing else ""
        raise p.ParamError(f"missing {missing}{hint}" if missing else f"unknown keys {extra}")
    numbers: dict[str, int | None] = {}
    for key, default in (("bits", 0), ("ttlMs", DEFAULT_TTL_MS), ("timestampMs", None),
                         ("chainId", None)):
        v = value.get(key, default)
        if v is None and key == "chainId":
            numbers[key] = None
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            raise p.ParamError(f"{key} must be a non-negative integer")
        numbers[key] = v
    audience = value.get("audience", ANY_AUDIENCE)
    if not isinstance(audience, str):
        raise p.ParamError("audience must be a string ('*' or a node's peer id)")
    license_id = p.natural(value["licenseId"], "a license id", p.UINT256_MAX)
    return TokenRequest(license_id, parse_vehicle_id(value["vehicleId"]), int(numbers["bits"] or 0),
                        audience, int(numbers["ttlMs"] or 0), int(numbers["timestampMs"] or 0),
                        p.data(value["signature"]), numbers["chainId"], p.address(value["issuer"]))


def _refused(exc: TelemetryAccessError) -> RPCError:
    return RPCError(INVALID_INPUT, f"token refused: {exc}", {"code": exc.code, "reason": exc.code})


@methods.method("motus_issueToken", Param("request", parse_token_request))
def issue(ctx: RPCContext, request: TokenRequest) -> dict[str, Any]:
    """Exchange a license signer's signed request for an access token signed by this
    validator (-32004 on a node without a validator key). Refusals: -32000 with
    ``data.code``."""
    key = getattr(ctx.node, "validator_key", None)
    if key is None:
        raise RPCError(METHOD_NOT_SUPPORTED, "this node is not a validator: ask a validator "
                                             "for tokens (any node verifies them)")
    state = ctx.app.head_state()
    try:
        token = issue_token(state, request, ctx.node.chain_id, key, int(time.time() * 1000),
                            getattr(ctx.node, "token_requests", None))
    except TelemetryAccessError as exc:
        raise _refused(exc) from None
    out = token_json(token)
    out["permissions"] = permission_names(token.bits)
    return out


@methods.method("motus_verifyToken", Param("token", p.data))
def verify(ctx: RPCContext, raw: bytes) -> dict[str, Any]:
    """Whether this node accepts the token now, and what it gives: the token's fields and
    ``bits`` now (narrowed to the grant); a refusal is -32000 with ``data.code``."""
    if not raw:
        raise invalid_params("invalid argument 0 (token): empty")
    state = ctx.app.head_state()
    try:
        token, bits = verify_token(state, raw, ctx.node.chain_id,
                                   getattr(ctx.node, "peer_id", None) or "",
                                   int(time.time() * 1000))
    except TelemetryAccessError as exc:
        raise _refused(exc) from None
    out = token_json(token)
    out.update(bitsNow=bits, permissions=permission_names(bits), blockNumber=ctx.store.head.height)
    return out


def register(table: MethodTable) -> None:
    table.include(methods)
