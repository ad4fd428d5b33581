"""Signatures checked ahead of block execution (vm.attestation.SignaturesAhead): a block's
result, and the error of an invalid block, are those of the serial check whatever the
workers do (answer, fail, hang, or are shut down), and a forged signature anywhere (first,
middle or last chunk) fails the block with the same message."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vm.attestation as attestation
from devnet.device import Device
from tests.harness import CHAIN_ID
from tests.vm.test_telemetry_fleet import HOME, Fleet
from vm.attestation import SignaturesAhead, decode_attestation
from vm.db import OverlayDB
from vm.errors import InvalidBlock
from vm.execute import BlockBody, execute_block
from vm.modules.telemetry import process_attestations
from vm.state import make_state

DEVICES = 40


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet(DEVICES)


@pytest.fixture(scope="module")
def threads():
    with ThreadPoolExecutor(1) as executor:
        yield executor


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
             ahead: tuple[Executor, int, int] | None = None, seen: frozenset[int] = frozenset()):
    """process_attestations on the head, the memo holding just the ``seen`` indices;
    ``ahead``: (executor, chunk, window) of the signatures checked ahead."""
    chain = fleet.chain
    env = chain.env()
    attestation._VERIFIED.clear()
    for i in seen:
        attestation.mark_verified(attestation.compute_attestation_id(raws[i]), env.chain_id)
    state = make_state(OverlayDB(chain.db), chain.head.state_root, env)
    checker = None
    if ahead is not None:
        executor, chunk, window = ahead
        checker = SignaturesAhead(executor, raws, env.chain_id, chunk=chunk, window=window)
    try:
        included, results = process_attestations(state, env, raws, skip_invalid, ahead=checker)
    except InvalidBlock as exc:
        return ("invalid", str(exc))
    finally:
        if checker is not None:
            checker.close()
    return included, results, state.state_root


def _check(fleet, raws, skip_invalid, executor, chunk=4, window=3, seen=frozenset()):
    serial = _outcome(fleet, raws, skip_invalid, None, seen)
    assert _outcome(fleet, raws, skip_invalid, (executor, chunk, window), seen) == serial
    return serial


@pytest.mark.parametrize("position", [0, 1, 17, 22, DEVICES - 1])  # first, middle, last chunk
@pytest.mark.parametrize("damage", ["forged", "broken"])
def test_a_bad_signature_fails_the_block_with_the_serial_error(fleet, threads, position, damage):
    raws = _block(fleet)
    raws[position] = _forged(fleet, raws[position]) if damage == "forged" else _broken(raws[position])
    outcome = _check(fleet, raws, False, threads)
    assert outcome[0] == "invalid"
    assert f"attestation {position} " in outcome[1] and "bad_signature" in outcome[1]


def test_a_valid_block_gives_the_serial_result_and_the_workers_did_the_work(fleet, threads):
    raws = _block(fleet)
    outcome = _check(fleet, raws, False, threads)
    assert len(outcome[0]) == DEVICES
    attestation._VERIFIED.clear()
    ahead = SignaturesAhead(threads, raws, fleet.chain.head.chain_id, chunk=4, window=3)
    for i in range(len(raws)):
        threads.submit(int).result()  # one thread, tasks in order: every task given out is done
        ahead.ready(i)
    ahead.close()
    assert ahead.workers_checked == DEVICES  # every task done before the caller came
    assert all(attestation.is_verified(attestation.compute_attestation_id(raw), CHAIN_ID)
               for raw in raws)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_mix_gives_the_serial_results(fleet, threads, data):
    raws = _block(fleet)
    for i in data.draw(st.sets(st.integers(0, DEVICES - 1), max_size=4), label="bad"):
        raws[i] = data.draw(st.sampled_from([_forged(fleet, raws[i]), _broken(raws[i]),
                                             b"\x92\x02", raws[(i + 1) % DEVICES]]))
    seen = data.draw(st.frozensets(st.integers(0, DEVICES - 1)), label="seen")
    chunk = data.draw(st.integers(1, 16), label="chunk")
    window = data.draw(st.integers(1, 4), label="window")
    skip_invalid = data.draw(st.booleans(), label="skip_invalid")
    _check(fleet, raws, skip_invalid, threads, chunk, window, seen)


class _Failing(Executor):
    """Every task fails (a worker process that died: BrokenProcessPool)."""

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        future.set_exception(RuntimeError("worker died"))
        return future


class _Stuck(Executor):
    """Tasks that never finish (a hung worker)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self._pool = ThreadPoolExecutor(4)

    def submit(self, fn, /, *args, **kwargs):
        def late():
            self.release.wait(10)
            return fn(*args, **kwargs)

        return self._pool.submit(late)

    def shutdown(self, wait=True, *, cancel_futures=False):
        self.release.set()
        self._pool.shutdown(wait, cancel_futures=cancel_futures)


def test_failed_shut_down_or_stuck_workers_change_nothing(fleet, monkeypatch):
    raws = _block(fleet)
    raws[30] = _forged(fleet, raws[30])
    expected = _outcome(fleet, raws, False)
    assert expected[0] == "invalid"
    _check(fleet, raws, False, _Failing())
    closed = ThreadPoolExecutor(1)
    closed.shutdown()
    _check(fleet, raws, False, closed)
    monkeypatch.setattr(attestation, "AHEAD_WAIT_S", 0.05)
    stuck = _Stuck()
    try:
        _check(fleet, raws, False, stuck, chunk=2, window=2)
    finally:
        stuck.shutdown()


def test_execute_block_checks_with_worker_processes_like_the_serial_path(fleet):
    """The node's path: execute_block with a real worker process (spawned: the pickled
    task and the answers cross a process boundary)."""
    chain = fleet.chain
    env = chain.env()
    raws = _block(fleet)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as workers:
        outcomes = []
        for executor in (None, workers):
            attestation._VERIFIED.clear()
            result = execute_block(OverlayDB(chain.db), chain.head.state_root, env,
                                   BlockBody([], list(raws)), signature_executor=executor)
            outcomes.append((result.state_root, result.attestation_results))
        assert outcomes[0] == outcomes[1]
        raws[DEVICES - 2] = _forged(fleet, raws[DEVICES - 2])
        errors = []
        for executor in (None, workers):
            attestation._VERIFIED.clear()
            with pytest.raises(InvalidBlock) as caught:
                execute_block(OverlayDB(chain.db), chain.head.state_root, env,
                              BlockBody([], list(raws)), signature_executor=executor)
            errors.append(str(caught.value))
        assert errors[0] == errors[1]
        assert f"attestation {DEVICES - 2} " in errors[0]
