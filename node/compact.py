"""Compact proposals: how a proposal travels on the consensus topic without the
attestations every validator already holds (docs/network.md, "Compact proposals").

A proposal's block carries its attestations in full (~150 bytes each, ~330 KB for a
block of 2,200), yet gossip has usually brought each of them to every validator's pool
before the block is built. So on the wire the proposer names them by id (the keccak of
the attestation's bytes, the pool's key) and each receiver rebuilds the block from its
own pool, asking peers over ``/motus/proposal/1`` only for what it lacks, as Bitcoin's
compact blocks (BIP 152) do. The block, its encoding and its hash do not change: only
the consensus topic message does.

Wire (RLP): ``[4, proposal, [header, transactions, attestations, last_commit,
evidence]]``: tag 4 next to consensus.messages' tags 1-3; ``proposal`` the signed
:class:`consensus.types.Proposal`; the block's fields in block order, where each item of
``attestations`` is either the attestation's 32-byte id or, "prefilled", the attestation
itself (an attestation is never 32 bytes long: its signature alone is 65). The proposer
prefills what its peers may not have yet (what it admitted itself rather than received
by gossip); the rest every peer of the gossip mesh has seen. The header's hash is the
block hash the proposal signs, so a receiver checks it before anything else; the list
is only believed once the rebuilt attestations hash to the header's
``attestations_root``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import rlp
from eth_hash.auto import keccak
from rlp.sedes import big_endian_int

from codec import RLPDecodeError
from codec import rlp as bounded_rlp
from consensus.errors import MalformedMessage
from consensus.messages import check_proposal_fields
from consensus.types import Proposal
from node.block import BLOCK_MAX_DEPTH, BLOCK_MAX_ITEMS, Block
from vm.trie import compute_list_root

TAG_COMPACT_PROPOSAL = 4
ATTESTATION_ID_BYTES = 32  # an item of this length is an id; an attestation is longer
# A compact proposal is smaller than the block it names (ids are shorter than the
# attestations), so the consensus topic's limit still bounds it; this is the decoder's.
MAX_COMPACT_BYTES = 2 * 1024 * 1024
COMPACT_MAX_DEPTH = BLOCK_MAX_DEPTH + 1  # one deeper inside the envelope
COMPACT_MAX_ITEMS = (
    1 + 1  # envelope, tag
    + 1 + len(Proposal._meta.fields)
    + BLOCK_MAX_ITEMS  # the compact block has the block's shape (ids are items too)
)


class CompactBlock(Block):
    """A block with its attestations named by id or prefilled: the block's own fields
    and sedes (an id is a 32-byte string where the block has the attestation's bytes),
    so the header, and with it the hash, are the block's."""


_ENVELOPE = rlp.sedes.List([big_endian_int, Proposal, CompactBlock])


@dataclass(frozen=True)
class CompactProposal:
    """A signed proposal with its block in compact form."""

    proposal: Proposal
    block: CompactBlock

    @property
    def height(self) -> int:
        return self.proposal.height

    @property
    def round(self) -> int:
        return self.proposal.round


def is_compact(data: bytes) -> bool:
    """Whether consensus-topic bytes carry tag 4 (a compact proposal): the first item
    of the outer RLP list, read without decoding the rest."""
    if not data:
        return False
    prefix = data[0]
    if prefix < 0xC0:
        return False
    offset = 1 if prefix <= 0xF7 else 1 + (prefix - 0xF7)
    return len(data) > offset and data[offset] == TAG_COMPACT_PROPOSAL


def is_id(item: bytes) -> bool:
    """Whether a compact block's attestation item is an id (else the attestation)."""
    return len(item) == ATTESTATION_ID_BYTES


def encode_compact(proposal: Proposal, block: Block,
                   prefill: Callable[[bytes], bool] | None = None) -> bytes:
    """The wire bytes of ``proposal`` with ``block`` in compact form: each attestation by
    its id (keccak), or in full where ``prefill(id)`` says so."""
    items = []
    for raw in block.attestations:
        att_id = keccak(raw)
        items.append(raw if prefill is not None and prefill(att_id) else att_id)
    compact = CompactBlock(block.header, block.transactions, items, block.last_commit,
                           block.evidence)
    return rlp.encode([TAG_COMPACT_PROPOSAL, proposal, compact])


def decode_compact(data: bytes) -> CompactProposal:
    """Parse a compact proposal; raises MalformedMessage (never another exception) on
    bytes over the limit, of the wrong shape or not canonical, or a proposal out of range."""
    if len(data) > MAX_COMPACT_BYTES:
        raise MalformedMessage(f"compact proposal of {len(data)} bytes exceeds {MAX_COMPACT_BYTES}")
    try:
        tag, proposal, block = bounded_rlp.decode(bytes(data), _ENVELOPE, max_depth=COMPACT_MAX_DEPTH,
                                                  max_items=COMPACT_MAX_ITEMS)
    except RLPDecodeError as exc:
        raise MalformedMessage(f"compact proposal: {exc.code}: {exc}") from None
    if tag != TAG_COMPACT_PROPOSAL:
        raise MalformedMessage(f"compact proposal: tag {tag}")
    check_proposal_fields(proposal)
    if rlp.encode([tag, proposal, block]) != data:
        raise MalformedMessage("compact proposal: not in canonical encoding")
    return CompactProposal(proposal, block)


def gather(block: CompactBlock, lookup: Callable[[bytes], bytes | None]) -> tuple[list[bytes | None], list[int]]:
    """The block's attestations as far as they are prefilled or ``lookup`` (id -> bytes)
    knows them, and the indices of those it does not."""
    found = [lookup(item) if is_id(item) else item for item in block.attestations]
    return found, [i for i, raw in enumerate(found) if raw is None]


def fill(block: CompactBlock, found: list[bytes | None], indices: Sequence[int],
         items: Sequence[bytes]) -> list[int]:
    """Put fetched ``items`` (answers for ``indices``) into ``found`` where each hashes to
    the id it was asked for; returns the indices whose item did not (left unfilled)."""
    bad = []
    for index, item in zip(indices, items, strict=True):
        if keccak(item) == block.attestations[index]:
            found[index] = item
        else:
            bad.append(index)
    return bad


def assemble(block: CompactBlock, attestations: Sequence[bytes]) -> tuple[bytes, Block] | None:
    """The full block value and block, if ``attestations`` hash to the header's
    ``attestations_root``; None if they do not (the ids do not describe this block)."""
    if compute_list_root(list(attestations)) != block.header.attestations_root:
        return None
    full = Block(block.header, block.transactions, list(attestations), block.last_commit,
                 block.evidence)
    return full.encode(), full
