"""web3.py against a real node over HTTP: identity, block shape, value transfers of every
transaction type, nonces, fee methods, the mempool's refusals as wallets see them, and a
restart that keeps every block, balance and receipt."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import BlockNotFound, TransactionNotFound, Web3RPCError

from tests.fixtures.rpc_node import CHAIN_ID, GWEI, MOTUS, dev_accounts, start_node
from tests.procs import NodeProcess

pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("web3_transfers"), pytest.mark.slow]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = start_node(tmp_path_factory.mktemp("transfers"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def w3(node: NodeProcess) -> Web3:
    return Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 10}))


def send(w3: Web3, acct, **fields) -> bytes:
    tx = {
        "chainId": CHAIN_ID,
        "gas": 21_000,
        "value": 0,
        "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
        "maxFeePerGas": 10 * GWEI,
        "maxPriorityFeePerGas": GWEI,
        **fields,
    }
    if "gasPrice" in tx:
        tx.pop("maxFeePerGas")
        tx.pop("maxPriorityFeePerGas")
    return w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)


def rpc_error(exc: pytest.ExceptionInfo) -> dict:
    return exc.value.rpc_response["error"]


def test_identity(w3: Web3) -> None:
    assert w3.eth.chain_id == CHAIN_ID
    assert w3.net.version == str(CHAIN_ID)
    assert w3.client_version.startswith("Motus/v")
    assert w3.eth.syncing is False
    assert w3.eth.accounts == []
    assert w3.net.listening is True
    assert w3.net.peer_count == 0


def test_blocks_are_ethereum_shaped(w3: Web3, node: NodeProcess) -> None:
    node.wait_height(2)
    latest = w3.eth.get_block("latest")
    assert latest["number"] >= 2
    assert w3.eth.get_block(latest["hash"]) == latest
    parent = w3.eth.get_block(latest["number"] - 1)
    assert latest["parentHash"] == parent["hash"]
    assert latest["timestamp"] >= parent["timestamp"]
    assert latest["difficulty"] == 0 and latest["uncles"] == []
    assert latest["nonce"] == b"\x00" * 8
    assert (
        latest["sha3Uncles"].hex()
        == "1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
    )
    assert latest["baseFeePerGas"] >= GWEI  # the chain's floor
    assert latest["size"] > 0 and latest["gasLimit"] == 30_000_000
    assert Web3.is_checksum_address(latest["miner"])
    # Motus fields pass through web3 unformatted
    assert int(latest["timestampMs"], 16) // 1000 == latest["timestamp"]
    assert len(latest["validatorsHash"]) == 66 and len(latest["attestationsRoot"]) == 66
    genesis = w3.eth.get_block("earliest")
    assert genesis["number"] == 0 and genesis["parentHash"] == b"\x00" * 32
    for tag in ("safe", "finalized", "pending"):  # every block is final
        assert w3.eth.get_block(tag)["number"] >= latest["number"]
    with pytest.raises(BlockNotFound):
        w3.eth.get_block(10**9)


def test_transfer_updates_balances_nonces_and_receipts(w3: Web3) -> None:
    sender = dev_accounts()[0]
    to = Account.create().address
    before = w3.eth.get_balance(sender.address)
    nonce = w3.eth.get_transaction_count(sender.address)
    tx_hash = send(w3, sender, to=to, value=3 * MOTUS // 2)
    seen = w3.eth.get_transaction(tx_hash)  # pending or already mined
    assert seen["from"] == sender.address and seen["to"] == to and seen["nonce"] == nonce
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.1)
    assert receipt["status"] == 1
    assert receipt["gasUsed"] == 21_000 and receipt["cumulativeGasUsed"] >= 21_000
    assert receipt["from"] == sender.address and receipt["to"] == to
    assert receipt["contractAddress"] is None and receipt["logs"] == []
    assert receipt["type"] == 2
    block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
    assert receipt["effectiveGasPrice"] == block["baseFeePerGas"] + GWEI
    mined = w3.eth.get_transaction(tx_hash)
    assert mined["blockHash"] == receipt["blockHash"] == block["hash"]
    assert mined["gasPrice"] == receipt["effectiveGasPrice"]
    assert [t["hash"] for t in block["transactions"]] == [tx_hash]
    assert w3.eth.get_block(receipt["blockNumber"])["transactions"] == [tx_hash]
    assert w3.eth.get_balance(to) == 3 * MOTUS // 2
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert w3.eth.get_balance(sender.address) == before - 3 * MOTUS // 2 - fee
    assert w3.eth.get_transaction_count(sender.address) == nonce + 1
    # the balance as of the block before the transfer is still there
    assert w3.eth.get_balance(to, receipt["blockNumber"] - 1) == 0


def test_legacy_and_access_list_transactions(w3: Web3) -> None:
    sender = dev_accounts()[1]
    to = Account.create().address
    legacy = send(w3, sender, to=to, value=1, gasPrice=5 * GWEI)
    w3.eth.wait_for_transaction_receipt(legacy, timeout=10, poll_latency=0.1)
    access = send(
        w3,
        sender,
        to=to,
        value=2,
        gasPrice=5 * GWEI,
        gas=30_000,
        type=1,
        accessList=[{"address": to, "storageKeys": ["0x" + "00" * 32]}],
    )
    receipt = w3.eth.wait_for_transaction_receipt(access, timeout=10, poll_latency=0.1)
    assert receipt["status"] == 1 and receipt["type"] == 1
    tx = w3.eth.get_transaction(access)
    assert tx["type"] == 1 and tx["accessList"][0]["address"] == to
    assert w3.eth.get_transaction(legacy)["type"] == 0
    assert w3.eth.get_transaction(legacy)["gasPrice"] == 5 * GWEI
    assert w3.eth.get_balance(to) == 3


def test_pending_nonce_counts_the_mempool(w3: Web3) -> None:
    sender = dev_accounts()[2]
    start = w3.eth.get_transaction_count(sender.address, "pending")
    hashes = [send(w3, sender, to=sender.address, nonce=start + i) for i in range(3)]
    assert w3.eth.get_transaction_count(sender.address, "pending") == start + 3
    for h in hashes:
        w3.eth.wait_for_transaction_receipt(h, timeout=10, poll_latency=0.1)
    assert w3.eth.get_transaction_count(sender.address, "latest") == start + 3


def test_mempool_refusals_as_geth_words_them(w3: Web3) -> None:
    sender = dev_accounts()[3]
    nonce = w3.eth.get_transaction_count(sender.address, "pending")
    h = send(w3, sender, to=sender.address, nonce=nonce)
    w3.eth.wait_for_transaction_receipt(h, timeout=10, poll_latency=0.1)

    with pytest.raises(Web3RPCError) as exc:
        send(w3, sender, to=sender.address, nonce=nonce)
    err = rpc_error(exc)
    assert err["code"] == -32000 and err["message"].startswith("nonce too low")
    assert err["data"] == {"reason": "nonce_too_low"}

    # a transaction after a nonce gap waits in the pool: replace it without a fee bump
    gapped = dict(to=sender.address, nonce=nonce + 5)
    first = send(w3, sender, **gapped)
    with pytest.raises(Web3RPCError) as exc:
        send(w3, sender, value=1, **gapped)
    err = rpc_error(exc)
    assert err["message"] == "replacement transaction underpriced"
    assert err["data"] == {"reason": "replacement_underpriced"}
    assert w3.eth.get_transaction(first)["blockNumber"] is None  # pending, served from the pool
    with pytest.raises(Web3RPCError) as exc:  # the very same bytes again
        send(w3, sender, **gapped)
    assert rpc_error(exc)["data"] == {"reason": "already_known"}

    pauper = Account.create()
    with pytest.raises(Web3RPCError) as exc:
        send(w3, pauper, to=sender.address, value=1, nonce=0)
    err = rpc_error(exc)
    assert err["message"].startswith("insufficient funds for gas * price + value")
    assert err["data"] == {"reason": "insufficient_funds"}

    with pytest.raises(Web3RPCError) as exc:
        send(w3, sender, to=sender.address, chainId=1)
    err = rpc_error(exc)
    assert err["code"] == -32000 and "chain id" in err["message"]
    assert err["data"] == {"reason": "wrong_chain_id"}

    with pytest.raises(Web3RPCError) as exc:
        w3.eth.send_raw_transaction(b"\x02not a transaction")
    assert rpc_error(exc)["data"] == {"reason": "malformed"}


def test_call_with_value_beyond_balance(w3: Web3) -> None:
    pauper = Account.create().address
    with pytest.raises(Web3RPCError) as exc:
        w3.eth.estimate_gas({"from": pauper, "to": dev_accounts()[0].address, "value": 1})
    err = rpc_error(exc)
    assert err["code"] == -32000 and err["message"].startswith("insufficient funds for transfer")
    assert "data" not in err  # web3.py would take it for a revert


def test_fee_methods(w3: Web3) -> None:
    tip = w3.eth.max_priority_fee
    assert GWEI // 10 <= tip <= 500 * GWEI
    latest = w3.eth.get_block("latest")
    assert w3.eth.gas_price >= latest["baseFeePerGas"]
    history = w3.eth.fee_history(4, "latest", [25, 75])
    assert len(history["baseFeePerGas"]) == 5  # four blocks and the next one
    assert len(history["gasUsedRatio"]) == 4 and len(history["reward"]) == 4
    assert all(len(r) == 2 for r in history["reward"])
    assert history["oldestBlock"] <= latest["number"]
    # web3's own fee logic works end to end: a transaction without explicit fees
    sender = dev_accounts()[4]
    tx = {
        "chainId": CHAIN_ID,
        "to": sender.address,
        "value": 0,
        "gas": 21_000,
        "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
        "maxFeePerGas": w3.eth.gas_price * 2,
        "maxPriorityFeePerGas": tip,
    }
    h = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    assert w3.eth.wait_for_transaction_receipt(h, timeout=10, poll_latency=0.1)["status"] == 1


def test_unknown_things_are_null_not_errors(w3: Web3) -> None:
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction("0x" + "ab" * 32)
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt("0x" + "ab" * 32)
    with pytest.raises(BlockNotFound):
        w3.eth.get_block("0x" + "ab" * 32)


def test_restart_keeps_blocks_balances_and_receipts(w3: Web3, node: NodeProcess) -> None:
    sender = dev_accounts()[5]
    to = Account.create().address
    receipt = w3.eth.wait_for_transaction_receipt(
        send(w3, sender, to=to, value=7), timeout=10, poll_latency=0.1
    )
    height = w3.eth.block_number
    block = w3.eth.get_block(receipt["blockNumber"])
    balances = {a: w3.eth.get_balance(a, height) for a in (sender.address, to)}
    node.stop()
    node.start()
    assert w3.eth.block_number >= height
    assert w3.eth.get_block(receipt["blockNumber"]) == block
    assert w3.eth.get_transaction_receipt(receipt["transactionHash"]) == receipt
    assert {a: w3.eth.get_balance(a, height) for a in balances} == balances
    assert w3.eth.get_balance(to) == 7
    node.wait_height(height + 2)  # and it keeps making blocks
