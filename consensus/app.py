"""The application as consensus sees it: a small, ABCI-like interface.

Consensus treats a block as an opaque ``value`` (bytes) identified by its
32-byte hash. The node implements this protocol on top of ``vm`` (block
builder, block execution); tests implement it with a few lines. Commit is not a
method here: the machine emits a :class:`consensus.effects.Decide` effect and
the driver (``consensus.runner``) hands it to the node.

All three methods are called synchronously from inside the state machine, so
they must be deterministic for a given input and must not call back into it.
"""

from __future__ import annotations

from typing import Protocol


class Application(Protocol):
    def propose(self, height: int, round_: int) -> bytes:
        """A new block value to propose at (height, round); called only on the proposer,
        and only when it has no valid value from an earlier round to re-propose."""
        ...

    def block_hash(self, value: bytes) -> bytes:
        """The 32-byte identity of ``value``; what votes and proposals sign."""
        ...

    def validate(self, height: int, value: bytes) -> bool:
        """Whether ``value`` is a valid block at ``height`` (Algorithm 1's ``valid(v)``).

        Must be deterministic: every correct validator must reach the same answer.
        The machine caches the answer per block hash within a height."""
        ...
