"""Read-only execution for ``eth_call`` and ``eth_estimateGas``: runs a message on a
throw-away view of a state root; nothing is persisted."""

from __future__ import annotations

from dataclasses import dataclass, replace

from eth.abc import AtomicDatabaseAPI
from eth.exceptions import OutOfGas, Revert
from eth.vm.spoof import SpoofTransaction
from eth_typing import Address
from eth_utils import ValidationError

from vm.block import ZERO_ADDRESS
from vm.db import OverlayDB
from vm.state import BlockEnv, TransactionBuilder, make_state

ERROR_SELECTOR = bytes.fromhex("08c379a0")


@dataclass(frozen=True)
class CallResult:
    success: bool
    output: bytes
    gas_used: int
    error: str | None = None  # "execution reverted: <reason>" style message

    @property
    def revert_reason(self) -> str | None:
        if self.output[:4] == ERROR_SELECTOR:
            try:
                import eth_abi

                return eth_abi.decode(["string"], self.output[4:])[0]
            except Exception:
                return None
        return None


class CallError(Exception):
    """The call could not even start (nonce/balance/gas checks); ``code`` is stable."""

    code = "call_failed"


def call(db: AtomicDatabaseAPI, state_root: bytes, env: BlockEnv, *, sender: bytes | None, to: bytes | None,
         data: bytes = b"", value: int = 0, gas: int | None = None) -> CallResult:
    """Execute a call at ``state_root`` without persisting anything (gas price 0)."""
    view = OverlayDB(db)  # writes are dropped with the view
    env0 = replace(env, base_fee_per_gas=0)
    state = make_state(view, state_root, env0)
    sender = Address(sender or ZERO_ADDRESS)
    gas = env.gas_limit if gas is None else min(gas, env.gas_limit)
    unsigned = TransactionBuilder.create_unsigned_transaction(
        nonce=state.get_nonce(sender), gas_price=0, gas=gas, to=Address(to or b""), value=value, data=data,
    )
    tx = SpoofTransaction(unsigned, from_=sender)
    try:
        computation = state.apply_transaction(tx)  # type: ignore[arg-type]  # a spoof quacks alike
    except ValidationError as exc:
        raise CallError(str(exc)) from None
    gas_used = gas - computation.get_gas_remaining()
    if computation.is_error:
        err = computation.error
        if isinstance(err, Revert):
            reason = CallResult(False, computation.output, gas_used).revert_reason
            msg = f"execution reverted: {reason}" if reason else "execution reverted"
            return CallResult(False, computation.output, gas_used, msg)
        if isinstance(err, OutOfGas):
            return CallResult(False, b"", gas_used, "out of gas")
        return CallResult(False, b"", gas_used, f"execution failed: {err}")
    return CallResult(True, computation.output, gas_used)


def estimate_gas(db: AtomicDatabaseAPI, state_root: bytes, env: BlockEnv, *, sender: bytes | None,
                 to: bytes | None, data: bytes = b"", value: int = 0) -> CallResult:
    """Smallest gas limit that succeeds (binary search), or the failing result at the block limit."""
    top = call(db, state_root, env, sender=sender, to=to, data=data, value=value, gas=env.gas_limit)
    if not top.success:
        return top
    lo, hi = 21_000 - 1, env.gas_limit
    hi = min(hi, max(top.gas_used * 2, 21_000))
    if not call(db, state_root, env, sender=sender, to=to, data=data, value=value, gas=hi).success:
        hi = env.gas_limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if call(db, state_root, env, sender=sender, to=to, data=data, value=value, gas=mid).success:
            hi = mid
        else:
            lo = mid
    return CallResult(True, top.output, hi)
