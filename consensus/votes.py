"""Vote sets: the votes of one height, round and type, tallied by voting power.

A validator's first vote in a set is the one that counts towards "more than
2/3 voted, for anything". A later vote by the same validator for a different
block produces :class:`DuplicateVoteEvidence` (once per validator and set),
which is what the chain jails and slashes for. The conflicting vote is still a
valid signature for its own block, so it is also kept (a few per validator)
and counted for that block only: a commit for that block may need it, and a
node that happened to see the other vote first must still be able to decide.
Counting it can only add an equivocator's power, which the f < n/3 bound
already allows for.
"""

from __future__ import annotations

from consensus.types import VOTE_TYPES, DuplicateVoteEvidence, ValidatorSet, Vote

MAX_CONFLICTING_VOTES = 2  # kept per validator and set beyond its first vote


class VoteSet:
    """Votes of one (height, round, type). Signatures must be checked by the caller."""

    def __init__(self, validators: ValidatorSet, height: int, round_: int, vote_type: int) -> None:
        if vote_type not in VOTE_TYPES:
            raise ValueError(f"unknown vote type {vote_type}")
        self.validators = validators
        self.height = height
        self.round = round_
        self.type = vote_type
        self.quorum = validators.quorum()
        self._votes: dict[bytes, Vote] = {}  # validator -> first vote
        self._by_hash: dict[bytes, dict[bytes, Vote]] = {}  # block hash -> validator -> vote
        self._power_by_hash: dict[bytes, int] = {}
        self._power_any = 0
        self._conflicts: dict[bytes, int] = {}  # validator -> conflicting votes kept

    def __len__(self) -> int:
        return len(self._votes)

    def __contains__(self, vote: object) -> bool:
        if not isinstance(vote, Vote):
            return False
        return self._by_hash.get(vote.block_hash, {}).get(vote.validator) == vote

    def add(self, vote: Vote) -> tuple[bool, DuplicateVoteEvidence | None]:
        """Record ``vote``; returns (added, evidence).

        ``added`` is False for a repeat of a vote already held (or a conflicting
        vote beyond the per-validator bound). ``evidence`` is set the first time
        a validator is seen voting for two different blocks in this set. Raises
        ValueError for a vote of another set or from a non-validator.
        """
        if (vote.height, vote.round, vote.type) != (self.height, self.round, self.type):
            raise ValueError("vote belongs to another vote set")
        validator = self.validators.get(vote.validator)
        if validator is None:
            raise ValueError("vote from a non-validator")
        voters = self._by_hash.setdefault(vote.block_hash, {})
        if vote.validator in voters:
            return False, None
        first = self._votes.get(vote.validator)
        evidence = None
        if first is None:
            self._votes[vote.validator] = vote
            self._power_any += validator.power
        else:
            conflicts = self._conflicts.get(vote.validator, 0)
            if conflicts == 0:
                evidence = DuplicateVoteEvidence.of(first, vote)
            if conflicts >= MAX_CONFLICTING_VOTES:
                return False, evidence
            self._conflicts[vote.validator] = conflicts + 1
        voters[vote.validator] = vote
        self._power_by_hash[vote.block_hash] = (
            self._power_by_hash.get(vote.block_hash, 0) + validator.power
        )
        return True, evidence

    def power_for(self, block_hash: bytes) -> int:
        return self._power_by_hash.get(block_hash, 0)

    @property
    def power_any(self) -> int:
        return self._power_any

    def is_quorum_for(self, block_hash: bytes) -> bool:
        """More than 2/3 of the voting power voted for ``block_hash`` (NIL for nil)."""
        return self._power_by_hash.get(block_hash, 0) >= self.quorum

    def is_quorum_any(self) -> bool:
        """More than 2/3 of the voting power voted, for anything."""
        return self._power_any >= self.quorum

    def get_majority(self) -> bytes | None:
        """The block hash (or NIL) with more than 2/3 of the power, if any; at most one exists."""
        for block_hash, power in self._power_by_hash.items():
            if power >= self.quorum:
                return block_hash
        return None

    def get_votes_for(self, block_hash: bytes) -> list[Vote]:
        """The votes for ``block_hash`` (conflicting ones included), sorted by validator."""
        voters = self._by_hash.get(block_hash, {})
        return [voters[a] for a in sorted(voters)]

    def get_first_votes(self) -> list[Vote]:
        """Each validator's first vote in this set."""
        return list(self._votes.values())
