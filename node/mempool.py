"""Transaction pool: checked on entry against the head state, ordered per sender by
nonce, bounded per sender and in total, replaced only by a >= 10 % higher fee, and
pruned after every block of what the block made invalid.

Rejections carry a stable ``code`` and a message that starts like geth's, so wallets
and ethers.js classify them ("nonce too low", "insufficient funds", ...).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from eth.abc import SignedTransactionAPI, StateAPI
from eth_hash.auto import keccak

from vm.execute import BLOB_TX_TYPE, MAX_INITCODE_SIZE, MAX_TX_BYTES, initcode_too_large_message
from vm.sender import recover_sender
from vm.state import decode_transaction

REPLACEMENT_BUMP_PCT = 10


class TxRejected(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class PoolTx:
    tx: SignedTransactionAPI
    raw: bytes
    hash: bytes
    sender: bytes
    nonce: int
    seq: int  # arrival order, for FIFO among equal tips


@dataclass
class _Account:
    txs: dict[int, PoolTx] = field(default_factory=dict)


def effective_tip(tx: SignedTransactionAPI, base_fee: int) -> int:
    return min(tx.max_priority_fee_per_gas, tx.max_fee_per_gas - base_fee)


class Mempool:
    def __init__(self, chain_id: int, *, max_per_sender: int = 64, max_total: int = 10_000,
                 block_gas_limit: int = 30_000_000, min_fee: int = 0) -> None:
        self.chain_id = chain_id
        self.max_per_sender = max_per_sender
        self.max_total = max_total
        self.block_gas_limit = block_gas_limit
        self.min_fee = min_fee
        self._accounts: dict[bytes, _Account] = {}
        self._by_hash: dict[bytes, PoolTx] = {}
        self._seq = 0

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

    def add(self, raw: bytes, state: StateAPI) -> bytes:
        """Check and insert a raw transaction; returns its hash or raises TxRejected."""
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
        acct = self._accounts.setdefault(sender, _Account())
        old = acct.txs.get(tx.nonce)
        if old is not None:
            bump = 100 + REPLACEMENT_BUMP_PCT
            if (tx.max_fee_per_gas * 100 < old.tx.max_fee_per_gas * bump
                    or tx.max_priority_fee_per_gas * 100 < old.tx.max_priority_fee_per_gas * bump):
                raise TxRejected("replacement_underpriced", "replacement transaction underpriced")
            self._remove(old)
        elif len(self._by_hash) >= self.max_total:
            self._evict_for(tx)
        self._seq += 1
        entry = PoolTx(tx, bytes(raw), tx_hash, sender, tx.nonce, self._seq)
        acct.txs[tx.nonce] = entry
        self._by_hash[tx_hash] = entry
        return tx_hash

    def _evict_for(self, tx: SignedTransactionAPI) -> None:
        # drop the highest-nonce tx of the cheapest sender, if the newcomer pays more
        cheapest = min(
            (max(a.txs.values(), key=lambda p: p.nonce) for a in self._accounts.values() if a.txs),
            key=lambda p: p.tx.max_priority_fee_per_gas,
        )
        if cheapest.tx.max_priority_fee_per_gas >= tx.max_priority_fee_per_gas:
            raise TxRejected("pool_full", "txpool is full")
        self._remove(cheapest)

    def _remove(self, entry: PoolTx) -> None:
        self._by_hash.pop(entry.hash, None)
        acct = self._accounts.get(entry.sender)
        if acct is not None:
            acct.txs.pop(entry.nonce, None)
            if not acct.txs:
                del self._accounts[entry.sender]

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
        """Drop included transactions and those the new state makes invalid; returns how many left."""
        for h in included:
            entry = self._by_hash.get(h)
            if entry is not None:
                self._remove(entry)
        dropped = 0
        for sender in list(self._accounts):
            acct = self._accounts[sender]
            nonce = state.get_nonce(sender)
            balance = state.get_balance(sender)
            for entry in list(acct.txs.values()):
                tx = entry.tx
                if entry.nonce < nonce or tx.value + tx.gas * tx.max_fee_per_gas > balance:
                    self._remove(entry)
                    dropped += 1
        return dropped

    def all(self) -> list[PoolTx]:
        return sorted(self._by_hash.values(), key=lambda p: p.seq)
