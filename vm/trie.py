"""Merkle Patricia trie nodes decoded once and kept by hash, and a batch writer.

py-trie walks a trie decoding every node's RLP in Python on every read and re-encodes
the whole path on every write; a block of attestations reads and writes thousands of
system-module storage slots, and that walking was most of its execution time
(docs/benchmarks.md, "Attestations at fleet scale"). Here:

- :class:`TrieNodes` decodes a node once and keeps it by hash. Nodes are
  content-addressed, so a kept node is always the node with that hash: the cache can
  never serve a stale value, only save work.
- :func:`update_root` applies a batch of inserted or changed keys to a trie in memory
  and hashes each changed node once, bottom-up, instead of once per key.
- :class:`FastStorageLookup` puts both under py-evm's account storage (vm/state.py):
  same values, same roots, same node bytes as py-trie (tests/vm/test_trie.py compares
  them on random tries), with py-trie still doing what is rare here (deleting a slot,
  wiping an account's storage).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from eth.db.cache import CacheDB
from eth.db.journal import JournalDB
from eth.db.storage import AccountStorageDB, StorageLookup
from eth.vm.interrupt import MissingStorageTrieNode
from eth_utils import int_to_big_endian

from vm.block import rlp_length_prefix
from vm.crypto import keccak256

BLANK_ROOT = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")
_BRANCH, _LEAF, _EXT = 0, 1, 2
_HEX = "0123456789abcdef"
_NIBBLE = {c: i for i, c in enumerate(_HEX)}


# --- decoding ------------------------------------------------------------------


def _rlp_at(data: bytes, pos: int) -> tuple[Any, int]:
    b = data[pos]
    if b < 0x80:
        return data[pos:pos + 1], pos + 1
    if b < 0xB8:
        end = pos + 1 + b - 0x80
        return data[pos + 1:end], end
    if b < 0xC0:
        start = pos + 1 + b - 0xB7
        end = start + int.from_bytes(data[pos + 1:start], "big")
        return data[start:end], end
    if b < 0xF8:
        start, end = pos + 1, pos + 1 + b - 0xC0
    else:
        start = pos + 1 + b - 0xF7
        end = start + int.from_bytes(data[pos + 1:start], "big")
    items = []
    while start < end:
        item, start = _rlp_at(data, start)
        items.append(item)
    return items, end


def rlp_decode(data: bytes) -> Any:
    """RLP decoding of trusted data (trie nodes this node wrote): no validation."""
    return _rlp_at(data, 0)[0]


def _compile(raw: Any) -> Any:
    """A decoded trie node as (kind, ...) with its path in hex nibbles."""
    if raw == b"" or raw == []:
        return None
    if len(raw) == 17:
        return (_BRANCH, tuple(_child(c) for c in raw[:16]), raw[16])
    hp = raw[0].hex()
    path = hp[2:] if hp[0] in "02" else hp[1:]
    if hp[0] in "23":
        return (_LEAF, path, raw[1])
    return (_EXT, path, _child(raw[1]))


def _child(ref: Any) -> Any:
    if isinstance(ref, list):
        return _compile(ref)  # embedded node (< 32 bytes)
    return ref or None  # node hash, or None for an empty slot


# Decoded nodes shared by every TrieNodes that is not given its own (block execution's
# storage reads): bounded, cleared whole when full (entries are only ever re-decoded).
SHARED_NODES: dict[bytes, Any] = {}
SHARED_MAX_NODES = 300_000


class TrieNodes:
    """Decoded Merkle Patricia trie nodes by hash, over any mapping of hash -> node bytes.

    ``cache`` (default: a new one) holds the decoded nodes; :data:`SHARED_NODES` may be
    shared by any number of databases, since a hash names one node wherever it is."""

    def __init__(self, db: Any, max_nodes: int = 500_000,
                 cache: dict[bytes, Any] | None = None) -> None:
        self.db = db
        self.max_nodes = max_nodes
        self._nodes: dict[bytes, Any] = {} if cache is None else cache

    def node(self, ref: Any) -> Any:
        if type(ref) is not bytes:
            return ref  # embedded or None
        node = self._nodes.get(ref)
        if node is None:
            node = _compile(rlp_decode(self.db[ref]))
            self.keep(ref, node)
        return node

    def keep(self, ref: bytes, node: Any) -> None:
        if len(self._nodes) >= self.max_nodes:
            self._nodes.clear()  # crude but safe: entries are only ever re-decoded
        self._nodes[ref] = node

    def get(self, root: bytes, key: bytes) -> bytes:
        """The value at ``key`` in the trie with ``root`` (b"" if absent)."""
        if root == BLANK_ROOT:
            return b""
        node = self.node(root)
        path = key.hex()
        while node is not None:
            if type(node) is bytes:
                node = self.node(node)
                continue
            kind = node[0]
            if kind == _BRANCH:
                if not path:
                    return node[2]
                node, path = node[1][_NIBBLE[path[0]]], path[1:]
            elif kind == _LEAF:
                return node[2] if node[1] == path else b""
            else:
                if not path.startswith(node[1]):
                    return b""
                node, path = node[2], path[len(node[1]):]
        return b""

    def changed_keys(self, old_root: bytes, new_root: bytes) -> set[str]:
        """Keys (hex) whose value differs between two tries; walks only the parts that
        differ (equal hashes are equal subtrees)."""
        out: set[str] = set()
        self._diff(None if old_root == BLANK_ROOT else old_root,
                   None if new_root == BLANK_ROOT else new_root, "", out)
        return out

    def _diff(self, a: Any, b: Any, prefix: str, out: set[str]) -> None:
        if a == b:
            return
        a, b = self.node(a), self.node(b)
        if a is not None and b is not None and a[0] == b[0] == _BRANCH:
            if a[2] != b[2]:
                out.add(prefix)
            for i in range(16):
                self._diff(a[1][i], b[1][i], prefix + _HEX[i], out)
            return
        if a is not None and b is not None and a[0] == b[0] == _EXT and a[1] == b[1]:
            self._diff(a[2], b[2], prefix + a[1], out)
            return
        left, right = dict(self._leaves(a, prefix)), dict(self._leaves(b, prefix))
        out.update(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))

    def _leaves(self, node: Any, prefix: str):
        node = self.node(node)
        if node is None:
            return
        if node[0] == _LEAF:
            yield prefix + node[1], node[2]
        elif node[0] == _EXT:
            yield from self._leaves(node[2], prefix + node[1])
        else:
            if node[2]:
                yield prefix, node[2]
            for i, child in enumerate(node[1]):
                yield from self._leaves(child, prefix + _HEX[i])


# --- batch writing ---------------------------------------------------------------
# In memory a node being changed is a list [kind, a, b] (a branch's children a list of
# 16); an unchanged one stays a hash or a decoded tuple. Nothing is hashed until all
# keys are in.


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _open(nodes: TrieNodes, node: Any) -> Any:
    """``node`` as a mutable list (loading it when it is a hash)."""
    if type(node) is bytes:
        node = nodes.node(node)
    if type(node) is tuple:
        if node[0] == _BRANCH:
            return [_BRANCH, list(node[1]), node[2]]
        return [node[0], node[1], node[2]]
    return node


def _insert(nodes: TrieNodes, node: Any, path: str, value: bytes) -> Any:
    """The node after putting ``value`` at ``path`` (hex nibbles) below it."""
    if node is None:
        return [_LEAF, path, value]
    node = _open(nodes, node)
    kind = node[0]
    if kind == _BRANCH:
        if not path:
            node[2] = value
        else:
            i = _NIBBLE[path[0]]
            node[1][i] = _insert(nodes, node[1][i], path[1:], value)
        return node
    npath = node[1]
    if kind == _LEAF and npath == path:
        node[2] = value
        return node
    n = _common_prefix(npath, path)
    if kind == _EXT and n == len(npath):
        node[2] = _insert(nodes, node[2], path[n:], value)
        return node
    children: list[Any] = [None] * 16
    branch: list[Any] = [_BRANCH, children, b""]
    rest = npath[n:]  # what the old node keeps below the new branch
    if kind == _LEAF:
        if rest:
            children[_NIBBLE[rest[0]]] = [_LEAF, rest[1:], node[2]]
        else:
            branch[2] = node[2]
    else:  # an extension: rest is not empty (n < len(npath))
        children[_NIBBLE[rest[0]]] = [_EXT, rest[1:], node[2]] if len(rest) > 1 else node[2]
    branch = _insert(nodes, branch, path[n:], value)
    return [_EXT, npath[:n], branch] if n else branch


def _hex_prefix(path: str, leaf: bool) -> bytes:
    flag = 2 if leaf else 0
    if len(path) % 2:
        return bytes.fromhex(_HEX[flag + 1] + path)
    return bytes.fromhex(_HEX[flag] + "0" + path)


def _rlp_bytes(item: bytes) -> bytes:
    n = len(item)
    if n == 1 and item[0] < 0x80:
        return item
    return rlp_length_prefix(n, 0x80) + item


_EMPTY_ITEM = b"\x80"


def _encode(nodes: TrieNodes, node: Any, writes: dict[bytes, bytes]) -> tuple[bytes, Any]:
    """(RLP of ``node``, its decoded-tuple form as TrieNodes keeps it); the changed
    descendants' encodings go to ``writes`` by hash (and to the node cache)."""
    kind = node[0]
    if kind == _BRANCH:
        refs: list[bytes] = []
        frozen: list[Any] = []
        for child in node[1]:
            if child is None:
                refs.append(_EMPTY_ITEM)
                frozen.append(None)
            elif type(child) is bytes:
                refs.append(b"\xa0" + child)
                frozen.append(child)
            else:
                ref, kept = _ref(nodes, child, writes)
                refs.append(ref)
                frozen.append(kept)
        payload = b"".join(refs) + _rlp_bytes(node[2])
        form: Any = (_BRANCH, tuple(frozen), node[2])
    elif kind == _LEAF:
        payload = _rlp_bytes(_hex_prefix(node[1], True)) + _rlp_bytes(node[2])
        form = (_LEAF, node[1], node[2])
    else:
        child = node[2]
        if type(child) is bytes:
            ref, kept = b"\xa0" + child, child
        else:
            ref, kept = _ref(nodes, child, writes)
        payload = _rlp_bytes(_hex_prefix(node[1], False)) + ref
        form = (_EXT, node[1], kept)
    return rlp_length_prefix(len(payload), 0xC0) + payload, form


def _ref(nodes: TrieNodes, child: Any, writes: dict[bytes, bytes]) -> tuple[bytes, Any]:
    """How a branch or extension refers to a node child (a list or a decoded tuple): its
    hash, or the child itself when its encoding is shorter than 32 bytes (as the trie
    specification says); with what the parent keeps in its decoded form."""
    encoded, form = _encode(nodes, child, writes)
    if len(encoded) < 32:
        return encoded, form
    digest = keccak256(encoded)
    if type(child) is list:
        writes[digest] = encoded
        nodes.keep(digest, form)
    return b"\xa0" + digest, digest


def update_root(nodes: TrieNodes, root: bytes, items: dict[bytes, bytes]
                ) -> tuple[bytes, dict[bytes, bytes]]:
    """Put ``items`` (32-byte key -> non-empty value) into the trie with ``root``; returns
    (new root, new nodes by hash). The nodes are what py-trie would write for the same
    final trie (the root node is always written, even when shorter than 32 bytes)."""
    node: Any = None if root == BLANK_ROOT else root
    for key in sorted(items):
        value = items[key]
        if not value:
            raise ValueError("update_root only inserts and changes keys")
        node = _insert(nodes, node, key.hex(), value)
    writes: dict[bytes, bytes] = {}
    if node is None:
        return BLANK_ROOT, writes
    if type(node) is bytes:
        return node, writes
    encoded, form = _encode(nodes, node, writes)
    digest = keccak256(encoded)
    writes[digest] = encoded
    nodes.keep(digest, form)
    return digest, writes


# --- under py-evm's account storage ---------------------------------------------------


class FastStorageLookup(StorageLookup):
    """py-evm's ``StorageLookup`` (one account's storage trie) with reads through
    :class:`TrieNodes` and writes collected and applied with :func:`update_root` when the
    root is asked for. Deletions and storage wipes go to py-trie as before (after the
    collected writes), so every path ends in the same trie."""

    _pending: dict[bytes, bytes] | None = None
    _fast_result: tuple[bytes, dict[bytes, bytes]] | None = None

    def _nodes(self) -> TrieNodes:
        return TrieNodes(self._db, SHARED_MAX_NODES, SHARED_NODES)

    def _decode_key(self, key: bytes) -> bytes:
        return _hashed_slot(key)

    def __getitem__(self, key: bytes) -> bytes:
        hashed = self._decode_key(key)
        pending = self._pending
        if pending and hashed in pending:
            return pending[hashed]
        if self._write_trie is None:
            try:
                return self._nodes().get(self._starting_root_hash, hashed)
            except KeyError:  # a missing node: let py-trie raise its own error
                pass
        return super().__getitem__(key)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self._write_trie is not None or not value:
            self._flush()
            super().__setitem__(key, value)
            return
        if self._pending is None:
            self._pending = {}
        self._pending[self._decode_key(key)] = value
        self._fast_result = None

    def __delitem__(self, key: bytes) -> None:
        self._flush()
        super().__delitem__(key)

    def _exists(self, key: bytes) -> bool:
        return self[key] != b""

    def _flush(self) -> None:
        """Hand the collected writes to py-trie (before a deletion or a wipe)."""
        pending, self._pending, self._fast_result = self._pending, None, None
        for hashed, value in (pending or {}).items():
            self._get_write_trie()[hashed] = value

    def _fast(self) -> tuple[bytes, dict[bytes, bytes]]:
        if self._fast_result is None:
            self._fast_result = update_root(self._nodes(), self._starting_root_hash,
                                            self._pending or {})
        return self._fast_result

    @property
    def has_changed_root(self) -> bool:
        return self._write_trie is not None or bool(self._pending)

    def get_changed_root(self):  # type: ignore[no-untyped-def]
        if self._write_trie is None and self._pending:
            return self._fast()[0]
        return super().get_changed_root()

    def commit_to(self, db) -> None:  # type: ignore[no-untyped-def]
        if self._write_trie is None and self._pending:
            root, writes = self._fast()
            for digest, encoded in writes.items():
                db[digest] = encoded
            self._initialize_to_root_hash(root)
            return
        super().commit_to(db)

    def _initialize_to_root_hash(self, root_hash) -> None:  # type: ignore[no-untyped-def]
        super()._initialize_to_root_hash(root_hash)
        self._pending = None
        self._fast_result = None

    def new_trie(self) -> int:
        self._flush()
        return super().new_trie()

    def rollback_trie(self, trie_index: int) -> None:
        self._pending = None  # writes made to the wiped trie: rolled back with it
        self._fast_result = None
        super().rollback_trie(trie_index)


@lru_cache(maxsize=1 << 18)
def _hashed_slot(key: bytes) -> bytes:
    """The trie key of a storage slot: keccak of the slot as 32 bytes (py-evm's
    ``_decode_key``, with the C Keccak, memoised: system modules read the same slots
    block after block)."""
    return keccak256(key.rjust(32, b"\x00"))


class FastAccountStorageDB(AccountStorageDB):
    """py-evm's ``AccountStorageDB`` over a :class:`FastStorageLookup` (the layers above
    the lookup rebuilt on it, as py-evm's own constructor builds them)."""

    def __init__(self, db: Any, storage_root: Any, address: Any) -> None:
        super().__init__(db, storage_root, address)
        self._storage_lookup = FastStorageLookup(db, storage_root, address)
        self._storage_cache = CacheDB(self._storage_lookup)
        self._locked_changes = JournalDB(self._storage_cache)
        self._journal_storage = JournalDB(self._locked_changes)

    def get(self, slot: int, from_journal: bool = True) -> int:
        """py-evm's ``get`` with the stored value (RLP of a big-endian integer of at most
        32 bytes, written by py-evm itself) decoded directly rather than through ``rlp``."""
        self._accessed_slots.add(slot)
        lookup_db = self._journal_storage if from_journal else self._locked_changes
        try:
            encoded = lookup_db[int_to_big_endian(slot)]
        except MissingStorageTrieNode:
            raise
        except KeyError:
            return 0
        if not encoded:
            return 0
        first = encoded[0]
        return first if first < 0x80 else int.from_bytes(encoded[1:], "big")
