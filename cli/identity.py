"""``motus vehicle ...`` and ``motus device ...``: the identity module from the command line
(docs/cli.md, docs/identity.md).

Commands that change state sign one transaction with an account key (an encrypted
keystore from ``motus keys new``: ``--keystore FILE`` or ``--from ADDRESS --home DIR``,
password from ``--password-file`` or ``MOTUS_PASSWORD``; or, for devnets and scripts, a
mode-0600 file holding the raw hex key, ``--private-key-file``) and send it to the node at
``--rpc`` with :func:`rpcclient.txsend.send_call`. Device signatures (claim, pair) are EIP-712
typed data signed with the device's key file (``--device-key-file``).

Each command prints one JSON object on stdout. Exit status: 0 done; 1 the chain refused
(revert reason, mempool refusal, no receipt in time, or nothing found for ``show``), with
``status`` and ``reason`` in the JSON and the reason on stderr; 2 a local problem (bad
argument, key or password, node unreachable), on stderr only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import time
from types import ModuleType
from typing import Any

from eth_account import Account

from cli.common import (
    NotFound,
    UsageError,
    block_arg,
    load_key_file,
    parse_address,
    parse_id,
    rpc_args,
    run,
    signer_args,
    signer_key,
)
from rpcclient import rpc_call
from rpcclient.txsend import decode_logs, encode_call, send_call
from vm.modules.base import load_abi

SIGNATURE_TTL_SECONDS = 600  # default validity of a device signature made here
MIN_ABSOLUTE_EXPIRY = 1_000_000_000  # below this an --expires integer is surely a duration
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

def identity_abi() -> list[dict[str, Any]]:
    """The identity module's shipped ABI (vm/abi/identity.json)."""
    return load_abi("identity")


def identity_module() -> ModuleType:
    """``vm.modules.identity``, imported on first use: it pulls in py-evm (half a second),
    which every other ``motus`` command would otherwise pay for at start."""
    return importlib.import_module("vm.modules.identity")


def identity_address() -> str:
    """The identity module's address, 0x-hex."""
    return "0x" + importlib.import_module("vm.modules.addresses").IDENTITY.hex()


def permission_names(bits: int) -> list[str]:
    """Names of the set permission bits, lowest first (docs/identity.md)."""
    return [n for n, b in identity_module().PERMISSION_BITS.items() if bits >> b & 1]


# --- argument parsing ---------------------------------------------------------------------


def parse_permissions(text: str) -> int:
    """Permission bits: a number (``33``, ``0x21``), ``all``, or names joined by commas
    (``non_location_history,location_history``; ``-`` and ``_`` alike, any case;
    docs/identity.md)."""
    s = text.strip().lower()
    names: dict[str, int] = identity_module().PERMISSION_BITS
    try:
        bits = int(s, 0)
    except ValueError:
        bits = 0
        for part in s.replace("-", "_").split(","):
            name = part.strip()
            if name == "all":
                bits |= identity_module().PERMISSIONS_ALL
            elif name in names:
                bits |= 1 << names[name]
            else:
                known = ", ".join(names)
                raise argparse.ArgumentTypeError(
                    f"unknown permission {name!r}; use a number or names from: {known}, all"
                ) from None
    if bits <= 0:
        raise argparse.ArgumentTypeError("no permission bits")
    return bits


def parse_expiry(text: str, now: float | None = None) -> int:
    """An expiry as unix seconds: an integer (absolute unix time), ``+N`` with an optional
    unit s/m/h/d/w (relative to now: ``+3600``, ``+30d``), or an ISO 8601 date or date-time
    (``2026-01-31``, ``2026-01-31T12:00:00+01:00``; no zone means UTC)."""
    s = text.strip()
    now = time.time() if now is None else now
    if s.startswith("+"):
        body, unit = (s[1:-1], s[-1]) if s[-1:].isalpha() else (s[1:], "s")
        if unit not in DURATION_UNITS or not body.isdigit():
            raise argparse.ArgumentTypeError(f"not a duration like +3600 or +30d: {text!r}")
        return int(now) + int(body) * DURATION_UNITS[unit]
    if s.isdigit():
        value = int(s)
        if value < MIN_ABSOLUTE_EXPIRY:
            raise argparse.ArgumentTypeError(
                f"{value} is a unix time in 1970-2001; for a duration write +{value}"
            )
        return value
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a unix time, +duration or ISO date: {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp())


# --- keys ------------------------------------------------------------------------------


def device_key(args: argparse.Namespace) -> tuple[bytes, str]:
    """The device key from --device-key-file and its address, which must be --device."""
    key = load_key_file(args.device_key_file)
    address = Account.from_key(key).address.lower()
    if address != args.device:
        raise UsageError(f"--device-key-file holds the key of {address}, not {args.device}")
    return key, address


# --- running commands ---------------------------------------------------------------------


def transact(args: argparse.Namespace, key: bytes, fn: str, *call_args: Any) -> dict[str, Any]:
    """Send ``fn(*call_args)`` to the identity module; the receipt summed up as JSON:
    txHash, status, blockNumber, gasUsed, from and the module's decoded events."""
    data = encode_call(identity_abi(), fn, *call_args)
    address = identity_address()
    receipt = send_call(args.rpc, key, address, data, timeout=args.timeout)
    return {
        "txHash": receipt["transactionHash"],
        "status": "success",
        "blockNumber": int(receipt["blockNumber"], 16),
        "gasUsed": int(receipt["gasUsed"], 16),
        "from": str(receipt["from"]).lower(),
        "events": decode_logs(identity_abi(), receipt.get("logs", []), address),
    }


def event_arg(out: dict[str, Any], event: str, arg: str) -> Any:
    """``arg`` of the first ``event`` in a :func:`transact` result (None if absent)."""
    for e in out["events"]:
        if e["event"] == event:
            return e["args"][arg]
    return None


def device_nonce(rpc: str, device: str) -> int:
    """The nonce the device's next signature must carry (0 for a device not minted yet:
    the chain then refuses the call with its own reason)."""
    record = rpc_call(rpc, "motus_getDevice", [device])
    return 0 if record is None else int(record["nonce"])


def sign_device(
    rpc: str, key: bytes, struct: Any, message: dict[str, Any]
) -> tuple[bytes, dict[str, Any]]:
    """The device's EIP-712 signature over ``message`` for this chain's identity module,
    and the typed-data document that was signed."""
    chain_id = int(rpc_call(rpc, "eth_chainId"), 16)
    doc = identity_module().typed_data(struct, chain_id, message)
    return bytes(Account.sign_typed_data(key, full_message=doc).signature), doc


# --- vehicle commands -----------------------------------------------------------------


def parse_vin(text: str) -> str:
    """The normalised VIN (``vm.vin``); a bad one is refused here, before anything is
    signed or sent, with the chain's own code: ``bad_vin: ...``."""
    from vm.vin import VinError, normalize_vin

    try:
        return normalize_vin(text)
    except VinError as exc:
        raise UsageError(str(exc)) from None


def cmd_vehicle_mint(args: argparse.Namespace) -> dict[str, Any]:
    """Mint a vehicle NFT for the signer: with ``--device`` its VIN is backed by the
    device's signed reading and the device is paired (``mintVehicleWithDevice``), else
    the VIN is bound without evidence (``mintVehicle``) and can be reclaimed."""
    return _mint_vehicle(args, reclaim=False)


def cmd_vehicle_reclaim_vin(args: argparse.Namespace) -> dict[str, Any]:
    """Reclaim a VIN bound without evidence, with the device's signed reading
    (``reclaimVin``): a new vehicle NFT for the signer holds the VIN, paired with the
    device."""
    return _mint_vehicle(args, reclaim=True)


def _mint_vehicle(args: argparse.Namespace, reclaim: bool) -> dict[str, Any]:
    from vm.vin import vin_hash as compute_vin_hash

    key = signer_key(args)
    vin = parse_vin(args.vin)
    if args.device is None:
        out = transact(args, key, "mintVehicle", args.make, args.model, args.year, vin)
    else:
        if args.device_key_file is None:
            raise UsageError("--device needs --device-key-file (the device signs the VIN)")
        dkey, device = device_key(args)
        owner = Account.from_key(key).address.lower()
        nonce = device_nonce(args.rpc, device)
        deadline = int(time.time()) + args.signature_ttl
        message = {"vin": vin, "device": device, "owner": owner, "nonce": nonce,
                   "deadline": deadline}
        signature, _ = sign_device(args.rpc, dkey, identity_module().VIN_READING, message)
        out = transact(args, key, "reclaimVin" if reclaim else "mintVehicleWithDevice",
                       args.make, args.model, args.year, vin, device, nonce, deadline, signature)
        out["device"] = device
    out["vehicleId"] = event_arg(out, "VehicleMinted", "vehicleId")
    out["vinHash"] = "0x" + compute_vin_hash(vin).hex()
    out["vinEvidence"] = "none" if args.device is None else "device"
    return out


def cmd_vehicle_pair(args: argparse.Namespace) -> dict[str, Any]:
    """Pair a claimed device with a vehicle; the signer owns both."""
    key = signer_key(args)
    dkey, device = device_key(args)
    owner = Account.from_key(key).address.lower()
    nonce = device_nonce(args.rpc, device)
    deadline = int(time.time()) + args.signature_ttl
    message = {
        "vehicleId": args.vehicle,
        "device": device,
        "owner": owner,
        "nonce": nonce,
        "deadline": deadline,
    }
    signature, _ = sign_device(args.rpc, dkey, identity_module().PAIR_DEVICE, message)
    out = transact(args, key, "pairDevice", args.vehicle, device, nonce, deadline, signature)
    out.update(vehicleId=args.vehicle, device=device)
    return out


def cmd_vehicle_unpair(args: argparse.Namespace) -> dict[str, Any]:
    """Unpair a vehicle's device (the vehicle's or the device's owner)."""
    out = transact(args, signer_key(args), "unpairDevice", args.vehicle)
    out.update(vehicleId=args.vehicle, device=event_arg(out, "DeviceUnpaired", "device"))
    return out


def cmd_vehicle_grant(args: argparse.Namespace) -> dict[str, Any]:
    """Grant (replace) a grantee's permission bits until an expiry."""
    out = transact(
        args,
        signer_key(args),
        "grantPermissions",
        args.vehicle,
        args.grantee,
        args.perms,
        args.expires,
    )
    out.update(
        vehicleId=args.vehicle,
        grantee=args.grantee,
        bits=args.perms,
        bitNames=permission_names(args.perms),
        expiry=args.expires,
    )
    return out


def cmd_vehicle_revoke(args: argparse.Namespace) -> dict[str, Any]:
    """Revoke every permission a grantee holds on a vehicle."""
    out = transact(args, signer_key(args), "revokePermissions", args.vehicle, args.grantee)
    out.update(vehicleId=args.vehicle, grantee=args.grantee)
    return out


def cmd_vehicle_transfer(args: argparse.Namespace) -> dict[str, Any]:
    """Transfer a vehicle (resets its permissions; a pairing is kept)."""
    key = signer_key(args)
    owner = Account.from_key(key).address.lower()
    out = transact(args, key, "transferFrom", owner, args.to, args.vehicle)
    out.update(vehicleId=args.vehicle, to=args.to)
    return out


def cmd_vehicle_burn(args: argparse.Namespace) -> dict[str, Any]:
    """Burn an unpaired vehicle (frees its VIN hash)."""
    out = transact(args, signer_key(args), "burnVehicle", args.vehicle)
    out["vehicleId"] = args.vehicle
    return out


def cmd_vehicle_show(args: argparse.Namespace) -> dict[str, Any]:
    """A vehicle and its permissions (motus_getVehicle, motus_getPermissions)."""
    vehicle = rpc_call(args.rpc, "motus_getVehicle", [args.id, args.block])
    if vehicle is None:
        raise NotFound(f"no vehicle {args.id} at block {args.block}")
    permissions = rpc_call(args.rpc, "motus_getPermissions", [args.id, vehicle["blockNumber"]])
    return {**vehicle, "permissions": permissions}


def cmd_vehicle_list(args: argparse.Namespace) -> dict[str, Any]:
    """Ids of the vehicles an address holds (motus_vehiclesOf)."""
    ids = rpc_call(args.rpc, "motus_vehiclesOf", [args.owner, args.block])
    return {"owner": args.owner, "vehicles": ids}


# --- device commands ------------------------------------------------------------------


def cmd_device_mint(args: argparse.Namespace) -> dict[str, Any]:
    """Mint a device NFT bound to a device key's address (licensed manufacturer)."""
    out = transact(args, signer_key(args), "mintDevice", args.device)
    out.update(device=args.device, tokenId=event_arg(out, "DeviceMinted", "tokenId"))
    return out


def cmd_device_claim(args: argparse.Namespace) -> dict[str, Any]:
    """Claim a minted device for the signer with the device's signature."""
    key = signer_key(args)
    dkey, device = device_key(args)
    owner = Account.from_key(key).address.lower()
    nonce = device_nonce(args.rpc, device)
    deadline = int(time.time()) + args.signature_ttl
    message = {"device": device, "owner": owner, "nonce": nonce, "deadline": deadline}
    signature, _ = sign_device(args.rpc, dkey, identity_module().CLAIM_DEVICE, message)
    out = transact(args, key, "claimDevice", device, nonce, deadline, signature)
    out.update(device=device, owner=owner, tokenId=event_arg(out, "DeviceClaimed", "tokenId"))
    return out


def cmd_device_transfer(args: argparse.Namespace) -> dict[str, Any]:
    """Hand a claimed device on (a pairing is kept)."""
    out = transact(args, signer_key(args), "transferDevice", args.device, args.to)
    out.update(device=args.device, to=args.to)
    return out


def cmd_device_show(args: argparse.Namespace) -> dict[str, Any]:
    """A device NFT (motus_getDevice)."""
    device = rpc_call(args.rpc, "motus_getDevice", [args.address, args.block])
    if device is None:
        raise NotFound(f"no device NFT for {args.address} at block {args.block}")
    return dict(device)


# --- parser ----------------------------------------------------------------------------


def _vin_args(p: argparse.ArgumentParser, device_required: bool) -> None:
    p.add_argument("--vin", required=True,
                   help="the 17-character VIN (ISO 3779; upper-cased and checked here and on chain)")
    p.add_argument("--device", type=parse_address, required=device_required, metavar="ADDRESS",
                   help="your claimed, unpaired device: it signs the VIN as evidence and is "
                        "paired with the new vehicle")
    p.add_argument("--device-key-file", required=device_required, metavar="FILE",
                   help="the device's raw hex private key, mode 0600")
    p.add_argument("--signature-ttl", type=int, default=SIGNATURE_TTL_SECONDS, metavar="SECONDS",
                   help=f"device signature deadline from now (default {SIGNATURE_TTL_SECONDS})")


def _devicesigner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", type=parse_address, required=True, metavar="ADDRESS")
    p.add_argument(
        "--device-key-file",
        required=True,
        metavar="FILE",
        help="the device's raw hex private key, mode 0600",
    )
    p.add_argument(
        "--signature-ttl",
        type=int,
        default=SIGNATURE_TTL_SECONDS,
        metavar="SECONDS",
        help=f"device signature deadline from now (default {SIGNATURE_TTL_SECONDS})",
    )


def register_identity_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``vehicle`` and ``device`` with their subcommands to the ``motus`` parser."""
    vehicle = sub.add_parser("vehicle", help="vehicle NFTs: mint, pair, permissions, show")
    vs = vehicle.add_subparsers(dest="vehicle_cmd", required=True)

    mint = vs.add_parser("mint", help="mint a vehicle NFT for yourself")
    mint.add_argument("--make", required=True)
    mint.add_argument("--model", required=True)
    mint.add_argument("--year", type=int, required=True)
    _vin_args(mint, device_required=False)
    signer_args(mint)
    mint.set_defaults(fn=run(cmd_vehicle_mint))

    reclaim = vs.add_parser(
        "reclaim-vin", help="take back a VIN bound without evidence, with your device's reading")
    reclaim.add_argument("--make", required=True)
    reclaim.add_argument("--model", required=True)
    reclaim.add_argument("--year", type=int, required=True)
    _vin_args(reclaim, device_required=True)
    signer_args(reclaim)
    reclaim.set_defaults(fn=run(cmd_vehicle_reclaim_vin))

    pair = vs.add_parser("pair", help="pair your claimed device with your vehicle")
    pair.add_argument("--vehicle", type=parse_id, required=True, metavar="ID")
    _devicesigner_args(pair)
    signer_args(pair)
    pair.set_defaults(fn=run(cmd_vehicle_pair))

    unpair = vs.add_parser("unpair", help="unpair a vehicle's device")
    unpair.add_argument("--vehicle", type=parse_id, required=True, metavar="ID")
    signer_args(unpair)
    unpair.set_defaults(fn=run(cmd_vehicle_unpair))

    grant = vs.add_parser("grant", help="grant an address data permissions until an expiry")
    grant.add_argument("--vehicle", type=parse_id, required=True, metavar="ID")
    grant.add_argument("--grantee", type=parse_address, required=True, metavar="ADDRESS")
    grant.add_argument(
        "--perms",
        type=parse_permissions,
        required=True,
        help="bits (9, 0x09), names (non_location_history,location_history) or all",
    )
    grant.add_argument(
        "--expires",
        type=parse_expiry,
        required=True,
        help="unix seconds, +DURATION (+3600, +30d) or ISO date (2026-01-31)",
    )
    signer_args(grant)
    grant.set_defaults(fn=run(cmd_vehicle_grant))

    revoke = vs.add_parser("revoke", help="revoke a grantee's permissions")
    revoke.add_argument("--vehicle", type=parse_id, required=True, metavar="ID")
    revoke.add_argument("--grantee", type=parse_address, required=True, metavar="ADDRESS")
    signer_args(revoke)
    revoke.set_defaults(fn=run(cmd_vehicle_revoke))

    transfer = vs.add_parser("transfer", help="transfer your vehicle (resets permissions)")
    transfer.add_argument("--vehicle", type=parse_id, required=True, metavar="ID")
    transfer.add_argument("--to", type=parse_address, required=True, metavar="ADDRESS")
    signer_args(transfer)
    transfer.set_defaults(fn=run(cmd_vehicle_transfer))

    burn = vs.add_parser("burn", help="burn your unpaired vehicle")
    burn.add_argument("--vehicle", type=parse_id, required=True, metavar="ID")
    signer_args(burn)
    burn.set_defaults(fn=run(cmd_vehicle_burn))

    show = vs.add_parser("show", help="show a vehicle and its permissions")
    show.add_argument("id", type=parse_id)
    block_arg(show)
    rpc_args(show)
    show.set_defaults(fn=run(cmd_vehicle_show))

    listing = vs.add_parser("list", help="ids of the vehicles an address holds")
    listing.add_argument("--owner", type=parse_address, required=True, metavar="ADDRESS")
    block_arg(listing)
    rpc_args(listing)
    listing.set_defaults(fn=run(cmd_vehicle_list))

    device = sub.add_parser("device", help="device NFTs: mint, claim, transfer, show")
    ds = device.add_subparsers(dest="device_cmd", required=True)

    dmint = ds.add_parser("mint", help="mint a device NFT (licensed manufacturer)")
    dmint.add_argument("--device", type=parse_address, required=True, metavar="ADDRESS")
    signer_args(dmint)
    dmint.set_defaults(fn=run(cmd_device_mint))

    claim = ds.add_parser("claim", help="claim a minted device with its signature")
    _devicesigner_args(claim)
    signer_args(claim)
    claim.set_defaults(fn=run(cmd_device_claim))

    dtransfer = ds.add_parser("transfer", help="hand your claimed device on")
    dtransfer.add_argument("--device", type=parse_address, required=True, metavar="ADDRESS")
    dtransfer.add_argument("--to", type=parse_address, required=True, metavar="ADDRESS")
    signer_args(dtransfer)
    dtransfer.set_defaults(fn=run(cmd_device_transfer))

    dshow = ds.add_parser("show", help="show a device NFT")
    dshow.add_argument("address", type=parse_address)
    block_arg(dshow)
    rpc_args(dshow)
    dshow.set_defaults(fn=run(cmd_device_show))

    from cli.device import register_device_commands

    register_device_commands(ds)
