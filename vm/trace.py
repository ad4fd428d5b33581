"""Execution tracing for ``debug_traceTransaction`` / ``debug_traceCall``: geth's struct
logger and call tracer over py-evm, which has no tracer API.

How it hooks py-evm, touching nothing that normal execution uses: a trace runs on a
scratch state whose ``computation_class`` (an instance attribute) is a subclass of
:class:`vm.state.MotusComputation` made for that one trace (:func:`traced_class`):

- its ``apply_message`` / ``apply_create_message`` (every call frame, top-level or
  child) report each frame's start and end to the tracer: the call tracer needs nothing
  else, so it costs nothing per opcode;
- its opcode table wraps opcode functions: all of them for the struct logger (one
  entry per executed opcode), and only ``JUMP``/``JUMPI`` otherwise, where the time
  budget is checked (an EVM loop cannot run without jumping), so a long transaction is
  stopped at its deadline even when nothing else is recorded.

A bound that is hit raises :class:`TraceLimitExceeded`, which is neither a py-evm
``VMError`` nor an ``Exception``: it is not taken for a failure of the transaction but
unwinds the whole execution, and the caller answers with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from eth.abc import AtomicDatabaseAPI
from eth.exceptions import (
    ContractCreationCollision,
    FullStack,
    Halt,
    InsufficientFunds,
    InsufficientStack,
    InvalidInstruction,
    InvalidJumpDestination,
    OutOfBoundsRead,
    OutOfGas,
    Revert,
    StackDepthLimit,
    VMError,
    WriteProtection,
)

from vm.db import OverlayDB
from vm.execute import BlockBody, apply_transaction, begin_block, check_transaction
from vm.state import BlockEnv, MotusComputation, make_state

JUMP, JUMPI = 0x56, 0x57
SLOAD, SSTORE = 0x54, 0x55
CALL_OPS = {0xF0: "CREATE", 0xF1: "CALL", 0xF2: "CALLCODE", 0xF4: "DELEGATECALL",
            0xF5: "CREATE2", 0xFA: "STATICCALL"}
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)


class TraceLimitExceeded(BaseException):
    """A trace bound was hit; ``reason`` is stable (``trace_too_large``, ``trace_timeout``).

    A BaseException, like a cancellation: it aborts the whole execution, and code that
    turns any ``Exception`` into a revert (a system module's last-resort handler around
    a callback into EVM code, vm/modules/base.py) must not swallow it into a trace of a
    revert that never happened."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def vm_error_text(err: BaseException | None) -> str:
    """An execution error in geth's words (what its tracers and eth_call print)."""
    if err is None:
        return ""
    table: tuple[tuple[type[BaseException], str], ...] = (
        (Revert, "execution reverted"),
        (OutOfGas, "out of gas"),
        (InvalidJumpDestination, "invalid jump destination"),
        (InsufficientStack, "stack underflow"),
        (FullStack, "stack limit reached 1024"),
        (WriteProtection, "write protection"),
        (StackDepthLimit, "max call depth exceeded"),
        (InsufficientFunds, "insufficient balance for transfer"),
        (ContractCreationCollision, "contract address collision"),
        (OutOfBoundsRead, "return data out of bounds"),
    )
    for kind, text in table:
        if isinstance(err, kind):
            return text
    if isinstance(err, InvalidInstruction):
        return f"invalid opcode: {err}"
    return str(err) or type(err).__name__


def revert_reason(output: bytes) -> str | None:
    """The reason of a revert with ``Error(string)``, or geth's text for ``Panic(uint256)``."""
    try:
        import eth_abi

        if output[:4] == ERROR_SELECTOR:
            return str(eth_abi.decode(["string"], output[4:])[0])
        if output[:4] == PANIC_SELECTOR:
            code = eth_abi.decode(["uint256"], output[4:])[0]
            return f"panic: {hex(code)}"
    except Exception:
        return None
    return None


class Budget:
    """The time bound every traced execution checks at each jump (and each frame)."""

    def __init__(self, seconds: float, clock: Any = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self.deadline = clock() + seconds
        self._ticks = 0

    def check(self) -> None:
        if self.clock() > self.deadline:
            raise TraceLimitExceeded(
                "trace_timeout",
                f"trace did not finish within {self.seconds:g} s (rpc.trace_timeout_seconds)",
            )

    def tick(self) -> None:
        # a clock read per jump is measurable; every 1024th is enough (well under 1 ms)
        self._ticks += 1
        if not self._ticks & 1023:
            self.check()


class Tracer:
    """Receives frame starts and ends (and, if ``per_step``, every opcode)."""

    per_step = False

    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def enter(self, kind: str, message: Any, parent: Any | None) -> None:
        pass

    def exit(self, computation: Any | None, error: BaseException | None = None) -> None:
        pass

    def step(self, computation: Any, op: int, name: str, fn: Any) -> None:
        fn(computation=computation)


def frame_kind(message: Any, parent: Any | None) -> str:
    """CALL, STATICCALL, DELEGATECALL, CALLCODE, CREATE or CREATE2: the opcode the parent
    frame is executing (its program counter is just past it), or CALL/CREATE on top."""
    if parent is None:
        return "CREATE" if message.is_create else "CALL"
    code = parent.code
    op = code._raw_code_bytes[code.program_counter - 1] if code.program_counter else 0
    return CALL_OPS.get(op, "CREATE" if message.is_create else "CALL")


def traced_class(tracer: Tracer, base: Any = MotusComputation) -> Any:
    """A computation class that reports to ``tracer`` (see the module docstring)."""
    wrapped: dict[int, Any] = {}
    for op, fn in base.opcodes.items():
        if tracer.per_step:
            wrapped[op] = _stepper(tracer, op, fn)
        elif op in (JUMP, JUMPI):
            wrapped[op] = _ticker(tracer.budget, fn)
        else:
            wrapped[op] = fn

    class TracedComputation(base):  # type: ignore[misc, valid-type]
        opcodes = wrapped
        _in_create = False  # apply_create_message runs apply_message inside: one frame

        @classmethod
        def apply_message(cls, state: Any, message: Any, transaction_context: Any,
                          parent_computation: Any = None) -> Any:
            if cls._in_create:
                cls._in_create = False
                return super().apply_message(state, message, transaction_context, parent_computation)
            return cls._framed(super().apply_message, state, message, transaction_context,
                               parent_computation)

        @classmethod
        def apply_create_message(cls, state: Any, message: Any, transaction_context: Any,
                                 parent_computation: Any = None) -> Any:
            def run(*args: Any) -> Any:
                cls._in_create = True
                try:
                    return super(TracedComputation, cls).apply_create_message(*args)
                finally:
                    cls._in_create = False

            return cls._framed(run, state, message, transaction_context, parent_computation)

        @classmethod
        def _framed(cls, run: Any, state: Any, message: Any, transaction_context: Any,
                    parent: Any) -> Any:
            tracer.budget.check()
            tracer.enter(frame_kind(message, parent), message, parent)
            try:
                computation = run(state, message, transaction_context, parent)
            except VMError as exc:  # refused before it ran (depth, balance): the caller sees it
                tracer.exit(None, exc)
                raise
            tracer.exit(computation)
            return computation

    return TracedComputation


def _ticker(budget: Budget, fn: Any) -> Any:
    count = 0

    def jump(computation: Any) -> None:
        # inlined Budget.tick: this runs for every jump of every traced or replayed frame
        nonlocal count
        count += 1
        if not count & 1023:
            budget.check()
        fn(computation=computation)

    return jump


def _stepper(tracer: Tracer, op: int, fn: Any) -> Any:
    name = str(getattr(fn, "mnemonic", None)
               or getattr(getattr(fn, "__wrapped__", None), "mnemonic", hex(op)))

    def step(computation: Any) -> None:
        tracer.step(computation, op, name, fn)

    return step


# --- call tracer ---------------------------------------------------------------------


class CallTracer(Tracer):
    """geth's ``callTracer``: nested frames {type, from, to, value, gas, gasUsed, input,
    output, error, revertReason, calls}. ``only_top_call`` keeps the top frame only."""

    def __init__(self, budget: Budget, *, only_top_call: bool = False) -> None:
        super().__init__(budget)
        self.only_top_call = only_top_call
        self.stack: list[dict[str, Any]] = []
        self.root: dict[str, Any] | None = None

    def enter(self, kind: str, message: Any, parent: Any | None) -> None:
        if kind in ("DELEGATECALL", "CALLCODE") and parent is not None:
            sender, to = parent.msg.storage_address, message.code_address
        else:
            sender, to = message.sender, message.storage_address
        frame: dict[str, Any] = {
            "type": kind,
            "from": _hex(sender),
            "to": _hex(to),
            "gas": hex(message.gas),
            "gasUsed": "0x0",
            # a creation's input is its init code (py-evm keeps it as the message's code)
            "input": _hex(bytes(message.code if message.is_create else message.data)),
        }
        if kind not in ("DELEGATECALL", "STATICCALL"):
            frame["value"] = hex(message.value)
        self.stack.append(frame)

    def exit(self, computation: Any | None, error: BaseException | None = None) -> None:
        frame = self.stack.pop()
        if computation is not None:
            error = computation.error if computation.is_error else None
            frame["gasUsed"] = hex(computation.msg.gas - computation.get_gas_remaining())
            output = bytes(computation.output)
            if output or isinstance(error, Revert):
                frame["output"] = _hex(output)
        if error is not None:
            frame["error"] = vm_error_text(error)
            if isinstance(error, Revert) and computation is not None:
                reason = revert_reason(bytes(computation.output))
                if reason is not None:
                    frame["revertReason"] = reason
        if not self.stack:
            self.root = frame
            return
        if not self.only_top_call:
            self.stack[-1].setdefault("calls", []).append(frame)


# --- struct logger -------------------------------------------------------------------


@dataclass(frozen=True)
class StructLogOptions:
    disable_stack: bool = False
    disable_storage: bool = False
    enable_memory: bool = False
    enable_return_data: bool = False
    limit: int = 0  # geth's "limit": record at most this many steps (0: no limit)


class StructLogger(Tracer):
    """geth's default tracer: one entry per executed opcode {pc, op, gas, gasCost, depth,
    stack, memory?, storage?, returnData?, refund?, error?}. Beyond ``max_steps`` entries or
    about ``max_bytes`` of JSON the trace is refused (``trace_too_large``); the client's
    ``limit`` instead stops recording, as geth does."""

    per_step = True

    def __init__(self, budget: Budget, options: StructLogOptions, *, max_steps: int,
                 max_bytes: int) -> None:
        super().__init__(budget)
        self.options = options
        self.max_steps = max_steps
        self.max_bytes = max_bytes
        self.logs: list[dict[str, Any]] = []
        self.size = 0
        self.storage: dict[bytes, dict[str, str]] = {}  # per contract: slots seen, as geth

    def step(self, computation: Any, op: int, name: str, fn: Any) -> None:
        self.budget.tick()
        opts = self.options
        if opts.limit and len(self.logs) >= opts.limit:
            fn(computation=computation)
            return
        if len(self.logs) >= self.max_steps:
            raise TraceLimitExceeded(
                "trace_too_large",
                f"struct log exceeds {self.max_steps} steps; use the callTracer, or the "
                '"limit" option to record fewer steps',
            )
        gas = computation.get_gas_remaining()
        entry: dict[str, Any] = {
            "pc": computation.code.program_counter - 1,
            "op": name,
            "gas": gas,
            "gasCost": 0,
            "depth": computation.msg.depth + 1,
        }
        size = 80 + len(name)
        values = computation._stack.values
        if not opts.disable_stack:
            stack = [hex(v if isinstance(v, int) else int.from_bytes(v, "big")) for v in values]
            entry["stack"] = stack
            size += sum(len(s) + 3 for s in stack)
        if opts.enable_memory:
            mem = bytes(computation._memory._bytes)
            entry["memory"] = [mem[i:i + 32].hex() for i in range(0, len(mem), 32)]
            size += len(mem) * 2 + len(mem) // 8
        if opts.enable_return_data:
            entry["returnData"] = _hex(bytes(computation.return_data))
            size += len(entry["returnData"])
        if not opts.disable_storage and op in (SLOAD, SSTORE) and values:
            slots = self.storage.setdefault(computation.msg.storage_address, {})
            key = _int(values[-1])
            if op == SLOAD:
                value = computation.state.get_storage(computation.msg.storage_address, key)
            else:
                value = _int(values[-2]) if len(values) > 1 else 0
            slots[f"{key:064x}"] = f"{value:064x}"
            entry["storage"] = dict(slots)
            size += 140 * len(slots)
        refund = computation.get_gas_refund() if hasattr(computation, "get_gas_refund") else 0
        if refund:
            entry["refund"] = refund
        self.size += size
        if self.size > self.max_bytes:
            raise TraceLimitExceeded(
                "trace_too_large",
                f"struct log exceeds {self.max_bytes} bytes; use disableStack, disableStorage, "
                'the "limit" option or the callTracer',
            )
        self.logs.append(entry)
        children = len(computation.children)
        try:
            fn(computation=computation)
        except Halt:
            raise
        except VMError as exc:
            entry["error"] = vm_error_text(exc)
            raise
        finally:
            cost = gas - computation.get_gas_remaining()
            if len(computation.children) > children:
                # as geth, a call's cost includes the gas it handed to the callee (the
                # callee's leftover came back, so add it again)
                cost += computation.children[-1].get_gas_remaining()
            entry["gasCost"] = cost


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def _int(value: int | bytes) -> int:
    return value if isinstance(value, int) else int.from_bytes(value, "big")


# --- running a trace -----------------------------------------------------------------


@dataclass
class TracedTx:
    """One traced transaction: its top computation and the gas its receipt charges."""

    computation: Any
    gas_used: int


def replay_block(db: AtomicDatabaseAPI, parent_state_root: bytes, env: BlockEnv, body: BlockBody,
                 tracer_for: Callable[[int], Tracer | None], budget: Budget,
                 last: int | None = None) -> dict[int, TracedTx]:
    """Re-execute a committed block on a scratch view of its parent state, as
    ``execute_block`` did (the epoch boundary and evidence first), up to transaction
    ``last`` (default: all). Transaction ``i`` runs under ``tracer_for(i)``; the others
    only under the time ``budget``. Returns the traced transactions by index."""
    state = make_state(OverlayDB(db), parent_state_root, env)
    begin_block(state, env, body.misbehavior)
    untraced = traced_class(Tracer(budget))
    raws = body.raw_transactions
    end = len(body.transactions) if last is None else last + 1
    out: dict[int, TracedTx] = {}
    gas_used = 0
    for index, tx in enumerate(body.transactions[:end]):
        budget.check()
        tracer = tracer_for(index)
        state.computation_class = untraced if tracer is None else traced_class(tracer)
        check_transaction(state, tx, env, env.gas_limit - gas_used,
                          raws[index] if raws is not None else None)
        receipt, computation = apply_transaction(state, tx, gas_used)
        if tracer is not None:
            out[index] = TracedTx(computation, receipt.gas_used - gas_used)
        gas_used = receipt.gas_used
    return out


def trace_call(db: AtomicDatabaseAPI, state_root: bytes, env: BlockEnv, tracer: Tracer, *,
               sender: bytes | None, to: bytes | None, data: bytes = b"", value: int = 0,
               gas: int | None = None) -> TracedTx:
    """``vm.call.call`` under a tracer: a call on a scratch view of ``state_root`` (gas
    price 0), nothing persisted. Raises ``vm.call.CallError`` when it cannot start."""
    from eth.vm.spoof import SpoofTransaction
    from eth_typing import Address
    from eth_utils import ValidationError

    from vm.block import ZERO_ADDRESS
    from vm.call import CallError
    from vm.state import TransactionBuilder

    state = make_state(OverlayDB(db), state_root, replace(env, base_fee_per_gas=0))
    state.computation_class = traced_class(tracer)
    origin = Address(sender or ZERO_ADDRESS)
    gas = env.gas_limit if gas is None else min(gas, env.gas_limit)
    unsigned = TransactionBuilder.create_unsigned_transaction(
        nonce=state.get_nonce(origin), gas_price=0, gas=gas, to=Address(to or b""), value=value,
        data=data,
    )
    try:
        computation = state.apply_transaction(SpoofTransaction(unsigned, from_=origin))  # type: ignore[arg-type]
    except ValidationError as exc:
        raise CallError(str(exc)) from None
    return TracedTx(computation, gas - computation.get_gas_remaining())
