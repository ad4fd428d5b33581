"""Attestation signatures checked on a second core while a block executes
(docs/telemetry.md, "Checking a peer's block").

A block from a peer may carry attestations this node never admitted: their signatures
are not in the verified-id memo (:mod:`vm.attestation`), and recovering them (~50 us
each) is a third of executing them. :class:`SignatureWorker` is one worker process that
gives :func:`vm.attestation.check_stateless_codes`'s verdicts (:func:`answer_task`; the
same program serves admission's workers, node.attestation_pool.ProcessPoolChecker);
:class:`SignaturesAhead` hands it a block's unverified attestations as execution starts
while its loop applies them unverified, and settles them after the block's state root
(each ``ok`` answer a memo entry; whatever has none is checked by the caller).

Why a process fed straight through a socket pair by the executing thread: a worker
thread needs the GIL for its Python part (decoding, the digest) after every recovery,
and an executing thread that never blocks gives it up only every switch interval
(5 ms); a ``ProcessPoolExecutor`` moves tasks and answers through helper threads of
this process that wait for the GIL the same way. Measured on a 2,000-attestation block
(docs/benchmarks.md, "A peer's block: signatures beside execution"): serially 0.240 s,
with a worker thread 0.264 s, a process pool 0.203 s, this worker 0.177 s (seen: 0.134 s).
Here the executing thread writes the tasks and reads the answers itself: no other
thread of this process is involved.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from vm.attestation import (
    AttestationError,
    RejectCode,
    check_stateless,
    compute_attestation_id,
    decode_attestation,
    is_verified,
    mark_verified,
    verify_signature,
)

log = logging.getLogger("motus.vm.signatures")

AHEAD_CHUNK = 64  # attestations per task: ~3 ms of the worker's time, ~10 us to hand over
# How a block's tasks reach the worker (docs/telemetry.md, "Checking a peer's block"):
# all of them are framed when the check starts and kept in this process until the socket
# takes them; the caller pushes them on (a send that never blocks, MSG_DONTWAIT) whenever
# it looks for answers, and the worker reads every frame that has come before each task,
# so the socket's buffer (~208 KiB) is never what holds the worker back, and a stuck
# worker never blocks the caller (what the socket does not take stays here).
# In SignaturesAhead.finish, the longest wait for one answer the worker owes (a task is
# ~3 ms of its time); past it the rest of the block is the caller's.
SHARE_WAIT_S = 0.05
WORKER_RESTART_S = 60.0  # a worker that died is started again at most this often
# A worker that owes answers and has given none for this long (found by available(),
# between blocks) is killed (SIGKILL: a stopped process ends too) and, after
# WORKER_RESTART_S, replaced.
WORKER_STUCK_S = 10.0


# The worker is a fresh interpreter that imports this module only (~0.25 s of CPU,
# ~40 MB): multiprocessing's spawn would import the node's main module in it too
# (cli.main: ~1 s of CPU, ~60 MB).
_WORKER_CODE = "import sys; from vm.attestation_ahead import serve_fd; serve_fd(int(sys.argv[1]))"
_ROOT = str(Path(__file__).resolve().parents[1])  # where the vm package is


# --- the worker's wire format (shared with node.attestation_pool.ProcessPoolChecker) -----
# A task is ``tag`` (its low 4 bytes, big-endian) ``chain_id`` (8 bytes) and then each attestation
# as one length byte and its bytes; an answer is the tag and one code byte per
# attestation (:data:`CODES`). Both go as multiprocessing.connection frames (a 4-byte
# big-endian length first). No pickle: a task of 64 attestations is built in ~10 us and
# read in ~15 us, and the answer is 68 bytes. An attestation longer than 255 bytes (or
# empty) goes as an empty one: malformed either way (valid ones are at most 180 bytes).
CODES = ("ok", RejectCode.MALFORMED.value, RejectCode.BAD_SIGNATURE.value)
CODE_OK = 0
_CODE_BYTES = {code: i for i, code in enumerate(CODES)}
_LENGTH = [bytes((n,)) for n in range(256)]
_EMPTY = _LENGTH[0]


def encode_task(tag: int, chain_id: int, raws: Sequence[bytes]) -> bytes:
    """A task's bytes (see above), without the frame's length."""
    parts = [(tag & 0xFFFFFFFF).to_bytes(4, "big") + chain_id.to_bytes(8, "big")]
    append, length = parts.append, _LENGTH
    for raw in raws:
        n = len(raw)
        if 0 < n < 256:
            append(length[n])
            append(raw)
        else:
            append(_EMPTY)
    return b"".join(parts)


def answer_task(task: bytes) -> bytes:
    """The worker's answer to ``task``: its tag and a code byte per attestation
    (the verdicts of :func:`vm.attestation.check_stateless_codes`)."""
    chain_id = int.from_bytes(task[4:12], "big")
    out = bytearray(task[:4])
    append, code_of = out.append, _CODE_BYTES
    pos, end = 12, len(task)
    while pos < end:
        start = pos + 1
        pos = start + task[pos]
        try:
            verify_signature(decode_attestation(task[start:pos]), chain_id)
        except AttestationError as exc:
            append(code_of[exc.code])
        else:
            append(CODE_OK)
    return bytes(out)


def spawn_worker() -> tuple[Any, socket.socket] | None:
    """A worker process serving one end of a new socket pair: (process, our end), or
    None when it cannot be started (logged)."""
    ours, theirs = socket.socketpair()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env)
    except OSError as exc:
        ours.close()
        log.warning("signature worker not started: %s", exc)
        return None
    finally:
        theirs.close()
    return process, ours


def stop_worker(process: Any) -> None:
    """Wait up to 2 s for a worker whose socket was closed to end; else kill it."""
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=2)


def serve_fd(fd: int) -> None:
    """The worker process's entry point: serve the connected socket ``fd``."""
    _serve(Connection(fd))


def encode_skip(first: int, last: int) -> bytes:
    """A control frame (8 bytes; a task is at least 12): answer the tasks tagged
    ``first``..``last`` that the worker has not started with no codes."""
    return (first & 0xFFFFFFFF).to_bytes(4, "big") + (last & 0xFFFFFFFF).to_bytes(4, "big")


def _serve(conn: Any) -> None:
    """The worker process: answer tasks (:func:`answer_task`) in order until the socket
    closes. Every byte that has come is read before each task and cut into frames here
    (so the sender's bytes never wait in the socket, and a frame the sender has only
    partly written never holds up the tasks before it); a skip frame
    (:func:`encode_skip`) empties the tasks it names that are still waiting: their
    answers carry no codes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node's Ctrl-C is the node's to handle
    conn.send_bytes(b"ready")
    fd = conn.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    tasks: deque[bytes] = deque()
    buf = bytearray()
    while True:
        wait = -1 if not tasks else 0
        while poller.poll(wait):  # (everything that has come, waiting only when idle)
            try:
                data = os.read(fd, 1 << 20)
            except OSError:
                return  # (reset: the node closed its end with an answer unread)
            if not data:
                return  # the node closed its end
            buf += data
            pos = 0
            while len(buf) - pos >= 4:
                n = int.from_bytes(buf[pos:pos + 4], "big")
                if n > _MAX_FRAME:
                    return  # (not our sender: nothing sensible to answer)
                if len(buf) - pos - 4 < n:
                    break
                frame = bytes(buf[pos + 4:pos + 4 + n])
                pos += 4 + n
                if len(frame) == 8:
                    _skip(tasks, frame)
                else:
                    tasks.append(frame)
            del buf[:pos]
            wait = 0 if tasks else -1
        task = tasks.popleft()
        try:
            conn.send_bytes(task[:4] if len(task) <= 4 else answer_task(task))
        except OSError:
            return


_MAX_FRAME = 1 << 24  # bytes a frame may claim: far above any task (64 x 256 + 12)


def _skip(tasks: deque[bytes], frame: bytes) -> None:
    """Apply the skip ``frame`` to the waiting ``tasks``: those it names keep only their
    tag (answered with no codes)."""
    first = int.from_bytes(frame[:4], "big")
    span = (int.from_bytes(frame[4:8], "big") - first) & 0xFFFFFFFF
    for k, task in enumerate(tasks):
        if len(task) > 8 and (int.from_bytes(task[:4], "big") - first) & 0xFFFFFFFF <= span:
            tasks[k] = task[:4]


class SignatureWorker:
    """One worker process that checks attestation signatures for block checks, used by
    one thread at a time (the node's, which executes blocks). Started by the first
    block check that asks for it (:meth:`available`; or :meth:`start`), used once it has
    said it is ready, so blocks checked meanwhile are checked serially: a node that never
    checks a block with unseen attestations never starts it. A worker that died is
    started again (at most every :data:`WORKER_RESTART_S`); :meth:`close` stops it for
    good. Tasks are queued here (:meth:`send`) and pushed on by :meth:`flush`, which
    never blocks."""

    def __init__(self) -> None:
        self._process: Any = None
        self._conn: Any = None
        self._sender: socket.socket | None = None  # the same socket, for MSG_DONTWAIT sends
        self._poller: Any = None
        self._ready = False
        self._started_at = -WORKER_RESTART_S
        self._tag = 0  # tasks ever queued (their tags)
        self._answered = 0  # answers ever read: tags below this one are answered
        self._in_flight: set[int] = set()  # tags queued or written, not yet answered
        self._unsent: deque[tuple[int, bytes]] = deque()  # (tag, frame) not yet all written
        self._offset = 0  # bytes of the first unsent frame already written
        self._closed = False
        self._due_since: float | None = None  # when available() first found answers due
        self.in_use = False

    def start(self) -> None:
        """Start the process (returns at once; it imports vm.attestation on its own)."""
        if self._process is not None or self._closed:
            return
        self._started_at = time.monotonic()
        started = spawn_worker()
        if started is None:
            return
        process, ours = started
        self._sender = socket.fromfd(ours.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
        self._process, self._conn = process, Connection(ours.detach())
        self._poller = select.poll()
        self._poller.register(self._conn.fileno(), select.POLLIN)
        self._ready, self._tag, self._answered = False, 0, 0
        self._in_flight.clear()
        self._unsent.clear()
        self._offset = 0

    def close(self) -> None:
        """Stop the process for good (closing the pipe ends its loop; killed if it
        does not end within 2 s)."""
        self._closed = True
        self._stop()

    def _stop(self, kill: bool = False) -> None:
        process, conn, sender = self._process, self._conn, self._sender
        self._process = self._conn = self._sender = None
        self._ready = False
        self._due_since = None
        if sender is not None:
            sender.close()
        if conn is not None:
            conn.close()
        if process is not None:
            if kill:
                process.kill()
            stop_worker(process)

    def _broken(self, why: str, kill: bool = False) -> None:
        log.warning("block signature worker stopped (%s); blocks are checked serially "
                    "until it is started again", why)
        self._stop(kill)

    def available(self) -> bool:
        """Ready, and nothing of an earlier block still queued or in flight (never
        waits)."""
        if self._process is None:
            if time.monotonic() - self._started_at >= WORKER_RESTART_S:
                self.start()  # never started, or died: once a while, a new one
            return False
        try:
            if not self._ready:
                if not self._waiting(0):
                    return False
                if self._conn.recv_bytes() != b"ready":
                    self._broken("unexpected greeting")
                    return False
                self._ready = True
            self.flush()
            while self._in_flight and self._conn is not None and self._waiting(0):
                self._read()  # answers a failed block left
        except Exception as exc:  # EOF, a socket error
            self._broken(type(exc).__name__)
            return False
        if self._in_flight and self._conn is not None:
            now = time.monotonic()
            if self._due_since is None:
                self._due_since = now
            elif now - self._due_since > WORKER_STUCK_S:
                self._broken(f"no answer for {WORKER_STUCK_S:.0f} s", kill=True)
            return False
        self._due_since = None
        return self._conn is not None

    def _read(self) -> tuple[int, bytes]:
        data = self._conn.recv_bytes()
        # answers come in task order: the first due, its tag's low 32 bits on the wire
        tag = self._answered + ((int.from_bytes(data[:4], "big") - self._answered) & 0xFFFFFFFF)
        if tag >= self._tag or len(data) < 4:
            raise OSError("answer out of order")  # (the caller stops the worker)
        self._in_flight.discard(tag)
        self._answered = tag + 1
        self._due_since = None
        return tag, data[4:]

    def send(self, raws: Sequence[bytes], chain_id: int) -> int | None:
        """Queue a task (written by :meth:`flush`, called here); its tag, or None when
        the worker is gone."""
        if self._conn is None:
            return None
        data = encode_task(self._tag, chain_id, raws)
        tag, self._tag = self._tag, self._tag + 1
        self._in_flight.add(tag)
        self._unsent.append((tag, len(data).to_bytes(4, "big") + data))  # (Connection's frame)
        self.flush()
        return tag

    def skip(self, first: int, last: int) -> None:
        """Ask the worker to answer the tasks ``first``..``last`` it has not started with
        no codes (the caller checks them itself); those not yet written are dropped here."""
        if self._conn is None:
            return
        kept: deque[tuple[int, bytes]] = deque()
        for k, (tag, frame) in enumerate(self._unsent):
            if first <= tag <= last and not (k == 0 and self._offset):
                self._in_flight.discard(tag)  # never written: no answer comes
            else:
                kept.append((tag, frame))
        self._unsent = kept
        data = encode_skip(first, last)
        self._unsent.append((-1, len(data).to_bytes(4, "big") + data))
        self.flush()

    def drop_unsent(self) -> None:
        """Forget the queued tasks not yet begun on the socket (a block that ended); the
        skip frames stay (so the worker skips what it already has)."""
        head = 1 if self._offset else 0
        kept = deque(list(self._unsent)[:head])
        for tag, frame in list(self._unsent)[head:]:
            if tag < 0:
                kept.append((tag, frame))
            else:
                self._in_flight.discard(tag)
        self._unsent = kept

    def flush(self) -> None:
        """Write what the socket takes now of the queued frames (never blocks)."""
        sender, unsent = self._sender, self._unsent
        try:
            while unsent and sender is not None:
                frame = unsent[0][1]
                n = sender.send(memoryview(frame)[self._offset:], socket.MSG_DONTWAIT)
                self._offset += n
                if self._offset < len(frame):
                    return
                unsent.popleft()
                self._offset = 0
        except BlockingIOError:
            return
        except OSError as exc:
            self._broken(type(exc).__name__)

    def _waiting(self, timeout: float) -> bool:
        """Whether the socket has bytes to read, waiting up to ``timeout`` seconds (a
        ``select.poll`` kept with the socket: ~1 us, against ~15 us for Connection.poll,
        which builds a selector per call)."""
        return bool(self._poller.poll(1000 * timeout))

    def running(self) -> bool:
        """Started and not stopped (it may not have said it is ready yet)."""
        return self._conn is not None

    def answer_waiting(self) -> bool:
        """Whether an answer can be read without waiting (queued frames are pushed on
        first)."""
        self.flush()
        try:
            return self._conn is not None and self._waiting(0)
        except (EOFError, OSError):
            return True  # (receive finds out and stops the worker)

    def receive(self, tag: int, timeout: float) -> bytes | None:
        """The answer to task ``tag`` (answers come in order): a code byte per
        attestation (:data:`CODES`; none when it was skipped), waiting at most
        ``timeout`` seconds for each; None if it does not come."""
        try:
            while self._answered <= tag:
                self.flush()
                if self._conn is None or not self._waiting(timeout):
                    return None
                got, codes = self._read()
                if got == tag:
                    return codes
        except Exception as exc:  # EOF, a socket error
            self._broken(type(exc).__name__)
        return None


class SignaturesAhead:
    """The signature checks of a block's attestations run on ``worker`` while the caller
    executes the block, and are settled after it.

    Used only to check a block (any invalid attestation fails the whole block), which is
    what lets the checks wait: the caller's loop decodes an attestation whose signature
    is not yet verified (:meth:`unchecked` marks them) and applies it, then, once the
    block is executed, :meth:`finish` settles the signatures: the block is valid only if
    every one verifies, and the error of an invalid one is the serial check's (the
    first bad attestation by index; see :meth:`first_bad` for an error the loop hits).
    A state built on a forged attestation is thrown away with the block. The worker
    gets tasks from the start (in chunks growing from an eighth of ``chunk`` to
    ``chunk``, so the first answers come soon), all queued at once and pushed on as the
    socket takes them (:class:`SignatureWorker`); the caller applies the answers as they
    come (:meth:`pump`, between attestations). In :meth:`finish` the
    caller checks chunks from the block's end that the worker has not reached (and tells
    it to skip them) while the worker answers from the start, then waits (at most
    :data:`SHARE_WAIT_S` an answer) for what the worker owes.

    A worker's answer is a hint, never a verdict: an attestation it found valid is
    marked verified; every other one (refused by the worker, its task not written, its
    answer late or lost) gets the caller's full check (:func:`check_stateless`). So a
    block gives the results, errors and messages of the serial check whatever the
    worker's timing, and a missing, stuck or dead worker only makes it slower.
    Attestations already in the verified-id memo are given to no worker.

    Use: ``flags = ahead.unchecked()`` (None: check every attestation as usual),
    ``ahead.pump()`` now and then in the loop, ``ahead.first_bad(limit)`` when the loop
    fails at an attestation, ``ahead.finish()`` after the loop (both return the first
    ``(index, AttestationError)`` or None), ``ahead.close()`` at the end, also when the
    block fails (answers still due are read and dropped by the next block).
    """

    def __init__(self, worker: SignatureWorker, raws: Sequence[bytes], chain_id: int,
                 ids: Sequence[bytes] | None = None, *, chunk: int | None = None) -> None:
        chunk = chunk or AHEAD_CHUNK
        self.chain_id = chain_id
        self._raws = [bytes(raw) for raw in raws]
        self.ids = list(ids) if ids is not None else [compute_attestation_id(r) for r in self._raws]
        self.workers_checked = 0  # attestations the worker found valid (bench, tests)
        self.waited_s = 0.0  # wall time the caller waited for answers (bench)
        self.own = 0  # unseen attestations the caller checked itself (bench)
        self.unseen = 0  # attestations not verified when the block came (metrics)
        self._worker: SignatureWorker | None = None
        self._chunks: list[list[int]] = []
        self._tags: list[int | None] = []
        self._taken = 0  # chunks whose answers were read (or given up) so far
        self._sent = 0  # chunks queued to the worker (all, unless it went away meanwhile)
        self._end = 0  # chunks [_end:] are the caller's own (finish)
        self._unchecked: bytearray | None = None  # 1: not verified when the block came
        self._ok = bytearray(len(self._raws))  # 1: its signature verified since
        # the first attestation the worker refused (the block is then most likely invalid:
        # the loop stops once it has passed it, see process_attestations)
        self.refused_at = len(self._raws)
        unseen = [i for i, att_id in enumerate(self.ids) if not is_verified(att_id, chain_id)]
        self.unseen = len(unseen)
        if not unseen:
            return  # (the usual case: admission verified them all; the worker not even asked)
        if worker.in_use or not worker.available():
            return  # (another check is using it, it is starting, or it is still busy)
        size, k = max(1, chunk // 8), 0
        while k < len(unseen):
            self._chunks.append(unseen[k:k + size])
            k += size
            size = min(chunk, 2 * size)
        self._tags = [None] * len(self._chunks)
        self._end = len(self._chunks)
        self._unchecked = bytearray(len(self._raws))
        for i in unseen:
            self._unchecked[i] = 1
        self._worker = worker
        worker.in_use = True
        self._send_more()

    def unchecked(self) -> bytearray | None:
        """A flag per attestation, 1 where the caller's loop decodes it
        (:func:`vm.attestation.decode_attestation`) without its signature, which
        :meth:`finish` settles; None when there is no worker to share with (then the
        loop checks every attestation itself, as usual)."""
        return self._unchecked

    def _send_more(self) -> None:
        while self._worker is not None and self._sent < self._end:
            tag = self._worker.send([self._raws[i] for i in self._chunks[self._sent]],
                                    self.chain_id)
            if tag is None:
                return  # the worker is gone: the caller checks the rest
            self._tags[self._sent] = tag
            self._sent += 1

    def _apply(self, chunk: list[int], codes: bytes) -> None:
        if len(codes) != len(chunk):
            return
        ids, chain_id, ok = self.ids, self.chain_id, self._ok
        for i, code in zip(chunk, codes, strict=True):
            if code == CODE_OK:
                if not ok[i]:
                    mark_verified(ids[i], chain_id)
                    ok[i] = 1
                    self.workers_checked += 1
            elif i < self.refused_at:
                self.refused_at = i

    def pump(self) -> None:
        """Apply the answers that have come, in order, without waiting (the caller's loop
        calls it every few attestations; the queued tasks are pushed on meanwhile)."""
        worker = self._worker
        while (worker is not None and self._taken < self._sent
               and worker.answer_waiting()):
            k = self._taken
            tag = self._tags[k]
            codes = worker.receive(tag, 0) if tag is not None else None
            if codes is None:
                if not worker.running():
                    self.close()
                return
            self._apply(self._chunks[k], codes)
            self._taken += 1
            worker = self._worker

    def _check_own(self, i: int) -> AttestationError | None:
        if self._ok[i]:
            return None
        try:
            check_stateless(self._raws[i], self.chain_id, self.ids[i])
        except AttestationError as exc:
            return exc
        self._ok[i] = 1
        self.own += 1
        return None

    def _first_unverified(self, limit: int) -> tuple[int, AttestationError] | None:
        unchecked = self._unchecked
        if unchecked is None:
            return None
        for i in range(min(limit, len(unchecked))):
            if unchecked[i]:
                exc = self._check_own(i)
                if exc is not None:
                    return i, exc
        return None

    def first_bad(self, limit: int) -> tuple[int, AttestationError] | None:
        """The loop failed at an attestation: the first of the attestations before
        ``limit`` whose signature does not verify (checked here unless the worker's
        answer has come), as the serial check would have stopped there first. The
        caller passes the failing attestation's index, or the index after it when its
        decoding passed (its signature comes before the state's checks)."""
        self.pump()
        self.close()
        self.refused_at = len(self._raws)  # (settled here: the loop need not ask again)
        return self._first_unverified(limit)

    def finish(self) -> tuple[int, AttestationError] | None:
        """Settle the signatures after the loop: the caller checks chunks from the end
        that the worker has not reached (telling it to skip them) while the worker
        answers from the start; then it waits (up to :data:`SHARE_WAIT_S` an answer) for
        what the worker owes; whatever is still unverified, in order, it checks itself.
        The first bad one by index, or None when every signature verifies."""
        chunks, tags = self._chunks, self._tags
        while self._worker is not None:
            self.pump()
            if self._worker is None or self._taken >= self._end - 1:
                break  # (the worker is on the last chunk left, or done)
            self._end -= 1
            tag = tags[self._end]
            if tag is not None:
                self._worker.skip(tag, tag)
            for i in chunks[self._end]:
                self._check_own(i)  # (a refusal is checked again, and reported, below)
        while self._worker is not None and self._taken < self._end:
            tag = tags[self._taken]
            started = time.perf_counter()
            codes = self._worker.receive(tag, SHARE_WAIT_S) if tag is not None else None
            self.waited_s += time.perf_counter() - started
            if codes is None:
                break  # late or lost: the rest is the caller's
            self._apply(chunks[self._taken], codes)
            self._taken += 1
        self.close()
        return self._first_unverified(len(self._raws))

    def close(self) -> None:
        """Give out no more: the tasks not answered yet are dropped or skipped, and the
        worker is free for the next block (which reads and drops the answers still due
        before using it)."""
        worker = self._worker
        if worker is not None:
            due = [tag for tag in self._tags[self._taken:self._end] if tag is not None]
            if due:
                worker.skip(due[0], due[-1])
            worker.drop_unsent()
            worker.in_use = False
            self._worker = None
