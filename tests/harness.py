"""An in-process chain for vm-level tests: genesis with the development accounts,
blocks executed by ``vm.execute_block`` on an in-memory database, real signed
transactions. No node, no sockets (node-level tests start real processes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import eth_abi
from eth.db.atomic import AtomicDB
from eth_account import Account
from eth_utils import function_abi_to_4byte_selector, to_checksum_address

from genesis.builder import build_genesis
from genesis.devnet import dev_accounts, new_genesis
from vm.block import Header, validators_hash
from vm.call import CallResult, call
from vm.execute import (
    BlockBody,
    BlockResult,
    Misbehavior,
    compute_base_fee,
    execute_block,
    receipt_status,
)
from vm.modules.base import load_abi
from vm.state import BlockEnv, decode_transaction, make_state

CHAIN_ID = 7077
GENESIS_TIME_MS = 1_700_000_000_000
VALIDATOR = bytes.fromhex("00000000000000000000000000000000000000a1")


class Reverted(AssertionError):
    pass


class LocalChain:
    """``chain.accounts[i]`` is (address, private key) of dev account i (10,000 MOTUS each)."""

    def __init__(self, params: dict[str, int] | None = None, modules: dict[str, Any] | None = None,
                 validators: Sequence[tuple[bytes, int]] = ((VALIDATOR, 10),)) -> None:
        self.db = AtomicDB()
        self.spec = new_genesis(CHAIN_ID, list(validators), params=params, genesis_time_ms=GENESIS_TIME_MS)
        if modules:
            self.spec.modules.update(modules)
        self.head: Header = build_genesis(self.db, self.spec)
        self.accounts = dev_accounts()
        self.hashes: list[bytes] = [self.head.hash]
        self.results: list[BlockResult] = []

    # --- blocks -------------------------------------------------------------

    def env(self, dt_ms: int = 1000) -> BlockEnv:
        h = self.head
        base_fee = h.base_fee_per_gas if h.height == 0 else compute_base_fee(
            h.gas_used, h.gas_limit, h.base_fee_per_gas, self.param("min_base_fee_per_gas"))
        return BlockEnv(CHAIN_ID, h.height + 1, h.timestamp_ms + dt_ms, VALIDATOR, h.gas_limit, base_fee,
                        h.hash, tuple(reversed(self.hashes[-256:])))

    def block(self, txs: Sequence[bytes] = (), attestations: Sequence[bytes] = (),
              misbehavior: Sequence[Misbehavior] = (), dt_ms: int = 1000, skip_invalid: bool = False) -> BlockResult:
        """Execute one block on the head and make it the new head."""
        env = self.env(dt_ms)
        body = BlockBody([decode_transaction(t) for t in txs], list(attestations), list(misbehavior))
        result = execute_block(self.db, self.head.state_root, env, body, skip_invalid=skip_invalid)
        self.head = Header(
            CHAIN_ID, env.height, env.timestamp_ms, env.parent_hash, env.proposer, result.state_root,
            result.transactions_root, result.receipts_root, result.attestations_root, result.logs_bloom,
            env.gas_limit, result.gas_used, env.base_fee_per_gas, self.head.next_validators_hash,
            validators_hash(result.next_validators), b"\x00" * 32, b"\x00" * 32,
        )
        self.hashes.append(self.head.hash)
        self.results.append(result)
        return result

    def advance(self, blocks: int, dt_ms: int = 1000) -> None:
        for _ in range(blocks):
            self.block(dt_ms=dt_ms)

    def state(self):
        """A scratch view of the head state (writes are not kept)."""
        from vm.db import OverlayDB

        return make_state(OverlayDB(self.db), self.head.state_root, self.env())

    def param(self, name: str) -> int:
        from vm.modules.params import get_param

        return get_param(make_state(self.db, self.head.state_root, _env0(self.head)), name)

    # --- transactions ---------------------------------------------------------

    def sign(self, key: bytes, to: bytes | None, data: bytes = b"", value: int = 0, gas: int = 3_000_000,
             nonce: int | None = None) -> bytes:
        sender = Account.from_key(key).address
        if nonce is None:
            nonce = self.state().get_nonce(bytes.fromhex(sender[2:]))
        fields = {
            "type": 2, "chainId": CHAIN_ID, "nonce": nonce, "gas": gas, "value": value, "data": data,
            "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9,
        }
        if to is not None:
            fields["to"] = to_checksum_address(to)
        return bytes(Account.sign_transaction(fields, key).raw_transaction)

    def transact(self, key: bytes, to: bytes | None, data: bytes = b"", value: int = 0,
                 gas: int = 3_000_000, dt_ms: int = 1000):
        """Send one transaction in its own block; returns its receipt."""
        result = self.block([self.sign(key, to, data, value, gas)], dt_ms=dt_ms)
        return result.receipts[0]

    def call(self, to: bytes, data: bytes, sender: bytes | None = None, value: int = 0) -> CallResult:
        return call(self.db, self.head.state_root, self.env(), sender=sender, to=to, data=data, value=value)


def _env0(h: Header) -> BlockEnv:
    return BlockEnv(h.chain_id, h.height, h.timestamp_ms, h.proposer, h.gas_limit, h.base_fee_per_gas, h.parent_hash)


class Module:
    """ABI-driven access to a system module: ``m.fn_data("mintVehicle", ...)``,
    ``m.call("ownerOf", 1)``, ``m.send(key, "mintVehicle", ...)``."""

    def __init__(self, chain: LocalChain, name: str, address: bytes) -> None:
        self.chain = chain
        self.address = address
        self.abi = load_abi(name)
        self.fns = {f["name"]: f for f in self.abi if f.get("type") == "function"}

    def data(self, fn: str, *args: Any) -> bytes:
        f = self.fns[fn]
        types = [_t(i) for i in f["inputs"]]
        return function_abi_to_4byte_selector(f) + eth_abi.encode(types, list(args))

    def call(self, fn: str, *args: Any, sender: bytes | None = None) -> Any:
        result = self.chain.call(self.address, self.data(fn, *args), sender=sender)
        if not result.success:
            raise Reverted(result.error)
        outs = [_t(o) for o in self.fns[fn].get("outputs", [])]
        values = eth_abi.decode(outs, result.output)
        return values[0] if len(values) == 1 else values

    def send(self, key: bytes, fn: str, *args: Any, value: int = 0, gas: int = 3_000_000):
        """Send a transaction; returns the receipt. Raises Reverted (with the reason from
        an eth_call at the same state) if it failed."""
        data = self.data(fn, *args)
        sender = bytes.fromhex(Account.from_key(key).address[2:])
        pre = self.chain.call(self.address, data, sender=sender, value=value)
        receipt = self.chain.transact(key, self.address, data, value=value, gas=gas)
        if receipt_status(receipt) != 1:
            raise Reverted(pre.error or "transaction failed")
        return receipt


def _t(spec: dict[str, Any]) -> str:
    t = spec["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_t(c) for c in spec["components"]) + ")" + t[5:]
    return t
