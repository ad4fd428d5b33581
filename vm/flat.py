"""The flat account snapshot that execution reads instead of the state trie.

The node keeps, beside the trie, every account of the head state under the key
``keccak(address)`` (docs/storage.md, "Flat state snapshot"). A state made on the head's
root reads accounts there with one lookup instead of a walk down the trie; the trie is
still updated once per block for the state root and serves older roots and proofs.

This module holds what the VM side needs and nothing of LevelDB: the reader protocol
the node implements, the per-block diff a state publishes for the node to commit,
:func:`trie_root_from_sorted`, the state root of a whole key set (what ``motus db
check`` compares with the header, and how benchmarks build large states), and
:func:`iter_trie_items`. Tries are written by :func:`vm.trie.update_trie`, the node's
one trie writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol

from eth.constants import BLANK_ROOT_HASH

from vm.trie import NODE_EXTENSION, NODE_LEAF, TrieNodes, update_trie


class FlatReader(Protocol):
    """The head state's accounts by hashed address, and their storage slots. ``root`` is
    the state root they are the accounts of; it is ``None`` while a commit is rewriting
    them, so a reader that checks ``root`` before and after a read never takes a value
    of another state."""

    root: bytes | None

    def account(self, hashed_address: bytes) -> bytes | None:
        """The account's RLP, or None if the account does not exist."""

    def slot(self, hashed_address: bytes, hashed_slot: bytes) -> bytes | None:
        """The storage slot's RLP (the value its storage trie holds at ``hashed_slot``),
        or None if the slot is empty."""


@dataclass
class FlatDiff:
    """What a block changed in the flat snapshot, from the state ``parent_root`` to
    ``root``: ``accounts``: hashed address -> new RLP (None when deleted); ``slots``:
    hashed address -> hashed slot -> new RLP (b"" when emptied); ``wiped``: hashed
    address -> the account's storage root at ``root``, for an account whose storage was
    wiped (its slot entries are replaced by that trie's)."""

    parent_root: bytes
    root: bytes
    accounts: dict[bytes, bytes | None] = field(default_factory=dict)
    slots: dict[bytes, dict[bytes, bytes]] = field(default_factory=dict)
    wiped: dict[bytes, bytes] = field(default_factory=dict)


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


ROOT_CHUNK = 50_000
"""Keys :func:`trie_root_from_sorted` holds at a time when it only computes a root (a few
tens of MB: the keys, update_trie's hex keys and the chunk's new nodes)."""


def trie_root_from_sorted(items: Iterable[tuple[bytes, bytes]],
                          nodes: MutableMapping[bytes, bytes] | None = None, *,
                          chunk: int | None = None) -> bytes:
    """Root of the hexary Merkle Patricia trie holding ``items`` (key, value) whose keys
    come in strictly ascending order, values non-empty: the same root
    ``trie.HexaryTrie`` gives for the same set (vm.trie.update_trie on the empty trie).
    With ``nodes``, every node of 32 bytes or more is stored there under its hash (as
    HexaryTrie stores them), and the root node: the whole set is held at once.

    Without ``nodes`` (a root computed only to be compared: ``motus db check``) memory
    is bounded whatever the number of items: they are consumed lazily, ``chunk`` at a
    time (default :data:`ROOT_CHUNK`), each chunk added to the trie of the ones before by
    update_trie. Keys come in ascending order, so a chunk's keys all sort after every
    key already in the trie and update_trie reads no node but those on the path to the
    largest key so far (any node above a new key is above that one too); only those few
    nodes are kept between chunks."""
    if nodes is not None:
        root, _ = update_trie(TrieNodes({}), BLANK_ROOT_HASH, items, keep=False, writes=nodes)
        return root
    size = ROOT_CHUNK if chunk is None else chunk
    root = BLANK_ROOT_HASH
    spine: dict[bytes, bytes] = {}
    pending = iter(items)
    last: bytes | None = None
    while True:
        part = list(islice(pending, size))
        if not part:
            return root
        if last is not None and part[0][0] <= last:
            raise ValueError("keys are not in strictly ascending order")
        last = part[-1][0]
        root, writes = update_trie(TrieNodes(spine, max_nodes=256), root, part, keep=False, writes={})
        spine = _path_nodes(writes, root, last.hex())


def _path_nodes(writes: Mapping[bytes, bytes], root: bytes, key: str) -> dict[bytes, bytes]:
    """The encoded nodes on the path from ``root`` to ``key`` (hex nibbles), which the
    update that inserted ``key`` wrote, all of them: so they are in ``writes``. Embedded
    nodes (under 32 bytes) are part of their parent's bytes."""
    out: dict[bytes, bytes] = {}
    ref: object = root
    depth = 0
    while ref is not None:
        if type(ref) is bytes:
            raw = writes[ref]
            out[ref] = raw
            node = TrieNodes({ref: raw}, max_nodes=1).node(ref)
        else:
            node = ref
        kind = node[0]
        if kind == NODE_LEAF:
            break
        if kind == NODE_EXTENSION:
            depth += len(node[1])
            ref = node[2]
        else:
            if depth >= len(key):
                break
            ref = node[1][int(key[depth], 16)]
            depth += 1
    return out


class _Getter:
    __slots__ = ("get",)

    def __init__(self, get: Callable[[bytes], bytes]) -> None:
        self.get = get

    def __getitem__(self, key: bytes) -> bytes:
        return self.get(key)


def iter_trie_items(get: Callable[[bytes], bytes], root: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the trie at ``root`` in ascending key order, reading nodes
    with ``get(hash)`` (KeyError for a missing node propagates). Keys are whole bytes
    (tries of hashed keys)."""
    if root == BLANK_ROOT_HASH:
        return
    # each node is read once: nothing worth keeping decoded
    nodes = TrieNodes(_Getter(get), max_nodes=1)

    def walk(ref: object, path: str) -> Iterator[tuple[bytes, bytes]]:
        node = nodes.node(ref)
        kind = node[0]
        if kind == NODE_LEAF:
            yield bytes.fromhex(path + node[1]), node[2]
        elif kind == NODE_EXTENSION:
            yield from walk(node[2], path + node[1])
        else:
            if node[2]:
                yield bytes.fromhex(path), node[2]
            for i, child in enumerate(node[1]):
                if child is not None:
                    yield from walk(child, path + "0123456789abcdef"[i])

    yield from walk(root, "")
