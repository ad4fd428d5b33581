"""Real node processes for tests: free ports, a fresh home, bounded waits, cleanup."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MOTUS = [sys.executable, "-m", "cli.main"]


# Below Linux's ephemeral range (32768-60999): a port the OS hands out for ``bind(0)`` is
# also what it hands out as the local port of outgoing connections, so one chosen that way
# could be taken by some client's connection before the node started here binds it (seen
# once in CI: "p2p port ... is in use"). Ports from this range are only ever taken by a
# bind, and a bind check below skips those in use.
_PORT_RANGE = (20_000, 32_000)


def free_port() -> int:
    """A loopback TCP port free now, outside the ephemeral range (for a process started
    later to bind)."""
    for _ in range(1000):
        port = random.randint(*_PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORT_RANGE}")


def wait_until(what: Callable[[], Any], timeout: float, message: str) -> Any:
    """Poll ``what`` every 0.1 s until it returns something truthy (returned); its
    exceptions propagate (a failed assertion inside is a failure, not "not yet")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {message}")


def motus(*args: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*MOTUS, *args], cwd=ROOT, capture_output=True, text=True, check=check,
                          timeout=timeout, **kw)


def rpc(url: str, method: str, params: list | None = None, timeout: float = 10):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        doc = json.loads(resp.read())
    if "error" in doc:
        raise RuntimeError(doc["error"])
    return doc["result"]


class NodeProcess:
    """``motus node start`` in its own process group, stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, home: Path, rpc_port: int | None = None, p2p_port: int | None = None,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.home = Path(home)
        self.rpc_port = rpc_port or free_port()
        self.p2p_port = p2p_port or free_port()
        self.extra_args = extra_args
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.log_path = self.home / "node.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    def start(self, wait: float = 30) -> NodeProcess:
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*MOTUS, "node", "start", "--home", str(self.home), "--rpc-port", str(self.rpc_port),
             "--p2p-port", str(self.p2p_port), *self.extra_args],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(self.env or {})},
        )
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}: {self.tail()}")
            try:
                rpc(self.url, "eth_chainId", timeout=1)
                return self
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"node RPC not up after {wait}s: {self.tail()}")

    def wait_height(self, height: int, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        h = -1
        while time.monotonic() < deadline:
            try:
                h = int(rpc(self.url, "eth_blockNumber", timeout=2), 16)
                if h >= height:
                    return h
            except Exception:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"height {h} < {height} after {timeout}s: {self.tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no cleanup runs (crash tests)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
        return self.proc.returncode

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def init_home(tmp: Path, name: str = "node", *extra: str) -> Path:
    home = Path(tmp) / name
    motus("init", "--home", str(home), *extra)
    # fast blocks for tests
    cfg = (home / "config.toml").read_text().replace("block_interval_ms = 1000", "block_interval_ms = 200")
    (home / "config.toml").write_text(cfg)
    return home


def set_config(home: Path, **values: object) -> None:
    """Replace ``key = old`` lines of ``config.toml``: a Python ``str`` becomes a TOML
    string, anything else is written as it is (a number, or TOML text such as an array).
    Only for keys whose name is unique across sections (``port`` is not); a key that is
    not there fails, so a typo cannot pass silently."""
    path = Path(home) / "config.toml"
    text = path.read_text()
    for key, value in values.items():
        rendered = f'"{value}"' if isinstance(value, str) and not value.startswith("[") else str(value)
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {rendered}", text)
        assert n == 1, f"no config key {key} in {path}"
    path.write_text(text)


def validator_address(home: Path) -> str:
    """The 0x-address of a home's validator key."""
    from consensus.crypto import address_of_private_key
    from node.keys import load_validator_key

    return "0x" + address_of_private_key(load_validator_key(Path(home) / "keys" / "validator.json")).hex()


def write_genesis(path: Path, validators: list[tuple[str, int]]) -> None:
    """A devnet genesis with these (0x-address, power) validators, made in this process
    (a ``motus genesis new`` subprocess costs seconds of imports)."""
    from genesis.devnet import new_genesis
    from genesis.spec import DEV_CHAIN_ID

    spec = new_genesis(DEV_CHAIN_ID, [(bytes.fromhex(a[2:]), p) for a, p in validators])
    Path(path).write_text(spec.to_json())


@contextlib.contextmanager
def validator_pair(root: Path, params: dict[str, int] | None = None
                   ) -> Iterator[tuple[list[NodeProcess], list[str]]]:
    """Two validators of power 10 as real processes: homes ``root/v0`` and ``root/v1``
    (200 ms blocks), one genesis with ``params`` over the default chain parameters,
    validator 1 bootstrapping from validator 0. Yields (the processes, their libp2p peer
    ids) once both are at height 2 and connected (so gossip can travel); stops both on
    exit. The setup of the 2-validator e2e tests (licenses, data ownership)."""
    from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of

    homes = [init_home(root, f"v{i}") for i in range(2)]
    genesis = Path(root) / "genesis.json"
    write_genesis(genesis, [(validator_address(h), 10) for h in homes])
    doc = json.loads(genesis.read_text())
    doc["params"].update(params or {})
    for home in homes:
        (home / "genesis.json").write_text(json.dumps(doc))
    node_ids = [peer_id_of(load_or_create_node_key(h / "keys" / "node.key")) for h in homes]
    nodes = [NodeProcess(h) for h in homes]
    set_config(homes[1], bootstrap=f'["{node_multiaddr("127.0.0.1", nodes[0].p2p_port, node_ids[0])}"]')
    try:
        for node in nodes:
            node.start()
        for node in nodes:
            node.wait_height(2, timeout=60)
        wait_until(lambda: all(rpc(n.url, "motus_nodeStatus")["peers"] >= 1 for n in nodes), 30,
                   "the validators to connect")
        yield nodes, node_ids
    finally:
        for node in nodes:
            node.stop()
