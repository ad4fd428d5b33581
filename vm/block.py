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


_UINT_PREFIX = tuple(bytes((0x80 + n,)) for n in range(56))
_SMALL_UINTS = tuple(b"\x80" if v == 0 else bytes((v,)) for v in range(0x80))


def rlp_uint(value: int) -> bytes:
    """RLP of a non-negative integer: big-endian without leading zeros, 0 as the empty
    string (``rlp.encode(value)``); the hot paths' integer encoder (accounts, attestation
    and transaction signing payloads)."""
    if 0 <= value < 0x80:
        return _SMALL_UINTS[value]
    body = value.to_bytes((value.bit_length() + 7) // 8, "big")  # OverflowError if negative
    n = len(body)
    return (_UINT_PREFIX[n] if n < 56 else rlp_length_prefix(n, 0x80)) + body


def validators_hash(pairs: Sequence[tuple[bytes, int]]) -> bytes:
    """Hash of a validator set: keccak(rlp([[address, power], ...])) sorted by address,
    active validators only. Must equal ``consensus.types.ValidatorSet.hash`` (a test pins it)."""
    return keccak(rlp.encode([[a, p] for a, p in sorted(pairs) if p > 0]))
