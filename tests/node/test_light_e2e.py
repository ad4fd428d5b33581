"""``motus light`` against a real node process (200 ms blocks, 10-block epochs): trust
the genesis file, sync sequentially then skip ahead, verify a header backwards, prove a
balance, a vehicle's owner (minted with ``motus vehicle mint``) and an epoch's reward
record; then a lying proxy between the client and the node rewrites one answer at a time
and each lie is refused with its code, while the trusted state stays intact."""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import threading
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from tests.fixtures.rpc_node import dev_accounts
from tests.procs import NodeProcess, init_home, motus, rpc
from vm.block import Header, header_fields

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("light_e2e")]

Tamper = Callable[[str, list[Any], Any], Any]


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    home = init_home(tmp_path_factory.mktemp("light_e2e"), "node")
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["params"]["epoch_length_blocks"] = 10  # epoch 0 settles within seconds
    (home / "genesis.json").write_text(json.dumps(genesis, indent=2))
    proc = NodeProcess(home).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("light_files")
    key = tmp / "dev0.key"
    key.write_text(bytes(dev_accounts()[0].key).hex())
    os.chmod(key, 0o600)
    return {"state": tmp / "light.json", "key": key, "tmp": tmp}


def light(*args: str, state: Path, rpc_url: str | None = None, ok: bool = True) -> tuple[int, dict]:
    """``motus light ARGS --state STATE`` run by the CLI's own ``main`` in this process
    (the same code as the installed command, without a second of interpreter start-up
    per call; ``init`` below runs as a real subprocess)."""
    extra = ["--rpc", rpc_url] if rpc_url else []
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["light", *args, "--state", str(state), *extra])
    if ok:
        assert code == 0, stderr.getvalue() + stdout.getvalue()
    return code, json.loads(stdout.getvalue()) if stdout.getvalue().strip() else {}


def test_init_from_genesis_sync_sequentially_then_skip(node: NodeProcess, files: dict[str, Path]) -> None:
    node.wait_height(3)
    state = files["state"]
    res = motus("light", "init", "--rpc", node.url, "--genesis", str(node.home / "genesis.json"),
                "--state", str(state))
    out = json.loads(res.stdout)
    assert out["trusted"]["height"] == 0
    assert out["genesisHash"] == rpc(node.url, "motus_nodeStatus")["genesisHash"] == out["trusted"]["hash"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    again = motus("light", "init", "--rpc", node.url, "--genesis", str(node.home / "genesis.json"),
                  "--state", str(state), check=False)
    assert again.returncode == 2 and "exists" in again.stderr  # the trust anchor is not replaced silently

    _, out = light("sync", "--to", "3", "--sequential", state=state)
    assert out["verified"] == [1, 2, 3] and out["trusted"]["height"] == 3
    assert out["trusted"]["hash"] == rpc(node.url, "motus_getHeader", [3])["hash"]

    node.wait_height(8)
    _, out = light("sync", state=state)
    head = out["trusted"]["height"]
    assert head >= 8 and out["verified"] == [head]  # one validator: one skipping step
    assert out["trusted"]["hash"] == rpc(node.url, "motus_getHeader", [head])["hash"]
    _, status = light("status", state=state)
    assert status["trusted"]["height"] == head and status["expired"] is False

    _, out = light("header", "2", state=state)  # below the trusted header: along parent hashes
    assert out["hash"] == rpc(node.url, "motus_getHeader", [2])["hash"] and out["verified"]
    assert out["trustedHeight"] == head


def test_balance_vehicle_owner_and_reward_are_proven(node: NodeProcess, files: dict[str, Path]) -> None:
    state = files["state"]
    me, other = dev_accounts()[0].address.lower(), dev_accounts()[1].address.lower()
    minted = json.loads(motus("vehicle", "mint", "--make", "Renault", "--model", "Zoe", "--year", "2019",
                              "--vin", "VF1AG000X12345678", "--private-key-file", str(files["key"]),
                              "--rpc", node.url).stdout)
    vid = minted["vehicleId"]

    _, out = light("vehicle", str(vid), "--owner", me, state=state)
    assert out["exists"] and out["owner"] == me and out["ownerMatches"]
    assert out["blockNumber"] >= minted["blockNumber"] and out["verified"]
    assert out["stateRoot"] == rpc(node.url, "motus_getHeader", [out["blockNumber"]])["stateRoot"]
    code, out = light("vehicle", str(vid), "--owner", other, state=state, ok=False)
    assert code == 1 and out["ownerMatches"] is False
    _, out = light("vehicle", str(vid), "--height", str(minted["blockNumber"] - 1), state=state)
    assert out["exists"] is False  # proven absent the block before its mint

    _, out = light("balance", me, state=state)
    height = out["blockNumber"]
    assert int(out["balance"]) == int(rpc(node.url, "eth_getBalance", [me, hex(height)]), 16)
    assert out["nonce"] == int(rpc(node.url, "eth_getTransactionCount", [me, hex(height)]), 16) >= 1

    node.wait_height(11)  # epoch 0 (blocks 0-9) is settled by block 10; no vehicle had data
    _, out = light("reward", str(vid), "0", state=state)
    assert (out["settled"], out["recorded"], out["reward"], out["owner"]) == (True, False, "0", None)
    _, out = light("reward", str(vid), "100000", state=state)
    assert out["settled"] is False


class LyingProxy:
    """A JSON-RPC proxy to ``upstream`` whose ``tamper(method, params, result)`` may rewrite
    any answer before the client sees it."""

    def __init__(self, upstream: str) -> None:
        self.tamper: Tamper | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = urllib.request.Request(upstream, body, {"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    doc = json.loads(resp.read())
                call = json.loads(body)
                if proxy.tamper is not None and doc.get("result") is not None:
                    doc["result"] = proxy.tamper(call["method"], call["params"], doc["result"])
                raw = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _flip_last_byte(hex_text: str) -> str:
    raw = bytearray(bytes.fromhex(hex_text[2:]))
    raw[-1] ^= 1
    return "0x" + raw.hex()


def _rewrite_header(params: list[Any], result: Any, trusted: int) -> Any:
    """Header answers above the trusted height get another state root (and the matching
    hash, so only the commit can tell)."""
    if not isinstance(params[0], int) or params[0] <= trusted:
        return result
    header = Header.decode(bytes.fromhex(result["rlp"][2:])).copy(state_root=b"\x42" * 32)
    return header_fields(header)


def test_a_lying_node_is_caught(node: NodeProcess, files: dict[str, Path]) -> None:
    state = files["state"]
    me = dev_accounts()[0].address.lower()
    trusted = json.loads(state.read_text())["trusted"]["height"]
    node.wait_height(trusted + 3)
    proxy = LyingProxy(node.url)
    try:
        lies: dict[str, Tamper] = {
            "rpc_lied": lambda m, p, r: {**r, "balance": hex(10**30)} if m == "eth_getProof" else r,
            "proof_invalid": lambda m, p, r: (
                {**r, "accountProof": [*r["accountProof"][:-1], _flip_last_byte(r["accountProof"][-1])]}
                if m == "eth_getProof" else r),
            "bad_commit": lambda m, p, r: _rewrite_header(p, r, trusted) if m == "motus_getHeader" else r,
            "validators_mismatch": lambda m, p, r: (
                {**r, "validators": [{"address": "0x" + "66" * 20, "power": 10}]}
                if m == "motus_getValidators" and p[0] > trusted else r),
        }
        for code, tamper in lies.items():
            proxy.tamper = tamper
            rc, out = light("balance", me, state=state, rpc_url=proxy.url, ok=False)
            assert (rc, out.get("code")) == (1, code), out
            assert json.loads(state.read_text())["trusted"]["height"] == trusted  # nothing trusted on a lie
        proxy.tamper = None
        _, out = light("balance", me, state=state, rpc_url=proxy.url)  # an honest answer still verifies
        assert out["verified"] and out["blockNumber"] > trusted
    finally:
        proxy.close()


def test_checkpoint_and_trusting_period(node: NodeProcess, files: dict[str, Path]) -> None:
    tmp = files["tmp"]
    good = rpc(node.url, "motus_getHeader", [5])["hash"]
    res = motus("light", "init", "--rpc", node.url, "--trust-height", "5", "--trust-hash", good,
                "--state", str(tmp / "checkpoint.json"))
    assert json.loads(res.stdout)["trusted"]["height"] == 5
    _, out = light("sync", state=tmp / "checkpoint.json")
    assert out["trusted"]["height"] > 5
    bad = motus("light", "init", "--rpc", node.url, "--trust-height", "5", "--trust-hash", "0x" + "11" * 32,
                "--state", str(tmp / "bad.json"), check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["code"] == "rpc_lied"
    assert not (tmp / "bad.json").exists()
    # the genesis was made when the test began, more than a second ago
    expired = motus("light", "init", "--rpc", node.url, "--genesis", str(node.home / "genesis.json"),
                    "--trusting-period", "1s", "--state", str(tmp / "expired.json"), check=False)
    assert expired.returncode == 1 and json.loads(expired.stdout)["code"] == "expired_trust"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["light", "sync", "--state", str(tmp / "nothing.json")]) == 2
    assert "motus light init" in stderr.getvalue()
