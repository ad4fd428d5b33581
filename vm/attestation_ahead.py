"""Attestation signatures checked on a second core while a block executes
(docs/telemetry.md, "Checking a peer's block").

A block from a peer may carry attestations this node never admitted: their signatures
are not in the verified-id memo (:mod:`vm.attestation`), and recovering them (~50 us
each) is a third of executing them. :class:`SignatureWorker` is one worker process that
gives :func:`vm.attestation.check_stateless_codes`'s verdicts (:func:`answer_task`; the
same program serves admission's workers, node.attestation_pool.ProcessPoolChecker);
:class:`SignaturesAhead` hands it a block's unverified attestations as execution starts
and turns each of its ``ok`` answers into a memo entry just before execution reaches
that attestation.

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

AHEAD_CHUNK = 64  # attestations per task: ~3.5 ms of the worker's time, ~10 us to hand over
# Task bytes written and not yet answered, at most: below the socket pair's buffer
# (~208 KiB on Linux; even a pipe's 64 KiB), so a write never blocks, even when the worker
# is stuck (a task of 64 is ~11 KiB).
AHEAD_MAX_BYTES = 48 * 1024
# Tasks written and not yet answered, at most: enough that the worker never waits for
# work while the caller is on an earlier chunk (the first ones are small); a worker that
# falls behind is still not handed the whole block at once.
AHEAD_TASKS = 4
# The longest the caller waits for an answer it needs now. 0 (the node): never; an
# attestation whose answer has not come when execution reaches it is checked by the
# caller, which asks again at the next one (a poll), so a slow, starved or stuck worker
# costs the serial check and nothing more. Above 0 (tests, to make the worker's share
# certain): a wait that runs out gives the rest of the block to the caller.
AHEAD_WAIT_S = 0.0
# After SignaturesAhead.share, the longest wait for one answer the worker owes (a task is
# ~3.5 ms of its time); past it the rest of the block is the caller's.
SHARE_WAIT_S = 0.05
WORKER_RESTART_S = 60.0  # a worker that died is started again at most this often


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


def _serve(conn: Any) -> None:
    """The worker process: answer tasks (:func:`answer_task`) until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node's Ctrl-C is the node's to handle
    conn.send_bytes(b"ready")
    while True:
        try:
            task = conn.recv_bytes()
        except (EOFError, OSError):
            return
        conn.send_bytes(answer_task(task))


class SignatureWorker:
    """One worker process that checks attestation signatures for block checks, used by
    one thread at a time (the node's, which executes blocks). Started by the first
    block check that asks for it (:meth:`available`; or :meth:`start`), used once it has
    said it is ready, so blocks checked meanwhile are checked serially: a node that never
    checks a block with unseen attestations never starts it. A worker that died is
    started again (at most every :data:`WORKER_RESTART_S`); :meth:`close` stops it for
    good."""

    def __init__(self) -> None:
        self._process: Any = None
        self._conn: Any = None
        self._poller: Any = None
        self._ready = False
        self._started_at = -WORKER_RESTART_S
        self._tag = 0  # tasks ever written (their tags)
        self._answered = 0  # answers ever read: tags below this one are answered
        self._in_flight: dict[int, int] = {}  # tag -> bytes, written and not yet answered
        self._closed = False
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
        self._process, self._conn = process, Connection(ours.detach())
        self._poller = select.poll()
        self._poller.register(self._conn.fileno(), select.POLLIN)
        self._ready, self._tag, self._answered = False, 0, 0
        self._in_flight.clear()

    def close(self) -> None:
        """Stop the process for good (closing the pipe ends its loop; killed if it
        does not end within 2 s)."""
        self._closed = True
        self._stop()

    def _stop(self) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        self._ready = False
        if conn is not None:
            conn.close()
        if process is not None:
            stop_worker(process)

    def _broken(self, why: str) -> None:
        log.warning("block signature worker stopped (%s); blocks are checked serially "
                    "until it is started again", why)
        self._stop()

    def available(self) -> bool:
        """Ready, and nothing of an earlier block still in flight (never waits)."""
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
            while self._in_flight and self._waiting(0):  # answers a failed block left
                self._read()
        except Exception as exc:  # EOF, a socket error
            self._broken(type(exc).__name__)
            return False
        return not self._in_flight

    def _read(self) -> tuple[int, bytes]:
        data = self._conn.recv_bytes()
        # answers come in task order: the first due, its tag's low 32 bits on the wire
        tag = self._answered + ((int.from_bytes(data[:4], "big") - self._answered) & 0xFFFFFFFF)
        self._in_flight.pop(tag, None)
        self._answered = tag + 1
        return tag, data[4:]

    def send(self, raws: Sequence[bytes], chain_id: int) -> int | None:
        """Write a task if the bytes in flight allow; its tag, or None (not written)."""
        data = encode_task(self._tag, chain_id, raws)
        if (len(self._in_flight) >= AHEAD_TASKS or self._conn is None
                or sum(self._in_flight.values()) + len(data) > AHEAD_MAX_BYTES):
            return None
        try:
            self._conn.send_bytes(data)
        except OSError as exc:
            self._broken(type(exc).__name__)
            return None
        tag, self._tag = self._tag, self._tag + 1
        self._in_flight[tag] = len(data)
        return tag

    def _waiting(self, timeout: float) -> bool:
        """Whether the socket has bytes to read, waiting up to ``timeout`` seconds (a
        ``select.poll`` kept with the socket: ~1 us, against ~15 us for Connection.poll,
        which builds a selector per call; the caller polls at every attestation while
        the worker is behind)."""
        return bool(self._poller.poll(1000 * timeout))

    def running(self) -> bool:
        """Started and not stopped (it may not have said it is ready yet)."""
        return self._conn is not None

    def answer_waiting(self) -> bool:
        """Whether an answer can be read without waiting."""
        try:
            return self._conn is not None and self._waiting(0)
        except (EOFError, OSError):
            return True  # (receive finds out and stops the worker)

    def receive(self, tag: int, timeout: float) -> bytes | None:
        """The answer to task ``tag`` (answers come in order): a code byte per
        attestation (:data:`CODES`), waiting at most ``timeout`` seconds for each; None
        if it does not come."""
        try:
            while self._answered <= tag:
                if not self._waiting(timeout):
                    return None
                got, codes = self._read()
                if got == tag:
                    return codes
        except Exception as exc:  # EOF, a socket error
            self._broken(type(exc).__name__)
        return None


class SignaturesAhead:
    """The stateless checks of a block's attestations run on ``worker`` while the caller
    executes the block.

    A worker's answer is a hint, never a verdict: an attestation it found valid is marked
    verified (:func:`vm.attestation.mark_verified`) just before the caller checks it, so
    the caller's :func:`vm.attestation.check_stateless` only decodes it; every other one
    (refused by the worker, its task not written, or its answer not there yet, late or
    lost) gets the caller's full check. So a block gives the results, errors and messages
    of the serial check, whatever the worker's timing, and a missing, stuck or dead worker
    only makes it slower. Attestations already in the memo are given to no worker. Tasks
    are written from the start (the worker begins while the caller sets the block up and
    runs its transactions), in chunks growing from an eighth of ``chunk`` to ``chunk``, so
    the first answers come soon and later ones cost few hand-overs. At most
    :data:`AHEAD_TASKS` tasks (and :data:`AHEAD_MAX_BYTES`) are out at once.
    The two sides share the work by need, at the attestation: when the caller reaches
    one whose answer has not come (the worker starts behind, and may fall behind), it
    checks that one itself and looks for the answer again at the next one; answers of
    chunks the caller has passed are read and dropped. The caller never waits (unless
    :data:`AHEAD_WAIT_S` says so).

    Use: ``ahead.ready(i)`` before checking attestation ``i`` (indices in increasing
    order; cheap when ``i < ahead.next_index``), ``ahead.close()`` at the end, also when
    the block fails (answers still due are read and dropped by the next block).
    """

    def __init__(self, worker: SignatureWorker, raws: Sequence[bytes], chain_id: int,
                 ids: Sequence[bytes] | None = None, *, chunk: int | None = None) -> None:
        chunk = chunk or AHEAD_CHUNK
        self.chain_id = chain_id
        self._raws = [bytes(raw) for raw in raws]
        self.ids = list(ids) if ids is not None else [compute_attestation_id(r) for r in self._raws]
        self.workers_checked = 0  # attestations the worker found valid (bench, tests)
        self.waited_s = 0.0  # wall time the caller waited for answers (bench)
        self.own = 0  # unseen attestations the caller checked itself, the worker not done (bench)
        self._worker: SignatureWorker | None = None
        self._chunks: list[list[int]] = []
        self._tags: list[int | None] = []
        self._taken = 0  # chunks done with (answer applied, or passed) so far
        self._end = 0  # chunks [_end:] are the caller's own (SignaturesAhead.share)
        self._wait_s: float | None = None  # set by share: then ready waits for answers
        self.next_index = len(self._raws)
        unseen = [i for i, att_id in enumerate(self.ids) if not is_verified(att_id, chain_id)]
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
        self._worker = worker
        worker.in_use = True
        self._sent = 0  # chunks written (or skipped: passed by the caller) so far
        self._send_more()
        self.next_index = self._chunks[0][0]

    def _send_more(self) -> None:
        self._sent = max(self._sent, self._taken)  # (what the caller passed is not written)
        while self._worker is not None and self._sent < self._end:
            tag = self._worker.send([self._raws[i] for i in self._chunks[self._sent]],
                                    self.chain_id)
            if tag is None:
                return  # the window is full (or the worker gone): more after an answer
            self._tags[self._sent] = tag
            self._sent += 1

    def ready(self, index: int) -> None:
        """Make the worker's answers for attestations up to ``index`` count (mark the
        valid ones verified); never waits (unless :data:`AHEAD_WAIT_S`)."""
        chunks = self._chunks
        while self._taken < len(chunks) and chunks[self._taken][0] <= index:
            k = self._taken
            chunk, tag, worker = chunks[k], self._tags[k], self._worker
            if tag is not None and worker is not None:
                wait_s = AHEAD_WAIT_S if self._wait_s is None else self._wait_s
                started = time.perf_counter()
                codes = worker.receive(tag, wait_s)
                self.waited_s += time.perf_counter() - started
                if codes is None:
                    if wait_s > 0 or not worker.running():
                        self.close()  # late or lost: the rest of the block is the caller's
                    elif chunk[-1] > index:  # not yet: this one is the caller's, and then
                        self.own += 1
                        self.next_index = index + 1  # the next one asks again
                        return
                elif len(codes) == len(chunk):
                    ids, chain_id = self.ids, self.chain_id
                    for i, code in zip(chunk, codes, strict=True):
                        if code == CODE_OK and i >= index:  # (before: the caller's already)
                            mark_verified(ids[i], chain_id)
                            self.workers_checked += 1
            self._taken += 1
            self._send_more()
        self.next_index = chunks[self._taken][0] if self._taken < len(chunks) else len(self._raws)

    def share(self) -> None:
        """Split the unseen attestations' checks with the worker before the caller's loop
        reaches them: the caller checks chunks from the block's end (into the
        verified-id memo) while the worker answers chunks from its start, until every
        chunk is the worker's or done; the caller's loop then waits (up to
        :data:`SHARE_WAIT_S` an answer) for the answers it reaches, which are mostly in
        by then. Without it the caller's loop, whose own work per attestation (~15 us at
        100,000 vehicles) is a fraction of a recovery (~50 us), overtakes the worker and
        checks most of them itself (1,100-1,860 of 2,000 measured). A refused
        attestation is left to the loop, which checks it again and reports it, so the
        results and errors are the serial check's."""
        if self._worker is None:
            return
        chunks, raws, ids, chain_id = self._chunks, self._raws, self.ids, self.chain_id
        while self._worker is not None and self._sent < self._end:
            self._take_answered()
            if self._worker is None or self._sent >= self._end:
                break
            self._end -= 1
            for i in chunks[self._end]:
                try:
                    check_stateless(raws[i], chain_id, ids[i])
                except AttestationError:
                    pass  # (checked again, and reported, by the caller's loop)
                self.own += 1
        if self._worker is None:
            return  # (lost: the caller's loop checks what is not in the memo)
        del chunks[self._end:]
        del self._tags[self._end:]
        # (AHEAD_WAIT_S when longer: tests make the worker's answers count under load)
        self._wait_s = max(SHARE_WAIT_S, AHEAD_WAIT_S)
        self.next_index = chunks[self._taken][0] if self._taken < len(chunks) else len(raws)

    def _take_answered(self) -> None:
        """Apply the answers that have come, in order, without waiting; write more tasks."""
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
            if len(codes) == len(chunks := self._chunks[k]):
                for i, code in zip(chunks, codes, strict=True):
                    if code == CODE_OK:
                        mark_verified(self.ids[i], self.chain_id)
                        self.workers_checked += 1
            self._taken += 1
            self._send_more()
            worker = self._worker

    def close(self) -> None:
        """Give out no more; the worker is free for the next block (which reads and
        drops the answers still due before using it)."""
        if self._worker is not None:
            self._worker.in_use = False
            self._worker = None
