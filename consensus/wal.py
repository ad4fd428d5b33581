"""The signing guard: a validator never signs two conflicting consensus messages.

Every proposal and vote a validator signs goes through :class:`Signer`, which
asks its :class:`SigningGuard` first. The guard remembers the last message
signed, as (height, round, step, block hash, digest, signature), and refuses
with :class:`DoubleSignRefused`:

- a message at the same (height, round, step) with a different digest
  (a different block, or a proposal with a different proof-of-lock round);
- any message at a lower (height, round, step) than the last one signed.

Re-signing the identical message returns the recorded signature, so a
validator that restarts mid-round can resend what it already sent.

With a file, the record is made durable before the signature is returned
(write a temporary file, fsync, rename over the old one, fsync the
directory), so a crash at any moment leaves either the old record or the new
one and no signature ever escapes unrecorded. The file is JSON, mode 0600::

    {"format": "motus-signing-state/1", "height": 12, "round": 0, "step": 1,
     "block_hash": "<hex or empty for nil>", "digest": "<hex>", "signature": "<hex>"}

``step`` is 0 for a proposal, 1 for a prevote, 2 for a precommit. The file is
also locked (``flock``) for as long as the guard is open, so a second process
with the same home cannot sign with the same key.

The record also carries the validator's lock at that height (Algorithm 1,
line 36): ``"locked_round"`` and ``"locked_hash"``, present once it precommitted
a block at this height. A validator precommits a block exactly when it locks
on it, so the guard records the lock with that precommit, keeps it with every
later signature of the same height, and drops it at the next height. A node
restarted mid-height restores it (``lock_at``) instead of forgetting it, so it
cannot prevote against its own lock in a later round. Files without these keys
(no lock) stay valid.

The guard holds one record; what else a restarted validator needs to resume a
height (the proposals and votes it had seen, its own earlier messages of the
height) is in the :class:`MessageLog`, the consensus write-ahead log. Both
persist through a :class:`Disk`: a file for a node, memory for the simulation,
with the same bytes and the same parsing either way.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import coincurve

from codec.files import write_atomic
from codec.records import frame, read_frames
from consensus.crypto import address_of_public_key
from consensus.effects import Step
from consensus.errors import (
    DoubleSignRefused,
    MalformedMessage,
    SigningStateCorrupt,
    SigningStateLocked,
)
from consensus.messages import ConsensusMessage, decode_message, encode_message
from consensus.types import PRECOMMIT, PREVOTE, Proposal, Vote, proposal_digest, vote_digest

log = logging.getLogger(__name__)

FILE_FORMAT = "motus-signing-state/1"
MAX_FILE_BYTES = 4096

_STEP_OF_VOTE_TYPE = {PREVOTE: Step.PREVOTE, PRECOMMIT: Step.PRECOMMIT}


@dataclass(frozen=True)
class SignedRecord:
    """The last message a validator signed."""

    height: int
    round: int
    step: int
    block_hash: bytes
    digest: bytes
    signature: bytes
    locked_round: int = -1  # the lock at ``height``: -1 and b"" when not locked
    locked_hash: bytes = b""

    @property
    def position(self) -> tuple[int, int, int]:
        return (self.height, self.round, self.step)

    def to_json(self) -> str:
        doc: dict[str, object] = {
            "format": FILE_FORMAT,
            "height": self.height,
            "round": self.round,
            "step": self.step,
            "block_hash": self.block_hash.hex(),
            "digest": self.digest.hex(),
            "signature": self.signature.hex(),
        }
        if self.locked_round >= 0:
            doc["locked_round"] = self.locked_round
            doc["locked_hash"] = self.locked_hash.hex()
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SignedRecord:
        """Parse a record; raises SigningStateCorrupt on anything unexpected."""
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
                raise ValueError(f"format is not {FILE_FORMAT}")
            height, round_, step = doc["height"], doc["round"], doc["step"]
            if not all(type(x) is int and x >= 0 for x in (height, round_, step)):
                raise ValueError("height, round and step must be non-negative integers")
            if step not in (Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT):
                raise ValueError(f"unknown step {step}")
            locked_round = doc.get("locked_round", -1)
            locked_hash = bytes.fromhex(doc.get("locked_hash", ""))
            if type(locked_round) is not int or not -1 <= locked_round <= round_:
                raise ValueError("locked_round must be an integer from -1 to round")
            record = cls(
                height, round_, step, bytes.fromhex(doc["block_hash"]),
                bytes.fromhex(doc["digest"]), bytes.fromhex(doc["signature"]),
                locked_round, locked_hash,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SigningStateCorrupt(f"signing state unreadable: {exc}") from None
        if len(record.digest) != 32 or len(record.signature) != 65:
            raise SigningStateCorrupt("signing state: digest or signature has a wrong length")
        if (record.locked_round >= 0) != (len(record.locked_hash) == 32):
            raise SigningStateCorrupt("signing state: a lock needs both a round and a 32-byte hash")
        return record


class SigningGuard:
    """Remembers the last signed message and refuses conflicting ones.

    ``SigningGuard(path)`` persists to ``path`` (created on first signature);
    ``SigningGuard()`` keeps the record in memory only, for tests: it prevents
    double signing within one process lifetime but not across restarts.
    ``SigningGuard(memory=disk)`` keeps the record's JSON text in a
    :class:`MemoryDisk` that outlives the guard, so a simulation can restart a
    validator from exactly what a file would hold.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 memory: MemoryDisk | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.last: SignedRecord | None = None
        self._lock_fd: int | None = None
        self._memory = memory
        self.durable_s = 0.0  # seconds spent writing records durably, ever (metrics)
        if self.path is not None:
            self._lock_fd = _lock(self.path)
            self.last = _load(self.path)
        elif memory is not None and memory.data:
            self.last = SignedRecord.from_json(bytes(memory.data).decode("utf-8"))

    def close(self) -> None:
        """Release the file lock; the guard must not be used afterwards."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> SigningGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, height: int, round_: int, step: int, digest: bytes) -> bytes | None:
        """Raise DoubleSignRefused if signing ``digest`` at this position would conflict;
        return the recorded signature if it is the identical message, else None."""
        last = self.last
        if last is None:
            return None
        position = (height, round_, step)
        if position == last.position:
            if digest == last.digest:
                return last.signature
            raise DoubleSignRefused(
                f"already signed a different message at height {height} round {round_} "
                f"step {Step(step).name}"
            )
        if position < last.position:
            raise DoubleSignRefused(
                f"height {height} round {round_} step {Step(step).name} is below the last "
                f"signed message (height {last.height} round {last.round} "
                f"step {Step(last.step).name})"
            )
        return None

    def sign(
        self, height: int, round_: int, step: int, block_hash: bytes, digest: bytes,
        sign: Callable[[bytes], bytes],
    ) -> bytes:
        """The signature over ``digest``, made by ``sign`` only if it does not conflict with
        what was signed before, and recorded durably before it is returned."""
        if self._lock_fd is None and self.path is not None:
            raise SigningStateLocked("signing guard is closed")
        existing = self.check(height, round_, step, digest)
        if existing is not None:
            return existing
        locked_round, locked_hash = self._lock_after(height, round_, step, block_hash)
        record = SignedRecord(height, round_, step, block_hash, digest, sign(digest),
                              locked_round, locked_hash)
        if self.path is not None:
            started = time.perf_counter()
            _store(self.path, record)
            self.durable_s += time.perf_counter() - started
        elif self._memory is not None:
            self._memory.replace(record.to_json().encode())
        self.last = record
        return record.signature

    def recorded_vote(self, address: bytes) -> Vote | None:
        """The last signed message as a :class:`Vote` of ``address``, or None if it was a
        proposal (or nothing was signed): what a restarted validator re-sends so that
        peers can count it."""
        last = self.last
        if last is None or last.step == Step.PROPOSE:
            return None
        vote_type = PREVOTE if last.step == Step.PREVOTE else PRECOMMIT
        return Vote(vote_type, last.height, last.round, last.block_hash, address, last.signature)

    def lock_at(self, height: int) -> tuple[int, bytes] | None:
        """(locked round, locked block hash) recorded at ``height``, or None if the
        validator never precommitted a block there."""
        last = self.last
        if last is None or last.height != height or last.locked_round < 0:
            return None
        return last.locked_round, last.locked_hash

    def _lock_after(self, height: int, round_: int, step: int,
                    block_hash: bytes) -> tuple[int, bytes]:
        # Precommitting a block is locking on it (line 36); anything else signed at
        # the same height keeps the lock; a new height starts unlocked.
        if step == Step.PRECOMMIT and block_hash:
            return round_, block_hash
        lock = self.lock_at(height)
        return lock if lock is not None else (-1, b"")


class Signer:
    """A validator's key, usable only through its signing guard.

    This is the only way the consensus machine signs, so every signature it
    produces has passed the guard.
    """

    def __init__(self, private_key: bytes, chain_id: int, guard: SigningGuard) -> None:
        # one parsed key: coincurve rebuilds the keypair on every PrivateKey(...) call
        self._private_key = coincurve.PrivateKey(bytes(private_key))
        self.chain_id = chain_id
        self.guard = guard
        self.address = address_of_public_key(self._private_key.public_key)

    @classmethod
    def in_memory(cls, private_key: bytes, chain_id: int) -> Signer:
        """A signer with a guard that lives only in memory (simulations, tests)."""
        return cls(private_key, chain_id, SigningGuard())

    def _sign(self, digest: bytes) -> bytes:
        # the same r || s || v (v in {0, 1}) as consensus.crypto.sign_digest
        return self._private_key.sign_recoverable(digest, hasher=None)

    def sign_vote(self, vote_type: int, height: int, round_: int, block_hash: bytes) -> Vote:
        """A signed vote; raises DoubleSignRefused if it conflicts with an earlier signature."""
        digest = vote_digest(self.chain_id, vote_type, height, round_, block_hash)
        step = _STEP_OF_VOTE_TYPE[vote_type]
        signature = self.guard.sign(height, round_, step, block_hash, digest, self._sign)
        return Vote(vote_type, height, round_, block_hash, self.address, signature)

    def sign_proposal(self, height: int, round_: int, pol_round: int, block_hash: bytes) -> Proposal:
        """A signed proposal; raises DoubleSignRefused if it conflicts with an earlier signature."""
        digest = proposal_digest(self.chain_id, height, round_, pol_round, block_hash)
        signature = self.guard.sign(height, round_, Step.PROPOSE, block_hash, digest, self._sign)
        return Proposal(height, round_, pol_round + 1, block_hash, self.address, signature)


def _lock(path: Path) -> int:
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SigningStateLocked(f"{path} is in use by another signer") from None
    return fd


def _load(path: Path) -> SignedRecord | None:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None  # never signed anything with this home
    if len(data) > MAX_FILE_BYTES:
        raise SigningStateCorrupt(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SigningStateCorrupt(f"{path} is not UTF-8") from None
    return SignedRecord.from_json(text)


def _store(path: Path, record: SignedRecord) -> None:
    write_atomic(path, record.to_json().encode())

# --- the consensus write-ahead log -------------------------------------------------

WAL_FORMAT = b"motus-consensus-wal/1"
MAX_WAL_BYTES = 64 * 1024 * 1024  # beyond this only essential messages are logged


class Disk(Protocol):
    """Where a :class:`MessageLog` keeps its bytes."""

    def read(self) -> bytes: ...
    def replace(self, data: bytes) -> None: ...
    def append(self, data: bytes) -> None: ...
    def truncate(self, size: int) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


class MemoryDisk:
    """A disk in memory that outlives the guard or log using it (simulated restarts).

    It models a process crash, not a power loss: everything written is kept."""

    def __init__(self) -> None:
        self.data = bytearray()

    def read(self) -> bytes:
        return bytes(self.data)

    def replace(self, data: bytes) -> None:
        self.data = bytearray(data)

    def append(self, data: bytes) -> None:
        self.data += data

    def truncate(self, size: int) -> None:
        del self.data[size:]

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class FileDisk:
    """A file: ``replace`` is atomic (temporary file, fsync, rename, fsync the directory),
    ``append`` is a plain write (it survives a killed process), ``sync`` is fsync."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def _open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        return self._fd

    def read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    def replace(self, data: bytes) -> None:
        self.close()
        write_atomic(self.path, data)

    def append(self, data: bytes) -> None:
        fd = self._open()
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])

    def truncate(self, size: int) -> None:
        os.truncate(self._open(), size)

    def sync(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class MessageLog:
    """The consensus messages of the current height, kept so that a validator restarted
    mid-height resumes where it was instead of at round 0 (CometBFT's consensus WAL).

    The machine appends every proposal and vote it accepts (peers' and its own)
    and calls :meth:`sync` before each signature, so whatever a signature was
    based on (the proposal it locks on, the prevotes that justify it) is
    durable before the signature is. :meth:`open_height` returns what was
    logged for a height and starts a fresh log when the height is new.

    Bytes: a sequence of :mod:`codec.records` records, each ``length (4 bytes,
    big-endian) || crc32 (4 bytes) || payload``. The first payload is ``b"motus-consensus-wal/1"``
    followed by the height as 8 big-endian bytes; each later payload is one
    message in its wire encoding (:func:`consensus.messages.encode_message`). A
    torn or corrupt tail (a crash mid-write) is cut off at the first bad record.
    Past ``max_bytes`` only messages marked essential are appended.
    """

    def __init__(self, disk: Disk, max_bytes: int = MAX_WAL_BYTES) -> None:
        self.disk = disk
        self.max_bytes = max_bytes
        self.height = -1
        self.size = 0
        self.skipped = 0  # messages of the open height not logged because the log was full
        self.dropped_records = 0  # bad records cut off when the log was read
        self.durable_s = 0.0  # seconds spent in fsync and atomic replaces, ever (metrics)

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> MessageLog:
        return cls(FileDisk(path))

    def open_height(self, height: int) -> list[ConsensusMessage]:
        """The messages logged at ``height`` (after a restart mid-height), or [] after
        starting an empty log for it."""
        self.skipped = 0  # a new height's log starts with room (or is the one replayed)
        if 0 <= self.height < height:
            # This process logged an earlier height: nothing of ``height`` can be in the
            # file, so do not read (and checksum) up to 64 MiB on the consensus loop.
            return self._start(height)
        data = self.disk.read()
        payloads, good = read_frames(data)
        self.dropped_records += len(data) > good
        if payloads and not payloads[0].startswith(WAL_FORMAT):
            # Another format (a newer node's?) is not ours to read: say so, then start over.
            log.warning("consensus log: unknown header %r, starting a new log "
                        "(wal_bad_header)", payloads[0][:32])
        if payloads and _header_height(payloads[0]) == height:
            if good < len(data):
                log.warning("consensus log: %d bytes of torn or corrupt records cut off "
                            "after %d good ones (wal_torn_tail)", len(data) - good, len(payloads))
                self.disk.truncate(good)
            self.height, self.size = height, good
            messages = []
            for payload in payloads[1:]:
                try:
                    messages.append(decode_message(payload))
                except MalformedMessage:
                    self.dropped_records += 1
            return messages
        return self._start(height)

    def _start(self, height: int) -> list[ConsensusMessage]:
        header = frame(WAL_FORMAT + height.to_bytes(8, "big"))
        started = time.perf_counter()
        self.disk.replace(header)
        self.durable_s += time.perf_counter() - started
        self.height, self.size = height, len(header)
        return []

    def append(self, message: ConsensusMessage, essential: bool = False) -> None:
        """Log ``message`` (of the open height); skipped when the log is full unless
        ``essential`` (own messages, and what a lock rests on)."""
        record = frame(encode_message(message))
        if self.size + len(record) > self.max_bytes and not essential:
            if not self.skipped:
                log.warning("consensus log of height %d is full (%d bytes): only own messages "
                            "and what a lock rests on are logged from now (wal_full)",
                            self.height, self.size)
            self.skipped += 1
            return
        self.disk.append(record)
        self.size += len(record)

    def sync(self) -> None:
        """Make every appended message durable (called before each signature)."""
        started = time.perf_counter()
        self.disk.sync()
        self.durable_s += time.perf_counter() - started

    def close(self) -> None:
        self.disk.close()


def _header_height(payload: bytes) -> int:
    if not payload.startswith(WAL_FORMAT) or len(payload) != len(WAL_FORMAT) + 8:
        return -1
    return int.from_bytes(payload[len(WAL_FORMAT):], "big")
