"""Consensus objects: votes, proposals, commits, evidence, validator sets.

All are RLP with a fixed field order; hash = keccak256(rlp bytes). Signatures are
recoverable secp256k1 over a domain-separated digest that includes the chain id,
so a vote for one chain is worthless on another.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import rlp
from eth_hash.auto import keccak
from rlp.sedes import Binary, CountableList, big_endian_int

from codec import RLPDecodeError
from codec import rlp as bounded_rlp
from consensus.crypto import recover_address, sign_digest
from consensus.errors import (
    BadSignature,
    InvalidCommit,
    InvalidEvidence,
    MalformedMessage,
    UnknownValidator,
)

PREVOTE = 1
PRECOMMIT = 2
PROPOSAL = 32
VOTE_TYPES = (PREVOTE, PRECOMMIT)

NIL = b""  # block hash of a nil vote

MAX_MESSAGE_BYTES = 64 * 1024  # votes, proposals (without block), commits of small sets
MAX_COMMIT_BYTES = 1024 * 1024

address = Binary.fixed_length(20)
hash32_or_nil = Binary(min_length=0, max_length=32)
signature_sedes = Binary.fixed_length(65, allow_empty=True)


def chain_prefix(tag: bytes, chain_id: int) -> bytes:
    return b"\x19Motus " + tag + b":\n" + chain_id.to_bytes(8, "big")


MAX_VALIDATORS = 10_000  # entries of a commit or a validator set

# Shapes, decoded by the bounded decoder (codec.rlp, docs/encoding.md): the deepest list
# nesting each needs and its most RLP items (every list and byte string counts one).
VOTE_SHAPE = (1, 7)  # [type, height, round, block_hash, validator, signature]
PROPOSAL_SHAPE = (1, 7)  # [height, round, pol_round+1, block_hash, proposer, signature]
COMMIT_SHAPE = (3, 5 + 3 * MAX_VALIDATORS)  # [height, round, block_hash, [[validator, sig]...]]
EVIDENCE_SHAPE = (2, 1 + 2 * VOTE_SHAPE[1])  # [vote, vote]
VALIDATOR_SET_SHAPE = (2, 1 + 3 * MAX_VALIDATORS)  # [[address, power], ...]


def _decode(data: bytes, sedes, limit: int, what: str, shape: tuple[int, int]):
    """``sedes`` decoded from ``data`` by the bounded decoder: at most ``limit`` bytes,
    nested and sized as ``shape`` (max depth, max items) allows. Raises MalformedMessage."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage(f"{what}: expected bytes")
    if len(data) > limit:
        raise MalformedMessage(f"{what}: {len(data)} bytes exceeds limit {limit}")
    max_depth, max_items = shape
    try:
        return bounded_rlp.decode(bytes(data), sedes, max_depth=max_depth, max_items=max_items)
    except RLPDecodeError as exc:
        raise MalformedMessage(f"{what}: {exc.code}: {exc}") from None


class Vote(rlp.Serializable):
    """A prevote or precommit. ``block_hash`` is empty for nil."""

    fields = [
        ("type", big_endian_int),
        ("height", big_endian_int),
        ("round", big_endian_int),
        ("block_hash", hash32_or_nil),
        ("validator", address),
        ("signature", signature_sedes),
    ]

    def signing_digest(self, chain_id: int) -> bytes:
        return vote_digest(chain_id, self.type, self.height, self.round, self.block_hash)

    def signer(self, chain_id: int) -> bytes:
        """Recover and check the signer; raises BadSignature."""
        if self.type not in VOTE_TYPES:
            raise MalformedMessage(f"unknown vote type {self.type}")
        if len(self.block_hash) not in (0, 32):
            raise MalformedMessage("vote block hash must be 32 bytes or empty")
        signer = recover_address(self.signing_digest(chain_id), self.signature)
        if signer != self.validator:
            raise BadSignature("vote signature is not from the named validator")
        return signer

    @classmethod
    def create(
        cls, chain_id: int, private_key: bytes, vote_type: int, height: int, round_: int,
        block_hash: bytes, validator: bytes,
    ) -> Vote:
        digest = vote_digest(chain_id, vote_type, height, round_, block_hash)
        return cls(vote_type, height, round_, block_hash, validator, sign_digest(private_key, digest))

    def encode(self) -> bytes:
        return rlp.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Vote:
        return _decode(data, cls, MAX_MESSAGE_BYTES, "vote", VOTE_SHAPE)


def vote_digest(chain_id: int, vote_type: int, height: int, round_: int, block_hash: bytes) -> bytes:
    return keccak(chain_prefix(b"Vote", chain_id) + rlp.encode([vote_type, height, round_, block_hash]))


class Proposal(rlp.Serializable):
    """A proposer's signed proposal of ``block_hash`` at (height, round).

    ``pol_round`` is the round of the proof-of-lock, encoded +1 so that -1
    (no proof of lock) fits an RLP unsigned integer as 0.
    """

    fields = [
        ("height", big_endian_int),
        ("round", big_endian_int),
        ("pol_round_plus_one", big_endian_int),
        ("block_hash", Binary.fixed_length(32)),
        ("proposer", address),
        ("signature", signature_sedes),
    ]

    @property
    def pol_round(self) -> int:
        return self.pol_round_plus_one - 1

    def signing_digest(self, chain_id: int) -> bytes:
        return proposal_digest(chain_id, self.height, self.round, self.pol_round, self.block_hash)

    def signer(self, chain_id: int) -> bytes:
        signer = recover_address(self.signing_digest(chain_id), self.signature)
        if signer != self.proposer:
            raise BadSignature("proposal signature is not from the named proposer")
        return signer

    @classmethod
    def create(
        cls, chain_id: int, private_key: bytes, height: int, round_: int, pol_round: int,
        block_hash: bytes, proposer: bytes,
    ) -> Proposal:
        digest = proposal_digest(chain_id, height, round_, pol_round, block_hash)
        return cls(height, round_, pol_round + 1, block_hash, proposer, sign_digest(private_key, digest))

    def encode(self) -> bytes:
        return rlp.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Proposal:
        return _decode(data, cls, MAX_MESSAGE_BYTES, "proposal", PROPOSAL_SHAPE)


def proposal_digest(chain_id: int, height: int, round_: int, pol_round: int, block_hash: bytes) -> bytes:
    return keccak(
        chain_prefix(b"Proposal", chain_id) + rlp.encode([height, round_, pol_round + 1, block_hash])
    )


class CommitSig(rlp.Serializable):
    fields = [("validator", address), ("signature", Binary.fixed_length(65))]


class Commit(rlp.Serializable):
    """Precommits of >2/3 of voting power for ``block_hash`` at (height, round)."""

    fields = [
        ("height", big_endian_int),
        ("round", big_endian_int),
        ("block_hash", Binary.fixed_length(32)),
        ("signatures", CountableList(CommitSig, max_length=MAX_VALIDATORS)),
    ]

    def hash(self) -> bytes:
        return keccak(rlp.encode(self))

    def encode(self) -> bytes:
        return rlp.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Commit:
        return _decode(data, cls, MAX_COMMIT_BYTES, "commit", COMMIT_SHAPE)

    def votes(self) -> list[Vote]:
        return [
            Vote(PRECOMMIT, self.height, self.round, self.block_hash, s.validator, s.signature)
            for s in self.signatures
        ]

    @classmethod
    def from_votes(cls, height: int, round_: int, block_hash: bytes, votes: Iterable[Vote]) -> Commit:
        sigs = sorted(
            {v.validator: v.signature for v in votes if v.block_hash == block_hash}.items()
        )
        return cls(height, round_, block_hash, [CommitSig(a, s) for a, s in sigs])


EMPTY_COMMIT = Commit(0, 0, b"\x00" * 32, [])


class DuplicateVoteEvidence(rlp.Serializable):
    """Two votes by one validator for different blocks at the same height, round and type."""

    fields = [("vote_a", Vote), ("vote_b", Vote)]

    def hash(self) -> bytes:
        return keccak(rlp.encode(self))

    def encode(self) -> bytes:
        return rlp.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> DuplicateVoteEvidence:
        return _decode(data, cls, MAX_MESSAGE_BYTES, "evidence", EVIDENCE_SHAPE)

    @property
    def validator(self) -> bytes:
        return self.vote_a.validator

    @property
    def height(self) -> int:
        return self.vote_a.height

    def verify(self, chain_id: int, validators: ValidatorSet) -> bytes:
        """Check the evidence against the validator set of its height; returns the offender."""
        a, b = self.vote_a, self.vote_b
        if (a.type, a.height, a.round, a.validator) != (b.type, b.height, b.round, b.validator):
            raise InvalidEvidence("votes differ in type, height, round or validator")
        if a.block_hash == b.block_hash:
            raise InvalidEvidence("votes are for the same block")
        try:
            a.signer(chain_id)
            b.signer(chain_id)
        except (BadSignature, MalformedMessage) as exc:
            raise InvalidEvidence(f"evidence vote signature: {exc}") from None
        if validators.get(a.validator) is None:
            raise InvalidEvidence("offender was not a validator at that height")
        return a.validator

    @classmethod
    def of(cls, a: Vote, b: Vote) -> DuplicateVoteEvidence:
        # canonical order so both reporters produce the same evidence hash
        first, second = sorted([a, b], key=lambda v: v.block_hash)
        return cls(first, second)


@dataclass(frozen=True)
class Validator:
    address: bytes
    power: int


@dataclass
class ValidatorSet:
    """An ordered validator set (sorted by address) with Tendermint proposer priorities.

    ``hash()`` covers addresses and powers only, not priorities, so it is stable
    across rounds; priorities are derived state kept alongside by the node.
    """

    validators: list[Validator]
    priorities: dict[bytes, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validators = sorted((v for v in self.validators if v.power > 0), key=lambda v: v.address)
        if len({v.address for v in self.validators}) != len(self.validators):
            raise ValueError("duplicate validator address")
        self._index = {v.address: v for v in self.validators}
        for v in self.validators:
            self.priorities.setdefault(v.address, 0)
        for a in list(self.priorities):
            if a not in self._index:
                del self.priorities[a]

    def __len__(self) -> int:
        return len(self.validators)

    def get(self, addr: bytes) -> Validator | None:
        return self._index.get(addr)

    @property
    def total_power(self) -> int:
        return sum(v.power for v in self.validators)

    def quorum(self) -> int:
        """Smallest power strictly above 2/3 of the total."""
        return self.total_power * 2 // 3 + 1

    def encode(self) -> bytes:
        return rlp.encode([[v.address, v.power] for v in self.validators])

    def hash(self) -> bytes:
        return keccak(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> ValidatorSet:
        items = _decode(data, CountableList(rlp.sedes.List([address, big_endian_int]), max_length=MAX_VALIDATORS),
                        MAX_COMMIT_BYTES, "validator set", VALIDATOR_SET_SHAPE)
        return cls([Validator(a, p) for a, p in items])

    def copy(self) -> ValidatorSet:
        return ValidatorSet(list(self.validators), dict(self.priorities))

    # --- proposer selection (CometBFT's weighted round-robin) -------------

    def increment_proposer_priority(self, times: int = 1) -> Validator | None:
        """Advance priorities ``times`` steps; returns the validator picked by the last step."""
        if not self.validators:
            return None
        total = self.total_power
        # keep priorities within a window of 2*total so no validator starves or runs away
        self._rescale(2 * total)
        self._shift_to_average()
        proposer = None
        for _ in range(times):
            for v in self.validators:
                self.priorities[v.address] += v.power
            proposer = self._max_priority()
            self.priorities[proposer.address] -= total
        return proposer

    def proposer(self) -> Validator:
        """The proposer of round 0 for this state: the validator the next priority step picks.

        (The maximum of the current priorities would be wrong: the step that just
        ran lowered the pick's priority by the total power, so it would favour
        low-power validators; with powers 1..4 the 1 proposed 3 rounds in 10.)"""
        picked = self.copy().increment_proposer_priority(1)
        if picked is None:
            raise ValueError("empty validator set has no proposer")
        return picked

    def proposer_for_round(self, round_: int) -> Validator:
        """Proposer of ``round_``: weighted round-robin, each validator proposing in
        proportion to its power over consecutive rounds."""
        picked = self.copy().increment_proposer_priority(round_ + 1)
        if picked is None:
            raise ValueError("empty validator set has no proposer")
        return picked

    def _max_priority(self) -> Validator:
        return max(self.validators, key=lambda v: (self.priorities[v.address], -int.from_bytes(v.address, "big")))

    def _rescale(self, window: int) -> None:
        prios = list(self.priorities.values())
        diff = max(prios) - min(prios)
        if diff > window > 0:
            ratio = (diff + window - 1) // window
            for a in self.priorities:
                self.priorities[a] = int(self.priorities[a] / ratio)

    def _shift_to_average(self) -> None:
        n = len(self.validators)
        avg = sum(self.priorities.values()) // n if n else 0
        for a in self.priorities:
            self.priorities[a] -= avg

    def next_for_height(self) -> ValidatorSet:
        """The set with priorities advanced by one height (proposer of round 0 rotated)."""
        vs = self.copy()
        vs.increment_proposer_priority(1)
        return vs

    # --- commit verification ----------------------------------------------

    def verify_commit(self, chain_id: int, height: int, block_hash: bytes, commit: Commit) -> None:
        """Raise InvalidCommit unless ``commit`` holds >2/3 of this set's power for the block."""
        if commit.height != height:
            raise InvalidCommit(f"commit is for height {commit.height}, expected {height}")
        if commit.block_hash != block_hash:
            raise InvalidCommit("commit is for a different block")
        power = self._signed_power(chain_id, commit)
        if power < self.quorum():
            raise InvalidCommit(f"commit has {power} of {self.total_power} voting power, needs {self.quorum()}")

    def verify_commit_trusting(self, chain_id: int, commit: Commit, numerator: int = 1, denominator: int = 3) -> None:
        """Light-client skipping rule: signers from this (trusted) set hold > numerator/denominator."""
        power = self._signed_power(chain_id, commit, ignore_unknown=True)
        if power * denominator <= self.total_power * numerator:
            raise InvalidCommit(f"only {power} of {self.total_power} trusted power signed")

    def _signed_power(self, chain_id: int, commit: Commit, ignore_unknown: bool = False) -> int:
        seen: set[bytes] = set()
        power = 0
        for vote in commit.votes():
            if vote.validator in seen:
                raise InvalidCommit("validator signed the commit twice")
            seen.add(vote.validator)
            validator = self.get(vote.validator)
            if validator is None:
                if ignore_unknown:
                    continue
                raise InvalidCommit("commit signed by a non-validator")
            try:
                vote.signer(chain_id)
            except (BadSignature, MalformedMessage) as exc:
                raise InvalidCommit(f"bad commit signature: {exc}") from None
            power += validator.power
        return power


def validators_from_pairs(pairs: Sequence[tuple[bytes, int]]) -> ValidatorSet:
    return ValidatorSet([Validator(a, p) for a, p in pairs])


__all__ = [
    "PREVOTE", "PRECOMMIT", "NIL", "Vote", "Proposal", "Commit", "CommitSig", "EMPTY_COMMIT",
    "DuplicateVoteEvidence", "Validator", "ValidatorSet", "UnknownValidator",
]
