"""The journal of locally submitted transactions (``<home>/txpool/journal``), so that a
transaction the RPC accepted survives a crash or restart of the node (geth's
``transactions.rlp``; docs/storage.md "Transaction journal").

Format: an 18-byte header ``b"motus-txjournal/1\\n"``, then records, each
``length (u32 big-endian) | crc32 of the transaction (u32 big-endian) | raw transaction``.

Crash behaviour: a record is appended with one ``write`` before the RPC answers, so a
killed process (SIGKILL, OOM, crash) loses nothing it acknowledged: the bytes are in the
kernel's page cache. ``sync`` (``fsync``) runs at most ``SYNC_INTERVAL_S`` after an append,
so a power loss or kernel crash loses at most the transactions of that last interval. A
torn or corrupt tail (short record, bad length or checksum) ends the replay: the records
before it are kept, the rest is skipped and logged. A rewrite (compaction) goes to a
temporary file that is fsynced and renamed over the journal, so a crash during it leaves
the old journal or the new one, never a mix.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from codec.files import write_atomic
from codec.records import frame, read_frames
from vm.execute import MAX_TX_BYTES

log = logging.getLogger("motus.txjournal")

HEADER = b"motus-txjournal/1\n"
SYNC_INTERVAL_S = 1.0  # fsync at most this long after an append (power-loss window)


def decode_journal(data: bytes) -> tuple[list[bytes], int]:
    """The transactions of a journal's bytes, and how many trailing bytes were skipped
    (a torn or corrupt tail). A file without the header yields nothing (all skipped)."""
    if not data.startswith(HEADER):
        return [], len(data)
    raws, end = read_frames(data, len(HEADER), max_payload=MAX_TX_BYTES)
    return raws, len(data) - end


class TxJournal:
    """Append-only file of raw transactions, compacted by ``rewrite``; at most
    ``max_bytes`` (an append that would pass it is refused: ``append`` returns False)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._fd: int | None = None
        self.size = 0
        self.records = 0  # transactions in the file
        self.dirty = False  # written since the last fsync

    def load(self) -> list[bytes]:
        """The journal's transactions in the order they were accepted (nothing if none)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        raws, skipped = decode_journal(data)
        if skipped:
            log.warning("transaction journal %s: %d trailing bytes skipped (torn or corrupt "
                        "record); %d transactions read", self.path, skipped, len(raws))
        return raws

    def rewrite(self, raws: Iterable[bytes]) -> int:
        """Replace the journal with ``raws`` (atomically, durably), within ``max_bytes``;
        returns how many were written. Opens the journal for appends."""
        self.close()
        parts = [HEADER]
        size = len(HEADER)
        written = 0
        for raw in raws:
            record = frame(raw)
            if size + len(record) > self.max_bytes:
                break
            parts.append(record)
            size += len(record)
            written += 1
        write_atomic(self.path, b"".join(parts))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.size = size
        self.records = written
        self.dirty = False
        return written

    def append(self, raw: bytes) -> bool:
        """Append one transaction with a single write (durable against a process crash at
        once, against power loss after the next ``sync``); False if over ``max_bytes``."""
        if self._fd is None:
            raise RuntimeError("journal not open: rewrite() opens it")
        record = frame(raw)
        if self.size + len(record) > self.max_bytes:
            return False
        done = 0
        while done < len(record):  # a short write (a full disk) must not tear a record
            done += os.write(self._fd, record[done:])
        self.size += len(record)
        self.records += 1
        self.dirty = True
        return True

    def sync(self) -> None:
        if self._fd is not None and self.dirty:
            self.dirty = False
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            try:
                if self.dirty:
                    os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
                self.dirty = False

