"""``motus license ...``, ``motus grant ...`` and ``motus token ...``: developer licenses,
an owner's consent to a license, and access tokens (docs/cli.md, docs/developers.md).

Transactions are signed as ``motus vehicle`` signs them (``--keystore``, ``--from`` with
``--home``, or ``--private-key-file``). A token request is signed with a license signer's
key file (``--signer-key-file``, mode 0600) and sent to a validator's RPC. Each command
prints one JSON object; exit statuses as for ``motus vehicle``.
"""

from __future__ import annotations

import argparse
import importlib
import time
from typing import Any

from cli.common import (
    Refused,
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
from cli.identity import parse_expiry, parse_permissions, permission_names
from rpcclient import RPCError, rpc_call
from rpcclient.txsend import decode_logs, encode_call, send_call
from vm.modules.base import load_abi

ZERO_ADDRESS = "0x" + "00" * 20


abi = load_abi  # the shipped module ABIs (vm/abi)


def module_address(name: str) -> str:
    return "0x" + getattr(importlib.import_module("vm.modules.addresses"), name.upper()).hex()


def transact(args: argparse.Namespace, module: str, fn: str, *call_args: Any,
             value: int = 0) -> dict[str, Any]:
    data = encode_call(abi(module), fn, *call_args)
    address = module_address(module)
    receipt = send_call(args.rpc, signer_key(args), address, data, value, timeout=args.timeout)
    return {"txHash": receipt["transactionHash"], "status": "success",
            "blockNumber": int(receipt["blockNumber"], 16),
            "events": decode_logs(abi(module), receipt.get("logs", []), address)}


def _license_ref(text: str) -> int | str:
    """A license id (decimal) or its client id."""
    return int(text) if text.isdigit() else text


def cmd_license_mint(args: argparse.Namespace) -> dict[str, Any]:
    """Mint a license for the chain's ``license_fee`` (read from the node first)."""
    fee = int(rpc_call(args.rpc, "motus_getParams", [])["params"]["license_fee"]["value"])
    out = transact(args, "licenses", "mintLicense", args.name, args.client_id,
                   list(args.redirect_uri or []), args.signer or ZERO_ADDRESS, value=fee)
    minted = [e for e in out["events"] if e["event"] == "LicenseMinted"]
    out.update(licenseId=minted[0]["args"]["licenseId"] if minted else None, feeWei=str(fee))
    return out


def cmd_license_show(args: argparse.Namespace) -> dict[str, Any]:
    found = rpc_call(args.rpc, "motus_getLicense", [_license_ref(args.license), args.block])
    grants = rpc_call(args.rpc, "motus_getGrants", [found["licenseId"], 0, 1000, args.block])
    return {**found, "grants": grants}


def cmd_license_rotate_signer(args: argparse.Namespace) -> dict[str, Any]:
    out = transact(args, "licenses", "rotateSigner", args.license, args.old, args.new)
    out.update(licenseId=args.license, removed=args.old, added=args.new)
    return out


def cmd_grant(args: argparse.Namespace) -> dict[str, Any]:
    """The owner's consent: a template or bits to a license on vehicles, one transaction."""
    if args.revoke:
        out = transact(args, "identity", "revokeLicense", args.vehicle, args.license)
        out.update(licenseId=args.license, vehicleIds=args.vehicle, revoked=True)
        return out
    if (args.template is None) == (args.perms is None):
        raise UsageError("give exactly one of --template and --perms")
    if args.expires is None:
        raise UsageError("--expires is required to grant")
    if args.template is not None:
        names = {"basic": 1, "history": 2, "live": 3, "full": 4}
        template = names.get(args.template, None)
        if template is None:
            raise UsageError(f"--template is one of {', '.join(names)}")
        out = transact(args, "identity", "grantLicenseTemplate", args.vehicle, args.license,
                       template, args.expires)
    else:
        out = transact(args, "identity", "grantLicense", args.vehicle, args.license, args.perms,
                       args.expires)
    granted = [e["args"]["bits"] for e in out["events"] if e["event"] == "LicenseGranted"]
    out.update(licenseId=args.license, vehicleIds=args.vehicle, expiry=args.expires,
               bitNames=permission_names(granted[0]) if granted else [])
    return out


def _token_call(rpc: str, method: str, params: list[Any]) -> dict[str, Any]:
    """A token method; a refusal (-32000 with ``data.code``) exits 1 with its code."""
    try:
        return rpc_call(rpc, method, params)
    except RPCError as exc:
        data = exc.data if isinstance(exc.data, dict) else {}
        if exc.code == -32000 and "code" in data:
            raise Refused(str(data["code"]), exc.message) from None
        raise


def cmd_token_issue(args: argparse.Namespace) -> dict[str, Any]:
    """Sign a token request with a license signer key and exchange it at a validator."""
    from node.tokens import sign_token_request, token_request_json

    key = load_key_file(args.signer_key_file)
    chain_id = int(rpc_call(args.rpc, "eth_chainId"), 16)
    validator = rpc_call(args.rpc, "motus_nodeStatus")["validator"]
    if validator is None:
        raise Refused("not_validator", f"{args.rpc} is not a validator: ask a validator for "
                                       "tokens (any node verifies them)")
    # the request names the validator asked, so no other validator answers a copy of it
    request = sign_token_request(key, chain_id, bytes.fromhex(validator[2:]), args.license,
                                 args.vehicle, int(time.time() * 1000), bits=args.perms or 0,
                                 audience=args.audience, ttl_ms=args.ttl * 1000)
    return _token_call(args.rpc, "motus_issueToken", [token_request_json(request)])


def cmd_token_verify(args: argparse.Namespace) -> dict[str, Any]:
    return _token_call(args.rpc, "motus_verifyToken", [args.token])


def _vehicles(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"vehicle ids joined by commas: {text!r}") from None
    if not ids:
        raise argparse.ArgumentTypeError("no vehicle id")
    return ids


def register_license_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``license``, ``grant`` and ``token`` to the ``motus`` parser."""
    lic = sub.add_parser("license", help="developer licenses: mint, show, rotate-signer")
    ls = lic.add_subparsers(dest="license_cmd", required=True)
    mint = ls.add_parser("mint", help="mint a developer license (pays license_fee)")
    mint.add_argument("--name", required=True)
    mint.add_argument("--client-id", required=True)
    mint.add_argument("--redirect-uri", action="append", metavar="URI",
                      help="https:// or http://localhost URI (repeatable, at most 8)")
    mint.add_argument("--signer", type=parse_address, metavar="ADDRESS",
                      help="first signer key (default: the minting account)")
    signer_args(mint)
    mint.set_defaults(fn=run(cmd_license_mint))

    show = ls.add_parser("show", help="a license and the vehicles it may read")
    show.add_argument("license", help="license id or client id")
    block_arg(show)
    rpc_args(show)
    show.set_defaults(fn=run(cmd_license_show))

    rot = ls.add_parser("rotate-signer", help="replace a signer key in one transaction")
    rot.add_argument("--license", type=parse_id, required=True, metavar="ID")
    rot.add_argument("--old", type=parse_address, required=True, metavar="ADDRESS")
    rot.add_argument("--new", type=parse_address, required=True, metavar="ADDRESS")
    signer_args(rot)
    rot.set_defaults(fn=run(cmd_license_rotate_signer))

    grant = sub.add_parser("grant", help="share your vehicles' data with a developer license")
    grant.add_argument("--license", type=parse_id, required=True, metavar="ID")
    grant.add_argument("--vehicle", type=_vehicles, required=True, metavar="ID[,ID...]")
    grant.add_argument("--template", help="basic, history, live or full (docs/developers.md)")
    grant.add_argument("--perms", type=parse_permissions, help="bits or names, as vehicle grant")
    grant.add_argument("--expires", type=parse_expiry, default=None,
                       help="unix seconds, +DURATION (+30d) or ISO date")
    grant.add_argument("--revoke", action="store_true", help="revoke the license's grants instead")
    signer_args(grant)
    grant.set_defaults(fn=run(cmd_grant))

    tok = sub.add_parser("token", help="access tokens for a license")
    ts = tok.add_subparsers(dest="token_cmd", required=True)
    issue = ts.add_parser("issue", help="exchange a signed request for a token at a validator")
    issue.add_argument("--license", type=parse_id, required=True, metavar="ID")
    issue.add_argument("--vehicle", type=parse_id, required=True, metavar="ID")
    issue.add_argument("--signer-key-file", required=True, metavar="FILE")
    issue.add_argument("--perms", type=parse_permissions, help="default: every bit granted")
    issue.add_argument("--audience", default="*", help="'*' (any node) or a node's peer id")
    issue.add_argument("--ttl", type=int, default=900, metavar="SECONDS",
                       help="lifetime, 10 to 3600 s (never past the grant's expiry)")
    rpc_args(issue)
    issue.set_defaults(fn=run(cmd_token_issue))
    verify = ts.add_parser("verify", help="ask a node whether it accepts a token")
    verify.add_argument("token", metavar="0xTOKEN")
    rpc_args(verify)
    verify.set_defaults(fn=run(cmd_token_verify))

