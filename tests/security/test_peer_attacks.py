"""Peers that lie or send garbage, against real node processes (issue 10).

One validator and one follower (a non-validator that syncs and follows) run as real
``motus node start`` processes on loopback; hostile peers are ``P2PNode``s in the test
process (the same hostile-peer helpers as tests/node/test_network_faults.py), speaking
the real protocols. In file order:

1. one undecodable message on the consensus, block or evidence topic gets its sender
   banned at once (its first penalty) by every honest node, and nobody honest is hit;
2. the gossip RLP bomb (a 1.5 MB consensus message nested 400 deep) raises no node's
   peak RSS by more than ``BOMB_RSS_BOUND``, and bans its sender;
3. a peer flooding at full speed (messages the nodes merely IGNORE, then garbage from a
   fresh identity each time one is banned) costs each node a bounded CPU share, and
   blocks keep coming (numbers printed; longer with ``MOTUS_FLOOD_SECONDS``);
4. peers that claim heads they cannot back (2**62; a plausible height answered with
   garbage blocks; one answered with nothing) do not stop a restarted node from
   catching up, and each is penalised.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rlp
import trio
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX

from codec.files import write_atomic
from consensus.messages import encode_message
from consensus.types import PREVOTE
from consensus.wal import Signer, SigningGuard
from node.config import Config
from node.home import Home
from p2p.host import P2PNode
from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of
from p2p.reqresp import Head
from p2p.topics import MIB, topic_id
from tests.devnet import (
    CHAIN_ID,
    Devnet,
    accept_all,
    head,
    in_thread,
    p2p_peer,
    wait_for,
    wait_meshed,
)
from tests.procs import NodeProcess
from tests.security.bombs import rlp_bomb

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("peer_attacks")]

# Issue 10 measured 511-540 MB per node for this bomb under pyrlp; a bounded decoder
# refuses it before allocating anything like that.
BOMB_RSS_BOUND = 100 * MIB
# Flood length per kind (the suite's default is short; set MOTUS_FLOOD_SECONDS=30 to measure).
FLOOD_SECONDS = float(os.environ.get("MOTUS_FLOOD_SECONDS", "5"))
# A restarted follower 10-20 blocks behind, with three lying peers, must be level
# with the validator within this (it takes 2-4 s here; the liars used to stop it forever).
CATCH_UP_BOUND_S = 30.0


class Network(Devnet):
    """One validator plus a follower; ``honest`` are both, with their peer ids."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, validators=1)

    @property
    def honest(self) -> list[tuple[NodeProcess, str]]:
        assert self.follower is not None
        follower_id = peer_id_of(load_or_create_node_key(Home(self.follower.home).node_key))
        return [(self.nodes[0], self.members[0].peer_id), (self.follower, follower_id)]

    @property
    def all_addrs(self) -> list[str]:
        return [node_multiaddr("127.0.0.1", node.p2p_port, peer_id) for node, peer_id in self.honest]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Any:
    network = Network(tmp_path_factory.mktemp("attacks"))
    try:
        network.start()
        network.start_follower()
        yield network
    finally:
        network.close()


def log_of(node: NodeProcess) -> str:
    return node.log_path.read_text(errors="replace")


def ban_line(node: NodeProcess, peer_id: str) -> str | None:
    """The log line in which ``node`` banned ``peer_id``, if it did."""
    for line in log_of(node).splitlines():
        if f"banning peer {peer_id}" in line:
            return line
    return None


def proc_status(node: NodeProcess) -> dict[str, int]:
    """VmHWM / VmRSS in bytes, and CPU seconds used so far, of a node process."""
    assert node.proc is not None
    pid = node.proc.pid
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            fields[name] = int(value.split()[0]) * 1024
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    fields["cpu"] = (int(stat[11]) + int(stat[12])) / ticks  # utime + stime
    return fields


async def start_hostile(nursery: trio.Nursery, tmp_path: Path, name: str, net: Network,
                        topics: tuple[str, ...]) -> P2PNode:
    peer = p2p_peer(tmp_path, name, net.all_addrs)
    for topic in topics:
        peer.register_topic(topic, accept_all, max_size=2 * MIB)
    await nursery.start(peer.run)
    honest = [SimpleNamespace(peer_id=peer_id) for _, peer_id in net.honest]
    for topic in topics:
        await wait_meshed(peer, honest, topic, 20)  # type: ignore[arg-type]
    return peer


def signed(peer: P2PNode, topic: str, data: bytes) -> rpc_pb2.Message:
    """A pubsub message from ``peer``, signed as pubsub would (a fresh seqno each, so
    every one is new to the receiver even when ``data`` repeats)."""
    pubsub = peer.gossip.pubsub
    msg = rpc_pb2.Message(data=data, topicIDs=[topic], from_id=pubsub.my_id.to_bytes(),
                          seqno=pubsub._next_seqno())
    assert pubsub.sign_key is not None
    msg.signature = pubsub.sign_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = pubsub.host.get_public_key().serialize()
    return msg


def frames(peer: P2PNode, topic: str, data: bytes, count: int,
           per_frame: int = 200) -> list[rpc_pb2.RPC]:
    """``count`` signed messages in RPC frames of ``per_frame``, made before a flood so
    that signing does not slow the flood down."""
    return [rpc_pb2.RPC(publish=[signed(peer, topic, data) for _ in range(per_frame)])
            for _ in range(max(1, count // per_frame))]


async def blast(peer: P2PNode, frame: rpc_pb2.RPC, net: Network) -> int:
    """Write one RPC frame straight onto ``peer``'s pubsub stream to each honest node:
    no queue, no validator, no backpressure on our side but the connection's own.
    Returns the messages written (per node)."""
    count = len(frame.publish)
    written = 0
    for _, peer_id in net.honest:
        stream = peer.gossip.pubsub.peers.get(ID.from_base58(peer_id))
        if stream is not None:
            with trio.move_on_after(1):
                try:
                    if await peer.gossip.pubsub.write_msg(stream, frame):
                        written = count
                except Exception:  # the node hung up on us (it banned us): that is the point
                    pass
    return written


def assert_no_honest_peer_banned(net: Network) -> None:
    for node, _ in net.honest:
        for _, peer_id in net.honest:
            assert ban_line(node, peer_id) is None, f"{node.home.name} banned an honest peer"


# --- 1. one garbage message ------------------------------------------------------------


async def test_one_garbage_message_bans_its_sender_at_once(net: Network, tmp_path: Path) -> None:
    garbage = {"consensus": b"\xc1" + b"garbage" * 40, "block": b"\xc1garbage",
               "evidence": rlp.encode([b"not", [b"evidence"]]),
               "tx": b"\xc1not a batch", "attestation": b"\xc1not a batch"}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            hostiles = {topic: await start_hostile(nursery, tmp_path, f"garbage-{topic}", net,
                                                   (topic,))
                        for topic in garbage}
            for topic, peer in hostiles.items():
                await peer.publish(topic, garbage[topic])  # one message each, no more

            def all_banned() -> bool:
                return all(ban_line(node, peer.peer_id) for node, _ in net.honest
                           for peer in hostiles.values())

            await in_thread(wait_for, all_banned, 15, "every honest node to ban every sender")
            nursery.cancel_scope.cancel()
    for node, _ in net.honest:
        for peer in hostiles.values():
            line = ban_line(node, peer.peer_id)
            # Banned by its first and only penalty.
            assert "penalties {'malformed_message': 1}" in str(line), line
    assert_no_honest_peer_banned(net)


# --- 2. the gossip RLP bomb -------------------------------------------------------------


async def test_gossip_rlp_bomb_does_not_inflate_any_node(net: Network, tmp_path: Path) -> None:
    bomb = rlp_bomb(400, 1_500_000)  # issue 10's: 1.5 MB of bytes in 400 nested lists
    assert 1_500_000 < len(bomb) < 2 * MIB
    before = {node.home.name: (await in_thread(proc_status, node))["VmHWM"]
              for node, _ in net.honest}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            peer = await start_hostile(nursery, tmp_path, "bomber", net, ("consensus",))
            await peer.gossip.pubsub.publish(topic_id(CHAIN_ID, "consensus"), bomb)

            def all_banned() -> bool:
                return all(ban_line(node, peer.peer_id) for node, _ in net.honest)

            await in_thread(wait_for, all_banned, 20, "every node to ban the bomber")
            nursery.cancel_scope.cancel()
    grown = {}
    for node, _ in net.honest:
        grown[node.home.name] = (await in_thread(proc_status, node))["VmHWM"] - before[
            node.home.name]
    print(f"peak RSS growth per node after the RLP bomb (MB): "
          f"{ {name: round(g / MIB, 1) for name, g in grown.items()} }")
    assert all(g < BOMB_RSS_BOUND for g in grown.values()), grown
    assert_no_honest_peer_banned(net)


# --- 3. a flood at full speed -----------------------------------------------------------


async def test_flooding_peers_cost_a_bounded_share_and_blocks_keep_coming(
    net: Network, tmp_path: Path,
) -> None:
    """Two floods of FLOOD_SECONDS each, from peers publishing as fast as they can:

    * ``ignored``: well-formed votes for a height far ahead, signed by the attacker's
      own key, which every node IGNOREs without penalty; only the per-peer budget stops them (then a ban after a few
      seconds over it);
    * ``garbage``: undecodable consensus messages, from a fresh peer identity each time
      the last one is banned (identities are free).
    """
    validator = net.nodes[0]
    results: dict[str, dict[str, Any]] = {}
    consensus_id = topic_id(CHAIN_ID, "consensus")

    async def flood(kind: str) -> dict[str, Any]:
        sent, identities = 0, 0
        start_height = await in_thread(head, validator)
        before = {node.home.name: await in_thread(proc_status, node) for node, _ in net.honest}
        started = time.monotonic()
        deadline = started + FLOOD_SECONDS
        far = start_height + 10_000
        while time.monotonic() < deadline:
            identities += 1
            async with trio.open_nursery() as nursery:
                peer = await start_hostile(nursery, tmp_path, f"{kind}-{identities}", net,
                                           ("consensus",))
                if kind == "ignored":
                    # signed by the attacker's own key: a forged signature is REJECTed at
                    # any height (docs/network.md), a far height's membership is unknown
                    vote = Signer(os.urandom(32), CHAIN_ID, SigningGuard()).sign_vote(
                        PREVOTE, far, 0, os.urandom(32))
                    data = encode_message(vote)
                    ready = frames(peer, consensus_id, data, int(3000 * FLOOD_SECONDS))
                else:
                    data = b"\xc1" + os.urandom(200)
                    ready = []
                if identities == 1:  # the clock starts once the first attacker is ready
                    start_height = await in_thread(head, validator)
                    before = {node.home.name: await in_thread(proc_status, node)
                              for node, _ in net.honest}
                    started = time.monotonic()
                    deadline = started + FLOOD_SECONDS
                # One identity for the whole IGNOREd flood (the budget is what stops
                # it); a new one every second for garbage (its first message bans it).
                until = deadline if kind == "ignored" else min(deadline, time.monotonic() + 1)
                while time.monotonic() < until:
                    frame = ready.pop() if ready else frames(peer, consensus_id, data, 200)[0]
                    sent += await blast(peer, frame, net)
                    await trio.sleep(0)
                nursery.cancel_scope.cancel()
        elapsed = time.monotonic() - started
        after = {node.home.name: await in_thread(proc_status, node) for node, _ in net.honest}
        # Blocks made during the flood and the time the node needed to recover.
        end_height = await in_thread(head, validator)
        return {
            "seconds": round(elapsed, 1), "sent": sent, "identities": identities,
            "rate": round(sent / elapsed), "blocks": end_height - start_height,
            "cpu_share": {name: round((after[name]["cpu"] - before[name]["cpu"]) / elapsed, 2)
                          for name in after},
            "rss_mb": {name: round(after[name]["VmRSS"] / MIB) for name in after},
            "hwm_growth_mb": {name: round((after[name]["VmHWM"] - before[name]["VmHWM"]) / MIB)
                              for name in after},
        }

    with trio.fail_after(60 + 4 * FLOOD_SECONDS):
        baseline_start = await in_thread(head, validator)
        base_before = {node.home.name: await in_thread(proc_status, node) for node, _ in net.honest}
        await trio.sleep(3)
        base_after = {node.home.name: await in_thread(proc_status, node) for node, _ in net.honest}
        results["quiet"] = {
            "blocks_per_s": round((await in_thread(head, validator) - baseline_start) / 3, 2),
            "cpu_share": {n: round((base_after[n]["cpu"] - base_before[n]["cpu"]) / 3, 2)
                          for n in base_after},
        }
        for kind in ("ignored", "garbage"):
            results[kind] = await flood(kind)
            await trio.sleep(2)  # what the nodes still had buffered is not the next flood's
    print(f"flood results: {results}")
    for kind in ("ignored", "garbage"):
        r = results[kind]
        # Blocks every 0.5 s when quiet; under a flood consensus must keep going.
        assert r["blocks"] >= r["seconds"] / 0.5 * 0.5, r
        # Two cores, three processes and the attacker: a node must keep most of a core.
        assert all(share < 0.8 for share in r["cpu_share"].values()), r
        assert all(growth < 50 for growth in r["hwm_growth_mb"].values()), r
    # Whether the IGNOREd flood outran its budget depends on how fast this machine let
    # the attacker write (tests/p2p/test_budget.py checks the cut-off itself).
    print("cut off for over_budget by: "
          f"{[node.home.name for node, _ in net.honest if 'over_budget' in log_of(node)]}")
    assert_no_honest_peer_banned(net)


# --- 4. peers that claim heads they cannot back --------------------------------------------


async def test_restarted_node_catches_up_past_lying_peers(net: Network, tmp_path: Path) -> None:
    validator, follower = net.nodes[0], net.follower
    assert follower is not None
    follower.stop()
    lag_from = await in_thread(head, validator)
    await in_thread(validator.wait_height, lag_from + 12, 30)  # the follower falls behind
    target = await in_thread(head, validator)
    served: dict[str, int] = {"absurd": 0, "garbage": 0, "empty": 0}

    def liar(name: str, claim: int) -> P2PNode:
        peer = p2p_peer(tmp_path, f"liar-{name}", [])

        async def status(asker: str) -> Head:
            return Head(claim, b"\x42" * 32)

        async def blocks(asker: str, start: int, end: int) -> list[bytes]:
            served[name] += 1
            if name == "garbage":
                return [os.urandom(200) for _ in range(min(end - start + 1, 8))]
            return []

        peer.set_status_handler(status)
        peer.set_blocks_handler(blocks)
        return peer

    liars = {"absurd": liar("absurd", 2**62), "garbage": liar("garbage", target + 1000),
             "empty": liar("empty", target + 500)}
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            addrs = [await nursery.start(peer.run) for peer in liars.values()]
            cfg = Config.load(follower.home / "config.toml")
            cfg.p2p.bootstrap = [*addrs, *net.bootstrap]
            write_atomic(follower.home / "config.toml", cfg.to_toml().encode(), mode=0o644)
            started = time.monotonic()
            await in_thread(follower.start, 60)
            await in_thread(follower.wait_height, target, CATCH_UP_BOUND_S)
            caught_up = time.monotonic() - started
            nursery.cancel_scope.cancel()
    print(f"restarted follower {target - lag_from}+ blocks behind, with three lying peers: "
          f"level with the validator's head at restart ({target}) after {caught_up:.1f} s; "
          f"block requests served by the liars: {served}")
    log = log_of(follower)
    # 2**62 is beyond any chain: banned at once, never asked for blocks.
    absurd_ban = ban_line(follower, liars["absurd"].peer_id)
    assert absurd_ban is not None and "sync_implausible_head" in absurd_ban
    assert served["absurd"] == 0
    # The plausible liars were each tried once, penalised and left out.
    assert f"peer {liars['garbage'].peer_id} claimed head {target + 1000} but sync_bad_block" in log
    assert f"peer {liars['empty'].peer_id} claimed head {target + 500} but sync_unbacked_head" in log
    assert served["garbage"] >= 1 and served["empty"] >= 1
    await in_thread(follower.wait_height, target + 3, 20)  # and it keeps following
    assert_no_honest_peer_banned(net)
