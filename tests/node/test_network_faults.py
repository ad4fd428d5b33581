"""BFT consensus over libp2p with real node processes on loopback.

One four-validator devnet (plus a late follower) is shared by the tests of this module,
which run in file order, each leaving the network running and on one chain:

1. four validators finalize blocks; every node has the same hash at every height and
   every commit verifies against the height's validator set (>2/3 of the power);
2. a late non-validator syncs to the head (verifying commits) and then follows;
3. transactions sent to nodes that do not propose reach the proposer by gossip;
4. hostile peers sending garbage, oversized or forged messages are banned while the
   validators keep finalizing, and no honest peer is penalised;
5. one validator down: blocks continue; two down: progress halts with no fork;
   both back: progress resumes;
6. a validator SIGKILLed mid-round and restarted continues and never double-signs;
7. an equivocating validator is reported, the evidence is gossiped and committed, and
   the validator is jailed (gone from the next height's set) and slashed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.utils import encode_varint_prefixed

from consensus.effects import Step
from consensus.messages import encode_message
from consensus.types import PREVOTE, DuplicateVoteEvidence, Vote
from consensus.wal import SignedRecord
from devnet.launcher import DEVNET_POWER
from node.keys import load_validator_key
from p2p.host import P2PNode, Verdict
from p2p.topics import MIB, topic_id
from tests.devnet import (
    CHAIN_ID,
    ZERO_HASH,
    Devnet,
    accept_all,
    assert_one_chain,
    evidence_free,
    head,
    in_thread,
    p2p_peer,
    phase,
    receipt_everywhere,
    send_transfer,
    signing_record,
    status,
    verify_commit,
    wait_for,
    wait_heads,
    wait_meshed,
)
from tests.procs import NodeProcess, rpc
from vm.modules import addresses
from vm.modules.base import mapping_slot
from vm.modules.validators import SLASH_BPS

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("network")]



# --- the shared devnet ---------------------------------------------------------------


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    devnet = Devnet(tmp_path_factory.mktemp("devnet"))
    try:
        devnet.start()
        yield devnet
    finally:
        devnet.close()


# --- 1. finality -------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_four_validators_finalize_one_chain_with_verified_commits(net: Devnet) -> None:
    wait_heads(net.nodes, 4, timeout=60)
    top = assert_one_chain(net.nodes)
    proposers = set()
    for height in range(1, top + 1):
        header, commit, validators = verify_commit(net.nodes[height % 4], height)
        assert len(validators) == 4 and validators.total_power == 4 * DEVNET_POWER
        proposers.add(header["proposer"])
    assert len(proposers) >= 2, "the proposer must rotate"
    st = status(net.nodes[0])
    assert st["isValidator"] and st["peers"] >= 3 and st["syncing"] is False


# --- 2. a late follower --------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_late_follower_syncs_verified_blocks_then_follows(net: Devnet) -> None:
    wait_heads(net.nodes, 8, timeout=60)
    target = max(head(n) for n in net.nodes)
    follower = net.start_follower()
    wait_heads([follower], target, timeout=60)
    wait_for(lambda: "block sync: committed" in follower.log_path.read_text(), 10,
             "the follower to report its block sync")
    # it keeps following consensus on its own, not only by syncing
    wait_heads([follower], target + 4, timeout=30)
    st = status(follower)
    assert st["isValidator"] is False and st["peers"] >= 4
    assert st["consensus"]["height"] >= target + 4
    assert_one_chain([*net.nodes, follower])
    verify_commit(follower, target)


# --- 3. transaction gossip --------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_transactions_reach_the_proposer_by_gossip(net: Devnet) -> None:
    follower = net.start_follower()  # started by the previous test unless run alone
    wait_heads([follower], min(head(n) for n in net.nodes), timeout=60)
    nodes = net.running()
    # The follower never proposes: its transaction can only get in by gossip.
    sent = {send_transfer(follower, 9): follower}
    for i, node in enumerate(net.nodes):
        sent[send_transfer(node, 5 + i)] = node
    addresses_of = {n.home: "0x" + m.address.hex()
                    for n, m in zip(net.nodes, net.members, strict=True)}
    by_gossip = 0
    for tx_hash, node in sent.items():
        receipt = receipt_everywhere(nodes, tx_hash)
        header = rpc(node.url, "motus_getHeader", [int(receipt["blockNumber"], 16)])
        by_gossip += header["proposer"] != addresses_of.get(node.home)
    assert by_gossip >= 2
    assert_one_chain(nodes)


# --- 4. hostile peers ------------------------------------------------------------------------------


def _garbage(rng: Any, size: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(size)) if size < 4096 else os.urandom(size)


async def test_hostile_peers_are_banned_and_validators_keep_finalizing(
    net: Devnet, tmp_path: Path,
) -> None:
    import random

    rng = random.Random(7)
    # 150 s in all: about 20 s of work on an idle 2-core machine, but the 90 s bound
    # it had was missed on a fresh 2-core CI machine running the suite. A phase that
    # overruns says which one (``phase``) instead of a bare TooSlowError.
    with trio.fail_after(150):
        start = await in_thread(head, net.nodes[0])
        victim = net.members[0]
        hostiles = {kind: p2p_peer(tmp_path, kind, net.bootstrap)
                    for kind in ("consensus_garbage", "tx_garbage", "forged_votes",
                                 "late_forged_votes")}
        for peer in hostiles.values():
            peer.register_topic("consensus", accept_all, max_size=2 * MIB)
            peer.register_topic("tx", accept_all, max_size=1 * MIB)

        def forged_vote(height: int) -> bytes:
            # well-formed, names a real validator, signature is not its
            sig = _garbage(rng, 64) + b"\x00"
            return encode_message(Vote(PREVOTE, height, 0, _garbage(rng, 32), victim.address, sig))

        async def attack(kind: str, peer: P2PNode) -> None:
            await wait_meshed(peer, net.members, "consensus", 20)
            await wait_meshed(peer, net.members, "tx", 20)
            consensus_id = topic_id(CHAIN_ID, "consensus")
            # Forged votes count against their sender at any height: under load a vote
            # forged for the next height reached validators up to 9 heights later, and
            # one validator that dropped them unchecked never banned the forger. The
            # late forger names heights every validator has passed.
            for i in range(12):
                if kind == "consensus_garbage":
                    if i % 2:  # over the 2 MiB topic limit: bypass our own size check
                        await peer.gossip.pubsub.publish(consensus_id, os.urandom(2 * MIB + 1024))
                    else:
                        await peer.publish("consensus", _garbage(rng, 300))
                elif kind == "tx_garbage":
                    await peer.publish("tx", _garbage(rng, 200 * 1024 if i % 2 else 120))
                else:
                    height = await in_thread(head, net.nodes[0])
                    late = kind == "late_forged_votes"
                    forged = forged_vote(max(1, height - 3) if late else height + 1)
                    await peer.publish("consensus", forged)
                await trio.sleep(0.15)

        async def broken_frames(peer: P2PNode) -> None:
            # Below gossip: a length-prefixed frame that is not protobuf (a 200-byte
            # varint), written on the peer's own pubsub stream to each validator. The
            # library let it crash the whole node; p2p.host's guarded pubsub drops
            # that stream instead.
            await wait_meshed(peer, net.members, "consensus", 20)
            delivered = []
            for m in net.members:
                stream = peer.gossip.pubsub.peers.get(ID.from_base58(m.peer_id))
                if stream is not None:
                    with trio.move_on_after(5):
                        await stream.write(encode_varint_prefixed(b"\xff" * 200))
                        delivered.append(m.peer_id)
            assert len(delivered) >= 3, delivered

        async with trio.open_nursery() as nursery:
            for peer in hostiles.values():
                await nursery.start(peer.run)
            framer = p2p_peer(tmp_path, "broken_frames", net.bootstrap)
            framer.register_topic("consensus", accept_all)
            await nursery.start(framer.run)
            with phase("broken frames reach the validators", 40):
                await broken_frames(framer)
            with phase("the attacks are sent", 60):
                async with trio.open_nursery() as attacks:
                    for kind, peer in hostiles.items():
                        attacks.start_soon(attack, kind, peer)

            def all_banned() -> bool:
                logs = [n.log_path.read_text(errors="replace") for n in net.nodes]
                return all(f"banning peer {p.peer_id}" in log for p in hostiles.values()
                           for log in logs)

            with phase("every validator bans every hostile peer", 60):
                while not await in_thread(all_banned):
                    await trio.sleep(0.2)
            # A banned peer keeps redialling (about once a second here); each time the
            # validator lets the connection up and cuts it at once. Count the peers the
            # validators hold for 3 s: honest ones, the framer, and at most a fraction
            # (half on average) of the banned hostiles at any moment.
            honest = len(net.running()) - 1 + 1  # the other nodes and the framer
            excess = []
            for _ in range(12):
                for node in net.nodes:
                    excess.append((await in_thread(status, node))["peers"] - honest)
                await trio.sleep(0.25)
            assert sum(excess) / len(excess) < len(hostiles) / 2, (
                f"banned peers stay connected: {excess}")
            nursery.cancel_scope.cancel()
    for node in net.nodes:
        assert (await in_thread(status, node))["bannedPeers"] >= len(hostiles)

    assert all(n.proc is not None and n.proc.poll() is None for n in net.nodes), "a node died"
    await in_thread(wait_heads, net.nodes, start + 3)
    honest = [m.peer_id for m in net.members]
    logs = await in_thread(net.logs)
    for peer_id in honest:
        assert f"banning peer {peer_id}" not in logs, "an honest relay was banned"
    await in_thread(assert_one_chain, net.running())


# --- 5. validators down and back -------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_one_down_continues_two_down_halts_then_resumes(net: Devnet) -> None:
    a, b = net.nodes[2], net.nodes[3]
    live = [net.nodes[0], net.nodes[1]]
    a.stop()
    h = max(head(n) for n in live)
    wait_heads(live, h + 3, timeout=30)  # 300 of 400 power is more than 2/3
    b.stop()
    time.sleep(2.0)  # a block already being decided may still land
    halted = [head(n) for n in live]
    time.sleep(5.0)
    assert [head(n) for n in live] == halted, "200 of 400 power must not finalize"
    # Stuck waiting for votes at the next height: without 2/3 of the power voting for
    # anything, no step timeout fires (Tendermint lines 34/47), so rounds do not grow.
    assert status(live[0])["consensus"]["height"] == halted[0] + 1
    view = net.status_view()  # the devnet status view shows who is down
    assert view[2].endswith("down") and view[3].endswith("down"), view
    assert all(f" {h} " in row for h, row in zip(halted, view[:2], strict=True)), view
    assert_one_chain(net.running())
    a.start(wait=60)
    b.start(wait=60)
    wait_heads(net.nodes, max(halted) + 3, timeout=60)
    assert_one_chain(net.running())


# --- 6. SIGKILL mid-round ---------------------------------------------------------------------


@contextlib.contextmanager
def frozen(nodes: list[NodeProcess]) -> Iterator[None]:
    """Stop ``nodes`` (each process group: the node and its workers) with SIGSTOP for
    the block, then let them go on where they were."""
    for node in nodes:
        assert node.proc is not None
        os.killpg(node.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for node in nodes:
            assert node.proc is not None
            os.killpg(node.proc.pid, signal.SIGCONT)


@pytest.mark.timeout(150)
def test_validator_killed_mid_round_restarts_without_double_signing(net: Devnet) -> None:
    since = min(head(n) for n in net.nodes)
    victim = net.nodes[1]
    others = [n for n in net.nodes if n is not victim]
    for step in (Step.PREVOTE, Step.PRECOMMIT, Step.PREVOTE):
        floor = head(victim)

        def signed_step(floor: int = floor, step: Step = step) -> SignedRecord | None:
            record = signing_record(victim)
            return record if record and record.height > floor and record.step == step else None

        # Kill right after it signed ``step`` at a height it has not committed yet. A
        # prevote is the victim's last signature only until 2/3 of the prevotes arrive,
        # a few milliseconds on loopback, so polling could miss it for 30 s on a loaded
        # machine (CI did): two of the others are frozen (SIGSTOP, a real stall) so the
        # victim prevotes and then waits, holding 200 of 400 power, with no quorum to
        # move on. A precommit stays the last signature through the block interval.
        with frozen(others[1:] if step == Step.PREVOTE else []):
            record = wait_for(signed_step, 30, f"victim signs {step.name}")
            victim.kill()
            victim.stop()
        on_disk = signing_record(victim)  # parses: the file is never torn
        assert on_disk is not None and on_disk.position >= record.position
        wait_heads(others, on_disk.height + 1, timeout=30)  # 3 of 4 carry on meanwhile
        victim.start(wait=60)
        wait_heads([victim], max(head(n) for n in others) + 2, timeout=60)

        def signed_again(killed_at: int = on_disk.height) -> SignedRecord | None:
            record = signing_record(victim)
            return record if record and record.height > killed_at + 1 else None

        after = wait_for(signed_again, 30, "the restarted victim signs again")
        assert after.position > on_disk.position
    assert "double-sign evidence" not in net.logs()
    evidence_free(net.running(), since)
    assert_one_chain(net.running())


# --- 7. equivocation -------------------------------------------------------------------------


async def test_equivocating_validator_is_jailed_and_slashed(net: Devnet, tmp_path: Path) -> None:
    import secrets

    offender = net.members[3]
    key = load_validator_key(offender.home.validator_key)
    start = await in_thread(head, net.nodes[0])
    seen: list[DuplicateVoteEvidence] = []

    def on_evidence(peer: str, data: bytes) -> Verdict:
        seen.append(DuplicateVoteEvidence.decode(data))
        return Verdict.ACCEPT

    reporter = p2p_peer(tmp_path, "equivocator", net.bootstrap)
    reporter.register_topic("consensus", accept_all)
    reporter.register_topic("evidence", on_evidence, max_size=64 * 1024)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(reporter.run)
            await wait_meshed(reporter, net.members, "consensus", 20)
            while not seen:
                # Two prevotes for different blocks at the next height and round 0,
                # signed with the offender's key, bypassing its signing guard.
                height = await in_thread(head, net.nodes[0]) + 1
                for _ in range(2):
                    vote = Vote.create(CHAIN_ID, key, PREVOTE, height, 0, secrets.token_bytes(32),
                                       offender.address)
                    await reporter.publish("consensus", encode_message(vote))
                with trio.move_on_after(1.0):
                    while not seen:
                        await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert seen[0].validator == offender.address

    def find_evidence_block() -> int | None:
        for height in range(start, head(net.nodes[0]) + 1):
            if rpc(net.nodes[0].url, "motus_getHeader", [height])["evidenceHash"] != ZERO_HASH:
                return height
        return None

    included = await in_thread(wait_for, find_evidence_block, 30, "evidence in a block")
    await in_thread(wait_heads, net.running(), included + 2)

    def check_jailed() -> None:
        node = net.nodes[0]
        header = rpc(node.url, "motus_getHeader", [included])
        before = rpc(node.url, "motus_getValidators", [included])
        after = rpc(node.url, "motus_getValidators", [included + 1])
        offender_hex = "0x" + offender.address.hex()
        assert offender_hex in [v["address"] for v in before["validators"]]
        assert offender_hex not in [v["address"] for v in after["validators"]]
        assert len(after["validators"]) == 3
        assert header["nextValidatorsHash"] == after["hash"] != before["hash"]
        assert rpc(node.url, "motus_getHeader", [included + 1])["validatorsHash"] == after["hash"]
        store = "0x" + addresses.VALIDATORS.hex()
        power = rpc(node.url, "eth_getStorageAt",
                    [store, hex(mapping_slot(2, offender.address)), "latest"])
        jailed = rpc(node.url, "eth_getStorageAt",
                     [store, hex(mapping_slot(3, offender.address)), "latest"])
        assert int(power, 16) == DEVNET_POWER - DEVNET_POWER * SLASH_BPS // 10_000
        assert int(jailed, 16) == 1
        assert status(net.nodes[3])["isValidator"] is False
        assert net.status_view()[3].endswith("not in validator set")
        verify_commit(node, included + 2)  # the three left still finalize
        assert_one_chain(net.running())

    await in_thread(check_jailed)
