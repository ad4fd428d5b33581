"""Hostile encodings shared by the security tests and the fuzz targets."""

from __future__ import annotations

import rlp


def wrap_list(payload: bytes) -> bytes:
    """``payload`` (one encoded item) as the only item of an RLP list."""
    n = len(payload)
    if n < 56:
        return bytes([0xC0 + n]) + payload
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0xF7 + len(length)]) + length + payload


def rlp_bomb(levels: int, size: int) -> bytes:
    """Canonical RLP: ``levels`` nested lists around one ``size``-byte string. pyrlp keeps
    a copy of every level's encoding, so decoding it costs it ~levels x size bytes."""
    data = rlp.encode(b"\x00" * size)
    for _ in range(levels):
        data = wrap_list(data)
    return data
