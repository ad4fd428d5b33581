"""An Application on a fresh LevelDB home at genesis: the fixture several node tests
share."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from genesis.devnet import new_genesis
from node.app import Application
from node.db import Database
from node.mempool import Mempool
from node.store import ChainStore


@contextlib.contextmanager
def genesis_app(path: Path, validator: bytes, chain_id: int = 7077) -> Iterator[Application]:
    """The node's Application on a new store under ``path`` whose genesis (5 s ago) has
    ``validator`` as its only validator (power 10); the database closed after."""
    database = Database(path / "data")
    try:
        store = ChainStore(database)
        store.init_genesis(new_genesis(chain_id, [(validator, 10)],
                                       genesis_time_ms=int(time.time() * 1000) - 5_000))
        yield Application(store, Mempool(chain_id))
    finally:
        database.close()
