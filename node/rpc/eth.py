"""The Ethereum methods (``eth_``, ``net_``, ``web3_``), answering as geth does so that
web3.py, ethers and wallets work unchanged.

Every block is final (a committed block is never reverted), so the tags ``safe``,
``finalized`` and ``latest`` all name the head; ``pending`` names the head too except
for ``eth_getTransactionCount`` (counts mempool transactions) and ``eth_call`` /
``eth_estimateGas`` (run in the context of the next block).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import rlp
from eth.rlp.accounts import Account
from eth_bloom import BloomFilter
from eth_hash.auto import keccak
from rlp.sedes import big_endian_int
from trie import HexaryTrie

from node.block import Block
from node.logindex import receipts_logs, tx_hashes_of_extras
from node.mempool import TxRejected
from node.rpc import params as p
from node.rpc.errors import (
    EXECUTION_REVERTED,
    INVALID_INPUT,
    INVALID_PARAMS,
    RPCError,
    limit_exceeded,
    not_found,
    state_pruned,
)
from node.rpc.ethjson import (
    block_json,
    hexb,
    hexq,
    log_json,
    log_parts_json,
    receipt_json,
    system_receipt_json,
    system_tx_json,
    tx_json,
)
from node.rpc.registry import MethodTable, Param, RPCContext
from node.version import CLIENT_VERSION
from vm.block import EMPTY_ROOT, Header
from vm.call import (
    AccountOverride,
    CallError,
    CallResult,
    CallView,
    InsufficientFunds,
    IntrinsicGasTooLow,
    Message,
)
from vm.call import call as vm_call
from vm.call import estimate_gas as vm_estimate_gas
from vm.events import BlockEvent, compute_block_events_tx_hash
from vm.state import BlockEnv, decode_transaction

methods = MethodTable()

GWEI = 10**9
DEFAULT_TIP = 1 * GWEI  # suggested priority fee when recent blocks carry no transactions
MAX_TIP = 500 * GWEI  # never suggest more, whatever recent blocks paid (geth's cap)
MIN_COUNTED_TIP = 2  # tips below this many wei are ignored when suggesting (as geth)
TIP_BLOCKS = 20  # recent blocks looked at for the suggested tip
TIP_PERCENTILE = 60
MAX_FEE_HISTORY_BLOCKS = 1024
MAX_PROOF_KEYS = 1_000
EMPTY_CODE_HASH = keccak(b"")

BLOCK = Param("block", p.block_ref, p.LATEST)
ANY_LOG = p.log_filter({})  # matches every log


# --- block references -------------------------------------------------------------------


def resolve_height(ctx: RPCContext, ref: p.BlockRef) -> int | None:
    """The height ``ref`` names, or None when no such block exists (yet)."""
    head = ctx.store.head_height
    if ref.hash is not None:
        block = ctx.store.block_by_hash(ref.hash)
        return None if block is None else block.height
    if ref.tag == "earliest":
        return 0
    if ref.tag is not None:  # latest, pending, safe, finalized: every block is final
        return head
    assert ref.number is not None
    return ref.number if ref.number <= head else None


def resolve_block(ctx: RPCContext, ref: p.BlockRef) -> Block | None:
    if ref.hash is not None:
        return ctx.store.block_by_hash(ref.hash)
    height = resolve_height(ctx, ref)
    return None if height is None else ctx.store.block_by_height(height)


def resolve_header(ctx: RPCContext, ref: p.BlockRef) -> Header:
    """The header ``ref`` names; ``-32001 header not found`` if there is none."""
    if ref.tag is not None and ref.tag != "earliest":
        return ctx.store.head
    block = resolve_block(ctx, ref)
    if block is None:
        if ref.hash is not None:  # geth's words and code for an unknown hash
            raise RPCError(INVALID_INPUT, "header for hash not found")
        raise not_found(f"header not found: block {ref.describe()}")
    return block.header


def state_header(ctx: RPCContext, ref: p.BlockRef) -> Header:
    """The header ``ref`` names, for a read of its state: ``state_pruned`` (errors.py) if
    this node no longer keeps that state (docs/storage.md, "Pruning")."""
    header = resolve_header(ctx, ref)
    oldest = ctx.store.oldest_state_height
    if header.height < oldest:
        raise state_pruned(oldest, f"state of block {header.height} is pruned")
    return header


def state_at(ctx: RPCContext, ref: p.BlockRef):
    """A read view of the state ``ref`` names. The head's is the node's shared head view
    (``Application.head_state``, renewed by each commit): building a py-evm state costs
    ~30 us, more than the read itself, and its account cache serves repeated reads
    between two blocks. Handlers that run in worker threads must not use this (they
    build their own with ``ctx.app.state_at``)."""
    if ref.tag is not None and ref.tag != "earliest":  # latest, pending, safe, finalized
        return ctx.app.head_state()
    header = state_header(ctx, ref)
    if header.hash == ctx.store.head.hash:
        return ctx.app.head_state()
    return ctx.app.state_at(header)


# --- node and chain ---------------------------------------------------------------------


@methods.method("web3_clientVersion")
def client_version(ctx: RPCContext) -> str:
    return CLIENT_VERSION


@methods.method("web3_sha3", Param("data", p.data))
def sha3(ctx: RPCContext, data: bytes) -> str:
    return hexb(keccak(data))


@methods.method("net_version")
def net_version(ctx: RPCContext) -> str:
    return str(ctx.chain_id)


@methods.method("net_listening")
def net_listening(ctx: RPCContext) -> bool:
    return True


def peer_count(node: Any) -> int:
    """Connected peers, from the network service (``node.network``) when it runs."""
    host = getattr(node, "network", None)
    value = getattr(host, "peer_count", 0) if host is not None else 0
    return int(value() if callable(value) else value)


@methods.method("net_peerCount")
def net_peer_count(ctx: RPCContext) -> str:
    return hexq(peer_count(ctx.node))


@methods.method("eth_chainId")
def chain_id(ctx: RPCContext) -> str:
    return hexq(ctx.chain_id)


@methods.method("eth_syncing")
def syncing(ctx: RPCContext) -> bool | dict[str, str]:
    """False when following the chain; while block sync catches up, geth's object
    (the target height is not known up front, so ``highestBlock`` is the head)."""
    network = getattr(ctx.node, "network", None)
    if network is None or not getattr(network, "syncing", False):
        return False
    head = hexq(ctx.store.head_height)
    return {"startingBlock": head, "currentBlock": head, "highestBlock": head}


@methods.method("eth_accounts")
def accounts(ctx: RPCContext) -> list[str]:
    return []  # the node holds no user keys: wallets sign and send raw transactions


@methods.method("eth_blockNumber")
def block_number(ctx: RPCContext) -> str:
    return hexq(ctx.store.head_height)


# --- state -------------------------------------------------------------------------------


@methods.method("eth_getBalance", Param("address", p.address), BLOCK)
def get_balance(ctx: RPCContext, address: bytes, ref: p.BlockRef) -> str:
    return hexq(state_at(ctx, ref).get_balance(address))


@methods.method("eth_getTransactionCount", Param("address", p.address), BLOCK)
def get_transaction_count(ctx: RPCContext, address: bytes, ref: p.BlockRef) -> str:
    nonce = state_at(ctx, ref).get_nonce(address)
    if ref.tag == "pending":
        nonce = ctx.mempool.pending_nonce(address, nonce)
    return hexq(nonce)


@methods.method("eth_getCode", Param("address", p.address), BLOCK)
def get_code(ctx: RPCContext, address: bytes, ref: p.BlockRef) -> str:
    return hexb(state_at(ctx, ref).get_code(address))


@methods.method(
    "eth_getStorageAt", Param("address", p.address), Param("slot", p.storage_slot), BLOCK
)
def get_storage_at(ctx: RPCContext, address: bytes, slot: int, ref: p.BlockRef) -> str:
    return hexb(state_at(ctx, ref).get_storage(address, slot).to_bytes(32, "big"))


@methods.method(
    "eth_getProof",
    Param("address", p.address),
    Param("storageKeys", p.list_of(p.storage_slot, MAX_PROOF_KEYS)),
    BLOCK,
    blocking=True,
)
def get_proof(ctx: RPCContext, address: bytes, slots: list[int], ref: p.BlockRef) -> dict[str, Any]:
    """EIP-1186 account and storage proofs against the block's state root."""
    header = state_header(ctx, ref)
    db = ctx.store.state_db
    account_trie = HexaryTrie(db, header.state_root)
    account_key = keccak(address)
    raw = account_trie.get(account_key)
    account = rlp.decode(raw, sedes=Account) if raw else Account(0, 0, EMPTY_ROOT, EMPTY_CODE_HASH)
    storage_trie = HexaryTrie(db, account.storage_root)
    storage = []
    for slot in slots:
        key = keccak(slot.to_bytes(32, "big"))
        value = storage_trie.get(key)
        storage.append(
            {
                "key": hexb(slot.to_bytes(32, "big")),
                "value": hexq(rlp.decode(value, sedes=big_endian_int) if value else 0),
                "proof": _proof(storage_trie, key),
            }
        )
    return {
        "address": hexb(address),
        "accountProof": _proof(account_trie, account_key),
        "balance": hexq(account.balance),
        "codeHash": hexb(account.code_hash),
        "nonce": hexq(account.nonce),
        "storageHash": hexb(account.storage_root),
        "storageProof": storage,
    }


def _proof(trie: HexaryTrie, key: bytes) -> list[str]:
    """Trie nodes from the root to ``key``, RLP-encoded. Nodes shorter than 32 bytes are
    embedded in their parent (not referenced by hash), so, as geth, they are not listed."""
    if trie.root_hash == EMPTY_ROOT:
        return []
    encoded = [rlp.encode(node) for node in trie.get_proof(key)]
    return [hexb(e) for i, e in enumerate(encoded) if i == 0 or len(e) >= 32]


# --- calls -------------------------------------------------------------------------------


def call_env(ctx: RPCContext, header: Header, ref: p.BlockRef) -> BlockEnv:
    """The block context of a call: that of the block itself, or for ``pending`` that of
    the next block on the head (its height, time and base fee)."""
    if ref.tag == "pending":
        head = ctx.store.head
        now_ms = max(int(time.time() * 1000), head.timestamp_ms + 1)
        return ctx.app.env_for(head.height + 1, now_ms, head.proposer, head)
    return BlockEnv(
        ctx.chain_id,
        header.height,
        header.timestamp_ms,
        header.proposer,
        header.gas_limit,
        header.base_fee_per_gas,
        header.parent_hash,
        ctx.store.recent_hashes(header.height),
    )


def _failure(result: CallResult) -> RPCError:
    """geth's answers: a revert is code 3 "execution reverted: <reason>" with the revert
    bytes as data; other failures -32000 with the EVM's error."""
    if result.reverted:
        return RPCError(EXECUTION_REVERTED, result.error or "execution reverted", hexb(result.output))
    return RPCError(INVALID_INPUT, result.error or "execution failed")


def _cannot_start(exc: CallError) -> RPCError:
    """A call refused before it runs, in geth's words (tools match on "intrinsic gas too
    low" and "insufficient funds"). No ``data``: web3.py takes any error of eth_call
    with data for a revert."""
    text = " ".join(str(exc).split())
    # py-evm's "Sender does not have enough balance to cover transaction value and gas";
    # not any text with "balance" in it (an overridden balance's uint256 overflow is not)
    if not isinstance(exc, IntrinsicGasTooLow | InsufficientFunds) and "enough balance" in text:
        return RPCError(INVALID_INPUT, f"insufficient funds for transfer: {text}")
    return RPCError(INVALID_INPUT, text)


OVERRIDES = Param("stateOverrides", p.state_overrides, None)


def _call_at(ctx: RPCContext, ref: p.BlockRef) -> tuple[Header, BlockEnv]:
    header = state_header(ctx, ref)
    return header, call_env(ctx, header, ref)


@methods.method("eth_call", Param("transaction", p.call_request), BLOCK, OVERRIDES, blocking=True)
def eth_call(ctx: RPCContext, req: p.CallRequest, ref: p.BlockRef,
             overrides: dict[bytes, AccountOverride] | None) -> str:
    """Run the call at the block (with the state overrides, never persisted); ``gas``
    defaults to, and is capped at, the block gas limit."""
    header, env = _call_at(ctx, ref)
    try:
        result = vm_call(ctx.store.state_db, header.state_root, env, sender=req.sender, to=req.to,
                         data=req.data, value=req.value, gas=req.gas,
                         access_list=req.access_list, overrides=overrides)
    except CallError as exc:
        raise _cannot_start(exc) from None
    if not result.success:
        raise _failure(result)
    return hexb(result.output)


@methods.method(
    "eth_estimateGas", Param("transaction", p.call_request), BLOCK, OVERRIDES, blocking=True
)
def estimate_gas(ctx: RPCContext, req: p.CallRequest, ref: p.BlockRef,
                 overrides: dict[bytes, AccountOverride] | None) -> str:
    """The smallest gas limit that succeeds, searched as geth does (vm.call.estimate_gas):
    between the intrinsic gas and the cap (block gas limit, ``gas``, and with a fee
    given what the balance pays)."""
    header, env = _call_at(ctx, ref)
    try:
        found = vm_estimate_gas(ctx.store.state_db, header.state_root, env, sender=req.sender,
                                to=req.to, data=req.data, value=req.value, gas=req.gas,
                                fee_cap=req.fee_cap, access_list=req.access_list,
                                overrides=overrides)
    except CallError as exc:
        raise _cannot_start(exc) from None
    if found.gas is None:
        if found.result is not None and found.result.reverted and not found.result.output:
            raise RPCError(INVALID_INPUT, "execution reverted")  # geth: no data, no code 3
        if found.result is not None:
            raise _failure(found.result)
        raise RPCError(INVALID_INPUT, f"gas required exceeds allowance ({found.cap})")
    return hexq(found.gas)


@methods.method(
    "eth_createAccessList", Param("transaction", p.call_request), Param("block", p.block_ref,
                                                                        p.BlockRef(tag="pending")),
    blocking=True,
)
def create_access_list(ctx: RPCContext, req: p.CallRequest, ref: p.BlockRef) -> dict[str, Any]:
    """geth's eth_createAccessList: the addresses and storage keys the call touches (less
    the sender, the recipient and the precompiles), found by re-running the call with the
    list until it is stable; ``gasUsed`` of the last run with that list, and ``error``
    when that run failed (a revert is reported there, not as an RPC error)."""
    header, env = _call_at(ctx, ref)
    gas = env.gas_limit if req.gas is None else min(req.gas, env.gas_limit)
    view = CallView(ctx.store.state_db, header.state_root, env)
    msg = Message(req.sender, req.to, req.data, req.value, req.access_list)
    try:
        found, result = view.access_list(msg, gas)
    except CallError as exc:
        raise _cannot_start(exc) from None
    out: dict[str, Any] = {
        "accessList": [
            {"address": hexb(a), "storageKeys": [hexb(k.to_bytes(32, "big")) for k in keys]}
            for a, keys in found
        ],
        "gasUsed": hexq(result.gas_used),
    }
    if not result.success:
        out["error"] = result.error
    return out


# --- fees -------------------------------------------------------------------------------


def _block_tips(ctx: RPCContext, block: Block) -> list[tuple[int, int]]:
    """(effective tip, gas used) of each transaction of a block."""
    base = block.header.base_fee_per_gas
    return [(e.effective_gas_price - base, e.gas_used) for e in ctx.store.tx_extras(block.hash)]


def suggested_tip(ctx: RPCContext) -> int:
    """The 60th percentile of tips paid in the last 20 blocks (DEFAULT_TIP if none),
    capped at MAX_TIP."""
    head = ctx.store.head_height
    tips: list[int] = []
    for height in range(head, max(-1, head - TIP_BLOCKS), -1):
        block = ctx.store.block_by_height(height)
        if block is not None and block.transactions:
            tips.extend(t for t, _ in _block_tips(ctx, block) if t >= MIN_COUNTED_TIP)
    if not tips:
        return DEFAULT_TIP
    tips.sort()
    return min(tips[(len(tips) - 1) * TIP_PERCENTILE // 100], MAX_TIP)


@methods.method("eth_gasPrice")
def gas_price(ctx: RPCContext) -> str:
    """Next block's base fee plus the suggested tip (what a legacy transaction should pay)."""
    return hexq(ctx.app.next_base_fee() + suggested_tip(ctx))


@methods.method("eth_maxPriorityFeePerGas")
def max_priority_fee(ctx: RPCContext) -> str:
    return hexq(suggested_tip(ctx))


def _reward_percentiles(
    tips: list[tuple[int, int]], gas_used: int, percentiles: list[float]
) -> list[str]:
    """Tips at the given percentiles of the block's gas, as geth computes them."""
    if not tips or gas_used == 0:
        return [hexq(0) for _ in percentiles]
    tips = sorted(tips)
    out = []
    index, cumulative = 0, tips[0][1]
    for pct in percentiles:
        threshold = gas_used * pct / 100
        while cumulative < threshold and index < len(tips) - 1:
            index += 1
            cumulative += tips[index][1]
        out.append(hexq(tips[index][0]))
    return out


@methods.method(
    "eth_feeHistory",
    Param("blockCount", p.count),
    Param("newestBlock", p.block_number),
    Param("rewardPercentiles", p.percentiles, None),
    blocking=True,
)
def fee_history(
    ctx: RPCContext, block_count: int, newest: p.BlockRef, percentiles: list[float] | None
) -> dict[str, Any]:
    """Base fees (one more than blocks: the next block's), gas used ratios and, if asked,
    tips at percentiles, for up to 1024 blocks ending at ``newestBlock``."""
    block_count = min(block_count, MAX_FEE_HISTORY_BLOCKS)
    newest_height = resolve_height(ctx, newest)
    if newest_height is None:
        raise not_found(f"header not found: block {newest.describe()}")
    if block_count == 0:
        return {"oldestBlock": hexq(0), "baseFeePerGas": [], "gasUsedRatio": []}
    oldest = max(0, newest_height - block_count + 1)
    base_fees, ratios, rewards = [], [], []
    for height in range(oldest, newest_height + 1):
        block = ctx.store.block_by_height(height)
        assert block is not None
        h = block.header
        base_fees.append(hexq(h.base_fee_per_gas))
        ratios.append(h.gas_used / h.gas_limit if h.gas_limit else 0.0)
        if percentiles is not None:
            rewards.append(_reward_percentiles(_block_tips(ctx, block), h.gas_used, percentiles))
    if newest_height >= ctx.store.head_height:
        base_fees.append(hexq(ctx.app.next_base_fee()))
    else:
        nxt = ctx.store.block_by_height(newest_height + 1)
        assert nxt is not None
        base_fees.append(hexq(nxt.header.base_fee_per_gas))
    out: dict[str, Any] = {
        "oldestBlock": hexq(oldest),
        "baseFeePerGas": base_fees,
        "gasUsedRatio": ratios,
    }
    if percentiles is not None:
        out["reward"] = rewards
    return out


# --- transactions -------------------------------------------------------------------------


@methods.method("eth_sendRawTransaction", Param("transaction", p.data))
def send_raw_transaction(ctx: RPCContext, raw: bytes) -> str:
    """Admit a signed transaction to the mempool. Refusals are ``-32000`` with geth's
    message (wallets and ethers classify errors by that text) and
    ``data: {"reason": <stable code>}``."""
    try:
        tx_hash = ctx.app.submit_transaction(raw, source=f"rpc:{ctx.client}")  # pools it, gossips it
    except TxRejected as exc:
        raise RPCError(INVALID_INPUT, exc.message, {"reason": exc.code}) from None
    return hexb(tx_hash)


def _located(ctx: RPCContext, tx_hash: bytes) -> tuple[Block, int] | None:
    loc = ctx.store.tx_location(tx_hash)
    if loc is None:
        return None
    block = ctx.store.block_by_height(loc[0])
    return None if block is None else (block, loc[1])


@methods.method("eth_getTransactionByHash", Param("hash", p.hash32))
def get_transaction_by_hash(ctx: RPCContext, tx_hash: bytes) -> dict[str, Any] | None:
    found = _located(ctx, tx_hash)
    if found is not None:
        block, index = found
        return _tx_in_block(ctx, block, index)
    pending = ctx.mempool.get(tx_hash)
    if pending is not None:
        return tx_json(pending.tx, sender=pending.sender, block_hash=None, height=None, index=None)
    return None


@methods.method("eth_getRawTransactionByHash", Param("hash", p.hash32))
def get_raw_transaction_by_hash(ctx: RPCContext, tx_hash: bytes) -> str | None:
    """The signed envelope of a mined or pending transaction; null when unknown (and for
    a block's system transaction, which has none)."""
    found = _located(ctx, tx_hash)
    if found is not None:
        block, index = found
        return hexb(block.transactions[index]) if index < len(block.transactions) else None
    pending = ctx.mempool.get(tx_hash)
    return None if pending is None else hexb(pending.raw)


def _tx_in_block(ctx: RPCContext, block: Block, index: int) -> dict[str, Any] | None:
    if index == len(block.transactions):
        events = ctx.store.block_events(block.hash)
        return system_tx_json(block, compute_block_events_tx_hash(block.hash)) if events else None
    if index > len(block.transactions):
        return None
    extra = ctx.store.tx_extras(block.hash)[index]
    return tx_json(
        decode_transaction(block.transactions[index]),
        sender=extra.sender,
        block_hash=block.hash,
        height=block.height,
        index=index,
        gas_price=extra.effective_gas_price,
    )


@methods.method("eth_getTransactionReceipt", Param("hash", p.hash32))
def get_transaction_receipt(ctx: RPCContext, tx_hash: bytes) -> dict[str, Any] | None:
    found = _located(ctx, tx_hash)
    if found is None:
        return None
    block, index = found
    if index == len(block.transactions):
        return _system_receipt(ctx, block)
    tx = decode_transaction(block.transactions[index])
    return receipt_json(
        block.header, ctx.store.receipts(block.hash), ctx.store.tx_extras(block.hash), tx, index
    )


def _system_receipt(ctx: RPCContext, block: Block) -> dict[str, Any] | None:
    """The receipt of the block's system transaction: its block events as logs."""
    events = ctx.store.block_events(block.hash)
    if not events:
        return None
    receipts = ctx.store.receipts(block.hash) if block.transactions else []
    first = sum(len(r.logs) for r in receipts)
    logs = block_event_logs(block, events, first, ANY_LOG)
    return system_receipt_json(block, compute_block_events_tx_hash(block.hash), events, logs)


@methods.method("eth_getBlockReceipts", Param("block", p.block_ref))
def get_block_receipts(ctx: RPCContext, ref: p.BlockRef) -> list[dict[str, Any]] | None:
    """The block's receipts, then its system transaction's when it has block events."""
    block = resolve_block(ctx, ref)
    if block is None:
        return None
    receipts, extras = ctx.store.receipts(block.hash), ctx.store.tx_extras(block.hash)
    out = [
        receipt_json(block.header, receipts, extras, decode_transaction(raw), i)
        for i, raw in enumerate(block.transactions)
    ]
    system = _system_receipt(ctx, block)
    if system is not None:
        out.append(system)
    return out


# --- blocks -----------------------------------------------------------------------------


def _block(ctx: RPCContext, block: Block | None, full: bool) -> dict[str, Any] | None:
    return None if block is None else block_json(block, ctx.store.tx_extras(block.hash), full=full)


@methods.method(
    "eth_getBlockByNumber", Param("block", p.block_number), Param("full", p.boolean, False)
)
def get_block_by_number(ctx: RPCContext, ref: p.BlockRef, full: bool) -> dict[str, Any] | None:
    return _block(ctx, resolve_block(ctx, ref), full)


@methods.method("eth_getBlockByHash", Param("hash", p.hash32), Param("full", p.boolean, False))
def get_block_by_hash(ctx: RPCContext, block_hash: bytes, full: bool) -> dict[str, Any] | None:
    return _block(ctx, ctx.store.block_by_hash(block_hash), full)


@methods.method("eth_getBlockTransactionCountByNumber", Param("block", p.block_number))
def tx_count_by_number(ctx: RPCContext, ref: p.BlockRef) -> str | None:
    block = resolve_block(ctx, ref)
    return None if block is None else hexq(len(block.transactions))


@methods.method("eth_getBlockTransactionCountByHash", Param("hash", p.hash32))
def tx_count_by_hash(ctx: RPCContext, block_hash: bytes) -> str | None:
    block = ctx.store.block_by_hash(block_hash)
    return None if block is None else hexq(len(block.transactions))


@methods.method(
    "eth_getTransactionByBlockNumberAndIndex",
    Param("block", p.block_number),
    Param("index", p.quantity),
)
def tx_by_number_and_index(ctx: RPCContext, ref: p.BlockRef, index: int) -> dict[str, Any] | None:
    block = resolve_block(ctx, ref)
    return None if block is None else _tx_in_block(ctx, block, index)


@methods.method(
    "eth_getTransactionByBlockHashAndIndex", Param("hash", p.hash32), Param("index", p.quantity)
)
def tx_by_hash_and_index(ctx: RPCContext, block_hash: bytes, index: int) -> dict[str, Any] | None:
    block = ctx.store.block_by_hash(block_hash)
    return None if block is None else _tx_in_block(ctx, block, index)


@methods.method("eth_getUncleCountByBlockNumber", Param("block", p.block_number))
def uncle_count(ctx: RPCContext, ref: p.BlockRef) -> str | None:
    return None if resolve_block(ctx, ref) is None else "0x0"


# --- logs -------------------------------------------------------------------------------


def bloom_may_match(bloom_bytes: bytes, flt: p.LogFilter) -> bool:
    """False only when the block's logs bloom proves no log can match the filter."""
    bloom = BloomFilter(int.from_bytes(bloom_bytes, "big"))
    if flt.addresses and not any(a in bloom for a in flt.addresses):
        return False
    return all(want is None or any(t in bloom for t in want) for want in flt.topics)


def logs_of_block(ctx: RPCContext, block: Block, flt: p.LogFilter) -> list[dict[str, Any]]:
    """The block's logs matching the filter: its receipts' logs, then its block events
    (docs/rpc.md, "Block events"), which the header's logs bloom does not cover."""
    bloom_ok = bool(block.transactions) and bloom_may_match(block.header.logs_bloom, flt)
    return logs_at(ctx, block.hash, block.height, flt, receipts=bloom_ok)


def logs_at(
    ctx: RPCContext, block_hash: bytes, height: int, flt: p.LogFilter, *, receipts: bool = True
) -> list[dict[str, Any]]:
    """``logs_of_block`` from the stored receipts and events of the block, without
    decoding the block (its transaction count is its receipt count). ``receipts=False``
    when the bloom ruled out the receipts' logs: only block events are then matched,
    their ``logIndex`` still counting the receipts' logs."""
    store = ctx.store
    events = store.block_events(block_hash)
    if not receipts and not events:
        return []
    per_receipt = receipts_logs(store.raw_receipts(block_hash))
    out: list[dict[str, Any]] = []
    log_index = 0
    tx_hashes: list[bytes] | None = None
    matches = flt.matches
    for tx_index, logs in enumerate(per_receipt):
        if not receipts:
            log_index += len(logs)
            continue
        for address, topics, data in logs:
            if matches(address, topics):
                if tx_hashes is None:
                    tx_hashes = tx_hashes_of_extras(store.raw_tx_extras(block_hash))
                out.append(log_parts_json(address, topics, data, block_hash=block_hash,
                                          height=height, tx_hash=tx_hashes[tx_index],
                                          tx_index=tx_index, log_index=log_index))
            log_index += 1
    if events:
        tx_hash = compute_block_events_tx_hash(block_hash)
        out.extend(
            log_parts_json(ev.address, list(ev.topics), ev.data, block_hash=block_hash,
                           height=height, tx_hash=tx_hash, tx_index=len(per_receipt),
                           log_index=log_index + i)
            for i, ev in enumerate(events)
            if matches(ev.address, list(ev.topics))
        )
    return out


def block_event_logs(
    block: Block, events: list[BlockEvent], first_log_index: int, flt: p.LogFilter
) -> list[dict[str, Any]]:
    """Block events as ``eth_getLogs`` entries: ``transactionHash`` is
    ``keccak(b"motus:block-events" + blockHash)``, ``transactionIndex`` the block's
    transaction count, ``logIndex`` continues after the receipts' logs."""
    tx_hash = compute_block_events_tx_hash(block.hash)
    return [
        log_json(ev, block_hash=block.hash, height=block.height, tx_hash=tx_hash,
                 tx_index=len(block.transactions), log_index=first_log_index + i)
        for i, ev in enumerate(events)
        if flt.matches(ev.address, list(ev.topics))
    ]


def heights_to_read(
    ctx: RPCContext, flt: p.LogFilter, start: int, end: int, covered: int | None
) -> Iterator[int]:
    """Ascending heights in ``[start, end]`` whose blocks may hold a matching log: every
    one below ``covered``, the log index's coverage (docs/storage.md, "Log index"), and
    from it up only those the index names."""
    if covered is None:
        covered = end + 1
    yield from range(start, min(end, covered - 1) + 1)
    yield from ctx.store.log_index.candidate_heights(
        flt.addresses, flt.topics, max(start, covered), end)


@methods.method("eth_getLogs", Param("filter", p.log_filter), blocking=True)
def get_logs(ctx: RPCContext, flt: p.LogFilter) -> list[dict[str, Any]]:
    """Logs matching the filter, bounded by ``rpc.max_log_blocks`` (range) and
    ``rpc.max_log_results`` (answer size): beyond either, ``-32005`` asks for a
    narrower query instead of a truncated answer."""
    cfg = ctx.node.config.rpc
    if flt.block_hash is not None:
        block = ctx.store.block_by_hash(flt.block_hash)
        if block is None:
            raise not_found(f"unknown block 0x{flt.block_hash.hex()}")
        logs = logs_of_block(ctx, block, flt)
        if len(logs) > cfg.max_log_results:
            raise limit_exceeded(f"query returned more than {cfg.max_log_results} results",
                                 reason="too_many_results")
        return logs
    head = ctx.store.head_height
    start = resolve_height(ctx, flt.from_block)
    end = resolve_height(ctx, flt.to_block)
    if start is None:  # starts after the head: nothing yet
        return []
    end = head if end is None else end
    if start > end:
        raise RPCError(
            INVALID_PARAMS,
            f"invalid block range: fromBlock {hexq(start)} is after toBlock {hexq(end)}",
        )
    if end - start + 1 > cfg.max_log_blocks:
        raise limit_exceeded(
            f"block range of {end - start + 1} blocks exceeds max_log_blocks "
            f"{cfg.max_log_blocks}; query a smaller range",
            reason="block_range_too_large",
        )
    out: list[dict[str, Any]] = []
    covered = ctx.store.log_index.indexed_from()
    for height in heights_to_read(ctx, flt, start, end, covered):
        if covered is not None and height >= covered:
            # named by the index: read without decoding the block
            block_hash = ctx.store.hash_at(height)
            if block_hash is None:
                break
            out.extend(logs_at(ctx, block_hash, height, flt))
        else:
            block = ctx.store.block_by_height(height)
            if block is None:
                break
            out.extend(logs_of_block(ctx, block, flt))
        if len(out) > cfg.max_log_results:
            raise limit_exceeded(
                f"query returned more than {cfg.max_log_results} results; "
                "narrow the block range or the filter",
                reason="too_many_results",
            )
    return out


def register(table: MethodTable) -> None:
    table.include(methods)
