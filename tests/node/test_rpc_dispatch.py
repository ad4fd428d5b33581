"""In-process checks of the RPC building blocks: parameter parsers, the method table,
the dispatcher's envelope handling and error hygiene, the rate limiter, log filters
and fee-history percentiles. No node, no sockets."""

from __future__ import annotations

import json

import pytest

from node.rpc import params as p
from node.rpc.dispatch import Dispatcher
from node.rpc.errors import RPCError
from node.rpc.eth import _reward_percentiles
from node.rpc.ratelimit import RateLimiter
from node.rpc.registry import MethodTable, Param, build_method_table

ADDR = "0x" + "ab" * 20


@pytest.mark.parametrize(
    "value, expected", [("0x0", 0), ("0x1a", 26), ("0x01", 1), ("0x" + "f" * 64, 2**256 - 1)]
)
def test_quantity_accepts(value: str, expected: int) -> None:
    assert p.quantity(value) == expected


@pytest.mark.parametrize("value", ["0x", "1a", 26, "0xg", "0x" + "f" * 65, None, True])
def test_quantity_refuses(value: object) -> None:
    with pytest.raises(p.ParamError):
        p.quantity(value)


def test_fixed_size_values() -> None:
    assert p.address(ADDR) == bytes.fromhex("ab" * 20)
    assert p.address(ADDR.upper().replace("0X", "0x")) == bytes.fromhex("ab" * 20)
    for bad in ("0x" + "ab" * 19, "ab" * 20, 5):
        with pytest.raises(p.ParamError, match="20-byte address"):
            p.address(bad)
    with pytest.raises(p.ParamError, match="32-byte hash"):
        p.hash32("0x" + "00" * 31)
    assert p.data("0x") == b"" and p.data("0x00ff") == b"\x00\xff"
    with pytest.raises(p.ParamError, match="odd"):
        p.data("0x123")


def test_block_refs() -> None:
    assert p.block_ref("latest") == p.BlockRef(tag="latest")
    assert p.block_ref("0x10") == p.BlockRef(number=16)
    assert p.block_ref({"blockHash": "0x" + "11" * 32}).hash == b"\x11" * 32
    assert p.block_ref({"blockNumber": "0x2"}) == p.BlockRef(number=2)
    with pytest.raises(p.ParamError, match="latest, earliest"):
        p.block_ref("newest")
    with pytest.raises(p.ParamError):
        p.block_ref({"blockHash": "0x" + "11" * 32, "blockNumber": "0x1"})


def test_call_request() -> None:
    req = p.call_request({"from": ADDR, "to": ADDR, "input": "0x01", "value": "0x5", "gas": "0x10"})
    assert (req.sender, req.data, req.value, req.gas) == (bytes.fromhex("ab" * 20), b"\x01", 5, 16)
    assert p.call_request({"data": "0x02"}).data == b"\x02"
    assert p.call_request({}).to is None
    with pytest.raises(p.ParamError, match="both data and input"):
        p.call_request({"data": "0x01", "input": "0x02"})
    with pytest.raises(p.ParamError, match="gasPrice"):
        p.call_request({"gasPrice": "cheap"})


def test_log_filter_matching_follows_geth() -> None:
    t = ["0x" + bytes([i]).hex() * 32 for i in range(4)]
    topic = [bytes.fromhex(x[2:]) for x in t]
    addr = bytes.fromhex("ab" * 20)
    f = p.log_filter({"address": ADDR, "topics": [t[0], None, [t[2], t[3]]]})
    assert f.matches(addr, [topic[0], topic[1], topic[2]])
    assert f.matches(addr, [topic[0], topic[0], topic[3], topic[1]])
    assert not f.matches(addr, [topic[0], topic[1]])  # fewer topics than positions
    assert not f.matches(b"\x00" * 20, [topic[0], topic[1], topic[2]])
    assert not f.matches(addr, [topic[1], topic[1], topic[2]])
    anything = p.log_filter({"topics": [[t[0], None]]})  # a null alternative matches all
    assert anything.matches(b"\x00" * 20, [topic[3]])
    assert p.log_filter({}).matches(b"\x00" * 20, [])
    assert p.log_filter({"address": [ADDR, "0x" + "00" * 20]}).matches(addr, [])
    with pytest.raises(p.ParamError, match="topic positions"):
        p.log_filter({"topics": [None] * 5})
    with pytest.raises(p.ParamError, match="not allowed"):
        p.log_filter({"fromBlock": "0x1"}, allow_blocks=False)


def test_method_table_binds_and_guards() -> None:
    table = MethodTable()

    @table.method("x_echo", Param("a", p.quantity), Param("b", p.boolean, False))
    def echo(ctx, a: int, b: bool) -> list:
        return [a, b]

    method = table.get("x_echo")
    assert method.bind(["0x2"]) == [2, False]
    assert method.bind(["0x2", None]) == [2, False]  # null is "absent" for optional params
    assert method.bind({"a": "0x3", "b": True}) == [3, True]
    for raw, message in [
        ([], "missing value for required argument 0 (a)"),
        (["0x1", True, 3], "too many arguments"),
        (["x"], "invalid argument 0 (a)"),
        ({"c": 1}, "unknown argument 'c'"),
        ("0x1", "params must be an array or an object"),
    ]:
        with pytest.raises(RPCError) as exc:
            method.bind(raw)
        assert exc.value.code == -32602 and message in exc.value.message
    with pytest.raises(ValueError, match="registered twice"):
        table.method("x_echo")(echo)


def test_every_design_method_is_registered() -> None:
    names = set(build_method_table().names())
    design = {
        "eth_chainId",
        "net_version",
        "web3_clientVersion",
        "eth_blockNumber",
        "eth_getBalance",
        "eth_getTransactionCount",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_call",
        "eth_estimateGas",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_sendRawTransaction",
        "eth_getTransactionByHash",
        "eth_getTransactionReceipt",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getLogs",
        "eth_getProof",
        "eth_subscribe",
        "eth_unsubscribe",
        "eth_syncing",
        "eth_accounts",
        "net_peerCount",
        "net_listening",
        "motus_nodeStatus",
        "motus_getCommit",
        "motus_getValidators",
        "motus_getHeader",
        "motus_systemContracts",
    }
    assert design <= names


async def test_dispatcher_never_leaks_internal_errors() -> None:
    table = MethodTable()

    @table.method("x_boom")
    def boom(ctx) -> None:
        raise ValueError("secret path /home/operator/key")

    @table.method("x_refuse")
    def refuse(ctx) -> None:
        raise RPCError(-32001, "not here", {"reason": "gone"})

    @table.method("x_bad_result")
    def bad_result(ctx) -> object:
        return object()

    d = Dispatcher(None, table, max_batch=5, rate_limiter=None)  # type: ignore[arg-type]

    async def ask(method: str) -> dict:
        body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method}).encode()
        reply = await d.handle(body, transport="http", client="t")
        return json.loads(reply.body)

    boom_doc = await ask("x_boom")
    assert boom_doc == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {"code": -32603, "message": "internal error"},
    }
    assert (await ask("x_refuse"))["error"] == {
        "code": -32001,
        "message": "not here",
        "data": {"reason": "gone"},
    }
    assert (await ask("x_bad_result"))["error"]["code"] == -32603


async def test_dispatcher_rate_limit_counts_batch_items() -> None:
    table = MethodTable()
    table.method("x_one")(lambda ctx: 1)
    now = [0.0]
    limiter = RateLimiter(10, clock=lambda: now[0])
    d = Dispatcher(None, table, max_batch=10, rate_limiter=limiter)  # type: ignore[arg-type]
    batch = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "x_one"} for i in range(6)]).encode()
    assert (await d.handle(batch, transport="http", client="a")).refused is None
    reply = await d.handle(batch, transport="http", client="a")
    assert reply.refused == "rate_limited" and json.loads(reply.body)["error"]["code"] == -32005
    assert (await d.handle(batch, transport="http", client="b")).refused is None  # per client
    now[0] += 0.6  # six tokens back
    assert (await d.handle(batch, transport="http", client="a")).refused is None


def test_rate_limiter_bucket() -> None:
    now = [100.0]
    rl = RateLimiter(5, burst=5, max_clients=2, clock=lambda: now[0])
    assert all(rl.take("a") for _ in range(5)) and not rl.take("a")
    now[0] += 0.2
    assert rl.take("a") and not rl.take("a")
    assert rl.take("b") and rl.take("c")  # "a" is forgotten: the table stays bounded
    assert len(rl._buckets) == 2


def test_reward_percentiles_weighted_by_gas() -> None:
    tips = [(30, 21_000), (10, 21_000), (20, 58_000)]
    assert _reward_percentiles(tips, 100_000, [0.0, 25.0, 50.0, 100.0]) == [
        "0xa",
        "0x14",
        "0x14",
        "0x1e",
    ]
    assert _reward_percentiles([], 0, [50.0]) == ["0x0"]


@pytest.mark.parametrize(
    "rpc",
    [
        {"max_connections_per_client": 0},
        {"max_subscriptions_per_client": 0},
        {"request_timeout_seconds": 0},
        {"ws_ping_interval_seconds": 30, "ws_idle_timeout_seconds": 30},
    ],
)
def test_rpc_limits_that_disable_a_protection_are_refused(rpc: dict) -> None:
    from node.config import Config, ConfigError

    with pytest.raises(ConfigError, match="rpc"):
        Config.from_dict({"rpc": rpc})
    assert Config.from_dict({"rpc": {"max_connections_per_client": 1}}).rpc.max_connections == 256


def test_per_client_limits_count_an_ipv6_host_by_its_64() -> None:
    from node.rpc.http import client_of

    assert client_of("127.0.0.2") == "127.0.0.2"
    assert client_of("::1") == "::1"
    assert client_of("::ffff:10.0.0.1") == "10.0.0.1"
    assert client_of("2001:db8:1:2:3:4:5:6") == client_of("2001:db8:1:2::9") == "2001:db8:1:2::/64"


async def test_answers_keep_ids_and_values_of_any_kind() -> None:
    """Answers are encoded with orjson where it can: ids and results come back as the
    client's JSON parser expects them, integers beyond 64 bits exactly (json's encoder
    writes those), non-ASCII text as UTF-8."""
    table = MethodTable()
    table.method("x_big")(lambda ctx: 2**100)
    table.method("x_text")(lambda ctx: {"name": "caf\u00e9 \U0001f697", "n": -(2**63)})
    table.method("x_nan")(lambda ctx: [float("nan"), 0.5])
    d = Dispatcher(None, table, max_batch=5, rate_limiter=None)  # type: ignore[arg-type]

    async def ask(method: str, req_id: object) -> dict:
        body = json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method}).encode()
        reply = await d.handle(body, transport="http", client="t")
        assert reply.body is not None
        return json.loads(reply.body)

    for req_id in (2**70, -(2**70), 0, "\u00e9t\u00e9", "", None):
        assert (await ask("x_big", req_id)) == {"jsonrpc": "2.0", "id": req_id, "result": 2**100}
    assert (await ask("x_text", 1))["result"] == {"name": "caf\u00e9 \U0001f697", "n": -(2**63)}
    # JSON has no NaN: sent as null (JavaScript's JSON.stringify does the same)
    assert (await ask("x_nan", 1))["result"] == [None, 0.5]
