"""Consensus first: RPC requests wait while the node's event loop is behind.

The RPC server shares the trio event loop with consensus and the p2p stack. Trio runs
every runnable task once per scheduling batch, so a node serving many RPC
connections gives each of them a turn for every turn of a consensus or libp2p task,
and a consensus message needs many turns (stream, muxer, gossip, consensus). With the
machine's CPU short, batches grew to tens of milliseconds, messages took seconds, and
a devnet under RPC load made no block at all (bench_rpc --part consensus).

:class:`LoopGuard` measures how late the loop wakes a sleeping task (the time any task
waits for its turn, ``lag``); while that is above ``target``, a new RPC request waits
(at most ``max_wait``, then it is served anyway) before it is parsed and dispatched. The
requests in flight finish; the loop drains to the tasks that were waiting. When the
node has nothing else to do the lag stays small and RPC runs at full speed.
"""

from __future__ import annotations

import trio

from node.rpc import metrics

INTERVAL = 0.01  # how often the lag is sampled (s)
TARGET = 0.02  # loop lag above which new RPC requests wait (s)
MAX_WAIT = 1.0  # the longest one request waits for the loop (s)


class LoopGuard:
    def __init__(self, target: float = TARGET, max_wait: float = MAX_WAIT,
                 interval: float = INTERVAL) -> None:
        self.target = target
        self.max_wait = max_wait
        self.interval = interval
        self.lag = 0.0

    async def run(self) -> None:
        """Sample the loop's lag until cancelled."""
        while True:
            asked = trio.current_time() + self.interval
            await trio.sleep_until(asked)
            self.lag = max(0.0, trio.current_time() - asked)

    async def admit(self) -> None:
        """Return when the loop is not behind, or after ``max_wait``."""
        if self.lag <= self.target:
            return
        metrics.RPC_DEFERRED.inc()
        give_up = trio.current_time() + self.max_wait
        while self.lag > self.target and trio.current_time() < give_up:
            await trio.sleep(self.interval)
