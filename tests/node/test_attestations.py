"""The node's attestation service in one process (node/attestations.py): gossip batch
verdicts, what block building's refusals do to the pool, payload checks, statuses.
Real node processes: tests/node/test_attestations_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from devnet.device import Device
from genesis.devnet import new_genesis
from node.attestations import AttestationService, PayloadError, check_payload
from node.config import TelemetrySection
from node.db import Database
from node.store import ChainStore
from p2p.batch import encode_batch
from p2p.host import Verdict
from vm.attestation import compute_commitment, encode_signals

CHAIN_ID = 7077
VALIDATOR = b"\xa1" * 20


@pytest.fixture
def service(tmp_path: Path) -> Iterator[AttestationService]:
    database = Database(tmp_path / "data")
    store = ChainStore(database)
    store.init_genesis(new_genesis(CHAIN_ID, [(VALIDATOR, 10)]))
    svc = AttestationService(store, CHAIN_ID, TelemetrySection(), tmp_path / "signals")
    yield svc
    svc.close()
    database.close()


def reading(dev: Device, seq: int = 1) -> bytes:
    dev.seq = seq - 1
    return dev.attest(vehicle_id=1, timestamp_ms=1_700_000_000_000 + seq * 1_000, lat=48.1,
                      lon=11.5, odometer_m=1_000 + seq).raw


def accept_all(att: object) -> None:
    return None


async def test_gossip_batch_verdicts(service: AttestationService) -> None:
    dev = Device.generate(CHAIN_ID, seed=b"gossip")
    unknown = reading(dev)  # signed, but no device NFT: refused by the head, not the bytes
    forged = unknown[:-1] + bytes([unknown[-1] ^ 1])
    assert await service.check_gossip_batch("peer-a", b"\xc1 not msgpack") is Verdict.MALFORMED
    not_canonical = b"\xdc\x00\x01" + encode_batch([unknown])[1:]  # array16 for one item
    assert await service.check_gossip_batch("peer-a", not_canonical) is Verdict.MALFORMED
    assert await service.check_gossip_batch("peer-a", encode_batch([unknown])) is Verdict.IGNORE
    verdict = await service.check_gossip_batch("peer-a", encode_batch([unknown, forged]))
    assert verdict is Verdict.REJECT
    counts = service.counters.snapshot()
    assert counts["unknown_device"] == 2 and counts["bad_signature"] == 1
    assert service.gossip["batches_in"] == 4 and service.gossip["batches_rejected"] == 3
    assert len(service.pool) == 0


@pytest.mark.parametrize("workers", [0, 2])
async def test_submit_checks_large_batches_off_thread_and_answers_in_order(
        service: AttestationService, workers: int) -> None:
    if workers:
        from node.attestation_pool import ProcessPoolChecker

        service.workers = ProcessPoolChecker(workers=workers, min_batch=16, chunk=16)
    devs = [Device.generate(CHAIN_ID, seed=b"d%d" % i) for i in range(40)]
    raws = [reading(d) for d in devs]
    raws[3] = raws[3][:-1] + bytes([raws[3][-1] ^ 1])
    raws[7] = b"\x93\x01\x02\x03"
    results = await service.submit(raws + raws[:1], "rpc:127.0.0.1")
    codes = [r.code for r in results]
    assert codes[3] == "bad_signature" and codes[7] == "malformed"
    assert {c for i, c in enumerate(codes) if i not in (3, 7)} == {"unknown_device"}
    assert results[-1] == results[0]


def test_block_building_refusals_leave_the_pool_but_full_block_and_future_stay(
        service: AttestationService) -> None:
    dev = Device.generate(CHAIN_ID, seed=b"built")
    raws = [reading(dev, s) for s in (1, 2, 3, 4)]
    results = service.pool.add_many(raws, accept_all, "rpc:x")
    ids = [r.id for r in results]
    service.on_built([(ids[0], "stale"), (ids[1], "future"), (ids[2], "deferred"),
                      (ids[3], "ok")])
    assert service.take(10) == raws[1:]
    status = service.status(ids[0])
    assert status is not None and (status.status, status.code) == ("rejected", "stale")
    assert service.counters.get("stale") == 1 and service.built_rejects == 1


def test_payloads_must_belong_to_their_attestation() -> None:
    dev = Device.generate(CHAIN_ID, seed=b"payload")
    r = dev.attest(vehicle_id=1, timestamp_ms=1_700_000_000_000, lat=48.1, lon=11.5,
                   odometer_m=5, signals={"soc": 50})
    check_payload(r.raw, r.payload)
    with pytest.raises(PayloadError) as info:
        check_payload(r.raw, encode_signals({"soc": 51}))
    assert info.value.code == "hash_mismatch"
    other = dev.attest(vehicle_id=1, timestamp_ms=1_700_000_001_000, lat=48.1, lon=11.5,
                       odometer_m=5, signals={"soc": 50})
    # same hash, but not the canonical encoding of a signals map
    sneaky = msgpack.packb(["not", "a", "map"])
    forged_hash = other.attestation._replace(commitment=compute_commitment(sneaky))
    with pytest.raises(PayloadError) as info:
        check_payload(dev.sign(forged_hash).encode(), sneaky)
    assert info.value.code == "bad_payload"
    # canonical and committed to, but without a salt: refused (it could be brute-forced)
    unsalted = encode_signals({"soc": 50})
    with pytest.raises(PayloadError) as info:
        check_payload(dev.sign(other.attestation._replace(
            commitment=compute_commitment(unsalted))).encode(), unsalted)
    assert info.value.code == "bad_payload" and "salt" in str(info.value)
    check_payload(b"\x00garbage", b"anything")  # the attestation itself is refused instead


def test_status_of_unknown_ids_and_signals_of_unknown_attestations(
        service: AttestationService) -> None:
    dev = Device.generate(CHAIN_ID, seed=b"status")
    r = dev.attest(vehicle_id=1, timestamp_ms=1_700_000_000_000, lat=48.1, lon=11.5,
                   odometer_m=5)
    assert service.status(r.id) is None
    assert service.store_signals(r.raw, r.payload) == "unknown_attestation"
    service.pool.add_many([r.raw], accept_all, "rpc:x")
    assert service.store_signals(r.raw, r.payload + b"\x00") == "hash_mismatch"
    assert service.store_signals(r.raw, r.payload) == "ok"
    assert service.signals is not None and service.signals.get(r.id) is not None
