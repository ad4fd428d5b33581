"""When the node's full garbage collections run (docs/network.md, "Where a height's time
goes").

CPython starts a full (generation 2) collection on its own whenever the objects that
survived earlier collections grew by a quarter. A node at the start of an attestation
burst is exactly that: the pool fills with tens of thousands of records, and each full
collection stopped the trio thread, which also runs consensus, for 0.1-0.5 s (measured
on the four-validator devnet at load 10), so votes arrived late and rounds failed.

:class:`FullCollections` moves them to a moment the node has to spare: right after a
block is committed, when the wait for the block interval leaves at least
``QUIET_MIN_S``, at most once every ``FULL_EVERY_S``. The automatic trigger is not
removed, only pushed back (``BACKSTOP_THRESHOLD2``): a node that never finds a quiet
moment (a follower, a chain that stopped) still collects, just less often. The young
generations are untouched, so short-lived cycles are freed as before. What is alive
when the node starts is frozen out of later collections (:meth:`FullCollections.install`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from prometheus_client import Histogram

from node.metrics import REGISTRY

FULL_EVERY_S = 30.0  # at most one scheduled full collection this often
QUIET_MIN_S = 0.25  # the wait before the next height that makes a moment quiet
# Full collections the interpreter still starts on its own: after this many collections
# of the middle generation (the default is 10), i.e. after ~7 M container allocations
# with the default thresholds instead of ~70 k.
BACKSTOP_THRESHOLD2 = 1000

FULL_GC_SECONDS = Histogram(
    "motus_gc_full_collection_seconds",
    "Wall time of the full garbage collections the node ran while waiting for the next "
    "height (node/gcpolicy.py)",
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


class FullCollections:
    """Schedules full collections into quiet moments (see the module doc)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()
        self._saved: tuple[int, int, int] | None = None
        self.collections = 0

    def install(self) -> None:
        """Push the interpreter's own full collections back, and freeze what the node
        built at start (until :meth:`uninstall`).

        Freezing (``gc.freeze`` after a collection) takes the objects alive now (modules,
        the decoded upper storage tries, caches) out of every later collection: they live
        as long as the process, and scanning them again was most of each full
        collection's time. A cycle among them that dies later is not freed (refcounting
        still frees everything else): a one-time, bounded cost."""
        if self._saved is None:
            self._saved = gc.get_threshold()
            young, middle, _ = self._saved
            gc.collect()
            gc.freeze()
            gc.set_threshold(young, middle, BACKSTOP_THRESHOLD2)

    def uninstall(self) -> None:
        """The interpreter's thresholds as they were before :meth:`install`."""
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None

    def due(self, spare_s: float) -> bool:
        """Whether a moment with ``spare_s`` seconds before the next height should be
        used for a full collection."""
        return spare_s >= QUIET_MIN_S and self._clock() - self._last >= FULL_EVERY_S

    def collect(self) -> float:
        """Run a full collection now; returns its wall time."""
        started = time.perf_counter()
        gc.collect()
        took = time.perf_counter() - started
        self._last = self._clock()
        self.collections += 1
        FULL_GC_SECONDS.observe(took)
        return took
