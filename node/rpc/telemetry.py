"""The telemetry methods of the ``motus_`` namespace (docs/telemetry.md; docs/rpc.md,
"Methods: motus telemetry"): devices and gateways submit attestations (and the signal
payloads behind them), anyone follows what became of them, reads per-vehicle epoch
counters, challenges and reject counts, and a permissioned developer reads the signals.

Conventions as for the identity methods: ids, heights, epochs and counts are JSON
numbers; ids, addresses, hashes and raw bytes are 0x-hex; H3 cells are 0x-hex integers.
Attestation results keep the documented contract exactly: ``{"id", "accepted", "code"}``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from node.access import AccessContext, Credential, Scope, authorize
from node.rpc import params as p
from node.rpc.credentials import (  # noqa: F401  (parse_telemetry_request: its old home)
    json_ready,
    parse_credential_param,
    parse_telemetry_request,
    refused,
)
from node.rpc.errors import (
    METHOD_NOT_SUPPORTED,
    RPCError,
    invalid_params,
    limit_exceeded,
)
from node.rpc.eth import resolve_block
from node.rpc.ethjson import hexb
from node.rpc.identity import BLOCK, parse_vehicle_id, state_for
from node.rpc.registry import MethodTable, Param, RPCContext
from node.signal_store import (
    SignalStore,
    TelemetryAccess,
    TelemetryAccessError,
    read_telemetry,
)
from vm.attestation import compute_attestation_id, decode_attestation
from vm.epoch import get_epoch, get_epoch_start
from vm.modules import telemetry
from vm.modules.params import get_param

if TYPE_CHECKING:
    from node.attestations import AttestationService

methods = MethodTable()

MAX_SUBMIT = 1000  # docs/telemetry.md: at most 1000 attestations per call (else -32005)
BPS = 10_000


def service(ctx: RPCContext) -> AttestationService:
    """The node's attestation service; -32004 on a node built without one."""
    found = getattr(ctx.node, "attestations", None)
    if found is None:
        raise RPCError(METHOD_NOT_SUPPORTED, "this node runs no attestation pool")
    return found


def _hex_items(value: Any, name: str, *, nullable: bool = False) -> list[bytes | None]:
    """A JSON array of 0x-hex strings (or nulls when ``nullable``), at most MAX_SUBMIT
    long: longer is -32005, a bad item -32602 naming its index."""
    if not isinstance(value, list):
        raise invalid_params(f"invalid argument ({name}): expected an array of 0x-hex strings")
    if len(value) > MAX_SUBMIT:
        raise limit_exceeded(f"{len(value)} {name} in one call, at most {MAX_SUBMIT}",
                             reason="too_many_items")
    out: list[bytes | None] = []
    for i, item in enumerate(value):
        if item is None and nullable:
            out.append(None)
            continue
        try:
            out.append(p.data(item))
        except p.ParamError as exc:
            raise invalid_params(f"invalid argument ({name}): item {i}: {exc}") from None
    return out


@methods.method("motus_submitAttestations", Param("attestations", p.any_value),
                Param("payloads", p.any_value, None))
async def submit_attestations(ctx: RPCContext, attestations: Any,
                              payloads: Any) -> list[dict[str, Any]]:
    """Check each attestation against the head and pool it; one ``{id, accepted, code}``
    per item, in order (``accepted``: it entered the pool). ``payloads``: the signal
    payload of each item (or null), stored for accepted items once it is checked against
    the attestation's salted ``commitment``; a payload that does not open it refuses the whole
    call (-32602) before anything is admitted."""
    raws = [r for r in _hex_items(attestations, "attestations") if r is not None]
    bodies: list[bytes | None] | None = None
    if payloads is not None:
        bodies = _hex_items(payloads, "payloads", nullable=True)
        if len(bodies) != len(raws):
            raise invalid_params(
                f"invalid argument 1 (payloads): {len(bodies)} payloads for {len(raws)} "
                "attestations (one per attestation, null for none)")
        from node.attestations import PayloadError, check_payload

        for i, (raw, body) in enumerate(zip(raws, bodies, strict=True)):
            if body is None:
                continue
            try:
                check_payload(raw, body)
            except PayloadError as exc:
                raise RPCError(-32602, f"invalid argument 1 (payloads): item {i}: {exc}",
                               {"reason": exc.code, "index": i}) from None
    results = await service(ctx).submit(raws, f"rpc:{ctx.client}", payloads=bodies)
    return [r.to_json() for r in results]


@methods.method("motus_submitSignals", Param("items", p.any_value))
def submit_signals(ctx: RPCContext, items: Any) -> list[dict[str, Any]]:
    """Store signal payloads of attestations this node knows (pending or included):
    ``[{attestation, payload}]`` -> one ``{id, stored, code}`` per item."""
    if not isinstance(items, list):
        raise invalid_params("invalid argument 0 (items): expected an array of "
                             "{attestation, payload} objects")
    if len(items) > MAX_SUBMIT:
        raise limit_exceeded(f"{len(items)} items in one call, at most {MAX_SUBMIT}",
                             reason="too_many_items")
    pairs = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, dict) or set(item) != {"attestation", "payload"}:
                raise p.ParamError("expected {attestation, payload}")
            pairs.append((p.data(item["attestation"]), p.data(item["payload"])))
        except p.ParamError as exc:
            raise invalid_params(f"invalid argument 0 (items): item {i}: {exc}") from None
    svc = service(ctx)
    out = []
    for raw, payload in pairs:
        code = svc.store_signals(raw, payload)
        out.append({"id": hexb(compute_attestation_id(raw)), "stored": code == "ok",
                    "code": code})
    return out


@methods.method("motus_getAttestation", Param("id", p.hash32))
def get_attestation(ctx: RPCContext, att_id: bytes) -> dict[str, Any] | None:
    """``{status: pending}``, ``{status: included, height}`` or ``{status: rejected,
    code}``; null when this node never saw the id (or has forgotten a refusal)."""
    found = service(ctx).status(att_id)
    if found is None:
        return None
    out: dict[str, Any] = {"status": found.status}
    if found.height is not None:
        out["height"] = found.height
    if found.code is not None:
        out["code"] = found.code
    return out


@methods.method("motus_getBlockAttestations", Param("block", p.any_value, "latest"))
def get_block_attestations(ctx: RPCContext, block: Any) -> list[dict[str, Any]] | None:
    """The attestations a block carries, in block order, decoded; null for an unknown
    block."""
    from node.rpc.identity import block_param

    try:
        ref = block_param(block)
    except p.ParamError as exc:
        raise invalid_params(f"invalid argument 0 (block): {exc}") from None
    found = resolve_block(ctx, ref)
    if found is None:
        return None
    return [attestation_json(raw, found.header.height) for raw in found.attestations]


def attestation_json(raw: bytes, height: int) -> dict[str, Any]:
    """One included attestation with its public fields (docs/telemetry.md, wire format):
    exactly what every observer of the chain sees."""
    att = decode_attestation(bytes(raw))
    return {
        "id": hexb(compute_attestation_id(bytes(raw))),
        "blockNumber": height,
        "device": hexb(att.device),
        "vehicleId": att.vehicle_id,
        "seq": att.seq,
        "timestampS": att.timestamp_s,
        "cell": hex(att.cell),
        "odometerHm": att.odometer_hm,
        "commitment": hexb(att.commitment),
        "challenge": hexb(att.challenge),
        "raw": hexb(bytes(raw)),
    }


def _epoch(state: Any, epoch: int | None) -> int:
    return get_epoch(state) if epoch is None else epoch


EPOCH = Param("epoch", p.epoch, None)


@methods.method("motus_getEpochStats", Param("vehicleId", parse_vehicle_id), EPOCH, BLOCK)
def get_epoch_stats(ctx: RPCContext, vid: int, epoch: int | None,
                    ref: p.BlockRef) -> dict[str, Any]:
    """The vehicle's telemetry counters of ``epoch`` (default: the current one) at that
    block, as ``telemetry.get_vehicle_epoch`` (all zero when it sent nothing)."""
    header, state = state_for(ctx, ref)
    e = _epoch(state, epoch)
    stats = telemetry.get_vehicle_epoch(state, e, vid)
    return {
        "vehicleId": vid,
        "epoch": e,
        "accepted": stats.accepted,
        "distanceM": stats.distance_m,
        "moving": stats.moving,
        "challenged": stats.challenged,
        "challengePassed": stats.challenge_passed,
        "blockNumber": header.height,
    }


@methods.method("motus_getChallenge", Param("device", p.address), EPOCH, BLOCK)
def get_challenge(ctx: RPCContext, device: bytes, epoch: int | None,
                  ref: p.BlockRef) -> dict[str, Any]:
    """Whether ``device`` is challenged in ``epoch`` (default: the current one) and its
    nonce; for the current epoch also ``windowEnd``, the first height at which an answer
    no longer passes, and ``inWindow`` for the next block."""
    header, state = state_for(ctx, ref)
    current = get_epoch(state)
    e = _epoch(state, epoch)
    challenged, nonce = telemetry.get_challenge(state, device, e)
    window_end: int | None = None
    if e == current:
        window_end = get_epoch_start(state) + (get_param(state, "epoch_length_blocks")
                                               * get_param(state, "challenge_window_bps") // BPS)
    return {
        "device": hexb(device),
        "epoch": e,
        "challenged": challenged,
        "nonce": hexb(nonce) if challenged else None,
        "windowEnd": window_end,
        "inWindow": None if window_end is None else header.height + 1 < window_end,
        "blockNumber": header.height,
    }


@methods.method("motus_getRejectCounts")
def get_reject_counts(ctx: RPCContext) -> dict[str, int]:
    """Attestations this node refused since it started, per reject code (every code,
    zero included, plus ``pool_full``)."""
    return service(ctx).counters.snapshot()


def access_context(ctx: RPCContext) -> AccessContext:
    """The node's side of a credential check: chain, peer id, clock, used nonces."""
    return AccessContext(ctx.node.chain_id, getattr(ctx.node, "peer_id", None) or "",
                         int(time.time() * 1000), service(ctx).request_nonces)


def checked_access(ctx: RPCContext, credential: Credential,
                   scope: Scope | None = None) -> tuple[Any, TelemetryAccess]:
    """Head state (its own view: handlers run on worker threads) and the access the
    credential gives, through node.access.authorize; refusals as :func:`refused`."""
    state = ctx.app.state_at(ctx.store.head)
    try:
        return state, authorize(state, credential, access_context(ctx), scope)
    except TelemetryAccessError as exc:
        raise refused(exc) from None


def signal_store(ctx: RPCContext) -> SignalStore:
    """The node's signal store; -32004 on a node that keeps none."""
    store = service(ctx).signals
    if store is None:
        raise RPCError(METHOD_NOT_SUPPORTED, "this node keeps no signal store")
    return store


@methods.method("motus_getTelemetry", Param("request", parse_credential_param), blocking=True)
def get_telemetry_records(ctx: RPCContext, credential: Credential) -> dict[str, Any]:
    """The vehicle's stored signals in the range that the signer may read now, by
    ownership period and permission bit (docs/privacy.md, "Who can read what"), with
    the periods read and the node's ``coverage``. A request is for one node (its peer
    id) and answered once. Refusals: -32000 with ``data.code`` (and ``data.reason``,
    the same) one of ``bad_request``, ``wrong_audience``, ``expired``,
    ``bad_signature``, ``replayed``, ``too_many_requests``, ``busy``, ``denied``,
    ``period_mismatch``."""
    store = signal_store(ctx)
    _, access = checked_access(ctx, credential)
    answer = read_telemetry(store, access)
    return {
        "vehicleId": access.vehicle_id,
        "nodeId": getattr(ctx.node, "peer_id", None) or "",
        "records": [record_json(r) for r in answer["records"]],
        "periods": [{"index": q["index"], "owner": q["owner"], "fromMs": q["from_ms"],
                     "toMs": q["to_ms"]} for q in answer["periods"]],
        "coverage": answer["coverage"],
    }


def record_json(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": record["id"],
        "vehicleId": record["vehicle_id"],
        "timestampMs": record["timestamp_ms"],
        "period": record["period"],
        "cell": record["cell"],
        "location": record["location"],
        "signals": json_ready(record["signals"]),
        "payload": record["payload"],
    }


def register(table: MethodTable) -> None:
    table.include(methods)
