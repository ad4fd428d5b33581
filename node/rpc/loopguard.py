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

The lag guard alone left every pass of the loop as long as the RPC work in it: with 16
connections reading, a pass took ~10-20 ms on a busy machine, a consensus message
crossed ~10 passes on its way through two nodes' p2p stacks, proposals arrived 0.2-1 s
late (timestamped in each node's consensus runner) and a validator fell behind by whole
heights, so its turns as proposer missed the others' propose timeout (1.08 rounds per
height against 1.00 idle). So RPC also gets a share of each pass: once requests
admitted in the current pass have used ``turn_budget`` of wall time (from the first of
them), the next ones go to the back of the run queue (a trio checkpoint), behind the
consensus and p2p tasks that became runnable meanwhile; the first of them to run again
starts the next pass's budget. A message's step through a task then waits for at most
~``turn_budget`` of RPC work instead of all of it. With nothing else runnable the
deferred requests run in the very next pass: RPC alone loses one checkpoint per
``turn_budget``, nothing measurable.
"""

from __future__ import annotations

import math
import time

import trio

from node.rpc import metrics

INTERVAL = 0.01  # how often the lag is sampled (s)
TARGET = 0.02  # loop lag above which new RPC requests wait (s)
MAX_WAIT = 1.0  # the longest one request waits for the loop (s)
TURN_BUDGET = 0.002  # wall time RPC requests may take of one pass of the loop (s)


class LoopGuard:
    def __init__(self, target: float = TARGET, max_wait: float = MAX_WAIT,
                 interval: float = INTERVAL, turn_budget: float = TURN_BUDGET) -> None:
        self.target = target
        self.max_wait = max_wait
        self.interval = interval
        self.turn_budget = turn_budget
        self.lag = 0.0
        self.turn_started = -math.inf  # perf_counter() at the first request of this pass
        self.turn = 0  # which pass of the loop RPC is in, as counted by the deferred requests

    async def run(self) -> None:
        """Sample the loop's lag until cancelled."""
        while True:
            asked = trio.current_time() + self.interval
            await trio.sleep_until(asked)
            self.lag = max(0.0, trio.current_time() - asked)

    async def admit(self) -> None:
        """Return when the loop is not behind (or after ``max_wait``) and this pass of
        the loop has RPC budget left (else in a later pass)."""
        if self.lag > self.target:
            metrics.RPC_DEFERRED.inc()
            give_up = trio.current_time() + self.max_wait
            while self.lag > self.target and trio.current_time() < give_up:
                await trio.sleep(self.interval)
        await self._take_turn()

    async def _take_turn(self) -> None:
        if time.perf_counter() - self.turn_started <= self.turn_budget:
            return
        while True:
            turn = self.turn
            # to the back of the run queue: everything already runnable goes first
            await trio.lowlevel.cancel_shielded_checkpoint()
            now = time.perf_counter()
            if self.turn == turn:  # the first deferred request back: a new pass
                self.turn += 1
                self.turn_started = now
                return
            if now - self.turn_started <= self.turn_budget:
                return
