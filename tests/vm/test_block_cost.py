"""The deterministic block cost (vm/cost.py): what it counts, that a block over
``max_block_cost`` is invalid with code ``block_cost_exceeded`` (and found before its
attestations run), and that building leaves out exactly what does not fit."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

import vm.execute as execute
from tests.harness import CHAIN_ID, LocalChain
from tests.vm.test_telemetry_fleet import HOME, Fleet
from vm.cost import BlockCost, CostWeights
from vm.db import OverlayDB
from vm.errors import BlockTooCostly, InvalidBlock
from vm.execute import BlockBody, execute_block
from vm.modules.telemetry import DEFERRED, OK
from vm.params import defaults
from vm.state import decode_transaction

WEIGHTS = CostWeights(**{k: v for k, v in defaults().items() if k in CostWeights.__dataclass_fields__})


def transfer(key: bytes, to: bytes, nonce: int) -> bytes:
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": to_checksum_address(to), "value": 1,
          "gas": 21_000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9}
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def fresh(i: int) -> bytes:
    return keccak(b"fresh account %d" % i)[:20]


def with_weights(monkeypatch: pytest.MonkeyPatch, **changes: int) -> CostWeights:
    weights = CostWeights(**{**WEIGHTS.__dict__, **changes})
    monkeypatch.setattr(execute.CostWeights, "of", classmethod(lambda cls, state: weights))
    return weights


def run(chain: LocalChain, raws: list[bytes], atts: list[bytes] = (), **kw):  # type: ignore[assignment]
    body = BlockBody([decode_transaction(r) for r in raws], list(atts), raw_transactions=raws)
    return execute_block(OverlayDB(chain.db), chain.head.state_root, chain.env(), body, **kw)


def test_defaults_are_the_documented_weights() -> None:
    assert WEIGHTS == CostWeights(1_000_000, 200, 200, 100, 250, 40, 600)
    chain = LocalChain()
    assert CostWeights.of(chain.state()) == WEIGHTS  # genesis writes them


def test_transfers_cost_per_transaction_and_per_distinct_account() -> None:
    chain = LocalChain()
    (_, k0), (a1, _) = chain.accounts[0], chain.accounts[1]
    # three transfers from one sender: two to one recipient, one to another
    raws = [transfer(k0, a1, 0), transfer(k0, a1, 1), transfer(k0, fresh(0), 2)]
    result = run(chain, raws)
    assert result.cost == 3 * WEIGHTS.tx_cost + 3 * WEIGHTS.account_cost  # a0, a1, fresh(0)
    assert chain.block(raws).cost == result.cost  # the same as the chain computes


def test_a_block_over_the_cap_is_invalid_and_building_leaves_the_rest_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    chain = LocalChain()
    _, key = chain.accounts[0]
    raws = [transfer(key, fresh(i), i) for i in range(10)]
    # the sender once, each recipient once: 4 transfers fit exactly
    per_first, per_next = WEIGHTS.tx_cost + 2 * WEIGHTS.account_cost, WEIGHTS.tx_cost + WEIGHTS.account_cost
    with_weights(monkeypatch, max_block_cost=per_first + 3 * per_next)
    with pytest.raises(BlockTooCostly) as err:
        run(chain, raws)
    assert err.value.code == "block_cost_exceeded"
    assert isinstance(err.value, InvalidBlock)  # every validator path rejects it as invalid
    built = run(chain, raws, skip_invalid=True)
    assert len(built.transactions) == 4 and built.cost == per_first + 3 * per_next
    run(chain, built.raw_transactions)  # what building made is valid


def test_gas_beyond_intrinsic_is_weighted_by_where_it_runs() -> None:
    key = Account.create().key
    accounts = 2 * WEIGHTS.account_cost
    for to, weight in ((fresh(1), WEIGHTS.evm_gas_cost), (execute.addresses.IDENTITY, WEIGHTS.module_gas_cost)):
        tx = decode_transaction(bytes(Account.sign_transaction(
            {"type": 2, "chainId": CHAIN_ID, "nonce": 0, "to": to_checksum_address(to), "value": 0,
             "gas": 121_000, "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 1}, key).raw_transaction))
        cost = BlockCost(WEIGHTS)
        # the bound assumes all gas is spent; the count uses what was
        assert cost.transaction_bound(tx, fresh(2)) == WEIGHTS.tx_cost + accounts + 100 * weight
        assert cost.add_transaction(tx, fresh(2), 61_000, None, 0) == WEIGHTS.tx_cost + accounts + 40 * weight
    # code deposit (storing code) is not charged as running it
    create = decode_transaction(bytes(Account.sign_transaction(
        {"type": 2, "chainId": CHAIN_ID, "nonce": 0, "value": 0, "data": b"",
         "gas": 121_000, "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 1}, key).raw_transaction))
    cost = BlockCost(WEIGHTS)
    assert cost.transaction_bound(create, fresh(2)) == WEIGHTS.tx_cost + accounts + (121_000 - 53_000) * 250 // 1000
    assert cost.add_transaction(create, fresh(2), 53_000 + 200 * 100, fresh(3), 100) == WEIGHTS.tx_cost + accounts


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet(12)


def readings(fleet: Fleet) -> list[bytes]:
    start = fleet.chain.head.timestamp_ms
    return [dev.attest(vehicle_id=vid, timestamp_ms=start + 500, lat=HOME[0] + 0.001 * i, lon=HOME[1],
                       odometer_m=10_000, signals={"i": i}).raw
            for i, (dev, vid) in enumerate(zip(fleet.devices, fleet.vehicle_ids, strict=True))]


def test_attestations_over_the_cap_are_refused_before_they_run(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    atts = readings(fleet)
    with_weights(monkeypatch, max_block_cost=5 * WEIGHTS.attestation_cost)
    ran = []
    original = execute.SYSTEM_MODULES[execute.addresses.TELEMETRY].process_attestations
    monkeypatch.setattr(execute.SYSTEM_MODULES[execute.addresses.TELEMETRY], "process_attestations",
                        lambda *a, **kw: ran.append(1) or original(*a, **kw))
    with pytest.raises(BlockTooCostly):
        run(fleet.chain, [], atts)
    assert not ran  # rejected on its count, before any signature is checked
    built = run(fleet.chain, [], atts, skip_invalid=True)
    assert len(built.attestations) == 5 and built.cost == 5 * WEIGHTS.attestation_cost
    assert [code for _, code in built.attestation_results] == [OK] * 5 + [DEFERRED] * 7


def test_a_time_budget_stops_building_between_runs_of_attestations(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(execute, "BUILD_ATTESTATION_RUN", 4)
    asked = []

    def should_stop(kind: str) -> bool:
        asked.append(kind)
        return len(asked) >= 2  # asked after each run but the first: two runs, then spent

    built = run(fleet.chain, [], readings(fleet), skip_invalid=True, should_stop=should_stop)
    assert len(built.attestations) == 8
    assert [code for _, code in built.attestation_results] == [OK] * 8 + [DEFERRED] * 4
    assert asked == ["attestations"] * 2
    run(fleet.chain, [], built.attestations)  # the chunked build is what a validator computes
    check = run(fleet.chain, [], built.attestations)
    assert check.state_root == built.state_root


def test_building_caps_the_block_count_over_every_run_and_takes_given_ids(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    import vm.modules.telemetry as telemetry

    monkeypatch.setattr(execute, "BUILD_ATTESTATION_RUN", 4)
    real = telemetry.get_param
    monkeypatch.setattr(telemetry, "get_param", lambda state, name: (
        6 if name == "max_block_attestations" else real(state, name)))
    atts = readings(fleet)
    forged = bytearray(atts[1])
    forged[-5] ^= 1  # inside the signature: refused, the others go on
    atts[1] = bytes(forged)
    ids = [keccak(a) for a in atts]
    body = BlockBody([], atts, attestation_ids=ids)
    hashed: list[bytes] = []
    real_id = telemetry.compute_attestation_id
    monkeypatch.setattr(telemetry, "compute_attestation_id",
                        lambda raw: hashed.append(raw) or real_id(raw))
    built = execute_block(OverlayDB(fleet.chain.db), fleet.chain.head.state_root,
                          fleet.chain.env(), body, skip_invalid=True)
    assert not hashed  # the given ids were used: none hashed again
    codes = [code for _, code in built.attestation_results]
    # the cap (6) counts the block's included ones, not each run's (runs of 4)
    assert codes[0] == OK and codes[1] not in (OK, DEFERRED)
    assert codes[2:7] == [OK] * 5 and codes[7:] == [DEFERRED] * 5
    assert [att_id for att_id, _ in built.attestation_results] == ids
    assert built.attestations == [atts[0]] + atts[2:7]
    # the same block without the ids, and as a validator checks it: the same state
    again = run(fleet.chain, [], atts, skip_invalid=True)
    assert again.attestation_results == built.attestation_results
    assert run(fleet.chain, [], built.attestations).state_root == built.state_root
