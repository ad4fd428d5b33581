"""Fair admission (node/fairness.py, docs/rpc.md "Fair admission"): honest throughput
alone against honest throughput with an equal volume of garbage from another source,
in the same run, for attestations (``AttestationPool.add_many``, the node's admission
with inline signature checks) and transactions (``Mempool.add``). Goal: ratio >= 0.8.

Garbage, in equal thirds: forged signatures (an honest item's bytes with its signature
changed: a signature recovery each), items from unknown keys (valid signatures: a
recovery and a state read each) or bad nonces for transactions, and malformed bytes.
Each figure is the CPU time of this process (immune to other jobs on the machine),
best of ``--repeat`` interleaved tries; the garbage source's credit persists across a
try's rounds, as over a node's lifetime. "unfair" repeats the mixed run with the credit
made unlimited: what the same garbage cost before.

Run: ``python -m bench bench_fairness`` or
``python -m bench.bench_fairness [--devices N] [--rounds R] [--txs N]``.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

from eth_account import Account
from eth_hash.auto import keccak
from eth_keys import keys
from eth_utils import to_checksum_address

import vm.attestation as attestation
from devnet.device import Device
from node.attestation_pool import (
    REJECT_CREDIT_BURST,
    REJECT_CREDIT_PER_S,
    AdmissionCache,
    AttestationPool,
    view_check,
)
from node.fairness import SourceCredit
from node.mempool import TX_REJECT_CREDIT_BURST, TX_REJECT_CREDIT_PER_S, Mempool
from tests.harness import CHAIN_ID
from tests.vm.test_telemetry_fleet import HOME, Fleet

BATCH = 100
HONEST, GARBAGE = "rpc:10.0.0.1", "rpc:10.0.0.2"
UNLIMITED = (1e12, 1e12)


def garbage_attestations(honest: list[bytes], rng: random.Random, now_ms: int, res: int) -> list[bytes]:
    out = []
    strangers = [Device.generate(CHAIN_ID, res, seed=b"stranger %d" % i) for i in range(len(honest) // 3 + 1)]
    for i, raw in enumerate(honest):
        kind = i % 3
        if kind == 0:  # forged signature over honest-looking content
            out.append(raw[:-3] + bytes(rng.randrange(256) for _ in range(2)) + raw[-1:])
        elif kind == 1:  # a valid signature by a key no device NFT is bound to
            out.append(strangers[i // 3].attest(vehicle_id=1, timestamp_ms=now_ms, lat=HOME[0], lon=HOME[1],
                                                odometer_m=1).raw)
        else:
            out.append(rng.randbytes(rng.randrange(20, 200)))
    return out


def admit_attestations(fleet: Fleet, cache: AdmissionCache, rounds: list[tuple[list[bytes], list[bytes]]],
                       mixed: bool, credit: SourceCredit) -> tuple[float, int]:
    """CPU seconds to admit every round (a fresh pool on the same head each round), and
    honest items accepted."""
    chain = fleet.chain
    env = chain.env()
    cpu = 0.0
    accepted = 0
    for honest, garbage in rounds:
        attestation._VERIFIED.clear()  # no memo of earlier tries
        pool = AttestationPool(CHAIN_ID, credit=credit)
        view = cache.view(chain.head.state_root, env.timestamp_ms, env.height)
        check = view_check(view)
        c0 = time.process_time()
        for k in range(0, len(honest), BATCH):
            results = pool.add_many(honest[k:k + BATCH], check, source=HONEST)
            accepted += sum(r.accepted for r in results)
            if mixed:
                pool.add_many(garbage[k:k + BATCH], check, source=GARBAGE)
        cpu += time.process_time() - c0
    return cpu, accepted


def attestation_part(args: argparse.Namespace) -> tuple[float, float, float]:
    fleet = Fleet(args.devices)
    cache = AdmissionCache(fleet.chain.db)
    cache.advance(fleet.chain.head.state_root, fleet.chain.head.state_root, [])
    rng = random.Random(5)
    start = fleet.chain.head.timestamp_ms
    res = fleet.chain.param("h3_resolution")
    rounds = []
    for r in range(args.rounds):
        # round r: one reading per device, distinct content per round, all valid at the head
        honest = [dev.attest(vehicle_id=vid, timestamp_ms=start + 500, lat=HOME[0] + 0.001 * (i % 50),
                             lon=HOME[1] + 0.001 * (i // 50), odometer_m=10_000, signals={"r": r}).raw
                  for i, (dev, vid) in enumerate(zip(fleet.devices, fleet.vehicle_ids, strict=True))]
        for dev in fleet.devices:
            dev.seq -= 1  # the same seq again: each round is admitted on its own, on one head
        rounds.append((honest, garbage_attestations(honest, rng, start + 500, res)))
    return measure(lambda mixed, credit: admit_attestations(fleet, cache, rounds, mixed, credit),
                   args.repeat, sum(len(h) for h, _ in rounds), (REJECT_CREDIT_PER_S, REJECT_CREDIT_BURST))


def transfer(key: bytes, nonce: int, to: bytes) -> bytes:
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": to_checksum_address(to), "value": 1,
          "gas": 21_000, "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 10**9}
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def transaction_part(args: argparse.Namespace) -> tuple[float, float, float]:
    from tests.harness import LocalChain

    senders = [keccak(b"fair sender %d" % i) for i in range(args.txs // 10)]
    chain = LocalChain.__new__(LocalChain)
    from eth.db.atomic import AtomicDB

    from genesis.builder import build_genesis
    from genesis.devnet import dev_accounts, new_genesis
    from tests.harness import GENESIS_TIME_MS, VALIDATOR

    chain.db = AtomicDB()
    chain.spec = new_genesis(CHAIN_ID, [(VALIDATOR, 10)], genesis_time_ms=GENESIS_TIME_MS,
                             extra_alloc={keys.PrivateKey(k).public_key.to_canonical_address(): 10**20
                                          for k in senders})
    chain.head = build_genesis(chain.db, chain.spec)
    chain.accounts, chain.hashes, chain.results = dev_accounts(), [chain.head.hash], []
    state = chain.state()
    honest = [transfer(k, n, b"\x42" * 20) for n in range(10) for k in senders]
    rng = random.Random(6)
    strangers = [keccak(b"fair stranger %d" % i) for i in range(len(honest) // 3 + 1)]
    garbage = []
    for i in range(len(honest)):
        kind = i % 3
        if kind == 0:  # a funded sender's far-future nonce: a recovery and a state read, then refused
            garbage.append(transfer(senders[i % len(senders)], 10_000 + i, b"\x43" * 20))
        elif kind == 1:  # forged: an unfunded key (insufficient funds after the recovery)
            garbage.append(transfer(strangers[i // 3], 0, b"\x43" * 20))
        else:
            garbage.append(b"\x02" + rng.randbytes(rng.randrange(20, 150)))

    def run(mixed: bool, credit: SourceCredit) -> tuple[float, int]:
        pool = Mempool(CHAIN_ID, max_per_sender=64, max_total=len(honest) + 1, min_fee=10**9)
        pool.credit = credit
        accepted = 0
        c0 = time.process_time()
        for k in range(0, len(honest), BATCH):
            for raw in honest[k:k + BATCH]:
                pool.add(raw, state, HONEST)
                accepted += 1
            if mixed:
                for raw in garbage[k:k + BATCH]:
                    try:
                        pool.add(raw, state, GARBAGE)
                    except Exception:
                        pass
        return time.process_time() - c0, accepted

    return measure(run, args.repeat, len(honest), (TX_REJECT_CREDIT_PER_S, TX_REJECT_CREDIT_BURST))


def measure(run, repeat: int, honest_items: int,  # noqa: ANN001
            credit: tuple[float, float]) -> tuple[float, float, float]:
    """(honest items/s alone, with garbage, with garbage and no credit), best of ``repeat``;
    ``credit`` is the node's (rate, burst) for this kind of item."""
    alone = mixed = unfair = float("inf")
    for _ in range(repeat):
        cpu, n = run(False, SourceCredit(*credit))
        assert n == honest_items, (n, honest_items)
        alone = min(alone, cpu)
        cpu, n = run(True, SourceCredit(*credit))
        assert n == honest_items, (n, honest_items)
        mixed = min(mixed, cpu)
        cpu, _ = run(True, SourceCredit(*UNLIMITED))
        unfair = min(unfair, cpu)
    return honest_items / alone, honest_items / mixed, honest_items / unfair


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, default=300)
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--txs", type=int, default=2_000)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv or [])
    for name, part in (("attestations", attestation_part), ("transactions", transaction_part)):
        alone, mixed, unfair = part(args)
        print(f"{name}: honest alone {alone:8.0f}/s, with 50 % garbage {mixed:8.0f}/s: ratio {mixed / alone:.2f} "
              f"(goal >= 0.8); without the credit {unfair:8.0f}/s: ratio {unfair / alone:.2f}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main(sys.argv[1:])
