"""The pending-transaction feed behind eth_subscribe("newPendingTransactions") and
eth_newPendingTransactionFilter: every transaction the pool accepts reaches it, from
gossip as from RPC, and a subscriber that stops reading never blocks the node nor loses
its session: its pending-transaction notifications are dropped and counted instead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from eth_account import Account

from genesis.devnet import dev_accounts
from node.app import Application
from node.config import Config
from node.rpc import metrics
from node.rpc.subscriptions import PENDING_TX_QUEUE_LIMIT, Subscription, SubscriptionHub
from node.rpc.websocket import OUTGOING_QUEUE, WebSocketSession
from tests.node.chain_app import genesis_app

CHAIN_ID = 7077
VALIDATOR = b"\x11" * 20


def transfer(account: int, nonce: int) -> bytes:
    _, key = dev_accounts()[account]
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": "0x" + "22" * 20, "value": 1,
          "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    with genesis_app(tmp_path, VALIDATOR, CHAIN_ID) as app:
        yield app


async def test_gossiped_and_rpc_transactions_reach_pending_filters(app: Application) -> None:
    seen: list[tuple[bytes, bytes]] = []
    app.pool_listeners.append(lambda raw, h: seen.append((raw, h)))
    node = SimpleNamespace(mempool=app.mempool, config=Config())
    hub = SubscriptionHub(node)  # type: ignore[arg-type]
    assert hub.filters is not None
    app.pool_listeners.append(hub.on_pending_tx)
    hashes = hub.filters.install("pendingTransactions", "client")
    full = hub.filters.install("pendingTransactions", "client", full_tx=True)
    gossiped, submitted = transfer(0, 0), transfer(1, 0)
    h1 = app.submit_transaction(gossiped, gossip=False)  # the path of a gossiped transaction
    h2 = app.submit_transaction(submitted)  # the RPC path
    assert seen == [(gossiped, h1), (submitted, h2)]
    assert hub.filters.poll(hashes) == ["0x" + h1.hex(), "0x" + h2.hex()]
    txs = hub.filters.poll(full)
    assert [t["hash"] for t in txs] == ["0x" + h1.hex(), "0x" + h2.hex()]
    assert txs[0]["from"] == "0x" + dev_accounts()[0][0].hex() and txs[0]["blockHash"] is None


async def test_a_subscriber_that_stops_reading_loses_pending_notifications_not_its_session() -> None:
    server_side, _client_side = trio.testing.lockstep_stream_pair()  # sends wait for reads
    hub = SubscriptionHub()
    session = WebSocketSession(server_side, "test-client", None, hub, 1024)  # type: ignore[arg-type]
    before = metrics.RPC_PENDING_TX_DROPPED._value.get()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run, b"")
        await trio.testing.wait_all_tasks_blocked()
        session.subscriptions["0xp"] = Subscription("0xp", "newPendingTransactions")
        session.subscriptions["0xh"] = Subscription("0xh", "newHeads")
        sent = 3 * OUTGOING_QUEUE
        started = time.perf_counter()
        for i in range(sent):
            hub.on_pending_tx(b"", i.to_bytes(32, "big"))
        elapsed = time.perf_counter() - started
        assert not session.closing  # kept, unlike a session whose block notifications overflow
        assert session.queued() <= PENDING_TX_QUEUE_LIMIT
        dropped = metrics.RPC_PENDING_TX_DROPPED._value.get() - before
        assert dropped >= sent - PENDING_TX_QUEUE_LIMIT - 1
        assert elapsed < 2.0  # never waited for the client
        assert session.notify("0xh", {"number": "0x1"})  # room is left for blocks and answers
        nursery.cancel_scope.cancel()
