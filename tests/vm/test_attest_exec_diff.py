"""Differential test of attestation execution: every block is executed twice from the
same parent, once through py-evm's own storage path (py-trie reads and one trie write
per slot) and once through the path the node runs (vm.trie: decoded nodes kept by
hash, one batch write per storage trie per block), and every result must be equal.

Blocks are random: rejected attestations (bad signature, replay, too frequent, unknown
device, not paired), the same attestation twice in one block, a device's two
attestations in one block, identity transactions before the attestations, and epoch
boundaries (epochs of 10 blocks, the shortest allowed)."""

from __future__ import annotations

import random

import pytest

import vm.attestation as attestation
from tests.harness import CHAIN_ID
from tests.vm.test_telemetry_fleet import HOME, Fleet
from tests.vm.test_trie import StockAccountDB
from vm.db import OverlayDB
from vm.execute import BlockBody, execute_block
from vm.modules.telemetry import DEFERRED
from vm.state import MotusAccountDB, MotusState


def _result_fields(result):
    return (result.state_root, result.attestations_root, result.receipts_root,
            list(result.attestations), list(result.attestation_results), result.epoch,
            result.epoch_boundary, result.next_validators)


def _execute_both(chain, body, skip_invalid, monkeypatch):
    env = chain.env()
    out = []
    for account_db in (StockAccountDB, MotusAccountDB):
        monkeypatch.setattr(MotusState, "account_db_class", account_db)
        attestation._VERIFIED.clear()  # both paths verify every signature themselves
        try:
            out.append(_result_fields(execute_block(OverlayDB(chain.db), chain.head.state_root,
                                                    env, body, skip_invalid=skip_invalid)))
        except Exception as exc:  # the same refusal on both paths
            out.append((type(exc).__name__, str(exc)))
    monkeypatch.setattr(MotusState, "account_db_class", MotusAccountDB)
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
        body = BlockBody([], raws)
        stock, fast = _execute_both(chain, body, True, monkeypatch)
        assert stock == fast
        codes = {code for _, code in stock[4]}
        assert codes - {"ok", DEFERRED}, "the block should hold rejected attestations"
        # the included ones as a block to check (no skipping): same again
        included = list(stock[3])
        stock, fast = _execute_both(chain, BlockBody([], included), False, monkeypatch)
        assert stock == fast
        result = chain.block(attestations=included)
        assert result.state_root == stock[0]
        sent.extend(included)
    assert chain.head.height > 10 + 3  # an epoch boundary crossed
    assert CHAIN_ID == chain.head.chain_id
