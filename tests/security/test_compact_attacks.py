"""A proposer that lies about its compact proposal, against real node processes
(docs/network.md, "Compact proposals").

Three validators of a four-validator devnet run as real ``motus node start`` processes
on loopback (3 of 4 powers: a quorum); the fourth validator's key is the test's, used
by a ``P2PNode`` in the test process (its own peer id) that waits for a round it
proposes and then publishes a correctly signed compact proposal whose block nobody can
rebuild, serving its parts over ``/motus/proposal/1`` as a liar would:

1. ``unserved``: ids it will not serve (it answers ``unknown_proposal``);
2. ``wrong_ids``: it serves the right bytes for its ids, but they do not hash to its
   header's attestation root (and it does not serve the whole block);
3. ``bad_parts``: it serves bytes that are not the attestations asked for, and garbage
   for the whole block.

Each honest node penalises the liar for what it did (``compact_unserved``,
``compact_wrong_ids``, ``compact_bad_part``) and, by the third, bans it; no honest
peer is banned; the round moves on and the three nodes keep one chain.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio
from eth_hash.auto import keccak

from consensus.crypto import sign_digest
from consensus.types import EMPTY_COMMIT, Proposal, Validator, ValidatorSet, proposal_digest
from node.block import Block
from node.compact import encode_compact
from node.keys import load_validator_key
from p2p.topics import MIB
from tests.devnet import (
    CHAIN_ID,
    Devnet,
    accept_all,
    assert_one_chain,
    head,
    in_thread,
    p2p_peer,
    status,
    wait_for,
    wait_heads,
    wait_meshed,
)
from tests.procs import rpc
from vm.block import ZERO_HASH, Header

pytestmark = [pytest.mark.slow]


def penalties(url: str) -> dict[str, float]:
    """``motus_p2p_penalties_total`` by reason, from a node's /metrics."""
    import urllib.request

    out = {}
    with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("motus_p2p_penalties_total{"):
                name, value = line.rsplit(" ", 1)
                out[name.split('"')[1]] = float(value)
    return out


def next_turn(url: str, address: bytes) -> tuple[int, int]:
    """(height, round) the node is in now, once it is a round ``address`` proposes."""
    while True:
        consensus = rpc(url, "motus_nodeStatus", timeout=5)["consensus"]
        height, round_ = consensus["height"], max(consensus["round"], 0)
        doc = rpc(url, "motus_getValidators", [height], timeout=5) if height > 0 else None
        if doc is not None:
            validators = ValidatorSet(
                [Validator(bytes.fromhex(v["address"][2:]), v["power"]) for v in doc["validators"]],
                {bytes.fromhex(v["address"][2:]): v["proposerPriority"] for v in doc["validators"]})
            if validators.proposer_for_round(round_).address == address:
                return height, round_
        time.sleep(0.05)


def lying_block(height: int, proposer: bytes, attestations: list[bytes]) -> Block:
    """A block whose header commits to another attestation root than its attestations'."""
    header = Header(CHAIN_ID, height, int(time.time() * 1000), b"\x01" * 32, proposer,
                    ZERO_HASH, ZERO_HASH, ZERO_HASH, keccak(b"not these attestations"),
                    b"\0" * 256, 30_000_000, 0, 7, ZERO_HASH, ZERO_HASH, ZERO_HASH, ZERO_HASH)
    return Block(header, [], attestations, EMPTY_COMMIT, [])


ATTEMPTS = 4
EXPECTED = {"unserved": "compact_unserved", "wrong_ids": "compact_wrong_ids",
            "bad_parts": "compact_bad_part"}


def test_lying_proposer_is_scored_banned_and_the_rounds_move_on(tmp_path: Path) -> None:
    net = Devnet(tmp_path / "net")
    honest, liar_member = net.nodes[:3], net.members[3]
    try:
        for node in honest:
            node.start(wait=60)
        wait_heads(honest, 2, timeout=60)
        key = load_validator_key(liar_member.home.validator_key)
        trio.run(attack, net, key, liar_member.address, tmp_path)
        # the rounds the liar proposed moved on: blocks keep coming, on one chain
        top = min(head(n) for n in honest)
        wait_heads(honest, top + 3, timeout=60)
        assert_one_chain(honest)
        for node in honest:  # the liar, and no honest peer
            assert status(node)["bannedPeers"] == 1
    finally:
        net.close()


async def attack(net: Devnet, key: bytes, address: bytes, tmp_path: Path) -> None:
    honest_members = net.members[:3]
    liar = p2p_peer(tmp_path, "liar", net.bootstrap[:3])
    liar.register_topic("consensus", accept_all, max_size=2 * MIB)
    mode = {"kind": ""}
    served: dict[bytes, list[bytes]] = {}

    async def serve(peer: str, block_hash: bytes, indices: list[int]) -> list[bytes] | None:
        kind = mode["kind"]
        if kind == "unserved" or block_hash not in served:
            return None
        if kind == "wrong_ids":
            return [served[block_hash][i] for i in indices] if indices else None
        return [os.urandom(148) for _ in indices] if indices else [os.urandom(300)]

    liar.set_proposal_handler(serve)
    urls = [n.url for n in net.nodes[:3]]
    async with trio.open_nursery() as nursery:
        await nursery.start(liar.run)
        await wait_meshed(liar, honest_members, "consensus", 30)
        for kind, reason in EXPECTED.items():
            mode["kind"] = kind
            before = [await in_thread(penalties, url) for url in urls]

            def scored(before: list[dict[str, float]] = before, reason: str = reason) -> bool:
                return all(penalties(url).get(reason, 0) > b.get(reason, 0)
                           for url, b in zip(urls, before, strict=True))

            # A node a height ahead or behind at that moment ignores the proposal: lie
            # again at the liar's next turn, a few times at most.
            for _attempt in range(ATTEMPTS):
                height, round_ = await in_thread(next_turn, urls[0], address)
                block = lying_block(height, address, [os.urandom(148) for _ in range(20)])
                served[block.hash] = list(block.attestations)
                digest = proposal_digest(CHAIN_ID, height, round_, -1, block.hash)
                proposal = Proposal(height, round_, 0, block.hash, address,
                                    sign_digest(key, digest))
                await liar.publish("consensus", encode_compact(proposal, block))
                with trio.move_on_after(8):
                    while not await in_thread(scored):
                        await trio.sleep(0.2)
                if await in_thread(scored):
                    break
            else:
                raise AssertionError(f"not every honest node penalised {kind}")
        # the third lie costs the liar its place: every honest node bans it
        liar_id = liar.peer_id
        await in_thread(wait_for, lambda: all(f"banning peer {liar_id}" in n.log_path.read_text()
                                              for n in net.nodes[:3]), 30, "the liar banned")
        nursery.cancel_scope.cancel()
    for node in net.nodes[:3]:
        for line in node.log_path.read_text().splitlines():
            if "banning peer" in line:
                assert liar_id in line, f"an honest peer was banned: {line}"
