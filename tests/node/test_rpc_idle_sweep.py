"""Idle keep-alive connections on the HTTP fast path are cut by the server's sweep
(``HTTPServer.sweep_idle``) after ``rpc.idle_timeout_seconds``, never while their
request is being answered; without the sweep each connection keeps its own deadline.
Real sockets on 127.0.0.1, the real server, a dispatcher that answers after a delay."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio

from node.rpc.dispatch import Reply
from node.rpc.http import HTTPServer

IDLE = 1.0
REQUEST = (b"POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"content-length: 2\r\n\r\n{}")


class SlowDispatcher:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def handle(self, body: bytes, *, transport: str, client: str, session=None) -> Reply:
        await trio.sleep(self.delay)
        return Reply(b'{"jsonrpc":"2.0","id":1,"result":"0x1"}')


async def _serve(nursery: trio.Nursery, delay: float, sweep: bool) -> tuple[HTTPServer, int]:
    config = SimpleNamespace(idle_timeout_seconds=IDLE, request_timeout_seconds=10,
                             max_connections=16, max_connections_per_client=16,
                             max_request_bytes=1 << 20, explorer=False)
    server = HTTPServer(None, SlowDispatcher(delay), None, config)  # type: ignore[arg-type]
    if sweep:
        nursery.start_soon(server.sweep_idle)
    listeners = await nursery.start(trio.serve_tcp, server.handle, 0)
    return server, listeners[0].socket.getsockname()[1]


async def _answer_then_closed(port: int) -> tuple[bytes, float, float]:
    """(answer, seconds to the answer, seconds from it until the server closed)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    t0 = trio.current_time()
    await stream.send_all(REQUEST)
    answer = b""
    with trio.fail_after(10):
        while b'"result"' not in answer:
            answer += await stream.receive_some(4096)
        answered = trio.current_time()
        while await stream.receive_some(4096):
            pass
    await stream.aclose()
    return answer, answered - t0, trio.current_time() - answered


@pytest.mark.parametrize("sweep", [True, False])
async def test_an_idle_keep_alive_connection_is_cut_after_the_idle_timeout(sweep: bool) -> None:
    async with trio.open_nursery() as nursery:
        server, port = await _serve(nursery, 0.0, sweep)
        answer, _, idle_for = await _answer_then_closed(port)
        assert answer.startswith(b"HTTP/1.1 200")
        # cut after the timeout, at most one sweep late (and a loaded machine's slack)
        assert IDLE - 0.05 <= idle_for < IDLE + server.sweep_interval + 2.0, idle_for
        assert not server.idle_deadlines  # nothing left behind
        nursery.cancel_scope.cancel()


async def test_a_request_answered_slower_than_the_idle_timeout_is_not_cut() -> None:
    async with trio.open_nursery() as nursery:
        server, port = await _serve(nursery, 2 * IDLE, sweep=True)
        answer, took, idle_for = await _answer_then_closed(port)
        assert answer.startswith(b"HTTP/1.1 200") and took >= 2 * IDLE
        assert IDLE - 0.05 <= idle_for < IDLE + server.sweep_interval + 2.0, idle_for
        nursery.cancel_scope.cancel()
