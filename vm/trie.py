"""Merkle Patricia trie nodes decoded once and kept by hash, and a batch writer.

py-trie walks a trie decoding every node's RLP in Python on every read and re-encodes
the whole path on every write; a block of attestations reads and writes thousands of
system-module storage slots, and that walking was most of its execution time
(docs/benchmarks.md, "Attestations at fleet scale"). Here:

- :class:`TrieNodes` decodes a node once and keeps it by hash. Nodes are
  content-addressed, so a kept node is always the node with that hash: the cache can
  never serve a stale value, only save work.
- :func:`update_trie` is the node's one trie writer (storage tries, the account trie,
  whole tries built from sorted keys): a sorted batch of inserted, changed or deleted
  keys applied in one walk, each changed node encoded and hashed once, bottom-up,
  instead of once per key.
- :class:`FastStorageLookup` puts both under py-evm's account storage (vm/state.py):
  same values, same roots, same node bytes as py-trie (tests/vm/test_trie.py compares
  them on random tries), with py-trie still doing what is rare here (wiping an
  account's storage). Slot values are also kept by storage root in "slot layers", so a
  block reads what its parent block wrote or read without walking the trie.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from functools import lru_cache
from typing import Any

from eth.db.cache import CacheDB
from eth.db.journal import REVERT_TO_WRAPPED, JournalDB
from eth.db.storage import AccountStorageDB, StorageLookup
from eth.vm.interrupt import MissingStorageTrieNode
from eth_utils import int_to_big_endian

from vm.block import rlp_length_prefix, rlp_uint
from vm.crypto import keccak256, keccak_new

BLANK_ROOT = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")
_BRANCH, _LEAF, _EXT = 0, 1, 2
# the kinds of a decoded node (its first element)
NODE_BRANCH, NODE_LEAF, NODE_EXTENSION = _BRANCH, _LEAF, _EXT
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


def decode_node(data: bytes, keep_bytes: bool = False) -> Any:
    """``_compile(rlp_decode(data))`` for a stored trie node, with a branch's children
    (each an empty string or a 32-byte hash, but for a rare embedded node) read in one
    loop rather than item by item through the generic decoder: every node a block's
    writes walk that is not decoded yet (after a restart, ~11,000 a block at 100,000
    vehicles) comes through here. With ``keep_bytes`` a branch with empty children and
    no value carries ``data`` as a fourth item, its encoding, for the writer to splice
    a changed child's hash into (:meth:`_Writer.update`)."""
    b = data[0]
    pos = 1 if b < 0xF8 else 1 + b - 0xF7  # past the list's own prefix
    children: list[Any] = []
    append = children.append
    try:
        for _ in range(16):
            b = data[pos]
            if b == 0xA0:
                end = pos + 33
                append(data[pos + 1:end])
                pos = end
            elif b == 0x80:
                append(None)
                pos += 1
            else:  # a leaf, an extension, or a branch with an embedded child
                return _compile(rlp_decode(data))
        value, end = _rlp_at(data, pos)
    except IndexError:  # a 2-item node whose items look like children: it ends early
        return _compile(rlp_decode(data))
    if end != len(data) or type(value) is not bytes:
        return _compile(rlp_decode(data))
    if keep_bytes and not value and None in children and type(data) is bytes:
        return (_BRANCH, tuple(children), value, data)
    return (_BRANCH, tuple(children), value)


class NodeCache:
    """Decoded nodes by hash, at most ``max_nodes``, in two generations: new entries go
    into the young one; when it holds half the bound, it becomes the old one and the old
    one is dropped (O(1)); an entry found in the old generation is moved back into the
    young one. So eviction never empties the cache: what the last blocks used (the upper
    levels of the tries every block walks) survives it, and only what went unused for a
    whole generation is decoded again. Entries are content-addressed (never stale)."""

    __slots__ = ("young", "old", "half")

    def __init__(self, max_nodes: int) -> None:
        self.young: dict[bytes, Any] = {}
        self.old: dict[bytes, Any] = {}
        self.half = max(1, max_nodes // 2)

    def get(self, ref: bytes) -> Any:
        node = self.young.get(ref)
        if node is None:
            node = self.old.get(ref)
            if node is not None:
                self.put(ref, node)  # used again: kept for another generation
        return node

    def put(self, ref: bytes, node: Any) -> None:
        young = self.young
        young[ref] = node
        if len(young) >= self.half:
            self.old, self.young = young, {}

    def room(self) -> int:
        """How many more entries the young generation takes before it turns old."""
        return self.half - len(self.young)

    def clear(self) -> None:
        self.young, self.old = {}, {}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def __contains__(self, ref: bytes) -> bool:
        return ref in self.young or ref in self.old


# Decoded nodes shared by every TrieNodes that is not given its own (block execution's
# storage reads); docs/storage.md "Caches".
SHARED_MAX_NODES = 300_000
SHARED_NODES = NodeCache(SHARED_MAX_NODES)


class TrieNodes:
    """Decoded Merkle Patricia trie nodes by hash, over any mapping of hash -> node bytes.

    ``cache`` (default: a new one of ``max_nodes``) holds the decoded nodes;
    :data:`SHARED_NODES` may be shared by any number of databases, since a hash names one
    node wherever it is. ``keep_bytes``: branches with empty children keep their
    encoding (:func:`decode_node`), which :func:`update_trie` splices new child hashes
    into rather than encoding the branch again (the storage tries' lower branches)."""

    def __init__(self, db: Any, max_nodes: int = 500_000,
                 cache: NodeCache | None = None, keep_bytes: bool = False) -> None:
        self.db = db
        self._nodes = NodeCache(max_nodes) if cache is None else cache
        self.keep_bytes = keep_bytes

    def node(self, ref: Any) -> Any:
        if type(ref) is not bytes:
            return ref  # embedded or None
        node = self._nodes.get(ref)
        if node is None:
            node = decode_node(self.db[ref], self.keep_bytes)
            self._nodes.put(ref, node)
        return node

    def keep(self, ref: bytes, node: Any) -> None:
        self._nodes.put(ref, node)

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


def warm_shared_nodes(db: Any, roots: Iterable[bytes], max_nodes: int) -> int:
    """Decode the upper levels of the tries at ``roots`` into :data:`SHARED_NODES`, level
    by level across all of them, stopping before a level that would take the total past
    ``max_nodes``; returns the number of nodes decoded. A node that has just started
    (no decoded nodes) thus pays for the upper levels of its system modules' storage
    tries, which every block's writes walk, once at start rather than in its first
    blocks. Nodes missing from ``db`` are skipped (a pruned or partial store)."""
    nodes = TrieNodes(db, SHARED_MAX_NODES, SHARED_NODES, keep_bytes=True)
    level = [r for r in roots if r != BLANK_ROOT]
    done = 0
    while level and done + len(level) <= max_nodes:
        below: list[Any] = []
        for ref in level:
            try:
                node = nodes.node(ref)
            except KeyError:
                continue
            done += 1
            if node is None:
                continue
            if node[0] == _BRANCH:
                below.extend(c for c in node[1] if type(c) is bytes)
            elif node[0] == _EXT and type(node[2]) is bytes:
                below.append(node[2])
        level = below
    return done


# --- batch writing ---------------------------------------------------------------
# The one trie writer of the node (storage tries, the account trie, whole tries built
# from scratch): the changed keys, sorted, are applied in one walk down the trie, each
# node on a changed path read once (decoded through TrieNodes), and each new node encoded
# and hashed once, bottom-up. Nodes being built are the decoded-tuple forms TrieNodes
# keeps; a child that is a tuple is either embedded (under 32 bytes) or new, and is
# hashed ("sealed") when its parent is final.


def hex_prefix(path: str, leaf: bool) -> bytes:
    """The hex-prefix (compact) encoding of a path of hex nibbles (yellow paper, app. C)."""
    if len(path) % 2:
        return bytes.fromhex(("3" if leaf else "1") + path)
    return bytes.fromhex(("20" if leaf else "00") + path)


def _rlp_bytes(item: bytes) -> bytes:
    n = len(item)
    if n < 56:
        if n == 1 and item[0] < 0x80:
            return item
        return _STRING_PREFIX[n] + item
    return rlp_length_prefix(n, 0x80) + item


# string prefixes by length up to 1 KiB, long ones too (a list root's items: attestations,
# transactions, receipts)
_STRING_PREFIX = tuple(rlp_length_prefix(n, 0x80) for n in range(1024))
# list prefixes by payload length, up to the largest branch (16 hashes and a value)
_LIST_PREFIX = tuple(rlp_length_prefix(n, 0xC0) for n in range(1024))


def encode_node(node: Any) -> bytes:
    """The RLP of a node in TrieNodes' decoded form (children sealed: hash or embedded).
    Written out without helper calls: every new node of every block is encoded here."""
    kind = node[0]
    if kind == _BRANCH:
        children = node[1]
        try:  # children are hashes or None (never b""), but for an embedded node
            if None not in children:  # sixteen children (the upper levels): one join
                payload = b"\xa0" + b"\xa0".join(children)
            else:
                payload = b"".join([b"\xa0" + c if c else b"\x80" for c in children])
        except TypeError:  # an embedded child (a node under 32 bytes): rare
            payload = b"".join([b"\x80" if c is None else b"\xa0" + c if type(c) is bytes
                                else encode_node(c) for c in node[1]])
        value = node[2]
        payload += _rlp_bytes(value) if value else b"\x80"
    elif kind == _LEAF:
        return _leaf_rlp(node[1], node[2])
    else:
        path = node[1]
        hp = bytes.fromhex("1" + path if len(path) & 1 else "00" + path)
        child = node[2]
        tail = b"\xa0" + child if type(child) is bytes else encode_node(child)
        n = len(hp)  # at least 1 byte
        if n == 1 and hp[0] < 0x80:
            payload = hp + tail
        elif n < 56:
            payload = _STRING_PREFIX[n] + hp + tail
        else:
            payload = rlp_length_prefix(n, 0x80) + hp + tail
    n = len(payload)
    return (_LIST_PREFIX[n] if n < 1024 else rlp_length_prefix(n, 0xC0)) + payload


def _leaf_path(path: str) -> bytes:
    """The first item of a leaf's RLP: its path (hex nibbles), hex-prefix encoded, as an
    RLP string."""
    hp = bytes.fromhex("3" + path if len(path) & 1 else "20" + path)
    n = len(hp)  # at least 1 byte
    if n == 1 and hp[0] < 0x80:
        return hp
    if n < 56:
        return _STRING_PREFIX[n] + hp
    return rlp_length_prefix(n, 0x80) + hp


def _leaf_rlp(path: str, value: bytes, path_rlp: bytes | None = None) -> bytes:
    """The RLP of the leaf ``path`` (hex nibbles) -> ``value`` (non-empty): every changed
    slot's new leaf, and its old one when the writer checks a guess; ``path_rlp`` is
    :func:`_leaf_path` of ``path`` when already known (a replaced leaf's old and new
    encodings share it)."""
    if path_rlp is None:  # (_leaf_path, inline)
        hp = bytes.fromhex("3" + path if len(path) & 1 else "20" + path)
        n = len(hp)  # at least 1 byte
        if n == 1 and hp[0] < 0x80:
            payload = hp
        elif n < 56:
            payload = _STRING_PREFIX[n] + hp
        else:
            payload = rlp_length_prefix(n, 0x80) + hp
    else:
        payload = path_rlp
    n = len(value)
    if n == 1 and value[0] < 0x80:
        payload += value
    elif n < 1024:
        payload += _STRING_PREFIX[n] + value
    else:
        payload += rlp_length_prefix(n, 0x80) + value
    n = len(payload)
    return (_LIST_PREFIX[n] if n < 1024 else rlp_length_prefix(n, 0xC0)) + payload


# nibble -> the smallest string above every key with this nibble at a given depth:
# "9" -> ":", which sorts between "9" and "a"
_NEXT = {c: chr(ord(c) + 1) for c in _HEX}


def _splice(encoded: bytes, children: tuple[Any, ...], slot: int, digest: bytes) -> bytes:
    """A branch's encoding with the hash of child ``slot`` (a hash in ``children``, the
    branch's children as encoded) replaced by ``digest``: at its offset, after the list's
    prefix, 33 bytes for each hash before it and 1 for each empty child."""
    at = ((1 if encoded[0] < 0xF8 else encoded[0] - 0xF6) + 33 * slot
          - 32 * children[:slot].count(None) + 1)
    return encoded[:at] + digest + encoded[at + 32:]


class _Writer:
    __slots__ = ("nodes", "writes", "keep", "olds", "deletions", "keep_bytes")

    def __init__(self, nodes: TrieNodes, keep: bool, olds: dict[str, bytes] | None,
                 writes: MutableMapping[bytes, bytes],
                 deletions: list[int] | None = None) -> None:
        self.nodes = nodes
        self.writes = writes
        self.keep = keep
        self.olds = olds
        # deletions[i]: how many of the first i keys are deleted (None: no key is), so
        # whether a range of keys deletes anything is known in O(1)
        self.deletions = deletions
        # partial branches kept decoded with their encoding (TrieNodes.keep_bytes)
        self.keep_bytes = keep and nodes.keep_bytes

    def seal(self, node: Any) -> Any:
        """How a parent refers to a final node: the node itself under 32 encoded bytes,
        else its hash (the node then written)."""
        if node[0] == _BRANCH:  # (encode_node's branch of hashes, inline: ~11,000 a block)
            if len(node) == 4:  # its encoding known (spliced by update)
                encoded = node[3]
            else:
                children = node[1]
                try:
                    if None not in children:
                        payload = b"\xa0" + b"\xa0".join(children)
                    else:
                        payload = b"".join([b"\xa0" + c if c else b"\x80" for c in children])
                except TypeError:  # an embedded child
                    encoded = encode_node(node)
                else:
                    value = node[2]
                    payload += _rlp_bytes(value) if value else b"\x80"
                    n = len(payload)
                    encoded = (_LIST_PREFIX[n] if n < 1024
                               else rlp_length_prefix(n, 0xC0)) + payload
                    if self.keep_bytes and not value and None in children:
                        node = (_BRANCH, children, b"", encoded)  # for the next splice
        else:
            encoded = encode_node(node)
        if len(encoded) < 32:
            return node
        digest = keccak_new(encoded).digest()
        self.writes[digest] = encoded
        if self.keep:  # (NodeCache.put, inline: every new node)
            cache = self.nodes._nodes
            young = cache.young
            young[digest] = node
            if len(young) >= cache.half:
                cache.old, cache.young = young, {}
        return digest

    def seal_leaf(self, path: str, value: bytes, path_rlp: bytes | None) -> Any:
        """``seal((_LEAF, path, value))`` in one call (``path_rlp``: :func:`_leaf_path`
        of ``path`` if known): every changed slot's new leaf."""
        encoded = _leaf_rlp(path, value, path_rlp)
        if len(encoded) < 32:
            return (_LEAF, path, value)
        digest = keccak_new(encoded).digest()
        self.writes[digest] = encoded
        if self.keep:  # (NodeCache.put, inline)
            cache = self.nodes._nodes
            young = cache.young
            young[digest] = (_LEAF, path, value)
            if len(young) >= cache.half:
                cache.old, cache.young = young, {}
        return digest

    def resolve(self, ref: Any, key: str, depth: int, count: int) -> Any:
        if type(ref) is not bytes:
            return ref  # None, or a node in memory (embedded or new)
        nodes = self.nodes
        node = nodes._nodes.get(ref)
        if node is not None:
            return node
        olds = self.olds
        if olds is not None and count == 1:
            # one changed key below this hash: if the node is that key's old leaf (the
            # caller knows the old value), it is known without a read
            old = olds.get(key)
            if old:
                leaf = (_LEAF, key[depth:], old)
                if keccak_new(_leaf_rlp(leaf[1], old)).digest() == ref:
                    return leaf
        return nodes.node(ref)

    def build(self, keys: Sequence[str], values: list[bytes], lo: int, hi: int, depth: int) -> Any:
        """The node holding ``keys[lo:hi]`` (ascending, distinct, values non-empty), which
        agree on their first ``depth`` nibbles."""
        if hi - lo == 1:
            return (_LEAF, keys[lo][depth:], values[lo])
        first, last = keys[lo], keys[hi - 1]
        n, end = depth, min(len(first), len(last))
        while n < end and first[n] == last[n]:
            n += 1
        if n > depth:
            return (_EXT, first[depth:n], self.seal(self.build(keys, values, lo, hi, n)))
        children: list[Any] = [None] * 16
        value = b""
        i = lo
        if len(keys[i]) == depth:
            value = values[i]
            i += 1
        while i < hi:
            nibble = keys[i][depth]
            j = bisect_left(keys, keys[i][:depth] + _NEXT[nibble], i + 1, hi)
            if j == i + 1:  # one key below: its leaf, sealed in one call
                children[_NIBBLE[nibble]] = self.seal_leaf(keys[i][depth + 1:], values[i], None)
            else:
                children[_NIBBLE[nibble]] = self.seal(self.build(keys, values, i, j, depth + 1))
            i = j
        return (_BRANCH, tuple(children), value)

    def update(self, ref: Any, keys: Sequence[str], values: list[bytes], lo: int, hi: int,
               depth: int) -> Any:
        """The node at ``ref`` (``depth`` nibbles down) with ``keys[lo:hi]`` set to
        ``values[lo:hi]`` (b"" deletes); None when nothing is left."""
        node = None
        if type(ref) is bytes:  # (resolve's cached case, inline)
            node = self.nodes._nodes.young.get(ref)
        if node is None:
            node = self.resolve(ref, keys[lo], depth, hi - lo)
            if node is None:
                return self._build_present(keys, values, lo, hi, depth)
        kind = node[0]
        if kind == _LEAF:
            if hi - lo == 1 and keys[lo][depth:] == node[1]:  # the usual case: its own key
                value = values[lo]
                return (_LEAF, node[1], value) if value else None
            # a leaf and the few keys changed around it: rebuilt from scratch
            leaf_key = keys[lo][:depth] + node[1]
            ks, vs = list(keys[lo:hi]), values[lo:hi]
            i = bisect_left(ks, leaf_key)
            if i == len(ks) or ks[i] != leaf_key:
                ks.insert(i, leaf_key)
                vs.insert(i, node[2])
            return self._build_present(ks, vs, 0, len(ks), depth)
        if kind == _EXT:
            path = node[1]
            n = len(path)
            if keys[lo][depth:depth + n] == path and keys[hi - 1][depth:depth + n] == path:
                child = self.update(node[2], keys, values, lo, hi, depth + n)
                return None if child is None else self._prefixed(path, child)
            # a key leaves the extension: look at it as the branch it starts with
            children: list[Any] = [None] * 16
            children[_NIBBLE[path[0]]] = node[2] if n == 1 else (_EXT, path[1:], node[2])
            value = b""
            spliced = None
        else:
            children, value = list(node[1]), node[2]
            # a partial branch's encoding (TrieNodes.keep_bytes): changed children's new
            # hashes are spliced into it below instead of encoding it again
            spliced = node[3] if len(node) == 4 else None
        i = lo
        if len(keys[i]) == depth:
            value = values[i]
            i += 1
        cached = self.nodes._nodes
        olds = self.olds
        below = depth + 1
        deletions = self.deletions
        # Without a deletion among these keys the branch keeps every child it had (two at
        # least, or one and a value): it stays a branch, so each new child is final as
        # soon as it is built and is sealed there (no second pass over the sixteen).
        # An extension turned branch above holds an unsealed remainder: not eagerly.
        final = kind == _BRANCH and (deletions is None or deletions[hi] == deletions[lo])
        if spliced is not None:
            if final and i == lo:
                before = node[1]
                touched = []
            else:
                spliced = None
        seal = self.seal
        while i < hi:
            key = keys[i]
            nibble = key[depth]
            j = i + 1 if i + 1 == hi else bisect_left(keys, key[:depth] + _NEXT[nibble], i + 1, hi)
            slot = _NIBBLE[nibble]
            if spliced is not None:
                touched.append(slot)
            child = children[slot]
            if j == i + 1 and type(child) is bytes:
                # the usual case, one key changed below a stored leaf of its own: the new
                # leaf without a call down (what update does for it), the old leaf known
                # decoded or from its old value (as resolve knows it)
                node = cached.young.get(child)  # (NodeCache.get, the young half inline)
                if node is None and child in cached.old:
                    node = cached.get(child)
                path_rlp = None
                if node is None and olds is not None:
                    old = olds.get(key)
                    if old:
                        rest = key[below:]
                        path_rlp = _leaf_path(rest)
                        if keccak_new(_leaf_rlp(rest, old, path_rlp)).digest() == child:
                            new = values[i]  # the leaf is this key's: replaced here
                            if not new:
                                children[slot] = None
                            elif final:
                                children[slot] = self.seal_leaf(rest, new, path_rlp)
                            else:
                                children[slot] = (_LEAF, rest, new)
                            i = j
                            continue
                        node = self.nodes.node(child)
                if node is not None:
                    if node[0] == _LEAF and node[1] == key[below:]:
                        new = values[i]
                        if not new:
                            children[slot] = None
                        elif final:  # sealed here, with the path encoding known
                            children[slot] = self.seal_leaf(node[1], new, path_rlp)
                        else:
                            children[slot] = (_LEAF, node[1], new)
                        i = j
                        continue
                    if final and node[0] == _BRANCH and values[i] and not node[2]:
                        # a stored branch, one key changed below it: down to that key's
                        # leaf and back in one call a level (one_below)
                        sealed = self.one_below(node, key, values[i], below)
                        if sealed is not None:
                            children[slot] = sealed
                            i = j
                            continue
                    child = node  # decoded: the call down need not resolve it again
            child = self.update(child, keys, values, i, j, below)
            children[slot] = seal(child) if final else child  # (never None when final)
            i = j
        if final:
            if spliced is not None:
                # each changed child a hash replacing a hash (same length): spliced in at
                # its offset (the list's prefix, 33 bytes a hash before it, 1 an empty)
                for slot in touched:
                    new = children[slot]
                    if type(new) is not bytes or type(before[slot]) is not bytes:
                        break
                    spliced = _splice(spliced, before, slot, new)
                else:
                    return (_BRANCH, tuple(children), value, spliced)
            return (_BRANCH, tuple(children), value)
        empty = children.count(None)
        if empty < 15 or value and empty == 15:
            seal = self.seal
            return (_BRANCH, tuple([c if c is None or type(c) is bytes else seal(c)
                                    for c in children]), value)
        if value:
            return (_LEAF, "", value)
        if empty == 16:
            return None
        only = next(i for i in range(16) if children[i] is not None)
        # a branch of one child: merged into it
        return self._prefixed(_HEX[only], self.resolve(children[only], "", 0, 0))

    def one_below(self, node: Any, key: str, value: bytes, depth: int) -> Any:
        """How the parent refers to ``node``, a decoded branch without a value
        (``depth`` nibbles down), once ``key``'s value is replaced by ``value``
        (non-empty), when ``key`` is the only changed key below it and is already there:
        its stored child on the key's path is the key's leaf (known decoded, or from its
        old value as :meth:`update` knows it) or another such branch, handled alike.
        None, before anything is written, otherwise (:meth:`update` then does it). What
        :meth:`update` and :meth:`seal` do for it, without their general steps: the
        usual case of a large storage trie's lower branches, one a changed slot."""
        children = node[1]
        slot = _NIBBLE[key[depth]]
        child = children[slot]
        if type(child) is not bytes:
            return None
        cache = self.nodes._nodes
        below = depth + 1
        rest = key[below:]
        found = cache.young.get(child)
        if found is None and child in cache.old:
            found = cache.get(child)
        if found is None:  # the key's old leaf, if its hash is the reference
            olds = self.olds
            old = olds.get(key) if olds is not None else None
            if not old:
                return None
            path_rlp = _leaf_path(rest)
            if keccak_new(_leaf_rlp(rest, old, path_rlp)).digest() != child:
                return None  # not this key's leaf: update reads the node
            sealed = self.seal_leaf(rest, value, path_rlp)
        elif found[0] == _LEAF:
            if found[1] != rest:
                return None
            sealed = self.seal_leaf(rest, value, None)
        elif found[0] == _BRANCH and not found[2]:
            # a branch below: the same step there (nothing is written unless it succeeds,
            # and nothing here fails after it)
            sealed = self.one_below(found, key, value, below)
            if sealed is None:
                return None
        else:
            return None
        children = children[:slot] + (sealed,) + children[slot + 1:]
        if len(node) == 4 and type(sealed) is bytes:  # its encoding known: spliced
            return self.seal((_BRANCH, children, b"", _splice(node[3], node[1], slot, sealed)))
        return self.seal((_BRANCH, children, b""))

    def _build_present(self, keys: Sequence[str], values: list[bytes], lo: int, hi: int,
                       depth: int) -> Any:
        if any(not values[i] for i in range(lo, hi)):
            kept = [i for i in range(lo, hi) if values[i]]
            keys, values = [keys[i] for i in kept], [values[i] for i in kept]
            lo, hi = 0, len(kept)
        return self.build(keys, values, lo, hi, depth) if hi > lo else None

    def _prefixed(self, prefix: str, node: Any) -> Any:
        """``node`` reached through ``prefix`` nibbles, in canonical form: a leaf or an
        extension absorbs the prefix, a branch gets an extension in front."""
        if node[0] == _BRANCH:
            return (_EXT, prefix, self.seal(node))
        return (node[0], prefix + node[1], node[2])


class _Discard(dict):  # type: ignore[type-arg]
    def __setitem__(self, key: bytes, value: bytes) -> None:
        pass


DISCARD: MutableMapping[bytes, bytes] = _Discard()
"""A node sink for :func:`update_trie` that keeps nothing (a root computed only to be
compared: list roots)."""


def update_trie(nodes: TrieNodes, root: bytes, changes: Iterable[tuple[bytes, bytes | None]],
                old_values: Mapping[bytes, bytes] | None = None, *, keep: bool = True,
                writes: MutableMapping[bytes, bytes] | None = None,
                ) -> tuple[bytes, MutableMapping[bytes, bytes]]:
    """Apply ``changes`` (key, new value; None or b"" deletes; keys strictly ascending)
    to the trie at ``root``, whose nodes ``nodes`` reads; returns (new root, new nodes by
    hash). Nothing is deleted from the database (old roots stay readable). Same root and
    nodes as py-trie's HexaryTrie for the same final key set (tests/vm/test_trie.py); the
    root node is always written, even when shorter than 32 bytes, as py-trie does.

    ``old_values`` (key -> value before the change, for keys that had one; the flat
    account snapshot knows them) saves reading the leaf of a changed key: a leaf is known
    from its key and value, so when its hash is the parent's reference the node is not
    read. A wrong or missing old value only costs the read. ``keep``: whether the new
    nodes' decoded forms go into ``nodes`` (off for one-off bulk builds). ``writes``:
    where the new nodes go (default: a new dict), returned."""
    items = changes if type(changes) is list else list(changes)
    keys = [key.hex() for key, _ in items]
    values = [value or b"" for _, value in items]
    if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
        raise ValueError("keys are not in strictly ascending order")
    olds: dict[str, bytes] | None = None
    if old_values:  # (only the changed keys' old values are ever asked for)
        get = old_values.get
        olds = {hex_key: old for hex_key, (key, _) in zip(keys, items, strict=True)
                if (old := get(key))}
    return _update_sorted(nodes, root, keys, values, olds, keep,
                          {} if writes is None else writes)


def _update_sorted(nodes: TrieNodes, root: bytes, keys: Sequence[str], values: list[bytes],
                   olds: dict[str, bytes] | None, keep: bool,
                   out: MutableMapping[bytes, bytes]) -> tuple[bytes, MutableMapping[bytes, bytes]]:
    """:func:`update_trie` once its arguments are in the writer's form: ``keys`` in hex,
    strictly ascending, ``values`` bytes (b"" deletes), ``olds`` by hex key."""
    if not keys:
        return root, out
    deletions = None
    if not all(values):
        deletions = [0]
        for value in values:
            deletions.append(deletions[-1] + (not value))
    writer = _Writer(nodes, keep, olds, out, deletions)
    node = writer.update(None if root == BLANK_ROOT else root, keys, values, 0, len(keys), 0)
    if node is None:
        return BLANK_ROOT, writer.writes
    encoded = encode_node(node)
    digest = keccak256(encoded)
    writer.writes[digest] = encoded
    if keep:
        nodes.keep(digest, node)
    return digest, writer.writes


@lru_cache(maxsize=8)
def _list_keys(n: int) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The indices 0..n-1 in the order of their keys ``rlp(index)``, and those keys in
    hex: 1..127 (one byte each, below 0x80), 0 (0x80), then 128.. (a length byte from
    0x81 up, then the big-endian index: ordered as the indices). A block's list roots
    ask for the same few lengths again and again."""
    order = (*range(1, min(n, 128)), 0, *range(128, n))
    return order, tuple(rlp_uint(i).hex() for i in order)  # (shared: never changed)


def compute_list_root(items: Sequence[bytes]) -> bytes:
    """Ethereum-style ordered trie root over ``rlp(index) -> item`` (transactions, receipts,
    attestations), by :func:`update_trie`'s writer in one pass over the keys in order
    (:func:`_list_keys`, no sort): the root py-trie gives. Items are never empty (a
    block's items are checked before its roots are computed); an empty one is refused."""
    if not items:
        return BLANK_ROOT
    order, keys = _list_keys(len(items))
    values = [bytes(items[i]) for i in order]
    if not all(values):
        raise ValueError("an empty item has no place in a list root")
    # (the new nodes into a dict dropped after: cheaper than DISCARD's Python-level store)
    return _update_sorted(TrieNodes({}), BLANK_ROOT, keys, values, None, False, {})[0]


# --- under py-evm's account storage ---------------------------------------------------


# Slot values by storage root, "layers" as geth's snapshot diff layers: a layer holds the
# values read at its root and those written to reach it from its parent's root; a value
# not in a layer is the parent's. Roots are content hashes, so a layer can only ever
# answer the value the trie holds: the cache saves the walk down the trie, never changes
# a result. A block's writes land in a new layer on top of its parent's, so the next
# block reads the slots this block wrote or read (each device's records, every block)
# without a walk. Bounded (docs/storage.md, "Caches"): at most SLOT_LAYERS_MAX_VALUES
# values in all layers (the oldest layers emptied and dropped first), SLOT_LAYERS_MAX
# layers, chains cut at SLOT_LAYER_DEPTH, at most SLOT_LAYER_MAX_READS values read into
# one layer.


class _SlotLayer:
    __slots__ = ("values", "parent", "reads")

    def __init__(self, values: dict[bytes, bytes], parent: _SlotLayer | None) -> None:
        self.values = values  # hashed slot -> the stored RLP, b"" when absent
        self.parent = parent
        self.reads = 0


SLOT_LAYERS: dict[bytes, _SlotLayer] = {}  # storage root -> its layer, oldest first
SLOT_LAYERS_MAX = 64
SLOT_LAYERS_MAX_VALUES = 500_000
SLOT_LAYER_DEPTH = 16
SLOT_LAYER_MAX_READS = 100_000
_layer_values = 0  # values held by the layers in SLOT_LAYERS
_layers_lock = threading.Lock()


def _layer_value(root: bytes, hashed: bytes) -> bytes | None:
    layer = SLOT_LAYERS.get(root)
    while layer is not None:
        value = layer.values.get(hashed)
        if value is not None:
            return value
        layer = layer.parent
    return None


def _drop_oldest_layers() -> None:
    """Under the lock: drop the oldest layers until within the bounds; a dropped layer
    is emptied, since newer layers may still name it as their parent."""
    global _layer_values
    while len(SLOT_LAYERS) > SLOT_LAYERS_MAX or (
            _layer_values > SLOT_LAYERS_MAX_VALUES and len(SLOT_LAYERS) > 1):
        old = SLOT_LAYERS.pop(next(iter(SLOT_LAYERS)))
        _layer_values -= len(old.values)
        old.values, old.parent = {}, None


def _layer_at(root: bytes, parent: _SlotLayer | None) -> _SlotLayer:
    """Under the lock: the layer of ``root``, made (on ``parent``) if there is none."""
    layer = SLOT_LAYERS.get(root)
    if layer is None:
        layer = SLOT_LAYERS[root] = _SlotLayer({}, parent)
        below = layer  # cut the chain: older values are read from the trie again
        for _ in range(SLOT_LAYER_DEPTH - 1):
            if below.parent is None:
                break
            below = below.parent
        below.parent = None
    # (an existing layer keeps its parent: a layer's parent is always older than it, so
    # a chain never loops, even when a block takes a storage trie back to an older root)
    return layer


def _remember_read(root: bytes, hashed: bytes, value: bytes) -> None:
    """Keep a value read at ``root`` in its layer. Every slot read that misses the layers
    comes here (10,000 a block at 100,000 vehicles), so only making a layer takes the
    lock: the value goes into the layer's table directly (one dict store, atomic under
    the GIL) and the count of all values without the lock. A thread switch between the
    count's read and write can lose one increment, and a layer dropped meanwhile can take
    a value nobody reads again; both only make the count off by a few, and it is counted
    again exactly under the lock with every block's writes (:func:`_remember_writes`)."""
    global _layer_values
    layer = SLOT_LAYERS.get(root)
    if layer is None:
        with _layers_lock:
            layer = _layer_at(root, None)
            _drop_oldest_layers()  # (one layer more: the oldest may have to go)
    values = layer.values
    if hashed in values or layer.reads >= SLOT_LAYER_MAX_READS:
        return
    values[hashed] = value
    layer.reads += 1
    _layer_values += 1
    if _layer_values > SLOT_LAYERS_MAX_VALUES:
        with _layers_lock:
            _drop_oldest_layers()


def _remember_reads(root: bytes, items: Sequence[tuple[bytes, bytes]]) -> None:
    """:func:`_remember_read` for many (hashed slot, value) read at ``root``."""
    global _layer_values
    if not items:
        return
    layer = SLOT_LAYERS.get(root)
    if layer is None:
        with _layers_lock:
            layer = _layer_at(root, None)
            _drop_oldest_layers()
    values = layer.values
    room = SLOT_LAYER_MAX_READS - layer.reads
    added = 0
    for hashed, value in items:
        if added >= room:
            break
        if hashed not in values:
            values[hashed] = value
            added += 1
    layer.reads += added
    _layer_values += added
    if _layer_values > SLOT_LAYERS_MAX_VALUES:
        with _layers_lock:
            _drop_oldest_layers()


def _remember_writes(parent_root: bytes, root: bytes, writes: dict[bytes, bytes]) -> None:
    global _layer_values
    if root == parent_root:
        return
    with _layers_lock:
        layer = _layer_at(root, SLOT_LAYERS.get(parent_root))
        layer.values.update(writes)
        # counted again from the tables (reads are counted without the lock)
        _layer_values = sum(len(each.values) for each in SLOT_LAYERS.values())
        _drop_oldest_layers()


def clear_slot_layers() -> None:
    """Forget every cached slot value (what a restarted node starts with)."""
    global _layer_values
    with _layers_lock:
        SLOT_LAYERS.clear()
        _layer_values = 0


class FastStorageLookup(StorageLookup):
    """py-evm's ``StorageLookup`` (one account's storage trie) with reads through the
    slot layers and :class:`TrieNodes`, and writes (deletions included) collected and
    applied with :func:`update_trie` when the root is asked for. A storage wipe goes to
    py-trie as before (after the collected writes), so every path ends in the same trie."""

    _pending: dict[bytes, bytes] | None = None
    _fast_result: tuple[bytes, MutableMapping[bytes, bytes]] | None = None
    # The account state this storage belongs to while it stands on the node's flat
    # snapshot (vm.state.MotusAccountDB.flat_slot answers, or None when it cannot), and
    # whether the storage went through py-trie (a wipe, even one rolled back): its slots
    # are then rewritten in the snapshot from the final trie.
    _flat: Any = None
    _flat_address = b""  # keccak(address)
    _wiped = False

    def _nodes(self) -> TrieNodes:
        return TrieNodes(self._db, SHARED_MAX_NODES, SHARED_NODES, keep_bytes=True)

    def _decode_key(self, key: bytes) -> bytes:
        return _hashed_slot(key)

    def __getitem__(self, key: bytes) -> bytes:
        hashed = _hashed_slot(key)  # (what _decode_key gives, one call less)
        pending = self._pending
        if pending and hashed in pending:
            return pending[hashed]
        if self._write_trie is None:
            root = self._starting_root_hash
            layer = SLOT_LAYERS.get(root)  # (_layer_value, inline: every slot read)
            while layer is not None:
                value = layer.values.get(hashed)
                if value is not None:
                    return value
                layer = layer.parent
            flat = self._flat
            if flat is not None:
                value = flat.flat_slot(self._address, self._flat_address, hashed)
                if value is not None:
                    _remember_read(root, hashed, value)
                    return value
            try:
                value = self._nodes().get(root, hashed)
            except KeyError:  # a missing node: let py-trie raise its own error
                pass
            else:
                _remember_read(root, hashed, value)
                return value
        return super().__getitem__(key)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self._write_trie is not None:
            super().__setitem__(key, value)
            return
        if self._pending is None:
            self._pending = {}
        self._pending[_hashed_slot(key)] = value
        self._fast_result = None

    def put_pending(self, values: dict[bytes, bytes]) -> None:
        """``self[key] = value`` for every item (while no py-trie write trie exists)."""
        pending = self._pending
        if pending is None:
            pending = self._pending = {}
        for key, value in values.items():
            pending[_hashed_slot(key)] = value
        self._fast_result = None

    def __delitem__(self, key: bytes) -> None:
        if self._write_trie is not None:
            super().__delitem__(key)
            return
        self[key] = b""  # absent at the new root; the writer deletes it

    def _exists(self, key: bytes) -> bool:
        return self[key] != b""

    def _flush(self) -> None:
        """Hand the collected writes to py-trie (before a wipe)."""
        pending, self._pending, self._fast_result = self._pending, None, None
        if pending:
            trie = self._get_write_trie()
            for hashed, value in pending.items():
                if value:
                    trie[hashed] = value
                else:
                    del trie[hashed]

    def _fast(self) -> tuple[bytes, MutableMapping[bytes, bytes]]:
        if self._fast_result is None:
            root, pending = self._starting_root_hash, self._pending or {}
            # update_trie's arguments made here in its writer's form: the keys sorted
            # alone (not as (key, value) pairs: a third of the time) and in hex once
            hashes = sorted(pending)
            keys = [hashed.hex() for hashed in hashes]
            values = [pending[hashed] for hashed in hashes]
            # the values the block read before writing (the root's slot layer keeps
            # them): the writer then knows each changed leaf without reading it
            olds: dict[str, bytes] = {}
            top = SLOT_LAYERS.get(root)
            if top is not None:  # (the block's own reads: nearly all in the root's layer)
                held = top.values
                get = held.get
                olds = {key: old for key, hashed in zip(keys, hashes, strict=True)
                        if (old := get(hashed))}
                below = top.parent
                if below is not None:
                    for key, hashed in zip(keys, hashes, strict=True):
                        if hashed in held:
                            continue
                        layer: _SlotLayer | None = below  # (_layer_value, inline)
                        while layer is not None:
                            old = layer.values.get(hashed)
                            if old is not None:
                                if old:
                                    olds[key] = old
                                break
                            layer = layer.parent
            self._fast_result = _update_sorted(self._nodes(), root, keys, values,
                                               olds or None, True, {})
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
            # py-evm hands a write batch over the state's database; over a block's
            # OverlayDB (vm.db) the new nodes go to it in one call instead of through
            # the batch's diff, one Python call each, twice (~17,000 nodes a block at
            # 100,000 vehicles). Nodes are content-addressed: should the persist fail
            # after this, the extra nodes name nothing and the overlay is dropped with
            # the failed block.
            put_many = getattr(getattr(db, "_write_target_db", None), "put_many", None)
            if put_many is not None:
                put_many(writes)
            else:
                for digest, encoded in writes.items():
                    db[digest] = encoded
            _remember_writes(self._starting_root_hash, root, self._pending)
            self._initialize_to_root_hash(root)
            return
        super().commit_to(db)

    def _initialize_to_root_hash(self, root_hash) -> None:  # type: ignore[no-untyped-def]
        super()._initialize_to_root_hash(root_hash)
        self._pending = None
        self._fast_result = None

    def new_trie(self) -> int:
        self._flush()
        self._wiped = True
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

    def make_storage_root(self) -> None:
        """py-evm's ``make_storage_root`` (lock the journal's changes, then persist them
        into the lookup) in one step when neither journal holds anything unusual (a clear
        from a storage wipe, a deletion marker): the final value of every changed slot,
        the locked journal's overlaid by the newer one, goes straight to the lookup's
        pending writes and both journals start afresh, as the two persists leave them.
        The cache between them is write-through; it is emptied rather than updated."""
        upper, lower = self._journal_storage._journal, self._locked_changes._journal
        lookup = self._storage_lookup
        if (lookup._write_trie is None and not upper._clears_at and not lower._clears_at
                and not upper._ignore_wrapped_db and not lower._ignore_wrapped_db):
            changes = {**lower._current_values, **upper._current_values}
            if all(type(value) is bytes for value in changes.values()):
                upper.pop_all()
                lower.pop_all()
                self._storage_cache.reset_cache()
                lookup.put_pending(changes)
                return
        super().make_storage_root()

    def set(self, slot: int, value: int) -> None:
        """py-evm's ``set`` with a value encoded by :func:`vm.block.rlp_uint` (the bytes
        ``rlp.encode`` gives, without its sedes inference)."""
        if value:
            self._journal_storage[int_to_big_endian(slot)] = rlp_uint(value)
        else:
            super().set(slot, value)

    def set_many(self, items: Iterable[tuple[int, int]]) -> None:
        """:meth:`set` for each (slot, value) in order (both already validated): the same
        journal entries, a non-zero value written into the journal inline (what
        ``JournalDB.__setitem__`` does: the value to revert to noted at the last
        checkpoint, once per key), a zero one through :meth:`set`. Block execution's
        telemetry commit writes thousands of slots this way."""
        journal = self._journal_storage._journal
        revert = journal._journal_data[journal.last_checkpoint]
        current = journal._current_values
        for slot, value in items:
            if not value:
                self.set(slot, value)  # (a deletion: py-evm's path)
                continue
            key = slot.to_bytes((slot.bit_length() + 7) // 8 or 1, "big")  # int_to_big_endian
            if key not in revert:
                revert[key] = current.get(key, REVERT_TO_WRAPPED)
            current[key] = rlp_uint(value)

    def get(self, slot: int, from_journal: bool = True) -> int:
        """py-evm's ``get`` with the stored value (RLP of a big-endian integer of at most
        32 bytes, written by py-evm itself) decoded directly rather than through ``rlp``,
        and the journals looked into directly (:meth:`_read`)."""
        self._accessed_slots.add(slot)
        try:
            encoded = self._read(slot.to_bytes((slot.bit_length() + 7) // 8 or 1, "big"),
                                 from_journal)  # int_to_big_endian, inline
        except MissingStorageTrieNode:
            raise
        except KeyError:
            return 0
        if not encoded:
            return 0
        first = encoded[0]
        return first if first < 0x80 else int.from_bytes(encoded[1:], "big")

    def read_slot(self, slot: int) -> int:
        """``get(slot)`` in one call (block execution reads thousands of slots a block
        through here: ``MotusAccountDB.slot_reader``): the same value and the same slot
        noted as accessed, with :meth:`_read` and the lookup's read of a slot that
        neither journal holds (its pending writes, the slot layers, the flat snapshot)
        inline. Anything else (a journal holding the slot, a wipe, a trie read) goes
        the way :meth:`get` goes."""
        self._accessed_slots.add(slot)
        key = slot.to_bytes((slot.bit_length() + 7) // 8 or 1, "big")  # int_to_big_endian
        upper = self._journal_storage._journal
        lower = self._locked_changes._journal
        lookup = self._storage_lookup
        if (upper._ignore_wrapped_db or lower._ignore_wrapped_db
                or key in upper._current_values or key in lower._current_values
                or lookup._write_trie is not None):
            return self.get(slot)
        hashed = _hashed_slot(key)
        pending = lookup._pending
        if pending and hashed in pending:
            encoded = pending[hashed]
        else:
            root = lookup._starting_root_hash
            layer = SLOT_LAYERS.get(root)  # (_layer_value, inline)
            encoded = None
            while layer is not None:
                encoded = layer.values.get(hashed)
                if encoded is not None:
                    break
                layer = layer.parent
            if encoded is None:
                flat = lookup._flat
                if flat is not None:
                    encoded = flat.flat_slot(lookup._address, lookup._flat_address, hashed)
                if encoded is None:
                    return self.get(slot)  # the trie's answer (the lookup keeps it)
                _remember_read(root, hashed, encoded)
        if not encoded:
            return 0
        first = encoded[0]
        return first if first < 0x80 else int.from_bytes(encoded[1:], "big")

    def read_slots(self, slots: Sequence[int]) -> list[int]:
        """``[read_slot(slot) for slot in slots]`` in one call: block execution reads a
        block's attestation slots ahead, all at once (vm.modules.telemetry), each with the
        same value and the same slot noted as accessed as :meth:`read_slot`, with the
        checks that do not depend on the slot made once and the flat snapshot's lookups
        in one loop (:meth:`vm.state.MotusAccountDB.flat_slots`). A slot a journal or
        the pending writes hold, or one the snapshot cannot answer, goes the way
        :meth:`read_slot` goes."""
        upper = self._journal_storage._journal
        lower = self._locked_changes._journal
        lookup = self._storage_lookup
        if upper._ignore_wrapped_db or lower._ignore_wrapped_db or lookup._write_trie is not None:
            return [self.read_slot(slot) for slot in slots]
        journaled = upper._current_values.keys() | lower._current_values.keys()
        pending = lookup._pending or {}
        root = lookup._starting_root_hash
        top = SLOT_LAYERS.get(root)
        out: list[Any] = [None] * len(slots)
        missed: list[int] = []  # indices the layers did not answer
        hashes: list[bytes] = []
        for i, slot in enumerate(slots):
            key = slot.to_bytes((slot.bit_length() + 7) // 8 or 1, "big")  # int_to_big_endian
            if key in journaled:
                continue  # (read_slot below)
            hashed = _hashed_slot(key)
            if hashed in pending:
                out[i] = pending[hashed]
                continue
            layer = top  # (_layer_value, inline)
            while layer is not None:
                encoded = layer.values.get(hashed)
                if encoded is not None:
                    out[i] = encoded
                    break
                layer = layer.parent
            else:
                missed.append(i)
                hashes.append(hashed)
        if missed:
            flat = lookup._flat
            if flat is not None:
                found = flat.flat_slots(lookup._address, lookup._flat_address, hashes)
                if found is not None:
                    read = []
                    for i, hashed, encoded in zip(missed, hashes, found, strict=True):
                        if encoded is not None:
                            out[i] = encoded
                            read.append((hashed, encoded))
                    _remember_reads(root, read)
        self._accessed_slots.update(slots)
        values = []
        for slot, encoded in zip(slots, out, strict=True):
            if encoded is None:
                values.append(self.read_slot(slot))  # (a journal's, or the trie's answer)
            elif not encoded:
                values.append(0)
            else:
                first = encoded[0]
                values.append(first if first < 0x80 else int.from_bytes(encoded[1:], "big"))
        return values

    def _read(self, key: bytes, from_journal: bool) -> bytes:
        """What ``self._journal_storage[key]`` (``self._locked_changes[key]`` when not
        ``from_journal``) answers, without the four wrapper calls: a value one of the two
        journals holds, else the lookup's. The cache between the journals and the lookup
        is write-through (py-evm resets it whenever the lookup's trie is swapped), so it
        always holds what the lookup answers. Anything unusual (a journal cleared by a
        storage wipe, a deletion marker) takes py-evm's own path."""
        upper = self._journal_storage._journal if from_journal else None
        lower = self._locked_changes._journal
        if not lower._ignore_wrapped_db and (upper is None or not upper._ignore_wrapped_db):
            value = None if upper is None else upper._current_values.get(key)
            if value is None:
                value = lower._current_values.get(key)
                if value is None:
                    return self._storage_lookup[key]  # type: ignore[no-any-return]
            if type(value) is bytes:
                return value
        lookup_db = self._journal_storage if from_journal else self._locked_changes
        return lookup_db[key]  # type: ignore[no-any-return]
