"""HTTP/1.1 on trio with h11: JSON-RPC on POST, ``GET /health``, ``GET /metrics``, the web
explorer's files on GET (``node.explorer``, docs/explorer.md), CORS, keep-alive, and the
upgrade to WebSocket on the same port.

Limits, each answered with a clear status instead of a hang or a crash:
- connections beyond ``rpc.max_connections``: 503 and close; beyond
  ``rpc.max_connections_per_client`` from one remote address: 429 and close (both
  with a ``-32005`` JSON-RPC body whose ``data.reason`` names the limit);
- bodies beyond ``rpc.max_request_bytes``: 413 (checked on Content-Length before
  reading, and while reading a chunked body);
- headers beyond 16 KiB: 431; a client that sends its headers slowly or idles on a
  keep-alive connection is cut after ``rpc.idle_timeout_seconds``, a body that trickles
  in after ``rpc.request_timeout_seconds`` (408), a client that does not read its
  answer after WRITE_TIMEOUT;
- calls beyond ``rpc.rate_limit_per_second`` per client address: 429 (dispatcher).

A client that goes away (reset, half-open socket, timeout) costs at most one log line,
at DEBUG; only a failure of the server itself is logged with its traceback.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import math
import os
import re
import socket
from collections import Counter
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11
import trio
import wsproto.utilities

from node import explorer
from node.health import health_document
from node.rpc import metrics
from node.rpc.errors import RPCError, limit_exceeded
from node.rpc.websocket import WebSocketSession

if TYPE_CHECKING:
    from node.config import RPCSection
    from node.rpc.dispatch import Dispatcher, Reply
    from node.rpc.nodeapi import NodeAPI
    from node.rpc.subscriptions import SubscriptionHub

log = logging.getLogger("motus.rpc")

WRITE_TIMEOUT = 10.0
SWEEP_INTERVAL = 0.25  # how often idle keep-alive connections are looked for (s), at most
MAX_HEADER_BYTES = 16 * 1024
MAX_REFUSING = 256  # connections answered 503/429 at once; more are closed unanswered
LINGER_TIMEOUT = 2.0  # after refusing a body, keep reading (and dropping) it this long
LINGER_MAX_BYTES = 64 * 1024 * 1024
RECEIVE_CHUNK = 64 * 1024
SERVER_HEADER = b"motus"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Any origin may call: the node holds no keys and serves no private data, and browser
# dapps need it (set rpc.host to a public address only behind a proxy, see docs/rpc.md).
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
]
PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"POST, GET, OPTIONS"),
    (b"access-control-allow-headers", b"content-type, authorization"),
    (b"access-control-max-age", b"600"),
]


# What a client's behaviour (reset, half-open socket, garbage, not reading) raises
# while we serve it: never a server failure, so never a traceback in the log.
CLIENT_FAILURES: tuple[type[BaseException], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    ConnectionError,
    h11.ProtocolError,
    wsproto.utilities.ProtocolError,
)


def is_client_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or every exception of a group) comes from the client's side."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_client_failure(e) for e in exc.exceptions)
    return isinstance(exc, CLIENT_FAILURES)


def client_of(address: str) -> str:
    """The client a remote address belongs to, for per-client limits: the IPv4 address
    itself, or the /64 prefix of an IPv6 one (a single host is commonly given a whole
    /64, so counting its addresses one by one would not limit it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and not ip.is_loopback:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address


def _json_error(err: RPCError) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": err.to_json()}).encode()


class HTTPServer:
    def __init__(
        self, node: NodeAPI, dispatcher: Dispatcher, hub: SubscriptionHub, config: RPCSection
    ) -> None:
        self.node = node
        self.dispatcher = dispatcher
        self.hub = hub
        self.config = config
        self.idle_timeout = float(config.idle_timeout_seconds)
        self.body_timeout = float(config.request_timeout_seconds)
        self.open_connections = 0
        self.refusing = 0  # connections being answered 503/429 right now
        self.connections_by_client: Counter[str] = Counter()  # open connections per address
        # Fast-path connections waiting for their next request -> when they are cut, swept
        # by ``sweep_idle`` while it runs (``sweeping``): moving a cancel scope's deadline
        # twice a request (trio re-sorts its deadlines each time) cost ~6 us of a ~30 us
        # exchange, a dict entry costs nothing.
        self.idle_deadlines: dict[trio.CancelScope, float] = {}
        self.sweeping = False
        self.sweep_interval = min(SWEEP_INTERVAL, self.idle_timeout / 8)

    async def sweep_idle(self) -> None:
        """Until cancelled: cut every fast-path connection whose wait for its next request
        passed ``rpc.idle_timeout_seconds`` (at most ``sweep_interval`` late). Without
        it, each connection keeps the deadline on its own cancel scope."""
        self.sweeping = True
        try:
            while True:
                await trio.sleep(self.sweep_interval)
                now = trio.current_time()
                for scope, deadline in list(self.idle_deadlines.items()):
                    if deadline <= now:
                        scope.cancel()
        finally:
            self.sweeping = False

    @property
    def max_connections_per_client(self) -> int:
        return min(self.config.max_connections_per_client, self.config.max_connections)

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one accepted TCP connection until it closes (the listener's handler)."""
        try:
            client = client_of(str(stream.socket.getpeername()[0]))
        except OSError:
            await trio.aclose_forcefully(stream)
            return
        # the global cap first: when the server is full, everyone hears the same 503
        if self.open_connections >= self.config.max_connections:
            metrics.RPC_REFUSED.labels("too_many_connections").inc()
            await self._refuse_connection(
                stream,
                503,
                "too_many_connections",
                f"too many connections (max_connections {self.config.max_connections})",
            )
            return
        if self.connections_by_client[client] >= self.max_connections_per_client:
            metrics.RPC_REFUSED.labels("too_many_connections_per_client").inc()
            await self._refuse_connection(
                stream,
                429,
                "too_many_connections_per_client",
                f"too many connections from {client} "
                f"(max_connections_per_client {self.max_connections_per_client})",
            )
            return
        self.open_connections += 1
        self.connections_by_client[client] += 1
        metrics.RPC_CONNECTIONS.labels("http").inc()
        try:
            await self._serve(stream, client)
        except Exception as exc:
            if is_client_failure(exc):
                log.debug("RPC connection from %s dropped: %s", client, _first_cause(exc))
            else:
                log.exception("RPC connection from %s failed", client)
        finally:
            self.open_connections -= 1
            self.connections_by_client[client] -= 1
            if self.connections_by_client[client] <= 0:
                del self.connections_by_client[client]  # the table only holds live clients
            metrics.RPC_CONNECTIONS.labels("http").dec()
            await trio.aclose_forcefully(stream)

    async def _refuse_connection(
        self, stream: trio.SocketStream, status: int, reason: str, message: str
    ) -> None:
        if self.refusing >= MAX_REFUSING:
            # a flood of connections: answering each (and lingering so that the answer
            # is read) would hold a socket and a task apiece, so the excess is just closed
            await trio.aclose_forcefully(stream)
            return
        self.refusing += 1
        try:
            await self._answer_refusal(stream, status, reason, message)
        finally:
            self.refusing -= 1

    async def _answer_refusal(
        self, stream: trio.SocketStream, status: int, reason: str, message: str
    ) -> None:
        # answered before reading the request, so without h11's bookkeeping
        body = _json_error(
            limit_exceeded(message, reason=reason)
        )
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
            % (status, HTTPStatus(status).phrase.encode(), len(body))
        )
        try:
            with trio.move_on_after(1):
                await stream.send_all(head + body)
            await self._linger(stream, timeout=1.0)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await trio.aclose_forcefully(stream)

    # --- one connection ---------------------------------------------------------------

    async def _serve(self, stream: trio.SocketStream, client: str) -> None:
        """Serve simple JSON-RPC POSTs on the fast path (:func:`simple_post`) as long as
        every request is one; the first that is not, and the rest of the connection,
        go through h11 (everything else: GET, chunked bodies, 100-continue, upgrades,
        bad requests, a request split across reads)."""
        buf = bytearray()
        waiting_since = trio.current_time()  # for the request being waited for
        # The fast path reads and writes a duplicate of the socket's descriptor
        # directly: an answer that fits the socket buffer (all of them, in practice)
        # costs one send(2) and no pass through trio's scheduler. The task still
        # yields once per request (waiting for it to be readable, or a checkpoint for
        # a pipelined one), so a client cannot hold the event loop.
        sock = stream.socket
        try:
            raw = socket.socket(sock.family, sock.type, fileno=os.dup(sock.fileno()))
        except OSError:  # out of descriptors: serve this connection through h11 alone
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
            await self._serve_h11(conn, stream, client, waiting_since + self.idle_timeout)
            return
        sweeping = self.sweeping
        scope = trio.CancelScope()
        try:
            # One cancel scope for the connection: cancelled by sweep_idle (or, without
            # it, by its own deadline) when the wait for a request passes the idle
            # timeout, by its deadline when an answer does not fit the socket buffer for
            # WRITE_TIMEOUT; never while the dispatcher runs. Either ends the connection.
            with scope:
                while True:
                    if not buf:
                        if sweeping:
                            self.idle_deadlines[scope] = waiting_since + self.idle_timeout
                        else:
                            scope.deadline = waiting_since + self.idle_timeout
                        await trio.lowlevel.wait_readable(sock)
                        if sweeping:
                            del self.idle_deadlines[scope]
                        try:
                            data = raw.recv(RECEIVE_CHUNK)
                        except BlockingIOError:  # woken without data
                            continue
                        if not data:
                            return
                        buf += data
                    else:
                        await trio.lowlevel.checkpoint()
                    request = simple_post(buf, self.config.max_request_bytes)
                    if request is None:
                        break
                    body, consumed = request
                    del buf[:consumed]
                    if not sweeping:
                        scope.deadline = math.inf
                    reply = await self.dispatcher.handle(body, transport="http", client=client)
                    answer = self._fast_answer(reply)
                    try:
                        sent = raw.send(answer)
                    except BlockingIOError:
                        sent = 0
                    if sent < len(answer):
                        scope.deadline = trio.current_time() + WRITE_TIMEOUT
                        await stream.send_all(answer[sent:])
                        scope.deadline = math.inf
                    waiting_since = trio.current_time()
        finally:
            self.idle_deadlines.pop(scope, None)
            raw.close()
        if scope.cancelled_caught:
            return
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        conn.receive_data(bytes(buf))
        # the idle timeout of the request h11 takes over runs from when it was awaited
        await self._serve_h11(conn, stream, client, waiting_since + self.idle_timeout)

    def _fast_answer(self, reply: Reply) -> bytes:
        """The bytes h11 would send for the dispatcher's reply (the same status line
        and headers, tests/node/test_rpc_fast_http.py compares them)."""
        if reply.body is None:
            return _HEAD_204
        if reply.refused == "rate_limited":
            head = _HEAD_429
        else:
            head = _HEAD_200
        return head % len(reply.body) + reply.body

    async def _serve_h11(
        self, conn: h11.Connection, stream: trio.SocketStream, client: str, first_deadline: float
    ) -> None:
        deadline = first_deadline
        while True:
            try:
                with trio.move_on_at(deadline) as idle:
                    event = await self._next_event(conn, stream)
                if idle.cancelled_caught:
                    if conn.their_state is not h11.IDLE:
                        metrics.RPC_REFUSED.labels("timeout").inc()
                    return
                if isinstance(event, h11.ConnectionClosed):
                    return
                assert isinstance(event, h11.Request), event
                keep_going = await self._route(conn, stream, event, client)
            except h11.RemoteProtocolError as exc:
                metrics.RPC_REFUSED.labels("bad_http").inc()
                status = exc.error_status_hint
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send(
                        conn,
                        stream,
                        status,
                        f"bad request: {exc}".encode(),
                        "text/plain",
                        close=True,
                    )
                return
            if not keep_going or conn.our_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
            deadline = trio.current_time() + self.idle_timeout

    async def _next_event(self, conn: h11.Connection, stream: trio.SocketStream) -> Any:
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await stream.receive_some(RECEIVE_CHUNK))

    async def _route(
        self, conn: h11.Connection, stream: trio.SocketStream, req: h11.Request, client: str
    ) -> bool:
        """Answer one request; False when the connection must end afterwards."""
        method = req.method.upper()
        path = req.target.split(b"?", 1)[0]
        headers = {k.lower(): v for k, v in req.headers}
        if method == b"GET" and headers.get(b"upgrade", b"").lower() == b"websocket":
            await self._upgrade(conn, stream, headers, client)
            return False
        if method == b"OPTIONS":
            await self._drain(conn, stream)
            await self._send(conn, stream, 204, b"", None, extra=PREFLIGHT_HEADERS)
            return True
        if method == b"GET" and path == b"/health":
            await self._drain(conn, stream)
            status, doc = health_document(self.node)
            await self._send(conn, stream, status, json.dumps(doc).encode(), "application/json")
            return True
        if method == b"GET" and path == b"/metrics":
            await self._drain(conn, stream)
            await self._send(conn, stream, 200, metrics.render(), metrics.CONTENT_TYPE)
            return True
        if method == b"GET" and self.config.explorer:
            if len(path) > explorer.MAX_PATH_BYTES:
                await self._drain(conn, stream)
                await self._send(conn, stream, 414, b"path too long", "text/plain")
                return True
            found = explorer.asset(path)
            if found is not None:
                await self._drain(conn, stream)
                await self._send(conn, stream, 200, found[0], found[1],
                                 extra=explorer.SECURITY_HEADERS)
                return True
        if method == b"HEAD":  # a HEAD answer has no body, whatever its status
            await self._drain(conn, stream)
            await self._send(
                conn, stream, 405, b"", None, extra=[(b"allow", b"POST, GET, OPTIONS")]
            )
            return True
        if method != b"POST":
            await self._drain(conn, stream)
            body = (b'{"error":"send JSON-RPC requests with POST; GET serves the explorer at /, '
                    b'/health and /metrics"}')
            await self._send(
                conn,
                stream,
                405,
                body,
                "application/json",
                extra=[(b"allow", b"POST, GET, OPTIONS")],
            )
            return True
        request = await self._read_body(conn, stream, headers)
        if request is None:
            return False
        reply = await self.dispatcher.handle(request, transport="http", client=client)
        if reply.body is None:
            await self._send(conn, stream, 204, b"", None)
            return True
        status = 429 if reply.refused == "rate_limited" else 200
        extra = [(b"retry-after", b"1")] if status == 429 else []
        await self._send(conn, stream, status, reply.body, "application/json", extra=extra)
        return True

    async def _read_body(
        self, conn: h11.Connection, stream: trio.SocketStream, headers: dict[bytes, bytes]
    ) -> bytes | None:
        """The whole body, or None after answering 413/408 (the connection then ends)."""
        limit = self.config.max_request_bytes
        declared = headers.get(b"content-length")
        if declared is not None and int(declared) > limit:
            await self._too_large(conn, stream, int(declared))
            return None
        if conn.they_are_waiting_for_100_continue:  # curl waits a second for this otherwise
            with trio.fail_after(WRITE_TIMEOUT):
                await stream.send_all(
                    conn.send(h11.InformationalResponse(status_code=100, headers=[]))
                )
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self.body_timeout) as slow:
            while True:
                event = await self._next_event(conn, stream)
                if isinstance(event, h11.EndOfMessage):
                    return b"".join(chunks)
                if isinstance(event, h11.ConnectionClosed):
                    return None
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > limit:
                        await self._too_large(conn, stream, size)
                        return None
                    chunks.append(event.data)
        if slow.cancelled_caught:
            metrics.RPC_REFUSED.labels("timeout").inc()
            await self._send(
                conn, stream, 408, b"request body not received in time", "text/plain", close=True
            )
        return None

    async def _too_large(self, conn: h11.Connection, stream: trio.SocketStream, size: int) -> None:
        metrics.RPC_REFUSED.labels("too_large").inc()
        err = limit_exceeded(
            f"request body of {size} bytes exceeds max_request_bytes "
            f"{self.config.max_request_bytes}",
            reason="too_large",
        )
        await self._send(conn, stream, 413, _json_error(err), "application/json", close=True)
        await self._linger(stream)

    async def _linger(self, stream: trio.SocketStream, timeout: float = LINGER_TIMEOUT) -> None:
        """Read and drop what the client still sends before closing: closing a socket with
        unread data resets the connection, and the client would lose our answer."""
        with trio.move_on_after(timeout):
            dropped = 0
            while dropped < LINGER_MAX_BYTES:
                data = await stream.receive_some(RECEIVE_CHUNK)
                if not data:
                    return
                dropped += len(data)

    async def _drain(self, conn: h11.Connection, stream: trio.SocketStream) -> None:
        """Skip a (small) body of a request we answer without reading it."""
        with trio.fail_after(self.body_timeout):
            size = 0
            while True:
                event = await self._next_event(conn, stream)
                if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return
                size += len(getattr(event, "data", b""))
                if size > self.config.max_request_bytes:
                    raise trio.BrokenResourceError("body too large")

    def _headers(
        self, content_type: str | None, length: int | None, *, close: bool = False
    ) -> list:
        headers = [(b"server", SERVER_HEADER), *CORS_HEADERS]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        if close:
            headers.append((b"connection", b"close"))
        return headers

    async def _send(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        status: int,
        body: bytes,
        content_type: str | None,
        *,
        extra: list | None = None,
        close: bool = False,
    ) -> None:
        length = None if status == 204 else len(body)
        headers = self._headers(content_type, length, close=close) + (extra or [])
        reason = HTTPStatus(status).phrase.encode()
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
        if body and status != 204:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        with trio.fail_after(WRITE_TIMEOUT):
            await stream.send_all(data)

    # --- WebSocket ----------------------------------------------------------------------

    async def _upgrade(
        self,
        conn: h11.Connection,
        stream: trio.SocketStream,
        headers: dict[bytes, bytes],
        client: str,
    ) -> None:
        key = headers.get(b"sec-websocket-key")
        if (
            b"upgrade" not in headers.get(b"connection", b"").lower()
            or headers.get(b"sec-websocket-version") != b"13"
            or not key
        ):
            await self._drain(conn, stream)
            await self._send(
                conn,
                stream,
                400,
                b"bad WebSocket upgrade request (RFC 6455, version 13)",
                "text/plain",
                close=True,
            )
            return
        await self._drain(conn, stream)  # h11 switches protocols only after the request's end
        accept = base64.b64encode(hashlib.sha1(key.strip() + WS_GUID).digest())
        data = conn.send(
            h11.InformationalResponse(
                status_code=101,
                reason=b"Switching Protocols",
                headers=[
                    (b"upgrade", b"websocket"),
                    (b"connection", b"Upgrade"),
                    (b"sec-websocket-accept", accept),
                    (b"server", SERVER_HEADER),
                ],
            )
        )
        with trio.fail_after(WRITE_TIMEOUT):
            await stream.send_all(data)
        received, _closed = conn.trailing_data
        session = WebSocketSession(
            stream,
            client,
            self.dispatcher,
            self.hub,
            self.config.max_request_bytes,
            idle_timeout=float(self.config.ws_idle_timeout_seconds),
            ping_interval=float(self.config.ws_ping_interval_seconds),
            message_timeout=self.body_timeout,
        )
        metrics.RPC_CONNECTIONS.labels("http").dec()  # counted as "ws" while the session runs
        try:
            await session.run(received)
        finally:
            metrics.RPC_CONNECTIONS.labels("http").inc()


# --- the fast path: a complete, simple HTTP/1.1 POST in the buffer -------------------------

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"POST (/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*) HTTP/1\.1\Z")
_HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?)?[ \t]*\Z")
_DIGITS = re.compile(rb"[0-9]{1,10}\Z")
# headers whose meaning the fast path leaves to h11
_NOT_SIMPLE = frozenset({b"transfer-encoding", b"expect", b"upgrade"})


def simple_post(buf: bytearray, max_body: int) -> tuple[bytes, int] | None:
    """(body, bytes consumed) when ``buf`` starts with a whole HTTP/1.1 POST that h11
    would accept and serve as a plain keep-alive request: a request line with an
    origin-form target, well-formed headers with ``host``, one ``content-length`` of at
    most ``max_body``, no transfer-encoding, expect or upgrade, ``connection`` absent
    or keep-alive, and the whole body present. None otherwise: the caller hands the
    connection to h11, which answers everything else as before."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    if _REQUEST_LINE.match(lines[0]) is None:
        return None
    length = None
    host = False
    for line in lines[1:]:
        m = _HEADER_LINE.match(line)
        if m is None:
            return None
        name = m.group(1).lower()
        if name == b"content-length":
            if length is not None or m.group(2) is None or _DIGITS.match(m.group(2)) is None:
                return None
            length = int(m.group(2))
        elif name == b"host":
            if host:
                return None
            host = True
        elif name == b"connection":
            if (m.group(2) or b"").lower() != b"keep-alive":
                return None
        elif name in _NOT_SIMPLE:
            return None
    if length is None or not host or length > max_body:
        return None
    start = end + 4
    if len(buf) < start + length:
        return None
    return bytes(buf[start:start + length]), start + length


def _response_head(status: int, content_type: bytes | None, with_length: bool) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode()),
             b"server: " + SERVER_HEADER, *(k + b": " + v for k, v in CORS_HEADERS)]
    if content_type is not None:
        lines.append(b"content-type: " + content_type)
    if with_length:
        lines.append(b"content-length: %d")
    if status == 429:
        lines.append(b"retry-after: 1")
    return b"\r\n".join(lines) + b"\r\n\r\n"  # "%d": the body's length


_HEAD_200 = _response_head(200, b"application/json", True)
_HEAD_429 = _response_head(429, b"application/json", True)
_HEAD_204 = _response_head(204, None, False)


def _first_cause(exc: BaseException) -> str:
    """A one-line account of why a client's connection failed."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"[:200]
