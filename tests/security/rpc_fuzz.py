"""Hostile JSON-RPC parameters for every registered method, shared by the in-process
property test (tests/node/test_rpc_params_fuzz.py) and the attack test against a node
process (tests/security/test_rpc_attacks.py).

The methods come from the method table itself (``registry.build_method_table``), so a
method added later is fuzzed without touching this file. For each method and each
parameter position, the positions before it get a value its parser accepts (found by
trying ``VALID_CANDIDATES`` in order), so the hostile value reaches the parser of that
position rather than being refused earlier; objects and arrays that a parser accepts
are also fuzzed member by member.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from node.rpc.params import ParamError
from node.rpc.registry import MethodTable, RPCMethod

ADDRESS = "0x" + "ab" * 20
HASH = "0x" + "cd" * 32

# Wrong in type, range or spelling, each for some parser: the cases that earlier code
# answered -32603 for ("²", over-long digit strings, a trailing newline after hex,
# numbers of 2^256 and more) and their neighbours.
HOSTILE: tuple[Any, ...] = (
    None, True, False, 0, 1, -1, 2**63, 2**64, 2**64 - 1, 2**256 - 1, 2**256, 2**256 + 1,
    10**100, -(2**256), 1.5, -0.0, 1e308, 2.0**70,
    "", " ", "²", "١٢٣", "1²", "9" * 78, "9" * 79, "9" * 5000, "-1", "+1", "1_000", " 1",
    "0x", "0x1", "0x-1", "0X1", "0x 1", "0xg", "0x" + "f" * 65, "0x" + "f" * 66,
    "0x12\n", "0x1\n", "0x" + "ab" * 19 + "a\n", "0x" + "ab" * 20 + "\n", "0x" + "cd" * 31 + "c\n",
    "0x" + "1" * 64, "0x" + "0" * 64 + "1", "0x" + "١" * 40,
    "NaN", "Infinity", "-Infinity", "nan", "null", "true", "latest\n", "Latest",
    "latest", "pending", "earliest", "safe", "finalized",
    ADDRESS, ADDRESS.upper(), HASH, "0x" + "ab" * 33,
    "x" * 10_000, "\u0000", "é", "\ud7ff", "😀" * 50,
    [], [None], [[]], [[[[]]]], [1, 2, 3], ["0x1"] * 1001, [ADDRESS] * 3,
    {}, {"a": 1}, {"": None}, {"blockHash": "0x1"}, {"blockNumber": 2**256},
    {"blockHash": HASH + "\n"}, {"blockHash": HASH, "blockNumber": "0x1"},
    {"fromBlock": "²"}, {"topics": [[None, "0x1"]]}, {"address": [1]},
)

# Tried in order for a position that must be valid; the first its parser accepts wins.
VALID_CANDIDATES: tuple[Any, ...] = (
    "latest", "0x1", 1, ADDRESS, HASH, "0x", False,
    {"to": ADDRESS, "data": "0x"}, {"fromBlock": "0x0", "toBlock": "latest"},
    [HASH], [], {}, "newHeads", "voting",
    {"token": "0x01"},  # a read credential (node/access.py), refused only by the handler
)

# Shapes of the objects some parsers take, so their members get hostile values too.
OBJECT_SHAPES: tuple[dict[str, Any], ...] = (
    {"from": ADDRESS, "to": ADDRESS, "gas": "0x5208", "value": "0x1", "data": "0x",
     "input": "0x", "gasPrice": "0x1", "maxFeePerGas": "0x1", "maxPriorityFeePerGas": "0x1",
     "nonce": "0x0"},
    {"fromBlock": "0x0", "toBlock": "latest", "address": ADDRESS, "topics": [HASH, None]},
    {"blockHash": HASH},
    {"blockNumber": "0x1"},
    {"vehicleId": 1, "fromMs": 0, "toMs": 1, "timestampMs": 0, "signature": "0x" + "00" * 65},
    {"attestation": "0x00", "payload": "0x00"},
    {"request": {"vehicleId": 1, "fromMs": 0, "toMs": 1, "timestampMs": 0, "nodeId": "x",
                 "nonce": "0x" + "00" * 16, "signature": "0x" + "00" * 65}},
    {"url": "http://127.0.0.1/", "condition": {"type": "threshold", "signal": "soc",
                                               "op": "<", "value": 1}},
)


def valid_value(param: Any) -> Any:
    """A value ``param``'s parser accepts (None, meaning absent, if none of ours is)."""
    for candidate in VALID_CANDIDATES:
        try:
            param.parse(candidate)
            return candidate
        except ParamError:
            continue
    return None


def _variants(hostile: Any) -> Iterator[Any]:
    """``hostile`` itself, inside an array, and as each member of every object shape."""
    yield hostile
    yield [hostile]
    for shape in OBJECT_SHAPES:
        for key in shape:
            yield {**shape, key: hostile}
    yield [{"attestation": hostile, "payload": "0x"}]


def method_cases(method: RPCMethod, hostile: tuple[Any, ...] = HOSTILE) -> Iterator[Any]:
    """``params`` values for calls of ``method``: hostile values at each position (and one
    past the last), by position and by name, and hostile ``params`` themselves."""
    valid = [valid_value(p) for p in method.params]
    for position in range(len(method.params) + 1):
        for value in hostile:
            for variant in _variants(value) if position < len(method.params) else (value,):
                yield [*valid[:position], variant]
                if position < len(method.params):
                    yield {method.params[position].name: variant}
    yield from ("latest", 1, True, {"no_such_argument": 1}, [None] * 10, valid)


def all_cases(table: MethodTable) -> Iterator[tuple[str, Any]]:
    """(method name, params) for every method of ``table``."""
    for name in table.names():
        method = table.get(name)
        assert method is not None
        for params in method_cases(method):
            yield name, params
