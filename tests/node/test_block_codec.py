"""Property tests of the consensus-critical codecs: block, commit, vote, evidence.
Encode/decode round-trips, and random bytes never raise anything but the typed error."""

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.crypto import address_of_private_key
from consensus.errors import MalformedMessage
from consensus.types import PRECOMMIT, PREVOTE, Commit, DuplicateVoteEvidence, Vote
from node.block import Block, MalformedBlock
from vm.block import Header

KEYS = [os.urandom(32) for _ in range(4)]
b32 = st.binary(min_size=32, max_size=32)
b20 = st.binary(min_size=20, max_size=20)
u64 = st.integers(0, 2**64 - 1)

headers = st.builds(
    Header, u64, u64, u64, b32, b20, b32, b32, b32, b32, st.binary(min_size=256, max_size=256),
    u64, u64, u64, b32, b32, b32, b32,
)


@st.composite
def commits(draw):
    height, round_, block_hash = draw(u64), draw(st.integers(0, 1000)), draw(b32)
    signers = draw(st.lists(st.sampled_from(range(len(KEYS))), unique=True, max_size=4))
    votes = [Vote.create(7077, KEYS[i], PRECOMMIT, height, round_, block_hash, address_of_private_key(KEYS[i]))
             for i in signers]
    return Commit.from_votes(height, round_, block_hash, votes)


@st.composite
def evidence(draw):
    key = KEYS[0]
    h, r = draw(u64), draw(st.integers(0, 100))
    a, b = draw(b32), draw(b32.filter(lambda x: True))
    va = Vote.create(7077, key, PREVOTE, h, r, a, address_of_private_key(key))
    vb = Vote.create(7077, key, PREVOTE, h, r, b, address_of_private_key(key))
    return DuplicateVoteEvidence.of(va, vb)


blocks = st.builds(
    Block, headers, st.lists(st.binary(max_size=300), max_size=5), st.lists(st.binary(max_size=200), max_size=5),
    commits(), st.lists(evidence(), max_size=2),
)


@settings(max_examples=60, deadline=None)
@given(blocks)
def test_block_round_trip(block):
    again = Block.decode(block.encode())
    assert again == block and again.hash == block.hash


@settings(max_examples=60, deadline=None)
@given(commits())
def test_commit_round_trip_and_verifies_signers(commit):
    again = Commit.decode(commit.encode())
    assert again == commit and again.hash() == commit.hash()
    for vote in again.votes():
        assert vote.signer(7077) == vote.validator


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_only_raise_typed_errors(data):
    for decode, error in ((Block.decode, MalformedBlock), (Commit.decode, MalformedMessage),
                          (Vote.decode, MalformedMessage), (DuplicateVoteEvidence.decode, MalformedMessage)):
        try:
            decode(data)
        except error:
            pass


@settings(max_examples=100, deadline=None)
@given(blocks, st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_block_bytes_only_raise_typed_errors(block, position, value):
    raw = bytearray(block.encode())
    raw[position % len(raw)] = value
    try:
        Block.decode(bytes(raw))
    except MalformedBlock:
        pass


def test_oversized_block_is_refused_before_decoding():
    try:
        Block.decode(b"\x00" * (8 * 1024 * 1024 + 1))
    except MalformedBlock as exc:
        assert "exceeds" in str(exc)
    else:
        raise AssertionError("oversized block decoded")
