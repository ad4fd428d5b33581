"""What the consensus machine asks its driver to do: plain frozen values, no I/O.

Every input method of :class:`consensus.machine.ConsensusMachine` returns a list
of these, in the order the driver must carry them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from consensus.messages import ConsensusMessage
from consensus.types import Commit, DuplicateVoteEvidence


class Step(IntEnum):
    """Steps of a round in protocol order (the signing guard relies on the order).

    ``COMMIT`` means the height is decided and the machine waits for the driver
    to start the next one. ``REBROADCAST`` is never a step of the machine: it is
    the kind of the periodic timer on which the machine re-sends its own
    messages of the current height (the gossip layer does not retransmit).
    """

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2
    COMMIT = 3
    REBROADCAST = 4


@dataclass(frozen=True)
class Broadcast:
    """Send ``message`` to all peers (the machine has already applied it locally)."""

    message: ConsensusMessage


@dataclass(frozen=True)
class ScheduleTimeout:
    """Call ``on_timeout(step, height, round)`` after ``duration_s`` seconds.

    Timeouts are never cancelled: the machine ignores the ones that became stale."""

    step: Step
    height: int
    round: int
    duration_s: float


@dataclass(frozen=True)
class Decide:
    """``value`` is final at ``height``: commit it, then start ``height + 1``."""

    height: int
    round: int
    value: bytes
    commit: Commit


@dataclass(frozen=True)
class EvidenceFound:
    """A validator signed two different votes at one height, round and type."""

    evidence: DuplicateVoteEvidence


@dataclass(frozen=True)
class InvalidMessage:
    """The input message was rejected; the peer that relayed it may be penalised.

    ``code`` is stable (see :mod:`consensus.errors` and the machine's reject codes)."""

    code: str
    reason: str


Effect = Broadcast | ScheduleTimeout | Decide | EvidenceFound | InvalidMessage
