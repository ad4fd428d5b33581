"""/motus/status/1 and /motus/blocks/1 between real hosts: answers, bounds, abuse."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.peer.id import ID

from p2p import reqresp
from p2p.errors import BadRequest, PeerBanned, RemoteError, WrongChain
from p2p.host import P2PNode
from p2p.reqresp import ChainStatus, Head
from tests.p2p.conftest import CHAIN_ID, wait_until

HEAD_HASH = bytes(range(32))


class Chain:
    """A fake node: blocks 1..height, each ``block_size`` bytes, tagged with its height."""

    def __init__(self, height: int, block_size: int = 64) -> None:
        self.height = height
        self.block_size = block_size
        self.requests: list[tuple[str, int, int]] = []

    async def status(self, peer_id: str) -> Head:
        return Head(self.height, HEAD_HASH)

    async def blocks(self, peer_id: str, start: int, end: int) -> list[bytes]:
        self.requests.append((peer_id, start, end))
        top = min(end, self.height)
        return [h.to_bytes(8, "big").ljust(self.block_size, b"b") for h in range(start, top + 1)]


@asynccontextmanager
async def serving_pair(
    node_factory: Callable[..., P2PNode], chain: Chain | None, **client_overrides: object
) -> AsyncIterator[tuple[P2PNode, P2PNode]]:
    """A server (with ``chain``'s handlers, if any) and a client connected to it."""
    server = node_factory("server")
    if chain is not None:
        server.set_status_handler(chain.status)
        server.set_blocks_handler(chain.blocks)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(server.run)
        client = node_factory("client", bootstrap=(address,), **client_overrides)
        await nursery.start(client.run)
        await wait_until(lambda: client.is_connected(server.peer_id))
        yield server, client
        nursery.cancel_scope.cancel()


async def test_status_and_bounded_block_ranges(node_factory: Callable[..., P2PNode]) -> None:
    chain = Chain(height=300)
    with trio.fail_after(30):
        async with serving_pair(node_factory, chain) as (server, client):
            status = await client.request_status(server.peer_id)
            assert status == ChainStatus(CHAIN_ID, 300, HEAD_HASH)

            blocks = await client.request_blocks(server.peer_id, 5, 7)
            assert [int.from_bytes(b[:8], "big") for b in blocks] == [5, 6, 7]
            # At most 128 per response, however many are asked for.
            blocks = await client.request_blocks(server.peer_id, 1, 1000)
            assert len(blocks) == 128 and int.from_bytes(blocks[-1][:8], "big") == 128
            assert chain.requests[-1] == (client.peer_id, 1, 128)
            # Beyond the head: what exists, then nothing.
            assert len(await client.request_blocks(server.peer_id, 290, 400)) == 11
            assert await client.request_blocks(server.peer_id, 301, 310) == []
            with pytest.raises(BadRequest):
                await client.request_blocks(server.peer_id, 7, 5)


@pytest.mark.slow
async def test_block_responses_stop_at_the_byte_budget(
    node_factory: Callable[..., P2PNode],
) -> None:
    chain = Chain(height=200, block_size=100 * 1024)
    with trio.fail_after(30):
        async with serving_pair(node_factory, chain) as (server, client):
            blocks = await client.request_blocks(server.peer_id, 1, 200)
            assert len(blocks) == 81  # 8 MiB / (100 KiB + 3 bytes of framing)
            assert sum(len(b) for b in blocks) <= reqresp.MAX_BLOCKS_RESPONSE_BYTES
            blocks = await client.request_blocks(server.peer_id, 82, 200)
            assert int.from_bytes(blocks[0][:8], "big") == 82


async def test_missing_handlers_and_wrong_chain(node_factory: Callable[..., P2PNode]) -> None:
    with trio.fail_after(30):
        async with serving_pair(node_factory, None) as (server, client):
            with pytest.raises(RemoteError) as raised:
                await client.request_status(server.peer_id)
            assert raised.value.remote_code == "unavailable"
        async with serving_pair(node_factory, Chain(1), chain_id=CHAIN_ID + 1) as (server, client):
            with pytest.raises(WrongChain):
                await client.request_status(server.peer_id)
            # The asking side bans the peer on another chain and hangs up.
            assert client.scoreboard.is_banned(server.peer_id)
            await wait_until(lambda: not client.is_connected(server.peer_id))
            with pytest.raises(PeerBanned):
                await client.request_status(server.peer_id)


async def test_malformed_and_oversized_requests_cost_the_requester(
    node_factory: Callable[..., P2PNode],
) -> None:
    chain = Chain(height=10)
    with trio.fail_after(30):
        async with serving_pair(node_factory, chain) as (server, client):
            server_id = ID.from_base58(server.peer_id)

            async def raw_exchange(protocol: str, frame_body: bytes) -> bytes | None:
                try:
                    stream = await client.host.new_stream(server_id, [protocol])  # type: ignore[list-item]
                except Exception:
                    return None  # the server has hung up on us
                try:
                    await reqresp.write_frame(stream, frame_body)
                    return await reqresp.read_frame(stream, 4096)
                except Exception:
                    return None  # the server reset the stream
                finally:
                    await stream.reset()

            answer = await raw_exchange(reqresp.BLOCKS_PROTOCOL, b"\xc1garbage")
            assert answer is not None
            with pytest.raises(RemoteError) as raised:
                reqresp.decode_blocks_response(answer, 1)
            assert raised.value.remote_code == "bad_request"
            inverted = reqresp.encode_blocks_request(9, 2)
            assert await raw_exchange(reqresp.BLOCKS_PROTOCOL, inverted) is not None
            assert await raw_exchange(reqresp.STATUS_PROTOCOL, b"x" * 10_000) is None
            penalties = server.peer_scores()[client.peer_id].penalties
            assert penalties == {"malformed_request": 2, "oversize_request": 1}
            assert chain.requests == []  # the node's handler never saw them
            # Two more (-115 in all) and the client is banned and cut off.
            for _ in range(2):
                await raw_exchange(reqresp.STATUS_PROTOCOL, b"x" * 10_000)
            await wait_until(lambda: not server.is_connected(client.peer_id))
            assert server.scoreboard.is_banned(client.peer_id)


async def test_proposal_parts_by_index_whole_block_unknown_and_bad_requests(
    node_factory: Callable[..., P2PNode],
) -> None:
    """/motus/proposal/1: the attestations at the asked positions, in order; the whole
    block for no positions; ``unknown_proposal`` for a proposal the server does not hold;
    a malformed request (repeated positions) is refused and scored."""
    block_hash = bytes(range(32))
    parts = [i.to_bytes(2, "big") * 75 for i in range(3000)]

    async def proposal(peer_id: str, wanted: bytes, indices: list[int]) -> list[bytes] | None:
        if wanted != block_hash:
            return None
        if not indices:
            return [b"the whole block"]
        if max(indices) >= len(parts):
            raise BadRequest("out of range")
        return [parts[i] for i in indices]

    with trio.fail_after(30):
        async with serving_pair(node_factory, None) as (server, client):
            server.set_proposal_handler(proposal)
            wanted = list(range(0, 3000, 2))  # 1,500 positions: a request of a few KiB
            assert await client.request_proposal(server.peer_id, block_hash, wanted) == [
                parts[i] for i in wanted]
            assert await client.request_proposal(server.peer_id, block_hash, []) == [
                b"the whole block"]
            with pytest.raises(RemoteError) as unknown:
                await client.request_proposal(server.peer_id, bytes(32), [1])
            assert unknown.value.remote_code == reqresp.ERR_UNKNOWN_PROPOSAL
            with pytest.raises(RemoteError) as bad:
                await client.request_proposal(server.peer_id, block_hash, [1, 1])
            assert bad.value.remote_code == reqresp.ERR_BAD_REQUEST
            assert server.peer_scores()[client.peer_id].penalties == {"malformed_request": 1}
