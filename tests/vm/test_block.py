import pytest
import rlp
from eth.db.trie import make_trie_root_and_nodes
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import Validator, ValidatorSet
from vm.block import EMPTY_ROOT, Header, rlp_uint, validators_hash
from vm.errors import InvalidBlock
from vm.trie import compute_list_root


class _Raw:
    def __init__(self, b: bytes) -> None:
        self.b = b

    def encode(self) -> bytes:
        return self.b


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), max_size=300))
def test_list_root_matches_py_evm_trie(items):
    expected = make_trie_root_and_nodes(tuple(_Raw(i) for i in items))[0] if items else EMPTY_ROOT
    assert compute_list_root(items) == expected


@given(st.lists(st.tuples(st.binary(min_size=20, max_size=20), st.integers(1, 10**6)),
                unique_by=lambda t: t[0], max_size=20))
def test_validators_hash_matches_consensus_encoding(pairs):
    if not pairs:
        return
    assert validators_hash(pairs) == ValidatorSet([Validator(a, p) for a, p in pairs]).hash()


HEADER_FIELDS = st.tuples(
    st.integers(0, 2**63), st.integers(0, 2**63), st.integers(0, 2**63), st.binary(min_size=32, max_size=32),
    st.binary(min_size=20, max_size=20), *[st.binary(min_size=32, max_size=32)] * 4,
    st.binary(min_size=256, max_size=256), *[st.integers(0, 2**64)] * 3, *[st.binary(min_size=32, max_size=32)] * 4,
)


@given(HEADER_FIELDS)
def test_header_round_trip(fields):
    h = Header(*fields)
    again = Header.decode(h.encode())
    assert again == h and again.hash == h.hash


@given(st.binary(max_size=3000))
def test_header_decoder_only_raises_typed_error(data):
    try:
        Header.decode(data)
    except InvalidBlock:
        pass


@given(st.integers(min_value=0, max_value=2**400))
def test_rlp_uint_is_rlp_of_the_integer(value):
    assert rlp_uint(value) == rlp.encode(value)


def test_rlp_uint_refuses_negative_integers():
    with pytest.raises(OverflowError):
        rlp_uint(-1)
