"""Ownership periods in state (docs/identity.md, "Ownership periods") and the epoch reward
split between the owners whose periods produced the epoch's data (docs/rewards.md)."""

from __future__ import annotations

import pytest

from tests.vm.test_rewards_telemetry import Road, new_fleet, owner_key
from vm.epoch import get_epoch, get_epoch_start
from vm.modules import SYSTEM_MODULES, addresses
from vm.modules.base import Store, mapping_slot
from vm.modules.identity import get_vehicle, ownership_periods, period_at
from vm.modules.rewards import get_vehicle_reward
from vm.modules.telemetry import SLOT_PERIOD_EPOCH, get_period_counts, get_vehicle_epoch
from vm.scoring import compute_owner_split

pytestmark = pytest.mark.skipif(addresses.TELEMETRY not in SYSTEM_MODULES,
                                reason="telemetry module not registered in vm.modules yet")

A, B, C = b"\xaa" * 20, b"\xbb" * 20, b"\xcc" * 20


def test_owner_split_is_exact_and_proportional() -> None:
    assert compute_owner_split(1_001, [(A, 3), (B, 6)], B) == [(A, 333), (B, 668)]
    assert compute_owner_split(1_000, [(A, 2), (B, 2), (A, 1)], B) == [(A, 600), (B, 400)]
    assert compute_owner_split(10, [(A, 1), (B, 1), (C, 1)], C) == [(A, 3), (B, 3), (C, 4)]
    assert compute_owner_split(77, [], C) == [(C, 77)]  # nothing on record: the owner
    for reward in (0, 1, 7, 10**24 + 3):
        split = compute_owner_split(reward, [(A, 5), (B, 7), (C, 1)], C)
        assert sum(amount for _, amount in split) == reward


def _attest(road: Road, count: int) -> None:
    chain = road.fleet.chain
    dev, vid = road.fleet.devices[0], road.fleet.vehicle_ids[0]
    for _ in range(count):
        lat, lon, odo, _ = road.drives[dev.address].step(1_000)
        raw = dev.attest(vehicle_id=vid, timestamp_ms=chain.head.timestamp_ms + 500, lat=lat,
                         lon=lon, odometer_m=odo, speed_cmps=1_500).raw
        assert [c for _, c in chain.block(attestations=[raw]).attestation_results] == ["ok"]


def test_mid_epoch_sale_splits_the_reward_by_the_data_each_owner_produced() -> None:
    fleet, road = new_fleet(1)
    chain, vid = fleet.chain, fleet.vehicle_ids[0]
    seller = get_vehicle(chain.state(), vid).owner
    buyer = chain.accounts[9][0]
    epoch = get_epoch(chain.state())
    _attest(road, 3)  # the seller's car
    fleet.identity.send(owner_key(fleet, seller), "transferFrom", "0x" + seller.hex(),
                        "0x" + buyer.hex(), vid)
    sale_ms = chain.head.timestamp_ms
    _attest(road, 4)  # the buyer's car
    periods = ownership_periods(chain.state(), vid)
    assert [(p.owner, p.to_ms) for p in periods[-2:]] == [(seller, sale_ms), (buyer, None)]
    assert period_at(periods, sale_ms - 1).owner == seller
    assert period_at(periods, sale_ms).owner == buyer
    assert get_vehicle_epoch(chain.state(), epoch, vid).accepted == 7
    assert get_period_counts(chain.state(), epoch, vid) == {periods[-2].index: 3,
                                                             periods[-1].index: 4}
    before = {who: chain.state().get_balance(who) for who in (seller, buyer)}
    boundary = get_epoch_start(chain.state()) + chain.param("epoch_length_blocks")
    chain.advance(boundary - chain.head.height)
    r = get_vehicle_reward(chain.state(), epoch, vid)
    assert r.reward == 1_001 and r.owner == buyer
    assert r.shares == ((seller, 429), (buyer, 572))  # 3/7 and 4/7, remainder to the buyer
    gained = {who: chain.state().get_balance(who) - before[who] for who in (seller, buyer)}
    assert gained == {seller: 429, buyer: 572}


def test_one_period_counts_are_not_stored_and_survive_a_later_sale() -> None:
    """While the vehicle has one ownership period its per-period count is the epoch's
    accepted count (no slot written); a sale after the readings keeps them the seller's."""
    fleet, road = new_fleet(1)
    chain, vid = fleet.chain, fleet.vehicle_ids[0]
    seller = get_vehicle(chain.state(), vid).owner
    epoch = get_epoch(chain.state())
    _attest(road, 3)
    store = Store(chain.state(), addresses.TELEMETRY)
    assert store.load(mapping_slot(SLOT_PERIOD_EPOCH, epoch, vid, 0)) == 0
    assert get_period_counts(chain.state(), epoch, vid) == {0: 3}
    fleet.identity.send(owner_key(fleet, seller), "transferFrom", "0x" + seller.hex(),
                        "0x" + chain.accounts[9][0].hex(), vid)
    assert len(ownership_periods(chain.state(), vid)) == 2
    assert get_period_counts(chain.state(), epoch, vid) == {0: 3}


def test_payout_word_stores_shares_only_when_they_are_not_the_owner_when_scored() -> None:
    """docs/rewards.md "State layout": the payout word's share count is 0 when the whole
    reward went to the owner when scored (no share slot written); a sale after the epoch's
    readings, before the scoring, pays the seller, whose share is stored. The one-period
    producers (read without the periods twice) are what telemetry's per-period counts give."""
    from vm.modules.rewards import (
        M_REWARD,
        M_SHARE,
        R_PAYOUT,
        get_period_producers,
        unpack_payout,
    )

    fleet, road = new_fleet(2)
    chain = fleet.chain
    sold, kept = fleet.vehicle_ids
    seller = get_vehicle(chain.state(), sold).owner
    keeper = get_vehicle(chain.state(), kept).owner
    buyer = chain.accounts[9][0]
    epoch = get_epoch(chain.state())
    for _ in range(5):
        raws = []
        for dev, vid in zip(fleet.devices, fleet.vehicle_ids, strict=True):
            lat, lon, odo, _ = road.drives[dev.address].step(1_000)
            raws.append(dev.attest(vehicle_id=vid, timestamp_ms=chain.head.timestamp_ms + 500, lat=lat,
                                   lon=lon, odometer_m=odo, speed_cmps=1_500).raw)
        assert [c for _, c in chain.block(attestations=raws).attestation_results] == ["ok", "ok"]
    state = chain.state()
    assert get_epoch(state) == epoch
    assert get_period_producers(state, epoch, kept) == [(keeper, 5)]
    assert get_period_counts(state, epoch, kept) == {0: 5}
    boundary = get_epoch_start(chain.state()) + chain.param("epoch_length_blocks")
    chain.advance(boundary - chain.head.height - 2)
    fleet.identity.send(owner_key(fleet, seller), "transferFrom", "0x" + seller.hex(),
                        "0x" + buyer.hex(), sold)  # the block before the boundary
    chain.advance(1)  # the boundary: both scored and paid in it
    state = chain.state()
    store = Store(state, addresses.REWARDS)
    r_kept, r_sold = (get_vehicle_reward(state, epoch, v) for v in (kept, sold))
    assert r_kept.reward > 0 and r_kept.shares == ((keeper, r_kept.reward),)
    assert unpack_payout(store.load(mapping_slot(M_REWARD, epoch, kept) + R_PAYOUT)) == (r_kept.reward, 0)
    assert store.load(mapping_slot(M_SHARE, epoch, kept, 0)) == 0  # nothing stored
    assert r_sold.owner == buyer and r_sold.shares == ((seller, r_sold.reward),)
    assert unpack_payout(store.load(mapping_slot(M_REWARD, epoch, sold) + R_PAYOUT)) == (r_sold.reward, 1)


def test_the_one_period_hint_follows_the_period_count() -> None:
    """docs/identity.md "Storage layout": a paired device's vehicle field carries
    SINGLE_PERIOD_HINT exactly while its vehicle has one ownership period (set by the
    pairing, cleared by the sale that opens the second, never set by a pairing after it);
    every reader of the vehicle id sees it masked off, and counting goes on right."""
    from vm.modules.identity import (
        D_VEHICLE,
        SINGLE_PERIOD_HINT,
        SLOT_DEVICE,
        device_pairing,
        device_pairing_slot,
        get_device,
        hinted_pairing_reader,
        period_count,
    )

    fleet, road = new_fleet(1)
    chain, vid = fleet.chain, fleet.vehicle_ids[0]
    device = fleet.devices[0].address
    seller = get_vehicle(chain.state(), vid).owner
    buyer = chain.accounts[9][0]

    def field() -> int:
        return Store(chain.state(), addresses.IDENTITY).load(
            mapping_slot(SLOT_DEVICE, device) + D_VEHICLE)

    from vm.modules import telemetry

    assert telemetry._SINGLE_PERIOD_HINT == SINGLE_PERIOD_HINT  # (telemetry's own copy)
    assert device_pairing_slot(device) == mapping_slot(SLOT_DEVICE, device) + D_VEHICLE
    assert period_count(chain.state(), vid) == 1
    assert field() == vid | SINGLE_PERIOD_HINT
    assert hinted_pairing_reader(chain.state())(device) == vid | SINGLE_PERIOD_HINT
    assert get_device(chain.state(), device).vehicle_id == vid
    assert device_pairing(chain.state(), device) == vid
    epoch = get_epoch(chain.state())
    _attest(road, 2)
    fleet.identity.send(owner_key(fleet, seller), "transferFrom", "0x" + seller.hex(),
                        "0x" + buyer.hex(), vid)
    assert period_count(chain.state(), vid) == 2
    assert field() == vid  # a second period: the hint is gone
    assert get_device(chain.state(), device).vehicle_id == vid
    _attest(road, 3)
    periods = ownership_periods(chain.state(), vid)
    assert get_period_counts(chain.state(), epoch, vid) == {0: 2, periods[-1].index: 3}
    # unpaired and paired again by the buyer: a vehicle of two periods gets no hint
    buyer_key = owner_key(fleet, buyer)
    fleet.identity.send(buyer_key, "unpairDevice", vid)
    assert field() == 0 and get_device(chain.state(), device).vehicle_id == 0
