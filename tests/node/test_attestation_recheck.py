"""Following a new head without rechecking the whole pool (node/attestations.py
``on_commit``): when a block includes, per device, exactly the oldest pending
attestations and nothing else the rules read changed, the admission view is kept and
only staleness is checked. Differential: two services over the same chain, one always
rechecking everything, must agree on every admission answer and on what stays pending,
through blocks built from the pool, blocks with a foreign attestation, a sale (identity
change), an epoch boundary and time jumps that make pending attestations stale."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from node.attestations import AttestationService
from node.config import TelemetrySection
from tests.harness import CHAIN_ID, LocalChain
from tests.vm.test_telemetry_fleet import HOME, Fleet
from vm.modules import addresses
from vm.modules.telemetry import get_device_state


@dataclass
class _Head:
    state_root: bytes
    height: int


class FleetStore:
    """What AttestationService reads of the node's ChainStore, over a LocalChain (real
    py-evm state; nothing is included anywhere but in the chain's blocks)."""

    def __init__(self, chain: LocalChain) -> None:
        self.chain = chain
        self.state_db = chain.db
        self.where: dict[bytes, int] = {}

    @property
    def head(self) -> _Head:
        return _Head(self.chain.head.state_root, self.chain.head.height)

    def attestation_location(self, att_id: bytes) -> Any:
        return self.where.get(att_id)


@dataclass
class _Block:
    header: Any


async def test_light_follow_agrees_with_a_full_recheck():
    rng = random.Random(5)
    # a device's fifth attestation of an epoch hits the cap: the next epoch lifts it
    fleet = Fleet(6, params={"epoch_length_blocks": 10, "max_attestations_per_epoch": 5})
    chain = fleet.chain
    store = FleetStore(chain)
    clock = [chain.head.timestamp_ms / 1000]
    light = AttestationService(store, CHAIN_ID, TelemetrySection(), clock=lambda: clock[0])
    full = AttestationService(store, CHAIN_ID, TelemetrySection(), clock=lambda: clock[0])
    full.pool.is_oldest_pending = lambda ids: False  # type: ignore[method-assign]
    odometer = {d.address: 10_000 for d in fleet.devices}
    stamp = {d.address: chain.head.timestamp_ms - 60_000 for d in fleet.devices}
    for step in range(24):
        raws = []
        for i, (dev, vid) in enumerate(zip(fleet.devices, fleet.vehicle_ids, strict=True)):
            for _ in range(rng.choice([0, 1, 2, 3])):
                stamp[dev.address] += rng.choice([1_000, 1_000, 2_000, 400])  # 400: too frequent
                odometer[dev.address] += 30
                raws.append(dev.attest(vehicle_id=vid, timestamp_ms=stamp[dev.address],
                                       lat=HOME[0] + 0.001 * i, lon=HOME[1], salt=bytes(16),
                                       odometer_m=odometer[dev.address]).raw)
        if raws and rng.random() < 0.3:
            raws.append(rng.choice(raws))
        answers = [await svc.submit(raws, "rpc:127.0.0.1", gossip=False) for svc in (light, full)]
        assert answers[0] == answers[1]
        take = rng.choice([0, 3, 8, 100])
        attestations = light.take_with_ids(take)[0]
        assert attestations == full.take_with_ids(take)[0]
        txs = []
        if step == 9:  # a sale: identity's storage changes
            seller, key = fleet.owner_of[fleet.devices[0].address]
            buyer = chain.accounts[9][0]
            txs.append(chain.sign(key, addresses.IDENTITY, fleet.identity.data(
                "transferFrom", "0x" + seller.hex(), "0x" + buyer.hex(), fleet.vehicle_ids[0]),
                gas=500_000))
        if step in (5, 14) and raws:  # a block with an attestation the pool never saw
            dev = fleet.devices[3]
            stamp[dev.address] += 1_000
            odometer[dev.address] += 30
            attestations = attestations + [dev.attest(
                vehicle_id=fleet.vehicle_ids[3], timestamp_ms=stamp[dev.address], lat=HOME[0],
                lon=HOME[1], salt=bytes(16), odometer_m=odometer[dev.address]).raw]
        dt = 400_000 if step == 18 else 1_000  # step 18: what is pending goes stale
        parent = chain.head.state_root
        result = chain.block(txs, attestations=attestations, dt_ms=dt, skip_invalid=True)
        clock[0] = chain.head.timestamp_ms / 1000 + 0.2
        for svc in (light, full):
            svc.on_built(result.attestation_results)
            svc.on_commit(_Block(chain.head), result, parent)
        assert list(light.pool._pending) == list(full.pool._pending)
        if step == 18:  # the devices start again after what the chain holds of them
            for d in fleet.devices:
                stamp[d.address] = chain.head.timestamp_ms - 5_000
                d.seq = get_device_state(chain.state(), d.address).seq
    assert light.light_rechecks >= 5 and full.light_rechecks == 0
    assert chain.head.height > 10  # an epoch boundary crossed
    assert light.counters.snapshot()["rate_cap"] > 0
    light.close()
    full.close()
