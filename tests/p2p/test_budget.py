"""Per-peer gossip budgets (``p2p.budget``): token buckets, penalties, a bounded table."""

from __future__ import annotations

import pytest

from p2p.budget import Admission, GossipBudgets, TopicBudget
from p2p.errors import ConfigError


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_messages_and_bytes_are_bounded_per_peer_and_topic() -> None:
    clock = FakeClock()
    budgets = GossipBudgets(clock)
    budgets.set_topic("t", TopicBudget(10, 1000, burst_seconds=2), max_size=100)
    # 20 messages deep (10/s for 2 s), 2000 bytes deep.
    assert [budgets.admit("a", "t", 10) for _ in range(20)] == [Admission.ADMIT] * 20
    # Over budget: dropped; penalised once a further second's budget (10) was dropped
    # within one second, i.e. at twice the rate, and only once in that second.
    over = [budgets.admit("a", "t", 10) for _ in range(12)]
    assert over == [Admission.DROP] * 9 + [Admission.DROP_AND_PENALISE] + [Admission.DROP] * 2
    assert budgets.admit("b", "t", 10) is Admission.ADMIT  # other peers are unaffected
    assert budgets.admit("a", "other", 10) is Admission.ADMIT  # unbudgeted topic
    clock.now += 0.5  # 5 messages and 500 bytes come back
    assert [budgets.admit("a", "t", 100) for _ in range(5)] == [Admission.ADMIT] * 5
    assert budgets.admit("a", "t", 1) is Admission.DROP
    clock.now += 1.0
    assert budgets.admit("a", "t", 1) is Admission.ADMIT
    # Bytes run out before messages do.
    budgets.set_topic("big", TopicBudget(100, 1000, burst_seconds=1), max_size=400)
    assert [budgets.admit("a", "big", 400) for _ in range(3)] == [Admission.ADMIT] * 2 + [
        Admission.DROP
    ]
    assert budgets.dropped == 14


def test_a_full_bucket_always_takes_the_largest_message() -> None:
    budgets = GossipBudgets(FakeClock())
    budgets.set_topic("t", TopicBudget(10, 100), max_size=1000)  # 400 B/4 s < one message
    assert budgets.admit("a", "t", 1000) is Admission.ADMIT
    assert budgets.admit("a", "t", 1000) is Admission.ADMIT
    assert budgets.admit("a", "t", 1000) is not Admission.ADMIT


def test_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("p2p.budget.MAX_TRACKED_BUCKETS", 50)
    budgets = GossipBudgets(FakeClock())
    budgets.set_topic("t", TopicBudget(1, 1000), max_size=10)
    for i in range(500):
        budgets.admit(f"peer-{i}", "t", 1)
    assert len(budgets._buckets) <= 50


def test_budgets_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        TopicBudget(0, 100)
    with pytest.raises(ConfigError):
        TopicBudget(10, 100, burst_seconds=0.5)


async def test_a_flooding_peer_is_cut_off_unchecked_and_banned(node_factory) -> None:  # type: ignore[no-untyped-def]
    """Real hosts: beyond its budget a peer's messages never reach the validator, and
    staying over it for a few seconds bans it; another peer's messages still flow."""
    import trio

    from p2p.topics import TopicName
    from tests.p2p.conftest import accept_all, meshed, wait_until

    seen: list[bytes] = []

    def record(peer_id: str, data: bytes) -> bool:
        seen.append(data)
        return True

    with trio.fail_after(40):
        victim = node_factory("victim")
        inbox = victim.register_topic(TopicName.BLOCK, record, budget=TopicBudget(20, 10_000))
        async with trio.open_nursery() as nursery:
            address = await nursery.start(victim.run)
            flooder = node_factory("flooder", bootstrap=(address,))
            honest = node_factory("honest", bootstrap=(address,))
            for node in (flooder, honest):
                node.register_topic(TopicName.BLOCK, accept_all)
                await nursery.start(node.run)
                await wait_until(lambda n=node: meshed(n, victim, TopicName.BLOCK))
            sent = 0
            started = trio.current_time()
            while not victim.scoreboard.is_banned(flooder.peer_id) and sent < 20_000:
                await flooder.publish(TopicName.BLOCK, b"flood %d" % sent)
                sent += 1
                if sent % 50 == 0:
                    await trio.sleep(0.05)  # ~1000/s: 50 times the budget
            assert victim.scoreboard.is_banned(flooder.peer_id)
            elapsed = trio.current_time() - started
            flood_checked = sum(1 for data in seen if data.startswith(b"flood"))
            # 80 in the bucket, then 20/s until the ban (a few seconds over budget).
            assert flood_checked <= 80 + 20 * elapsed + 20 < sent
            assert victim.stats()["topics"][TopicName.BLOCK].over_budget > 0
            penalties = victim.peer_scores()[flooder.peer_id].penalties
            assert set(penalties) == {"over_budget"} and penalties["over_budget"] >= 4
            await honest.publish(TopicName.BLOCK, b"honest")
            with trio.fail_after(5):
                while True:
                    message = await inbox.receive()
                    if message.data == b"honest":
                        break
            assert not victim.scoreboard.is_banned(honest.peer_id)
            nursery.cancel_scope.cancel()


def test_a_message_for_more_than_one_topic_is_refused_at_the_gate(node_factory) -> None:  # type: ignore[no-untyped-def]
    """pubsub validates a message once per topic it names and the budget counts one
    topic: a second topic ID (even the same one twice) would slip past the budget and
    the size limit. Our publishes name exactly one topic, so such a message is
    malformed and bans its forwarder."""
    from libp2p.crypto.secp256k1 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.pubsub.pb import rpc_pb2

    from p2p.topics import TopicName
    from tests.p2p.conftest import accept_all

    victim = node_factory("victim")
    victim.register_topic(TopicName.BLOCK, accept_all, budget=TopicBudget(1, 10_000))
    tid = victim.gossip.topics[TopicName.BLOCK].topic_id
    peer = ID.from_pubkey(create_new_key_pair().public_key)
    assert victim.gossip.admit(peer, rpc_pb2.Message(data=b"one", topicIDs=[tid]))
    doubled = rpc_pb2.Message(data=b"x" * 100_000, topicIDs=[tid, tid])
    assert not victim.gossip.admit(peer, doubled)
    assert victim.scoreboard.is_banned(peer.to_base58())
