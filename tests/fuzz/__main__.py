"""The long fuzz campaign: ``python -m tests.fuzz [--runs N] [TARGET ...]``
(``make fuzz``: every target, 10^6 inputs each).

With atheris installed (the ``dev`` extra), each target runs in its own process under
libFuzzer with coverage guidance, started from the target's seeds, with libFuzzer's own
limits (-timeout per input, -rss_limit_mb for the process) on top of the target's
contract (engine.check_one: typed errors only, time per input, and the heap peak of every
64th input measured with tracemalloc). Without atheris, the seed mutator of
engine.mutate runs instead. Prints inputs per second per target; exits 1 on the first
broken contract, with the input that broke it.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTED = ["codec", "consensus", "vm", "node", "p2p", "rlp", "json", "tests.fuzz"]
ARTIFACTS = Path(tempfile.gettempdir()) / "motus-fuzz"  # inputs that broke a contract
MEASURE_EVERY = 64  # inputs between two heap measurements (tracemalloc slows decoding ~3x)


def run_atheris(name: str, runs: int, corpus: Path) -> None:
    import atheris

    # Coverage of our decoders and pyrlp/json (not all of py-evm: instrumenting every
    # loaded module takes minutes).
    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz.engine import check_one
        from tests.fuzz.targets import TARGETS

    target = TARGETS[name]
    ARTIFACTS.mkdir(exist_ok=True)
    count = 0

    def one_input(data: bytes) -> None:
        nonlocal count
        count += 1
        check_one(target, data, measure_memory=count % MEASURE_EVERY == 0)

    atheris.Setup([sys.argv[0], f"-runs={runs}", "-timeout=10", "-rss_limit_mb=3072",
                   f"-max_len={min(target.max_bytes, 64 * 1024)}", "-print_final_stats=1",
                   f"-artifact_prefix={ARTIFACTS}/{name}-", str(corpus)],
                  one_input)
    atheris.Fuzz()


def run_mutator(name: str, runs: int, seed: int) -> float:
    from tests.fuzz.engine import check_one, mutate
    from tests.fuzz.targets import TARGETS

    target = TARGETS[name]
    seeds = target.seeds()
    rng = random.Random(seed)
    started = time.perf_counter()
    pool = list(seeds)
    for i in range(runs):
        data = mutate(rng.choice(pool), rng, seeds) if i % 8 else rng.randbytes(rng.randint(0, 256))
        check_one(target, data, measure_memory=i % MEASURE_EVERY == 0)
        if i % 97 == 0 and len(pool) < 256:
            pool.append(data)  # keep mutating mutants: deeper, stranger inputs
    return runs / (time.perf_counter() - started)


def campaign(names: list[str], runs: int, engine: str) -> int:
    from tests.fuzz.targets import TARGETS

    failed = 0
    for name in names:
        started = time.perf_counter()
        if engine == "atheris":
            with tempfile.TemporaryDirectory() as tmp:
                corpus = Path(tmp)
                for i, seed in enumerate(TARGETS[name].seeds()):
                    (corpus / f"seed{i}").write_bytes(seed)
                done = subprocess.run(
                    [sys.executable, "-m", "tests.fuzz", "--one", name, "--runs", str(runs),
                     "--corpus", str(corpus)],
                    cwd=ROOT, capture_output=True, text=True,
                    env={**os.environ, "PYTHONPATH": str(ROOT)})
            took = time.perf_counter() - started
            executed = re.search(r"stat::number_of_executed_units: (\d+)", done.stderr)
            seconds = re.search(r"Done \d+ runs in (\d+) second", done.stderr)
            n = int(executed.group(1)) if executed else 0
            fuzz_s = max(1, int(seconds.group(1))) if seconds else took
            ok = done.returncode == 0
            print(f"{name:20s} {'ok' if ok else 'FAILED':6s} {n:>10,d} inputs  {n / fuzz_s:>9,.0f}/s  "
                  f"({took:,.0f} s with start-up)", flush=True)
            if not ok:
                failed += 1
                print(done.stderr[-4000:], file=sys.stderr)
        else:
            try:
                rate = run_mutator(name, runs, seed=int(time.time()))
                print(f"{name:20s} ok     {runs:>10,d} inputs  {rate:>9,.0f}/s", flush=True)
            except AssertionError as exc:
                failed += 1
                print(f"{name:20s} FAILED {exc}", flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="target names (default: all)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    parser.add_argument("--engine", choices=["auto", "atheris", "mutator"], default="auto")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: one target under atheris
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_atheris(args.one, args.runs, Path(args.corpus))
        return 0
    from tests.fuzz.targets import TARGETS

    names = args.targets or sorted(TARGETS)
    unknown = set(names) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(sorted(TARGETS))}")
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "mutator"
    print(f"fuzzing {len(names)} targets, {args.runs:,d} inputs each, engine {engine}", flush=True)
    return campaign(names, args.runs, engine)


if __name__ == "__main__":
    sys.exit(main())
