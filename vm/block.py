"""Block header (DESIGN.md section 3): RLP, fixed field order, hash = keccak(rlp)."""

from __future__ import annotations

from collections.abc import Sequence

import rlp
from eth.db.trie import make_trie_root_and_nodes
from eth_hash.auto import keccak
from rlp.sedes import Binary, big_endian_int

from vm.errors import InvalidBlock

hash32 = Binary.fixed_length(32)
address = Binary.fixed_length(20)
bloom = Binary.fixed_length(256)

MAX_HEADER_BYTES = 2048
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
            return rlp.decode(data, sedes=cls)
        except Exception as exc:  # rlp raises several unrelated types
            raise InvalidBlock(f"malformed header: {exc}") from None


def compute_list_root(items: Sequence[bytes]) -> bytes:
    """Ethereum-style ordered trie root over ``rlp(index) -> item``."""
    if not items:
        return EMPTY_ROOT
    root, _ = make_trie_root_and_nodes(tuple(_Raw(i) for i in items))
    return root


class _Raw:
    """Adapter: make_trie_root_and_nodes calls ``encode()`` on each item."""

    __slots__ = ("_b",)

    def __init__(self, b: bytes) -> None:
        self._b = b

    def encode(self) -> bytes:
        return self._b


def validators_hash(pairs: Sequence[tuple[bytes, int]]) -> bytes:
    """Hash of a validator set: keccak(rlp([[address, power], ...])) sorted by address,
    active validators only. Must equal ``consensus.types.ValidatorSet.hash`` (a test pins it)."""
    return keccak(rlp.encode([[a, p] for a, p in sorted(pairs) if p > 0]))
