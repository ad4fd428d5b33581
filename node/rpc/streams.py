"""Live telemetry streams: ``eth_subscribe("motus_telemetry", {vehicleId, signals,
credential})`` over WebSocket (docs/developers.md, "Live streams").

A stream opens for a credential (node/access.py) that holds the live-data permission
(bit 5, ``live_data``) on the vehicle now; the owner holds every bit. Each signal payload
this node stores for the vehicle (from a device, a gateway or gossip) becomes one
notification, filtered by the bits held (node/signal_store.filter_record, as the newest
record). The access is re-checked at every block: a revocation, an expiry or a sale
ends the stream within one block with a last notification ``{"ended": code, "message"}``.

Backpressure: a stream never blocks the node nor closes its session. While the session
has :data:`STREAM_QUEUE_LIMIT` messages queued, notifications are dropped and counted,
per stream (``dropped`` in each notification that follows, so a client sees its gap)
and node-wide (``motus_rpc_telemetry_notifications_dropped``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node.access import AccessContext, Credential, live_access, recheck
from node.rpc import metrics
from node.rpc.credentials import json_ready
from node.signal_store import (
    StoredSignals,
    TelemetryAccess,
    TelemetryAccessError,
    filter_record,
)
from vm.attestation import compute_attestation_id, decode_attestation

if TYPE_CHECKING:
    from node.rpc.nodeapi import NodeAPI

log = logging.getLogger("motus.rpc")

# telemetry notifications are dropped while a session has this many messages queued (of
# its 1000), leaving room for answers and block notifications
STREAM_QUEUE_LIMIT = 500
MAX_STREAMS_PER_VEHICLE = 1_000  # streams of one vehicle on one node



@dataclass
class Stream:
    """One open telemetry stream: its access, the bits it holds at the head, counters."""

    vehicle_id: int
    access: TelemetryAccess
    names: frozenset[str] | None
    bits: int
    sent: int = 0
    dropped: int = 0
    session: Any = field(default=None, repr=False)
    sub_id: str = ""


class TelemetryStreams:
    """The open streams by vehicle; fed by the attestation service's signal listeners
    (:meth:`on_signals`) and by block commits (:meth:`on_commit`). Trio thread only."""

    def __init__(self, node: NodeAPI | None) -> None:
        self.node = node
        self.by_vehicle: dict[int, list[Stream]] = {}

    def open(self, session: Any, sub_id: str, credential: Credential,
             vehicle_id: int, names: frozenset[str] | None) -> Stream:
        """Check the credential (live access on ``vehicle_id``) and register a stream;
        raises TelemetryAccessError."""
        assert self.node is not None
        node = self.node
        state = node.app.head_state()
        ctx = AccessContext(node.chain_id, getattr(node, "peer_id", "") or "",
                            int(time.time() * 1000),
                            getattr(node.attestations, "request_nonces", None))
        if credential.kind == "request" and credential.request is not None \
                and credential.request.vehicle_id != vehicle_id:
            raise TelemetryAccessError("bad_request", "vehicleId differs from the "
                                                      "credential's vehicle")
        access = live_access(state, credential, ctx)
        if access.vehicle_id != vehicle_id:
            raise TelemetryAccessError("bad_request", "vehicleId differs from the "
                                                      "credential's vehicle")
        streams = self.by_vehicle.setdefault(vehicle_id, [])
        if len(streams) >= MAX_STREAMS_PER_VEHICLE:
            raise TelemetryAccessError("busy", f"{MAX_STREAMS_PER_VEHICLE} streams of this "
                                               "vehicle are open on this node")
        bits = recheck(state, access, ctx.now_ms)
        stream = Stream(vehicle_id, access, names, bits, session=session, sub_id=sub_id)
        streams.append(stream)
        return stream

    def close(self, stream: Stream) -> None:
        streams = self.by_vehicle.get(stream.vehicle_id, [])
        if stream in streams:
            streams.remove(stream)
        if not streams:
            self.by_vehicle.pop(stream.vehicle_id, None)

    def on_signals(self, pairs: list[tuple[bytes, bytes]]) -> None:
        """Signal listener: payloads just stored, ``(attestation, payload)``. Never
        raises, never blocks."""
        if not self.by_vehicle:
            return
        try:
            for raw, payload in pairs:
                att = decode_attestation(raw)
                streams = self.by_vehicle.get(att.vehicle_id)
                if not streams:
                    continue
                rec = StoredSignals(compute_attestation_id(raw), att.vehicle_id,
                                    att.timestamp_ms, att, raw, payload)
                shown: dict[int, dict[str, Any]] = {}  # one filtering per bit set
                for stream in list(streams):
                    self._deliver(stream, rec, shown)
        except Exception:  # a subscriber must never make storing a payload fail
            log.exception("telemetry stream notification failed")

    def _deliver(self, stream: Stream, rec: StoredSignals,
                 shown: dict[int, dict[str, Any]]) -> None:
        session = stream.session
        if session.closing or stream.sub_id not in session.subscriptions:
            self.close(stream)
            return
        if session.queued() >= STREAM_QUEUE_LIMIT:
            stream.dropped += 1
            metrics.RPC_TELEMETRY_DROPPED.inc()
            return
        doc = shown.get(stream.bits)
        if doc is None:
            doc = shown[stream.bits] = record_doc(rec, stream.bits)
        if stream.names is not None:
            doc = doc | {"signals": {k: v for k, v in doc["signals"].items()
                                     if k in stream.names}}
        if session.notify(stream.sub_id, doc | {"dropped": stream.dropped}):
            stream.sent += 1
            metrics.RPC_TELEMETRY_SENT.inc()

    def on_commit(self) -> None:
        """Re-check every stream's access at the new head; end those refused now."""
        if not self.by_vehicle or self.node is None:
            return
        state = self.node.app.head_state()
        now_ms = int(time.time() * 1000)
        for streams in list(self.by_vehicle.values()):
            for stream in list(streams):
                if stream.session.closing or stream.sub_id not in stream.session.subscriptions:
                    self.close(stream)
                    continue
                try:
                    stream.bits = recheck(state, stream.access, now_ms)
                except TelemetryAccessError as exc:
                    self.end(stream, exc.code, str(exc))

    def end(self, stream: Stream, code: str, message: str) -> None:
        """Tell the subscriber why its stream ends, then drop the subscription."""
        self.close(stream)
        session = stream.session
        if session.subscriptions.pop(stream.sub_id, None) is not None:
            metrics.RPC_SUBSCRIPTIONS.dec()
            session.notify(stream.sub_id, {"ended": code, "message": message,
                                           "dropped": stream.dropped})


def record_doc(rec: StoredSignals, bits: int) -> dict[str, Any]:
    """One live record as a holder of ``bits`` sees it (the newest record: current
    location opens its position), in the JSON of motus_getTelemetry's records."""
    shown = filter_record(rec, bits, True)
    return {"id": shown["id"], "vehicleId": rec.vehicle_id, "timestampMs": rec.timestamp_ms,
            "cell": shown["cell"], "location": shown["location"],
            "signals": json_ready(shown["signals"]), "payload": shown["payload"]}
