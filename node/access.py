"""The credential choke point: every read of a vehicle's off-chain data goes through here.

``motus_getTelemetry``, the query API (``motus_getLatestSignals``, ``motus_querySignals``,
``motus_aggregateSignals``, ``motus_getCoverage``), live streams
(``eth_subscribe("motus_telemetry", ...)``) and webhook registration all take one JSON
*credential* and call :func:`authorize` to turn it into a
:class:`~node.signal_store.TelemetryAccess`: who reads, which ownership periods, with
which permission bits. Standing reads (a stream, a webhook) call :func:`recheck` before
each delivery, so a revocation, an expiry or a sale ends them within one block.

Credential forms (docs/developers.md, "Credentials"):

- ``{"request": {vehicleId, fromMs, toMs, timestampMs, chainId?, nodeId, nonce,
  signature}}``: the EIP-191 signed request of docs/telemetry.md (answered once, by the
  one node it names); its vehicle and range are the scope.
- ``{"token": "0x..."}``: a short-lived access token (developer licenses; added by the
  license work: :data:`TOKEN_VERIFIER` is the hook it fills).

Refusals are :class:`~node.signal_store.TelemetryAccessError` with a stable code: the
signed-request codes (``bad_request``, ``wrong_audience``, ``expired``,
``bad_signature``, ``replayed``, ``too_many_requests``, ``busy``, ``denied``,
``period_mismatch``), and for standing reads ``revoked``, ``expired_grant``,
``vehicle_transferred``, ``no_live_data``; tokens add ``no_grant``, ``token_expired``,
``signer_removed``, ``outdated_token``, ``bad_token``, ``unknown_issuer``,
``wrong_audience``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from node.signal_store import (
    MAX_RANGE_MS,
    GrantLookup,
    ReadablePeriod,
    TelemetryAccess,
    TelemetryAccessError,
    TelemetryRequest,
    UsedNonces,
    authorize_request,
    granted_bits,
    verify_request,
)
from vm.modules.identity import (
    PERMISSION_BITS,
    PERMISSIONS_ALL,
    get_permission,
    get_vehicle,
    ownership_periods,
)

CREDENTIAL_KINDS = ("request", "token")
BIT_LIVE_DATA = PERMISSION_BITS["live_data"]


@dataclass(frozen=True)
class Credential:
    """A parsed request credential: exactly one of ``request`` / ``token`` is set."""

    kind: str  # one of CREDENTIAL_KINDS
    request: TelemetryRequest | None = None
    token: bytes | None = None


@dataclass(frozen=True)
class Scope:
    """What a call wants to read: one vehicle, device times ``[from_ms, to_ms]``."""

    vehicle_id: int
    from_ms: int
    to_ms: int


@dataclass(frozen=True)
class AccessContext:
    """Where and when a credential is checked: this node's chain and peer id (the
    audience), the clock, the replay memory of signed requests, the grant lookup."""

    chain_id: int
    node_id: str
    now_ms: int
    nonces: UsedNonces | None = None
    grants: GrantLookup = granted_bits


# (state, token bytes, scope or None, context) -> TelemetryAccess; raises
# TelemetryAccessError. None until the license work plugs token verification in. The
# access it returns must fill requester (the grantee the token stands for), periods (with
# the token's bits), vehicle_id, from_ms/to_ms (the scope, or a default range when
# scope is None), via="token", owner_at_grant and expires_ms.
TokenVerifier = Callable[[Any, bytes, "Scope | None", AccessContext], TelemetryAccess]
TOKEN_VERIFIER: TokenVerifier | None = None
# (state, access, now_ms) -> bits held now; raises TelemetryAccessError. How a standing
# read given by a token is re-checked; None: the signed-request rule of recheck().
TokenRecheck = Callable[[Any, TelemetryAccess, int], int]
TOKEN_RECHECK: TokenRecheck | None = None


def parse_credential(value: Any) -> Credential:
    """A credential from its JSON form; ``bad_request`` (with what is expected) on
    anything else. The signed request is parsed by ``node.rpc.telemetry``'s parser, handed
    in as ``value["request"]`` already parsed when it is a TelemetryRequest."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in CREDENTIAL_KINDS:
        raise TelemetryAccessError(
            "bad_request", 'credential must be {"request": {signed request}} or '
                           '{"token": "0x..."}')
    kind, body = next(iter(value.items()))
    if kind == "request":
        if not isinstance(body, TelemetryRequest):
            raise TelemetryAccessError("bad_request", "request: expected a signed request")
        return Credential("request", request=body)
    if not isinstance(body, str) or not body.startswith("0x"):
        raise TelemetryAccessError("bad_request", "token: expected 0x-hex")
    try:
        return Credential("token", token=bytes.fromhex(body[2:]))
    except ValueError:
        raise TelemetryAccessError("bad_request", "token: expected 0x-hex") from None


def authorize(state: Any, credential: Credential, ctx: AccessContext,
              scope: Scope | None = None) -> TelemetryAccess:
    """The one door: check ``credential`` against the head ``state`` now and return what
    it may read, narrowed to ``scope`` when given.

    A signed request's own vehicle and range are its scope; a ``scope`` passed with it
    must name the same vehicle and lie inside the signed range (``bad_request``): the
    signer agreed to that range only. A token's scope is the caller's (its vehicle must
    be the token's). Raises TelemetryAccessError; on success a signed request's nonce is
    spent."""
    if credential.kind == "request":
        request = credential.request
        assert request is not None
        if scope is not None and (scope.vehicle_id != request.vehicle_id
                                  or not request.from_ms <= scope.from_ms <= scope.to_ms
                                  <= request.to_ms):
            raise TelemetryAccessError(
                "bad_request", f"asked range [{scope.from_ms}, {scope.to_ms}] of vehicle "
                               f"{scope.vehicle_id} is outside the signed request's "
                               f"[{request.from_ms}, {request.to_ms}] of vehicle "
                               f"{request.vehicle_id}")
        access = authorize_request(state, request, ctx.chain_id, ctx.node_id, ctx.now_ms,
                                   ctx.nonces, ctx.grants)
        owner = _current_owner(state, request.vehicle_id)
        return replace(access, vehicle_id=request.vehicle_id,
                       from_ms=request.from_ms if scope is None else scope.from_ms,
                       to_ms=request.to_ms if scope is None else scope.to_ms,
                       via="request", owner_at_grant=owner)
    if credential.kind == "token":
        if TOKEN_VERIFIER is None:
            raise TelemetryAccessError("bad_request", "this node does not take access tokens")
        assert credential.token is not None
        return TOKEN_VERIFIER(state, credential.token, scope, ctx)
    raise TelemetryAccessError("bad_request", f"unknown credential kind {credential.kind!r}")


def _current_owner(state: Any, vehicle_id: int) -> bytes | None:
    vehicle = get_vehicle(state, vehicle_id)
    return None if vehicle is None else vehicle.owner


def recheck(state: Any, access: TelemetryAccess, now_ms: int, *,
            need_live: bool = True) -> int:
    """The permission bits a standing read (stream, webhook) holds now on the vehicle's
    current period, for what it delivers next. Raises TelemetryAccessError:
    ``vehicle_transferred`` (the car changed hands or was burned since the access was
    given), ``revoked`` (the grant is gone), ``expired_grant`` (its expiry passed),
    ``no_live_data`` (``need_live`` and the grant lacks bit 5, ``live_data``). The owner
    at authorization holds every bit while it still owns the car. A token access is
    re-checked by its verifier's rule: same chain state, same codes."""
    if access.via == "token" and TOKEN_RECHECK is not None:
        bits = TOKEN_RECHECK(state, access, now_ms)
        if need_live and not bits & (1 << BIT_LIVE_DATA):
            raise TelemetryAccessError("no_live_data", "live streams and webhooks need the "
                                                       "live_data permission (bit 5)")
        return bits
    owner = _current_owner(state, access.vehicle_id)
    if owner is None or owner != access.owner_at_grant:
        raise TelemetryAccessError(
            "vehicle_transferred", f"vehicle {access.vehicle_id} changed hands since this "
                                   "access was given")
    if access.requester == owner:
        return PERMISSIONS_ALL
    bits, expiry = get_permission(state, access.vehicle_id, access.requester)
    if bits == 0:
        raise TelemetryAccessError("revoked", f"0x{access.requester.hex()} holds no grant on "
                                              f"vehicle {access.vehicle_id} any more")
    if now_ms // 1000 >= expiry:
        raise TelemetryAccessError("expired_grant", f"the grant on vehicle {access.vehicle_id} "
                                                    f"expired at {expiry}")
    if need_live and not bits & (1 << BIT_LIVE_DATA):
        raise TelemetryAccessError("no_live_data", "live streams and webhooks need the "
                                                   "live_data permission (bit 5)")
    return bits


def live_access(state: Any, credential: Credential, ctx: AccessContext) -> TelemetryAccess:
    """The access of a standing read (stream, webhook registration): the vehicle's
    current owner, or a grantee holding the live-data bit now (:func:`recheck`; a
    live-data grant alone suffices: it reads nothing stored). Its periods are the
    current one only, with the bits held; a signed request's nonce is spent."""
    if credential.kind == "token":
        access = authorize(state, credential, ctx)
    else:
        request = credential.request
        assert request is not None
        requester = verify_request(request, ctx.chain_id, ctx.node_id, ctx.now_ms)
        if ctx.nonces is not None:
            ctx.nonces.check(requester, request.nonce, ctx.now_ms)
        access = TelemetryAccess(requester, (), request.vehicle_id, request.from_ms,
                                 request.to_ms, "request",
                                 _current_owner(state, request.vehicle_id))
    try:
        bits = recheck(state, access, ctx.now_ms, need_live=True)
    except TelemetryAccessError as exc:
        if exc.code in ("revoked", "vehicle_transferred"):  # never had it, for a new read
            raise TelemetryAccessError("denied", f"0x{access.requester.hex()} may not stream "
                                                 f"vehicle {access.vehicle_id}") from None
        raise
    periods = ownership_periods(state, access.vehicle_id)
    if credential.kind == "request":
        assert credential.request is not None
        if ctx.nonces is not None:
            ctx.nonces.use(access.requester, credential.request.nonce,
                           credential.request.timestamp_ms, ctx.now_ms)
    return replace(access, periods=(ReadablePeriod(periods[-1], bits),))


def identify(state: Any, credential: Credential, ctx: AccessContext) -> bytes:
    """Who presents ``credential`` (managing what it registered: webhooks), with no
    permission checked: a valid signed request's signer (its nonce spent), or a valid
    token's grantee. Raises TelemetryAccessError."""
    if credential.kind == "token":
        return authorize(state, credential, ctx).requester
    request = credential.request
    assert request is not None
    requester = verify_request(request, ctx.chain_id, ctx.node_id, ctx.now_ms)
    if ctx.nonces is not None:
        ctx.nonces.check(requester, request.nonce, ctx.now_ms)
        ctx.nonces.use(requester, request.nonce, request.timestamp_ms, ctx.now_ms)
    return requester


def default_range(now_ms: int) -> tuple[int, int]:
    """The range a token read covers when the caller names none: the last 31 days."""
    return max(0, now_ms - MAX_RANGE_MS), now_ms
