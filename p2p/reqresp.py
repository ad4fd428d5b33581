"""Request/response protocols: ``/motus/status/1``, ``/motus/blocks/1`` and
``/motus/proposal/1``.

One request and one response per stream. Each is a frame: an unsigned varint
length, then a msgpack map. Both sides read with a hard frame limit, so a peer
cannot make us buffer more than the protocol allows.

status   request  {"chain_id": int}
         response {"chain_id": int, "height": int, "head_hash": bin}
blocks   request  {"start": int, "end": int}            heights, inclusive
         response {"blocks": [bin, ...]}                 consecutive from start
proposal request  {"hash": bin, "indices": [int, ...]}  a proposal's attestations by
                                                         position; [] asks for the block
         response {"items": [bin, ...]}                  those attestations in order, or
                                                         [the whole block]
error    response {"error": str, "message": str}        instead of any of them

A blocks response holds at most ``MAX_BLOCKS_PER_RESPONSE`` items and
``MAX_BLOCKS_RESPONSE_BYTES`` bytes. It may be shorter than asked for (the
server lacks the blocks, or the byte budget ran out): the client asks again
from where it stopped. Each item is whatever the node's handler encoded (a
block with its commit); p2p does not look inside.

This module holds the wire format and its limits as plain functions; the
stream handling lives in ``p2p.host``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import MessageTooLarge as LibMessageTooLarge
from libp2p.utils import encode_varint_prefixed
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from p2p.batch import compute_array_header_size, compute_bin_size
from p2p.errors import BadRequest, BadResponse, MessageTooLarge, RemoteError
from p2p.topics import KIB, MIB

STATUS_PROTOCOL = TProtocol("/motus/status/1")
BLOCKS_PROTOCOL = TProtocol("/motus/blocks/1")
# The parts of a compact proposal a node could not rebuild from its own pool
# (docs/network.md, "Compact proposals").
PROPOSAL_PROTOCOL = TProtocol("/motus/proposal/1")

MAX_REQUEST_SIZE = 256  # both requests are two small integers
MAX_STATUS_RESPONSE_SIZE = 1 * KIB
MAX_BLOCKS_PER_RESPONSE = 128
MAX_BLOCKS_RESPONSE_BYTES = 8 * MIB
MAX_HASH_SIZE = 64
MAX_ERROR_MESSAGE = 200  # characters of an error's message we send or keep
# Heights and chain ids are uint64 on chain; RLP and msgpack both carry them.
MAX_UINT64 = 2**64 - 1

# Server error codes (the "error" field); stable, like p2p.errors codes.
ERR_BAD_REQUEST = "bad_request"
ERR_UNAVAILABLE = "unavailable"  # no handler registered on the serving node
ERR_INTERNAL = "internal"  # the serving node's handler failed
ERR_TOO_LARGE = "too_large"  # a single block exceeds the response budget
ERR_UNKNOWN_PROPOSAL = "unknown_proposal"  # the server holds no proposal with that hash

# A proposal request names at most this many attestations (a block's maximum,
# node.block.MAX_ATTESTATIONS); its frame is bounded accordingly (5 bytes an index).
MAX_PROPOSAL_INDICES = 20_000
MAX_PROPOSAL_REQUEST_SIZE = 64 + 5 * MAX_PROPOSAL_INDICES
MAX_PROPOSAL_RESPONSE_BYTES = 8 * MIB  # a whole block (node.block.MAX_BLOCK_BYTES)

# Bytes of a blocks response besides its items: fixmap(1) + fixstr "blocks"(7)
# + array header (3 for up to 65535 items).
_BLOCKS_RESPONSE_OVERHEAD = 1 + 7 + 3


@dataclass(frozen=True)
class Head:
    """What the node's status handler answers: its committed head."""

    height: int
    hash: bytes


@dataclass(frozen=True)
class ChainStatus:
    """A peer's answer to ``/motus/status/1``."""

    chain_id: int
    height: int
    head_hash: bytes


StatusHandler = Callable[[str], Awaitable[Head]]
"""``async (peer_id) -> Head``: the node's committed head, for the asking peer."""

ProposalHandler = Callable[[str, bytes, Sequence[int]], Awaitable[Sequence[bytes] | None]]
"""``async (peer_id, block_hash, indices) -> [bytes] | None``: the attestations at
``indices`` of the proposal ``block_hash`` in order, or ``[block]`` for no indices;
None when the node does not hold that proposal. Raise BadRequest for an index out of
range."""

BlocksHandler = Callable[[str, int, int], Awaitable[Sequence[bytes]]]
"""``async (peer_id, start, end) -> [encoded block+commit, ...]`` for heights
start..end inclusive (end - start < MAX_BLOCKS_PER_RESPONSE), consecutive from
start; fewer (or none) when the node does not have them."""


async def read_frame(stream: INetStream, limit: int) -> bytes:
    """Read one length-prefixed frame; ``MessageTooLarge`` if it announces > ``limit``.

    Not ``VarIntLengthMsgReadWriter``: its ``read_exactly`` gives up after 100
    partial reads, so a multi-MiB frame arriving in yamux-window-sized chunks
    fails as "connection closed" although it is still flowing.
    """
    try:
        return await read_varint_prefixed_bytes_limited(stream, limit)
    except LibMessageTooLarge as exc:
        raise MessageTooLarge(str(exc)) from exc


async def write_frame(stream: INetStream, payload: bytes) -> None:
    """Write ``payload`` as one length-prefixed frame."""
    await stream.write(encode_varint_prefixed(payload))


def encode_status_request(chain_id: int) -> bytes:
    """Frame body of a status request from a node on ``chain_id``."""
    return pack_fields({"chain_id": chain_id})


def decode_status_request(data: bytes) -> int:
    """Return the requester's chain id; ``BadRequest`` if malformed."""
    fields = unpack_fields(data, {"chain_id"}, BadRequest, MAX_REQUEST_SIZE)
    return _uint(fields, "chain_id", BadRequest)


def encode_status_response(status: ChainStatus) -> bytes:
    """Frame body of a successful status response."""
    return pack_fields(
        {"chain_id": status.chain_id, "height": status.height, "head_hash": status.head_hash}
    )


def decode_status_response(data: bytes) -> ChainStatus:
    """Return the peer's status; ``RemoteError`` for an error answer, else ``BadResponse``."""
    fields = unpack_response(data, {"chain_id", "height", "head_hash"}, MAX_STATUS_RESPONSE_SIZE)
    head_hash = fields["head_hash"]
    if not isinstance(head_hash, bytes) or len(head_hash) > MAX_HASH_SIZE:
        raise BadResponse("head_hash must be bin of at most 64 bytes")
    return ChainStatus(
        chain_id=_uint(fields, "chain_id", BadResponse),
        height=_uint(fields, "height", BadResponse),
        head_hash=head_hash,
    )


def encode_blocks_request(start: int, end: int) -> bytes:
    """Frame body of a request for heights ``start``..``end`` inclusive."""
    return pack_fields({"start": start, "end": end})


def decode_blocks_request(data: bytes) -> tuple[int, int]:
    """Return (start, end); ``BadRequest`` if malformed or ``start > end``."""
    fields = unpack_fields(data, {"start", "end"}, BadRequest, MAX_REQUEST_SIZE)
    start = _uint(fields, "start", BadRequest)
    end = _uint(fields, "end", BadRequest)
    if start > end:
        raise BadRequest(f"start {start} is above end {end}")
    return start, end


def compute_served_range(start: int, end: int) -> tuple[int, int]:
    """The part of ``start..end`` one response may cover (at most 128 heights)."""
    return start, min(end, start + MAX_BLOCKS_PER_RESPONSE - 1)


def fit_blocks_response(blocks: Sequence[bytes]) -> list[bytes]:
    """The longest prefix of ``blocks`` whose response fits the byte budget.

    Raises ``MessageTooLarge`` when even the first block does not fit.
    """
    budget = MAX_BLOCKS_RESPONSE_BYTES - _BLOCKS_RESPONSE_OVERHEAD
    fitted: list[bytes] = []
    used = 0
    for block in blocks[:MAX_BLOCKS_PER_RESPONSE]:
        cost = compute_bin_size(len(block))
        if used + cost > budget:
            break
        fitted.append(bytes(block))
        used += cost
    if blocks and not fitted:
        raise MessageTooLarge(f"block of {len(blocks[0])} bytes exceeds the response budget")
    return fitted


def encode_blocks_response(blocks: Sequence[bytes]) -> bytes:
    """Frame body of a blocks response (``blocks`` already fitted)."""
    return pack_fields({"blocks": list(blocks)})


def decode_blocks_response(data: bytes, requested: int) -> list[bytes]:
    """Return the blocks of a response to a request for ``requested`` heights.

    ``RemoteError`` for an error answer; ``BadResponse`` when the answer is
    malformed or holds more blocks than were asked for (or than allowed).
    """
    fields = unpack_response(data, {"blocks"}, MAX_BLOCKS_RESPONSE_BYTES)
    blocks = fields["blocks"]
    if not isinstance(blocks, list):
        raise BadResponse("blocks must be an array")
    if len(blocks) > min(requested, MAX_BLOCKS_PER_RESPONSE):
        raise BadResponse(f"{len(blocks)} blocks for a request of {requested}")
    for index, block in enumerate(blocks):
        if not isinstance(block, bytes) or not block:
            raise BadResponse(f"block {index} is not a non-empty bin")
    return blocks


def encode_proposal_request(block_hash: bytes, indices: Sequence[int]) -> bytes:
    """Frame body of a request for the attestations at ``indices`` of a proposal
    (none: the whole block)."""
    return pack_fields({"hash": block_hash, "indices": list(indices)})


def decode_proposal_request(data: bytes) -> tuple[bytes, list[int]]:
    """Return (block hash, indices); ``BadRequest`` if malformed, an index repeats or
    there are more than MAX_PROPOSAL_INDICES."""
    fields = unpack_fields(data, {"hash", "indices"}, BadRequest, MAX_PROPOSAL_REQUEST_SIZE,
                           max_array=MAX_PROPOSAL_INDICES)
    block_hash, indices = fields["hash"], fields["indices"]
    if not isinstance(block_hash, bytes) or len(block_hash) != 32:
        raise BadRequest("hash must be bin of 32 bytes")
    if not isinstance(indices, list):
        raise BadRequest("indices must be an array")
    if not all(type(i) is int and 0 <= i < MAX_PROPOSAL_INDICES for i in indices):
        raise BadRequest(f"indices must be integers in [0, {MAX_PROPOSAL_INDICES})")
    if len(set(indices)) != len(indices):
        raise BadRequest("indices repeat")
    return block_hash, indices


def encode_proposal_response(items: Sequence[bytes]) -> bytes:
    """Frame body of a proposal response."""
    return pack_fields({"items": list(items)})


def decode_proposal_response(data: bytes, requested: int) -> list[bytes]:
    """The items of an answer to a request for ``requested`` indices (0: the block).

    ``RemoteError`` for an error answer; ``BadResponse`` when malformed or when the
    count is not the one asked for (one item for the whole block)."""
    fields = unpack_response(data, {"items"}, MAX_PROPOSAL_RESPONSE_BYTES,
                             max_array=MAX_PROPOSAL_INDICES)
    items = fields["items"]
    if not isinstance(items, list) or len(items) != max(requested, 1):
        raise BadResponse(f"expected {max(requested, 1)} items")
    if not all(isinstance(item, bytes) and item for item in items):
        raise BadResponse("items must be non-empty bins")
    return items


def encode_error(code: str, message: str) -> bytes:
    """Frame body of an error response."""
    return pack_fields({"error": code, "message": message[:MAX_ERROR_MESSAGE]})


def pack_fields(fields: dict[str, Any]) -> bytes:
    """A request or response body: a msgpack map (shared by every /motus/* protocol)."""
    return msgpack.packb(fields, use_bin_type=True)


def unpack_fields(
    data: bytes, keys: set[str], error: type[BadRequest] | type[BadResponse], limit: int,
    max_array: int = MAX_BLOCKS_PER_RESPONSE,
) -> dict[str, Any]:
    """Decode a body of at most ``limit`` bytes that must be a map with exactly ``keys``
    (arrays of at most ``max_array`` items); anything else raises ``error``."""
    if len(data) > limit:
        raise error(f"message of {len(data)} bytes, limit {limit}")
    try:
        fields = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=limit,
            max_str_len=limit,
            max_array_len=max_array,
            max_map_len=8,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises ValueError, ExtraData, TypeError...
        raise error(f"not valid msgpack: {exc}") from exc
    if not isinstance(fields, dict) or set(fields) != keys:
        raise error(f"expected a map with keys {sorted(keys)}")
    return fields


def unpack_response(data: bytes, keys: set[str], limit: int,
                    max_array: int = MAX_BLOCKS_PER_RESPONSE) -> dict[str, Any]:
    """A response map with ``keys``, or the peer's error answer raised as RemoteError."""
    try:
        return unpack_fields(data, keys, BadResponse, limit, max_array)
    except BadResponse:
        fields = unpack_fields(data, {"error", "message"}, BadResponse, limit)
        code, message = fields["error"], fields["message"]
        if not isinstance(code, str) or not isinstance(message, str):
            raise BadResponse("error and message must be strings") from None
        raise RemoteError(code[:40], message[:MAX_ERROR_MESSAGE]) from None


def _uint(fields: dict[str, Any], key: str, error: type[BadRequest] | type[BadResponse]) -> int:
    value = fields[key]
    # bool is an int subclass; msgpack never yields one for an int, but be exact.
    if type(value) is not int or not 0 <= value <= MAX_UINT64:
        raise error(f"{key} must be an integer in [0, 2**64)")
    return value


assert _BLOCKS_RESPONSE_OVERHEAD >= 1 + 7 + compute_array_header_size(MAX_BLOCKS_PER_RESPONSE)
