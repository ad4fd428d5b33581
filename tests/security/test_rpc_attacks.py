"""Attacks on the JSON-RPC server of a real node process, by one client with no stake and
no funds, and the limits that stop them (docs/rpc.md, "Limits and security defaults").

Every client here is on loopback. Linux routes all of 127.0.0.0/8 to lo, so a socket
bound to 127.0.0.2 before connecting is a *second* client address to the node: the
hog is 127.0.0.1 and the honest client 127.0.0.2, as two machines would be.

- Connection hog: one address opens 300 connections that send headers slowly, bodies
  slowly, or WebSocket sessions holding a subscription. It gets
  ``rpc.max_connections_per_client`` of them (default 64 of 256), the rest are refused
  with 429 and a ``-32005`` body; the honest address is served at once.
- Subscriptions: at most ``rpc.max_subscriptions_per_client`` over all of an address's
  sessions; others still subscribe.
- Idle and trickle: a WebSocket session that never answers the server's pings is closed
  even with a subscription; a client library that answers them keeps its session; a
  message trickled in is cut after ``rpc.request_timeout_seconds``.
- Log flood: abrupt WebSocket disconnects cost at most one line each, no traceback.
- Parameter fuzz: thousands of hostile calls (tests/security/rpc_fuzz.py) over HTTP and
  WebSocket: never ``-32603``, and the node keeps making and serving blocks.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import struct
import time
from collections import deque
from typing import Any

import pytest
from websockets.sync.client import connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from node.rpc.errors import INTERNAL_ERROR, LIMIT_EXCEEDED
from node.rpc.registry import build_method_table
from tests.fixtures.rpc_node import start_node
from tests.procs import NodeProcess
from tests.security.rpc_fuzz import all_cases

LONG = os.environ.get("MOTUS_LONG_FUZZ") == "1"
pytestmark = [
    pytest.mark.timeout(3600 if LONG else 120),
    pytest.mark.xdist_group("rpc_attacks"),
    pytest.mark.slow,
]

HOG = "127.0.0.1"
HONEST = "127.0.0.2"
FUZZER = "127.0.0.3"
# each test that fills an address's quota uses its own, so that it does not wait for the
# server to notice that the previous test's sockets are gone
HOGS = {"slow_headers": "127.0.0.10", "slow_body": "127.0.0.11", "websocket": "127.0.0.12",
        "subscriptions": "127.0.0.13", "disconnects": "127.0.0.14"}
PER_CLIENT = 64  # the default rpc.max_connections_per_client, kept on this node
SUBSCRIPTIONS_PER_CLIENT = 50
WS_PING = 1
WS_IDLE = 3
IDLE_TIMEOUT = 4
REQUEST_TIMEOUT = 2
HONEST_BOUND = 2.0  # seconds within which the honest client must be answered
FUZZ_CALLS = None if LONG else 4000  # None: every case (~360,000 calls)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    proc = start_node(
        tmp_path_factory.mktemp("attacks"),
        max_subscriptions_per_client=SUBSCRIPTIONS_PER_CLIENT,
        idle_timeout_seconds=IDLE_TIMEOUT,
        request_timeout_seconds=REQUEST_TIMEOUT,
        ws_ping_interval_seconds=WS_PING,
        ws_idle_timeout_seconds=WS_IDLE,
        rate_limit_per_second=0,  # the fuzz sends thousands of calls; rates are not tested here
    )
    proc.wait_height(2)
    yield proc
    proc.stop()


# --- clients -----------------------------------------------------------------------------


def dial(node: NodeProcess, source: str, timeout: float = 5) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", node.rpc_port), timeout=timeout, source_address=(source, 0)
    )


def post(node: NodeProcess, source: str, doc: Any, timeout: float = 5) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(
        "127.0.0.1", node.rpc_port, timeout=timeout, source_address=(source, 0)
    )
    try:
        conn.request("POST", "/", json.dumps(doc), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def honest_call_seconds(node: NodeProcess) -> float:
    """How long the honest address waits for eth_blockNumber (it must succeed)."""
    started = time.monotonic()
    status, doc = post(node, HONEST, {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"})
    assert status == 200 and int(doc["result"], 16) >= 2, doc
    return time.monotonic() - started


class Refused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade refused with {status}: {body[:200]!r}")
        self.status, self.body = status, body


class RawWebSocket:
    """A WebSocket client that does only what it is told: it never answers pings, so
    it behaves like a hostile or dead client."""

    def __init__(self, node: NodeProcess, source: str = HOG, timeout: float = 5) -> None:
        self.sock = dial(node, source, timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.events: deque[Event] = deque()
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target="/")))
        first = self.next_event()
        if isinstance(first, RejectConnection):
            body = b""
            while True:
                event = self.next_event()
                if isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        break
            self.sock.close()
            raise Refused(first.status_code, body)
        assert isinstance(first, AcceptConnection), first

    def next_event(self) -> Event:
        while not self.events:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.ws.receive_data(data)
            self.events.extend(self.ws.events())
        return self.events.popleft()

    def send(self, doc: Any) -> None:
        self.sock.sendall(self.ws.send(TextMessage(json.dumps(doc))))

    def call(self, method: str, params: Any = None, req_id: int = 1) -> dict[str, Any]:
        return self.request({"jsonrpc": "2.0", "id": req_id, "method": method,
                             "params": [] if params is None else params})

    def request(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its answer (notifications and pings are skipped)."""
        self.send(doc)
        while True:
            event = self.next_event()
            if isinstance(event, TextMessage):
                answer = json.loads(event.data)
                if "id" in answer and answer["id"] == doc["id"]:
                    return answer
            elif isinstance(event, CloseConnection):
                raise ConnectionError(f"closed: {event.code} {event.reason}")

    def wait_close(self, timeout: float) -> CloseConnection:
        self.sock.settimeout(timeout)
        while True:
            event = self.next_event()
            if isinstance(event, CloseConnection):
                return event

    def reset(self) -> None:
        """Vanish without a close frame: RST, as a crashed client or a cut cable."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def _wait_until_free(node: NodeProcess, source: str = HOG, timeout: float = 10) -> None:
    """Wait until ``source`` is served again (the server saw the hog's sockets close)."""
    deadline = time.monotonic() + timeout
    while True:
        status, _ = post(node, source, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
        if status == 200:
            return
        assert time.monotonic() < deadline, f"{source} still refused ({status})"
        time.sleep(0.2)


def _read_until_closed(s: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    s.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _assert_refused_per_client(status: int, doc: Any) -> None:
    assert status == 429, (status, doc)
    assert doc["error"]["code"] == LIMIT_EXCEEDED
    assert doc["error"]["data"] == {"reason": "too_many_connections_per_client"}
    assert "max_connections_per_client" in doc["error"]["message"]


# --- connection hog --------------------------------------------------------------------


SLOW_HEADERS = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
SLOW_BODY = (
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n{\"jsonrpc\":"
)


@pytest.mark.parametrize("kind", ["slow_headers", "slow_body"])
def test_slow_connection_hog_leaves_others_served(node: NodeProcess, kind: str) -> None:
    hog = HOGS[kind]
    held = []
    started = time.monotonic()
    try:
        for _ in range(300):
            s = dial(node, hog)
            s.sendall(SLOW_HEADERS if kind == "slow_headers" else SLOW_BODY)
            held.append(s)
        time.sleep(0.5)  # the server has accepted (or refused) them all
        took = honest_call_seconds(node)
        assert took < HONEST_BOUND
        status, doc = post(node, hog, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
        _assert_refused_per_client(status, doc)
        print(f"honest client served in {took * 1000:.1f} ms during a 300-connection {kind} hog")
        # the hog's own connections: 64 held until the server's timeout, the rest refused
        answers = [_read_until_closed(s, timeout=IDLE_TIMEOUT + 5) for s in held]
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 429")]
        cut = [a for a in answers if not a.startswith(b"HTTP/1.1 429")]
        assert len(refused) == 300 - PER_CLIENT and len(cut) == PER_CLIENT
        timeout = IDLE_TIMEOUT if kind == "slow_headers" else REQUEST_TIMEOUT
        expected = b"" if kind == "slow_headers" else b"HTTP/1.1 408"
        assert all(a.startswith(expected) for a in cut), {a[:20] for a in cut}
        held_for = time.monotonic() - started
        assert held_for < timeout + 3, held_for
        print(f"the hog's {PER_CLIENT} slow connections were cut after {held_for:.1f} s")
    finally:
        for s in held:
            s.close()
    _wait_until_free(node, hog)


def test_websocket_hog_with_subscriptions_leaves_others_served(node: NodeProcess) -> None:
    hog = HOGS["websocket"]
    sessions: list[RawWebSocket] = []
    try:
        for i in range(PER_CLIENT):
            ws = RawWebSocket(node, hog)
            sessions.append(ws)
            if i < SUBSCRIPTIONS_PER_CLIENT:
                assert ws.call("eth_subscribe", ["newHeads"])["result"].startswith("0x")
        took = honest_call_seconds(node)
        assert took < HONEST_BOUND
        print(f"honest client served in {took * 1000:.1f} ms during a WebSocket hog")
        with pytest.raises(Refused) as refused:
            RawWebSocket(node, hog)
        _assert_refused_per_client(refused.value.status, json.loads(refused.value.body))
        honest = RawWebSocket(node, HONEST)  # and may subscribe too
        assert honest.call("eth_subscribe", ["newHeads"])["result"].startswith("0x")
        honest.close()
    finally:
        for ws in sessions:
            ws.close()
    _wait_until_free(node, hog)


def test_subscriptions_are_capped_per_client(node: NodeProcess) -> None:
    hog = HOGS["subscriptions"]
    first, second = RawWebSocket(node, hog), RawWebSocket(node, hog)
    other = RawWebSocket(node, HONEST)
    try:
        ids = []
        for i in range(SUBSCRIPTIONS_PER_CLIENT):
            ws = first if i % 2 else second
            ids.append((ws, ws.call("eth_subscribe", ["newHeads"], req_id=i + 10)["result"]))
        over = second.call("eth_subscribe", ["logs", {}], req_id=99)
        assert over["error"]["code"] == LIMIT_EXCEEDED, over
        assert over["error"]["data"] == {"reason": "too_many_subscriptions_per_client"}
        assert "max_subscriptions_per_client" in over["error"]["message"]
        assert "result" in other.call("eth_subscribe", ["newHeads"])  # another address
        ws, sub_id = ids[0]
        assert ws.call("eth_unsubscribe", [sub_id], req_id=100)["result"] is True
        assert "result" in first.call("eth_subscribe", ["newHeads"], req_id=101)
    finally:
        for ws in (first, second, other):
            ws.close()


# --- idle and trickle --------------------------------------------------------------------


def test_websocket_that_ignores_pings_is_closed_despite_subscription(node: NodeProcess) -> None:
    ws = RawWebSocket(node, HOG)
    try:
        assert "result" in ws.call("eth_subscribe", ["newHeads"])
        started = time.monotonic()
        close = ws.wait_close(timeout=WS_IDLE + 5)
        took = time.monotonic() - started
        assert close.code == 1000 and "idle timeout" in close.reason
        assert WS_IDLE - 1 <= took <= WS_IDLE + 3, took
    finally:
        ws.close()


def test_subscriber_that_answers_pings_is_kept(node: NodeProcess) -> None:
    """The websockets library (web3.py's WebSocketProvider) answers pings by itself;
    with its own keepalive pings off, only the answers to ours keep it alive."""
    url = f"ws://127.0.0.1:{node.rpc_port}"
    with connect(url, ping_interval=None, open_timeout=5, source_address=(HONEST, 0)) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                            "params": ["newHeads"]}))
        heads = 0
        deadline = time.monotonic() + 2 * WS_IDLE
        while time.monotonic() < deadline:
            doc = json.loads(ws.recv(timeout=5))
            heads += doc.get("method") == "eth_subscription"
        assert heads >= 5  # still subscribed after two idle timeouts


def test_trickled_websocket_message_is_cut(node: NodeProcess) -> None:
    ws = RawWebSocket(node, HOG)
    payload = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"})
    frame = ws.ws.send(TextMessage(payload))
    ws.sock.settimeout(0.3)
    started = time.monotonic()
    cut: CloseConnection | None = None
    try:
        for byte in frame:  # one byte every 0.3 s: 20 s for the whole message
            try:
                ws.sock.sendall(bytes([byte]))
                data = ws.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            ws.ws.receive_data(data or None)
            cut = next((e for e in ws.ws.events() if isinstance(e, CloseConnection)), None)
            if cut is not None or not data:
                break
        took = time.monotonic() - started
        assert cut is not None and cut.code == 1008, cut
        assert "message not complete" in cut.reason
        assert took <= REQUEST_TIMEOUT + 2, took
    finally:
        ws.close()


def test_pings_between_fragments_do_not_hold_a_message_open(node: NodeProcess) -> None:
    """The first fragment of a message, then only pings: the message deadline still
    runs (before, each ping restarted it, so a client could hold 5 MiB half-sent)."""
    ws = RawWebSocket(node, HOG)
    ws.sock.sendall(ws.ws.send(TextMessage('{"jsonrpc": "2.0", ', message_finished=False)))
    ws.sock.settimeout(0.5)
    started = time.monotonic()
    cut: CloseConnection | None = None
    try:
        while cut is None and time.monotonic() - started < REQUEST_TIMEOUT + 5:
            try:
                ws.sock.sendall(ws.ws.send(Ping()))
                data = ws.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            ws.ws.receive_data(data)
            cut = next((e for e in ws.ws.events() if isinstance(e, CloseConnection)), None)
        took = time.monotonic() - started
        assert cut is not None and cut.code == 1008, cut
        assert took <= REQUEST_TIMEOUT + 2, took
    finally:
        ws.close()


# --- log hygiene ---------------------------------------------------------------------------


def test_abrupt_disconnects_do_not_flood_the_log(node: NodeProcess) -> None:
    hog = HOGS["disconnects"]
    before = node.log_path.stat().st_size
    for i in range(200):
        ws = RawWebSocket(node, hog)
        if i % 2:
            assert "result" in ws.call("eth_subscribe", ["newHeads"])
        else:  # a request in flight when it vanishes
            ws.send({"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber",
                     "params": ["latest", True]})
        ws.reset()
    for _ in range(5):  # a plain HTTP client vanishing mid-request
        s = dial(node, hog)
        s.sendall(SLOW_BODY)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    _wait_until_free(node, hog)
    time.sleep(0.5)
    with open(node.log_path, "rb") as f:
        f.seek(before)
        added = f.read().decode(errors="replace")
    lines = added.splitlines()
    print(f"200 abrupt WebSocket disconnects wrote {len(lines)} log lines")
    assert "Traceback" not in added and "ERROR" not in added
    assert len(lines) < 200


# --- parameter fuzz ------------------------------------------------------------------------


def test_parameter_fuzz_never_answers_internal_error(node: NodeProcess) -> None:
    table = build_method_table()
    cases = list(all_cases(table))
    rng = random.Random(20)
    picked = cases if FUZZ_CALLS is None else rng.sample(cases, FUZZ_CALLS)
    requests = [
        {"jsonrpc": "2.0", "id": i, "method": name, "params": params}
        for i, (name, params) in enumerate(picked)
    ]
    internal: list[str] = []
    codes: dict[int | None, int] = {}

    def tally(request: dict[str, Any], answer: dict[str, Any]) -> None:
        code = answer.get("error", {}).get("code")
        codes[code] = codes.get(code, 0) + 1
        if code == INTERNAL_ERROR:
            internal.append(json.dumps(request)[:200])

    start_height = int(
        post(node, FUZZER, {"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"})[1]["result"],
        16,
    )
    by_id = {r["id"]: r for r in requests}
    http_part, ws_part = requests[:-500], requests[-500:]
    conn = http.client.HTTPConnection(
        "127.0.0.1", node.rpc_port, timeout=30, source_address=(FUZZER, 0)
    )
    try:  # batches of 100 on one keep-alive connection
        for i in range(0, len(http_part), 100):
            batch = http_part[i : i + 100]
            conn.request("POST", "/", json.dumps(batch), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answers = json.loads(resp.read())
            assert resp.status == 200 and len(answers) == len(batch), answers
            for answer in answers:
                tally(by_id[answer["id"]], answer)
    finally:
        conn.close()
    ws = RawWebSocket(node, FUZZER, timeout=30)
    try:  # one by one on a WebSocket session
        for request in ws_part:
            tally(request, ws.request(request))
    finally:
        ws.close()
    print(f"{len(requests)} fuzzed calls over {len(table)} methods, answers by code: {codes}")
    assert not internal, internal[:10]
    assert codes.get(-32602, 0) > len(requests) // 2
    # the node still serves and still makes blocks
    deadline = time.monotonic() + 10
    while True:
        status, doc = post(node, HONEST, {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"})
        if status == 200 and int(doc["result"], 16) > start_height:
            break
        assert time.monotonic() < deadline, "no new block after the fuzz"
        time.sleep(0.2)
    assert "Traceback" not in node.log_path.read_text(errors="replace")
