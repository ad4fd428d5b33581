"""JSON-RPC over WebSocket on the HTTP port: web3.py's WebSocketProvider with newHeads and
logs subscriptions on a real node, raw-frame checks of the limits, and the slow
subscriber rule checked in-process (a client that does not read is closed with a reason)."""

from __future__ import annotations

import asyncio
import json

import pytest
import trio
import trio.testing
from web3 import AsyncWeb3, Web3, WebSocketProvider
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, TextMessage

from node.rpc.subscriptions import MAX_SUBSCRIPTIONS_PER_SESSION, Subscription, SubscriptionHub
from node.rpc.websocket import OUTGOING_QUEUE, WebSocketSession
from tests.fixtures.rpc_node import CHAIN_ID, dev_accounts, logbook, start_node
from tests.procs import NodeProcess

pytestmark = [pytest.mark.timeout(60), pytest.mark.xdist_group("rpc_websocket")]

MAX_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = start_node(tmp_path_factory.mktemp("ws"), max_request_bytes=MAX_BYTES)
    yield proc
    proc.stop()


def ws_url(node: NodeProcess) -> str:
    return f"ws://127.0.0.1:{node.rpc_port}"


@pytest.fixture(scope="module")
def book(node: NodeProcess):
    w3 = Web3(Web3.HTTPProvider(node.url))
    spec = logbook()
    owner = dev_accounts()[0]
    tx = (
        w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
        .constructor()
        .build_transaction(
            {
                "from": owner.address,
                "chainId": CHAIN_ID,
                "nonce": w3.eth.get_transaction_count(owner.address, "pending"),
            }
        )
    )
    h = w3.eth.send_raw_transaction(owner.sign_transaction(tx).raw_transaction)
    address = w3.eth.wait_for_transaction_receipt(h, timeout=10, poll_latency=0.1)[
        "contractAddress"
    ]
    return w3, w3.eth.contract(address=address, abi=spec["abi"])


@pytest.mark.slow
def test_web3_new_heads(node: NodeProcess) -> None:
    async def scenario() -> list[dict]:
        async with AsyncWeb3(WebSocketProvider(ws_url(node))) as w3:
            assert await w3.eth.chain_id == CHAIN_ID
            assert (await w3.eth.get_block("latest"))["number"] >= 0
            sub = await w3.eth.subscribe("newHeads")
            heads = []
            async for message in w3.socket.process_subscriptions():
                assert message["subscription"] == sub
                heads.append(message["result"])
                if len(heads) == 3:
                    break
            assert await w3.eth.unsubscribe(sub) is True
            return heads

    heads = asyncio.run(asyncio.wait_for(scenario(), 20))
    numbers = [h["number"] for h in heads]
    assert numbers == list(range(numbers[0], numbers[0] + 3))
    assert heads[1]["parentHash"] == heads[0]["hash"]
    assert all(h["timestamp"] > 0 and h["baseFeePerGas"] > 0 for h in heads)


@pytest.mark.slow
def test_web3_logs_subscription_with_filters(node: NodeProcess, book) -> None:
    w3, contract = book
    owner, other = dev_accounts()[0], dev_accounts()[1]
    owner_topic = "0x" + owner.address[2:].lower().rjust(64, "0")
    entry_topic = "0x" + Web3.keccak(text="Entry(address,uint256,bytes32,string)").hex()

    def record(acct, note: str) -> bytes:
        tx = contract.functions.record(b"\x01" * 32, note).build_transaction(
            {
                "from": acct.address,
                "chainId": CHAIN_ID,
                "nonce": w3.eth.get_transaction_count(acct.address, "pending"),
            }
        )
        return w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)

    async def scenario() -> tuple[list[dict], list[dict]]:
        async with AsyncWeb3(WebSocketProvider(ws_url(node))) as aw3:
            mine = await aw3.eth.subscribe(
                "logs", {"address": contract.address, "topics": [entry_topic, owner_topic]}
            )
            await aw3.eth.subscribe("logs", {"address": "0x" + "11" * 20})
            await asyncio.to_thread(record, other, "not for the filter")
            await asyncio.to_thread(record, owner, "for the filter")
            got: list[dict] = []
            stray: list[dict] = []
            async for message in aw3.socket.process_subscriptions():
                (got if message["subscription"] == mine else stray).append(message["result"])
                if got:
                    break
            return got, stray

    got, stray = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert stray == []
    [log] = got
    assert log["address"] == contract.address
    event = contract.events.Entry().process_log(log)
    assert event["args"]["author"] == owner.address and event["args"]["note"] == "for the filter"
    receipt = w3.eth.get_transaction_receipt(log["transactionHash"])
    assert receipt["logs"][0]["logIndex"] == log["logIndex"]


def test_requests_limits_and_subscriptions_over_raw_frames(node: NodeProcess) -> None:
    with connect(ws_url(node), max_size=None, open_timeout=5) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}))
        assert json.loads(ws.recv(timeout=5)) == {
            "jsonrpc": "2.0",
            "id": 1,
            "result": hex(CHAIN_ID),
        }
        ws.send(
            json.dumps([{"jsonrpc": "2.0", "id": i, "method": "net_version"} for i in range(3)])
        )
        assert [a["id"] for a in json.loads(ws.recv(timeout=5))] == [0, 1, 2]
        ws.send("{oops")
        assert json.loads(ws.recv(timeout=5))["error"]["code"] == -32700

        def request(method: str, params: list) -> dict:
            ws.send(json.dumps({"jsonrpc": "2.0", "id": "r", "method": method, "params": params}))
            while True:  # skip notifications
                doc = json.loads(ws.recv(timeout=5))
                if doc.get("id") == "r":
                    return doc

        bad = request("eth_subscribe", ["pendingMagic"])
        assert bad["error"]["code"] == -32602 and "newHeads, logs" in bad["error"]["message"]
        bad = request("eth_subscribe", ["logs", {"fromBlock": "0x1"}])
        assert bad["error"]["code"] == -32602
        ids = [
            request("eth_subscribe", ["logs", {"address": "0x" + "22" * 20}])["result"]
            for _ in range(MAX_SUBSCRIPTIONS_PER_SESSION)
        ]
        assert len(set(ids)) == MAX_SUBSCRIPTIONS_PER_SESSION
        over = request("eth_subscribe", ["newHeads"])
        assert (
            over["error"]["code"] == -32005
            and "subscriptions per connection" in over["error"]["message"]
        )
        assert request("eth_unsubscribe", [ids[0]])["result"] is True
        assert request("eth_unsubscribe", [ids[0]])["result"] is False
        assert "result" in request("eth_subscribe", ["newHeads"])

        ws.send("x" * (MAX_BYTES + 1))  # one message over the request size limit
        with pytest.raises(ConnectionClosed) as exc:
            while True:
                ws.recv(timeout=5)
    assert exc.value.rcvd is not None and exc.value.rcvd.code == 1009


async def test_slow_subscriber_is_closed_with_a_reason() -> None:
    """A client that stops reading: notifications pile up to OUTGOING_QUEUE, then the
    session drops them and closes with 1008 and a reason the client can read."""
    server_side, client_side = trio.testing.lockstep_stream_pair()  # sends wait for reads
    hub = SubscriptionHub()
    session = WebSocketSession(server_side, "test-client", None, hub, 1024)  # type: ignore[arg-type]
    events = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run, b"")
        await trio.testing.wait_all_tasks_blocked()
        session.subscriptions["0x1"] = Subscription("0x1", "newHeads")
        assert session.notify("0x1", {"n": 0})
        await trio.testing.wait_all_tasks_blocked()  # the writer now waits for the client
        accepted = [session.notify("0x1", {"n": i}) for i in range(1, OUTGOING_QUEUE + 2)]
        assert all(accepted[:OUTGOING_QUEUE]) and not accepted[-1] and session.closing
        client = Connection(ConnectionType.CLIENT)
        with trio.fail_after(5):
            while not any(isinstance(e, CloseConnection) for e in events):
                data = await client_side.receive_some(65536)
                assert data, "closed without a close frame"
                client.receive_data(data)
                events.extend(client.events())
    [close] = [e for e in events if isinstance(e, CloseConnection)]
    assert close.code == 1008 and "subscriber too slow" in close.reason
    # what was in flight arrived whole; the backlog was dropped, not sent
    assert [
        json.loads(e.data)["params"]["result"] for e in events if isinstance(e, TextMessage)
    ] == [{"n": 0}]
    assert session not in hub.sessions and session.subscriptions == {}
