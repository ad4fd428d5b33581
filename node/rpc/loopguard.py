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

Both act inside the process. When the machine itself is short of CPU (validators and
RPC clients on the same cores), a node busy with RPC all the time is also the last
process the kernel runs when a consensus message for it arrives, and its proposals
and votes go out late however its own loop is ordered (timestamped: a proposer's
6 ms of CPU for a block took 90-125 ms of wall time at load average 14 on 2 cores).
So while the loop runs late by more than ``share_lag`` (the sign that the process
waits for a CPU), RPC requests may use at most ``cpu_share`` of a core
(``rpc.cpu_share_percent``, measured as the process's CPU time over windows of ``window``
seconds): beyond it they wait for the next window and the process sleeps, which
leaves the CPU to the other processes and lets the kernel run this one promptly when
its consensus messages arrive. With CPUs to spare the lag stays under ``share_lag``
and RPC is not capped.
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
SHARE_LAG = 0.005  # loop lag above which RPC is held to its CPU share (s)
SHARE_WINDOW = 0.1  # the CPU share is counted over windows this long (s)


class LoopGuard:
    def __init__(self, target: float = TARGET, max_wait: float = MAX_WAIT,
                 interval: float = INTERVAL, turn_budget: float = TURN_BUDGET,
                 cpu_share: float = 1.0, share_lag: float = SHARE_LAG,
                 window: float = SHARE_WINDOW) -> None:
        self.target = target
        self.max_wait = max_wait
        self.interval = interval
        self.turn_budget = turn_budget
        self.lag = 0.0
        self.turn_started = -math.inf  # perf_counter() at the first request of this pass
        self.turn = 0  # which pass of the loop RPC is in, as counted by the deferred requests
        self.cpu_share = cpu_share  # 1.0 or more: never capped
        self.share_lag = share_lag
        self.window = window
        self.window_started = time.perf_counter()
        self.window_cpu = time.process_time()  # the process's CPU time when it began

    async def run(self) -> None:
        """Sample the loop's lag until cancelled."""
        while True:
            asked = trio.current_time() + self.interval
            await trio.sleep_until(asked)
            self.lag = max(0.0, trio.current_time() - asked)

    def may_run(self) -> bool:
        """True when a request may run at once, without awaiting :meth:`admit` (the loop
        is not behind, RPC is within its CPU share and this pass's budget): the common
        case, checked without a coroutine. False: await :meth:`admit`."""
        if self.lag > self.target:
            return False
        if self.cpu_share < 1.0:
            now = time.perf_counter()
            if now - self.window_started >= self.window:
                self.window_started, self.window_cpu = now, time.process_time()
            elif (self.lag > self.share_lag
                  and time.process_time() - self.window_cpu > self.cpu_share * self.window):
                return False
        return time.perf_counter() - self.turn_started <= self.turn_budget

    async def admit(self) -> None:
        """Return when the loop is not behind (or after ``max_wait``) and this pass of
        the loop has RPC budget left (else in a later pass)."""
        if self.lag > self.target:
            metrics.RPC_DEFERRED.inc()
            give_up = trio.current_time() + self.max_wait
            while self.lag > self.target and trio.current_time() < give_up:
                await trio.sleep(self.interval)
        if self.cpu_share < 1.0:
            await self._within_share()
        await self._take_turn()

    async def _within_share(self) -> None:
        while True:
            now = time.perf_counter()
            elapsed = now - self.window_started
            if elapsed >= self.window:
                self.window_started, self.window_cpu = now, time.process_time()
                return
            if self.lag <= self.share_lag:
                return  # the process gets a CPU when it wants one: no cap
            if time.process_time() - self.window_cpu <= self.cpu_share * self.window:
                return
            await trio.sleep(self.window - elapsed)

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
