"""The governance methods of the ``motus_`` namespace: chain parameters with their
bounds, proposals, and an account's voting power, read with ``vm.modules.governance``
and ``vm.params`` on the state after the requested block (docs/rpc.md, "Methods: motus
rewards and governance"; the rules are in docs/governance.md).

Conventions as for the identity methods: ids, heights and counts are JSON numbers;
token amounts, votes and parameter values are decimal strings (parameters such as
``epoch_issuance`` exceed 2^53); addresses are lower-case 0x-hex.
"""

from __future__ import annotations

from typing import Any

from node.rpc import params as p
from node.rpc.eth import resolve_header
from node.rpc.ethjson import hexb
from node.rpc.identity import BLOCK, state_for
from node.rpc.registry import MethodTable, Param, RPCContext
from vm.epoch import get_epoch_start
from vm.modules import addresses
from vm.modules import governance as gov
from vm.modules.base import Store
from vm.modules.params import get_all_params, get_param
from vm.params import PARAMS

methods = MethodTable()

MAX_LIST = 100  # proposals per motus_listProposals call
MAX_SCAN = 10_000  # ids one motus_listProposals call looks at (a status filter may skip many)


def parse_proposal_id(value: Any) -> int:
    """A proposal id: a positive JSON integer, decimal string or hex quantity."""
    pid = p.natural(value, "a proposal id", p.UINT64_MAX)
    if pid == 0:
        raise p.ParamError("proposal ids start at 1")
    return pid


def parse_status(value: Any) -> str:
    """A proposal status name (docs/governance.md, "Status values")."""
    names = list(gov.STATUS_NAMES.values())
    if value not in names:
        raise p.ParamError(f"expected a status ({', '.join(names)}), got {p.show(value)}")
    return str(value)


def parse_limit(value: Any) -> int:
    n = p.natural(value, "a limit", p.UINT64_MAX)
    if not 1 <= n <= MAX_LIST:
        raise p.ParamError(f"limit must be within 1..{MAX_LIST}, got {n}")
    return n


def _or_null(value: int) -> int | None:
    return value or None


def change_json(prop: gov.Proposal) -> dict[str, Any]:
    """What the proposal would change, in the terms of its kind."""
    if prop.kind == "param":
        return {"param": prop.name, "value": str(prop.value)}
    if prop.kind == "manufacturer":
        return {"manufacturer": hexb(prop.target), "licensed": prop.flag, "name": prop.name}
    if prop.kind == "deny":
        return {"device": hexb(prop.target), "denied": prop.flag}
    return {"validator": hexb(prop.target), "power": prop.value}


def compute_effective_at(state: Any, prop: gov.Proposal) -> int | None:
    """The block at which the proposal's change takes effect: the first epoch boundary at
    or after ``executableAt`` (for a proposal still voting: after its voting end plus
    the execution delay, should it pass), with the epoch length as it stands at this
    block; None once it is executed, rejected or failed. A passed change of the epoch
    length that applies earlier moves the boundaries, and so this prediction."""
    if prop.status == "passed":
        target = prop.executable_at
    elif prop.status == "voting":
        target = prop.voting_end_block + get_param(state, "gov_execution_delay_blocks")
    else:
        return None
    start, length = get_epoch_start(state), get_param(state, "epoch_length_blocks")
    return start + length * max(1, -(-(target - start) // length))


def proposal_json(prop: gov.Proposal, state: Any = None) -> dict[str, Any]:
    """A proposal as the RPC answers it; fields that are not set yet are null.
    ``effectiveAt`` (:func:`compute_effective_at`) needs the ``state`` it is read at."""
    return {
        "id": prop.id,
        "kind": prop.kind,
        "change": change_json(prop),
        "proposer": hexb(prop.proposer),
        "deposit": str(prop.deposit),
        "status": prop.status,
        "class": "critical" if prop.critical else "ordinary",
        "description": prop.description,
        "startBlock": prop.start_block,
        "votingEndBlock": prop.voting_end_block,
        "executableAt": _or_null(prop.executable_at),
        "effectiveAt": None if state is None else compute_effective_at(state, prop),
        "votes": {
            "yes": str(prop.yes),
            "no": str(prop.no),
            "abstain": str(prop.abstain),
            "veto": str(prop.veto),
        },
        "talliedAt": _or_null(prop.tallied_at),
        "lockedAtTally": str(prop.locked_at_tally) if prop.tallied_at else None,
        "executedAt": _or_null(prop.executed_at),
        "note": prop.note or None,
    }


@methods.method("motus_getParams", BLOCK)
def get_params(ctx: RPCContext, ref: p.BlockRef) -> dict[str, Any]:
    """Every chain parameter at that block with its default, bounds, class (critical
    changes need the 2/3 threshold) and doc, plus passed proposals waiting to set it."""
    header, state = state_for(ctx, ref)
    values = get_all_params(state)
    pending: dict[str, list[dict[str, Any]]] = {}
    first_open = Store(state, addresses.GOVERNANCE).load(gov.S_FIRST_OPEN)  # older ones are closed
    for prop in gov.list_proposals(state, "passed", start_id=first_open, limit=MAX_SCAN):
        if prop.kind == "param":
            pending.setdefault(prop.name, []).append(
                {
                    "proposalId": prop.id,
                    "value": str(prop.value),
                    "executableAt": prop.executable_at,
                    "effectiveAt": compute_effective_at(state, prop),
                }
            )
    return {
        "params": {
            name: {
                "value": str(values[name]),
                "default": str(spec.default),
                "minimum": str(spec.minimum),
                "maximum": str(spec.maximum),
                "class": "critical" if spec.critical else "ordinary",
                "doc": spec.doc,
                "pending": pending.get(name, []),
            }
            for name, spec in PARAMS.items()
        },
        "blockNumber": header.height,
    }


@methods.method("motus_getProposal", Param("id", parse_proposal_id), BLOCK)
def get_proposal(ctx: RPCContext, pid: int, ref: p.BlockRef) -> dict[str, Any] | None:
    """The proposal at that block; null if it did not exist there."""
    header, state = state_for(ctx, ref)
    prop = gov.get_proposal(state, pid)
    if prop is None:
        return None
    return {**proposal_json(prop, state), "blockNumber": header.height}


@methods.method(
    "motus_listProposals",
    Param("status", parse_status, None),
    Param("startId", parse_proposal_id, 1),
    Param("limit", parse_limit, MAX_LIST),
    BLOCK,
    blocking=True,
)
def list_proposals(
    ctx: RPCContext, status: str | None, start: int, limit: int, ref: p.BlockRef
) -> dict[str, Any]:
    """Proposals with id >= ``startId`` in id order (only those with ``status`` when
    given), at most ``limit``, looking at no more than 10,000 ids; ``nextId`` is where the
    next page starts (null at the end)."""
    header = resolve_header(ctx, ref)
    state = ctx.app.state_at(header)  # a private view: this runs in a worker thread
    count = gov.proposal_count(state)
    found: list[gov.Proposal] = []
    pid = start
    while pid <= count and len(found) < limit and pid < start + MAX_SCAN:
        prop = gov.get_proposal(state, pid)
        if prop is not None and (status is None or prop.status == status):
            found.append(prop)
        pid += 1
    return {
        "proposals": [proposal_json(x, state) for x in found],
        "count": count,
        "nextId": pid if pid <= count else None,
        "blockNumber": header.height,
    }


@methods.method("motus_getVotingPower", Param("address", p.address), BLOCK)
def get_voting_power(ctx: RPCContext, address: bytes, ref: p.BlockRef) -> dict[str, Any]:
    """The account's governance lock at that block: ``locked`` (its voting power),
    ``unlocking`` (waiting for ``releaseBlock``, no power), ``frozenUntil`` (unlock is
    refused before that block: it voted on a proposal open until then)."""
    header, state = state_for(ctx, ref)
    lock = gov.get_lock(state, address)
    return {
        "address": hexb(address),
        "power": str(lock.locked),
        "locked": str(lock.locked),
        "unlocking": str(lock.pending_unlock),
        "releaseBlock": _or_null(lock.release_block) if lock.pending_unlock else None,
        "frozenUntil": _or_null(lock.frozen_until),
        "totalLocked": str(gov.total_locked(state)),
        "blockNumber": header.height,
    }


def register(table: MethodTable) -> None:
    table.include(methods)
