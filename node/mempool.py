"""Transaction pool: checked on entry against the head state, ordered per sender by
nonce, bounded per sender and in total, replaced only by a >= 10 % higher fee on both
fee caps, and pruned after every block of what the block made invalid.

Every pooled transaction is *pending* (executable: its nonce is the sender's next one,
or follows a chain of pending predecessors in the pool) or *queued* (waiting behind a
nonce gap). A queued transaction expires after ``queued_lifetime_s`` spent queued; when
the pool is full a newcomer takes the place of another sender's last transaction,
queued ones first (docs/rpc.md, "Transaction pool"). Every transaction that leaves the
pool leaves with a reason (``REMOVAL_REASONS``), counted in ``Mempool.removed``.

A sender's entry exists exactly while it holds a transaction: ``_insert`` and ``_drop``
are the only writers of ``_accounts`` and ``_by_hash``, so no transaction can be
counted by the pool without being reachable through its sender (the orphan of a
replaced lone transaction, issue 12).

Rejections carry a stable ``code`` and a message that starts like geth's, so wallets
and ethers.js classify them ("nonce too low", "insufficient funds", ...).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from eth.abc import SignedTransactionAPI, StateAPI
from eth_hash.auto import keccak

from node.fairness import THROTTLED, SourceCredit
from vm.cost import BlockCost, CostWeights
from vm.execute import BLOB_TX_TYPE, MAX_INITCODE_SIZE, MAX_TX_BYTES, initcode_too_large_message
from vm.sender import recover_sender
from vm.state import decode_transaction

REPLACEMENT_BUMP_PCT = 10  # geth's txpool.pricebump
# Time a transaction may wait behind a nonce gap. geth keeps queued transactions 3 hours
# (txpool.lifetime), sized for wallets on a 12 s chain; here a block is ~1 s, so a gap
# a wallet means to fill is filled within seconds (gossip reordering) or minutes (a
# user sending n+1 before n), and a gap nobody fills (a nonce refused under load) must
# not hold its sender's slots and the pool's room for hours.
QUEUED_LIFETIME_S = 180.0
# Refused transactions one source (an RPC client address) may have checked per second,
# and at once (node/fairness.py, docs/rpc.md "Fair admission"): a check costs a
# signature recovery and a state read (~0.1-0.3 ms), so a source of garbage held to
# 100/s takes a few % of a core. Refusals that depend on the pool, not the transaction
# (already known, pool full, underpriced) are not charged.
TX_REJECT_CREDIT_PER_S = 100
TX_REJECT_CREDIT_BURST = 200
NOT_THE_SOURCES_FAULT = frozenset({"already_known", "pool_full", "underpriced", "replacement_underpriced",
                                   THROTTLED})

# Why a transaction left the pool (``Mempool.removed``, metric label ``reason``).
MINED = "mined"  # in a committed block
REPLACED = "replaced"  # same sender and nonce, both fee caps raised by the bump
EVICTED = "evicted"  # the pool was full and a newcomer took its place
EXPIRED = "expired"  # queued behind a nonce gap for longer than the queued lifetime
STALE = "stale"  # its nonce was used by another transaction of a committed block
UNDERFUNDED = "underfunded"  # after a block the sender can no longer pay for it
REMOVAL_REASONS = (MINED, REPLACED, EVICTED, EXPIRED, STALE, UNDERFUNDED)


class TxRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class PoolTx:
    tx: SignedTransactionAPI
    raw: bytes
    hash: bytes
    sender: bytes
    nonce: int
    seq: int  # arrival order, for FIFO among equal tips
    # Pool clock time since which it has been queued (not executable); None while pending.
    queued_since: float | None = None

    @property
    def pending(self) -> bool:
        return self.queued_since is None


@dataclass
class _Account:
    state_nonce: int  # the sender's nonce in the head state (updated on add and each block)
    txs: dict[int, PoolTx] = field(default_factory=dict)


def effective_tip(tx: SignedTransactionAPI, base_fee: int) -> int:
    return min(tx.max_priority_fee_per_gas, tx.max_fee_per_gas - base_fee)


def outbids(new: SignedTransactionAPI, old: SignedTransactionAPI) -> bool:
    """geth's replacement rule: both fee caps strictly higher, and each at least
    ``old * (100 + bump) / 100`` (integer division, as geth computes the threshold)."""
    bump = 100 + REPLACEMENT_BUMP_PCT
    return (new.max_fee_per_gas > old.max_fee_per_gas
            and new.max_priority_fee_per_gas > old.max_priority_fee_per_gas
            and new.max_fee_per_gas >= old.max_fee_per_gas * bump // 100
            and new.max_priority_fee_per_gas >= old.max_priority_fee_per_gas * bump // 100)


class Mempool:
    def __init__(self, chain_id: int, *, max_per_sender: int = 64, max_total: int = 10_000,
                 block_gas_limit: int = 30_000_000, min_fee: int = 0,
                 queued_lifetime_s: float = QUEUED_LIFETIME_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.chain_id = chain_id
        self.max_per_sender = max_per_sender
        self.max_total = max_total
        self.block_gas_limit = block_gas_limit
        # the block cost weights of the last state seen, by its root: params change only
        # with a block, and reading them is six storage reads (~17 us) per admission
        self._weights: tuple[bytes, CostWeights] | None = None
        self.min_fee = min_fee
        self.queued_lifetime_s = queued_lifetime_s
        self.clock = clock
        self._accounts: dict[bytes, _Account] = {}
        self._by_hash: dict[bytes, PoolTx] = {}
        self._seq = 0
        self._next_expiry = math.inf  # no queued transaction is due before this
        self.removed: Counter[str] = Counter()  # by REMOVAL_REASONS
        self.refused: Counter[str] = Counter()  # by TxRejected code
        # Called with (transaction, reason) whenever one leaves the pool.
        self.removal_listeners: list[Callable[[PoolTx, str], None]] = []
        self.credit = SourceCredit(TX_REJECT_CREDIT_PER_S, TX_REJECT_CREDIT_BURST, clock=clock)

    def __len__(self) -> int:
        return len(self._by_hash)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._by_hash

    def get(self, tx_hash: bytes) -> PoolTx | None:
        return self._by_hash.get(tx_hash)

    def pending_nonce(self, sender: bytes, state_nonce: int) -> int:
        """Next nonce for ``sender`` counting contiguous pool transactions (for 'pending')."""
        acct = self._accounts.get(sender)
        n = state_nonce
        while acct is not None and n in acct.txs:
            n += 1
        return n

    def _cost_weights(self, state: StateAPI) -> CostWeights:
        root = state.state_root
        if self._weights is None or self._weights[0] != root:
            self._weights = (root, CostWeights.of(state))
        return self._weights[1]

    def add(self, raw: bytes, state: StateAPI, source: str = "") -> bytes:
        """Check and insert a raw transaction; returns its hash or raises TxRejected.
        ``source`` (``rpc:<client>``; "" for the node's own and gossip, which peer
        scoring covers) is charged for a refusal that is the transaction's fault, and
        while it has no credit left its transactions are refused unchecked
        (``throttled``)."""
        try:
            return self._add(raw, state, source)
        except TxRejected as exc:
            self.refused[exc.code] += 1
            if source and exc.code not in NOT_THE_SOURCES_FAULT:
                self.credit.charge(source, 1)
            raise

    def _add(self, raw: bytes, state: StateAPI, source: str = "") -> bytes:
        if raw[:1] == bytes([BLOB_TX_TYPE]):
            # First: a blob transaction in its network form (blobs attached) is larger than
            # any size bound, and the answer a sender can act on is that the type is refused.
            raise TxRejected("unsupported_type", "transaction type not supported: blob transactions")
        if len(raw) > MAX_TX_BYTES:
            raise TxRejected("oversized", f"oversized data: {len(raw)} bytes exceeds {MAX_TX_BYTES}")
        tx_hash = keccak(raw)  # the envelope's hash; saves py-evm re-encoding it
        if tx_hash in self._by_hash:
            # Before decoding: re-announced pools (docs/network.md) cost a receiver one
            # hash per transaction it holds, not a signature recovery.
            raise TxRejected("already_known", "already known")
        if source and not self.credit.allows(source):  # before the signature recovery
            raise TxRejected(THROTTLED, "too many invalid transactions from this client, retry later")
        try:
            tx = decode_transaction(raw)
            tx.validate()
            sender = recover_sender(raw, tx)
        except Exception as exc:
            raise TxRejected("malformed", f"invalid transaction: {type(exc).__name__}: {exc}") from None
        if getattr(tx, "type_id", None) == BLOB_TX_TYPE:
            raise TxRejected("unsupported_type", "transaction type not supported: blob transactions")
        if tx.chain_id is None:
            raise TxRejected("wrong_chain_id", "only replay-protected (EIP-155) transactions allowed over RPC")
        if tx.chain_id != self.chain_id:
            raise TxRejected("wrong_chain_id", f"invalid chain id: {tx.chain_id}, expected {self.chain_id}")
        if tx.gas > self.block_gas_limit:
            raise TxRejected("gas_limit_exceeded", f"exceeds block gas limit: {tx.gas} > {self.block_gas_limit}")
        if tx.gas < tx.intrinsic_gas:
            raise TxRejected("intrinsic_gas", f"intrinsic gas too low: have {tx.gas}, want {tx.intrinsic_gas}")
        # a transaction that could cost more than a whole block (docs/consensus.md, "Proposal
        # budget") is never tried by block building: refused here rather than left pending
        weights = self._cost_weights(state)
        bound = BlockCost(weights).transaction_bound(tx, sender)
        cap = weights.max_block_cost
        if cap and bound > cap:
            raise TxRejected("gas_limit_exceeded",
                             f"exceeds block gas limit: {tx.gas} gas may cost {bound} of the block "
                             f"cost cap max_block_cost {cap} (docs/consensus.md)")
        if not tx.to and len(tx.data) > MAX_INITCODE_SIZE:  # EIP-3860: never includable
            raise TxRejected("initcode_too_large", initcode_too_large_message(len(tx.data)))
        if tx.max_fee_per_gas < self.min_fee:
            raise TxRejected("fee_too_low", f"max fee per gas less than block base fee: {tx.max_fee_per_gas} < {self.min_fee}")
        if tx.max_priority_fee_per_gas > tx.max_fee_per_gas:
            raise TxRejected("fee_too_low", "max priority fee per gas higher than max fee per gas")
        state_nonce = state.get_nonce(sender)
        if tx.nonce < state_nonce:
            raise TxRejected("nonce_too_low", f"nonce too low: next nonce {state_nonce}, tx nonce {tx.nonce}")
        if tx.nonce >= state_nonce + self.max_per_sender:
            raise TxRejected("nonce_too_high", f"nonce too high: {tx.nonce}, next nonce {state_nonce}")
        cost = tx.value + tx.gas * tx.max_fee_per_gas
        balance = state.get_balance(sender)
        if balance < cost:
            raise TxRejected("insufficient_funds",
                             f"insufficient funds for gas * price + value: balance {balance}, tx cost {cost}")
        acct = self._accounts.get(sender)
        old = acct.txs.get(tx.nonce) if acct is not None else None
        if old is not None:
            if not outbids(tx, old.tx):
                raise TxRejected("replacement_underpriced", "replacement transaction underpriced")
        elif len(self._by_hash) >= self.max_total:
            executable = tx.nonce == self.pending_nonce(sender, state_nonce)
            self._make_room(sender, tx.max_priority_fee_per_gas, executable)
        self._seq += 1
        entry = PoolTx(tx, bytes(raw), tx_hash, sender, tx.nonce, self._seq)
        if old is not None:
            self._drop(old, REPLACED)  # may drop the sender's entry: _insert makes it again
        self._insert(entry, state_nonce)
        return tx_hash

    # --- the only writers of _accounts and _by_hash ----------------------------------------

    def _insert(self, entry: PoolTx, state_nonce: int) -> None:
        acct = self._accounts.get(entry.sender)
        if acct is None:
            acct = self._accounts[entry.sender] = _Account(state_nonce)
        acct.txs[entry.nonce] = entry
        self._by_hash[entry.hash] = entry
        if acct.state_nonce != state_nonce:  # a head the pool has not pruned for yet
            acct.state_nonce = state_nonce
            self._classify(acct, self.clock())
            return
        # What _classify would conclude, touching only the newcomer and the queued run it
        # may promote: an add costs O(1) for a sender that sends in order, however many
        # transactions it holds.
        before = acct.txs.get(entry.nonce - 1)
        if entry.nonce == state_nonce or (before is not None and before.pending):
            entry.queued_since = None
            n = entry.nonce + 1
            while n in acct.txs and not acct.txs[n].pending:
                acct.txs[n].queued_since = None  # the gap is filled
                n += 1
        else:
            self._queue(entry, self.clock())

    def _drop(self, entry: PoolTx, reason: str) -> None:
        """Remove ``entry`` (which must be pooled); its sender's entry goes with its last
        transaction. Callers re-classify the sender when a pending one may have left a gap."""
        del self._by_hash[entry.hash]
        acct = self._accounts[entry.sender]
        del acct.txs[entry.nonce]
        if not acct.txs:
            del self._accounts[entry.sender]
        self.removed[reason] += 1
        for listener in list(self.removal_listeners):
            listener(entry, reason)

    # --- pending and queued ------------------------------------------------------------------

    def _classify(self, acct: _Account, now: float) -> None:
        """Mark the chain from the state nonce pending, the rest queued (since ``now`` if
        it was pending until now)."""
        n = acct.state_nonce
        while n in acct.txs:
            acct.txs[n].queued_since = None
            n += 1
        for entry in acct.txs.values():
            if entry.nonce > n and entry.queued_since is None:
                self._queue(entry, now)

    def _queue(self, entry: PoolTx, now: float) -> None:
        entry.queued_since = now
        self._next_expiry = min(self._next_expiry, now + self.queued_lifetime_s)

    def expire(self) -> int:
        """Drop the transactions queued for ``queued_lifetime_s`` or longer; returns how
        many. Cheap when none is due (one comparison)."""
        now = self.clock()
        if now < self._next_expiry:
            return 0
        expired = []
        next_expiry = math.inf
        for acct in self._accounts.values():
            for entry in acct.txs.values():
                if entry.queued_since is None:
                    continue
                due = entry.queued_since + self.queued_lifetime_s
                if due <= now:
                    expired.append(entry)
                else:
                    next_expiry = min(next_expiry, due)
        # A queued transaction's successors are queued too: dropping it leaves no
        # pending one behind a new gap.
        for entry in expired:
            self._drop(entry, EXPIRED)
        self._next_expiry = next_expiry
        return len(expired)

    def _make_room(self, sender: bytes, tip: int, executable: bool) -> None:
        """Free one place for a newcomer of ``sender`` paying ``tip``, or raise TxRejected.

        Expired transactions go first. Then the victim is the last (highest-nonce)
        transaction of another sender, so that no sender is left with a gap: a queued one
        before a pending one, then the lowest priority fee, then the newest. A queued
        victim gives way to an executable newcomer or a higher tip; a pending one only to
        an executable newcomer with a higher tip."""
        self.expire()
        if len(self._by_hash) < self.max_total:
            return
        victim: PoolTx | None = None
        victim_key: tuple[bool, int, int] | None = None
        for other, acct in self._accounts.items():
            if other == sender:
                continue
            last = acct.txs[max(acct.txs)]
            key = (last.pending, last.tx.max_priority_fee_per_gas, -last.seq)
            if victim_key is None or key < victim_key:
                victim, victim_key = last, key
        if victim is None or (victim.pending and not executable):
            raise TxRejected("pool_full", "txpool is full")
        if tip <= victim.tx.max_priority_fee_per_gas and not (executable and not victim.pending):
            raise TxRejected("underpriced", "transaction underpriced")
        self._drop(victim, EVICTED)

    def select(self, state: StateAPI, base_fee: int, gas_limit: int, max_txs: int = 5_000) -> list[PoolTx]:
        """Executable transactions by effective tip, nonce-contiguous per sender."""
        heap: list[tuple[int, int, PoolTx]] = []
        nonces: dict[bytes, int] = {}
        for sender, acct in self._accounts.items():
            n = state.get_nonce(sender)
            nonces[sender] = n
            first = acct.txs.get(n)
            if first is not None and first.tx.max_fee_per_gas >= base_fee:
                heapq.heappush(heap, (-effective_tip(first.tx, base_fee), first.seq, first))
        out: list[PoolTx] = []
        gas = 0
        while heap and len(out) < max_txs:
            _, _, entry = heapq.heappop(heap)
            if gas + entry.tx.gas > gas_limit:
                continue
            out.append(entry)
            gas += entry.tx.gas
            nxt = self._accounts[entry.sender].txs.get(entry.nonce + 1)
            if nxt is not None and nxt.tx.max_fee_per_gas >= base_fee:
                heapq.heappush(heap, (-effective_tip(nxt.tx, base_fee), nxt.seq, nxt))
        return out

    def on_block(self, state: StateAPI, included: Iterable[bytes] = ()) -> int:
        """Drop included transactions (mined), those the new state makes invalid (stale
        nonce, unaffordable) and the expired ones; returns how many were dropped other
        than the mined."""
        for h in included:
            entry = self._by_hash.get(h)
            if entry is not None:
                self._drop(entry, MINED)
        dropped = 0
        now = self.clock()
        for sender in list(self._accounts):
            acct = self._accounts[sender]
            acct.state_nonce = nonce = state.get_nonce(sender)
            balance = state.get_balance(sender)
            for entry in sorted(acct.txs.values(), key=lambda p: p.nonce):
                tx = entry.tx
                if entry.nonce < nonce:
                    self._drop(entry, STALE)
                elif tx.value + tx.gas * tx.max_fee_per_gas > balance:
                    self._drop(entry, UNDERFUNDED)
                else:
                    continue
                dropped += 1
            if sender in self._accounts:
                self._classify(acct, now)
        return dropped + self.expire()

    def content(self) -> tuple[dict[bytes, list[PoolTx]], dict[bytes, list[PoolTx]]]:
        """(pending, queued): each sender's transactions by nonce (geth's txpool content).

        Safe to call from a worker thread while the event loop changes the pool: it
        reads one snapshot (``list`` of a dict's values runs without releasing the GIL),
        and a transaction's pending flag is one attribute read."""
        entries = list(self._by_hash.values())
        entries.sort(key=lambda e: (e.sender, e.nonce))
        pending: dict[bytes, list[PoolTx]] = {}
        queued: dict[bytes, list[PoolTx]] = {}
        for entry in entries:
            (pending if entry.pending else queued).setdefault(entry.sender, []).append(entry)
        return pending, queued

    def content_of(self, sender: bytes) -> tuple[list[PoolTx], list[PoolTx]]:
        """(pending, queued) transactions of one sender, by nonce."""
        acct = self._accounts.get(sender)
        entries = [acct.txs[n] for n in sorted(acct.txs)] if acct is not None else []
        return [e for e in entries if e.pending], [e for e in entries if not e.pending]

    def stats(self) -> tuple[int, int]:
        """(pending, queued) counts."""
        queued = sum(1 for e in self._by_hash.values() if not e.pending)
        return len(self._by_hash) - queued, queued

    def all(self) -> list[PoolTx]:
        return sorted(self._by_hash.values(), key=lambda p: p.seq)
