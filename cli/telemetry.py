"""``motus telemetry read``: a vehicle's off-chain signals from the command line
(docs/cli.md, docs/telemetry.md "Signed read requests").

Signs a ``motus_getTelemetry`` request with an account key (the same key options as the
identity commands) for the node at ``--rpc``: its audience is that node's peer id (asked
with ``motus_nodeStatus``), its nonce fresh, so the request is answered once, by that node.
The range is ``--since``/``--until`` (``now``, ``-30m``, unix seconds or ISO time) or
``--from-ms``/``--to-ms``; by default the last ``--days`` (1).

Prints the answer as JSON. Exit status: 0 answered; 1 refused by the node, with
``status`` and ``code`` its stable refusal code (``denied``, ``period_mismatch``, ...)
and ``reason``; 2 a local problem (bad argument, key, node unreachable).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from eth_account import Account

from cli.common import Refused, parse_id, run, signer_args, signer_key
from rpcclient import RPCError, rpc_call

DAY_MS = 86_400_000


def parse_time_ms(text: str) -> int:
    """A moment as unix ms: ``now``, ``-DURATION`` (``-30m``, ``-2h``, ``-90s``, before
    now), unix seconds, or an ISO date-time (UTC unless it says otherwise)."""
    import datetime as dt

    from cli.identity import DURATION_UNITS

    s = text.strip()
    now = time.time()
    if s == "now":
        return int(now * 1000)
    if s.startswith("-"):
        body, unit = (s[1:-1], s[-1]) if s[-1:].isalpha() else (s[1:], "s")
        if unit not in DURATION_UNITS or not body.isdigit():
            raise argparse.ArgumentTypeError(f"not a duration like -30m or -2h: {text!r}")
        return int((now - int(body) * DURATION_UNITS[unit]) * 1000)
    if s.isdigit():
        return int(s) * 1000
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not now, -DURATION, unix seconds or ISO time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


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
        out = rpc_call(args.rpc, "motus_getTelemetry", [request_json(request)], timeout=30)
    except RPCError as exc:
        code = exc.data.get("code") if isinstance(exc.data, dict) else None
        if exc.code == -32000 and isinstance(code, str):
            raise Refused(code, exc.message) from None
        raise
    return {"vehicleId": args.vehicle, "reader": Account.from_key(key).address.lower(),
            "fromMs": max(0, from_ms), "toMs": to_ms, **out}


def register_telemetry_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``telemetry read`` to the ``motus`` parser."""
    telemetry = sub.add_parser("telemetry", help="read a vehicle's off-chain signals")
    ts = telemetry.add_subparsers(dest="telemetry_cmd", required=True)
    read = ts.add_parser("read", help="records of a vehicle the signer may read")
    read.add_argument("--vehicle", type=parse_id, required=True, help="vehicle id")
    start = read.add_mutually_exclusive_group()
    start.add_argument("--since", dest="from_ms", type=parse_time_ms, metavar="TIME",
                       help="start: now, -30m (write --since=-30m), unix seconds or ISO time")
    start.add_argument("--from-ms", dest="from_ms", type=int, help="start, unix ms")
    end = read.add_mutually_exclusive_group()
    end.add_argument("--until", dest="to_ms", type=parse_time_ms, metavar="TIME",
                     help="end (default now)")
    end.add_argument("--to-ms", dest="to_ms", type=int, help="end, unix ms (default: now)")
    read.add_argument("--days", type=int, default=1, help="range when no start is given "
                                                          "(default 1, at most 31)")
    signer_args(read)
    read.set_defaults(fn=run(cmd_telemetry_read))
