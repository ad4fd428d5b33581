"""eth_estimateGas, eth_call, state overrides and eth_createAccessList on a real node,
as geth answers them: the estimate of every ordinary transaction shape is the gas with
which that transaction is then mined (and one less fails), gas below the intrinsic gas
is "intrinsic gas too low", reverts are code 3 with the revert bytes, the search is
capped by the block, the ``gas`` given and the balance, overrides are never persisted
and are bounded."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from eth_abi import encode
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from tests.fixtures.rpc_node import CHAIN_ID, GWEI, dev_accounts, logbook, start_node
from tests.procs import NodeProcess

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("rpc_estimate")]

ACCOUNTS = dev_accounts()
A, B = ACCOUNTS[0].address.lower(), ACCOUNTS[1].address.lower()
TAG = "0x" + (b"T" * 32).hex()
# returns 32 bytes: the word 0x42 (PUSH1 42 PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN)
RETURN_42 = "0x604260005260206000f3"
# SSTORE(1, 1) then SLOAD(2): touches two slots of its own storage
TOUCH_SLOTS = "0x6001600155600254"


def raw_rpc(url: str, method: str, params: list[Any]) -> dict[str, Any]:
    """The whole JSON-RPC answer (result or error object)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def ok(url: str, method: str, *params: Any) -> Any:
    doc = raw_rpc(url, method, list(params))
    assert "error" not in doc, doc
    return doc["result"]


def err(url: str, method: str, *params: Any) -> dict[str, Any]:
    doc = raw_rpc(url, method, list(params))
    assert "error" in doc, doc
    return doc["error"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = start_node(tmp_path_factory.mktemp("estimate"))
    yield proc
    proc.stop()


def sign_send(url: str, acct, tx: dict[str, Any]) -> str:
    nonce = int(ok(url, "eth_getTransactionCount", acct.address, "pending"), 16)
    full = {"chainId": CHAIN_ID, "nonce": nonce, "maxFeePerGas": 100 * GWEI,
            "maxPriorityFeePerGas": GWEI, "value": 0, **tx}
    if full.get("to"):
        full["to"] = to_checksum_address(full["to"])
    signed = acct.sign_transaction(full)
    return ok(url, "eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex())


def receipt(url: str, tx_hash: str, timeout: float = 15) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = ok(url, "eth_getTransactionReceipt", tx_hash)
        if r is not None:
            return r
        time.sleep(0.1)
    raise TimeoutError(tx_hash)


@pytest.fixture(scope="module")
def book(node: NodeProcess) -> str:
    """LogBook deployed by account 0 (its deployment estimated by the node)."""
    code = logbook()["bytecode"]
    gas = int(ok(node.url, "eth_estimateGas", {"from": A, "data": code}), 16)
    r = receipt(node.url, sign_send(node.url, ACCOUNTS[0], {"data": code, "gas": gas}))
    assert r["status"] == "0x1"
    return r["contractAddress"]


def clone_initcode(target: str) -> str:
    """EIP-1167 minimal proxy creation code for ``target``."""
    runtime = "363d3d373d3d3d363d73" + target[2:] + "5af43d82803e903d91602b57fd5bf3"
    return "0x3d602d80600a3d3981f3" + runtime


def record_call(note: str) -> str:
    selector = keccak(b"record(bytes32,string)")[:4]
    return "0x" + (selector + encode(["bytes32", "string"], [b"T" * 32, note])).hex()


def shapes(book: str) -> dict[str, dict[str, Any]]:
    return {
        "data_to_eoa": {"to": B, "data": "0xab"},
        "empty_create": {"data": "0x"},
        "tiny_create": {"data": "0x00"},
        "clone_create": {"data": clone_initcode(book)},
        "constructor_1kb_arg": {"data": logbook()["bytecode"] + "11" * 1024},
        "calldata_8kb_to_eoa": {"to": B, "data": "0x" + "5a" * 8192},
        "contract_call_4kb": {"to": book, "data": record_call("n" * 4096)},
        "plain_transfer": {"to": B, "value": hex(1)},
    }


def test_estimate_is_the_gas_that_mines_every_shape(node: NodeProcess, book: str) -> None:
    """Each estimate succeeds, the transaction sent with exactly that gas is mined with
    status 1, and one gas less fails as a call (out of gas or intrinsic gas)."""
    url = node.url
    sent = {}
    for i, (name, tx) in enumerate(shapes(book).items()):
        acct = ACCOUNTS[2 + i % 6]
        call = {"from": acct.address, **tx}
        gas = int(ok(url, "eth_estimateGas", call), 16)
        below = raw_rpc(url, "eth_call", [{**call, "gas": hex(gas - 1)}, "latest"])
        assert "error" in below, (name, gas)
        sent[name] = (gas, sign_send(url, acct, {**tx, "gas": gas, "value": int(tx.get("value", "0x0"), 16)}))
    for name, (gas, tx_hash) in sent.items():
        r = receipt(url, tx_hash)
        assert r["status"] == "0x1", (name, gas, r)
    # the figures that follow from the intrinsic gas alone
    assert sent["data_to_eoa"][0] == 21_016
    assert sent["empty_create"][0] == 53_000
    assert sent["tiny_create"][0] == 53_000 + 4 + 2  # a zero byte, one initcode word
    assert sent["calldata_8kb_to_eoa"][0] == 21_000 + 16 * 8192
    assert sent["plain_transfer"][0] == 21_000
    clone = receipt(url, sent["clone_create"][1])["contractAddress"]
    assert ok(url, "eth_getCode", clone, "latest").endswith(book[2:] + "5af43d82803e903d91602b57fd5bf3")


def test_call_below_intrinsic_gas_is_refused_as_geth(node: NodeProcess) -> None:
    e = err(node.url, "eth_call", {"from": A, "to": B, "data": "0xab", "gas": hex(21_000)}, "latest")
    assert e["code"] == -32000
    assert e["message"] == "intrinsic gas too low: have 21000, want 21016"
    assert "data" not in e  # web3.py would take an error with data for a revert
    e = err(node.url, "eth_call", {"from": A, "data": "0x00", "gas": hex(53_000)}, "latest")
    assert e["message"] == "intrinsic gas too low: have 53000, want 53006"


def test_estimate_reverts_and_caps(node: NodeProcess, book: str) -> None:
    url = node.url
    double_100 = "0x" + (keccak(b"double(uint256)")[:4] + encode(["uint256"], [100])).hex()
    e = err(url, "eth_estimateGas", {"from": A, "to": book, "data": double_100})
    assert e["code"] == 3 and e["message"] == "execution reverted: x must be below 100"
    assert e["data"].startswith("0x08c379a0")
    denied = "0x" + keccak(b"denied()")[:4].hex()
    e = err(url, "eth_estimateGas", {"from": A, "to": book, "data": denied})
    assert e["code"] == 3 and e["data"][:10] == "0x" + keccak(b"NotAllowed(address)")[:4].hex()
    # Panic(0x01) from a state override's code: PUSH4 4e487b71 PUSH1 224 SHL PUSH1 0
    # MSTORE PUSH1 1 PUSH1 4 MSTORE PUSH1 36 PUSH1 0 REVERT
    panic = "0x634e487b7160e01b6000526001600452602460" + "00fd"
    e = err(url, "eth_estimateGas", {"from": A, "to": B}, "latest", {B: {"code": panic}})
    assert e["code"] == 3 and e["message"] == "execution reverted: assert(false)"
    # the gas given caps the search
    e = err(url, "eth_estimateGas", {"from": A, "to": book, "data": record_call("x"), "gas": hex(30_000)})
    assert e == {"code": -32000, "message": "gas required exceeds allowance (30000)"}
    # and so does the balance when a fee is given: 10,000 MOTUS at 1 MOTUS per gas
    balance = int(ok(url, "eth_getBalance", A, "latest"), 16)
    e = err(url, "eth_estimateGas", {"from": A, "to": B, "data": "0x01", "gasPrice": hex(10**18)})
    assert e["message"] == f"gas required exceeds allowance ({balance // 10**18})"
    e = err(url, "eth_estimateGas", {"from": A, "to": B, "value": hex(balance), "maxFeePerGas": hex(1)})
    assert e["code"] == -32000 and e["message"] == "insufficient funds for transfer"
    # a fee the balance covers does not change the answer
    assert ok(url, "eth_estimateGas", {"from": A, "to": B, "data": "0xab", "gasPrice": hex(GWEI)}) == hex(21_016)


def test_state_overrides(node: NodeProcess, book: str) -> None:
    url = node.url
    nobody = "0x" + "77" * 20
    assert ok(url, "eth_call", {"to": nobody}, "latest", {nobody: {"code": RETURN_42}}) == "0x" + "42".rjust(64, "0")
    # balance: a pauper can send value in the call; the state is not changed
    pauper = "0x" + "78" * 20
    call = {"from": pauper, "to": B, "value": hex(10**18)}
    assert "error" in raw_rpc(url, "eth_call", [call, "latest"])
    assert ok(url, "eth_call", call, "latest", {pauper: {"balance": hex(2 * 10**18)}}) == "0x"
    assert ok(url, "eth_estimateGas", call, "latest", {pauper: {"balance": hex(2 * 10**18)}}) == hex(21_000)
    assert ok(url, "eth_getBalance", pauper, "latest") == "0x0"
    # stateDiff changes one slot (count, slot 0) and keeps the others; state replaces all
    count = "0x" + keccak(b"count()")[:4].hex()
    slot0 = "0x" + "00" * 32
    seven = "0x" + "07".rjust(64, "0")
    assert ok(url, "eth_call", {"to": book, "data": count}, "latest",
              {book: {"stateDiff": {slot0: seven}}}) == seven
    assert ok(url, "eth_call", {"to": book, "data": count}, "latest", {book: {"state": {}}}) == "0x" + "00" * 32
    assert ok(url, "eth_call", {"to": book, "data": count}, "latest") != seven
    assert ok(url, "eth_getCode", nobody, "latest") == "0x"
    # refused shapes
    e = err(url, "eth_call", {"to": book}, "latest", {book: {"state": {}, "stateDiff": {}}})
    assert e["code"] == -32602 and "both 'state' and 'stateDiff'" in e["message"]
    e = err(url, "eth_call", {"to": book}, "latest", {book: {"balances": "0x1"}})
    assert e["code"] == -32602 and "unknown override field" in e["message"]
    e = err(url, "eth_call", {"to": book}, "latest", {book: {"stateDiff": {"0x01": seven}}})
    assert e["code"] == -32602
    many = {"0x" + i.to_bytes(20, "big").hex(): {"balance": "0x1"} for i in range(1, 1002)}
    e = err(url, "eth_call", {"to": book}, "latest", many)
    assert e["code"] == -32005 and e["data"] == {"reason": "too_many_accounts"}
    slots = {"0x" + i.to_bytes(32, "big").hex(): seven for i in range(10_001)}
    e = err(url, "eth_estimateGas", {"to": book}, "latest", {book: {"stateDiff": slots}})
    assert e["code"] == -32005 and e["data"] == {"reason": "too_many_items"}


def test_create_access_list(node: NodeProcess, book: str) -> None:
    url = node.url
    r = ok(url, "eth_createAccessList", {"from": A, "to": book, "data": record_call("x")}, "latest")
    assert r["accessList"] == [{
        "address": book,
        "storageKeys": sorted([
            "0x" + "00" * 32,  # count
            "0x" + keccak(bytes(12) + bytes.fromhex(A[2:]) + (1).to_bytes(32, "big")).hex(),
        ]),
    }]
    used = int(r["gasUsed"], 16)
    assert "error" not in r
    # the list is what a transaction would carry: with it the estimate does not grow
    with_list = {"from": A, "to": book, "data": record_call("x"), "accessList": r["accessList"]}
    estimate = int(ok(url, "eth_estimateGas", with_list), 16)
    assert estimate >= used
    # a revert is reported in the answer, not as an RPC error
    double_100 = "0x" + (keccak(b"double(uint256)")[:4] + encode(["uint256"], [100])).hex()
    r = ok(url, "eth_createAccessList", {"from": A, "to": book, "data": double_100})
    assert r["error"] == "execution reverted: x must be below 100"


def test_access_list_nested(node: NodeProcess) -> None:
    """A call into another contract lists that contract and its slots, not the sender,
    the recipient or the precompiles."""
    url = node.url
    # deploy a target (TOUCH_SLOTS as its code) and a contract that CALLs it
    runtime = TOUCH_SLOTS[2:]
    init = "0x60" + f"{len(runtime) // 2:02x}" + "600c60003960" + f"{len(runtime) // 2:02x}" + "6000f3" + runtime
    r1 = receipt(url, sign_send(url, ACCOUNTS[8], {"data": init, "gas": 200_000}))
    target = r1["contractAddress"]
    caller_runtime = "600080808080" + "73" + target[2:] + "5af1" + "00"
    n = len(caller_runtime) // 2
    init2 = "0x60" + f"{n:02x}" + "600c60003960" + f"{n:02x}" + "6000f3" + caller_runtime
    r2 = receipt(url, sign_send(url, ACCOUNTS[8], {"data": init2, "gas": 200_000}))
    caller = r2["contractAddress"]
    r = ok(url, "eth_createAccessList", {"from": A, "to": caller})
    assert r["accessList"] == [{"address": target, "storageKeys": [
        "0x" + (1).to_bytes(32, "big").hex(), "0x" + (2).to_bytes(32, "big").hex()]}]
    plain = int(ok(url, "eth_estimateGas", {"from": A, "to": caller}), 16)
    listed = int(ok(url, "eth_estimateGas", {"from": A, "to": caller, "accessList": r["accessList"]}), 16)
    assert listed < plain  # warm accesses are cheaper than the list costs


def test_oversized_initcode_is_refused_and_the_chain_goes_on(node: NodeProcess) -> None:
    """EIP-3860 (more than 49,152 bytes of initcode): refused by eth_call, eth_estimateGas
    and the mempool with geth's words. Before, the pooled transaction made the block
    builder raise and the node stop."""
    url = node.url
    message = "max initcode size exceeded: code size 50000 limit 49152"
    create = {"from": A, "data": "0x" + "00" * 50_000}
    assert err(url, "eth_call", create, "latest") == {"code": -32000, "message": message}
    assert err(url, "eth_estimateGas", create) == {"code": -32000, "message": message}
    acct = ACCOUNTS[9]
    nonce = int(ok(url, "eth_getTransactionCount", acct.address, "pending"), 16)
    signed = acct.sign_transaction({"chainId": CHAIN_ID, "nonce": nonce, "gas": 2_000_000, "value": 0,
                                    "maxFeePerGas": 100 * GWEI, "maxPriorityFeePerGas": GWEI,
                                    "data": "0x" + "00" * 50_000})
    e = err(url, "eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex())
    assert e == {"code": -32000, "message": message, "data": {"reason": "initcode_too_large"}}
    height = int(ok(url, "eth_blockNumber"), 16)
    node.wait_height(height + 2, timeout=10)
