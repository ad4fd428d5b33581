"""Webhooks: a developer's condition on a vehicle's signals, delivered to a URL
(docs/developers.md, "Webhooks").

A webhook is registered with a credential (node/access.py) that holds the live-data
permission on the vehicle now, a URL the operator allows (``[webhooks] allowed_targets``;
nothing is allowed by default: a node must not be made to POST into its own network), and
one condition:

- ``{"type": "threshold", "signal", "op", "value"}``: fires when a numeric signal's
  comparison becomes true (edge-triggered: once per crossing);
- ``{"type": "geofence", "cells": [H3 cells], "event": "enter"|"exit"}``: at the
  precision the permission allows (exact location: any resolution; approximate location:
  at most the chain's public cell resolution);
- ``{"type": "trip", "event": "start"|"stop"}``: the vehicle starts or stops moving;
- ``{"type": "change", "signal"}``: every reading whose value of the signal differs from
  the previous one (and the first), e.g. to mirror a battery level.

Each payload this node stores for the vehicle is filtered by the bits the webhook holds
now and tested; a hit becomes an *event* in the webhook's log (LevelDB under
``<home>/webhooks``, so registrations, logs and cursors survive a restart). One task per
webhook delivers its events in order (at least once: a failed POST is retried with
backoff until it succeeds, the webhook is disabled, or the log overflows), each signed
with HMAC-SHA256 under the webhook's secret. A receiver that hangs or fails delays only
its own webhook: every POST is bounded by ``timeout_seconds``. The access is re-checked
at every block; a revocation, expiry or sale disables the webhook (``disabledReason``)
and stops its deliveries.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h3.api.basic_int as h3
import plyvel
import trio

from codec.developer import (  # noqa: F401  (verify_webhook_signature: the receivers')
    SIGNATURE_HEADER,
    verify_webhook_signature,
    webhook_signature,
)
from node.access import recheck
from node.config import ConfigError, WebhooksSection
from node.signal_store import (
    BIT_APPROXIMATE_LOCATION,
    BIT_CURRENT_LOCATION,
    BIT_LOCATION_HISTORY,
    BIT_NON_LOCATION_HISTORY,
    StoredSignals,
    TelemetryAccess,
    TelemetryAccessError,
    filter_record,
    json_ready,
)
from vm.attestation import compute_attestation_id, decode_attestation

log = logging.getLogger("motus.webhooks")

MAX_URL_BYTES = 2_048
MAX_CELLS = 1_000  # cells in one geofence
MAX_LOG = 1_000  # events kept per webhook (delivered ones are dropped oldest first)
MAX_RESPONSE_HEAD = 16 * 1024  # bytes of a receiver's answer read (its status line)
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
}
MOVING_SIGNALS = ("speed_kmh", "speed_cmps")


class WebhookError(Exception):
    """A webhook call refused; ``code`` is stable (docs/developers.md, "Webhook codes")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


# --- where a node may POST ------------------------------------------------------------


@dataclass(frozen=True)
class TargetPolicy:
    """The operator's allow-list of webhook targets: IP networks (``127.0.0.1``,
    ``10.0.0.0/8``: a host name in a URL must resolve into them, and the node connects
    to the address it checked) and host names (``hooks.example.com``: trusted with
    whatever they resolve to). Empty: no webhook may be registered."""

    networks: tuple[Any, ...] = ()
    hosts: frozenset[str] = frozenset()

    @staticmethod
    def parse(entries: list[str]) -> TargetPolicy:
        networks, hosts = [], set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return TargetPolicy(tuple(networks), frozenset(hosts))

    def check_url(self, url: str) -> tuple[str, str, int, str]:
        """``(scheme, host, port, path)`` of an allowed URL; ``target_not_allowed`` or
        ``bad_webhook`` otherwise. A host name not on the list is checked again at
        each delivery against the addresses it resolves to."""
        if not isinstance(url, str) or len(url.encode()) > MAX_URL_BYTES:
            raise WebhookError("bad_webhook", f"url: a string of at most {MAX_URL_BYTES} bytes")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise WebhookError("bad_webhook", "url: not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username \
                or parts.password or parts.fragment:
            raise WebhookError("bad_webhook", "url: http(s)://host[:port]/path, no "
                                              "credentials, no fragment")
        host = parts.hostname.lower().rstrip(".")
        port = port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not self.networks and not self.hosts:
            raise WebhookError("target_not_allowed", "this node allows no webhook targets "
                                                     "([webhooks] allowed_targets)")
        if host in self.hosts:
            return parts.scheme, host, port, path
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            if not self.networks:
                raise WebhookError("target_not_allowed", f"host {host} is not in "
                                                         "[webhooks] allowed_targets") from None
            return parts.scheme, host, port, path  # resolved and checked at delivery
        if not self.allows_address(address):
            raise WebhookError("target_not_allowed", f"address {host} is not in "
                                                     "[webhooks] allowed_targets")
        return parts.scheme, host, port, path

    def allows_address(self, address: Any) -> bool:
        return any(address in net for net in self.networks)

    async def address_for(self, host: str, port: int) -> str:
        """The address to connect to: ``host`` itself when listed by name, else one it
        resolves to inside an allowed network (``target_not_allowed`` if none)."""
        if host in self.hosts:
            return host
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            pass
        infos = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_STREAM)
        for *_, sockaddr in infos:
            address = ipaddress.ip_address(sockaddr[0])
            if self.allows_address(address):
                return str(address)
        raise WebhookError("target_not_allowed", f"{host} resolves outside "
                                                 "[webhooks] allowed_targets")


# --- conditions -------------------------------------------------------------------------


def parse_condition(value: Any, bits: int, public_resolution: int) -> dict[str, Any]:
    """A condition checked against what the access may see now (``bits``):
    ``bad_condition``, ``no_location_permission``, ``precision_not_allowed``."""
    if not isinstance(value, dict) or value.get("type") not in ("threshold", "geofence", "trip",
                                                                 "change"):
        raise WebhookError("bad_condition", "condition: {type: threshold|geofence|trip|change, "
                                            "...}")
    kind = value["type"]
    if kind == "change":
        if set(value) != {"type", "signal"} or not isinstance(value["signal"], str) \
                or not 0 < len(value["signal"]) <= 64 or value["signal"] in ("lat", "lon"):
            raise WebhookError("bad_condition", "change: {type, signal} (not a position: use "
                                                "a geofence)")
        if not bits & (1 << BIT_NON_LOCATION_HISTORY):
            raise WebhookError("bad_condition", "change needs non_location_history (bit 0)")
        return dict(value)
    if kind == "threshold":
        if set(value) != {"type", "signal", "op", "value"} or not isinstance(value["op"], str) \
                or value["op"] not in OPS \
                or not isinstance(value["signal"], str) or not 0 < len(value["signal"]) <= 64 \
                or isinstance(value["value"], bool) \
                or not isinstance(value["value"], int | float):
            raise WebhookError("bad_condition", "threshold: {type, signal, op (< <= > >= == "
                                                "!=), value (a number)}")
        if value["signal"] in ("lat", "lon"):
            raise WebhookError("bad_condition", "threshold on a position: use a geofence")
        if not bits & (1 << BIT_NON_LOCATION_HISTORY):
            raise WebhookError("bad_condition", "thresholds need non_location_history (bit 0)")
        return dict(value)
    if kind == "trip":
        if set(value) != {"type", "event"} or not isinstance(value["event"], str) \
                or value["event"] not in ("start", "stop"):
            raise WebhookError("bad_condition", "trip: {type, event: start|stop}")
        if not bits & (1 << BIT_NON_LOCATION_HISTORY):
            raise WebhookError("bad_condition", "trips need non_location_history (bit 0: speed)")
        return dict(value)
    if set(value) != {"type", "cells", "event"} or not isinstance(value["event"], str) \
            or value["event"] not in ("enter", "exit") \
            or not isinstance(value["cells"], list) or not 0 < len(value["cells"]) <= MAX_CELLS:
        raise WebhookError("bad_condition", f"geofence: {{type, cells: 1..{MAX_CELLS} H3 cells "
                                            "(0x-hex), event: enter|exit}")
    cells = []
    for item in value["cells"]:
        try:
            cell = int(item, 16)
            if not h3.is_valid_cell(cell):
                raise ValueError
        except (TypeError, ValueError):
            raise WebhookError("bad_condition", f"geofence: {item!r} is not an H3 cell") from None
        cells.append(cell)
    resolutions = {h3.get_resolution(c) for c in cells}
    if len(resolutions) != 1:
        raise WebhookError("bad_condition", "geofence: all cells at one resolution")
    resolution = resolutions.pop()
    exact = bits & ((1 << BIT_LOCATION_HISTORY) | (1 << BIT_CURRENT_LOCATION))
    if not exact and not bits & (1 << BIT_APPROXIMATE_LOCATION):
        raise WebhookError("no_location_permission", "a geofence needs a location permission")
    if not exact and resolution > public_resolution:
        raise WebhookError("precision_not_allowed",
                           f"approximate location allows cells of resolution at most "
                           f"{public_resolution}; these are {resolution}")
    return {"type": "geofence", "event": value["event"], "resolution": resolution,
            "cells": [hex(c) for c in cells]}


def evaluate(condition: dict[str, Any], shown: dict[str, Any], state: dict[str, Any]
             ) -> dict[str, Any] | None:
    """The trigger a filtered record fires (``shown``, as filter_record gives it), or
    None; ``state`` (persisted with the webhook) keeps what the last record was."""
    signals = shown["signals"]
    kind = condition["type"]
    if kind == "change":
        name = condition["signal"]
        if name not in signals:
            return None
        value = json_ready(signals[name])
        if "last" in state and state["last"] == value:
            return None
        previous = state.get("last")
        state["last"] = value
        return {"type": "change", "signal": name, "value": value, "previous": previous}
    if kind == "threshold":
        value = signals.get(condition["signal"])
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        now = OPS[condition["op"]](value, condition["value"])
        was = state.get("true", False)
        state["true"] = now
        if now and not was:
            return {"type": "threshold", "signal": condition["signal"], "op": condition["op"],
                    "value": condition["value"], "observed": value}
        return None
    if kind == "trip":
        speeds = [signals[k] for k in MOVING_SIGNALS if isinstance(signals.get(k), int | float)]
        if not speeds:
            return None
        moving = any(s > 0 for s in speeds)
        was = state.get("moving")
        state["moving"] = moving
        if was is None or was == moving:
            return None
        event = "start" if moving else "stop"
        return {"type": "trip", "event": event} if event == condition["event"] else None
    cell = _cell_at(shown, condition["resolution"])
    if cell is None:
        return None
    inside = hex(cell) in condition["cells"]
    was = state.get("inside")
    state["inside"] = inside
    if was is None or was == inside:
        return None
    event = "enter" if inside else "exit"
    return {"type": "geofence", "event": event, "cell": hex(cell)} \
        if event == condition["event"] else None


def _cell_at(shown: dict[str, Any], resolution: int) -> int | None:
    """The record's cell at ``resolution`` as far as its filtering shows it."""
    if shown["location"] == "exact" and "lat" in shown["signals"]:
        return h3.latlng_to_cell(shown["signals"]["lat"], shown["signals"]["lon"], resolution)
    if shown["location"] == "approximate" and shown["cell"] is not None:
        public = int(shown["cell"], 16)
        if h3.get_resolution(public) >= resolution:
            return h3.cell_to_parent(public, resolution)
    return None


# --- persistence --------------------------------------------------------------------------


@dataclass
class Webhook:
    """One registration (JSON in LevelDB). ``cursor``: the next event to deliver;
    ``next_seq``: the next event's number; events ``[first_kept, next_seq)`` are in the log."""

    id: str
    owner: str  # 0x-hex of the principal that registered it
    vehicle_id: int
    url: str
    secret: str  # 0x-hex, 32 bytes
    condition: dict[str, Any]
    owner_at_grant: str  # the vehicle's owner when it was registered
    via: str = "request"
    enabled: bool = True
    disabled_reason: str | None = None
    created_ms: int = 0
    next_seq: int = 1
    cursor: int = 1
    first_kept: int = 1
    state: dict[str, Any] = field(default_factory=dict)
    delivered: int = 0
    failed_attempts: int = 0

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "owner": self.owner, "vehicleId": self.vehicle_id,
                "url": self.url, "condition": self.condition, "enabled": self.enabled,
                "disabledReason": self.disabled_reason, "createdMs": self.created_ms,
                "nextSeq": self.next_seq, "cursor": self.cursor, "firstKept": self.first_kept,
                "delivered": self.delivered, "failedAttempts": self.failed_attempts}

    def access(self) -> TelemetryAccess:
        return TelemetryAccess(bytes.fromhex(self.owner[2:]), (), self.vehicle_id, 0, 0,
                               self.via, bytes.fromhex(self.owner_at_grant[2:]))


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


class WebhookStore:
    """``b"w" + id`` -> webhook JSON; ``b"e" + id + seq`` -> event JSON ``{body,
    createdMs, attempts, lastStatus, lastError, deliveredMs}``."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._db = plyvel.DB(str(path), create_if_missing=True)

    def close(self) -> None:
        self._db.close()

    def webhooks(self) -> list[Webhook]:
        return [Webhook(**json.loads(v)) for _, v in self._db.iterator(prefix=b"w")]

    def save(self, hook: Webhook) -> None:
        self._db.put(b"w" + hook.id.encode(), json.dumps(asdict(hook)).encode())

    def delete(self, hook: Webhook) -> None:
        with self._db.write_batch(transaction=True) as batch:
            batch.delete(b"w" + hook.id.encode())
            for key in self._db.iterator(prefix=b"e" + hook.id.encode(), include_value=False):
                batch.delete(key)

    def event(self, hook: Webhook, seq: int) -> dict[str, Any] | None:
        raw = self._db.get(b"e" + hook.id.encode() + _u64(seq))
        return None if raw is None else json.loads(raw)

    def put_event(self, hook: Webhook, seq: int, event: dict[str, Any]) -> None:
        self._db.put(b"e" + hook.id.encode() + _u64(seq), json.dumps(event).encode())

    def append(self, hook: Webhook, event: dict[str, Any]) -> None:
        """Add the next event and the webhook's new counters in one write."""
        with self._db.write_batch(transaction=True) as batch:
            batch.put(b"e" + hook.id.encode() + _u64(hook.next_seq), json.dumps(event).encode())
            hook.next_seq += 1
            while hook.next_seq - hook.first_kept > MAX_LOG and hook.first_kept < hook.cursor:
                batch.delete(b"e" + hook.id.encode() + _u64(hook.first_kept))
                hook.first_kept += 1
            batch.put(b"w" + hook.id.encode(), json.dumps(asdict(hook)).encode())


# --- delivery ------------------------------------------------------------------------------


class TLSFailure(Exception):
    """An https target's TLS handshake failed; ``code`` is ``bad_certificate`` (the
    certificate does not verify: unknown issuer, self-signed, expired, another host's)
    or ``tls`` (any other handshake failure), ``detail`` the library's reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """The client context of https deliveries: the system's CAs, plus the certificates
    of ``ca_file`` (PEM) when given; hostname checks on. ConfigError on an unreadable
    or invalid file, so a node with a bad ``webhooks.ca_file`` does not start."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"webhooks.ca_file {ca_file}: not a readable PEM file of CA "
                              f"certificates ({exc})") from None
    return context


def _tls_failure(exc: BaseException) -> TLSFailure | None:
    """The TLS failure behind ``exc`` (trio wraps the ssl error of a handshake in
    BrokenResourceError), or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return TLSFailure("bad_certificate", seen.verify_message or str(seen))
        if isinstance(seen, ssl.SSLError):
            return TLSFailure("tls", seen.reason or str(seen))
        seen = seen.__cause__ or seen.__context__
    return None


async def post(scheme: str, host: str, address: str, port: int, path: str, body: bytes,
               headers: dict[str, str], timeout: float,
               tls: ssl.SSLContext | None = None) -> int:
    """POST ``body``; the receiver's status code. Raises TLSFailure (an https target's
    handshake), OSError / trio errors, TooSlowError (past ``timeout``: connect, send and
    the status line together). ``tls``: the context for https (default: the system's
    CAs)."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            "Content-Type: application/json", f"Content-Length: {len(body)}",
            "User-Agent: motus-webhooks/1"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    with trio.fail_after(timeout):
        stream: Any = await trio.open_tcp_stream(address, port)
        try:
            if scheme == "https":
                stream = trio.SSLStream(stream, tls or ssl.create_default_context(),
                                        server_hostname=host)
                try:
                    await stream.do_handshake()
                except (trio.BrokenResourceError, ssl.SSLError) as exc:
                    failure = _tls_failure(exc)
                    if failure is None:
                        raise
                    raise failure from None
            await stream.send_all(request)
            received = b""
            while b"\r\n" not in received and len(received) < MAX_RESPONSE_HEAD:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                received += chunk
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()
    line = received.split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
        raise OSError("not an HTTP answer")
    return int(line[1])


def backoff_ms(attempt: int, limits: WebhooksSection) -> int:
    """The wait after the ``attempt``-th failed POST of an event: doubling from
    ``retry_initial_ms``, at most ``retry_max_ms``."""
    return min(limits.retry_max_ms, limits.retry_initial_ms * 2 ** min(attempt - 1, 30))


class WebhookService:
    """Registrations, logs and delivery tasks of one node. The trio thread only."""

    def __init__(self, path: Path, limits: WebhooksSection, head_state: Callable[[], Any],
                 public_resolution: Callable[[], int], tls: ssl.SSLContext | None = None) -> None:
        self.limits = limits
        self.tls = tls or tls_context()
        self.policy = TargetPolicy.parse(list(limits.allowed_targets))
        self.store = WebhookStore(path)
        self.head_state = head_state
        self.public_resolution = public_resolution
        self.hooks: dict[str, Webhook] = {h.id: h for h in self.store.webhooks()}
        self._wake: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.stats = {"delivered": 0, "failed_attempts": 0, "events": 0}

    # --- lifecycle ----------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """One delivery task per webhook until cancelled."""
        try:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for hook_id in list(self.hooks):
                    nursery.start_soon(self._deliver_loop, hook_id)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def close(self) -> None:
        self.store.close()

    # --- management (RPC) ----------------------------------------------------------------

    def register(self, access: TelemetryAccess, bits: int, url: str, condition: Any,
                 now_ms: int) -> tuple[Webhook, bytes]:
        """A new webhook for a checked live access; returns it and its secret."""
        self.policy.check_url(url)
        cond = parse_condition(condition, bits, self.public_resolution())
        owner = "0x" + access.requester.hex()
        if len(self.hooks) >= self.limits.max_webhooks:
            raise WebhookError("too_many_webhooks", f"{self.limits.max_webhooks} webhooks on "
                                                    "this node")
        if sum(1 for h in self.hooks.values() if h.owner == owner) >= self.limits.max_per_owner:
            raise WebhookError("too_many_webhooks", f"{self.limits.max_per_owner} webhooks "
                                                    "per owner")
        assert access.owner_at_grant is not None
        secret = secrets.token_bytes(32)
        hook = Webhook(id="0x" + secrets.token_hex(16), owner=owner,
                       vehicle_id=access.vehicle_id, url=url, secret="0x" + secret.hex(),
                       condition=cond, owner_at_grant="0x" + access.owner_at_grant.hex(),
                       via=access.via, created_ms=now_ms)
        self.hooks[hook.id] = hook
        self.store.save(hook)
        if self._nursery is not None:
            self._nursery.start_soon(self._deliver_loop, hook.id)
        return hook, secret

    def owned(self, hook_id: Any, owner: bytes) -> Webhook:
        hook = self.hooks.get(hook_id) if isinstance(hook_id, str) else None
        if hook is None:
            raise WebhookError("unknown_webhook", f"no webhook {hook_id!r} on this node")
        if hook.owner != "0x" + owner.hex():
            raise WebhookError("not_yours", "this webhook was registered by another address")
        return hook

    def of_owner(self, owner: bytes) -> list[Webhook]:
        return [h for h in self.hooks.values() if h.owner == "0x" + owner.hex()]

    def delete(self, hook: Webhook) -> None:
        self.hooks.pop(hook.id, None)
        self.store.delete(hook)
        self._poke(hook.id)

    def set_enabled(self, hook: Webhook, enabled: bool, reason: str | None = None) -> None:
        """Enable (after the caller re-checked the access) or disable with a reason."""
        hook.enabled = enabled
        hook.disabled_reason = None if enabled else reason
        self.store.save(hook)
        self._poke(hook.id)

    def deliveries(self, hook: Webhook, from_seq: int, limit: int) -> list[dict[str, Any]]:
        out = []
        for seq in range(max(from_seq, hook.first_kept), hook.next_seq):
            event = self.store.event(hook, seq)
            if event is None:
                continue
            out.append({"seq": seq, "status": _status(hook, seq, event),
                        "createdMs": event["createdMs"], "attempts": event["attempts"],
                        "lastStatus": event["lastStatus"], "lastError": event["lastError"],
                        "deliveredMs": event["deliveredMs"],
                        "body": json.loads(event["body"])})
            if len(out) >= limit:
                break
        return out

    def replay(self, hook: Webhook, from_seq: int) -> int:
        """Deliver again every kept event from ``from_seq`` on, in order; returns how
        many are queued now."""
        if not hook.first_kept <= from_seq <= hook.next_seq:
            raise WebhookError("replay_out_of_range", f"kept events are {hook.first_kept}.."
                                                      f"{hook.next_seq - 1}")
        hook.cursor = min(hook.cursor, from_seq)
        self.store.save(hook)
        self._poke(hook.id)
        return hook.next_seq - hook.cursor

    # --- events ------------------------------------------------------------------------

    def on_signals(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Signal listener: test each stored payload against the vehicle's webhooks.
        Never raises."""
        if not self.hooks:
            return
        try:
            for raw, payload in pairs:
                att = decode_attestation(raw)
                hooks = [h for h in self.hooks.values()
                         if h.vehicle_id == att.vehicle_id and h.enabled]
                if hooks:
                    rec = StoredSignals(compute_attestation_id(raw), att.vehicle_id,
                                        att.timestamp_ms, att, raw, payload)
                    for hook in hooks:
                        self._test(hook, rec)
        except Exception:
            log.exception("webhook evaluation failed")

    def _test(self, hook: Webhook, rec: StoredSignals) -> None:
        try:
            bits = recheck(self.head_state(), hook.access(), int(time.time() * 1000))
        except TelemetryAccessError as exc:
            self.set_enabled(hook, False, exc.code)
            return
        shown = filter_record(rec, bits, True)
        trigger = evaluate(hook.condition, shown, hook.state)
        if trigger is None:
            self.store.save(hook)  # the condition's state moved on
            return
        if hook.next_seq - hook.cursor >= MAX_LOG:
            self.set_enabled(hook, False, "backlog_full")
            return
        now_ms = int(time.time() * 1000)
        body = {"webhookId": hook.id, "seq": hook.next_seq, "vehicleId": hook.vehicle_id,
                "trigger": trigger, "createdMs": now_ms,
                "record": {"id": shown["id"], "timestampMs": rec.timestamp_ms,
                           "location": shown["location"], "cell": shown["cell"],
                           "signals": json_ready(shown["signals"])}}
        self.store.append(hook, {"body": json.dumps(body, separators=(",", ":")),
                                 "createdMs": now_ms, "attempts": 0, "lastStatus": None,
                                 "lastError": None, "deliveredMs": None})
        self.stats["events"] += 1
        self._poke(hook.id)

    def on_commit(self, *_: Any) -> None:
        """Commit listener: re-check every enabled webhook at the new head; disable those
        refused. Never raises; hops to the trio thread if a block is ever committed from
        another one."""
        if self._token is not None:
            try:
                trio.lowlevel.current_task()
            except RuntimeError:
                self._token.run_sync_soon(self.on_commit)
                return
        try:
            self._recheck_all()
        except Exception:
            log.exception("webhook re-check failed")

    def _recheck_all(self) -> None:
        if not self.hooks:
            return
        state = self.head_state()
        now_ms = int(time.time() * 1000)
        for hook in list(self.hooks.values()):
            if not hook.enabled:
                continue
            try:
                recheck(state, hook.access(), now_ms)
            except TelemetryAccessError as exc:
                log.info("webhook %s disabled: %s", hook.id, exc)
                self.set_enabled(hook, False, exc.code)

    # --- the delivery task ----------------------------------------------------------------

    def _poke(self, hook_id: str) -> None:
        event = self._wake.get(hook_id)
        if event is not None:
            event.set()

    async def _wait(self, hook_id: str, seconds: float | None = None) -> None:
        event = self._wake[hook_id] = trio.Event()
        if seconds is None:
            await event.wait()
        else:
            with trio.move_on_after(seconds):
                await event.wait()

    async def _deliver_loop(self, hook_id: str) -> None:
        """Deliver the webhook's events in order, one at a time, until it is deleted."""
        while True:
            hook = self.hooks.get(hook_id)
            if hook is None:
                return
            if not hook.enabled or hook.cursor >= hook.next_seq:
                await self._wait(hook_id)
                continue
            seq = hook.cursor
            event = self.store.event(hook, seq)
            if event is None:  # pruned under a replay cursor: skip it
                hook.cursor += 1
                continue
            status, error = await self._attempt(hook, event)
            if self.hooks.get(hook_id) is not hook:
                return  # deleted meanwhile
            event["attempts"] += 1
            event["lastStatus"], event["lastError"] = status, error
            ok = status is not None and 200 <= status < 300
            if ok:
                event["deliveredMs"] = int(time.time() * 1000)
            self.store.put_event(hook, seq, event)
            if ok:
                if hook.cursor == seq:  # a replay may have moved it back meanwhile
                    hook.cursor = seq + 1
                hook.delivered += 1
                self.stats["delivered"] += 1
                self.store.save(hook)
                continue
            hook.failed_attempts += 1
            self.stats["failed_attempts"] += 1
            self.store.save(hook)
            await self._wait(hook_id, backoff_ms(event["attempts"], self.limits) / 1000)

    async def _attempt(self, hook: Webhook, event: dict[str, Any]) -> tuple[int | None, str | None]:
        """One POST: (status, None), or (None, why it failed)."""
        body = event["body"].encode()
        now_ms = int(time.time() * 1000)
        headers = {SIGNATURE_HEADER: webhook_signature(bytes.fromhex(hook.secret[2:]), now_ms, body),
                   "X-Motus-Webhook": hook.id,
                   "X-Motus-Delivery": str(json.loads(event["body"])["seq"])}
        try:
            scheme, host, port, path = self.policy.check_url(hook.url)
            address = await self.policy.address_for(host, port)
            return await post(scheme, host, address, port, path, body, headers,
                              self.limits.timeout_seconds, self.tls), None
        except WebhookError as exc:
            return None, exc.code
        except TLSFailure as exc:
            return None, str(exc)
        except trio.TooSlowError:
            return None, "timeout"
        except (OSError, trio.BrokenResourceError, ssl.SSLError) as exc:
            return None, f"connection: {type(exc).__name__}"


def _status(hook: Webhook, seq: int, event: dict[str, Any]) -> str:
    if seq < hook.cursor and event["deliveredMs"] is not None:
        return "delivered"
    return "failing" if event["attempts"] else "pending"
