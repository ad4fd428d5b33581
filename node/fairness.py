"""Per-source credit for refused input: a flood of invalid attestations or transactions
costs the source that sends it, not the honest ones (docs/rpc.md, "Fair admission").

Every source (``rpc:<client address>``, ``peer:<libp2p peer id>``) has a credit of
refused items that refills at ``rate`` per second up to ``burst``. Each item the node
checked and refused for a fault of the item (malformed, bad signature, bad nonce, ...)
is charged after the check (a refusal that depends on the head, from a peer that may
have had another head, at a fraction: node/attestation_pool.py); while a source's
credit is not positive its next items are refused unchecked (code ``throttled``), which
costs a hash, not a signature recovery.
Charging after the check may drive the credit below zero, down to ``-burst``: a source
that sends a large batch of garbage waits until it has repaid it, so over time it gets
``rate`` refused items per second checked, whatever its batch size. An honest source
is refused rarely (a stale reading after an outage, a nonce raced by another wallet)
and never runs out.

The table is bounded: when full, the least recently seen source is forgotten (it
starts again with a full credit, which only errs on the side of serving).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

THROTTLED = "throttled"
MAX_SOURCES = 10_000


class SourceCredit:
    def __init__(self, rate: float, burst: float, *, max_sources: int = MAX_SOURCES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.clock = clock
        self._credit: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source -> (credit, at)
        self.throttled = 0  # items refused unchecked, since start

    def _current(self, source: str) -> float:
        now = self.clock()
        credit, at = self._credit.pop(source, (self.burst, now))
        credit = min(self.burst, credit + (now - at) * self.rate)
        self._credit[source] = (credit, now)
        while len(self._credit) > self.max_sources:
            self._credit.popitem(last=False)
        return credit

    def allows(self, source: str, items: int = 1) -> bool:
        """True if ``source`` may have its next items checked; else counts ``items``
        as throttled."""
        if self._current(source) > 0:
            return True
        self.throttled += items
        return False

    def charge(self, source: str, refused: float) -> None:
        """``refused`` of the source's items were checked and refused (a refusal may be
        weighted below one: node/attestation_pool.py, PEER_STATEFUL_CHARGE)."""
        if refused <= 0:
            return
        credit = self._current(source)
        self._credit[source] = (max(-self.burst, credit - refused), self.clock())

    def credit(self, source: str) -> float:
        return self._current(source)
