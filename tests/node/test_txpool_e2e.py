"""The transaction pool as wallets and tools see it, on a real node process (pool of 8,
4 per sender, queued lifetime 5 s): a replacement of a lone pending transaction is mined (MetaMask
"speed up", ethers replacement) and cannot jam the pool; the geth ``txpool_`` methods
through web3.py; a transaction stuck behind a nonce gap expires, and its sender can
send again (docs/rpc.md, "Transaction pool")."""

from __future__ import annotations

import time

import pytest
from web3 import Web3
from web3.exceptions import TransactionNotFound, Web3RPCError

from tests.fixtures.rpc_node import CHAIN_ID, GWEI, dev_accounts
from tests.procs import NodeProcess, init_home, set_config

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

POOL_BOUND = 8
PER_SENDER = 4
QUEUED_LIFETIME_S = 5


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    home = init_home(tmp_path_factory.mktemp("txpool"), "node")
    set_config(home, max_total=POOL_BOUND, max_per_sender=PER_SENDER,
               queued_lifetime_seconds=QUEUED_LIFETIME_S)
    proc = NodeProcess(home).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def w3(node: NodeProcess) -> Web3:
    return Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 10}))


def signed(acct, nonce: int, *, tip_gwei: int = 1, value: int = 0, to: str | None = None) -> bytes:
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": to or acct.address, "value": value,
          "gas": 21_000, "maxFeePerGas": 10 * tip_gwei * GWEI,
          "maxPriorityFeePerGas": tip_gwei * GWEI}
    return bytes(acct.sign_transaction(tx).raw_transaction)


def wait_receipt(w3: Web3, tx_hash: bytes, timeout: float = 30):
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.1)


def test_replacement_of_a_lone_transaction_is_mined_and_cannot_jam_the_pool(w3: Web3) -> None:
    """Send nonce n+1, replace it with a higher fee, send nonce n: both are mined. Once
    leaked orphans filled the pool (every sender here leaves one), every new transaction
    was refused with -32603; now a fresh sender's transfer goes through."""
    senders = dev_accounts()[:POOL_BOUND]
    replacements = []
    half = POOL_BOUND // 2  # each sender holds two transactions at a time
    for batch in (senders[:half], senders[half:]):
        firsts = []
        for acct in batch:
            n = w3.eth.get_transaction_count(acct.address, "pending")
            w3.eth.send_raw_transaction(signed(acct, n + 1))
            replacements.append(w3.eth.send_raw_transaction(signed(acct, n + 1, tip_gwei=2)))
            firsts.append(w3.eth.send_raw_transaction(signed(acct, n)))
        for tx_hash in firsts:
            assert wait_receipt(w3, tx_hash)["status"] == 1

    fresh = dev_accounts()[POOL_BOUND]
    n = w3.eth.get_transaction_count(fresh.address, "pending")
    assert wait_receipt(w3, w3.eth.send_raw_transaction(signed(fresh, n)))["status"] == 1

    for acct, tx_hash in zip(senders, replacements, strict=True):
        assert wait_receipt(w3, tx_hash)["status"] == 1
        assert w3.eth.get_transaction_count(acct.address, "latest") == \
            w3.eth.get_transaction_count(acct.address, "pending")
    assert w3.geth.txpool.status() == {"pending": "0x0", "queued": "0x0"}  # geth's hex


def test_txpool_methods_in_geths_shapes_through_web3(w3: Web3) -> None:
    acct = dev_accounts()[9]
    n = w3.eth.get_transaction_count(acct.address, "pending")
    creation = {"type": 2, "chainId": CHAIN_ID, "nonce": n + 2, "value": 0, "data": b"",
                "gas": 60_000, "maxFeePerGas": 10 * GWEI, "maxPriorityFeePerGas": GWEI}
    queued_hashes = [w3.eth.send_raw_transaction(signed(acct, n + 1, value=7, to=dev_accounts()[0].address)),
                     w3.eth.send_raw_transaction(acct.sign_transaction(creation).raw_transaction)]
    # Through web3.py (which passes each transaction on as the node wrote it): the
    # queued pair, which no block can take.
    content = w3.geth.txpool.content()
    assert content["pending"] == {}
    queued = content["queued"][acct.address]
    assert sorted(queued, key=int) == [str(n + 1), str(n + 2)]
    assert [queued[str(n + 1)]["hash"], queued[str(n + 2)]["hash"]] == \
        ["0x" + h.hex() for h in queued_hashes]
    assert queued[str(n + 1)]["nonce"] == hex(n + 1) and queued[str(n + 1)]["value"] == "0x7"
    assert queued[str(n + 2)]["to"] is None
    inspect = w3.geth.txpool.inspect()
    assert inspect["queued"][acct.address] == {
        str(n + 1): f"{dev_accounts()[0].address}: 7 wei + 21000 gas × {10 * GWEI} wei",
        str(n + 2): f"contract creation: 0 wei + 60000 gas × {10 * GWEI} wei",
    }

    # Nonce n and the reads in one batch: the node runs a batch's handlers back to back
    # (txpool_content and _inspect run in a worker thread, so a block could pass before
    # them: they are checked above), so no block mines n in between. Raw answers:
    # geth's exact JSON.
    answers = w3.provider.make_batch_request([
        ("eth_sendRawTransaction", ["0x" + signed(acct, n).hex()]),
        ("txpool_status", []), ("txpool_contentFrom", [acct.address])])
    sent, status, own = (a["result"] for a in answers)
    # n fills the gap: all three are pending now
    assert status == {"pending": "0x3", "queued": "0x0"}
    assert own["queued"] == {}
    pending = own["pending"]
    assert list(pending) == [str(n), str(n + 1), str(n + 2)]
    tx = pending[str(n)]
    assert tx["hash"] == sent and tx["nonce"] == hex(n) and tx["from"] == acct.address.lower()
    assert tx["blockHash"] is None and tx["blockNumber"] is None and tx["transactionIndex"] is None
    assert tx["maxFeePerGas"] == hex(10 * GWEI) and tx["gasPrice"] == hex(10 * GWEI)
    assert pending[str(n + 2)]["to"] is None and pending[str(n + 1)]["value"] == "0x7"

    assert w3.provider.make_request("txpool_contentFrom", ["0x" + "00" * 20])["result"] == \
        {"pending": {}, "queued": {}}
    bad = w3.provider.make_request("txpool_contentFrom", ["0x12"])
    assert bad["error"]["code"] == -32602

    for tx_hash in (bytes.fromhex(sent[2:]), *queued_hashes):  # n filled the gap: all mined
        assert wait_receipt(w3, tx_hash)["status"] == 1


def test_a_transaction_behind_a_gap_expires_and_its_sender_recovers(w3: Web3, node: NodeProcess) -> None:
    """A nonce refused under load leaves later ones stuck (issue 15), and its sender at
    the per-sender limit: they expire after the queued lifetime, the pending nonce is
    the state's again, and the sender's next transactions are mined."""
    acct = dev_accounts()[1]
    n = w3.eth.get_transaction_count(acct.address, "pending")
    stuck = [w3.eth.send_raw_transaction(signed(acct, n + i)) for i in range(1, PER_SENDER)]
    assert w3.geth.txpool.status()["queued"] == hex(PER_SENDER - 1)
    with pytest.raises(Web3RPCError) as exc:  # the sender's window is full
        w3.eth.send_raw_transaction(signed(acct, n + PER_SENDER))
    assert exc.value.rpc_response["error"]["data"] == {"reason": "nonce_too_high"}
    with pytest.raises(Web3RPCError) as exc:  # the same bytes again, while queued
        w3.eth.send_raw_transaction(signed(acct, n + 2))
    assert exc.value.rpc_response["error"]["message"] == "already known"

    deadline = time.monotonic() + QUEUED_LIFETIME_S + 10
    while w3.geth.txpool.status()["queued"] != "0x0" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert w3.geth.txpool.status() == {"pending": "0x0", "queued": "0x0"}
    for tx_hash in stuck:
        with pytest.raises(TransactionNotFound):
            w3.eth.get_transaction(tx_hash)
    assert w3.eth.get_transaction_count(acct.address, "pending") == n
    assert f'motus_mempool_removed_total{{reason="expired"}} {PER_SENDER - 1}.0' in _metrics(node)

    again = [w3.eth.send_raw_transaction(signed(acct, n + i, tip_gwei=2)) for i in range(PER_SENDER)]
    for tx_hash in again:
        assert wait_receipt(w3, tx_hash)["status"] == 1


def _metrics(node: NodeProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as resp:
        return resp.read().decode()
