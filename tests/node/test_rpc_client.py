"""The CLI's JSON-RPC client against a node that answers badly: every case is an
RPCError, never another exception, and no answer is read past the size limit."""

from __future__ import annotations

import http.server
import threading

import pytest

import rpcclient as client
from rpcclient import RPCError, rpc_call


def _serve(body: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.mark.parametrize("body", [
    b'{"jsonrpc":"2.0","id":1,"error":"boom"}',
    b'{"jsonrpc":"2.0","id":1,"error":[1,2]}',
    b'{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}',
    b"[" * 3_000 + b"]" * 3_000,  # deeper than codec.json allows: refused before parsing
    b"not json",
    b"[1,2,3]",
])
def test_bad_answers_are_rpc_errors(body):
    server, url = _serve(body)
    try:
        with pytest.raises(RPCError) as err:
            rpc_call(url, "eth_blockNumber", timeout=10)
        if b'"code":"x"' in body:
            assert err.value.code is None and err.value.message == "m"
    finally:
        server.shutdown()


def test_oversized_answer_is_refused(monkeypatch):
    monkeypatch.setattr(client, "MAX_ANSWER_BYTES", 1000)
    server, url = _serve(b'{"jsonrpc":"2.0","id":1,"result":"' + b"a" * 5000 + b'"}')
    try:
        with pytest.raises(RPCError, match="exceeds 1000 bytes"):
            rpc_call(url, "eth_blockNumber", timeout=10)
    finally:
        server.shutdown()


def test_good_answer_passes():
    server, url = _serve(b'{"jsonrpc":"2.0","id":1,"result":"0x10"}')
    try:
        assert rpc_call(url, "eth_blockNumber", timeout=10) == "0x10"
    finally:
        server.shutdown()
