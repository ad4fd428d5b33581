"""Epoch rewards on a real chain (docs/rewards.md).

Telemetry's counters and identity's vehicle records are replaced by :class:`FakeWorld`
so these tests pin the rewards module alone; test_rewards_telemetry.py runs the same
path with real attestations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from unittest import mock

from tests.harness import LocalChain, Module
from vm.epoch import get_epoch
from vm.modules import addresses
from vm.modules.governance import OPTION_YES
from vm.modules.rewards import (
    get_carry,
    get_epoch_result,
    get_streak,
    get_vehicle_reward,
    get_vehicle_rewards,
    list_epoch_rewards,
    process_epoch_end,
)
from vm.params import ETHER
from vm.supply import get_supply

EPOCH = 10


# --- fakes of telemetry and identity ---------------------------------------------------

@dataclass(frozen=True)
class Activity:
    accepted: int
    moving: int
    distance_m: int = 0
    challenged: bool = False
    challenge_passed: bool = False


def active(n: int, **kw) -> Activity:
    return Activity(n, n, **kw)


@dataclass
class FakeWorld:
    """``activity[epoch][vehicle_id]``; ``vehicles[vehicle_id] = (owner, paired)``."""

    activity: dict[int, dict[int, Activity]] = field(default_factory=dict)
    vehicles: dict[int, tuple[bytes, bool]] = field(default_factory=dict)

    def vehicle_count(self, state, epoch):
        return len(self.activity.get(epoch, {}))

    def vehicle_at(self, state, epoch, index):
        return sorted(self.activity[epoch].items())[index]

    def vehicle_owner(self, state, vehicle_id):
        return (*self.vehicles.get(vehicle_id, (None, False)), False)  # never synthetic


@contextmanager
def fake_world(world: FakeWorld) -> Iterator[FakeWorld]:
    with mock.patch("vm.modules.rewards.epoch_vehicle_count", world.vehicle_count), \
            mock.patch("vm.modules.rewards.epoch_vehicle_at", world.vehicle_at), \
            mock.patch("vm.modules.rewards.get_vehicle_owner", world.vehicle_owner):
        yield world


def end_epoch(chain: LocalChain) -> int:
    """Run blocks up to and including the next epoch boundary; returns the ended epoch."""
    epoch = get_epoch(chain.state())
    while True:
        chain.block()
        if chain.results[-1].epoch_boundary:
            return epoch


def new_chain(**params) -> LocalChain:
    return LocalChain(params={"epoch_length_blocks": EPOCH, "epoch_issuance": 1_001, "decay_bps": 0,
                              **params})


# --- tests ------------------------------------------------------------------------------

def test_epoch_payout_table_with_carried_remainder():
    chain = new_chain()
    (a1, _), (a2, _) = chain.accounts[1:3]
    world = FakeWorld(vehicles={1: (a1, True), 2: (a2, True), 3: (a2, False)})
    world.activity[0] = {1: active(12), 2: active(48), 3: active(100)}  # 3 is unpaired
    world.activity[1] = {1: active(12), 2: active(48)}
    bal1, bal2 = (chain.state().get_balance(a) for a in (a1, a2))
    with fake_world(world):
        assert end_epoch(chain) == 0
        s = chain.state()
        r = get_epoch_result(s, 0)
        # 1,000 + 3,000 points share 1,001 wei: 250 + 750, 1 wei carried
        assert (r.processed, r.issuance, r.carry_in, r.pool, r.total_points, r.minted, r.vehicle_count,
                r.carry_out, r.evaluated) == (True, 1_001, 0, 1_001, 4_000, 1_000, 2, 1, 3)
        assert [(x.vehicle_id, x.points, x.reward, x.qualified) for x in list_epoch_rewards(s, 0)] == [
            (1, 1_000, 250, True), (2, 3_000, 750, True), (3, 0, 0, False)]
        assert s.get_balance(a1) - bal1 == 250 and s.get_balance(a2) - bal2 == 750
        assert get_supply(s)["minted"] == 1_000 and get_carry(s) == 1

        assert end_epoch(chain) == 1  # pool 1,001 + 1 carried = 1,002: 250 + 751 (= 751.5), 1 left
        r = get_epoch_result(chain.state(), 1)
        assert (r.carry_in, r.pool, r.minted, r.carry_out) == (1, 1_002, 1_001, 1)
        assert get_supply(chain.state())["minted"] == 2_001

        # ABI views answer the same through eth_call
        rewards = Module(chain, "rewards", addresses.REWARDS)
        assert rewards.call("getEpoch", 1) == (1_002, 4_000, 1_001, 2, 1_001, 1, 1, True)
        points, reward, owner, qualified, data, streak, lock, penalized = rewards.call("getVehicleReward", 1, 2)
        assert (points, reward, owner.lower(), qualified, data, streak, lock, penalized) == (
            3_000, 751, "0x" + a2.hex(), True, 3, 0, 0, False)
        assert rewards.call("getEpochVehicles", 0, 0, 10) == (1, 2, 3)
        assert rewards.call("getEpochVehicles", 0, 1, 1) == (2,)
        assert rewards.call("processedEpochs") == 2 and rewards.call("carry") == 1
        assert rewards.call("getVehicleReward", 1, 3)[:2] == (0, 0)  # no data in epoch 1


def test_epoch_without_qualifying_vehicle_mints_nothing():
    chain = new_chain()
    a1 = chain.accounts[1][0]
    world = FakeWorld(vehicles={1: (a1, True), 2: (a1, True)})
    world.activity[0] = {1: active(12), 2: active(48)}  # 250 + 750, 1 wei carried
    world.activity[1] = {1: active(11)}  # too few
    with fake_world(world):
        end_epoch(chain)
        supply = get_supply(chain.state())
        end_epoch(chain)  # epoch 1: nobody qualifies
        r = get_epoch_result(chain.state(), 1)
        assert (r.total_points, r.minted, r.vehicle_count, r.carry_in, r.carry_out) == (0, 0, 0, 1, 1)
        assert get_supply(chain.state())["minted"] == supply["minted"]
        end_epoch(chain)  # epoch 2: no data at all
        r = get_epoch_result(chain.state(), 2)
        assert (r.processed, r.pool, r.minted, r.evaluated, r.carry_out) == (True, 1_002, 0, 0, 1)


def test_epoch_is_processed_once():
    chain = new_chain()
    a1 = chain.accounts[1][0]
    world = FakeWorld(vehicles={1: (a1, True)}, activity={0: {1: active(12)}})
    with fake_world(world):
        end_epoch(chain)
        s = chain.state()
        before = (s.get_balance(a1), get_supply(s), get_streak(s, 1))
        process_epoch_end(s, 0)
        assert (s.get_balance(a1), get_supply(s), get_streak(s, 1)) == before


def test_streak_levels_and_drop_rule_through_epochs():
    chain = new_chain()
    a1 = chain.accounts[1][0]
    world = FakeWorld(vehicles={1: (a1, True), 2: (a1, True)})
    with fake_world(world):
        for e in range(4):  # vehicle 1 qualifies 4 epochs in a row; vehicle 2 always there
            world.activity[e] = {1: active(12), 2: active(12)}
            end_epoch(chain)
        s = chain.state()
        assert [get_vehicle_reward(s, e, 1).streak_level for e in range(4)] == [0, 0, 0, 1]
        assert get_vehicle_reward(s, 3, 1).points == 2_000
        # epoch 4 has data below the minimum (a miss), 5 and 6 none at all (misses, lazily)
        world.activity[4] = {1: active(3), 2: active(12)}
        for e in (5, 6):
            world.activity[e] = {2: active(12)}
        for _ in range(3):
            end_epoch(chain)
        st = get_streak(chain.state(), 1)
        assert (st.count, st.level, st.missed, st.last_data_epoch) == (0, 0, 0, 4)  # dropped to level 0's floor
        world.activity[7] = {1: active(12), 2: active(12)}
        end_epoch(chain)
        s = chain.state()
        assert get_vehicle_reward(s, 7, 1).streak == 1
        assert get_vehicle_reward(s, 7, 2).streak == 8
        assert [r.epoch for r in get_vehicle_rewards(s, 1, 0, 100)] == [0, 1, 2, 3, 4, 7]
        assert Module(chain, "rewards", addresses.REWARDS).call("getStreak", 2) == (8, 1, 0, 7, True)
        assert Module(chain, "rewards", addresses.REWARDS).call("getStreak", 9) == (0, 0, 0, 0, False)


def test_reward_goes_to_current_owner_and_streak_survives_transfer():
    chain = new_chain()
    (a1, _), (a2, _) = chain.accounts[1:3]
    world = FakeWorld(vehicles={1: (a1, True)})
    with fake_world(world):
        for e in range(3):
            world.activity[e] = {1: active(12)}
            end_epoch(chain)
        world.vehicles[1] = (a2, True)  # sold (and a new device paired) before epoch 3 ended
        world.activity[3] = {1: active(12)}
        bal2 = chain.state().get_balance(a2)
        end_epoch(chain)
        r = get_vehicle_reward(chain.state(), 3, 1)
        assert (r.owner, r.streak, r.streak_level, r.reward) == (a2, 4, 1, 1_001)
        assert chain.state().get_balance(a2) - bal2 == 1_001


def test_challenge_failure_halves_points():
    chain = new_chain()
    (a1, _), (a2, _) = chain.accounts[1:3]
    world = FakeWorld(vehicles={1: (a1, True), 2: (a2, True)})
    world.activity[0] = {1: active(12, challenged=True), 2: active(12, challenged=True, challenge_passed=True)}
    with fake_world(world):
        end_epoch(chain)
        s = chain.state()
        one, two = get_vehicle_reward(s, 0, 1), get_vehicle_reward(s, 0, 2)
        assert (one.points, one.penalized, one.reward) == (500, True, 333)
        assert (two.points, two.penalized, two.reward) == (1_000, False, 667)


def test_lock_level_counts_owner_locked_tokens():
    chain = new_chain()
    (a1, k1), (a2, _) = chain.accounts[1:3]
    gov = Module(chain, "governance", addresses.GOVERNANCE)
    gov.send(k1, "lock", value=1_500 * ETHER)
    world = FakeWorld(vehicles={1: (a1, True), 2: (a2, True)})
    world.activity[0] = {1: active(12), 2: active(12)}
    with fake_world(world):
        end_epoch(chain)
        s = chain.state()
        assert get_vehicle_reward(s, 0, 1).lock_level == 2
        assert get_vehicle_reward(s, 0, 1).points == 3_000
        assert get_vehicle_reward(s, 0, 2).points == 1_000


def test_rewards_use_the_params_in_force_during_the_ended_epoch():
    chain = new_chain(gov_voting_period_blocks=10, gov_execution_delay_blocks=0, gov_min_deposit=ETHER)
    (a1, k1) = chain.accounts[1]
    gov = Module(chain, "governance", addresses.GOVERNANCE)
    world = FakeWorld(vehicles={1: (a1, True)})
    with fake_world(world):
        gov.send(k1, "lock", value=ETHER)
        gov.send(k1, "proposeParam", "epoch_issuance", 5_000, "", value=ETHER)
        gov.send(k1, "vote", 1, OPTION_YES)
        for e in range(4):
            world.activity[e] = {1: active(12)}
        while chain.param("epoch_issuance") == 1_001:
            ended = end_epoch(chain)
        # the boundary that activated the change paid the ended epoch with the old issuance
        assert get_epoch_result(chain.state(), ended).issuance == 1_001
        ended = end_epoch(chain)
        assert get_epoch_result(chain.state(), ended).issuance == 5_000


def test_decay_applies_per_period():
    chain = new_chain(epoch_issuance=1_000_000, decay_bps=1_500, decay_period_epochs=2)
    a1 = chain.accounts[1][0]
    world = FakeWorld(vehicles={1: (a1, True)}, activity={e: {1: active(12)} for e in range(5)})
    with fake_world(world):
        for _ in range(5):
            end_epoch(chain)
        s = chain.state()
        assert [get_epoch_result(s, e).issuance for e in range(5)] == [
            1_000_000, 1_000_000, 850_000, 850_000, 722_500]
