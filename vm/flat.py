"""The flat account snapshot that execution reads instead of the state trie.

The node keeps, beside the trie, every account of the head state under the key
``keccak(address)`` (docs/storage.md, "Flat state snapshot"). A state made on the head's
root reads accounts there with one lookup instead of a walk down the trie; the trie is
still updated once per block for the state root and serves older roots and proofs.

This module holds what the VM side needs and nothing of LevelDB: the reader protocol
the node implements, the per-block diff a state publishes for the node to commit, and
:func:`trie_root_from_sorted`, the state root of a whole key set built bottom-up (what
``motus db check`` compares with the header, and how benchmarks build large states).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import rlp
from eth.constants import BLANK_ROOT_HASH

from vm.block import rlp_encode
from vm.crypto import keccak256


class FlatReader(Protocol):
    """The head state's accounts by hashed address. ``root`` is the state root they are
    the accounts of; it is ``None`` while a commit is rewriting them, so a reader that
    checks ``root`` before and after a read never takes a value of another state."""

    root: bytes | None

    def account(self, hashed_address: bytes) -> bytes | None:
        """The account's RLP, or None if the account does not exist."""


@dataclass
class FlatDiff:
    """What a block changed in the flat accounts: hashed address -> new RLP (None when
    deleted), from the state ``parent_root`` to ``root``."""

    parent_root: bytes
    root: bytes
    accounts: dict[bytes, bytes | None] = field(default_factory=dict)


def flat_reader_of(db: object) -> FlatReader | None:
    """The flat reader under a chain of overlays (``vm.db.OverlayDB``), if the base has one."""
    seen = 0
    while db is not None and seen < 16:
        reader = getattr(db, "flat", None)
        if reader is not None:
            return reader  # type: ignore[no-any-return]
        db = getattr(db, "_base", None)
        seen += 1
    return None


def publish_diff(db: object, diff: FlatDiff) -> None:
    """Hand a state's diff to the overlay it writes into (the one the node commits)."""
    diffs = getattr(db, "flat_diffs", None)
    if diffs is not None:
        diffs[diff.root] = diff


# --- the root of a sorted key set ----------------------------------------------------


def _nibbles(key: bytes) -> bytes:
    out = bytearray(len(key) * 2)
    out[0::2] = bytes(b >> 4 for b in key)
    out[1::2] = bytes(b & 15 for b in key)
    return bytes(out)


def _hex_prefix(nibbles: bytes, leaf: bool) -> bytes:
    flag = 2 if leaf else 0
    if len(nibbles) % 2:
        first = bytes(((flag + 1) << 4 | nibbles[0],))
        rest = nibbles[1:]
    else:
        first = bytes((flag << 4,))
        rest = nibbles
    return first + bytes(rest[i] << 4 | rest[i + 1] for i in range(0, len(rest), 2))


def _ref(node: list, nodes: MutableMapping[bytes, bytes] | None) -> object:
    """How a parent refers to ``node``: the node itself under 32 encoded bytes, else its
    hash (the node then stored in ``nodes``)."""
    encoded = rlp_encode(node)
    if len(encoded) < 32:
        return node
    h = keccak256(encoded)
    if nodes is not None:
        nodes[h] = encoded
    return h


def _build(keyed: list[tuple[bytes, bytes]], lo: int, hi: int, depth: int,
           nodes: MutableMapping[bytes, bytes] | None) -> list:
    """The node holding ``keyed[lo:hi]`` (nibble keys, ascending, one length, values
    non-empty), which agree on their first ``depth`` nibbles."""
    first = keyed[lo][0]
    if hi - lo == 1:
        return [_hex_prefix(first[depth:], True), keyed[lo][1]]
    last = keyed[hi - 1][0]
    common = depth
    while first[common] == last[common]:
        common += 1
    if common > depth:
        return [_hex_prefix(first[depth:common], False), _ref(_build(keyed, lo, hi, common, nodes), nodes)]
    branch: list = [b""] * 17
    start = lo
    while start < hi:
        nibble = keyed[start][0][depth]
        end = start + 1
        while end < hi and keyed[end][0][depth] == nibble:
            end += 1
        branch[nibble] = _ref(_build(keyed, start, end, depth + 1, nodes), nodes)
        start = end
    return branch


def _root_of(node: list | None, nodes: MutableMapping[bytes, bytes] | None) -> bytes:
    if node is None:
        return BLANK_ROOT_HASH
    encoded_root = rlp_encode(node)
    root = keccak256(encoded_root)
    if nodes is not None:
        nodes[root] = encoded_root
    return root


def _check_ascending(keyed: Sequence[tuple[bytes, object]]) -> None:
    for i in range(1, len(keyed)):
        if keyed[i - 1][0] >= keyed[i][0]:
            raise ValueError("keys are not in strictly ascending order")


def trie_root_from_sorted(items: Iterable[tuple[bytes, bytes]],
                          nodes: MutableMapping[bytes, bytes] | None = None) -> bytes:
    """Root of the hexary Merkle Patricia trie holding ``items`` (key, value) whose keys
    all have one length and come in ascending order, values non-empty: the same root
    ``trie.HexaryTrie`` gives for the same set. With ``nodes``, every node of 32 bytes
    or more is stored there under its hash (as HexaryTrie stores them)."""
    keyed = [(_nibbles(k), v) for k, v in items]
    _check_ascending(keyed)
    return _root_of(_build(keyed, 0, len(keyed), 0, nodes) if keyed else None, nodes)


def update_trie_sorted(get: Callable[[bytes], bytes], root: bytes,
                       changes: Iterable[tuple[bytes, bytes | None]],
                       nodes: MutableMapping[bytes, bytes],
                       old_values: Mapping[bytes, bytes] | None = None) -> bytes:
    """The root after applying ``changes`` (key, new value or None to delete; keys of the
    trie's one key length, ascending) to the trie at ``root``, whose nodes ``get(hash)``
    reads. New nodes go to ``nodes``; none is deleted (old roots stay readable).

    One pass over the sorted keys: every node on the changed paths is read once and
    encoded and hashed once per block, where setting the keys one by one re-hashes the
    upper levels once per key. Same root as ``HexaryTrie`` (tests/vm/test_flat.py).

    ``old_values`` (key -> value before the change, for keys that had one; the flat
    snapshot knows them) saves reading the leaf of a changed key: a leaf is known
    from its key and value, so when the hash of that leaf is the branch's reference the
    node is not read. A wrong or missing old value only costs the read."""
    keyed = [(_nibbles(k), v) for k, v in changes]
    _check_ascending(keyed)
    if not keyed:
        return root
    if old_values:
        olds = {_nibbles(k): v for k, v in old_values.items() if v}
        resolve = _leaf_guessing_resolver(get, olds)
    else:
        resolve = _resolve_with(get)
    node = None if root == BLANK_ROOT_HASH else decode_node(get(root))
    return _root_of(_update(resolve, node, keyed, 0, len(keyed), 0, nodes), nodes)


def _resolve_with(get: Callable[[bytes], bytes]) -> Callable[[object, bytes, int, int], list | None]:
    def resolve(ref: object, key: bytes, depth: int, count: int) -> list | None:
        return _resolve(get, ref)
    return resolve


def _leaf_guessing_resolver(get: Callable[[bytes], bytes],
                            olds: dict[bytes, bytes]) -> Callable[[object, bytes, int, int], list | None]:
    def resolve(ref: object, key: bytes, depth: int, count: int) -> list | None:
        # one changed key below a hash reference: if it is that key's leaf, no read
        if count == 1 and isinstance(ref, bytes) and len(ref) == 32:
            old = olds.get(key)
            if old is not None:
                leaf = [_hex_prefix(key[depth:], True), old]
                if keccak256(rlp_encode(leaf)) == ref:
                    return leaf
        return _resolve(get, ref)
    return resolve


def _resolve(get: Callable[[bytes], bytes], ref: object) -> list | None:
    if isinstance(ref, list):
        return ref
    if ref == b"":
        return None
    return decode_node(get(ref))  # type: ignore[arg-type]


def decode_node(raw: bytes) -> list:
    """A stored trie node's RLP as ``rlp.decode`` gives it: the common shapes (a list of
    strings: a branch of hashes, a leaf, an extension to a hash) decoded inline, a node
    with an embedded child by the generic decoder."""
    b0 = raw[0]
    i = 1 if b0 < 0xF8 else 1 + b0 - 0xF7
    n = len(raw)
    out = []
    while i < n:
        c = raw[i]
        if c < 0x80:
            out.append(raw[i:i + 1])
            i += 1
        elif c <= 0xB7:
            end = i + 1 + c - 0x80
            out.append(raw[i + 1:end])
            i = end
        elif c <= 0xBF:
            start = i + 1 + c - 0xB7
            end = start + int.from_bytes(raw[i + 1:start], "big")
            out.append(raw[start:end])
            i = end
        else:
            return rlp.decode(raw)  # type: ignore[no-any-return]
    return out


def _decode_path(encoded: bytes) -> tuple[bytes, bool]:
    flag = encoded[0] >> 4
    nibbles = _nibbles(encoded[1:])
    if flag & 1:
        nibbles = bytes((encoded[0] & 15,)) + nibbles
    return nibbles, bool(flag & 2)


def _update(resolve: Callable[[object, bytes, int, int], list | None], node: list | None, keyed: list,
            lo: int, hi: int, depth: int, nodes: MutableMapping[bytes, bytes]) -> list | None:
    """``node`` (at ``depth`` nibbles) with ``keyed[lo:hi]`` applied; None when empty."""
    if node is None or len(node) == 2 and _decode_path(node[0])[1]:
        # empty or a leaf: the few keys here are rebuilt from scratch
        items: dict[bytes, bytes] = {}
        if node is not None:
            rest, _ = _decode_path(node[0])
            items[keyed[lo][0][:depth] + rest] = node[1]
        for k, v in keyed[lo:hi]:
            if v is None:
                items.pop(k, None)
            else:
                items[k] = v
        if not items:
            return None
        merged = sorted(items.items())
        return _build(merged, 0, len(merged), depth, nodes)
    if len(node) == 2:
        path, _ = _decode_path(node[0])
        n = len(path)
        if all(keyed[i][0][depth:depth + n] == path for i in (lo, hi - 1)):
            child = _update(resolve, resolve(node[1], keyed[lo][0], depth + n, hi - lo), keyed, lo, hi,
                            depth + n, nodes)
            return _with_prefix(path, child, nodes)
        # a key leaves the extension: look at it as the branch it starts with
        branch: list = [b""] * 17
        # (the shortened extension stays a structure: hashed below only if still there)
        branch[path[0]] = node[1] if n == 1 else [_hex_prefix(path[1:], False), node[1]]
        node = branch
    children = list(node)
    start = lo
    while start < hi:
        nibble = keyed[start][0][depth]
        end = start + 1
        while end < hi and keyed[end][0][depth] == nibble:
            end += 1
        child = _update(resolve, resolve(children[nibble], keyed[start][0], depth + 1, end - start),
                        keyed, start, end, depth + 1, nodes)
        children[nibble] = b"" if child is None else child  # hashed at the end, if kept
        start = end
    present = [i for i in range(16) if children[i] != b""]
    if children[16] != b"" or len(present) > 1:
        return [_ref(c, nodes) if isinstance(c, list) else c for c in children]
    if not present:
        return None
    only = present[0]
    return _with_prefix(bytes((only,)), resolve(children[only], b"", depth + 1, 0), nodes)


def _with_prefix(prefix: bytes, child: list | None, nodes: MutableMapping[bytes, bytes]) -> list | None:
    """``child`` reached through ``prefix`` nibbles, in canonical form: a leaf or an
    extension absorbs the prefix, a branch gets an extension in front."""
    if child is None:
        return None
    if len(child) == 2:
        path, leaf = _decode_path(child[0])
        return [_hex_prefix(prefix + path, leaf), child[1]]
    return [_hex_prefix(prefix, False), _ref(child, nodes)]


def iter_trie_items(get: Callable[[bytes], bytes], root: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the trie at ``root`` in ascending key order, reading nodes
    with ``get(hash)`` (KeyError for a missing node propagates). Keys are whole bytes
    (tries of hashed keys)."""
    if root == BLANK_ROOT_HASH:
        return

    def walk(ref: object, path: bytes) -> Iterator[tuple[bytes, bytes]]:
        if isinstance(ref, bytes):
            if ref == b"":
                return
            node = rlp.decode(get(ref)) if len(ref) == 32 else rlp.decode(ref)
        else:
            node = ref
        if len(node) == 17:
            if node[16] != b"":
                yield _pack(path), node[16]
            for i in range(16):
                if node[i] != b"":
                    yield from walk(node[i], path + bytes((i,)))
            return
        encoded_path, child = node
        flag = encoded_path[0] >> 4
        nibbles = _nibbles(encoded_path[1:])
        if flag & 1:
            nibbles = bytes((encoded_path[0] & 15,)) + nibbles
        if flag & 2:
            yield _pack(path + nibbles), child
        else:
            yield from walk(child, path + nibbles)

    yield from walk(root, b"")


def _pack(nibbles: bytes) -> bytes:
    return bytes(nibbles[i] << 4 | nibbles[i + 1] for i in range(0, len(nibbles), 2))
