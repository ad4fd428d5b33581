"""Transfer transactions per second through mempool -> block -> commit (LevelDB, synced
batch) against raw py-evm ``apply_transaction`` on the same signed transactions, in the
same run. Prints both rates and the ratio (goal: >= 0.8)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from eth.db.atomic import AtomicDB
from eth.vm.forks.cancun import CancunState
from eth_account import Account

from consensus.crypto import address_of_private_key
from consensus.types import PRECOMMIT, Commit, Vote
from genesis.builder import build_genesis
from genesis.devnet import dev_accounts, new_genesis
from node.app import Application
from node.db import Database
from node.mempool import Mempool
from node.store import ChainStore
from vm.execute import compute_base_fee
from vm.state import BlockEnv, decode_transaction, execution_context

CHAIN_ID = 7077
VALIDATOR_KEY = bytes.fromhex("11" * 32)


def signed_transfers(n: int) -> list[bytes]:
    senders = dev_accounts()
    out = []
    per = (n + len(senders) - 1) // len(senders)
    recipient = Account.create().address
    for nonce in range(per):
        for _, key in senders:
            if len(out) == n:
                break
            tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": recipient, "value": 1, "gas": 21_000,
                  "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 10**9}
            out.append(bytes(Account.sign_transaction(tx, key).raw_transaction))
    return out


def genesis_spec():
    return new_genesis(CHAIN_ID, [(address_of_private_key(VALIDATOR_KEY), 10)], genesis_time_ms=1_700_000_000_000)


def run_raw(raws: list[bytes]) -> float:
    """Baseline: decode + stock py-evm CancunState.apply_transaction (+ its sender
    recovery) + one persist, on an in-memory database."""
    db = AtomicDB()
    header = build_genesis(db, genesis_spec())
    env = BlockEnv(CHAIN_ID, 1, header.timestamp_ms + 1000, address_of_private_key(VALIDATOR_KEY),
                   header.gas_limit, compute_base_fee(0, header.gas_limit, header.base_fee_per_gas, 10**9),
                   header.hash)
    t0 = time.perf_counter()
    txs = [decode_transaction(r) for r in raws]
    state = CancunState(db, execution_context(env), header.state_root)  # stock py-evm
    for tx in txs:
        state.apply_transaction(tx)
    state.persist()
    return len(raws) / (time.perf_counter() - t0)


def run_node(raws: list[bytes], block_txs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(tmp)
        store = ChainStore(database)
        store.init_genesis(genesis_spec())
        mempool = Mempool(CHAIN_ID, max_per_sender=len(raws), max_total=len(raws) + 1, min_fee=10**9)
        now = [1_700_000_000.0]

        def clock() -> float:
            now[0] += 1.0
            return now[0]

        app = Application(store, mempool, clock=clock)
        proposer = address_of_private_key(VALIDATOR_KEY)
        t0 = time.perf_counter()
        for raw in raws:
            mempool.add(raw, app.head_state())
        included = 0
        while included < len(raws):
            height = store.head_height + 1
            value = app.propose(height, proposer)
            h = app.block_hash(value)
            vote = Vote.create(CHAIN_ID, VALIDATOR_KEY, PRECOMMIT, height, 0, h, proposer)
            block = app.commit(height, value, Commit.from_votes(height, 0, h, [vote]))
            included += len(block.transactions)
            if not block.transactions:
                raise RuntimeError("no progress")
        rate = len(raws) / (time.perf_counter() - t0)
        database.close()
        return rate


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--txs", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3, help="interleaved runs; the best of each is kept")
    args = p.parse_args(argv or [])
    raws = signed_transfers(args.txs)
    raw_rate = node_rate = 0.0
    for _ in range(args.repeat):  # interleaved so background load hits both sides alike
        raw_rate = max(raw_rate, run_raw(raws))
        node_rate = max(node_rate, run_node(raws, 1000))
    print(f"raw py-evm apply_transaction: {raw_rate:8.0f} tx/s")
    print(f"mempool -> block -> commit:   {node_rate:8.0f} tx/s  (blocks of up to 1428 transfers, 30M gas)")
    print(f"ratio: {node_rate / raw_rate:.2f} (goal >= 0.80)")


if __name__ == "__main__":
    main(sys.argv[1:])
