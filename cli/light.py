"""``motus light ...``: the light client from the command line (docs/light.md; the
verification itself is :mod:`light.client`).

``init`` records a trust anchor (a genesis file, or a checkpoint height and hash) and the
node to ask in a state file (JSON, mode 0600: ``--state FILE``, else ``--home DIR``'s
``light.json``, else ``~/.motus/light.json``). Every later command verifies what it reads
from there, moves the trusted header forward when it verified a newer one, and saves it.

Output is one JSON object. Exit statuses (cli/common.py): 0 verified; 1 the node's
answer was refused (``{"status": "refused", "code": ..., "reason": ...}``: ``bad_commit``,
``rpc_lied``, ``expired_trust``...) or ``vehicle --owner`` did not match; 2 a local problem
(arguments, state file, genesis file, node not reachable).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.common import UsageError, parse_address, run

DEFAULT_STATE = Path("~/.motus/light.json")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


# --- argument parsing ----------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds: a number (``3600``, ``0.5``) or a number with a unit s, m, h, d, w (``14d``)."""
    s = text.strip().lower()
    scale = DURATION_UNITS.get(s[-1:], None)
    body = s[:-1] if scale else s
    try:
        value = float(body) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration like 3600, 90m, 336h or 14d: {text!r}") from None
    if not 0 < value < math.inf:  # also refuses nan; int(inf * 1000) would raise later
        raise argparse.ArgumentTypeError(f"a duration must be positive and finite, got {text!r}")
    return value


def parse_height(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a height: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"heights start at 0, got {value}")
    return value


def parse_hash(text: str) -> bytes:
    s = text.strip().lower()
    if not s.startswith("0x") or len(s) != 66:
        raise argparse.ArgumentTypeError(f"not a block hash (0x + 64 hex digits): {text!r}")
    try:
        return bytes.fromhex(s[2:])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a block hash: {text!r}") from None


def parse_uint(text: str) -> int:
    try:
        value = int(text.replace("_", ""), 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**256:
        raise argparse.ArgumentTypeError(f"must be within 0..2^256-1, got {text!r}")
    return value


def state_path(args: argparse.Namespace) -> Path:
    if args.state:
        return Path(args.state).expanduser()
    if args.home:
        return Path(args.home).expanduser() / "light.json"
    return DEFAULT_STATE.expanduser()


# --- running ---------------------------------------------------------------------------------


def light_run(handler: Callable[[argparse.Namespace], dict[str, Any]]) -> Callable[[argparse.Namespace], int]:
    """:func:`cli.common.run` plus the light client's own outcomes: a refused answer
    prints its code and reason (exit 1), a bad state file is a local problem (exit 2)."""
    from light.client import LightError, LightStateError

    def guarded(args: argparse.Namespace) -> dict[str, Any]:
        try:
            return handler(args)
        except LightStateError as exc:
            raise UsageError(str(exc)) from None

    inner = run(guarded)

    def command(args: argparse.Namespace) -> int:
        try:
            return inner(args)
        except LightError as exc:
            print(json.dumps(exc.to_json(), indent=2))
            print(f"motus: refused: {exc.code}: {exc}", file=sys.stderr)
            return 1

    command.__doc__ = handler.__doc__
    return command


def open_client(args: argparse.Namespace):
    """The client continuing from the state file, talking to ``--rpc`` or the recorded node."""
    from light.client import LightClient, TrustedState, http_rpc

    path = state_path(args)
    state = TrustedState.load(path)
    url = args.rpc or state.rpc_url
    if not url:
        raise UsageError(f"{path} records no node: give --rpc URL")
    client = LightClient(http_rpc(url), state, sequential=getattr(args, "sequential", False))
    client.on_trust = _periodic_saver(state, path)
    return client, path


SAVE_INTERVAL_S = 2.0


def _periodic_saver(state, path: Path) -> Callable[[], None]:
    """Save the trusted state at most every SAVE_INTERVAL_S while a sync advances it, so
    an interrupted or refused sync keeps the headers verified before (``_finish`` saves
    the final one)."""
    last = [time.monotonic()]

    def save() -> None:
        now = time.monotonic()
        if now - last[0] >= SAVE_INTERVAL_S:
            state.save(path)
            last[0] = now

    return save


def _finish(client, path: Path, start_height: int, out: dict[str, Any]) -> dict[str, Any]:
    """Save the state when the trusted header moved; add what was verified on the way."""
    if client.trusted.height != start_height:
        client.state.save(path)
    out["trustedHeight"] = client.trusted.height
    return out


def trusted_json(header) -> dict[str, Any]:
    return {"height": header.height, "hash": "0x" + header.hash.hex(), "timestampMs": header.timestamp_ms,
            "stateRoot": "0x" + header.state_root.hex()}


# --- commands -----------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> dict[str, Any]:
    """Record a trust anchor (genesis or checkpoint) checked against the node."""
    from light.client import LightClient, http_rpc

    path = state_path(args)
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists (trusted height kept there); --force replaces it")
    options = {"rpc_url": args.rpc, "trusting_period_s": args.trusting_period,
               "max_clock_drift_s": args.max_clock_drift}
    if args.genesis:
        from genesis.spec import GenesisSpec

        spec = GenesisSpec.load(args.genesis)
        client = LightClient.from_genesis(http_rpc(args.rpc), spec, **options)
    else:
        if args.trust_height is None or args.trust_hash is None:
            raise UsageError("give --genesis FILE, or both --trust-height N and --trust-hash 0xHASH")
        client = LightClient.from_checkpoint(http_rpc(args.rpc), args.trust_height, args.trust_hash,
                                             **options)
    client.state.save(path)
    st = client.state
    return {
        "state": str(path),
        "rpc": args.rpc,
        "chainId": st.chain_id,
        "genesisHash": None if st.genesis_hash is None else "0x" + st.genesis_hash.hex(),
        "trusted": trusted_json(st.header),
        "trustingPeriodS": st.trusting_period_s,
        "maxClockDriftS": st.max_clock_drift_s,
    }


def cmd_status(args: argparse.Namespace) -> dict[str, Any]:
    """What the state file trusts (no network)."""
    from light.client import TrustedState

    path = state_path(args)
    st = TrustedState.load(path)
    expires_ms = st.header.timestamp_ms + int(st.trusting_period_s * 1000)
    return {
        "state": str(path),
        "rpc": st.rpc_url,
        "chainId": st.chain_id,
        "genesisHash": None if st.genesis_hash is None else "0x" + st.genesis_hash.hex(),
        "trusted": trusted_json(st.header),
        "trustExpiresMs": expires_ms,
        "expired": time.time() * 1000 >= expires_ms,
        "nextValidators": [{"address": "0x" + v.address.hex(), "power": v.power}
                           for v in st.next_validators.validators],
    }


def cmd_sync(args: argparse.Namespace) -> dict[str, Any]:
    """Verify up to --to (default: the node's head) and trust it."""
    client, path = open_client(args)
    start = client.trusted.height
    header = client.sync(args.to)
    return _finish(client, path, start, {"previousHeight": start, "trusted": trusted_json(header),
                                         "verified": client.trace})


def cmd_header(args: argparse.Namespace) -> dict[str, Any]:
    """A verified header (forward from the trusted one, or back along parent hashes)."""
    from vm.block import header_fields

    client, path = open_client(args)
    start = client.trusted.height
    header = client.sync() if args.height is None else client.verify_header(args.height)
    return _finish(client, path, start, {**header_fields(header), "verified": True})


def cmd_balance(args: argparse.Namespace) -> dict[str, Any]:
    """An account's balance and nonce, proven against a verified state root."""
    client, path = open_client(args)
    start = client.trusted.height
    account = client.get_account(bytes.fromhex(args.address[2:]), (), args.height)
    return _finish(client, path, start, account.to_json())


def cmd_storage(args: argparse.Namespace) -> dict[str, Any]:
    """A storage slot of a contract or system module, proven."""
    client, path = open_client(args)
    start = client.trusted.height
    value, account = client.get_storage(bytes.fromhex(args.address[2:]), args.slot, args.height)
    out = {"address": args.address, "slot": hex(args.slot), "value": "0x" + value.to_bytes(32, "big").hex()}
    from light.client import proven_at

    return _finish(client, path, start, {**out, **proven_at(account.header)})


def cmd_vehicle(args: argparse.Namespace) -> dict[str, Any]:
    """Who owns a vehicle NFT, proven from the identity module's owner slot."""
    client, path = open_client(args)
    start = client.trusted.height
    owner = client.get_vehicle_owner(args.vehicle_id, args.height)
    out = owner.to_json()
    if args.owner is not None:
        out["ownerMatches"] = out["owner"] == args.owner
    _finish(client, path, start, out)
    if args.owner is not None and not out["ownerMatches"]:
        raise _NotTheOwner(out)
    return out


def cmd_reward(args: argparse.Namespace) -> dict[str, Any]:
    """What a vehicle scored and was paid for an epoch, proven from the rewards module."""
    client, path = open_client(args)
    start = client.trusted.height
    reward = client.get_vehicle_reward(args.vehicle_id, args.epoch, args.height)
    return _finish(client, path, start, reward.to_json())


class _NotTheOwner(Exception):
    def __init__(self, out: dict[str, Any]) -> None:
        super().__init__(f"vehicle {out['vehicleId']} is owned by {out['owner']}")
        self.out = out


def _vehicle_command(args: argparse.Namespace) -> int:
    """``vehicle`` exits 1 when --owner is given and is not the proven owner."""
    try:
        return light_run(cmd_vehicle)(args)
    except _NotTheOwner as exc:
        print(json.dumps(exc.out, indent=2))
        print(f"motus: not the owner: {exc}", file=sys.stderr)
        return 1


# --- parser ---------------------------------------------------------------------------------


def _state_args(p: argparse.ArgumentParser, rpc_help: str) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--state", metavar="FILE", help="light client state file")
    where.add_argument("--home", metavar="DIR", help="use DIR/light.json (default ~/.motus/light.json)")
    p.add_argument("--rpc", metavar="URL", help=rpc_help)


def _read_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--height", type=parse_height, help="verified block to read at (default: the node's head)")
    _state_args(p, "ask this node instead of the one recorded by init")
    p.add_argument("--sequential", action="store_true", help="verify every header instead of skipping")


def register_light_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``light`` and its subcommands to the ``motus`` parser."""
    from light.client import DEFAULT_MAX_CLOCK_DRIFT_S, DEFAULT_TRUSTING_PERIOD_S

    lc = sub.add_parser("light", help="light client: verify headers and state without trusting the node")
    ls = lc.add_subparsers(dest="light_cmd", required=True)

    init = ls.add_parser("init", help="trust a genesis file or a checkpoint")
    init.add_argument("--rpc", required=True, metavar="URL", help="the (untrusted) node to read from")
    init.add_argument("--genesis", metavar="FILE", help="trust this genesis (its hash is computed here)")
    init.add_argument("--trust-height", type=parse_height, metavar="N", help="checkpoint height")
    init.add_argument("--trust-hash", type=parse_hash, metavar="0xHASH", help="checkpoint block hash")
    init.add_argument("--trusting-period", type=parse_duration, default=DEFAULT_TRUSTING_PERIOD_S,
                      metavar="DURATION", help="how long a trusted header may be used (default 14d)")
    init.add_argument("--max-clock-drift", type=parse_duration, default=DEFAULT_MAX_CLOCK_DRIFT_S,
                      metavar="DURATION", help="how far in the future a header may be dated (default 10s)")
    init.add_argument("--force", action="store_true", help="replace an existing state file")
    where = init.add_mutually_exclusive_group()
    where.add_argument("--state", metavar="FILE", help="light client state file")
    where.add_argument("--home", metavar="DIR", help="use DIR/light.json (default ~/.motus/light.json)")
    init.set_defaults(fn=light_run(cmd_init))

    status = ls.add_parser("status", help="what the state file trusts (no network)")
    where = status.add_mutually_exclusive_group()
    where.add_argument("--state", metavar="FILE")
    where.add_argument("--home", metavar="DIR")
    status.set_defaults(fn=light_run(cmd_status))

    sync = ls.add_parser("sync", help="verify headers up to the node's head (or --to N)")
    sync.add_argument("--to", type=parse_height, metavar="N")
    _state_args(sync, "ask this node instead of the one recorded by init")
    sync.add_argument("--sequential", action="store_true", help="verify every header instead of skipping")
    sync.set_defaults(fn=light_run(cmd_sync))

    header = ls.add_parser("header", help="a verified header")
    header.add_argument("height", type=parse_height, nargs="?", help="default: the node's head")
    _state_args(header, "ask this node instead of the one recorded by init")
    header.add_argument("--sequential", action="store_true")
    header.set_defaults(fn=light_run(cmd_header))

    balance = ls.add_parser("balance", help="an account's balance and nonce, proven")
    balance.add_argument("address", type=parse_address)
    _read_args(balance)
    balance.set_defaults(fn=light_run(cmd_balance))

    storage = ls.add_parser("storage", help="a storage slot, proven")
    storage.add_argument("address", type=parse_address)
    storage.add_argument("slot", type=parse_uint)
    _read_args(storage)
    storage.set_defaults(fn=light_run(cmd_storage))

    vehicle = ls.add_parser("vehicle", help="a vehicle's owner, proven")
    vehicle.add_argument("vehicle_id", type=parse_uint, metavar="ID")
    vehicle.add_argument("--owner", type=parse_address, metavar="ADDRESS",
                         help="exit 1 unless ADDRESS is the proven owner")
    _read_args(vehicle)
    vehicle.set_defaults(fn=_vehicle_command)

    reward = ls.add_parser("reward", help="a vehicle's points and reward for an epoch, proven")
    reward.add_argument("vehicle_id", type=parse_uint, metavar="VEHICLE")
    reward.add_argument("epoch", type=parse_uint, metavar="EPOCH")
    _read_args(reward)
    reward.set_defaults(fn=light_run(cmd_reward))
