"""Consensus first (node/rpc/loopguard.py): while the event loop is behind, a new RPC
request waits, at most ``max_wait``; with the loop idle it is served at once."""

from __future__ import annotations

import time

import trio

from node.rpc.loopguard import LoopGuard


async def _hog(stop: trio.Event, block_s: float) -> None:
    """A task that holds the loop ``block_s`` at a time (as a long batch of other tasks
    would), yielding in between."""
    while not stop.is_set():
        time.sleep(block_s)
        await trio.sleep(0)


def test_requests_pass_at_once_on_an_idle_loop() -> None:
    async def main() -> float:
        guard = LoopGuard()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard.run)
            await trio.sleep(0.1)
            t0 = trio.current_time()
            await guard.admit()
            waited = trio.current_time() - t0
            nursery.cancel_scope.cancel()
        return waited

    assert trio.run(main) < 0.5  # no wait at all unless the machine stalls this process


def test_requests_wait_while_the_loop_is_behind_then_go() -> None:
    async def main() -> tuple[float, float]:
        guard = LoopGuard(target=0.02, max_wait=5.0)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard.run)
            nursery.start_soon(_hog, stop, 0.1)
            await trio.sleep(0.3)
            assert guard.lag > guard.target
            t0 = trio.current_time()

            async def release() -> None:
                await trio.sleep(0.5)
                stop.set()

            nursery.start_soon(release)
            await guard.admit()  # waits for the hog to stop, then for one clean sample
            waited = trio.current_time() - t0
            nursery.cancel_scope.cancel()
        return waited, guard.lag

    waited, lag = trio.run(main)
    assert 0.3 <= waited < 4.5, waited  # released by the loop catching up, not by max_wait
    assert lag <= 0.02


def test_a_request_waits_at_most_max_wait() -> None:
    async def main() -> float:
        guard = LoopGuard(target=0.02, max_wait=0.4)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard.run)
            nursery.start_soon(_hog, stop, 0.1)
            await trio.sleep(0.3)
            t0 = trio.current_time()
            await guard.admit()
            waited = trio.current_time() - t0
            stop.set()
            nursery.cancel_scope.cancel()
        return waited

    assert 0.4 <= trio.run(main) < 2.5
