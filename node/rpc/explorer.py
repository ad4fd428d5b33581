"""The ``motus_explorer*`` methods: one call per explorer page (docs/explorer.md), each
an aggregate of what the page shows, read from the state after the head block, the
store, and the explorer indexes (``node.explorer_index``, docs/storage.md).

Every method is bounded: lists are capped (constants below, documented in docs/rpc.md,
"Explorer methods"), so one call costs at most a fixed number of reads whatever the
chain's size. Amounts are decimal strings, heights and counts JSON numbers, addresses
lower-case 0x-hex, as in the other ``motus_`` methods.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import h3
from eth_abi import decode as abi_decode
from eth_hash.auto import keccak
from eth_utils import function_abi_to_4byte_selector

from node import explorer_index
from node.rpc import params as p
from node.rpc.errors import invalid_params
from node.rpc.eth import get_transaction_by_hash, get_transaction_receipt, resolve_block
from node.rpc.ethjson import hexb
from node.rpc.governance import proposal_json
from node.rpc.identity import get_vehicle, parse_vehicle_id, permissions_json, state_for
from node.rpc.registry import MethodTable, Param, RPCContext
from node.rpc.rewards import epoch_json
from node.rpc.telemetry import attestation_json
from vm.epoch import get_epoch
from vm.modules import addresses, identity, rewards, telemetry, validators
from vm.modules import governance as gov
from vm.modules.base import shipped_abi
from vm.modules.params import get_all_params
from vm.scoring import compute_epoch_pool
from vm.state import decode_transaction

methods = MethodTable()

LATEST = p.LATEST
HOME_BLOCKS = 15  # latest blocks on the home page
HOME_TXS = 15  # latest transactions on the home page
HOME_TX_SCAN = 200  # blocks scanned back for them
REFUSALS = 25  # recent refusals shown
REFUSAL_SCAN = 20_000  # pool history entries scanned back for them
ADDRESS_TXS = 50  # transactions listed on an address page
MAX_EPOCHS = 48  # epochs in a chart or on the coverage map
MAX_CELLS = 5_000  # cells the coverage map draws
MAX_GRID_BLOCKS = 100  # blocks in the validators' signing grid
MAX_PROPOSALS = 50  # proposals on the governance page (newest first)
ISSUANCE_POINTS = 60  # points of the issuance chart
SCHEDULE_PERIODS = 10  # decay periods of the issuance schedule chart
VOTE_SCAN = 200  # newest proposals looked at for an address's votes

MODULE_NAMES = {addr: name for name, addr in addresses.ALL.items()}


# --- ABI decoding --------------------------------------------------------------------


@cache
def _abis() -> dict[bytes, list[dict[str, Any]]]:
    out = {}
    for name, addr in addresses.ALL.items():
        abi = shipped_abi(name)
        if abi is not None:
            out[bytes(addr)] = abi
    return out


def _types(inputs: list[dict[str, Any]]) -> list[str]:
    def one(item: dict[str, Any]) -> str:
        t = item["type"]
        if t.startswith("tuple"):
            return "(" + ",".join(one(c) for c in item["components"]) + ")" + t[5:]
        return t

    return [one(i) for i in inputs]


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return hexb(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


@cache
def _functions() -> dict[tuple[bytes, bytes], dict[str, Any]]:
    return {(addr, function_abi_to_4byte_selector(item)): item
            for addr, abi in _abis().items() for item in abi if item.get("type") == "function"}


@cache
def _events() -> dict[tuple[bytes, bytes], dict[str, Any]]:
    out = {}
    for addr, abi in _abis().items():
        for item in abi:
            if item.get("type") == "event":
                sig = f"{item['name']}({','.join(_types(item['inputs']))})"
                out[(addr, keccak(sig.encode()))] = item
    return out


def decode_call(to: bytes | None, data: bytes) -> dict[str, Any] | None:
    """A call to a system module decoded with its shipped ABI: ``{module, function,
    args: [{name, type, value}]}``; None for other calls or undecodable input."""
    if to is None or to not in _abis() or len(data) < 4:
        return None
    item = _functions().get((to, data[:4]))
    if item is None:
        return {"module": MODULE_NAMES[to], "function": None, "selector": hexb(data[:4]), "args": []}
    try:
        values = abi_decode(_types(item["inputs"]), data[4:])
    except Exception:  # bad calldata is the sender's problem: show it undecoded
        return {"module": MODULE_NAMES[to], "function": item["name"], "args": [], "error": "undecodable"}
    return {"module": MODULE_NAMES[to], "function": item["name"],
            "args": [{"name": i.get("name", ""), "type": t, "value": _json_value(v)}
                     for i, t, v in zip(item["inputs"], _types(item["inputs"]), values, strict=True)]}


def decode_log(address: bytes, topics: list[bytes], data: bytes) -> dict[str, Any] | None:
    """A system module's event decoded with its ABI: ``{module, event, args}``."""
    if not topics:
        return None
    item = _events().get((address, topics[0]))
    if item is None:
        return None
    indexed = [i for i in item["inputs"] if i.get("indexed")]
    plain = [i for i in item["inputs"] if not i.get("indexed")]
    try:
        values = list(abi_decode(_types(plain), data))
        topic_values = [abi_decode([t], topic)[0] for t, topic in
                        zip(_types(indexed), topics[1:], strict=False)]
    except Exception:
        return {"module": MODULE_NAMES[address], "event": item["name"], "args": [], "error": "undecodable"}
    args = []
    for i in item["inputs"]:
        v = topic_values.pop(0) if i.get("indexed") else values.pop(0)
        args.append({"name": i.get("name", ""), "value": _json_value(v)})
    return {"module": MODULE_NAMES[address], "event": item["name"], "args": args}


def _log_json(log: dict[str, Any]) -> dict[str, Any]:
    topics = [bytes.fromhex(t[2:]) for t in log["topics"]]
    address = bytes.fromhex(log["address"][2:])
    return {**log, "decoded": decode_log(address, topics, bytes.fromhex(log["data"][2:]))}


# --- pages ---------------------------------------------------------------------------


def _block_row(block: Any) -> dict[str, Any]:
    h = block.header
    return {"number": h.height, "hash": hexb(block.hash), "timestamp": h.timestamp_ms // 1000,
            "proposer": hexb(h.proposer), "transactions": len(block.transactions),
            "attestations": len(block.attestations), "evidence": len(block.evidence),
            "gasUsed": h.gas_used}


def _tx_row(ctx: RPCContext, block: Any, index: int, extra: Any, status: int | None) -> dict[str, Any]:
    tx = decode_transaction(block.transactions[index])
    to = bytes(tx.to) if tx.to else None
    call = decode_call(to, bytes(tx.data))
    return {"hash": hexb(extra.tx_hash), "blockNumber": block.height, "index": index,
            "from": hexb(extra.sender), "to": hexb(to) if to else None,
            "toModule": MODULE_NAMES.get(to) if to else None,
            "value": str(tx.value), "method": call["function"] if call else None,
            "status": status}


def _statuses(ctx: RPCContext, block: Any) -> list[int | None]:
    receipts = ctx.store.receipts(block.hash)
    return [getattr(r, "state_root", None) == b"\x01" if r is not None else None
            for r in receipts]


def _tx_rows(ctx: RPCContext, block: Any) -> list[dict[str, Any]]:
    extras = ctx.store.tx_extras(block.hash)
    statuses = _statuses(ctx, block)
    return [_tx_row(ctx, block, i, e, int(statuses[i]) if i < len(statuses) else None)
            for i, e in enumerate(extras)]


def recent_refusals(ctx: RPCContext, limit: int = REFUSALS) -> list[dict[str, str]]:
    """The newest attestations this node refused (id and reject code), from its pool's
    bounded history: refusals are not on chain, so another node may show others."""
    pool = ctx.node.attestations.pool
    out: list[dict[str, str]] = []
    for att_id, code in pool.recent_rejections(limit, REFUSAL_SCAN):
        out.append({"id": hexb(att_id), "code": code, "reason": telemetry.reject_reason(code)})
    return out


@methods.method("motus_explorerHome")
def explorer_home(ctx: RPCContext) -> dict[str, Any]:
    """The front page: head, current epoch, latest blocks and transactions, recent
    refusals with their codes and the refusal counters."""
    store = ctx.store
    head = store.head_height
    blocks = []
    txs: list[dict[str, Any]] = []
    for height in range(head, max(-1, head - HOME_TX_SCAN), -1):
        block_hash = store.hash_at(height)
        if block_hash is None:
            break
        wanted = len(blocks) < HOME_BLOCKS
        # past the newest blocks, only blocks with transactions are decoded (their
        # extras record is small; a block of attestations is not)
        if not wanted and not store.tx_extras(block_hash):
            continue
        block = store.block_by_hash(block_hash)
        if block is None:
            break
        if wanted:
            blocks.append(_block_row(block))
        if len(txs) < HOME_TXS and block.transactions:
            txs += list(reversed(_tx_rows(ctx, block)))[: HOME_TXS - len(txs)]
        if len(blocks) >= HOME_BLOCKS and len(txs) >= HOME_TXS:
            break
    state = ctx.app.head_state()
    return {
        "chainId": ctx.chain_id,
        "head": head,
        "epoch": epoch_json(state, get_epoch(state), head),
        "blocks": blocks,
        "transactions": txs,
        "refusals": recent_refusals(ctx),
        "rejectCounts": ctx.node.attestations.pool.counters.snapshot(),
        "validators": len(validators.active_validators(state)),
        "vehicles": identity.total_supply(state),
    }


def _evidence_json(ev: Any, height: int | None = None) -> dict[str, Any]:
    a, b = ev.vote_a, ev.vote_b
    return {"hash": hexb(ev.hash()), "validator": hexb(a.validator), "height": a.height,
            "round": a.round, "type": a.type, "blockA": hexb(a.block_hash), "blockB": hexb(b.block_hash),
            "committedAt": height}


@methods.method("motus_explorerBlock", Param("block", p.block_ref))
def explorer_block(ctx: RPCContext, ref: p.BlockRef) -> dict[str, Any] | None:
    """A block page: header, commit signers, transactions (system calls decoded),
    attestations, evidence and the block's events (decoded); null when unknown."""
    block = resolve_block(ctx, ref)
    if block is None:
        return None
    h = block.header
    commit = ctx.store.commit_at(h.height)
    events = []
    for ev in ctx.store.block_events(block.hash):
        topics = [bytes(t) for t in ev.topics]
        events.append({"address": hexb(ev.address), "topics": [hexb(t) for t in topics],
                       "data": hexb(ev.data), "decoded": decode_log(bytes(ev.address), topics, bytes(ev.data))})
    return {
        **_block_row(block),
        "parentHash": hexb(h.parent_hash), "stateRoot": hexb(h.state_root),
        "gasLimit": h.gas_limit, "baseFeePerGas": str(h.base_fee_per_gas),
        "signers": [hexb(s.validator) for s in commit.signatures] if commit else [],
        "round": commit.round if commit else None,
        "txs": _tx_rows(ctx, block),
        "attestationList": [attestation_json(raw, h.height) for raw in block.attestations],
        "evidenceList": [_evidence_json(ev, h.height) for ev in block.evidence],
        "events": events,
        "head": ctx.store.head_height,
    }


@methods.method("motus_explorerTx", Param("hash", p.hash32))
def explorer_tx(ctx: RPCContext, tx_hash: bytes) -> dict[str, Any] | None:
    """A transaction page: the transaction, its receipt, the call decoded when it goes to
    a system module, and its logs decoded; null when unknown. The revert reason of a
    failed call is asked separately (``debug_traceTransaction``, docs/explorer.md)."""
    tx = get_transaction_by_hash(ctx, tx_hash)
    if tx is None:
        return None
    receipt = get_transaction_receipt(ctx, tx_hash)
    to = bytes.fromhex(tx["to"][2:]) if tx.get("to") else None
    data = bytes.fromhex((tx.get("input") or "0x")[2:])
    return {"transaction": tx, "receipt": receipt,
            "call": decode_call(to, data), "toModule": MODULE_NAMES.get(to) if to else None,
            "logs": [_log_json(log) for log in (receipt or {}).get("logs", [])]}


@methods.method("motus_explorerAddress", Param("address", p.address))
def explorer_address(ctx: RPCContext, address: bytes) -> dict[str, Any]:
    """An address page: balance, nonce, code, vehicles held, governance lock and votes
    (among the newest proposals) and its newest transactions (explorer index)."""
    header, state = state_for(ctx, LATEST)
    lock = gov.get_lock(state, address)
    votes = []
    count = gov.proposal_count(state)
    for pid in range(count, max(0, count - VOTE_SCAN), -1):
        vote = gov.get_vote(state, pid, address)
        if vote is not None and vote.option:
            votes.append({"proposal": pid, "option": vote.option_name, "weight": str(vote.weight)})
    txs = []
    for height, index, _tx_hash in explorer_index.address_transactions(ctx.store.db, address, ADDRESS_TXS):
        block = ctx.store.block_by_height(height)
        if block is None or index >= len(block.transactions):
            continue
        extra = ctx.store.tx_extras(block.hash)[index]
        txs.append(_tx_row(ctx, block, index, extra, None))
    vids = identity.vehicles_of(state, address)
    return {
        "address": hexb(address),
        "module": MODULE_NAMES.get(address),
        "balance": str(state.get_balance(address)),
        "nonce": state.get_nonce(address),
        "isContract": bool(state.get_code(address)),
        "vehicles": [get_vehicle(ctx, vid, LATEST) for vid in vids[:100]],
        "locked": str(lock.locked), "pendingUnlock": str(lock.pending_unlock),
        "releaseBlock": lock.release_block or None,
        "votingPower": str(gov.voting_power(state, address)),
        "votes": votes,
        "transactions": txs,
        "blockNumber": header.height,
    }


def _epochs_param(value: Any) -> int:
    n = p.natural(value, "a number of epochs", MAX_EPOCHS)
    if n < 1:
        raise p.ParamError("at least one epoch")
    return n


EPOCHS = Param("epochs", _epochs_param, 12)


@methods.method("motus_explorerVehicle", Param("vehicleId", parse_vehicle_id), EPOCHS, blocking=True)
def explorer_vehicle(ctx: RPCContext, vid: int, epochs: int) -> dict[str, Any] | None:
    """A vehicle page: the vehicle, its paired device, permissions with expiry, and per
    epoch (the last ``epochs``, the running one included) accepted attestations, points
    and reward, plus its streak; null when no such vehicle."""
    header = ctx.store.head
    state = ctx.app.state_at(header)  # a private view: this runs in a worker thread
    vehicle = identity.get_vehicle(state, vid)
    if vehicle is None:
        return None
    current = get_epoch(state)
    settled = rewards.processed_epochs(state)  # an ended epoch may still be settling
    series = []
    for e in range(max(0, current - epochs + 1), current + 1):
        stats = telemetry.get_vehicle_epoch(state, e, vid)
        reward = rewards.get_vehicle_reward(state, e, vid) if e < settled else None
        series.append({"epoch": e, "accepted": stats.accepted, "moving": stats.moving,
                       "challenged": stats.challenged, "challengePassed": stats.challenge_passed,
                       "points": reward.points if reward else None,
                       "reward": str(reward.reward) if reward else None,
                       "qualified": reward.qualified if reward else None,
                       "settled": e < settled})
    streak = rewards.get_streak(state, vid)
    device = None
    if vehicle.device != b"\x00" * 20:
        record = identity.get_device(state, vehicle.device)
        device = {"address": hexb(vehicle.device),
                  "tokenId": record.token_id if record else None,
                  "manufacturer": hexb(record.manufacturer) if record else None}
    return {
        "id": vid, "owner": hexb(vehicle.owner), "make": vehicle.make, "model": vehicle.model,
        "year": vehicle.year, "vinHash": hexb(vehicle.vin_hash), "device": device,
        "permissions": permissions_json(state, vid, header.timestamp_ms // 1000),
        "epochs": series, "currentEpoch": current,
        "streak": {"count": streak.count, "level": streak.level, "missed": streak.missed},
        "totalReward": str(sum(int(s["reward"] or 0) for s in series)),
        "blockNumber": header.height,
    }


@methods.method("motus_explorerCoverage", EPOCHS, blocking=True)
def explorer_coverage(ctx: RPCContext, epochs: int) -> dict[str, Any]:
    """The coverage map: every public H3 cell with accepted attestations in the last
    ``epochs`` epochs (the running one included), with its boundary (lat, lng pairs from
    ``h3``) and its count per epoch; at most MAX_CELLS cells, the busiest kept."""
    header = ctx.store.head
    state = ctx.app.state_at(header)  # a private view: this runs in a worker thread
    current = get_epoch(state)
    first = max(0, current - epochs + 1)
    cells: dict[int, dict[int, int]] = {}
    for e in range(first, current + 1):
        for cell, n in explorer_index.cell_counts(ctx.store.db, e):
            cells.setdefault(cell, {})[e] = n
    ranked = sorted(cells.items(), key=lambda kv: -sum(kv[1].values()))
    out = []
    for cell, per in ranked[:MAX_CELLS]:
        index = h3.int_to_str(cell)
        out.append({"cell": index, "resolution": h3.get_resolution(index),
                    "boundary": [list(pt) for pt in h3.cell_to_boundary(index)],
                    "total": sum(per.values()), "current": per.get(current, 0),
                    "perEpoch": {str(e): n for e, n in sorted(per.items())}})
    return {"fromEpoch": first, "toEpoch": current, "cells": out, "truncated": len(ranked) > MAX_CELLS,
            "resolution": get_all_params(state).get("h3_resolution"), "blockNumber": header.height}


@methods.method("motus_explorerGovernance")
def explorer_governance(ctx: RPCContext) -> dict[str, Any]:
    """The governance page: the newest proposals with their tallies and what they need
    (quorum, threshold, veto in basis points of the locked supply / non-abstain votes),
    the parameter changes executed (the parameter history), and the issuance per epoch:
    the scheduled pool with its decay, and what was minted."""
    header, state = state_for(ctx, LATEST)
    params = get_all_params(state)
    count = gov.proposal_count(state)
    props = []
    history = []
    for pid in range(count, 0, -1):
        prop = gov.get_proposal(state, pid)
        if prop is None:
            continue
        if len(props) < MAX_PROPOSALS:
            props.append(proposal_json(prop, state))
        if prop.status == "executed" and prop.kind == "param":
            history.append({"proposal": pid, "param": prop.name, "value": str(prop.value),
                            "executedAt": prop.executed_at})
        if len(props) >= MAX_PROPOSALS and pid < count - 10 * MAX_PROPOSALS:
            break
    period = max(1, params["decay_period_epochs"])
    current = get_epoch(state)
    step = max(1, (current + 1) // ISSUANCE_POINTS) if current >= ISSUANCE_POINTS else 1
    issuance = []
    settled = rewards.processed_epochs(state)
    for e in range(0, current + 1, step):
        minted = str(rewards.get_epoch_result(state, e).minted) if e < settled else None
        issuance.append({"epoch": e, "scheduled": str(compute_epoch_pool(params, e)), "minted": minted})
    return {
        "proposals": props,
        "totalLocked": str(gov.total_locked(state)),
        "quorumBps": params["gov_quorum_bps"], "thresholdBps": params["gov_threshold_bps"],
        "criticalThresholdBps": params["gov_critical_threshold_bps"], "vetoBps": params["gov_veto_bps"],
        "history": history,
        "params": {k: str(v) for k, v in params.items()},
        "issuance": issuance, "decayBps": params["decay_bps"],
        "schedule": [{"epoch": k * period, "pool": str(compute_epoch_pool(params, k * period))}
                     for k in range(SCHEDULE_PERIODS + 1)],
        "decayPeriodEpochs": params["decay_period_epochs"],
        "currentEpoch": current, "blockNumber": header.height,
    }


def _blocks_param(value: Any) -> int:
    n = p.natural(value, "a number of blocks", MAX_GRID_BLOCKS)
    if n < 1:
        raise p.ParamError("at least one block")
    return n


@methods.method("motus_explorerValidators", Param("blocks", _blocks_param, 50), blocking=True)
def explorer_validators(ctx: RPCContext, blocks: int) -> dict[str, Any]:
    """The validators page: every validator with power and jail flag, the signing grid
    of the last ``blocks`` commits (who signed each), and the evidence they carried."""
    store = ctx.store
    header = store.head
    state = ctx.app.state_at(header)  # a private view: this runs in a worker thread
    head = header.height
    vs = store.validators_for(head + 1)
    priorities = vs.priorities if vs is not None else {}
    grid = []
    evidence = []
    for height in range(head, max(0, head - blocks), -1):
        commit = store.commit_at(height)
        block = store.block_by_height(height)
        grid.append({"height": height,
                     "proposer": hexb(block.header.proposer) if block else None,
                     "signed": [hexb(s.validator) for s in commit.signatures] if commit else []})
        if block is not None:
            evidence += [_evidence_json(ev, height) for ev in block.evidence]
    return {
        "validators": [{"address": hexb(a), "power": power, "jailed": jailed,
                        "proposerPriority": priorities.get(a, 0)}
                       for a, power, jailed in validators.all_validators(state)],
        "grid": grid, "evidence": evidence, "head": head,
    }


def _is_number(q: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²" and other digits int() refuses."""
    return q.isascii() and q.isdigit()


@methods.method("motus_explorerSearch", Param("query", p.any_value))
def explorer_search(ctx: RPCContext, query: Any) -> dict[str, Any]:
    """Where a search leads: ``{kind, value}`` with kind block (number or hash),
    transaction, attestation, address, vehicle (id or VIN hash: ``vin:0x...`` or a hash
    known as one), or none."""
    if not isinstance(query, str) or len(query) > 200:
        raise invalid_params("invalid argument 0 (query): expected a string of at most 200 characters")
    q = query.strip().lower()
    if q.startswith("vehicle:") or q.startswith("v:"):
        q = q.split(":", 1)[1].strip()
        if _is_number(q):
            return {"kind": "vehicle", "value": int(q)}
    if q.startswith("vin:"):
        q = q[4:].strip()
    if _is_number(q) and len(q) < 20:
        return {"kind": "block", "value": int(q)}
    if q.startswith("0x") and len(q) == 42:
        try:
            bytes.fromhex(q[2:])
        except ValueError:
            return {"kind": "none", "value": query}
        return {"kind": "address", "value": q}
    if len(q) == 66 and q.startswith("0x"):
        try:
            raw = bytes.fromhex(q[2:])
        except ValueError:
            return {"kind": "none", "value": query}
        if ctx.store.db.get(b"b" + raw) is not None:
            return {"kind": "block", "value": q}
        if ctx.store.tx_location(raw) is not None or ctx.mempool.get(raw) is not None:
            return {"kind": "transaction", "value": q}
        state = ctx.app.head_state()
        vid = identity.vehicle_by_vin(state, raw)
        if vid:
            return {"kind": "vehicle", "value": vid}
        if ctx.node.attestations.status(raw) is not None:
            return {"kind": "attestation", "value": q}
    return {"kind": "none", "value": query}


@methods.method("motus_explorerAttestation", Param("id", p.hash32))
def explorer_attestation(ctx: RPCContext, att_id: bytes) -> dict[str, Any] | None:
    """An attestation page: its status on this node (pending, included with its decoded
    fields, or rejected with its code and reason); null when never seen."""
    found = ctx.node.attestations.status(att_id)
    if found is None:
        return None
    out: dict[str, Any] = {"id": hexb(att_id), "status": found.status, "height": found.height,
                           "code": found.code,
                           "reason": telemetry.reject_reason(found.code) if found.code else None}
    where = ctx.store.attestation_location(att_id)
    if where is not None:
        block = ctx.store.block_by_height(where[0])
        if block is not None and where[1] < len(block.attestations):
            out["attestation"] = attestation_json(block.attestations[where[1]], where[0])
    return out


def register(table: MethodTable) -> None:
    table.include(methods)
