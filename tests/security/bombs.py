"""Hostile encodings shared by the security tests and the fuzz targets."""

from __future__ import annotations

import rlp

from vm.block import rlp_length_prefix


def wrap_list(payload: bytes) -> bytes:
    """``payload`` (already-encoded items) as the payload of one RLP list."""
    return rlp_length_prefix(len(payload), 0xC0) + payload


def rlp_bomb(levels: int, size: int) -> bytes:
    """Canonical RLP: ``levels`` nested lists around one ``size``-byte string. pyrlp keeps
    a copy of every level's encoding, so decoding it costs it ~levels x size bytes."""
    data = rlp.encode(b"\x00" * size)
    for _ in range(levels):
        data = wrap_list(data)
    return data
