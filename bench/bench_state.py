"""Transfers among many accounts: the headline state benchmark (docs/benchmarks.md,
"Transfers at a million accounts").

A chain whose genesis holds N accounts (default 10,000 and 100,000; ``--accounts``
takes any list, 1,000,000 included). Each round, 2,000 senders (existing accounts)
each send one transfer to a random existing account. Per round, in the same run:

(a) Motus: mempool admission -> block building (execution) -> commit (one synced
    LevelDB batch with the trie nodes, the flat snapshot, the block and its indexes);
(b) stock py-evm: ``CancunState.apply_transaction`` of the same transactions on the same
    parent state (same LevelDB, same trie, a node cache of the same size), one persist.

Prints both rates, their ratio (goal >= 1.0) and, over the account counts, the ratio of
the largest count's Motus rate to the smallest's (goal >= 0.8 for 1,000,000 / 10,000),
with the load average."""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

from eth.vm.forks.cancun import CancunState
from eth_account import Account

from consensus.crypto import address_of_private_key
from consensus.types import PRECOMMIT, Commit, Vote
from genesis.builder import build_genesis
from genesis.devnet import new_genesis
from node.app import Application
from node.db import Database, StateDB
from node.mempool import Mempool
from node.store import ChainStore
from vm.crypto import keccak256
from vm.db import OverlayDB
from vm.flat import iter_trie_items, trie_root_from_sorted
from vm.state import decode_transaction, encode_account, execution_context

CHAIN_ID = 7077
VALIDATOR_KEY = bytes.fromhex("11" * 32)
SENDERS = 2000
BALANCE = 10**24


def sender_key(i: int) -> bytes:
    return keccak256(b"motus-bench-state-sender" + i.to_bytes(4, "big"))


def filler_address(i: int) -> bytes:
    return keccak256(b"motus-bench-state-account" + i.to_bytes(4, "big"))[12:]


class _Account:
    """What ``encode_account`` reads."""

    def __init__(self, nonce: int, balance: int) -> None:
        from eth.constants import BLANK_ROOT_HASH, EMPTY_SHA3
        self.nonce, self.balance, self.storage_root, self.code_hash = nonce, balance, BLANK_ROOT_HASH, EMPTY_SHA3


def genesis_builder(addresses: list[bytes]):
    """A genesis build function (ChainStore.init_genesis) that adds ``addresses`` as
    plain funded accounts to the genesis state, with the trie built bottom-up."""

    def build(db, spec):
        header = build_genesis(db, spec)
        items = dict(iter_trie_items(db.__getitem__, header.state_root))
        rng = random.Random(1)
        for i, a in enumerate(addresses):  # the senders come first, at nonce 0
            nonce = 0 if i < SENDERS else rng.randrange(0, 50)
            items[keccak256(a)] = encode_account(_Account(nonce, BALANCE))  # type: ignore[arg-type]
        root = trie_root_from_sorted(sorted(items.items()), db)
        return header.copy(state_root=root)

    return build


def signed_round(senders: list[tuple[bytes, bytes]], nonce: int, recipients: list[bytes],
                 rng: random.Random) -> list[bytes]:
    out = []
    for _address, key in senders:
        tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": rng.choice(recipients), "value": 1,
              "gas": 21_000, "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 10**9}
        out.append(bytes(Account.sign_transaction(tx, key).raw_transaction))
    return out


def run_stock(state_db: StateDB, app: Application, raws: list[bytes]) -> float:
    """Baseline: decode + stock py-evm CancunState.apply_transaction (+ its sender
    recovery) + one persist, on the head state; the writes are dropped."""
    head = app.head
    env = app.env_for(head.height + 1, head.timestamp_ms + 1000, address_of_private_key(VALIDATOR_KEY), head)
    t0 = time.perf_counter()
    txs = [decode_transaction(r) for r in raws]
    state = CancunState(OverlayDB(state_db), execution_context(env), head.state_root)
    for tx in txs:
        state.apply_transaction(tx)
    state.persist()
    return len(raws) / (time.perf_counter() - t0)


def run_motus(app: Application, mempool: Mempool, raws: list[bytes]) -> float:
    store = app.store
    proposer = address_of_private_key(VALIDATOR_KEY)
    t0 = time.perf_counter()
    head_state = app.head_state()
    for raw in raws:
        mempool.add(raw, head_state)
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
    return len(raws) / (time.perf_counter() - t0)


def measure(accounts: int, rounds: int) -> tuple[float, float, float]:
    """(Motus rate, stock rate, setup seconds) for a chain of ``accounts`` accounts."""
    rng = random.Random(accounts)
    senders = [(address_of_private_key(k), k) for k in (sender_key(i) for i in range(SENDERS))]
    others = [filler_address(i) for i in range(max(0, accounts - SENDERS))]
    everyone = [a for a, _ in senders] + others
    with tempfile.TemporaryDirectory(dir=os.environ.get("MOTUS_BENCH_DIR")) as tmp:
        t0 = time.perf_counter()
        database = Database(tmp)
        store = ChainStore(database)
        spec = new_genesis(CHAIN_ID, [(address_of_private_key(VALIDATOR_KEY), 10)],
                           genesis_time_ms=1_700_000_000_000)
        store.init_genesis(spec, build=genesis_builder(everyone))
        setup = time.perf_counter() - t0
        mempool = Mempool(CHAIN_ID, max_per_sender=16, max_total=SENDERS * 2, min_fee=10**9)
        now = [1_700_000_000.0]

        def clock() -> float:
            now[0] += 1.0
            return now[0]

        app = Application(store, mempool, clock=clock)
        stock_db = StateDB(database)  # its own node cache, as large as the node's
        stock_db.flat = None  # type: ignore[assignment]  # stock py-evm reads the trie
        motus_rate = stock_rate = 0.0
        for nonce in range(rounds):
            raws = signed_round(senders, nonce, everyone, rng)
            # interleaved, the best of each kept, so background load hits both alike
            stock_rate = max(stock_rate, run_stock(stock_db, app, raws))
            motus_rate = max(motus_rate, run_motus(app, mempool, raws))
        database.close()
    return motus_rate, stock_rate, setup


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--accounts", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000],
                   help="comma-separated account counts (1000000 takes a few minutes to set up)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of 2,000 transfers per count; best kept")
    args = p.parse_args(argv or [])

    rates = {}
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    for n in args.accounts:
        motus, stock, setup = measure(n, args.rounds)
        rates[n] = motus
        print(f"{n:>9,} accounts (setup {setup:5.1f} s): Motus {motus:7.0f} tx/s, stock py-evm {stock:7.0f} tx/s, "
              f"ratio {motus / stock:.2f} (goal >= 1.0)", flush=True)
    lo, hi = min(rates), max(rates)
    if hi != lo:
        print(f"Motus at {hi:,} / at {lo:,} accounts: {rates[hi] / rates[lo]:.2f} (goal >= 0.8 for 1,000,000 / 10,000)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
