"""The trio runner: four validators (and a follower) wired by an in-memory bus."""

from __future__ import annotations

import trio

from consensus.effects import InvalidMessage
from consensus.machine import ConsensusMachine
from consensus.runner import ConsensusRunner, decode_message, encode_message
from consensus.types import PREVOTE, Commit, ValidatorSet, Vote
from consensus.wal import Signer, SigningGuard
from tests.consensus.helpers import ADDRESSES, CHAIN_ID, KEYS, FakeApp, h, validator_set


class Node:
    def __init__(self, index: int, validators: ValidatorSet, bus: list[Node],
                 signer: Signer | None) -> None:
        self.index = index
        self.bus = bus
        self.decided: list[tuple[int, bytes, Commit]] = []
        self.sets: dict[int, ValidatorSet] = {1: validators}
        self.invalid: list[tuple[object, InvalidMessage]] = []
        self.sent: list[bytes] = []
        machine = ConsensusMachine(CHAIN_ID, FakeApp(), signer)
        self.runner = ConsensusRunner(
            machine, 1, validators, broadcast=self.broadcast, on_decide=self.on_decide,
            next_validators=self.next_validators,
            on_invalid=lambda peer, effect: self.invalid.append((peer, effect)),
        )

    async def broadcast(self, data: bytes) -> None:
        self.sent.append(data)
        for node in self.bus:
            if node is not self:
                await node.runner.submit(data, peer=self.index)

    async def on_decide(self, height: int, value: bytes, commit: Commit) -> None:
        self.sets[height].verify_commit(CHAIN_ID, height, h(value), commit)
        self.decided.append((height, value, commit))
        await trio.sleep(0.05)  # committing takes a while

    def next_validators(self, height: int) -> ValidatorSet:
        self.sets[height] = self.sets[height - 1].next_for_height()
        return self.sets[height]


async def _run_until(nodes: list[Node], height: int) -> None:
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.runner.run)
        while min(len(n.decided) for n in nodes) < height:
            await trio.sleep(0.1)
        nursery.cancel_scope.cancel()


async def test_four_runners_and_a_follower_decide_the_same_heights(autojump_clock) -> None:
    validators = validator_set()
    bus: list[Node] = []
    for i in range(4):
        bus.append(Node(i, validators, bus, Signer(KEYS[i], CHAIN_ID, SigningGuard())))
    follower = Node(9, validators, bus, None)
    bus.append(follower)
    start = trio.current_time()
    await _run_until(bus, 3)
    assert trio.current_time() - start < 10  # a healthy network: about a second a height
    chains = [[(height, value) for height, value, _ in n.decided[:3]] for n in bus]
    assert all(chain == chains[0] for chain in chains)
    assert [height for height, _ in chains[0]] == [1, 2, 3]
    assert follower.sent == [] and all(n.invalid == [] for n in bus)
    # everything on the wire is a well-formed consensus message
    assert all(encode_message(decode_message(d)) == d for n in bus for d in n.sent)


async def test_bad_bytes_are_reported_with_the_peer(autojump_clock) -> None:
    node = Node(0, validator_set(), [], Signer.in_memory(KEYS[0], CHAIN_ID))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.runner.run)
        assert not await node.runner.submit(b"\x01\x02garbage", peer="peer-7")
        nursery.cancel_scope.cancel()
    [(peer, effect)] = node.invalid
    assert peer == "peer-7" and effect.code == "malformed"
    assert node.runner.stats["invalid_malformed"] == 1


async def test_a_full_inbox_drops_instead_of_blocking() -> None:
    node = Node(0, validator_set(), [], Signer.in_memory(KEYS[0], CHAIN_ID))
    runner = ConsensusRunner(node.runner.machine, 1, validator_set(), broadcast=node.broadcast,
                             on_decide=node.on_decide, inbox_size=1)
    vote = Vote.create(CHAIN_ID, KEYS[1], PREVOTE, 1, 0, b"", ADDRESSES[1])
    assert await runner.submit(vote)
    assert not await runner.submit(encode_message(vote))  # nothing drains it: the inbox is full
    assert runner.stats["dropped_inbox_full"] == 1


async def test_jump_to_height_after_block_sync(autojump_clock) -> None:
    node = Node(0, validator_set(), [], Signer.in_memory(KEYS[0], CHAIN_ID))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.runner.run)
        await node.runner.jump_to_height(7, validator_set())
        await node.runner.jump_to_height(5, validator_set())  # behind: ignored
        await trio.sleep(0.01)
        assert node.runner.machine.height == 7
        nursery.cancel_scope.cancel()


async def test_a_timeout_waits_for_the_messages_queued_behind_it(autojump_clock) -> None:
    """After a stall the propose timeout and the proposal sit in the inbox together: the
    proposal is handled first, so the validator prevotes for the block, not nil."""
    from consensus.effects import Step
    from consensus.runner import _Timeout
    from tests.consensus.helpers import Harness

    harness = Harness(start=False)  # for the proposer of round 0 and its signed proposal
    me = harness.others()[0] if harness.proposer_index(0) == harness.me else harness.me
    assert harness.proposer_index(0) != me
    bus: list[Node] = []
    node = Node(me, validator_set(), bus, Signer(KEYS[me], CHAIN_ID, SigningGuard()))
    value = b"valid block"
    async with trio.open_nursery() as nursery:
        await nursery.start(node.runner.run)
        # both queued while the loop was busy: the timeout first, the proposal behind it
        node.runner._send.send_nowait(_Timeout(Step.PROPOSE, 1, 0))
        assert await node.runner.submit(harness.proposal(0, value))
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    prevotes = [m for m in map(decode_message, node.sent)
                if isinstance(m, Vote) and m.type == PREVOTE and m.round == 0]
    assert [v.block_hash for v in prevotes] == [h(value)]
