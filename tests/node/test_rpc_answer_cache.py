"""The answer cache (node/rpc/answercache.py) on a real chain store (LevelDB, blocks
committed through ``ChainStore.commit_block``): a cached read is answered with the
bytes the handler would give, never from a block older than the head, and calls that
must not be kept (pending, object params, errors) always reach the handler."""

from __future__ import annotations

import json

from node.config import Config
from node.rpc.answercache import MAX_ANSWER_BYTES, AnswerCache, cache_key
from node.rpc.dispatch import Dispatcher
from node.rpc.registry import build_method_table
from tests.logchain import LogMix, append_blocks, open_store, rpc_context


def body(method: str, params: list | dict | None, req_id: int | str = 1) -> bytes:
    doc = {"jsonrpc": "2.0", "id": req_id, "method": method}
    if params is not None:
        doc["params"] = params
    return json.dumps(doc).encode()


def test_cache_keys_only_plain_positional_calls() -> None:
    assert cache_key("eth_getBalance", ["0xab", "latest"]) == ("eth_getBalance", "0xab", "latest")
    assert cache_key("eth_getBlockByNumber", ["latest", True]) != cache_key(
        "eth_getBlockByNumber", ["latest", "true"])
    assert cache_key("eth_getBalance", ["0xab", "pending"]) is None
    assert cache_key("eth_getBalance", ["0xab", "PENDING"]) is None
    assert cache_key("eth_getBalance", ["0xab", {"blockNumber": "0x1"}]) is None
    assert cache_key("eth_getBalance", {"address": "0xab"}) is None
    assert cache_key("eth_getBalance", ["0xab", 1]) is None
    assert cache_key("eth_getBalance", None) == ("eth_getBalance",)


def test_cache_bounded_by_bytes_and_bound_to_one_head() -> None:
    cache = AnswerCache(max_bytes=100)
    head_a, head_b = object(), object()
    assert cache.get(head_a, ("m", "1")) is None
    cache.put(head_a, ("m", "1"), b"x" * 60)
    assert cache.get(head_a, ("m", "1")) == b"x" * 60
    cache.put(head_a, ("m", "2"), b"y" * 60)  # over the bound: the table starts again
    assert cache.get(head_a, ("m", "1")) is None and cache.size == 60
    cache.put(head_a, ("m", "3"), b"z" * (MAX_ANSWER_BYTES + 1))  # too large to keep
    assert cache.get(head_a, ("m", "3")) is None
    assert cache.get(head_b, ("m", "2")) is None  # another head: nothing carried over
    cache.put(head_a, ("m", "2"), b"y")  # computed on a head that is gone: not kept
    assert cache.get(head_b, ("m", "2")) is None


async def test_cached_reads_follow_the_head_and_match_the_handler(tmp_path) -> None:
    database, store = open_store(str(tmp_path / "db"))
    try:
        mix = LogMix.default(seed=5)
        append_blocks(store, 3, mix)
        ctx = rpc_context(store, Config())
        table = build_method_table()
        cache = AnswerCache(1 << 20)
        cached = Dispatcher(ctx.node, table, max_batch=10, rate_limiter=None, answer_cache=cache)
        plain = Dispatcher(ctx.node, table, max_batch=10, rate_limiter=None)

        async def both(request: bytes) -> bytes:
            a = (await cached.handle(request, transport="http", client="t")).body
            b = (await plain.handle(request, transport="http", client="t")).body
            assert a == b  # byte for byte what the handler's answer is
            assert a is not None
            return a

        latest = body("eth_getBlockByNumber", ["latest", False])
        first = json.loads(await both(latest))["result"]
        assert int(first["number"], 16) == 3
        hits = cache.hits
        again = await both(body("eth_getBlockByNumber", ["latest", False], req_id="other"))
        assert cache.hits == hits + 1  # the same read on the same head: not run again
        assert json.loads(again) == {"jsonrpc": "2.0", "id": "other", "result": first}

        append_blocks(store, 1, mix)  # a commit: the next read sees the new head
        moved = json.loads(await both(latest))["result"]
        assert int(moved["number"], 16) == 4 and moved["hash"] != first["hash"]

        # never kept: a batch of reads answers each from its own call
        batch = json.dumps([json.loads(body("eth_getBlockByNumber", [hex(h), False], h))
                            for h in range(5)]).encode()
        answers = json.loads((await cached.handle(batch, transport="http", client="t")).body)
        assert [int(a["result"]["number"], 16) for a in answers] == [0, 1, 2, 3, 4]

        # errors are not kept, and the call after one still reaches the handler
        missing = body("eth_getBlockByHash", ["0x" + "00" * 32, False])
        assert json.loads(await both(missing))["result"] is None
        bad = body("eth_getBlockByNumber", ["nonsense", False])
        assert json.loads(await both(bad))["error"]["code"] == -32602
        assert json.loads(await both(bad))["error"]["code"] == -32602
        # a notification gets no answer, cached or not
        note = json.dumps({"jsonrpc": "2.0", "method": "eth_getBlockByNumber",
                           "params": ["latest", False]}).encode()
        assert (await cached.handle(note, transport="http", client="t")).body is None
    finally:
        database.close()
