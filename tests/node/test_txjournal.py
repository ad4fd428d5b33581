"""The transaction journal's file format and crash behaviour (node/txjournal.py), and the
replay of local transactions through the real mempool checks (node/localtxs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account

from codec.records import frame as encode_record
from genesis.devnet import dev_accounts
from node.localtxs import LocalTransactions
from node.mempool import Mempool, TxRejected
from node.txjournal import HEADER, TxJournal, decode_journal
from tests.harness import LocalChain

CHAIN_ID = 7077


def transfer(nonce: int, key_index: int = 0) -> bytes:
    key = dev_accounts()[key_index][1]
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": "0x" + "11" * 20, "value": 1,
          "gas": 21_000, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9}
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def test_append_then_load_keeps_order(tmp_path: Path) -> None:
    journal = TxJournal(tmp_path / "txpool" / "journal", max_bytes=1 << 20)
    journal.rewrite([])
    raws = [transfer(n) for n in range(3)]
    for raw in raws:
        assert journal.append(raw)
    journal.close()
    assert TxJournal(journal.path, 1 << 20).load() == raws


def test_torn_or_corrupt_tail_is_skipped_and_the_records_before_it_kept(tmp_path: Path) -> None:
    a, b = transfer(0), transfer(1)
    good = HEADER + encode_record(a)
    torn = good + encode_record(b)[:-5]  # a kill in the middle of the second write
    assert decode_journal(torn) == ([a], len(encode_record(b)) - 5)
    flipped = bytearray(good + encode_record(b))
    flipped[-1] ^= 1  # bad checksum
    assert decode_journal(bytes(flipped))[0] == [a]
    assert decode_journal(good + b"\x00\x00\x00\x00\x00\x00\x00\x00")[0] == [a]  # zero length
    assert decode_journal(b"not a journal")[0] == []
    path = tmp_path / "journal"
    path.write_bytes(torn)
    assert TxJournal(path, 1 << 20).load() == [a]


def test_bound_refuses_appends_and_truncates_rewrites(tmp_path: Path) -> None:
    raw = transfer(0)
    record = len(encode_record(raw))
    journal = TxJournal(tmp_path / "journal", max_bytes=len(HEADER) + 2 * record)
    assert journal.rewrite([raw, raw, raw]) == 2
    assert not journal.append(raw)
    assert journal.rewrite([raw]) == 1
    assert journal.append(raw)
    assert journal.path.stat().st_size == journal.size == len(HEADER) + 2 * record
    assert not (tmp_path / "journal.tmp").exists()


def test_replay_pools_pending_and_drops_mined(tmp_path: Path) -> None:
    chain = LocalChain()
    path = tmp_path / "journal"
    raws = [transfer(n) for n in range(3)]
    journal = TxJournal(path, 1 << 20)
    journal.rewrite([])
    for raw in raws:
        journal.append(raw)
    journal.close()  # as after a kill: nothing compacted since

    chain.block([raws[0]])  # nonce 0 was mined meanwhile
    pool = Mempool(CHAIN_ID)
    local = LocalTransactions(pool, path, journal_max_bytes=1 << 20)

    def submit(raw: bytes) -> bytes:
        return pool.add(raw, chain.state())

    local.replay(submit)
    assert local.replayed == 2 and len(pool) == 2
    assert TxJournal(path, 1 << 20).load() == raws[1:]  # compacted to what is pending
    with pytest.raises(TxRejected) as known:
        submit(raws[1])  # a known transaction costs one hash lookup, no signature check
    assert known.value.code == "already_known"
    local.close()
