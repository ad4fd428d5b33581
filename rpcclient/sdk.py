"""The Motus developer SDK: everything a developer does with a node's data API, from
Python, synchronously (docs/developers.md, "SDK").

    from rpcclient.sdk import Motus

    motus = Motus("http://127.0.0.1:8545", private_key=key)   # the developer's key
    for car in motus.shared_vehicles(owner):                   # what a user shared
        print(car["vehicleId"], car["bitNames"])
    latest = motus.latest(vid, ["soc"])
    for record in motus.records(vid, from_ms, to_ms):          # every page, in order
        ...
    hourly = motus.aggregate(vid, 3_600_000, ["soc"], from_ms, to_ms)
    gaps = motus.coverage(vid, from_ms, to_ms)
    for record in motus.stream(vid, ["soc", "speed_kmh"]):     # live, over WebSocket
        ...
    hook = motus.register_webhook(vid, url, {"type": "threshold", "signal": "soc",
                                             "op": "<", "value": 20})

Every call carries a credential: a fresh EIP-191 signed request for the node it talks
to (its peer id and chain id are asked once), or an access token set with
:meth:`Motus.use_token`. A refusal raises :class:`MotusError` with the node's stable
``code`` (``denied``, ``revoked``, ``period_mismatch``...). Dependencies: the standard
library, ``eth-account`` (signing) and ``wsproto`` (streams), both already the node's.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from codec.developer import NONCE_BYTES, request_message, verify_webhook_signature
from rpcclient import RPCError, rpc_call

DAY_MS = 86_400_000
MAX_RANGE_MS = 31 * DAY_MS  # the node's bound on one request's range

__all__ = ["Motus", "MotusError", "verify_webhook_signature"]


class MotusError(Exception):
    """A refusal with the node's stable ``code`` (or ``unreachable`` / ``rpc_error``)."""

    def __init__(self, code: str, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.data = data


class Motus:
    """A developer's handle on one node."""

    def __init__(self, url: str, private_key: bytes | str | None = None, *,
                 timeout: float = 10.0) -> None:
        from eth_account import Account

        self.url = url
        self.timeout = timeout
        self._account = Account.from_key(private_key) if private_key is not None else None
        self._token: str | None = None
        self._node: tuple[int, str] | None = None

    @property
    def address(self) -> str | None:
        return None if self._account is None else self._account.address

    # --- plumbing -------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        try:
            return rpc_call(self.url, method, list(params), timeout=self.timeout)
        except RPCError as exc:
            if exc.code is None:
                raise MotusError("unreachable", exc.message) from None
            data = exc.data if isinstance(exc.data, dict) else {}
            raise MotusError(data.get("code") or data.get("reason") or "rpc_error",
                             exc.message, exc.data) from None

    def node(self) -> tuple[int, str]:
        """(chain id, peer id) of the node: the audience of signed requests."""
        if self._node is None:
            chain_id = int(self.call("eth_chainId"), 16)
            self._node = (chain_id, self.call("motus_nodeStatus")["peerId"])
        return self._node

    def use_token(self, token: str | None) -> None:
        """Present an access token (0x-hex) instead of signing each request."""
        self._token = token

    def credential(self, vehicle_id: int, from_ms: int | None = None,
                   to_ms: int | None = None) -> dict[str, Any]:
        """A credential for one call about ``vehicle_id`` over ``[from_ms, to_ms]``
        (default: the last 31 days up to a minute from now)."""
        if self._token is not None:
            return {"token": self._token}
        if self._account is None:
            raise MotusError("bad_request", "no private key and no token")
        from eth_account.messages import encode_defunct

        now = int(time.time() * 1000)
        to_ms = now + 60_000 if to_ms is None else to_ms
        from_ms = max(0, to_ms - MAX_RANGE_MS + 1) if from_ms is None else from_ms
        chain_id, node_id = self.node()
        nonce = secrets.token_bytes(NONCE_BYTES)
        text = request_message(chain_id, vehicle_id, from_ms, to_ms, now, node_id, nonce)
        signature = self._account.sign_message(encode_defunct(text=text)).signature
        return {"request": {"vehicleId": vehicle_id, "fromMs": from_ms, "toMs": to_ms,
                            "timestampMs": now, "chainId": chain_id, "nodeId": node_id,
                            "nonce": "0x" + nonce.hex(), "signature": "0x" + bytes(signature).hex()}}

    # --- identity ---------------------------------------------------------------------

    def shared_vehicles(self, owner: str) -> list[dict[str, Any]]:
        """The vehicles ``owner`` holds and shares with this developer now: ``[{vehicleId,
        bits, bitNames, expiry, vehicle}]``."""
        me = (self.address or "").lower()
        out = []
        for vid in self.call("motus_vehiclesOf", owner):
            for grant in self.call("motus_getPermissions", vid) or []:
                if grant["grantee"].lower() == me and grant["active"]:
                    out.append({"vehicleId": vid, "bits": grant["bits"],
                                "bitNames": grant["bitNames"], "expiry": int(grant["expiry"]),
                                "vehicle": self.call("motus_getVehicle", vid)})
        return out

    # --- the query API ------------------------------------------------------------------

    def _scoped(self, vehicle_id: int, from_ms: int | None, to_ms: int | None
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        options: dict[str, Any] = {}
        if self._token is not None:
            options["vehicleId"] = vehicle_id
            if from_ms is not None:
                options["fromMs"] = from_ms
            if to_ms is not None:
                options["toMs"] = to_ms
        return self.credential(vehicle_id, from_ms, to_ms), options

    def telemetry(self, vehicle_id: int, from_ms: int | None = None,
                  to_ms: int | None = None) -> dict[str, Any]:
        """``motus_getTelemetry``: records, periods, coverage (at most 10,000 records)."""
        return self.call("motus_getTelemetry", self.credential(vehicle_id, from_ms, to_ms))

    def latest(self, vehicle_id: int, signals: list[str] | None = None) -> dict[str, Any]:
        """The newest visible value of each signal: ``{name: {value, timestampMs, id}}``."""
        credential, options = self._scoped(vehicle_id, None, None)
        if signals is not None:
            options["signals"] = signals
        return self.call("motus_getLatestSignals", credential, options)["signals"]

    def records(self, vehicle_id: int, from_ms: int, to_ms: int,
                signals: list[str] | None = None, page_size: int = 500
                ) -> Iterator[dict[str, Any]]:
        """Every record in the range, oldest first, page by page (a new credential per
        page: a signed request is answered once)."""
        cursor = None
        while True:
            credential, options = self._scoped(vehicle_id, from_ms, to_ms)
            options |= {"limit": page_size}
            if signals is not None:
                options["signals"] = signals
            if cursor is not None:
                options["cursor"] = cursor
            page = self.call("motus_querySignals", credential, options)
            yield from page["records"]
            cursor = page["nextCursor"]
            if cursor is None:
                return

    def aggregate(self, vehicle_id: int, interval_ms: int, signals: list[str] | None = None,
                  from_ms: int | None = None, to_ms: int | None = None) -> list[dict[str, Any]]:
        """``[{fromMs, toMs, signals: {name: {min, max, avg, last, count}}}]``."""
        credential, options = self._scoped(vehicle_id, from_ms, to_ms)
        options["intervalMs"] = interval_ms
        if signals is not None:
            options["signals"] = signals
        return self.call("motus_aggregateSignals", credential, options)["intervals"]

    def coverage(self, vehicle_id: int, from_ms: int | None = None, to_ms: int | None = None,
                 interval_ms: int | None = None) -> dict[str, Any]:
        """Which intervals the node holds, lacks, pruned, or has no data for."""
        credential, options = self._scoped(vehicle_id, from_ms, to_ms)
        if interval_ms is not None:
            options["intervalMs"] = interval_ms
        return self.call("motus_getCoverage", credential, options)

    def catalogue(self, vehicle_id: int | None = None) -> dict[str, Any]:
        """The signals with their units (and, for a vehicle, which it carries)."""
        if vehicle_id is None:
            return self.call("motus_getSignalCatalogue")
        return self.call("motus_getSignalCatalogue", self.credential(vehicle_id))

    # --- live streams ---------------------------------------------------------------------

    def stream(self, vehicle_id: int, signals: list[str] | None = None,
               timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Live records of the vehicle as the node stores them, until the stream ends
        (then :class:`MotusError` with the reason: ``revoked``...) or ``timeout``
        seconds pass without one (then the iterator just ends)."""
        options: dict[str, Any] = {"vehicleId": vehicle_id,
                                   "credential": self.credential(vehicle_id)}
        if signals is not None:
            options["signals"] = signals
        with _WebSocket(self.url, self.timeout) as ws:
            ws.send({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                     "params": ["motus_telemetry", options]})
            answer = ws.receive(self.timeout)
            if answer is None or "error" in answer:
                error = (answer or {}).get("error", {"message": "no answer"})
                data = error.get("data") or {}
                raise MotusError(data.get("code", "rpc_error"), error.get("message", ""), data)
            while True:
                message = ws.receive(timeout)
                if message is None:
                    return
                result = message.get("params", {}).get("result", {})
                if "ended" in result:
                    raise MotusError(result["ended"], result.get("message", "stream ended"))
                yield result

    # --- webhooks ---------------------------------------------------------------------------

    def register_webhook(self, vehicle_id: int, url: str,
                         condition: dict[str, Any]) -> dict[str, Any]:
        """Register; the answer's ``secret`` keys every delivery's signature (keep it)."""
        return self.call("motus_registerWebhook", self.credential(vehicle_id),
                         {"url": url, "condition": condition})

    def webhooks(self, vehicle_id: int) -> list[dict[str, Any]]:
        """This developer's webhooks on the node (any vehicle; the credential names one)."""
        return self.call("motus_getWebhooks", self.credential(vehicle_id))

    def deliveries(self, vehicle_id: int, webhook_id: str, from_seq: int | None = None,
                   limit: int = 100) -> dict[str, Any]:
        options: dict[str, Any] = {"limit": limit}
        if from_seq is not None:
            options["fromSeq"] = from_seq
        return self.call("motus_getWebhookDeliveries", self.credential(vehicle_id),
                         webhook_id, options)

    def replay(self, vehicle_id: int, webhook_id: str, from_seq: int) -> dict[str, Any]:
        return self.call("motus_replayWebhook", self.credential(vehicle_id), webhook_id,
                         from_seq)

    def set_webhook_enabled(self, vehicle_id: int, webhook_id: str,
                            enabled: bool) -> dict[str, Any]:
        return self.call("motus_setWebhookEnabled", self.credential(vehicle_id), webhook_id,
                         enabled)

    def delete_webhook(self, vehicle_id: int, webhook_id: str) -> bool:
        return self.call("motus_deleteWebhook", self.credential(vehicle_id), webhook_id)


class _WebSocket:
    """A minimal blocking WebSocket client (ws:// only) on wsproto: JSON text messages;
    answers the server's pings."""

    def __init__(self, url: str, timeout: float) -> None:
        from wsproto import WSConnection
        from wsproto.connection import ConnectionType
        from wsproto.events import AcceptConnection, Request

        parts = urlsplit(url)
        if parts.scheme not in ("http", "ws"):
            raise MotusError("bad_request", "streams need an http:// or ws:// node URL")
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=f"{host}:{port}", target=parts.path or "/")))
        self._pending: list[Any] = []
        self._text = ""
        deadline = time.monotonic() + timeout
        while not any(isinstance(e, AcceptConnection) for e in self._pending):
            if time.monotonic() > deadline:
                raise MotusError("unreachable", "WebSocket upgrade timed out")
            self._read(timeout)
        self._pending = [e for e in self._pending if not isinstance(e, AcceptConnection)]

    def __enter__(self) -> _WebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        from wsproto.events import CloseConnection

        try:
            self.sock.sendall(self.ws.send(CloseConnection(code=1000)))
        except Exception:  # noqa: BLE001 - closing a connection that may be gone
            pass
        self.sock.close()

    def _read(self, timeout: float | None) -> bool:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        if not data:
            raise MotusError("unreachable", "the node closed the stream")
        self.ws.receive_data(data)
        self._pending.extend(self.ws.events())
        return True

    def send(self, doc: dict[str, Any]) -> None:
        from wsproto.events import TextMessage

        self.sock.sendall(self.ws.send(TextMessage(data=json.dumps(doc))))

    def receive(self, timeout: float | None) -> dict[str, Any] | None:
        """The next JSON message; None after ``timeout`` seconds without one."""
        from wsproto.events import CloseConnection, Ping, TextMessage

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self._pending:
                event = self._pending.pop(0)
                if isinstance(event, Ping):
                    self.sock.sendall(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise MotusError("unreachable", f"stream closed: {event.reason}")
                elif isinstance(event, TextMessage):
                    self._text += event.data
                    if event.message_finished:
                        text, self._text = self._text, ""
                        return json.loads(text)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if not self._read(left):
                return None
