"""Attestation pool: checked attestations waiting for a block (docs/telemetry.md).

``add``/``add_many`` run the stateless checks (decode, canonical form, size,
signature; optionally in worker processes, see :class:`ProcessPoolChecker`)
and then a stateful check supplied by the node (normally :func:`view_check`
over a :class:`vm.modules.telemetry.TelemetryView` of the head state), and only
then insert. Nothing invalid is ever inserted, and a full pool refuses new
items (``pool_full``) instead of evicting pending ones, so a burst of garbage
cannot push honest attestations out; per-source and per-device quotas keep one
peer or one device from taking the whole pool with valid-looking spam.

The block builder ``take``s the oldest pending items; after a block the node
calls ``remove_included`` and then ``recheck`` with a check over the new head.
``status(id)`` answers ``motus_getAttestation``: pending, included (height) or
rejected (code), from a bounded history.
"""

from __future__ import annotations

import heapq
import logging
import math
import select
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from heapq import heappush
from itertools import repeat
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

import msgpack
import trio

from node.fairness import THROTTLED, SourceCredit
from vm.attestation import (
    OK,
    Attestation,
    AttestationError,
    RejectCode,
    check_stateless,
    compute_attestation_id,
    decode_accepted,
    decode_attestation,
    keccak256,
    mark_verified,
    verify_signature,
)
from vm.attestation_ahead import CODE_OK, CODES, encode_task, spawn_worker, stop_worker
from vm.trie import BLANK_ROOT, TrieNodes, rlp_decode

log = logging.getLogger("motus.attestations")

POOL_FULL = "pool_full"  # not a reject: the pool is at a limit, submit again later
# Refused attestations a source may have checked per second, and at once (node/fairness.py,
# docs/rpc.md "Fair admission"): admission checks ~17,000/s per core, so a garbage source
# held to 500/s takes ~3 % of a core; the burst is one full motus_submitAttestations call.
REJECT_CREDIT_PER_S = 500
REJECT_CREDIT_BURST = 1_000
# What a peer's item refused by a stateful check costs, in refused items. Those refusals
# depend on the head and the clock, and honest relays cause them in races: a batch of a
# device's readings N that reaches this node after a block included the device's N+1
# from another node's pool is refused ``replay`` whole (seen in bench_attest_e2e with
# four validators: ~700 a second from one relay in bursts at block commits, which
# throttled it, and its next batches' fresh readings then went unchecked and were lost).
# At an eighth, a peer still gets at most 8 x 500 = 4,000 such items a second checked
# (~a quarter of a core), below what its gossip budget lets it send (1 MiB/s, ~6,500).
PEER_STATEFUL_CHARGE = 0.125
# Devices whose reading this node refused ``pool_full`` (a quota) after checking it; their
# later readings are refused ``pool_full`` too until the view holds that reading's seq
# (AttestationPool._missing): at most this many, the oldest forgotten first.
MAX_MISSING = 100_000
MISSING_FOR_S = 300  # attestation_stale_ms's default: a reading this old never enters a block
PENDING, INCLUDED, REJECTED = "pending", "included", "rejected"
STATELESS_CODES = frozenset({RejectCode.MALFORMED.value, RejectCode.BAD_SIGNATURE.value})

# The node's stateful check: the reject code, or None when the attestation may enter
# the pool. It may remember the attestation (a view's ``apply``) so that later
# attestations of the same device are checked against it: the pool calls it only
# when it is about to insert.
StatefulCheck = Callable[[Attestation], str | None]


class ViewCheck:
    """The stateful check over a :class:`vm.modules.telemetry.TelemetryView` (head state,
    node clock): check, and on success record the attestation in the view. Also tells
    the pool a device's last ``seq`` in the view (head and what it admitted)."""

    def __init__(self, view) -> None:
        self.view = view

    def __call__(self, att: Attestation) -> str | None:
        view = self.view
        code = view.check(att)
        if code is not None:
            return code.value
        view.apply(att)
        return None

    def last_seq(self, device: bytes) -> int:
        return self.view._track(device).seq

    def would_pass(self, att: Attestation) -> bool:
        """Whether ``att`` would be accepted now, without recording it."""
        return self.view.check(att) is None


def _would_pass(att: Attestation, check: StatefulCheck) -> bool:
    """Whether ``check`` would accept ``att``, asked without recording it where the check
    can be asked so (:meth:`ViewCheck.would_pass`); True otherwise."""
    would_pass = getattr(check, "would_pass", None)
    return would_pass is None or would_pass(att)


def view_check(view) -> StatefulCheck:
    """A :class:`ViewCheck` over ``view``."""
    return ViewCheck(view)


class RejectCounters:
    """Reject counts per code since start (the node exposes them via RPC and /metrics)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, code: str, n: int = 1) -> None:
        self._counts[code] += n

    def get(self, code: str) -> int:
        return self._counts[code]

    def snapshot(self) -> dict[str, int]:
        """Every reject code (zero included), ``pool_full`` and ``throttled``, with its count."""
        out = {c.value: self._counts[c.value] for c in RejectCode}
        out[POOL_FULL] = self._counts[POOL_FULL]
        out[THROTTLED] = self._counts[THROTTLED]
        return out


# --- stateless checks, inline or on worker processes ----------------------------


class StatelessChecker(Protocol):
    def check_many(self, raws: Sequence[bytes], ids: Sequence[bytes],
                   chain_id: int) -> Iterator[Attestation | str]:
        """For each raw attestation, in order: the decoded attestation if it passed the
        stateless checks, else its reject code. Lazily, so the caller can run the
        stateful checks of early items while later ones are still being verified."""
        ...


def check_stateless_unshared(raws: Sequence[bytes], chain_id: int) -> list[Attestation | str]:
    """The stateless checks of ``raws`` (decoded attestation, or reject code, per item)
    without touching this process's verified-id memo: safe in a worker thread while the
    trio thread executes blocks. The caller records accepted ids with ``mark_verified``
    on its own thread (``AttestationPool.add_many(..., stateless=...)`` does)."""
    out: list[Attestation | str] = []
    for raw in raws:
        try:
            att = decode_attestation(raw)
            verify_signature(att, chain_id)
        except AttestationError as exc:
            out.append(exc.code)
        else:
            out.append(att)
    return out


class InlineChecker:
    """Stateless checks in this process."""

    def check_many(self, raws: Sequence[bytes], ids: Sequence[bytes],
                   chain_id: int) -> Iterator[Attestation | str]:
        for raw, att_id in zip(raws, ids, strict=True):
            try:
                yield check_stateless(raw, chain_id, att_id)
            except AttestationError as exc:
                yield exc.code


# Admission's signature workers (:class:`ProcessPoolChecker`).
WORKER_ANSWER_S = 10.0  # no answer for this long (a task takes ~50 us an item): stuck, killed
WORKER_RESTART_S = 5.0  # a worker that died or was killed is started again at most this often
MIN_PART = 32  # attestations per task at least (a task costs ~20 us of hand-over a side)
# Attestations written to one worker for one batch and not yet answered (~50 ms of its
# work): enough that it never runs dry while the trio thread executes a block, and a
# whole motus_submitAttestations call (1,000), so that a worker takes two calls one after
# the other rather than interleaved: with 512, two gateways' calls both finished after
# ~1.75 calls' work, and each gateway waited that long before it sent its next call.
WORKER_AHEAD_ITEMS = 1_024
_CODE_BYTES = b"\x00\x01\x02"  # the code bytes a worker answers with (CODES)


class _WorkerGone(Exception):
    """The worker's socket closed, failed or carried bytes out of protocol."""


class _Worker:
    """One signature worker process (:func:`vm.attestation_ahead.serve_fd`, the same
    program as the block check's) and this process's end of its socket pair. Driven
    either from the trio thread (``submit`` and ``answer``: the node) or from one plain
    thread (``send_sync`` and ``receive_sync``: tests, benches), never both at once. Answers come in task order;
    tags are numbered from 0 per process (``generation``)."""

    def __init__(self) -> None:
        self.process: Any = None
        self.sock: socket.socket | None = None
        self.generation = 0
        self.started_at = -math.inf
        self.tag = 0  # tasks written to this process
        self.answered = 0  # answers read from it
        self.answers: dict[int, bytes] = {}  # tag -> code bytes, read and not yet taken
        self.abandoned: set[int] = set()  # tags whose caller left: their answers are dropped
        self.buffer = bytearray()
        self.greeted = False
        self.send_lock = trio.Lock()
        self.receive_lock = trio.Lock()

    def ensure_started(self) -> None:
        if self.sock is None and time.monotonic() - self.started_at >= WORKER_RESTART_S:
            self.started_at = time.monotonic()
            started = spawn_worker()
            if started is not None:
                self.process, self.sock = started
                self.generation += 1
                self.tag = self.answered = 0
                self.answers.clear()
                self.abandoned.clear()
                self.buffer.clear()
                self.greeted = False

    def stop(self, why: str | None = None) -> None:
        """Close the socket (the worker's loop ends) and reap the process; a worker
        that does not end within 2 s is killed."""
        sock, process = self.sock, self.process
        self.sock = self.process = None
        self.answers.clear()
        if why is not None:
            log.warning("attestation signature worker stopped (%s); its checks run in this "
                        "process until it is started again", why)
        if sock is not None:
            try:
                trio.lowlevel.notify_closing(sock)  # wakes a task of ours waiting on it
            except RuntimeError:
                pass  # (not in a trio run)
            sock.close()
        if process is not None:
            if why is not None:
                process.kill()  # broken or stuck: nothing left to wait for
            stop_worker(process)

    def _frame(self, chain_id: int, raws: Sequence[bytes]) -> tuple[int, bytes]:
        tag = self.tag
        self.tag += 1
        body = encode_task(tag, chain_id, raws)
        return tag, len(body).to_bytes(4, "big") + body

    def _take(self) -> None:
        """Handle the frames complete in the buffer."""
        buffer = self.buffer
        while len(buffer) >= 4:
            n = int.from_bytes(buffer[:4], "big")
            if len(buffer) < 4 + n:
                return
            frame = bytes(buffer[4:4 + n])
            del buffer[:4 + n]
            if not self.greeted:
                if frame != b"ready":
                    raise _WorkerGone("unexpected greeting")
                self.greeted = True
                continue
            tag = self.answered
            if int.from_bytes(frame[:4], "big") != tag & 0xFFFFFFFF or tag >= self.tag:
                raise _WorkerGone("answer out of order")
            self.answered += 1
            if tag in self.abandoned:
                self.abandoned.discard(tag)
            else:
                self.answers[tag] = frame[4:]

    # -- from the trio thread --

    async def submit(self, chain_id: int, raws: Sequence[bytes]) -> tuple[int, int] | None:
        """Write a task; its ticket (generation, tag) for :meth:`answer`, or None if this
        worker cannot take it (not running, or it failed now: then it is stopped)."""
        if self.sock is None:
            return None
        generation = self.generation
        try:
            # A frame is written whole, even if the caller is cancelled meanwhile: half a
            # frame would garble everything after it. (A worker that takes nothing for
            # WORKER_ANSWER_S is stuck.)
            with trio.CancelScope(shield=True,
                                  deadline=trio.current_time() + WORKER_ANSWER_S) as sending:
                async with self.send_lock:
                    if self.sock is None or self.generation != generation:
                        return None
                    tag, frame = self._frame(chain_id, raws)
                    await self._send(frame)
            if sending.cancelled_caught:
                raise _WorkerGone("task not taken")
        except (OSError, _WorkerGone, trio.ClosedResourceError) as exc:
            self._failed(generation, exc)
            return None
        return generation, tag

    async def answer(self, ticket: tuple[int, int]) -> bytes | None:
        """The code bytes of the task ``ticket``, or None if this worker cannot give them
        (died, garbled, or no answer for :data:`WORKER_ANSWER_S`: then it is stopped)."""
        generation, tag = ticket
        done = False
        try:
            with trio.move_on_after(WORKER_ANSWER_S) as waited:
                while self.generation == generation and self.sock is not None:
                    codes = self.answers.pop(tag, None)
                    if codes is not None:
                        done = True
                        return codes
                    async with self.receive_lock:
                        if (tag not in self.answers and self.generation == generation
                                and self.sock is not None):  # (stopped while we waited)
                            await self._receive()
            if waited.cancelled_caught:
                raise _WorkerGone(f"no answer in {WORKER_ANSWER_S:g} s")
        except (OSError, EOFError, _WorkerGone, trio.ClosedResourceError) as exc:
            self._failed(generation, exc)
        finally:
            if not done:
                self.abandon(ticket)
        return None

    def abandon(self, ticket: tuple[int, int]) -> None:
        """Nobody will take the answer to ``ticket``: dropped when it comes."""
        generation, tag = ticket
        if generation == self.generation and self.answers.pop(tag, None) is None:
            self.abandoned.add(tag)

    def _failed(self, generation: int, exc: BaseException) -> None:
        if self.generation == generation and self.sock is not None:
            self.stop(str(exc) or type(exc).__name__)

    async def _send(self, frame: bytes) -> None:
        sock, view = self.sock, memoryview(frame)
        if sock is None:
            raise _WorkerGone("stopped")
        while view:
            try:
                view = view[sock.send(view, socket.MSG_DONTWAIT):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)

    async def _receive(self) -> None:
        sock = self.sock
        if sock is None:
            raise _WorkerGone("stopped")
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(1 << 16, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        if not data:
            raise EOFError("worker closed its socket")
        self.buffer += data
        self._take()

    # -- from a plain thread (tests, benches) --

    def send_sync(self, chain_id: int, raws: Sequence[bytes]) -> tuple[int, int] | None:
        if self.sock is None:
            return None
        tag, frame = self._frame(chain_id, raws)
        try:
            self.sock.sendall(frame)
        except OSError as exc:
            self.stop(type(exc).__name__)
            return None
        return self.generation, tag

    def receive_sync(self, ticket: tuple[int, int] | None) -> bytes | None:
        if ticket is None:
            return None
        generation, tag = ticket
        try:
            while self.generation == generation and self.sock is not None:
                codes = self.answers.pop(tag, None)
                if codes is not None:
                    return codes
                poller = select.poll()  # (not select.select: a node's fds pass 1,024)
                poller.register(self.sock, select.POLLIN)
                if not poller.poll(1000 * WORKER_ANSWER_S):
                    raise _WorkerGone(f"no answer in {WORKER_ANSWER_S:g} s")
                data = self.sock.recv(1 << 16)
                if not data:
                    raise EOFError("worker closed its socket")
                self.buffer += data
                self._take()
        except (OSError, EOFError, _WorkerGone) as exc:
            self.stop(str(exc) or type(exc).__name__)
        return None


class ProcessPoolChecker:
    """Signature checks on ``workers`` worker processes (the CPU-heavy part of admission).

    Each worker is a fresh interpreter running :func:`vm.attestation_ahead.serve_fd` on
    one end of a socket pair (the block check's worker program); a batch is split into
    parts (about four a worker, :data:`MIN_PART` items or more, ``chunk`` at most) that the running
    workers take in turn as they answer, so a worker that gets less of a core takes
    fewer; each part is one compact frame (length-prefixed attestation bytes), answered
    with one code byte per item. Up to :data:`WORKER_AHEAD_ITEMS` of a batch are written
    to a worker ahead, so it keeps working while the trio thread is busy.
    The node drives them from its trio thread (:meth:`check_async`: frames written
    without blocking, answers awaited with ``trio.lowlevel.wait_readable``), so no thread
    of this process blocks on them or hands bytes over (a ``ProcessPoolExecutor`` pickles
    every task and answer through two helper threads of this process that fight the
    event loop for the GIL). Accepted items are read back without the canonical
    re-encoding check (``vm.attestation.decode_accepted``: the worker made it).
    Workers start on the first batch of ``min_batch`` or more; a worker that dies,
    garbles or does not answer within :data:`WORKER_ANSWER_S` is stopped and its part
    is checked in this process (a worker thread), and it is started again at most every
    :data:`WORKER_RESTART_S`. Smaller batches are checked in this process.
    """

    def __init__(self, workers: int = 2, min_batch: int = 8, chunk: int = 256) -> None:
        self.workers = workers
        self.min_batch = min_batch
        self.chunk = chunk
        self._workers = [_Worker() for _ in range(workers)]
        self._closed = False
        self._inline = InlineChecker()

    def pids(self) -> list[int]:
        """Process ids of the running workers (benches)."""
        return [w.process.pid for w in self._workers if w.process is not None]

    def _live(self) -> list[_Worker]:
        """The running workers (those due are started first)."""
        if self._closed:
            return []
        for worker in self._workers:
            worker.ensure_started()
        return [w for w in self._workers if w.sock is not None]

    def _parts(self, n: int, live: int) -> list[tuple[int, int]]:
        """(start, end) of each part of a batch of ``n`` for ``live`` workers: about four
        parts a worker (a worker that is slower, or gets less of a core, takes fewer),
        ``MIN_PART`` to ``chunk`` items each."""
        size = min(self.chunk, max(MIN_PART, -(-n // (4 * max(1, live)))))
        return [(start, min(n, start + size)) for start in range(0, n, size)]

    @staticmethod
    def _valid(codes: bytes | None, n: int) -> bool:
        return codes is not None and len(codes) == n and not codes.translate(None, _CODE_BYTES)

    async def check_async(self, raws: Sequence[bytes], chain_id: int,
                          on_part: Callable[[int, list[Attestation | str]], None] | None = None,
                          ) -> list[Attestation | str]:
        """Like :func:`check_stateless_unshared` (touches no memo of this process), the
        signatures checked by the workers; from the trio thread. ``on_part(start,
        outcomes)`` is told the outcomes as they come, in order and contiguous from the
        first item (a part as soon as it and every part before it are answered), so the
        caller can start on the first items while the workers check the last ones."""
        raws = list(raws)
        if len(raws) < self.min_batch:
            out = await trio.to_thread.run_sync(check_stateless_unshared, raws, chain_id)
            if on_part is not None:
                on_part(0, out)
            return out
        live = self._live()
        parts = self._parts(len(raws), len(live))
        answers: list[bytes | None] = [None] * len(parts)
        outcomes: list[list[Attestation | str] | None] = [None] * len(parts)
        taken = 0  # parts claimed by a worker so far
        told = 0  # parts handed to on_part so far

        def decoded(k: int) -> list[Attestation | str] | None:
            start, end = parts[k]
            codes = answers[k]
            if codes is None or not self._valid(codes, end - start):
                return None
            return [decode_accepted(raw) if code == CODE_OK else CODES[code]
                    for raw, code in zip(raws[start:end], codes, strict=True)]

        def tell() -> None:
            """Decode (once) and hand on the answered parts that now follow the last told."""
            nonlocal told
            while told < len(parts):
                if outcomes[told] is None:
                    if answers[told] is None:
                        return
                    outcomes[told] = decoded(told)
                    if outcomes[told] is None:
                        return  # garbled: checked here after the workers are done
                if on_part is not None:
                    on_part(parts[told][0], outcomes[told])  # type: ignore[arg-type]
                told += 1

        async def pull(worker: _Worker) -> None:
            """Feed ``worker`` the next parts, keeping up to WORKER_AHEAD_ITEMS written
            (so it has work while this thread is busy), until none is left."""
            nonlocal taken
            out: deque[tuple[int, tuple[int, int], int]] = deque()
            ahead = 0
            try:
                while True:
                    while taken < len(parts) and (not out or ahead < WORKER_AHEAD_ITEMS):
                        k, taken = taken, taken + 1
                        start, end = parts[k]
                        ticket = await worker.submit(chain_id, raws[start:end])
                        if ticket is None:
                            return  # (this part and those out: checked here)
                        out.append((k, ticket, end - start))
                        ahead += end - start
                    if not out:
                        return
                    k, ticket, n = out.popleft()
                    ahead -= n
                    answers[k] = await worker.answer(ticket)
                    if answers[k] is None:
                        return
                    tell()
            finally:
                for _, ticket, _ in out:
                    worker.abandon(ticket)

        if len(live) == 1 or (live and len(parts) == 1):
            await pull(live[0])
        elif live:
            async with trio.open_nursery() as nursery:
                for worker in live:
                    nursery.start_soon(pull, worker)
        out: list[Attestation | str] = []
        for k, (start, end) in enumerate(parts):
            if k >= told:
                part = outcomes[k] if outcomes[k] is not None else decoded(k)
                if part is None:
                    part = await trio.to_thread.run_sync(check_stateless_unshared,
                                                         raws[start:end], chain_id)
                outcomes[k] = part
                if on_part is not None:
                    on_part(start, part)
                told = k + 1
            out += outcomes[k]  # type: ignore[operator]
        return out

    def _codes_sync(self, raws: Sequence[bytes],
                    chain_id: int) -> Iterator[tuple[int, int, bytes | None]]:
        live = self._live()
        parts = self._parts(len(raws), len(live))
        tickets = [(live[k % len(live)], live[k % len(live)].send_sync(chain_id, raws[start:end]))
                   if live else (None, None) for k, (start, end) in enumerate(parts)]
        for (start, end), (worker, ticket) in zip(parts, tickets, strict=True):
            codes = worker.receive_sync(ticket) if worker is not None else None
            yield start, end, codes if self._valid(codes, end - start) else None

    def check_many(self, raws: Sequence[bytes], ids: Sequence[bytes],
                   chain_id: int) -> Iterator[Attestation | str]:
        """The :class:`StatelessChecker` of a pool (tests, benches; blocks): accepted ids
        are marked verified in this process. Not while :meth:`check_async` runs."""
        if len(raws) < self.min_batch:
            yield from self._inline.check_many(raws, ids, chain_id)
            return
        for start, end, codes in self._codes_sync(raws, chain_id):
            if codes is None:
                yield from self._inline.check_many(raws[start:end], ids[start:end], chain_id)
                continue
            for raw, att_id, code in zip(raws[start:end], ids[start:end], codes, strict=True):
                if code == CODE_OK:
                    att = decode_accepted(raw)
                    mark_verified(att_id, chain_id, att)
                    yield att
                else:
                    yield CODES[code]

    def check_unshared(self, raws: Sequence[bytes], chain_id: int) -> list[Attestation | str]:
        """:meth:`check_async` for a plain thread (blocks; tests, benches). Not while
        :meth:`check_async` runs."""
        if len(raws) < self.min_batch:
            return check_stateless_unshared(raws, chain_id)
        out: list[Attestation | str] = []
        for start, end, codes in self._codes_sync(raws, chain_id):
            if codes is None:
                out += check_stateless_unshared(raws[start:end], chain_id)
            else:
                out += [decode_accepted(raw) if code == CODE_OK else CODES[code]
                        for raw, code in zip(raws[start:end], codes, strict=True)]
        return out

    def close(self) -> None:
        """Stop the workers for good."""
        self._closed = True
        for worker in self._workers:
            worker.stop()


# --- fast reads of the head state, kept across heads --------------------------------
# Admission reads a few storage slots per attestation (the device's identity record and
# its telemetry track). Through py-evm each read walks the trie decoding RLP nodes in
# Python, which costs several times a signature recovery. Here trie nodes are decoded
# once and kept by hash (vm.trie.TrieNodes; content-addressed: always valid), identity records are
# memoised across heads and dropped exactly when a slot they read changes (found by
# diffing the storage tries of consecutive heads), and device tracks are carried to
# the next head by replaying the block's included attestations, which is what
# execution did to them. Block execution reads through vm.trie too, but never through
# this cache.


@lru_cache(maxsize=1 << 18)
def _slot_key(slot: int) -> bytes:
    return keccak256(slot.to_bytes(32, "big"))


class HeadState:
    """Read-only storage of one state root (the ``get_storage`` that module read
    functions use), straight from trie nodes. Optionally records what it reads."""

    def __init__(self, nodes: TrieNodes, state_root: bytes) -> None:
        self.nodes = nodes
        self.state_root = state_root
        self._roots: dict[bytes, bytes] = {}
        self._values: dict[tuple[bytes, int], int] = {}
        self.recording: set[tuple[bytes, str]] | None = None

    def storage_root(self, address: bytes) -> bytes:
        root = self._roots.get(address)
        if root is None:
            account = self.nodes.get(self.state_root, keccak256(address))
            root = self._roots[address] = rlp_decode(account)[2] if account else BLANK_ROOT
        return root

    def get_storage(self, address: bytes, slot: int) -> int:
        if self.recording is not None:
            self.recording.add((address, _slot_key(slot).hex()))
        value = self._values.get((address, slot))
        if value is None:
            raw = self.nodes.get(self.storage_root(address), _slot_key(slot))
            value = int.from_bytes(rlp_decode(raw), "big") if raw else 0
            self._values[(address, slot)] = value
        return value

    def set_storage(self, address: bytes, slot: int, value: int) -> None:
        raise TypeError("the head state is read-only")


class AdmissionCache:
    """What pool admission reads from the head, kept across heads (see above).

    The node calls ``advance(parent_root, root, included)`` after each committed
    block (post-state root, the block's included attestation bytes in order) and
    takes a fresh ``view(root, now_ms, next_height)`` per head for ``view_check``.
    A root that does not follow on from the last one resets the cache.
    """

    def __init__(self, db: Any, max_nodes: int = 500_000, max_devices: int = 1_000_000) -> None:
        self.nodes = TrieNodes(db, max_nodes)
        self.max_devices = max_devices
        self.state_root: bytes | None = None
        self._head: HeadState | None = None
        self._records: dict[bytes, tuple[Any, set[tuple[bytes, str]]]] = {}
        self._dependents: dict[tuple[bytes, str], set[bytes]] = {}
        self._watched_roots: dict[bytes, bytes] = {}
        self._tracks: dict[bytes, Any] = {}
        self._deny_version = 0

    def _reset(self, state_root: bytes) -> None:
        from vm.modules.telemetry import get_deny_version

        self.state_root = state_root
        self._head = HeadState(self.nodes, state_root)
        self._records.clear()  # (HeadState serves the read functions' get_storage)
        self._dependents.clear()
        self._watched_roots.clear()
        self._tracks.clear()
        self._deny_version = get_deny_version(self._head)  # type: ignore[arg-type]

    def advance(self, parent_root: bytes, state_root: bytes, included: Sequence[bytes],
                records: Sequence[Any] | None = None) -> None:
        """Follow the chain to the block with post-state ``state_root``; ``records``: the
        included attestations decoded, when the caller has them (else read here)."""
        from vm.epoch import get_epoch
        from vm.modules.telemetry import get_deny_version

        if self.state_root is None or parent_root != self.state_root:
            self._reset(state_root)
            return
        head = HeadState(self.nodes, state_root)
        for address, old_root in list(self._watched_roots.items()):
            new_root = head.storage_root(address)
            if new_root != old_root:
                for key in self.nodes.changed_keys(old_root, new_root):
                    for device in self._dependents.pop((address, key), ()):
                        self._records.pop(device, None)
                self._watched_roots[address] = new_root
        deny_version = get_deny_version(head)  # type: ignore[arg-type]
        if deny_version != self._deny_version:
            self._tracks.clear()
            self._deny_version = deny_version
        else:
            epoch = get_epoch(head)  # type: ignore[arg-type]
            tracks = self._tracks
            # the block was executed: its attestations are valid, a plain decode will do
            if records is None or len(records) != len(included):
                records = list(map(msgpack.unpackb, included))
            for fields in records:
                track = tracks.get(fields[1])
                if track is not None:
                    track.advance(fields, epoch)
        self.state_root = state_root
        self._head = head

    def get_device(self, state: Any, device: bytes) -> Any:
        """identity.get_device, memoised across heads."""
        entry = self._records.get(device)
        if entry is not None:
            return entry[0]
        from vm.modules.identity import get_device

        reads: set[tuple[bytes, str]] = set()
        state.recording = reads
        try:
            record = get_device(state, device)
        finally:
            state.recording = None
        if len(self._records) >= self.max_devices:
            self._records.clear()
            self._dependents.clear()
        self._records[device] = (record, reads)
        for address, key in reads:
            self._dependents.setdefault((address, key), set()).add(device)
            if address not in self._watched_roots:
                self._watched_roots[address] = state.storage_root(address)
        return record

    def head(self) -> HeadState | None:
        """The head state the cache follows (None before the first ``advance``)."""
        return self._head

    def view(self, state_root: bytes, now_ms: int, height: int):
        """A TelemetryView for admission at the head with ``state_root``."""
        from vm.modules.telemetry import TelemetryView

        if state_root != self.state_root or self._head is None:
            self._reset(state_root)
        if len(self._tracks) >= self.max_devices:
            self._tracks.clear()
        return TelemetryView(self._head, now_ms, height, self.get_device,  # type: ignore[arg-type]
                             track_cache=self._tracks, tallies=False)


# --- the pool --------------------------------------------------------------------


class AddResult(NamedTuple):
    """One ``motus_submitAttestations`` result."""

    id: bytes
    accepted: bool
    code: str  # "ok", a reject code, or "pool_full"

    def to_json(self) -> dict[str, object]:
        return {"id": "0x" + self.id.hex(), "accepted": self.accepted, "code": self.code}


_new_tuple = tuple.__new__  # NamedTuple(*fields) without its Python-level __new__


def _accepted(att_id: bytes) -> AddResult:
    """``AddResult(att_id, True, OK)``, faster."""
    return _new_tuple(AddResult, (att_id, True, OK))


@dataclass(frozen=True)
class AttestationStatus:
    """``motus_getAttestation``: pending, included (with height) or rejected (with code)."""

    status: str
    height: int | None = None
    code: str | None = None


class _Entry(NamedTuple):
    raw: bytes
    att: Attestation
    source: str


_entry_raw, _entry_source = attrgetter("raw"), attrgetter("source")
_entry_device = attrgetter("att.device")


def _subtract(counter: dict[Any, int], counts: Counter[Any]) -> None:
    """``_decrement`` ``n`` times for each ``key: n`` of ``counts``."""
    for key, n in counts.items():
        left = counter[key] - n
        if left > 0:
            counter[key] = left
        else:
            del counter[key]


def _decrement(counter: dict[Any, int], key: Any) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]


class AttestationPool:
    """Bounded, de-duplicated by id, ordered by arrival. Not thread-safe (one trio task
    at a time, as everything in the node)."""

    def __init__(self, chain_id: int, *, max_items: int = 100_000, max_bytes: int = 32 << 20,
                 max_per_source: int = 20_000, max_per_device: int = 256,
                 history: int = 200_000, checker: StatelessChecker | None = None,
                 counters: RejectCounters | None = None,
                 credit: SourceCredit | None = None) -> None:
        self.chain_id = chain_id
        # refused items per source (sources named "" are the node's own: not limited)
        self.credit = credit or SourceCredit(REJECT_CREDIT_PER_S, REJECT_CREDIT_BURST)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_per_source = max_per_source
        self.max_per_device = max_per_device
        self.history_size = history
        self.checker: StatelessChecker = checker or InlineChecker()
        self.counters = counters or RejectCounters()
        self._pending: OrderedDict[bytes, _Entry] = OrderedDict()
        self.dropped = 0  # pending attestations that left other than by inclusion, ever
        # ... by the code they were refused with then (the node's metrics): admitted, then
        # lost unless another node's pool still gets them into a block (``replay``: a
        # later reading of the device was included first)
        self.dropped_codes: Counter[str] = Counter()
        # device -> (seq, timestamp_s) of a reading refused pool_full after its checks: the
        # device's later readings wait for it (see _waits_for_missing)
        self._missing: dict[bytes, tuple[int, int]] = {}
        self.clock: Callable[[], float] = time.time
        self._bytes = 0
        self._per_source: dict[str, int] = {}
        self._per_device: dict[bytes, int] = {}
        self._history: OrderedDict[bytes, AttestationStatus] = OrderedDict()
        # (timestamp_s, id) of pending items, oldest first, so that ``drop_stale`` after
        # each block looks only at what is stale, not at the whole pool (a scan of 20,000
        # pending items was ~80 ms a block on the trio thread). Items that left the pool
        # stay in it until popped or until ``_compact_times`` rebuilds it.
        self._by_time: list[tuple[int, bytes]] = []

    # -- sizes --

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __contains__(self, att_id: bytes) -> bool:
        return att_id in self._pending

    def pending_raw(self, att_id: bytes) -> bytes | None:
        """The bytes of the pending attestation ``att_id`` (its keccak), or None: how a
        compact proposal's block is rebuilt (node/compact.py)."""
        entry = self._pending.get(att_id)
        return entry.raw if entry is not None else None

    def pending_source(self, att_id: bytes) -> str | None:
        """Where the pending attestation ``att_id`` came from (``rpc:...``, ``peer:...``,
        "" for the node's own), or None if it is not pending."""
        entry = self._pending.get(att_id)
        return entry.source if entry is not None else None

    # -- admission --

    def add(self, raw: bytes, check: StatefulCheck, source: str = "") -> AddResult:
        """Check one attestation and insert it if valid; see :meth:`add_many`."""
        return self.add_many([raw], check, source)[0]

    def add_many(self, raws: Sequence[bytes], check: StatefulCheck, source: str = "", *,
                 stateless: Sequence[Attestation | str | None] | None = None,
                 ids: Sequence[bytes] | None = None, admitted: bool = False) -> list[AddResult]:
        """Check attestations (stateless, then ``check`` against the head) and insert
        the valid ones, in order; one result per input.

        An id already pending answers accepted/ok again (resubmission is harmless);
        an id whose stateless check failed before answers that code without redoing
        the work; ``source`` (peer id, RPC client) is charged for the quota.
        ``stateless`` may carry the stateless outcome of each item, computed elsewhere
        (a worker thread: :func:`check_stateless_unshared`); ``None`` entries are
        checked here, and ``pool_full`` entries (items the caller found no room for
        before checking them) are refused as such, unchecked and not recorded. ``ids``
        may carry the ids when the caller computed them. ``admitted``: the caller already
        asked :meth:`admits` for the whole batch this is a slice of, so it is not throttled
        here (a batch is checked whole or refused whole: a peer's batch of genuine replays
        that used up the credit half-way, then forged items, must not pass the forged ones
        unchecked and be relayed as accepted).

        ``source`` is charged for each item it refused after checking it (``pool_full``
        excepted): one for a stateless refusal, :data:`PEER_STATEFUL_CHARGE` for a
        stateful one of a ``peer:`` source (a relay may have had another head).
        """
        raws = [r if type(r) is bytes else bytes(r) for r in raws]
        if ids is None:
            ids = list(map(compute_attestation_id, raws))
        if not admitted and not self.admits(source, len(raws)):
            self.counters.add(THROTTLED, len(raws))
            return [AddResult(att_id, False, THROTTLED) for att_id in ids]
        n = len(raws)
        results: list[AddResult | None] = [None] * n
        duplicates: list[tuple[int, int]] = []
        pending, history = self._pending, self._history
        todo: list[int]
        if (len(set(ids)) == n and pending.keys().isdisjoint(ids)
                and history.keys().isdisjoint(ids)):
            todo = list(range(n))  # the usual batch: all new and distinct, nothing to look up
            todo_raws, todo_ids = raws, ids
        else:
            todo = []
            first: dict[bytes, int] = {}
            for i, att_id in enumerate(ids):
                if att_id in first:  # the same bytes twice in one batch: the first one decides
                    duplicates.append((i, first[att_id]))
                    continue
                first[att_id] = i
                known = (self._known_result(att_id) if att_id in pending or att_id in history
                         else None)
                if known is not None:
                    results[i] = known
                else:
                    todo.append(i)
            todo_raws, todo_ids = [raws[i] for i in todo], [ids[i] for i in todo]
        if stateless is None:
            checked = self.checker.check_many(todo_raws, todo_ids, self.chain_id)
        else:
            checked = self._prechecked(todo, raws, ids, stateless)
        per_source, per_device = self._per_source, self._per_device
        max_items, max_bytes = self.max_items, self.max_bytes
        max_per_source, max_per_device = self.max_per_source, self.max_per_device
        by_time = self._by_time
        missing = self._missing
        # the admission loop runs for every attestation: checks and insertion written inline
        for i, outcome in zip(todo, checked, strict=True):
            att_id = ids[i]
            if isinstance(outcome, str):
                if outcome == POOL_FULL:  # the caller found no room before checking it
                    self.counters.add(POOL_FULL)
                    results[i] = AddResult(att_id, False, POOL_FULL)
                    continue
                self._reject(att_id, outcome)
                results[i] = AddResult(att_id, False, outcome)
                continue
            raw, device = raws[i], outcome.device
            if (len(pending) >= max_items or self._bytes + len(raw) > max_bytes
                    or per_source.get(source, 0) >= max_per_source
                    or per_device.get(device, 0) >= max_per_device
                    or (missing and device in missing
                        and self._waits_for_missing(outcome, check))):
                self.counters.add(POOL_FULL)
                results[i] = AddResult(att_id, False, POOL_FULL)
                if _would_pass(outcome, check):  # (a reading the view would refuse
                    self._note_missing(outcome)  # never enters it: nothing to wait for)
                continue
            code = check(outcome)
            if code is not None:
                self._reject(att_id, code)
                results[i] = AddResult(att_id, False, code)
                continue
            pending[att_id] = _new_tuple(_Entry, (raw, outcome, source))  # _Entry(...), faster
            heappush(by_time, (outcome.timestamp_s, att_id))
            self._bytes += len(raw)
            per_source[source] = per_source.get(source, 0) + 1
            per_device[device] = per_device.get(device, 0) + 1
            if att_id in history:
                del history[att_id]
            results[i] = _accepted(att_id)
        for i, j in duplicates:
            results[i] = results[j]
        self._compact_times()
        if source:
            self.credit.charge(source, self._refusal_cost(source, [results[i] for i in todo]))  # type: ignore[misc]
        return results  # type: ignore[return-value]  # every slot is filled above

    def _note_missing(self, att: Attestation) -> None:
        """``att`` passed the stateless checks and was refused ``pool_full``: until this
        node's view holds the device's ``att.seq``, its later readings are refused
        ``pool_full`` too. Admitting them instead leaves a gap: if this node then
        proposes, the later reading is included, and ``att``, pending in other pools, is
        dropped there as ``replay`` and lost (four-validator bench: a relay over its
        quota of 20,000)."""
        missing = self._missing
        seen = missing.get(att.device)
        if seen is not None and seen[0] <= att.seq:
            return  # waiting for an earlier one already
        # (a timestamp ahead of this node's clock does not stretch the wait)
        missing[att.device] = (att.seq, min(att.timestamp_s, int(self.clock())))
        if len(missing) > MAX_MISSING:
            del missing[next(iter(missing))]

    def _waits_for_missing(self, att: Attestation, check: StatefulCheck) -> bool:
        """Whether ``att`` follows a reading of its device this node refused ``pool_full``
        and does not hold yet; forgets the refused reading once the view holds its seq
        (admitted here since, or included) or it is too old to be included."""
        seq, timestamp_s = self._missing[att.device]
        if att.seq <= seq:
            return False  # that reading itself (or an earlier one): checked as ever
        last_seq = getattr(check, "last_seq", None)
        if ((last_seq is not None and last_seq(att.device) >= seq)
                or timestamp_s + MISSING_FOR_S < self.clock()):
            del self._missing[att.device]
            return False
        return True

    @staticmethod
    def _refusal_cost(source: str, checked: Iterable[AddResult]) -> float:
        """What ``source`` is charged for the refusals among the items checked now."""
        stateless = stateful = 0
        for r in checked:
            if r.accepted or r.code == POOL_FULL:
                continue
            if r.code in STATELESS_CODES:
                stateless += 1
            else:
                stateful += 1
        if source.startswith("peer:"):
            return stateless + stateful * PEER_STATEFUL_CHARGE
        return stateless + stateful

    def room(self, source: str) -> int:
        """How many more attestations from ``source`` the pool could take now by its item
        count and the source's quota (``add_many`` refuses the rest as ``pool_full``;
        the byte and per-device limits are checked there too)."""
        return max(0, min(self.max_items - len(self._pending),
                          self.max_per_source - self._per_source.get(source, 0)))

    def admits(self, source: str, items: int = 1) -> bool:
        """False while ``source`` has no credit of refused items left (node/fairness.py):
        its items are then refused unchecked with code ``throttled``."""
        return not source or self.credit.allows(source, items)

    def _prechecked(self, todo: Sequence[int], raws: Sequence[bytes], ids: Sequence[bytes],
                    stateless: Sequence[Attestation | str | None]) -> Iterator[Attestation | str]:
        inline = InlineChecker()
        for i in todo:
            outcome = stateless[i]
            if outcome is None:
                yield from inline.check_many([raws[i]], [ids[i]], self.chain_id)
                continue
            if not isinstance(outcome, str):
                # block execution will neither recover nor decode it again
                mark_verified(ids[i], self.chain_id, outcome)
            yield outcome

    def needs_check(self, att_id: bytes) -> bool:
        """Whether :meth:`add_many` would run the stateless checks on this id (not pending,
        and not refused before for a reason that depends only on its bytes, nor
        included): lets a caller skip that work for resubmissions."""
        if att_id in self._pending:
            return False
        past = self._history.get(att_id)
        return past is None or (past.status == REJECTED and past.code not in STATELESS_CODES)

    def _known_result(self, att_id: bytes) -> AddResult | None:
        if att_id in self._pending:
            return AddResult(att_id, True, OK)
        past = self._history.get(att_id)
        if past is None:
            return None
        if past.status == INCLUDED:  # counted as the stateful check would count it
            self.counters.add(RejectCode.REPLAY.value)
            return AddResult(att_id, False, RejectCode.REPLAY.value)
        if past.code in STATELESS_CODES:  # a pure function of the bytes: same answer
            self.counters.add(past.code)
            return AddResult(att_id, False, past.code)
        return None  # stateful rejection: the head may have changed, check again

    def _drop(self, att_id: bytes) -> _Entry | None:
        entry = self._pending.pop(att_id, None)
        if entry is None:
            return None
        self.dropped += 1  # left without being included (an admission view may hold it)
        self._bytes -= len(entry.raw)
        _decrement(self._per_source, entry.source)
        _decrement(self._per_device, entry.att.device)
        return entry

    def _drop_refused(self, att_id: bytes, code: str) -> None:
        """A pending attestation is refused now (by a new head, the clock, or block
        building): it leaves the pool, recorded and counted as a refusal and as dropped."""
        self._drop(att_id)
        self._reject(att_id, code)
        self.dropped_codes[code] += 1

    def _remember(self, att_id: bytes, status: AttestationStatus) -> None:
        history = self._history
        if att_id in history:
            history.move_to_end(att_id)
        history[att_id] = status
        if len(history) > self.history_size:
            history.popitem(last=False)

    def _reject(self, att_id: bytes, code: str) -> None:
        self.counters.add(code)
        self._remember(att_id, AttestationStatus(REJECTED, code=code))

    # -- block building and new heads --

    def take(self, max_n: int) -> list[bytes]:
        """The oldest ``max_n`` pending attestations, in arrival order (they stay
        pending until ``remove_included``)."""
        return self.take_with_ids(max_n)[0]

    def take_with_ids(self, max_n: int) -> tuple[list[bytes], list[bytes]]:
        """:meth:`take` with the ids (keccak of each) beside: block building then does not
        hash them again."""
        raws: list[bytes] = []
        ids: list[bytes] = []
        if max_n <= 0:
            return raws, ids
        for att_id, entry in self._pending.items():
            raws.append(entry.raw)
            ids.append(att_id)
            if len(raws) >= max_n:
                break
        return raws, ids

    def remove_included(self, ids: Iterable[bytes], height: int) -> None:
        """Attestations of a committed block at ``height`` leave the pool (included).

        Runs for every attestation of every block, so it works a block at a time:
        quotas and sizes are adjusted once per source and device, and the history gets
        the block's ids in one update (each at the newest end, in block order, as if
        recorded one by one)."""
        ids = list(ids)
        if not ids:
            return
        status = AttestationStatus(INCLUDED, height=height)  # immutable: one for the block
        pending, history = self._pending, self._history
        entries = [e for e in map(pending.pop, ids, repeat(None)) if e is not None]
        if entries:
            self._bytes -= sum(map(len, map(_entry_raw, entries)))
            _subtract(self._per_source, Counter(map(_entry_source, entries)))
            _subtract(self._per_device, Counter(map(_entry_device, entries)))
        if len(set(ids)) != len(ids):  # a repeated id counts where it was last seen
            ids = list(dict.fromkeys(reversed(ids)))[::-1]
        for att_id in history.keys() & ids:  # usually none: admission clears an id's past
            del history[att_id]
        history.update(zip(ids, repeat(status)))
        while len(history) > self.history_size:
            history.popitem(last=False)

    def recheck(self, check: StatefulCheck) -> list[tuple[bytes, str]]:
        """Run the stateful check (a fresh one over the new head) on every pending item
        in arrival order; drop and return (id, code) of those that fail now."""
        dropped = []
        for att_id, entry in list(self._pending.items()):
            code = check(entry.att)
            if code is not None:
                self._drop_refused(att_id, code)
                dropped.append((att_id, code))
        return dropped

    def is_oldest_pending(self, ids: Sequence[bytes]) -> bool:
        """Whether ``ids`` are all pending and, for each device, its oldest pending ones
        (what a block built from this pool includes). Then what stays pending of every
        device was checked after exactly those, in that order."""
        left = set(ids)
        if not left or len(left) != len(ids) or not left <= self._pending.keys():
            return not left
        passed: set[bytes] = set()  # devices with a pending attestation not in ``ids``
        for att_id, entry in self._pending.items():
            device = entry.att.device
            if att_id in left:
                if device in passed:
                    return False
                left.discard(att_id)
                if not left:
                    return True
            else:
                passed.add(device)
        return not left

    def drop_stale(self, now_ms: int, stale_ms: int) -> list[tuple[bytes, str]]:
        """Drop and return (id, ``stale``) of pending attestations older than ``stale_ms``
        before ``now_ms`` (the one check whose answer changes with time alone), oldest
        first. Costs what is dropped (and the pool's departed items it passes), not the
        size of the pool."""
        dropped = []
        code = RejectCode.STALE.value
        heap, pending = self._by_time, self._pending
        while heap and heap[0][0] * 1000 + stale_ms < now_ms:
            _, att_id = heapq.heappop(heap)
            if att_id in pending:
                self._drop_refused(att_id, code)
                dropped.append((att_id, code))
        return dropped

    def _compact_times(self) -> None:
        """Rebuild the time order from the pending items when departed ones dominate it
        (amortised: at most once per as many departures as there are pending items)."""
        if len(self._by_time) > 2 * len(self._pending) + 4_096:
            self._by_time = [(e.att.timestamp_s, att_id) for att_id, e in self._pending.items()]
            heapq.heapify(self._by_time)

    def reject_pending(self, rejected: Iterable[tuple[bytes, str]]) -> int:
        """Drop pending attestations that block building refused, recording and counting
        each (id, code); ids not pending are ignored. Returns how many were dropped."""
        n = 0
        for att_id, code in rejected:
            if att_id in self._pending:
                self._drop_refused(att_id, code)
                n += 1
        return n

    def status(self, att_id: bytes) -> AttestationStatus | None:
        """Pending, included (height) or rejected (code); None if unknown or forgotten."""
        if att_id in self._pending:
            return AttestationStatus(PENDING)
        return self._history.get(att_id)

    def recent_rejections(self, limit: int, scan: int) -> list[tuple[bytes, str]]:
        """The newest refusals (id, reject code), newest first: at most ``limit``, among
        the newest ``scan`` history entries (which also hold inclusions), so the cost is
        bounded whatever the history's size (the explorer's front page)."""
        out: list[tuple[bytes, str]] = []
        for i, (att_id, status) in enumerate(reversed(self._history.items())):
            if i >= scan or len(out) >= limit:
                break
            if status.status == REJECTED and status.code is not None:
                out.append((att_id, status.code))
        return out
