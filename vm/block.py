"""Block header (docs/protocol.md): RLP, fixed field order, hash = keccak(rlp)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import rlp
from eth_hash.auto import keccak
from rlp.sedes import Binary, big_endian_int

from codec import RLPDecodeError
from codec import rlp as bounded_rlp
from vm.errors import InvalidBlock

hash32 = Binary.fixed_length(32)
address = Binary.fixed_length(20)
bloom = Binary.fixed_length(256)

MAX_HEADER_BYTES = 2048
HEADER_SHAPE = (1, 18)  # a flat list of 17 fields: max depth, max RLP items (codec.rlp)
EMPTY_ROOT = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")
ZERO_HASH = b"\x00" * 32
ZERO_ADDRESS = b"\x00" * 20
EMPTY_BLOOM = b"\x00" * 256


class Header(rlp.Serializable):
    fields = [
        ("chain_id", big_endian_int),
        ("height", big_endian_int),
        ("timestamp_ms", big_endian_int),
        ("parent_hash", hash32),
        ("proposer", address),
        ("state_root", hash32),
        ("transactions_root", hash32),
        ("receipts_root", hash32),
        ("attestations_root", hash32),
        ("logs_bloom", bloom),
        ("gas_limit", big_endian_int),
        ("gas_used", big_endian_int),
        ("base_fee_per_gas", big_endian_int),
        ("validators_hash", hash32),
        ("next_validators_hash", hash32),
        ("last_commit_hash", hash32),
        ("evidence_hash", hash32),
    ]

    _hash: bytes | None = None

    @property
    def hash(self) -> bytes:
        if self._hash is None:
            object.__setattr__(self, "_hash", keccak(rlp.encode(self)))
        return self._hash  # type: ignore[return-value]

    @property
    def timestamp(self) -> int:
        """Seconds, as the EVM's TIMESTAMP opcode sees it."""
        return self.timestamp_ms // 1000

    def encode(self) -> bytes:
        return rlp.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) > MAX_HEADER_BYTES:
            raise InvalidBlock(f"header of {len(data)} bytes exceeds {MAX_HEADER_BYTES}")
        try:
            return bounded_rlp.decode(data, cls, max_depth=HEADER_SHAPE[0], max_items=HEADER_SHAPE[1])
        except RLPDecodeError as exc:
            raise InvalidBlock(f"malformed header: {exc.code}: {exc}") from None


def header_fields(header: Header) -> dict[str, Any]:
    """A Motus header with its own field names, in RLP order, plus its hash and raw RLP
    (a light client hashes ``rlp`` with keccak256 and compares with ``hash``)."""
    return {
        "chainId": header.chain_id,
        "height": header.height,
        "timestampMs": header.timestamp_ms,
        "parentHash": _hex(header.parent_hash),
        "proposer": _hex(header.proposer),
        "stateRoot": _hex(header.state_root),
        "transactionsRoot": _hex(header.transactions_root),
        "receiptsRoot": _hex(header.receipts_root),
        "attestationsRoot": _hex(header.attestations_root),
        "logsBloom": _hex(header.logs_bloom),
        "gasLimit": header.gas_limit,
        "gasUsed": header.gas_used,
        "baseFeePerGas": str(header.base_fee_per_gas),
        "validatorsHash": _hex(header.validators_hash),
        "nextValidatorsHash": _hex(header.next_validators_hash),
        "lastCommitHash": _hex(header.last_commit_hash),
        "evidenceHash": _hex(header.evidence_hash),
        "hash": _hex(header.hash),
        "rlp": _hex(header.encode()),
    }


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def compute_list_root(items: Sequence[bytes]) -> bytes:
    """Ethereum-style ordered trie root over ``rlp(index) -> item`` (transactions, receipts,
    attestations). Built in one pass over the sorted keys, as execution-specs does, rather
    than by repeated trie inserts: same root, several times faster for big blocks."""
    if not items:
        return EMPTY_ROOT
    mapping = {_nibbles(rlp.encode(i)): bytes(item) for i, item in enumerate(items)}
    node = _encode_internal(_patricialize(mapping, 0))
    if isinstance(node, bytes) and len(node) == 32:
        return node
    return keccak(rlp_encode(node))


def _nibbles(key: bytes) -> bytes:
    out = bytearray()
    for b in key:
        out.append(b >> 4)
        out.append(b & 0x0F)
    return bytes(out)


def _compact(nibbles: bytes, is_leaf: bool) -> bytes:
    flag = 2 if is_leaf else 0
    if len(nibbles) % 2:
        head = bytes([((flag + 1) << 4) | nibbles[0]])
        rest = nibbles[1:]
    else:
        head = bytes([flag << 4])
        rest = nibbles
    return head + bytes((rest[i] << 4) | rest[i + 1] for i in range(0, len(rest), 2))


def _patricialize(obj: dict[bytes, bytes], level: int):
    if not obj:
        return None
    first = next(iter(obj))
    if len(obj) == 1:
        return ("leaf", first[level:], obj[first])
    sub = first[level:]
    prefix_len = len(sub)
    for key in obj:
        rest = key[level:]
        n = 0
        limit = min(prefix_len, len(rest))
        while n < limit and rest[n] == sub[n]:
            n += 1
        prefix_len = n
        if prefix_len == 0:
            break
    if prefix_len > 0:
        child = _encode_internal(_patricialize(obj, level + prefix_len))
        return ("ext", first[level:level + prefix_len], child)
    branches: list[dict[bytes, bytes]] = [{} for _ in range(16)]
    value = b""
    for key, v in obj.items():
        if len(key) == level:
            value = v
        else:
            branches[key[level]][key] = v
    return ("branch", [_encode_internal(_patricialize(b, level + 1)) for b in branches], value)


def _encode_internal(node):
    if node is None:
        return b""
    kind = node[0]
    if kind == "leaf":
        unencoded = [_compact(node[1], True), node[2]]
    elif kind == "ext":
        unencoded = [_compact(node[1], False), node[2]]
    else:
        unencoded = [*node[1], node[2]]
    encoded = rlp_encode(unencoded)
    return unencoded if len(encoded) < 32 else keccak(encoded)


def rlp_encode(item) -> bytes:
    """Minimal RLP of bytes and nested lists (the only shapes trie nodes have); several
    times faster than the generic ``rlp.encode`` with its sedes inference."""
    if isinstance(item, bytes):
        n = len(item)
        if n == 1 and item[0] < 0x80:
            return item
        return rlp_length_prefix(n, 0x80) + item
    payload = b"".join(rlp_encode(x) for x in item)
    return rlp_length_prefix(len(payload), 0xC0) + payload


def rlp_length_prefix(n: int, offset: int) -> bytes:
    """The prefix of an RLP string (``offset`` 0x80) or list (0xC0) of ``n`` payload bytes."""
    if n < 56:
        return bytes((offset + n,))
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(b),)) + b


_SMALL_UINTS = tuple(b"\x80" if v == 0 else bytes((v,)) for v in range(0x80))


def rlp_uint(value: int) -> bytes:
    """RLP of a non-negative integer: big-endian without leading zeros, 0 as the empty
    string (``rlp.encode(value)``); the hot paths' integer encoder (accounts, attestation
    and transaction signing payloads)."""
    if 0 <= value < 0x80:
        return _SMALL_UINTS[value]
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")  # OverflowError if negative
    return rlp_length_prefix(len(body), 0x80) + body


def validators_hash(pairs: Sequence[tuple[bytes, int]]) -> bytes:
    """Hash of a validator set: keccak(rlp([[address, power], ...])) sorted by address,
    active validators only. Must equal ``consensus.types.ValidatorSet.hash`` (a test pins it)."""
    return keccak(rlp.encode([[a, p] for a, p in sorted(pairs) if p > 0]))
