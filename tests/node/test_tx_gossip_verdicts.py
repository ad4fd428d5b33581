"""The tx topic's verdict on a batch (``NetworkService._check_tx``), against a real
Application on a fresh LevelDB chain: a malformed batch or one transaction invalid in
any state is REJECTed (the forwarder is penalised), a batch that brings nothing new is
IGNOREd (stale or known transactions are not the relay's fault), and anything else is
ACCEPTed and relayed, with every valid transaction pooled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import msgpack
import pytest
import rlp
from eth_account import Account

from consensus.types import EMPTY_COMMIT
from genesis.devnet import dev_accounts, new_genesis
from node.app import Application
from node.db import Database
from node.mempool import Mempool
from node.network import NetworkService
from node.store import ChainStore
from p2p.batch import MAX_TX_BYTES, encode_batch
from p2p.host import Verdict

CHAIN_ID = 7077
VALIDATOR = b"\x11" * 20
RECIPIENT = "0x" + "22" * 20


def transfer(account: int, nonce: int, *, chain_id: int = CHAIN_ID, gas: int = 21_000,
             value: int = 1) -> bytes:
    _, key = dev_accounts()[account]
    tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "to": RECIPIENT, "value": value,
          "gas": gas, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def with_zero_r(raw: bytes) -> bytes:
    """The same typed transaction with its signature's r set to 0: no key signs that."""
    fields = rlp.decode(raw[1:])
    fields[-2] = b""
    return raw[:1] + rlp.encode(fields)


def unfunded_transfer() -> bytes:
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": 0, "to": RECIPIENT, "value": 1,
          "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
    return bytes(Account.sign_transaction(tx, Account.create().key).raw_transaction)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    """A chain one block past genesis in which dev account 9 has used nonce 0."""
    database = Database(tmp_path / "data")
    try:
        store = ChainStore(database)
        store.init_genesis(new_genesis(CHAIN_ID, [(VALIDATOR, 10)],
                                       genesis_time_ms=int(time.time() * 1000) - 5_000))
        application = Application(store, Mempool(CHAIN_ID))
        application.submit_transaction(transfer(9, 0), gossip=False)
        application.commit(1, application.propose(1, VALIDATOR), EMPTY_COMMIT)
        assert len(application.mempool) == 0
        yield application
    finally:
        database.close()


def check(app: Application, data: bytes) -> Verdict:
    # The topic check only needs the node's application.
    return NetworkService._check_tx(SimpleNamespace(app=app), "forwarder", data)  # type: ignore[arg-type]


MALFORMED_ENVELOPE = {
    "not msgpack": lambda: b"\xc1garbage",
    "not an array of bin": lambda: msgpack.packb(["text"]),
    "non-canonical header": lambda: b"\xdc\x00\x01" + msgpack.packb(transfer(0, 0)),
    "transaction over 128 KiB": lambda: encode_batch([b"\x02" * (MAX_TX_BYTES + 1)]),
}


@pytest.mark.parametrize("why", list(MALFORMED_ENVELOPE))
def test_malformed_envelopes_ban_the_forwarder(app: Application, why: str) -> None:
    """No honest publisher or relay sends a batch that does not decode: MALFORMED."""
    assert check(app, MALFORMED_ENVELOPE[why]()) is Verdict.MALFORMED


MALFORMED = {
    "one undecodable transaction": lambda: encode_batch([transfer(0, 0), b"\x02garbage"]),
    "one with a bad signature": lambda: encode_batch([transfer(0, 0), with_zero_r(transfer(1, 0))]),
    "one for another chain": lambda: encode_batch([transfer(0, 0), transfer(1, 0, chain_id=1)]),
    "one below intrinsic gas": lambda: encode_batch([transfer(0, 0), transfer(1, 0, gas=20_000)]),
}


@pytest.mark.parametrize("why", list(MALFORMED))
def test_malformed_batches_are_rejected(app: Application, why: str) -> None:
    assert check(app, MALFORMED[why]()) is Verdict.REJECT


STALE = {
    "nonce already used": lambda: [transfer(9, 0)],
    "nonce too far ahead": lambda: [transfer(2, 1_000)],
    "sender cannot pay": lambda: [unfunded_transfer()],
    "value over the balance": lambda: [transfer(3, 0, value=10**30)],
}


@pytest.mark.parametrize("why", list(STALE))
def test_batches_of_stale_transactions_are_ignored(app: Application, why: str) -> None:
    assert check(app, encode_batch(STALE[why]())) is Verdict.IGNORE
    assert len(app.mempool) == 0


def test_known_transactions_are_ignored_and_new_ones_accepted(app: Application) -> None:
    batch = encode_batch([transfer(0, 0), transfer(0, 1), transfer(1, 0)])
    assert check(app, batch) is Verdict.ACCEPT
    assert len(app.mempool) == 3
    assert check(app, batch) is Verdict.IGNORE  # the same batch again (another relay's copy)
    # New and stale together: relayed, so peers get the new one; stale ones cost nothing.
    mixed = encode_batch([transfer(9, 0), transfer(0, 0), transfer(2, 0), unfunded_transfer()])
    assert check(app, mixed) is Verdict.ACCEPT
    assert len(app.mempool) == 4


def test_valid_transactions_before_a_malformed_one_stay_pooled(app: Application) -> None:
    assert check(app, encode_batch([transfer(4, 0), b"\x02garbage", transfer(5, 0)])) is Verdict.REJECT
    pooled = {p.raw for p in app.mempool.all()}
    assert pooled == {transfer(4, 0)}  # valid whoever sent it; the rest was not looked at
