"""Build the genesis state and header from a spec. Deterministic: the same spec
always gives the same state root and genesis hash."""

from __future__ import annotations

from eth.abc import AtomicDatabaseAPI
from eth.constants import BLANK_ROOT_HASH
from eth_typing import Address

from genesis.spec import GenesisSpec
from vm.block import EMPTY_BLOOM, EMPTY_ROOT, ZERO_ADDRESS, ZERO_HASH, Header, validators_hash
from vm.epoch import init_clock
from vm.modules import SYSTEM_MODULES
from vm.modules.params import set_param
from vm.modules.validators import set_power
from vm.state import BlockEnv, make_state
from vm.supply import set_genesis_supply


def build_genesis(db: AtomicDatabaseAPI, spec: GenesisSpec) -> Header:
    env = BlockEnv(
        chain_id=spec.chain_id, height=0, timestamp_ms=spec.genesis_time_ms, proposer=ZERO_ADDRESS,
        gas_limit=spec.gas_limit, base_fee_per_gas=spec.base_fee_per_gas, parent_hash=ZERO_HASH,
    )
    state = make_state(db, BLANK_ROOT_HASH, env)
    for raw_address, acct in sorted(spec.alloc.items()):
        address = Address(raw_address)
        state.set_balance(address, acct.balance)
        state.set_nonce(address, acct.nonce)
        if acct.code:
            state.set_code(address, acct.code)
        for slot, value in sorted(acct.storage.items()):
            state.set_storage(address, slot, value)
    # system accounts get nonce 1 so EIP-161 never deletes them (docs/protocol.md)
    for system_address in SYSTEM_MODULES:
        address = Address(system_address)
        state.set_nonce(address, max(1, state.get_nonce(address)))
    for name, value in sorted(spec.params.items()):
        set_param(state, name, value)
    init_clock(state)
    set_genesis_supply(state, sum(acct.balance for acct in spec.alloc.values()))
    for v in spec.validators:
        set_power(state, v.address, v.power)
    for module in SYSTEM_MODULES.values():
        module.init_genesis(state, spec)
    state.persist()
    vhash = validators_hash([(v.address, v.power) for v in spec.validators])
    return Header(
        chain_id=spec.chain_id,
        height=0,
        timestamp_ms=spec.genesis_time_ms,
        parent_hash=ZERO_HASH,
        proposer=ZERO_ADDRESS,
        state_root=state.state_root,
        transactions_root=EMPTY_ROOT,
        receipts_root=EMPTY_ROOT,
        attestations_root=EMPTY_ROOT,
        logs_bloom=EMPTY_BLOOM,
        gas_limit=spec.gas_limit,
        gas_used=0,
        base_fee_per_gas=spec.base_fee_per_gas,
        validators_hash=vhash,
        next_validators_hash=vhash,
        last_commit_hash=ZERO_HASH,
        evidence_hash=ZERO_HASH,
    )
