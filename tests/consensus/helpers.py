"""Building blocks for consensus unit tests: four validators of equal power, the
machine under test as one of them, and signed messages from the others."""

from __future__ import annotations

from eth_hash.auto import keccak

from consensus.crypto import address_of_private_key
from consensus.effects import (
    Broadcast,
    Decide,
    Effect,
    EvidenceFound,
    InvalidMessage,
    ScheduleTimeout,
)
from consensus.machine import ConsensusMachine, Timeouts
from consensus.messages import ProposalMessage
from consensus.types import NIL, PRECOMMIT, PREVOTE, Proposal, Validator, ValidatorSet, Vote
from consensus.wal import Signer, SigningGuard

CHAIN_ID = 7077
KEYS = [keccak(b"motus consensus unit validator %d" % i) for i in range(4)]
ADDRESSES = [address_of_private_key(k) for k in KEYS]


class FakeApp:
    """Values are ``b"valid ..."`` or ``b"invalid ..."``; counts validation calls."""

    def __init__(self) -> None:
        self.validated: list[bytes] = []
        self.proposed: list[tuple[int, int]] = []

    def propose(self, height: int, round_: int) -> bytes:
        self.proposed.append((height, round_))
        return b"valid h=%d r=%d" % (height, round_)

    def block_hash(self, value: bytes) -> bytes:
        return keccak(value)

    def validate(self, height: int, value: bytes) -> bool:
        self.validated.append(value)
        return value.startswith(b"valid")


def validator_set(powers: tuple[int, ...] = (1, 1, 1, 1)) -> ValidatorSet:
    return ValidatorSet([Validator(a, p) for a, p in zip(ADDRESSES, powers, strict=True)])


def h(value: bytes) -> bytes:
    return keccak(value)


class Harness:
    """The machine of validator ``me`` at ``height``, and peers' signed messages."""

    def __init__(self, proposer_of_round: int = 3, height: int = 1, *,
                 guard: SigningGuard | None = None, powers: tuple[int, ...] = (1, 1, 1, 1),
                 voting: bool = True, start: bool = True) -> None:
        """The node under test is the proposer of ``proposer_of_round`` (by default 3,
        so that rounds 0 to 2 are proposed by peers)."""
        self.validators = validator_set(powers)
        self.height = height
        self.me = self.proposer_index(proposer_of_round)
        self.app = FakeApp()
        signer = Signer(KEYS[self.me], CHAIN_ID, guard or SigningGuard()) if voting else None
        self.machine = ConsensusMachine(CHAIN_ID, self.app, signer, Timeouts())
        self.start_effects = self.machine.start_height(height, self.validators) if start else []

    def proposer_index(self, round_: int) -> int:
        return ADDRESSES.index(self.validators.proposer_for_round(round_).address)

    def others(self) -> list[int]:
        return [i for i in range(4) if i != self.me]

    def vote(self, i: int, vote_type: int, round_: int, block_hash: bytes,
             height: int | None = None) -> Vote:
        return Vote.create(CHAIN_ID, KEYS[i], vote_type, height or self.height, round_,
                           block_hash, ADDRESSES[i])

    def proposal(self, round_: int, value: bytes, pol_round: int = -1, proposer: int | None = None,
                 height: int | None = None) -> ProposalMessage:
        i = self.proposer_index(round_) if proposer is None else proposer
        p = Proposal.create(CHAIN_ID, KEYS[i], height or self.height, round_, pol_round,
                            keccak(value), ADDRESSES[i])
        return ProposalMessage(p, value)

    def feed(self, *messages: ProposalMessage | Vote) -> list[Effect]:
        effects: list[Effect] = []
        for m in messages:
            effects += self.machine.on_message(m)
        return effects

    def feed_votes(self, vote_type: int, round_: int, block_hash: bytes,
                   voters: list[int]) -> list[Effect]:
        return self.feed(*[self.vote(i, vote_type, round_, block_hash) for i in voters])

    def lock_on(self, value: bytes, round_: int = 0) -> list[Effect]:
        """Drive round ``round_`` until this node has precommitted (locked) ``value``."""
        effects = self.feed(self.proposal(round_, value))
        effects += self.feed_votes(PREVOTE, round_, h(value), self.others()[:2])
        return effects

    def skip_to(self, round_: int) -> list[Effect]:
        """Move to ``round_`` by the f+1 rule: precommits for nil there from two peers."""
        return self.feed_votes(PRECOMMIT, round_, NIL, self.others()[:2])


def broadcasts(effects: list[Effect]) -> list[object]:
    return [e.message for e in effects if isinstance(e, Broadcast)]


def votes_sent(effects: list[Effect], vote_type: int | None = None) -> list[tuple[int, int, bytes]]:
    """(type, round, block hash) of each vote broadcast."""
    return [(m.type, m.round, m.block_hash) for m in broadcasts(effects)
            if isinstance(m, Vote) and (vote_type is None or m.type == vote_type)]


def timeouts(effects: list[Effect]) -> list[ScheduleTimeout]:
    return [e for e in effects if isinstance(e, ScheduleTimeout)]


def decisions(effects: list[Effect]) -> list[Decide]:
    return [e for e in effects if isinstance(e, Decide)]


def evidence(effects: list[Effect]) -> list[EvidenceFound]:
    return [e for e in effects if isinstance(e, EvidenceFound)]


def rejections(effects: list[Effect]) -> list[InvalidMessage]:
    return [e for e in effects if isinstance(e, InvalidMessage)]


__all__ = [
    "ADDRESSES", "CHAIN_ID", "KEYS", "NIL", "PRECOMMIT", "PREVOTE", "FakeApp", "Harness",
    "broadcasts", "decisions", "evidence", "h", "rejections", "timeouts", "validator_set",
    "votes_sent",
]
