"""``motus tx send|get|receipt`` against a real node process: a transfer lands exactly,
raw calldata reaches a module (a refused call is caught by the estimate and costs
nothing), the lookups print the node's JSON, and the exit statuses follow docs/cli.md."""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import main
from cli.tx import parse_value
from rpcclient.txsend import encode_call
from tests.fixtures.rpc_node import MOTUS, dev_accounts
from tests.procs import NodeProcess, init_home, motus, rpc

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("cli_tx")]

IDENTITY = "0x00000000000000000000000000000000004d0703"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    proc = NodeProcess(init_home(tmp_path_factory.mktemp("cli_tx"), "node")).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("cli_tx_keys") / "dev3.key"
    path.write_text(bytes(dev_accounts()[3].key).hex())
    os.chmod(path, 0o600)
    return str(path)


def tx(node: NodeProcess, *args: str, subprocess: bool = False) -> tuple[int, dict, str]:
    """``motus tx ARGS --rpc URL``: the CLI's ``main`` in this process (no interpreter
    start-up per call), or the installed command as a real subprocess."""
    if subprocess:
        res = motus("tx", *args, "--rpc", node.url, check=False, timeout=90)
        code, stdout, stderr = res.returncode, res.stdout, res.stderr
    else:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["tx", *args, "--rpc", node.url])
            except SystemExit as exc:  # argparse's usage errors
                code = int(exc.code or 0)
        stdout, stderr = out.getvalue(), err.getvalue()
    return code, json.loads(stdout) if stdout.strip() else {}, stderr


def balance(node: NodeProcess, address: str) -> int:
    return int(rpc(node.url, "eth_getBalance", [address, "latest"]), 16)


def test_values() -> None:
    assert parse_value("1.5") == 3 * MOTUS // 2 and parse_value("0") == 0 and parse_value("7wei") == 7


def test_send_value_then_get_and_receipt(node: NodeProcess, key_file: str) -> None:
    sender, to = dev_accounts()[3].address.lower(), dev_accounts()[8].address.lower()
    before = balance(node, to)
    code, out, err = tx(node, "send", "--to", to, "--value", "1.5", "--private-key-file", key_file,
                        subprocess=True)
    assert code == 0, err
    assert (out["status"], out["from"], out["to"], out["value"]) == ("success", sender, to, str(15 * MOTUS // 10))
    assert out["gasUsed"] == 21_000 and out["logs"] == []
    assert balance(node, to) - before == 15 * MOTUS // 10

    code, got, _ = tx(node, "get", out["txHash"])
    assert code == 0
    assert (got["hash"], got["from"].lower(), got["to"].lower(), int(got["value"], 16)) == (
        out["txHash"], sender, to, 15 * MOTUS // 10)
    code, receipt, _ = tx(node, "receipt", out["txHash"])
    assert code == 0 and receipt["status"] == "0x1"
    assert int(receipt["blockNumber"], 16) == out["blockNumber"]

    unknown = "0x" + "ab" * 32
    for sub in ("get", "receipt"):
        code, missing, _ = tx(node, sub, unknown)
        assert (code, missing["status"]) == (1, "not_found")


def test_send_calldata_to_a_module(node: NodeProcess, key_file: str) -> None:
    """Raw calldata (here identity's mintVehicle, encoded by hand) is a call like any other."""
    from cli.identity import identity_abi

    data = encode_call(identity_abi(), "mintVehicle", "Fiat", "500e", 2021, "ZFA3120000J000001")
    code, out, err = tx(node, "send", "--to", IDENTITY, "--data", "0x" + data.hex(),
                        "--private-key-file", key_file)
    assert code == 0, err
    assert out["value"] == "0" and out["logs"] and out["logs"][0]["address"].lower() == IDENTITY
    owner = dev_accounts()[3].address.lower()
    assert rpc(node.url, "motus_vehiclesOf", [owner]) != []


def test_refusals_and_bad_arguments(node: NodeProcess, key_file: str) -> None:
    nonce = rpc(node.url, "eth_getTransactionCount", [dev_accounts()[3].address, "latest"])
    code, out, err = tx(node, "send", "--to", IDENTITY, "--data", "0xdeadbeef", "--private-key-file", key_file)
    assert code == 1 and out["status"] == "reverted" and out["txHash"] is None, err
    code, out, _ = tx(node, "send", "--to", dev_accounts()[8].address, "--value", "1000000",
                      "--private-key-file", key_file)
    assert code == 1 and out["status"] == "rejected" and "insufficient funds" in out["reason"]
    # nothing was sent, no gas spent
    assert rpc(node.url, "eth_getTransactionCount", [dev_accounts()[3].address, "latest"]) == nonce
    for bad in (["send", "--to", "0x1234", "--private-key-file", key_file],
                ["send", "--to", IDENTITY, "--data", "beef", "--private-key-file", key_file],
                ["get", "0x12"]):
        code, _, _ = tx(node, *bad)
        assert code == 2
    loose = Path(key_file).with_name("loose.key")
    loose.write_text(Path(key_file).read_text())
    os.chmod(loose, 0o644)
    code, _, err = tx(node, "send", "--to", IDENTITY, "--private-key-file", str(loose))
    assert code == 2 and "loose.key" in err
