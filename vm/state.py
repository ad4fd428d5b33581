"""py-evm's Cancun state with the system modules merged into the precompiles.

The state reads and writes any py-evm ``AtomicDatabaseAPI``; the node hands it a
buffered view over LevelDB so that a block's trie writes land in the same write
batch as the block itself (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from eth.abc import AtomicDatabaseAPI
from eth.db.account import AccountDB
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
from vm.errors import MalformedTransaction
from vm.modules import SYSTEM_MODULES
from vm.trie import FastAccountStorageDB

TransactionBuilder = CancunTransactionBuilder


class MotusComputation(CancunComputation):
    _precompiles = merge(CancunComputation.get_precompiles(), SYSTEM_MODULES)


def encode_account(account: Account) -> bytes:
    """``rlp.encode(account, sedes=Account)`` without the generic encoder's sedes work:
    [nonce, balance, storage_root (32 bytes), code_hash (32 bytes)]."""
    payload = b"".join((rlp_uint(account.nonce), rlp_uint(account.balance),
                        b"\xa0", account.storage_root, b"\xa0", account.code_hash))
    n = len(payload)  # 68 to 108 bytes: one length byte
    return bytes((0xF8, n)) + payload


class MotusAccountDB(AccountDB):
    """py-evm's AccountDB with the writes every transaction makes (balance and nonce,
    several per transfer) built and encoded directly: ``Account.copy`` deep-copies every
    unchanged field and ``rlp.encode`` infers sedes, ~15 us a write against ~4 us here.
    Same values, same validation, same bytes (tests/vm/test_state_accounts.py checks the
    state roots against stock py-evm)."""

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

    def _get_address_store(self, address):  # type: ignore[no-untyped-def]
        # storage tries read through decoded nodes kept by hash and written in one batch
        # per block (vm.trie: same values, roots and nodes as py-trie's)
        store = self._account_stores.get(address)
        if store is None:
            store = self._account_stores[address] = FastAccountStorageDB(
                self._raw_store_db, self._get_storage_root(address), address)
        return store


class MotusState(CancunState):
    computation_class = MotusComputation
    account_db_class = MotusAccountDB
    block_timestamp_ms: int | None = None  # set by make_state


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
