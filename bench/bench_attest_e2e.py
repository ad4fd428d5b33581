"""Attestations end to end: devices submit to real node processes over JSON-RPC and the
bench counts the attestations that land in finalized blocks, per second of wall time,
against raw coincurve recovery of the same signatures in this process (same run).

Setup: a devnet of ``--validators`` validator processes on 127.0.0.1 (devnet.launcher,
default consensus config, RPC rate limit lifted: one client address sends everything),
``--cars`` cars minted, claimed and paired through ordinary transactions
(devnet.fleet.setup_fleet). Every car's device then signs ``--readings`` honest
readings one second apart, backdated inside ``attestation_stale_ms`` so that all of
them are valid now (the pool chains a device's pending readings); all are signed
before the clock starts, so the bench process spends the cores only on sending. The
cars are split into lanes (two, or one per validator), each sending its cars' readings
in calls of 1,000 (the RPC limit), oldest first and one call after the other, as a
gateway would (a device's readings must arrive in order: sent concurrently, a later
call could overtake an earlier one and make its readings replays); the lanes run at once
and spread over the validators, and the clock stops when the blocks' ``attestationCount`` adds up to all of
them that were accepted, or when every validator's pool stays empty short of that
count (accepted attestations that left a pool without a block: expired while waiting,
or refused by a later head; printed as dropped).

A burst (the default) shows ramp-up and tail as much as the rate: ``--rate R`` paces
the lanes instead (each sends its share of R a second for cars x readings / R seconds),
and the rate is also reported over the steady state: the blocks whose header times
lie between ``--warmup`` seconds after the start and the last call. ``--gateways G``
sends the lanes from G client addresses (``127.0.0.1`` up, all loopback): one gateway
is one source for the node's per-source quota, as one gateway machine would be.

Run: ``python -m bench.bench_attest_e2e [--validators 1] [--cars 1000] [--readings 20]
[--block-attestations 10000] [--attestation-cost C] [--rate R] [--lanes L]
[--gateways G] [--warmup S] [--verify-workers N] [--whole-proposals] [--profile DIR]
[--home DIR]``.

The calls' answer times (mean, median, 90th percentile, max) are printed with the
admitted rate: a lane sends its next call after the answer, so lanes x 1,000 / the mean
answer time bounds what is admitted. Where the time went is printed after the rate: per
validator process, the CPU seconds
of its main (trio) thread, of its other threads and of its worker processes over the
measured window, with the share of the window each kept busy; the blocks' mean size
and interval (header timestamps); the CPU that building and checking blocks took (the
node's ``motus_block_execution_cpu_seconds``). ``--home DIR`` keeps the devnet (keys,
chain, paired cars) for the next run, which then skips the two-minute fleet setup; its
devices' sequence numbers and odometers start from the clock, so earlier runs' readings
never make the new ones replays.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
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


def sign_readings(cars: list[fleet.Car], readings: int, now_ms: int) -> list[list[bytes]]:
    """``readings`` per car, one second apart, the newest a few seconds old: one list per
    car. Sequence numbers and odometers start
    from the clock (100 a second, 20 m a second: above what any earlier run reached),
    so a kept devnet takes the new readings too."""
    start_ms = now_ms - 5_000 - 1_000 * readings
    per_car = []
    for c in cars:
        c.device.seq = start_ms // 10
        drive = Drive(fleet.HOME[0] + 0.01 * (c.index % 7 - 3),
                      fleet.HOME[1] + 0.015 * (c.index // 7 % 7 - 3),
                      heading_deg=(37.0 * c.index) % 360, speed_mps=12.0,
                      odometer_m=start_ms // 50 + 1_000 * c.index, timestamp_ms=start_ms)
        out = []
        for _ in range(readings):
            lat, lon, odometer, ts = drive.step(1_000)
            out.append(c.device.attest(vehicle_id=c.vehicle_id, timestamp_ms=ts, lat=lat,
                                       lon=lon, odometer_m=odometer, speed_cmps=1_200).raw)
        per_car.append(out)
    return per_car


class Gateway:
    """One gateway's JSON-RPC connection (HTTP/1.1 keep-alive) from its own loopback
    address: ``127.0.0.(1 + index)``. The node counts a client by its address (its
    per-source pool quota and refusal credit: docs/rpc.md, "Fair admission"), so
    gateways on distinct addresses are distinct sources, as separate gateway machines
    would be; all of ``127.0.0.0/8`` is the loopback interface on Linux."""

    def __init__(self, url: str, index: int) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.source = f"127.0.0.{1 + index}"
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, params: list, timeout: float = 120) -> object:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": params}).encode()
        for attempt in (0, 1):  # a kept connection the node closed (idle): once more
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=timeout, source_address=(self.source, 0))
            try:
                self._conn.request("POST", "/", body, {"Content-Type": "application/json"})
                doc = json.loads(self._conn.getresponse().read())
                break
            except (http.client.HTTPException, OSError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        if "error" in doc:
            raise RuntimeError(doc["error"])
        return doc["result"]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def steady_window(stamps: list[int], sizes: list[int], start_ms: float,
                  end_ms: float) -> tuple[float, int, float] | None:
    """The inclusion rate between the first and the last block whose header time lies in
    ``[start_ms, end_ms]``: (attestations a second, blocks, seconds), counting the blocks
    after the first (each block's count arrived in the interval before it); None with
    fewer than two blocks there."""
    inside = [(t, n) for t, n in zip(stamps, sizes, strict=True) if start_ms <= t <= end_ms]
    if len(inside) < 2:
        return None
    span = (inside[-1][0] - inside[0][0]) / 1000
    return sum(n for _, n in inside[1:]) / span, len(inside) - 1, span


def lane_calls(per_car: list[list[bytes]], lanes: int) -> list[list[list[bytes]]]:
    """The calls each lane sends in turn: lane i has every lanes-th car; its readings go
    round by round (all its cars' first readings, then the second ones...), cut into
    calls of CALL_ITEMS."""
    out = []
    for lane in range(lanes):
        cars = per_car[lane::lanes]
        items = [car[r] for r in range(len(cars[0]) if cars else 0) for car in cars]
        out.append([items[i:i + CALL_ITEMS] for i in range(0, len(items), CALL_ITEMS)])
    return out


def recovery_rate(raws: list[bytes]) -> float:
    """Raw coincurve recoveries per CPU second on (a sample of) the same signatures."""
    atts = [attestation.decode_attestation(r) for r in raws[:2_000]]
    work = [(a.signature, attestation.compute_signing_digest(a, CHAIN_ID)) for a in atts]
    c0 = time.process_time()
    for signature, digest in work:
        PublicKey.from_signature_and_message(signature, digest, hasher=None)
    return len(work) / (time.process_time() - c0)


class Idle:
    """Whether the run is over short of the count: every validator's pool empty (the
    ``pending`` of ``motus_nodeStatus``) on ``polls`` checks in a row, ``every_s`` apart.
    Accepted attestations can leave a pool without a block (expired while waiting, or
    refused by a later head), so counting to the number accepted could wait for ever."""

    def __init__(self, urls: list[str], polls: int = 3, every_s: float = 1.0) -> None:
        self.urls, self.polls, self.every_s = urls, polls, every_s
        self._empty = 0
        self._next = 0.0

    def settled(self) -> bool:
        now = time.perf_counter()
        if now >= self._next and self._empty < self.polls:
            self._next = now + self.every_s
            pending = sum(int((rpc(u, "motus_nodeStatus").get("attestations") or {})
                              .get("pending", 0)) for u in self.urls)
            self._empty = self._empty + 1 if pending == 0 else 0
        return self._empty >= self.polls


TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_of(stat_path: Path) -> float:
    """utime + stime of a /proc stat file, in seconds (0 when it is gone)."""
    try:
        fields = stat_path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def process_cpu(pid: int) -> tuple[float, float, float]:
    """CPU seconds so far of process ``pid``: its main thread, its other threads, and its
    child processes (attestation workers) with their own threads; Linux /proc only."""
    task = Path(f"/proc/{pid}/task")
    main = _cpu_of(task / str(pid) / "stat")
    others = sum(_cpu_of(t / "stat") for t in task.glob("*") if t.name != str(pid))
    children = 0.0
    for t in task.glob("*"):
        try:
            kids = (t / "children").read_text().split()
        except OSError:
            continue
        for kid in kids:
            children += sum(_cpu_of(k / "stat") for k in Path(f"/proc/{kid}/task").glob("*"))
    return main, others, children


# the node's counters of signatures recovered -> the report's key (report_time)
SIGNATURE_COUNTERS = {
    "motus_attestation_signature_checks_total": "admission",
    "motus_block_check_unseen_signatures_total": "unseen",
    "motus_block_check_worker_signatures_total": "worker",
}


def metric_sums(url: str) -> dict[str, float]:
    """The node's block execution CPU sums and counts by kind (build/check), and its
    attestation refusals by code."""
    import urllib.request

    out: dict[str, float] = {}
    with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("motus_block_execution_cpu_seconds_"):
                name, value = line.rsplit(" ", 1)
                out[name.replace("motus_block_execution_cpu_seconds_", "")] = float(value)
            elif line.startswith("motus_consensus_phase_seconds_"):
                name, value = line.rsplit(" ", 1)
                if "_bucket" not in name:
                    out["phase " + name.replace("motus_consensus_phase_seconds_", "")] = float(value)
            elif line.startswith("motus_proposal_late_cuts_total "):
                out["compact late_cuts"] = float(line.rsplit(" ", 1)[1])
            elif line.startswith(("motus_compact_proposals_total{",
                                   "motus_compact_missing_attestations_total ")):
                name, value = line.rsplit(" ", 1)
                out["compact " + (name.split('"')[1] if '"' in name else "missing")] = float(value)
            elif line.startswith("motus_p2p_topic_messages_total{"):
                name, value = line.rsplit(" ", 1)
                labels = dict(part.split("=", 1) for part in name[name.index("{") + 1:-1].split(","))
                out[f"gossip {labels['topic'].strip(chr(34))} {labels['result'].strip(chr(34))}"] = (
                    float(value))
            elif line.startswith(tuple(SIGNATURE_COUNTERS)):
                name, value = line.rsplit(" ", 1)
                out["signatures " + SIGNATURE_COUNTERS[name]] = float(value)
            elif line.startswith("motus_attestation_rejects_total{"):
                name, value = line.rsplit(" ", 1)
                out["reject " + name.split('"')[1]] = float(value)
            elif line.startswith("motus_attestations_dropped_total{"):
                name, value = line.rsplit(" ", 1)
                out["dropped " + name.split('"')[1]] = float(value)
    return out


def configure(members: list, verify_workers: int | None, budget_pct: int | None,
              compact: bool = True) -> None:
    """Node config for the run: RPC rate limit lifted, and the options asked for."""
    from node.config import Config

    for m in members:
        lift_rpc_rate_limit(m.home.config)
        cfg = Config.load(m.home.config)
        # a kept home keeps the last run's config: unset options go back to the defaults
        defaults = Config()
        cfg.telemetry.verify_workers = (defaults.telemetry.verify_workers
                                        if verify_workers is None else verify_workers)
        cfg.consensus.proposal_budget_pct = (defaults.consensus.proposal_budget_pct
                                             if budget_pct is None else budget_pct)
        cfg.p2p.compact_proposals = compact
        m.home.config.write_text(cfg.to_toml())


def start_profiled(members: list, profile_dir: Path) -> list[subprocess.Popen]:
    """The validators under ``bench.thread_profile``: each main thread's CPU, recorded
    over the measured window only (``profiling``), to ``validator-<i>.prof``."""
    procs = []
    for m in members:
        log = open(m.home.root / "node.log", "ab")  # noqa: SIM115 (the child's, for its life)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "bench.thread_profile",
             str(profile_dir / f"validator-{m.index}.prof"), "cli.main", "node", "start",
             "--home", str(m.home.root), "--rpc-port", str(m.rpc_port), "--p2p-port",
             str(m.p2p_port), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def profiling(procs: list[subprocess.Popen], profile_dir: Path | None, signum: int) -> None:
    """Start (SIGUSR1) or stop and write (SIGUSR2) the validators' profiles."""
    if profile_dir is None:
        return
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signum)


def chain_params(args: argparse.Namespace) -> dict[str, int]:
    """The genesis parameters the run overrides."""
    params = {"max_block_attestations": args.block_attestations}
    if args.attestation_cost is not None:
        params["attestation_cost"] = args.attestation_cost
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=1)
    parser.add_argument("--cars", type=int, default=1_000)
    parser.add_argument("--readings", type=int, default=20, help="per car (<= 250)")
    parser.add_argument("--block-attestations", type=int, default=10_000,
                        help="chain parameter max_block_attestations")
    parser.add_argument("--attestation-cost", type=int, default=None,
                        help="chain parameter attestation_cost (default: the chain's, 150): "
                             "what the cost cap allows a block, max_block_cost / this")
    parser.add_argument("--verify-workers", type=int, default=None,
                        help="telemetry.verify_workers of the nodes (default: the node's)")
    parser.add_argument("--budget-pct", type=int, default=None,
                        help="consensus.proposal_budget_pct of the nodes (default: the node's)")
    parser.add_argument("--whole-proposals", action="store_true",
                        help="p2p.compact_proposals = false: proposals carry whole blocks")
    parser.add_argument("--rate", type=float, default=0,
                        help="offered attestations a second, all lanes together, paced for the "
                             "whole run (cars x readings / rate seconds); 0: as fast as answered")
    parser.add_argument("--lanes", type=int, default=None,
                        help="sending lanes, each its cars' readings in order (default: two, or "
                             "one per validator)")
    parser.add_argument("--gateways", type=int, default=1,
                        help="client addresses the lanes send from, 127.0.0.1 up: each a source "
                             "of its own for the node's quotas (default 1: one gateway)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds left out at the start of the steady-state window "
                             "(default: a fifth of the sending time, at least 3)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep homes and logs")
    parser.add_argument("--home", type=Path, default=None,
                        help="devnet directory kept between runs (made on the first)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="directory for a cProfile of each validator's main thread (its "
                             "CPU time, over the measured window: bench.thread_profile)")
    args = parser.parse_args(argv or [])

    root = args.home or Path(tempfile.mkdtemp(prefix="motus-bench-attest-"))
    procs = []
    try:
        ports = [(free_port(), free_port()) for _ in range(args.validators)]
        members = prepare(root / "devnet", args.validators, 0, 0, CHAIN_ID, ports=ports,
                          params=chain_params(args))
        configure(members, args.verify_workers, args.budget_pct, not args.whole_proposals)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        procs = (start_devnet(members, None, "warning") if args.profile is None
                 else start_profiled(members, args.profile))
        urls = [m.url for m in members]
        wait_rpc(urls)
        wait_height(urls[0], int(rpc(urls[0], "eth_blockNumber"), 16) + 2, timeout=180)
        t0 = time.perf_counter()
        resolution = fleet.chain_param(urls[0], "h3_resolution")
        cars = fleet.setup_fleet(urls[0], fleet.plan_fleet(SEED, args.cars, CHAIN_ID,
                                                           resolution))
        print(f"setup: {args.validators} validator(s), {len(cars)} cars paired through "
              f"transactions ({time.perf_counter() - t0:.0f} s)", flush=True)
        per_car = sign_readings(cars, args.readings, int(time.time() * 1000))
        total = sum(map(len, per_car))
        baseline = recovery_rate(per_car[0] + [car[0] for car in per_car])
        lanes = lane_calls(per_car, args.lanes or max(2, args.validators))
        gateways = [Gateway(urls[lane % len(urls)], lane % max(1, args.gateways))
                    for lane in range(len(lanes))]
        lane_rate = args.rate / len(lanes) if args.rate > 0 else 0.0
        refused: dict[str, int] = {}
        latencies: list[float] = []  # each call's answer time (s)
        lock = threading.Lock()

        def submit(lane: int) -> None:
            sent = 0
            for call in lanes[lane]:
                if lane_rate:  # paced: this call is due when the lane's share says so
                    wait = t_start + sent / lane_rate - time.perf_counter()
                    if wait > 0:
                        time.sleep(wait)
                asked = time.perf_counter()
                results = gateways[lane].call("motus_submitAttestations",
                                              [["0x" + r.hex() for r in call]])
                answered = time.perf_counter()
                sent += len(call)
                assert isinstance(results, list)
                with lock:
                    latencies.append(answered - asked)
                    for r in results:
                        if not r["accepted"]:
                            refused[r["code"]] = refused.get(r["code"], 0) + 1

        start_height = int(rpc(urls[0], "eth_blockNumber"), 16)
        cpu_before = [process_cpu(p.pid) for p in procs]
        metrics_before = [metric_sums(u) for u in urls]
        client_before = time.process_time()
        profiling(procs, args.profile, signal.SIGUSR1)
        t_start = time.perf_counter()
        wall_start_ms = time.time() * 1000
        sizes: list[int] = []
        stamps: list[int] = []
        every_size: list[int] = []  # every block of the run, empty ones too
        every_stamp: list[int] = []
        slowest_poll = 0.0  # the longest eth_blockNumber answer: how long the node's loop stalled
        with ThreadPoolExecutor(len(lanes)) as pool:
            sending = [pool.submit(submit, lane) for lane in range(len(lanes))]
            included, height = 0, start_height
            deadline = t_start + args.timeout
            t_sent = None
            idle = Idle(urls)
            while included < total - sum(refused.values()) and time.perf_counter() < deadline:
                if t_sent is None and all(f.done() for f in sending):
                    t_sent = time.perf_counter()
                    for f in sending:
                        f.result()
                asked = time.perf_counter()
                head = int(rpc(urls[0], "eth_blockNumber", timeout=60), 16)
                slowest_poll = max(slowest_poll, time.perf_counter() - asked)
                while height < head:
                    height += 1
                    block = rpc(urls[0], "eth_getBlockByNumber", [hex(height), False])
                    count = int(block["attestationCount"], 16)
                    included += count
                    every_size.append(count)
                    every_stamp.append(int(block["timestampMs"], 16))
                    if count:
                        sizes.append(count)
                        stamps.append(int(block["timestampMs"], 16))
                if t_sent is not None and idle.settled():
                    break  # the rest left the pools without a block: dropped
                time.sleep(0.05)
        elapsed = time.perf_counter() - t_start
        profiling(procs, args.profile, signal.SIGUSR2)
        client_cpu = time.process_time() - client_before
        cpu_after = [process_cpu(p.pid) for p in procs]
        metrics_after = [metric_sums(u) for u in urls]
        t_sent = t_sent or elapsed + t_start
        rate = included / elapsed
        dropped = total - sum(refused.values()) - included
        for g in gateways:
            g.close()
        sending_s = t_sent - t_start
        print(f"raw coincurve recovery (this process, 1 core)   {baseline:8.0f} /s")
        print(f"admitted over RPC (all calls answered)           {total / sending_s:8.0f} /s"
              + (f"  (offered {args.rate:.0f} /s by {len(lanes)} lanes from "
                 f"{min(len(lanes), max(1, args.gateways))} gateway address(es))"
                 if args.rate > 0 else ""))
        if latencies:
            ordered = sorted(latencies)
            print(f"  answer time of a call of {CALL_ITEMS:,}: mean "
                  f"{1000 * sum(ordered) / len(ordered):.0f} ms, median "
                  f"{1000 * ordered[len(ordered) // 2]:.0f}, 90th percentile "
                  f"{1000 * ordered[len(ordered) * 9 // 10]:.0f}, max {1000 * ordered[-1]:.0f} "
                  f"(each lane sends its next call after the answer: lanes x {CALL_ITEMS:,} / "
                  "mean answer time bounds the admitted rate)")
        warmup = args.warmup if args.warmup is not None else max(3.0, sending_s / 5)
        steady = steady_window(every_stamp, every_size, wall_start_ms + 1000 * warmup,
                               wall_start_ms + 1000 * sending_s)
        if steady is not None:
            srate, nblocks, span = steady
            print(f"steady state, in blocks while sending            {srate:8.0f} /s  "
                  f"({nblocks} blocks over {span:.1f} s, from {warmup:.0f} s after the "
                  f"start to the last call; {srate / baseline:.2f} x recovery)")
        else:
            print("steady state: fewer than two blocks between the warm-up and the last call "
                  "(a longer run: more --readings or a lower --rate)")
        print(f"end to end, in finalized blocks                  {rate:8.0f} /s  "
              f"= {rate / baseline:.2f} x recovery  ({included} of {total} in {elapsed:.1f} s, "
              f"{len(sizes)} blocks{', refused ' + str(refused) if refused else ''}"
              f"{f', accepted but dropped {dropped}' if dropped > 0 else ''})")
        if dropped > 0:
            print(f"  {dropped} accepted attestations never reached a block "
                  f"({'the pools emptied without them' if idle.settled() else 'timeout'}; "
                  "see the validators' motus_attestations_dropped_total, e.g. stale, or "
                  "replay: a later reading of the device was included from another pool)")
        goal = 10_000 if args.validators == 1 else 2_500
        by_steady = steady is not None and args.rate > 0
        judged = steady[0] if steady is not None and by_steady else rate
        print(f"goal >= {goal:,} /s with {args.validators} validator(s) on this machine: "
              f"{'met' if judged >= goal else 'not met'}"
              f"{' (steady state)' if by_steady else ''}")
        report_time(elapsed, client_cpu, cpu_before, cpu_after, metrics_before, metrics_after,
                    sizes, stamps)
        print(f"  slowest eth_blockNumber answer during the run: {slowest_poll:.2f} s")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"({os.cpu_count()} CPUs, load average {load:.1f}: the validators, this client "
              "and any other job share the cores, so the rate is only meaningful on an idle "
              "machine; the ratio shows how far recovery alone would go)")
    finally:
        stop(procs)
        if args.keep or args.home is not None:
            print(f"homes and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def report_time(elapsed: float, client_cpu: float, cpu_before: list, cpu_after: list,
                metrics_before: list, metrics_after: list, sizes: list[int],
                stamps: list[int]) -> None:
    """Where the window's time went (see the module doc)."""
    print(f"where the time went ({elapsed:.1f} s window; busy = CPU / window):")
    print(f"  bench client (signing done before): {client_cpu:.1f} s CPU")
    for i, (before, after) in enumerate(zip(cpu_before, cpu_after, strict=True)):
        main, others, children = (a - b for a, b in zip(after, before, strict=True))
        m0, m1 = metrics_before[i], metrics_after[i]
        kinds = []
        for kind in ("build", "check"):
            n = m1.get(f'count{{kind="{kind}"}}', 0) - m0.get(f'count{{kind="{kind}"}}', 0)
            cpu = m1.get(f'sum{{kind="{kind}"}}', 0) - m0.get(f'sum{{kind="{kind}"}}', 0)
            if n:
                kinds.append(f"{kind} {n:.0f} blocks {cpu:.1f} s ({1000 * cpu / n:.0f} ms each)")
        refusals = {k[7:]: m1[k] - m0.get(k, 0) for k in m1
                     if k.startswith("reject ") and m1[k] > m0.get(k, 0)}
        dropped = {k[8:]: m1[k] - m0.get(k, 0) for k in m1
                   if k.startswith("dropped ") and m1[k] > m0.get(k, 0)}
        phases = []
        for phase in ("proposal", "proposal_handled", "prevote", "precommit", "decide",
                      "committed", "interval", "durable"):
            key = f'phase {{}}{{{{phase="{phase}"}}}}'
            n = m1.get(key.format("count"), 0) - m0.get(key.format("count"), 0)
            total = m1.get(key.format("sum"), 0) - m0.get(key.format("sum"), 0)
            if n:
                phases.append(f"{phase} {1000 * total / n:.0f}")
        print(f"  validator {i}: main thread {main:.1f} s ({main / elapsed:.0%} busy), "
              f"other threads {others:.1f} s, workers {children:.1f} s; "
              + ("; ".join(kinds) or "no blocks executed")
              + (f"; refused {refusals}" if refusals else "")
              + (f" (of which admitted, then dropped from its pool: {dropped})"
                 if dropped else ""))
        compact = {k[8:]: m1[k] - m0.get(k, 0) for k in m1
                   if k.startswith("compact ") and m1[k] > m0.get(k, 0)}
        if compact:
            phases.append(f"compact proposals {compact}")
        heights = m1.get("phase count{phase=\"committed\"}", 0) - m0.get(
            "phase count{phase=\"committed\"}", 0)
        gossip = []
        for topic in ("consensus", "attestation"):
            got = {r: m1.get(f"gossip {topic} {r}", 0) - m0.get(f"gossip {topic} {r}", 0)
                   for r in ("published", "received", "accepted", "ignored")}
            if any(got.values()):
                per = f", {got['received'] / heights:.1f} copies a height" if heights else ""
                gossip.append(f"{topic} published {got['published']:.0f}, received "
                              f"{got['received']:.0f} copies of {got['accepted'] + got['ignored']:.0f}"
                              f" new{per}")
        if gossip:
            print(f"    gossip: {'; '.join(gossip)}")
        sigs = {k: m1.get(f"signatures {k}", 0) - m0.get(f"signatures {k}", 0)
                for k in SIGNATURE_COUNTERS.values()}
        print(f"    signatures recovered: at admission {sigs['admission']:.0f}, checking "
              f"peers' blocks {sigs['unseen']:.0f} ({sigs['worker']:.0f} by the worker)")
        if phases:
            print(f"    height phases, mean ms after the height's start: {', '.join(phases)}")
    if len(stamps) > 1:
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        print(f"  blocks with attestations: {len(sizes)}, mean {sum(sizes) / len(sizes):.0f} "
              f"(max {max(sizes)}), mean interval {sum(gaps) / len(gaps):.0f} ms "
              f"(max {max(gaps)} ms)")


if __name__ == "__main__":
    main(sys.argv[1:])
