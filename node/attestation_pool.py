"""Attestation pool: checked attestations waiting for a block (DESIGN.md section 6).

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

import multiprocessing
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from vm.attestation import (
    OK,
    Attestation,
    AttestationError,
    RejectCode,
    check_stateless,
    check_stateless_codes,
    compute_attestation_id,
    decode_attestation,
    mark_verified,
)

POOL_FULL = "pool_full"  # not a reject: the pool is at a limit, submit again later
PENDING, INCLUDED, REJECTED = "pending", "included", "rejected"
STATELESS_CODES = frozenset({RejectCode.MALFORMED.value, RejectCode.BAD_SIGNATURE.value})

# The node's stateful check: the reject code, or None when the attestation may enter
# the pool. It may remember the attestation (a view's ``apply``) so that later
# attestations of the same device are checked against it: the pool calls it only
# when it is about to insert.
StatefulCheck = Callable[[Attestation], str | None]


def view_check(view) -> StatefulCheck:
    """The stateful check over a :class:`vm.modules.telemetry.TelemetryView` (head state,
    node clock): check, and on success record the attestation in the view."""

    def check(att: Attestation) -> str | None:
        code = view.check(att)
        if code is not None:
            return code.value
        view.apply(att)
        return None

    return check


class RejectCounters:
    """Reject counts per code since start (the node exposes them via RPC and /metrics)."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, code: str, n: int = 1) -> None:
        self._counts[code] += n

    def get(self, code: str) -> int:
        return self._counts[code]

    def snapshot(self) -> dict[str, int]:
        """Every reject code (zero included) and ``pool_full``, with its count."""
        out = {c.value: self._counts[c.value] for c in RejectCode}
        out[POOL_FULL] = self._counts[POOL_FULL]
        return out


# --- stateless checks, inline or on worker processes ----------------------------


class StatelessChecker(Protocol):
    def check_many(self, raws: Sequence[bytes], ids: Sequence[bytes],
                   chain_id: int) -> list[Attestation | str]:
        """For each raw attestation: the decoded attestation if it passed the stateless
        checks, else its reject code."""
        ...


class InlineChecker:
    """Stateless checks in this process."""

    def check_many(self, raws: Sequence[bytes], ids: Sequence[bytes],
                   chain_id: int) -> list[Attestation | str]:
        out: list[Attestation | str] = []
        for raw, att_id in zip(raws, ids, strict=True):
            try:
                out.append(check_stateless(raw, chain_id, att_id))
            except AttestationError as exc:
                out.append(exc.code)
        return out


class ProcessPoolChecker:
    """Signature checks spread over worker processes (the CPU-heavy part).

    Workers return only codes (cheap to pickle); this process then decodes the
    accepted ones (a few microseconds) and records their ids as verified so block
    execution does not recover those signatures again. Batches smaller than
    ``min_batch`` are checked inline: below that, inter-process overhead wins.
    """

    def __init__(self, workers: int = 2, min_batch: int = 64) -> None:
        self.workers = workers
        self.min_batch = min_batch
        # spawn, not fork: the node process runs trio and threads
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        self._inline = InlineChecker()

    def check_many(self, raws: Sequence[bytes], ids: Sequence[bytes],
                   chain_id: int) -> list[Attestation | str]:
        if len(raws) < self.min_batch:
            return self._inline.check_many(raws, ids, chain_id)
        size = -(-len(raws) // (self.workers * 2))  # two chunks per worker smooths stragglers
        chunks = [list(raws[i:i + size]) for i in range(0, len(raws), size)]
        futures = [self._executor.submit(check_stateless_codes, chunk, chain_id) for chunk in chunks]
        codes = [code for f in futures for code in f.result()]
        out: list[Attestation | str] = []
        for raw, att_id, code in zip(raws, ids, codes, strict=True):
            if code == OK:
                mark_verified(att_id, chain_id)
                out.append(decode_attestation(raw))
            else:
                out.append(code)
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


# --- the pool --------------------------------------------------------------------


@dataclass(frozen=True)
class AddResult:
    """One ``motus_submitAttestations`` result."""

    id: bytes
    accepted: bool
    code: str  # "ok", a reject code, or "pool_full"

    def to_json(self) -> dict[str, object]:
        return {"id": "0x" + self.id.hex(), "accepted": self.accepted, "code": self.code}


@dataclass(frozen=True)
class AttestationStatus:
    """``motus_getAttestation``: pending, included (with height) or rejected (with code)."""

    status: str
    height: int | None = None
    code: str | None = None


@dataclass
class _Entry:
    raw: bytes
    att: Attestation
    source: str


class AttestationPool:
    """Bounded, de-duplicated by id, ordered by arrival. Not thread-safe (one trio task
    at a time, as everything in the node)."""

    def __init__(self, chain_id: int, *, max_items: int = 100_000, max_bytes: int = 32 << 20,
                 max_per_source: int = 20_000, max_per_device: int = 256,
                 history: int = 200_000, checker: StatelessChecker | None = None,
                 counters: RejectCounters | None = None) -> None:
        self.chain_id = chain_id
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.max_per_source = max_per_source
        self.max_per_device = max_per_device
        self.history_size = history
        self.checker: StatelessChecker = checker or InlineChecker()
        self.counters = counters or RejectCounters()
        self._pending: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._per_source: Counter[str] = Counter()
        self._per_device: Counter[bytes] = Counter()
        self._history: OrderedDict[bytes, AttestationStatus] = OrderedDict()

    # -- sizes --

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __contains__(self, att_id: bytes) -> bool:
        return att_id in self._pending

    # -- admission --

    def add(self, raw: bytes, check: StatefulCheck, source: str = "") -> AddResult:
        """Check one attestation and insert it if valid; see :meth:`add_many`."""
        return self.add_many([raw], check, source)[0]

    def add_many(self, raws: Sequence[bytes], check: StatefulCheck,
                 source: str = "") -> list[AddResult]:
        """Check attestations (stateless, then ``check`` against the head) and insert
        the valid ones, in order; one result per input.

        An id already pending answers accepted/ok again (resubmission is harmless);
        an id whose stateless check failed before answers that code without redoing
        the work; ``source`` (peer id, RPC client) is charged for the quota.
        """
        raws = [bytes(r) for r in raws]
        ids = [compute_attestation_id(r) for r in raws]
        results: list[AddResult | None] = [None] * len(raws)
        todo: list[int] = []
        first: dict[bytes, int] = {}
        duplicates: list[tuple[int, int]] = []
        for i, att_id in enumerate(ids):
            if att_id in first:  # the same bytes twice in one batch: the first one decides
                duplicates.append((i, first[att_id]))
                continue
            first[att_id] = i
            known = self._known_result(att_id)
            if known is not None:
                results[i] = known
            else:
                todo.append(i)
        checked = self.checker.check_many([raws[i] for i in todo], [ids[i] for i in todo],
                                          self.chain_id)
        for i, outcome in zip(todo, checked, strict=True):
            att_id = ids[i]
            if isinstance(outcome, str):
                self._reject(att_id, outcome)
                results[i] = AddResult(att_id, False, outcome)
                continue
            if not self._has_room(len(raws[i]), source, outcome.device):
                self.counters.add(POOL_FULL)
                results[i] = AddResult(att_id, False, POOL_FULL)
                continue
            code = check(outcome)
            if code is not None:
                self._reject(att_id, code)
                results[i] = AddResult(att_id, False, code)
                continue
            self._insert(att_id, raws[i], outcome, source)
            results[i] = AddResult(att_id, True, OK)
        for i, j in duplicates:
            results[i] = results[j]
        return [r for r in results if r is not None]

    def _known_result(self, att_id: bytes) -> AddResult | None:
        if att_id in self._pending:
            return AddResult(att_id, True, OK)
        past = self._history.get(att_id)
        if past is None:
            return None
        if past.status == INCLUDED:
            return AddResult(att_id, False, RejectCode.REPLAY.value)
        if past.code in STATELESS_CODES:  # a pure function of the bytes: same answer
            self.counters.add(past.code)
            return AddResult(att_id, False, past.code)
        return None  # stateful rejection: the head may have changed, check again

    def _has_room(self, size: int, source: str, device: bytes) -> bool:
        return (len(self._pending) < self.max_items
                and self._bytes + size <= self.max_bytes
                and self._per_source[source] < self.max_per_source
                and self._per_device[device] < self.max_per_device)

    def _insert(self, att_id: bytes, raw: bytes, att: Attestation, source: str) -> None:
        self._pending[att_id] = _Entry(raw, att, source)
        self._bytes += len(raw)
        self._per_source[source] += 1
        self._per_device[att.device] += 1
        self._history.pop(att_id, None)

    def _drop(self, att_id: bytes) -> _Entry | None:
        entry = self._pending.pop(att_id, None)
        if entry is None:
            return None
        self._bytes -= len(entry.raw)
        for counter, key in ((self._per_source, entry.source), (self._per_device, entry.att.device)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]
        return entry

    def _remember(self, att_id: bytes, status: AttestationStatus) -> None:
        self._history[att_id] = status
        self._history.move_to_end(att_id)
        while len(self._history) > self.history_size:
            self._history.popitem(last=False)

    def _reject(self, att_id: bytes, code: str) -> None:
        self.counters.add(code)
        self._remember(att_id, AttestationStatus(REJECTED, code=code))

    # -- block building and new heads --

    def take(self, max_n: int) -> list[bytes]:
        """The oldest ``max_n`` pending attestations, in arrival order (they stay
        pending until ``remove_included``)."""
        out = []
        for entry in self._pending.values():
            if len(out) >= max_n:
                break
            out.append(entry.raw)
        return out

    def remove_included(self, ids: Iterable[bytes], height: int) -> None:
        """Attestations of a committed block at ``height`` leave the pool (included)."""
        for att_id in ids:
            self._drop(att_id)
            self._remember(att_id, AttestationStatus(INCLUDED, height=height))

    def recheck(self, check: StatefulCheck) -> list[tuple[bytes, str]]:
        """Run the stateful check (a fresh one over the new head) on every pending item
        in arrival order; drop and return (id, code) of those that fail now."""
        dropped = []
        for att_id, entry in list(self._pending.items()):
            code = check(entry.att)
            if code is not None:
                self._drop(att_id)
                self._reject(att_id, code)
                dropped.append((att_id, code))
        return dropped

    def status(self, att_id: bytes) -> AttestationStatus | None:
        """Pending, included (height) or rejected (code); None if unknown or forgotten."""
        if att_id in self._pending:
            return AttestationStatus(PENDING)
        return self._history.get(att_id)
