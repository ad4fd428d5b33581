"""Consensus messages on the wire: a tagged RLP envelope around a vote, a proposal
or a commit.

``[1, proposal, value]`` carries a signed :class:`Proposal` together with the
block value it names; ``[2, vote]`` carries a signed :class:`Vote`;
``[3, commit, value]`` carries a decided block value with its :class:`Commit`,
sent to peers that are still voting at a height already decided. Decoding is
strict: size-limited, canonical (re-encoding gives the same bytes), with every
field range checked, and any bad input raises :class:`MalformedMessage`, never
another exception. Signatures are not checked here; the machine checks them
against the validator set of the message's height.
"""

from __future__ import annotations

from dataclasses import dataclass

import rlp
from rlp.exceptions import RLPException

from codec.rlp import decode_items
from consensus.crypto import SIGNATURE_LENGTH
from consensus.errors import MalformedMessage
from consensus.types import VOTE_TYPES, Commit, Proposal, Vote

TAG_PROPOSAL = 1
TAG_VOTE = 2
TAG_COMMIT = 3

MAX_VALUE_BYTES = 2 * 1024 * 1024  # a block value, i.e. a whole encoded block
MAX_COMMIT_SIGNATURES = 1000  # 1000 * ~90 bytes of CommitSig
MAX_ENVELOPE_BYTES = MAX_VALUE_BYTES + 128 * 1024  # block + proposal or commit + framing
MAX_HEIGHT = 2**63 - 1
# [3, [height, round, block_hash, [[validator, signature], ...]], value]: a commit's
# signature pairs sit 4 lists deep; the outer list, tag, commit list, its 3 fields, the
# signature list and the value are 8 items, each signature pair 3.
MESSAGE_MAX_DEPTH = 4
MESSAGE_MAX_ITEMS = 8 + 3 * MAX_COMMIT_SIGNATURES
MAX_ROUND = 2**31 - 1


@dataclass(frozen=True)
class ProposalMessage:
    """A signed proposal and the block value whose hash it signs."""

    proposal: Proposal
    value: bytes

    @property
    def height(self) -> int:
        return self.proposal.height

    @property
    def round(self) -> int:
        return self.proposal.round


@dataclass(frozen=True)
class CommitMessage:
    """A decided block value and the commit (>2/3 precommits) that decided it."""

    commit: Commit
    value: bytes

    @property
    def height(self) -> int:
        return self.commit.height

    @property
    def round(self) -> int:
        return self.commit.round


ConsensusMessage = ProposalMessage | Vote | CommitMessage


def encode_message(message: ConsensusMessage) -> bytes:
    """The canonical wire bytes of ``message``; ``decode_message`` inverts it."""
    if isinstance(message, ProposalMessage):
        return rlp.encode([TAG_PROPOSAL, message.proposal, message.value])
    if isinstance(message, Vote):
        return rlp.encode([TAG_VOTE, message])
    if isinstance(message, CommitMessage):
        return rlp.encode([TAG_COMMIT, message.commit, message.value])
    raise TypeError(f"not a consensus message: {type(message).__name__}")


def decode_message(data: bytes) -> ConsensusMessage:
    """Parse wire bytes into a vote or proposal message; raises only MalformedMessage."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise MalformedMessage("consensus message: expected bytes")
    data = bytes(data)
    if len(data) > MAX_ENVELOPE_BYTES:
        raise MalformedMessage(f"consensus message: {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        message = _message_of_items(
            decode_items(data, max_depth=MESSAGE_MAX_DEPTH, max_items=MESSAGE_MAX_ITEMS)
        )
        canonical = encode_message(message) == data
    except MalformedMessage:
        raise
    # the bounded decoder raises RLPDecodeError (an RLPException), sedes their own tree
    # plus plain errors on odd shapes
    except (RLPException, ValueError, TypeError, IndexError, OverflowError) as exc:
        code = getattr(exc, "code", type(exc).__name__)  # the bounded decoder's stable code
        raise MalformedMessage(f"consensus message: {code}: {exc}") from None
    if not canonical:
        raise MalformedMessage("consensus message: not in canonical encoding")
    return message


def _message_of_items(items: object) -> ConsensusMessage:
    if not isinstance(items, list) or not items or not isinstance(items[0], bytes):
        raise MalformedMessage("consensus message: expected [tag, ...]")
    tag = int.from_bytes(items[0], "big")
    if tag == TAG_PROPOSAL:
        if len(items) != 3 or not isinstance(items[2], bytes):
            raise MalformedMessage("proposal message: expected [1, proposal, value]")
        if len(items[2]) > MAX_VALUE_BYTES:
            raise MalformedMessage(f"proposal message: value exceeds {MAX_VALUE_BYTES} bytes")
        proposal = Proposal.deserialize(items[1])
        check_proposal_fields(proposal)
        return ProposalMessage(proposal, items[2])
    if tag == TAG_VOTE:
        if len(items) != 2:
            raise MalformedMessage("vote message: expected [2, vote]")
        vote = Vote.deserialize(items[1])
        check_vote_fields(vote)
        return vote
    if tag == TAG_COMMIT:
        if len(items) != 3 or not isinstance(items[2], bytes):
            raise MalformedMessage("commit message: expected [3, commit, value]")
        if len(items[2]) > MAX_VALUE_BYTES:
            raise MalformedMessage(f"commit message: value exceeds {MAX_VALUE_BYTES} bytes")
        commit = Commit.deserialize(items[1])
        check_commit_fields(commit)
        return CommitMessage(commit, items[2])
    raise MalformedMessage(f"consensus message: unknown tag {tag}")


def check_vote_fields(vote: Vote) -> None:
    """Raise MalformedMessage unless every field of ``vote`` is in range (signature unchecked)."""
    if vote.type not in VOTE_TYPES:
        raise MalformedMessage(f"vote: unknown type {vote.type}")
    if len(vote.block_hash) not in (0, 32):
        raise MalformedMessage("vote: block hash must be 32 bytes or empty (nil)")
    if vote.height > MAX_HEIGHT or vote.round > MAX_ROUND:
        raise MalformedMessage("vote: height or round out of range")
    if len(vote.signature) != SIGNATURE_LENGTH:
        raise MalformedMessage("vote: missing signature")


def check_proposal_fields(proposal: Proposal) -> None:
    """Raise MalformedMessage unless every field of ``proposal`` is in range (signature unchecked)."""
    if proposal.height > MAX_HEIGHT or proposal.round > MAX_ROUND:
        raise MalformedMessage("proposal: height or round out of range")
    # a proof-of-lock round must be an earlier round of the same height (or -1 for none)
    if proposal.pol_round >= proposal.round:
        raise MalformedMessage("proposal: pol_round must be below the proposal's round")
    if len(proposal.signature) != SIGNATURE_LENGTH:
        raise MalformedMessage("proposal: missing signature")


def check_commit_fields(commit: Commit) -> None:
    """Raise MalformedMessage unless ``commit`` is in range (signatures unchecked)."""
    if commit.height > MAX_HEIGHT or commit.round > MAX_ROUND:
        raise MalformedMessage("commit: height or round out of range")
    if not commit.signatures or len(commit.signatures) > MAX_COMMIT_SIGNATURES:
        raise MalformedMessage(f"commit: needs 1 to {MAX_COMMIT_SIGNATURES} signatures")
