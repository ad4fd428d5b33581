"""Run a module under cProfile timed by the main thread's own CPU (``time.thread_time``),
recording only between SIGUSR1 (start) and SIGUSR2 (stop and write): a benchmark
profiles its measured window of a node process, not the setup before it, and on a
shared machine the figures are CPU seconds of the profiled thread, not wall time that
other jobs' load inflates (``python -m cProfile`` counts wall time from start to exit).

``python -m bench.thread_profile OUT MODULE [ARGS...]``: calls ``MODULE.main()`` with
``sys.argv`` set to ``[MODULE, *ARGS]``; the profile goes to ``OUT`` (overwritten at
every SIGUSR2, and at exit if still recording). ``MODULE`` is imported, not run as
``__main__`` (runpy): a process the node spawns (the signature worker pool) then
imports this small module as its main, not the node's.
"""

from __future__ import annotations

import cProfile
import importlib
import signal
import sys
import time


def main() -> None:
    out, module, *args = sys.argv[1:]
    profiler = cProfile.Profile(time.thread_time)
    recording = False

    def start(_signum: int, _frame: object) -> None:
        nonlocal recording
        if not recording:
            profiler.enable()
            recording = True

    def stop(_signum: int | None = None, _frame: object = None) -> None:
        nonlocal recording
        if recording:
            profiler.disable()
            recording = False
            profiler.dump_stats(out)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [module, *args]
    try:
        code = importlib.import_module(module).main()
    finally:
        stop()
    sys.exit(code)


if __name__ == "__main__":
    main()
