"""The RPC's state reads at the head share the node's head view (Application.head_state):
one py-evm state per head, renewed by each commit and when its storage views pile up,
with the same answers as a fresh state. Real LevelDB, real blocks."""

from __future__ import annotations

from types import SimpleNamespace

from eth_account import Account

import node.app
from genesis.devnet import dev_accounts
from node.rpc import eth
from node.rpc import params as p
from node.rpc.registry import RPCContext
from tests.node.test_flat_state import CHAIN_ID, _block, _open, _sign


def _ctx(store, app, mempool) -> RPCContext:
    return RPCContext(SimpleNamespace(app=app, store=store, mempool=mempool, chain_id=CHAIN_ID))  # type: ignore[arg-type]


def test_reads_at_the_head_share_one_view_renewed_by_each_commit(tmp_path) -> None:
    database, store, app, mempool = _open(tmp_path / "db")
    try:
        ctx = _ctx(store, app, mempool)
        sender, key = dev_accounts()[0]
        to = Account.create().address
        target = bytes.fromhex(to[2:])
        assert eth.get_balance(ctx, target, p.LATEST) == "0x0"
        head = eth.state_at(ctx, p.LATEST)
        assert eth.state_at(ctx, p.BlockRef(tag="pending")) is head
        assert eth.state_at(ctx, p.BlockRef(number=store.head_height)) is head
        _block(store, app, mempool, [_sign(key, 0, to, 12345)])
        # the commit moved the head: a new view, the new balance and nonce
        assert eth.state_at(ctx, p.LATEST) is not head
        assert eth.get_balance(ctx, target, p.LATEST) == hex(12345)
        assert eth.get_transaction_count(ctx, sender, p.LATEST) == "0x1"
        # an older block reads its own state, not the head's
        old = p.BlockRef(number=store.head_height - 1)
        assert eth.state_at(ctx, old) is not eth.state_at(ctx, p.LATEST)
        assert eth.get_balance(ctx, target, old) == "0x0"
    finally:
        database.close()


def test_the_head_view_is_renewed_when_its_storage_views_pile_up(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(node.app, "HEAD_STATE_MAX_STORAGE_VIEWS", 4)
    database, store, app, mempool = _open(tmp_path / "db")
    try:
        ctx = _ctx(store, app, mempool)
        first = app.head_state()
        for i in range(4):  # py-evm keeps one storage view per account read
            eth.get_storage_at(ctx, (0x1000 + i).to_bytes(20, "big"), 0, p.LATEST)
        assert app.head_state() is first
        eth.get_storage_at(ctx, (0x2000).to_bytes(20, "big"), 0, p.LATEST)
        renewed = app.head_state()
        assert renewed is not first and app.head_state() is renewed
    finally:
        database.close()
