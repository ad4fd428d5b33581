"""Every parameter parser is total: hostile values at every parameter position of every
registered method are answered -32602 (or another deliberate error), never -32603.

In-process, through the real dispatcher and method table over a real node home (LevelDB
store, application, attestation service), no sockets. The table is built by the
registry, so new methods are covered as soon as they are registered. A seeded sixteenth of
the deterministic cases of tests/security/rpc_fuzz.py runs by default (all ~360,000 with
``MOTUS_LONG_FUZZ=1``, ~20 s), then hypothesis draws nested JSON values for a bounded
number of examples. tests/security/test_rpc_attacks.py sends such calls to a node
process over HTTP."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.node import Node
from node.rpc.dispatch import Dispatcher
from node.rpc.errors import INTERNAL_ERROR
from node.rpc.registry import REQUIRED, MethodTable, build_method_table
from tests.procs import init_home
from tests.security.rpc_fuzz import HOSTILE, all_cases, valid_value

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("rpc_params_fuzz")]

LONG = os.environ.get("MOTUS_LONG_FUZZ") == "1"
SAMPLE = 1.0 if LONG else 1 / 16
TABLE: MethodTable = build_method_table()


@pytest.fixture(scope="module")
def dispatcher(tmp_path_factory: pytest.TempPathFactory):
    node = Node(init_home(Path(tmp_path_factory.mktemp("fuzz"))))
    yield Dispatcher(node, TABLE, max_batch=100, rate_limiter=None)
    node.attestations.close()
    node.database.close()


def _call(dispatcher: Dispatcher, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        answers = []
        for request in requests:
            reply = await dispatcher.handle(
                json.dumps(request).encode(), transport="http", client="fuzz"
            )
            assert reply.body is not None
            answers.append(json.loads(reply.body))
        return answers

    return trio.run(run)


def _internal_errors(requests: list[dict[str, Any]], answers: list[dict[str, Any]]) -> list[str]:
    return [
        f"{r['method']} {json.dumps(r['params'])[:160]}"
        for r, a in zip(requests, answers, strict=True)
        if a.get("error", {}).get("code") == INTERNAL_ERROR
    ]


def test_every_method_is_fuzzed_at_every_position() -> None:
    """The sweep reaches every registered method, and hostile values reach every
    position: each required argument before the last has a valid value to stand in
    front of a hostile one (else the call fails at the earlier argument and the later
    parsers are never fuzzed)."""
    assert len(TABLE.names()) >= 57
    unreachable = [
        f"{name} argument {i} ({param.name})"
        for name in TABLE.names()
        for i, param in enumerate(TABLE.get(name).params[:-1])  # type: ignore[union-attr]
        if param.default is REQUIRED and valid_value(param) is None
    ]
    assert not unreachable, "add a valid value to VALID_CANDIDATES for: " + ", ".join(unreachable)


def test_hostile_values_at_every_position_are_invalid_params(
    dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(10)
    requests = [
        {"jsonrpc": "2.0", "id": i, "method": name, "params": params}
        for i, (name, params) in enumerate(all_cases(TABLE))
        if rng.random() < SAMPLE
    ]
    with caplog.at_level(logging.ERROR, logger="motus.rpc"):
        answers = _call(dispatcher, requests)
    assert not _internal_errors(requests, answers)
    assert "Traceback" not in caplog.text
    codes = {a.get("error", {}).get("code") for a in answers}
    assert -32602 in codes  # the sweep does reach the parsers


JSON_LEAVES = st.one_of(
    st.sampled_from(HOSTILE),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=80),
    st.text(alphabet="0123456789abcdefABCDEFx\n ²-", max_size=70).map(lambda s: "0x" + s),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def hostile_calls(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(TABLE.names()))
    method = TABLE.get(name)
    assert method is not None
    position = draw(st.integers(min_value=0, max_value=len(method.params)))
    valid = [valid_value(p) for p in method.params[:position]]
    value = draw(JSON_VALUES)
    params: Any = [*valid, value]
    if position < len(method.params) and draw(st.booleans()):
        params = {method.params[position].name: value}
    return {"jsonrpc": "2.0", "id": 1, "method": name, "params": params}


@settings(
    max_examples=2000 if LONG else 300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(call=hostile_calls())
def test_generated_values_never_internal_error(dispatcher: Dispatcher, call: dict) -> None:
    [answer] = _call(dispatcher, [call])
    assert answer.get("error", {}).get("code") != INTERNAL_ERROR, call
