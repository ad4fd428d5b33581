"""Decoder attacks against real node processes (issue 10): a request, a transaction or a
node answer built to crash the parser or make it allocate without bound.

- JSON nested 100,000 deep: the C json scanner recurses up to the recursion limit, which
  py-evm's dependency py_ecc raises to 100,000, and overflows the C stack (SIGSEGV).
- An RLP nesting bomb: pyrlp copies each sub-list's encoding, so a 122 KB transaction
  nested 8,000 deep costs it ~0.8 GB.
Each test fails (the node dies, or its peak RSS grows by hundreds of MB) without the
bounded decoders of ``codec``.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from tests.fixtures.rpc_node import start_node
from tests.procs import MOTUS, ROOT, NodeProcess, rpc
from tests.security.bombs import rlp_bomb

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("security_decoders")]

DEEP_JSON = b"[" * 100_000
RSS_GROWTH_BOUND = 64 * 1024 * 1024  # a bounded decode of a 128 KiB transaction needs < 1 MB


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    proc = start_node(tmp_path_factory.mktemp("attacks"))
    yield proc
    proc.stop()


def post(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())


def peak_rss(node: NodeProcess) -> int:
    """The process's peak resident set (VmHWM), bytes."""
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def assert_alive(node: NodeProcess) -> None:
    assert node.proc is not None and node.proc.poll() is None, node.tail()
    assert int(rpc(node.url, "eth_chainId"), 16) > 0


def test_deep_json_over_http_is_a_parse_error(node: NodeProcess) -> None:
    answer = post(node.url, DEEP_JSON)
    assert answer["error"]["code"] == -32700
    assert "nested deeper than 64" in answer["error"]["message"]
    assert answer["error"]["data"] == {"code": "json_too_deep"}
    assert_alive(node)


def test_deep_json_over_websocket_is_a_parse_error(node: NodeProcess) -> None:
    with connect(f"ws://127.0.0.1:{node.rpc_port}", open_timeout=5, max_size=None) as ws:
        ws.send(DEEP_JSON.decode())
        answer = json.loads(ws.recv(timeout=20))
        assert answer["error"]["code"] == -32700
        assert "nested deeper than 64" in answer["error"]["message"]
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []}))
        assert json.loads(ws.recv(timeout=20))["id"] == 7
    assert_alive(node)


def test_rlp_bomb_through_send_raw_transaction_costs_little_memory(node: NodeProcess) -> None:
    bomb = rlp_bomb(levels=8_000, size=90_000)  # ~122 KB
    assert len(bomb) < 128 * 1024
    before = peak_rss(node)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction",
                       "params": ["0x" + bomb.hex()]}).encode()
    answer = post(node.url, body)
    growth = peak_rss(node) - before
    print(f"peak RSS growth: {growth >> 10} KiB")
    assert growth < RSS_GROWTH_BOUND, f"peak RSS grew by {growth >> 20} MiB"
    assert "error" in answer, answer
    assert "nested deeper than 1" in answer["error"]["message"], answer
    assert_alive(node)


class _HostileNode(http.server.BaseHTTPRequestHandler):
    answer = b'{"jsonrpc": "2.0", "id": 1, "result": ' + DEEP_JSON

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hostile_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileNode)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("command", "status"), [
    # An answer the CLI cannot use is an RPC failure: exit 2, as an unreachable node
    # (cli/main.py cmd_status, cli/common.py run; docs/cli.md)
    (["status"], 2),
    (["light", "init", "--trust-height", "1", "--trust-hash", "0x" + "11" * 32, "--state", "STATE"], 2),
], ids=["status", "light-init"])
def test_cli_reading_a_deeply_nested_answer_exits_with_one_line(
    hostile_url: str, tmp_path: Path, command: list[str], status: int
) -> None:
    """A hostile node answers every call with JSON nested 100,000 deep."""
    args = [str(tmp_path / "light.json") if a == "STATE" else a for a in command]
    done = subprocess.run([*MOTUS, *args, "--rpc", hostile_url], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == status, (done.returncode, done.stderr[-2000:])
    assert done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert done.stderr.startswith("motus: error: ")
    assert "nested deeper than 64" in done.stderr
    assert "Traceback" not in done.stderr
