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


async def test_submit_runs_the_stateful_part_in_slices_letting_other_tasks_run(
        service: AttestationService) -> None:
    """Consensus shares the trio thread: a big batch's stateful checks must not hold it
    from start to end (rounds failed behind 4,096-item gossip batches). Another task runs
    between the slices, and the answers are those of one pass, in order (an item repeated
    in a later slice answers as its first copy)."""
    import trio

    from node.attestations import ADMISSION_SLICE

    devs = [Device.generate(CHAIN_ID, seed=b"s%d" % i) for i in range(2 * ADMISSION_SLICE + 5)]
    raws = [reading(d) for d in devs]
    ticks = 0
    seen: list[int] = []  # the other task's ticks when each slice started
    add_many = service.pool.add_many

    def recording(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(ticks)
        return add_many(*args, **kwargs)

    service.pool.add_many = recording  # type: ignore[method-assign]

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        results = await service.submit(raws + raws[:1], "rpc:127.0.0.1")
        nursery.cancel_scope.cancel()
    assert len(seen) == 3  # 2 * ADMISSION_SLICE + 6 items
    # the other task ran between the slices: trio runs each batch of runnable tasks in a
    # random order, so it may run just before one slice and just after the next (equal
    # ticks), but a whole batch lies between the first slice and the third
    assert seen[0] <= seen[1] <= seen[2] and seen[0] < seen[2]
    assert [r.id for r in results[:-1]] == [r.id for r in results[:len(raws)]]
    assert {r.code for r in results} == {"unknown_device"}
    assert results[-1] == results[0]


async def test_items_past_a_sources_room_are_refused_pool_full_unchecked(
        service: AttestationService) -> None:
    """A gateway above what blocks take keeps its quota full: what it sends past the room
    the pool has for it is answered pool_full before any signature is checked (a forged
    item there is not even found out), and counted; other sources are checked as ever."""
    service.pool.max_per_source = 4
    mine = [reading(Device.generate(CHAIN_ID, seed=b"q%d" % i)) for i in range(3)]
    assert all(r.accepted for r in service.pool.add_many(mine, accept_all, "rpc:10.0.0.1"))
    devs = [Device.generate(CHAIN_ID, seed=b"r%d" % i) for i in range(12)]
    raws = [reading(d) for d in devs]
    raws[5] = raws[5][:-1] + bytes([raws[5][-1] ^ 1])  # forged
    results = await service.submit(mine[:1] + raws, "rpc:10.0.0.1")
    codes = [r.code for r in results]
    # pending already: ok again; one item of room: checked (an unknown device); the rest
    # pool_full, the forged one included
    assert codes == ["ok", "unknown_device"] + ["pool_full"] * 11
    counts = service.counters.snapshot()
    assert counts["pool_full"] == 11 and counts["bad_signature"] == 0
    assert service.pool.status(results[6].id) is None  # not recorded: submit again later
    other = [r.code for r in await service.submit(raws[3:7], "rpc:10.0.0.2")]
    assert other == ["unknown_device", "unknown_device", "bad_signature", "unknown_device"]
    # a batch larger than the room: the room's first items are checked (as if every
    # earlier one were taken), the rest refused pool_full
    other = [r.code for r in await service.submit(raws[6:12], "rpc:10.0.0.3")]
    assert other == ["unknown_device"] * 4 + ["pool_full"] * 2
    # a peer's gossip batch past its room is checked whole: the forged item is found
    # (the topic check then rejects the batch instead of relaying it)
    codes = [r.code for r in await service.submit(mine[:1] + raws, "peer:byzantine")]
    assert codes[0] == "ok" and codes[6] == "bad_signature"


def test_block_building_refusals_leave_the_pool_but_full_block_and_future_stay(
        service: AttestationService) -> None:
    dev = Device.generate(CHAIN_ID, seed=b"built")
    raws = [reading(dev, s) for s in (1, 2, 3, 4)]
    results = service.pool.add_many(raws, accept_all, "rpc:x")
    ids = [r.id for r in results]
    service.on_built([(ids[0], "stale"), (ids[1], "future"), (ids[2], "deferred"),
                      (ids[3], "ok")])
    assert service.take_with_ids(10)[0] == raws[1:]
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


async def test_arrival_order_lets_tasks_through_in_the_order_they_came() -> None:
    """Tasks ready in the reverse order still pass in arrival order; one that leaves
    before its turn (cancelled) does not hold up those behind it."""
    import trio

    from node.attestations import ArrivalOrder

    order = ArrivalOrder()
    passed: list[int] = []

    async def task(n: int, ready_after: float, started: trio.Event) -> None:
        async with order.place() as turn:
            started.set()
            await trio.sleep(ready_after)
            await turn()
            passed.append(n)
            await trio.sleep(0.01)  # the turn lasts until the block exits

    async with trio.open_nursery() as nursery:
        cancel_me = trio.CancelScope()

        async def cancelled(started: trio.Event) -> None:
            with cancel_me:
                await task(99, 10.0, started)

        for n, delay in enumerate((0.3, 0.2)):
            started = trio.Event()
            nursery.start_soon(task, n, delay, started)
            await started.wait()
        started = trio.Event()
        nursery.start_soon(cancelled, started)
        await started.wait()
        for n, delay in ((2, 0.0), (3, 0.1)):
            started = trio.Event()
            nursery.start_soon(task, n, delay, started)
            await started.wait()
        await trio.sleep(0.05)
        cancel_me.cancel()
    assert passed == [0, 1, 2, 3]


async def test_submit_checks_batches_at_once_but_admits_them_in_arrival_order(
        service: AttestationService) -> None:
    """Two large batches of one device's chained readings: the second one's signatures
    are checked while the first one's are (both cores), but it enters the pool after the
    first (its readings chain on the first's; admitted before them they would make the
    first batch replays)."""
    import time

    import trio

    dev = Device.generate(CHAIN_ID, seed=b"chained")
    first = [reading(dev, seq) for seq in range(1, 121)]
    second = [reading(dev, seq) for seq in range(121, 241)]
    last_seq: dict[bytes, int] = {}

    def chained(att) -> str | None:  # the replay rule of the head view, alone
        if att.seq <= last_seq.get(att.device, 0):
            return "replay"
        last_seq[att.device] = att.seq
        return None

    service._check = chained
    check = service._check_stateless
    spans: list[tuple[int, float, float]] = []

    async def timed(raws: list[bytes], on_part=None) -> list:
        started = time.monotonic()
        if raws[0] == first[0]:
            await trio.sleep(0.5)  # the first batch's checks are slower than the second's
        out = await check(raws, on_part)
        spans.append((len(spans), started, time.monotonic()))
        return out

    service._check_stateless = timed  # type: ignore[method-assign]
    results: dict[str, list] = {}

    async def send(name: str, raws: list[bytes]) -> None:
        results[name] = await service.submit(raws, "rpc:127.0.0.1", gossip=False)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, "first", first)
        await trio.sleep(0.05)
        nursery.start_soon(send, "second", second)
    assert all(r.accepted for r in results["first"] + results["second"])
    assert service.pool.take(300) == first + second
    (_, start_a, end_a), (_, start_b, end_b) = sorted(spans, key=lambda s: s[1])
    assert start_b < end_a  # the second batch was checked while the first one was


def test_block_signature_worker_checks_and_stops_with_the_service(tmp_path: Path) -> None:
    """The worker process that checks a peer's block's signatures beside its execution
    (Application.check_block; started by the first check that asks for it): it answers
    like the serial check and stops for good when the service closes."""
    import time

    from vm.attestation import check_stateless_codes
    from vm.attestation_ahead import CODES

    database = Database(tmp_path / "data")
    store = ChainStore(database)
    store.init_genesis(new_genesis(CHAIN_ID, [(VALIDATOR, 10)]))
    svc = AttestationService(store, CHAIN_ID, TelemetrySection())
    worker = svc.block_signatures
    try:
        assert not worker.available()  # not ready at once (the first ask starts it)
        deadline = time.monotonic() + 60
        while not worker.available():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        raw = reading(Device.generate(CHAIN_ID, seed=b"beside"))
        forged = raw[:-2] + bytes([raw[-2] ^ 1]) + raw[-1:]
        chunk = [raw, forged, b"\x92\x02"]
        tag = worker.send(chunk, CHAIN_ID)
        assert tag is not None
        codes = worker.receive(tag, 30)
        assert codes is not None
        assert [CODES[c] for c in codes] == check_stateless_codes(chunk, CHAIN_ID) == \
            ["ok", "bad_signature", "malformed"]
        process = worker._process
    finally:
        svc.close()
        database.close()
    assert process.poll() is not None and not worker.available()


async def test_a_peer_batch_is_checked_whole_or_throttled_whole(
        service: AttestationService) -> None:
    """The stateful part of a batch runs in slices; the credit is asked once for the
    whole batch, not again per slice. Otherwise a byzantine batch of genuine items the
    head refuses, enough to use up the peer's credit half-way, followed by forged ones,
    had the forged ones refused ``throttled`` unchecked: a batch with an accepted item
    among them is relayed (ACCEPT), and the next node would find the forgeries and
    penalise this honest relay."""
    from node.fairness import SourceCredit

    service.pool.credit = SourceCredit(10, 10)
    refused = [reading(Device.generate(CHAIN_ID, seed=b"s%d" % i)) for i in range(200)]
    forged = refused[-1][:-1] + bytes([refused[-1][-1] ^ 1])
    results = await service.submit(refused + [forged], "peer:byzantine", gossip=False)
    codes = [r.code for r in results]
    assert codes == ["unknown_device"] * 200 + ["bad_signature"]  # all checked
    assert not service.pool.admits("peer:byzantine")  # now the next batch is refused whole
    verdict = await service.check_gossip_batch("byzantine", encode_batch(refused[:5]))
    # refused for the forwarder's sake: not cached for the message, another peer's copy
    # of the same batch is checked on its own (docs/p2p.md, trap 25)
    assert verdict is Verdict.IGNORE_FORWARDER and service.counters.get("throttled") == 5
