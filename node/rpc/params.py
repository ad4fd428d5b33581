"""Parsers for JSON-RPC parameters: hex quantities, addresses, hashes, data, block
references, call requests and log filters.

Each parser takes the decoded JSON value and returns a Python value or raises
:class:`ParamError` with a reason a person can act on; the method table prefixes it
with the argument's position and name and answers ``-32602``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

UINT256_MAX = 2**256 - 1
UINT64_MAX = 2**64 - 1  # heights, epochs and counts: the store keys heights by 8 bytes
MAX_TOPIC_POSITIONS = 4
MAX_FILTER_ADDRESSES = 1_000
MAX_TOPIC_ALTERNATIVES = 1_000
MAX_ACCESS_LIST_ADDRESSES = 1_000  # of a call request's accessList
MAX_ACCESS_LIST_SLOTS = 1_000  # storage keys per access-list address
MAX_OVERRIDE_ACCOUNTS = 1_000  # accounts of one state override set
MAX_OVERRIDE_SLOTS = 10_000  # storage slots of one state override set, all accounts together

BLOCK_TAGS = ("latest", "earliest", "pending", "safe", "finalized")

# Always matched with ``fullmatch``: ``$`` also matches before a trailing newline, which
# ``bytes.fromhex`` then refuses (an internal error instead of -32602).
_HEX = re.compile(r"0x[0-9a-fA-F]*")
# ASCII digits only, at most as many as 2**256 - 1 has: ``str.isdigit`` also accepts "²"
# and other Unicode digits that ``int`` refuses, and ``int`` refuses over 4300 digits.
_DECIMAL = re.compile(r"[0-9]{1,78}")


class ParamError(ValueError):
    """A parameter that cannot be used; the message says why."""


def show(value: Any) -> str:
    """``value`` for an error message, at most 80 characters. Containers are described,
    not printed: their repr costs time with their size and recursion with their depth."""
    if isinstance(value, list | dict):
        return f"{'an array' if isinstance(value, list) else 'an object'} of {len(value)} items"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value[:80] if isinstance(value, str) else value)
    return text if len(text) <= 80 else text[:77] + "..."


def is_hex(value: Any) -> bool:
    """True for a string of "0x" and hex digits only (no sign, space or newline)."""
    return isinstance(value, str) and _HEX.fullmatch(value) is not None


def quantity(value: Any) -> int:
    """A hex quantity ("0x0", "0x1a"), at most 256 bits."""
    if not is_hex(value) or len(value) == 2:
        raise ParamError(f"expected a hex quantity like 0x1a, got {show(value)}")
    if len(value) > 66:
        raise ParamError("hex quantity exceeds 256 bits")
    return int(value, 16)


_LIMIT_NAMES = {UINT64_MAX: "2^64-1", UINT256_MAX: "2^256-1"}


def natural(value: Any, what: str, maximum: int) -> int:
    """A whole number within 0..``maximum`` given as a JSON integer, a decimal string of
    ASCII digits or a hex quantity (the ``motus_`` namespace's numbers); ``what`` names
    it in the error."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DECIMAL.fullmatch(value):
        number = int(value)
    elif is_hex(value) and 2 < len(value) <= 66:
        number = int(value, 16)
    else:
        raise ParamError(f"expected {what} (integer or hex quantity), got {show(value)}")
    if not 0 <= number <= maximum:
        limit = _LIMIT_NAMES.get(maximum, str(maximum))
        raise ParamError(f"{what} must be within 0..{limit}, got {show(number)}")
    return number


def height(value: Any) -> int:
    """A block height: a non-negative JSON integer, decimal string or hex quantity, at
    most 2^64-1 (``motus_`` methods)."""
    return natural(value, "a block height", UINT64_MAX)


def epoch(value: Any) -> int:
    """An epoch number, given as a height is (epochs are counted in blocks, so no epoch
    exceeds 2^64-1)."""
    return natural(value, "an epoch number", UINT64_MAX)


def count(value: Any) -> int:
    """A count given as a hex quantity or a JSON integer (eth_feeHistory's blockCount)."""
    return natural(value, "a count", UINT64_MAX)


def data(value: Any) -> bytes:
    """Hex-encoded bytes ("0x" for none), an even number of digits."""
    if not is_hex(value):
        raise ParamError(f"expected 0x-prefixed hex data, got {show(value)}")
    if len(value) % 2:
        raise ParamError("hex data has an odd number of digits")
    return bytes.fromhex(value[2:])


def _fixed(value: Any, size: int, what: str) -> bytes:
    if not is_hex(value) or len(value) != 2 + 2 * size:
        raise ParamError(f"expected {what} (0x + {2 * size} hex digits), got {show(value)}")
    return bytes.fromhex(value[2:])


def address(value: Any) -> bytes:
    """A 20-byte address; any letter case (checksums are the client's business, as in geth)."""
    return _fixed(value, 20, "a 20-byte address")


def hash32(value: Any) -> bytes:
    """A 32-byte hash."""
    return _fixed(value, 32, "a 32-byte hash")


def storage_slot(value: Any) -> int:
    """A storage slot: a quantity or up to 32 bytes of hex (geth accepts both)."""
    if not is_hex(value) or len(value) == 2:
        raise ParamError(f"expected a storage slot (hex, at most 32 bytes), got {show(value)}")
    if len(value) > 66:
        raise ParamError("storage slot exceeds 32 bytes")
    return int(value, 16)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParamError(f"expected true or false, got {show(value)}")
    return value


def list_of(parse: Callable[[Any], Any], max_len: int) -> Callable[[Any], list[Any]]:
    """A JSON array of at most ``max_len`` items, each parsed by ``parse``."""

    def parse_list(value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ParamError(f"expected an array, got {show(value)}")
        if len(value) > max_len:
            raise ParamError(f"at most {max_len} items allowed, got {len(value)}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(parse(item))
            except ParamError as exc:
                raise ParamError(f"item {i}: {exc}") from None
        return out

    return parse_list


# --- block references ------------------------------------------------------------------


@dataclass(frozen=True)
class BlockRef:
    """A block named by tag, number or hash (EIP-1898). Exactly one is set."""

    tag: str | None = None
    number: int | None = None
    hash: bytes | None = None

    def describe(self) -> str:
        if self.tag is not None:
            return self.tag
        if self.number is not None:
            return hex(self.number)
        return "0x" + (self.hash or b"").hex()


LATEST = BlockRef(tag="latest")


def block_number(value: Any) -> BlockRef:
    """A tag (latest, earliest, pending, safe, finalized) or a hex block number."""
    if isinstance(value, str) and value in BLOCK_TAGS:
        return BlockRef(tag=value)
    try:
        return BlockRef(number=quantity(value))
    except ParamError:
        raise ParamError(
            f"expected a block number (hex) or one of {', '.join(BLOCK_TAGS)}, got {show(value)}"
        ) from None


def block_ref(value: Any) -> BlockRef:
    """The spec's BlockNumberOrTagOrHash: a tag, a hex block number, a block hash (a hex
    string of 66 characters, as geth reads one), or an EIP-1898 object
    ``{"blockHash": h, "requireCanonical": bool}`` / ``{"blockNumber": n}``. Every
    committed block is canonical (no reorgs), so ``requireCanonical`` changes nothing."""
    if isinstance(value, dict):
        unknown = set(value) - {"blockHash", "blockNumber", "requireCanonical"}
        if unknown:
            raise ParamError(f"unknown block object key {show(sorted(unknown)[0])}")
        has_hash = value.get("blockHash") is not None
        has_number = value.get("blockNumber") is not None
        if has_hash and has_number:
            raise ParamError(
                "cannot specify both BlockHash and BlockNumber, choose one or the other"
            )
        if value.get("requireCanonical") is not None:
            if not has_hash:
                raise ParamError("requireCanonical is only allowed with blockHash")
            boolean(value["requireCanonical"])
        if has_hash:
            return BlockRef(hash=hash32(value["blockHash"]))
        if has_number:
            return block_number(value["blockNumber"])
        raise ParamError("block object needs blockHash or blockNumber")
    if is_hex(value) and len(value) == 66:
        return BlockRef(hash=hash32(value))
    try:
        return block_number(value)
    except ParamError:
        raise ParamError(
            f"expected a block number (hex), a block hash (0x + 64 hex digits) or one of "
            f"{', '.join(BLOCK_TAGS)}, got {show(value)}"
        ) from None


# --- call requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRequest:
    """The transaction-like object of eth_call / eth_estimateGas / eth_createAccessList.
    Calls run at gas price zero, so the sender needs no balance for gas; the fee given
    (``fee_cap``: maxFeePerGas, else gasPrice) only caps eth_estimateGas's search at
    what the sender's balance can pay, as geth does."""

    sender: bytes | None
    to: bytes | None
    gas: int | None
    value: int
    data: bytes
    fee_cap: int = 0
    access_list: tuple[tuple[bytes, tuple[int, ...]], ...] = ()


def _access_list_entry(value: Any) -> tuple[bytes, tuple[int, ...]]:
    if not isinstance(value, dict) or "address" not in value:
        raise ParamError(f"expected {{address, storageKeys}}, got {show(value)}")
    keys = value.get("storageKeys") or []
    return address(value["address"]), tuple(list_of(hash_slot, MAX_ACCESS_LIST_SLOTS)(keys))


def hash_slot(value: Any) -> int:
    """A storage key of an access list: 32 bytes."""
    return int.from_bytes(hash32(value), "big")


def access_list(value: Any) -> tuple[tuple[bytes, tuple[int, ...]], ...]:
    """An EIP-2930 access list: at most MAX_ACCESS_LIST_ADDRESSES entries of at most
    MAX_ACCESS_LIST_SLOTS keys each."""
    return tuple(list_of(_access_list_entry, MAX_ACCESS_LIST_ADDRESSES)(value))


def call_request(value: Any) -> CallRequest:
    if not isinstance(value, dict):
        raise ParamError(f"expected a transaction call object, got {show(value)}")

    def field(name: str, parse: Callable[[Any], Any]) -> Any:
        raw = value.get(name)
        if raw is None:
            return None
        try:
            return parse(raw)
        except ParamError as exc:
            raise ParamError(f"{name}: {exc}") from None

    payload = field("input", data)
    legacy = field("data", data)
    if payload is not None and legacy is not None and payload != legacy:
        raise ParamError("both data and input are set and differ")
    gas_price = field("gasPrice", quantity)
    max_fee = field("maxFeePerGas", quantity)
    field("maxPriorityFeePerGas", quantity)  # validated for the client's sake, not used
    field("nonce", quantity)
    if gas_price is not None and max_fee is not None:
        raise ParamError("both gasPrice and maxFeePerGas specified")
    return CallRequest(
        sender=field("from", address),
        to=field("to", address),
        gas=field("gas", quantity),
        value=field("value", quantity) or 0,
        data=payload if payload is not None else (legacy or b""),
        fee_cap=(max_fee if max_fee is not None else gas_price) or 0,
        access_list=field("accessList", access_list) or (),
    )


# --- state overrides ---------------------------------------------------------------------

_OVERRIDE_KEYS = {"balance", "nonce", "code", "state", "stateDiff"}


def _slots(value: Any, what: str) -> dict[int, int]:
    if not isinstance(value, dict):
        raise ParamError(f"{what}: expected an object of slot -> value, got {show(value)}")
    out = {}
    for slot, word in value.items():
        try:
            out[int.from_bytes(hash32(slot), "big")] = int.from_bytes(hash32(word), "big")
        except ParamError as exc:
            raise ParamError(f"{what}: {exc}") from None
    return out


def state_overrides(value: Any) -> dict[bytes, Any]:
    """geth's state override set: address -> {balance, nonce, code, state, stateDiff}
    (``state`` replaces the whole storage, ``stateDiff`` the slots it names; slots and
    values are 32-byte hex). At most MAX_OVERRIDE_ACCOUNTS accounts and
    MAX_OVERRIDE_SLOTS slots in all, else ``-32005`` with reason ``too_many_accounts``
    / ``too_many_items``."""
    from node.rpc.errors import limit_exceeded
    from vm.call import AccountOverride

    if not isinstance(value, dict):
        raise ParamError(f"expected an object of address -> account override, got {show(value)}")
    if len(value) > MAX_OVERRIDE_ACCOUNTS:
        raise limit_exceeded(
            f"state override of {len(value)} accounts exceeds {MAX_OVERRIDE_ACCOUNTS}",
            reason="too_many_accounts",
        )
    slot_count = sum(
        len(o.get(k) or {}) if isinstance(o, dict) and isinstance(o.get(k), dict) else 0
        for o in value.values()
        for k in ("state", "stateDiff")
    )
    if slot_count > MAX_OVERRIDE_SLOTS:
        raise limit_exceeded(
            f"state override of {slot_count} storage slots exceeds {MAX_OVERRIDE_SLOTS}",
            reason="too_many_items",
        )
    out: dict[bytes, Any] = {}
    for raw_addr, raw in value.items():
        try:
            addr = address(raw_addr)
        except ParamError as exc:
            raise ParamError(f"account {show(raw_addr)}: {exc}") from None
        where = "account 0x" + addr.hex()
        if not isinstance(raw, dict):
            raise ParamError(f"{where}: expected an override object, got {show(raw)}")
        unknown = set(raw) - _OVERRIDE_KEYS
        if unknown:
            raise ParamError(f"{where}: unknown override field {show(sorted(unknown)[0])}")
        if raw.get("state") is not None and raw.get("stateDiff") is not None:
            raise ParamError(f"{where} has both 'state' and 'stateDiff'")
        try:
            balance = None if raw.get("balance") is None else quantity(raw["balance"])
            nonce = None if raw.get("nonce") is None else natural(raw["nonce"], "a nonce", UINT64_MAX)
            code = None if raw.get("code") is None else data(raw["code"])
        except ParamError as exc:
            raise ParamError(f"{where}: {exc}") from None
        out[addr] = AccountOverride(
            balance=balance,
            nonce=nonce,
            code=code,
            state=None if raw.get("state") is None else _slots(raw["state"], f"{where} state"),
            state_diff=(None if raw.get("stateDiff") is None
                        else _slots(raw["stateDiff"], f"{where} stateDiff")),
        )
    return out


# --- log filters -------------------------------------------------------------------------


@dataclass(frozen=True)
class LogFilter:
    """eth_getLogs / logs subscription filter. ``topics[i]`` is None (any) or a set of
    alternatives; ``addresses`` empty means any address."""

    from_block: BlockRef
    to_block: BlockRef
    block_hash: bytes | None
    addresses: frozenset[bytes]
    topics: tuple[frozenset[bytes] | None, ...]

    def matches(self, log_address: bytes, log_topics: list[bytes]) -> bool:
        if self.addresses and log_address not in self.addresses:
            return False
        if len(self.topics) > len(log_topics):
            return False
        return all(want is None or log_topics[i] in want for i, want in enumerate(self.topics))


def _topic_position(value: Any) -> frozenset[bytes] | None:
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) > MAX_TOPIC_ALTERNATIVES:
            raise ParamError(f"at most {MAX_TOPIC_ALTERNATIVES} alternatives per topic")
        if any(v is None for v in value):  # geth: a null alternative matches anything
            return None
        return frozenset(hash32(v) for v in value)
    return frozenset([hash32(value)])


def log_filter(value: Any, *, allow_blocks: bool = True) -> LogFilter:
    if not isinstance(value, dict):
        raise ParamError(f"expected a filter object, got {show(value)}")
    block_hash = None
    if value.get("blockHash") is not None:
        if not allow_blocks:
            raise ParamError("blockHash is not allowed here")
        if value.get("fromBlock") is not None or value.get("toBlock") is not None:
            raise ParamError("blockHash cannot be combined with fromBlock/toBlock")
        block_hash = hash32(value["blockHash"])
    if not allow_blocks and (
        value.get("fromBlock") is not None or value.get("toBlock") is not None
    ):
        raise ParamError("fromBlock/toBlock are not allowed here")
    try:
        from_block = (
            block_number(value["fromBlock"]) if value.get("fromBlock") is not None else LATEST
        )
        to_block = block_number(value["toBlock"]) if value.get("toBlock") is not None else LATEST
    except ParamError as exc:
        raise ParamError(f"fromBlock/toBlock: {exc}") from None
    raw_addr = value.get("address")
    if raw_addr is None:
        addresses: frozenset[bytes] = frozenset()
    elif isinstance(raw_addr, list):
        try:
            addresses = frozenset(list_of(address, MAX_FILTER_ADDRESSES)(raw_addr))
        except ParamError as exc:
            raise ParamError(f"address: {exc}") from None
    else:
        try:
            addresses = frozenset([address(raw_addr)])
        except ParamError as exc:
            raise ParamError(f"address: {exc}") from None
    raw_topics = value.get("topics") or []
    if not isinstance(raw_topics, list):
        raise ParamError("topics must be an array")
    if len(raw_topics) > MAX_TOPIC_POSITIONS:
        raise ParamError(f"at most {MAX_TOPIC_POSITIONS} topic positions, got {len(raw_topics)}")
    try:
        topics = tuple(_topic_position(t) for t in raw_topics)
    except ParamError as exc:
        raise ParamError(f"topics: {exc}") from None
    return LogFilter(from_block, to_block, block_hash, addresses, topics)


def percentiles(value: Any) -> list[float]:
    """Reward percentiles of eth_feeHistory: at most 100 numbers, ascending, within [0, 100]."""
    if not isinstance(value, list) or len(value) > 100:
        raise ParamError("expected an array of at most 100 percentiles")
    out: list[float] = []
    for p in value:
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 100:
            raise ParamError(f"percentile {show(p)} is not a number within [0, 100]")
        if out and p < out[-1]:
            raise ParamError("percentiles must be in ascending order")
        out.append(float(p))
    return out


def any_value(value: Any) -> Any:
    return value
