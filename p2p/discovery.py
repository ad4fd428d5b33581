"""Peer exchange: ``/motus/peers/1`` wire format, and the book of peers we know.

A node that bootstraps from one peer learns the others by asking its peers
whom they are connected to. One request and one response per stream, framed
like ``p2p.reqresp`` (varint length, msgpack map, hard limits)::

    request  {"max": int}                                1..32 peers wanted
    response {"peers": [[bin peer_id, [str, ...]], ...]}  at most "max" entries
    error    {"error": str, "message": str}

Each entry is a peer id (the binary multihash) with at most four multiaddrs
``/ip4|ip6/HOST/tcp/PORT``. A server shares only peers it dialled itself and
was connected to recently, at the addresses it dialled: the remote address of
an inbound connection is the peer's ephemeral port, and what a peer claims
about itself (identify) is not checked, so neither is passed on. Banned peers,
the asking peer and the server itself are left out.

The client treats a response that breaks the format or the bounds as
``BadResponse`` (the answering peer is penalised); a single address it cannot
use (not a multiaddr, not TCP over IP, or carrying another peer's ``/p2p``) is
skipped without penalty, since the answering peer may know transports we do
not.

``PeerBook`` is pure bookkeeping (no I/O): which addresses we reached each
peer at and when, and which peers we heard of and may dial, with backoff.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import multiaddr
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from p2p.errors import BadRequest, BadResponse
from p2p.reqresp import MAX_REQUEST_SIZE, pack_fields, unpack_fields, unpack_response
from p2p.topics import KIB

PEERS_PROTOCOL = TProtocol("/motus/peers/1")

MAX_PEERS_PER_RESPONSE = 32
MAX_ADDRS_PER_PEER = 4
MAX_ADDR_LENGTH = 128  # characters of one multiaddr string
MAX_PEER_ID_LENGTH = 64  # bytes of a binary peer id (identity multihash of a key <= 42)
MAX_PEERS_RESPONSE_SIZE = 32 * KIB  # 32 * (64 + 4 * 128) plus headers fits
# A peer we were connected to this recently is still worth sharing.
RECENT_PEER_S = 600.0
# Peers heard of but not (yet) dialled, at most; fresh ids cost an attacker nothing.
MAX_CANDIDATES = 1024
# A candidate that failed this many dials in a row is forgotten.
MAX_DIAL_FAILURES = 5

_DIALABLE = ("ip4", "ip6")


@dataclass(frozen=True)
class PeerAddrs:
    """A peer id (base58) and addresses it can be dialled at."""

    peer_id: str
    addrs: tuple[str, ...]


def encode_peers_request(max_peers: int) -> bytes:
    """Frame body of a request for up to ``max_peers`` peers."""
    return pack_fields({"max": max_peers})


def decode_peers_request(data: bytes) -> int:
    """Return how many peers the requester wants; ``BadRequest`` if malformed."""
    fields = unpack_fields(data, {"max"}, BadRequest, MAX_REQUEST_SIZE)
    wanted = fields["max"]
    if type(wanted) is not int or not 1 <= wanted <= MAX_PEERS_PER_RESPONSE:
        raise BadRequest(f"max must be an integer in [1, {MAX_PEERS_PER_RESPONSE}]")
    return wanted


def encode_peers_response(peers: Iterable[PeerAddrs]) -> bytes:
    """Frame body of a response (the caller already chose and bounded ``peers``)."""
    entries = [
        [ID.from_base58(peer.peer_id).to_bytes(), list(peer.addrs[:MAX_ADDRS_PER_PEER])]
        for peer in peers
    ]
    return pack_fields({"peers": entries[:MAX_PEERS_PER_RESPONSE]})


def decode_peers_response(data: bytes, wanted: int) -> list[PeerAddrs]:
    """Return the peers of a response to a request for ``wanted`` peers.

    ``RemoteError`` for an error answer; ``BadResponse`` when the answer breaks
    the format or its bounds. Unusable addresses are dropped, and so are
    entries left without any.
    """
    fields = unpack_response(data, {"peers"}, MAX_PEERS_RESPONSE_SIZE)
    entries = fields["peers"]
    if not isinstance(entries, list):
        raise BadResponse("peers must be an array")
    if len(entries) > min(wanted, MAX_PEERS_PER_RESPONSE):
        raise BadResponse(f"{len(entries)} peers for a request of {wanted}")
    result: list[PeerAddrs] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, list) or len(entry) != 2:
            raise BadResponse(f"peer {index} is not [peer_id, addrs]")
        raw_id, addrs = entry
        if not isinstance(raw_id, bytes) or not 0 < len(raw_id) <= MAX_PEER_ID_LENGTH:
            raise BadResponse(f"peer {index}: peer id must be bin of 1-{MAX_PEER_ID_LENGTH} bytes")
        if not isinstance(addrs, list) or len(addrs) > MAX_ADDRS_PER_PEER:
            raise BadResponse(f"peer {index}: addrs must be an array of <= {MAX_ADDRS_PER_PEER}")
        if not all(isinstance(addr, str) and len(addr) <= MAX_ADDR_LENGTH for addr in addrs):
            raise BadResponse(f"peer {index}: each addr must be a string of <= {MAX_ADDR_LENGTH}")
        if not _is_peer_id(raw_id):
            raise BadResponse(f"peer {index}: not a peer id multihash")
        peer_id = ID(raw_id).to_base58()
        usable = tuple(addr for addr in (normalise_addr(a, peer_id) for a in addrs) if addr)
        if usable:
            result.append(PeerAddrs(peer_id, usable))
    return result


def _is_peer_id(raw: bytes) -> bool:
    """A libp2p peer id: the identity multihash of a short key, or a sha2-256 one."""
    if raw[:1] == b"\x00":  # identity: code 0, length, the protobuf public key
        return len(raw) >= 3 and raw[1] == len(raw) - 2 <= 42
    return len(raw) == 34 and raw[:2] == b"\x12\x20"  # sha2-256, 32 bytes


def normalise_addr(text: str, peer_id: str) -> str | None:
    """``/ipX/HOST/tcp/PORT`` from ``text``, or None if we cannot dial it.

    A trailing ``/p2p/<id>`` is accepted only if it names ``peer_id``.
    """
    try:
        addr = multiaddr.Multiaddr(text)
        protocols = [proto.name for proto in addr.protocols()]
        if protocols not in ([name, "tcp"] for name in _DIALABLE) and protocols not in (
            [name, "tcp", "p2p"] for name in _DIALABLE
        ):
            return None
        if protocols[-1] == "p2p" and addr.value_for_protocol("p2p") != peer_id:
            return None
        host = addr.value_for_protocol(protocols[0])
        port = int(addr.value_for_protocol("tcp"))
    except Exception:
        return None
    if not 0 < port <= 65535:
        return None
    return f"/{protocols[0]}/{host}/tcp/{port}"


@dataclass
class _Reached:
    addrs: tuple[str, ...]
    seen_at: float  # last time we held a connection we had dialled


@dataclass
class _Candidate:
    addrs: tuple[str, ...]
    failures: int = 0
    next_dial_at: float = 0.0


class PeerBook:
    """Peers we reached (shared with others) and peers we heard of (to dial).

    ``clock`` is monotonic seconds; tests pass their own.
    """

    def __init__(
        self,
        own_peer_id: str,
        *,
        min_backoff: float,
        max_backoff: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.own_peer_id = own_peer_id
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._clock = clock
        self._reached: OrderedDict[str, _Reached] = OrderedDict()
        self._candidates: OrderedDict[str, _Candidate] = OrderedDict()

    def record_dialled(self, peer_id: str, addrs: Iterable[str]) -> None:
        """We dialled ``peer_id`` at ``addrs`` and hold a connection to it."""
        usable = tuple(a for a in (normalise_addr(addr, peer_id) for addr in addrs) if a)
        if not usable or peer_id == self.own_peer_id:
            return
        self._reached[peer_id] = _Reached(usable[:MAX_ADDRS_PER_PEER], self._clock())
        self._reached.move_to_end(peer_id)
        while len(self._reached) > MAX_CANDIDATES:
            self._reached.popitem(last=False)
        # Any backoff stays until the connection proves stable (``connection_lasted``):
        # a peer that accepts and hangs up at once must not reset it.

    def connection_lasted(self, peer_id: str) -> None:
        """A connection to ``peer_id`` lasted: its next dial needs no backoff."""
        self._candidates.pop(peer_id, None)

    def touch(self, peer_id: str) -> None:
        """``peer_id`` is still connected: keep it recent."""
        reached = self._reached.get(peer_id)
        if reached is not None:
            reached.seen_at = self._clock()

    def shareable(
        self, limit: int, *, exclude: Iterable[str], is_banned: Callable[[str], bool]
    ) -> list[PeerAddrs]:
        """Up to ``limit`` peers reached recently, most recent first."""
        skip = set(exclude) | {self.own_peer_id}
        oldest = self._clock() - RECENT_PEER_S
        ranked = sorted(self._reached.items(), key=lambda item: -item[1].seen_at)
        result: list[PeerAddrs] = []
        for peer_id, reached in ranked:
            if len(result) >= limit or reached.seen_at < oldest:
                break
            if peer_id in skip or is_banned(peer_id):
                continue
            result.append(PeerAddrs(peer_id, reached.addrs))
        return result

    def learn(self, peers: Iterable[PeerAddrs]) -> int:
        """Keep peers we heard of as dial candidates; returns how many were new."""
        new = 0
        for peer in peers:
            if peer.peer_id == self.own_peer_id or peer.peer_id in self._reached:
                continue
            candidate = self._candidates.get(peer.peer_id)
            if candidate is None:
                new += 1
                self._candidates[peer.peer_id] = _Candidate(peer.addrs)
            else:
                candidate.addrs = peer.addrs
        while len(self._candidates) > MAX_CANDIDATES:
            self._candidates.popitem(last=False)
        return new

    def dial_candidates(self, *, skip: Callable[[str], bool]) -> list[PeerAddrs]:
        """Peers worth dialling now, in random order (known peers' addresses first).

        ``skip`` says which to leave out (connected, banned). Reached peers we
        lost are candidates too, with the addresses that worked.
        """
        now = self._clock()
        pool: dict[str, tuple[str, ...]] = {}
        for peer_id, candidate in self._candidates.items():
            if candidate.next_dial_at <= now:
                pool[peer_id] = candidate.addrs
        for peer_id, reached in self._reached.items():
            backoff = self._candidates.get(peer_id)
            if backoff is None or backoff.next_dial_at <= now:
                pool[peer_id] = reached.addrs
        chosen = [
            PeerAddrs(peer_id, addrs)
            for peer_id, addrs in pool.items()
            if peer_id != self.own_peer_id and not skip(peer_id)
        ]
        random.shuffle(chosen)
        return chosen

    def dial_failed(self, peer_id: str) -> None:
        """A dial of ``peer_id`` failed: back off, and forget it after a few failures."""
        candidate = self._candidates.get(peer_id)
        if candidate is None:
            reached = self._reached.get(peer_id)
            if reached is None:
                return
            candidate = _Candidate(reached.addrs)
            self._candidates[peer_id] = candidate
        candidate.failures += 1
        if candidate.failures >= MAX_DIAL_FAILURES:
            self._candidates.pop(peer_id, None)
            self._reached.pop(peer_id, None)
            return
        backoff = min(self.min_backoff * 2 ** (candidate.failures - 1), self.max_backoff)
        candidate.next_dial_at = self._clock() + backoff * random.uniform(0.8, 1.2)

    def known(self) -> dict[str, Any]:
        """Counts for metrics."""
        return {"reached": len(self._reached), "candidates": len(self._candidates)}
