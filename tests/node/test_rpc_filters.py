"""The polled filter API (eth_newFilter & co.) and eth_subscribe("newPendingTransactions")
on a real node, driven by web3.py as a dapp would: geth's shapes, geth's "filter not
found", the idle expiry, the per-client and total bounds, the bounded change buffer,
and log filters that give exactly what eth_getLogs gives over the same blocks."""

from __future__ import annotations

import asyncio
import http.client
import json
import time

import pytest
from web3 import Web3
from web3.exceptions import Web3RPCError

from tests.fixtures.rpc_node import CHAIN_ID, GWEI, dev_accounts, logbook
from tests.procs import NodeProcess, init_home, set_config
from vm.modules.addresses import REWARDS

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("rpc_filters"), pytest.mark.slow]

FILTER_TIMEOUT = 3  # seconds, instead of geth's 300, so that expiry is seen in a test
MAX_FILTERS = 12
MAX_FILTERS_PER_CLIENT = 8
MAX_FILTER_CHANGES = 4
EPOCH = 10  # blocks; each epoch boundary emits block events (EpochSettled)
TAG_A = b"A".ljust(32, b"\x00")
TAG_B = b"B".ljust(32, b"\x00")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    home = init_home(tmp_path_factory.mktemp("filters"), "node")
    set_config(
        home,
        filter_timeout_seconds=FILTER_TIMEOUT,
        max_filters=MAX_FILTERS,
        max_filters_per_client=MAX_FILTERS_PER_CLIENT,
        max_filter_changes=MAX_FILTER_CHANGES,
    )
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["params"]["epoch_length_blocks"] = EPOCH  # block events every 2 s
    (home / "genesis.json").write_text(json.dumps(genesis, indent=2))
    proc = NodeProcess(home).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def w3(node: NodeProcess) -> Web3:
    return Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 10}))


def raw_call(url: str, method: str, params: list, source: str = "127.0.0.1") -> dict:
    """One JSON-RPC call from a chosen loopback source address (another client)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(source, 0))
    try:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        conn.request("POST", "/", body, {"Content-Type": "application/json"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def transfer(w3: Web3, acct, nonce: int | None = None) -> bytes:
    tx = {
        "to": dev_accounts()[9].address, "value": 1, "gas": 21_000, "chainId": CHAIN_ID,
        "maxFeePerGas": 100 * GWEI, "maxPriorityFeePerGas": GWEI,
        "nonce": w3.eth.get_transaction_count(acct.address, "pending") if nonce is None else nonce,
    }
    return w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)


def transact(w3: Web3, acct, fn) -> dict:
    tx = fn.build_transaction({
        "from": acct.address, "chainId": CHAIN_ID,
        "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
    })
    h = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(h, timeout=10, poll_latency=0.1)


@pytest.fixture(scope="module")
def book(w3: Web3):
    spec = logbook()
    factory = w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
    receipt = transact(w3, dev_accounts()[0], factory.constructor())
    return w3.eth.contract(address=receipt["contractAddress"], abi=spec["abi"])


def wait_blocks(w3: Web3, n: int) -> int:
    target = w3.eth.block_number + n
    deadline = time.monotonic() + 10
    while w3.eth.block_number < target:
        assert time.monotonic() < deadline, "no new blocks"
        time.sleep(0.05)
    return target


def test_block_filter_gives_each_new_block_once(w3: Web3) -> None:
    flt = w3.eth.filter("latest")  # eth_newBlockFilter
    w3.eth.get_filter_changes(flt.filter_id)  # may hold a block committed meanwhile
    wait_blocks(w3, 3)
    hashes = w3.eth.get_filter_changes(flt.filter_id)
    assert 3 <= len(hashes) <= MAX_FILTER_CHANGES
    heights = [w3.eth.get_block(h)["number"] for h in hashes]
    assert heights == list(range(heights[0], heights[0] + len(heights)))  # consecutive, in order
    again = w3.eth.get_filter_changes(flt.filter_id)
    assert not set(again) & set(hashes)  # a poll returns only what is new
    assert w3.eth.uninstall_filter(flt.filter_id) is True
    assert w3.eth.uninstall_filter(flt.filter_id) is False


def test_unknown_filter_is_geths_filter_not_found(node: NodeProcess, w3: Web3) -> None:
    for method in ("eth_getFilterChanges", "eth_getFilterLogs"):
        err = raw_call(node.url, method, ["0x" + "ab" * 16])["error"]
        assert err == {"code": -32000, "message": "filter not found"}
    with pytest.raises(Web3RPCError, match="filter not found"):
        w3.eth.get_filter_changes("0x1234")
    # a block filter is not a log filter: geth answers getFilterLogs with "not found"
    fid = w3.eth.filter("latest").filter_id
    assert raw_call(node.url, "eth_getFilterLogs", [fid])["error"]["message"] == "filter not found"
    w3.eth.uninstall_filter(fid)


def test_pending_filter_sees_submitted_transactions(node: NodeProcess, w3: Web3) -> None:
    hashes_only = w3.eth.filter("pending")  # eth_newPendingTransactionFilter
    full = raw_call(node.url, "eth_newPendingTransactionFilter", [True])["result"]
    sent = transfer(w3, dev_accounts()[2])
    assert w3.eth.get_filter_changes(hashes_only.filter_id) == [sent]
    [tx] = raw_call(node.url, "eth_getFilterChanges", [full])["result"]
    assert tx["hash"] == "0x" + sent.hex() and tx["blockHash"] is None
    assert tx["from"].lower() == dev_accounts()[2].address.lower() and tx["value"] == "0x1"
    w3.eth.wait_for_transaction_receipt(sent, timeout=10, poll_latency=0.1)
    for fid in (hashes_only.filter_id, full):
        assert w3.eth.uninstall_filter(fid)


def test_log_filter_changes_equal_get_logs_over_the_same_blocks(w3: Web3, book) -> None:
    owner, other = dev_accounts()[0], dev_accounts()[1]
    start = w3.eth.block_number + 1
    by_address = book.events.Entry.create_filter(from_block="latest")  # eth_newFilter
    by_topic = w3.eth.filter({"topics": [None, None, None, "0x" + TAG_B.hex()]})
    every_log = w3.eth.filter({})
    receipts = [
        transact(w3, owner, book.functions.record(TAG_A, "one")),
        transact(w3, other, book.functions.record(TAG_B, "two")),
    ]
    end = max(r["blockNumber"] for r in receipts)
    got = w3.eth.get_filter_changes(by_address.filter_id)
    assert [e["transactionHash"] for e in got] == [r["transactionHash"] for r in receipts]
    assert all(e["removed"] is False for e in got)  # final blocks: never removed
    # identical to eth_getLogs with the same criteria over the blocks the filter saw
    assert got == w3.eth.get_logs({"address": book.address, "fromBlock": start, "toBlock": end})
    topical = w3.eth.get_filter_changes(by_topic.filter_id)
    assert [e["transactionHash"] for e in topical] == [receipts[1]["transactionHash"]]
    # a filter of every log sees every log of those blocks, block events included, as
    # eth_getLogs serves them
    everything = [e for e in w3.eth.get_filter_changes(every_log.filter_id)
                  if e["blockNumber"] <= end]
    assert everything == w3.eth.get_logs({"fromBlock": start, "toBlock": end})
    for flt in (by_address, by_topic, every_log):
        w3.eth.uninstall_filter(flt.filter_id)


def test_block_events_reach_log_filters_as_get_logs_serves_them(w3: Web3) -> None:
    rewards = Web3.to_checksum_address(REWARDS)
    flt = w3.eth.filter({"address": rewards})
    start = w3.eth.block_number + 1
    end = start + EPOCH  # crosses an epoch boundary
    got: list = []
    deadline = time.monotonic() + 20
    while w3.eth.block_number < end:  # polling keeps the filter alive (FILTER_TIMEOUT)
        assert time.monotonic() < deadline, "no new blocks"
        got += w3.eth.get_filter_changes(flt.filter_id)
        time.sleep(0.2)
    got = [e for e in got + w3.eth.get_filter_changes(flt.filter_id) if e["blockNumber"] <= end]
    assert got, "no block event in an epoch"
    assert got == w3.eth.get_logs({"address": rewards, "fromBlock": start, "toBlock": end})
    w3.eth.uninstall_filter(flt.filter_id)


def test_get_filter_logs_is_get_logs_with_the_filters_criteria(w3: Web3, book) -> None:
    transact(w3, dev_accounts()[0], book.functions.record(TAG_A, "history"))
    criteria = {"address": book.address, "fromBlock": "earliest", "toBlock": "latest"}
    flt = w3.eth.filter(criteria)
    head = w3.eth.block_number
    logs = w3.eth.get_filter_logs(flt.filter_id)
    assert logs and logs == w3.eth.get_logs({**criteria, "toBlock": head})
    # fromBlock/toBlock numbers bound what a poll returns: a range in the past gets nothing
    past = w3.eth.filter({"address": book.address, "fromBlock": 1, "toBlock": head})
    transact(w3, dev_accounts()[0], book.functions.record(TAG_A, "later"))
    assert w3.eth.get_filter_changes(past.filter_id) == []
    # blockHash: getFilterLogs answers that block's logs
    block_hash = logs[-1]["blockHash"]
    one = w3.eth.filter({"blockHash": "0x" + bytes(block_hash).hex()})
    assert w3.eth.get_filter_logs(one.filter_id) == w3.eth.get_logs({"blockHash": block_hash})
    for f in (flt, past, one):
        w3.eth.uninstall_filter(f.filter_id)


def test_bad_filters_are_invalid_params(node: NodeProcess) -> None:
    cases = [
        [{"fromBlock": "0x5", "toBlock": "0x2"}],
        [{"address": "0x1234"}],
        [{"topics": "nope"}],
        [{"blockHash": "0x" + "11" * 32, "fromBlock": "0x1"}],
        ["not an object"],
    ]
    for params in cases:
        assert raw_call(node.url, "eth_newFilter", params)["error"]["code"] == -32602, params


def test_idle_filter_expires_and_polling_keeps_it(w3: Web3) -> None:
    idle = w3.eth.filter("latest").filter_id
    polled = w3.eth.filter("latest").filter_id
    deadline = time.monotonic() + FILTER_TIMEOUT + 1.5
    while time.monotonic() < deadline:
        w3.eth.get_filter_changes(polled)  # each poll restarts the idle deadline
        time.sleep(FILTER_TIMEOUT / 3)
    with pytest.raises(Web3RPCError, match="filter not found"):
        w3.eth.get_filter_changes(idle)
    w3.eth.get_filter_changes(polled)
    assert w3.eth.uninstall_filter(idle) is False
    assert w3.eth.uninstall_filter(polled) is True


def test_changes_are_bounded_oldest_dropped(w3: Web3) -> None:
    fid = w3.eth.filter("latest").filter_id
    w3.eth.get_filter_changes(fid)
    newest = wait_blocks(w3, MAX_FILTER_CHANGES + 3)
    hashes = w3.eth.get_filter_changes(fid)
    assert len(hashes) == MAX_FILTER_CHANGES  # the oldest were dropped
    heights = [w3.eth.get_block(h)["number"] for h in hashes]
    assert heights[-1] >= newest and heights == sorted(heights)
    w3.eth.uninstall_filter(fid)


def test_filter_count_is_bounded_per_client_and_in_all(node: NodeProcess, w3: Web3) -> None:
    mine = [w3.eth.filter("latest").filter_id for _ in range(MAX_FILTERS_PER_CLIENT)]
    err = raw_call(node.url, "eth_newBlockFilter", [])["error"]
    assert err["code"] == -32005 and err["data"] == {"reason": "too_many_filters_per_client"}
    # another client address still may, up to the node's total
    others = []
    for _ in range(MAX_FILTERS - MAX_FILTERS_PER_CLIENT):
        others.append(raw_call(node.url, "eth_newBlockFilter", [], source="127.0.0.2")["result"])
    err = raw_call(node.url, "eth_newBlockFilter", [], source="127.0.0.3")["error"]
    assert err["code"] == -32005 and err["data"] == {"reason": "too_many_filters"}
    for fid in mine:
        assert w3.eth.uninstall_filter(fid)
    for fid in others:
        assert raw_call(node.url, "eth_uninstallFilter", [fid], source="127.0.0.2")["result"]
    w3.eth.uninstall_filter(w3.eth.filter("latest").filter_id)  # room again


def test_new_pending_transactions_subscription(node: NodeProcess, w3: Web3) -> None:
    websockets = pytest.importorskip("websockets")
    url = node.url.replace("http://", "ws://")

    async def run() -> None:
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                      "params": ["newPendingTransactions"]}))
            hashes = json.loads(await ws.recv())["result"]
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_subscribe",
                                      "params": ["newPendingTransactions", True]}))
            fulls = json.loads(await ws.recv())["result"]
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "eth_subscribe",
                                      "params": ["newPendingTransactions", {"x": 1}]}))
            assert json.loads(await ws.recv())["error"]["code"] == -32602
            sent = await asyncio.to_thread(transfer, w3, dev_accounts()[3])
            got: dict[str, object] = {}
            while len(got) < 2:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                got[msg["params"]["subscription"]] = msg["params"]["result"]
            assert got[hashes] == "0x" + sent.hex()
            tx = got[fulls]
            assert isinstance(tx, dict) and tx["hash"] == "0x" + sent.hex()
            assert tx["blockNumber"] is None and tx["nonce"] is not None

    asyncio.run(asyncio.wait_for(run(), 30))


def test_web3_websocket_subscription_of_pending_hashes(node: NodeProcess, w3: Web3) -> None:
    pytest.importorskip("websockets")
    from web3 import AsyncWeb3, WebSocketProvider

    async def run() -> None:
        async with AsyncWeb3(WebSocketProvider(node.url.replace("http://", "ws://"))) as aw3:
            sub = await aw3.eth.subscribe("newPendingTransactions")
            sent = await asyncio.to_thread(transfer, w3, dev_accounts()[4])
            async for msg in aw3.socket.process_subscriptions():
                assert msg["subscription"] == sub
                assert bytes(msg["result"]) == bytes(sent)
                break

    asyncio.run(asyncio.wait_for(run(), 30))
