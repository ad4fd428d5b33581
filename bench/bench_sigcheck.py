"""Admission's signature checks handed to worker processes: CPU per attestation in the
node process and in the workers, against raw coincurve recovery of the same signatures
in the same run (the ratio is the headline: what the hand-off costs on top of the
recovery itself).

N signed attestations (distinct devices, all valid) go through the node's stateless
admission path the way ``AttestationService.submit`` drives it: batches of ``--batch``
(an RPC call), up to two at once (``ADMISSION_CHECKS_AT_ONCE``), on a trio event loop;
the result is each item's decoded attestation or reject code. Compared, in the same run:

- ``executor``: the path as of 2026-12-05: a ``ProcessPoolExecutor`` (spawn, tasks of 64,
  codes pickled back) driven from trio worker threads that block on the futures, the
  accepted items decoded again in those threads;
- ``direct``: :class:`node.attestation_pool.ProcessPoolChecker`: worker processes fed
  through socket pairs straight from the trio thread (compact frames, one byte of code
  per item back, the answer awaited with ``trio.lowlevel.wait_readable``).

CPU is read per process (this one: every thread, ``time.process_time``; a worker:
``/proc/<pid>/schedstat``), so other jobs on the machine change wall times but hardly
these figures.

Run: ``python -m bench bench_sigcheck`` or
``python -m bench.bench_sigcheck [--n N] [--batch B] [--workers W] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import coincurve
import trio

from node.attestation_pool import ProcessPoolChecker
from vm import attestation as A
from vm.crypto import keccak256

CHAIN_ID = 1337


def make_attestations(n: int, keys: int = 500) -> list[bytes]:
    """``n`` valid attestations signed by ``keys`` device keys."""
    privs = [coincurve.PrivateKey(keccak256(b"bench-sig-%d" % k)) for k in range(keys)]
    devices = [keccak256(p.public_key.format(False)[1:])[12:] for p in privs]
    out = []
    for i in range(n):
        k = i % keys
        att = A.Attestation(2, devices[k], k + 1, i // keys + 1, 1_700_000_000 + i,
                            0x8928308280FFFFF, 1_000 + i, keccak256(b"c%d" % i),
                            (i).to_bytes(8, "big"))
        digest = A.compute_signing_digest(att, CHAIN_ID)
        out.append(att._replace(signature=privs[k].sign_recoverable(digest, hasher=None)).encode())
    return out


def cpu_ns(pid: int) -> int:
    """Time worker process ``pid`` (one thread) spent on a CPU (ns)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


def raw_recovery_cpu(raws: Sequence[bytes]) -> float:
    """CPU seconds of coincurve's recovery alone over the same signatures and digests."""
    atts = [A.decode_attestation(raw) for raw in raws]
    work = [(a.signature, A.compute_signing_digest(a, CHAIN_ID)) for a in atts]
    c0 = time.process_time()
    for signature, digest in work:
        coincurve.PublicKey.from_signature_and_message(signature, digest, hasher=None)
    return time.process_time() - c0


class ExecutorPath:
    """The executor path as of 2026-12-05 (node/attestation_pool.py then), kept here as
    the same-run baseline."""

    def __init__(self, workers: int, chunk: int = 64) -> None:
        self.chunk = chunk
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

    def check_unshared(self, raws: Sequence[bytes], chain_id: int) -> list[Any]:
        size = self.chunk
        futures = [self.executor.submit(A.check_stateless_codes, list(raws[i:i + size]), chain_id)
                   for i in range(0, len(raws), size)]
        out: list[Any] = []
        for n, future in enumerate(futures):
            for k, code in enumerate(future.result()):
                out.append(A.decode_attestation(raws[n * size + k]) if code == A.OK else code)
        return out

    def pids(self) -> list[int]:
        return list(self.executor._processes)  # type: ignore[attr-defined]

    async def check(self, raws: list[bytes], limiter: trio.CapacityLimiter) -> list[Any]:
        return await trio.to_thread.run_sync(self.check_unshared, raws, CHAIN_ID, limiter=limiter)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


class DirectPath:
    """node.attestation_pool.ProcessPoolChecker as the node drives it."""

    def __init__(self, workers: int) -> None:
        self.checker = ProcessPoolChecker(workers=workers)

    def pids(self) -> list[int]:
        return self.checker.pids()

    async def check(self, raws: list[bytes], limiter: trio.CapacityLimiter) -> list[Any]:
        async with limiter:
            return await self.checker.check_async(raws, CHAIN_ID)

    def close(self) -> None:
        self.checker.close()


def push(path: Any, raws: list[bytes], batch: int) -> tuple[float, float, float]:
    """Admit ``raws`` statelessly through ``path``; (node CPU s, worker CPU s, wall s)."""
    results: list[Any] = [None] * len(raws)

    async def run() -> None:
        limiter = trio.CapacityLimiter(2)  # node.attestations.ADMISSION_CHECKS_AT_ONCE

        async def one(start: int) -> None:
            part = raws[start:start + batch]
            results[start:start + len(part)] = await path.check(part, limiter)

        async with trio.open_nursery() as nursery:
            for start in range(0, len(raws), batch):
                nursery.start_soon(one, start)

    pids = path.pids()
    w0 = sum(cpu_ns(p) for p in pids)
    c0, t0 = time.process_time(), time.perf_counter()  # all threads of this process
    trio.run(run)
    wall, node = time.perf_counter() - t0, time.process_time() - c0
    workers = (sum(cpu_ns(p) for p in pids) - w0) / 1e9
    bad = [r for r in results if not isinstance(r, A.Attestation)]
    assert not bad, bad[:3]
    return node, workers, wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="attestations per try")
    parser.add_argument("--batch", type=int, default=1_000, help="attestations per submit")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (telemetry.verify_workers; default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="tries, interleaved; best kept")
    args = parser.parse_args(argv or [])

    t0 = time.perf_counter()
    raws = make_attestations(args.n)
    print(f"setup: {args.n} signed attestations ({time.perf_counter() - t0:.1f} s)")
    paths: dict[str, Any] = {"executor": ExecutorPath(args.workers),
                             "direct": DirectPath(args.workers)}
    best: dict[str, list[float]] = {}
    try:
        for path in paths.values():  # start the workers (spawned on first use)
            push(path, raws[:2_000], args.batch)
        raw = float("inf")
        for _ in range(args.repeat):
            raw = min(raw, raw_recovery_cpu(raws))
            for name, path in paths.items():
                got = push(path, raws, args.batch)
                old = best.get(name)
                best[name] = list(got) if old is None else [min(a, b) for a, b in zip(old, got, strict=True)]
    finally:
        for path in paths.values():
            path.close()
    us: Callable[[float], float] = lambda s: s / args.n * 1e6  # noqa: E731
    print(f"raw coincurve recovery                {us(raw):6.1f} us/attestation (CPU)")
    print(f"{'path':9s} {'node us':>8s} {'worker us':>10s} {'total us':>9s} "
          f"{'worker/raw':>11s} {'total/raw':>10s} {'wall /s':>9s}")
    for name, (node, workers, wall) in best.items():
        print(f"{name:9s} {us(node):8.1f} {us(workers):10.1f} {us(node + workers):9.1f} "
              f"{workers / raw:11.2f} {(node + workers) / raw:10.2f} {args.n / wall:9.0f}")
    load = os.getloadavg()
    print(f"(best of {args.repeat} interleaved tries; {args.workers} worker process(es), "
          f"batches of {args.batch}, 2 at once; {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
