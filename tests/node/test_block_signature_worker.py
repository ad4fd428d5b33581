"""A peer's block whose attestations this node never saw, checked through the node's own
wiring (Node -> Application.check_block -> execute_block) with the node's signature
worker (vm.attestation_ahead; docs/telemetry.md, "Checking a peer's block"): the first
such check starts the worker, later ones give it the signatures, every check gives the
proposer's result, and a forged signature fails the block with the serial error.
In-process on a real node home (LevelDB, signed commits), as test_rewards_rpc.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

import vm.attestation as attestation
from node.block import Block
from node.metrics import REGISTRY
from tests.node.test_rewards_rpc import PARAMS, InProcessChain, make_fleet
from tests.procs import init_home
from vm.errors import InvalidBlock

pytestmark = [pytest.mark.timeout(120)]


def _as_a_peer(chain: InProcessChain) -> None:
    """Forget what proposing taught this process: the verified signatures and the
    executed block (a peer that never saw these attestations)."""
    attestation._VERIFIED.clear()
    chain.app._by_value.clear()
    chain.app._executed.clear()
    chain.app._assembled.clear()


def test_a_peers_block_is_checked_with_the_nodes_signature_worker(tmp_path: Path) -> None:
    home = init_home(tmp_path, "node")
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["params"].update(PARAMS)
    (home / "genesis.json").write_text(json.dumps(genesis))
    chain = InProcessChain(home)
    try:
        fleet = make_fleet(chain)
        app, worker = chain.app, chain.node.attestations.block_signatures
        assert app.signature_worker is worker
        atts = []
        for i, device in enumerate(fleet["devices"]):
            lat, lon, odo, _ = fleet["drives"][i].step(1_000)
            atts.append(device.attest(vehicle_id=fleet["vehicles"][i],
                                      timestamp_ms=chain.now_ms + 1_500, lat=lat, lon=lon,
                                      odometer_m=odo, speed_cmps=1_500).raw)
        chain.feed.next = atts
        chain.now_ms += 1000
        height = chain.height + 1
        value = app.propose(height, chain.node.address)
        built = app.check_block(height, value)  # the proposer's own execution
        assert len(built.result.attestations) == len(atts)

        _as_a_peer(chain)  # the first unseen check: serial, and it starts the worker
        first = app.check_block(height, value, check_time=False)
        deadline = time.monotonic() + 60
        while not worker.available():
            assert time.monotonic() < deadline, "the signature worker did not start"
            time.sleep(0.05)
        _as_a_peer(chain)
        tasks_before = worker._tag
        counted = REGISTRY.get_sample_value("motus_block_check_worker_signatures_total") or 0
        second = app.check_block(height, value, check_time=False)
        assert worker._tag > tasks_before  # the worker got the signatures
        # (how many it answered in time depends on the machine's load)
        assert 0 <= second.result.worker_signatures <= len(atts)
        assert REGISTRY.get_sample_value("motus_block_check_worker_signatures_total") == \
            counted + second.result.worker_signatures
        for executed in (first, second):  # (check_block compared every root with the header)
            assert executed.result.state_root == built.result.state_root
            assert executed.result.attestation_results == built.result.attestation_results

        block = app.block_of(value)
        forged = atts[1][:-40] + bytes([atts[1][-40] ^ 0x5A]) + atts[1][-39:]
        bad = Block(block.header, block.transactions, [atts[0], forged], block.last_commit,
                    block.evidence).encode()
        errors = []
        for with_worker in (None, worker):
            app.signature_worker = with_worker
            _as_a_peer(chain)
            with pytest.raises(InvalidBlock) as caught:
                app.check_block(height, bad, check_time=False)
            errors.append(str(caught.value))
        assert errors[0] == errors[1] and "attestation 1 " in errors[0]
        assert "bad_signature" in errors[0]
    finally:
        chain.close()
    assert not worker.available()  # closed with the node's attestation service
