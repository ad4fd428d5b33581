"""py-libp2p settings that are module-level constants, set deliberately.

Some of the library's limits are not constructor arguments. We set them once
per process, before any host starts, with values chosen for Motus's load (see
docs/p2p.md, "Tuning"). Every value here is a measured trap, not a guess.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from typing import Any

import libp2p.peer.peerstore as libp2p_peerstore
import libp2p.pubsub.gossipsub as libp2p_gossipsub
import libp2p.pubsub.pubsub as libp2p_pubsub
import libp2p.pubsub.utils as libp2p_pubsub_utils
import libp2p.pubsub.validators as libp2p_pubsub_validators
import libp2p.stream_muxer.yamux.yamux as libp2p_yamux
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.rpc_queue import RpcQueue

from p2p.topics import MAX_TOPIC_MESSAGE_SIZE, MIB

logger = logging.getLogger(__name__)

# Per-peer outbound pubsub queue, in RPCs. The library default (32) drops
# silently once a publisher outruns one peer for a few tens of milliseconds;
# 1024 carried 1000 msg/s over one hop without loss in our measurements.
OUTBOUND_QUEUE_SIZE = 1024
# Largest pubsub RPC frame we send or accept. The default (1 MiB) is below the
# consensus topic's 2 MiB limit: a proposal would be dropped without a word by
# the sender's queue. Twice the largest topic message leaves room for framing
# and for an RPC that carries a control message alongside.
MAX_RPC_SIZE = 2 * MAX_TOPIC_MESSAGE_SIZE
# Buffer between pubsub and our drain task, per subscribed topic. The library
# default (32) drops (with a log line) when the consumer is slow; our drain
# task reads it promptly into the node's own bounded inbox, and this buffer
# covers the moments our task is not scheduled.
SUBSCRIPTION_CHANNEL_SIZE = 1024

assert MAX_RPC_SIZE >= MAX_TOPIC_MESSAGE_SIZE + 1 * MIB
# Yamux flow control: the library's default (PY_YAMUX_RELEASE_ON_READ=1) answers almost
# every read with a WINDOW_UPDATE frame (noise-encrypted, one more socket write). In a
# four-validator devnet under attestation load a validator's trio loop wrote 215,000
# window updates against 285,000 frames received, ~8 % of its time plus the writes. With
# "0" the receiver grants window the go-yamux way, once half the window was consumed,
# and the validators' main-thread CPU for the same 20,000 attestations fell by about a
# quarter (bench_attest_e2e --validators 4, docs/benchmarks.md). An operator's own
# PY_YAMUX_RELEASE_ON_READ wins (the library reads it on every call).
YAMUX_RELEASE_ON_READ = "0"
# Signed peer records: every pubsub RPC carries its sender's, and the library verifies it
# (an ed25519 check and a peerstore update) twice per RPC received, once in pubsub and
# once in gossipsub: ~7 % of a validator's loop in the four-validator attestation
# bench. The same bytes from the same peer verify the same way, so a record verified by
# a host is taken again without the check for SIGNED_RECORD_REFRESH_S (then checked and
# stored again, well inside the 2 h the library keeps it); a changed record (new
# addresses, new sequence number) is other bytes, checked as before. At most
# SIGNED_RECORD_MEMO records are remembered (all forgotten when full).
SIGNED_RECORD_REFRESH_S = 600.0
SIGNED_RECORD_MEMO = 4096
_verified_records: dict[tuple[int, bytes, bytes], float] = {}


def consume_signed_record_once(msg: rpc_pb2.RPC, host: Any, peer_id: Any) -> bool:
    """The library's ``maybe_consume_signed_record``, skipping records this host
    verified from this peer in the last SIGNED_RECORD_REFRESH_S (see above)."""
    if not msg.HasField("senderRecord"):
        return True
    key = (id(host), peer_id.to_bytes(), msg.senderRecord)
    now = time.monotonic()
    verified_at = _verified_records.get(key)
    if verified_at is not None and now - verified_at < SIGNED_RECORD_REFRESH_S:
        return True
    ok = libp2p_pubsub_utils.maybe_consume_signed_record(msg, host, peer_id)
    if ok:
        if len(_verified_records) >= SIGNED_RECORD_MEMO:
            _verified_records.clear()
        _verified_records[key] = now
    return ok


# Our own signed peer record, attached to every pubsub RPC we publish or relay. The
# library rebuilds the host's address list for each one (getsockname and multiaddr
# parsing per listener: ~1.3 ms, 4.6 s of a validator's profile for 3,445 messages in
# the four-validator attestation bench) only to find its cached record still matches.
# The bytes are reused while the peerstore's local record is the same object (anything
# that issues a new one, e.g. identify, is seen at once: peers refuse a record older
# than one they hold, and would drop our RPCs with it) and for at most
# SENDER_RECORD_REFRESH_S, after which the library compares the addresses again: a
# listen address that changes (it does not, once a host listens) reaches peers that
# much later.
SENDER_RECORD_REFRESH_S = 5.0
# by host, weakly: a stopped host (tests make many) is not kept alive by its memo
_sender_records: weakref.WeakKeyDictionary[Any, tuple[float, Any, tuple[bytes, bool]]] = (
    weakref.WeakKeyDictionary())
_library_env_to_send = libp2p_peerstore.env_to_send_in_RPC


def sender_record(host: Any) -> tuple[bytes, bool]:
    """The library's ``env_to_send_in_RPC``, its answer reused while the host's local
    record stays the same, for at most SENDER_RECORD_REFRESH_S (see above)."""
    now = time.monotonic()
    local = host.get_peerstore().get_local_record()
    held = _sender_records.get(host)
    if (held is not None and local is not None and held[1] is local
            and now - held[0] < SENDER_RECORD_REFRESH_S):
        return held[2][0], False
    answer = _library_env_to_send(host)
    if len(_sender_records) >= SIGNED_RECORD_MEMO:
        _sender_records.clear()
    _sender_records[host] = (now, host.get_peerstore().get_local_record(), answer)
    return answer


# Message signatures (strict signing): the library decodes the origin's public key out
# of its peer id (a multihash decode and a protobuf key parse, ~0.2 ms) for every
# message received, then checks that the key hashes back to the id. An id always
# yields the same key, so the key is remembered per id (at most SIGNED_RECORD_MEMO).
# The signature itself is checked every time, over the same bytes as the library.
_origin_keys: dict[bytes, Any] = {}


def check_message_signature(msg: rpc_pb2.Message) -> bool:
    """The library's ``signature_validator`` with the origin's key remembered per peer
    id; ids whose key is not inline (RSA: the key travels in ``msg.key``) go to the
    library's function."""
    if msg.signature == b"":
        return False
    key = _origin_keys.get(msg.from_id)
    if key is None:
        sender = ID(msg.from_id)
        key = sender.extract_public_key()
        if key is None or ID.from_pubkey(key) != sender:
            return libp2p_pubsub_validators.signature_validator(msg)
        if len(_origin_keys) >= SIGNED_RECORD_MEMO:
            _origin_keys.clear()
        _origin_keys[msg.from_id] = key
    unsigned = rpc_pb2.Message(data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id,
                               seqno=msg.seqno)
    payload = libp2p_pubsub_validators.PUBSUB_SIGNING_PREFIX.encode() + unsigned.SerializeToString()
    try:
        return bool(key.verify(payload, msg.signature))
    except Exception:
        return False


class HalfWindowYamuxStream(libp2p_yamux.YamuxStream):
    """A yamux stream that grants receive window the go-yamux way only.

    Even with YAMUX_RELEASE_ON_READ off, the library answers a read with a WINDOW_UPDATE
    frame whenever any window is owed and less than the threshold (half the window) is
    ("partial slack"): in the four-validator attestation bench a validator still sent
    ~18,000 updates for ~5,300 pubsub RPCs received, 3.2 s of its 62 s profile. Here a
    read that owes less than the threshold, with less than it pending, only adds to the
    pending release; the library's own rules (full grow, pending flush, autotune) run
    once half the window is owed. The sender keeps at least half the window meanwhile,
    so it never waits on us for longer than before. Frames and their meaning are
    unchanged: yamux leaves when to send a window update to the receiver."""

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        if bytes_read > 0 and not libp2p_yamux._yamux_release_on_read():
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            owed = self.target_recv_window - (self.recv_window + buffered)
            threshold = self._grow_threshold()
            if owed < threshold and self._pending_recv_release + bytes_read < threshold:
                self._pending_recv_release += bytes_read
                return
        await super()._auto_tune_and_send_window_update(bytes_read=bytes_read)


# Topics whose messages jump the per-peer outbound queue (the library's two-tier queue:
# gossipsub's control messages use the same priority tier). Consensus messages are few
# and small (votes ~200 B, compact proposals; docs/network.md), but a round waits for
# them: in a four-validator devnet at the start of an attestation burst, votes queued
# behind attestation batches reached their peers 0.6-2.6 s late and rounds failed.
PRIORITY_TOPIC_NAMES = frozenset({"consensus"})


def is_priority_rpc(rpc: rpc_pb2.RPC) -> bool:
    """Whether ``rpc`` carries only messages of PRIORITY_TOPIC_NAMES topics (ids are
    ``/motus/<chain>/<name>/<version>``); control-only RPCs are the library's call."""
    if not rpc.publish:
        return False
    for msg in rpc.publish:
        for topic in msg.topicIDs:
            parts = topic.split("/")
            if len(parts) != 5 or parts[3] not in PRIORITY_TOPIC_NAMES:
                return False
    return True


class TunedRpcQueue(RpcQueue):
    """The per-peer outbound queue with our size and frame limits, counting its drops.

    The library drops an RPC that finds the queue full with only a debug log
    line; ``dropped`` (per queue) and ``dropped_total`` (per process) make the
    loss visible in ``P2PNode.peers()`` and ``P2PNode.stats()``. ``last_pop``
    (monotonic seconds: the writer's last take, or the first push into an empty queue
    after it) tells a peer that is slow from one that stopped reading.
    """

    dropped_total = 0

    def __init__(
        self, max_size: int = OUTBOUND_QUEUE_SIZE, max_message_size: int = MAX_RPC_SIZE
    ) -> None:
        super().__init__(max_size=max_size, max_message_size=max_message_size)
        self.capacity = max_size
        self.dropped = 0
        self.last_pop = time.monotonic()

    def push(self, rpc: rpc_pb2.RPC, priority: bool = False) -> bool:
        """Enqueue like the library, consensus messages in the priority tier (see
        PRIORITY_TOPIC_NAMES), and count what does not fit."""
        if len(self) == 0:
            # An idle writer has taken nothing for as long as nothing came: the wait a
            # wedge check measures starts with the first RPC it does not take (review
            # note: an idle healthy peer looked wedged at its first RPC).
            self.last_pop = time.monotonic()
        accepted = super().push(rpc, priority or is_priority_rpc(rpc))
        if not accepted and not self.closed:
            self.dropped += 1
            TunedRpcQueue.dropped_total += 1
            if TunedRpcQueue.dropped_total == 1 or TunedRpcQueue.dropped_total % 1000 == 0:
                logger.warning(
                    "pubsub outbound queue full: %d RPCs dropped so far",
                    TunedRpcQueue.dropped_total,
                )
        return accepted

    async def pop(self) -> rpc_pb2.RPC | None:
        """Dequeue like the library, noting when the writer last took an RPC."""
        rpc = await super().pop()
        self.last_pop = time.monotonic()
        return rpc


def apply_library_tuning() -> None:
    """Set py-libp2p's module-level limits to ours. Idempotent; call before hosts start.

    ``rpc_queue.OutBoundQueueSize`` cannot be tuned by assignment: it is bound
    as ``RpcQueue.__init__``'s default argument when the module is imported.
    Pubsub creates each peer's queue with a bare ``RpcQueue()`` looked up in its
    own module, so we substitute our subclass there. The yamux window behaviour is an
    environment variable the library reads on every call (YAMUX_RELEASE_ON_READ).
    Signed peer records are verified once per host, peer and record
    (``consume_signed_record_once``); our own is rebuilt at most every
    SENDER_RECORD_REFRESH_S (``sender_record``); message signatures are checked with
    the origin's key remembered (``check_message_signature``).
    """
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", YAMUX_RELEASE_ON_READ)
    if libp2p_pubsub.RpcQueue is not TunedRpcQueue:
        libp2p_pubsub.RpcQueue = TunedRpcQueue  # type: ignore[misc]
        # both modules bound the function by name at import
        libp2p_pubsub.maybe_consume_signed_record = consume_signed_record_once
        libp2p_gossipsub.maybe_consume_signed_record = consume_signed_record_once
        libp2p_pubsub.env_to_send_in_RPC = sender_record
        libp2p_gossipsub.env_to_send_in_RPC = sender_record
        libp2p_pubsub.signature_validator = check_message_signature
        # Yamux creates its streams by this module-level name (see HalfWindowYamuxStream)
        libp2p_yamux.YamuxStream = HalfWindowYamuxStream  # type: ignore[misc]
        libp2p_pubsub.SUBSCRIPTION_CHANNEL_SIZE = SUBSCRIPTION_CHANNEL_SIZE
        logger.debug(
            "py-libp2p tuned: outbound queue %d RPCs, RPC frame %d bytes, subscription buffer %d",
            OUTBOUND_QUEUE_SIZE,
            MAX_RPC_SIZE,
            SUBSCRIPTION_CHANNEL_SIZE,
        )
