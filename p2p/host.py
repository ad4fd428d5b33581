"""``P2PNode``: one libp2p host with Motus's gossip, request/response and peer policy.

Usage (the node owns the nursery; p2p never decides what bytes mean)::

    net = P2PNode(P2PConfig(key_path=home / "node.key", chain_id=7077,
                            listen_port=30333, bootstrap=("/ip4/.../p2p/...",)))
    votes = net.register_topic("consensus", validate_consensus)   # before run
    net.set_status_handler(status)                                 # async (peer) -> Head
    net.set_blocks_handler(blocks)                                 # async (peer, a, b) -> [bytes]
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)            # returns once listening
        nursery.start_soon(consume, votes)      # async for msg in votes: ...
        await net.publish("consensus", vote_bytes)

The work is split by concern, each part readable and testable alone:
:mod:`p2p.gossip` (topics, the gate, validators, inboxes), :mod:`p2p.peers`
(connections, bootstrap redials, peer exchange, trimming, bans), :mod:`p2p.requests`
(request/response, both sides). This module builds the libp2p host, wires the parts
together and keeps the node's API in one place.

Startup order matters (see docs/p2p.md, "Library traps"): pubsub and the
gossipsub router run before the host listens or dials, and the library's own
auto-dialer is stopped: we dial bootstrap peers ourselves, forever, with
backoff, clearing the swarm's negative dial cache before each attempt.
"""

from __future__ import annotations

import logging
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2p.batch import MAX_TX_BYTES, AttestationBatcher, Batcher
from p2p.budget import GossipBudgets, TopicBudget
from p2p.config import DEFAULT_P2P_PORT, P2PConfig
from p2p.discovery import PeerAddrs, PeerBook
from p2p.errors import ConfigError, NotRunning, P2PError
from p2p.gossip import (
    Gossip,
    GossipConfig,
    GossipMessage,
    TopicStats,
    Validator,
    Verdict,
)
from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of
from p2p.peers import ConnectedPeer, PeerManager
from p2p.reqresp import BlocksHandler, ChainStatus, Head, ProposalHandler, StatusHandler
from p2p.requests import Requests
from p2p.scoring import PeerScore, PeerScoreboard
from p2p.topics import TopicName
from p2p.tuning import TunedRpcQueue, apply_library_tuning

logger = logging.getLogger(__name__)


class P2PNode:
    """A Motus libp2p node. Runs once, inside the caller's nursery (see module doc)."""

    def __init__(self, config: P2PConfig) -> None:
        apply_library_tuning()
        self.config = config
        self.key_pair = load_or_create_node_key(config.key_path)
        self.peer_id = peer_id_of(self.key_pair)
        self.scoreboard = PeerScoreboard(config.scoring)
        self.budgets = GossipBudgets()
        self._state = "new"  # new -> running -> stopped
        self._host: IHost = new_host(
            key_pair=self.key_pair,
            # Noise only: the library's default also offers TLS, SECIO and plaintext.
            sec_opt={
                NOISE_PROTOCOL_ID: NoiseTransport(
                    self.key_pair, noise_privkey=new_x25519_key_pair().private_key
                )
            },
            # Yamux only (no mplex fallback).
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        )
        self.gossip = Gossip(
            self._host, config.chain_id, config.gossip, scoreboard=self.scoreboard,
            budgets=self.budgets, inbox_size=config.inbox_size, penalise=self.penalise,
        )
        self.peer_book = PeerBook(
            self.peer_id,
            min_backoff=config.reconnect_min_backoff,
            max_backoff=config.reconnect_max_backoff,
        )
        self.requests = Requests(
            self._host, config, scoreboard=self.scoreboard, peer_book=self.peer_book,
            penalise=self.penalise, running=lambda: self.running,
            on_wedged=self._sever_wedged,
        )
        self.peer_manager = PeerManager(
            self._host, config, peer_id=self.peer_id, scoreboard=self.scoreboard,
            gossip=self.gossip, peer_book=self.peer_book,
            request_peers=self.requests.request_peers,
        )
        self.attestations = AttestationBatcher(
            self._publish_attestation_batch,
            flush_interval=config.attestation_flush_interval,
            max_batch_bytes=config.attestation_max_batch_bytes,
        )
        self.transactions = Batcher(
            self._publish_tx_batch,
            flush_interval=config.tx_flush_interval,
            max_batch_bytes=config.tx_max_batch_bytes,
            max_item_bytes=MAX_TX_BYTES,
            name="transaction",
            eager=True,  # a lone transaction is not held back: finality waits on it
        )
        self._listen_addr: str | None = None

    # ----------------------------------------------------------------- setup

    def register_topic(
        self,
        name: str,
        validator: Validator,
        *,
        max_size: int | None = None,
        inbox_size: int | None = None,
        budget: TopicBudget | None = None,
    ) -> trio.MemoryReceiveChannel[GossipMessage]:
        """Subscribe to topic ``name`` before ``run``; see :meth:`Gossip.register_topic`."""
        if self._state != "new":
            raise ConfigError("register topics before run()")
        return self.gossip.register_topic(
            name, validator, max_size=max_size, inbox_size=inbox_size, budget=budget
        )

    def inbox(self, name: str) -> trio.MemoryReceiveChannel[GossipMessage]:
        """The inbox of a registered topic (the channel ``register_topic`` returned)."""
        return self.gossip.topic(name).inbox_receive

    def set_status_handler(self, handler: StatusHandler) -> None:
        """Serve ``/motus/status/1`` with ``async handler(peer_id) -> Head``."""
        self.requests.set_status_handler(handler)

    def set_blocks_handler(self, handler: BlocksHandler) -> None:
        """Serve ``/motus/blocks/1`` with ``async handler(peer_id, start, end) -> [bytes]``."""
        self.requests.set_blocks_handler(handler)

    # ------------------------------------------------------------------- run

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled. ``nursery.start(node.run)`` returns our full multiaddr."""
        if self._state != "new":
            raise P2PError("a P2PNode runs once; create a new one to restart")
        self._state = "running"
        listen = multiaddr.Multiaddr(
            f"/ip4/{self.config.listen_host}/tcp/{self.config.listen_port}"
        )
        try:
            async with self.gossip.running() as subscriptions, self._host.run([listen]):
                # We own dialing: the auto-connector would redial banned
                # peers and fill the negative cache behind our back.
                swarm = self._host.get_network()
                if isinstance(swarm, Swarm):
                    await swarm.auto_connector.stop()
                self._listen_addr = self._find_listen_addr()
                async with trio.open_nursery() as nursery:
                    self.requests.attach(nursery)  # requests' exchanges run here
                    for topic in self.gossip.topics.values():
                        nursery.start_soon(self.gossip.drain, topic, subscriptions[topic.name])
                    nursery.start_soon(self.peer_manager.run)
                    if TopicName.ATTESTATION in self.gossip.topics:
                        nursery.start_soon(self.attestations.run)
                    if TopicName.TX in self.gossip.topics:
                        nursery.start_soon(self.transactions.run)
                    logger.info("p2p listening on %s", self._listen_addr)
                    task_status.started(self._listen_addr)
                    await trio.sleep_forever()
        finally:
            self.requests.attach(None)
            self._state = "stopped"

    @property
    def running(self) -> bool:
        """True between ``run`` starting to listen and its end."""
        return self._state == "running" and self._listen_addr is not None

    @property
    def listen_multiaddr(self) -> str:
        """``/ip4/HOST/tcp/PORT/p2p/PEER_ID`` we listen on (the real port if 0 was asked)."""
        if self._listen_addr is None:
            raise NotRunning("not listening yet")
        return self._listen_addr

    @property
    def host(self) -> IHost:
        """The py-libp2p host: for diagnostics and tests, not for the node's logic."""
        return self._host

    # --------------------------------------------------------------- gossip

    async def publish(self, name: str, data: bytes) -> None:
        """Publish ``data`` on topic ``name``.

        Raises ``UnknownTopic``, ``MessageTooLarge`` (over the topic limit) or
        ``NotRunning``. Our own validator is not run on our own messages: the
        node checks what it publishes.
        """
        self.gossip.check_publish(name, data)
        if not self.running:
            raise NotRunning("publish needs run() to be active")
        await self.gossip.publish(name, data)

    def mesh_peers(self, name: str) -> set[str]:
        """Peers our publishes on topic ``name`` reach now (its gossipsub mesh)."""
        return self.gossip.mesh_peers(name)

    async def _publish_attestation_batch(self, data: bytes) -> None:
        await self.publish(TopicName.ATTESTATION, data)

    async def _publish_tx_batch(self, data: bytes) -> None:
        await self.publish(TopicName.TX, data)

    # ------------------------------------------------------ peers and bans

    def penalise(self, peer_id: str, reason: str) -> None:
        """Lower ``peer_id``'s score for ``reason`` (weights in ``ScoreConfig``).

        For misbehaviour only the node can see, e.g. a consensus message of
        the right size whose signature does not verify. A peer reaching the
        threshold is disconnected and banned.
        """
        if self.scoreboard.penalise(peer_id, reason):
            self.peer_manager.on_banned(peer_id)

    async def _sever_wedged(self, peer_id: str) -> None:
        """A request's exchange with ``peer_id`` would not end once cancelled: the
        connection is wedged (docs/p2p.md, "Requests on a wedged connection")."""
        await self.peer_manager.sever_wedged(peer_id, "a request would not end")

    def peers(self) -> list[ConnectedPeer]:
        """Peers with an open connection, with what we know of them."""
        return self.peer_manager.peers()

    def peer_scores(self) -> dict[str, PeerScore]:
        """Our score of every connected or penalised peer."""
        return self.peer_manager.peer_scores()

    def is_connected(self, peer_id: str) -> bool:
        """True if we hold an open connection to ``peer_id``."""
        return self.peer_manager.is_connected_id(ID.from_base58(peer_id))

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: per topic, the attestation batcher, peers."""
        peers = self.peer_manager
        return {
            "topics": {name: topic.stats for name, topic in self.gossip.topics.items()},
            "attestation_batcher": self.attestations.stats,
            "transaction_batcher": self.transactions.stats,
            "peers": len(self.peers()),
            "banned_peers": len(self.scoreboard.banned_peers()),
            # Connections to banned peers we closed: the ban itself, then each
            # time a banned peer dials us again.
            "banned_disconnects": peers.banned_disconnects,
            # Gossip messages dropped unchecked for being over their peer's budget.
            "over_budget_dropped": self.budgets.dropped,
            # Process-wide: gossip RPCs lost to full per-peer outbound queues.
            "outbound_dropped": TunedRpcQueue.dropped_total,
            # Inbound pubsub streams dropped for undecodable frames.
            "malformed_pubsub_streams": self.gossip.pubsub.malformed_streams,
            # Peer exchange: peers reached and dial candidates, failed asks,
            # connections closed for being over max_peers.
            "peer_book": self.peer_book.known(),
            "peer_exchanges_failed": peers.exchanges_failed,
            "trimmed_peers": peers.trimmed_peers,
            # Connections closed at the socket for being wedged (requests would not end).
            "severed_connections": peers.severed_connections,
        }

    # ------------------------------------------------------ request/response

    async def request_peers(self, peer_id: str) -> list[PeerAddrs]:
        """Ask ``peer_id`` for peers it reached recently; see :meth:`Requests.request_peers`."""
        return await self.requests.request_peers(peer_id)

    async def request_status(self, peer_id: str) -> ChainStatus:
        """Ask ``peer_id`` for its head; see :meth:`Requests.request_status`."""
        return await self.requests.request_status(peer_id)

    def set_proposal_handler(self, handler: ProposalHandler) -> None:
        """Serve ``/motus/proposal/1`` with ``async handler(peer_id, hash, indices)``."""
        self.requests.set_proposal_handler(handler)

    async def request_proposal(self, peer_id: str, block_hash: bytes, indices: list[int],
                               timeout: float | None = None) -> list[bytes]:
        """Ask ``peer_id`` for parts of a proposal; see :meth:`Requests.request_proposal`."""
        return await self.requests.request_proposal(peer_id, block_hash, indices, timeout)

    async def request_blocks(self, peer_id: str, start: int, end: int) -> list[bytes]:
        """Ask ``peer_id`` for blocks ``start``..``end``; see :meth:`Requests.request_blocks`."""
        return await self.requests.request_blocks(peer_id, start, end)

    # ---------------------------------------------------------------- misc

    def _find_listen_addr(self) -> str:
        for addr in self._host.get_transport_addrs():
            port = addr.value_for_protocol("tcp")
            if port is not None:
                return node_multiaddr(self.config.listen_host, int(port), self.peer_id)
        raise P2PError("host is not listening on TCP")


__all__ = [
    "DEFAULT_P2P_PORT",
    "ConnectedPeer",
    "GossipConfig",
    "GossipMessage",
    "Head",
    "P2PConfig",
    "P2PNode",
    "TopicStats",
    "Validator",
    "Verdict",
]
