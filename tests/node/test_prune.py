"""State pruning (node/prune.py, docs/storage.md "Pruning"), in process on a real LevelDB:
blocks of real signed transactions made by the node's own Application, sweeps run in the
test's thread. A pruned store still serves, and proves (checked with the light client's
proof check), the states it keeps; older ones answer ``state_pruned``; a node that a block
re-creates while a sweep runs survives the sweep. Kills during sweeps of a real node
process: tests/node/test_crash.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import rlp
from eth.rlp.accounts import Account as StateAccount
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address
from trie import HexaryTrie

from genesis.devnet import dev_accounts, new_genesis
from light.client import verify_proof_answer
from node.app import Application
from node.block import EMPTY_COMMIT
from node.db import TRIE, Database
from node.dbcheck import check_database
from node.mempool import Mempool
from node.prune import Pruner, SweepAbandoned
from node.rpc import eth as rpc_eth
from node.rpc import params as p
from node.rpc.errors import RPCError
from node.store import ChainStore

pytestmark = pytest.mark.timeout(120)

CHAIN_ID = 7077
VALIDATOR = b"\x11" * 20
# runtime: SSTORE(0, CALLDATALOAD(0)); the init code returns those 7 bytes
RUNTIME = bytes.fromhex("60003560005500")
INIT = bytes.fromhex("6007600c60003960076000f3") + RUNTIME


@dataclass
class Chain:
    store: ChainStore
    app: Application
    nonces: dict[int, int]

    def send(self, account: int, to: bytes | None, *, value: int = 1, data: bytes = b"",
             gas: int = 21_000) -> bytes:
        _, key = dev_accounts()[account]
        tx = {"type": 2, "chainId": CHAIN_ID, "nonce": self.nonces.get(account, 0), "value": value,
              "gas": gas, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9, "data": data}
        if to is not None:
            tx["to"] = to_checksum_address(to)
        raw = bytes(Account.sign_transaction(tx, key).raw_transaction)
        self.app.submit_transaction(raw, gossip=False)
        self.nonces[account] = self.nonces.get(account, 0) + 1
        return raw

    def block(self) -> int:
        height = self.store.head_height + 1
        self.app.commit(height, self.app.propose(height, VALIDATOR), EMPTY_COMMIT)
        assert len(self.app.mempool) == 0
        return height

    def transfers(self, blocks: int, per_block: int = 4) -> list[bytes]:
        """Blocks of transfers to new accounts; the recipients, in order."""
        recipients = []
        for _ in range(blocks):
            for i in range(per_block):
                to = keccak(b"recipient %d" % len(recipients))[:20]
                recipients.append(to)
                self.send(i % 8, to, value=10**15)
            self.block()
        return recipients


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    database = Database(tmp_path / "data")
    try:
        store = ChainStore(database)
        store.init_genesis(new_genesis(CHAIN_ID, [(VALIDATOR, 10)],
                                       genesis_time_ms=int(time.time() * 1000) - 5_000))
        yield Chain(store, Application(store, Mempool(CHAIN_ID)), {})
    finally:
        database.close()


def trie_keys(store: ChainStore) -> set[bytes]:
    return {k[1:] for k in store.db.iterator(prefix=TRIE, include_value=False)}


def proof(chain: Chain, address: bytes, height: int, slots: tuple[int, ...] = ()) -> dict:
    """The node's own eth_getProof handler."""
    ctx = SimpleNamespace(store=chain.store, app=chain.app)
    return rpc_eth.get_proof(ctx, address, list(slots), p.BlockRef(number=height))


def test_a_window_over_the_whole_chain_deletes_nothing(chain: Chain) -> None:
    """Every key under ``t`` is reachable from some state: the mark misses nothing (a
    missed node here would be a kept node deleted)."""
    chain.transfers(12)
    before = trie_keys(chain.store)
    pruner = Pruner(chain.store, keep_states=1_000, pace=False)
    assert not pruner.due()  # the window has not moved past the floor
    report = pruner.sweep()
    assert (report.floor, report.head, report.deleted) == (0, 12, 0)
    assert report.marked_nodes == report.scanned == len(before)
    assert trie_keys(chain.store) == before


def test_pruned_store_serves_and_proves_the_kept_states_only(chain: Chain) -> None:
    pruner = Pruner(chain.store, keep_states=8, sweep_min_bytes=0, pace=False)
    recipients = chain.transfers(30)
    keys_before = trie_keys(chain.store)
    assert pruner.due()
    report = pruner.sweep()
    assert (report.head, report.floor) == (30, 23)
    assert report.deleted > 0 and report.spared == 0
    assert len(trie_keys(chain.store)) == len(keys_before) - report.deleted == report.marked_nodes
    assert chain.store.oldest_state_height == 23

    # every kept state answers, and its proofs verify against the header (light client)
    for height in range(23, 31):
        header = chain.store.header_by_height(height)
        for who in (recipients[4 * height - 1], dev_accounts()[0][0]):
            account = verify_proof_answer(header, who, [], proof(chain, who, height))
            assert account.balance > 0
    # a state below the floor: refused with the stable reason, and really gone
    for height in (0, 10, 22):
        with pytest.raises(RPCError) as refused:
            proof(chain, dev_accounts()[0][0], height)
        assert refused.value.data == {"reason": "state_pruned", "oldestState": hex(23)}
        with pytest.raises(RPCError):
            rpc_eth.get_balance(SimpleNamespace(store=chain.store, app=chain.app), dev_accounts()[0][0],
                                p.BlockRef(number=height))
    old_root = chain.store.header_by_height(22).state_root
    assert chain.store.db.get(TRIE + old_root) is None

    check = check_database(chain.store)
    assert check.ok, check.problems
    assert check.oldest_state == 23

    # the window moves with the head; a second sweep keeps what the first one kept above it
    chain.transfers(5)
    report = pruner.sweep()
    assert (report.head, report.floor) == (35, 28)
    assert check_database(chain.store).ok


def test_disk_stays_bounded_under_transfers(chain: Chain) -> None:
    """With sweeps, the trie stops growing with the transfers to the same accounts:
    after the window fills, its size depends on the accounts and the window, not the
    number of blocks."""
    pruner = Pruner(chain.store, keep_states=4, sweep_min_bytes=0, pace=False)
    sizes = []
    for _ in range(4):
        for _ in range(10):
            for i in range(4):
                chain.send(i, b"\x22" * 20)
            chain.block()
        pruner.sweep()
        sizes.append(len(trie_keys(chain.store)))
    assert max(sizes[1:]) <= sizes[0] * 1.1, sizes


def test_a_node_a_block_recreates_during_a_sweep_survives(chain: Chain) -> None:
    """A contract's one storage slot goes 1 -> 2 -> 1: its storage root node (a leaf of
    over 32 bytes, stored under its hash) is garbage in the sweep's snapshot taken at
    "2", and the block that sets 1 again commits between the snapshot and the deletes.
    The block wrote that node, so the sweep spares it; a pruner deaf to commits (the
    control) deletes it and the head's state breaks."""
    chain.send(0, None, data=INIT, gas=200_000)
    chain.block()
    creator = dev_accounts()[0][0]
    address = keccak(rlp.encode([creator, 0]))[12:]
    assert chain.app.head_state().get_code(address) == RUNTIME

    def set_slot(value: int) -> None:
        chain.send(1, address, value=0, data=value.to_bytes(32, "big"), gas=100_000)
        chain.block()

    def storage_root() -> bytes:
        raw = HexaryTrie(chain.store.state_db, chain.store.head.state_root).get(keccak(address))
        return rlp.decode(raw, sedes=StateAccount).storage_root

    for deaf in (False, True):
        set_slot(1)
        leaf = storage_root()
        set_slot(2)
        pruner = Pruner(chain.store, keep_states=1, sweep_min_bytes=0, pace=False)
        if deaf:
            pruner._on_trie_writes = lambda puts: None  # type: ignore[method-assign]
            chain.store.trie_listener = pruner._on_trie_writes
        mark = pruner._mark

        def mark_then_commit(*args, mark=mark, leaf=leaf, **kw):
            marked = mark(*args, **kw)
            assert leaf not in marked  # garbage in the snapshot
            set_slot(1)  # re-creates it, after the snapshot
            return marked

        pruner._mark = mark_then_commit  # type: ignore[method-assign]
        report = pruner.sweep()
        assert storage_root() == leaf
        present = chain.store.db.get(TRIE + leaf) is not None
        if not deaf:
            assert report.spared >= 1 and present
            assert check_database(ChainStore(chain.store.database)).ok  # a cold node cache
            assert chain.app.state_at(chain.store.head).get_storage(address, 0) == 1
        else:
            assert not present  # the bug the recording prevents
            assert not check_database(ChainStore(chain.store.database)).ok
        chain.store.trie_listener = None


def test_a_sweep_whose_record_overflows_is_abandoned_and_deletes_nothing_more(chain: Chain) -> None:
    """The record of keys written during a sweep is capped (``max_recorded_keys``). Here the
    block that re-creates a garbage node (as above) also passes the cap: the record is
    dropped, so the sweep must delete nothing more (a sweep that went on deleting would
    take that node, and the head's state would break). The sweep is abandoned, the node
    and every kept state are whole (``db check``), and the next sweep completes."""
    chain.send(0, None, data=INIT, gas=200_000)
    chain.block()
    creator = dev_accounts()[0][0]
    address = keccak(rlp.encode([creator, 0]))[12:]

    def set_slot(value: int) -> None:
        chain.send(1, address, value=0, data=value.to_bytes(32, "big"), gas=100_000)
        chain.block()

    def storage_root() -> bytes:
        raw = HexaryTrie(chain.store.state_db, chain.store.head.state_root).get(keccak(address))
        return rlp.decode(raw, sedes=StateAccount).storage_root

    set_slot(1)
    leaf = storage_root()
    set_slot(2)
    # a block writes ~5 trie keys (accounts, storage root, their branches): 2 is passed by one
    pruner = Pruner(chain.store, keep_states=1, sweep_min_bytes=0, pace=False, max_recorded_keys=2)
    mark = pruner._mark

    def mark_then_commit(*args, **kw):
        marked = mark(*args, **kw)
        assert leaf not in marked  # garbage in the snapshot
        set_slot(1)  # re-creates it after the snapshot, and overflows the record
        return marked

    pruner._mark = mark_then_commit  # type: ignore[method-assign]
    keys_before = trie_keys(chain.store)
    with pytest.raises(SweepAbandoned):
        pruner.sweep()
    assert pruner._recent is None  # the record is freed
    assert storage_root() == leaf and chain.store.db.get(TRIE + leaf) is not None
    assert keys_before <= trie_keys(chain.store)  # nothing deleted
    assert check_database(ChainStore(chain.store.database)).ok  # a cold node cache
    assert chain.app.state_at(chain.store.head).get_storage(address, 0) == 1

    pruner._mark = mark  # type: ignore[method-assign]  # a quiet sweep, later
    report = pruner.sweep()
    assert report.deleted > 0
    assert check_database(ChainStore(chain.store.database)).ok
    assert chain.app.state_at(chain.store.head).get_storage(address, 0) == 1


def test_a_record_overflow_between_delete_batches_stops_the_deletes(
        chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap passed after some delete batches: the batches done stay done (each was
    checked against a complete record), the next one is never written."""
    import node.prune as prune

    chain.transfers(6)
    monkeypatch.setattr(prune, "DELETE_BATCH", 2)
    pruner = Pruner(chain.store, keep_states=1, sweep_min_bytes=0, pace=False, max_recorded_keys=2)
    delete = pruner._delete
    batches = []

    def delete_then_commit(keys, report):
        delete(keys, report)
        batches.append(len(keys))
        if len(batches) == 1:
            chain.transfers(1)  # overflows the record after the first batch
    pruner._delete = delete_then_commit  # type: ignore[method-assign]
    with pytest.raises(SweepAbandoned):
        pruner.sweep()
    assert batches == [2]
    assert check_database(ChainStore(chain.store.database)).ok


def test_storage_config_defaults_and_refusals() -> None:
    from node.config import Config, ConfigError

    storage = Config().storage
    assert (storage.mode, storage.keep_states) == ("pruned", 128)
    assert Config.from_dict({"storage": {"mode": "archive"}}).storage.mode == "archive"
    for bad, why in (({"mode": "full"}, "storage.mode must be one of pruned, archive"),
                     ({"mode": 1}, "storage.mode must be one of"),
                     ({"keep_states": 0}, "storage.keep_states must be at least 1"),
                     ({"sweep_min_bytes": -1}, "storage.sweep_min_bytes must be at least 0"),
                     ({"sweep_growth_percent": 0}, "storage.sweep_growth_percent must be at least 1"),
                     ({"block_cache_mb": 4}, "storage.block_cache_mb must be between 8 and 65536"),
                     ({"write_buffer_mb": 0}, "storage.write_buffer_mb must be between 1 and 1024")):
        with pytest.raises(ConfigError, match=why):
            Config.from_dict({"storage": bad})
    assert "[storage]" in Config().to_toml()


def test_the_block_cache_setting_reaches_leveldb(tmp_path: Path) -> None:
    """``storage.block_cache_mb`` and ``storage.write_buffer_mb`` are what the node opens
    its LevelDB with (256 and 64 MiB by default; other tools open it with 64 and 4 MiB)."""
    from node.config import Config
    from node.home import Home
    from node.node import Node
    from tests.procs import init_home

    assert (Config().storage.block_cache_mb, Config().storage.write_buffer_mb) == (256, 64)
    home = init_home(tmp_path, "node")
    config = Config.load(Home(home).config)
    config.storage.block_cache_mb = 96
    config.storage.write_buffer_mb = 8
    node = Node(home, config)
    try:
        assert node.database.block_cache_bytes == 96 * 2**20
        assert node.database.write_buffer_bytes == 8 * 2**20
        assert node.store.head.height == 0  # the store opened with it works
    finally:
        node.local_txs.close()
        node.webhooks.close()
        node.attestations.close()
        node.database.close()


def test_a_read_overtaken_by_a_sweep_answers_state_pruned(chain: Chain) -> None:
    """A read that passed the floor check and then met nodes a sweep deleted (here: the
    floor is set back to 0 after the sweep, so reads go ahead on the deleted states) gets
    the same ``state_pruned`` answer through the real dispatcher and method table, for
    every kind of state read, never ``-32603``."""
    import json

    import trio

    from node.rpc.dispatch import Dispatcher
    from node.rpc.registry import build_method_table
    from node.store import PRUNED_FLOOR

    chain.transfers(12)
    Pruner(chain.store, keep_states=2, pace=False).sweep()
    chain.store.database.put(PRUNED_FLOOR, (0).to_bytes(8, "big"))
    chain.store.state_db._cache.clear()  # what a node cached before the sweep stays right, and readable
    node = SimpleNamespace(store=chain.store, app=chain.app, chain_id=CHAIN_ID, mempool=chain.app.mempool)
    dispatcher = Dispatcher(node, build_method_table(), max_batch=10, rate_limiter=None)  # type: ignore[arg-type]
    who = "0x" + dev_accounts()[0][0].hex()

    async def ask(method: str, params: list) -> dict:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        return json.loads((await dispatcher.handle(body, transport="http", client="t")).body)

    for method, params in (("eth_getBalance", [who, "0x3"]), ("eth_getProof", [who, [], "0x3"]),
                           ("eth_getTransactionCount", [who, "0x3"]),
                           ("eth_call", [{"to": who, "data": "0x"}, "0x3"])):
        answer = trio.run(ask, method, params)
        assert answer["error"]["code"] == -32000, (method, answer)
        assert answer["error"]["data"]["reason"] == "state_pruned", (method, answer)
    assert trio.run(ask, "eth_getBalance", [who, "latest"])["result"] != "0x0"
