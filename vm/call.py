"""Read-only execution for ``eth_call``, ``eth_estimateGas`` and ``eth_createAccessList``:
runs a message on a throw-away view of a state root; nothing is persisted.

The rules are geth's, so that tools which estimate, then send, behave as on Ethereum:

- a message is refused before it runs when its gas is below its **intrinsic gas**
  (21,000, plus 16 per non-zero and 4 per zero calldata byte, plus 32,000 and 2 per
  32-byte word of initcode for a creation, plus 2,400 per access-list address and
  1,900 per access-list slot): :class:`IntrinsicGasTooLow`, "intrinsic gas too low:
  have X, want Y";
- ``estimate_gas`` binary-searches between the intrinsic gas minus one and a cap (the
  block gas limit, the ``gas`` given, and, when a fee cap is given, what the sender's
  balance can pay), counting a probe that cannot even start as too low.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from eth.abc import AtomicDatabaseAPI
from eth.exceptions import OutOfGas, Revert, VMError
from eth.vm.forks.shanghai.constants import INITCODE_WORD_COST
from eth.vm.spoof import SpoofTransaction
from eth_typing import Address
from eth_utils import ValidationError

from vm.block import ZERO_ADDRESS
from vm.db import OverlayDB
from vm.execute import MAX_INITCODE_SIZE, initcode_too_large_message
from vm.state import BlockEnv, MotusState, TransactionBuilder, make_state

ERROR_SELECTOR = bytes.fromhex("08c379a0")
PANIC_SELECTOR = bytes.fromhex("4e487b71")
# Solidity's panic codes, worded as geth's abi.UnpackRevert words them
PANIC_REASONS = {
    0x00: "generic panic",
    0x01: "assert(false)",
    0x11: "arithmetic underflow or overflow",
    0x12: "division or modulo by zero",
    0x21: "enum overflow",
    0x22: "invalid encoded storage byte array accessed",
    0x31: "out-of-bounds array access; popping on an empty array",
    0x32: "out-of-bounds access of an array or bytesN",
    0x41: "out of memory",
    0x51: "uninitialized function",
}
TX_GAS = 21_000
CALL_STIPEND = 2_300
REFUND_QUOTIENT = 5  # EIP-3529: at most a fifth of the gas used is refunded
MAX_ACCESS_LIST_ROUNDS = 8  # eth_createAccessList re-runs until the list is stable

AccessList = tuple[tuple[bytes, tuple[int, ...]], ...]


@dataclass(frozen=True)
class CallResult:
    success: bool
    output: bytes
    gas_used: int  # as a receipt would say it: after the refund
    error: str | None = None  # "execution reverted: <reason>" style message
    refund: int = 0
    reverted: bool = False

    @property
    def revert_reason(self) -> str | None:
        """The reason geth shows after "execution reverted: ": an ``Error(string)``'s
        text or a ``Panic(uint256)``'s meaning; None for other revert data."""
        import eth_abi

        try:
            if self.output[:4] == ERROR_SELECTOR:
                return eth_abi.decode(["string"], self.output[4:])[0]
            if self.output[:4] == PANIC_SELECTOR:
                code = eth_abi.decode(["uint256"], self.output[4:])[0]
                return PANIC_REASONS.get(code, f"unknown panic code: {code:#x}")
        except Exception:
            return None
        return None


class CallError(Exception):
    """The call could not even start (gas, balance or validation checks); ``code`` is stable."""

    code = "call_failed"


class IntrinsicGasTooLow(CallError):
    """The gas given does not cover the message's intrinsic gas (geth's ErrIntrinsicGas)."""

    code = "intrinsic_gas"

    def __init__(self, have: int, want: int) -> None:
        super().__init__(f"intrinsic gas too low: have {have}, want {want}")
        self.have = have
        self.want = want


class InsufficientFunds(CallError):
    """The value sent is at least the sender's balance while a fee cap is given (geth's
    ErrInsufficientFundsForTransfer in gas estimation)."""

    code = "insufficient_funds"


@dataclass(frozen=True)
class AccountOverride:
    """One account's replacement fields for a call (geth's state override set): None
    keeps the account's own value. ``state`` replaces the whole storage, ``state_diff``
    only the slots it names."""

    balance: int | None = None
    nonce: int | None = None
    code: bytes | None = None
    state: Mapping[int, int] | None = None
    state_diff: Mapping[int, int] | None = None


@dataclass(frozen=True)
class Message:
    """What a call runs: ``to`` None is a contract creation."""

    sender: bytes | None
    to: bytes | None
    data: bytes = b""
    value: int = 0
    access_list: AccessList = ()

    @property
    def origin(self) -> Address:
        return Address(self.sender or ZERO_ADDRESS)


def compute_intrinsic_gas(to: bytes | None, data: bytes, access_list: AccessList = ()) -> int:
    """geth's intrinsic gas of a transaction on the active fork (Cancun): py-evm's
    (base, calldata, creation, access list) plus EIP-3860's 2 gas per word of
    initcode, which py-evm charges inside execution instead."""
    unsigned = _unsigned(Message(None, to, data, 0, access_list), nonce=0, gas=0)
    gas = unsigned.intrinsic_gas
    if not to:
        gas += INITCODE_WORD_COST * ((len(data) + 31) // 32)
    return gas


def _unsigned(msg: Message, *, nonce: int, gas: int):  # type: ignore[no-untyped-def]
    # A dynamic-fee transaction at fee 0 (the call's block context has base fee 0): the
    # only envelope that carries an access list and runs at gas price zero.
    return TransactionBuilder.new_unsigned_dynamic_fee_transaction(
        chain_id=0, nonce=nonce, max_priority_fee_per_gas=0, max_fee_per_gas=0, gas=gas,
        to=Address(msg.to or b""), value=msg.value, data=msg.data,
        access_list=[(Address(a), list(slots)) for a, slots in msg.access_list],
    )


def apply_overrides(state: MotusState, overrides: Mapping[bytes, AccountOverride]) -> None:
    """Write the overridden fields into ``state`` (a throw-away view)."""
    for address, o in overrides.items():
        addr = Address(address)
        if o.balance is not None:
            state.set_balance(addr, o.balance)
        if o.nonce is not None:
            state.set_nonce(addr, o.nonce)
        if o.code is not None:
            state.set_code(addr, o.code)
        if o.state is not None:
            state.delete_storage(addr)
            for slot, value in o.state.items():
                state.set_storage(addr, slot, value)
        if o.state_diff is not None:
            for slot, value in o.state_diff.items():
                state.set_storage(addr, slot, value)


class CallView:
    """A state root (with overrides, if any) that messages are run against, each run on
    its own throw-away overlay so that one run never sees another's writes."""

    def __init__(self, db: AtomicDatabaseAPI, state_root: bytes, env: BlockEnv,
                 overrides: Mapping[bytes, AccountOverride] | None = None) -> None:
        self.env = replace(env, base_fee_per_gas=0)  # calls run at gas price zero
        self.db: AtomicDatabaseAPI = OverlayDB(db)  # override writes are dropped with it
        self.state_root = state_root
        if overrides:
            state = make_state(self.db, state_root, self.env)
            apply_overrides(state, overrides)
            state.persist()
            self.state_root = state.state_root

    def state(self) -> MotusState:
        return make_state(OverlayDB(self.db), self.state_root, self.env)

    def balance(self, address: bytes) -> int:
        return self.state().get_balance(Address(address))

    def run(self, msg: Message, gas: int, *, trace_access: bool = False) -> CallResult:
        """Run ``msg`` with ``gas``; raises CallError when it cannot start (the gas below
        its intrinsic gas, the value above the balance...)."""
        result, _ = self._run(msg, gas, trace_access)
        return result

    def access_list(self, msg: Message, gas: int) -> tuple[AccessList, CallResult]:
        """geth's eth_createAccessList: run with the list found so far until the list no
        longer grows; the addresses and slots the run touched, less the sender, the
        recipient (or created contract) and the precompiles."""
        current = msg.access_list
        for _ in range(MAX_ACCESS_LIST_ROUNDS):
            result, touched = self._run(replace(msg, access_list=current), gas, True)
            found = self._access_list_of(msg, touched, current)
            if found == current:
                break
            current = found
        return current, result

    def _access_list_of(self, msg: Message, touched: Iterable[bytes], given: AccessList) -> AccessList:
        from vm.state import MotusComputation

        slots: dict[bytes, set[int]] = {a: set(s) for a, s in given}
        excluded = {msg.origin, self._recipient(msg), Address(self.env.proposer),
                    *MotusComputation.get_precompiles().keys()}
        for key in touched:
            address = key[:20]
            if len(key) > 20:
                slots.setdefault(address, set()).add(int.from_bytes(key[20:], "big"))
            elif address not in excluded:
                slots.setdefault(address, set())
        return tuple((a, tuple(sorted(slots[a]))) for a in sorted(slots))

    def _recipient(self, msg: Message) -> bytes:
        if msg.to:
            return msg.to
        from eth._utils.address import generate_contract_address

        return generate_contract_address(msg.origin, self.state().get_nonce(msg.origin))

    def _run(self, msg: Message, gas: int, trace_access: bool) -> tuple[CallResult, list[bytes]]:
        want = compute_intrinsic_gas(msg.to, msg.data, msg.access_list)
        if gas < want:
            raise IntrinsicGasTooLow(gas, want)
        if not msg.to and len(msg.data) > MAX_INITCODE_SIZE:
            raise CallError(initcode_too_large_message(len(msg.data)))
        state = self.state()
        sender = msg.origin
        unsigned = _unsigned(msg, nonce=state.get_nonce(sender), gas=gas)
        tx = SpoofTransaction(unsigned, from_=sender, type_id=2)
        try:
            computation = state.apply_transaction(tx)  # type: ignore[arg-type]  # a spoof quacks alike
        except (ValidationError, VMError) as exc:  # refused before it ran
            raise CallError(" ".join(str(exc).split())) from None
        touched: list[bytes] = []
        if trace_access:
            # the EIP-2929 warm set of the run: what an access list would have pre-warmed
            touched = list(state._account_db._journal_accessed_state.diff().pending_keys())  # type: ignore[attr-defined]
        spent = gas - computation.get_gas_remaining()
        if computation.is_error:
            err = computation.error
            if isinstance(err, Revert):
                reason = CallResult(False, computation.output, spent).revert_reason
                msg_text = f"execution reverted: {reason}" if reason else "execution reverted"
                return CallResult(False, computation.output, spent, msg_text, reverted=True), touched
            if isinstance(err, OutOfGas):
                return CallResult(False, b"", spent, "out of gas"), touched
            return CallResult(False, b"", spent, f"execution failed: {err}"), touched
        refund = min(computation.get_gas_refund(), spent // REFUND_QUOTIENT)
        return CallResult(True, computation.output, spent - refund, refund=refund), touched


def call(db: AtomicDatabaseAPI, state_root: bytes, env: BlockEnv, *, sender: bytes | None, to: bytes | None,
         data: bytes = b"", value: int = 0, gas: int | None = None, access_list: AccessList = (),
         overrides: Mapping[bytes, AccountOverride] | None = None) -> CallResult:
    """Execute a call at ``state_root`` without persisting anything (gas price 0); ``gas``
    defaults to, and is capped at, the block gas limit."""
    gas = env.gas_limit if gas is None else min(gas, env.gas_limit)
    view = CallView(db, state_root, env, overrides)
    return view.run(Message(sender, to, data, value, access_list), gas)


@dataclass(frozen=True)
class Estimate:
    """``gas`` found, or the reason none was: ``result`` is the failing run at the cap
    (a revert, an exceptional halt), or None with ``cap`` when even the cap ran out."""

    gas: int | None
    cap: int
    result: CallResult | None = None
    probes: list[int] = field(default_factory=list)


def estimate_gas(db: AtomicDatabaseAPI, state_root: bytes, env: BlockEnv, *, sender: bytes | None,
                 to: bytes | None, data: bytes = b"", value: int = 0, gas: int | None = None,
                 fee_cap: int = 0, access_list: AccessList = (),
                 overrides: Mapping[bytes, AccountOverride] | None = None) -> Estimate:
    """The smallest gas limit with which the message succeeds, found as geth's
    ``gasestimator.Estimate`` does. Raises CallError (InsufficientFunds) when a fee cap
    is given and the value is at least the sender's balance."""
    view = CallView(db, state_root, env, overrides)
    msg = Message(sender, to, data, value, access_list)
    hi = env.gas_limit if gas is None or gas < TX_GAS else min(gas, env.gas_limit)
    if fee_cap:
        available = view.balance(msg.origin)
        if value >= available:
            raise InsufficientFunds("insufficient funds for transfer")
        hi = min(hi, (available - value) // fee_cap)
    probes: list[int] = []

    def run(limit: int, *, strict: bool = False) -> CallResult | None:
        probes.append(limit)
        try:
            return view.run(msg, limit)
        except IntrinsicGasTooLow:
            return None
        except CallError:
            if strict:
                raise
            return None  # any probe py-evm refuses is a probe too low

    # A plain transfer to an account without code needs exactly 21,000.
    if not data and to and not view.state().get_code(Address(to)):
        plain = run(TX_GAS) if hi >= TX_GAS else None
        if plain is not None and plain.success:
            return Estimate(TX_GAS, hi, plain, probes)
    top = run(hi, strict=True)  # what refuses the cap (but its size) refuses any limit
    if top is None or not top.success:
        if top is not None and top.error != "out of gas":
            return Estimate(None, hi, top, probes)  # reverts and halts fail at any limit
        return Estimate(None, hi, None, probes)
    lo = max(compute_intrinsic_gas(to, data, access_list), top.gas_used) - 1
    optimistic = (top.gas_used + top.refund + CALL_STIPEND) * 64 // 63
    if optimistic < hi:
        found = run(optimistic)
        if found is not None and found.success:
            hi = optimistic
    while lo + 1 < hi:
        mid = min((hi + lo) // 2, lo * 2)
        found = run(mid)
        if found is not None and found.success:
            hi = mid
        else:
            lo = mid
    return Estimate(hi, hi, top, probes)
