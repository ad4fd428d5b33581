"""vm.flat: the bulk trie builder, the one-pass sorted updater and the leaf iterator
give exactly what trie's HexaryTrie gives, for random key sets, updates and deletes
(hashed 32-byte keys, and 1- and 2-byte keys whose small nodes are embedded)."""

from __future__ import annotations

import random

import pytest
import rlp
from eth.constants import BLANK_ROOT_HASH
from eth.rlp.accounts import Account
from trie import HexaryTrie

from vm.flat import iter_trie_items, trie_root_from_sorted
from vm.state import decode_account, encode_account
from vm.trie import TrieNodes, rlp_decode, update_trie


class _Get:
    def __init__(self, get):
        self.get = get

    def __getitem__(self, key):
        return self.get(key)


def update_trie_sorted(get, root, changes, nodes, old_values=None):
    """vm.trie.update_trie as the account trie uses it: nodes read with ``get``,
    decoded for this update only, new nodes into ``nodes``."""
    return update_trie(TrieNodes(_Get(get)), root, changes, old_values, keep=False,
                       writes=nodes)[0]


def _bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


@pytest.mark.parametrize("key_len", [1, 2, 32])
def test_build_update_and_iterate_match_hexary_trie(key_len: int) -> None:
    rng = random.Random(key_len)
    for _ in range(25):
        size = rng.randint(0, 40 if key_len == 1 else 300)
        base = {_bytes(rng, key_len): _bytes(rng, rng.choice([1, 2, 5, 70, 200])) for _ in range(size)}
        nodes: dict[bytes, bytes] = {}
        root = trie_root_from_sorted(sorted(base.items()), nodes)
        reference = HexaryTrie({})
        for k, v in base.items():
            reference[k] = v
        assert root == reference.root_hash
        for raw in nodes.values():
            assert rlp_decode(raw) == rlp.decode(raw)
        assert list(iter_trie_items(nodes.__getitem__, root)) == sorted(base.items())

        changes: dict[bytes, bytes | None] = {}
        keys = list(base)
        for _ in range(rng.randint(0, 80)):
            r = rng.random()
            if r < 0.3 and keys:
                changes[rng.choice(keys)] = None  # delete an existing key
            elif r < 0.6 and keys:
                changes[rng.choice(keys)] = _bytes(rng, rng.choice([1, 3, 70]))
            else:  # a new key, or the delete of a key that is not there
                changes[_bytes(rng, key_len)] = rng.choice([None, _bytes(rng, rng.choice([1, 3, 70]))])
        expected = dict(base)
        for k, v in changes.items():
            if v is None:
                expected.pop(k, None)
            else:
                expected[k] = v
        for k, v in changes.items():
            if v is None:
                if k in base:
                    del reference[k]
            else:
                reference[k] = v
        before = dict(nodes)
        # the old values let the updater skip leaf reads; wrong ones only cost the read
        olds = {k: base[k] for k in changes if k in base}
        wrong = {k: b"x" + v for k, v in olds.items()}
        # new nodes go to a separate map, as in MotusAccountDB: the update never reads them back
        assert update_trie_sorted(nodes.__getitem__, root, sorted(changes.items()), {}, wrong) == reference.root_hash
        assert update_trie_sorted(nodes.__getitem__, root, sorted(changes.items()), {}) == reference.root_hash
        reads: list[bytes] = []
        counting_get = _counting(nodes, reads)

        assert update_trie_sorted(counting_get, root, sorted(changes.items()), {}, olds) == reference.root_hash
        guessed_reads = len(reads)
        reads.clear()
        new_root = update_trie_sorted(counting_get, root, sorted(changes.items()), nodes)
        assert new_root == reference.root_hash
        assert guessed_reads <= len(reads)
        assert list(iter_trie_items(nodes.__getitem__, new_root)) == sorted(expected.items())
        # the old root stays readable: nothing was overwritten or deleted
        assert all(nodes[k] == v for k, v in before.items())
        assert list(iter_trie_items(nodes.__getitem__, root)) == sorted(base.items())


def _counting(nodes: dict[bytes, bytes], reads: list[bytes]):
    def get(key: bytes) -> bytes:
        reads.append(key)
        return nodes[key]
    return get


def test_delete_everything_gives_the_blank_root() -> None:
    items = sorted((bytes([i]) * 32, b"v" * 40) for i in range(5))
    nodes: dict[bytes, bytes] = {}
    root = trie_root_from_sorted(items, nodes)
    assert update_trie_sorted(nodes.__getitem__, root, [(k, None) for k, _ in items], nodes) == BLANK_ROOT_HASH
    assert update_trie_sorted(nodes.__getitem__, BLANK_ROOT_HASH, items, nodes) == root


def test_keys_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError):
        trie_root_from_sorted([(b"\x02" * 32, b"a"), (b"\x01" * 32, b"b")])
    with pytest.raises(ValueError):
        update_trie_sorted({}.__getitem__, BLANK_ROOT_HASH, [(b"\x01" * 32, b"a"), (b"\x01" * 32, None)], {})


def test_account_codec_matches_rlp() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        account = Account(rng.choice([0, 1, 127, 128, 255, 256, rng.randrange(2**64)]),
                          rng.choice([0, 1, 127, 128, rng.randrange(2**256)]), _bytes(rng, 32), _bytes(rng, 32))
        raw = rlp.encode(account)
        assert encode_account(account) == raw
        assert decode_account(raw) == account


@pytest.mark.parametrize("key_len", [1, 2, 32])
def test_root_in_chunks_matches_the_whole_set(key_len: int) -> None:
    """A root computed a few keys at a time (what bounds ``motus db check``'s memory) is
    the root of the whole set, whatever the chunk's size: the nodes kept between chunks
    (the path to the largest key) are all that adding the next keys reads."""
    rng = random.Random(100 + key_len)
    for _ in range(20):
        size = rng.randint(1, 40 if key_len == 1 else 400)
        items = sorted({_bytes(rng, key_len): _bytes(rng, rng.choice([1, 2, 5, 70])) for _ in range(size)}.items())
        whole = trie_root_from_sorted(items, {})
        for chunk in (1, 2, 3, 7, 64, size):
            assert trie_root_from_sorted(iter(items), chunk=chunk) == whole
    with pytest.raises(ValueError):  # the order is checked across chunks too
        trie_root_from_sorted([(b"\x01" * 32, b"a"), (b"\x03" * 32, b"b"), (b"\x02" * 32, b"c")], chunk=2)
