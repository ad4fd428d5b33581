"""Differential test of attestation execution: every block is executed twice from the
same parent, once the way it was executed before the fleet-scale work (py-evm's own
storage path: py-trie reads and one trie write per slot; the device's full identity
record and the vehicle's ownership periods read for every attestation; every slot
written through the metered Store, which reads it again) and once through the path the
node runs now (vm.trie: decoded nodes kept by hash, one batch write per storage trie per
block; two identity reads, one period count; writes only of what changed), and every
result must be equal.

Blocks are random: rejected attestations (bad signature, replay, too frequent, unknown
device, not paired), the same attestation twice in one block, a device's two
attestations in one block, identity transactions before the attestations, and epoch
boundaries (epochs of 10 blocks, the shortest allowed)."""

from __future__ import annotations

import random

import pytest

import vm.attestation as attestation
import vm.modules.telemetry as telemetry
from tests.harness import CHAIN_ID
from tests.vm.test_telemetry_fleet import HOME, Fleet
from tests.vm.test_trie import StockAccountDB
from vm.db import OverlayDB
from vm.execute import BlockBody, execute_block
from vm.modules import addresses, identity
from vm.modules.base import mapping_slot
from vm.modules.telemetry import (
    DEFERRED,
    SLOT_PERIOD_EPOCH,
    SLOT_VEHICLE_EPOCH,
    TelemetryView,
    _list_base,
    _pack,
    _pack_meta,
    device_slots,
)
from vm.state import MotusAccountDB, MotusState, decode_transaction


class ReferenceView(TelemetryView):
    """The rules as they were executed before: ownership periods read in full, and
    commit through the metered Store (each slot read again before it is written)."""

    def _count_period(self, att):
        periods = self._periods.get(att.vehicle_id)
        if periods is None:
            periods = self._periods[att.vehicle_id] = identity.ownership_periods(
                self.state, att.vehicle_id)
        if identity.period_count(self.state, att.vehicle_id) == 1:
            return  # one recorded period: counted by the epoch counters alone (docs/telemetry.md)
        period = identity.period_at(periods, att.timestamp_ms)
        if period is None:
            return
        key = (att.vehicle_id, period.index)
        count = self._period_counts.get(key)
        if count is None:
            count = self._store.load(mapping_slot(SLOT_PERIOD_EPOCH, self.epoch, *key))
        self._period_counts[key] = count + 1

    def commit(self):
        st = self._store
        for (vehicle_id, index), count in self._period_counts.items():
            st.store(mapping_slot(SLOT_PERIOD_EPOCH, self.epoch, vehicle_id, index), count)
        for device in self._dirty_tracks:
            t = self._tracks[device]
            last, meta = device_slots(device)
            st.store(last, _pack(t.seq, t.timestamp_ms, t.cell, t.odometer_m))
            st.store(meta, _pack_meta(t.vehicle_id, t.epoch, t.digest, t.count, t.flags))
        for vehicle_id, tally in self._tallies.items():
            if tally.accepted:
                st.store(mapping_slot(SLOT_VEHICLE_EPOCH, self.epoch, vehicle_id),
                         _pack(tally.accepted, tally.distance_m, tally.moving, tally.flags))
        if self._new_vehicles:
            length_slot, base = _list_base(self.epoch)
            n = st.load(length_slot)
            for i, vehicle_id in enumerate(self._new_vehicles):
                st.store(base + n + i, vehicle_id)
            st.store(length_slot, n + len(self._new_vehicles))
        self._dirty_tracks.clear()
        self._new_vehicles.clear()


def _result_fields(result):
    return (result.state_root, result.attestations_root, result.receipts_root,
            list(result.attestations), list(result.attestation_results), result.epoch,
            result.epoch_boundary, result.next_validators)


def _execute_both(chain, body, skip_invalid, monkeypatch):
    env = chain.env()
    out = []
    for reference in (True, False):
        with monkeypatch.context() as patch:
            if reference:
                patch.setattr(MotusState, "account_db_class", StockAccountDB)
                patch.setattr(telemetry, "TelemetryView", ReferenceView)
                patch.setattr(telemetry, "_device_pairing", identity.get_device)
            attestation._VERIFIED.clear()  # both paths verify every signature themselves
            try:
                out.append(_result_fields(execute_block(
                    OverlayDB(chain.db), chain.head.state_root, env, body,
                    skip_invalid=skip_invalid)))
            except Exception as exc:  # the same refusal on both paths
                out.append((type(exc).__name__, str(exc)))
    assert MotusState.account_db_class is MotusAccountDB
    return out


def _corrupt(raw: bytes, rng: random.Random) -> bytes:
    i = rng.randrange(len(raw) - 65, len(raw) - 1)  # inside the signature
    return raw[:i] + bytes([raw[i] ^ 0x5A]) + raw[i + 1:]


@pytest.mark.parametrize("seed", [1, 2])
def test_batch_path_executes_random_blocks_like_the_stock_path(seed, monkeypatch):
    rng = random.Random(seed)
    fleet = Fleet(8, params={"epoch_length_blocks": 10}, extra=1)
    chain = fleet.chain
    stranger = fleet.unpaired[0]
    sent: list[bytes] = []
    for block in range(14):
        now = chain.head.timestamp_ms + 1_000
        raws = []
        for i, (dev, vid) in enumerate(zip(fleet.devices, fleet.vehicle_ids, strict=True)):
            for _ in range(rng.choice([0, 1, 1, 2])):  # two: the second may be too frequent
                ts = now - rng.choice([0, 0, 400, 2_500])
                raws.append(dev.attest(vehicle_id=vid, timestamp_ms=ts,
                                       lat=HOME[0] + 0.01 * i, lon=HOME[1] + 0.002 * block,
                                       odometer_m=10_000 + 300 * block,
                                       salt=bytes(16)).raw)
        if raws and rng.random() < 0.5:
            raws.append(rng.choice(raws))  # the same bytes twice in one block
        if sent:
            raws.append(rng.choice(sent))  # a replay of an included one
        if raws:
            raws.append(_corrupt(rng.choice(raws), rng))  # bad signature
        raws.append(stranger.attest(vehicle_id=fleet.vehicle_ids[0], timestamp_ms=now,
                                    lat=HOME[0], lon=HOME[1], odometer_m=1, salt=bytes(16)).raw)
        rng.shuffle(raws)
        txs = []
        if block in (4, 9):  # a sale before the block's attestations: a second period
            seller, seller_key = fleet.owner_of[fleet.devices[block % 8].address]
            buyer = chain.accounts[9][0] if seller != chain.accounts[9][0] else chain.accounts[8][0]
            txs.append(chain.sign(seller_key, addresses.IDENTITY, fleet.identity.data(
                "transferFrom", "0x" + seller.hex(), "0x" + buyer.hex(),
                fleet.vehicle_ids[block % 8]), gas=500_000))
        body = BlockBody([decode_transaction(t) for t in txs], raws)
        stock, fast = _execute_both(chain, body, True, monkeypatch)
        assert stock == fast
        codes = {code for _, code in stock[4]}
        assert codes - {"ok", DEFERRED}, "the block should hold rejected attestations"
        # the included ones as a block to check (no skipping): same again
        included = list(stock[3])
        stock, fast = _execute_both(chain, BlockBody([decode_transaction(t) for t in txs],
                                                     included), False, monkeypatch)
        assert stock == fast
        result = chain.block(txs, attestations=included)
        assert result.state_root == stock[0]
        sent.extend(included)
    assert chain.head.height > 10 + 3  # an epoch boundary crossed
    sold = fleet.vehicle_ids[4]
    assert len(identity.ownership_periods(chain.state(), sold)) == 2
    assert CHAIN_ID == chain.head.chain_id
