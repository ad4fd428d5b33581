"""``P2PNode``: the libp2p host, gossip topics, request/response and peer scoring.

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

Startup order matters (see docs/p2p.md, "Library traps"): pubsub and the
gossipsub router run before the host listens or dials, and the library's own
auto-dialer is stopped: we dial bootstrap peers ourselves, forever, with
backoff, clearing the swarm's negative dial cache before each attempt.
Beyond the bootstrap list, peers are found by peer exchange (``p2p.discovery``):
each new peer is asked whom it dialled, and those are dialled up to
``target_peers``.
"""

from __future__ import annotations

import inspect
import logging
import random
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.rcmgr import Direction
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from p2p import discovery, reqresp
from p2p.batch import (
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_BATCH_BYTES,
    MAX_TX_BYTES,
    TX_FLUSH_INTERVAL,
    TX_MAX_BATCH_BYTES,
    AttestationBatcher,
    Batcher,
)
from p2p.budget import Admission, GossipBudgets, TopicBudget
from p2p.discovery import PeerAddrs, PeerBook
from p2p.errors import (
    BadRequest,
    BadResponse,
    ConfigError,
    MessageTooLarge,
    NotRunning,
    P2PError,
    PeerBanned,
    PeerUnreachable,
    RemoteError,
    RequestError,
    RequestTimeout,
    UnknownTopic,
    WrongChain,
)
from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of
from p2p.reqresp import BlocksHandler, ChainStatus, Head, StatusHandler
from p2p.scoring import (
    Misbehaviour,
    PeerScore,
    PeerScoreboard,
    RouterScorer,
    ScoreConfig,
    gossipsub_score_params,
)
from p2p.topics import (
    DEFAULT_BUDGET_MESSAGES,
    DEFAULT_BUDGET_SIZES,
    DEFAULT_BUDGETS,
    DEFAULT_MAX_MESSAGE_SIZE,
    TopicName,
    topic_id,
)
from p2p.tuning import MAX_RPC_SIZE, TunedRpcQueue, apply_library_tuning

logger = logging.getLogger(__name__)

DEFAULT_P2P_PORT = 30333

_T = TypeVar("_T")


class Verdict(Enum):
    """A validator's answer about one gossip message.

    ACCEPT delivers and relays it. REJECT drops it and penalises the peer that
    sent it (it is invalid by rules every honest node applies). MALFORMED is a
    REJECT that bans the peer at once (``malformed_message``, weight 100): for
    bytes no honest node ever sends, since it would have failed to decode them
    itself before relaying (undecodable, not canonical). IGNORE drops it
    without penalty (e.g. a duplicate, too old, for another height).
    """

    ACCEPT = "accept"
    REJECT = "reject"
    MALFORMED = "malformed"
    IGNORE = "ignore"


Validator = Callable[[str, bytes], "bool | Verdict | Awaitable[bool | Verdict]"]
"""``(peer_id, data) -> bool | Verdict``, sync or async. ``peer_id`` is the
peer that forwarded the message to us; True means ACCEPT, False REJECT. Any
exception means REJECT without penalty (and is logged: it is a node bug)."""


@dataclass(frozen=True)
class GossipConfig:
    """GossipSub v1.1 settings. The defaults are the ones measured to work here."""

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    # Mesh repair period in seconds (the library's default is 120, and its type is int).
    heartbeat_interval: int = 1
    # The library's spam gate counts every message per (forwarder, topic),
    # our own publishes included, and defaults to 10/s. Validators and
    # scoring do the real work; this only stops a runaway loop.
    max_messages_per_topic_per_second: float = 100_000.0
    seen_ttl: int = 120  # seconds a message id is remembered for deduplication
    validation_timeout: float = 5.0  # an async validator slower than this IGNOREs
    max_concurrent_validators: int = 32  # async validations in flight
    # IP-diversity grafting: useless when every peer is 127.0.0.1 (devnet).
    eclipse_protection: bool = False


@dataclass(frozen=True)
class P2PConfig:
    """Everything ``P2PNode`` needs; the defaults suit a LAN devnet."""

    key_path: Path
    chain_id: int
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_P2P_PORT  # 0 lets the OS choose (tests)
    # Full multiaddrs /ip4/HOST/tcp/PORT/p2p/PEER_ID. Our own id is skipped, so
    # every validator can share one list.
    bootstrap: tuple[str, ...] = ()
    gossip: GossipConfig = field(default_factory=GossipConfig)
    scoring: ScoreConfig = field(default_factory=ScoreConfig)
    inbox_size: int = 4096  # messages per topic waiting for the node
    request_timeout: float = 10.0
    dial_timeout: float = 5.0
    reconnect_min_backoff: float = 0.5
    reconnect_max_backoff: float = 30.0
    max_inbound_requests_per_peer: int = 8
    attestation_flush_interval: float = DEFAULT_FLUSH_INTERVAL
    attestation_max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    tx_flush_interval: float = TX_FLUSH_INTERVAL
    tx_max_batch_bytes: int = TX_MAX_BATCH_BYTES
    # Peer exchange (/motus/peers/1): dial peers learnt from peers while
    # connected to fewer than target_peers (0: dial only bootstrap peers);
    # inbound connections beyond max_peers are closed (bootstrap peers stay).
    target_peers: int = 8
    max_peers: int = 32
    peer_exchange_interval: float = 30.0  # seconds between asks of a random peer

    def __post_init__(self) -> None:
        if self.chain_id < 0:
            raise ConfigError("chain_id must be non-negative")
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError(f"listen_port {self.listen_port} is not a TCP port")
        if self.inbox_size < 1:
            raise ConfigError("inbox_size must be at least 1")
        if not 0 < self.reconnect_min_backoff <= self.reconnect_max_backoff:
            raise ConfigError("need 0 < reconnect_min_backoff <= reconnect_max_backoff")
        if self.request_timeout <= 0 or self.dial_timeout <= 0:
            raise ConfigError("timeouts must be positive")
        if not 0 <= self.target_peers <= self.max_peers or self.max_peers < 1:
            raise ConfigError("need 0 <= target_peers <= max_peers and max_peers >= 1")
        if self.peer_exchange_interval <= 0:
            raise ConfigError("peer_exchange_interval must be positive")
        gossip = self.gossip
        if not 0 < gossip.degree_low <= gossip.degree <= gossip.degree_high:
            raise ConfigError("need 0 < degree_low <= degree <= degree_high")
        if gossip.heartbeat_interval < 1:
            raise ConfigError("heartbeat_interval must be at least 1 s (the library takes an int)")


@dataclass(frozen=True)
class GossipMessage:
    """One accepted gossip message, as the node receives it."""

    topic: str  # the short name, e.g. "consensus"
    data: bytes
    origin: str  # peer id that created and signed it
    forwarder: str | None  # peer id that sent it to us (None if no longer known)
    message_id: bytes


@dataclass
class TopicStats:
    """Counters of one topic (monotonic, for metrics)."""

    published: int = 0
    accepted: int = 0
    ignored: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    over_budget: int = 0  # dropped unchecked: the forwarder was over its budget
    validator_errors: int = 0
    delivered: int = 0
    dropped_inbox_full: int = 0
    bytes_received: int = 0  # payloads from peers, before validation (metrics)
    bytes_published: int = 0  # payloads we published (relays are not counted)


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


@dataclass
class _Topic:
    name: str
    topic_id: str
    max_size: int
    validator: Validator
    budget: TopicBudget
    inbox_send: trio.MemorySendChannel[GossipMessage]
    inbox_receive: trio.MemoryReceiveChannel[GossipMessage]
    stats: TopicStats = field(default_factory=TopicStats)


@dataclass(frozen=True)
class _BootstrapPeer:
    peer_id: ID
    addrs: tuple[multiaddr.Multiaddr, ...]


# Forwarders remembered between validation and delivery, per node. Only
# messages still in the pipeline need one, so a few thousand is plenty.
_FORWARDER_MEMORY = 8192
# How often bans are reconciled with connections even without a trigger.
_BAN_SWEEP_INTERVAL = 1.0
# A connection that lasted this long was not refused: redial a lost one at once.
_STABLE_CONNECTION = 10.0
# Peer exchanges in flight at once (each is one small request).
_MAX_CONCURRENT_EXCHANGES = 4
# Newly connected peers waiting to be asked for their peers; more are dropped
# (the periodic exchange covers them).
_EXCHANGE_QUEUE = 64
# How often the discovery dialer looks at the peer count without a trigger.
_DIAL_SWEEP_INTERVAL = 1.0
# Longest a publish waits for a congested peer's outbound queue to drain.
_PUBLISH_MAX_WAIT = 0.5
# A writer that has not taken an RPC for this long is stuck, not slow (a
# write waits for the receiver's flow-control window, which can take a while).
_STALLED_WRITER = 2.0


class P2PNode:
    """A Motus libp2p node. Runs once, inside the caller's nursery (see module doc)."""

    def __init__(self, config: P2PConfig) -> None:
        apply_library_tuning()
        self.config = config
        self.key_pair = load_or_create_node_key(config.key_path)
        self.peer_id = peer_id_of(self.key_pair)
        self.scoreboard = PeerScoreboard(config.scoring)
        self.budgets = GossipBudgets()
        self._bootstrap = _parse_bootstrap(config.bootstrap, self.peer_id)
        self._topics: dict[str, _Topic] = {}
        self._topics_by_id: dict[str, _Topic] = {}
        self._status_handler: StatusHandler | None = None
        self._blocks_handler: BlocksHandler | None = None
        self._forwarders: OrderedDict[bytes, str] = OrderedDict()
        self._inbound_requests: dict[str, int] = {}
        self._state = "new"  # new -> running -> stopped
        self._ban_wakeup = trio.Event()
        self._disconnected = trio.Event()
        self._banned_disconnects = 0
        self.peer_book = PeerBook(
            self.peer_id,
            min_backoff=config.reconnect_min_backoff,
            max_backoff=config.reconnect_max_backoff,
        )
        self._exchange_send, self._exchange_receive = trio.open_memory_channel[str](
            _EXCHANGE_QUEUE
        )
        self._dial_wakeup = trio.Event()
        self._connected_at: dict[str, float] = {}
        self._trimmed_peers = 0
        self._exchanges_failed = 0

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
        self._host_id = self._host.get_id()
        gossip = config.gossip
        self._gossipsub = GossipSub(
            # v1.1 only: v1.2's IDONTWANT per message cost relays ~4x the CPU here.
            protocols=[PROTOCOL_ID_V11],
            degree=gossip.degree,
            degree_low=gossip.degree_low,
            degree_high=gossip.degree_high,
            heartbeat_interval=gossip.heartbeat_interval,
            score_params=gossipsub_score_params(),
            # "Adaptive gossip" stretches the heartbeat to 30-60 s whenever its
            # health estimate is below 0.7, which a small network always is.
            adaptive_gossip_enabled=False,
            spam_protection_enabled=True,
            max_messages_per_topic_per_second=gossip.max_messages_per_topic_per_second,
            eclipse_protection_enabled=gossip.eclipse_protection,
        )
        self._router_scorer = RouterScorer(gossipsub_score_params())
        self._gossipsub.scorer = self._router_scorer
        self._pubsub = _GuardedPubsub(
            self._host,
            self._gossipsub,
            seen_ttl=gossip.seen_ttl,
            strict_signing=True,
            max_concurrent_validator_count=gossip.max_concurrent_validators,
            validation_timeout=gossip.validation_timeout,
            max_inbound_rpc_size=MAX_RPC_SIZE,
            allowed_topics=frozenset(),
        )
        self._pubsub.gate = self._admit
        # Sequence numbers start at the process's start time in seconds and
        # count up per message, so a node that published more messages than
        # it was down for seconds would reuse (from, seqno) ids: peers drop
        # them as already seen. Nanoseconds leave no overlap.
        self._pubsub.counter = time.time_ns()

        self._network.register_notifee(_ConnectionWatch(self))
        self._host.set_stream_handler(reqresp.STATUS_PROTOCOL, self._serve_status)
        self._host.set_stream_handler(reqresp.BLOCKS_PROTOCOL, self._serve_blocks)
        self._host.set_stream_handler(discovery.PEERS_PROTOCOL, self._serve_peers)
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
        """Subscribe to topic ``name`` (before ``run``); return its inbox.

        ``validator`` runs on every message a peer sends, after the size check
        (``max_size``, default per topic in ``p2p.topics``) and the per-peer
        budget (``budget``, likewise; see ``p2p.budget``); only ACCEPTed
        messages are relayed and delivered. The inbox holds ``inbox_size``
        messages; when the node falls behind, new messages are dropped and
        counted in ``stats()``. Our own publishes are not delivered back.
        """
        if self._state != "new":
            raise ConfigError("register topics before run()")
        if name in self._topics:
            raise ConfigError(f"topic {name!r} is already registered")
        if not callable(validator):
            raise ConfigError("validator must be callable")
        limit = max_size if max_size is not None else DEFAULT_MAX_MESSAGE_SIZE.get(name)
        if limit is None:
            raise ConfigError(f"topic {name!r} has no default size limit: pass max_size")
        if not 0 < limit <= MAX_RPC_SIZE // 2:
            raise ConfigError(f"max_size must be in (0, {MAX_RPC_SIZE // 2}]")
        if budget is None:
            messages, per_second = DEFAULT_BUDGETS.get(
                name, (DEFAULT_BUDGET_MESSAGES, DEFAULT_BUDGET_SIZES * limit)
            )
            budget = TopicBudget(messages, per_second)
        send, receive = trio.open_memory_channel[GossipMessage](
            inbox_size or self.config.inbox_size
        )
        topic = _Topic(
            name, topic_id(self.config.chain_id, name), limit, validator, budget, send, receive
        )
        self._topics[name] = topic
        self._topics_by_id[topic.topic_id] = topic
        self.budgets.set_topic(topic.topic_id, budget, limit)
        self._pubsub.allowed_topics = frozenset(t.topic_id for t in self._topics.values())
        wrapped, is_async = self._wrap_validator(topic)
        self._pubsub.set_topic_validator(topic.topic_id, wrapped, is_async)
        return receive

    def inbox(self, name: str) -> trio.MemoryReceiveChannel[GossipMessage]:
        """The inbox of a registered topic (the channel ``register_topic`` returned)."""
        return self._topic(name).inbox_receive

    def set_status_handler(self, handler: StatusHandler) -> None:
        """Serve ``/motus/status/1`` with ``async handler(peer_id) -> Head``."""
        self._status_handler = handler

    def set_blocks_handler(self, handler: BlocksHandler) -> None:
        """Serve ``/motus/blocks/1`` with ``async handler(peer_id, start, end) -> [bytes]``."""
        self._blocks_handler = handler

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
            # Pubsub first: the host would otherwise accept pubsub streams (and
            # block its connection notifications) before pubsub can take them.
            async with (
                background_trio_service(self._pubsub),
                background_trio_service(self._gossipsub),
            ):
                await self._pubsub.wait_until_ready()
                subscriptions = {}
                for topic in self._topics.values():
                    subscriptions[topic.name] = await self._pubsub.subscribe(topic.topic_id)
                async with self._host.run([listen]):
                    # We own dialing: the auto-connector would redial banned
                    # peers and fill the negative cache behind our back.
                    swarm = self._network
                    if isinstance(swarm, Swarm):
                        await swarm.auto_connector.stop()
                    self._listen_addr = self._find_listen_addr()
                    async with trio.open_nursery() as nursery:
                        for topic in self._topics.values():
                            nursery.start_soon(self._drain, topic, subscriptions[topic.name])
                        for peer in self._bootstrap:
                            nursery.start_soon(self._keep_connected, peer)
                        nursery.start_soon(self._enforce_bans)
                        nursery.start_soon(self._exchange_peers)
                        nursery.start_soon(self._dial_discovered)
                        if TopicName.ATTESTATION in self._topics:
                            nursery.start_soon(self.attestations.run)
                        if TopicName.TX in self._topics:
                            nursery.start_soon(self.transactions.run)
                        logger.info("p2p listening on %s", self._listen_addr)
                        task_status.started(self._listen_addr)
                        await trio.sleep_forever()
        finally:
            self._state = "stopped"
            for topic in self._topics.values():
                topic.inbox_send.close()

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
        topic = self._topic(name)
        if len(data) > topic.max_size:
            raise MessageTooLarge(f"{len(data)} bytes on {name}, limit {topic.max_size}")
        if not self.running:
            raise NotRunning("publish needs run() to be active")
        await self._wait_for_outbound_room()
        await self._pubsub.publish(topic.topic_id, bytes(data))
        topic.stats.published += 1
        topic.stats.bytes_published += len(data)

    def mesh_peers(self, name: str) -> set[str]:
        """Peers our publishes on topic ``name`` reach now (its gossipsub mesh); empty
        before ``run`` and until the first heartbeat after a peer subscribes."""
        topic = self._topic(name)
        return {peer.to_base58() for peer in self._gossipsub.mesh.get(topic.topic_id, ())}

    async def _wait_for_outbound_room(self) -> None:
        """Hold a publisher back while most peers' outbound queues are over half full.

        Pubsub's publish only enqueues; a burst larger than a queue is dropped
        for that peer. Waiting here lets the writers catch up, so bursts slow
        the publisher instead. Only a majority of congested peers makes us
        wait, and only queues whose writer took an RPC in the last
        ``_STALLED_WRITER`` seconds count: one peer that reads slowly or not at
        all (a broken or hostile peer) must not throttle our consensus
        messages; its RPCs are dropped and counted instead. The wait is
        bounded by ``_PUBLISH_MAX_WAIT``.
        """
        deadline = trio.current_time() + _PUBLISH_MAX_WAIT
        while trio.current_time() < deadline:
            now = time.monotonic()
            queues = [q for q in self._pubsub.peer_queues.values() if isinstance(q, TunedRpcQueue)]
            congested = sum(
                1
                for queue in queues
                if len(queue) >= queue.capacity // 2 and now - queue.last_pop < _STALLED_WRITER
            )
            if congested * 2 <= len(queues):
                return
            await trio.sleep(0.002)

    async def _publish_attestation_batch(self, data: bytes) -> None:
        await self.publish(TopicName.ATTESTATION, data)

    async def _publish_tx_batch(self, data: bytes) -> None:
        await self.publish(TopicName.TX, data)

    def _wrap_validator(self, topic: _Topic) -> tuple[Callable[..., Any], bool]:
        """Wrap the node's validator for pubsub: size check first, never raises.

        A validator that raises inside pubsub kills the pubsub service (and
        the trio run) for a message any peer can send. So every path here
        returns a bool.
        """
        user = topic.validator
        is_async = inspect.iscoroutinefunction(user) or inspect.iscoroutinefunction(
            type(user).__call__  # an object whose __call__ is async
        )

        def precheck(forwarder: ID, msg: rpc_pb2.Message) -> Verdict | None:
            if forwarder == self._host_id:
                return Verdict.ACCEPT
            topic.stats.bytes_received += len(msg.data)
            if self.scoreboard.is_banned(forwarder.to_base58()):
                topic.stats.ignored += 1
                return Verdict.IGNORE
            return None  # size and budget were checked at the gate (_admit)

        def conclude(forwarder: ID, msg: rpc_pb2.Message, answer: object) -> bool:
            verdict = _as_verdict(answer)
            if verdict is Verdict.ACCEPT:
                topic.stats.accepted += 1
                self._remember_forwarder(msg, forwarder)
                return True
            if verdict is Verdict.REJECT:
                self._on_rejected(forwarder, msg, topic, Misbehaviour.INVALID_MESSAGE)
            elif verdict is Verdict.MALFORMED:
                self._on_rejected(forwarder, msg, topic, Misbehaviour.MALFORMED_MESSAGE)
            else:
                topic.stats.ignored += 1
            return False

        def on_error(forwarder: ID) -> bool:
            topic.stats.validator_errors += 1
            errors = topic.stats.validator_errors
            # Peers choose what reaches the validator: log a few tracebacks,
            # then a line now and then, not one per message.
            if errors <= 10 or errors % 1000 == 0:
                logger.exception(
                    "validator of topic %s raised on a message from %s (%d so far); "
                    "rejected without penalty",
                    topic.name,
                    forwarder,
                    errors,
                )
            return False

        if is_async:

            async def validate_async(forwarder: ID, msg: rpc_pb2.Message) -> bool:
                try:
                    early = precheck(forwarder, msg)
                    if early is not None:
                        return early is Verdict.ACCEPT
                    answer = await user(forwarder.to_base58(), bytes(msg.data))  # type: ignore[misc]
                    return conclude(forwarder, msg, answer)
                except Exception:
                    return on_error(forwarder)

            return validate_async, True

        def validate_sync(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            try:
                early = precheck(forwarder, msg)
                if early is not None:
                    return early is Verdict.ACCEPT
                answer = user(forwarder.to_base58(), bytes(msg.data))
                if inspect.isawaitable(answer):
                    if inspect.iscoroutine(answer):
                        answer.close()
                    raise TypeError("validator registered as sync returned an awaitable")
                return conclude(forwarder, msg, answer)
            except Exception:
                return on_error(forwarder)

        return validate_sync, False

    def _admit(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """First gate for a peer's message, before its signature is checked or the
        validator decodes it: the topic's size limit and the peer's budget."""
        if forwarder == self._host_id:
            return True  # our own publish
        if len(msg.topicIDs) != 1:
            # Our publishes carry exactly one topic. pubsub would run the validator once
            # per topic and count the budget of none: a second topic ID (even the same
            # one again) would bypass both. No honest peer sends it.
            self.penalise(forwarder.to_base58(), Misbehaviour.MALFORMED_MESSAGE)
            return False
        topic = self._topics_by_id.get(msg.topicIDs[0])
        if topic is None:
            return True
        size = len(msg.data)
        if size > topic.max_size:
            self._on_rejected(forwarder, msg, topic, Misbehaviour.OVERSIZE_MESSAGE)
            return False
        admission = self.budgets.admit(forwarder, topic.topic_id, size)
        if admission is Admission.ADMIT:
            return True
        topic.stats.over_budget += 1
        if admission is Admission.DROP_AND_PENALISE:
            logger.info("peer %s is over its budget on topic %s", forwarder, topic.name)
            self.penalise(forwarder.to_base58(), Misbehaviour.OVER_BUDGET)
        return False

    def _on_rejected(self, forwarder: ID, msg: rpc_pb2.Message, topic: _Topic, reason: str) -> None:
        reason = str(reason)
        topic.stats.rejected[reason] = topic.stats.rejected.get(reason, 0) + 1
        self._router_scorer.record_rejected(forwarder, topic.topic_id)
        peer = forwarder.to_base58()
        if self.scoreboard.penalise(peer, reason):
            self._on_banned(peer)

    def _remember_forwarder(self, msg: rpc_pb2.Message, forwarder: ID) -> None:
        self._forwarders[self._pubsub.get_message_id(msg)] = forwarder.to_base58()
        while len(self._forwarders) > _FORWARDER_MEMORY:
            self._forwarders.popitem(last=False)

    async def _drain(self, topic: _Topic, subscription: Any) -> None:
        """Move accepted messages from pubsub's small buffer into the node's inbox.

        Runs for each topic so that pubsub's buffer never fills (it would drop
        with only a log line); our inbox drops are counted per topic.
        """
        own = self._host_id.to_bytes()
        async for msg in subscription:
            message_id = self._pubsub.get_message_id(msg)
            forwarder = self._forwarders.pop(message_id, None)
            if msg.from_id == own:
                continue
            message = GossipMessage(
                topic=topic.name,
                data=bytes(msg.data),
                origin=_base58(msg.from_id),
                forwarder=forwarder,
                message_id=message_id,
            )
            try:
                topic.inbox_send.send_nowait(message)
                topic.stats.delivered += 1
            except trio.WouldBlock:
                topic.stats.dropped_inbox_full += 1
                dropped = topic.stats.dropped_inbox_full
                if dropped == 1 or dropped % 1000 == 0:
                    logger.warning(
                        "inbox of topic %s full: %d messages dropped so far", topic.name, dropped
                    )
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                # The node closed its end: keep draining so pubsub never blocks.
                topic.stats.dropped_inbox_full += 1

    # ------------------------------------------------------ peers and bans

    def penalise(self, peer_id: str, reason: str) -> None:
        """Lower ``peer_id``'s score for ``reason`` (weights in ``ScoreConfig``).

        For misbehaviour only the node can see, e.g. a consensus message of
        the right size whose signature does not verify. A peer reaching the
        threshold is disconnected and banned.
        """
        if self.scoreboard.penalise(peer_id, reason):
            self._on_banned(peer_id)

    def _on_banned(self, peer_id: str) -> None:
        """A ban just started: drop the peer's gossip from now on (pubsub checks its
        blacklist before anything else), and have the sweep disconnect it."""
        try:
            self._pubsub.blacklisted_peers.add(ID.from_base58(peer_id))
        except Exception:  # not a peer id (a node-side string); the sweep still runs
            pass
        self._ban_wakeup.set()

    def peers(self) -> list[ConnectedPeer]:
        """Peers with an open connection, with what we know of them."""
        bootstrap_ids = {peer.peer_id for peer in self._bootstrap}
        names_by_id = {topic.topic_id: topic.name for topic in self._topics.values()}
        result = []
        for peer_id, connections in self._network.get_connections_map().items():
            open_connections = [conn for conn in connections if not conn.is_closed]
            if not open_connections:
                continue
            addrs = tuple(
                str(addr) for conn in open_connections for addr in conn.get_transport_addresses()
            )
            topics = tuple(
                sorted(
                    names_by_id[topic]
                    for topic, members in self._pubsub.peer_topics.items()
                    if topic in names_by_id and peer_id in members
                )
            )
            mesh = tuple(
                sorted(
                    names_by_id[topic]
                    for topic, members in self._gossipsub.mesh.items()
                    if topic in names_by_id and peer_id in members
                )
            )
            queue = self._pubsub.peer_queues.get(peer_id)
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
        return self._is_connected(ID.from_base58(peer_id))

    def stats(self) -> dict[str, Any]:
        """Counters for metrics: per topic, the attestation batcher, peers."""
        return {
            "topics": {name: topic.stats for name, topic in self._topics.items()},
            "attestation_batcher": self.attestations.stats,
            "transaction_batcher": self.transactions.stats,
            "peers": len(self.peers()),
            "banned_peers": len(self.scoreboard.banned_peers()),
            # Connections to banned peers we closed: the ban itself, then each
            # time a banned peer dials us again.
            "banned_disconnects": self._banned_disconnects,
            # Gossip messages dropped unchecked for being over their peer's budget.
            "over_budget_dropped": self.budgets.dropped,
            # Process-wide: gossip RPCs lost to full per-peer outbound queues.
            "outbound_dropped": TunedRpcQueue.dropped_total,
            # Inbound pubsub streams dropped for undecodable frames.
            "malformed_pubsub_streams": self._pubsub.malformed_streams,
            # Peer exchange: peers reached and dial candidates, failed asks,
            # connections closed for being over max_peers.
            "peer_book": self.peer_book.known(),
            "peer_exchanges_failed": self._exchanges_failed,
            "trimmed_peers": self._trimmed_peers,
        }

    @property
    def _network(self) -> INetwork:
        return self._host.get_network()

    def _is_connected(self, peer_id: ID) -> bool:
        return any(not conn.is_closed for conn in self._network.get_connections(peer_id))

    async def _keep_connected(self, peer: _BootstrapPeer) -> None:
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
            if self._is_connected(peer.peer_id):
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
                if self._is_connected(peer.peer_id):
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

    async def _enforce_bans(self) -> None:
        """Keep connections and pubsub's blacklist in line with the scoreboard."""
        while True:
            with trio.move_on_after(_BAN_SWEEP_INTERVAL):
                await self._ban_wakeup.wait()
            self._ban_wakeup = trio.Event()
            banned = {ID.from_base58(peer) for peer in self.scoreboard.banned_peers()}
            for peer_id in banned:
                if not self._pubsub.is_peer_blacklisted(peer_id):
                    # Not add_to_blacklist(): its teardown task deletes the peer after
                    # an await, races the dead-peer handler that our disconnect below
                    # triggers, and its KeyError kills pubsub and the whole node. The
                    # disconnect does the teardown; the set makes pubsub drop the peer.
                    self._pubsub.blacklisted_peers.add(peer_id)
                if self._is_connected(peer_id):
                    self._banned_disconnects += 1
                    logger.debug("disconnecting banned peer %s", peer_id)
                    with trio.move_on_after(2.0):
                        await self._host.disconnect(peer_id)
            for peer_id in self._pubsub.get_blacklisted_peers() - banned:
                self._pubsub.remove_from_blacklist(peer_id)
                logger.info("ban of peer %s ended", peer_id)
            await self._trim_peers()

    async def _trim_peers(self) -> None:
        """Close the newest connections beyond ``max_peers``; bootstrap peers stay."""
        bootstrap = {peer.peer_id.to_base58() for peer in self._bootstrap}
        connected = [
            name for name in self._connected_at if self._is_connected(ID.from_base58(name))
        ]
        excess = len(connected) - self.config.max_peers
        if excess <= 0:
            return
        newest = sorted(
            (name for name in connected if name not in bootstrap),
            key=lambda name: -self._connected_at[name],
        )
        for name in newest[:excess]:
            self._trimmed_peers += 1
            logger.debug("over max_peers: disconnecting %s", name)
            with trio.move_on_after(2.0):
                await self._host.disconnect(ID.from_base58(name))

    # ------------------------------------------------------ peer exchange

    async def _exchange_peers(self) -> None:
        """Ask each newly connected peer, and a random peer every interval, for its peers."""
        limiter = trio.CapacityLimiter(_MAX_CONCURRENT_EXCHANGES)

        async def ask(peer_id: str) -> None:
            async with limiter:
                try:
                    learnt = await self.request_peers(peer_id)
                except P2PError as exc:
                    self._exchanges_failed += 1
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

    async def _dial_discovered(self) -> None:
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
            bootstrap = {peer.peer_id.to_base58() for peer in self._bootstrap}
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
        if self._is_connected(target):
            logger.info("connected to discovered peer %s", candidate.peer_id)
            return
        self.peer_book.dial_failed(candidate.peer_id)
        await trio.sleep(0)  # connect() may return without yielding (trap 18)

    def _on_connected(self, conn: INetConn) -> None:
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

    def _on_disconnected(self) -> None:
        for name in [n for n in self._connected_at if not self._is_connected(ID.from_base58(n))]:
            self._forget_connection(name)
        self._disconnected.set()
        self._disconnected = trio.Event()

    # ----------------------------------------------- request/response: serve

    async def _serve_status(self, stream: INetStream) -> None:
        async def answer(peer: str, request: bytes) -> bytes:
            # A peer on another chain gets our answer (with our chain id) and
            # drops us itself; banning it here would cut the answer off.
            reqresp.decode_status_request(request)
            if self._status_handler is None:
                return reqresp.encode_error(reqresp.ERR_UNAVAILABLE, "no status handler")
            head = await self._status_handler(peer)
            status = ChainStatus(self.config.chain_id, head.height, head.hash)
            return reqresp.encode_status_response(status)

        await self._serve(stream, answer)

    async def _serve_blocks(self, stream: INetStream) -> None:
        async def answer(peer: str, request: bytes) -> bytes:
            start, end = reqresp.compute_served_range(*reqresp.decode_blocks_request(request))
            if self._blocks_handler is None:
                return reqresp.encode_error(reqresp.ERR_UNAVAILABLE, "no blocks handler")
            blocks = list(await self._blocks_handler(peer, start, end))
            if len(blocks) > end - start + 1 or not all(isinstance(b, bytes) for b in blocks):
                raise TypeError("blocks handler must return at most end-start+1 bytes items")
            try:
                return reqresp.encode_blocks_response(reqresp.fit_blocks_response(blocks))
            except MessageTooLarge as exc:
                return reqresp.encode_error(reqresp.ERR_TOO_LARGE, exc.message)

        await self._serve(stream, answer)

    async def _serve(
        self, stream: INetStream, answer: Callable[[str, bytes], Awaitable[bytes]]
    ) -> None:
        """Read one bounded request, answer it, close. Misbehaviour is scored."""
        peer = stream.muxed_conn.peer_id.to_base58()
        if self.scoreboard.is_banned(peer):
            await _reset(stream)
            return
        in_flight = self._inbound_requests.get(peer, 0)
        if in_flight >= self.config.max_inbound_requests_per_peer:
            self.penalise(peer, Misbehaviour.REQUEST_FLOOD)
            await _reset(stream)
            return
        self._inbound_requests[peer] = in_flight + 1
        try:
            with trio.move_on_after(self.config.request_timeout) as scope:
                try:
                    request = await reqresp.read_frame(stream, reqresp.MAX_REQUEST_SIZE)
                except MessageTooLarge:
                    self.penalise(peer, Misbehaviour.OVERSIZE_REQUEST)
                    await _reset(stream)
                    return
                try:
                    response = await answer(peer, request)
                except BadRequest as exc:
                    self.penalise(peer, Misbehaviour.MALFORMED_REQUEST)
                    response = reqresp.encode_error(reqresp.ERR_BAD_REQUEST, exc.message)
                except Exception:
                    logger.exception("request handler failed for peer %s", peer)
                    response = reqresp.encode_error(reqresp.ERR_INTERNAL, "handler failed")
                await reqresp.write_frame(stream, response)
                await stream.close()
            if scope.cancelled_caught:
                await _reset(stream)
        except Exception as exc:  # the peer hung up or reset mid-exchange
            logger.debug("request stream from %s failed: %s", peer, exc)
            await _reset(stream)
        finally:
            remaining = self._inbound_requests.get(peer, 1) - 1
            if remaining > 0:
                self._inbound_requests[peer] = remaining
            else:
                self._inbound_requests.pop(peer, None)

    async def _serve_peers(self, stream: INetStream) -> None:
        async def answer(peer: str, request: bytes) -> bytes:
            wanted = discovery.decode_peers_request(request)
            shared = self.peer_book.shareable(
                wanted, exclude={peer}, is_banned=self.scoreboard.is_banned
            )
            return discovery.encode_peers_response(shared)

        await self._serve(stream, answer)

    # ---------------------------------------------- request/response: client

    async def request_peers(self, peer_id: str) -> list[PeerAddrs]:
        """Ask ``peer_id`` for peers it reached recently (at most 32, with addresses).

        Unusable addresses are dropped; a malformed or oversized answer raises
        ``BadResponse`` and penalises the peer. Other failures raise a
        ``RequestError`` subclass.
        """
        wanted = discovery.MAX_PEERS_PER_RESPONSE
        raw = await self._request(
            peer_id,
            discovery.PEERS_PROTOCOL,
            discovery.encode_peers_request(wanted),
            discovery.MAX_PEERS_RESPONSE_SIZE,
        )
        return self._decode_or_penalise(
            peer_id, lambda data: discovery.decode_peers_response(data, wanted), raw
        )


    async def request_status(self, peer_id: str) -> ChainStatus:
        """Ask ``peer_id`` for its head. ``WrongChain`` if it is on another chain.

        Raises a ``RequestError`` subclass on failure (timeout, unreachable,
        banned, bad or error response).
        """
        payload = reqresp.encode_status_request(self.config.chain_id)
        raw = await self._request(
            peer_id, reqresp.STATUS_PROTOCOL, payload, reqresp.MAX_STATUS_RESPONSE_SIZE
        )
        status = self._decode_or_penalise(peer_id, reqresp.decode_status_response, raw)
        if status.chain_id != self.config.chain_id:
            self.penalise(peer_id, Misbehaviour.WRONG_CHAIN)
            raise WrongChain(
                f"peer is on chain {status.chain_id}, we are on {self.config.chain_id}"
            )
        return status

    async def request_blocks(self, peer_id: str, start: int, end: int) -> list[bytes]:
        """Ask ``peer_id`` for blocks ``start``..``end`` inclusive.

        The answer holds consecutive blocks from ``start``: at most 128 and
        8 MiB, possibly fewer (none if the peer lacks them); ask again from
        where it stopped. Raises ``BadRequest`` for an invalid range, else a
        ``RequestError`` subclass on failure.
        """
        if not 0 <= start <= end <= reqresp.MAX_UINT64:
            raise BadRequest(f"invalid height range {start}..{end}")
        served_start, served_end = reqresp.compute_served_range(start, end)
        payload = reqresp.encode_blocks_request(start, end)
        raw = await self._request(
            peer_id, reqresp.BLOCKS_PROTOCOL, payload, reqresp.MAX_BLOCKS_RESPONSE_BYTES
        )
        requested = served_end - served_start + 1
        return self._decode_or_penalise(
            peer_id, lambda data: reqresp.decode_blocks_response(data, requested), raw
        )

    async def _request(
        self, peer_id: str, protocol: TProtocol, payload: bytes, limit: int
    ) -> bytes:
        if not self.running:
            raise NotRunning("requests need run() to be active")
        if self.scoreboard.is_banned(peer_id):
            raise PeerBanned(
                f"peer {peer_id} is banned for {self.scoreboard.ban_remaining(peer_id):.0f} s"
            )
        try:
            target = ID.from_base58(peer_id)
        except Exception as exc:
            raise BadRequest(f"not a peer id: {peer_id!r}") from exc
        stream: INetStream | None = None
        try:
            with trio.fail_after(self.config.request_timeout):
                try:
                    stream = await self._host.new_stream(target, [protocol])
                except Exception as exc:  # dial and negotiation failures vary
                    raise PeerUnreachable(f"cannot open {protocol} to {peer_id}: {exc}") from exc
                try:
                    await reqresp.write_frame(stream, payload)
                    raw = await reqresp.read_frame(stream, limit)
                except MessageTooLarge as exc:
                    self.penalise(peer_id, Misbehaviour.BAD_RESPONSE)
                    raise BadResponse(f"response over {limit} bytes") from exc
                except Exception as exc:  # reset, EOF, closed connection
                    raise PeerUnreachable(
                        f"{protocol} exchange with {peer_id} failed: {exc}"
                    ) from exc
        except trio.TooSlowError as exc:
            if stream is not None:
                await _reset(stream)
            raise RequestTimeout(
                f"{protocol} to {peer_id}: no answer in {self.config.request_timeout} s"
            ) from exc
        except RequestError:
            if stream is not None:
                await _reset(stream)
            raise
        await _close(stream)
        return raw

    def _decode_or_penalise(self, peer_id: str, decode: Callable[[bytes], _T], raw: bytes) -> _T:
        try:
            return decode(raw)
        except RemoteError:
            raise
        except BadResponse:
            self.penalise(peer_id, Misbehaviour.BAD_RESPONSE)
            raise

    # ---------------------------------------------------------------- misc

    def _topic(self, name: str) -> _Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} is not registered")
        return topic

    def _find_listen_addr(self) -> str:
        for addr in self._host.get_transport_addrs():
            port = addr.value_for_protocol("tcp")
            if port is not None:
                return node_multiaddr(self.config.listen_host, int(port), self.peer_id)
        raise P2PError("host is not listening on TCP")


class _GuardedPubsub(Pubsub):
    """Pubsub whose inbound stream handler never lets a peer's bytes crash the node.

    The library catches only its own stream and framing errors: an RPC frame that
    is not valid protobuf raises ``DecodeError`` out of the handler, through the
    connection's service, and takes the swarm (the whole node) down. Any peer can
    send such a frame, and a write cut off by a disconnect can produce one.

    A banned (blacklisted) peer's stream is refused outright: the library would
    still record its subscriptions, then queue every message we publish for it
    (warning each time) during the moment it stays connected after a redial.

    Dropped streams are counted (``malformed_streams``) but not penalised: a
    peer cannot be blamed with certainty for bytes cut off by a disconnect.

    Writes to one peer's stream are serialised (``write_msg``). The library writes
    from the per-peer queue's task and, directly, from the replay of recent
    messages and of identify-pending messages when a peer (re)subscribes; a yamux
    write is split into frames whenever the send window is short, so two writers
    interleave their frames and the receiver reads garbage. Under load that broke
    honest streams about once a second (each break made the peer resubscribe, which
    replayed the message cache again) and consensus stalled (docs/network.md)."""

    malformed_streams = 0
    _write_locks: weakref.WeakKeyDictionary[INetStream, trio.Lock]
    # ``(forwarder, msg) -> bool``: the node's size and budget gate (``P2PNode._admit``).
    gate: Callable[[ID, rpc_pb2.Message], bool] | None = None

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """The library's push, behind our gate: a message from a peer that is over
        its budget, or over the topic's size limit, costs no signature check and
        no validation. Duplicates and banned peers are dropped first (cheaply)."""
        gate = self.gate
        if (
            gate is not None
            and not self.is_peer_blacklisted(msg_forwarder)
            and not self._is_msg_seen(msg)
        ):
            try:
                admitted = gate(msg_forwarder, msg)
            except Exception:  # a bug here must not kill pubsub (trap 2); validators still run
                logger.exception("gossip gate failed on a message from %s", msg_forwarder)
                admitted = True
            if not admitted:
                return
        await super().push_msg(msg_forwarder, msg)

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        locks = self.__dict__.get("_write_locks")
        if locks is None:
            locks = self._write_locks = weakref.WeakKeyDictionary()
        lock = locks.get(stream)
        if lock is None:
            lock = locks[stream] = trio.Lock()
        async with lock:
            return await super().write_msg(stream, rpc_msg)

    async def stream_handler(self, stream: INetStream) -> None:
        peer_id = stream.muxed_conn.peer_id
        if self.is_peer_blacklisted(peer_id):
            await _reset(stream)
            return
        try:
            await super().stream_handler(stream)
        except Exception as exc:  # whatever the bytes were, drop this stream only
            logger.info("pubsub stream from %s dropped: %s: %s", peer_id, type(exc).__name__, exc)
            self.malformed_streams += 1
            await _reset(stream)
            self._handle_dead_peer(peer_id)


class _ConnectionWatch(INotifee):
    """Tells the node about connections: banned peers dialing in, disconnects."""

    def __init__(self, node: P2PNode) -> None:
        self._node = node

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._node._on_connected(conn)
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._node._on_disconnected()
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


def _parse_bootstrap(addrs: Sequence[str], own_peer_id: str) -> list[_BootstrapPeer]:
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
    return [_BootstrapPeer(peer_id, tuple(found)) for peer_id, found in grouped.items()]


def _as_verdict(answer: object) -> Verdict:
    if isinstance(answer, Verdict):
        return answer
    if isinstance(answer, bool):
        return Verdict.ACCEPT if answer else Verdict.REJECT
    raise TypeError(f"validator returned {type(answer).__name__}, expected bool or Verdict")


def _base58(peer_id_bytes: bytes) -> str:
    try:
        return ID(peer_id_bytes).to_base58()
    except Exception:
        return peer_id_bytes.hex()


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(1.0):
        try:
            await stream.reset()
        except Exception:
            logger.debug("stream reset failed", exc_info=True)


async def _close(stream: INetStream | None) -> None:
    if stream is None:
        return
    with trio.move_on_after(1.0):
        try:
            await stream.close()
        except Exception:
            logger.debug("stream close failed", exc_info=True)


__all__ = [
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
