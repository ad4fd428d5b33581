"""A process that wrote and read py-evm state through our LevelDB StateDB exits cleanly.

trie's HexaryTrie keeps the tries py-evm writes through (and so our StateDB and its
plyvel.DB) alive in a class-level cache; freed only at interpreter teardown, plyvel's
``__dealloc__`` failed and printed an empty "Error in sys.excepthook" (node/db.py,
``_release_pinned_tries``). Run in a fresh interpreter, because only its exit shows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from eth.db.account import AccountDB
from genesis.devnet import new_genesis
from node.db import Database
from node.store import ChainStore
from vm.db import OverlayDB

path, close = sys.argv[1], sys.argv[2] == "close"
validator = b"\\x11" * 20
database = Database(path)
store = ChainStore(database)
store.init_genesis(new_genesis(7077, [(validator, 10)], fund_dev_accounts=False,
                               genesis_time_ms=1_700_000_000_000))
accounts = AccountDB(OverlayDB(store.state_db), store.head.state_root)
accounts.get_balance(validator)
accounts.set_balance(validator, 5)
accounts.persist()
if close:
    database.close()
print("ok")
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("close", ["close", "no-close"])
def test_exit_after_state_access_prints_nothing(tmp_path: Path, close: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "db"), close], cwd=ROOT,
                          capture_output=True, text=True, timeout=45)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "Error in sys.excepthook" not in proc.stderr
    assert "Exception ignored" not in proc.stderr
