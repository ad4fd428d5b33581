"""Run a third-party client script against a real node and report its cases one by one.

A client script (``ethers.mjs``, ``viem.mjs``, ``cast.mjs``, ``web3py_client.py``) prints
one JSON line per case: ``{"name": ..., "ok": true|false, "detail": ...}``. Each test
module starts one node (module-scoped fixture), runs its script once with a time bound,
and has one pytest test per case name, so a failure is reported as
``test_ethers.py::test_case[replacement_speed_up]`` with the client's own error.
The case names are read from the script's source (``check("name"``), so a case that
never printed a line (the script died or hung) fails too, as "did not run".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures.rpc_node import CHAIN_ID, dev_accounts
from tests.procs import NodeProcess, init_home

CLIENTS = Path(__file__).resolve().parent
NODE_MODULES = CLIENTS / "node_modules"
CASE_RE = re.compile(r"""^\s*(?:await\s+)?check\(\s*["']([a-z0-9_]+)["']""", re.M)
SCRIPT_TIMEOUT = 200  # seconds for one whole script; each case has its own bound inside


def case_names(script: Path) -> list[str]:
    """The cases a script declares, in order (read from its source)."""
    names = CASE_RE.findall(script.read_text())
    assert len(names) == len(set(names)), f"duplicate case names in {script.name}"
    return names


def require_npm_packages() -> None:
    """The npm side is installed by `make test` (`npm ci` in tests/clients); say so plainly."""
    if shutil.which("node") is None:
        raise AssertionError("node is not installed: the client suite needs Node.js (see docs/rpc.md, 'Client conformance suite')")
    if not (NODE_MODULES / ".package-lock.json").exists():
        raise AssertionError("tests/clients/node_modules is missing: run `make clients` (npm ci in tests/clients)")


@dataclass
class ClientRun:
    """The outcome of one script run: each case's (ok, detail), and how the script ended."""

    results: dict[str, tuple[bool, str]] = field(default_factory=dict, repr=False)
    exit_note: str = field(default="", repr=False)

    def check(self, name: str) -> None:
        if name not in self.results:
            raise AssertionError(f"case {name} did not run: {self.exit_note}")
        ok, detail = self.results[name]
        assert ok, f"{name}: {detail}"


def start_client_node(tmp: Path, genesis_params: dict[str, int] | None = None) -> NodeProcess:
    """A one-validator node with 200 ms blocks; ``genesis_params`` override chain
    parameters of its genesis before the first start (e.g. short epochs)."""
    home = init_home(tmp, "node")
    if genesis_params:
        path = home / "genesis.json"
        genesis = json.loads(path.read_text())
        genesis["params"].update(genesis_params)
        path.write_text(json.dumps(genesis, indent=2))
    return NodeProcess(home).start()


def run_client(cmd: list[str], tmp: Path, timeout: float = SCRIPT_TIMEOUT,
               genesis_params: dict[str, int] | None = None) -> ClientRun:
    """Start a node in ``tmp``, run ``cmd`` against it (cwd tests/clients) and collect the
    case lines. The node is stopped before returning."""
    node = start_client_node(tmp, genesis_params)
    try:
        env = {
            **os.environ,
            "MOTUS_RPC_URL": node.url,
            "MOTUS_WS_URL": f"ws://127.0.0.1:{node.rpc_port}",
            "MOTUS_CHAIN_ID": str(CHAIN_ID),
            "MOTUS_DEV_KEYS": ",".join("0x" + bytes(a.key).hex() for a in dev_accounts()),
            "NO_COLOR": "1",
        }
        stderr_path = tmp / "client.stderr"
        with open(stderr_path, "wb") as err:
            try:
                proc = subprocess.run(cmd, cwd=CLIENTS, env=env, stdout=subprocess.PIPE, stderr=err,
                                      timeout=timeout, start_new_session=True)
                out, code = proc.stdout, proc.returncode
            except subprocess.TimeoutExpired as e:
                out, code = e.stdout or b"", None
        run = ClientRun()
        for line in out.decode(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "name" in doc and "ok" in doc:
                run.results[doc["name"]] = (doc["ok"] is True, str(doc.get("detail", "")))
        tail = stderr_path.read_bytes()[-1500:].decode(errors="replace")
        ended = f"script timed out after {timeout}s" if code is None else f"script exited {code}"
        run.exit_note = f"{ended}; stderr tail:\n{tail}\nnode log tail:\n{node.tail(1500)}"
        return run
    finally:
        node.stop()


def client_tests(script: Path, cmd: list[str], *, genesis_params: dict[str, int] | None = None):
    """The fixture and tests of one client module: ``run`` (module scope: one node, one
    script run), ``test_case`` (one test per declared case) and ``test_no_undeclared_case``.
    A module assigns the three to its own names so pytest collects them there."""

    @pytest.fixture(scope="module")
    def run(tmp_path_factory) -> ClientRun:
        require_npm_packages()  # every script uses the contracts solc-js compiles
        return run_client(cmd, tmp_path_factory.mktemp(script.stem), genesis_params=genesis_params)

    @pytest.mark.parametrize("case", case_names(script))
    def test_case(run: ClientRun, case: str) -> None:
        run.check(case)

    def test_no_undeclared_case(run: ClientRun) -> None:
        """Every line the script printed is a declared case (a typo cannot hide a result)."""
        assert set(run.results) <= set(case_names(script))

    return run, test_case, test_no_undeclared_case
