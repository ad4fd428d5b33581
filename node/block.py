"""The block: ``[header, transactions, attestations, last_commit, evidence]`` (docs/protocol.md),
RLP, hashed by its header. Transactions are the raw Ethereum envelopes
(legacy RLP or ``type || payload``), attestations the raw msgpack records."""

from __future__ import annotations

import rlp
from eth_hash.auto import keccak
from rlp.sedes import CountableList, binary

from codec import RLPDecodeError
from codec import rlp as bounded_rlp
from consensus.types import (
    COMMIT_SHAPE,
    EMPTY_COMMIT,
    EVIDENCE_SHAPE,
    Commit,
    DuplicateVoteEvidence,
)
from vm.block import ZERO_HASH, Header

MAX_BLOCK_BYTES = 8 * 1024 * 1024
MAX_TXS = 10_000
MAX_ATTESTATIONS = 20_000
MAX_EVIDENCE = 100
# The bounded decoder's limits (codec.rlp, docs/encoding.md): the deepest lists are the
# signature pairs of last_commit and the votes of evidence, 4 levels down.
BLOCK_MAX_DEPTH = 4
BLOCK_MAX_ITEMS = (
    1
    + 1 + len(Header._meta.fields)  # header
    + 1 + MAX_TXS
    + 1 + MAX_ATTESTATIONS
    + COMMIT_SHAPE[1]
    + 1 + MAX_EVIDENCE * EVIDENCE_SHAPE[1]
)


class MalformedBlock(Exception):
    code = "malformed_block"


class Block(rlp.Serializable):
    fields = [
        ("header", Header),
        ("transactions", CountableList(binary, max_length=MAX_TXS)),
        ("attestations", CountableList(binary, max_length=MAX_ATTESTATIONS)),
        ("last_commit", Commit),
        ("evidence", CountableList(DuplicateVoteEvidence, max_length=MAX_EVIDENCE)),
    ]

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        return rlp.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Block:
        if len(data) > MAX_BLOCK_BYTES:
            raise MalformedBlock(f"block of {len(data)} bytes exceeds {MAX_BLOCK_BYTES}")
        try:
            return bounded_rlp.decode(bytes(data), cls, max_depth=BLOCK_MAX_DEPTH, max_items=BLOCK_MAX_ITEMS)
        except RLPDecodeError as exc:
            raise MalformedBlock(f"malformed block: {exc.code}: {exc}") from None


def commit_hash(commit: Commit) -> bytes:
    """``last_commit_hash`` of a header: zero for the first block (genesis has no commit)."""
    return ZERO_HASH if commit.height == 0 and not commit.signatures else commit.hash()


def evidence_hash(evidence: list[DuplicateVoteEvidence]) -> bytes:
    return ZERO_HASH if not evidence else keccak(rlp.encode(evidence))


__all__ = ["Block", "MalformedBlock", "commit_hash", "evidence_hash", "EMPTY_COMMIT"]
