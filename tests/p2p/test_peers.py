"""Connections and peer scoring between real hosts: bootstrap, reconnect, bans."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from p2p.host import P2PNode
from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of
from p2p.scoring import ScoreConfig
from p2p.topics import DEFAULT_MAX_MESSAGE_SIZE, TopicName, topic_id
from tests.p2p.conftest import accept_all, free_port, meshed, wait_until


@pytest.mark.slow
async def test_dialer_started_before_its_bootstrap_peer_connects(
    tmp_path: Path, node_factory: Callable[..., P2PNode]
) -> None:
    """The first dials fail (connection refused, negative dial cache); our loop keeps going."""
    with trio.fail_after(30):
        port = free_port()
        late_id = peer_id_of(load_or_create_node_key(tmp_path / "late.key"))
        dialer = node_factory("dialer", bootstrap=(node_multiaddr("127.0.0.1", port, late_id),))
        late = node_factory("late", listen_port=port)
        inbox = late.register_topic(TopicName.BLOCK, accept_all)
        dialer.register_topic(TopicName.BLOCK, accept_all)
        async with trio.open_nursery() as nursery:
            await nursery.start(dialer.run)
            await trio.sleep(3)  # several failed dials; the library would now wait 60 s
            assert not dialer.is_connected(late_id)
            await nursery.start(late.run)
            started = trio.current_time()
            await wait_until(lambda: dialer.is_connected(late_id), timeout=10)
            assert trio.current_time() - started < 5
            assert [peer.bootstrap for peer in dialer.peers()] == [True]
            await wait_until(lambda: meshed(dialer, late, TopicName.BLOCK))
            await dialer.publish(TopicName.BLOCK, b"announce")
            with trio.fail_after(5):
                assert (await inbox.receive()).data == b"announce"

            # A dropped connection is redialled by the dialer's loop.
            await late.host.disconnect(dialer.host.get_id())
            await wait_until(lambda: not dialer.is_connected(late_id), timeout=5)
            await wait_until(lambda: dialer.is_connected(late_id), timeout=10)
            nursery.cancel_scope.cancel()


async def test_garbage_peer_is_banned_while_honest_traffic_flows(
    node_factory: Callable[..., P2PNode],
) -> None:
    def only_ok(peer_id: str, data: bytes) -> bool:
        return data.startswith(b"ok")

    with trio.fail_after(40):
        validator = node_factory("validator", scoring=ScoreConfig(ban_seconds=60))
        inbox = validator.register_topic(TopicName.TX, only_ok)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(validator.run)
            honest = node_factory("honest", bootstrap=(address,))
            attacker = node_factory("attacker", bootstrap=(address,))
            for node in (honest, attacker):
                node.register_topic(TopicName.TX, accept_all)
                await nursery.start(node.run)
                await wait_until(lambda n=node: meshed(n, validator, TopicName.TX))

            # Garbage (well-sized, rejected by the validator: -20 each), then oversized
            # messages sent under our own size check, as a hostile peer would: the
            # first bans at once (no honest node sends one), the second is dropped.
            for i in range(3):
                await attacker.publish(TopicName.TX, b"garbage %d" % i)
            raw_pubsub = attacker.gossip.pubsub  # bypass P2PNode.publish's size check
            tx_topic = topic_id(validator.config.chain_id, TopicName.TX)
            oversize = b"o" * (DEFAULT_MAX_MESSAGE_SIZE[TopicName.TX] + 1)
            await raw_pubsub.publish(tx_topic, oversize)
            await raw_pubsub.publish(tx_topic, oversize)
            await honest.publish(TopicName.TX, b"ok from honest 1")

            await wait_until(lambda: validator.scoreboard.is_banned(attacker.peer_id))
            await wait_until(lambda: not validator.is_connected(attacker.peer_id))
            score = validator.peer_scores()[attacker.peer_id]
            assert score.banned_for > 50
            assert score.penalties == {"invalid_message": 3, "oversize_message": 1}
            rejected = validator.stats()["topics"][TopicName.TX].rejected
            assert rejected == {"invalid_message": 3, "oversize_message": 1}

            # The attacker's reconnect loop keeps dialing; the validator keeps
            # hanging up, and nothing the attacker sends is delivered.
            for _ in range(12):
                if attacker.is_connected(validator.peer_id):
                    await attacker.publish(TopicName.TX, b"ok but banned")
                await trio.sleep(0.25)
            assert validator.stats()["banned_disconnects"] >= 2
            await wait_until(lambda: not validator.is_connected(attacker.peer_id))

            # Honest traffic flows throughout.
            await honest.publish(TopicName.TX, b"ok from honest 2")
            received = []
            with trio.fail_after(5):
                while len(received) < 2:
                    received.append((await inbox.receive()).data)
            assert received == [b"ok from honest 1", b"ok from honest 2"]
            assert validator.peer_scores().get(honest.peer_id, score).score == 0
            assert inbox.statistics().current_buffer_used == 0
            nursery.cancel_scope.cancel()


async def test_penalise_from_the_node_bans_and_is_not_redialled(
    node_factory: Callable[..., P2PNode],
) -> None:
    with trio.fail_after(30):
        seed = node_factory("seed")
        async with trio.open_nursery() as nursery:
            address = await nursery.start(seed.run)
            node = node_factory("node", bootstrap=(address,), scoring=ScoreConfig(ban_seconds=2))
            await nursery.start(node.run)
            await wait_until(lambda: node.is_connected(seed.peer_id))
            node.penalise(seed.peer_id, "bad_signature")
            assert node.peer_scores()[seed.peer_id].score == pytest.approx(-20, abs=0.01)
            for _ in range(4):
                node.penalise(seed.peer_id, "bad_signature")
            await wait_until(lambda: not node.is_connected(seed.peer_id))
            await trio.sleep(1)
            assert not node.is_connected(seed.peer_id)  # not redialled while banned
            # After the ban the bootstrap peer is dialled again.
            await wait_until(lambda: node.is_connected(seed.peer_id), timeout=10)
            assert not node.scoreboard.is_banned(seed.peer_id)
            nursery.cancel_scope.cancel()
