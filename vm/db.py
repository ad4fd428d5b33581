"""A write-buffering view over any py-evm database.

Reads fall through to the base; writes stay in memory until the owner takes them
(``pending``) and commits them, for example together with the block in one LevelDB
write batch, or drops them (``eth_call``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from eth.abc import AtomicWriteBatchAPI, DatabaseAPI
from eth.db.atomic import AtomicDBWriteBatch
from eth.db.backends.base import BaseAtomicDB

from vm.flat import FlatDiff

_DELETED = object()


class OverlayDB(BaseAtomicDB):
    def __init__(self, base: DatabaseAPI) -> None:
        self._base = base
        self._writes: dict[bytes, object] = {}
        # state root -> the flat-snapshot diff of the state that reached it (vm.flat);
        # the node commits the one of the block's root with the block
        self.flat_diffs: dict[bytes, FlatDiff] = {}

    def __getitem__(self, key: bytes) -> bytes:
        value = self._writes.get(key)
        if value is None:
            return self._base[key]
        if value is _DELETED:
            raise KeyError(key)
        return value  # type: ignore[return-value]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self._writes[key] = value

    def put_many(self, items: dict[bytes, bytes]) -> None:
        """``self[key] = value`` for every item, in one call (a block's new trie nodes)."""
        self._writes.update(items)

    def __delitem__(self, key: bytes) -> None:
        if key not in self:
            raise KeyError(key)
        self._writes[key] = _DELETED

    def _exists(self, key: bytes) -> bool:
        value = self._writes.get(key)
        if value is None:
            return key in self._base
        return value is not _DELETED

    @contextmanager
    def atomic_batch(self) -> Iterator[AtomicWriteBatchAPI]:
        with AtomicDBWriteBatch._commit_unless_raises(self) as batch:
            yield batch

    def pending(self) -> tuple[dict[bytes, bytes], list[bytes]]:
        """(puts, deletes) buffered so far."""
        puts = {k: v for k, v in self._writes.items() if v is not _DELETED}
        deletes = [k for k, v in self._writes.items() if v is _DELETED]
        return puts, deletes  # type: ignore[return-value]

    def clear(self) -> None:
        self._writes.clear()
        self.flat_diffs.clear()
