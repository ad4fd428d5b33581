"""Per-client token buckets: ``rate`` calls per second, bursts up to one second's worth.

A batch of N calls costs N tokens. The table of buckets is bounded: when full, the
least recently used bucket is forgotten (a forgotten client starts again full,
which only ever errs on the side of serving).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS = 10_000


class RateLimiter:
    def __init__(
        self,
        rate: int,
        *,
        burst: int | None = None,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (use no limiter to disable)")
        self.rate = rate
        self.burst = burst or rate
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = (
            OrderedDict()
        )  # client -> (tokens, at)

    def take(self, client: str, cost: int = 1) -> bool:
        """Spend ``cost`` tokens of ``client``'s bucket; False (nothing spent) if too few."""
        now = self.clock()
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed
