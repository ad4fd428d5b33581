"""Method coverage against the official Ethereum execution API specification
(ethereum/execution-apis, CC0; extracted into spec/execution-apis-methods.json by
spec/extract_spec.py):

- docs/rpc.md's coverage table lists every method of the specification exactly once, and
  says "implemented" exactly for the methods the node registers;
- every implemented method, called on a real node with the parameter shapes of the
  specification (its example's values, and values that exist on this chain), answers
  without "method not found", "invalid params" or "internal error", and its result has the
  JSON type (and hex pattern) of the specification's result schema.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from node.rpc.registry import build_method_table
from tests.clients.runner import start_client_node
from tests.fixtures.rpc_node import CHAIN_ID, GWEI, dev_accounts
from tests.procs import rpc

SPEC = json.loads((Path(__file__).parent / "spec" / "execution-apis-methods.json").read_text())
METHODS = {m["name"]: m for m in SPEC["methods"]}
REGISTERED = set(build_method_table().names())
IMPLEMENTED = sorted(n for n in METHODS if n in REGISTERED)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "rpc.md"
STATUSES = ("implemented", "not implemented", "not applicable")
# Errors that say the method or its parameter shapes are not served as specified.
NONCONFORMING = {-32601: "method not found", -32602: "invalid params", -32603: "internal error"}

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def coverage_rows() -> dict[str, str]:
    """method -> status from docs/rpc.md's "Execution API coverage" table."""
    text = DOCS.read_text()
    assert "## Execution API coverage" in text, "docs/rpc.md has no 'Execution API coverage' section"
    section = text.split("## Execution API coverage", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for m in re.finditer(r"^\| `([a-z]+_[A-Za-z0-9]+)` \| ([a-z ]+) \|", section, re.M):
        assert m.group(1) not in rows, f"{m.group(1)} listed twice"
        rows[m.group(1)] = m.group(2).strip()
    return rows


def test_docs_table_covers_the_spec() -> None:
    rows = coverage_rows()
    assert set(rows) == set(METHODS), (
        f"missing from docs/rpc.md: {sorted(set(METHODS) - set(rows))}; "
        f"not in the spec: {sorted(set(rows) - set(METHODS))}")
    bad = {n: s for n, s in rows.items() if s not in STATUSES}
    assert not bad, f"unknown status: {bad}"
    wrong = {n: s for n, s in rows.items() if (s == "implemented") != (n in REGISTERED)}
    assert not wrong, f"docs/rpc.md disagrees with the method table: {wrong}"


def call(url: str, method: str, params: list):
    """(result, error) of one JSON-RPC call."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=20) as resp:
        doc = json.loads(resp.read())
    return doc.get("result"), doc.get("error")


JSON_TYPE = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null", int: "number",
             float: "number"}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A node with one mined transfer; yields the values live parameters are made of."""
    node = start_client_node(tmp_path_factory.mktemp("spec"))
    try:
        sender, receiver = dev_accounts()[0], dev_accounts()[1]

        def signed(nonce: int) -> str:
            tx = {"chainId": CHAIN_ID, "nonce": nonce, "to": receiver.address, "value": 1, "gas": 21000,
                  "maxFeePerGas": 10 * GWEI, "maxPriorityFeePerGas": GWEI}
            return "0x" + bytes(sender.sign_transaction(tx).raw_transaction).hex()

        tx_hash = rpc(node.url, "eth_sendRawTransaction", [signed(0)])
        receipt = None
        for _ in range(100):
            receipt = rpc(node.url, "eth_getTransactionReceipt", [tx_hash])
            if receipt:
                break
            node.wait_height(int(rpc(node.url, "eth_blockNumber"), 16) + 1)
        assert receipt, "transfer not mined"
        yield {"node": node, "url": node.url, "sender": sender.address.lower(), "receiver": receiver.address.lower(),
               "tx": tx_hash, "block_hash": receipt["blockHash"], "block_number": receipt["blockNumber"],
               "signed": signed}
    finally:
        node.stop()


def _nonce(c: dict) -> int:
    return int(rpc(c["url"], "eth_getTransactionCount", [c["sender"], "pending"]), 16)


def _new_filter(c: dict) -> str:
    return rpc(c["url"], "eth_newFilter", [{"fromBlock": "0x0", "toBlock": "latest"}])


# Parameters in the specification's shapes naming things that exist on this chain (the
# examples name mainnet blocks and transactions): the answer must be a result, not null.
LIVE: dict[str, Callable[[dict], list]] = {
    "eth_getBlockByHash": lambda c: [c["block_hash"], True],
    "eth_getBlockByNumber": lambda c: [c["block_number"], True],
    "eth_getBlockTransactionCountByHash": lambda c: [c["block_hash"]],
    "eth_getBlockTransactionCountByNumber": lambda c: [c["block_number"]],
    "eth_getBlockReceipts": lambda c: [c["block_hash"]],
    "eth_call": lambda c: [{"from": c["sender"], "to": c["receiver"], "value": "0x1"}, c["block_hash"]],
    "eth_estimateGas": lambda c: [{"from": c["sender"], "to": c["receiver"], "value": "0x1"}, "latest"],
    "eth_createAccessList": lambda c: [{"from": c["sender"], "to": c["receiver"], "data": "0xab"}, "latest"],
    "eth_newFilter": lambda c: [{"fromBlock": "0x0", "toBlock": "latest", "address": c["receiver"], "topics": []}],
    "eth_uninstallFilter": lambda c: [_new_filter(c)],
    "eth_getFilterChanges": lambda c: [_new_filter(c)],
    "eth_getFilterLogs": lambda c: [_new_filter(c)],
    "eth_getLogs": lambda c: [{"fromBlock": "0x0", "toBlock": "latest", "topics": []}],
    "eth_getBalance": lambda c: [c["sender"], c["block_hash"]],
    "eth_getStorageAt": lambda c: [c["sender"], "0x0", c["block_number"]],
    "eth_getTransactionCount": lambda c: [c["sender"], "pending"],
    "eth_getCode": lambda c: [c["sender"], "latest"],
    "eth_getProof": lambda c: [c["sender"], ["0x0"], c["block_hash"]],
    "eth_sendRawTransaction": lambda c: [c["signed"](_nonce(c))],
    "eth_getTransactionByHash": lambda c: [c["tx"]],
    "eth_getTransactionByBlockHashAndIndex": lambda c: [c["block_hash"], "0x0"],
    "eth_getTransactionByBlockNumberAndIndex": lambda c: [c["block_number"], "0x0"],
    "eth_getTransactionReceipt": lambda c: [c["tx"]],
    "debug_getRawHeader": lambda c: [c["block_number"]],
    "debug_getRawBlock": lambda c: [c["block_number"]],
    "debug_getRawTransaction": lambda c: [c["tx"]],
    "debug_getRawReceipts": lambda c: [c["block_number"]],
    "debug_traceTransaction": lambda c: [c["tx"], {}],
    "debug_traceBlockByNumber": lambda c: [c["block_number"], {}],
    "debug_traceBlockByHash": lambda c: [c["block_hash"], {}],
    "txpool_contentFrom": lambda c: [c["sender"]],
}


def check_answer(spec: dict, params: list, result, error) -> None:
    name = spec["name"]
    if error is not None:
        code = error.get("code")
        assert code not in NONCONFORMING, f"{name}{json.dumps(params)[:200]}: {NONCONFORMING[code]}: {error}"
        return  # an answer such as "header not found" or a refused transaction is fine
    want = spec["result"]["types"]
    got = JSON_TYPE[type(result)]
    assert got in want or "any" in want, f"{name}: result is {got}, spec says {want}: {json.dumps(result)[:200]}"
    pattern = spec["result"]["pattern"]
    if pattern and isinstance(result, str):
        assert re.match(pattern, result), f"{name}: {result!r} does not match {pattern}"


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_spec_example(chain, method: str) -> None:
    """The specification's own example parameters (mainnet values: "not found" is fine)."""
    spec = METHODS[method]
    params = spec["example_params"]
    if params is None:
        pytest.skip("the specification gives no example")
    result, error = call(chain["url"], method, params)
    check_answer(spec, params, result, error)


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_spec_live(chain, method: str) -> None:
    """The same shapes with values that exist on this chain (LIVE): the answer must be a
    result; methods without parameters (or not in LIVE) take the example's."""
    spec = METHODS[method]
    params = LIVE[method](chain) if method in LIVE else spec["example_params"] or []
    result, error = call(chain["url"], method, params)
    check_answer(spec, params, result, error)
    if method in LIVE:
        assert error is None, f"{method}{json.dumps(params)[:200]}: {error}"
        assert result is not None, f"{method}{json.dumps(params)[:200]}: null for something that exists"
