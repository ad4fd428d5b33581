"""Gossip between real libp2p hosts on 127.0.0.1 (several hosts in one trio run)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.utils import encode_varint_prefixed

from p2p.batch import decode_batch
from p2p.errors import MessageTooLarge, NotRunning, UnknownTopic
from p2p.host import P2PNode, Verdict
from p2p.topics import MIB, TopicName
from tests.p2p.conftest import accept_all, meshed, wait_until

ALL_TOPICS = [TopicName.TX, TopicName.ATTESTATION, TopicName.CONSENSUS, TopicName.BLOCK]


class Recorder:
    """A validator that records what it saw and rejects data starting with b'bad'."""

    def __init__(self) -> None:
        self.seen: Counter[bytes] = Counter()

    def __call__(self, peer_id: str, data: bytes) -> Verdict:
        self.seen[data[:16]] += 1
        return Verdict.REJECT if data.startswith(b"bad") else Verdict.ACCEPT


class AsyncRecorder(Recorder):
    async def __call__(self, peer_id: str, data: bytes) -> Verdict:  # type: ignore[override]
        await trio.sleep(0)
        return super().__call__(peer_id, data)


async def receive(inbox: trio.MemoryReceiveChannel, timeout: float = 5.0):  # type: ignore[type-arg]
    with trio.fail_after(timeout):
        return await inbox.receive()


async def test_line_of_three_relays_every_topic_and_drops_rejected(
    node_factory: Callable[..., P2PNode],
) -> None:
    """a - b - c: b validates and relays; what b rejects never reaches c."""
    with trio.fail_after(40):
        b = node_factory("b")
        # Half the topics get a sync validator, half an async one.
        validators = {
            name: Recorder() if i % 2 else AsyncRecorder() for i, name in enumerate(ALL_TOPICS)
        }
        for name in ALL_TOPICS:
            b.register_topic(name, validators[name])
        async with trio.open_nursery() as nursery:
            b_addr = await nursery.start(b.run)
            a = node_factory("a", bootstrap=(b_addr,))
            c = node_factory("c", bootstrap=(b_addr,))
            for name in ALL_TOPICS:
                a.register_topic(name, accept_all)
            inboxes = {name: c.register_topic(name, accept_all) for name in ALL_TOPICS}
            await nursery.start(a.run)
            await nursery.start(c.run)
            for name in ALL_TOPICS:
                await wait_until(
                    lambda n=name: meshed(a, b, n) and meshed(b, c, n) and meshed(b, a, n)
                )
            assert not c.is_connected(a.peer_id)  # only b can carry a's messages to c

            for name in ALL_TOPICS:
                await a.publish(name, b"bad " + name.encode())
                await a.publish(name, b"good " + name.encode())
                message = await receive(inboxes[name])
                assert message.data == b"good " + name.encode()
                assert message.origin == a.peer_id and message.forwarder == b.peer_id
                assert validators[name].seen[b"bad " + name.encode()] == 1

            # A consensus proposal near the topic limit crosses both hops whole.
            proposal = b"P" * (3 * MIB // 2)
            await a.publish(TopicName.CONSENSUS, proposal)
            assert (await receive(inboxes[TopicName.CONSENSUS])).data == proposal

            # Attestations travel batched.
            for i in range(300):
                assert a.attestations.add(b"att-%03d" % i)
            items: list[bytes] = []
            while len(items) < 300:
                items += decode_batch((await receive(inboxes[TopicName.ATTESTATION])).data)
            assert items == [b"att-%03d" % i for i in range(300)]
            assert a.attestations.stats.batches_published < 10

            await trio.sleep(0.3)  # nothing rejected arrives late either
            for name in ALL_TOPICS:
                assert inboxes[name].statistics().current_buffer_used == 0
                assert b.stats()["topics"][name].rejected == {"invalid_message": 1}
            assert b.peer_scores()[a.peer_id].penalties == {"invalid_message": 4}
            nursery.cancel_scope.cancel()


async def test_validator_exceptions_reject_without_crashing(
    node_factory: Callable[..., P2PNode],
) -> None:
    def explode(peer_id: str, data: bytes) -> bool:
        if data == b"boom":
            raise RuntimeError("validator bug")
        return True

    async def explode_async(peer_id: str, data: bytes) -> bool:
        return explode(peer_id, data)

    def not_a_verdict(peer_id: str, data: bytes) -> object:
        return "yes"

    with trio.fail_after(20):
        receiver = node_factory("receiver")
        inboxes = {
            TopicName.TX: receiver.register_topic(TopicName.TX, explode),
            TopicName.CONSENSUS: receiver.register_topic(TopicName.CONSENSUS, explode_async),
            TopicName.BLOCK: receiver.register_topic(TopicName.BLOCK, not_a_verdict),  # type: ignore[arg-type]
        }
        async with trio.open_nursery() as nursery:
            address = await nursery.start(receiver.run)
            sender = node_factory("sender", bootstrap=(address,))
            for name in inboxes:
                sender.register_topic(name, accept_all)
            await nursery.start(sender.run)
            for name in inboxes:
                await wait_until(lambda n=name: meshed(sender, receiver, n))
            for name in (TopicName.TX, TopicName.CONSENSUS):
                await sender.publish(name, b"boom")
                await sender.publish(name, b"fine")
                assert (await receive(inboxes[name])).data == b"fine"
                assert receiver.stats()["topics"][name].validator_errors == 1
            await sender.publish(TopicName.BLOCK, b"anything")
            await wait_until(
                lambda: receiver.stats()["topics"][TopicName.BLOCK].validator_errors == 1
            )
            # Our validator bugs are not the peer's fault.
            assert receiver.scoreboard.score(sender.peer_id) == 0
            nursery.cancel_scope.cancel()


async def test_full_inbox_drops_are_counted(node_factory: Callable[..., P2PNode]) -> None:
    with trio.fail_after(20):
        receiver = node_factory("receiver", inbox_size=3)
        inbox = receiver.register_topic(TopicName.TX, accept_all)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(receiver.run)
            sender = node_factory("sender", bootstrap=(address,))
            sender.register_topic(TopicName.TX, accept_all)
            await nursery.start(sender.run)
            await wait_until(lambda: meshed(sender, receiver, TopicName.TX))
            for i in range(10):
                await sender.publish(TopicName.TX, b"tx %d" % i)
            stats = receiver.stats()["topics"][TopicName.TX]
            await wait_until(lambda: stats.delivered + stats.dropped_inbox_full == 10)
            assert (stats.delivered, stats.dropped_inbox_full) == (3, 7)
            assert [(await inbox.receive()).data for _ in range(3)] == [b"tx 0", b"tx 1", b"tx 2"]
            nursery.cancel_scope.cancel()


async def test_publish_errors(node_factory: Callable[..., P2PNode]) -> None:
    node = node_factory("solo")
    node.register_topic(TopicName.BLOCK, accept_all)
    with pytest.raises(NotRunning):
        await node.publish(TopicName.BLOCK, b"x")
    with pytest.raises(MessageTooLarge):
        await node.publish(TopicName.BLOCK, b"x" * 4097)
    with pytest.raises(UnknownTopic):
        await node.publish(TopicName.TX, b"x")


async def test_non_protobuf_pubsub_frames_do_not_crash_the_node(
    node_factory: Callable[..., P2PNode],
) -> None:
    """The library lets a protobuf DecodeError escape its pubsub stream handler."""
    with trio.fail_after(30):
        target = node_factory("target")
        inbox = target.register_topic(TopicName.TX, accept_all)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(target.run)
            vandal = node_factory("vandal", bootstrap=(address,))
            vandal.register_topic(TopicName.TX, accept_all)
            await nursery.start(vandal.run)
            await wait_until(lambda: vandal.is_connected(target.peer_id))
            for _ in range(3):
                stream = await vandal.host.new_stream(target.host.get_id(), [PROTOCOL_ID_V11])
                await stream.write(encode_varint_prefixed(b"\xff\xff not protobuf"))
                await stream.close()
            honest = node_factory("honest", bootstrap=(address,))
            honest.register_topic(TopicName.TX, accept_all)
            await nursery.start(honest.run)
            await wait_until(lambda: meshed(honest, target, TopicName.TX))
            await honest.publish(TopicName.TX, b"still here")
            assert (await receive(inbox)).data == b"still here"
            assert target.stats()["malformed_pubsub_streams"] == 3
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def mesh_of_three(
    node_factory: Callable[..., P2PNode], validator: Callable[..., Any]
) -> AsyncIterator[tuple[P2PNode, P2PNode, P2PNode, trio.MemoryReceiveChannel]]:  # type: ignore[type-arg]
    """a, b and c all connected and meshed on the TX topic, a and b accepting everything,
    c checking with ``validator``: yields (a, b, c, c's inbox). Whatever a publishes reaches
    c twice, from a and relayed by b, milliseconds apart."""
    a = node_factory("a")
    a.register_topic(TopicName.TX, accept_all)
    async with trio.open_nursery() as nursery:
        a_addr = await nursery.start(a.run)
        b = node_factory("b", bootstrap=(a_addr,))
        b.register_topic(TopicName.TX, accept_all)
        b_addr = await nursery.start(b.run)
        c = node_factory("c", bootstrap=(a_addr, b_addr))
        inbox = c.register_topic(TopicName.TX, validator)
        await nursery.start(c.run)
        pairs = [(a, b), (b, a), (a, c), (c, a), (b, c), (c, b)]
        await wait_until(lambda: all(meshed(x, y, TopicName.TX) for x, y in pairs))
        yield a, b, c, inbox
        nursery.cancel_scope.cancel()


async def test_a_copy_arriving_during_validation_is_not_validated_again(
    node_factory: Callable[..., P2PNode],
) -> None:
    """c's validator is slow, so b's relayed copy of a's message reaches c while c still
    validates a's copy. c validates the message once, delivers it once, and rejects it
    once (the library validated, delivered and relayed every copy that came during the
    first's validation: docs/p2p.md, trap 25)."""
    calls: Counter[bytes] = Counter()

    async def slow(peer_id: str, data: bytes) -> Verdict:
        calls[data] += 1
        await trio.sleep(0.5)
        return Verdict.REJECT if data.startswith(b"bad") else Verdict.ACCEPT

    with trio.fail_after(40):
        async with mesh_of_three(node_factory, slow) as (a, b, c, inbox):
            await a.publish(TopicName.TX, b"good one")
            assert (await receive(inbox)).data == b"good one"
            await a.publish(TopicName.TX, b"bad one")
            await wait_until(lambda: any(score.penalties.get("invalid_message")
                                         for score in c.peer_scores().values()))
            await trio.sleep(0.8)  # any second validation would have ended by now
            assert calls == {b"good one": 1, b"bad one": 1}
            assert inbox.statistics().current_buffer_used == 0  # delivered once
            # the copy validated is charged; the other met the cached verdict and is not,
            # as for a copy after it (p2p.scoring.RouterScorer: an honest relay may carry
            # what the origin forged)
            penalties = sorted(str(c.peer_scores()[p.peer_id].penalties) for p in (a, b))
            assert penalties == ["{'invalid_message': 1}", "{}"]


async def test_a_refusal_for_the_forwarders_sake_lets_another_copy_through(
    node_factory: Callable[..., P2PNode],
) -> None:
    """c refuses the first copy of a's message for its forwarder's sake
    (IGNORE_FORWARDER: its quota spent) while it validates slowly; the other copy,
    which waited for it, is then validated on its own and delivered (a plain IGNORE
    is cached for the message id, this one is not)."""
    calls: list[str] = []

    async def picky(peer_id: str, data: bytes) -> Verdict:
        calls.append(peer_id)
        await trio.sleep(0.3)
        return Verdict.IGNORE_FORWARDER if len(calls) == 1 else Verdict.ACCEPT

    with trio.fail_after(40):
        async with mesh_of_three(node_factory, picky) as (a, b, c, inbox):
            await a.publish(TopicName.TX, b"one")
            message = await receive(inbox)
            assert message.data == b"one"
            # one copy at a time, each once: the first refused, the second delivered
            assert sorted(calls) == sorted([a.peer_id, b.peer_id])
            assert message.forwarder == calls[1]
            assert not any(score.penalties for score in c.peer_scores().values())


async def test_a_peer_repeating_a_message_while_it_is_validated_costs_one_validation(
    node_factory: Callable[..., P2PNode],
) -> None:
    """A hostile peer writes one signed message 200 times in one pubsub frame, straight
    on the stream, while the target still validates the first copy: the copies do not
    pile up as tasks waiting for it (each after the first from that peer is dropped at
    once, before the gate), and the message is validated and delivered once."""
    from libp2p.pubsub.pb import rpc_pb2
    from libp2p.pubsub.pubsub import PUBSUB_SIGNING_PREFIX

    from p2p.topics import topic_id
    from tests.p2p.conftest import CHAIN_ID

    calls: list[bytes] = []

    async def slow(peer_id: str, data: bytes) -> Verdict:
        calls.append(data)
        await trio.sleep(0.5)
        return Verdict.ACCEPT

    with trio.fail_after(40):
        target = node_factory("target")
        inbox = target.register_topic(TopicName.TX, slow)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(target.run)
            repeater = node_factory("repeater", bootstrap=(address,))
            repeater.register_topic(TopicName.TX, accept_all)
            await nursery.start(repeater.run)
            await wait_until(lambda: meshed(target, repeater, TopicName.TX))
            gated: list[bytes] = []
            gate = target.gossip.pubsub.gate
            assert gate is not None
            target.gossip.pubsub.gate = lambda peer, m: gated.append(m.data) or gate(peer, m)
            pubsub = repeater.gossip.pubsub
            msg = rpc_pb2.Message(data=b"once", topicIDs=[topic_id(CHAIN_ID, TopicName.TX)],
                                  from_id=pubsub.my_id.to_bytes(), seqno=pubsub._next_seqno())
            msg.signature = pubsub.sign_key.sign(
                PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
            msg.key = repeater.host.get_public_key().serialize()
            stream = await repeater.host.new_stream(target.host.get_id(), [PROTOCOL_ID_V11])
            await stream.write(encode_varint_prefixed(
                rpc_pb2.RPC(publish=[msg] * 200).SerializeToString()))
            await wait_until(lambda: bool(calls))
            flights = target.gossip.pubsub._flights
            assert len(flights) == 1  # one message in flight, one peer: no waiters
            assert [len(peers) for _, peers in flights.values()] == [1]
            assert (await receive(inbox)).data == b"once"
            await trio.sleep(0.3)
            assert calls == [b"once"] and inbox.statistics().current_buffer_used == 0
            assert gated == [b"once"]  # the repeats never reached the gate, nor waited
            assert not flights
            await stream.close()
            nursery.cancel_scope.cancel()
