"""py-evm's Cancun state with the system modules merged into the precompiles.

The state reads and writes any py-evm ``AtomicDatabaseAPI``; the node hands it a
buffered view over LevelDB so that a block's trie writes land in the same write
batch as the block itself (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import rlp
from eth.abc import AtomicDatabaseAPI
from eth.constants import BLANK_ROOT_HASH
from eth.db.account import AccountDB
from eth.db.cache import CacheDB
from eth.db.journal import JournalDB
from eth.rlp.accounts import Account
from eth.validation import validate_canonical_address, validate_uint64, validate_uint256
from eth.vm.execution_context import ExecutionContext
from eth.vm.forks.cancun import CancunState
from eth.vm.forks.cancun.computation import CancunComputation
from eth.vm.forks.cancun.transactions import CancunTransactionBuilder
from eth_typing import Address, BlockNumber, Hash32
from toolz import merge

from codec import RLPDecodeError
from codec.transaction import check_transaction_shape
from vm.block import rlp_uint
from vm.crypto import keccak256
from vm.errors import MalformedTransaction
from vm.flat import FlatDiff, flat_reader_of, publish_diff
from vm.modules import SYSTEM_MODULES
from vm.trie import FastAccountStorageDB, TrieNodes, update_trie, warm_shared_nodes

TransactionBuilder = CancunTransactionBuilder
_UINT256_LIMIT = 2**256


class MotusComputation(CancunComputation):
    _precompiles = merge(CancunComputation.get_precompiles(), SYSTEM_MODULES)


def encode_account(account: Account) -> bytes:
    """``rlp.encode(account, sedes=Account)`` without the generic encoder's sedes work:
    [nonce, balance, storage_root (32 bytes), code_hash (32 bytes)]."""
    payload = b"".join((rlp_uint(account.nonce), rlp_uint(account.balance),
                        b"\xa0", account.storage_root, b"\xa0", account.code_hash))
    n = len(payload)  # 68 to 108 bytes: one length byte
    return bytes((0xF8, n)) + payload


def decode_account(raw: bytes) -> Account:
    """``rlp.decode(raw, sedes=Account)`` for the canonical shape :func:`encode_account`
    writes, without the generic decoder; anything else goes to the generic decoder."""
    try:
        b0 = raw[0]
        i = 1 if b0 < 0xF8 else 1 + b0 - 0xF7
        ints = []
        for _ in range(2):
            c = raw[i]
            if c < 0x80:
                ints.append(c)
                i += 1
            elif c <= 0xB7 and c != 0x81:
                n = c - 0x80
                if n and raw[i + 1] == 0:
                    raise ValueError("leading zero")
                ints.append(int.from_bytes(raw[i + 1:i + 1 + n], "big"))
                i += 1 + n
            else:
                raise ValueError("not a short integer")
        if raw[i] != 0xA0 or raw[i + 33] != 0xA0 or i + 66 != len(raw):
            raise ValueError("not two hashes")
        return Account(ints[0], ints[1], raw[i + 1:i + 33], raw[i + 34:i + 66])
    except (IndexError, ValueError):
        return rlp.decode(raw, sedes=Account)  # type: ignore[no-any-return]


class _FlatAccountLookup:
    """Where MotusAccountDB's account cache reads from: the flat snapshot (vm.flat) plus
    this state's own persisted changes while the state is on the snapshot's root, else
    the trie. Answers b"" for a missing account, as the trie does."""

    __slots__ = ("_adb",)

    def __init__(self, adb: MotusAccountDB) -> None:
        self._adb = adb

    def __getitem__(self, address: bytes) -> bytes:
        adb = self._adb
        if adb._flat_root is not None:
            hashed = keccak256(address)
            changed = adb._flat_changed
            if hashed in changed:
                return changed[hashed] or b""
            reader, base = adb._flat_reader, adb._flat_base
            if reader is not None and reader.root == base:
                value = reader.account(hashed)
                if reader.root == base:  # no commit rewrote the snapshot meanwhile
                    return value or b""
            adb._flat_root = None  # the head moved on: the trie answers from now on
        return adb._trie_logger[address]  # type: ignore[no-any-return]

    def __contains__(self, address: bytes) -> bool:
        return bool(self[address])


class MotusAccountDB(AccountDB):
    """py-evm's AccountDB with the writes every transaction makes (balance and nonce,
    several per transfer) built and encoded directly: ``Account.copy`` deep-copies every
    unchanged field and ``rlp.encode`` infers sedes, ~15 us a write against ~4 us here.
    Same values, same validation, same bytes (tests/vm/test_state_accounts.py checks the
    state roots against stock py-evm).

    On the head's root, account reads come from the node's flat snapshot (one lookup by
    hashed address) instead of a walk down the trie; each ``make_state_root`` hands the
    accounts it changed to the overlay as a :class:`vm.flat.FlatDiff`, which the node
    commits with the block (docs/storage.md, "Flat state snapshot"). Any other root, or
    a snapshot that moves on under a long-lived state, reads the trie as before."""

    def __init__(self, db: AtomicDatabaseAPI, state_root: Hash32 = BLANK_ROOT_HASH) -> None:
        super().__init__(db, state_root)
        self._flat_db = db
        reader = flat_reader_of(db)
        self._flat_reader = reader
        self._flat_base = state_root
        self._flat_changed: dict[bytes, bytes | None] = {}
        # storage changed since the snapshot's root: address -> hashed slot -> RLP (b""
        # emptied), and the addresses whose storage went through a wipe (read from the
        # trie from then on, rewritten whole in the snapshot by the node's commit)
        self._flat_slots: dict[bytes, dict[bytes, bytes]] = {}
        self._flat_wiped: set[bytes] = set()
        # the root that snapshot + _flat_changed hold, None when the trie is the source
        self._flat_root: bytes | None = (
            state_root if reader is not None and reader.root == state_root else None)
        if self._flat_root is not None:
            self._trie_cache = CacheDB(_FlatAccountLookup(self))  # type: ignore[arg-type]
            self._journaltrie = JournalDB(self._trie_cache)

    def set_balance(self, address, balance: int) -> None:  # type: ignore[no-untyped-def]
        validate_canonical_address(address, title="Storage Address")
        validate_uint256(balance, title="Account Balance")
        a = self._get_account(address)
        self._set_account(address, Account(a.nonce, balance, a.storage_root, a.code_hash))

    def set_nonce(self, address, nonce: int) -> None:  # type: ignore[no-untyped-def]
        validate_canonical_address(address, title="Storage Address")
        validate_uint64(nonce, title="Nonce")
        a = self._get_account(address)
        self._set_account(address, Account(nonce, a.balance, a.storage_root, a.code_hash))

    def _set_account(self, address, account: Account) -> None:  # type: ignore[no-untyped-def]
        self._account_cache[address] = account
        self._journaltrie[address] = encode_account(account)

    def _get_account(self, address, from_journal: bool = True) -> Account:  # type: ignore[no-untyped-def]
        if from_journal:
            cached = self._account_cache.get(address)
            if cached is not None:
                return cached
        raw = self._get_encoded_account(address, from_journal)
        account = decode_account(raw) if raw else Account()
        if from_journal:
            self._account_cache[address] = account
        return account

    @property
    def state_root(self) -> Hash32:
        return self._trie.root_hash

    @state_root.setter
    def state_root(self, value: Hash32) -> None:
        if value != self._flat_root:
            self._flat_root = None
        AccountDB.state_root.fset(self, value)  # type: ignore[attr-defined]

    def flat_slot(self, address: bytes, hashed_address: bytes, hashed_slot: bytes) -> bytes | None:
        """The storage slot's RLP (b"" when empty) in this state, from the flat snapshot
        and this state's own persisted storage changes, or None when the snapshot cannot
        answer (another root, the head moved on, the storage was wiped): the trie then
        answers. Only for storage created on this state's current root (vm.trie's
        FastStorageLookup, which asks after its own pending writes)."""
        if self._flat_root is None or address in self._flat_wiped:
            return None
        changed = self._flat_slots.get(address)
        if changed is not None:
            value = changed.get(hashed_slot)
            if value is not None:
                return value
        reader, base = self._flat_reader, self._flat_base
        if reader is None or reader.root != base:
            return None
        value = reader.slot(hashed_address, hashed_slot)
        if reader.root != base:  # a commit rewrote the snapshot meanwhile
            return None
        return value or b""

    def flat_slots(self, address: bytes, hashed_address: bytes,
                   hashed_slots: Sequence[bytes]) -> list[bytes | None] | None:
        """:meth:`flat_slot` for many slots of one account (each answer the same), or
        None when the snapshot cannot answer any of them."""
        if self._flat_root is None or address in self._flat_wiped:
            return None
        reader, base = self._flat_reader, self._flat_base
        if reader is None or reader.root != base:
            return None
        changed = self._flat_slots.get(address)
        many = getattr(reader, "slots", None)  # (node.db.FlatAccounts: one call for all)
        if many is not None and not changed:
            out: list[bytes | None] = [value or b"" for value in many(hashed_address, hashed_slots)]
        else:
            changed = changed or {}
            slot = reader.slot
            out = [changed.get(hashed) for hashed in hashed_slots]
            for i, value in enumerate(out):
                if value is None:
                    out[i] = slot(hashed_address, hashed_slots[i]) or b""
        if reader.root != base:  # a commit rewrote the snapshot meanwhile
            return None
        return out

    def _note_flat_storage(self) -> None:
        """Record the storage changes the dirty stores are about to persist."""
        for address, store in self._dirty_account_stores():
            lookup: Any = getattr(store, "_storage_lookup", None)
            if getattr(lookup, "_wiped", True) or lookup._write_trie is not None:
                self._flat_wiped.add(address)  # (py-evm's own storage: treated alike)
                self._flat_slots.pop(address, None)
            elif lookup._pending and address not in self._flat_wiped:
                slots = self._flat_slots.get(address)
                if slots is None:
                    slots = self._flat_slots[address] = {}
                slots.update(lookup._pending)

    def make_state_root(self) -> Hash32:
        """py-evm's make_state_root, with the account trie updated in one pass over the
        block's changed accounts sorted by hashed address (vm.trie.update_trie)
        instead of one HexaryTrie.set each: same root, a fraction of the node reads,
        encodings and hashes."""
        for _address, store in self._dirty_account_stores():
            store.make_storage_root()
        if self._flat_root is not None:
            self._note_flat_storage()
        for address, storage_root in self._get_changed_roots():
            if self.account_exists(address) or storage_root != BLANK_ROOT_HASH:
                self._set_storage_root(address, storage_root)
        self._journaldb.persist()
        diff = self._journaltrie.diff()
        changes: dict[bytes, bytes | None] = {keccak256(a): None for a in diff.deleted_keys()}
        for key, value in diff.pending_items():
            changes[keccak256(key)] = value or None
        if changes:
            olds = None
            if self._flat_root is not None:
                # the values before this persist, as the block's reads cached them
                olds = {keccak256(a): self._trie_cache[a] for a in (*diff.deleted_keys(), *diff.pending_keys())}
            # account trie nodes decoded for this update only: the flat snapshot serves
            # account reads, so there is little to gain from keeping them
            root, nodes = update_trie(TrieNodes(self._batchtrie), self._trie.root_hash,
                                      sorted(changes.items()), olds, keep=False)
            for key, node in nodes.items():
                self._batchtrie[key] = node
            self._trie.root_hash = root
        self._journaltrie.reset()
        self._trie_cache.reset_cache()
        root = self.state_root
        if self._flat_root is not None:
            self._flat_changed.update(changes)
            self._flat_root = root
            publish_diff(self._flat_db, FlatDiff(
                self._flat_base, root, dict(self._flat_changed),
                {keccak256(a): dict(v) for a, v in self._flat_slots.items()},
                {keccak256(a): bytes(self._get_storage_root(Address(a))) for a in self._flat_wiped}))
        return root

    # Storage reads and writes by system modules run thousands of times a block: the same
    # checks as py-evm's (same errors), with the common case (an int slot and value, a
    # 20-byte address) tested inline before py-evm's validators run.

    def get_storage(self, address, slot: int, from_journal: bool = True) -> int:  # type: ignore[no-untyped-def]
        if not (type(slot) is int and 0 <= slot < _UINT256_LIMIT
                and type(address) is bytes and len(address) == 20):
            validate_canonical_address(address, title="Storage Address")
            validate_uint256(slot, title="Storage Slot")
        return self._get_address_store(address).get(slot, from_journal)  # type: ignore[no-any-return]

    def slot_reader(self, address: Address) -> Callable[[int], int]:
        """``lambda slot: get_storage(address, slot)`` for many reads of one account's
        storage (block execution's attestation checks: ~10,000 a block), with the
        account's storage looked up once a read rather than through four calls
        (:meth:`vm.trie.FastAccountStorageDB.read_slot`). Same values, same checks."""
        if not (type(address) is bytes and len(address) == 20):
            validate_canonical_address(address, title="Storage Address")

        def read(slot: int) -> int:
            if not (type(slot) is int and 0 <= slot < _UINT256_LIMIT):
                validate_uint256(slot, title="Storage Slot")
            store = self._get_address_store(address)  # (a dict lookup once made)
            if type(store) is FastAccountStorageDB:
                return store.read_slot(slot)  # type: ignore[no-any-return]
            return store.get(slot)  # type: ignore[no-any-return]

        return read

    def slots_reader(self, address: Address) -> Callable[[Sequence[int]], list[int]]:
        """:meth:`slot_reader` for a list of slots at once: ``[read(slot) for slot in
        slots]`` with the same values and checks (:meth:`vm.trie.FastAccountStorageDB.
        read_slots`)."""
        if not (type(address) is bytes and len(address) == 20):
            validate_canonical_address(address, title="Storage Address")

        def read_many(slots: Sequence[int]) -> list[int]:
            for slot in slots:
                if not (type(slot) is int and 0 <= slot < _UINT256_LIMIT):
                    validate_uint256(slot, title="Storage Slot")
            store = self._get_address_store(address)  # (a dict lookup once made)
            if type(store) is FastAccountStorageDB:
                return store.read_slots(slots)  # type: ignore[no-any-return]
            return [store.get(slot) for slot in slots]

        return read_many

    def set_storage(self, address, slot: int, value: int) -> None:  # type: ignore[no-untyped-def]
        if not (type(value) is int and 0 <= value < _UINT256_LIMIT
                and type(slot) is int and 0 <= slot < _UINT256_LIMIT
                and type(address) is bytes and len(address) == 20):
            validate_uint256(value, title="Storage Value")
            validate_uint256(slot, title="Storage Slot")
            validate_canonical_address(address, title="Storage Address")
        store = self._get_address_store(address)
        self._dirty_accounts.add(address)
        store.set(slot, value)

    def set_storage_many(self, address: Address, items: Iterable[tuple[int, int]]) -> None:
        """:meth:`set_storage` for each (slot, value) of one account, in order: the same
        checks and journal entries, without the per-slot call layers."""
        if not (type(address) is bytes and len(address) == 20):
            validate_canonical_address(address, title="Storage Address")
        checked = []
        for slot, value in items:
            if not (type(value) is int and 0 <= value < _UINT256_LIMIT
                    and type(slot) is int and 0 <= slot < _UINT256_LIMIT):
                validate_uint256(value, title="Storage Value")
                validate_uint256(slot, title="Storage Slot")
            checked.append((slot, value))
        if not checked:
            return
        store = self._get_address_store(address)
        self._dirty_accounts.add(address)
        if type(store) is FastAccountStorageDB:
            store.set_many(checked)
        else:  # (py-evm's own storage path: the bench's and tests' reference)
            for slot, value in checked:
                store.set(slot, value)

    def _get_address_store(self, address):  # type: ignore[no-untyped-def]
        # storage tries read through decoded nodes kept by hash and written in one batch
        # per block (vm.trie: same values, roots and nodes as py-trie's)
        store = self._account_stores.get(address)
        if store is None:
            store = self._account_stores[address] = FastAccountStorageDB(
                self._raw_store_db, self._get_storage_root(address), address)
            if self._flat_root is not None and address not in self._flat_wiped:
                # on the snapshot's root (with this state's changes): slot reads the
                # layers miss come from the snapshot, one lookup instead of a trie walk
                lookup = store._storage_lookup
                lookup._flat, lookup._flat_address = self, keccak256(address)
        return store


class MotusState(CancunState):
    computation_class = MotusComputation
    account_db_class = MotusAccountDB
    block_timestamp_ms: int | None = None  # set by make_state

    def set_storage_many(self, address: Address, items: Iterable[tuple[int, int]]) -> None:
        """``set_storage(address, slot, value)`` for each item, in order
        (:meth:`MotusAccountDB.set_storage_many`)."""
        self._account_db.set_storage_many(address, items)  # type: ignore[attr-defined]

    def slot_reader(self, address: Address) -> Callable[[int], int]:
        """``lambda slot: get_storage(address, slot)``, faster
        (:meth:`MotusAccountDB.slot_reader`)."""
        return self._account_db.slot_reader(address)  # type: ignore[attr-defined,no-any-return]

    def slots_reader(self, address: Address) -> Callable[[Sequence[int]], list[int]]:
        """Many slots of one account in one call (:meth:`MotusAccountDB.slots_reader`)."""
        return self._account_db.slots_reader(address)  # type: ignore[attr-defined,no-any-return]


@dataclass(frozen=True)
class BlockEnv:
    """What execution needs to know about the block being built or checked."""

    chain_id: int
    height: int
    timestamp_ms: int
    proposer: bytes
    gas_limit: int
    base_fee_per_gas: int
    parent_hash: bytes
    prev_hashes: tuple[bytes, ...] = field(default=())  # newest first, up to 256, for BLOCKHASH

    @property
    def timestamp(self) -> int:
        return self.timestamp_ms // 1000


def execution_context(env: BlockEnv) -> ExecutionContext:
    return ExecutionContext(
        coinbase=Address(env.proposer),
        timestamp=env.timestamp,
        block_number=BlockNumber(env.height),
        difficulty=0,
        mix_hash=Hash32(env.parent_hash),  # PREVRANDAO: not a randomness source on this chain
        gas_limit=env.gas_limit,
        prev_hashes=[Hash32(h) for h in env.prev_hashes],
        chain_id=env.chain_id,
        base_fee_per_gas=env.base_fee_per_gas,
        excess_blob_gas=0,
    )


def make_state(db: AtomicDatabaseAPI, state_root: bytes, env: BlockEnv) -> MotusState:
    state = MotusState(db, execution_context(env), Hash32(state_root))
    # the EVM sees whole seconds; system modules that order events against device
    # times (ownership periods) need the block's milliseconds
    state.block_timestamp_ms = env.timestamp_ms
    return state


def decode_transaction(raw: bytes):
    """py-evm's transaction for the envelope ``raw``, after the bounded shape check
    (:func:`codec.transaction.check_transaction_shape`: a legacy list is flat, a typed
    one at most 4 deep) so that py-evm's decoder never sees a nesting bomb. Raises only
    MalformedTransaction (py-evm's own decoder raises rlp, validation and its own
    errors, e.g. an unknown transaction type)."""
    try:
        check_transaction_shape(raw)
    except RLPDecodeError as exc:
        raise MalformedTransaction(f"{exc.code}: {exc}") from None
    try:
        return TransactionBuilder.decode(raw)
    except Exception as exc:
        raise MalformedTransaction(f"{type(exc).__name__}: {exc}") from None


def system_addresses() -> Iterable[bytes]:
    return SYSTEM_MODULES.keys()


# The upper levels of the system modules' storage tries decoded at start (a full level
# 3 of a large trie is 4,096 nodes, level 4 65,536: levels 0-3 of the large ones fit).
STARTUP_WARM_NODES = 20_000


def warm_system_storage(state: MotusState, max_nodes: int = STARTUP_WARM_NODES) -> int:
    """Decode the upper levels of every system module's storage trie in ``state`` into the
    shared node cache (vm.trie.warm_shared_nodes); returns the number of nodes."""
    adb: Any = state._account_db
    roots = [bytes(adb._get_storage_root(Address(a))) for a in system_addresses()]
    return warm_shared_nodes(adb._raw_store_db, roots, max_nodes)

