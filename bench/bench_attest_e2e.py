"""Attestations end to end: devices submit to real node processes over JSON-RPC and the
bench counts the attestations that land in finalized blocks, per second of wall time,
against raw coincurve recovery of the same signatures in this process (same run).

Setup: a devnet of ``--validators`` validator processes on 127.0.0.1 (devnet.launcher,
default consensus config, RPC rate limit lifted: one client address sends everything),
``--cars`` cars minted, claimed and paired through ordinary transactions
(devnet.fleet.setup_fleet). Every car's device then signs ``--readings`` honest
readings one second apart, backdated inside ``attestation_stale_ms`` so that all of
them are valid now (the pool chains a device's pending readings); all are signed
before the clock starts, so the bench process spends the cores only on sending. They
are sent in calls of 1,000 (the RPC limit) spread over the validators, from two
threads, and the clock stops when the blocks' ``attestationCount`` adds up to all of
them.

Run: ``python -m bench.bench_attest_e2e [--validators 1] [--cars 1000] [--readings 20]
[--block-attestations 10000] [--profile DIR]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from coincurve import PublicKey

import vm.attestation as attestation
from bench.bench_consensus import (
    free_port,
    lift_rpc_rate_limit,
    rpc,
    start_devnet,
    wait_height,
    wait_rpc,
)
from devnet import fleet
from devnet.device import Drive
from devnet.launcher import prepare, stop

CHAIN_ID = 7077
SEED = "bench attest e2e"
CALL_ITEMS = 1_000  # motus_submitAttestations takes at most this many


def sign_readings(cars: list[fleet.Car], readings: int, now_ms: int) -> list[bytes]:
    """``readings`` per car, one second apart, the newest a few seconds old; interleaved
    (round by round) as a fleet would send them."""
    start_ms = now_ms - 5_000 - 1_000 * readings
    per_car = []
    for c in cars:
        drive = Drive(fleet.HOME[0] + 0.01 * (c.index % 7 - 3),
                      fleet.HOME[1] + 0.015 * (c.index // 7 % 7 - 3),
                      heading_deg=(37.0 * c.index) % 360, speed_mps=12.0,
                      odometer_m=10_000 + 1_000 * c.index, timestamp_ms=start_ms)
        out = []
        for _ in range(readings):
            lat, lon, odometer, ts = drive.step(1_000)
            out.append(c.device.attest(vehicle_id=c.vehicle_id, timestamp_ms=ts, lat=lat,
                                       lon=lon, odometer_m=odometer, speed_cmps=1_200).raw)
        per_car.append(out)
    return [per_car[i][r] for r in range(readings) for i in range(len(cars))]


def recovery_rate(raws: list[bytes]) -> float:
    """Raw coincurve recoveries per CPU second on (a sample of) the same signatures."""
    atts = [attestation.decode_attestation(r) for r in raws[:2_000]]
    work = [(a.signature, attestation.compute_signing_digest(a, CHAIN_ID)) for a in atts]
    c0 = time.process_time()
    for signature, digest in work:
        PublicKey.from_signature_and_message(signature, digest, hasher=None)
    return len(work) / (time.process_time() - c0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=1)
    parser.add_argument("--cars", type=int, default=1_000)
    parser.add_argument("--readings", type=int, default=20, help="per car (<= 250)")
    parser.add_argument("--block-attestations", type=int, default=10_000,
                        help="chain parameter max_block_attestations")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep homes and logs")
    parser.add_argument("--profile", type=Path, default=None,
                        help="directory for a cProfile of each validator process")
    args = parser.parse_args(argv or [])

    root = Path(tempfile.mkdtemp(prefix="motus-bench-attest-"))
    procs = []
    try:
        ports = [(free_port(), free_port()) for _ in range(args.validators)]
        members = prepare(root / "devnet", args.validators, 0, 0, CHAIN_ID, ports=ports,
                          params={"max_block_attestations": args.block_attestations})
        for m in members:
            lift_rpc_rate_limit(m.home.config)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        procs = start_devnet(members, args.profile, "warning")
        urls = [m.url for m in members]
        wait_rpc(urls)
        wait_height(urls[0], 2)
        t0 = time.perf_counter()
        resolution = fleet.chain_param(urls[0], "h3_resolution")
        cars = fleet.setup_fleet(urls[0], fleet.plan_fleet(SEED, args.cars, CHAIN_ID,
                                                           resolution))
        print(f"setup: {args.validators} validator(s), {len(cars)} cars paired through "
              f"transactions ({time.perf_counter() - t0:.0f} s)", flush=True)
        raws = sign_readings(cars, args.readings, int(time.time() * 1000))
        total = len(raws)
        baseline = recovery_rate(raws)
        chunks = [raws[i:i + CALL_ITEMS] for i in range(0, total, CALL_ITEMS)]
        refused: dict[str, int] = {}
        lock = threading.Lock()

        def submit(k: int) -> None:
            results = rpc(urls[k % len(urls)], "motus_submitAttestations",
                          [["0x" + r.hex() for r in chunks[k]]], timeout=120)
            with lock:
                for r in results:
                    if not r["accepted"]:
                        refused[r["code"]] = refused.get(r["code"], 0) + 1

        start_height = int(rpc(urls[0], "eth_blockNumber"), 16)
        t_start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            sending = [pool.submit(submit, k) for k in range(len(chunks))]
            included, height, blocks = 0, start_height, 0
            deadline = t_start + args.timeout
            t_sent = None
            while included < total - sum(refused.values()) and time.perf_counter() < deadline:
                if t_sent is None and all(f.done() for f in sending):
                    t_sent = time.perf_counter()
                    for f in sending:
                        f.result()
                head = int(rpc(urls[0], "eth_blockNumber"), 16)
                while height < head:
                    height += 1
                    block = rpc(urls[0], "eth_getBlockByNumber", [hex(height), False])
                    included += int(block["attestationCount"], 16)
                    blocks += 1 if int(block["attestationCount"], 16) else 0
                time.sleep(0.05)
        elapsed = time.perf_counter() - t_start
        t_sent = t_sent or elapsed + t_start
        rate = included / elapsed
        print(f"raw coincurve recovery (this process, 1 core)   {baseline:8.0f} /s")
        print(f"admitted over RPC (all calls answered)           {total / (t_sent - t_start):8.0f} /s")
        print(f"end to end, in finalized blocks                  {rate:8.0f} /s  "
              f"= {rate / baseline:.2f} x recovery  ({included} of {total} in {elapsed:.1f} s, "
              f"{blocks} blocks{', refused ' + str(refused) if refused else ''})")
        goal = 10_000 if args.validators == 1 else 2_500
        print(f"goal >= {goal:,} /s with {args.validators} validator(s) on this machine: "
              f"{'met' if rate >= goal else 'not met'}")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"({os.cpu_count()} CPUs, load average {load:.1f}: the validators, this client "
              "and any other job share the cores, so the rate is only meaningful on an idle "
              "machine; the ratio shows how far recovery alone would go)")
    finally:
        stop(procs)
        if args.keep:
            print(f"homes and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
