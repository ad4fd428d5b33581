"""``GET /health`` tells the truth: 503 with the reason when the chain is stalled, when
the node has no peers on a network that has others, and when it syncs far behind; 200
"ok" otherwise. Each condition on real node processes (docs/rpc.md, "Health")."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from devnet.launcher import Member, status_lines
from node.health import NO_PEERS, OK, STALLED, SYNCING, Observation, assess
from node.home import Home
from tests.procs import (
    ROOT,
    NodeProcess,
    init_home,
    motus,
    set_config,
    validator_address,
    write_genesis,
)

pytestmark = [pytest.mark.timeout(120)]

RANDOM_VALIDATOR = "0x" + "ab" * 20  # a validator nobody runs


def get_health(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_health(url: str, status: str, timeout: float = 30) -> tuple[int, dict]:
    deadline = time.monotonic() + timeout
    last: tuple[int, dict] = (0, {})
    while time.monotonic() < deadline:
        last = get_health(url)
        if last[1].get("status") == status:
            return last
        time.sleep(0.1)
    raise AssertionError(f"health never became {status!r}: last {last}")


def home_with_validators(tmp_path: Path, name: str, *, include_own: bool,
                         others: tuple[str, ...]) -> Path:
    """A node home whose genesis lists ``others`` as validators, and this node's own
    validator key too if ``include_own``."""
    home = init_home(tmp_path, name)
    validators = [validator_address(home)] if include_own else []
    write_genesis(home / "genesis.json", [(v, 10) for v in (*validators, *others)])
    return home


# --- the rules --------------------------------------------------------------------------


def observation(**changes) -> Observation:
    base = dict(height=100, head_age_s=1.0, syncing=False, sync_target=None, peers=3,
                expects_peers=True, max_head_age_seconds=10, max_sync_lag_blocks=10)
    return Observation(**{**base, **changes})


@pytest.mark.parametrize(("changes", "status"), [
    ({}, OK),
    ({"head_age_s": 10.5}, STALLED),
    ({"peers": 0}, NO_PEERS),
    ({"peers": 0, "expects_peers": False}, OK),  # a single validator needs nobody
    ({"peers": 0, "head_age_s": 60}, NO_PEERS),  # the cause before the symptom
    ({"syncing": True, "sync_target": 110}, OK),  # 10 behind: about to catch up
    ({"syncing": True, "sync_target": 111}, SYNCING),
    ({"syncing": True, "sync_target": 5000, "head_age_s": 600}, SYNCING),
    ({"syncing": False, "sync_target": 5000}, OK),  # no round running: no claim counts
])
def test_rules_and_their_order(changes, status) -> None:
    health = assess(observation(**changes))
    assert health.status == status
    assert health.http_status == (200 if status == OK else 503)
    assert (health.reason == "") == (status == OK)


# --- real nodes -------------------------------------------------------------------------


def test_stalled_chain_answers_503_with_the_reason(tmp_path) -> None:
    """A node that is not the (single) validator of its chain never sees a block: its
    head ages past the bound."""
    home = home_with_validators(tmp_path, "follower", include_own=False,
                                others=(RANDOM_VALIDATOR,))
    set_config(home, max_head_age_seconds=2)
    with NodeProcess(home) as node:
        status, doc = wait_health(node.url, STALLED, timeout=20)
        assert status == 503
        assert doc["height"] == 0 and doc["headAgeSeconds"] > 2
        assert "chain stalled at height 0" in doc["reason"]
        result = motus("status", "--rpc", node.url)
        assert json.loads(result.stdout)["health"]["status"] == STALLED
        # in words, without colour codes into a pipe
        assert result.stderr.startswith("motus: STALLED: chain stalled at height 0"), result.stderr
        assert "\x1b[" not in result.stderr
        # the devnet status view: the validator and the chain flagged, the fleet waiting
        fleet_stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            member = Member(0, Home(home), bytes.fromhex(RANDOM_VALIDATOR[2:]), "peer",
                            node.rpc_port, node.p2p_port, node.proc)
            plain = status_lines([member], fleet_stand_in)
            assert re.search(r"STALLED \d+s$", plain[1]), plain
            assert plain[2].startswith("chain STALLED at height 0: no new block for ")
            assert plain[3] == "fleet simulator: waiting (chain stalled)"
            assert "\x1b[" not in "".join(plain)
            coloured = status_lines([member], fleet_stand_in, colour=True)
            assert "\x1b[31mSTALLED" in coloured[1] and coloured[2].startswith("\x1b[31mchain")
        finally:
            fleet_stand_in.kill()
            fleet_stand_in.wait()
        # the fleet simulator says what it waits for instead of starting
        fleet = subprocess.run(
            [sys.executable, "-m", "devnet.fleet", "--rpc", node.url, "--wait", "3",
             "--report", "1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert fleet.returncode == 1
        assert "fleet: waiting: chain stalled at height 0: no new block for" in fleet.stdout
        assert "chain stalled at height 0" in fleet.stderr  # the setup failure says why


def test_lone_validator_of_two_answers_no_peers(tmp_path) -> None:
    """Two validators in genesis, one running: it has nobody to talk to (and no block is
    ever made)."""
    home = home_with_validators(tmp_path, "half", include_own=True, others=(RANDOM_VALIDATOR,))
    with NodeProcess(home) as node:
        status, doc = wait_health(node.url, NO_PEERS, timeout=20)
        assert status == 503 and doc["peers"] == 0
        assert "no peers" in doc["reason"]


def test_healthy_single_validator_answers_200(tmp_path) -> None:
    home = init_home(tmp_path, "solo")
    with NodeProcess(home) as node:
        node.wait_height(2)
        status, doc = get_health(node.url)
        assert status == 200 and doc["status"] == OK and "reason" not in doc


@pytest.mark.slow
def test_node_syncing_far_behind_answers_503_syncing(tmp_path) -> None:
    """A follower joining a chain many blocks ahead says ``syncing`` while it catches up,
    then ``ok``."""
    leader_home = init_home(tmp_path, "leader")
    set_config(leader_home, block_interval_ms=0, commit_wait_ms=0)
    leader = NodeProcess(leader_home).start()
    try:
        leader.wait_height(SYNC_CHAIN_BLOCKS, timeout=90)
        leader.stop()  # back at an ordinary pace: the follower gets the cores
        set_config(leader_home, block_interval_ms=1000, commit_wait_ms=200)
        leader = NodeProcess(leader_home).start()
        follower_home = init_home(tmp_path, "follower")
        (follower_home / "genesis.json").write_bytes((leader_home / "genesis.json").read_bytes())
        from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of

        peer = peer_id_of(load_or_create_node_key(leader_home / "keys" / "node.key"))
        address = node_multiaddr("127.0.0.1", leader.p2p_port, peer)
        set_config(follower_home, max_sync_lag_blocks=5, bootstrap=f'["{address}"]')
        follower = NodeProcess(follower_home).start()
        try:
            seen = set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status, doc = get_health(follower.url)
                seen.add((status, doc["status"]))
                if doc["status"] == OK and doc["height"] >= SYNC_CHAIN_BLOCKS:
                    break
                time.sleep(0.01)
            assert (503, SYNCING) in seen, seen
            assert (200, OK) in seen, seen
        finally:
            follower.stop()
    finally:
        leader.stop()


SYNC_CHAIN_BLOCKS = 150
