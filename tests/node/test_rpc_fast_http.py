"""The HTTP fast path (node/rpc/http.py, ``simple_post``): which requests it serves
itself, and that its answers are byte for byte what h11 sends. A real node serving a
connection that mixes both paths is tested in test_rpc_http.py."""

from __future__ import annotations

import h11
import pytest

from node.rpc.dispatch import Reply
from node.rpc.http import CORS_HEADERS, SERVER_HEADER, HTTPServer, simple_post

BODY = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}'


def request(*headers: bytes, line: bytes = b"POST / HTTP/1.1", body: bytes = BODY) -> bytearray:
    return bytearray(line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body)


SIMPLE = (b"Host: 127.0.0.1:8545", b"Content-Type: application/json",
          b"Content-Length: %d" % len(BODY))


def test_typical_clients_take_the_fast_path() -> None:
    for headers in (
        SIMPLE,
        (*SIMPLE, b"Connection: keep-alive", b"Accept-Encoding: identity"),  # http.client
        (b"host: x", b"content-length:%d" % len(BODY), b"user-agent: ethers/6.17 (+https://x)"),
        (b"Host: x", b"Content-Length: \t%d \t" % len(BODY), b"Origin: https://dapp.example"),
    ):
        buf = request(*headers)
        assert simple_post(buf, 1 << 20) == (BODY, len(buf)), headers
    assert simple_post(request(*SIMPLE, line=b"POST /rpc?x=1 HTTP/1.1"), 1 << 20) is not None


def test_two_requests_in_one_read_are_served_one_after_the_other() -> None:
    one = request(*SIMPLE)
    buf = one + one
    body, used = simple_post(buf, 1 << 20)
    assert used == len(one)
    del buf[:used]
    assert simple_post(buf, 1 << 20) == (BODY, len(one))


@pytest.mark.parametrize("buf", [
    request(*SIMPLE, line=b"GET / HTTP/1.1"),
    request(*SIMPLE, line=b"POST / HTTP/1.0"),
    request(*SIMPLE, line=b"POST http://x/ HTTP/1.1"),  # absolute form
    request(*SIMPLE, line=b"POST  / HTTP/1.1"),
    request(b"Content-Length: %d" % len(BODY)),  # no host
    request(*SIMPLE, b"Host: y"),  # two hosts
    request(*SIMPLE, b"Content-Length: %d" % len(BODY)),  # two lengths
    request(b"Host: x", b"Content-Length: -1"),
    request(b"Host: x", b"Content-Length: 0x2f"),
    request(b"Host: x"),  # no length
    request(b"Host: x", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    request(*SIMPLE, b"Expect: 100-continue"),
    request(*SIMPLE, b"Upgrade: websocket"),
    request(*SIMPLE, b"Connection: close"),
    request(*SIMPLE, b"Connection: keep-alive, Upgrade"),
    request(*SIMPLE, b"Bad Header: x"),
    request(*SIMPLE, b"X-Thing : y"),  # whitespace before the colon
    request(*SIMPLE, b" folded"),  # obsolete line folding
    request(*SIMPLE, b"X-Ctl: a\x01b"),
    request(*SIMPLE, b"X-Utf8: caf\xc3\xa9"),
    request(*SIMPLE, body=BODY[:-1]),  # body not all here yet
    bytearray(request(*SIMPLE)[:30]),  # headers not all here yet
])
def test_anything_else_goes_to_h11(buf: bytearray) -> None:
    assert simple_post(buf, 1 << 20) is None


def test_a_body_over_the_limit_goes_to_h11_for_its_413() -> None:
    assert simple_post(request(*SIMPLE), len(BODY) - 1) is None
    assert simple_post(request(*SIMPLE), len(BODY)) is not None


@pytest.mark.parametrize("reply, status, content_type, extra", [
    (Reply(b'{"jsonrpc":"2.0","id":1,"result":"0x1ba5"}'), 200, "application/json", []),
    (Reply(b'{"error":1}', refused="rate_limited"), 429, "application/json",
     [(b"retry-after", b"1")]),
    (Reply(b'[{"a":1}]', refused="batch_too_large"), 200, "application/json", []),
    (Reply(None), 204, None, []),
])
def test_fast_answers_are_the_bytes_h11_sends(reply, status, content_type, extra) -> None:
    """The h11 path (``HTTPServer._send``'s headers and events) for the same reply."""
    server = HTTPServer.__new__(HTTPServer)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(bytes(request(*SIMPLE)))
    while not isinstance(conn.next_event(), h11.EndOfMessage):
        pass
    body = reply.body or b""
    length = None if status == 204 else len(body)
    headers = server._headers(content_type, length) + extra
    from http import HTTPStatus

    data = conn.send(h11.Response(status_code=status, headers=headers,
                                  reason=HTTPStatus(status).phrase.encode()))
    if body and status != 204:
        data += conn.send(h11.Data(data=body))
    data += conn.send(h11.EndOfMessage())
    assert server._fast_answer(reply) == data
    assert (b"server", SERVER_HEADER) in headers and CORS_HEADERS[0] in headers
