"""A request on a wedged connection ends on time (docs/p2p.md, "Requests on a wedged
connection").

Seen in a four-validator bench: one validator's yamux connection to a peer wedged (its
writer blocked on a full socket, the peer no longer reading); its block sync asked that
peer for its head, py-libp2p's ``new_stream`` reset the cancelled negotiation in a
shielded scope whose write never came, and the sync loop hung for good. Here the same
state is made with the library's own locks on two real hosts: the server's connection
reader is held (it reads no frame: no negotiation answer) and, once the request is
out, the client's connection write lock is held (what its writer blocked on a full
socket holds, until the socket closes). The requests end on time (before: never),
and the host closes the wedged connection and redials.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import trio
from libp2p.peer.id import ID

from p2p import peers as peers_module
from p2p.errors import PeerUnreachable, RequestTimeout
from p2p.host import P2PNode
from p2p.reqresp import Head
from p2p.requests import ABANDON_GRACE_S, ABANDONED_LIMIT
from p2p.topics import TopicName
from tests.p2p.conftest import accept_all, meshed, wait_until

TIMEOUT_S = 1.0


def _muxed(node: P2PNode, other: P2PNode) -> object:
    conns = node.host.get_network().get_connections(ID.from_base58(other.peer_id))
    assert conns, "not connected"
    return conns[0].muxed_conn


def _socket(muxed: object) -> trio.socket.SocketType:
    """The TCP socket under a yamux connection (noise session, raw connection, trio)."""
    session = muxed.secured_conn  # type: ignore[attr-defined]
    return session.conn.read_writer.read_write_closer.stream.stream.socket  # type: ignore[no-any-return]


async def test_request_on_a_wedged_connection_ends_on_time(
    node_factory: Callable[..., P2PNode],
) -> None:
    server = node_factory("server")

    async def status(peer_id: str) -> Head:
        return Head(1, bytes(32))

    server.set_status_handler(status)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(server.run)
            client = node_factory("client", bootstrap=(address,), request_timeout=TIMEOUT_S)
            await nursery.start(client.run)
            await wait_until(lambda: client.is_connected(server.peer_id))
            assert (await client.request_status(server.peer_id)).height == 1

            wedged = _muxed(client, server)
            server_reader = _muxed(server, client).streams_lock  # type: ignore[attr-defined]
            client_writer = wedged._write_lock  # type: ignore[attr-defined]
            await server_reader.acquire()  # the server stops reading this connection

            async def wedge_writer() -> None:
                await trio.sleep(0.3)  # the request's SYN and proposal are out
                # A writer blocked on a full socket: it lets go once the socket closes.
                async with client_writer:
                    while _socket(wedged).fileno() != -1:
                        await trio.sleep(0.05)

            nursery.start_soon(wedge_writer)
            took: list[float] = []

            async def ask() -> None:
                started = time.monotonic()
                with pytest.raises(RequestTimeout):
                    await client.request_status(server.peer_id)
                took.append(time.monotonic() - started)

            async with trio.open_nursery() as asking:
                for _ in range(ABANDONED_LIMIT):
                    asking.start_soon(ask)
            # Before: no return at all (the library's shielded reset waits on the writer).
            assert len(took) == ABANDONED_LIMIT
            assert all(TIMEOUT_S <= t < TIMEOUT_S + ABANDON_GRACE_S + 1.0 for t in took)
            assert client.requests.abandoned(server.peer_id) == ABANDONED_LIMIT
            # Enough exchanges left behind for this peer: the next request fails at once.
            started = time.monotonic()
            with pytest.raises(PeerUnreachable):
                await client.request_status(server.peer_id)
            assert time.monotonic() - started < 0.1

            # The exchanges that would not end tell the host the connection is wedged:
            # it is closed at the socket (the blocked writer lets go, the exchanges end)
            # and the bootstrap redial makes a new one, which answers.
            await wait_until(lambda: client.requests.abandoned(server.peer_id) == 0)
            assert client.stats()["severed_connections"] >= 1
            await wait_until(lambda: client.is_connected(server.peer_id)
                             and _muxed(client, server) is not wedged)
            assert (await client.request_status(server.peer_id)).height == 1
            server_reader.release()
            nursery.cancel_scope.cancel()


async def test_a_stuck_gossip_writer_gets_its_connection_closed(
    node_factory: Callable[..., P2PNode], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The other end of the bench's wedge: validator 3's queue towards validator 0 took
    nothing for minutes (9,801 RPCs dropped). A writer that takes nothing from a
    non-empty queue for WEDGED_WRITER_S has its connection closed and redialled."""
    monkeypatch.setattr(peers_module, "WEDGED_WRITER_S", 1.0)
    server = node_factory("server")
    inbox = server.register_topic(TopicName.CONSENSUS, accept_all)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            address = await nursery.start(server.run)
            client = node_factory("client", bootstrap=(address,))
            client.register_topic(TopicName.CONSENSUS, accept_all)
            await nursery.start(client.run)
            await wait_until(lambda: meshed(client, server, TopicName.CONSENSUS))
            await client.publish(TopicName.CONSENSUS, b"before")
            assert (await inbox.receive()).data == b"before"

            wedged = _muxed(client, server)
            writer_lock = wedged._write_lock  # type: ignore[attr-defined]

            async def blocked_writer() -> None:  # as on a full socket, until it closes
                async with writer_lock:
                    while _socket(wedged).fileno() != -1:
                        await trio.sleep(0.05)

            nursery.start_soon(blocked_writer)
            await trio.sleep(0.1)
            for n in range(3):  # the writer blocks on the first, the others queue
                await client.publish(TopicName.CONSENSUS, b"stuck %d" % n)
            await wait_until(lambda: client.stats()["severed_connections"] >= 1)
            await wait_until(lambda: client.is_connected(server.peer_id)
                             and _muxed(client, server) is not wedged
                             and meshed(client, server, TopicName.CONSENSUS))
            await client.publish(TopicName.CONSENSUS, b"after")
            with trio.fail_after(10):
                while (await inbox.receive()).data != b"after":
                    pass
            nursery.cancel_scope.cancel()
