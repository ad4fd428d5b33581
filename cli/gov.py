"""``motus gov ...`` and ``motus rewards ...``: governance (lock, unlock, withdraw, propose,
vote, show) and reward reads from the command line (docs/cli.md, docs/governance.md,
docs/rewards.md).

Signing, sending and exit statuses are those of the identity commands
(:mod:`cli.identity`): one transaction signed with ``--keystore``/``--from`` (+
``--password-file``/``MOTUS_PASSWORD``) or ``--private-key-file``, sent to ``--rpc`` with
:func:`rpcclient.txsend.send_call`; one JSON object on stdout; exit 1 with the revert reason
when the chain refuses, 2 for a local problem.
"""

from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from typing import Any

from cli.common import (
    NotFound,
    UsageError,
    block_arg,
    parse_address,
    rpc_args,
    run,
    signer_args,
    signer_key,
)
from rpcclient import rpc_call
from rpcclient.txsend import decode_logs, encode_call, send_call
from vm.modules.base import load_abi

GOVERNANCE = "0x00000000000000000000000000000000004d0706"  # vm.modules.addresses.GOVERNANCE
WEI_PER_MOTUS = 10**18
OPTIONS = {"yes": 1, "no": 2, "abstain": 3, "veto": 4}  # docs/governance.md, "Voting"


def governance_abi() -> list[dict[str, Any]]:
    """The governance module's shipped ABI (vm/abi/governance.json)."""
    return load_abi("governance")


# --- argument parsing ---------------------------------------------------------------------


def parse_amount(text: str) -> int:
    """An amount of MOTUS as wei: a decimal number of MOTUS (``1000``, ``0.5``, ``1_000``)
    or an integer with the suffix ``wei`` (``250wei``). Must be positive."""
    s = text.strip().lower().replace("_", "")
    try:
        if s.endswith("wei"):
            wei = int(s[:-3])
        else:
            motus = Decimal(s)
            wei_exact = motus * WEI_PER_MOTUS
            if wei_exact != wei_exact.to_integral_value():
                raise argparse.ArgumentTypeError(f"{text!r} has more than 18 decimals")
            wei = int(wei_exact)
    except (ValueError, InvalidOperation):
        raise argparse.ArgumentTypeError(
            f"not an amount: {text!r} (MOTUS like 1000 or 0.5, or wei like 250wei)"
        ) from None
    if wei <= 0:
        raise argparse.ArgumentTypeError(f"amount must be positive, got {text!r}")
    return wei


def parse_uint(text: str) -> int:
    """A non-negative integer: decimal (underscores allowed) or 0x-hex."""
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**256:
        raise argparse.ArgumentTypeError(f"must be within 0..2^256-1, got {text!r}")
    return value


def parse_proposal_id(text: str) -> int:
    value = parse_uint(text)
    if value == 0:
        raise argparse.ArgumentTypeError("proposal ids start at 1")
    return value


# --- running commands ---------------------------------------------------------------------


def transact(args: argparse.Namespace, fn: str, *call_args: Any, value: int = 0) -> dict[str, Any]:
    """Send ``fn(*call_args)`` with ``value`` wei to the governance module; the receipt
    summed up as JSON: txHash, status, blockNumber, gasUsed, from and decoded events."""
    data = encode_call(governance_abi(), fn, *call_args)
    receipt = send_call(args.rpc, signer_key(args), GOVERNANCE, data, value, timeout=args.timeout)
    return {
        "txHash": receipt["transactionHash"],
        "status": "success",
        "blockNumber": int(receipt["blockNumber"], 16),
        "gasUsed": int(receipt["gasUsed"], 16),
        "from": str(receipt["from"]).lower(),
        "events": decode_logs(governance_abi(), receipt.get("logs", []), GOVERNANCE),
    }


def _event(out: dict[str, Any], name: str) -> dict[str, Any]:
    """Args of the first ``name`` event of a :func:`transact` result ({} if absent)."""
    return next((e["args"] for e in out["events"] if e["event"] == name), {})


def _lock_state(args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    """``out`` plus the account's lock after the transaction (motus_getVotingPower)."""
    out["lock"] = rpc_call(args.rpc, "motus_getVotingPower", [out["from"], out["blockNumber"]])
    return out


def cmd_lock(args: argparse.Namespace) -> dict[str, Any]:
    """Lock MOTUS for voting power."""
    return _lock_state(args, transact(args, "lock", value=args.amount))


def cmd_unlock(args: argparse.Namespace) -> dict[str, Any]:
    """Start the release of locked MOTUS (withdraw after the unlock delay)."""
    out = transact(args, "unlock", args.amount)
    out["releaseBlock"] = _event(out, "UnlockRequested").get("releaseBlock")
    return _lock_state(args, out)


def cmd_withdraw(args: argparse.Namespace) -> dict[str, Any]:
    """Pay released MOTUS back to the signer."""
    out = transact(args, "withdraw")
    out["amount"] = str(_event(out, "Withdrawn").get("amount", 0))
    return _lock_state(args, out)


def _proposed(out: dict[str, Any]) -> dict[str, Any]:
    created = _event(out, "ProposalCreated")
    out["proposalId"] = created.get("proposalId")
    out["votingEndBlock"] = created.get("votingEndBlock")
    return out


def cmd_propose_param(args: argparse.Namespace) -> dict[str, Any]:
    """Propose a new value for a chain parameter."""
    out = transact(
        args, "proposeParam", args.name, args.value, args.description, value=args.deposit
    )
    return _proposed(out)


def cmd_propose_manufacturer(args: argparse.Namespace) -> dict[str, Any]:
    """Propose licensing (or revoking) a device manufacturer."""
    licensed = not args.revoke
    if licensed and not args.name:
        raise UsageError("licensing a manufacturer needs --name")
    out = transact(
        args,
        "proposeManufacturer",
        args.address,
        licensed,
        args.name or "",
        args.description,
        value=args.deposit,
    )
    return _proposed(out)


def cmd_propose_deny(args: argparse.Namespace) -> dict[str, Any]:
    """Propose adding a device to the deny list (or, with --allow, lifting it)."""
    out = transact(
        args, "proposeDeny", args.device, not args.allow, args.description, value=args.deposit
    )
    return _proposed(out)


def cmd_propose_validator(args: argparse.Namespace) -> dict[str, Any]:
    """Propose adding a validator, changing its power, or removing it (power 0)."""
    out = transact(
        args, "proposeValidator", args.address, args.power, args.description, value=args.deposit
    )
    return _proposed(out)


def cmd_vote(args: argparse.Namespace) -> dict[str, Any]:
    """Vote on a proposal with the signer's locked MOTUS."""
    out = transact(args, "vote", args.id, OPTIONS[args.option_name])
    voted = _event(out, "Voted")
    out.update(proposalId=args.id, option=args.option_name, weight=str(voted.get("weight", 0)))
    return out


def cmd_show(args: argparse.Namespace) -> dict[str, Any]:
    """A proposal (motus_getProposal), or a page of them (motus_listProposals)."""
    if args.id is not None:
        prop = rpc_call(args.rpc, "motus_getProposal", [args.id, args.block])
        if prop is None:
            raise NotFound(f"no proposal {args.id} at block {args.block}")
        return dict(prop)
    return dict(
        rpc_call(args.rpc, "motus_listProposals", [args.status, args.start, args.limit, args.block])
    )


def cmd_power(args: argparse.Namespace) -> dict[str, Any]:
    """An account's lock and voting power (motus_getVotingPower)."""
    return dict(rpc_call(args.rpc, "motus_getVotingPower", [args.address, args.block]))


def cmd_params(args: argparse.Namespace) -> dict[str, Any]:
    """Chain parameters with bounds and class (motus_getParams)."""
    return dict(rpc_call(args.rpc, "motus_getParams", [args.block]))


def motus_text(wei: int | str) -> str:
    """An amount of wei as an exact decimal number of MOTUS (``1.5``, ``0``)."""
    text = f"{Decimal(int(wei)) / WEI_PER_MOTUS:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def in_unit(doc: dict[str, Any], keys: tuple[str, ...], wei: bool) -> dict[str, Any]:
    """``doc`` with the amounts under ``keys`` in MOTUS (or left in wei when ``wei``),
    and ``unit`` saying which."""
    if not wei:
        for key in keys:
            if doc.get(key) is not None:
                doc[key] = motus_text(doc[key])
    doc["unit"] = "wei" if wei else "MOTUS"
    return doc


def cmd_rewards_show(args: argparse.Namespace) -> dict[str, Any]:
    """What a vehicle or an owner earned per epoch (motus_getRewards); amounts in MOTUS
    (wei with --wei). With nothing earned yet, ``note`` says when the next epoch settles."""
    who: int | str = args.vehicle if args.vehicle is not None else args.owner
    out = dict(rpc_call(args.rpc, "motus_getRewards", [who, args.start, args.end, args.block]))
    out["rewards"] = [in_unit(dict(r), ("reward",), args.wei) for r in out["rewards"]]
    out = in_unit(out, ("total",), args.wei)
    if not out["rewards"]:
        current = rpc_call(args.rpc, "motus_getEpoch", [None, args.block]) or {}
        ends = current.get("endHeight")
        out["note"] = (f"nothing yet: epoch {current.get('epoch')} is still running (it ends at "
                       f"block {ends}; the head is {out['blockNumber']}), and no settled epoch "
                       f"in the range paid this {'owner' if args.owner else 'vehicle'}")
    return out


EPOCH_AMOUNTS = ("issuance", "carryIn", "pool", "minted", "carryOut")


def cmd_rewards_epoch(args: argparse.Namespace) -> dict[str, Any]:
    """An epoch's pool and payout totals (motus_getEpoch); amounts in MOTUS (--wei)."""
    epoch = rpc_call(args.rpc, "motus_getEpoch", [args.epoch, args.block])
    if epoch is None:
        raise NotFound(f"epoch {args.epoch} has not started at block {args.block}")
    return in_unit(dict(epoch), EPOCH_AMOUNTS, args.wei)


def cmd_rewards_supply(args: argparse.Namespace) -> dict[str, Any]:
    """The MOTUS supply, optionally audited against every balance (motus_getSupply)."""
    return dict(rpc_call(args.rpc, "motus_getSupply", [args.block, args.audit]))


# --- parser ----------------------------------------------------------------------------


def _proposal_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--deposit",
        type=parse_amount,
        required=True,
        help="MOTUS held until the tally; burned on a veto (gov_min_deposit or more)",
    )
    p.add_argument("--description", default="", help="why (at most 1,024 bytes)")
    signer_args(p)


def register_gov_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``gov`` and ``rewards`` with their subcommands to the ``motus`` parser."""
    gov = sub.add_parser("gov", help="governance: lock, propose, vote, show")
    gs = gov.add_subparsers(dest="gov_cmd", required=True)

    lock = gs.add_parser("lock", help="lock MOTUS for voting power")
    lock.add_argument(
        "--amount", type=parse_amount, required=True, help="MOTUS (0.5) or wei (5wei)"
    )
    signer_args(lock)
    lock.set_defaults(fn=run(cmd_lock))

    unlock = gs.add_parser("unlock", help="start releasing locked MOTUS")
    unlock.add_argument(
        "--amount", type=parse_amount, required=True, help="MOTUS (0.5) or wei (5wei)"
    )
    signer_args(unlock)
    unlock.set_defaults(fn=run(cmd_unlock))

    withdraw = gs.add_parser("withdraw", help="take back released MOTUS")
    signer_args(withdraw)
    withdraw.set_defaults(fn=run(cmd_withdraw))

    propose = gs.add_parser("propose", help="propose a change (needs a deposit)")
    ps = propose.add_subparsers(dest="propose_cmd", required=True)
    param = ps.add_parser("param", help="set a chain parameter (motus gov params lists them)")
    param.add_argument("name")
    param.add_argument(
        "value", type=parse_uint, help="integer in the parameter's unit (wei, blocks...)"
    )
    _proposal_args(param)
    param.set_defaults(fn=run(cmd_propose_param))

    maker = ps.add_parser("manufacturer", help="license or revoke a device manufacturer")
    maker.add_argument("address", type=parse_address)
    maker.add_argument("--name", help="manufacturer name (needed to license, at most 64 bytes)")
    maker.add_argument("--revoke", action="store_true", help="revoke the license instead")
    _proposal_args(maker)
    maker.set_defaults(fn=run(cmd_propose_manufacturer))

    deny = ps.add_parser("deny", help="deny (or allow again) a device's attestations")
    deny.add_argument("device", type=parse_address)
    deny.add_argument("--allow", action="store_true", help="lift the denial instead")
    _proposal_args(deny)
    deny.set_defaults(fn=run(cmd_propose_deny))

    validator = ps.add_parser("validator", help="add, re-weight or remove (power 0) a validator")
    validator.add_argument("address", type=parse_address)
    validator.add_argument("power", type=parse_uint)
    _proposal_args(validator)
    validator.set_defaults(fn=run(cmd_propose_validator))

    vote = gs.add_parser("vote", help="vote yes, no, abstain or veto")
    vote.add_argument("id", type=parse_proposal_id)
    vote.add_argument(
        "option_name", metavar="{yes,no,abstain,veto}", type=str.lower, choices=list(OPTIONS)
    )
    signer_args(vote)
    vote.set_defaults(fn=run(cmd_vote))

    show = gs.add_parser("show", help="a proposal, or a list of them")
    show.add_argument("id", type=parse_proposal_id, nargs="?")
    show.add_argument(
        "--status",
        choices=["voting", "passed", "executed", "rejected", "no_quorum", "vetoed", "failed"],
    )
    show.add_argument("--start", type=parse_proposal_id, default=1, help="first id to list")
    show.add_argument("--limit", type=int, default=100, help="at most this many (1..100)")
    block_arg(show)
    rpc_args(show)
    show.set_defaults(fn=run(cmd_show))

    power = gs.add_parser("power", help="an account's lock and voting power")
    power.add_argument("address", type=parse_address)
    block_arg(power)
    rpc_args(power)
    power.set_defaults(fn=run(cmd_power))

    params = gs.add_parser("params", help="chain parameters, bounds and class")
    block_arg(params)
    rpc_args(params)
    params.set_defaults(fn=run(cmd_params))

    rewards = sub.add_parser("rewards", help="epoch rewards: per vehicle or owner, epochs, supply")
    rs = rewards.add_subparsers(dest="rewards_cmd", required=True)
    rshow = rs.add_parser("show", help="rewards of a vehicle or an owner per epoch")
    who = rshow.add_mutually_exclusive_group(required=True)
    who.add_argument("--vehicle", type=parse_uint, metavar="ID")
    who.add_argument("--owner", type=parse_address, metavar="ADDRESS")
    rshow.add_argument("--from", dest="start", type=parse_uint, metavar="EPOCH")
    rshow.add_argument("--to", dest="end", type=parse_uint, metavar="EPOCH")
    rshow.add_argument("--wei", action="store_true", help="amounts in wei instead of MOTUS")
    block_arg(rshow)
    rpc_args(rshow)
    rshow.set_defaults(fn=run(cmd_rewards_show))

    repoch = rs.add_parser("epoch", help="an epoch's pool and totals (default: the current one)")
    repoch.add_argument("epoch", type=parse_uint, nargs="?")
    repoch.add_argument("--wei", action="store_true", help="amounts in wei instead of MOTUS")
    block_arg(repoch)
    rpc_args(repoch)
    repoch.set_defaults(fn=run(cmd_rewards_epoch))

    supply = rs.add_parser("supply", help="the MOTUS supply and where it went")
    supply.add_argument("--audit", action="store_true", help="also sum every account balance")
    block_arg(supply)
    rpc_args(supply)
    supply.set_defaults(fn=run(cmd_rewards_supply))
