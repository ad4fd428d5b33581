"""What a commit writes for every attestation of a block, computed the fast way: the
location entries (``a<id>`` -> ``rlp([height, index])``) and the ids of the included
attestations, taken from execution's results."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import rlp
from eth_hash.auto import keccak

from node.store import attestation_locations
from vm.attestation import OK
from vm.execute import BlockResult
from vm.modules.telemetry import DEFERRED


def test_location_entries_are_the_rlp_of_height_and_index() -> None:
    for height in (0, 1, 127, 128, 255, 256, 65_535, 10**6, 2**40):
        got = list(itertools.islice(attestation_locations(height), 70_000))
        assert got[:300] == [rlp.encode([height, i]) for i in range(300)]
        for i in (65_535, 65_536, 69_999):
            assert got[i] == rlp.encode([height, i])


def test_included_ids_come_from_the_results_or_are_hashed_again() -> None:
    raws = [b"a", b"b", b"c"]
    # ids that are not the bytes' hashes: only the results can have given them
    given = [b"\x01" * 32, b"\x02" * 32, b"\x03" * 32]
    results = [(given[0], OK), (keccak(b"x"), "replay"), (given[1], OK), (given[2], OK),
               (keccak(b"y"), DEFERRED)]
    result = SimpleNamespace(attestations=raws, attestation_results=results, included_ids=None)
    assert BlockResult.included_attestation_ids(result) == given  # type: ignore[arg-type]
    assert result.included_ids == given  # kept: a commit asks three times
    # results that do not line up with the included list (none given): hashed here
    assert BlockResult.included_attestation_ids(SimpleNamespace(  # type: ignore[arg-type]
        attestations=raws, attestation_results=[], included_ids=None)) == [
            keccak(r) for r in raws]
