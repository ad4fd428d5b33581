"""Peers: who we connect to and whom we keep out.

:class:`PeerManager` dials the bootstrap peers forever with backoff, learns more peers
by exchange (``/motus/peers/1``, :mod:`p2p.discovery`) and dials them up to
``target_peers``, trims inbound connections beyond ``max_peers``, and keeps bans in
force: a banned peer's gossip is dropped by pubsub's blacklist and its connections are
closed. docs/p2p.md, "Peers, bootstrap and bans".
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.rcmgr import Direction

from p2p.discovery import PeerAddrs, PeerBook
from p2p.errors import ConfigError, P2PError
from p2p.scoring import PeerScore, PeerScoreboard
from p2p.tuning import TunedRpcQueue

if TYPE_CHECKING:
    from p2p.config import P2PConfig
    from p2p.gossip import Gossip

logger = logging.getLogger(__name__)

# How often bans are reconciled with connections even without a trigger.
_BAN_SWEEP_INTERVAL = 1.0
# A peer's gossip writer that has not taken an RPC from a non-empty queue for this
# long is blocked in a write that will not end (a yamux window wait gives up after 5 s):
# the connection is wedged and is closed (PeerManager.sever_wedged).
WEDGED_WRITER_S = 30.0
# A wedged connection to one peer is closed at most this often.
SEVER_INTERVAL_S = 10.0
# A connection that lasted this long was not refused: redial a lost one at once.
_STABLE_CONNECTION = 10.0
# Peer exchanges in flight at once (each is one small request).
_MAX_CONCURRENT_EXCHANGES = 4
# Newly connected peers waiting to be asked for their peers; more are dropped
# (the periodic exchange covers them).
_EXCHANGE_QUEUE = 64
# How often the discovery dialer looks at the peer count without a trigger.
_DIAL_SWEEP_INTERVAL = 1.0


@dataclass(frozen=True)
class ConnectedPeer:
    """A peer we hold at least one open connection to."""

    peer_id: str
    addrs: tuple[str, ...]
    bootstrap: bool
    topics: tuple[str, ...]  # our topic names it subscribes to
    mesh: tuple[str, ...]  # our topic names whose gossip mesh includes it
    score: float
    outbound_queued: int  # gossip RPCs waiting to be written to it
    outbound_dropped: int  # gossip RPCs to it lost to a full queue


@dataclass(frozen=True)
class BootstrapPeer:
    peer_id: ID
    addrs: tuple[multiaddr.Multiaddr, ...]


class PeerManager:
    """Connections, bootstrap redials, peer exchange, trimming and bans of one host.

    ``request_peers(peer_id)`` is the peer-exchange request (:mod:`p2p.requests`).
    Start :meth:`run` in the host's nursery once it listens.
    """

    def __init__(
        self,
        host: IHost,
        config: P2PConfig,
        *,
        peer_id: str,
        scoreboard: PeerScoreboard,
        gossip: Gossip,
        peer_book: PeerBook,
        request_peers: Callable[[str], Awaitable[list[PeerAddrs]]],
    ) -> None:
        self._host = host
        self.config = config
        self.scoreboard = scoreboard
        self._gossip = gossip
        self._request_peers = request_peers
        self.bootstrap = parse_bootstrap(config.bootstrap, peer_id)
        self.peer_book = peer_book
        self._ban_wakeup = trio.Event()
        self._disconnected = trio.Event()
        self._exchange_send, self._exchange_receive = trio.open_memory_channel[str](
            _EXCHANGE_QUEUE
        )
        self._dial_wakeup = trio.Event()
        self._connected_at: dict[str, float] = {}
        self.banned_disconnects = 0
        self.trimmed_peers = 0
        self.severed_connections = 0
        self._severed_at: dict[str, float] = {}  # peer -> trio time we last severed it
        self.exchanges_failed = 0
        self._network.register_notifee(_ConnectionWatch(self))

    async def run(self) -> None:
        """Redial bootstrap peers, enforce bans, exchange and dial peers, until cancelled."""
        async with trio.open_nursery() as nursery:
            for peer in self.bootstrap:
                nursery.start_soon(self.keep_connected, peer)
            nursery.start_soon(self.enforce_bans)
            nursery.start_soon(self.exchange_peers)
            nursery.start_soon(self.dial_discovered)

    def penalise(self, peer_id: str, reason: str) -> None:
        """Lower ``peer_id``'s score for ``reason`` (weights in ``ScoreConfig``).

        For misbehaviour only the node can see, e.g. a consensus message of
        the right size whose signature does not verify. A peer reaching the
        threshold is disconnected and banned.
        """
        if self.scoreboard.penalise(peer_id, reason):
            self.on_banned(peer_id)

    def on_banned(self, peer_id: str) -> None:
        """A ban just started: drop the peer's gossip from now on (pubsub checks its
        blacklist before anything else), and have the sweep disconnect it."""
        try:
            self._gossip.pubsub.blacklisted_peers.add(ID.from_base58(peer_id))
        except Exception:  # not a peer id (a node-side string); the sweep still runs
            pass
        self._ban_wakeup.set()

    def peers(self) -> list[ConnectedPeer]:
        """Peers with an open connection, with what we know of them."""
        bootstrap_ids = {peer.peer_id for peer in self.bootstrap}
        result = []
        for peer_id, connections in self._network.get_connections_map().items():
            open_connections = [conn for conn in connections if not conn.is_closed]
            if not open_connections:
                continue
            addrs = tuple(
                str(addr) for conn in open_connections for addr in conn.get_transport_addresses()
            )
            topics, mesh = self._gossip.topics_of(peer_id)
            queue = self._gossip.pubsub.peer_queues.get(peer_id)
            peer = peer_id.to_base58()
            result.append(
                ConnectedPeer(
                    peer_id=peer,
                    addrs=addrs,
                    bootstrap=peer_id in bootstrap_ids,
                    topics=topics,
                    mesh=mesh,
                    score=self.scoreboard.score(peer),
                    outbound_queued=len(queue) if queue is not None else 0,
                    outbound_dropped=getattr(queue, "dropped", 0),
                )
            )
        return result

    def peer_scores(self) -> dict[str, PeerScore]:
        """Our score of every connected or penalised peer."""
        scores = self.scoreboard.snapshot()
        for peer in self.peers():
            scores.setdefault(peer.peer_id, PeerScore(0.0, 0.0, 0, {}))
        return scores

    def is_connected(self, peer_id: str) -> bool:
        """True if we hold an open connection to ``peer_id``."""
        return self.is_connected_id(ID.from_base58(peer_id))

    @property
    def _network(self) -> INetwork:
        return self._host.get_network()

    def is_connected_id(self, peer_id: ID) -> bool:
        return any(not conn.is_closed for conn in self._network.get_connections(peer_id))

    async def keep_connected(self, peer: BootstrapPeer) -> None:
        """Dial ``peer`` whenever we are not connected to it, with backoff, forever.

        The library's own bootstrap gives up on a peer after a few failures,
        and a failed dial parks the peer in a 60 s negative cache that makes
        later dials fail at once; a node started before its bootstrap peer
        would wait a minute or never connect. We clear that cache entry before
        each of our attempts: the backoff here is the policy. The backoff only
        resets once a connection has lasted ``_STABLE_CONNECTION`` seconds, so
        a peer that keeps hanging up on us (it banned us) is not hammered.
        """
        name = peer.peer_id.to_base58()
        min_backoff = self.config.reconnect_min_backoff
        backoff = min_backoff
        connected_since: float | None = None
        while True:
            if self.scoreboard.is_banned(name):
                await trio.sleep(min(self.scoreboard.ban_remaining(name), 5.0) + 0.01)
                continue
            if self.is_connected_id(peer.peer_id):
                if connected_since is None:
                    connected_since = trio.current_time()
                with trio.move_on_after(1.0):
                    await self._disconnected.wait()
                continue
            if connected_since is not None:
                lasted = trio.current_time() - connected_since
                connected_since = None
                if lasted >= _STABLE_CONNECTION:
                    backoff = min_backoff
                else:
                    await trio.sleep(backoff * random.uniform(0.8, 1.2))
                    backoff = min(backoff * 2, self.config.reconnect_max_backoff)
                    continue
            swarm = self._network
            if isinstance(swarm, Swarm):
                swarm.unblock_peer(peer.peer_id)
            try:
                with trio.fail_after(self.config.dial_timeout):
                    await self._host.connect(PeerInfo(peer.peer_id, list(peer.addrs)))
                if self.is_connected_id(peer.peer_id):
                    logger.info("connected to bootstrap peer %s", name)
                    continue
                # A connection the peer just closed lingers in the swarm's table
                # for ~100 ms; connect() then returns at once, without dialling
                # and without yielding to trio. Without the sleep below this
                # loop would spin and starve the whole process.
                logger.debug("dial to %s returned without an open connection", name)
            except Exception as exc:  # dial failures come in many library types
                logger.debug("dial to %s failed (%s); retrying in %.1f s", name, exc, backoff)
            await trio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, self.config.reconnect_max_backoff)

    async def enforce_bans(self) -> None:
        """Keep connections and pubsub's blacklist in line with the scoreboard."""
        while True:
            with trio.move_on_after(_BAN_SWEEP_INTERVAL):
                await self._ban_wakeup.wait()
            self._ban_wakeup = trio.Event()
            banned = {ID.from_base58(peer) for peer in self.scoreboard.banned_peers()}
            for peer_id in banned:
                if not self._gossip.pubsub.is_peer_blacklisted(peer_id):
                    # Not add_to_blacklist(): its teardown task deletes the peer after
                    # an await, races the dead-peer handler that our disconnect below
                    # triggers, and its KeyError kills pubsub and the whole node. The
                    # disconnect does the teardown; the set makes pubsub drop the peer.
                    self._gossip.pubsub.blacklisted_peers.add(peer_id)
                if self.is_connected_id(peer_id):
                    self.banned_disconnects += 1
                    logger.debug("disconnecting banned peer %s", peer_id)
                    with trio.move_on_after(2.0):
                        await self._host.disconnect(peer_id)
            await self._sever_wedged_writers()
            for peer_id in self._gossip.pubsub.get_blacklisted_peers() - banned:
                self._gossip.pubsub.remove_from_blacklist(peer_id)
                logger.info("ban of peer %s ended", peer_id)
            await self._trim_peers()

    async def _trim_peers(self) -> None:
        """Close the newest connections beyond ``max_peers``; bootstrap peers stay."""
        bootstrap = {peer.peer_id.to_base58() for peer in self.bootstrap}
        connected = [
            name for name in self._connected_at if self.is_connected_id(ID.from_base58(name))
        ]
        excess = len(connected) - self.config.max_peers
        if excess <= 0:
            return
        newest = sorted(
            (name for name in connected if name not in bootstrap),
            key=lambda name: -self._connected_at[name],
        )
        for name in newest[:excess]:
            self.trimmed_peers += 1
            logger.debug("over max_peers: disconnecting %s", name)
            with trio.move_on_after(2.0):
                await self._host.disconnect(ID.from_base58(name))

    async def _sever_wedged_writers(self) -> None:
        """Close the connections whose gossip writer is stuck (WEDGED_WRITER_S)."""
        now = time.monotonic()
        for peer_id, queue in list(self._gossip.pubsub.peer_queues.items()):
            if (isinstance(queue, TunedRpcQueue) and len(queue) > 0
                    and now - queue.last_pop > WEDGED_WRITER_S
                    and self.is_connected_id(peer_id)):
                await self.sever_wedged(
                    peer_id.to_base58(),
                    f"its gossip writer took nothing for {now - queue.last_pop:.0f} s")

    async def sever_wedged(self, peer_id: str, why: str) -> None:
        """Close a wedged connection to ``peer_id`` (``sever``), at most once per
        SEVER_INTERVAL_S (docs/p2p.md, "Requests on a wedged connection")."""
        now = trio.current_time()
        if now - self._severed_at.get(peer_id, -SEVER_INTERVAL_S) < SEVER_INTERVAL_S:
            return
        if len(self._severed_at) > 4096:  # peer ids are free: keep the table bounded
            self._severed_at.clear()
        self._severed_at[peer_id] = now
        logger.warning("connection to %s is wedged (%s): closing it", peer_id, why)
        await self.sever(peer_id)

    async def sever(self, peer_id: str) -> None:
        """Close our connections to ``peer_id`` at the socket, then disconnect it.

        For a wedged connection (docs/p2p.md, "Requests on a wedged connection"): the
        library's own close writes a GO_AWAY frame first, behind the same write lock
        the blocked writer holds. Closing the socket wakes every task blocked on it
        (writes fail, the reader sees the end), and the library tears the connection
        down; the bootstrap redial (``keep_connected``) makes a new one."""
        target = ID.from_base58(peer_id)
        network = self._network
        conns = network.get_connections(target) if isinstance(network, Swarm) else []
        for conn in conns:
            secured = getattr(getattr(conn, "muxed_conn", None), "secured_conn", None)
            if secured is None:
                continue
            self.severed_connections += 1
            with trio.move_on_after(1.0):
                try:
                    await secured.close()
                except Exception:
                    logger.debug("closing a wedged connection to %s failed", peer_id,
                                 exc_info=True)
        with trio.move_on_after(2.0):
            try:
                await self._host.disconnect(target)
            except Exception:
                logger.debug("disconnecting %s failed", peer_id, exc_info=True)

    # ------------------------------------------------------ peer exchange

    async def exchange_peers(self) -> None:
        """Ask each newly connected peer, and a random peer every interval, for its peers."""
        limiter = trio.CapacityLimiter(_MAX_CONCURRENT_EXCHANGES)

        async def ask(peer_id: str) -> None:
            async with limiter:
                try:
                    learnt = await self._request_peers(peer_id)
                except P2PError as exc:
                    self.exchanges_failed += 1
                    logger.debug("peer exchange with %s failed: %s", peer_id, exc)
                    return
                if self.peer_book.learn(learnt):
                    self._dial_wakeup.set()

        async with trio.open_nursery() as nursery:
            while True:
                peer_id: str | None = None
                with trio.move_on_after(self.config.peer_exchange_interval):
                    peer_id = await self._exchange_receive.receive()
                if peer_id is None:
                    connected = [peer.peer_id for peer in self.peers()]
                    if not connected:
                        continue
                    peer_id = random.choice(connected)
                if limiter.borrowed_tokens < limiter.total_tokens:
                    nursery.start_soon(ask, peer_id)

    async def dial_discovered(self) -> None:
        """Dial peers learnt by exchange while we hold fewer than ``target_peers``.

        Never ourselves, never a banned or connected peer; each failed dial
        backs the peer off (``PeerBook.dial_failed``), as bootstrap redials do.
        """
        while True:
            with trio.move_on_after(_DIAL_SWEEP_INTERVAL):
                await self._dial_wakeup.wait()
            self._dial_wakeup = trio.Event()
            connected = {peer.peer_id for peer in self.peers()}
            for name in list(self._connected_at):
                if name not in connected:
                    self._forget_connection(name)
            for name in connected:
                self.peer_book.touch(name)
            needed = self.config.target_peers - len(connected)
            if needed <= 0:
                continue
            # Bootstrap peers have their own redial loop.
            bootstrap = {peer.peer_id.to_base58() for peer in self.bootstrap}
            blocked = connected | bootstrap | set(self.scoreboard.banned_peers())
            candidates = self.peer_book.dial_candidates(skip=blocked.__contains__)
            if not candidates:
                continue
            async with trio.open_nursery() as nursery:
                for candidate in candidates[:needed]:
                    nursery.start_soon(self._dial_discovered_peer, candidate)

    def _forget_connection(self, name: str) -> None:
        """``name`` is no longer connected. A connection that did not last
        ``_STABLE_CONNECTION`` counts as a failed dial: a peer that hangs up on us
        (over its max_peers, or it banned us) is backed off, not redialled each second."""
        since = self._connected_at.pop(name, None)
        if since is None:
            return
        if trio.current_time() - since < _STABLE_CONNECTION:
            self.peer_book.dial_failed(name)
        else:
            self.peer_book.connection_lasted(name)

    async def _dial_discovered_peer(self, candidate: PeerAddrs) -> None:
        target = ID.from_base58(candidate.peer_id)
        addrs = [multiaddr.Multiaddr(addr) for addr in candidate.addrs]
        swarm = self._network
        if isinstance(swarm, Swarm):
            swarm.unblock_peer(target)  # our backoff is the policy (see _keep_connected)
        try:
            with trio.fail_after(self.config.dial_timeout):
                await self._host.connect(PeerInfo(target, addrs))
        except Exception as exc:  # dial failures come in many library types
            logger.debug("dial to discovered peer %s failed: %s", candidate.peer_id, exc)
        if self.is_connected_id(target):
            logger.info("connected to discovered peer %s", candidate.peer_id)
            return
        self.peer_book.dial_failed(candidate.peer_id)
        await trio.sleep(0)  # connect() may return without yielding (trap 18)

    def on_connected(self, conn: INetConn) -> None:
        peer_id = conn.muxed_conn.peer_id
        name = peer_id.to_base58()
        if self.scoreboard.is_banned(name):
            self._ban_wakeup.set()
            return
        if getattr(conn, "direction", None) is Direction.OUTBOUND:
            # The address we dialled and reached: shareable by peer exchange. Not
            # get_transport_addresses(), which falls back to the peerstore (what
            # the peer claims about itself); an inbound connection's remote port
            # is ephemeral, so inbound peers are not shared.
            reached = getattr(conn, "_actual_transport_addresses", None) or []
            self.peer_book.record_dialled(name, [str(addr) for addr in reached])
        if name not in self._connected_at:
            self._connected_at[name] = trio.current_time()
            try:
                self._exchange_send.send_nowait(name)
            except trio.WouldBlock:
                pass  # the periodic exchange will ask it
        if len(self._connected_at) > self.config.max_peers:
            self._ban_wakeup.set()  # the sweep trims the newest inbound peers

    def on_disconnected(self) -> None:
        for name in [n for n in self._connected_at if not self.is_connected_id(ID.from_base58(n))]:
            self._forget_connection(name)
        self._disconnected.set()
        self._disconnected = trio.Event()


class _ConnectionWatch(INotifee):
    """Tells the peer manager about connections: banned peers dialing in, disconnects."""

    def __init__(self, node: PeerManager) -> None:
        self._node = node

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._node.on_connected(conn)
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._node.on_disconnected()
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


def parse_bootstrap(addrs: Sequence[str], own_peer_id: str) -> list[BootstrapPeer]:
    """Group bootstrap multiaddrs by peer, skipping our own id."""
    grouped: dict[ID, list[multiaddr.Multiaddr]] = {}
    for text in addrs:
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(text))
        except Exception as exc:
            raise ConfigError(
                f"bootstrap address {text!r} is not /ip4/../tcp/../p2p/..: {exc}"
            ) from exc
        if info.peer_id.to_base58() == own_peer_id:
            continue
        grouped.setdefault(info.peer_id, []).extend(info.addrs)
    return [BootstrapPeer(peer_id, tuple(found)) for peer_id, found in grouped.items()]
