"""MotusAccountDB (vm/state.py) writes accounts faster than py-evm's AccountDB; it must
write exactly the same state: same reads, same roots, same persisted trie."""

from __future__ import annotations

import pytest
import rlp
from eth.db.account import AccountDB
from eth.db.atomic import AtomicDB
from eth.rlp.accounts import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from vm.state import MotusAccountDB, encode_account

ADDRESSES = [bytes([i]) * 20 for i in range(1, 6)]
address = st.sampled_from(ADDRESSES)
OPS = st.lists(st.one_of(
    st.tuples(st.just("balance"), address, st.integers(0, 2**256 - 1)),
    st.tuples(st.just("nonce"), address, st.integers(0, 2**64 - 1)),
    st.tuples(st.just("increment_nonce"), address),
    st.tuples(st.just("delta_balance"), address, st.integers(0, 10**24)),
    st.tuples(st.just("code"), address, st.binary(max_size=40)),
    st.tuples(st.just("storage"), address, st.integers(0, 5), st.integers(0, 2**256 - 1)),
    st.tuples(st.just("delete"), address),
    st.tuples(st.just("touch"), address),
    st.tuples(st.just("checkpoint"),),
    st.tuples(st.just("discard"),),
    st.tuples(st.just("lock"),),
), max_size=40)


def _apply(db, op, checkpoints):
    kind = op[0]
    if kind == "balance":
        db.set_balance(op[1], op[2])
    elif kind == "nonce":
        db.set_nonce(op[1], op[2])
    elif kind == "increment_nonce":
        if db.get_nonce(op[1]) < 2**64 - 1:
            db.increment_nonce(op[1])
    elif kind == "delta_balance":
        balance = db.get_balance(op[1]) + op[2]
        if balance < 2**256:
            db.set_balance(op[1], balance)
    elif kind == "code":
        db.set_code(op[1], op[2])
    elif kind == "storage":
        db.set_storage(op[1], op[2], op[3])
    elif kind == "delete":
        db.delete_account(op[1])
    elif kind == "touch":
        db.touch_account(op[1])
    elif kind == "checkpoint":
        checkpoints.append(db.record())
    elif kind == "discard" and checkpoints:
        db.discard(checkpoints.pop())
    elif kind == "lock":
        checkpoints.clear()
        db.lock_changes()


def _view(db):
    return [(db.get_balance(a), db.get_nonce(a), db.get_code_hash(a), db.get_storage(a, 3),
             db.account_exists(a), db.account_is_empty(a)) for a in ADDRESSES]


@settings(max_examples=200, deadline=None)
@given(ops=OPS, more=OPS)
def test_same_reads_roots_and_trie_as_py_evm(ops, more):
    stock_base, ours_base = AtomicDB(), AtomicDB()
    stock, ours = AccountDB(stock_base), MotusAccountDB(ours_base)
    for batch in (ops, more):  # two blocks: the second starts from the persisted first
        stock_cps: list = []
        ours_cps: list = []
        for op in batch:
            try:
                _apply(stock, op, stock_cps)
            except Exception as exc:  # a sequence py-evm itself refuses: ours must refuse it too
                with pytest.raises(type(exc)):
                    _apply(ours, op, ours_cps)
                return
            _apply(ours, op, ours_cps)
            assert _view(ours) == _view(stock)
        assert ours.make_state_root() == stock.make_state_root()
        stock.persist()
        ours.persist()
        assert ours.state_root == stock.state_root
        stock, ours = AccountDB(stock_base, stock.state_root), MotusAccountDB(ours_base, ours.state_root)
    assert dict(ours_base.wrapped_db.kv_store) == dict(stock_base.wrapped_db.kv_store)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**256 - 1), st.binary(min_size=32, max_size=32),
       st.binary(min_size=32, max_size=32))
def test_account_encoding_is_rlp(nonce, balance, storage_root, code_hash):
    account = Account(nonce, balance, storage_root, code_hash)
    assert encode_account(account) == rlp.encode(account, sedes=Account)
