"""Signatures checked beside block execution (vm.attestation_ahead): a block's result,
and the error of an invalid block, are those of the serial check whatever the worker
process does (answers, is not started yet, dies, or hangs), and a forged signature
anywhere (first, middle or last chunk) fails the block with the same message."""

from __future__ import annotations

import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vm.attestation as attestation
import vm.attestation_ahead as ahead_module
from devnet.device import Device
from tests.harness import CHAIN_ID
from tests.vm.test_telemetry_fleet import HOME, Fleet
from vm.attestation import decode_attestation
from vm.attestation_ahead import SignaturesAhead, SignatureWorker
from vm.db import OverlayDB
from vm.errors import InvalidBlock
from vm.execute import BlockBody, execute_block
from vm.modules.telemetry import build_attestations, finish_signatures, process_attestations
from vm.state import make_state

DEVICES = 40


@contextmanager
def _frozen(worker: SignatureWorker) -> Iterator[None]:
    """The worker process stopped (SIGSTOP: a hung or descheduled worker) inside the
    block, running again after it."""
    pid = worker._process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _started(worker: SignatureWorker) -> SignatureWorker:
    worker.start()
    deadline = time.monotonic() + 60
    while not worker.available():
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.02)
    return worker


@pytest.fixture(autouse=True)
def _patient(monkeypatch):
    """Answers count however loaded the machine (the node waits 50 ms for each; a late
    answer only makes the rest of the block serial, which would hide what these tests
    show)."""
    monkeypatch.setattr(ahead_module, "SHARE_WAIT_S", 30.0)


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet(DEVICES)


@pytest.fixture(scope="module")
def worker():
    w = _started(SignatureWorker())
    yield w
    w.close()


def _block(fleet: Fleet) -> list[bytes]:
    """One attestation per device, for the block after the head (all valid)."""
    now = fleet.chain.head.timestamp_ms + 500
    return [dev.attest(vehicle_id=vid, timestamp_ms=now, lat=HOME[0] + 0.001 * i,
                       lon=HOME[1], odometer_m=10_000, salt=bytes(16)).raw
            for i, (dev, vid) in enumerate(zip(fleet.devices, fleet.vehicle_ids, strict=True))]


def _forged(fleet: Fleet, raw: bytes) -> bytes:
    """The same record signed by a key that is not its device's: a well-formed signature
    of the wrong signer."""
    stranger = Device.generate(CHAIN_ID, fleet.chain.param("h3_resolution"), seed=b"stranger")
    return stranger.sign(decode_attestation(raw)).encode()


def _broken(raw: bytes) -> bytes:
    """A bit flipped inside the signature."""
    i = len(raw) - 40
    return raw[:i] + bytes([raw[i] ^ 0x5A]) + raw[i + 1:]


def _outcome(fleet: Fleet, raws: list[bytes], skip_invalid: bool,
             worker: SignatureWorker | None = None, chunk: int = 4,
             seen: frozenset[int] = frozenset(), stats: list | None = None):
    """process_attestations on the head, the memo holding just the ``seen`` indices,
    the signatures checked beside it by ``worker`` (tasks of ``chunk``) if given."""
    chain = fleet.chain
    env = chain.env()
    attestation._VERIFIED.clear()
    for i in seen:  # (admission marks only what passed its checks: so does this)
        if attestation.check_stateless_codes([raws[i]], env.chain_id) == [attestation.OK]:
            attestation.mark_verified(attestation.compute_attestation_id(raws[i]), env.chain_id)
    state = make_state(OverlayDB(chain.db), chain.head.state_root, env)
    checker = (SignaturesAhead(worker, raws, env.chain_id, chunk=chunk)
               if worker and not skip_invalid else None)
    try:
        if skip_invalid:  # building: the invalid ones left out (never with a worker)
            included, results, _, _ = build_attestations(state, env, raws)
        else:
            included, results = process_attestations(state, env, raws, ahead=checker)
    except InvalidBlock as exc:
        return ("invalid", str(exc))
    finally:
        if checker is not None:
            checker.close()
            if stats is not None:
                stats.append(checker.workers_checked)
    return included, results, state.state_root


def _check(fleet, raws, skip_invalid, worker, chunk=4, seen=frozenset(), stats=None):
    serial = _outcome(fleet, raws, skip_invalid, None, chunk, seen)
    assert _outcome(fleet, raws, skip_invalid, worker, chunk, seen, stats) == serial
    return serial


@pytest.mark.parametrize("position", [0, 1, 17, 22, DEVICES - 1])  # first, middle, last chunk
@pytest.mark.parametrize("damage", ["forged", "broken"])
def test_a_bad_signature_fails_the_block_with_the_serial_error(fleet, worker, position, damage):
    raws = _block(fleet)
    raws[position] = _forged(fleet, raws[position]) if damage == "forged" else _broken(raws[position])
    stats: list[int] = []
    outcome = _check(fleet, raws, False, worker, stats=stats)
    assert outcome[0] == "invalid"
    assert f"attestation {position} " in outcome[1] and "bad_signature" in outcome[1]


def test_a_valid_block_gives_the_serial_result_and_the_worker_did_the_work(fleet, worker):
    raws = _block(fleet)
    stats: list[int] = []
    outcome = _check(fleet, raws, False, worker, stats=stats)
    assert len(outcome[0]) == DEVICES
    # the worker recovered signatures (how many depends on timing: finish splits what
    # is left after the loop with the caller)
    assert 0 < stats[0] <= DEVICES
    seen = frozenset(range(0, DEVICES, 3))
    _check(fleet, raws, False, worker, seen=seen, stats=stats)
    assert 0 < stats[-1] <= DEVICES - len(seen)  # what the memo holds goes to no worker


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mix_gives_the_serial_results(fleet, worker, data):
    raws = _block(fleet)
    for i in data.draw(st.sets(st.integers(0, DEVICES - 1), max_size=4), label="bad"):
        raws[i] = data.draw(st.sampled_from([_forged(fleet, raws[i]), _broken(raws[i]),
                                             b"\x92\x02", raws[(i + 1) % DEVICES]]))
    seen = data.draw(st.frozensets(st.integers(0, DEVICES - 1)), label="seen")
    chunk = data.draw(st.integers(1, 16), label="chunk")
    skip_invalid = data.draw(st.booleans(), label="skip_invalid")
    _check(fleet, raws, skip_invalid, worker, chunk, seen)


def test_a_worker_not_started_dead_or_stuck_changes_nothing(fleet, monkeypatch):
    raws = _block(fleet)
    raws[30] = _forged(fleet, raws[30])
    expected = _outcome(fleet, raws, False)
    assert expected[0] == "invalid"
    stats: list[int] = []
    idle = SignatureWorker()  # not started yet: this block is serial (and starts it)
    assert _check(fleet, raws, False, idle, stats=stats) == expected and stats == [0]
    idle.close()
    monkeypatch.setattr(ahead_module, "SHARE_WAIT_S", 0.2)
    worker = _started(SignatureWorker())
    try:
        with _frozen(worker):  # hung: every answer late
            _check(fleet, raws, False, worker, stats=stats)
            assert stats[-1] == 0
            assert not worker.available()  # the hung block's tasks are still due
        deadline = time.monotonic() + 30
        while not worker.available():  # their answers come, are read and dropped
            assert time.monotonic() < deadline
            time.sleep(0.02)
        _check(fleet, raws, False, worker, stats=stats)
        assert 0 < stats[-1] <= DEVICES  # the worker's answers count again (its share of
        # the block depends on timing: SignaturesAhead.finish splits it with this thread)
        worker._process.kill()  # dies
        worker._process.wait(5)
        _check(fleet, raws, False, worker, stats=stats)
        assert stats[-1] == 0 and worker._process is None
        monkeypatch.setattr(ahead_module, "WORKER_RESTART_S", 0.0)
        _started(worker)  # started again by the next block that asks
        _check(fleet, raws, False, worker, stats=stats)
        assert 0 < stats[-1] <= DEVICES
    finally:
        worker.close()
    assert not worker.available()  # closed for good: never started again


def test_execute_block_checks_with_the_worker_like_the_serial_path(fleet, worker):
    """The node's path: execute_block with the worker process."""
    chain = fleet.chain
    env = chain.env()
    raws = _block(fleet)
    outcomes = []
    for with_worker in (None, worker):
        attestation._VERIFIED.clear()
        result = execute_block(OverlayDB(chain.db), chain.head.state_root, env,
                               BlockBody([], list(raws)), signature_worker=with_worker)
        outcomes.append((result.state_root, result.attestation_results))
    assert outcomes[0] == outcomes[1]
    raws[DEVICES - 2] = _forged(fleet, raws[DEVICES - 2])
    errors = []
    for with_worker in (None, worker):
        attestation._VERIFIED.clear()
        with pytest.raises(InvalidBlock) as caught:
            execute_block(OverlayDB(chain.db), chain.head.state_root, env,
                          BlockBody([], list(raws)), signature_worker=with_worker)
        errors.append(str(caught.value))
    assert errors[0] == errors[1]
    assert f"attestation {DEVICES - 2} " in errors[0]


def test_a_block_whose_signatures_were_all_verified_never_starts_the_worker(fleet):
    raws = _block(fleet)
    worker = SignatureWorker()
    try:
        assert _check(fleet, raws, False, worker, seen=frozenset(range(DEVICES)))
        assert worker._process is None
    finally:
        worker.close()


def test_the_nodes_setting_gives_the_serial_results_and_a_hung_worker_one_wait(fleet, monkeypatch):
    """The node's setting (SHARE_WAIT_S 50 ms): any timing gives the serial outcome, and a
    hung worker costs one wait, then the block is the caller's."""
    monkeypatch.setattr(ahead_module, "SHARE_WAIT_S", 0.05)
    raws = _block(fleet)
    bad = list(raws)
    bad[25] = _forged(fleet, bad[25])
    worker = _started(SignatureWorker())
    try:
        for chunk in (1, 4, 16, 64):
            for seen in (frozenset(), frozenset(range(0, DEVICES, 5))):
                _check(fleet, raws, False, worker, chunk, seen)
                _check(fleet, bad, False, worker, chunk, seen)
                _check(fleet, bad, True, worker, chunk, seen)
        with _frozen(worker):
            started = time.monotonic()
            stats: list[int] = []
            _check(fleet, raws, False, worker, stats=stats)
            assert stats == [0] and time.monotonic() - started < 5
    finally:
        worker.close()


def test_the_loop_applies_unverified_attestations_and_finish_settles_them(fleet, worker):
    """The loop decodes and applies what the memo does not hold without recovering a
    signature; the signatures are settled after it (finish), where a forged one fails
    the block with the serial check's error."""
    chain = fleet.chain
    env = chain.env()
    raws = _block(fleet)
    raws[DEVICES - 3] = _forged(fleet, raws[DEVICES - 3])
    attestation._VERIFIED.clear()
    state = make_state(OverlayDB(chain.db), chain.head.state_root, env)
    ahead = SignaturesAhead(worker, raws, env.chain_id, chunk=4)
    try:
        assert ahead.unchecked() is not None and sum(ahead.unchecked()) == DEVICES
        included, _ = process_attestations(state, env, raws, ahead=ahead, finish=False)
        assert len(included) == DEVICES and ahead.own == 0  # applied, nothing recovered here
        with pytest.raises(InvalidBlock) as caught:
            finish_signatures(ahead)
    finally:
        ahead.close()
    assert str(caught.value) == _outcome(fleet, raws, False)[1]
    assert f"attestation {DEVICES - 3} " in str(caught.value)


def test_a_block_forged_at_its_start_fails_in_the_loop_not_at_its_end(fleet, worker,
                                                                      monkeypatch):
    """The worker refuses attestation 0: the loop, which applies the attestations
    unverified, stops at its next look at the answers (every PUMP_EVERY) with the serial
    check's error, instead of executing the whole forged block first."""
    from vm.modules.telemetry import PUMP_EVERY, TelemetryView

    chain = fleet.chain
    env = chain.env()
    raws = _block(fleet)
    raws[0] = _forged(fleet, raws[0])
    attestation._VERIFIED.clear()
    applied: list[int] = []
    real_apply = TelemetryView.apply
    monkeypatch.setattr(TelemetryView, "apply",
                        lambda view, att: applied.append(1) or real_apply(view, att))
    state = make_state(OverlayDB(chain.db), chain.head.state_root, env)
    ahead = SignaturesAhead(worker, raws, env.chain_id, chunk=4)
    try:
        deadline = time.monotonic() + 30
        while ahead.refused_at != 0:  # the worker's answer to the first chunk is in
            assert time.monotonic() < deadline
            ahead.pump()
            time.sleep(0.002)
        with pytest.raises(InvalidBlock) as caught:
            process_attestations(state, env, raws, ahead=ahead, finish=False)
    finally:
        ahead.close()
    assert 0 < len(applied) <= PUMP_EVERY < DEVICES  # stopped early
    assert str(caught.value) == _outcome(fleet, raws, False)[1]
    assert str(caught.value).startswith("attestation 0 ") and "bad_signature" in str(caught.value)


@pytest.mark.parametrize("forged_at", [3, 20])
def test_a_failure_in_the_loop_reports_an_earlier_or_its_own_bad_signature_first(fleet, worker,
                                                                               forged_at):
    """The loop fails at attestation 20 (a replay of 19's reading); a forged signature at
    3, or at 20 itself, is what the serial check reports, as it checks signatures first."""
    raws = _block(fleet)
    raws[20] = raws[19] if forged_at != 20 else _forged(fleet, raws[19])
    if forged_at == 3:
        raws[3] = _forged(fleet, raws[3])
    outcome = _check(fleet, raws, False, worker, chunk=64)
    assert outcome[0] == "invalid"
    assert f"attestation {forged_at} " in outcome[1] and "bad_signature" in outcome[1]
    raws[3] = _block(fleet)[3]
    raws[20] = raws[19]  # no bad signature: the loop's own error
    outcome = _check(fleet, raws, False, worker, chunk=64)
    assert "attestation 20 " in outcome[1] and "bad_signature" not in outcome[1]


def test_queued_tasks_never_block_a_stuck_worker_and_reach_it_once_it_runs(fleet):
    """Far more task bytes than the socket holds (~3 MB) queued to a stopped worker:
    send returns at once, the rest waits in this process and is pushed on as answers
    are asked for; every task is answered, in order, once the worker runs again."""
    raw = _block(fleet)[0]
    chain_id = fleet.chain.env().chain_id
    worker = _started(SignatureWorker())
    try:
        with _frozen(worker):
            started = time.monotonic()
            tags = [worker.send([raw] * 64, chain_id) for _ in range(250)]
            assert time.monotonic() - started < 2 and None not in tags
            assert worker._unsent  # (the socket took what it holds; the rest waits here)
            assert worker.receive(tags[0], 0.05) is None  # stuck: no answer, no block
        for tag in tags:
            assert worker.receive(tag, 30) == bytes(64)  # 64 times CODE_OK
        assert worker.available() and not worker._unsent
    finally:
        worker.close()


def test_skipped_tasks_are_answered_without_codes_or_never_written(fleet):
    """skip(first, last): the tasks in that range the worker has not begun come back
    with no codes (or, still queued here, are dropped); the others are answered as
    usual and the worker is free again after."""
    raw = _block(fleet)[0]
    chain_id = fleet.chain.env().chain_id
    worker = _started(SignatureWorker())
    try:
        with _frozen(worker):
            tags = [worker.send([raw] * 64, chain_id) for _ in range(60)]
            worker.skip(tags[10], tags[49])
        answers: dict[int, bytes] = {}
        while tags[-1] not in answers:  # every answer, in order, as they come
            worker.flush()  # (the queued tasks go out as the socket takes them)
            assert worker._waiting(30), "no answer"
            tag, codes = worker._read()
            answers[tag] = codes
        assert all(answers[tag] == bytes(64) for tag in tags[:10] + tags[50:])
        skipped = [tag for tag in tags[10:50] if tag in answers]  # (the rest: never written)
        assert all(answers[tag] == b"" for tag in skipped)
        deadline = time.monotonic() + 30
        while not worker.available():
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        worker.close()


def test_a_block_that_ends_with_the_socket_full_leaves_the_worker_little_to_do(fleet):
    """A check that ends (fails) while the worker holds much of its block: the queued
    tasks are dropped and the skip frame still goes out (it is not dropped with them),
    so the worker answers what it holds without recovering it and is soon free."""
    raw = _block(fleet)[0]
    chain_id = fleet.chain.env().chain_id
    worker = _started(SignatureWorker())
    try:
        tags = [worker.send([raw] * 64, chain_id) for _ in range(300)]  # ~19,000 signatures

        def unsent() -> int:
            return sum(len(frame) for _, frame in worker._unsent) - worker._offset

        while unsent() > 1_200_000:  # the worker takes ~2 MB (~11,000 signatures) in
            worker.flush()
        with _frozen(worker):  # and is descheduled
            time.sleep(0.05)  # (stopped for sure)
            for _ in range(5):
                worker.flush()  # the socket full
            worker.skip(tags[0], tags[-1])  # what SignaturesAhead.close does
            worker.drop_unsent()  # (whether the skip frame is still queued here or was
            # taken by the socket depends on the bytes it had room for: see the next test)
        started = time.monotonic()
        while not worker.available():  # ~0.5 s of recoveries if the skip were lost
            assert time.monotonic() - started < 30
            time.sleep(0.005)
        assert time.monotonic() - started < 0.3
    finally:
        worker.close()


def test_a_worker_that_owes_answers_too_long_is_killed_and_replaced(fleet, monkeypatch):
    monkeypatch.setattr(ahead_module, "WORKER_STUCK_S", 0.2)
    monkeypatch.setattr(ahead_module, "WORKER_RESTART_S", 0.0)
    raw = _block(fleet)[0]
    worker = _started(SignatureWorker())
    try:
        stuck = worker._process
        os.kill(stuck.pid, signal.SIGSTOP)
        worker.send([raw] * 8, fleet.chain.env().chain_id)
        deadline = time.monotonic() + 10
        while worker._process is stuck:
            assert time.monotonic() < deadline and not worker.available()
            time.sleep(0.05)
        assert stuck.poll() is not None  # killed, though stopped
        _started(worker)  # a new one
        assert worker._process is not stuck
    finally:
        worker.close()


def test_drop_unsent_forgets_queued_tasks_but_keeps_skip_frames_and_a_frame_begun():
    """A block's end (SignaturesAhead.close) drops the tasks still queued here: they were
    never written, so no answer is owed for them. A skip frame stays (the worker must
    still skip what it holds) and so does a frame partly written (the stream would be
    cut mid-frame)."""
    worker = SignatureWorker()  # never started: nothing leaves this process
    worker._unsent = deque([(3, b"begun"), (4, b"task"), (-1, b"skip"), (5, b"task")])
    worker._offset = 2  # the first frame is partly written
    worker._in_flight = {3, 4, 5}
    worker.drop_unsent()
    assert list(worker._unsent) == [(3, b"begun"), (-1, b"skip")]
    assert worker._in_flight == {3}  # answers still owed: the begun task's only
    worker._offset = 0  # nothing begun: every task goes
    worker._unsent = deque([(6, b"task"), (-1, b"skip")])
    worker._in_flight = {6}
    worker.drop_unsent()
    assert list(worker._unsent) == [(-1, b"skip")] and not worker._in_flight
