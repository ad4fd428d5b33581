"""Checksummed records in an append-only file: the framing shared by the consensus
message log (``consensus.wal.MessageLog``) and the transaction journal
(``node.txjournal``).

A record is ``length (u32 big-endian) || crc32 of the payload (u32 big-endian) ||
payload``. A file is read up to its first bad record: a crash in the middle of an
append leaves a torn tail, which is cut off, never misread.
"""

from __future__ import annotations

import struct
import zlib

_HEADER = struct.Struct(">II")  # payload length, crc32 of the payload


def frame(payload: bytes) -> bytes:
    """One record holding ``payload`` (never empty: a zeroed tail must not parse)."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def read_frames(data: bytes, start: int = 0, *,
                max_payload: int = 1 << 32) -> tuple[list[bytes], int]:
    """The payloads of the well-formed records of ``data`` from ``start``, and the offset
    where they end: the first torn, corrupt, empty or over-``max_payload`` record, or
    the end of ``data``. Never raises on any bytes."""
    payloads: list[bytes] = []
    pos = start
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if not 0 < length <= max_payload or end > len(data):
            break
        payload = data[pos + _HEADER.size:end]
        if zlib.crc32(payload) != crc:
            break
        payloads.append(payload)
        pos = end
    return payloads, pos
