"""The flat account snapshot (docs/storage.md, "Flat state snapshot") on a real LevelDB:
it moves with the head in the block's batch, execution on the head reads it, older roots
read the trie, ``db check`` compares it with the trie, a missing one is rebuilt at start,
and a commit without the block's diff drops it instead of leaving another state's."""

from __future__ import annotations

import random

from eth._utils.address import generate_contract_address
from eth.constants import BLANK_ROOT_HASH
from eth.db.account import AccountDB
from eth_account import Account
from eth_utils import to_checksum_address

from consensus.crypto import address_of_private_key
from consensus.types import PRECOMMIT, Commit, Vote
from genesis.devnet import dev_accounts, new_genesis
from node.app import Application
from node.db import FLAT_ACCOUNT, FLAT_ROOT, FLAT_SLOT, FLAT_SLOT_ROOT, Database
from node.dbcheck import check_database
from node.mempool import Mempool
from node.store import ChainStore
from vm.crypto import keccak256
from vm.db import OverlayDB
from vm.flat import iter_trie_items
from vm.state import decode_account, encode_account
from vm.trie import clear_slot_layers

CHAIN_ID = 7077
VALIDATOR_KEY = bytes.fromhex("11" * 32)


def _open(path) -> tuple[Database, ChainStore, Application, Mempool]:
    database = Database(path)
    store = ChainStore(database)
    if not store.initialised:
        store.init_genesis(new_genesis(CHAIN_ID, [(address_of_private_key(VALIDATOR_KEY), 10)],
                                       genesis_time_ms=1_700_000_000_000))
    mempool = Mempool(CHAIN_ID, max_per_sender=64, max_total=1000, min_fee=10**9)
    now = [1_700_000_000.0 + store.head_height]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    return database, store, Application(store, mempool, clock=clock), mempool


def _block(store: ChainStore, app: Application, mempool: Mempool, raws: list[bytes]):
    for raw in raws:
        mempool.add(raw, app.head_state())
    proposer = address_of_private_key(VALIDATOR_KEY)
    height = store.head_height + 1
    value = app.propose(height, proposer)
    h = app.block_hash(value)
    vote = Vote.create(CHAIN_ID, VALIDATOR_KEY, PRECOMMIT, height, 0, h, proposer)
    block = app.commit(height, value, Commit.from_votes(height, 0, h, [vote]))
    assert len(block.transactions) == len(raws)
    return block


def _sign(key: bytes, nonce: int, to: str | None, value: int, data: bytes = b"") -> bytes:
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "value": value, "gas": 100_000, "data": data,
          "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 10**9}
    if to is not None:
        tx["to"] = to
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def _flat_items(store: ChainStore) -> list[tuple[bytes, bytes]]:
    return [(k[1:], v) for k, v in store.db.iterator(prefix=FLAT_ACCOUNT)]


def _storage_items(store: ChainStore, root: bytes) -> list[tuple[bytes, bytes]]:
    """(hashed address ++ hashed slot, RLP) of every storage slot of the state at ``root``."""
    get = store.state_db.__getitem__
    out = []
    for hashed, raw in iter_trie_items(get, root):
        storage_root = decode_account(raw).storage_root
        if storage_root != BLANK_ROOT_HASH:
            out.extend((hashed + slot, value) for slot, value in iter_trie_items(get, storage_root))
    return out


def _flat_slots(store: ChainStore) -> list[tuple[bytes, bytes]]:
    return [(k[1:], v) for k, v in store.db.iterator(prefix=FLAT_SLOT)]


def _assert_snapshot_is_head(store: ChainStore) -> None:
    root = store.head.state_root
    assert store.db.get(FLAT_ROOT) == root == store.db.get(FLAT_SLOT_ROOT)
    assert store.state_db.flat.root == root
    assert _flat_items(store) == list(iter_trie_items(store.state_db.__getitem__, root))
    slots = _storage_items(store, root)
    assert _flat_slots(store) == slots
    report = check_database(store)
    assert report.ok, report.problems
    assert report.flat_state == "ok" and report.flat_accounts == report.accounts
    assert report.flat_slots == len(slots) == report.storage_slots


# A contract whose creation sets slot 1 to 1 and whose every call sets slot 0 to the block
# time and empties slot 1: storage written, rewritten and emptied across blocks.
_RUNTIME = "42600055600060015500"
_INITCODE = bytes.fromhex("6001600155" "600a60116000" "39" "600a6000f3" + _RUNTIME)
# creates, stores and self-destructs in one transaction: a wiped storage
_SELF_DESTRUCT = bytes.fromhex("60016000556000ff")


def test_snapshot_follows_the_head_and_db_check_compares_it(tmp_path) -> None:
    database, store, app, mempool = _open(tmp_path / "db")
    _assert_snapshot_is_head(store)  # genesis writes it
    senders = dev_accounts()
    rng = random.Random(3)
    fresh = [Account.create().address for _ in range(30)]
    nonces = [0] * len(senders)
    contract = None
    for _ in range(4):
        raws = []
        for i, (_, key) in enumerate(senders):
            raws.append(_sign(key, nonces[i], rng.choice(fresh), rng.randrange(1, 10**18)))
            nonces[i] += 1
        # an empty account touched and deleted (EIP-161), and a contract with storage
        raws.append(_sign(senders[0][1], nonces[0], Account.create().address, 0))
        nonces[0] += 1
        raws.append(_sign(senders[1][1], nonces[1], None, 0, bytes.fromhex("600160005500")))
        nonces[1] += 1
        raws.append(_sign(senders[1][1], nonces[1], None, 0, _SELF_DESTRUCT))
        nonces[1] += 1
        if contract is None:
            contract = generate_contract_address(senders[2][0], nonces[2])
            raws.append(_sign(senders[2][1], nonces[2], None, 0, _INITCODE))
        else:
            raws.append(_sign(senders[2][1], nonces[2], to_checksum_address(contract), 0))
        nonces[2] += 1
        _block(store, app, mempool, raws)
        _assert_snapshot_is_head(store)
    head_state = app.state_at(store.head)
    assert head_state.get_storage(contract, 0) == store.head.timestamp_ms // 1000
    assert head_state.get_storage(contract, 1) == 0

    # storage reads on the head come from the snapshot: a forged slot entry is read
    slot_key = FLAT_SLOT + keccak256(contract) + keccak256((0).to_bytes(32, "big"))
    honest_slot = store.db.get(slot_key)
    store.db.put(slot_key, b"\x07")
    clear_slot_layers()  # (the slot layers hold what the block wrote)
    assert app.state_at(store.head).get_storage(contract, 0) == 7
    clear_slot_layers()
    assert app.state_at(store.head).slots_reader(contract)([1, 0, 5, 0]) == [0, 7, 0, 7]
    clear_slot_layers()
    report = check_database(store)
    assert not report.ok and "storage" in report.problems[0]
    store.db.put(slot_key, honest_slot)

    # execution on the head reads the snapshot, an older root reads the trie
    old = store.header_by_height(store.head_height - 1)
    victim = next(a for a in (bytes.fromhex(f[2:]) for f in fresh)
                  if _trie_balance(store, store.head.state_root, a) > 0)
    honest = app.head_state().get_balance(victim)
    assert honest == _trie_balance(store, store.head.state_root, victim) > 0
    raw = store.db.get(FLAT_ACCOUNT + keccak256(victim))
    acct = decode_account(raw)
    store.db.put(FLAT_ACCOUNT + keccak256(victim), encode_account(
        type(acct)(acct.nonce, acct.balance + 1, acct.storage_root, acct.code_hash)))
    assert app.state_at(store.head).get_balance(victim) == honest + 1
    assert app.state_at(old).get_balance(victim) == _trie_balance(store, old.state_root, victim)
    report = check_database(store)
    assert not report.ok and "does not match" in report.problems[0]
    store.db.put(FLAT_ACCOUNT + keccak256(victim), raw)
    database.close()


def _trie_balance(store: ChainStore, root: bytes, address: bytes) -> int:
    return AccountDB(OverlayDB(store.state_db), root).get_balance(address)


def test_a_state_made_before_a_commit_keeps_reading_its_own_root(tmp_path) -> None:
    database, store, app, mempool = _open(tmp_path / "db")
    (addr, key), = dev_accounts()[:1]
    to = Account.create().address
    before = app.head_state()
    assert before.get_balance(addr) > 0  # reads the snapshot
    _block(store, app, mempool, [_sign(key, 0, to, 12345)])
    # the snapshot now holds the new head; the old state must not see it
    assert before.get_balance(bytes.fromhex(to[2:])) == 0
    assert app.head_state().get_balance(bytes.fromhex(to[2:])) == 12345
    database.close()


def test_missing_snapshot_is_rebuilt_at_start(tmp_path) -> None:
    database, store, app, mempool = _open(tmp_path / "db")
    (addr, key), = dev_accounts()[:1]
    _block(store, app, mempool, [_sign(key, 0, Account.create().address, 1)])
    expected = _flat_items(store)
    # an upgraded node: no marker, and entries of some other state
    store.db.delete(FLAT_ROOT)
    for k, _ in expected[:3]:
        store.db.delete(FLAT_ACCOUNT + k)
    store.db.put(FLAT_ACCOUNT + b"\x00" * 32, b"\xc0")
    database.close()
    _open_upgraded(tmp_path, key, expected)


def test_an_account_only_snapshot_is_rebuilt_with_the_slots(tmp_path) -> None:
    """A store from before the slot entries: S names the head, O is absent."""
    database, store, app, mempool = _open(tmp_path / "db")
    (addr, key), = dev_accounts()[:1]
    _block(store, app, mempool, [_sign(key, 0, None, 0, _INITCODE)])
    expected = _flat_items(store)
    assert _flat_slots(store)
    store.db.delete(FLAT_SLOT_ROOT)
    for k, _ in _flat_slots(store):
        store.db.delete(FLAT_SLOT + k)
    database.close()
    _open_upgraded(tmp_path, key, expected)


def _open_upgraded(tmp_path, key: bytes, expected: list[tuple[bytes, bytes]]) -> None:
    database = Database(tmp_path / "db")
    unchecked = ChainStore(database, rebuild_flat=False)
    report = check_database(unchecked)
    assert report.ok and report.flat_state == "absent"
    assert unchecked.state_db.flat.root is None  # execution reads the trie meanwhile
    database.close()

    database, store, app, mempool = _open(tmp_path / "db")
    assert _flat_items(store) == expected
    _assert_snapshot_is_head(store)
    _block(store, app, mempool, [_sign(key, 1, Account.create().address, 1)])
    _assert_snapshot_is_head(store)
    database.close()


def test_a_commit_without_the_blocks_diff_drops_the_snapshot(tmp_path) -> None:
    database, store, app, mempool = _open(tmp_path / "db")
    (addr, key), = dev_accounts()[:1]
    mempool.add(_sign(key, 0, Account.create().address, 1), app.head_state())
    proposer = address_of_private_key(VALIDATOR_KEY)
    value = app.propose(1, proposer)
    for executed in list(getattr(app, "_executed", {}).values()):
        executed.overlay.flat_diffs.clear()
    h = app.block_hash(value)
    vote = Vote.create(CHAIN_ID, VALIDATOR_KEY, PRECOMMIT, 1, 0, h, proposer)
    app.commit(1, value, Commit.from_votes(1, 0, h, [vote]))
    assert store.state_db.flat.root is None and store.db.get(FLAT_ROOT) is None
    assert app.head_state().get_balance(addr) > 0  # the trie answers
    database.close()
    database, store, app, mempool = _open(tmp_path / "db")
    _assert_snapshot_is_head(store)
    database.close()
