"""web3.py with a Solidity contract (tests/fixtures/LogBook.sol) on a real node: deploy,
call, events, eth_getLogs filters and limits, revert reasons as ContractLogicError,
and eth_getProof checked by an independent Merkle-Patricia verifier against the
block's stateRoot."""

from __future__ import annotations

import pytest
import rlp
from eth_hash.auto import keccak
from trie import HexaryTrie
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

from tests.fixtures.rpc_node import CHAIN_ID, GWEI, dev_accounts, logbook, start_node
from tests.procs import NodeProcess

pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("web3_contracts"), pytest.mark.slow]

MAX_LOG_BLOCKS = 30
MAX_LOG_RESULTS = 5
TAG_A = b"A".ljust(32, b"\x00")
TAG_B = b"B".ljust(32, b"\x00")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = start_node(
        tmp_path_factory.mktemp("contracts"),
        max_log_blocks=MAX_LOG_BLOCKS,
        max_log_results=MAX_LOG_RESULTS,
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def w3(node: NodeProcess) -> Web3:
    return Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 10}))


def send(w3: Web3, acct, fn, **overrides) -> bytes:
    """Build (web3 estimates gas and fees), sign and send; returns the hash."""
    tx = fn.build_transaction(
        {
            "from": acct.address,
            "chainId": CHAIN_ID,
            "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
            **overrides,
        }
    )
    return w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)


def transact(w3: Web3, acct, fn, **overrides) -> dict:
    """Send and wait for the receipt."""
    h = send(w3, acct, fn, **overrides)
    return w3.eth.wait_for_transaction_receipt(h, timeout=10, poll_latency=0.1)


@pytest.fixture(scope="module")
def deployed(w3: Web3):
    """LogBook deployed by account 0, with entries: (0, A), (1, B), (0, B)."""
    spec = logbook()
    factory = w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
    owner, other = dev_accounts()[0], dev_accounts()[1]
    receipt = transact(w3, owner, factory.constructor())
    assert receipt["status"] == 1 and receipt["contractAddress"]
    book = w3.eth.contract(address=receipt["contractAddress"], abi=spec["abi"])
    entries = [
        transact(w3, owner, book.functions.record(TAG_A, "first")),
        transact(w3, other, book.functions.record(TAG_B, "second")),
        transact(w3, owner, book.functions.record(TAG_B, "third")),
    ]
    return book, receipt, entries


def test_deploy_and_call(w3: Web3, deployed) -> None:
    book, receipt, entries = deployed
    assert w3.eth.get_code(book.address).hex() == logbook()["deployedBytecode"][2:]
    assert book.functions.count().call() == 3
    assert book.functions.lastEntry(dev_accounts()[0].address).call() == 3
    assert book.functions.lastEntry(dev_accounts()[1].address).call() == 2
    assert book.functions.double(21).call() == 42
    assert w3.eth.get_storage_at(book.address, 0) == (3).to_bytes(32, "big")
    # state as of an older block
    assert book.functions.count().call(block_identifier=entries[0]["blockNumber"]) == 1


def test_events_in_receipts(w3: Web3, deployed) -> None:
    book, _, entries = deployed
    events = book.events.Entry().process_receipt(entries[1])
    assert len(events) == 1
    args = events[0]["args"]
    assert args["author"] == dev_accounts()[1].address
    assert args["seq"] == 2 and args["tag"] == TAG_B and args["note"] == "second"
    log = entries[1]["logs"][0]
    assert log["address"] == book.address
    assert log["transactionHash"] == entries[1]["transactionHash"]
    assert log["blockNumber"] == entries[1]["blockNumber"] and log["removed"] is False
    bloom = int.from_bytes(w3.eth.get_block(log["blockNumber"])["logsBloom"], "big")
    assert bloom != 0


def test_revert_reasons_reach_web3(w3: Web3, deployed, node: NodeProcess) -> None:
    book, _, _ = deployed
    with pytest.raises(ContractLogicError) as exc:
        book.functions.double(100).call()
    assert exc.value.message == "execution reverted: x must be below 100"
    with pytest.raises(ContractLogicError) as exc:
        book.functions.record(TAG_A, "").estimate_gas({"from": dev_accounts()[0].address})
    assert "note must not be empty" in exc.value.message
    with pytest.raises(ContractCustomError) as exc:  # custom error: data carries the selector
        book.functions.denied().call({"from": dev_accounts()[2].address})
    selector = Web3.keccak(text="NotAllowed(address)")[:4].hex()
    assert selector in exc.value.data
    # the raw answer is geth's: code 3, message with the reason, data = revert bytes
    raw = w3.provider.make_request(
        "eth_call", [{"to": book.address, "data": book.encode_abi("double", [100])}, "latest"]
    )
    assert raw["error"]["code"] == 3
    assert raw["error"]["message"] == "execution reverted: x must be below 100"
    assert raw["error"]["data"].startswith("0x08c379a0")


def test_failed_transaction_is_mined_with_status_zero(w3: Web3, deployed) -> None:
    book, _, _ = deployed
    receipt = transact(
        w3,
        dev_accounts()[3],
        book.functions.record(TAG_A, ""),
        gas=100_000,
        maxFeePerGas=10 * GWEI,
        maxPriorityFeePerGas=GWEI,
    )
    assert receipt["status"] == 0 and receipt["logs"] == []
    assert book.functions.count().call() == 3


def test_get_logs_filters(w3: Web3, deployed) -> None:
    book, receipt, entries = deployed
    start, end = receipt["blockNumber"], entries[-1]["blockNumber"]
    entry_topic = Web3.keccak(text="Entry(address,uint256,bytes32,string)")
    owner_topic = "0x" + dev_accounts()[0].address[2:].lower().rjust(64, "0")
    base = {"fromBlock": start, "toBlock": end}

    def seqs(flt: dict) -> list[int]:
        return [int.from_bytes(bytes(log["topics"][2]), "big") for log in w3.eth.get_logs(flt)]

    assert seqs({**base, "address": book.address}) == [1, 2, 3]
    assert seqs({**base, "address": [book.address, "0x" + "11" * 20]}) == [1, 2, 3]
    assert seqs({**base, "address": "0x" + "11" * 20}) == []
    assert seqs({**base, "topics": [entry_topic]}) == [1, 2, 3]
    assert seqs({**base, "topics": [entry_topic, owner_topic]}) == [1, 3]
    assert seqs({**base, "topics": [None, None, None, "0x" + TAG_B.hex()]}) == [2, 3]
    two_or_three = ["0x" + (2).to_bytes(32, "big").hex(), "0x" + (3).to_bytes(32, "big").hex()]
    assert seqs({**base, "topics": [None, None, two_or_three]}) == [2, 3]
    assert seqs({**base, "topics": [None, owner_topic, two_or_three]}) == [3]
    assert seqs({**base, "topics": [entry_topic, None, None, None]}) == [1, 2, 3]
    assert seqs({"blockHash": entries[1]["blockHash"]}) == [2]
    assert seqs(
        {"fromBlock": entries[1]["blockNumber"], "toBlock": "latest", "address": book.address}
    ) == [2, 3]
    logs = w3.eth.get_logs({"blockHash": entries[1]["blockHash"]})
    assert logs == entries[1]["logs"]  # same shape as in the receipt


def test_get_logs_limits(w3: Web3, deployed, node: NodeProcess) -> None:
    book, receipt, _ = deployed
    node.wait_height(MAX_LOG_BLOCKS + 1, timeout=40)
    with pytest.raises(Web3RPCError) as exc:
        w3.eth.get_logs({"fromBlock": 0, "toBlock": MAX_LOG_BLOCKS})
    err = exc.value.rpc_response["error"]
    assert err["code"] == -32005 and "max_log_blocks" in err["message"]
    with pytest.raises(Web3RPCError) as exc:
        w3.eth.get_logs({"fromBlock": 10, "toBlock": 5})
    assert exc.value.rpc_response["error"]["code"] == -32602
    # more matching logs than max_log_results in a short range: refused, not truncated
    hashes = [
        send(w3, dev_accounts()[4], book.functions.record(TAG_A, f"note {i}"))
        for i in range(MAX_LOG_RESULTS + 1)
    ]
    blocks = [
        w3.eth.wait_for_transaction_receipt(h, timeout=10, poll_latency=0.1)["blockNumber"]
        for h in hashes
    ]
    with pytest.raises(Web3RPCError) as exc:
        w3.eth.get_logs({"fromBlock": min(blocks), "toBlock": max(blocks), "address": book.address})
    err = exc.value.rpc_response["error"]
    assert err["code"] == -32005 and f"more than {MAX_LOG_RESULTS} results" in err["message"]


# --- eth_getProof, checked without the node's code ---------------------------------------


def _nibbles(key: bytes) -> list[int]:
    return [n for b in key for n in (b >> 4, b & 15)]


def _hex_prefix(path: bytes) -> tuple[list[int], bool]:
    flag = path[0] >> 4
    nibbles = _nibbles(path)[1 if flag & 1 else 2 :]
    return nibbles, bool(flag & 2)


def verify_mpt(root: bytes, key: bytes, proof: list[bytes]) -> bytes | None:
    """Value stored under ``key`` in the trie with ``root``, proven by ``proof`` (RLP nodes
    referenced by keccak hash, as EIP-1186 lists them); None proves absence. Raises
    KeyError or AssertionError if the proof does not connect to the root."""
    by_hash = {keccak(node): node for node in proof}
    path = _nibbles(keccak(key))
    ref: bytes | list = root
    while True:
        if isinstance(ref, bytes):
            if ref == b"":
                return None
            assert len(ref) == 32, "a hash reference is 32 bytes"
            node = rlp.decode(by_hash[ref])
        else:
            node = ref  # embedded in its parent (shorter than 32 bytes)
        if len(node) == 17:
            if not path:
                return node[16] or None
            ref, path = node[path[0]], path[1:]
        else:
            assert len(node) == 2, "trie nodes are branches (17) or leaves/extensions (2)"
            segment, is_leaf = _hex_prefix(node[0])
            if is_leaf:
                return node[1] if path == segment else None
            if path[: len(segment)] != segment:
                return None
            ref, path = node[1], path[len(segment) :]


def test_get_proof_verifies_against_state_root(w3: Web3, deployed) -> None:
    book, _, entries = deployed
    owner = dev_accounts()[0].address
    mapping_slot = Web3.keccak(bytes.fromhex(owner[2:].rjust(64, "0")) + (1).to_bytes(32, "big"))
    block = w3.eth.get_block("latest")
    proof = w3.eth.get_proof(book.address, [0, mapping_slot, 7], block["number"])
    account = rlp.decode(
        verify_mpt(
            block["stateRoot"],
            bytes.fromhex(book.address[2:]),
            [bytes(n) for n in proof["accountProof"]],
        )
    )
    nonce, balance, storage_root, code_hash = account
    assert int.from_bytes(nonce, "big") == proof["nonce"] == 1  # EIP-161: contracts start at 1
    assert int.from_bytes(balance, "big") == proof["balance"] == 0
    assert storage_root == bytes(proof["storageHash"])
    assert code_hash == bytes(proof["codeHash"]) == keccak(w3.eth.get_code(book.address))
    values = []
    for item in proof["storageProof"]:
        raw = verify_mpt(
            storage_root, bytes(item["key"]).rjust(32, b"\x00"), [bytes(n) for n in item["proof"]]
        )
        value = 0 if raw is None else int.from_bytes(rlp.decode(raw), "big")
        assert value == int.from_bytes(item["value"], "big")
        values.append(value)
    assert values[:2] == [book.functions.count().call(block_identifier=block["number"]), 3]
    assert values[2] == 0  # proven absent
    # the trie library agrees
    assert HexaryTrie.get_from_proof(
        block["stateRoot"],
        keccak(bytes.fromhex(book.address[2:])),
        [rlp.decode(bytes(n)) for n in proof["accountProof"]],
    )


def test_get_proof_of_absent_account(w3: Web3) -> None:
    block = w3.eth.get_block("latest")
    nobody = "0x" + "42" * 20
    proof = w3.eth.get_proof(nobody, [], block["number"])
    assert proof["balance"] == 0 and proof["nonce"] == 0
    assert (
        verify_mpt(
            block["stateRoot"], bytes.fromhex(nobody[2:]), [bytes(n) for n in proof["accountProof"]]
        )
        is None
    )
    tampered = w3.eth.get_proof(dev_accounts()[0].address, [], block["number"])
    nodes = [bytes(n) for n in tampered["accountProof"]]
    nodes[-1] = nodes[-1][:-1] + bytes([nodes[-1][-1] ^ 1])
    with pytest.raises(KeyError):
        verify_mpt(block["stateRoot"], bytes.fromhex(dev_accounts()[0].address[2:]), nodes)
