"""Block cost: a deterministic bound on how long a block takes to execute.

Gas alone does not bound it: a 21,000-gas transfer between two accounts no cache
holds costs several times one between hot accounts, an attestation costs no gas at
all, and one gas of EVM code costs ten times one gas of a system module. So every
block carries a cost that any validator computes the same way from what it executes
(docs/consensus.md, "Block cost"):

    cost = settle_cost * settlement steps (epoch settlement, docs/rewards.md)
         + tx_cost * transactions
         + account_cost * distinct accounts the transactions name (sender, recipient)
         + attestation_cost * attestations
         + sum over transactions of gas beyond intrinsic (and code deposit)
           * (module_gas_cost if sent to a system module else evm_gas_cost) / 1000

The weights are chain parameters (vm/params.py), measured in microseconds of CPU on
the reference machine (bench/bench_block_cost.py prints them for the machine it runs
on). A block whose cost exceeds ``max_block_cost`` is invalid (``BlockTooCostly``,
code ``block_cost_exceeded``): a proposer cannot make a block that is valid but too
slow to check, and a validator stops executing one as soon as it is over.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from eth.abc import SignedTransactionAPI, StateAPI

from vm.errors import BlockTooCostly
from vm.modules import SYSTEM_MODULES
from vm.modules.params import get_param

CODE_DEPOSIT_GAS_PER_BYTE = 200  # EIP-170 era code deposit: storing code, not running it


@dataclass(frozen=True)
class CostWeights:
    max_block_cost: int  # 0: no cap
    tx_cost: int
    account_cost: int
    attestation_cost: int
    evm_gas_cost: int  # per 1000 gas
    module_gas_cost: int  # per 1000 gas
    settle_cost: int = 0  # per vehicle-step of epoch settlement

    @classmethod
    def of(cls, state: StateAPI) -> CostWeights:
        """The weights in force in ``state`` (the parent's, for the block on top of it)."""
        return cls(*(get_param(state, name) for name in (
            "max_block_cost", "tx_cost", "account_cost", "attestation_cost", "evm_gas_cost",
            "module_gas_cost", "settle_cost")))

    def settlement_steps(self, per_block: int) -> int:
        """Vehicle-steps of settlement a block does: ``per_block``
        (``settle_vehicles_per_block``), and never more than half the cap's worth, so the
        settlement alone can never make a block invalid and always leaves room for
        transactions, whatever governance sets (docs/rewards.md "Settlement")."""
        if self.max_block_cost > 0 and self.settle_cost > 0:
            return min(per_block, self.max_block_cost // 2 // self.settle_cost)
        return per_block


def settlement_steps_per_block(state: StateAPI) -> int:
    """Vehicle-steps of epoch settlement a block on ``state`` does at most (after the
    block's boundary hooks: the weights and parameter it is counted with)."""
    return CostWeights.of(state).settlement_steps(get_param(state, "settle_vehicles_per_block"))


@dataclass
class BlockCost:
    """The running cost of one block, item by item, in execution order."""

    weights: CostWeights
    total: int = 0
    accounts: set[bytes] = field(default_factory=set)

    @property
    def capped(self) -> bool:
        return self.weights.max_block_cost > 0

    @property
    def room(self) -> int:
        """Cost still allowed (effectively unbounded without a cap)."""
        return self.weights.max_block_cost - self.total if self.capped else 1 << 62

    def _accounts_cost(self, named: tuple[bytes | None, ...]) -> tuple[int, list[bytes]]:
        new = [a for a in dict.fromkeys(named) if a is not None and a not in self.accounts]
        return len(new) * self.weights.account_cost, new

    def _gas_weight(self, to: bytes | None) -> int:
        w = self.weights
        return w.module_gas_cost if to is not None and to in SYSTEM_MODULES else w.evm_gas_cost

    def transaction_bound(self, tx: SignedTransactionAPI, sender: bytes) -> int:
        """The most ``tx`` can add to the block's cost: as if it spent all its gas.
        Block building admits a transaction only if this fits (so the block never
        exceeds the cap whatever the transaction does)."""
        to = tx.to or None
        accounts, _ = self._accounts_cost((sender, to))
        if to is None:
            accounts += self.weights.account_cost  # the contract it creates
        spare = max(0, tx.gas - tx.intrinsic_gas)
        return self.weights.tx_cost + accounts + spare * self._gas_weight(to) // 1000

    def add_transaction(self, tx: SignedTransactionAPI, sender: bytes, gas_used: int,
                        created: bytes | None, code_size: int) -> int:
        """Count an executed transaction (``created``: the contract it created, with
        ``code_size`` bytes of code); raises BlockTooCostly when over the cap."""
        to = tx.to or None
        accounts, new = self._accounts_cost((sender, to, created))
        spent = max(0, gas_used - tx.intrinsic_gas - CODE_DEPOSIT_GAS_PER_BYTE * code_size)
        cost = self.weights.tx_cost + accounts + spent * self._gas_weight(to) // 1000
        self.accounts.update(new)
        return self._add(cost, "transaction")

    def add_settlement(self, steps: int) -> int:
        """Count the block's epoch settlement work (done first, before any transaction);
        raises BlockTooCostly when over the cap (it cannot be, see ``settlement_steps``)."""
        return self._add(steps * self.weights.settle_cost, f"{steps} settlement steps")

    def attestations_that_fit(self, count: int) -> int:
        """How many of ``count`` attestations fit in the room left."""
        w = self.weights.attestation_cost
        if not self.capped or w == 0:
            return count
        return max(0, min(count, self.room // w))

    def add_attestations(self, count: int) -> int:
        """Count ``count`` attestations (before executing them: their cost is known up
        front); raises BlockTooCostly when over the cap."""
        return self._add(count * self.weights.attestation_cost, f"{count} attestations")

    def _add(self, cost: int, what: str) -> int:
        self.total += cost
        if self.capped and self.total > self.weights.max_block_cost:
            raise BlockTooCostly(
                f"block cost {self.total} exceeds max_block_cost {self.weights.max_block_cost} "
                f"(at a {what} costing {cost})")
        return cost
