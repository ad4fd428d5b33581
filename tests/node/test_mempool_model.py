"""A model test of the transaction pool (node/mempool.py): a hypothesis state machine
drives the real pool, with real signed transactions of several senders, a real chain
(blocks executed by ``vm.execute_block``, so mined selections move the senders' nonces)
and the real transaction journal (node/localtxs.py) across restarts, against a reference
model written as plainly as the rules in docs/rpc.md, "Transaction pool".

Steps: adds (gaps, duplicates, stale and too-far nonces, replacements with and without
the fee bump), blocks of the pool's own selection, time passing (an injected clock, so
queued transactions expire), and restarts. After every step:
- the pool holds exactly the model's transactions, each pending or queued as the model
  says, and every accepted transaction that left it left with the model's reason;
- the bound and the per-sender limit hold; no account entry without transactions, no
  transaction unreachable through its sender (the orphan of issue 12);
- no queued transaction outlives its lifetime;
- a selection has no nonce gap, no repeated (sender, nonce), nothing queued, and takes
  every pending transaction when the block has room.

Bounded to a few seconds in ``make test``; ``MOTUS_MEMPOOL_MODEL_EXAMPLES=2000`` runs a
longer campaign (about a minute per 100 examples)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth.db.atomic import AtomicDB
from eth.db.backends.memory import MemoryDB
from eth_account import Account
from eth_hash.auto import keccak
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from node.localtxs import LocalTransactions
from node.mempool import (
    EVICTED,
    EXPIRED,
    MINED,
    REPLACED,
    Mempool,
    PoolTx,
    TxRejected,
)
from tests.harness import CHAIN_ID, LocalChain

pytestmark = pytest.mark.timeout(300)

EXAMPLES = int(os.environ.get("MOTUS_MEMPOOL_MODEL_EXAMPLES", "25"))
SENDERS = 4
MAX_PER_SENDER = 4
MAX_TOTAL = 8  # below SENDERS * MAX_PER_SENDER, so the bound and eviction are reached
LIFETIME_S = 60.0
GWEI = 10**9
LEVELS = (1, 2, 3)  # fee level k: tip k gwei, cap 10k gwei: each level outbids the last
BUMP_PCT = 10

_GENESIS: LocalChain | None = None
_SIGNED: dict[tuple[int, int, int, int], bytes] = {}


def fresh_chain() -> LocalChain:
    """A LocalChain at genesis: a copy of one built once (building costs ~0.2 s)."""
    global _GENESIS
    if _GENESIS is None:
        _GENESIS = LocalChain()
    chain = LocalChain.__new__(LocalChain)
    chain.__dict__.update(_GENESIS.__dict__)
    chain.db = AtomicDB(MemoryDB(dict(_GENESIS.db.wrapped_db.kv_store)))
    chain.hashes = list(_GENESIS.hashes)
    chain.results = []
    return chain


def signed(sender: int, nonce: int, level: int, variant: int) -> bytes:
    """A transfer of ``variant`` wei to the sender itself; cached (signing costs ~2 ms)."""
    key = (sender, nonce, level, variant)
    raw = _SIGNED.get(key)
    if raw is None:
        acct = Account.from_key(_key(sender))
        tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": acct.address,
              "value": variant, "gas": 21_000, "maxFeePerGas": 10 * level * GWEI,
              "maxPriorityFeePerGas": level * GWEI}
        raw = _SIGNED[key] = bytes(acct.sign_transaction(tx).raw_transaction)
    return raw


def _key(sender: int) -> bytes:
    from genesis.devnet import dev_accounts

    return dev_accounts()[sender][1]


def _address(sender: int) -> bytes:
    from genesis.devnet import dev_accounts

    return dev_accounts()[sender][0]


@dataclass
class ModelTx:
    hash: bytes
    raw: bytes
    sender: int
    nonce: int
    level: int
    seq: int  # acceptance order
    queued_since: float | None = None


class Model:
    """The rules, stated directly: per sender a state nonce and a dict nonce -> tx."""

    def __init__(self) -> None:
        self.nonce = dict.fromkeys(range(SENDERS), 0)
        self.txs: dict[int, dict[int, ModelTx]] = {s: {} for s in range(SENDERS)}
        self.seq = 0
        self.fate: dict[bytes, str] = {}  # expected reason of every accepted tx that left

    def all(self) -> list[ModelTx]:
        return [t for by_nonce in self.txs.values() for t in by_nonce.values()]

    def by_hash(self, h: bytes) -> ModelTx | None:
        return next((t for t in self.all() if t.hash == h), None)

    def pending_nonce(self, s: int) -> int:
        n = self.nonce[s]
        while n in self.txs[s]:
            n += 1
        return n

    def classify(self, now: float) -> None:
        for s in range(SENDERS):
            end = self.pending_nonce(s)
            for t in self.txs[s].values():
                if t.nonce < end:
                    t.queued_since = None
                elif t.queued_since is None:
                    t.queued_since = now

    def remove(self, t: ModelTx, reason: str) -> None:
        del self.txs[t.sender][t.nonce]
        self.fate[t.hash] = reason

    def expire(self, now: float) -> None:
        for t in self.all():
            if t.queued_since is not None and t.queued_since + LIFETIME_S <= now:
                self.remove(t, EXPIRED)

    def add(self, raw: bytes, s: int, nonce: int, level: int, now: float) -> str:
        """The refusal code, or "" when accepted."""
        h = keccak(raw)
        if self.by_hash(h) is not None:
            return "already_known"
        if nonce < self.nonce[s]:
            return "nonce_too_low"
        if nonce >= self.nonce[s] + MAX_PER_SENDER:
            return "nonce_too_high"
        old = self.txs[s].get(nonce)
        if old is not None:
            # geth: strictly more, and at least old * 110 // 100, on both caps
            for new_fee, old_fee in ((level, old.level), (10 * level, 10 * old.level)):
                if not (new_fee > old_fee and new_fee * GWEI >= old_fee * GWEI * (100 + BUMP_PCT) // 100):
                    return "replacement_underpriced"
            self.remove(old, REPLACED)
        elif len(self.all()) >= MAX_TOTAL:
            self.expire(now)
            if len(self.all()) >= MAX_TOTAL:
                executable = nonce == self.pending_nonce(s)
                lasts = [self.txs[o][max(self.txs[o])] for o in range(SENDERS)
                         if o != s and self.txs[o]]
                if not lasts:
                    return "pool_full"
                victim = min(lasts, key=lambda t: (t.queued_since is None, t.level, -t.seq))
                victim_pending = victim.queued_since is None
                if victim_pending and not executable:
                    return "pool_full"
                if level <= victim.level and not (executable and not victim_pending):
                    return "underpriced"
                self.remove(victim, EVICTED)
        self.seq += 1
        self.fate.pop(h, None)
        self.txs[s][nonce] = ModelTx(h, raw, s, nonce, level, self.seq)
        self.classify(now)
        return ""


class MempoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000.0
        self.chain = fresh_chain()
        # tmpfs when there is one: the journal fsyncs at every restart and close
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.tmp = Path(tempfile.mkdtemp(prefix="mempool-model-", dir=shm))
        self.model = Model()
        self.accepted: set[bytes] = set()
        self.left: dict[bytes, str] = {}  # what the pool's removal listener reported
        self._head_state = (b"", None)
        self._open_pool()

    def _state(self):
        """The head state, read-only, one per head (a view costs ~3 ms to build)."""
        if self._head_state[0] != self.chain.head.hash:
            self._head_state = (self.chain.head.hash, self.chain.state())
        return self._head_state[1]

    def _open_pool(self) -> None:
        self.pool = Mempool(CHAIN_ID, max_per_sender=MAX_PER_SENDER, max_total=MAX_TOTAL,
                            queued_lifetime_s=LIFETIME_S, clock=lambda: self.now)
        self.pool.removal_listeners.append(self._left)
        self.local = LocalTransactions(self.pool, self.tmp / "journal",
                                       journal_max_bytes=1 << 20, clock=lambda: self.now)
        # as the node starts: the journal's transactions pooled again, the journal opened
        self.local.replay(lambda raw: self.pool.add(raw, self._state()))

    def _left(self, entry: PoolTx, reason: str) -> None:
        assert entry.hash not in self.left, "a transaction left the pool twice"
        event(f"left: {reason}")
        self.left[entry.hash] = reason

    def teardown(self) -> None:
        self.local.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- steps ---------------------------------------------------------------------------

    def _send(self, s: int, nonce: int, level: int, variant: int) -> None:
        raw = signed(s, nonce, level, variant)
        expected = self.model.add(raw, s, nonce, level, self.now)
        event(f"add: {expected or 'accepted'}")
        try:
            tx_hash = self.pool.add(raw, self._state())
        except TxRejected as exc:
            assert exc.code == expected, (exc.code, exc.message, expected)
            return
        assert expected == "", f"pool accepted what the model refuses ({expected})"
        self.local.accepted(raw, tx_hash)
        self.accepted.add(tx_hash)
        self.left.pop(tx_hash, None)  # the same bytes may come back after they left

    @rule(s=st.integers(0, SENDERS - 1), offset=st.integers(-1, MAX_PER_SENDER),
          level=st.sampled_from(LEVELS), variant=st.integers(0, 1))
    def add(self, s: int, offset: int, level: int, variant: int) -> None:
        """Any nonce around the sender's window: gaps, duplicates, stale, too far."""
        self._send(s, max(0, self.model.nonce[s] + offset), level, variant)

    @rule(s=st.integers(0, SENDERS - 1), level=st.sampled_from(LEVELS))
    def add_next(self, s: int, level: int) -> None:
        """What a wallet sends: the sender's pending nonce."""
        self._send(s, self.model.pending_nonce(s), level, 0)

    @precondition(lambda self: self.model.all())
    @rule(data=st.data(), bump=st.booleans())
    def replace(self, data: st.DataObject, bump: bool) -> None:
        """Re-send a pooled transaction's nonce: with the next fee level, or the same
        fees and another value (underpriced)."""
        t = data.draw(st.sampled_from(sorted(self.model.all(), key=lambda t: t.seq)))
        level = min(t.level + 1, LEVELS[-1]) if bump else t.level
        variant = data.draw(st.integers(0, 1))
        self._send(t.sender, t.nonce, level, variant)

    @rule(max_txs=st.integers(0, MAX_TOTAL))
    def block(self, max_txs: int) -> None:
        """The pool's selection, executed as a block; then the pool prunes."""
        env = self.chain.env()
        chosen = self.pool.select(self._state(), env.base_fee_per_gas, env.gas_limit, max_txs)
        pending = [t for t in self.model.all() if t.queued_since is None]
        assert len(chosen) == min(max_txs, len(pending))
        keys = [(p.sender, p.nonce) for p in chosen]
        assert len(set(keys)) == len(keys), "two transactions with one (sender, nonce)"
        for s in range(SENDERS):
            mine = [p.nonce for p in chosen if p.sender == _address(s)]
            assert mine == list(range(self.model.nonce[s], self.model.nonce[s] + len(mine))), \
                f"selection has a nonce gap for sender {s}: {mine}"
        result = self.chain.block([p.raw for p in chosen])
        assert len(result.transactions) == len(chosen)
        for p in chosen:
            t = self.model.by_hash(p.hash)
            assert t is not None and t.queued_since is None
            self.model.remove(t, MINED)
            self.model.nonce[t.sender] += 1
        self.pool.on_block(self._state(), [p.hash for p in chosen])
        self.model.classify(self.now)
        self.model.expire(self.now)

    @rule(dt=st.floats(0, LIFETIME_S * 1.5))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        self.pool.expire()
        self.model.expire(self.now)

    @rule()
    def restart(self) -> None:
        """Close (the journal is compacted to the pool), then a new pool from the journal:
        the same transactions, each queued one with a new lifetime from now."""
        self.local.close()
        self._open_pool()
        for t in self.model.all():
            if t.queued_since is not None:
                t.queued_since = self.now

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    def pool_is_the_model(self) -> None:
        pool, model = self.pool, self.model
        assert {e.hash for e in pool.all()} == {t.hash for t in model.all()}
        assert len(pool) <= MAX_TOTAL
        for t in model.all():
            entry = pool.get(t.hash)
            assert entry is not None and entry.pending == (t.queued_since is None), t
            assert entry.queued_since == t.queued_since
        for s in range(SENDERS):
            state_nonce = model.nonce[s]
            assert pool.pending_nonce(_address(s), state_nonce) == model.pending_nonce(s)
            assert len(model.txs[s]) <= MAX_PER_SENDER
        pending, queued = pool.content()
        assert pool.stats() == (sum(map(len, pending.values())), sum(map(len, queued.values())))

    @invariant()
    def no_orphan(self) -> None:
        accounts, by_hash = self.pool._accounts, self.pool._by_hash
        reachable = {}
        for sender, acct in accounts.items():
            assert acct.txs, "an account entry without transactions"
            for nonce, entry in acct.txs.items():
                assert entry.sender == sender and entry.nonce == nonce
                reachable[entry.hash] = entry
        assert reachable.keys() == by_hash.keys()
        assert all(reachable[h] is by_hash[h] for h in by_hash)

    @invariant()
    def every_accepted_transaction_is_accounted_for(self) -> None:
        for h in self.accepted:
            if h in self.pool:
                continue
            assert self.left.get(h) == self.model.fate.get(h), (self.left.get(h), self.model.fate.get(h))
            assert self.left[h] is not None

    @invariant()
    def nothing_outlives_its_lifetime(self) -> None:
        for e in self.pool.all():
            assert e.queued_since is None or e.queued_since + LIFETIME_S > self.now


MempoolMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_mempool_model = MempoolMachine.TestCase
