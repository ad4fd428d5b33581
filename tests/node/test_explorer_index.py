"""The explorer's indexes on a real LevelDB: transactions by address (sender and
recipient, newest first, bounded), accepted attestations by epoch and public cell
(accumulated across blocks), and bytes that are not an attestation never failing a
commit."""

from __future__ import annotations

from dataclasses import dataclass

from eth_hash.auto import keccak

from devnet.device import Device
from node import explorer_index
from node.db import Database
from vm.attestation import decode_attestation

CHAIN_ID = 7077


@dataclass
class Extra:
    tx_hash: bytes
    sender: bytes


@dataclass
class Tx:
    to: bytes


def commit(db: Database, height: int, epoch: int, txs: list[tuple[bytes, bytes, bytes]],
           raws: list[bytes]) -> None:
    with db.batch() as wb:
        explorer_index.index_block(db, wb, height, epoch, [Extra(h, s) for h, s, _ in txs],
                                   [Tx(to) for _, _, to in txs], raws)


def test_transactions_by_address_and_cells_by_epoch(tmp_path) -> None:
    db = Database(tmp_path / "db")
    alice, bob, carol = b"\xaa" * 20, b"\xbb" * 20, b"\xcc" * 20
    device = Device.generate(CHAIN_ID, 7, seed=b"index test")
    readings = [device.attest(vehicle_id=1, timestamp_ms=1_700_000_000_000 + 1000 * i,
                              lat=48.137 + 0.02 * (i % 2), lon=11.575, odometer_m=100 * i).raw
                for i in range(5)]
    cells = [decode_attestation(r).cell for r in readings]
    t = [keccak(b"%d" % i) for i in range(4)]
    commit(db, 1, 0, [(t[0], alice, bob), (t[1], alice, alice)], readings[:3] + [b"\x93junk"])
    commit(db, 2, 0, [(t[2], bob, b"")], readings[3:4])
    commit(db, 3, 1, [(t[3], carol, alice)], readings[4:])
    assert explorer_index.address_transactions(db, alice, 10) == [(3, 0, t[3]), (1, 1, t[1]), (1, 0, t[0])]
    assert explorer_index.address_transactions(db, alice, 2) == [(3, 0, t[3]), (1, 1, t[1])]
    assert explorer_index.address_transactions(db, bob, 10) == [(2, 0, t[2]), (1, 0, t[0])]
    assert explorer_index.address_transactions(db, b"\xdd" * 20, 10) == []
    epoch0 = dict(explorer_index.cell_counts(db, 0))
    expected: dict[int, int] = {}
    for c in cells[:4]:
        expected[c] = expected.get(c, 0) + 1
    assert epoch0 == expected and sum(epoch0.values()) == 4  # the junk bytes count nowhere
    assert dict(explorer_index.cell_counts(db, 1)) == {cells[4]: 1}
    assert list(explorer_index.cell_counts(db, 2)) == []
    db.close()
