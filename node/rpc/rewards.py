"""The rewards methods of the ``motus_`` namespace: epochs, what vehicles and owners
earned, and the token supply. They read the rewards module's records
(``vm.modules.rewards``), the epoch clock and the supply counters on the state after the
requested block (docs/rpc.md, "Methods: motus rewards and governance").

Conventions as for the identity methods: epochs, heights, points and counts are JSON
numbers; token amounts are decimal strings (wei); addresses are lower-case 0x-hex; an
epoch that has not started at that block answers ``null``; an unknown block ``-32001``.
"""

from __future__ import annotations

from typing import Any

import rlp
from eth.abc import StateAPI
from eth.rlp.accounts import Account
from trie import HexaryTrie
from trie.iter import NodeIterator

from node.rpc import params as p
from node.rpc.errors import LIMIT_EXCEEDED, RPCError, invalid_params, limit_exceeded
from node.rpc.eth import resolve_header
from node.rpc.ethjson import hexb
from node.rpc.identity import BLOCK, parse_vehicle_id, state_for
from node.rpc.registry import MethodTable, Param, RPCContext
from vm.epoch import get_epoch, get_epoch_start
from vm.modules import identity, rewards, telemetry
from vm.modules.params import get_all_params
from vm.scoring import compute_epoch_pool
from vm.supply import get_supply

methods = MethodTable()

MAX_EPOCHS = 1_000  # epochs per motus_getRewards call
MAX_REWARD_READS = 100_000  # vehicles x epochs one owner query may look at
MAX_AUDIT_ACCOUNTS = 100_000  # accounts motus_getSupply(audit=true) may walk


def parse_vehicle_or_owner(value: Any) -> int | bytes:
    """A 20-byte address (0x + 40 hex digits: an owner) or else a vehicle id."""
    if isinstance(value, str) and value.startswith(("0x", "0X")) and len(value) == 42:
        return p.address(value)
    try:
        return parse_vehicle_id(value)
    except p.ParamError:
        raise p.ParamError(
            f"expected a vehicle id or an owner address (0x + 40 hex digits), got {p.show(value)}"
        ) from None


EPOCH = Param("epoch", p.epoch, None)


# --- epochs ---------------------------------------------------------------------------


def epoch_json(state: StateAPI, epoch: int, height: int) -> dict[str, Any] | None:
    """Epoch ``epoch`` as seen at block ``height``: its settled record, or for the epoch
    still running what is known so far (``status`` "open"); None if it has not started."""
    current = get_epoch(state)
    if epoch > current:
        return None
    if epoch == current:
        params = get_all_params(state)
        start = get_epoch_start(state)
        issuance = compute_epoch_pool(params, epoch)
        carry = rewards.get_carry(state)
        return {
            "epoch": epoch,
            "status": "open",
            "currentEpoch": current,
            "startHeight": start,
            "endHeight": start + params["epoch_length_blocks"] - 1,  # unless governance changes it
            "settledAt": None,
            "issuance": str(issuance),
            "carryIn": str(carry),
            "pool": str(issuance + carry),
            "totalPoints": None,
            "minted": None,
            "carryOut": None,
            "vehicles": None,
            "vehiclesWithData": len(set(telemetry.epoch_vehicles(state, epoch))),
            "blockNumber": height,
        }
    r = rewards.get_epoch_result(state, epoch)
    start = 1 if epoch == 0 else rewards.get_epoch_result(state, epoch - 1).ended_at
    out = {
        "epoch": epoch,
        "status": "settled",
        "currentEpoch": current,
        "startHeight": start or None,  # None: settled before heights were recorded
        "endHeight": r.ended_at - 1 if r.ended_at else None,
        "settledAt": r.settled_at or None,
        "issuance": str(r.issuance),
        "carryIn": str(r.carry_in),
        "pool": str(r.pool),
        "totalPoints": r.total_points,
        "minted": str(r.minted),
        "carryOut": str(r.carry_out),
        "vehicles": r.vehicle_count,
        "vehiclesWithData": r.evaluated,
        "blockNumber": height,
    }
    if not r.processed:
        # ended, its settlement not finished (docs/rewards.md "Settlement"): the sums are
        # partial, so they are not given; the progress is
        listed, scored, paid = rewards.settlement_progress(state, epoch)
        out.update(status="settling", carryIn=None, pool=None, totalPoints=None, minted=None,
                   carryOut=None, vehicles=None, vehiclesWithData=listed or None,
                   settlement={"scored": scored, "paid": paid, "vehicles": listed,
                               "backlog": rewards.settlement_backlog(state)})
    return out


@methods.method("motus_getEpoch", EPOCH, BLOCK)
def get_epoch_info(ctx: RPCContext, epoch: int | None, ref: p.BlockRef) -> dict[str, Any] | None:
    """Epoch ``epoch`` (the current one when omitted) at that block; null if it has not
    started there."""
    header, state = state_for(ctx, ref)
    return epoch_json(state, get_epoch(state) if epoch is None else epoch, header.height)


# --- rewards ---------------------------------------------------------------------------


def reward_json(r: rewards.VehicleReward) -> dict[str, Any]:
    return {
        "epoch": r.epoch,
        "vehicleId": r.vehicle_id,
        "owner": hexb(r.owner),
        "points": r.points,
        "reward": str(r.reward),
        "qualified": r.qualified,
        "dataLevel": r.data_level,
        "streakLevel": r.streak_level,
        "lockLevel": r.lock_level,
        "penalized": r.penalized,
        "streak": r.streak,
        "shares": [{"owner": hexb(o), "amount": str(a)} for o, a in r.shares],
    }


def paid_to(r: rewards.VehicleReward, owner: bytes) -> int:
    """What ``owner`` received of a vehicle's epoch reward (its ownership periods' share)."""
    if r.shares:
        return sum(amount for o, amount in r.shares if o == owner)
    return r.reward if r.owner == owner else 0


def epoch_range(state: StateAPI, start: int | None, end: int | None) -> tuple[int, int] | None:
    """The settled epochs to read, ``(first, last)`` inclusive, or None when no epoch in
    the range is settled yet. Defaults: ``last`` the latest settled epoch, ``first`` so
    that the range holds :data:`MAX_EPOCHS`. A wider range answers ``-32005``."""
    settled = rewards.processed_epochs(state)
    explicit_start = start is not None
    if settled == 0 and end is None:
        return None  # the first epoch is still running: nothing settled yet, not an error
    if end is None:
        end = settled - 1 if start is None else start + MAX_EPOCHS - 1
    if start is None:
        start = max(0, end - MAX_EPOCHS + 1)
    if start > end:
        raise invalid_params(f"invalid epoch range: fromEpoch {start} is after toEpoch {end}")
    if end - start + 1 > MAX_EPOCHS:
        raise limit_exceeded(
            f"epoch range of {end - start + 1} epochs exceeds {MAX_EPOCHS}; ask for a smaller range",
            reason="epoch_range_too_large",
        )
    end = min(end, settled - 1)
    oldest = rewards.history_start(state)
    if start < oldest:
        if explicit_start:
            raise history_cleared(start, oldest)
        start = oldest  # the default range starts where the records still are
    return None if end < start else (start, end)


def history_cleared(epoch: int, oldest: int) -> RPCError:
    """``-32005`` for an epoch whose per-vehicle records left the state's history window
    (docs/rewards.md "History window"); ``data.historyStart`` is the oldest epoch kept."""
    return RPCError(LIMIT_EXCEEDED, f"limit exceeded: reward records of epoch {epoch} were cleared from "
                    f"state (the oldest kept is epoch {oldest}); read the RewardPaid logs "
                    "(eth_getLogs) or an archive state", {"reason": "reward_history_cleared",
                                                          "historyStart": oldest})


@methods.method(
    "motus_getRewards",
    Param("vehicleIdOrOwner", parse_vehicle_or_owner),
    Param("fromEpoch", p.epoch, None),
    Param("toEpoch", p.epoch, None),
    BLOCK,
    blocking=True,
)
def get_rewards(
    ctx: RPCContext, who: int | bytes, start: int | None, end: int | None, ref: p.BlockRef
) -> dict[str, Any]:
    """What a vehicle scored and earned in each settled epoch of the range (epochs where
    it had no data are left out), or, for an address, every record of the vehicles it
    holds at that block whose recorded payee it was. ``total`` sums ``reward``."""
    header = resolve_header(ctx, ref)
    state = ctx.app.state_at(header)  # a private view: this runs in a worker thread
    span = epoch_range(state, start, end)
    out: dict[str, Any] = {}
    records: list[rewards.VehicleReward] = []
    if isinstance(who, bytes):
        out["owner"] = hexb(who)
        vehicles = identity.vehicles_of(state, who) if span else []
        if span and len(vehicles) * (span[1] - span[0] + 1) > MAX_REWARD_READS:
            raise limit_exceeded(
                f"{len(vehicles)} vehicles over {span[1] - span[0] + 1} epochs is more than "
                f"{MAX_REWARD_READS} records; ask for a smaller epoch range",
                reason="too_many_records",
            )
        for vid in vehicles:
            records += [
                r
                for r in rewards.get_vehicle_rewards(state, vid, *span)  # type: ignore[misc]
                if r.owner == who or any(o == who for o, _ in r.shares)
            ]
        records.sort(key=lambda r: (r.epoch, r.vehicle_id))
    else:
        out["vehicleId"] = who
        if span:
            records = rewards.get_vehicle_rewards(state, who, *span)
    out.update(
        fromEpoch=span[0] if span else start,
        toEpoch=span[1] if span else end,
        total=str(sum(paid_to(r, who) if isinstance(who, bytes) else r.reward
                      for r in records)),
        rewards=[reward_json(r) for r in records],
        blockNumber=header.height,
    )
    return out


# --- supply ------------------------------------------------------------------------------


def audit_balances(ctx: RPCContext, state_root: bytes) -> dict[str, Any]:
    """Sum every account balance in the state trie (at most :data:`MAX_AUDIT_ACCOUNTS`
    accounts, else ``-32005``)."""
    total = 0
    count = 0
    for value in NodeIterator(HexaryTrie(ctx.store.state_db, state_root)).values():
        count += 1
        if count > MAX_AUDIT_ACCOUNTS:
            raise limit_exceeded(f"more than {MAX_AUDIT_ACCOUNTS} accounts: audit refused",
                                 reason="too_many_accounts")
        total += rlp.decode(value, sedes=Account).balance
    return {"accounts": count, "sumOfBalances": str(total)}


@methods.method("motus_getSupply", BLOCK, Param("audit", p.boolean, False), blocking=True)
def get_supply_info(ctx: RPCContext, ref: p.BlockRef, audit: bool) -> dict[str, Any]:
    """The MOTUS supply at that block: ``total = genesis + minted - burnedDeposits -
    burnedFees`` (checked here: an inconsistent record is an internal error). With
    ``audit`` the node also sums every account balance, which must equal ``total``
    (``audit.matchesTotal``)."""
    header = resolve_header(ctx, ref)
    s = get_supply(ctx.app.state_at(header))
    parts = s["genesis"] + s["minted"] - s["burned_deposits"] - s["burned_fees"]
    if parts != s["total"]:
        raise RuntimeError(f"supply record inconsistent at block {header.height}")
    out: dict[str, Any] = {
        "genesis": str(s["genesis"]),
        "minted": str(s["minted"]),
        "burnedDeposits": str(s["burned_deposits"]),
        "burnedFees": str(s["burned_fees"]),
        "total": str(s["total"]),
        "blockNumber": header.height,
        "audit": None,
    }
    if audit:
        found = audit_balances(ctx, header.state_root)
        found["matchesTotal"] = int(found["sumOfBalances"]) == s["total"]
        out["audit"] = found
    return out


def register(table: MethodTable) -> None:
    table.include(methods)
