"""Rewards end to end: vehicles minted and paired through identity transactions, signed
attestations processed by telemetry, payouts at the epoch boundary, vehicle transfers,
unpairing and a deny-list proposal through governance."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devnet.device import Drive
from tests.harness import VALIDATOR, Module
from tests.vm.test_telemetry_fleet import HOME, Fleet
from vm.epoch import get_epoch, get_epoch_start
from vm.modules import SYSTEM_MODULES, addresses
from vm.modules.governance import OPTION_YES, get_proposal
from vm.modules.identity import get_vehicle
from vm.modules.rewards import get_epoch_result, get_streak, get_vehicle_reward, list_epoch_rewards
from vm.modules.telemetry import get_vehicle_epoch, is_denied
from vm.params import ETHER
from vm.scoring import compute_payouts
from vm.supply import get_supply

pytestmark = pytest.mark.skipif(addresses.TELEMETRY not in SYSTEM_MODULES,
                                reason="telemetry module not registered in vm.modules yet")

EPOCH = 10
PARAMS = {"epoch_length_blocks": EPOCH, "min_attestations": 3, "epoch_issuance": 1_001, "decay_bps": 0,
          "challenge_fraction_bps": 0, "gov_voting_period_blocks": 10, "gov_execution_delay_blocks": 0,
          "gov_min_deposit": ETHER}


class Road:
    """Drives the fleet's devices; ``run_epoch`` sends each device's planned number of
    attestations (one per block) and executes the epoch's boundary block."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.drives = {d.address: Drive(*HOME, heading_deg=60 * i, speed_mps=15.0, odometer_m=1_000 * i)
                       for i, d in enumerate(fleet.devices)}

    def run_epoch(self, plan: dict[int, int] | None = None, before_boundary=None) -> int:
        """Run the current epoch to its end; ``before_boundary()`` may send one transaction
        as the epoch's last block. Returns the ended epoch."""
        chain = self.fleet.chain
        s = chain.state()
        epoch, boundary = get_epoch(s), get_epoch_start(s) + chain.param("epoch_length_blocks")
        last = boundary - (2 if before_boundary else 1)  # the callback's block ends the epoch
        k = 0
        while chain.head.height < last:
            atts = []
            for i, n in (plan or {}).items():
                if k < n:
                    dev, vid = self.fleet.devices[i], self.fleet.vehicle_ids[i]
                    lat, lon, odo, _ = self.drives[dev.address].step(1_000)
                    atts.append(dev.attest(vehicle_id=vid, timestamp_ms=chain.head.timestamp_ms + 500,
                                           lat=lat, lon=lon, odometer_m=odo, speed_cmps=1_500).raw)
            result = chain.block(attestations=atts)
            assert [c for _, c in result.attestation_results] == ["ok"] * len(atts)
            k += 1
        if before_boundary is not None:
            before_boundary()
        chain.block()
        assert chain.results[-1].epoch_boundary
        return epoch


def new_fleet(n: int = 3) -> tuple[Fleet, Road]:
    fleet = Fleet(n, params=PARAMS)
    road = Road(fleet)
    road.run_epoch()  # align to a boundary: every later epoch has 9 blocks for data
    return fleet, road


def owner_key(fleet: Fleet, owner: bytes) -> bytes:
    return next(k for a, k in fleet.chain.accounts if a == owner)


def test_attesting_vehicles_are_paid_at_the_boundary():
    fleet, road = new_fleet()
    chain = fleet.chain
    v0, v1, v2 = fleet.vehicle_ids
    owners = [get_vehicle(chain.state(), v).owner for v in fleet.vehicle_ids]
    before = [chain.state().get_balance(o) for o in owners]
    minted_before = get_supply(chain.state())["minted"]
    # vehicle 0: 7 readings (6 moving: data level 2), vehicle 1: 4 (3 moving: level 1),
    # vehicle 2: 3 readings but only 2 moving (its first reading ever has no previous)
    epoch = road.run_epoch({0: 7, 1: 4, 2: 3})
    s = chain.state()
    assert [get_vehicle_epoch(s, epoch, v).moving for v in (v0, v1, v2)] == [6, 3, 2]
    r = get_epoch_result(s, epoch)
    assert (r.total_points, r.pool, r.minted, r.vehicle_count, r.carry_out) == (3_000, 1_001, 1_000, 2, 1)
    rewards = {x.vehicle_id: x for x in list_epoch_rewards(s, epoch)}
    assert (rewards[v0].points, rewards[v0].reward, rewards[v0].data_level) == (2_000, 667, 2)
    assert (rewards[v1].points, rewards[v1].reward) == (1_000, 333)
    assert (rewards[v2].qualified, rewards[v2].reward) == (False, 0)
    gained = [s.get_balance(o) - b for o, b in zip(owners, before, strict=True)]
    assert gained == [667, 333, 0]
    assert get_supply(s)["minted"] - minted_before == 1_000
    rewards_module = Module(chain, "rewards", addresses.REWARDS)
    assert rewards_module.call("getEpoch", epoch)[:4] == (1_001, 3_000, 1_000, 2)


def test_transfer_pays_the_new_owner_and_keeps_the_streak():
    fleet, road = new_fleet(1)
    chain = fleet.chain
    vid = fleet.vehicle_ids[0]
    for _ in range(3):
        road.run_epoch({0: 4})
    seller = get_vehicle(chain.state(), vid).owner
    buyer = chain.accounts[9][0]
    identity = fleet.identity
    identity.send(owner_key(fleet, seller), "transferFrom", "0x" + seller.hex(), "0x" + buyer.hex(), vid)
    before = chain.state().get_balance(buyer)
    epoch = road.run_epoch({0: 4})
    r = get_vehicle_reward(chain.state(), epoch, vid)
    assert (r.owner, r.streak, r.streak_level, r.reward) == (buyer, 4, 1, 1_001)
    assert chain.state().get_balance(buyer) - before == 1_001
    assert get_streak(chain.state(), vid).count == 4


def test_vehicle_unpaired_before_the_boundary_does_not_qualify():
    fleet, road = new_fleet(2)
    chain = fleet.chain
    v0, v1 = fleet.vehicle_ids
    owner = get_vehicle(chain.state(), v0).owner

    def unpair():
        fleet.identity.send(owner_key(fleet, owner), "unpairDevice", v0)

    epoch = road.run_epoch({0: 5, 1: 5}, before_boundary=unpair)
    s = chain.state()
    assert not get_vehicle_reward(s, epoch, v0).qualified
    assert get_vehicle_reward(s, epoch, v1).reward == 1_001


def test_deny_list_proposal_through_governance():
    fleet, road = new_fleet(1)
    chain = fleet.chain
    gov = Module(chain, "governance", addresses.GOVERNANCE)
    device = fleet.devices[0]
    k0, k5 = chain.accounts[0][1], chain.accounts[5][1]
    gov.send(k0, "lock", value=ETHER)
    gov.send(k5, "proposeDeny", device.checksum_address, True, "stolen key", value=ETHER)
    gov.send(k0, "vote", 1, OPTION_YES)
    while get_proposal(chain.state(), 1).status != "executed":
        road.run_epoch()
    assert is_denied(chain.state(), device.address)
    assert fleet.telemetry.call("isDenied", device.checksum_address) is True


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(epochs=st.lists(
    st.tuples(st.lists(st.integers(0, 9), min_size=3, max_size=3),  # readings per vehicle
              st.lists(st.none() | st.integers(2, 9), min_size=3, max_size=3),  # transfer to account
              st.integers(0, 2_000)),  # MOTUS the first owner locks
    min_size=2, max_size=4))
def test_supply_and_single_payout_with_real_attestations(epochs):
    fleet, road = new_fleet(3)
    chain = fleet.chain
    gov = Module(chain, "governance", addresses.GOVERNANCE)
    holders = [a for a, _ in chain.accounts] + [VALIDATOR] + list(addresses.ALL.values())
    for counts, transfers, lock in epochs:
        if lock:
            gov.send(chain.accounts[2][1], "lock", value=lock * ETHER)
        for vid, to in zip(fleet.vehicle_ids, transfers, strict=True):
            owner = get_vehicle(chain.state(), vid).owner
            if to is not None and chain.accounts[to][0] != owner:
                fleet.identity.send(owner_key(fleet, owner), "transferFrom", "0x" + owner.hex(),
                                    "0x" + chain.accounts[to][0].hex(), vid)
        owners = {vid: get_vehicle(chain.state(), vid).owner for vid in fleet.vehicle_ids}
        epoch = road.run_epoch(dict(enumerate(counts)))
        s = chain.state()
        supply = get_supply(s)
        assert supply["total"] == sum(s.get_balance(a) for a in holders)
        r = get_epoch_result(s, epoch)
        records = list_epoch_rewards(s, epoch)
        assert [x.vehicle_id for x in records] == sorted({x.vehicle_id for x in records})
        expected = compute_payouts([x.points for x in records], r.pool)[0] if r.minted else [0] * len(records)
        assert [x.reward for x in records] == expected
        assert sum(x.reward for x in records) == r.minted
        for x in records:
            assert x.owner == owners[x.vehicle_id]
    s = chain.state()
    minted = sum(get_epoch_result(s, e).minted for e in range(get_epoch(s)))
    assert minted == get_supply(s)["minted"]
