"""``motus db check`` on an account of thousands of slots, with its memory bounds made
small (docs/storage.md, "Checking"): the flat slots rebuilt a few hundred at a time
still catch a changed, a missing and an extra slot entry; the walk catches a missing
node of the large storage trie; the oldest state's walk catches a node only that state
has, skips what the head's walk remembered, and with nothing remembered checks it all
again instead of skipping it unchecked."""

from __future__ import annotations

import rlp
from eth_account import Account
from eth_utils import to_checksum_address

import node.dbcheck as dbcheck
import vm.flat
from consensus.crypto import address_of_private_key
from consensus.types import PRECOMMIT, Commit, Vote
from genesis.devnet import new_genesis
from genesis.spec import GenesisAccount
from node.app import Application
from node.db import FLAT_ACCOUNT, FLAT_SLOT, TRIE, Database
from node.dbcheck import check_database
from node.mempool import Mempool
from node.store import ChainStore
from vm.crypto import keccak256
from vm.state import decode_account

CHAIN_ID = 7077
VALIDATOR_KEY = bytes.fromhex("11" * 32)
SLOTS = 3_000
# each call sets slot 0 to the block time and empties slot 1 (tests/node/test_flat_state.py)
RUNTIME = bytes.fromhex("42600055600060015500")
CONTRACT = bytes.fromhex("c0" * 20)
CALLER_KEY = bytes.fromhex("22" * 32)


def _chain(path):
    spec = new_genesis(CHAIN_ID, [(address_of_private_key(VALIDATOR_KEY), 10)],
                       genesis_time_ms=1_700_000_000_000)
    spec.alloc[CONTRACT] = GenesisAccount(code=RUNTIME, storage={i: i + 1 for i in range(SLOTS)})
    caller = Account.from_key(CALLER_KEY)
    spec.alloc[bytes.fromhex(caller.address[2:])] = GenesisAccount(balance=10**21)
    database = Database(path)
    store = ChainStore(database)
    store.init_genesis(spec)
    now = [1_700_000_000.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    mempool = Mempool(CHAIN_ID, max_per_sender=64, max_total=1000, min_fee=10**9)
    return database, store, Application(store, mempool, clock=clock), mempool, caller


def _call_contract(store: ChainStore, app: Application, mempool: Mempool, caller) -> None:
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": 0, "value": 0, "gas": 100_000, "data": b"",
          "to": to_checksum_address(CONTRACT), "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 10**9}
    mempool.add(bytes(caller.sign_transaction(tx).raw_transaction), app.head_state())
    proposer = address_of_private_key(VALIDATOR_KEY)
    value = app.propose(1, proposer)
    h = app.block_hash(value)
    vote = Vote.create(CHAIN_ID, VALIDATOR_KEY, PRECOMMIT, 1, 0, h, proposer)
    block = app.commit(1, value, Commit.from_votes(1, 0, h, [vote]))
    assert len(block.transactions) == 1


def _storage_root(store: ChainStore) -> bytes:
    return decode_account(store.db.get(FLAT_ACCOUNT + keccak256(CONTRACT))).storage_root


def _trie_nodes(store: ChainStore, root: bytes) -> set[bytes]:
    """The hashes of every stored node of the trie at ``root``."""
    out, stack = set(), [root]
    while stack:
        ref = stack.pop()
        if isinstance(ref, bytes) and len(ref) == 32:
            out.add(ref)
            node = rlp.decode(store.db.get(TRIE + ref))
        else:
            node = ref if isinstance(ref, list) else rlp.decode(ref)
        if len(node) == 17:
            stack.extend(c for c in node[:16] if c != b"")
        elif len(node) == 2 and node[0][0] >> 4 in (0, 1):  # an extension
            stack.append(node[1])
    return out


def _problems_with(store: ChainStore, key: bytes, value: bytes | None) -> list[str]:
    """The check's problems with ``key`` set to ``value`` (None: deleted), then restored."""
    before = store.db.get(key)
    if value is None:
        store.db.delete(key)
    else:
        store.db.put(key, value)
    try:
        return check_database(ChainStore(store.database, rebuild_flat=False)).problems
    finally:
        if before is None:
            store.db.delete(key)
        else:
            store.db.put(key, before)


def test_db_check_of_a_large_account_in_bounded_memory(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(vm.flat, "ROOT_CHUNK", 128)  # the account's slots in ~24 chunks
    monkeypatch.setattr(dbcheck, "SKIP_MIN_NODES", 16)
    database, store, app, mempool, caller = _chain(tmp_path / "db")
    try:
        genesis_root = _storage_root(store)
        _call_contract(store, app, mempool, caller)  # slot 0 rewritten, slot 1 emptied
        head_root = _storage_root(store)
        report = check_database(store)
        assert report.ok, report.problems
        assert report.oldest_state == 0 < report.head  # an archive node: genesis walked too
        assert report.flat_slots == report.storage_slots > SLOTS - 1  # with the modules'
        assert 0 < report.oldest_nodes < report.nodes // 10  # the head's subtrees skipped

        # the flat slots, rebuilt 128 at a time
        hashed = keccak256(CONTRACT)
        slots = dict(store.db.iterator(prefix=FLAT_SLOT + hashed))
        assert len(slots) == SLOTS - 1
        middle = sorted(slots)[len(slots) // 2]  # neither the first nor the last chunk's
        for key, value in ((middle, b"\x07"), (middle, None),
                           (FLAT_SLOT + hashed + b"\x00" * 31 + b"\x01", b"\x07")):
            problems = _problems_with(store, key, value)
            assert len(problems) == 1 and f"account {hashed.hex()}" in problems[0], problems
            assert "does not match its storage trie" in problems[0]
        with store.db.write_batch() as batch:  # all of the account's slot entries gone
            for key in slots:
                batch.delete(key)
        assert check_database(ChainStore(database, rebuild_flat=False)).problems == [
            "flat storage snapshot lacks the slots of 1 accounts"]
        with store.db.write_batch() as batch:
            for key, value in slots.items():
                batch.put(key, value)
        assert check_database(ChainStore(database, rebuild_flat=False)).ok

        # a missing node of the head's storage trie, of the genesis one only, of both
        head_nodes, genesis_nodes = _trie_nodes(store, head_root), _trie_nodes(store, genesis_root)
        shared = head_nodes & genesis_nodes
        assert len(head_nodes) > SLOTS and len(head_nodes - shared) >= 2 and genesis_nodes - shared
        for lost in (max(head_nodes - shared - {head_root}), max(genesis_nodes - shared - {genesis_root}),
                     max(shared)):
            problems = _problems_with(store, TRIE + lost, None)
            assert problems == [f"missing trie node {lost.hex()}"], problems

        # nothing remembered: the genesis state is checked again whole, never skipped
        monkeypatch.setattr(dbcheck, "MAX_SKIP_HASHES", 0)
        again = check_database(ChainStore(database, rebuild_flat=False))
        assert again.ok and again.oldest_nodes >= again.nodes - 2
    finally:
        database.close()
