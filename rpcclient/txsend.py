"""Send a contract call as a signed transaction to a node over JSON-RPC, and the small ABI
helpers the CLI needs around it (encode a call, decode a result, decode logs, read a
revert reason).

Used by the ``motus`` CLI commands that change state (``vehicle``, ``device``, and others
later). It holds no key beyond one call: the caller loads the key (keystore or key file),
:func:`send_call` signs one EIP-1559 transaction with it and forgets it.

Errors: every refusal is a :class:`TxError` carrying a reason a person can act on
(:class:`TxReverted` when the call's own code refused, :class:`TxRejected` when the node
would not take the transaction, :class:`TxTimeout` when no receipt came in time). When
no JSON-RPC answer came back at all, :class:`rpcclient.RPCError` (``code`` None)
propagates unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import eth_abi
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from rpcclient import RPCError, rpc_call

ERROR_SELECTOR = keccak(b"Error(string)")[:4]  # 0x08c379a0
PANIC_SELECTOR = keccak(b"Panic(uint256)")[:4]  # 0x4e487b71
EXECUTION_REVERTED = 3  # the node's code for a reverted eth_call / eth_estimateGas

GAS_MARGIN_PERCENT = 20  # above eth_estimateGas, for state that moves before inclusion
RECEIPT_POLL_SECONDS = 0.2


class TxError(Exception):
    """The transaction did not succeed. ``reason`` is for people; ``tx_hash`` (0x-hex) is
    set when the transaction was sent, ``receipt`` when it was mined."""

    status = "failed"

    def __init__(
        self,
        reason: str,
        *,
        tx_hash: str | None = None,
        receipt: dict[str, Any] | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tx_hash = tx_hash
        self.receipt = receipt
        self.data = data

    def to_json(self) -> dict[str, Any]:
        """What the CLI prints: status, reason and, when known, the hash and block."""
        out: dict[str, Any] = {"status": self.status, "reason": self.reason}
        out["txHash"] = self.tx_hash
        if self.receipt is not None:
            out["blockNumber"] = int(self.receipt["blockNumber"], 16)
            out["gasUsed"] = int(self.receipt["gasUsed"], 16)
        return out


class TxReverted(TxError):
    """The call reverted: refused by eth_estimateGas before sending (no gas spent,
    ``tx_hash`` None), or mined with status 0 (gas spent). ``reason`` is the revert
    reason string (``Error(string)``) when there is one."""

    status = "reverted"


class TxRejected(TxError):
    """The node refused the transaction or its estimate (nonce, funds, fees, gas limit...);
    ``data`` is the node's error data (e.g. ``{"reason": "insufficient_funds"}``)."""

    status = "rejected"


class TxTimeout(TxError):
    """Sent, but no receipt within the timeout; it may still be mined later."""

    status = "timeout"


# --- revert reasons ---------------------------------------------------------------------


def decode_revert_reason(data: bytes) -> str | None:
    """The reason in revert data: the string of ``Error(string)``, ``panic 0x..`` for a
    Solidity ``Panic(uint256)``; None for empty data, custom errors and garbage."""
    try:
        if data[:4] == ERROR_SELECTOR:
            return str(eth_abi.decode(["string"], data[4:])[0])
        if data[:4] == PANIC_SELECTOR:
            return f"panic 0x{eth_abi.decode(['uint256'], data[4:])[0]:02x}"
    except Exception:
        return None
    return None


def _revert_from_rpc(exc: RPCError) -> str:
    """The reason of a ``3 execution reverted`` answer: decoded from its data, else its
    message, else the raw data as hex (a custom error)."""
    raw = exc.data if isinstance(exc.data, str) else ""
    try:
        data = bytes.fromhex(raw.removeprefix("0x"))
    except ValueError:
        data = b""
    reason = decode_revert_reason(data)
    if reason is not None:
        return reason
    if exc.message.startswith("execution reverted: "):
        return exc.message.removeprefix("execution reverted: ")
    return f"execution reverted (data 0x{data.hex()})" if data else "execution reverted"


def _hex_address(address: bytes | str) -> str:
    if isinstance(address, bytes):
        if len(address) != 20:
            raise ValueError(f"an address is 20 bytes, got {len(address)}")
        return "0x" + address.hex()
    return address.lower()


# --- calls and transactions ------------------------------------------------------------


def eth_call(
    rpc_url: str,
    to: bytes | str,
    data: bytes,
    *,
    sender: bytes | str | None = None,
    value: int = 0,
    block: str | int = "latest",
) -> bytes:
    """Run a read-only call; returns its output or raises :class:`TxReverted` with the
    reason."""
    request: dict[str, Any] = {"to": _hex_address(to), "data": "0x" + data.hex()}
    if sender is not None:
        request["from"] = _hex_address(sender)
    if value:
        request["value"] = hex(value)
    tag = block if isinstance(block, str) else hex(block)
    try:
        out = rpc_call(rpc_url, "eth_call", [request, tag])
    except RPCError as exc:
        if exc.code == EXECUTION_REVERTED:
            raise TxReverted(_revert_from_rpc(exc), data=exc.data) from None
        raise
    return bytes.fromhex(str(out).removeprefix("0x"))


def send_call(
    rpc_url: str,
    key: bytes,
    to: bytes | str,
    data: bytes,
    value: int = 0,
    *,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Sign a call to ``to`` with ``key`` (a 32-byte secp256k1 private key), send it, wait
    for it to be mined and return its receipt (the node's JSON, hex quantities) when it
    succeeded.

    Promises: the call is first estimated (``eth_estimateGas`` at ``pending``), so a call
    that would revert is refused with its reason (:class:`TxReverted`, ``tx_hash`` None)
    and costs nothing; nonce from ``eth_getTransactionCount(pending)``, gas limit the
    estimate plus 20 % (at most the block gas limit), fees from ``eth_gasPrice`` and
    ``eth_maxPriorityFeePerGas`` (max fee = twice the next base fee plus the tip). A mined
    failure raises :class:`TxReverted` with the receipt and the reason found by replaying
    the call at its block; no receipt within ``timeout`` seconds raises :class:`TxTimeout`.
    """
    account = Account.from_key(key)
    sender = account.address.lower()
    target = _hex_address(to)
    request = {"from": sender, "to": target, "data": "0x" + data.hex(), "value": hex(value)}
    try:
        estimate = int(rpc_call(rpc_url, "eth_estimateGas", [request, "pending"]), 16)
    except RPCError as exc:
        if exc.code == EXECUTION_REVERTED:
            raise TxReverted(_revert_from_rpc(exc), data=exc.data) from None
        if exc.code is not None:
            raise TxRejected(exc.message, data=exc.data) from None
        raise
    latest = rpc_call(rpc_url, "eth_getBlockByNumber", ["latest", False])
    gas = min(estimate + estimate * GAS_MARGIN_PERCENT // 100, int(latest["gasLimit"], 16))
    tip = int(rpc_call(rpc_url, "eth_maxPriorityFeePerGas"), 16)
    next_base_fee = max(int(rpc_call(rpc_url, "eth_gasPrice"), 16) - tip, 0)
    tx = {
        "type": 2,
        "chainId": int(rpc_call(rpc_url, "eth_chainId"), 16),
        "nonce": int(rpc_call(rpc_url, "eth_getTransactionCount", [sender, "pending"]), 16),
        "to": to_checksum_address(target),
        "value": value,
        "data": data,
        "gas": gas,
        "maxPriorityFeePerGas": tip,
        "maxFeePerGas": 2 * next_base_fee + tip,
    }
    raw = account.sign_transaction(tx).raw_transaction
    try:
        tx_hash = rpc_call(rpc_url, "eth_sendRawTransaction", ["0x" + bytes(raw).hex()])
    except RPCError as exc:
        if exc.code is not None:
            raise TxRejected(exc.message, data=exc.data) from None
        raise
    receipt = wait_for_receipt(rpc_url, tx_hash, timeout)
    if int(receipt["status"], 16) != 1:
        raise TxReverted(
            _replay_reason(rpc_url, request, receipt), tx_hash=tx_hash, receipt=receipt
        )
    return receipt


def wait_for_receipt(rpc_url: str, tx_hash: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll until the transaction's receipt exists; :class:`TxTimeout` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        receipt = rpc_call(rpc_url, "eth_getTransactionReceipt", [tx_hash])
        if receipt is not None:
            return dict(receipt)
        if time.monotonic() >= deadline:
            raise TxTimeout(
                f"no receipt after {timeout:g}s; the transaction may still be mined",
                tx_hash=tx_hash,
            )
        time.sleep(RECEIPT_POLL_SECONDS)


def _replay_reason(rpc_url: str, request: dict[str, Any], receipt: dict[str, Any]) -> str:
    """Why a mined transaction failed, by running the same call on the state of its
    block (transactions after it in the block may have moved that state: best effort)."""
    try:
        rpc_call(rpc_url, "eth_call", [request, receipt["blockNumber"]])
    except RPCError as exc:
        if exc.code == EXECUTION_REVERTED:
            return _revert_from_rpc(exc)
        return exc.message
    gas = int(receipt["gasUsed"], 16)
    return f"transaction failed (status 0, gas used {gas}); replaying the call succeeds"


# --- ABI helpers ---------------------------------------------------------------------


def abi_type(param: dict[str, Any]) -> str:
    """The canonical type of an ABI parameter, tuples spelled out (``(uint256,address)[]``)."""
    typ = str(param["type"])
    if typ.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){typ[len('tuple') :]}"
    return typ


def function_abi(abi: Sequence[dict[str, Any]], name: str, arity: int) -> dict[str, Any]:
    """The function ``name`` taking ``arity`` arguments (overloads differ by arity here);
    ValueError if there is none."""
    for item in abi:
        if item.get("type") == "function" and item["name"] == name:
            if len(item.get("inputs", [])) == arity:
                return item
    raise ValueError(f"the ABI has no function {name} with {arity} arguments")


def selector(fn: dict[str, Any]) -> bytes:
    """The 4-byte selector of a function ABI entry."""
    sig = f"{fn['name']}({','.join(abi_type(i) for i in fn.get('inputs', []))})"
    return keccak(sig.encode())[:4]


def encode_call(abi: Sequence[dict[str, Any]], name: str, *args: Any) -> bytes:
    """Calldata for ``name(*args)``: selector and ABI-encoded arguments (addresses as
    0x-hex strings or 20 bytes, bytesN as bytes)."""
    fn = function_abi(abi, name, len(args))
    types = [abi_type(i) for i in fn.get("inputs", [])]
    return selector(fn) + eth_abi.encode(types, list(args))


def decode_result(abi: Sequence[dict[str, Any]], name: str, arity: int, output: bytes) -> tuple:
    """The return values of ``name`` (with ``arity`` arguments) decoded from ``output``, as
    eth-abi gives them (addresses lower-case 0x-hex, bytesN as bytes)."""
    fn = function_abi(abi, name, arity)
    return tuple(eth_abi.decode([abi_type(o) for o in fn.get("outputs", [])], output))


def _json_value(value: Any, typ: str) -> Any:
    if typ == "address":
        return str(value).lower()
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list | tuple):
        return [_json_value(v, typ.rsplit("[", 1)[0]) for v in value]
    return value


def decode_logs(
    abi: Sequence[dict[str, Any]], logs: Sequence[dict[str, Any]], address: bytes | str
) -> list[dict[str, Any]]:
    """The logs emitted by ``address`` whose first topic names an event of ``abi``, as
    ``{"event": name, "args": {...}, "logIndex": n}`` in log order. Values are JSON-ready:
    addresses lower-case hex, bytes hex, integers as integers; an indexed dynamic value
    (string, bytes, array) is only its keccak hash, given as hex."""
    want = _hex_address(address)
    events = {}
    for item in abi:
        if item.get("type") == "event" and not item.get("anonymous"):
            sig = f"{item['name']}({','.join(abi_type(i) for i in item['inputs'])})"
            events[keccak(sig.encode())] = item
    out = []
    for log in logs:
        topics = [bytes.fromhex(t.removeprefix("0x")) for t in log.get("topics", [])]
        if str(log.get("address", "")).lower() != want or not topics or topics[0] not in events:
            continue
        event = events[topics[0]]
        indexed = [i for i in event["inputs"] if i.get("indexed")]
        plain = [i for i in event["inputs"] if not i.get("indexed")]
        if len(indexed) != len(topics) - 1:
            continue  # same signature, different indexing: not ours
        args: dict[str, Any] = {}
        for param, topic in zip(indexed, topics[1:], strict=True):
            typ = abi_type(param)
            if typ in ("string", "bytes") or typ.endswith("]") or typ.startswith("("):
                args[param["name"]] = "0x" + topic.hex()
            else:
                args[param["name"]] = _json_value(eth_abi.decode([typ], topic)[0], typ)
        data = bytes.fromhex(str(log.get("data", "0x")).removeprefix("0x"))
        values = eth_abi.decode([abi_type(p) for p in plain], data)
        for param, value in zip(plain, values, strict=True):
            args[param["name"]] = _json_value(value, abi_type(param))
        out.append({"event": event["name"], "args": args, "logIndex": int(log["logIndex"], 16)})
    return out
