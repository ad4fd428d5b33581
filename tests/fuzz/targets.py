"""One fuzz target per decoder of untrusted bytes (issue 10).

A :class:`Target` names the decoder, the errors it is documented to raise (anything else
escaping is a bug), the size limit its caller enforces, and valid encodings to start
mutating from. ``tests/fuzz/test_fuzz.py`` runs every target for a few hundred inputs
in ``make test``; ``python -m tests.fuzz`` (``make fuzz``) runs them for millions, with
coverage guidance when atheris is installed. docs/encoding.md lists the limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import rlp

from codec import JSONParseError, RLPDecodeError
from codec.json import parse_json
from codec.rlp import decode_items
from consensus.errors import MalformedMessage
from consensus.messages import CommitMessage, ProposalMessage, decode_message, encode_message
from consensus.types import (
    Commit,
    CommitSig,
    DuplicateVoteEvidence,
    Proposal,
    Validator,
    ValidatorSet,
    Vote,
)
from node.block import Block, MalformedBlock
from node.network import decode_announce, decode_sync_item
from p2p.batch import decode_batch, decode_tx_batch, encode_batch
from p2p.discovery import (
    PeerAddrs,
    decode_peers_request,
    decode_peers_response,
    encode_peers_request,
    encode_peers_response,
)
from p2p.errors import BadRequest, BadResponse, BatchDecodeError
from p2p.reqresp import (
    ChainStatus,
    decode_blocks_request,
    decode_blocks_response,
    decode_status_request,
    decode_status_response,
    encode_blocks_request,
    encode_blocks_response,
    encode_status_request,
    encode_status_response,
)
from rpcclient import MAX_ANSWER_BYTES, RPCError, read_answer
from vm.attestation import (
    AttestationError,
    SignalsError,
    decode_attestation,
    decode_signals,
    encode_signals,
)
from vm.block import Header
from vm.errors import InvalidBlock, MalformedTransaction
from vm.state import decode_transaction

MAX_REQUEST_BYTES = 5 * 1024 * 1024  # node/config.py rpc.max_request_bytes default
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
CHAIN_ID = 7077
PEER_ID = "16Uiu2HAmPcfDnXhaZ1zvLELJq6AkxHfHgYZbeUrnWzz6xD9oABiu"


@dataclass(frozen=True)
class Target:
    name: str
    decode: Callable[[bytes], object]
    errors: tuple[type[BaseException], ...]  # what the decoder may raise
    max_bytes: int  # the size limit its callers enforce; longer inputs are cut
    seeds: Callable[[], list[bytes]]


# --- seeds: valid encodings -------------------------------------------------------------------


@cache
def _vote() -> Vote:
    from consensus.crypto import address_of_private_key

    return Vote.create(CHAIN_ID, KEY, 2, 5, 0, b"\x11" * 32, address_of_private_key(KEY))


def _proposal() -> Proposal:
    return Proposal(5, 0, 0, b"\x11" * 32, _vote().validator, b"\x02" * 65)


def _commit(n: int = 3) -> Commit:
    return Commit(5, 0, b"\x11" * 32, [CommitSig(bytes([i + 1]) * 20, bytes([i]) * 65) for i in range(n)])


def _header() -> Header:
    return Header(CHAIN_ID, 5, 1_700_000_000_000, b"\x01" * 32, b"\x02" * 20, *[b"\x03" * 32] * 4,
                  b"\x00" * 256, 30_000_000, 21_000, 10**9, *[b"\x04" * 32] * 4)


def _transactions() -> list[bytes]:
    from eth_account import Account

    acct = Account.from_key(KEY)
    legacy = acct.sign_transaction({"chainId": CHAIN_ID, "nonce": 0, "gasPrice": 10**9, "gas": 21000,
                                    "to": "0x" + "22" * 20, "value": 1, "data": b""})
    dynamic = acct.sign_transaction({
        "chainId": CHAIN_ID, "nonce": 1, "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9,
        "gas": 50_000, "to": "0x" + "22" * 20, "value": 0, "data": b"\x12\x34", "type": 2,
        "accessList": [{"address": "0x" + "33" * 20, "storageKeys": ["0x" + "44" * 32]}]})
    return [bytes(legacy.raw_transaction), bytes(dynamic.raw_transaction)]


def _block() -> Block:
    evidence = DuplicateVoteEvidence(_vote(), Vote(2, 5, 0, b"\x12" * 32, _vote().validator, b"\x03" * 65))
    return Block(_header(), _transactions(), [b"\x9b\x01"], _commit(), [evidence])


def _attestation() -> bytes:
    # the version-2 fixed vector of tests/vm/test_attestation.py
    return bytes.fromhex(
        "9a02c4142c7536e3605d9c16a7a3d7b1898e529396a65c232a07ce6553f100cf0871f8d7a4ffffffcd04d2"
        "c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc4080102030405060708"
        "c441c3bfb46fe6274d6004f573b751677855149c70bfb7e11f04774216d2a8ac3c083dd48d8d76a5357e4ab4"
        "91da384d677b3875b67b686556e083861f67a3c8db2500")


def _json_requests() -> list[bytes]:
    return [b'{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}',
            b'[{"jsonrpc":"2.0","id":"a","method":"eth_getBalance","params":["0x' + b"ab" * 20 + b'","latest"]}]',
            b'{"a": {"b": [1, 2.5e3, -0, true, false, null, "\\u00e9\\"]["]}}']


def _json_answers() -> list[bytes]:
    return [b'{"jsonrpc":"2.0","id":1,"result":{"number":"0x5","transactions":[],"proof":[["0x1"]]}}',
            b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"bad","data":{"code":"x"}}}',
            b'{"jsonrpc":"2.0","id":1,"result":null}']


# --- decoders as the node calls them ---------------------------------------------------------


def _rlp_differential(data: bytes) -> object:
    """The bounded decoder, checked against pyrlp: same tree, or both refuse."""
    try:
        ours = decode_items(data, max_depth=len(data), max_items=len(data) + 1)
    except RLPDecodeError:
        ours = None
    if len(data) <= 4096:  # pyrlp costs depth x size: only small inputs
        try:
            theirs = rlp.decode(data)
        except (rlp.exceptions.DecodingError, RecursionError):
            theirs = None
        assert ours == theirs, (data.hex(), ours, theirs)
    if ours is None:
        raise RLPDecodeError("rlp_malformed", "refused")
    return ours


def _status_response(data: bytes) -> object:
    return decode_status_response(data)


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("json_request", lambda d: parse_json(d, max_bytes=MAX_REQUEST_BYTES), (JSONParseError,),
           MAX_REQUEST_BYTES, _json_requests),
    Target("json_answer", lambda d: read_answer(d, "http://node"), (RPCError,), MAX_ANSWER_BYTES,
           _json_answers),
    Target("rlp", _rlp_differential, (RLPDecodeError,), 1 << 20,
           lambda: [rlp.encode([b"", [b"a" * 60, [[]]], b"\x7f"]), rlp.encode(b"x" * 100), _block().encode()]),
    Target("transaction", decode_transaction, (MalformedTransaction,), 128 * 1024, _transactions),
    Target("header", Header.decode, (InvalidBlock,), 2048, lambda: [_header().encode()]),
    Target("block", Block.decode, (MalformedBlock,), 8 << 20, lambda: [_block().encode()]),
    Target("vote", Vote.decode, (MalformedMessage,), 64 * 1024, lambda: [_vote().encode()]),
    Target("proposal", Proposal.decode, (MalformedMessage,), 64 * 1024, lambda: [_proposal().encode()]),
    Target("commit", Commit.decode, (MalformedMessage,), 1 << 20, lambda: [_commit().encode()]),
    Target("evidence", DuplicateVoteEvidence.decode, (MalformedMessage,), 64 * 1024,
           lambda: [_block().evidence[0].encode()]),
    Target("validator_set", ValidatorSet.decode, (MalformedMessage,), 1 << 20,
           lambda: [ValidatorSet([Validator(bytes([i]) * 20, i) for i in range(1, 5)]).encode()]),
    Target("consensus_message", decode_message, (MalformedMessage,), 2 << 20, lambda: [
        encode_message(_vote()), encode_message(ProposalMessage(_proposal(), _block().encode())),
        encode_message(CommitMessage(_commit(), _block().encode()))]),
    Target("announce", decode_announce,
           (RLPDecodeError,), 1024, lambda: [rlp.encode([5, b"\x11" * 32])]),
    Target("sync_item", decode_sync_item, (RLPDecodeError, MalformedBlock, MalformedMessage), 8 << 20,
           lambda: [rlp.encode([_block().encode(), _commit().encode()])]),
    Target("attestation", decode_attestation, (AttestationError,), 256, lambda: [_attestation()]),
    Target("signals", decode_signals, (SignalsError,), 64 * 1024,
           lambda: [encode_signals({"lat": 48.1, "lon": 11.5, "soc": 80, "dtc": ["P0420"]})]),
    Target("tx_batch", decode_tx_batch, (BatchDecodeError,), 256 * 1024,
           lambda: [encode_batch(_transactions())]),
    Target("attestation_batch", decode_batch, (BatchDecodeError,), 1 << 20,
           lambda: [encode_batch([_attestation()] * 3)]),
    Target("status_request", decode_status_request, (BadRequest,), 256,
           lambda: [encode_status_request(CHAIN_ID)]),
    Target("status_response", _status_response, (BadResponse,), 1024,
           lambda: [encode_status_response(ChainStatus(CHAIN_ID, 5, b"\x02" * 32))]),
    Target("blocks_request", decode_blocks_request, (BadRequest,), 256,
           lambda: [encode_blocks_request(1, 64)]),
    Target("peers_request", decode_peers_request, (BadRequest,), 256, lambda: [encode_peers_request(16)]),
    Target("peers_response", lambda d: decode_peers_response(d, 16), (BadResponse,), 32 * 1024,
           lambda: [encode_peers_response([PeerAddrs(PEER_ID, ("/ip4/127.0.0.1/tcp/30333",))])]),
    Target("blocks_response", lambda d: decode_blocks_response(d, 4), (BadResponse,), 8 << 20,
           lambda: [encode_blocks_response([_block().encode()] * 2)]),
]}
