"""vm/trace.py in-process: a block replayed under tracers charges what its execution
charged, and a trace bound aborts the execution even from inside a system module's
callback into EVM code (whose last-resort handler turns exceptions into reverts)."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from tests.harness import LocalChain, Module
from vm.call import call
from vm.execute import BlockBody
from vm.modules.addresses import IDENTITY
from vm.state import decode_transaction
from vm.trace import (
    Budget,
    CallTracer,
    StructLogger,
    StructLogOptions,
    TraceLimitExceeded,
    replay_block,
    trace_call,
)

# loop(n = first calldata word): while n: n -= 1
LOOP = bytes.fromhex("600035" "5b" "80" "15" "6010" "57" "6001" "90" "03" "6003" "56" "5b" "00")


def deploy_code(runtime: bytes) -> bytes:
    n = len(runtime)
    return bytes([0x60, n, 0x60, 0x0C, 0x60, 0x00, 0x39, 0x60, n, 0x60, 0x00, 0xF3]) + runtime


def test_replayed_block_charges_what_its_execution_charged() -> None:
    chain = LocalChain()
    k0, k1 = chain.accounts[0][1], chain.accounts[1][1]
    loop = chain.block([chain.sign(k0, None, deploy_code(LOOP))]).contract_addresses[0]
    assert loop is not None
    parent = chain.head
    nonce = chain.state().get_nonce(chain.accounts[0][0])
    raws = [chain.sign(k0, loop, (50).to_bytes(32, "big"), nonce=nonce),
            chain.sign(k1, loop, (7).to_bytes(32, "big")),
            chain.sign(k0, bytes(20), b"", value=5, nonce=nonce + 1)]
    env = chain.env()
    result = chain.block(raws)
    body = BlockBody([decode_transaction(r) for r in raws], raw_transactions=raws)
    tracers: dict[int, CallTracer] = {}

    def tracer_for(i: int) -> CallTracer:
        tracers[i] = CallTracer(Budget(10))
        return tracers[i]

    traced = replay_block(chain.db, parent.state_root, env, body, tracer_for, Budget(10))
    assert [t.gas_used for t in traced.values()] == result.tx_gas_used
    assert [tracers[i].root["type"] for i in range(3)] == ["CALL"] * 3  # type: ignore[index]


def test_a_bound_is_not_swallowed_by_a_system_module_callback() -> None:
    """safeTransferFrom of a vehicle to a contract calls its onERC721Received from the
    identity module (Python); that contract loops, so the trace hits its bound inside
    the callback. The trace must be refused, not reported as a transfer that reverted."""
    chain = LocalChain()
    a0, k0 = chain.accounts[0]
    identity = Module(chain, "identity", IDENTITY)
    identity.send(k0, "mintVehicle", "Tesla", "Model 3", 2021, keccak(b"VIN-1"))
    receiver = chain.block([chain.sign(k0, None, deploy_code(LOOP))]).contract_addresses[0]
    assert receiver is not None
    data = identity.data("safeTransferFrom", a0, receiver, 1, b"")
    plain = call(chain.db, chain.head.state_root, chain.env(), sender=a0, to=IDENTITY,
                 data=data, gas=300_000)
    assert not plain.success  # the receiver runs out of gas: an ordinary revert
    struct = StructLogger(Budget(10), StructLogOptions(), max_steps=1_000, max_bytes=1 << 20)
    with pytest.raises(TraceLimitExceeded) as too_big:
        trace_call(chain.db, chain.head.state_root, chain.env(), struct, sender=a0,
                   to=IDENTITY, data=data, gas=5_000_000)
    assert too_big.value.reason == "trace_too_large"
    with pytest.raises(TraceLimitExceeded) as late:
        trace_call(chain.db, chain.head.state_root, chain.env(), CallTracer(Budget(0.01)),
                   sender=a0, to=IDENTITY, data=data, gas=30_000_000)
    assert late.value.reason == "trace_timeout"
