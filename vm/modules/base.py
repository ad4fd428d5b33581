"""System-module framework: Python precompiles with ABI calls, storage, gas and events.

A module is a :class:`SystemModule` at a fixed address. py-evm calls it like a
precompile; the framework decodes the ABI call, meters gas, refuses value sent
to non-payable functions and writes from static calls, and turns
:class:`ModuleRevert` into an EVM revert carrying a Solidity ``Error(string)``
reason, so web3.py and ethers show the reason and every state change of the
call is rolled back by py-evm's snapshot.

Storage follows Solidity's layout rules where they apply (mapping slot =
keccak(pad32(key) ++ pad32(base))), so ``eth_getStorageAt`` and
``eth_getProof`` can be pointed at a value by anyone who reads the docs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import eth_abi
from eth.abc import ComputationAPI, StateAPI
from eth.exceptions import OutOfGas, Revert, WriteProtection
from eth_hash.auto import keccak
from eth_typing import Address
from eth_utils import function_abi_to_4byte_selector

from vm.crypto import keccak256

# --- gas schedule of system modules (documented in docs/modules.md) ---------
G_CALL = 1_000
G_SLOAD = 2_100
G_SSTORE_SET = 20_000
G_SSTORE_RESET = 5_000
G_LOG = 375
G_LOG_TOPIC = 375
G_LOG_BYTE = 8
G_ECRECOVER = 3_000

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
WORD = 2**256


class ModuleRevert(Exception):
    """Raised by module code to refuse a call; ``reason`` reaches the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def revert_data(reason: str) -> bytes:
    return ERROR_SELECTOR + eth_abi.encode(["string"], [reason])


def pad32(value: bytes | int) -> bytes:
    if isinstance(value, int):
        return value.to_bytes(32, "big")
    return value.rjust(32, b"\x00")


@lru_cache(maxsize=1 << 17, typed=True)
def mapping_slot(base: int, *keys: bytes | int) -> int:
    """Solidity mapping slot; several keys nest (mapping of mapping). Memoised (a pure
    function; block execution computes the same device and vehicle slots every block)."""
    slot = base
    for key in keys:
        # the C Keccak (vm.crypto): every attestation computes several of these
        slot = int.from_bytes(keccak256(pad32(key) + slot.to_bytes(32, "big")), "big")
    return slot


@cache
def shipped_abi(name: str) -> list[dict[str, Any]] | None:
    """The ABI shipped for module ``name`` (vm/abi/NAME.json), or None when there is none.
    Read once per process; callers must not change the list."""
    path = resources.files("vm.abi").joinpath(f"{name}.json")
    return json.loads(path.read_text()) if path.is_file() else None


def load_abi(name: str) -> list[dict[str, Any]]:
    """The ABI shipped for module ``name``; FileNotFoundError when there is none."""
    abi = shipped_abi(name)
    if abi is None:
        raise FileNotFoundError(f"no ABI shipped for module {name!r} (vm/abi/{name}.json)")
    return abi


class Store:
    """Storage of one system account, metered when a computation is attached.

    Used both inside calls (``computation`` given: gas, static check) and by
    block execution (epoch processing, attestations: no gas).
    """

    def __init__(self, state: StateAPI, address: bytes, computation: ComputationAPI | None = None):
        self.state = state
        self.address = Address(address)
        self.computation = computation

    def _gas(self, amount: int, reason: str) -> None:
        if self.computation is not None:
            self.computation.consume_gas(amount, reason)

    def load(self, slot: int) -> int:
        if self.computation is not None:  # (inline: block execution loads thousands a block)
            self.computation.consume_gas(G_SLOAD, "module sload")
        return self.state.get_storage(self.address, slot)

    def reader(self) -> Callable[[int], int]:
        """:meth:`load` as a function of the slot; without a computation (nothing
        metered) the state's own ``slot_reader`` when it has one (vm.state.MotusState:
        the same values in fewer calls, for block execution's thousands of reads)."""
        fast = getattr(self.state, "slot_reader", None)
        if self.computation is None and fast is not None:
            return fast(self.address)  # type: ignore[no-any-return]
        return self.load

    def store(self, slot: int, value: int) -> None:
        if self.computation is not None and self.computation.msg.is_static:
            raise WriteProtection("cannot modify system module state in a static call")
        value %= WORD
        current = self.state.get_storage(self.address, slot)
        if current == value:
            self._gas(G_SLOAD, "module sstore noop")
            return
        self._gas(G_SSTORE_SET if current == 0 else G_SSTORE_RESET, "module sstore")
        self.state.set_storage(self.address, slot, value)

    def load_address(self, slot: int) -> bytes:
        return self.load(slot).to_bytes(32, "big")[-20:]

    def store_address(self, slot: int, value: bytes) -> None:
        self.store(slot, int.from_bytes(value, "big"))

    def load_bytes(self, slot: int) -> bytes:
        """Bytes stored as length at ``slot`` and 32-byte chunks from keccak(slot)."""
        length = self.load(slot)
        base = int.from_bytes(keccak(pad32(slot)), "big")
        data = b"".join(self.load(base + i).to_bytes(32, "big") for i in range((length + 31) // 32))
        return data[:length]

    def store_bytes(self, slot: int, value: bytes) -> None:
        old_length = self.load(slot)
        self.store(slot, len(value))
        base = int.from_bytes(keccak(pad32(slot)), "big")
        chunks = (len(value) + 31) // 32
        for i in range(chunks):
            self.store(base + i, int.from_bytes(value[32 * i : 32 * i + 32].ljust(32, b"\x00"), "big"))
        for i in range(chunks, (old_length + 31) // 32):
            self.store(base + i, 0)


class SystemModule:
    """Base of every system module. Subclasses set ``name`` (ABI file) and ``address``,
    and define one method per ABI function: ``def fn(self, call: Call, *args)``."""

    name: str = ""
    address: bytes = b""

    def __init__(self) -> None:
        self.abi = load_abi(self.name)
        self._functions: dict[bytes, tuple[dict[str, Any], Callable[..., Any]]] = {}
        self._events: dict[str, dict[str, Any]] = {}
        for item in self.abi:
            if item.get("type") == "function":
                method = getattr(self, item["name"], None)
                if method is None:
                    raise TypeError(f"{type(self).__name__} lacks ABI function {item['name']}")
                self._functions[function_abi_to_4byte_selector(item)] = (item, method)  # type: ignore[arg-type]
            elif item.get("type") == "event":
                self._events[item["name"]] = item

    # py-evm precompile entry point
    def __call__(self, computation: ComputationAPI) -> ComputationAPI:
        try:
            result = self._dispatch(computation)
        except ModuleRevert as exc:
            data = revert_data(exc.reason)
            computation.output = data
            raise Revert(data) from None
        except (OutOfGas, WriteProtection, Revert):
            raise
        except Exception as exc:  # a bug must not crash consensus: deterministic revert
            data = revert_data(f"internal error: {type(exc).__name__}")
            computation.output = data
            raise Revert(data) from None
        computation.output = result
        return computation

    def _dispatch(self, computation: ComputationAPI) -> bytes:
        msg = computation.msg
        if msg.storage_address != self.address:
            raise ModuleRevert("system modules cannot be delegate-called")
        data = bytes(msg.data_as_bytes)
        computation.consume_gas(G_CALL, "module call")
        if len(data) < 4:
            if msg.value and data == b"" and hasattr(self, "receive"):
                self.receive(Call(self, computation))
                return b""
            raise ModuleRevert("missing function selector")
        entry = self._functions.get(data[:4])
        if entry is None:
            raise ModuleRevert(f"unknown function selector 0x{data[:4].hex()}")
        fn_abi, method = entry
        if msg.value and fn_abi.get("stateMutability") != "payable":
            raise ModuleRevert(f"{fn_abi['name']} is not payable")
        in_types = [_abi_type(i) for i in fn_abi["inputs"]]
        try:
            args = eth_abi.decode(in_types, data[4:], strict=False)
        except Exception:
            raise ModuleRevert(f"malformed arguments for {fn_abi['name']}") from None
        call = Call(self, computation)
        result = method(call, *args)
        out_types = [_abi_type(o) for o in fn_abi.get("outputs", [])]
        if not out_types:
            return b""
        if len(out_types) == 1:
            result = (result,)
        return eth_abi.encode(out_types, list(result))

    def store(self, state: StateAPI, computation: ComputationAPI | None = None) -> Store:
        return Store(state, self.address, computation)

    def emit(self, state: StateAPI, computation: ComputationAPI | None, event: str, *args: Any) -> None:
        """Emit an ABI event: inside a computation as an EVM log of the transaction,
        without one (block execution: epoch hooks) as a block event (:mod:`vm.events`)."""
        signature_topic, inputs = self._event_spec(event)
        topics = [signature_topic]
        data_types, data_values = [], []
        for (abi_type, indexed), value in zip(inputs, args, strict=True):
            if indexed:
                topics.append(int.from_bytes(_encode_word(abi_type, value), "big"))
            else:
                data_types.append(abi_type)
                data_values.append(value)
        data = _encode_static(data_types, data_values) if data_types else b""
        if computation is not None:
            computation.consume_gas(G_LOG + G_LOG_TOPIC * len(topics) + G_LOG_BYTE * len(data), "module log")
            computation.add_log_entry(Address(self.address), tuple(topics), data)
        else:
            from vm.events import emit_block_event  # vm.events imports vm.modules: import at use

            emit_block_event(self.address, topics, data)

    def _event_spec(self, event: str) -> tuple[int, list[tuple[str, bool]]]:
        """(signature topic, [(ABI type, indexed)]) of ``event``, computed once."""
        cache = self.__dict__.setdefault("_event_specs", {})
        spec = cache.get(event)
        if spec is None:
            ev = self._events[event]
            signature = f"{event}({','.join(_abi_type(i) for i in ev['inputs'])})"
            spec = cache[event] = (int.from_bytes(keccak(signature.encode()), "big"),
                                   [(_abi_type(i), bool(i.get("indexed"))) for i in ev["inputs"]])
        return spec

    # block-execution hook (see vm.execute): called at the start of every block,
    # after the epoch clock advanced; ``epoch_boundary`` is True when ``env.height``
    # starts a new epoch. Default: nothing.
    def begin_block(self, state: StateAPI, env: Any, epoch_boundary: bool) -> None:
        return None

    # Per-block metered work (see vm.execute, docs/protocol.md "Block order" step 1):
    # called every block after every module's begin_block, in SYSTEM_MODULES order, with
    # the steps the block has left of its metered budget (at most
    # min(settle_vehicles_per_block, max_block_cost // 2 // settle_cost) steps a block,
    # shared by the modules); does at most ``max_steps`` steps and returns how many it
    # did, each charged ``settle_cost`` to the block's cost before any transaction. Work
    # that must not all land in one block (the epoch payout of a large fleet) goes here
    # so that no block does more than a bounded amount of it. Default: none.
    def metered_work(self, state: StateAPI, max_steps: int) -> int:
        return 0

    # genesis hook: write the module's initial state from the genesis spec
    # (``spec.modules.get(self.name, {})`` holds its own section).
    def init_genesis(self, state: StateAPI, spec: Any) -> None:
        return None


def _encode_word(abi_type: str, value: Any) -> bytes:
    """``eth_abi.encode([abi_type], [value])[:32]``, without eth_abi for the one-word types
    block events use most (a settlement emits one event per paid vehicle)."""
    if abi_type == "uint256" and type(value) is int and 0 <= value < 1 << 256:
        return value.to_bytes(32, "big")
    if abi_type == "address" and type(value) is bytes and len(value) == 20:
        return value.rjust(32, b"\0")
    return eth_abi.encode([abi_type], [value])[:32]


def _encode_static(types: list[str], values: list[Any]) -> bytes:
    """``eth_abi.encode(types, values)``: word by word when every type is one word."""
    if all(t in ("uint256", "address") for t in types):
        return b"".join(_encode_word(t, v) for t, v in zip(types, values, strict=True))
    return eth_abi.encode(types, values)


def _abi_type(spec: dict[str, Any]) -> str:
    t = spec["type"]
    if t.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in spec["components"])
        return f"({inner}){t[5:]}"
    return t


class Call:
    """What a module function sees of the EVM message that called it."""

    __slots__ = ("module", "computation", "state", "sender", "value", "store")

    def __init__(self, module: SystemModule, computation: ComputationAPI) -> None:
        self.module = module
        self.computation = computation
        self.state = computation.state
        self.sender: bytes = bytes(computation.msg.sender)
        self.value: int = computation.msg.value
        self.store = Store(computation.state, module.address, computation)

    @property
    def timestamp(self) -> int:
        return self.state.timestamp

    @property
    def timestamp_ms(self) -> int:
        """The block time in milliseconds (the EVM's ``timestamp`` is whole seconds)."""
        ms = getattr(self.state, "block_timestamp_ms", None)
        return self.state.timestamp * 1000 if ms is None else ms

    @property
    def block_number(self) -> int:
        return self.state.block_number

    @property
    def chain_id(self) -> int:
        return self.state.execution_context.chain_id

    def gas(self, amount: int, reason: str) -> None:
        self.computation.consume_gas(amount, reason)

    def emit(self, event: str, *args: Any) -> None:
        self.module.emit(self.state, self.computation, event, *args)

    def require(self, condition: Any, reason: str) -> None:
        if not condition:
            raise ModuleRevert(reason)
