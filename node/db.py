"""LevelDB (plyvel) storage: one database per node, every key under a one-byte prefix.

py-evm no longer ships a LevelDB backend; :class:`StateDB` is ours: it serves the
state trie (prefix ``t``) to py-evm. Writes for a block are never made through it
directly: execution buffers them in a :class:`vm.db.OverlayDB`, and the chain
store commits them together with the block in one synced write batch.
"""

from __future__ import annotations

import atexit
import os
import re
from collections import OrderedDict
from pathlib import Path

import plyvel
from eth.db.backends.base import BaseDB
from trie.hexary import HexaryTrie

from node.errors import DatabaseLocked

TRIE = b"t"
LEVELDB_BLOCK_CACHE = 64 * 2**20
LEVELDB_WRITE_BUFFER = 4 * 2**20  # LevelDB's own default; a node uses storage.write_buffer_mb
FLAT_ACCOUNT = b"s"  # s<keccak(address)> -> account RLP of the head state (vm.flat)
FLAT_ROOT = b"S"  # the state root the s-entries hold; absent while they are rebuilt
# o<keccak(address)><keccak(slot)> -> the storage slot's RLP in the head state (vm.flat)
FLAT_SLOT = b"o"
FLAT_SLOT_ROOT = b"O"  # the state root the o-entries hold; the snapshot is whole when O == S


def _release_pinned_tries() -> None:
    """Let go, before interpreter teardown, of the tries that trie's HexaryTrie keeps alive.

    ``HexaryTrie._cached_create_node_to_db_mapping`` (trie 4) is an ``lru_cache`` on a
    method, keyed on the trie itself, and py-evm's AccountDB writes through pruning tries
    that use it. So the last tries a process wrote through stay reachable, and with them
    their databases down to our StateDB and its plyvel.DB, until the interpreter tears
    down. A plyvel.DB freed that late fails in ``__dealloc__`` (its ``close()`` does
    ``with self.lock`` after the lock's type has been cleared) and Cython reports that
    through an ``excepthook`` that is already gone: an empty "Error in sys.excepthook"
    on stderr. Emptying the cache at exit frees them while the interpreter is whole."""
    cached = getattr(HexaryTrie, "_cached_create_node_to_db_mapping", None)
    if cached is not None and hasattr(cached, "cache_clear"):
        cached.cache_clear()


atexit.register(_release_pinned_tries)


_LOCK_ERROR = re.compile(r"IO error: lock .*/LOCK: ")


class Database:
    """The node's LevelDB. ``batch()`` gives a write batch that is synced on exit."""

    def __init__(self, path: str | Path, block_cache_bytes: int = LEVELDB_BLOCK_CACHE,
                 write_buffer_bytes: int = LEVELDB_WRITE_BUFFER) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        self.path = Path(path)
        self.block_cache_bytes = block_cache_bytes
        self.write_buffer_bytes = write_buffer_bytes
        try:
            # a larger block cache and bloom filters: at a million accounts the head's
            # flat snapshot and trie leaves are random reads (docs/storage.md, "Caches")
            self.db = plyvel.DB(str(path), create_if_missing=True, paranoid_checks=True,
                                lru_cache_size=block_cache_bytes, bloom_filter_bits=10,
                                write_buffer_size=write_buffer_bytes)
        except plyvel.IOError as exc:
            # Only LevelDB's own lock error ("IO error: lock <path>/LOCK: <why>": held by
            # another process, or by this one), not any error whose path says "lock".
            if not _LOCK_ERROR.search(str(exc)):
                raise
            # LevelDB allows one process per database: a node runs on this home.
            raise DatabaseLocked(
                f"database {path} is in use by another process (a node running on this "
                f"home?): stop that node first, or use another --home") from None

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def put(self, key: bytes, value: bytes, *, sync: bool = True) -> None:
        self.db.put(key, value, sync=sync)

    def batch(self):
        return self.db.write_batch(sync=True, transaction=True)

    def iterator(self, **kwargs):
        return self.db.iterator(**kwargs)

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()


class FlatAccounts:
    """The flat state snapshot on LevelDB (:class:`vm.flat.FlatReader`): accounts and
    storage slots. ``root`` is the state root the ``s`` and ``o`` entries hold, or None:
    not built yet (a store from before the slot entries has ``S`` but no ``O``), being
    rebuilt, or a commit is rewriting them (see ``ChainStore.commit_block``)."""

    def __init__(self, database: Database) -> None:
        self._get = database.db.get
        root = database.db.get(FLAT_ROOT)
        self.root: bytes | None = root if root == database.db.get(FLAT_SLOT_ROOT) else None

    def account(self, hashed_address: bytes) -> bytes | None:
        return self._get(FLAT_ACCOUNT + hashed_address)

    def slot(self, hashed_address: bytes, hashed_slot: bytes) -> bytes | None:
        return self._get(FLAT_SLOT + hashed_address + hashed_slot)

    def slots(self, hashed_address: bytes, hashed_slots: list[bytes]) -> list[bytes | None]:
        """:meth:`slot` for many slots of one account, looked up in key order (LevelDB
        then walks its index and blocks forward; 8,000 random reads: ~0.7-0.9 of the
        time in the given order)."""
        get, prefix = self._get, FLAT_SLOT + hashed_address
        found = {hashed: get(prefix + hashed) for hashed in sorted(hashed_slots)}
        return [found[hashed] for hashed in hashed_slots]


class StateDB(BaseDB):
    """Read side of the state trie for py-evm (keys are trie node hashes and code hashes).

    Keys are content hashes, so a value never changes once written: an LRU cache in
    front of LevelDB is always correct and saves most reads of the upper trie levels."""

    def __init__(self, database: Database, cache_size: int = 200_000) -> None:
        self._db = database.db
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._cache_size = cache_size
        # read by states made over this database (vm.flat.flat_reader_of)
        self.flat = FlatAccounts(database)

    def __getitem__(self, key: bytes) -> bytes:
        cache = self._cache
        value = cache.get(key)
        if value is not None:
            cache.move_to_end(key)
            return value
        value = self._db.get(TRIE + key)
        if value is None:
            raise KeyError(key)
        cache[key] = value
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        # only genesis initialisation writes straight through (synced)
        self._db.put(TRIE + key, value, sync=True)

    def __delitem__(self, key: bytes) -> None:
        # trie nodes are content-addressed and shared between versions: never delete
        pass

    def _exists(self, key: bytes) -> bool:
        return key in self._cache or self._db.get(TRIE + key) is not None
