"""RLP nesting bombs at the size limit of every Motus decoder that reads peer or client
bytes: each is refused with the decoder's own error, and decoding costs a small multiple
of the input's size (pyrlp: nesting depth x size, e.g. ~0.5 GB for a 1.5 MB consensus
message nested 400 deep)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from consensus.errors import MalformedMessage
from consensus.messages import MAX_ENVELOPE_BYTES, decode_message
from consensus.types import (
    MAX_COMMIT_BYTES,
    MAX_MESSAGE_BYTES,
    Commit,
    DuplicateVoteEvidence,
    Proposal,
    ValidatorSet,
    Vote,
)
from node.block import MAX_BLOCK_BYTES, Block, MalformedBlock
from tests.security.bombs import rlp_bomb
from vm.block import MAX_HEADER_BYTES, Header
from vm.errors import InvalidBlock, MalformedTransaction
from vm.execute import MAX_TX_BYTES
from vm.state import decode_transaction


def bomb(total: int, levels: int) -> bytes:
    """Lists ``levels`` deep around one string, about ``total`` bytes in all."""
    return rlp_bomb(levels, max(0, total - 4 * levels - 8))


CASES: list[tuple[str, Callable[[bytes], object], int, type[Exception]]] = [
    ("vote", Vote.decode, MAX_MESSAGE_BYTES, MalformedMessage),
    ("proposal", Proposal.decode, MAX_MESSAGE_BYTES, MalformedMessage),
    ("commit", Commit.decode, MAX_COMMIT_BYTES, MalformedMessage),
    ("evidence", DuplicateVoteEvidence.decode, MAX_MESSAGE_BYTES, MalformedMessage),
    ("validator_set", ValidatorSet.decode, MAX_COMMIT_BYTES, MalformedMessage),
    ("consensus_message", decode_message, MAX_ENVELOPE_BYTES, MalformedMessage),
    ("header", Header.decode, MAX_HEADER_BYTES, InvalidBlock),
    ("block", Block.decode, MAX_BLOCK_BYTES, MalformedBlock),
    ("transaction", decode_transaction, MAX_TX_BYTES, MalformedTransaction),
]


@pytest.mark.parametrize(("name", "decode", "limit", "error"), CASES, ids=[c[0] for c in CASES])
def test_bomb_at_the_size_limit_costs_o_of_size(name, decode, limit, error) -> None:
    data = bomb(limit - 16, levels=min(400, limit // 8))
    assert len(data) <= limit
    tracemalloc.start()
    try:
        with pytest.raises(error) as err:
            decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(data) + 64 * 1024, f"{name}: peak {peak} for {len(data)} bytes"
    assert "rlp_too_deep" in str(err.value) or "nested deeper" in str(err.value)
