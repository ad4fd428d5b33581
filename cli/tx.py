"""``motus tx ...``: plain transactions from the command line (docs/cli.md): send MOTUS or
raw calldata to an address and wait for the receipt, look a transaction or its receipt up.

Signing, sending and exit statuses are those of the identity and governance commands
(:mod:`cli.common`, :func:`rpcclient.txsend.send_call`): estimated first, so a call that
would revert is refused with its reason and costs nothing; one JSON object on stdout;
exit 1 when the chain refuses or the transaction is unknown, 2 for a local problem.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.common import (
    NotFound,
    parse_address,
    parse_fixed_hex,
    rpc_args,
    run,
    signer_args,
    signer_key,
)
from cli.gov import parse_amount
from rpcclient import rpc_call
from rpcclient.txsend import send_call


def parse_value(text: str) -> int:
    """Wei to send: MOTUS (``1.5``) or wei (``250wei``), as ``motus gov``; zero allowed."""
    if text.strip().lower().replace("_", "") in ("0", "0wei", "0.0"):
        return 0
    return parse_amount(text)


def parse_data(text: str) -> bytes:
    s = text.strip()
    if not s.startswith("0x"):
        raise argparse.ArgumentTypeError(f"calldata is 0x-hex: {text!r}")
    try:
        return bytes.fromhex(s[2:])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not hex bytes: {text!r}") from None


def parse_tx_hash(text: str) -> str:
    return parse_fixed_hex(text, 32, "a transaction hash")


def cmd_send(args: argparse.Namespace) -> dict[str, Any]:
    """Send --value wei and/or --data to --to; wait for the receipt."""
    receipt = send_call(args.rpc, signer_key(args), args.to, args.data, args.value, timeout=args.timeout)
    return {
        "txHash": receipt["transactionHash"],
        "status": "success",
        "blockNumber": int(receipt["blockNumber"], 16),
        "gasUsed": int(receipt["gasUsed"], 16),
        "effectiveGasPrice": str(int(receipt.get("effectiveGasPrice", "0x0"), 16)),
        "from": str(receipt["from"]).lower(),
        "to": args.to,
        "value": str(args.value),
        "logs": receipt.get("logs", []),
    }


def cmd_get(args: argparse.Namespace) -> dict[str, Any]:
    """A transaction as the node has it (eth_getTransactionByHash)."""
    tx = rpc_call(args.rpc, "eth_getTransactionByHash", [args.hash])
    if tx is None:
        raise NotFound(f"no transaction {args.hash}")
    return dict(tx)


def cmd_receipt(args: argparse.Namespace) -> dict[str, Any]:
    """A mined transaction's receipt (eth_getTransactionReceipt)."""
    receipt = rpc_call(args.rpc, "eth_getTransactionReceipt", [args.hash])
    if receipt is None:
        raise NotFound(f"no receipt for {args.hash} (unknown, or not mined yet)")
    return dict(receipt)


def register_tx_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``tx`` with ``send``, ``get`` and ``receipt`` to the ``motus`` parser."""
    tx = sub.add_parser("tx", help="send MOTUS or calldata; look up transactions and receipts")
    ts = tx.add_subparsers(dest="tx_cmd", required=True)

    send = ts.add_parser("send", help="sign, send and wait for the receipt")
    send.add_argument("--to", type=parse_address, required=True, metavar="ADDRESS")
    send.add_argument("--value", type=parse_value, default=0, metavar="AMOUNT",
                      help="MOTUS (1.5) or wei (250wei); default 0")
    send.add_argument("--data", type=parse_data, default=b"", metavar="0xHEX", help="calldata")
    signer_args(send)
    send.set_defaults(fn=run(cmd_send))

    get = ts.add_parser("get", help="a transaction by hash")
    get.add_argument("hash", type=parse_tx_hash)
    rpc_args(get)
    get.set_defaults(fn=run(cmd_get))

    receipt = ts.add_parser("receipt", help="a transaction's receipt")
    receipt.add_argument("hash", type=parse_tx_hash)
    rpc_args(receipt)
    receipt.set_defaults(fn=run(cmd_receipt))
