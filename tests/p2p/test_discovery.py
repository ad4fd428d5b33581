"""Peer exchange (/motus/peers/1): wire format, the peer book, and real hosts finding
each other beyond their bootstrap lists."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.abc import INetStream

from p2p import discovery, reqresp
from p2p.discovery import PeerAddrs, PeerBook
from p2p.errors import BadRequest, BadResponse, ConfigError, RemoteError
from p2p.host import P2PNode
from p2p.identity import load_or_create_node_key, peer_id_of
from p2p.scoring import Misbehaviour
from tests.p2p.conftest import make_config, wait_until


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    home = tmp_path_factory.mktemp("ids")
    return [peer_id_of(load_or_create_node_key(home / f"{i}.key")) for i in range(4)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------- wire format


def test_peers_round_trip_drops_unusable_addresses(ids: list[str]) -> None:
    good = PeerAddrs(ids[0], ("/ip4/127.0.0.1/tcp/4001",))
    body = discovery.encode_peers_response([good])
    assert discovery.decode_peers_response(body, 32) == [good]

    raw = msgpack.packb({"peers": [
        [_raw_id(ids[1]), ["not a multiaddr", "/ip4/127.0.0.1/udp/5", "/ip4/10.0.0.1/tcp/7",
                           f"/ip4/127.0.0.1/tcp/8/p2p/{ids[2]}"]],  # another peer's /p2p
        [_raw_id(ids[2]), ["/dns4/example.org/tcp/1"]],  # no usable address: entry dropped
        [_raw_id(ids[3]), [f"/ip6/::1/tcp/9/p2p/{ids[3]}"]],
    ]}, use_bin_type=True)
    assert discovery.decode_peers_response(raw, 32) == [
        PeerAddrs(ids[1], ("/ip4/10.0.0.1/tcp/7",)),
        PeerAddrs(ids[3], ("/ip6/::1/tcp/9",)),
    ]


@pytest.mark.parametrize("fields", [
    {"peers": "x"},
    {"peers": [[b"\x00\x01", []]]},  # not a peer id
    {"peers": [["text id", []]]},
    {"peers": [[b"", []]]},
    {"peers": [[b"a" * 65, []]]},
    {"peers": [[b"a", ["/ip4/1.2.3.4/tcp/1"] * 5]]},  # more than 4 addresses
    {"peers": [[b"a", [1]]]},
    {"peers": [[b"a"]]},
    {"peers": [], "extra": 1},
    {"other": 1},
])
def test_malformed_peers_response_is_bad_response(fields: dict[str, object]) -> None:
    with pytest.raises(BadResponse):
        discovery.decode_peers_response(msgpack.packb(fields, use_bin_type=True), 32)


def test_peers_response_bounds(ids: list[str]) -> None:
    entry = [_raw_id(ids[0]), ["/ip4/127.0.0.1/tcp/1"]]
    with pytest.raises(BadResponse, match="2 peers for a request of 1"):
        discovery.decode_peers_response(msgpack.packb({"peers": [entry, entry]}), 1)
    with pytest.raises(BadResponse):
        discovery.decode_peers_response(b"\x00" * (discovery.MAX_PEERS_RESPONSE_SIZE + 1), 32)
    with pytest.raises(RemoteError):
        discovery.decode_peers_response(reqresp.encode_error("internal", "x"), 32)


def test_peers_request_bounds() -> None:
    assert discovery.decode_peers_request(discovery.encode_peers_request(32)) == 32
    for bad in (0, 33, -1):
        with pytest.raises(BadRequest):
            discovery.decode_peers_request(discovery.encode_peers_request(bad))
    with pytest.raises(BadRequest):
        discovery.decode_peers_request(b"\xc1")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_peers_response_raises_only_typed_errors(data: bytes) -> None:
    try:
        discovery.decode_peers_response(data, 32)
    except (BadResponse, RemoteError):
        pass


# ------------------------------------------------------------------------ peer book


def test_book_shares_recent_dialled_peers_only(ids: list[str]) -> None:
    clock = FakeClock()
    book = PeerBook(ids[0], min_backoff=1, max_backoff=8, clock=clock)
    book.record_dialled(ids[0], ["/ip4/127.0.0.1/tcp/1"])  # ourselves: never
    book.record_dialled(ids[1], ["/ip4/127.0.0.1/tcp/2", "garbage"])
    clock.now += 1
    book.record_dialled(ids[2], ["/ip4/127.0.0.1/tcp/3"])
    book.learn([PeerAddrs(ids[3], ("/ip4/127.0.0.1/tcp/4",))])  # heard of, not reached
    never = lambda peer: False  # noqa: E731
    assert book.shareable(32, exclude=(), is_banned=never) == [
        PeerAddrs(ids[2], ("/ip4/127.0.0.1/tcp/3",)),
        PeerAddrs(ids[1], ("/ip4/127.0.0.1/tcp/2",)),
    ]
    assert book.shareable(32, exclude={ids[2]}, is_banned=lambda p: p == ids[1]) == []
    assert len(book.shareable(1, exclude=(), is_banned=never)) == 1
    clock.now += discovery.RECENT_PEER_S + 1
    book.touch(ids[1])
    assert [p.peer_id for p in book.shareable(32, exclude=(), is_banned=never)] == [ids[1]]


def test_book_never_offers_itself_and_backs_off_failed_dials(ids: list[str]) -> None:
    clock = FakeClock()
    book = PeerBook(ids[0], min_backoff=1, max_backoff=8, clock=clock)
    assert book.learn([PeerAddrs(ids[0], ("/ip4/127.0.0.1/tcp/1",)),
                       PeerAddrs(ids[1], ("/ip4/127.0.0.1/tcp/2",))]) == 1
    nothing = lambda peer: False  # noqa: E731
    assert [p.peer_id for p in book.dial_candidates(skip=nothing)] == [ids[1]]
    assert book.dial_candidates(skip=lambda peer: peer == ids[1]) == []
    book.dial_failed(ids[1])
    assert book.dial_candidates(skip=nothing) == []  # backing off
    clock.now += 1.3
    assert [p.peer_id for p in book.dial_candidates(skip=nothing)] == [ids[1]]
    for _ in range(discovery.MAX_DIAL_FAILURES - 1):
        book.dial_failed(ids[1])
    clock.now += 100
    assert book.dial_candidates(skip=nothing) == []  # forgotten after repeated failures


def test_book_backs_off_a_peer_that_hangs_up_until_a_connection_lasts(ids: list[str]) -> None:
    clock = FakeClock()
    book = PeerBook(ids[0], min_backoff=1, max_backoff=8, clock=clock)
    nothing = lambda peer: False  # noqa: E731
    book.record_dialled(ids[1], ["/ip4/127.0.0.1/tcp/2"])
    book.dial_failed(ids[1])  # the connection ended at once (it is over its max_peers)
    book.record_dialled(ids[1], ["/ip4/127.0.0.1/tcp/2"])  # accepted again: no reset
    assert book.dial_candidates(skip=nothing) == []
    book.connection_lasted(ids[1])
    assert [p.peer_id for p in book.dial_candidates(skip=nothing)] == [ids[1]]


# --------------------------------------------------------------------- real hosts


async def test_node_finds_peer_beyond_its_bootstrap_by_exchange(
    node_factory: Callable[..., P2PNode],
) -> None:
    """C bootstraps only from B, B only from A: C ends up connected to A."""
    with trio.fail_after(20):
        a = node_factory("a")
        async with trio.open_nursery() as nursery:
            a_addr = await nursery.start(a.run)
            b = node_factory("b", bootstrap=(a_addr,))
            b_addr = await nursery.start(b.run)
            await wait_until(lambda: b.is_connected(a.peer_id))
            c = node_factory("c", bootstrap=(b_addr,))
            await nursery.start(c.run)
            await wait_until(lambda: c.is_connected(a.peer_id), timeout=10)
            by_id = {peer.peer_id: peer for peer in c.peers()}
            assert set(by_id) == {a.peer_id, b.peer_id}
            assert by_id[b.peer_id].bootstrap and not by_id[a.peer_id].bootstrap
            # C dialled A at the address B dialled it: A's listen address.
            assert c.peer_book.shareable(32, exclude=(), is_banned=lambda p: False)
            # B shares A (it dialled A) but not C (inbound: its port is ephemeral),
            # and never the asking peer.
            assert {p.peer_id for p in await c.request_peers(b.peer_id)} == {a.peer_id}
            nursery.cancel_scope.cancel()


async def test_peer_answering_garbage_is_penalised(
    node_factory: Callable[..., P2PNode],
) -> None:
    async def garbage(stream: INetStream) -> None:
        await reqresp.read_frame(stream, reqresp.MAX_REQUEST_SIZE)
        await reqresp.write_frame(stream, msgpack.packb({"peers": [[b"\x00", 7]]}))
        await stream.close()

    with trio.fail_after(20):
        liar = node_factory("liar")
        liar.host.set_stream_handler(discovery.PEERS_PROTOCOL, garbage)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(liar.run)
            asker = node_factory("asker", bootstrap=(address,))
            await nursery.start(asker.run)
            # Asked on connect, without being told to.
            await wait_until(
                lambda: asker.peer_scores().get(liar.peer_id) is not None
                and asker.peer_scores()[liar.peer_id].penalties.get(Misbehaviour.BAD_RESPONSE)
                == 1
            )
            with pytest.raises(BadResponse):
                await asker.request_peers(liar.peer_id)
            assert asker.peer_scores()[liar.peer_id].penalties[Misbehaviour.BAD_RESPONSE] == 2
            assert asker.peer_book.known()["candidates"] == 0
            nursery.cancel_scope.cancel()


async def test_banned_peer_learnt_by_exchange_is_not_dialled(
    node_factory: Callable[..., P2PNode],
) -> None:
    with trio.fail_after(20):
        a = node_factory("a")
        async with trio.open_nursery() as nursery:
            a_addr = await nursery.start(a.run)
            b = node_factory("b", bootstrap=(a_addr,))
            b_addr = await nursery.start(b.run)
            await wait_until(lambda: b.is_connected(a.peer_id))
            c = node_factory("c", bootstrap=(b_addr,))
            c.penalise(a.peer_id, Misbehaviour.WRONG_CHAIN)  # weight 100: banned
            assert c.scoreboard.is_banned(a.peer_id)
            await nursery.start(c.run)
            await wait_until(lambda: c.is_connected(b.peer_id))
            # C learns A from B but never dials it.
            await wait_until(lambda: c.peer_book.known()["candidates"] == 1)
            await trio.sleep(2.5)  # a couple of dial sweeps
            assert not c.is_connected(a.peer_id)
            assert not a.is_connected(c.peer_id)
            # And B does not pass on a peer it banned itself.
            b.penalise(c.peer_id, Misbehaviour.WRONG_CHAIN)
            shared = b.peer_book.shareable(32, exclude=(), is_banned=b.scoreboard.is_banned)
            assert c.peer_id not in {p.peer_id for p in shared}
            nursery.cancel_scope.cancel()


async def test_inbound_peers_beyond_max_peers_are_closed(
    node_factory: Callable[..., P2PNode],
) -> None:
    with trio.fail_after(20):
        hub = node_factory("hub", max_peers=1, target_peers=1)
        async with trio.open_nursery() as nursery:
            address = await nursery.start(hub.run)
            first = node_factory("first", bootstrap=(address,))
            await nursery.start(first.run)
            await wait_until(lambda: hub.is_connected(first.peer_id))
            second = node_factory("second", bootstrap=(address,))
            await nursery.start(second.run)
            await wait_until(lambda: hub.stats()["trimmed_peers"] >= 1)
            await wait_until(lambda: len(hub.peers()) == 1)
            assert hub.is_connected(first.peer_id)  # the newest went, the oldest stays
            nursery.cancel_scope.cancel()


def _raw_id(peer_id: str) -> bytes:
    from libp2p.peer.id import ID

    return ID.from_base58(peer_id).to_bytes()


@pytest.mark.parametrize("target, most", [(33, 32), (-1, 32), (0, 0)])
def test_peer_counts_are_checked(tmp_path: Path, target: int, most: int) -> None:
    with pytest.raises(ConfigError):
        make_config(tmp_path, "x", target_peers=target, max_peers=most)
