"""debug_traceTransaction / debug_traceCall / debug_traceBlockBy* on a real node: geth's
struct logger and callTracer shapes, replay of the block's earlier transactions, the
options, and the bounds (size: trace_too_large; time: trace_timeout) on a heavy loop.

The heavy case burns ~5 M gas by default; ``MOTUS_TRACE_30M=1`` makes it a transaction
of ~30 M gas (a full block; about a minute here) to measure the worst case."""

from __future__ import annotations

import os
import time

import pytest
from web3 import Web3

from tests.fixtures.rpc_node import CHAIN_ID, GWEI, dev_accounts, logbook, start_node
from tests.procs import NodeProcess, rpc

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("rpc_trace"), pytest.mark.slow]

FULL_BLOCK = os.environ.get("MOTUS_TRACE_30M") == "1"
# the block cost cap (docs/consensus.md) bounds EVM gas per block: ~3.9 M gas at the default
# weights; the 30 M mode runs a chain without the cap (motus init --param max_block_cost=0)
HEAVY_GAS = 29_900_000 if FULL_BLOCK else 3_500_000
TRACE_TIMEOUT = 25  # rpc.trace_timeout_seconds's default
# loop(n): while n: n -= 1  (10 opcodes, 40 gas a turn)
LOOP = bytes.fromhex("600035" "5b" "80" "15" "6010" "57" "6001" "90" "03" "6003" "56" "5b" "00")


def deploy_code(runtime: bytes) -> bytes:
    """Init code that returns ``runtime``."""
    n = len(runtime)
    assert n < 256
    return bytes([0x60, n, 0x60, 0x0C, 0x60, 0x00, 0x39, 0x60, n, 0x60, 0x00, 0xF3]) + runtime


def proxy_code(target: bytes) -> bytes:
    """Calls ``target`` with its own calldata by CALL, DELEGATECALL and STATICCALL, then
    stores 1 in slot 0."""
    push_target = b"\x73" + target
    copy = bytes.fromhex("3660006000" "37")
    call = bytes.fromhex("60006000366000" "6000") + push_target + bytes.fromhex("5af150")
    delegate = bytes.fromhex("60006000366000") + push_target + bytes.fromhex("5af450")
    static = bytes.fromhex("60006000366000") + push_target + bytes.fromhex("5afa50")
    return copy + call + delegate + static + bytes.fromhex("600160005500")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    proc = start_node(tmp_path_factory.mktemp("trace"),
                      init_args=("--param", "max_block_cost=0") if FULL_BLOCK else ())
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def w3(node: NodeProcess) -> Web3:
    return Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 60}))


def send(w3: Web3, acct, *, to: str | None = None, data: bytes = b"", gas: int = 500_000,
         nonce: int | None = None, wait: bool = True):
    tx = {
        "value": 0, "gas": gas, "chainId": CHAIN_ID, "data": data,
        "maxFeePerGas": 100 * GWEI, "maxPriorityFeePerGas": GWEI,
        "nonce": w3.eth.get_transaction_count(acct.address, "pending") if nonce is None else nonce,
    }
    if to is not None:
        tx["to"] = to
    h = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    return w3.eth.wait_for_transaction_receipt(h, timeout=180, poll_latency=0.1) if wait else h


@pytest.fixture(scope="module")
def contracts(w3: Web3):
    acct = dev_accounts()[5]
    deployed = send(w3, acct, data=deploy_code(LOOP))
    loop = deployed["contractAddress"]
    proxy = send(w3, acct, data=deploy_code(proxy_code(bytes.fromhex(loop[2:]))))["contractAddress"]
    spec = logbook()
    factory = w3.eth.contract(abi=spec["abi"], bytecode=spec["bytecode"])
    book_addr = send(w3, acct, data=factory.constructor().data_in_transaction, gas=2_000_000)[
        "contractAddress"]
    return loop, proxy, w3.eth.contract(address=book_addr, abi=spec["abi"]), deployed


def trace_tx(w3: Web3, tx_hash, options: dict | None = None):
    params = ["0x" + bytes(tx_hash).hex()] + ([options] if options is not None else [])
    return w3.provider.make_request("debug_traceTransaction", params)


def n_arg(n: int) -> bytes:
    return n.to_bytes(32, "big")


def test_call_tracer_nested_frames(w3: Web3, contracts) -> None:
    loop, proxy, *_ = contracts
    acct = dev_accounts()[6]
    receipt = send(w3, acct, to=proxy, data=n_arg(3))
    frame = trace_tx(w3, receipt["transactionHash"], {"tracer": "callTracer"})["result"]
    assert frame["type"] == "CALL"
    assert frame["from"] == acct.address.lower() and frame["to"] == proxy.lower()
    assert frame["gas"] == hex(500_000) and frame["gasUsed"] == hex(receipt["gasUsed"])
    assert frame["input"] == "0x" + n_arg(3).hex() and frame["value"] == "0x0"
    assert "error" not in frame
    kinds = [(c["type"], c["from"], c["to"]) for c in frame["calls"]]
    assert kinds == [
        ("CALL", proxy.lower(), loop.lower()),
        ("DELEGATECALL", proxy.lower(), loop.lower()),
        ("STATICCALL", proxy.lower(), loop.lower()),
    ]
    call, delegate, static = frame["calls"]
    assert call["value"] == "0x0" and "value" not in delegate and "value" not in static
    for c in frame["calls"]:
        assert c["input"] == "0x" + n_arg(3).hex()
        assert 0 < int(c["gasUsed"], 16) < int(c["gas"], 16)
    top = trace_tx(w3, receipt["transactionHash"],
                   {"tracer": "callTracer", "tracerConfig": {"onlyTopCall": True}})["result"]
    assert "calls" not in top and top["gasUsed"] == frame["gasUsed"]


def test_call_tracer_create_frame(w3: Web3, contracts) -> None:
    loop, *_, deployed = contracts
    frame = trace_tx(w3, deployed["transactionHash"], {"tracer": "callTracer"})["result"]
    assert frame["type"] == "CREATE" and frame["to"] == loop.lower()
    assert frame["from"] == dev_accounts()[5].address.lower()
    assert frame["input"] == "0x" + deploy_code(LOOP).hex()
    assert frame["output"] == "0x" + LOOP.hex()  # the code it deployed
    assert frame["gasUsed"] == hex(deployed["gasUsed"]) and "calls" not in frame


def test_struct_logger_shape_and_options(w3: Web3, contracts) -> None:
    _, proxy, *_ = contracts
    receipt = send(w3, dev_accounts()[6], to=proxy, data=n_arg(2))
    result = trace_tx(w3, receipt["transactionHash"])["result"]
    assert result["gas"] == receipt["gasUsed"] and result["failed"] is False
    assert result["returnValue"] == "0x"
    logs = result["structLogs"]
    first = logs[0]
    assert first == {"pc": 0, "op": "CALLDATASIZE", "gas": first["gas"], "gasCost": 2,
                     "depth": 1, "stack": []}
    assert first["gas"] == 500_000 - 21_000 - 16 * 1 - 4 * 31  # gas minus intrinsic
    assert logs[1]["stack"] == ["0x20"]
    assert {e["depth"] for e in logs} == {1, 2}
    sstore = [e for e in logs if e["op"] == "SSTORE"]
    assert sstore[-1]["storage"] == {"0" * 64: "0" * 63 + "1"}
    assert logs[-1]["op"] == "STOP"
    # options: no stack, memory, a limit on recorded steps
    lean = trace_tx(w3, receipt["transactionHash"],
                    {"disableStack": True, "enableMemory": True, "disableStorage": True})["result"]
    assert len(lean["structLogs"]) == len(logs)
    assert all("stack" not in e and "memory" in e and "storage" not in e for e in lean["structLogs"])
    assert lean["structLogs"][5]["memory"] == [n_arg(2).hex()]
    assert len(trace_tx(w3, receipt["transactionHash"], {"limit": 5})["result"]["structLogs"]) == 5


def test_replays_earlier_transactions_of_the_block(w3: Web3, contracts) -> None:
    _, _, book, _ = contracts
    acct = dev_accounts()[7]
    nonce = w3.eth.get_transaction_count(acct.address, "pending")
    data = [book.encode_abi("record", [b"T".ljust(32, b"\0"), note]) for note in ("a", "b")]
    hashes = [send(w3, acct, to=book.address, data=d, gas=200_000, nonce=nonce + i, wait=False)
              for i, d in enumerate(data)]
    receipts = [w3.eth.wait_for_transaction_receipt(h, timeout=30, poll_latency=0.1) for h in hashes]
    # the second record reads the count the first one wrote: the trace must see it
    second = trace_tx(w3, hashes[1])["result"]
    count_before = book.functions.count().call(block_identifier=receipts[1]["blockNumber"]) - 1
    sload = [e for e in second["structLogs"] if e["op"] == "SLOAD"][0]
    assert sload["storage"]["0" * 64] == f"{count_before:064x}"
    assert second["gas"] == receipts[1]["gasUsed"]
    block = receipts[1]["blockNumber"]
    traces = w3.provider.make_request("debug_traceBlockByNumber",
                                      [hex(block), {"tracer": "callTracer"}])["result"]
    txs = w3.eth.get_block(block)["transactions"]
    assert [t["txHash"] for t in traces] == ["0x" + bytes(h).hex() for h in txs]
    by_hash = w3.provider.make_request(
        "debug_traceBlockByHash",
        ["0x" + bytes(w3.eth.get_block(block)["hash"]).hex(), {"tracer": "callTracer"}])["result"]
    assert by_hash == traces
    for t in traces:
        assert t["result"]["gasUsed"] == hex(w3.eth.get_transaction_receipt(t["txHash"])["gasUsed"])


def test_trace_call_revert_reason(w3: Web3, contracts) -> None:
    _, _, book, _ = contracts
    call = {"from": dev_accounts()[0].address, "to": book.address,
            "data": book.encode_abi("record", [b"T".ljust(32, b"\0"), ""])}
    frame = w3.provider.make_request("debug_traceCall", [call, "latest", {"tracer": "callTracer"}])[
        "result"]
    assert frame["error"] == "execution reverted"
    assert frame["revertReason"] == "note must not be empty"
    assert frame["output"].startswith("0x08c379a0")
    struct = w3.provider.make_request("debug_traceCall", [call, "latest"])["result"]
    assert struct["failed"] is True and struct["returnValue"] == frame["output"]
    assert struct["structLogs"][-1]["op"] == "REVERT"


def test_bad_requests(node: NodeProcess, w3: Web3, contracts) -> None:
    unknown = w3.provider.make_request("debug_traceTransaction", ["0x" + "12" * 32])
    assert unknown["error"] == {"code": -32000, "message": "transaction not found"}
    for options in ({"tracer": "prestateTracer"}, {"nope": 1}, {"limit": -1},
                    {"timeout": "soon"}, {"tracerConfig": 5},
                    {"tracer": "callTracer", "tracerConfig": {"withLog": True}}):
        err = w3.provider.make_request("debug_traceCall", [{"to": contracts[0]}, "latest", options])
        assert err["error"]["code"] == -32602, options


def node_cpu_seconds(node: NodeProcess) -> float:
    """CPU time the node process has used (user + system), from /proc."""
    assert node.proc is not None
    fields = open(f"/proc/{node.proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_heavy_transaction_bounds(node: NodeProcess, w3: Web3, contracts) -> None:
    loop = contracts[0]
    turns = (HEAVY_GAS - 30_000) // 40
    receipt = send(w3, dev_accounts()[8], to=loop, data=n_arg(turns), gas=HEAVY_GAS)
    assert receipt["status"] == 1 and receipt["gasUsed"] > HEAVY_GAS * 0.99
    h = receipt["transactionHash"]
    cpu, started = node_cpu_seconds(node), time.monotonic()
    frame = trace_tx(w3, h, {"tracer": "callTracer"})
    took, cpu = time.monotonic() - started, node_cpu_seconds(node) - cpu
    print(f"\ncallTracer of a {receipt['gasUsed']} gas transaction: {took:.1f} s "
          f"({cpu:.1f} s of the node's CPU)")
    assert took < TRACE_TIMEOUT
    assert frame["result"]["gasUsed"] == hex(receipt["gasUsed"])
    started = time.monotonic()
    refused = trace_tx(w3, h)
    print(f"struct logger refused after {time.monotonic() - started:.1f} s")
    assert refused["error"]["code"] == -32005
    assert refused["error"]["data"] == {"reason": "trace_too_large"}
    # the client's own time budget (geth's "timeout" option) stops it early
    started = time.monotonic()
    late = trace_tx(w3, h, {"tracer": "callTracer", "timeout": "200ms"})
    assert late["error"]["data"] == {"reason": "trace_timeout"}
    assert time.monotonic() - started < 5
    assert rpc(w3.provider.endpoint_uri, "eth_blockNumber")  # the node still answers



def test_debug_api_can_be_switched_off() -> None:
    from types import SimpleNamespace

    from node.config import Config
    from node.rpc.debug import trace_call_method, trace_transaction
    from node.rpc.errors import METHOD_NOT_FOUND, RPCError
    from node.rpc.registry import RPCContext

    config = Config()
    config.rpc.debug_api = False
    ctx = RPCContext(SimpleNamespace(config=config))  # type: ignore[arg-type]
    for call in (lambda: trace_transaction(ctx, b"\x12" * 32, None),
                 lambda: trace_call_method(ctx, None, None, None)):  # type: ignore[arg-type]
        with pytest.raises(RPCError) as err:
            call()
        assert err.value.code == METHOD_NOT_FOUND and "does not exist" in err.value.message
