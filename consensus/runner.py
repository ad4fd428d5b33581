"""A thin trio driver around :class:`ConsensusMachine`, for real nodes.

The runner owns the machine and feeds it one event at a time from a single
inbox (messages from the network, expired timers, the start of the next
height), so the machine never sees concurrent calls. It turns the machine's
effects into I/O: ``Broadcast`` -> the ``broadcast`` callback with wire bytes,
``ScheduleTimeout`` -> a trio timer, ``Decide`` -> the ``on_decide`` callback
and, after the commit wait, the next height with the validator set from
``next_validators``; ``EvidenceFound`` -> ``on_evidence``; ``InvalidMessage``
-> ``on_invalid`` with the peer that sent it, so the node can penalise it.

Wire bytes are produced and parsed by :mod:`consensus.messages`
(``encode_message`` / ``decode_message``), re-exported here.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from consensus.effects import (
    Broadcast,
    Decide,
    Effect,
    EvidenceFound,
    InvalidMessage,
    ScheduleTimeout,
    Step,
)
from consensus.errors import MalformedMessage
from consensus.machine import ConsensusMachine
from consensus.messages import (
    ConsensusMessage,
    ProposalMessage,
    decode_message,
    encode_message,
)
from consensus.types import PRECOMMIT, PREVOTE, Commit, DuplicateVoteEvidence, ValidatorSet, Vote

log = logging.getLogger(__name__)

DEFAULT_COMMIT_WAIT_S = 0.2
DEFAULT_INBOX_SIZE = 1024

__all__ = [
    "ConsensusRunner", "decode_message", "encode_message", "DEFAULT_COMMIT_WAIT_S",
]


# The phases of a height a timeline records, in the order they usually happen.
TIMELINE_PHASES = ("proposal", "proposal_handled", "prevote", "precommit", "decide",
                   "committed")


@dataclass
class HeightTimeline:
    """When each phase of one height happened at this node, in seconds after the height
    started here (``phases``), and what the height cost: ``durable_s``, the seconds spent
    making the consensus log and the signing guard durable (fsyncs); ``round``, the round
    decided. Phases: ``proposal`` the first proposal of the decided round arrived (for
    its proposer: built, signed and handed to the network); ``proposal_handled`` the
    machine finished with it (checking the block, voting); ``prevote`` / ``precommit``
    our own vote of the decided round was sent; ``decide`` a quorum of precommits was
    seen; ``committed`` the block was stored. ``interval_s`` is set when the next height
    starts: the whole time from this height's start to the next one's."""

    height: int
    started: float  # time.time() at the start
    round: int = 0
    phases: dict[str, float] | None = None
    durable_s: float = 0.0
    interval_s: float | None = None

    def mark(self, phase: str, now: float) -> None:
        if self.phases is None:
            self.phases = {}
        self.phases.setdefault(phase, now - self.started)


@dataclass(frozen=True)
class _Incoming:
    message: ConsensusMessage
    peer: Any


@dataclass(frozen=True)
class _Timeout:
    step: Step
    height: int
    round: int


@dataclass(frozen=True)
class _StartHeight:
    height: int
    validators: ValidatorSet


class ConsensusRunner:
    """Drives a machine from ``height`` on; ``await run()`` inside the node's nursery.

    Callbacks:
      ``broadcast(data: bytes)``: publish on the consensus topic (errors are logged).
      ``on_decide(height, value, commit)``: commit the block durably; it must
        return only once the block is committed (an exception stops the runner).
      ``next_validators(height) -> ValidatorSet``: the set for ``height``, asked
        after ``on_decide`` of ``height - 1`` (default: the same set with
        proposer priorities advanced one height).
      ``on_evidence(evidence)``: hand evidence to the evidence pool.
      ``on_invalid(peer, effect)``: penalise the peer that sent a bad message.
      ``encode(message) -> bytes``: the wire bytes of a message to broadcast (default
        ``encode_message``; the node sends proposals in compact form).
      ``on_timeline(timeline)``: a finished height's :class:`HeightTimeline`, when the
        next height starts (for metrics).
    """

    def __init__(
        self,
        machine: ConsensusMachine,
        height: int,
        validators: ValidatorSet,
        *,
        broadcast: Callable[[bytes], Awaitable[None]],
        on_decide: Callable[[int, bytes, Commit], Awaitable[None]],
        next_validators: Callable[[int], ValidatorSet] | None = None,
        on_evidence: Callable[[DuplicateVoteEvidence], Awaitable[None]] | None = None,
        on_invalid: Callable[[Any, InvalidMessage], None] | None = None,
        on_timeline: Callable[[HeightTimeline], None] | None = None,
        encode: Callable[[ConsensusMessage], bytes] = encode_message,
        commit_wait_s: float = DEFAULT_COMMIT_WAIT_S,
        inbox_size: int = DEFAULT_INBOX_SIZE,
    ) -> None:
        self.machine = machine
        self.stats: Counter[str] = Counter()
        self._start = _StartHeight(height, validators)
        self._validators = validators
        self._broadcast = broadcast
        self._on_decide = on_decide
        self._next_validators = next_validators
        self._on_evidence = on_evidence
        self._on_invalid = on_invalid
        self._on_timeline = on_timeline
        self._encode = encode
        self.timeline: HeightTimeline | None = None
        self.commit_wait_s = commit_wait_s
        self._send, self._receive = trio.open_memory_channel[Any](inbox_size)
        self._nursery: trio.Nursery | None = None

    async def submit(self, message: bytes | ConsensusMessage, peer: Any = None) -> bool:
        """Queue a message from ``peer`` for the machine; returns False if it was dropped.

        Bytes are decoded first; bad bytes are reported to ``on_invalid`` as
        ``malformed``. A full inbox drops the message (gossip is lossy anyway:
        the machines re-send what matters)."""
        if isinstance(message, bytes | bytearray | memoryview):
            try:
                message = decode_message(bytes(message))
            except MalformedMessage as exc:
                self._report_invalid(peer, InvalidMessage(MalformedMessage.code, str(exc)))
                return False
        try:
            self._send.send_nowait(_Incoming(message, peer))
        except trio.WouldBlock:
            self.stats["dropped_inbox_full"] += 1
            return False
        return True

    async def jump_to_height(self, height: int, validators: ValidatorSet) -> None:
        """Start ``height`` now (after block sync committed everything below it).

        Ignored if the machine is already at or past ``height``."""
        await self._send.send(_StartHeight(height, validators))

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the first height and process events until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._handle(self._start, peer=None)
            task_status.started()
            async for event in self._receive:
                if isinstance(event, _Timeout):
                    await self._timeout_after_queued(event)
                else:
                    await self._handle(event, getattr(event, "peer", None))

    async def _timeout_after_queued(self, timeout: _Timeout) -> None:
        """Handle the events queued behind ``timeout`` first (at most as many as are
        queued now), then the timeouts among them, in order.

        A timer fires when the loop gets to it: after a stall (a burst's admission, a
        long block check) the proposal or the votes the timeout gives up on may be
        queued right behind it, and handling the timeout first prevoted nil beside a
        proposal that had arrived (4 of ~1,350 heights of a loaded four-validator devnet,
        the proposal handled within 0.1 s of the nil prevote). Any order of the machine's
        events is one the network could have produced (timeouts only ever serve
        liveness), so this changes no safety argument."""
        timeouts = [timeout]
        for _ in range(self._receive.statistics().current_buffer_used):
            try:
                event = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(event, _Timeout):
                timeouts.append(event)
            else:
                await self._handle(event, getattr(event, "peer", None))
        for t in timeouts:
            await self._handle(t, None)

    async def _handle(self, event: Any, peer: Any) -> None:
        machine = self.machine
        if isinstance(event, _Incoming):
            message = event.message
            timeline = self.timeline
            is_proposal = (timeline is not None and isinstance(message, ProposalMessage)
                           and message.height == timeline.height)
            if is_proposal:
                timeline.mark(f"proposal@{message.round}", time.time())  # type: ignore[union-attr]
            effects = machine.on_message(message)
            if is_proposal:
                timeline.mark(f"proposal_handled@{message.round}", time.time())  # type: ignore[union-attr]
        elif isinstance(event, _Timeout):
            effects = machine.on_timeout(event.step, event.height, event.round)
        elif isinstance(event, _StartHeight):
            if event.height <= machine.height:
                return  # already there (the node jumped ahead by block sync)
            self._validators = event.validators
            self._start_timeline(event.height)
            resumed, replayed = machine.stats["resumed"], machine.stats["log_replayed"]
            effects = machine.start_height(event.height, event.validators)
            if machine.stats["resumed"] > resumed:
                log.info("consensus resumed height %d at round %d, step %s (%d logged messages "
                         "replayed)", machine.height, machine.round, machine.step.name.lower(),
                         machine.stats["log_replayed"] - replayed)
        else:  # pragma: no cover - only this module sends events
            raise TypeError(f"unknown event {event!r}")
        await self._apply(effects, peer)

    def _durable_s(self) -> float:
        """Seconds this machine's log and guard spent making records durable, so far."""
        total = 0.0
        if self.machine.message_log is not None:
            total += self.machine.message_log.durable_s
        if self.machine.signer is not None:
            total += self.machine.signer.guard.durable_s
        return total

    def _start_timeline(self, height: int) -> None:
        now = time.time()
        done, self.timeline = self.timeline, HeightTimeline(height, now)
        self.timeline.durable_s = -self._durable_s()
        if done is None or done.phases is None or "decide" not in done.phases:
            return
        done.interval_s = now - done.started
        # keep the phases of the decided round only
        suffix = f"@{done.round}"
        done.phases = {name.removesuffix(suffix): at for name, at in done.phases.items()
                       if "@" not in name or name.endswith(suffix)}
        if self._on_timeline is not None:
            try:
                self._on_timeline(done)
            except Exception:  # metrics must never stop consensus
                log.exception("timeline callback failed")

    def _mark_broadcast(self, message: Any) -> None:
        timeline, signer = self.timeline, self.machine.signer
        if timeline is None or signer is None or message.height != timeline.height:
            return
        now = time.time()
        if isinstance(message, ProposalMessage) and message.proposal.proposer == signer.address:
            timeline.mark(f"proposal@{message.round}", now)
            timeline.mark(f"proposal_handled@{message.round}", now)
        elif isinstance(message, Vote) and message.validator == signer.address:
            kind = {PREVOTE: "prevote", PRECOMMIT: "precommit"}.get(message.type)
            if kind is not None:
                timeline.mark(f"{kind}@{message.round}", now)

    async def _apply(self, effects: list[Effect], peer: Any) -> None:
        for effect in effects:
            if isinstance(effect, Broadcast):
                self._mark_broadcast(effect.message)
                try:
                    await self._broadcast(self._encode(effect.message))
                except Exception:  # a network hiccup must not stop consensus
                    self.stats["broadcast_failed"] += 1
                    log.exception("consensus broadcast failed")
            elif isinstance(effect, ScheduleTimeout):
                self._spawn_timer(
                    effect.duration_s, _Timeout(effect.step, effect.height, effect.round)
                )
            elif isinstance(effect, Decide):
                timeline = self.timeline
                if timeline is not None and timeline.height == effect.height:
                    timeline.round = effect.round
                    timeline.mark("decide", time.time())
                await self._on_decide(effect.height, effect.value, effect.commit)
                if timeline is not None and timeline.height == effect.height:
                    timeline.mark("committed", time.time())
                    timeline.durable_s += self._durable_s()
                next_height = effect.height + 1
                if self._next_validators is not None:
                    validators = self._next_validators(next_height)
                else:
                    validators = self._validators.next_for_height()
                self._spawn_timer(self.commit_wait_s, _StartHeight(next_height, validators))
            elif isinstance(effect, EvidenceFound):
                self.stats["evidence"] += 1
                if self._on_evidence is not None:
                    await self._on_evidence(effect.evidence)
            elif isinstance(effect, InvalidMessage):
                self._report_invalid(peer, effect)

    def _report_invalid(self, peer: Any, effect: InvalidMessage) -> None:
        self.stats[f"invalid_{effect.code}"] += 1
        if self._on_invalid is not None:
            self._on_invalid(peer, effect)

    def _spawn_timer(self, delay_s: float, event: Any) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._fire_after, delay_s, event)

    async def _fire_after(self, delay_s: float, event: Any) -> None:
        await trio.sleep(delay_s)
        await self._send.send(event)  # waits if the inbox is full: timers must not be lost
