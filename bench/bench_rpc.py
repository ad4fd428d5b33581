"""Reads: cheap calls over HTTP against their handlers, and ``eth_getLogs`` over 10,000
blocks with the log index against the full scan, each pair measured in the same run.

    python -m bench bench_rpc                       # both parts
    python -m bench.bench_rpc --part http [--clients 64 --duration 5]
    python -m bench.bench_rpc --part logs [--blocks 10000]
    python -m bench.bench_rpc --part consensus      # rounds per height with / without RPC load

http: a real node process (one validator, making blocks) serves the cheap reads of
``CHEAP`` to ``--clients`` keep-alive connections, driven by two load processes that
send pre-encoded requests with raw sockets (so the clients cost little of the
machine), as single requests and as JSON-RPC batches of ``--batch`` calls, on a node
with the answer cache off (account reads spread over ``ACCOUNTS`` distinct accounts)
and on one with it on (see ``http_part``). The baseline is the same method's handler
called in a loop in this process on a node of the same genesis with the same
parameters (``handler``, CPU time), against the node's CPU time per call. Goal: HTTP
rate >= 0.5 of the handler rate.

logs: a 10,000-block chain with random logs (tests/logchain.py: real LevelDB, blocks
committed through ``ChainStore.commit_block``, so with the index the node writes),
queried over the whole range with a selective filter (one address that logs in 1 % of
the blocks), a topic at position 1, and an unfiltered query on a range of 1,000 blocks,
with the index and with the full scan it replaces. Goal: >= 10x on 10,000 blocks.

consensus: a four-validator devnet (the default consensus timeouts) runs 30 s idle and
30 s while RPC clients read from every node (cheap reads, eth_getLogs, eth_call); rounds
per height and the block interval of both phases are printed side by side.
``BENCH_RPC_MIX=cheap`` (or ``heavy``) sends only one kind; ``BENCH_RPC_KEEP=1`` keeps
the homes and logs, ``BENCH_RPC_LOG_LEVEL=info`` makes the nodes log each block.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHEAP = [
    ("eth_chainId", []),
    ("eth_blockNumber", []),
    ("eth_getBalance", ["0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "latest"]),
    ("eth_getTransactionCount", ["0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266", "latest"]),
    ("eth_getBlockByNumber", ["latest", False]),
]


def load_average() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


# --- the HTTP load generator -------------------------------------------------------------


def request_bytes(port: int, method: str, params: list) -> bytes:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    return (b"POST / HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (port, len(body), body))


def hammer(port: int, request: bytes | list[bytes], connections: int, duration: float, out,
           offset: int = 0) -> None:
    """Keep ``connections`` keep-alive connections busy with ``request`` (one in flight
    each; with a list, connection i sends ``request[(offset + i) % len]``, or, when the
    list is longer than the connections, cycles through every ``connections``-th of
    it from there) for ``duration`` seconds; put (answers, errors, seconds) on ``out``."""
    requests = request if isinstance(request, list) else [request]
    sel = selectors.DefaultSelector()
    bufs: dict[socket.socket, bytearray] = {}
    cycles: dict[socket.socket, list[bytes]] = {}
    turn: dict[socket.socket, int] = {}
    for i in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        first = (offset + i) % len(requests)
        cycles[s] = requests[first::connections] if len(requests) > connections else [requests[first]]
        turn[s] = 0
        s.send(cycles[s][0])
        bufs[s] = bytearray()
        sel.register(s, selectors.EVENT_READ)
    done = errors = 0
    began = time.monotonic()
    deadline = began + duration
    while time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            buf = bufs[s]
            data = s.recv(65536)
            if not data:
                raise RuntimeError("server closed a keep-alive connection")
            buf += data
            while True:  # one or more whole answers in the buffer
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(buf[:end]).lower()
                i = head.find(b"content-length:")
                length = int(head[i + 15:head.find(b"\r\n", i) if head.find(b"\r\n", i) > 0 else None])
                if len(buf) < end + 4 + length:
                    break
                if not head.startswith(b"http/1.1 200") or b'"error"' in buf[end + 4:end + 4 + length]:
                    errors += 1
                del buf[:end + 4 + length]
                done += 1
                turn[s] += 1
                mine = cycles[s]
                s.sendall(mine[turn[s] % len(mine)])
    elapsed = time.monotonic() - began
    for s in bufs:
        s.close()
    out.put((done, errors, elapsed))


def http_rate(port: int, requests: list[bytes], clients: int, duration: float,
              procs: int = 2) -> tuple[float, int]:
    """(answers per second, answers) the node at ``port`` gives ``clients`` connections,
    connection i of each load process sending ``requests[i % len]``."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    per = max(1, clients // procs)
    workers = [ctx.Process(target=hammer, args=(port, requests, per, duration, out, k * per))
               for k in range(procs)]
    for w in workers:
        w.start()
    results = [out.get(timeout=duration + 60) for _ in workers]
    for w in workers:
        w.join(10)
    errors = sum(e for _, e, _ in results)
    if errors:
        raise RuntimeError(f"{errors} error answers")
    # each process counts over its own window: the processes' start-up is not counted
    return sum(done / elapsed for done, _, elapsed in results), sum(d for d, _, _ in results)


# --- handler and dispatch rates in this process ------------------------------------------


def in_process_rates(home: Path, method: str, calls: list[list], seconds: float = 1.0) -> tuple[float, float]:
    """(handler calls, Dispatcher.handle calls) per CPU second of this process, cycling
    through the parameter lists ``calls``; the dispatcher without the answer cache."""
    import trio

    from node.node import Node
    from node.rpc.dispatch import Dispatcher
    from node.rpc.registry import RPCContext, build_method_table

    node = Node(home)
    try:
        table = build_method_table()
        m = table.get(method)
        assert m is not None
        ctx = RPCContext(node)
        bound = [m.bind(params) for params in calls]

        def loop(fn) -> float:
            n, t0 = 0, time.process_time()
            while True:
                for i in range(n, n + 200):  # every call of ``calls`` in turn
                    fn(i)
                n += 200
                if (elapsed := time.process_time() - t0) >= seconds:
                    return n / elapsed

        handler_rate = loop(lambda i: m.handler(ctx, *bound[i % len(bound)]))
        dispatcher = Dispatcher(node, table, max_batch=100, rate_limiter=None)
        bodies = [json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
                  for params in calls]

        async def dispatch_rate() -> float:
            n, t0 = 0, time.process_time()
            while True:
                for i in range(n, n + 200):
                    await dispatcher.handle(bodies[i % len(bodies)], transport="http",
                                            client="127.0.0.1")
                n += 200
                if (elapsed := time.process_time() - t0) >= seconds:
                    return n / elapsed

        return handler_rate, trio.run(dispatch_rate)
    finally:  # what Node.run's own shutdown releases: each store holds a LevelDB lock
        node.webhooks.close()
        node.attestations.close()
        node.database.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_node(root: Path, name: str = "node", **config: object):
    from tests.procs import NodeProcess, motus, set_config

    home = root / name
    motus("init", "--home", str(home))
    set_config(home, rate_limit_per_second=0, max_connections_per_client=1024, **config)
    return NodeProcess(home).start(wait=60)


def batch_bytes(port: int, method: str, calls: list[list]) -> bytes:
    body = json.dumps([{"jsonrpc": "2.0", "id": i, "method": method, "params": params}
                       for i, params in enumerate(calls)]).encode()
    return (b"POST / HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (port, len(body), body))


ACCOUNTS = 8192  # distinct accounts read, 4x py-evm's account cache (an LRU of 2,048)


def distinct_calls(method: str, params: list, count: int = ACCOUNTS) -> list[list]:
    """Calls of ``method`` on ``count`` distinct accounts where it takes one (no two
    share an answer, and the head view's account cache misses nearly always), else
    ``params`` alone."""
    if method in ("eth_getBalance", "eth_getTransactionCount"):
        return [["0x%040x" % (0x1000 + i), "latest"] for i in range(count)]
    return [params]


def http_part(clients: int, duration: float, batch: int = 20) -> None:
    """The node's CPU per call, against the handler's CPU per call: both are CPU time,
    so the other processes sharing the machine (the load generator, other jobs) change
    neither much. The wall-clock rate is printed too, for what this machine gave.

    Each method is measured as single requests and as JSON-RPC batches of ``batch``
    calls, on a node with the answer cache off and on one with it on (the default).
    Cache off: every call runs its handler, and the reads of an account go to
    ``ACCOUNTS`` distinct accounts (``distinct_calls``), so that neither the answer
    cache nor the head view's account cache answers them: the honest comparison with
    the handler, which cycles through the same calls. Cache on: every client asks the
    same call, and identical calls on one head are answered from the cache, which is
    what many clients polling the same reads get.

    The handler runs on the served node's own database once it has stopped, so on the
    same chain and head block (a genesis block has no transactions and no commit:
    ``eth_getBlockByNumber`` of it costs half of a real block's)."""
    root = Path(tempfile.mkdtemp(prefix="motus-bench-rpc-"))
    try:
        print(f"cheap reads, {clients} keep-alive clients, {duration:g} s each, batches of {batch}, "
              f"{load_average()}; * = {ACCOUNTS} distinct accounts, handler on the same", flush=True)
        for cache_bytes in (0, 8 * 1024 * 1024):
            node = start_node(root, f"node-cache-{cache_bytes}", answer_cache_bytes=cache_bytes)
            served_rates: list[tuple[str, str, list[list], float, float]] = []
            try:
                node.wait_height(2, timeout=60)
                assert node.proc is not None
                # what the node spends without RPC load (consensus, a block a second) is
                # subtracted from its CPU time under load
                cpu0, t0 = cpu_seconds(node.proc.pid), time.monotonic()
                time.sleep(duration)
                idle = (cpu_seconds(node.proc.pid) - cpu0) / (time.monotonic() - t0)
                print(f"  answer cache {'on' if cache_bytes else 'off'} "
                      f"(node CPU without RPC load: {idle * 100:.1f} % of a core), {load_average()}",
                      flush=True)
                for method, params in CHEAP:
                    # without the cache every call reads distinct accounts (where the method
                    # takes one); with it, every client asks the same call (what the cache
                    # is for: many clients polling the same reads)
                    calls = distinct_calls(method, params) if not cache_bytes else [params]
                    for mode in ("single", "batch"):
                        if mode == "single":
                            requests = [request_bytes(node.rpc_port, method, c) for c in calls]
                            per = 1
                        else:
                            groups = ([calls[i:i + batch] for i in range(0, len(calls), batch)]
                                      if len(calls) > 1 else [[params] * batch])
                            requests = [batch_bytes(node.rpc_port, method, g) for g in groups]
                            per = batch
                        cpu0, t0 = cpu_seconds(node.proc.pid), time.monotonic()
                        wall_rate, served = http_rate(node.rpc_port, requests, clients, duration)
                        cpu = cpu_seconds(node.proc.pid) - cpu0 - idle * (time.monotonic() - t0)
                        served_rates.append((method, mode, calls, wall_rate * per, served * per / cpu))
            finally:
                node.stop()
            handlers: dict[tuple[str, int], float] = {}
            for method, mode, calls, wall_rate, per_cpu in served_rates:
                if (method, len(calls)) not in handlers:
                    handlers[(method, len(calls))] = in_process_rates(node.home, method, calls)[0]
                handler = handlers[(method, len(calls))]
                label = ("single" if mode == "single" else f"batch {batch}") + (" *" if len(calls) > 1 else "")
                print(f"    {method:<24} {label:<11} http {wall_rate:7.0f} calls/s wall, "
                      f"{per_cpu:7.0f} per node CPU-s ({1e6 / per_cpu:5.0f} us each) | "
                      f"handler {handler:9.0f}/CPU-s ({1e6 / handler:6.1f} us) | "
                      f"http/handler {per_cpu / handler:.3f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- consensus under RPC load ------------------------------------------------------------


def chain_stats(url: str, low: int, high: int) -> tuple[float, float, int]:
    """(mean rounds per height, mean block interval in s, blocks) for heights low..high:
    a height decided in round r took r + 1 rounds."""
    from tests.procs import rpc

    if high < low:
        return float("nan"), float("inf"), 0
    rounds = [rpc(url, "motus_getCommit", [h])["round"] + 1 for h in range(low, high + 1)]
    t0 = rpc(url, "motus_getHeader", [low - 1])["timestampMs"]
    t1 = rpc(url, "motus_getHeader", [high])["timestampMs"]
    return sum(rounds) / len(rounds), (t1 - t0) / 1000 / (high - low + 1), high - low + 1


def consensus_part(validators: int = 4, seconds: float = 30.0, clients: int = 16) -> None:
    """Rounds per height and block interval of a devnet idle, then under RPC load on
    every node: ``clients`` keep-alive connections per node, one in four sending a heavy
    read (eth_getLogs over the whole chain, eth_call of a system contract view,
    eth_getBlockByNumber with transactions), the rest cheap reads."""
    from bench.bench_consensus import lift_rpc_rate_limit
    from devnet.launcher import Member, prepare, start, stop
    from tests.procs import free_port, rpc

    root = Path(tempfile.mkdtemp(prefix="motus-bench-rpc-consensus-"))
    procs: list[subprocess.Popen] = []
    try:
        ports = [(free_port(), free_port()) for _ in range(validators)]
        members: list[Member] = prepare(root, validators, 0, 0, 7077, ports=ports)
        for m in members:
            lift_rpc_rate_limit(m.home.config)
            text = m.home.config.read_text()
            m.home.config.write_text(text.replace("max_connections_per_client = 64",
                                                  "max_connections_per_client = 1024"))
        start(members, log_level=os.environ.get("BENCH_RPC_LOG_LEVEL", "warning"))
        procs = [m.proc for m in members if m.proc is not None]
        url = members[0].url
        deadline = time.monotonic() + 90
        while True:
            try:
                if int(rpc(url, "eth_blockNumber", timeout=2), 16) >= 3:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the devnet made no blocks")
            time.sleep(0.5)

        def height() -> int:
            return int(rpc(url, "eth_blockNumber"), 16)

        print(f"consensus: {validators} validators, {seconds:g} s idle then {seconds:g} s with "
              f"{clients} RPC connections per node, {load_average()}", flush=True)
        low = height() + 1
        time.sleep(seconds)
        idle = chain_stats(url, low, height())
        print(f"  idle:        {idle[0]:.2f} rounds per height, block interval {idle[1]:.2f} s "
              f"({idle[2]} blocks)", flush=True)
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        workers = []
        for m in members:
            heavy = [request_bytes(m.rpc_port, "eth_getLogs", [{"fromBlock": "0x0"}]),
                     request_bytes(m.rpc_port, "eth_call", [{"to": "0x" + "00" * 19 + "01",
                                                             "data": "0x"}, "latest"]),
                     request_bytes(m.rpc_port, "eth_getBlockByNumber", ["latest", True])]
            cheap = [request_bytes(m.rpc_port, method, params) for method, params in CHEAP[:3]]
            mix = [heavy[i % 3] if i % 4 == 0 else cheap[i % 3] for i in range(clients)]
            if os.environ.get("BENCH_RPC_MIX") == "cheap":
                mix = cheap
            elif os.environ.get("BENCH_RPC_MIX") == "heavy":
                mix = heavy
            workers.append(ctx.Process(target=hammer, args=(m.rpc_port, mix, clients, seconds + 5, out)))
        for w in workers:
            w.start()
        time.sleep(5)  # the load processes start up
        low = height() + 1
        t0 = time.monotonic()
        time.sleep(seconds)
        loaded = chain_stats(url, low, height())
        served = [out.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(10)
        answers = sum(d for d, _, _ in served)
        print(f"  under load:  {loaded[0]:.2f} rounds per height, block interval {loaded[1]:.2f} s "
              f"({loaded[2]} blocks), {answers / (time.monotonic() - t0 + 5):.0f} RPC answers/s "
              f"over {validators} nodes, {sum(e for _, e, _ in served)} errors", flush=True)
        print(f"  ratio loaded/idle: rounds per height {loaded[0] / idle[0]:.2f}, block interval "
              f"{loaded[1] / idle[1]:.2f} (goal: 1.00)", flush=True)
    finally:
        stop(procs)
        if os.environ.get("BENCH_RPC_KEEP"):
            print(f"  homes and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


# --- eth_getLogs -----------------------------------------------------------------------


def logs_part(blocks: int, repeat: int) -> None:
    from node.logindex import PREFIX
    from node.rpc import params as p
    from node.rpc.eth import get_logs
    from tests.logchain import LogMix, append_blocks, full_scan, open_store, rpc_context

    root = tempfile.mkdtemp(prefix="motus-bench-logs-")
    try:
        database, store = open_store(root)
        mix = LogMix.default(seed=3)
        t0 = time.perf_counter()
        append_blocks(store, blocks, mix)
        build_s = time.perf_counter() - t0
        size = sum(len(k) for k in database.db.iterator(prefix=PREFIX, include_value=False))
        ctx = rpc_context(store)
        head = store.head_height
        print(f"eth_getLogs on {blocks} blocks ({blocks / build_s:.0f} blocks/s committed; "
              f"index keys {size / blocks:.0f} bytes per block before compression), {load_average()}",
              flush=True)
        queries = [
            ("1 % address, 10,000 blocks",
             {"fromBlock": hex(head - 9_999 if head >= 9_999 else 0), "toBlock": "latest",
              "address": "0x" + mix.rare.hex()}),
            ("topic at position 1, 10,000 blocks",
             {"fromBlock": hex(max(0, head - 9_999)), "toBlock": "latest",
              "address": "0x" + mix.addresses[0].hex(),
              "topics": [None, ["0x" + mix.topics[1].hex()], ["0x" + mix.topics[2].hex()]]}),
            ("no filter, 1,000 blocks",
             {"fromBlock": hex(max(0, head - 999)), "toBlock": "latest"}),
        ]
        for name, doc in queries:
            flt = p.log_filter(doc)
            best_old = best_new = float("inf")
            for _ in range(repeat):  # interleaved, the best of each kept
                t0 = time.perf_counter()
                old = full_scan(ctx, flt)
                best_old = min(best_old, time.perf_counter() - t0)
                t0 = time.perf_counter()
                new = get_logs(ctx, flt)
                best_new = min(best_new, time.perf_counter() - t0)
                assert new == old, name
            print(f"  {name:<36} {len(new):5d} logs  full scan {best_old * 1000:8.1f} ms  "
                  f"index {best_new * 1000:7.1f} ms  speed-up {best_old / best_new:6.1f}x", flush=True)
        database.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_rpc")
    ap.add_argument("--part", choices=("http", "logs", "consensus", "all"), default="all")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=20, help="calls per JSON-RPC batch (http part)")
    ap.add_argument("--blocks", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--consensus-seconds", type=float, default=30.0)
    args = ap.parse_args(argv or [])
    if args.part in ("logs", "all"):
        logs_part(args.blocks, args.repeat)
    if args.part in ("http", "all"):
        http_part(args.clients, args.duration, args.batch)
    if args.part in ("consensus", "all"):
        consensus_part(seconds=args.consensus_seconds)


if __name__ == "__main__":
    main(sys.argv[1:])
