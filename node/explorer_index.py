"""The explorer's indexes, written in the committing block's own batch (docs/storage.md,
"Explorer indexes"): what the chain answers only by scanning every block, kept so that
an explorer page is one read.

Key layout (under the two-byte prefix ``X``, which no other key family uses):
  Xa<address:20><height:8><index:4>  tx hash      a transaction sent by or to the address
  Xc<epoch:8><cell:8>                count        accepted attestations in that public H3 cell
                                                 in that epoch (uint, big-endian)

Costs, per committed block: one key of 64 bytes per transaction and party (sender, and
recipient when there is one and it differs); one read and one write per distinct cell
among the block's attestations (a cell key is 18 bytes, its value at most 8). Cells are
the chain's public cells (``h3_resolution``, at most 7): the index holds no location
that the blocks do not already publish.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from vm.attestation import decode_accepted

PREFIX_ADDRESS = b"Xa"
PREFIX_CELL = b"Xc"


def _u(n: int, width: int) -> bytes:
    return n.to_bytes(width, "big")


def index_block(db: Any, batch: Any, height: int, epoch: int, extras: Sequence[Any],
                transactions: Sequence[Any], attestations: Sequence[bytes],
                records: Sequence[Any] | None = None) -> None:
    """Add one block to the indexes, through ``batch`` (the block's write batch): ``extras``
    are the store's per-transaction records (hash, sender), ``transactions`` the executed
    transactions in the same order. ``db`` is read for the running cell counts, which
    only committed blocks have written. ``records``: the attestations decoded, when the
    caller has them (one per attestation, in order), so they are not decoded here."""
    for i, (extra, tx) in enumerate(zip(extras, transactions, strict=False)):
        tx_hash = bytes(extra.tx_hash)
        parties = {bytes(extra.sender)}
        to = bytes(getattr(tx, "to", b"") or b"")
        if len(to) == 20:
            parties.add(to)
        for party in parties:
            batch.put(PREFIX_ADDRESS + party + _u(height, 8) + _u(i, 4), tx_hash)
    cells: Counter[int] = Counter()
    if records is not None and len(records) == len(attestations):
        for record in records:
            cell = record.cell
            if type(cell) is int and cell >= 0:
                cells[cell] += 1
    else:
        for raw in attestations:
            cell = _cell_of(bytes(raw))
            if cell is not None:
                cells[cell] += 1
    for cell, n in cells.items():
        key = PREFIX_CELL + _u(epoch, 8) + _u(cell, 8)
        old = db.get(key)
        batch.put(key, _u((int.from_bytes(old, "big") if old else 0) + n, 8))


def _cell_of(raw: bytes) -> int | None:
    """The public cell of an attestation the block's execution has already accepted
    (so canonical and well typed): read by :func:`vm.attestation.decode_accepted`, at a
    fifth of a full decode's cost; None for anything else (never fails a commit)."""
    try:
        cell = decode_accepted(raw).cell
    except Exception:
        return None
    return cell if type(cell) is int and cell >= 0 else None


def address_transactions(db: Any, address: bytes, limit: int) -> list[tuple[int, int, bytes]]:
    """The newest ``limit`` transactions of ``address``: ``(height, index, hash)``,
    newest first."""
    out = []
    prefix = PREFIX_ADDRESS + address
    for key, value in db.iterator(prefix=prefix, reverse=True):
        out.append((int.from_bytes(key[22:30], "big"), int.from_bytes(key[30:34], "big"),
                    bytes(value)))
        if len(out) >= limit:
            break
    return out


def cell_counts(db: Any, epoch: int) -> Iterator[tuple[int, int]]:
    """``(cell, accepted attestations)`` of one epoch, in cell order."""
    prefix = PREFIX_CELL + _u(epoch, 8)
    for key, value in db.iterator(prefix=prefix):
        yield int.from_bytes(key[10:18], "big"), int.from_bytes(value, "big")
