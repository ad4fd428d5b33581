"""Gossip: topics, their validators, the gate before validation, and the inbox per topic.

:class:`Gossip` owns py-libp2p's pubsub and GossipSub router for one host. A message
from a peer passes, in order: pubsub's blacklist and seen cache, :meth:`Gossip.admit`
(exactly one topic id, the topic's size limit, the forwarder's budget), pubsub's
signature check, then the node's validator (wrapped so it can never raise into pubsub).
Accepted messages are moved at once from pubsub's small buffer into the topic's inbox.
Rejections and malformed bytes penalise the forwarder through the ``penalise``
callable the host hands in (peer scoring lives in :mod:`p2p.peers`). docs/p2p.md,
"Topics and size limits".
"""

from __future__ import annotations

import inspect
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import trio
from libp2p.abc import IHost, INetStream
from libp2p.exceptions import ValidationError
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub, ValidationCache, ValidationResult
from libp2p.tools.anyio_service import background_trio_service

from p2p.budget import Admission, GossipBudgets, TopicBudget
from p2p.errors import ConfigError, MessageTooLarge, UnknownTopic
from p2p.scoring import Misbehaviour, PeerScoreboard, RouterScorer, gossipsub_score_params
from p2p.streams import base58, reset
from p2p.topics import (
    DEFAULT_BUDGET_MESSAGES,
    DEFAULT_BUDGET_SIZES,
    DEFAULT_BUDGETS,
    DEFAULT_MAX_MESSAGE_SIZE,
    topic_id,
)
from p2p.tuning import MAX_RPC_SIZE, TunedRpcQueue

logger = logging.getLogger(__name__)

# Forwarders remembered between validation and delivery, per node. Only
# messages still in the pipeline need one, so a few thousand is plenty.
_FORWARDER_MEMORY = 8192
# Longest a publish waits for a congested peer's outbound queue to drain.
_PUBLISH_MAX_WAIT = 0.5
# A writer that has not taken an RPC for this long is stuck, not slow (a
# write waits for the receiver's flow-control window, which can take a while).
_STALLED_WRITER = 2.0


class _ForwardersRefusal:
    """What a topic validator's wrapper returns for a refusal that is the forwarder's and
    not the message's (``Verdict.IGNORE_FORWARDER``): false to pubsub (dropped), and
    ``GuardedPubsub.validate_msg`` does not cache it for the message id."""

    def __bool__(self) -> bool:
        return False


FORWARDERS_REFUSAL = _ForwardersRefusal()


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
    # IGNORE for a reason that is the forwarder's, not the message's (its quota spent, a
    # banned relay): no penalty, and not remembered for the message id, so the same
    # message from another peer is checked on its own
    IGNORE_FORWARDER = "ignore_forwarder"


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
    received: int = 0  # copies from peers, duplicates (relays of a message seen) included
    accepted: int = 0
    ignored: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    over_budget: int = 0  # dropped unchecked: the forwarder was over its budget
    validator_errors: int = 0
    delivered: int = 0
    dropped_inbox_full: int = 0
    bytes_received: int = 0  # payloads from peers, before validation (metrics)
    bytes_published: int = 0  # payloads we published (relays are not counted)


@dataclass
class Topic:
    name: str
    topic_id: str
    max_size: int
    validator: Validator
    budget: TopicBudget
    inbox_send: trio.MemorySendChannel[GossipMessage]
    inbox_receive: trio.MemoryReceiveChannel[GossipMessage]
    stats: TopicStats = field(default_factory=TopicStats)



class Gossip:
    """Topics of one host: registration, publishing, validation and delivery.

    ``penalise(peer_id, reason)`` is how a forwarder's misbehaviour is scored (and a
    ban started); ``scoreboard`` answers whether a peer is banned now.
    """

    def __init__(
        self,
        host: IHost,
        chain_id: int,
        config: GossipConfig,
        *,
        scoreboard: PeerScoreboard,
        budgets: GossipBudgets,
        inbox_size: int,
        penalise: Callable[[str, str], None],
    ) -> None:
        self.chain_id = chain_id
        self.scoreboard = scoreboard
        self.budgets = budgets
        self.inbox_size = inbox_size
        self._penalise = penalise
        self._host_id = host.get_id()
        self.topics: dict[str, Topic] = {}
        self._topics_by_id: dict[str, Topic] = {}
        self._forwarders: OrderedDict[bytes, str] = OrderedDict()
        self.router = GossipSub(
            # v1.1 only: v1.2's IDONTWANT per message cost relays ~4x the CPU here.
            protocols=[PROTOCOL_ID_V11],
            degree=config.degree,
            degree_low=config.degree_low,
            degree_high=config.degree_high,
            heartbeat_interval=config.heartbeat_interval,
            score_params=gossipsub_score_params(),
            # "Adaptive gossip" stretches the heartbeat to 30-60 s whenever its
            # health estimate is below 0.7, which a small network always is.
            adaptive_gossip_enabled=False,
            spam_protection_enabled=True,
            max_messages_per_topic_per_second=config.max_messages_per_topic_per_second,
            eclipse_protection_enabled=config.eclipse_protection,
        )
        self._router_scorer = RouterScorer(gossipsub_score_params())
        self.router.scorer = self._router_scorer
        self.pubsub = GuardedPubsub(
            host,
            self.router,
            seen_ttl=config.seen_ttl,
            strict_signing=True,
            max_concurrent_validator_count=config.max_concurrent_validators,
            validation_timeout=config.validation_timeout,
            max_inbound_rpc_size=MAX_RPC_SIZE,
            allowed_topics=frozenset(),
        )
        self.pubsub.gate = self.admit
        self.pubsub.count_copy = self._count_copy
        # Sequence numbers start at the process's start time in seconds and
        # count up per message, so a node that published more messages than
        # it was down for seconds would reuse (from, seqno) ids: peers drop
        # them as already seen. Nanoseconds leave no overlap.
        self.pubsub.counter = time.time_ns()

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
        if name in self.topics:
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
        send, receive = trio.open_memory_channel[GossipMessage](inbox_size or self.inbox_size)
        topic = Topic(name, topic_id(self.chain_id, name), limit, validator, budget, send, receive)
        self.topics[name] = topic
        self._topics_by_id[topic.topic_id] = topic
        self.budgets.set_topic(topic.topic_id, budget, limit)
        self.pubsub.allowed_topics = frozenset(t.topic_id for t in self.topics.values())
        wrapped, is_async = self._wrap_validator(topic)
        self.pubsub.set_topic_validator(topic.topic_id, wrapped, is_async)
        return receive

    def topic(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} is not registered")
        return topic

    @asynccontextmanager
    async def running(self) -> AsyncIterator[dict[str, Any]]:
        """Pubsub and the router running, every topic subscribed: yields the subscriptions
        by topic name for :meth:`drain`. Enter before the host listens: the host would
        otherwise accept pubsub streams (and block its connection notifications) before
        pubsub can take them."""
        try:
            async with (
                background_trio_service(self.pubsub),
                background_trio_service(self.router),
            ):
                await self.pubsub.wait_until_ready()
                subscriptions = {}
                for topic in self.topics.values():
                    subscriptions[topic.name] = await self.pubsub.subscribe(topic.topic_id)
                yield subscriptions
        finally:
            for topic in self.topics.values():
                topic.inbox_send.close()

    def check_publish(self, name: str, data: bytes) -> Topic:
        """The topic ``data`` may be published on: ``UnknownTopic`` or ``MessageTooLarge``
        (over the topic's limit) otherwise."""
        topic = self.topic(name)
        if len(data) > topic.max_size:
            raise MessageTooLarge(f"{len(data)} bytes on {name}, limit {topic.max_size}")
        return topic

    async def publish(self, name: str, data: bytes) -> None:
        """Publish ``data`` on topic ``name`` (the host checks that it runs first).

        Raises ``UnknownTopic`` or ``MessageTooLarge`` (over the topic limit).
        """
        topic = self.check_publish(name, data)
        await self._wait_for_outbound_room()
        await self.pubsub.publish(topic.topic_id, bytes(data))
        topic.stats.published += 1
        topic.stats.bytes_published += len(data)

    def mesh_peers(self, name: str) -> set[str]:
        """Peers our publishes on topic ``name`` reach now (its gossipsub mesh); empty
        before ``run`` and until the first heartbeat after a peer subscribes."""
        topic = self.topic(name)
        return {peer.to_base58() for peer in self.router.mesh.get(topic.topic_id, ())}

    def topics_of(self, peer_id: ID) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Our topic names ``peer_id`` subscribes to, and those whose mesh includes it."""
        names_by_id = {topic.topic_id: topic.name for topic in self.topics.values()}
        subscribed = tuple(sorted(
            names_by_id[t] for t, members in self.pubsub.peer_topics.items()
            if t in names_by_id and peer_id in members
        ))
        mesh = tuple(sorted(
            names_by_id[t] for t, members in self.router.mesh.items()
            if t in names_by_id and peer_id in members
        ))
        return subscribed, mesh

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
            queues = [q for q in self.pubsub.peer_queues.values() if isinstance(q, TunedRpcQueue)]
            congested = sum(
                1
                for queue in queues
                if len(queue) >= queue.capacity // 2 and now - queue.last_pop < _STALLED_WRITER
            )
            if congested * 2 <= len(queues):
                return
            await trio.sleep(0.002)

    def _wrap_validator(self, topic: Topic) -> tuple[Callable[..., Any], bool]:
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
                return Verdict.IGNORE_FORWARDER
            return None  # size and budget were checked at the gate (_admit)

        def conclude(forwarder: ID, msg: rpc_pb2.Message,
                     answer: object) -> bool | _ForwardersRefusal:
            verdict = as_verdict(answer)
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
                if verdict is Verdict.IGNORE_FORWARDER:
                    return FORWARDERS_REFUSAL
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

            async def validate_async(forwarder: ID,
                                     msg: rpc_pb2.Message) -> bool | _ForwardersRefusal:
                try:
                    early = precheck(forwarder, msg)
                    if early is not None:
                        return _early_answer(early)
                    answer = await user(forwarder.to_base58(), bytes(msg.data))  # type: ignore[misc]
                    return conclude(forwarder, msg, answer)
                except Exception:
                    return on_error(forwarder)

            return validate_async, True

        def validate_sync(forwarder: ID, msg: rpc_pb2.Message) -> bool | _ForwardersRefusal:
            try:
                early = precheck(forwarder, msg)
                if early is not None:
                    return _early_answer(early)
                answer = user(forwarder.to_base58(), bytes(msg.data))
                if inspect.isawaitable(answer):
                    if inspect.iscoroutine(answer):
                        answer.close()
                    raise TypeError("validator registered as sync returned an awaitable")
                return conclude(forwarder, msg, answer)
            except Exception:
                return on_error(forwarder)

        return validate_sync, False

    def _count_copy(self, msg: rpc_pb2.Message) -> None:
        """Every copy a peer sends us, before the seen cache drops duplicates (metrics:
        copies per first delivery is what relays cost)."""
        if len(msg.topicIDs) == 1:
            topic = self._topics_by_id.get(msg.topicIDs[0])
            if topic is not None:
                topic.stats.received += 1

    def admit(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """First gate for a peer's message, before its signature is checked or the
        validator decodes it: the topic's size limit and the peer's budget."""
        if forwarder == self._host_id:
            return True  # our own publish
        if len(msg.topicIDs) != 1:
            # Our publishes carry exactly one topic. pubsub would run the validator once
            # per topic and count the budget of none: a second topic ID (even the same
            # one again) would bypass both. No honest peer sends it.
            self._penalise(forwarder.to_base58(), Misbehaviour.MALFORMED_MESSAGE)
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
            self._penalise(forwarder.to_base58(), Misbehaviour.OVER_BUDGET)
        return False

    def _on_rejected(self, forwarder: ID, msg: rpc_pb2.Message, topic: Topic, reason: str) -> None:
        reason = str(reason)
        topic.stats.rejected[reason] = topic.stats.rejected.get(reason, 0) + 1
        self._router_scorer.record_rejected(forwarder, topic.topic_id)
        self._penalise(forwarder.to_base58(), reason)

    def _remember_forwarder(self, msg: rpc_pb2.Message, forwarder: ID) -> None:
        self._forwarders[self.pubsub.get_message_id(msg)] = forwarder.to_base58()
        while len(self._forwarders) > _FORWARDER_MEMORY:
            self._forwarders.popitem(last=False)

    async def drain(self, topic: Topic, subscription: Any) -> None:
        """Move accepted messages from pubsub's small buffer into the node's inbox.

        Runs for each topic so that pubsub's buffer never fills (it would drop
        with only a log line); our inbox drops are counted per topic.
        """
        own = self._host_id.to_bytes()
        async for msg in subscription:
            message_id = self.pubsub.get_message_id(msg)
            forwarder = self._forwarders.pop(message_id, None)
            if msg.from_id == own:
                continue
            message = GossipMessage(
                topic=topic.name,
                data=bytes(msg.data),
                origin=base58(msg.from_id),
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


class GuardedPubsub(Pubsub):
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
    # message id -> (the end of its copy being pushed, the peers whose copies are in or
    # waiting for it)
    _flights: dict[bytes, tuple[trio.Event, set[ID]]]
    # ``(forwarder, msg) -> bool``: the node's size and budget gate (``Gossip.admit``).
    gate: Callable[[ID, rpc_pb2.Message], bool] | None = None
    # ``(msg) -> None``: counts every copy received (``Gossip._count_copy``).
    count_copy: Callable[[rpc_pb2.Message], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flights = {}
        self.validation_cache = LruValidationCache(self.validation_cache.ttl,
                                                   self.validation_cache.max_size)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """The library's push, behind our gate: a message from a peer that is over
        its budget, or over the topic's size limit, costs no signature check and
        no validation. Duplicates and banned peers are dropped first (cheaply).

        One copy of a message is validated at a time. The library marks a message
        seen only once its validation has ended, and runs each copy in a task of its
        own, so the copies a mesh brings while the first is still being validated
        (in a mesh of four, the origin's and both relays', within milliseconds) were
        each validated, delivered and relayed again: an attestation batch's signatures
        were recovered up to three times (docs/p2p.md, trap 25). A later copy goes
        through the gate (charged as before), waits for the first's push, and then takes
        the library's path for a seen message (dropped) or for a cached failed verdict
        (dropped, not charged: ``RouterScorer``); a verdict that was the forwarder's
        (``Verdict.IGNORE_FORWARDER``, a validation timeout) is not cached, so it
        validates the message itself. A second copy from a peer whose copy is already
        in or waiting is dropped at once."""
        gate = self.gate
        if self.count_copy is not None and msg_forwarder != self.my_id:
            self.count_copy(msg)
        msg_id = self._msg_id_constructor(msg)
        flights = self._flights
        flight = flights.get(msg_id)
        if flight is not None:
            if msg_forwarder in flight[1]:
                return  # the same peer again while its copy waits: nothing to add
            flight[1].add(msg_forwarder)
        if (
            gate is not None
            and not self.is_peer_blacklisted(msg_forwarder)
            and not self._is_msg_seen(msg)
        ):  # charged as any copy before the seen mark is, refused at once past it
            try:
                admitted = gate(msg_forwarder, msg)
            except Exception:  # a bug here must not kill pubsub (trap 2); validators still run
                logger.exception("gossip gate failed on a message from %s", msg_forwarder)
                admitted = True
            if not admitted:
                return
        while (flight := flights.get(msg_id)) is not None:
            flight[1].add(msg_forwarder)
            await flight[0].wait()
        done = trio.Event()
        flights[msg_id] = (done, {msg_forwarder})
        try:
            await super().push_msg(msg_forwarder, msg)
        finally:
            del flights[msg_id]
            done.set()

    async def validate_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """The library's validation (cached result per message id, sync validators, then
        async ones under the timeout and the semaphore; ``ValidationError`` when one
        fails), without its two costs per message: its cache's LRU list (replaced by
        ``LruValidationCache``) and ``str(msg)`` in the error (the text form of a 64 KiB
        batch, ~10 ms; 1.4 s of a validator's loop in the four-validator bench for 144
        ignored batches). Our topics have one validator each, so async ones run in turn."""
        msg_id = self._msg_id_constructor(msg)
        cached = self.validation_cache.get(msg_id)
        if cached is not None:
            if not cached.is_valid:
                raise ValidationError(f"cached validation failed: {cached.error_message}")
            return
        error = None
        cacheable = True
        validators = self.get_msg_validators(msg)
        for topic_validator in sorted(validators, key=lambda v: v.is_async):
            try:
                if topic_validator.is_async:
                    with trio.move_on_after(self.validation_timeout) as scope:
                        async with self._validator_semaphore:
                            ok = await topic_validator.validator(msg_forwarder, msg)  # type: ignore[misc]
                    if scope.cancelled_caught:
                        error = "Validation timeout"
                        break
                else:
                    ok = topic_validator.validator(msg_forwarder, msg)
            except Exception as exc:  # ours never raise (_wrap_validator); the library's way
                error = f"Validation error: {type(exc).__name__}"
                break
            if not ok:
                error = "Validation failed"
                cacheable = ok is not FORWARDERS_REFUSAL
                break
        if error is None or (cacheable and error != "Validation timeout"):
            # (a refusal for the forwarder's sake, or a timeout under load, says nothing
            # of the message: another peer's copy is validated on its own)
            self.validation_cache.put(
                msg_id, ValidationResult(is_valid=error is None, timestamp=time.time(),
                                         error_message=error))
        if error is not None:
            raise ValidationError(f"{error} for message {msg_id.hex()}")

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
            await reset(stream)
            return
        try:
            await super().stream_handler(stream)
        except Exception as exc:  # whatever the bytes were, drop this stream only
            logger.info("pubsub stream from %s dropped: %s: %s", peer_id, type(exc).__name__, exc)
            self.malformed_streams += 1
            await reset(stream)
            self._handle_dead_peer(peer_id)


class LruValidationCache(ValidationCache):
    """The library's validation result cache, its LRU order an ``OrderedDict``: the
    library keeps it in a list, scanned and shifted on every put (~0.25 ms at its
    1,000 entries, once per message received)."""

    def __init__(self, ttl: int = 300, max_size: int = 1000) -> None:
        super().__init__(ttl, max_size)
        self.entries: OrderedDict[bytes, ValidationResult] = OrderedDict()

    def get(self, msg_id: bytes) -> ValidationResult | None:
        result = self.entries.get(msg_id)
        if result is None:
            return None
        if time.time() - result.timestamp > self.ttl:
            del self.entries[msg_id]
            return None
        self.entries.move_to_end(msg_id)
        return result

    def put(self, msg_id: bytes, result: ValidationResult) -> None:
        self.entries[msg_id] = result
        self.entries.move_to_end(msg_id)
        while len(self.entries) > self.max_size:
            self.entries.popitem(last=False)

    def _remove(self, msg_id: bytes) -> None:
        self.entries.pop(msg_id, None)

    def clear_expired(self) -> None:
        now = time.time()
        for msg_id in [k for k, r in self.entries.items() if now - r.timestamp > self.ttl]:
            del self.entries[msg_id]


def _early_answer(verdict: Verdict) -> bool | _ForwardersRefusal:
    """The wrapper's answer to pubsub for a verdict given before the node's validator."""
    if verdict is Verdict.IGNORE_FORWARDER:
        return FORWARDERS_REFUSAL
    return verdict is Verdict.ACCEPT


def as_verdict(answer: object) -> Verdict:
    if isinstance(answer, Verdict):
        return answer
    if isinstance(answer, bool):
        return Verdict.ACCEPT if answer else Verdict.REJECT
    raise TypeError(f"validator returned {type(answer).__name__}, expected bool or Verdict")
