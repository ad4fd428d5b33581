"""One WebSocket session (after the HTTP upgrade): JSON-RPC requests in, answers and
subscription notifications out.

All frames are written by one writer task from a bounded queue, so answers and
notifications never interleave. Requests are answered in order. When the queue is
full a notification is not waited for: the session is closed with code 1008 and the
reason "subscriber too slow", and the queued messages are dropped.

Liveness: the server pings every ``ping_interval`` seconds; a session that hears no
frame at all from its client (a pong counts, as does any request) for ``idle_timeout``
seconds is closed with 1000 "idle timeout", subscriptions or not. Every browser and
the WebSocket libraries of web3.py (``websockets``) and ethers (``ws``) answer pings by
themselves, so a live subscriber is never cut. A message whose first bytes arrived
must be complete within ``message_timeout`` seconds, else the session is closed with
1008, so a message trickled in byte by byte cannot hold the session either.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)

from node.rpc import metrics
from node.rpc.subscriptions import Subscription

if TYPE_CHECKING:
    from node.rpc.dispatch import Dispatcher
    from node.rpc.subscriptions import SubscriptionHub

log = logging.getLogger("motus.rpc")

OUTGOING_QUEUE = 1_000  # messages waiting for a slow client before it is dropped
WRITE_TIMEOUT = 10.0  # seconds for one frame to leave; a client that stops reading is cut
PING_INTERVAL = 20.0  # defaults of rpc.ws_ping_interval_seconds, rpc.ws_idle_timeout_seconds
IDLE_TIMEOUT = 60.0
MESSAGE_TIMEOUT = 10.0  # rpc.request_timeout_seconds
RECEIVE_CHUNK = 64 * 1024
PING_PAYLOAD = b"motus"

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011


class WebSocketSession:
    def __init__(
        self,
        stream: trio.abc.Stream,
        client: str,
        dispatcher: Dispatcher,
        hub: SubscriptionHub,
        max_message_bytes: int,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        ping_interval: float = PING_INTERVAL,
        message_timeout: float = MESSAGE_TIMEOUT,
    ) -> None:
        self.stream = stream
        self.client = client
        self.dispatcher = dispatcher
        self.hub = hub
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.ping_interval = ping_interval
        self.message_timeout = message_timeout
        self.ws = Connection(ConnectionType.SERVER)
        self.subscriptions: dict[str, Subscription] = {}
        self.closing = False
        self._close: tuple[int, str] | None = None  # what the writer sends before hanging up
        self._queue_in, self._queue_out = trio.open_memory_channel[Event](OUTGOING_QUEUE)
        self._reader_scope = trio.CancelScope()
        self._pinger_scope = trio.CancelScope()

    # --- called by the subscription hub (trio thread, never blocks) ---------------------

    def notify(self, sub_id: str, result: Any) -> bool:
        """Queue a notification; False if the session is closing or was just closed
        because its queue was full."""
        doc = {
            "jsonrpc": "2.0",
            "method": "eth_subscription",
            "params": {"subscription": sub_id, "result": result},
        }
        return self._enqueue(TextMessage(json.dumps(doc, separators=(",", ":"))))

    def notify_json(self, sub_id: str, result_json: str) -> bool:
        """:meth:`notify` with the result already JSON (a fan-out encodes it once for
        every subscriber); ``sub_id`` is one this server made (hex)."""
        return self._enqueue(TextMessage(
            '{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"'
            + sub_id + '","result":' + result_json + "}}"))

    def _enqueue(self, event: Event) -> bool:
        if self.closing:
            return False
        try:
            self._queue_in.send_nowait(event)
            return True
        except trio.WouldBlock:
            metrics.RPC_SLOW_SUBSCRIBERS.inc()
            log.info("closing WebSocket of %s: outgoing queue full", self.client)
            self.close(
                CLOSE_POLICY, f"subscriber too slow: more than {OUTGOING_QUEUE} messages queued"
            )
            return False

    def close(self, code: int, reason: str) -> None:
        """Stop reading, drop what is queued, send a close frame with ``reason``, hang up."""
        if self.closing:
            return
        self.closing = True
        self._close = (code, reason[:120])  # a close reason must fit in 123 bytes
        self._reader_scope.cancel()
        self._pinger_scope.cancel()
        self._queue_in.close()  # wakes the writer if it waits for a message

    # --- lifecycle --------------------------------------------------------------------

    async def run(self, received: bytes) -> None:
        """Serve the session until either side closes; ``received`` are bytes that came
        after the upgrade request."""
        self.hub.attach(self)
        metrics.RPC_CONNECTIONS.labels("ws").inc()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                nursery.start_soon(self._pinger)
                with self._reader_scope:
                    await self._reader(received)
                self._pinger_scope.cancel()
                self.close(CLOSE_NORMAL, "")
        finally:
            self.hub.detach(self)
            metrics.RPC_CONNECTIONS.labels("ws").dec()
            await trio.aclose_forcefully(self.stream)

    async def _reader(self, received: bytes) -> None:
        buffer: list[bytes] = []  # fragments of the message being received
        size = 0
        heard = trio.current_time()  # when the client last sent anything
        message_due: float | None = None  # when the frame begun must be complete
        if received:
            self.ws.receive_data(received)
            message_due = heard + self.message_timeout
        while True:
            for event in self.ws.events():
                if isinstance(event, Message):
                    chunk = (
                        bytes(event.data)
                        if isinstance(event, BytesMessage)
                        else event.data.encode()
                    )
                    size += len(chunk)
                    if size > self.max_message_bytes:
                        metrics.RPC_REFUSED.labels("too_large").inc()
                        self.close(CLOSE_TOO_BIG, f"message exceeds {self.max_message_bytes} bytes")
                        return
                    buffer.append(chunk)
                    if event.message_finished:
                        message_due = None
                        body = b"".join(buffer)
                        buffer, size = [], 0
                        await self._answer(body)
                elif isinstance(event, Ping | Pong):
                    # A control frame between the fragments of a message must not
                    # restart that message's deadline: pings would hold it forever.
                    if not buffer:
                        message_due = None
                    if isinstance(event, Ping):
                        self._enqueue(event.response())
                elif isinstance(event, CloseConnection):
                    # answer the client's close (the writer sends it), then stop
                    self.closing = True
                    self._close = None
                    self._pinger_scope.cancel()
                    if self.ws.state == ConnectionState.REMOTE_CLOSING and self._has_room():
                        self._queue_in.send_nowait(event.response())
                    self._queue_in.close()
                    return
            due = heard + self.idle_timeout
            if message_due is not None:
                due = min(due, message_due)
            data = b""
            with trio.move_on_at(due) as waited:
                try:
                    data = await self.stream.receive_some(RECEIVE_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    log.debug("WebSocket of %s dropped (connection reset)", self.client)
                    return
            if waited.cancelled_caught:
                metrics.RPC_REFUSED.labels("timeout").inc()
                if message_due is not None and trio.current_time() >= message_due:
                    reason = f"message not complete within {self.message_timeout:g} s"
                    self.close(CLOSE_POLICY, reason)
                else:
                    reason = f"idle timeout: no frame for {self.idle_timeout:g} s"
                    self.close(CLOSE_NORMAL, reason)
                log.info("closing WebSocket of %s: %s", self.client, reason)
                return
            if not data:
                log.debug("WebSocket of %s dropped (no close frame)", self.client)
                return  # the client went away without a close frame
            heard = trio.current_time()
            if message_due is None:
                message_due = heard + self.message_timeout
            self.ws.receive_data(data)

    async def _pinger(self) -> None:
        """Ping the client every ``ping_interval`` so that a live client, which answers
        with a pong, never looks idle (its library answers by itself)."""
        with self._pinger_scope:
            while not self.closing:
                await trio.sleep(self.ping_interval)
                if self.ws.state == ConnectionState.OPEN:
                    self._enqueue(Ping(PING_PAYLOAD))

    def queued(self) -> int:
        """Messages waiting in the outgoing queue."""
        return self._queue_in.statistics().current_buffer_used

    def _has_room(self) -> bool:
        return self._queue_in.statistics().current_buffer_used < OUTGOING_QUEUE

    async def _answer(self, body: bytes) -> None:
        reply = await self.dispatcher.handle(body, transport="ws", client=self.client, session=self)
        if reply.body is not None and not self.closing:
            try:
                await self._queue_in.send(TextMessage(reply.body.decode()))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

    async def _writer(self) -> None:
        try:
            async for event in self._queue_out:
                if self._close is not None:
                    break  # closing for a reason: queued messages are dropped
                await self._write(event)
            if self._close is not None and self.ws.state == ConnectionState.OPEN:
                code, reason = self._close
                await self._write(CloseConnection(code=code, reason=reason))
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass  # the client is gone or stuck: hang up without ceremony
        finally:
            self._reader_scope.cancel()

    async def _write(self, event: Event) -> None:
        if self.ws.state != ConnectionState.OPEN and not isinstance(event, CloseConnection):
            return  # the client has closed: what was still queued for it is dropped
        data = self.ws.send(event)
        with trio.fail_after(WRITE_TIMEOUT):
            await self.stream.send_all(data)
