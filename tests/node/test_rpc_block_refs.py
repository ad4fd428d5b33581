"""Block references, raw transactions, blob refusals and block events as an indexer sees
them, on a real node with 10-block epochs (so that epoch work emits block events):

- a 32-byte block hash string (and EIP-1898's object) names a block wherever a block
  parameter goes; an unknown hash is geth's "header for hash not found";
- eth_getRawTransactionByHash returns the envelope of pending and mined transactions;
- a blob transaction with its blobs attached is refused for its type, not its size;
- an indexer that matches every eth_getLogs entry to a transaction of the block or to
  the block's system transaction (docs/rpc.md, "Block events") finds them all, with
  the same logs in eth_getBlockReceipts and eth_getTransactionReceipt."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rlp
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from web3 import Web3

from tests.fixtures.rpc_node import CHAIN_ID, GWEI, dev_accounts, logbook
from tests.node.test_rpc_estimate import err, ok, receipt, sign_send
from tests.procs import NodeProcess, init_home

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("rpc_block_refs")]

ACCOUNTS = dev_accounts()
A = ACCOUNTS[0].address.lower()
EPOCH = 10
ZERO = "0x" + "00" * 20


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    home = init_home(tmp_path_factory.mktemp("block_refs"), "node")
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["params"]["epoch_length_blocks"] = EPOCH
    (home / "genesis.json").write_text(json.dumps(genesis, indent=2))
    proc = NodeProcess(home).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def mined(node: NodeProcess) -> dict[str, Any]:
    """A transfer and a LogBook deployment + entry, mined."""
    url = node.url
    transfer = receipt(url, sign_send(url, ACCOUNTS[0], {"to": ACCOUNTS[1].address, "value": 5, "gas": 21_000}))
    code = logbook()["bytecode"]
    deploy = receipt(url, sign_send(url, ACCOUNTS[1], {"data": code, "gas": 1_000_000}))
    book = deploy["contractAddress"]
    data = "0x" + keccak(b"record(bytes32,string)")[:4].hex() + (
        (b"T" * 32) + (64).to_bytes(32, "big") + (2).to_bytes(32, "big") + b"hi".ljust(32, b"\x00")
    ).hex()
    entry = receipt(url, sign_send(url, ACCOUNTS[1], {"to": book, "data": data, "gas": 200_000}))
    return {"transfer": transfer, "deploy": deploy, "entry": entry, "book": book}


def test_block_hash_names_a_block_everywhere(node: NodeProcess, mined: dict[str, Any]) -> None:
    url = node.url
    r = mined["transfer"]
    h, n = r["blockHash"], r["blockNumber"]
    before = hex(int(n, 16) - 1)
    book = mined["book"]
    # the state after the transfer's block, named by hash and by number, agree
    for ref in (h, {"blockHash": h}, {"blockHash": h, "requireCanonical": True}, {"blockNumber": n}):
        assert ok(url, "eth_getBalance", A, ref) == ok(url, "eth_getBalance", A, n)
        assert ok(url, "eth_getTransactionCount", A, ref) == ok(url, "eth_getTransactionCount", A, n)
    assert ok(url, "eth_getBalance", A, h) != ok(url, "eth_getBalance", A, before)
    # the book does not exist yet at the transfer's block, and does at its own
    dh = mined["deploy"]["blockHash"]
    assert ok(url, "eth_getCode", book, h) == "0x"
    assert ok(url, "eth_getCode", book, dh) == "0x" + logbook()["deployedBytecode"][2:]
    eh = mined["entry"]["blockHash"]
    assert ok(url, "eth_getStorageAt", book, "0x0", eh) == "0x" + "01".rjust(64, "0")
    count = {"to": book, "data": "0x" + keccak(b"count()")[:4].hex()}
    assert ok(url, "eth_call", count, eh) == "0x" + "01".rjust(64, "0")
    assert ok(url, "eth_call", count, dh) == "0x" + "00".rjust(64, "0")
    assert ok(url, "eth_estimateGas", {"from": A, "to": ACCOUNTS[2].address}, h) == hex(21_000)
    proof = ok(url, "eth_getProof", book, ["0x0"], eh)
    assert proof["storageProof"][0]["value"] == "0x1"
    receipts = ok(url, "eth_getBlockReceipts", h)
    assert r in receipts
    # every tag answers
    for tag in ("latest", "earliest", "pending", "safe", "finalized"):
        ok(url, "eth_getBalance", A, tag)
    assert ok(url, "eth_getBalance", A, "earliest") == hex(10_000 * 10**18)


def test_unknown_block_hash_is_geths_error(node: NodeProcess) -> None:
    unknown = "0x" + "ab" * 32
    url = node.url
    for method, params in [
        ("eth_getBalance", [A, unknown]),
        ("eth_getCode", [A, unknown]),
        ("eth_getStorageAt", [A, "0x0", unknown]),
        ("eth_getTransactionCount", [A, {"blockHash": unknown}]),
        ("eth_call", [{"to": A}, unknown]),
        ("eth_estimateGas", [{"to": A}, unknown]),
        ("eth_getProof", [A, [], unknown]),
    ]:
        e = err(url, method, *params)
        assert e == {"code": -32000, "message": "header for hash not found"}, method
    assert ok(url, "eth_getBlockReceipts", unknown) is None
    e = err(url, "eth_getBalance", A, {"blockHash": unknown, "blockNumber": "0x1"})
    assert e["code"] == -32602 and "cannot specify both" in e["message"]
    e = err(url, "eth_getBalance", A, "0x" + "ab" * 31)  # 64 characters: a number
    assert e["code"] == -32001 and "header not found" in e["message"]


def test_raw_transaction_by_hash_pending_and_mined(node: NodeProcess, mined: dict[str, Any]) -> None:
    url = node.url
    tx_hash = mined["transfer"]["transactionHash"]
    raw = ok(url, "eth_getRawTransactionByHash", tx_hash)
    assert "0x" + keccak(bytes.fromhex(raw[2:])).hex() == tx_hash
    # a pending one: a nonce gap keeps it in the pool
    acct = ACCOUNTS[9]
    nonce = int(ok(url, "eth_getTransactionCount", acct.address, "latest"), 16) + 5
    signed = acct.sign_transaction({"chainId": CHAIN_ID, "nonce": nonce, "to": to_checksum_address(A),
                                    "value": 1, "gas": 21_000, "maxFeePerGas": 100 * GWEI,
                                    "maxPriorityFeePerGas": GWEI})
    pending_raw = "0x" + bytes(signed.raw_transaction).hex()
    pending_hash = ok(url, "eth_sendRawTransaction", pending_raw)
    assert ok(url, "eth_getRawTransactionByHash", pending_hash) == pending_raw
    assert ok(url, "eth_getRawTransactionByHash", "0x" + "cd" * 32) is None


def test_blob_transaction_with_blobs_refused_for_its_type(node: NodeProcess) -> None:
    """The network form (0x03 || rlp([tx, blobs, commitments, proofs])) of one blob is
    over the 128 KiB transaction bound: the type must be what is refused."""
    body = [CHAIN_ID, 0, GWEI, 100 * GWEI, 21_000, bytes.fromhex(A[2:]), 0, b"", [],
            GWEI, [b"\x01" + b"\x00" * 31], 0, 1, 1]
    wrapper = b"\x03" + rlp.encode([body, [b"\x00" * 131_072], [b"\xc0" + b"\x00" * 47],
                                    [b"\xc0" + b"\x00" * 47]])
    e = err(node.url, "eth_sendRawTransaction", "0x" + wrapper.hex())
    assert e["code"] == -32000
    assert e["message"].startswith("transaction type not supported")
    assert e["data"] == {"reason": "unsupported_type"}
    small = b"\x03" + rlp.encode(body)  # without blobs: the same answer
    assert err(node.url, "eth_sendRawTransaction", "0x" + small.hex())["data"] == {
        "reason": "unsupported_type"}


def test_indexer_matches_every_log(node: NodeProcess, mined: dict[str, Any]) -> None:
    """web3.py as an indexer: every eth_getLogs entry belongs to a transaction of its
    block or to the block's system transaction, and is in that transaction's receipt
    and in eth_getBlockReceipts."""
    url = node.url
    head = node.wait_height(2 * EPOCH + 1)
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 10}))
    logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": head})
    assert any(log["transactionHash"] == bytes.fromhex(mined["entry"]["transactionHash"][2:])
               for log in logs)
    system_seen = 0
    for log in logs:
        block = w3.eth.get_block(log["blockNumber"])
        block_receipts = w3.eth.get_block_receipts(log["blockNumber"])
        tx_hash = log["transactionHash"]
        tx = w3.eth.get_transaction(tx_hash)
        rec = w3.eth.get_transaction_receipt(tx_hash)
        assert tx["blockHash"] == log["blockHash"] and rec["blockHash"] == log["blockHash"]
        assert tx["transactionIndex"] == log["transactionIndex"] == rec["transactionIndex"]
        if tx_hash not in block["transactions"]:
            # the documented convention: one system transaction after the last one
            assert log["transactionIndex"] == len(block["transactions"])
            assert tx["from"] == to_checksum_address(ZERO) and tx["gas"] == 0
            assert rec["gasUsed"] == 0 and rec["status"] == 1
            assert w3.eth.get_transaction_by_block(log["blockNumber"], log["transactionIndex"])["hash"] == tx_hash
            system_seen += 1
        assert log in rec["logs"]
        assert rec in block_receipts
        assert _bloom_has(rec["logsBloom"], log)
    assert system_seen >= 2  # EpochSettled at the boundaries of epochs 0 and 1


def _bloom_has(bloom: bytes, log: Any) -> bool:
    from eth_bloom import BloomFilter

    f = BloomFilter(int.from_bytes(bytes(bloom), "big"))
    return bytes.fromhex(log["address"][2:]) in f and all(bytes(t) in f for t in log["topics"])


def test_system_transaction_json(node: NodeProcess) -> None:
    """Raw JSON of the system transaction: zero addresses, no fees, no envelope."""
    url = node.url
    node.wait_height(EPOCH + 1)
    logs = ok(url, "eth_getLogs", {"fromBlock": "0x0", "toBlock": hex(EPOCH + 1),
                                  "address": "0x" + "00" * 17 + "4d0705"})
    assert logs, "EpochSettled of epoch 0"
    log = logs[0]
    block = ok(url, "eth_getBlockByHash", log["blockHash"], False)
    tx = ok(url, "eth_getTransactionByHash", log["transactionHash"])
    assert tx["hash"] not in block["transactions"]
    assert tx["from"] == ZERO and tx["to"] == ZERO and tx["input"] == "0x"
    assert tx["transactionIndex"] == hex(len(block["transactions"]))
    assert ok(url, "eth_getRawTransactionByHash", log["transactionHash"]) is None
    rec = ok(url, "eth_getTransactionReceipt", log["transactionHash"])
    assert rec["logs"][log_index_in(rec, log)] == log
    assert ok(url, "eth_getBlockReceipts", log["blockHash"])[-1] == rec


def log_index_in(rec: dict[str, Any], log: dict[str, Any]) -> int:
    return [entry["logIndex"] for entry in rec["logs"]].index(log["logIndex"])
