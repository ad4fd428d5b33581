"""py-evm's Cancun state with the system modules merged into the precompiles.

The state reads and writes any py-evm ``AtomicDatabaseAPI``; the node hands it a
buffered view over LevelDB so that a block's trie writes land in the same write
batch as the block itself (DESIGN.md section 10).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from eth.abc import AtomicDatabaseAPI
from eth.vm.execution_context import ExecutionContext
from eth.vm.forks.cancun import CancunState
from eth.vm.forks.cancun.computation import CancunComputation
from eth.vm.forks.cancun.transactions import CancunTransactionBuilder
from eth_typing import Address, BlockNumber, Hash32
from toolz import merge

from vm.modules import SYSTEM_MODULES

TransactionBuilder = CancunTransactionBuilder


class MotusComputation(CancunComputation):
    _precompiles = merge(CancunComputation.get_precompiles(), SYSTEM_MODULES)


class MotusState(CancunState):
    computation_class = MotusComputation


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
    return MotusState(db, execution_context(env), Hash32(state_root))


def decode_transaction(raw: bytes):
    return TransactionBuilder.decode(raw)


def system_addresses() -> Iterable[bytes]:
    return SYSTEM_MODULES.keys()
