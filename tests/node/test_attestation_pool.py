"""Attestation pool: admission, bounds, quotas, garbage bursts, block building, statuses."""

from __future__ import annotations

import random

import pytest

from devnet.device import Device
from node.attestation_pool import (
    MISSING_FOR_S,
    PEER_STATEFUL_CHARGE,
    POOL_FULL,
    REJECT_CREDIT_BURST,
    REJECT_CREDIT_PER_S,
    AddResult,
    AttestationPool,
    AttestationStatus,
    InlineChecker,
    ProcessPoolChecker,
    RejectCounters,
    view_check,
)
from node.fairness import SourceCredit
from vm.attestation import VERSION, Attestation

CHAIN_ID = 7077


def accept_all(att: Attestation) -> str | None:
    return None


def signed(dev: Device, seq: int, ts: int = 1_000_000) -> bytes:
    att = Attestation(VERSION, dev.address, 1, seq, ts // 1000 + seq, 0x871F8D7A4FFFFFF, 10,
                      b"\x01" * 32, b"")
    return dev.sign(att).encode()


@pytest.fixture(scope="module")
def devices() -> list[Device]:
    return [Device.generate(CHAIN_ID, seed=b"pool %d" % i) for i in range(4)]


def test_add_take_include_and_statuses(devices):
    pool = AttestationPool(CHAIN_ID)
    raws = [signed(devices[0], s) for s in (1, 2, 3)]
    results = pool.add_many(raws, accept_all, source="rpc")
    assert [r.code for r in results] == ["ok"] * 3 and all(r.accepted for r in results)
    assert results[0].to_json()["id"] == "0x" + results[0].id.hex()
    assert pool.add(raws[0], accept_all) == results[0]  # resubmission: same answer, no copy
    assert len(pool) == 3 and pool.size_bytes == sum(map(len, raws))
    assert pool.take(2) == raws[:2]
    assert pool.take_with_ids(2) == (raws[:2], [r.id for r in results[:2]])
    assert pool.take_with_ids(0) == ([], [])
    pool.remove_included([results[0].id, results[1].id], height=7)
    assert pool.status(results[0].id) == AttestationStatus("included", height=7)
    assert pool.status(results[2].id) == AttestationStatus("pending")
    assert pool.add(raws[0], accept_all) == AddResult(results[0].id, False, "replay")
    assert pool.counters.get("replay") == 1  # a refusal like any other: counted (RPC, metrics)
    assert pool.take(10) == raws[2:]
    assert pool.status(b"\x00" * 32) is None


def test_stateful_rejection_is_recorded_and_counted(devices):
    counters = RejectCounters()
    pool = AttestationPool(CHAIN_ID, counters=counters)
    result = pool.add(signed(devices[0], 1), lambda att: "not_paired")
    assert result == AddResult(result.id, False, "not_paired")
    assert pool.status(result.id) == AttestationStatus("rejected", code="not_paired")
    assert counters.snapshot()["not_paired"] == 1
    # the head changes (device paired): the same bytes are checked again and get in
    assert pool.add(signed(devices[0], 1), accept_all).accepted


def test_garbage_burst_never_evicts_honest_items(devices):
    counters = RejectCounters()
    pool = AttestationPool(CHAIN_ID, max_items=10, counters=counters)
    honest = [signed(devices[1], s) for s in range(1, 6)]
    pool.add_many(honest, accept_all, source="honest")
    rng = random.Random(11)
    garbage = [rng.randbytes(n % 200 + 1) for n in range(2_000)]
    forged = [signed(devices[2], s)[:-2] + b"\x00\x00" for s in range(1, 200)]  # bad signatures
    results = pool.add_many(garbage + forged, accept_all, source="attacker")
    assert not any(r.accepted for r in results)
    assert {r.code for r in results} <= {"malformed", "bad_signature"}
    assert pool.take(100) == honest
    snap = counters.snapshot()
    # each distinct item is counted once (the same bytes twice in a batch share one result)
    assert snap["malformed"] + snap["bad_signature"] == len(set(garbage + forged))


def test_bounds_and_quotas_refuse_new_items_instead_of_evicting(devices):
    pool = AttestationPool(CHAIN_ID, max_items=6, max_per_source=3, max_per_device=4)
    a = pool.add_many([signed(devices[0], s) for s in range(1, 5)], accept_all, source="peer-a")
    assert [r.code for r in a] == ["ok", "ok", "ok", POOL_FULL]  # per-source quota
    b = pool.add_many([signed(devices[1], s) for s in range(1, 5)], accept_all, source="peer-b")
    assert [r.code for r in b] == ["ok", "ok", "ok", POOL_FULL]  # pool full (6)
    assert len(pool) == 6
    per_device = AttestationPool(CHAIN_ID, max_per_device=2)
    c = per_device.add_many([signed(devices[2], s) for s in range(1, 4)], accept_all)
    assert [r.code for r in c] == ["ok", "ok", POOL_FULL]
    by_bytes = AttestationPool(CHAIN_ID, max_bytes=400)
    d = by_bytes.add_many([signed(devices[3], s) for s in range(1, 4)], accept_all)
    assert [r.code for r in d] == ["ok", "ok", POOL_FULL]
    assert by_bytes.size_bytes <= 400


def test_recheck_drops_what_the_new_head_refuses(devices):
    pool = AttestationPool(CHAIN_ID)
    results = pool.add_many([signed(devices[0], s) for s in range(1, 5)], accept_all)
    ids = [r.id for r in results]
    stale = {ids[0], ids[2]}
    dropped = pool.recheck(lambda att: "stale" if att.seq in (1, 3) else None)
    assert {i for i, _ in dropped} == stale and all(c == "stale" for _, c in dropped)
    assert len(pool) == 2
    assert pool.status(ids[0]).code == "stale"


def test_history_is_bounded(devices):
    pool = AttestationPool(CHAIN_ID, history=2)
    ids = [pool.add(signed(devices[0], s), lambda att: "denied").id for s in range(1, 4)]
    assert pool.status(ids[0]) is None
    assert pool.status(ids[2]).code == "denied"


def test_stateless_failures_are_not_checked_twice(devices):
    calls = []

    class Counting(InlineChecker):
        def check_many(self, raws, ids, chain_id):
            calls.append(len(raws))
            return super().check_many(raws, ids, chain_id)

    pool = AttestationPool(CHAIN_ID, checker=Counting())
    raw = signed(devices[0], 1)
    bad = raw[:-1] + bytes([raw[-1] ^ 1])  # the other recovery id: another key
    assert pool.add(bad, accept_all).code == "bad_signature"
    assert pool.add(bad, accept_all).code == "bad_signature"
    assert calls == [1, 0]
    # the same bytes twice in one batch are checked once and answered alike
    good = signed(devices[0], 2)
    r = pool.add_many([good, good], accept_all)
    assert r[0] == r[1] and r[0].accepted and len(pool) == 1


def test_process_pool_checker_agrees_with_inline(devices):
    raws = [signed(devices[i % 4], i + 1) for i in range(150)]
    raws[10] = raws[10][:-1] + bytes([raws[10][-1] ^ 1])
    raws[20] = b"\x93\x01\x02\x03"
    checker = ProcessPoolChecker(workers=2, min_batch=16)
    try:
        pool = AttestationPool(CHAIN_ID, checker=checker)
        got = [r.code for r in pool.add_many(raws, accept_all)]
    finally:
        checker.close()
    expected = [r.code for r in AttestationPool(CHAIN_ID).add_many(raws, accept_all)]
    assert got == expected
    assert got[10] == "bad_signature" and got[20] == "malformed" and got.count("ok") == 148


def _odd_batch(devices: list[Device]) -> list[bytes]:
    """Valid items among every kind of stateless refusal a worker must answer alike."""
    raws = [signed(devices[i % 4], i + 1) for i in range(60)]
    raws[3] = raws[3][:-1] + bytes([raws[3][-1] ^ 1])  # bad signature
    raws[5] = b"\x93\x01\x02\x03"  # malformed
    raws[8] = b""  # empty
    raws[13] = b"\xc4" + bytes(299)  # longer than any attestation (and than a length byte)
    raws[21] = raws[21] + b"\x00"  # trailing byte
    raws[34] = bytes(256)  # exactly the size limit, still garbage
    return raws


def _expected(raws: list[bytes]) -> list:
    from node.attestation_pool import check_stateless_unshared

    return check_stateless_unshared(raws, CHAIN_ID)


def test_process_pool_checker_from_the_trio_thread_agrees_with_inline(devices):
    import trio

    raws = _odd_batch(devices)
    checker = ProcessPoolChecker(workers=2, min_batch=8, chunk=16)
    try:
        async def run() -> list:
            async with trio.open_nursery() as nursery:  # two batches at once, as the node
                got: dict[int, list] = {}

                async def one(k: int) -> None:
                    got[k] = await checker.check_async(raws[k:], CHAIN_ID)

                nursery.start_soon(one, 0)
                nursery.start_soon(one, 7)
            return [got[0], got[7]]

        first, second = trio.run(run)
        assert first == _expected(raws) and second == _expected(raws[7:])
        assert checker.check_unshared(raws, CHAIN_ID) == _expected(raws)
    finally:
        checker.close()
    codes = [x if isinstance(x, str) else "ok" for x in first]
    assert [i for i, c in enumerate(codes) if c != "ok"] == [3, 5, 8, 13, 21, 34]


def test_a_dead_stuck_or_cancelled_worker_changes_no_answer(devices, monkeypatch):
    """A worker that dies or hangs costs time, never an answer: its part is checked in
    this process, it is stopped and started again later; a caller cancelled while its
    task is out leaves the worker usable for the next one."""
    import contextlib
    import os
    import signal

    import trio

    import node.attestation_pool as pool_module

    raws = _odd_batch(devices)
    expected = _expected(raws)
    checker = ProcessPoolChecker(workers=1, min_batch=8)
    monkeypatch.setattr(pool_module, "WORKER_RESTART_S", 0.0)
    try:
        assert trio.run(checker.check_async, raws, CHAIN_ID) == expected
        (first,) = checker.pids()
        os.kill(first, signal.SIGKILL)  # dies
        assert trio.run(checker.check_async, raws, CHAIN_ID) == expected
        assert checker.pids() == []  # found dead by that batch, which was checked here
        assert trio.run(checker.check_async, raws, CHAIN_ID) == expected
        (second,) = checker.pids()  # started again by the next batch
        assert second != first

        async def cancelled() -> list:
            with trio.move_on_after(0.001):
                await checker.check_async(raws * 20, CHAIN_ID)
            return await checker.check_async(raws, CHAIN_ID)

        assert trio.run(cancelled) == expected
        assert checker.pids() == [second]
        monkeypatch.setattr(pool_module, "WORKER_ANSWER_S", 0.5)
        os.kill(second, signal.SIGSTOP)  # hangs: killed after WORKER_ANSWER_S
        try:
            assert trio.run(checker.check_async, raws, CHAIN_ID) == expected
            assert checker.pids() == []  # killed and reaped
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(second, signal.SIGCONT)
        assert checker.check_unshared(raws, CHAIN_ID) == expected  # (a new one)
    finally:
        checker.close()
    assert checker.pids() == []
    assert trio.run(checker.check_async, raws, CHAIN_ID) == expected  # closed: inline


def test_two_batches_waiting_on_a_worker_that_dies_both_get_their_answers(devices):
    """Two batches at once (as the node runs them) waiting on one worker that dies: the
    one that finds the socket closed stops it, and the other, waiting its turn to read,
    then finds it stopped and checks its part here (a review found it read the closed
    socket: AssertionError out of the nursery)."""
    import contextlib
    import os
    import signal

    import trio

    raws = _odd_batch(devices)
    checker = ProcessPoolChecker(workers=1, min_batch=8)
    try:
        assert trio.run(checker.check_async, raws, CHAIN_ID) == _expected(raws)
        (pid,) = checker.pids()
        os.kill(pid, signal.SIGSTOP)  # both batches' tasks go out and wait

        async def run() -> list:
            got: dict[int, list] = {}
            async with trio.open_nursery() as nursery:
                async def one(k: int) -> None:
                    got[k] = await checker.check_async(raws[k:] * 8, CHAIN_ID)

                nursery.start_soon(one, 0)
                nursery.start_soon(one, 3)
                await trio.sleep(0.3)
                os.kill(pid, signal.SIGKILL)
            return [got[0], got[3]]

        try:
            first, second = trio.run(run)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert first == _expected(raws * 8) and second == _expected(raws[3:] * 8)
    finally:
        checker.close()


def test_view_check_chains_pending_attestations_of_a_device():
    from tests.vm.test_telemetry_fleet import HOME, Fleet

    fleet = Fleet(1)
    dev, vid = fleet.devices[0], fleet.vehicle_ids[0]
    now = fleet.chain.env().timestamp_ms
    readings = [dev.attest(vehicle_id=vid, timestamp_ms=now - 5_000 + 1_000 * i, lat=HOME[0],
                           lon=HOME[1], odometer_m=100 + i) for i in range(3)]
    pool = AttestationPool(CHAIN_ID)
    check = view_check(fleet.view(now_ms=now))
    assert [r.code for r in pool.add_many([r.raw for r in readings], check)] == ["ok"] * 3
    # another attestation with seq 2 (a fork of the device's history) clashes with the pending one
    dev.seq = 1
    fork = dev.attest(vehicle_id=vid, timestamp_ms=now, lat=HOME[0], lon=HOME[1], odometer_m=500)
    assert pool.add(fork.raw, check).code == "replay"
    # the builder's block includes them in order; afterwards a recheck on the new head keeps nothing
    result = fleet.chain.block(attestations=pool.take(10))
    assert [c for _, c in result.attestation_results] == ["ok"] * 3
    pool.remove_included([i for i, _ in result.attestation_results], fleet.chain.head.height)
    assert len(pool) == 0 and pool.status(readings[0].id).status == "included"


# --- admission cache: the same answers as py-evm's state, faster -------------------------


def test_head_state_reads_match_py_evm_and_diff_finds_exactly_the_changes():
    import random

    from eth.constants import BLANK_ROOT_HASH
    from eth.db.atomic import AtomicDB

    from node.attestation_pool import HeadState, TrieNodes
    from vm.state import BlockEnv, make_state

    db = AtomicDB()
    env = BlockEnv(CHAIN_ID, 1, 0, b"\x00" * 20, 30_000_000, 0, b"\x00" * 32)
    state = make_state(db, BLANK_ROOT_HASH, env)
    rng = random.Random(3)
    addr = b"\x42" * 20
    state.set_nonce(addr, 1)
    slots = {rng.getrandbits(256 if i % 2 else 8): rng.getrandbits(rng.choice([8, 64, 256])) or 1
             for i in range(400)}
    for slot, value in slots.items():
        state.set_storage(addr, slot, value)
    state.persist()
    old_root = state.state_root
    nodes = TrieNodes(db)
    head = HeadState(nodes, old_root)
    for slot, value in list(slots.items())[:200]:
        assert head.get_storage(addr, slot) == value
    assert head.get_storage(addr, 10**70) == 0
    changed = set(rng.sample(sorted(slots), 25))
    added = {rng.getrandbits(256) for _ in range(5)}
    state2 = make_state(db, old_root, env)
    for slot in changed:
        state2.set_storage(addr, slot, 0 if slot % 3 == 0 else slots[slot] + 1)
    for slot in added:
        state2.set_storage(addr, slot, 7)
    state2.persist()
    head2 = HeadState(nodes, state2.state_root)
    keys = nodes.changed_keys(head.storage_root(addr), head2.storage_root(addr))
    from node.attestation_pool import _slot_key

    assert keys == {_slot_key(s).hex() for s in changed | added}


def test_admission_cache_answers_like_the_state_across_heads_and_identity_changes():
    from node.attestation_pool import AdmissionCache
    from tests.vm.test_telemetry_fleet import FAR, HOME, Fleet
    from vm.modules.telemetry import TelemetryView

    fleet = Fleet(3)
    chain = fleet.chain
    cache = AdmissionCache(chain.db)
    devs, vids = fleet.devices, fleet.vehicle_ids
    odo = {d.address: 1_000 for d in devs}

    def probe(dev, vid, dt=0):
        dev.seq += 1
        r = dev.attest(vehicle_id=vid, timestamp_ms=chain.head.timestamp_ms + 500 + dt, lat=HOME[0],
                       lon=HOME[1], odometer_m=odo[dev.address])
        dev.seq -= 1  # a probe, not really sent
        return r.attestation

    def compare():
        env = chain.env()
        fast = cache.view(chain.head.state_root, env.timestamp_ms, env.height)
        slow = TelemetryView(chain.state(), env.timestamp_ms, env.height)
        for dev, vid in zip(devs, vids, strict=True):
            for att in (probe(dev, vid), probe(dev, vid, dt=-900), probe(dev, vids[0])):
                assert fast.check(att) == slow.check(att)

    parent = chain.head.state_root
    cache.advance(parent, parent, [])
    compare()
    for step in range(6):
        atts = []
        for dev, vid in zip(devs, vids, strict=True):
            odo[dev.address] += 10
            atts.append(dev.attest(vehicle_id=vid, timestamp_ms=chain.head.timestamp_ms + 500,
                                   lat=HOME[0], lon=HOME[1], odometer_m=odo[dev.address]).raw)
        compare()
        result = chain.block(attestations=atts)
        assert all(c == "ok" for _, c in result.attestation_results)
        cache.advance(parent, chain.head.state_root, result.attestations)
        parent = chain.head.state_root
        compare()
        if step == 2:  # the owner unpairs device 1: its cached identity record must go
            owner_key = fleet.owner_of[devs[1].address][1]
            fleet.identity.send(owner_key, "unpairDevice", vids[1])
            cache.advance(parent, chain.head.state_root, [])
            parent = chain.head.state_root
            compare()
            env = chain.env()
            view = cache.view(parent, env.timestamp_ms, env.height)
            assert view.check(probe(devs[1], vids[1])) == "not_paired"
            devs_owner = fleet.owner_of[devs[1].address][0]
            fleet.identity.send(owner_key, "pairDevice", vids[1], devs[1].checksum_address, 2, FAR,
                                devs[1].pair_signature(vids[1], devs_owner, 2, FAR))
            cache.advance(parent, chain.head.state_root, [])
            parent = chain.head.state_root
            compare()
    # a root that does not follow on resets instead of serving stale answers
    cache.advance(b"\x01" * 32, chain.head.state_root, [])
    compare()


def test_a_replay_counts_the_same_whether_or_not_the_pool_remembers_it(devices):
    """A resubmitted included attestation is a ``replay`` in motus_getRejectCounts both
    when the pool's history answers it and when the stateful check does (history gone)."""
    counters = RejectCounters()
    pool = AttestationPool(CHAIN_ID, counters=counters, history=1)
    first, second = signed(devices[1], 1), signed(devices[1], 2)
    ids = [r.id for r in pool.add_many([first, second], accept_all)]
    pool.remove_included(ids, height=3)  # history of 1 keeps only the second id
    assert pool.add(second, accept_all).code == "replay"  # answered from history
    assert pool.add(first, lambda att: "replay").code == "replay"  # forgotten: checked again
    assert counters.snapshot()["replay"] == 2


def test_a_source_of_garbage_is_throttled_before_its_signatures_are_checked(devices):
    """Fair admission (node/fairness.py): a source's refused items use up its credit;
    then its batches are refused unchecked (``throttled``) while another source's
    items are admitted as ever."""
    now = [0.0]
    pool = AttestationPool(CHAIN_ID, credit=SourceCredit(10, 100, clock=lambda: now[0]),
                           counters=RejectCounters())
    forged = [signed(devices[2], s)[:-2] + b"\x00\x00" for s in range(1, 301)]
    first = pool.add_many(forged[:150], accept_all, source="rpc:attacker")
    assert {r.code for r in first} == {"bad_signature"}  # had credit: checked, all refused
    second = pool.add_many(forged[150:], accept_all, source="rpc:attacker")
    assert {r.code for r in second} == {"throttled"}
    snap = pool.counters.snapshot()
    assert snap["bad_signature"] == 150 and snap["throttled"] == 150  # nothing more was checked
    honest = pool.add_many([signed(devices[3], s) for s in (1, 2)], accept_all, source="rpc:honest")
    assert all(r.accepted for r in honest)
    now[0] = 5.0 + 0.1  # the debt (-50) is repaid at 10/s, then there is credit again
    assert {r.code for r in pool.add_many(forged[150:151], accept_all, source="rpc:attacker")} \
        == {"bad_signature"}


def test_drop_stale_drops_exactly_the_stale_whatever_the_arrival_order(devices):
    """Staleness after a block looks at the oldest timestamps first, not at every pending
    item: what it drops is exactly what a scan of the pool would drop; items included
    before going stale are never reported; the time order stays bounded by the pool."""
    pool = AttestationPool(CHAIN_ID)
    rng = random.Random(5)
    stamps = {}  # id -> timestamp_s; arrival order shuffled against time order
    for dev in devices:
        for seq in rng.sample(range(1, 60), 30):
            r = pool.add(signed(dev, seq, ts=1_000_000 + 1_000 * rng.randrange(0, 100)),
                         accept_all)
            assert r.accepted
            stamps[r.id] = pool._pending[r.id].att.timestamp_s
    included = [i for i in stamps if stamps[i] < 1_100][:10]
    pool.remove_included(included, height=3)
    stale_ms, now_ms = 60_000, 1_160_000
    expected = {i for i, ts in stamps.items() if ts * 1000 + stale_ms < now_ms} - set(included)
    dropped = pool.drop_stale(now_ms, stale_ms)
    assert {i for i, _ in dropped} == expected and all(c == "stale" for _, c in dropped)
    assert [stamps[i] for i, _ in dropped] == sorted(stamps[i] for i, _ in dropped)
    assert all(pool.status(i) == AttestationStatus("rejected", code="stale") for i in expected)
    assert len(pool) == len(stamps) - len(included) - len(expected)
    assert pool.drop_stale(now_ms, stale_ms) == []  # nothing left to drop
    # many departures without a stale drop: the time order is rebuilt, not left to grow
    dev = Device.generate(CHAIN_ID, seed=b"pool churn")
    for seq in range(1, 4_500):
        r = pool.add(signed(dev, seq, ts=2_000_000), accept_all, source="churn")
        pool.remove_included([r.id], height=4 + seq)
    assert len(pool._by_time) <= 2 * len(pool) + 4_096


def replay_check(head: dict[bytes, int]):
    """The replay rule over a head of last accepted ``seq`` per device (accepted items
    advance it, as the admission view does)."""

    def check(att: Attestation) -> str | None:
        if att.seq <= head.get(att.device, 0):
            return "replay"
        head[att.device] = att.seq
        return None

    return check


def test_an_honest_relay_late_by_a_block_is_not_throttled(devices):
    """The race seen in bench_attest_e2e with four validators: a relay's batch of the
    devices' readings N reaches this node after a block included their N+1 from another
    node's pool, so the whole batch is refused ``replay``. That refusal depends on the
    head (the relay had another one): a peer pays an eighth of a refused item for it, so
    the relay's next batch (readings N+2, new) is still checked and admitted; charged in
    full, the relay was throttled and those readings refused unchecked, and lost once a
    later reading of the same devices was included from another pool."""
    now = [0.0]
    pool = AttestationPool(CHAIN_ID, credit=SourceCredit(REJECT_CREDIT_PER_S, REJECT_CREDIT_BURST,
                                                         clock=lambda: now[0]))
    per_device = 300  # 1,200 replays: more than the burst of 1,000
    late = [signed(dev, 2 * k + 1) for dev in devices for k in range(per_device)]
    head = {dev.address: 2 * per_device for dev in devices}  # the block's N+1 readings
    refused = pool.add_many(late, replay_check(head), source="peer:relay")
    assert {r.code for r in refused} == {"replay"}
    fresh = [signed(dev, 2 * per_device + s) for dev in devices for s in (1, 2)]
    assert [r.code for r in pool.add_many(fresh, replay_check(head), source="peer:relay")] \
        == ["ok"] * len(fresh)
    assert pool.counters.get("throttled") == 0
    assert pool.credit.credit("peer:relay") == REJECT_CREDIT_BURST - len(late) * PEER_STATEFUL_CHARGE
    # a gateway is the origin of what it sends: the same refusals cost it in full
    gateway = [signed(dev, 2 * k + 2) for dev in devices for k in range(per_device)]
    assert {r.code for r in pool.add_many(gateway, replay_check(head), "rpc:10.0.0.1")} \
        == {"replay"}
    assert not pool.admits("rpc:10.0.0.1")


def test_a_peer_replaying_genuine_attestations_is_still_throttled(devices):
    """The other side of the cheaper stateful refusals of peers: a byzantine peer that
    replays old genuine attestations (each costs a signature recovery, then a stateful
    ``replay``) gets at most 1 / PEER_STATEFUL_CHARGE times the credit checked, then its
    batches are refused unchecked; a stateless refusal still costs it a whole item."""
    now = [0.0]
    pool = AttestationPool(CHAIN_ID, credit=SourceCredit(10, 100, clock=lambda: now[0]))
    head = {dev.address: 10_000 for dev in devices}
    old = [signed(dev, s) for dev in devices for s in range(1, 251)]  # 1,000 genuine replays
    budget = int(100 / PEER_STATEFUL_CHARGE)  # 800
    first = pool.add_many(old[:budget], replay_check(head), source="peer:byzantine")
    assert {r.code for r in first} == {"replay"}
    assert not pool.admits("peer:byzantine")
    assert {r.code for r in pool.add_many(old[budget:], replay_check(head), "peer:byzantine")} \
        == {"throttled"}
    assert pool.counters.get("replay") == budget  # nothing more was checked
    raws = [signed(devices[0], s) for s in range(20_001, 20_101)]
    forged = [raw[:-1] + bytes([raw[-1] ^ 1]) for raw in raws]
    assert {r.code for r in pool.add_many(forged, replay_check(head), "peer:forger")} \
        == {"bad_signature"}
    assert pool.credit.credit("peer:forger") == 0  # 100 stateless refusals: the whole credit


def test_admitted_attestations_refused_later_are_counted_as_dropped(devices):
    """An attestation answered ``ok`` that a later head, the clock or block building
    refuses leaves the pool without a block: counted by code in ``dropped_codes`` (the
    metric motus_attestations_dropped_total), besides the reject counters."""
    pool = AttestationPool(CHAIN_ID)
    raws = [signed(devices[0], 1), signed(devices[1], 1), signed(devices[2], 1, ts=0)]
    ids = [r.id for r in pool.add_many(raws, replay_check({}), source="peer:relay")]
    new_head = {devices[0].address: 2}  # a block included the device's next reading
    assert pool.recheck(replay_check(new_head)) == [(ids[0], "replay")]
    assert pool.reject_pending([(ids[1], "rate_cap"), (b"\x00" * 32, "replay")]) == 1
    assert pool.drop_stale(now_ms=10_000_000, stale_ms=300_000) == [(ids[2], "stale")]
    assert pool.dropped_codes == {"replay": 1, "rate_cap": 1, "stale": 1}
    assert pool.counters.get("replay") == 1 and len(pool) == 0


class HeadCheck:
    """``replay_check`` with the view's ``last_seq`` (as node.attestation_pool.ViewCheck)."""

    def __init__(self, head: dict[bytes, int]) -> None:
        self.head = head
        self.check = replay_check(head)

    def __call__(self, att: Attestation) -> str | None:
        return self.check(att)

    def last_seq(self, device: bytes) -> int:
        return self.head.get(device, 0)

    def would_pass(self, att: Attestation) -> bool:
        return att.seq > self.head.get(att.device, 0)


def test_a_reading_refused_pool_full_holds_back_the_devices_later_readings(devices):
    """A relay over its quota gets a device's reading N refused ``pool_full``; when room
    comes back, the relay's N+1 must not enter before N does: this node would then
    propose N+1, and N, pending in other pools, would be dropped there as ``replay``
    (lost). So N+1 is refused ``pool_full`` too until the view holds N (admitted from
    another relay here, or included); other devices are not affected."""
    pool = AttestationPool(CHAIN_ID, max_per_source=2)
    pool.clock = lambda: 1_000.0  # the readings' times (~1,000 s) are recent
    head: dict[bytes, int] = {}
    check = HeadCheck(head)
    a, b = devices[0], devices[1]
    first = pool.add_many([signed(b, 1), signed(b, 2), signed(a, 1)], check, "peer:relay")
    assert [r.code for r in first] == ["ok", "ok", "pool_full"]  # a's reading 1 refused
    pool.remove_included([r.id for r in first[:2]], height=1)  # room for the relay again
    later = pool.add_many([signed(a, 2), signed(b, 3)], check, "peer:relay")
    assert [r.code for r in later] == ["pool_full", "ok"]  # a waits for its reading 1
    assert pool.add(signed(a, 1), check, "peer:other").accepted  # from another relay
    assert pool.add(signed(a, 2), check, "peer:relay").accepted
    assert [r.code for r in pool.add_many([signed(a, 3)], check, "peer:relay")] == ["pool_full"]
    # (the relay is at its quota again: that is all) ... and once a block holds the
    # missing reading, the device's next ones enter
    pool.max_per_source = 10
    assert pool.add(signed(a, 4), check, "peer:relay").code == "pool_full"  # waits for 3
    head[a.address] = 3  # a block included reading 3 from another pool
    assert pool.add(signed(a, 4), check, "peer:relay").accepted


def test_a_reading_the_view_would_refuse_holds_nothing_back(devices):
    """A reading refused ``pool_full`` that the view would refuse anyway (here: too soon
    after the previous one) never enters the view, so waiting for it would hold the
    device's later readings until it is stale: it is not waited for (review note)."""

    class TooSoon(HeadCheck):  # reading 3 comes too soon after 2
        def __call__(self, att: Attestation) -> str | None:
            return "too_frequent" if att.seq == 3 else self.check(att)

        def would_pass(self, att: Attestation) -> bool:
            return att.seq != 3 and super().would_pass(att)

    pool = AttestationPool(CHAIN_ID, max_per_source=1)
    pool.clock = lambda: 1_000.0
    check = TooSoon({})
    a, b = devices[0], devices[1]
    first = pool.add_many([signed(b, 1), signed(a, 3)], check, "peer:relay")
    assert [r.code for r in first] == ["ok", "pool_full"]  # a's 3: over quota (and too soon)
    pool.max_per_source = 10
    assert pool.add(signed(a, 4), check, "peer:relay").accepted  # not held back by 3


def test_a_missing_reading_is_waited_for_no_longer_than_it_could_be_included(devices):
    """Without the view's ``last_seq`` (or if the missing reading never comes), the wait
    ends once the missing reading is too old for any block (MISSING_FOR_S)."""
    pool = AttestationPool(CHAIN_ID, max_per_device=1)
    now = [1_000.0]
    pool.clock = lambda: now[0]
    dev = devices[2]
    assert pool.add(signed(dev, 1), accept_all).accepted
    assert pool.add(signed(dev, 2), accept_all).code == "pool_full"  # per-device quota
    pool.max_per_device = 10
    assert pool.add(signed(dev, 3), accept_all).code == "pool_full"  # waits for 2
    now[0] = 1_000 + 2 + MISSING_FOR_S + 1  # reading 2 (timestamp 1,002 s) is stale now
    assert pool.add(signed(dev, 3), accept_all).accepted


def test_process_pool_checker_tells_each_part_in_order_as_it_comes(devices, monkeypatch):
    """``check_async(on_part=...)``: the outcomes are told part by part, contiguous from
    the first item and in order, before the whole answer (so admission can start on the
    first items); also when a worker's answer is lost and its part is checked here."""
    import trio

    import node.attestation_pool as pool_module

    raws = _odd_batch(devices) * 3  # 180 items: several parts for two workers
    expected = _expected(raws)
    checker = ProcessPoolChecker(workers=2, min_batch=8, chunk=16)
    try:
        told: list[tuple[int, list]] = []
        got = trio.run(lambda: checker.check_async(
            raws, CHAIN_ID, lambda start, part: told.append((start, part))))
        assert got == expected
        assert len(told) > 2 and told[0][0] == 0
        for (start, part), (following, _) in zip(told, told[1:], strict=False):
            assert following == start + len(part)
        assert [x for _, part in told for x in part] == expected
        # a lost answer: that part, and every one after it, told once it was checked here
        original = pool_module._Worker.answer
        calls = []

        async def lose_third(self, ticket):
            calls.append(ticket)
            if len(calls) == 3:
                self.abandon(ticket)
                return None
            return await original(self, ticket)

        monkeypatch.setattr(pool_module._Worker, "answer", lose_third)
        told.clear()
        got = trio.run(lambda: checker.check_async(
            raws, CHAIN_ID, lambda start, part: told.append((start, part))))
        assert got == expected and [x for _, part in told for x in part] == expected
        assert [start for start, _ in told] == sorted({start for start, _ in told})
        # small batches (checked on a thread): told once, whole
        told.clear()
        assert trio.run(lambda: checker.check_async(
            raws[:4], CHAIN_ID, lambda start, part: told.append((start, part)))) == expected[:4]
        assert told == [(0, expected[:4])]
    finally:
        checker.close()
