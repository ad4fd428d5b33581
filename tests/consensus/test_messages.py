"""The consensus wire envelope: round trips, limits, and bad bytes only ever raise
MalformedMessage."""

from __future__ import annotations

import pytest
import rlp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.errors import MalformedMessage
from consensus.messages import (
    MAX_ENVELOPE_BYTES,
    MAX_VALUE_BYTES,
    CommitMessage,
    ProposalMessage,
    decode_message,
    encode_message,
)
from consensus.types import Commit, Proposal, Vote
from tests.consensus.helpers import ADDRESSES, CHAIN_ID, KEYS, NIL, PRECOMMIT, PREVOTE, h

VALUE = b"valid block"


def _vote(vote_type: int = PREVOTE, block_hash: bytes = h(VALUE), round_: int = 0) -> Vote:
    return Vote.create(CHAIN_ID, KEYS[1], vote_type, 9, round_, block_hash, ADDRESSES[1])


def _proposal(value: bytes = VALUE, pol_round: int = -1) -> ProposalMessage:
    p = Proposal.create(CHAIN_ID, KEYS[0], 9, 2, pol_round, h(value), ADDRESSES[0])
    return ProposalMessage(p, value)


def _commit() -> CommitMessage:
    votes = [Vote.create(CHAIN_ID, k, PRECOMMIT, 9, 1, h(VALUE), a)
             for k, a in zip(KEYS[:3], ADDRESSES[:3], strict=True)]
    return CommitMessage(Commit.from_votes(9, 1, h(VALUE), votes), VALUE)


SAMPLES = {
    "prevote": _vote(),
    "nil precommit": _vote(PRECOMMIT, NIL, 4),
    "proposal": _proposal(),
    "proposal with pol": _proposal(pol_round=1),
    "empty value": _proposal(b""),
    "commit": _commit(),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_round_trip(name) -> None:
    message = SAMPLES[name]
    data = encode_message(message)
    assert decode_message(data) == message
    assert decode_message(bytearray(data)) == message


def test_largest_value_fits_and_one_byte_more_does_not() -> None:
    big = _proposal(b"v" * MAX_VALUE_BYTES)
    assert decode_message(encode_message(big)) == big
    with pytest.raises(MalformedMessage):
        decode_message(encode_message(_proposal(b"v" * (MAX_VALUE_BYTES + 1))))
    with pytest.raises(MalformedMessage):
        decode_message(b"\x00" * (MAX_ENVELOPE_BYTES + 1))


def _fields(message: Vote | Proposal) -> list:
    return [getattr(message, name) for name, _ in type(message)._meta.fields]


BAD = [
    ("empty", b""),
    ("not a list", rlp.encode(b"hello")),
    ("empty list", rlp.encode([])),
    ("unknown tag", rlp.encode([9, _vote()])),
    ("tag as list", rlp.encode([[1], _vote()])),
    ("vote with extra item", rlp.encode([2, _vote(), b""])),
    ("vote of unknown type", rlp.encode([2, [3, *_fields(_vote())[1:]]])),
    ("vote hash of 31 bytes", rlp.encode([2, [1, 9, 0, b"\x01" * 31, *_fields(_vote())[4:]]])),
    ("vote without signature", rlp.encode([2, [*_fields(_vote())[:5], b""]])),
    ("proposal without value", rlp.encode([1, _proposal().proposal])),
    ("proposal value is a list", rlp.encode([1, _proposal().proposal, [b"x"]])),
    ("pol_round not below round",
     rlp.encode([1, [9, 2, 3, *_fields(_proposal().proposal)[3:]], VALUE])),
    ("round out of range", rlp.encode([2, [1, 9, 2**40, *_fields(_vote())[3:]]])),
    ("commit without signatures", rlp.encode([3, [9, 1, h(VALUE), []], VALUE])),
    ("non-canonical integer", b"\xc3\x81\x02\xc0"),
    ("trailing bytes", encode_message(_vote()) + b"\x00"),
    ("deeply nested", b"\xf9\x01\x00" + b"\xc1" * 255 + b"\xc0"),
]


def _nested(depth: int) -> bytes:
    """A list nested ``depth`` deep, built without recursion."""
    data = b"\xc0"
    for _ in range(depth):
        n = len(data)
        if n < 56:
            data = bytes([0xC0 + n]) + data
        else:
            size = n.to_bytes((n.bit_length() + 7) // 8, "big")
            data = bytes([0xF7 + len(size)]) + size + data
    return data


def test_nesting_deeper_than_the_recursion_limit_is_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode_message(_nested(5000))


@pytest.mark.parametrize("name,data", BAD, ids=[b[0] for b in BAD])
def test_bad_bytes_are_malformed(name, data) -> None:
    with pytest.raises(MalformedMessage) as info:
        decode_message(data)
    assert info.value.code == "malformed"


def test_non_bytes_are_malformed() -> None:
    with pytest.raises(MalformedMessage):
        decode_message("text")  # type: ignore[arg-type]


def _decode_or_malformed(data: bytes) -> None:
    try:
        message = decode_message(data)
    except MalformedMessage:
        return
    assert encode_message(message) == data  # whatever decodes is canonical


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    _decode_or_malformed(data)


_rlp_items = st.recursive(
    st.binary(max_size=70) | st.integers(0, 2**70),
    lambda children: st.lists(children, max_size=7),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 4), _rlp_items)
def test_random_rlp_structures_only_raise_malformed(tag: int, body) -> None:
    _decode_or_malformed(rlp.encode([tag, body]))
    _decode_or_malformed(rlp.encode([tag, body, b"value"]))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(SAMPLES)), st.data())
def test_mutated_valid_messages_only_raise_malformed(name: str, data) -> None:
    encoded = bytearray(encode_message(SAMPLES[name]))
    for _ in range(data.draw(st.integers(1, 4))):
        choice = data.draw(st.integers(0, 2))
        at = data.draw(st.integers(0, len(encoded) - 1))
        if choice == 0:
            encoded[at] = data.draw(st.integers(0, 255))
        elif choice == 1:
            del encoded[at:at + data.draw(st.integers(1, 8))]
        else:
            encoded[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        if not encoded:
            break
    _decode_or_malformed(bytes(encoded))
