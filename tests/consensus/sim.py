"""A deterministic simulated network for the consensus machine.

Virtual time, one seeded RNG per schedule, no threads and no sockets: the same
seed always produces the same run. The network delays, drops, duplicates and
partitions messages (the partition heals at a drawn time); one validator may be
byzantine and equivocate: it runs a normal machine but, bypassing its signing
guard, signs a second, different proposal and a second, different vote for
every one it sends, and shows each peer one of the two.

Nodes more than one height behind catch up the way a real node does, by block
sync: they fetch the decided values with their commits from a peer and feed
them to ``ConsensusMachine.on_commit``. (One height behind is repaired by the
machines themselves, which send a ``CommitMessage`` to peers still voting at
the height they decided.)

With ``restarts=k`` the schedule also crashes k random subsets of the
validators (any subset, all of them included) at drawn instants and restarts
them after a drawn downtime. A crash either falls between two events or in the
middle of one: the machine has handled the event (and its guard has recorded
what it signed) but the driver never carries out the effects, so nothing is
sent, no timer is set and a decided block is not committed. A crashed node
loses its machine, its timers and every message sent to it meanwhile; it keeps
its committed blocks, its signing guard and its consensus message log, both
held in a :class:`MemoryDisk` in exactly the bytes the node's files would
hold, and restarts as a node does: a new machine over them, started at the
height after its last committed block.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_hash.auto import keccak

from consensus.crypto import address_of_private_key
from consensus.effects import (
    Broadcast,
    Decide,
    Effect,
    EvidenceFound,
    InvalidMessage,
    ScheduleTimeout,
)
from consensus.machine import MAX_ROUNDS_AHEAD, ConsensusMachine, Timeouts
from consensus.messages import CommitMessage, ConsensusMessage, ProposalMessage
from consensus.types import NIL, Commit, Proposal, Validator, ValidatorSet, Vote
from consensus.wal import MemoryDisk, MessageLog, Signer, SigningGuard

CHAIN_ID = 7077
COMMIT_WAIT_S = 0.2
SYNC_RETRY_S = 1.0
CRASH_WINDOW_S = 6.0  # crashes happen in the first seconds of a schedule
MAX_DOWNTIME_S = 3.0
KEYS = [keccak(b"motus consensus sim validator %d" % i) for i in range(16)]


class SimApp:
    """Block values are short byte strings naming height, round and proposer.

    A value is valid at height h iff it starts with ``block h=<h> `` (so a
    byzantine proposer's alternative values are sometimes valid, sometimes not).
    """

    def __init__(self, name: int) -> None:
        self.name = name

    def propose(self, height: int, round_: int) -> bytes:
        return b"block h=%d r=%d by=%d" % (height, round_, self.name)

    def block_hash(self, value: bytes) -> bytes:
        return keccak(value)

    def validate(self, height: int, value: bytes) -> bool:
        return value.startswith(b"block h=%d " % height)


@dataclass
class NetworkModel:
    """The drawn shape of one schedule's network."""

    delay_min: float
    delay_max: float
    drop_before_heal: float
    drop_after_heal: float
    duplicate: float
    partition_start: float
    heal_time: float
    groups: tuple[frozenset[int], ...]

    @classmethod
    def draw(cls, rng: random.Random, n: int) -> NetworkModel:
        delay_max = rng.uniform(0.02, 0.6)
        partitioned = rng.random() < 0.75
        start = rng.uniform(0.0, 3.0)
        heal = start + rng.uniform(0.5, 8.0) if partitioned else 0.0
        nodes = list(range(n))
        rng.shuffle(nodes)
        cut = rng.randint(1, n - 1)
        groups = (frozenset(nodes[:cut]), frozenset(nodes[cut:])) if partitioned else ()
        return cls(
            delay_min=0.001, delay_max=delay_max,
            drop_before_heal=rng.choice([0.0, 0.1, 0.3, 0.5]),
            drop_after_heal=rng.choice([0.0, 0.0, 0.05, 0.1]),
            duplicate=rng.choice([0.0, 0.1, 0.3]),
            partition_start=start, heal_time=heal, groups=groups,
        )

    def is_cut(self, a: int, b: int, now: float) -> bool:
        if not self.groups or not (self.partition_start <= now < self.heal_time):
            return False
        return not any(a in g and b in g for g in self.groups)

    def drop_rate(self, now: float) -> float:
        return self.drop_before_heal if now < self.heal_time else self.drop_after_heal


@dataclass
class Crash:
    """Crash ``nodes`` at ``time`` (mid-event if ``mid_event``), restart them ``downtime`` later."""

    time: float
    nodes: frozenset[int]
    downtime: float
    mid_event: bool

    @classmethod
    def draw(cls, rng: random.Random, n: int) -> Crash:
        nodes = frozenset(i for i in range(n) if rng.random() < 0.5) or frozenset(range(n))
        return cls(time=rng.uniform(0.0, CRASH_WINDOW_S), nodes=nodes,
                   downtime=rng.choice([0.0, rng.uniform(0.0, MAX_DOWNTIME_S)]),
                   mid_event=rng.random() < 0.5)


@dataclass
class SimNode:
    index: int
    key: bytes
    machine: ConsensusMachine
    byzantine: bool
    guard_disk: MemoryDisk = field(default_factory=MemoryDisk)
    log_disk: MemoryDisk = field(default_factory=MemoryDisk)
    epoch: int = 0  # incremented by each crash: timers and deliveries of older epochs are void
    down: bool = False
    crash_on_next_event: bool = False
    refused: int = 0  # double_sign_refused over all the node's machines
    resumed: int = 0  # machines that resumed a height from the guard and the log
    decided: dict[int, bytes] = field(default_factory=dict)  # height -> value
    decided_at: dict[int, float] = field(default_factory=dict)
    history: dict[int, tuple[bytes, Commit]] = field(default_factory=dict)
    evidence: set[tuple[bytes, int, int, int]] = field(default_factory=set)
    # (height, round, type) -> block hashes of byzantine votes this node processed
    byzantine_votes_seen: dict[tuple[int, int, int], set[bytes]] = field(default_factory=dict)
    syncing: bool = False

    @property
    def address(self) -> bytes:
        return address_of_private_key(self.key)


@dataclass
class ScheduleResult:
    seed: int
    network: NetworkModel
    byzantine: int | None
    end_time: float
    live: bool
    heights: list[int]
    decisions: dict[int, bytes]
    evidence_expected: int
    evidence_found: int
    deliveries: int
    crashes: tuple[Crash, ...] = ()
    gst: float = 0.0  # when the network healed and the last crashed node restarted
    first_decision_after_gst: float | None = None  # virtual seconds until all honest decided
    resumed: int = 0
    mid_event_crashes: int = 0  # crashes that happened (not only drawn) mid-event


class SafetyViolation(AssertionError):
    pass


class Simulation:
    def __init__(
        self, seed: int, powers: list[int], byzantine: int | None,
        target_height: int = 3, liveness_bound_s: float = 60.0,
        timeouts: Timeouts | None = None, restarts: int = 0,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = len(powers)
        self.network = NetworkModel.draw(self.rng, self.n)
        self.byzantine = byzantine
        self.target_height = target_height
        self.liveness_bound_s = liveness_bound_s
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._decided_since_check = False
        self._verified_commits: set[tuple[int, bytes]] = set()
        self.deliveries = 0
        self.mid_event_crashes = 0  # node crashes that really cut an event's effects
        keys = KEYS[: self.n]
        self.validator_sets = [ValidatorSet([
            Validator(address_of_private_key(k), p) for k, p in zip(keys, powers, strict=True)
        ])]
        self.timeouts = timeouts or Timeouts()
        self.crashes = tuple(sorted((Crash.draw(self.rng, self.n) for _ in range(restarts)),
                                    key=lambda c: c.time))
        self.gst = max([self.network.heal_time]
                       + [c.time + c.downtime for c in self.crashes])
        self.nodes = [SimNode(i, k, None, byzantine=(i == byzantine))  # type: ignore[arg-type]
                      for i, k in enumerate(keys)]
        for node in self.nodes:
            node.machine = self._new_machine(node)
        # validator address -> (height, round, step) -> digest-like identity of what it sent
        self._signed: dict[bytes, dict[tuple[int, int, int], tuple[bytes, int]]] = {}
        self._crashed = False
        self.decisions: dict[int, bytes] = {}  # height -> value decided by the honest nodes
        self.byzantine_address = self.nodes[byzantine].address if byzantine is not None else None
        self._equivocations: dict[tuple[int, int, int], ConsensusMessage] = {}
        self._side: dict[tuple[int, int, int, int], bool] = {}

    # --- plumbing -----------------------------------------------------------

    def get_validators(self, height: int) -> ValidatorSet:
        while len(self.validator_sets) < height:
            self.validator_sets.append(self.validator_sets[-1].next_for_height())
        return self.validator_sets[height - 1]

    def _at(self, time: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, action))

    def _new_machine(self, node: SimNode) -> ConsensusMachine:
        """A machine over the node's persisted guard and message log, as a node builds it."""
        guard = SigningGuard(memory=node.guard_disk)
        return ConsensusMachine(CHAIN_ID, SimApp(node.index), Signer(node.key, CHAIN_ID, guard),
                                self.timeouts, message_log=MessageLog(node.log_disk))

    def _crash(self, node: SimNode) -> None:
        if node.down:
            return
        node.refused += node.machine.stats["double_sign_refused"]
        node.resumed += node.machine.stats["resumed"]
        node.down, node.crash_on_next_event, node.syncing = True, False, False
        node.epoch += 1
        self._crashed = True

    def _restart(self, node: SimNode) -> None:
        if not node.down:
            return
        node.down = False
        node.machine = self._new_machine(node)
        self._start(node, max(node.decided, default=0) + 1)

    def _schedule_crash(self, crash: Crash) -> None:
        def begin() -> None:
            for i in crash.nodes:
                node = self.nodes[i]
                if crash.mid_event and not node.down:
                    node.crash_on_next_event = True  # the next event's effects are lost
                else:
                    self._crash(node)

        def fallback() -> None:  # no event came: crash between events after all
            for i in crash.nodes:
                self._crash(self.nodes[i])

        def end() -> None:
            for i in crash.nodes:
                self._restart(self.nodes[i])

        self._at(crash.time, begin)
        self._at(crash.time + min(crash.downtime, 0.5) / 2, fallback)
        self._at(crash.time + crash.downtime, end)

    def _send(self, src: int, dst: int, message: ConsensusMessage) -> None:
        if self.network.is_cut(src, dst, self.now):
            return
        copies = 2 if self.rng.random() < self.network.duplicate else 1
        for _ in range(copies):
            if self.rng.random() < self.network.drop_rate(self.now):
                continue
            delay = self.rng.uniform(self.network.delay_min, self.network.delay_max)
            self._at(self.now + delay, lambda: self._deliver(src, dst, message))

    def _deliver(self, src: int, dst: int, message: ConsensusMessage) -> None:
        node = self.nodes[dst]
        if node.down:
            return
        self.deliveries += 1
        machine = node.machine
        byzantine_vote = (isinstance(message, Vote) and message.validator == self.byzantine_address
                          and not node.byzantine
                          and message.height == machine.height
                          and message.round <= machine.round + MAX_ROUNDS_AHEAD)
        if message.height > machine.height + 1 or (
                message.height > machine.height and self._crashed):
            # a node fetches blocks when a peer is ahead; one height behind, the
            # machines' catch-up commit usually does it sooner, but a restarted peer
            # no longer has the decision to send, so the node's stall sync must
            self._request_sync(dst, src)
        self._apply(node, machine.on_message(message))
        if byzantine_vote and not node.down:  # a node that crashed handling it reports nothing
            assert isinstance(message, Vote)
            seen = node.byzantine_votes_seen.setdefault(
                (message.height, message.round, message.type), set())
            seen.add(message.block_hash)

    def _apply(self, node: SimNode, effects: list[Effect]) -> None:
        if node.crash_on_next_event:
            self.mid_event_crashes += 1
            self._crash(node)  # the machine handled the event; its effects never happen
        if node.down:
            return
        for effect in effects:
            if isinstance(effect, Broadcast):
                if not node.byzantine:
                    self._check_no_double_sign(node, effect.message)
                for peer in range(self.n):
                    if peer != node.index:
                        message = effect.message
                        if node.byzantine:
                            message = self._equivocate(node, peer, message)
                        self._send(node.index, peer, message)
            elif isinstance(effect, ScheduleTimeout):
                self._at(self.now + effect.duration_s, self._timeout_action(node, effect))
            elif isinstance(effect, Decide):
                self._on_decide(node, effect.height, effect.value, effect.commit)
            elif isinstance(effect, EvidenceFound):
                evidence = effect.evidence
                offender = evidence.verify(CHAIN_ID, self.get_validators(evidence.height))
                if self.byzantine is None or offender != self.nodes[self.byzantine].address:
                    raise SafetyViolation(f"seed {self.seed}: evidence against an honest validator")
                a = evidence.vote_a
                node.evidence.add((offender, a.height, a.round, a.type))
            elif isinstance(effect, InvalidMessage):
                raise AssertionError(f"seed {self.seed}: node {node.index} rejected {effect}")

    def _check_no_double_sign(self, node: SimNode, message: ConsensusMessage) -> None:
        if isinstance(message, Vote) and message.validator == node.address:
            key = (message.height, message.round, message.type)
            what = (message.block_hash, 0)
        elif isinstance(message, ProposalMessage) and message.proposal.proposer == node.address:
            p = message.proposal
            key, what = (p.height, p.round, 0), (p.block_hash, p.pol_round)
        else:
            return
        before = self._signed.setdefault(node.address, {}).setdefault(key, what)
        if before != what:
            raise SafetyViolation(f"seed {self.seed}: node {node.index} double-signed at {key}")

    def _live(self, node: SimNode, action: Callable[[], None]) -> Callable[[], None]:
        """``action``, unless the node crashed since it was scheduled."""
        epoch = node.epoch

        def run() -> None:
            if not node.down and node.epoch == epoch:
                action()
        return run

    def _timeout_action(self, node: SimNode, effect: ScheduleTimeout) -> Callable[[], None]:
        return self._live(node, lambda: self._apply(
            node, node.machine.on_timeout(effect.step, effect.height, effect.round)))

    def _on_decide(self, node: SimNode, height: int, value: bytes, commit: Commit) -> None:
        # an independent check of the machine's commit, once per distinct commit
        if (height, commit.hash()) not in self._verified_commits:
            self.get_validators(height).verify_commit(CHAIN_ID, height, keccak(value), commit)
            self._verified_commits.add((height, commit.hash()))
        node.decided[height] = value
        self._decided_since_check = True
        node.decided_at[height] = self.now
        node.history[height] = (value, commit)
        if not node.byzantine:
            agreed = self.decisions.setdefault(height, value)
            if agreed != value:
                raise SafetyViolation(
                    f"seed {self.seed}: height {height} decided {agreed!r} and {value!r}")
        self._at(self.now + COMMIT_WAIT_S, self._live(node, lambda: self._start(node, height + 1)))

    def _start(self, node: SimNode, height: int) -> None:
        if not node.down and node.machine.height < height:
            self._apply(node, node.machine.start_height(height, self.get_validators(height)))

    def _request_sync(self, dst: int, src: int) -> None:
        node = self.nodes[dst]
        if node.syncing:
            return
        node.syncing = True

        def respond() -> None:
            node.syncing = False
            peer = self.nodes[src]
            if self.network.is_cut(src, dst, self.now) or peer.down:
                return
            # like block sync: take each block with its commit, check it, commit, move on
            while (not node.down and (height := node.machine.height) in peer.history
                   and node.machine.decision is None):
                value, commit = peer.history[height]
                self._apply(node, node.machine.on_commit(commit, value))
                self._start(node, height + 1)

        self._at(self.now + SYNC_RETRY_S, self._live(node, respond))

    # --- the byzantine validator --------------------------------------------

    def _equivocate(self, node: SimNode, peer: int, message: ConsensusMessage) -> ConsensusMessage:
        """Show ``peer`` either the machine's message or a conflicting one signed without the guard."""
        if isinstance(message, CommitMessage):
            return message
        if isinstance(message, Vote):
            key = (message.height, message.round, message.type)
        else:
            key = (message.height, message.round, 0)
        side = self._side.get((*key, peer))
        if side is None:
            side = self._side[(*key, peer)] = self.rng.random() < 0.5
        signer = message.validator if isinstance(message, Vote) else message.proposal.proposer
        if not side or signer != node.address:  # relayed proofs of others pass unchanged
            return message
        alt = self._equivocations.get(key)
        if alt is None:
            alt = self._equivocations[key] = self._conflicting(node, message)
        return alt

    def _conflicting(self, node: SimNode, message: ConsensusMessage) -> ConsensusMessage:
        if isinstance(message, ProposalMessage):
            p = message.proposal
            if self.rng.random() < 0.8:
                value = b"block h=%d r=%d by=%d alt" % (p.height, p.round, node.index)
            else:
                value = b"invalid h=%d r=%d" % (p.height, p.round)
            proposal = Proposal.create(
                CHAIN_ID, node.key, p.height, p.round, p.pol_round, keccak(value), node.address)
            return ProposalMessage(proposal, value)
        alt_proposal = self._equivocations.get((message.height, message.round, 0))
        choices = [keccak(b"nothing %d" % self.rng.randrange(1 << 30))]
        if message.block_hash != NIL:
            choices.append(NIL)
        if isinstance(alt_proposal, ProposalMessage):
            choices.append(alt_proposal.proposal.block_hash)
        choices = [c for c in choices if c != message.block_hash]
        block_hash = self.rng.choice(choices)
        return Vote.create(CHAIN_ID, node.key, message.type, message.height, message.round,
                           block_hash, node.address)

    # --- running ------------------------------------------------------------

    def _honest(self) -> list[SimNode]:
        return [n for n in self.nodes if not n.byzantine]

    def _is_done(self) -> bool:
        self._decided_since_check = False
        for node in self._honest():
            if node.down or max(node.decided, default=0) < self.target_height:
                return False
            if not any(t >= self.gst for t in node.decided_at.values()):
                return False
        return True

    def run(self) -> ScheduleResult:
        for node in self.nodes:
            start = self.rng.uniform(0.0, 1.0)
            self._at(start, self._live(node, lambda node=node: self._start(node, 1)))
        for crash in self.crashes:
            self._schedule_crash(crash)
        deadline = self.gst + self.liveness_bound_s
        live = False
        while self._queue:
            time, _, action = heapq.heappop(self._queue)
            if time > deadline:
                break
            self.now = time
            action()
            if self._decided_since_check and self._is_done():
                live = True
                break
        for node in self._honest():
            refused = node.refused + node.machine.stats["double_sign_refused"]
            if refused:
                raise AssertionError(f"seed {self.seed}: honest machine tried to double-sign")
        expected = found = 0
        if self.byzantine is not None:
            offender = self.nodes[self.byzantine].address
            for node in self._honest():
                for (h, r, t), hashes in node.byzantine_votes_seen.items():
                    if len(hashes) >= 2:
                        expected += 1
                        if (offender, h, r, t) in node.evidence:
                            found += 1
        return ScheduleResult(
            seed=self.seed, network=self.network, byzantine=self.byzantine, end_time=self.now,
            live=live, heights=[max(n.decided, default=0) for n in self._honest()],
            decisions=dict(self.decisions), evidence_expected=expected, evidence_found=found,
            deliveries=self.deliveries, crashes=self.crashes, gst=self.gst,
            first_decision_after_gst=self._first_decision_after_gst() if live else None,
            resumed=sum(n.resumed + n.machine.stats["resumed"] for n in self.nodes),
            mid_event_crashes=self.mid_event_crashes,
        )

    def _first_decision_after_gst(self) -> float:
        """Virtual seconds from GST until every honest node had decided a new height."""
        return max(min(t for t in n.decided_at.values() if t >= self.gst)
                   for n in self._honest()) - self.gst


def run_schedule(seed: int, powers: list[int], byzantine: int | None = None,
                 restarts: int = 0, target_height: int = 3) -> ScheduleResult:
    """Run one seeded schedule; raises SafetyViolation if honest nodes ever disagree or
    an honest node signs two different messages at one height, round and step."""
    return Simulation(seed, powers, byzantine, target_height=target_height,
                      restarts=restarts).run()
