"""``motus telemetry read``: a vehicle's off-chain signals from the command line
(docs/cli.md, docs/telemetry.md "Signed read requests").

Signs a ``motus_getTelemetry`` request with an account key (the same key options as the
identity commands) for the node at ``--rpc``: its audience is that node's peer id (asked
with ``motus_nodeStatus``), its nonce fresh, so the request is answered once, by that node.

Prints the answer as JSON. Exit status: 0 answered; 1 refused by the node, with
``status: refused``, ``code`` (``denied``, ``period_mismatch``, ...) and ``reason``;
2 a local problem (bad argument, key, node unreachable).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from cli.common import parse_id, run, signer_args, signer_key
from rpcclient import RPCError, rpc_call
from rpcclient.txsend import TxError

DAY_MS = 86_400_000


class ReadRefused(TxError):
    """The node refused the read; ``code`` is its stable refusal code."""

    status = "refused"

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "code": self.code, "reason": self.reason}


def cmd_telemetry_read(args: argparse.Namespace) -> dict[str, Any]:
    """Read a vehicle's records that the signer may see, from the node at --rpc."""
    from node.signal_store import request_json, sign_request  # py-evm: import at use

    key = signer_key(args)
    status = rpc_call(args.rpc, "motus_nodeStatus")
    now = int(time.time() * 1000)
    to_ms = now if args.to_ms is None else args.to_ms
    from_ms = to_ms - args.days * DAY_MS if args.from_ms is None else args.from_ms
    request = sign_request(key, int(status["chainId"]), str(status["peerId"]), args.vehicle,
                           max(0, from_ms), to_ms, now)
    try:
        return rpc_call(args.rpc, "motus_getTelemetry", [request_json(request)])
    except RPCError as exc:
        code = exc.data.get("code") if isinstance(exc.data, dict) else None
        if exc.code == -32000 and isinstance(code, str):
            raise ReadRefused(code, exc.message) from None
        raise


def register_telemetry_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``telemetry read`` to the ``motus`` parser."""
    telemetry = sub.add_parser("telemetry", help="read a vehicle's off-chain signals")
    ts = telemetry.add_subparsers(dest="telemetry_cmd", required=True)
    read = ts.add_parser("read", help="records of a vehicle the signer may read")
    read.add_argument("--vehicle", type=parse_id, required=True, help="vehicle id")
    read.add_argument("--from-ms", type=int, help="start, unix ms (default: --days before --to-ms)")
    read.add_argument("--to-ms", type=int, help="end, unix ms (default: now)")
    read.add_argument("--days", type=int, default=1, help="range when --from-ms is not given "
                                                          "(default 1, at most 31)")
    signer_args(read)
    read.set_defaults(fn=run(cmd_telemetry_read))
