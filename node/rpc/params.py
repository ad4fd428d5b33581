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
    """A block number or tag, or an EIP-1898 object {"blockHash": ...} / {"blockNumber": ...}."""
    if isinstance(value, dict):
        if "blockHash" in value and "blockNumber" in value:
            raise ParamError("give blockHash or blockNumber, not both")
        if "blockHash" in value:
            return BlockRef(hash=hash32(value["blockHash"]))
        if "blockNumber" in value:
            return block_number(value["blockNumber"])
        raise ParamError("block object needs blockHash or blockNumber")
    return block_number(value)


# --- call requests -------------------------------------------------------------------------


@dataclass(frozen=True)
class CallRequest:
    """The transaction-like object of eth_call / eth_estimateGas (fees are ignored:
    calls run at gas price zero, so the sender needs no balance for gas)."""

    sender: bytes | None
    to: bytes | None
    gas: int | None
    value: int
    data: bytes


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
    for fee in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "nonce"):
        field(fee, quantity)  # validated for the client's sake, not used
    return CallRequest(
        sender=field("from", address),
        to=field("to", address),
        gas=field("gas", quantity),
        value=field("value", quantity) or 0,
        data=payload if payload is not None else (legacy or b""),
    )


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
