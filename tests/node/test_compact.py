"""Compact proposals (node/compact.py): the wire form round-trips, names the block's
attestations by the pool's ids, rebuilds the very block (same bytes, same hash) from
them, refuses ids that do not make the header's attestation root, and turns bad bytes
into MalformedMessage only."""

import os

import pytest
import rlp
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.crypto import address_of_private_key
from consensus.errors import MalformedMessage
from consensus.messages import ProposalMessage, encode_message
from consensus.types import EMPTY_COMMIT, Proposal, proposal_digest
from node.block import Block
from node.compact import (
    TAG_COMPACT_PROPOSAL,
    assemble,
    decode_compact,
    encode_compact,
    fill,
    gather,
    is_compact,
)
from vm.block import ZERO_HASH, Header
from vm.trie import compute_list_root

CHAIN_ID = 7077
KEY = os.urandom(32)


def make_block(attestations: list[bytes], root: bytes | None = None) -> Block:
    header = Header(CHAIN_ID, 5, 1_000, ZERO_HASH, address_of_private_key(KEY), ZERO_HASH,
                    ZERO_HASH, ZERO_HASH,
                    compute_list_root(attestations) if root is None else root,
                    b"\0" * 256, 30_000_000, 0, 7, ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH)
    return Block(header, [b"\x02tx"], attestations, EMPTY_COMMIT, [])


def sign(block: Block, round_: int = 0) -> Proposal:
    from consensus.crypto import sign_digest

    digest = proposal_digest(CHAIN_ID, block.height, round_, -1, block.hash)
    return Proposal(block.height, round_, 0, block.hash, address_of_private_key(KEY),
                    sign_digest(KEY, digest))


ATTESTATIONS = [os.urandom(148) for _ in range(50)]


def test_round_trip_names_attestations_by_pool_id_and_rebuilds_the_same_block():
    block = make_block(ATTESTATIONS)
    proposal = sign(block)
    wire = encode_compact(proposal, block)
    full = encode_message(ProposalMessage(proposal, block.encode()))
    assert is_compact(wire) and not is_compact(full)
    assert len(wire) < len(full) / 3  # 32-byte ids instead of ~150-byte attestations
    compact = decode_compact(wire)
    assert compact.proposal == proposal
    assert list(compact.block.attestations) == [keccak(a) for a in ATTESTATIONS]
    assert compact.block.header.hash == block.hash

    pool = {keccak(a): a for a in ATTESTATIONS[10:]}  # the pool lacks the first ten
    found, missing = gather(compact.block, pool.get)
    assert missing == list(range(10))
    # a peer's answer: the right bytes for all but index 3
    answer = [ATTESTATIONS[i] if i != 3 else os.urandom(148) for i in missing]
    assert fill(compact.block, found, missing, answer) == [3]
    assert fill(compact.block, found, [3], [ATTESTATIONS[3]]) == []
    value, rebuilt = assemble(compact.block, found)
    assert value == block.encode() and rebuilt.hash == block.hash


def test_prefilled_attestations_travel_in_full_and_need_no_pool():
    """What the proposer admitted itself (its peers may not have it yet) goes in full;
    the receiver needs only the others from its pool."""
    block = make_block(ATTESTATIONS)
    own = {keccak(a) for a in ATTESTATIONS[:5]}
    wire = encode_compact(sign(block), block, prefill=own.__contains__)
    compact = decode_compact(wire)
    assert list(compact.block.attestations[:5]) == ATTESTATIONS[:5]
    found, missing = gather(compact.block, {keccak(a): a for a in ATTESTATIONS[5:]}.get)
    assert not missing
    assert assemble(compact.block, found)[0] == block.encode()
    _, missing = gather(compact.block, {}.get)
    assert missing == list(range(5, len(ATTESTATIONS)))


def test_ids_that_do_not_make_the_headers_root_are_refused():
    """A proposer that names other attestations than its header commits to: the block
    cannot be assembled (the receiver falls back to asking for the whole block)."""
    block = make_block(ATTESTATIONS, root=compute_list_root(ATTESTATIONS[:-1]))
    compact = decode_compact(encode_compact(sign(block), block))
    found, missing = gather(compact.block, {keccak(a): a for a in ATTESTATIONS}.get)
    assert not missing
    assert assemble(compact.block, found) is None


def test_empty_block_and_tags():
    block = make_block([])
    wire = encode_compact(sign(block), block)
    assert is_compact(wire)
    assert decode_compact(wire).block.attestations == ()
    assert not is_compact(b"") and not is_compact(b"\x04") and not is_compact(b"\xc1")


def test_not_canonical_or_wrong_tag_is_malformed():
    block = make_block(ATTESTATIONS[:3])
    proposal = sign(block)
    tag, prop, compact = rlp.decode(encode_compact(proposal, block))
    with pytest.raises(MalformedMessage):
        decode_compact(rlp.encode([1, prop, compact]))
    with pytest.raises(MalformedMessage):  # not the canonical encoding of the same list
        data = rlp.encode([TAG_COMPACT_PROPOSAL, prop, compact])
        decode_compact(data[:1] + b"\x00" + data[1:])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_malformed(data):
    for raw in (data, bytes([0xF8, len(data) + 1, TAG_COMPACT_PROPOSAL]) + data):
        try:
            decode_compact(raw)
        except MalformedMessage:
            pass
