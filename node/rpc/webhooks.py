"""Webhook methods of the ``motus_`` namespace (docs/developers.md, "Webhooks"): register
a condition and a URL for a vehicle, list, enable/disable, delete, read the delivery log,
replay. Registration takes a credential holding the live-data permission
(node/access.py ``live_access``); the other methods take any valid credential of the
address that registered the webhook (node/access.py ``identify``). Refusals: -32000
with ``data.code`` (the credential codes, and node/webhooks.py's)."""

from __future__ import annotations

import time
from typing import Any

from node.access import identify, live_access
from node.rpc.credentials import parse_credential_param, refused
from node.rpc.errors import INVALID_INPUT, METHOD_NOT_SUPPORTED, RPCError
from node.rpc.registry import MethodTable, Param, RPCContext
from node.rpc.telemetry import access_context
from node.signal_store import TelemetryAccessError
from node.webhooks import MAX_LOG, WebhookError, WebhookService

methods = MethodTable()

CREDENTIAL = Param("credential", parse_credential_param)


def _service(ctx: RPCContext) -> WebhookService:
    found = getattr(ctx.node, "webhooks", None)
    if found is None:
        raise RPCError(METHOD_NOT_SUPPORTED, "this node runs no webhooks")
    return found


def _refused(exc: WebhookError) -> RPCError:
    return RPCError(INVALID_INPUT, f"webhook refused: {exc}",
                    {"code": exc.code, "reason": exc.code})


def _owner(ctx: RPCContext, credential: Any) -> bytes:
    try:
        return identify(ctx.app.head_state(), credential, access_context(ctx))
    except TelemetryAccessError as exc:
        raise refused(exc) from None


def _seq(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise _refused(WebhookError("bad_webhook", f"{name} must be a non-negative integer"))
    return value


@methods.method("motus_registerWebhook", CREDENTIAL, Param("spec", lambda v: v))
def register_webhook(ctx: RPCContext, credential: Any, spec: Any) -> dict[str, Any]:
    """``spec``: ``{url, condition}``. Returns the webhook with its ``secret`` (0x-hex,
    32 bytes; shown only here: it keys the HMAC of every delivery)."""
    svc = _service(ctx)
    if not isinstance(spec, dict) or set(spec) != {"url", "condition"}:
        raise _refused(WebhookError("bad_webhook", "spec: {url, condition}"))
    state = ctx.app.head_state()
    try:
        access = live_access(state, credential, access_context(ctx))
    except TelemetryAccessError as exc:
        raise refused(exc) from None
    try:
        hook, secret = svc.register(access, access.periods[0].bits, spec["url"],
                                    spec["condition"], int(time.time() * 1000))
    except WebhookError as exc:
        raise _refused(exc) from None
    return hook.public() | {"secret": "0x" + secret.hex()}


@methods.method("motus_getWebhooks", CREDENTIAL)
def get_webhooks(ctx: RPCContext, credential: Any) -> list[dict[str, Any]]:
    """The webhooks the credential's address registered on this node."""
    owner = _owner(ctx, credential)
    return [h.public() for h in _service(ctx).of_owner(owner)]


@methods.method("motus_setWebhookEnabled", CREDENTIAL, Param("id", lambda v: v),
                Param("enabled", lambda v: v))
def set_webhook_enabled(ctx: RPCContext, credential: Any, hook_id: Any,
                        enabled: Any) -> dict[str, Any]:
    """Disable, or enable again (only while the access still holds live data: a
    credential with it is needed then)."""
    svc = _service(ctx)
    if not isinstance(enabled, bool):
        raise _refused(WebhookError("bad_webhook", "enabled: true or false"))
    state = ctx.app.head_state()
    try:
        if enabled:
            access = live_access(state, credential, access_context(ctx))
            owner = access.requester
        else:
            owner = identify(state, credential, access_context(ctx))
    except TelemetryAccessError as exc:
        raise refused(exc) from None
    try:
        hook = svc.owned(hook_id, owner)
        if enabled and (access.vehicle_id != hook.vehicle_id
                        or "0x" + (access.owner_at_grant or b"").hex() != hook.owner_at_grant):
            raise WebhookError("vehicle_transferred", "the vehicle changed hands since this "
                                                      "webhook was registered: register anew")
    except WebhookError as exc:
        raise _refused(exc) from None
    svc.set_enabled(hook, enabled, None if enabled else "disabled")
    return hook.public()


@methods.method("motus_deleteWebhook", CREDENTIAL, Param("id", lambda v: v))
def delete_webhook(ctx: RPCContext, credential: Any, hook_id: Any) -> bool:
    """Delete a webhook and its log."""
    svc = _service(ctx)
    owner = _owner(ctx, credential)
    try:
        svc.delete(svc.owned(hook_id, owner))
    except WebhookError as exc:
        raise _refused(exc) from None
    return True


@methods.method("motus_getWebhookDeliveries", CREDENTIAL, Param("id", lambda v: v),
                Param("options", lambda v: v, None))
def get_webhook_deliveries(ctx: RPCContext, credential: Any, hook_id: Any,
                           options: Any) -> dict[str, Any]:
    """The delivery log: ``options`` ``{fromSeq?, limit?}`` (at most 1000) -> ``{webhook,
    deliveries: [{seq, status, createdMs, attempts, lastStatus, lastError, deliveredMs,
    body}]}``."""
    svc = _service(ctx)
    owner = _owner(ctx, credential)
    options = options or {}
    try:
        if not isinstance(options, dict) or not set(options) <= {"fromSeq", "limit"}:
            raise WebhookError("bad_webhook", "options: {fromSeq?, limit?}")
        hook = svc.owned(hook_id, owner)
        from_seq = _seq(options.get("fromSeq", hook.first_kept), "fromSeq")
        limit = min(_seq(options.get("limit", 100), "limit"), MAX_LOG)
    except WebhookError as exc:
        raise _refused(exc) from None
    return {"webhook": hook.public(), "deliveries": svc.deliveries(hook, from_seq, limit)}


@methods.method("motus_replayWebhook", CREDENTIAL, Param("id", lambda v: v),
                Param("fromSeq", lambda v: v))
def replay_webhook(ctx: RPCContext, credential: Any, hook_id: Any, from_seq: Any) -> dict:
    """Deliver again, in order, every kept event from ``fromSeq`` on."""
    svc = _service(ctx)
    owner = _owner(ctx, credential)
    try:
        hook = svc.owned(hook_id, owner)
        queued = svc.replay(hook, _seq(from_seq, "fromSeq"))
    except WebhookError as exc:
        raise _refused(exc) from None
    return {"webhook": hook.public(), "queued": queued}


def register(table: MethodTable) -> None:
    table.include(methods)
