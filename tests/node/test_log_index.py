"""The log index (node/logindex.py, docs/storage.md "Log index"): ``eth_getLogs``
answers exactly as the full scan of every block did, for random filters (address
lists, topic OR-lists, null positions, blockHash queries, limits), on a real LevelDB
whose older part was committed before the index existed and is indexed in the
background while queries run."""

from __future__ import annotations

import random

import pytest
import trio

from node.config import Config
from node.logindex import PREFIX, build_in_background
from node.rpc import params as p
from node.rpc.errors import RPCError
from node.rpc.eth import get_logs
from tests.logchain import EVENT_MODULE, LogMix, append_blocks, full_scan, open_store, rpc_context

OLD_BLOCKS = 300  # committed "before the index"
NEW_BLOCKS = 100  # committed by an indexing node
FILTERS = 150


def answer(ctx, flt: p.LogFilter) -> list | tuple:
    try:
        return get_logs(ctx, flt)
    except RPCError as err:
        return ("error", err.code, err.message)


def random_filter(r: random.Random, mix: LogMix, store) -> dict:
    head = store.head_height
    hx = lambda b: "0x" + b.hex()  # noqa: E731
    unknown = b"\x42" * 32
    doc: dict = {}
    if r.random() < 0.15:
        doc["blockHash"] = hx(store.hash_at(r.randint(0, head)))
    else:
        refs = ["earliest", "latest", None, *(hex(r.randint(0, head + 3)) for _ in range(4))]
        doc["fromBlock"], doc["toBlock"] = r.choice(refs), r.choice(refs)
        if r.random() < 0.5:  # a narrow range too, crossing the index coverage often
            low = r.randint(0, head)
            doc["fromBlock"], doc["toBlock"] = hex(low), hex(min(head, low + r.randint(0, 120)))
    pick = r.random()
    if pick < 0.3:
        doc["address"] = hx(r.choice([*mix.addresses, mix.rare, EVENT_MODULE]))
    elif pick < 0.5:
        doc["address"] = [hx(a) for a in r.sample([*mix.addresses, mix.rare, EVENT_MODULE, b"\x07" * 20], 2)]
    topics: list = []
    for _ in range(r.choice((0, 0, 1, 2, 3, 4))):
        kind = r.random()
        if kind < 0.35:
            topics.append(None)
        elif kind < 0.7:
            topics.append(hx(r.choice([*mix.topics, unknown])))
        elif kind < 0.9:
            topics.append([hx(t) for t in r.sample([*mix.topics, unknown], r.randint(2, 3))])
        elif kind < 0.95:
            topics.append([hx(r.choice(mix.topics)), None])  # a null alternative: any
        else:
            topics.append([])  # no alternative: nothing matches
    if topics or r.random() < 0.5:
        doc["topics"] = topics
    return doc


@pytest.fixture
def chain(tmp_path):
    """A store whose first OLD_BLOCKS blocks were committed without the index, reopened
    by an indexing node that then committed NEW_BLOCKS more."""
    mix = LogMix.default(seed=7)
    database, store = open_store(str(tmp_path / "db"))
    append_blocks(store, OLD_BLOCKS, mix)
    with database.batch() as wb:  # what a database from before the index holds
        for key in database.db.iterator(prefix=PREFIX, include_value=False):
            wb.delete(key)
    database.close()
    database, store = open_store(str(tmp_path / "db"))
    assert store.log_index.indexed_from() == OLD_BLOCKS + 1
    append_blocks(store, NEW_BLOCKS, mix)
    yield mix, store
    database.close()


def test_answers_match_the_full_scan_before_during_and_after_the_build(chain) -> None:
    mix, store = chain
    r = random.Random(11)
    config = Config()
    config.rpc.max_log_results = 150  # the too-many-results error is part of the answer
    ctx = rpc_context(store, config)
    filters = [p.log_filter(random_filter(r, mix, store)) for _ in range(FILTERS)]
    expected = [full_scan(ctx, f) for f in filters]
    assert sum(1 for e in expected if isinstance(e, list) and e) > FILTERS // 3  # not all empty
    assert any(isinstance(e, tuple) for e in expected)  # some hit the limit
    stages = 0
    while True:
        got = [answer(ctx, f) for f in filters]
        for f, want, have in zip(filters, expected, got, strict=True):
            assert have == want, f
        stages += 1
        if store.log_index.indexed_from() == 0:
            break
        store.log_index.backfill(store, max_blocks=97)
    assert stages == 5  # 301 old blocks (genesis included) in chunks of 97, then complete


def test_backfilled_index_is_the_one_written_at_commit(chain, tmp_path) -> None:
    mix, store = chain
    while store.log_index.backfill(store, max_blocks=128):
        pass
    database, fresh = open_store(str(tmp_path / "fresh"))
    append_blocks(fresh, OLD_BLOCKS + NEW_BLOCKS, LogMix.default(seed=7))

    def postings(s) -> list[bytes]:
        return list(s.database.db.iterator(prefix=PREFIX, include_value=False))

    assert postings(fresh) == postings(store)
    database.close()


def test_block_events_are_found_through_the_index(chain) -> None:
    mix, store = chain
    ctx = rpc_context(store)
    head = store.head_height
    flt = p.log_filter({"fromBlock": hex(OLD_BLOCKS + 1), "toBlock": hex(head),
                        "address": "0x" + EVENT_MODULE.hex()})
    logs = get_logs(ctx, flt)
    heights = {int(log["blockNumber"], 16) for log in logs}
    assert heights == {h for h in range(OLD_BLOCKS + 1, head + 1) if h % mix.event_every == 0}
    assert logs == full_scan(ctx, flt)


def test_a_rare_address_reads_only_its_blocks(chain) -> None:
    mix, store = chain
    read = []
    original = store.raw_receipts
    store.raw_receipts = lambda h: read.append(h) or original(h)  # count receipt reads
    store.log_index.backfill(store, max_blocks=OLD_BLOCKS + 1)
    flt = p.log_filter({"fromBlock": "0x0", "address": "0x" + mix.rare.hex()})
    logs = get_logs(rpc_context(store), flt)
    rare_blocks = {h for h in range(1, store.head_height + 1) if h % mix.rare_every == 1}
    assert {int(x["blockNumber"], 16) for x in logs} == rare_blocks
    assert set(read) == {store.hash_at(h) for h in rare_blocks}


def test_background_build_completes_and_keeps_answers(chain) -> None:
    mix, store = chain
    ctx = rpc_context(store)
    flt = p.log_filter({"fromBlock": "0x0", "topics": [None, "0x" + mix.topics[0].hex()]})
    before = get_logs(ctx, flt)
    trio.run(build_in_background, store, 64)
    assert store.log_index.indexed_from() == 0
    assert get_logs(ctx, flt) == before
