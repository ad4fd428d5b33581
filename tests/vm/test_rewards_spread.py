"""Epoch settlement spread over blocks (docs/rewards.md "Settlement"): a fleet larger than
one block's ``settle_vehicles_per_block`` is settled a slice per block, with a cursor in
state, and ends with exactly what the one-shot settlement (everything in the boundary
block) gives; every block stays within its cost; the ended epoch keeps its parameters."""

from __future__ import annotations

import pytest

from tests.harness import LocalChain, Module
from tests.vm.test_rewards import FakeWorld, active, end_epoch, fake_world, new_chain
from tests.vm.test_rewards_telemetry import PARAMS, Road
from tests.vm.test_telemetry_fleet import Fleet
from vm.epoch import get_epoch
from vm.errors import BlockTooCostly
from vm.execute import BlockBody, execute_block
from vm.modules import addresses
from vm.modules.governance import OPTION_YES
from vm.modules.rewards import (
    SettlementBacklog,
    get_carry,
    get_epoch_result,
    get_settlement_backlog,
    get_vehicle_reward,
    history_start,
    list_epoch_rewards,
    processed_epochs,
    settlement_backlog,
)
from vm.params import ETHER
from vm.state import decode_transaction
from vm.supply import get_supply

VEHICLES = 23
STEPS = 4  # 23 vehicles: 23 scoring + 23 paying + 1 finalizing steps = 12 blocks > one epoch


def run_fleet(settle_per_block: int | None) -> tuple[Fleet, list[int]]:
    """23 vehicles, two epochs of data (plans differ so points differ), then blocks until
    both epochs are settled. Returns the fleet and each settlement block's steps."""
    params = dict(PARAMS)
    if settle_per_block is not None:
        params["settle_vehicles_per_block"] = settle_per_block
    fleet = Fleet(VEHICLES, params=params)
    road = Road(fleet)
    road.run_epoch()  # align to a boundary
    first = road.run_epoch({i: 1 + i % 9 for i in range(VEHICLES)})
    road.run_epoch({i: 9 - i % 7 for i in range(0, VEHICLES, 2)})
    chain = fleet.chain
    while processed_epochs(chain.state()) < first + 2:
        chain.block()
    return fleet, first


def records(chain: LocalChain, epoch: int) -> dict[int, tuple]:
    """Every vehicle's record of ``epoch``, keyed by vehicle id (all fields, shares too)."""
    return {r.vehicle_id: r for r in list_epoch_rewards(chain.state(), epoch)}


def reward_events(chain: LocalChain) -> list[tuple]:
    """Every RewardPaid and EpochSettled event of the chain (topics and data), sorted."""
    return sorted((e.topics, e.data) for r in chain.results for e in r.block_events
                  if e.address == addresses.REWARDS)


@pytest.fixture(scope="module")
def fleets():
    return run_fleet(STEPS), run_fleet(None)


def test_spread_settlement_equals_the_one_shot_one(fleets) -> None:
    (spread, first), (one_shot, first2) = fleets
    assert first == first2
    a, b = spread.chain, one_shot.chain
    sa, sb = a.state(), b.state()
    for epoch in (first, first + 1):
        assert records(a, epoch) == records(b, epoch)
        ra, rb = get_epoch_result(sa, epoch), get_epoch_result(sb, epoch)
        assert ra.processed and rb.processed and not ra.settling
        same = ("issuance", "carry_in", "pool", "total_points", "minted", "vehicle_count", "carry_out",
                "evaluated", "ended_at")
        assert [getattr(ra, f) for f in same] == [getattr(rb, f) for f in same]
        # the one-shot chain settled in the boundary block; the spread one later
        assert rb.settled_at == rb.ended_at < ra.settled_at
    assert records(a, first) and any(r.reward for r in records(a, first).values())
    assert get_carry(sa) == get_carry(sb)
    assert get_supply(sa)["minted"] == get_supply(sb)["minted"] > 0
    for address, _ in a.accounts[2:]:
        assert sa.get_balance(address) == sb.get_balance(address)
    assert reward_events(a) == reward_events(b) and len(reward_events(a)) > 2


def test_each_block_does_at_most_its_steps_and_the_queue_waits(fleets) -> None:
    (spread, first), _ = fleets
    chain = spread.chain
    settle_cost = chain.param("settle_cost")
    steps = [r.cost // settle_cost for r in chain.results if r.cost and not r.transactions
             and not r.attestations]
    assert steps and max(steps) == STEPS
    assert all(r.cost <= chain.param("max_block_cost") for r in chain.results)
    # 47 steps at 4 a block outlast a 10-block epoch: the next boundary came while the
    # first epoch was still settling, and the second one waited behind it
    boundary = get_epoch_result(chain.state(), first).ended_at
    settled = get_epoch_result(chain.state(), first).settled_at
    assert settled - boundary + 1 == 12
    assert get_epoch_result(chain.state(), first + 1).ended_at < settled


def test_mid_settlement_reads_say_it_is_not_settled() -> None:
    chain = new_chain(settle_vehicles_per_block=5)
    owners = [a for a, _ in chain.accounts[1:]]
    world = FakeWorld(vehicles={v: (owners[v % len(owners)], True) for v in range(1, 24)})
    world.activity[0] = {v: active(12 + v) for v in range(1, 24)}
    with fake_world(world):
        assert end_epoch(chain) == 0
        s = chain.state()
        r = get_epoch_result(s, 0)
        assert (r.processed, r.settling, r.evaluated) == (False, True, 5)  # 5 scored so far
        assert processed_epochs(s) == 0 and settlement_backlog(s) == 1
        # 47 steps (23 scoring, 23 paying, 1 finalizing), 5 done: 18 to score, 23 to pay
        assert get_settlement_backlog(s) == SettlementBacklog(
            epochs=1, oldest=0, vehicles=23, steps=42, counted=1)
        chain.block()
        assert get_settlement_backlog(chain.state()).steps == 37
        gov_view = Module(chain, "rewards", addresses.REWARDS)
        assert gov_view.call("getEpoch", 0)[-1] is False and gov_view.call("processedEpochs") == 0
        while not get_epoch_result(chain.state(), 0).processed:
            chain.block()
        s = chain.state()
        assert settlement_backlog(s) == 0 and len(list_epoch_rewards(s, 0)) == 23
        assert get_settlement_backlog(s) == SettlementBacklog(0, 1, 0, 0, 0)
        assert gov_view.call("getEpoch", 0)[-1] is True


def test_a_parameter_change_at_the_boundary_does_not_reach_the_ended_epoch() -> None:
    """min_attestations raised from 12 to 100 activates at the boundary that ends the
    epoch; vehicles scored in the blocks after it still qualify with 12 (the snapshot)."""
    chain = new_chain(settle_vehicles_per_block=5, gov_voting_period_blocks=10,
                      gov_execution_delay_blocks=0, gov_min_deposit=ETHER)
    (a1, k1) = chain.accounts[1]
    gov = Module(chain, "governance", addresses.GOVERNANCE)
    world = FakeWorld(vehicles={v: (a1, True) for v in range(1, 24)})
    with fake_world(world):
        gov.send(k1, "lock", value=ETHER)
        gov.send(k1, "proposeParam", "min_attestations", 100, "", value=ETHER)
        gov.send(k1, "vote", 1, OPTION_YES)
        for e in range(4):
            world.activity[e] = {v: active(12) for v in range(1, 24)}
        while chain.param("min_attestations") == 12:
            ended = end_epoch(chain)
        while processed_epochs(chain.state()) <= ended:
            chain.block()
        s = chain.state()
        assert get_epoch_result(s, ended).settled_at > get_epoch_result(s, ended).ended_at  # spread
        assert all(get_vehicle_reward(s, ended, v).qualified for v in range(1, 24))
        assert get_epoch_result(s, ended).minted > 0


def test_settlement_counts_in_the_block_cost_and_a_block_over_it_is_refused() -> None:
    """Cap 10,000, settlement 5 steps x 1,000: a block of transfers that fits an idle
    block is over the cap while an epoch settles; the builder leaves transfers out."""
    chain = new_chain(settle_vehicles_per_block=5, max_block_cost=10_000, settle_cost=1_000)
    owners = [a for a, _ in chain.accounts[1:]]
    world = FakeWorld(vehicles={v: (owners[v % len(owners)], True) for v in range(1, 24)})
    world.activity[0] = {v: active(12) for v in range(1, 24)}

    def transfers(n: int) -> list[bytes]:  # n senders to n fresh accounts: 600 each
        return [chain.sign(k, bytes([0xEE, i]) * 10, value=1, gas=21_000)
                for i, (_, k) in enumerate(chain.accounts[1:1 + n])]

    idle_cost = chain.block(transfers(9)).cost  # before any epoch settles: fits
    assert 5_000 < idle_cost <= 10_000
    with fake_world(world):
        end_epoch(chain)
        assert chain.results[-1].cost == 5_000  # the boundary block: 5 steps
        body = BlockBody([decode_transaction(t) for t in transfers(9)])
        with pytest.raises(BlockTooCostly):
            execute_block(chain.db, chain.head.state_root, chain.env(), body)
        built = chain.block(transfers(9), skip_invalid=True)
        assert built.cost <= 10_000 and 0 < len(built.transactions) < 9


def test_history_window_clears_old_epochs() -> None:
    """With reward_history_epochs 2, epoch 0's per-vehicle records are cleared once epoch
    2 is settled; its summary stays, and the reads say it is out of the window."""
    chain = new_chain(reward_history_epochs=2, settle_vehicles_per_block=5)
    owners = [a for a, _ in chain.accounts[1:]]
    world = FakeWorld(vehicles={v: (owners[v % len(owners)], True) for v in range(1, 9)})
    with fake_world(world):
        for e in range(4):
            world.activity[e] = {v: active(12) for v in range(1, 9)}
            end_epoch(chain)
        chain.advance(5)
        s = chain.state()
        assert processed_epochs(s) == 4 and get_epoch(s) == 4
        assert history_start(s) == 2
        assert get_vehicle_reward(s, 0, 1) is None and list_epoch_rewards(s, 1) == []
        assert get_vehicle_reward(s, 2, 1) is not None and len(list_epoch_rewards(s, 3)) == 8
        assert get_epoch_result(s, 0).processed and get_epoch_result(s, 0).minted > 0


def test_event_words_are_what_eth_abi_encodes() -> None:
    """Block events encode one-word values without eth_abi (a settlement emits one a
    paid vehicle): the bytes must be eth_abi's."""
    import eth_abi

    from vm.modules.base import _encode_static, _encode_word

    for t, v in (("uint256", 0), ("uint256", 2**256 - 1), ("uint256", 12345),
                 ("address", b"\x01" * 20), ("address", "0x" + "ab" * 20), ("bool", True)):
        assert _encode_word(t, v) == eth_abi.encode([t], [v])[:32]
    types, values = ["uint256", "address", "uint256"], [7, b"\xee" * 20, 2**200]
    assert _encode_static(types, values) == eth_abi.encode(types, values)
    assert _encode_static(["string"], ["x"]) == eth_abi.encode(["string"], ["x"])


def test_record_words_round_trip_and_refuse_what_does_not_fit() -> None:
    from vm.modules.rewards import (
        pack_payout,
        pack_record,
        pack_streak,
        unpack_payout,
        unpack_record,
    )

    owner = bytes(range(1, 21))
    for fields in ((1, 0, 0, 0, 0, 0, b"\0" * 20), (7, 3, 3, 3, 9_000, 2**32 - 1, owner),
                   (255, 255, 255, 255, 2**32 - 1, 12, b"\xff" * 20)):
        word = pack_record(*fields)
        assert word < 2**256 and unpack_record(word) == fields
    for bad in ((256, 0, 0, 0, 0, 0), (1, 0, 0, 0, 2**32, 0), (1, 0, 0, 0, 0, 2**32)):
        with pytest.raises(ValueError):
            pack_record(*bad, owner)
    assert unpack_payout(pack_payout(10**27, 3)) == (10**27, 3)
    with pytest.raises(ValueError):
        pack_payout(2**192, 0)
    assert pack_streak(1, 2, 3) == 1 | 2 << 64 | 3 << 128


def test_cleared_records_leave_no_word_behind() -> None:
    """Clearing zeroes the record and payout words and the list entry (three writes a
    vehicle), and the streak word stays."""
    from vm.modules.base import Store, mapping_slot
    from vm.modules.rewards import (
        M_EPOCH_VEHICLE,
        M_REWARD,
        M_STREAK,
        R_PAYOUT,
        R_RECORD,
        S_CLEAR_CURSOR,
        S_CLEARED,
    )

    chain = new_chain(reward_history_epochs=1, settle_vehicles_per_block=5)
    owners = [a for a, _ in chain.accounts[1:]]
    world = FakeWorld(vehicles={v: (owners[v % len(owners)], True) for v in range(1, 9)})
    with fake_world(world):
        for e in range(3):
            world.activity[e] = {v: active(12) for v in range(1, 9)}
            end_epoch(chain)
        chain.advance(5)  # epoch 1 is cleared to its 6th entry: out of the window already
        assert history_start(chain.state()) == 2
        chain.advance(2)
        st = Store(chain.state(), addresses.REWARDS)
        assert st.load(S_CLEARED) == 2 and st.load(S_CLEAR_CURSOR) == 0
        for v in range(1, 9):
            for e in (0, 1):
                assert st.load(mapping_slot(M_REWARD, e, v) + R_RECORD) == 0
                assert st.load(mapping_slot(M_REWARD, e, v) + R_PAYOUT) == 0
            assert st.load(mapping_slot(M_REWARD, 2, v) + R_PAYOUT) > 0  # in the window
            assert st.load(mapping_slot(M_STREAK, v)) != 0
        assert all(st.load(mapping_slot(M_EPOCH_VEHICLE, e, i)) == 0 for e in (0, 1) for i in range(8))
