"""``motus``: the one command-line tool (docs/cli.md).

  motus init --home DIR [--chain-id N] [--moniker NAME] [--genesis FILE] [--param NAME=VALUE]
  motus node start --home DIR
  motus keys new|list --home DIR
  motus genesis new --chain-id N --validator 0xADDR:POWER ... --out FILE
  motus status [--rpc URL]
  motus db check --home DIR
  motus devnet up --validators N --home DIR [--no-fleet] [--rpc-port B] [--p2p-port B]
  motus vehicle|device ...   (cli/identity.py)
  motus gov|rewards ...      (cli/gov.py)
  motus tx send|get|receipt  (cli/tx.py)
  motus light init|status|sync|header|balance|storage|vehicle|reward   (cli/light.py)
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from cli.common import RED, UsageError, paint, read_password, use_colour
from cli.gov import register_gov_commands
from cli.identity import register_identity_commands
from cli.license import register_license_commands
from cli.light import register_light_commands
from cli.telemetry import register_telemetry_commands
from cli.tx import register_tx_commands
from genesis.devnet import new_genesis, parse_param_assignment
from genesis.spec import DEV_CHAIN_ID, GenesisSpec
from node.config import Config
from node.errors import InUse
from node.home import Home
from node.keys import (
    list_keystores,
    load_validator_key,
    new_keystore,
    new_validator_key,
    write_atomic,
)
from vm.errors import InvalidGenesis


def _addr(s: str) -> bytes:
    s = s.lower().removeprefix("0x")
    if len(s) != 40:
        raise UsageError(f"not an address: {s}")
    return bytes.fromhex(s)


def cmd_init(args: argparse.Namespace) -> int:
    home = Home(Path(args.home))
    # chain parameters are checked before anything is made (exit 2, one line)
    params = dict(parse_param_assignment(item) for item in args.param or [])
    if params and args.genesis:
        raise UsageError("--param shapes the genesis init makes; with --genesis FILE, set the "
                         "parameters in FILE (motus genesis new --param ...)")
    if params and home.genesis.exists():
        _check_existing_params(home.genesis, params)
    home.root.mkdir(parents=True, exist_ok=True)
    owner = home.root.stat().st_uid
    if owner != os.getuid():
        # chmod would fail with a bare EPERM; say whose directory it is instead
        raise UsageError(f"home {home.root} belongs to uid {owner}, and this command runs as uid "
                         f"{os.getuid()}: create the home as this user, or run as its owner "
                         f"(in Docker: docs/docker.md, 'Volumes')")
    os.chmod(home.root, 0o700)
    if not home.config.exists():
        cfg = Config()
        cfg.node.moniker = args.moniker or home.root.name
        if args.rpc_port:
            cfg.rpc.port = args.rpc_port
        if args.rpc_host:
            cfg.rpc.host = args.rpc_host
        if args.p2p_port:
            cfg.p2p.port = args.p2p_port
        write_atomic(home.config, cfg.to_toml().encode(), mode=0o644)
    if home.validator_key.exists():
        key = load_validator_key(home.validator_key)
    else:
        key = new_validator_key(home.validator_key)
    from consensus.crypto import address_of_private_key

    address = address_of_private_key(key)
    if args.genesis:
        spec = GenesisSpec.load(args.genesis)
        write_atomic(home.genesis, spec.to_json().encode(), mode=0o644)
    elif not home.genesis.exists():
        spec = new_genesis(args.chain_id, [(address, 10)], fund_dev_accounts=not args.no_dev_accounts,
                           allow_dev_keys=args.allow_dev_keys, params=params)
        write_atomic(home.genesis, spec.to_json().encode(), mode=0o644)
    print(json.dumps({"home": str(home.root), "validator": "0x" + address.hex()}))
    return 0


def _check_existing_params(path: Path, wanted: dict[str, int]) -> None:
    """A rerun of ``init --param`` keeps the home's genesis: refuse, naming the
    differences, when it was made with other values (they would silently not apply)."""
    have = GenesisSpec.load(path).params
    differ = [f"{name}={have[name]} (asked {value})" for name, value in wanted.items()
              if have[name] != value]
    if differ:
        raise UsageError(f"{path} exists with {', '.join(differ)}; init keeps an existing "
                         "genesis: use a new home, or delete that genesis.json before the "
                         "node's first start")


def cmd_node_start(args: argparse.Namespace) -> int:
    import trio

    from node.logs import setup_logging
    from node.node import Node, check_ports

    home = Home(Path(args.home))
    cfg = Config.load(home.config)
    if args.rpc_port is not None:
        cfg.rpc.port = args.rpc_port
    if args.rpc_host is not None:
        cfg.rpc.host = args.rpc_host
    if args.p2p_port is not None:
        cfg.p2p.port = args.p2p_port
    for addr in args.bootstrap or []:
        check_bootstrap(addr)
        if addr not in cfg.p2p.bootstrap:
            cfg.p2p.bootstrap.append(addr)
    check_ports(cfg)
    setup_logging(args.log_level or cfg.node.log_level, cfg.node.log_format)
    node = Node(home.root, cfg)
    trio.run(node.run)
    return 0


def check_bootstrap(text: str) -> None:
    """A peer's full multiaddr, ``/ip4/HOST/tcp/PORT/p2p/PEER_ID`` (what ``motus status``
    prints as ``listenAddrs`` on that peer); UsageError otherwise."""
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    try:
        info_from_p2p_addr(multiaddr.Multiaddr(text))
    except Exception as exc:
        raise UsageError(f"--bootstrap {text!r} is not a peer multiaddr like "
                         f"/ip4/192.0.2.7/tcp/30333/p2p/16Uiu2...: {exc}") from None


def cmd_keys_new(args: argparse.Namespace) -> int:
    home = Home(Path(args.home))
    password = read_password(args, confirm=True)
    path = new_keystore(home.keystore, password)
    print(json.dumps({"address": "0x" + path.stem, "keystore": str(path)}))
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    home = Home(Path(args.home))
    rows = [{"address": a, "keystore": str(p)} for a, p in list_keystores(home.keystore)]
    if home.validator_key.exists():
        from consensus.crypto import address_of_private_key

        rows.insert(0, {"validator": "0x" + address_of_private_key(load_validator_key(home.validator_key)).hex(),
                        "file": str(home.validator_key)})
    print(json.dumps(rows, indent=2))
    return 0


def cmd_genesis_new(args: argparse.Namespace) -> int:
    validators = []
    for item in args.validator:
        addr, _, power = item.partition(":")
        validators.append((_addr(addr), int(power or 10)))
    alloc = {}
    for item in args.alloc or []:
        addr, _, amount = item.partition(":")
        alloc[_addr(addr)] = int(amount)
    params = dict(parse_param_assignment(item) for item in args.param or [])
    spec = new_genesis(args.chain_id, validators, fund_dev_accounts=not args.no_dev_accounts,
                       allow_dev_keys=args.allow_dev_keys, params=params, extra_alloc=alloc)
    spec = GenesisSpec.from_dict(spec.to_dict())  # validates params against their bounds
    text = spec.to_json()
    if args.out:
        write_atomic(args.out, text.encode(), mode=0o644)
    else:
        sys.stdout.write(text)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from rpcclient import RPCError, rpc_call

    try:
        status = rpc_call(args.rpc, "motus_nodeStatus", [])
    except RPCError as exc:
        raise UsageError(str(exc)) from None  # exit 2, as every command that needs a node
    print(json.dumps(status, indent=2))
    health = status.get("health") if isinstance(status, dict) else None
    if isinstance(health, dict) and health.get("status") != "ok":
        print(f"motus: {paint(str(health.get('status')).upper(), RED, use_colour(sys.stderr))}: "
              f"{health.get('reason')}", file=sys.stderr)
    return 0


def cmd_db_check(args: argparse.Namespace) -> int:
    from node.db import Database
    from node.dbcheck import check_database
    from node.store import ChainStore

    home = Home(Path(args.home))
    database = Database(home.data)
    try:
        report = check_database(ChainStore(database, rebuild_flat=False))
    finally:
        database.close()
    print(json.dumps({
        "ok": report.ok, "head": report.head, "state_root": "0x" + report.state_root.hex(),
        "trie_nodes": report.nodes, "accounts": report.accounts, "storage_slots": report.storage_slots,
        "flat_accounts": report.flat_accounts, "flat_slots": report.flat_slots,
        "flat_state": report.flat_state,
        "problems": report.problems, "oldest_state": report.oldest_state,
    }, indent=2))
    return 0 if report.ok else 1


def cmd_devnet_up(args: argparse.Namespace) -> int:
    from devnet.launcher import devnet_up

    return devnet_up(args)


RPC_HOST_HELP = ("RPC bind address (rpc.host, default 127.0.0.1); 0.0.0.0 serves every interface, "
                 "unauthenticated: docs/docker.md")


def cmd_devnet_reset(args: argparse.Namespace) -> int:
    from devnet.launcher import devnet_reset

    return devnet_reset(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="motus", description="Motus app-chain node for vehicle data")
    sub = p.add_subparsers(dest="cmd", required=True)

    init = sub.add_parser("init", help="create a node home: config, validator key, genesis")
    init.add_argument("--home", required=True)
    init.add_argument("--chain-id", type=int, default=DEV_CHAIN_ID)
    init.add_argument("--moniker")
    init.add_argument("--genesis", help="use this genesis file instead of a new single-validator one")
    init.add_argument("--no-dev-accounts", action="store_true")
    init.add_argument("--allow-dev-keys", action="store_true")
    init.add_argument("--rpc-port", type=int)
    init.add_argument("--rpc-host", help=RPC_HOST_HELP)
    init.add_argument("--p2p-port", type=int)
    init.add_argument("--param", action="append", metavar="NAME=VALUE",
                      help="a chain parameter of the new genesis (repeatable; docs/cli.md)")
    init.set_defaults(fn=cmd_init)

    node = sub.add_parser("node", help="run a node").add_subparsers(dest="node_cmd", required=True)
    start = node.add_parser("start")
    start.add_argument("--home", required=True)
    start.add_argument("--rpc-port", type=int)
    start.add_argument("--rpc-host", help=RPC_HOST_HELP)
    start.add_argument("--p2p-port", type=int)
    start.add_argument("--log-level")
    start.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                       help="a peer to dial, /ip4/HOST/tcp/PORT/p2p/PEER_ID (repeatable; added "
                            "to p2p.bootstrap of config.toml for this run)")
    start.set_defaults(fn=cmd_node_start)

    keys = sub.add_parser("keys", help="account keystores").add_subparsers(dest="keys_cmd", required=True)
    kn = keys.add_parser("new", help="create an encrypted keystore key")
    kn.add_argument("--home", required=True)
    kn.add_argument("--password-file")
    kn.set_defaults(fn=cmd_keys_new)
    kl = keys.add_parser("list")
    kl.add_argument("--home", required=True)
    kl.set_defaults(fn=cmd_keys_list)

    gen = sub.add_parser("genesis", help="genesis files").add_subparsers(dest="genesis_cmd", required=True)
    gn = gen.add_parser("new")
    gn.add_argument("--chain-id", type=int, default=DEV_CHAIN_ID)
    gn.add_argument("--validator", action="append", required=True, help="0xADDRESS[:POWER]")
    gn.add_argument("--alloc", action="append", help="0xADDRESS:WEI")
    gn.add_argument("--param", action="append", help="NAME=VALUE (chain parameter)")
    gn.add_argument("--no-dev-accounts", action="store_true")
    gn.add_argument("--allow-dev-keys", action="store_true",
                    help="fund the well-known development keys on a chain id other than 7077")
    gn.add_argument("--out")
    gn.set_defaults(fn=cmd_genesis_new)

    st = sub.add_parser("status", help="show a node's status over RPC")
    st.add_argument("--rpc", default="http://127.0.0.1:8545")
    st.set_defaults(fn=cmd_status)

    db = sub.add_parser("db", help="database tools").add_subparsers(dest="db_cmd", required=True)
    dc = db.add_parser("check", help="verify the head state root against the trie")
    dc.add_argument("--home", required=True)
    dc.set_defaults(fn=cmd_db_check)

    dv = sub.add_parser("devnet", help="local devnet").add_subparsers(dest="devnet_cmd", required=True)
    up = dv.add_parser("up", help="start N validators (and the fleet simulator) on this machine")
    up.add_argument("--validators", type=int, default=4)
    up.add_argument("--home", default=".devnet")
    up.add_argument("--no-fleet", action="store_true")
    up.add_argument("--rpc-port", type=int, default=8545)
    up.add_argument("--p2p-port", type=int, default=30333)
    up.add_argument("--chain-id", type=int, default=DEV_CHAIN_ID)
    up.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")
    up.add_argument("--preset", choices=["standard", "fast"],
                    help="chain parameters of a new devnet: fast = 30-block epochs, governance "
                         "in seconds (docs/cli.md); default: keep the existing genesis, else standard")
    up.add_argument("--param", action="append", metavar="NAME=VALUE",
                    help="set a chain parameter of a new devnet (repeatable; motus gov params lists them)")
    up.add_argument("--spoofers", type=int, default=1, metavar="N",
                    help="fleet spoofers of each kind (docs/fleet.md; 0: honest cars only)")
    up.set_defaults(fn=cmd_devnet_up)
    reset = dv.add_parser("reset", help="delete a stopped devnet's keys, genesis and chains")
    reset.add_argument("--home", default=".devnet")
    reset.set_defaults(fn=cmd_devnet_reset)
    register_identity_commands(sub)
    register_gov_commands(sub)
    register_tx_commands(sub)
    register_light_commands(sub)
    register_telemetry_commands(sub)
    register_license_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        return 130
    except BaseException as caught:
        # A failure inside the node's trio nursery arrives wrapped in an exception group:
        # report the error it holds, as if raised alone.
        exc = _single_error(caught)
        if isinstance(exc, KeyboardInterrupt):
            return 130
        if isinstance(exc, UsageError | InvalidGenesis):
            print(f"motus: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, InUse):
            print(f"motus: error: {exc}", file=sys.stderr)
            return 3
        from rpcclient import RPCError

        code = getattr(exc, "code", None)  # typed errors of the node's packages carry one
        if not isinstance(exc, Exception) or (
                code is None and not isinstance(exc, OSError | RPCError)):
            raise
        print(f"motus: error: {code or type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _single_error(exc: BaseException) -> BaseException:
    """The error an exception group stands for: its one leaf, or the first leaf with a
    stable code; else ``exc`` itself. A bind that lost a race to another process is
    reported as the busy port it is."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        coded = [e for e in leaves if getattr(e, "code", None) is not None or isinstance(e, OSError)]
        if len(leaves) == 1 or coded:
            exc = (coded or leaves)[0]
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return InUse(f"a port the node needs is in use by another process ({exc.strerror}): stop "
                     f"it, or choose other ports with --rpc-port and --p2p-port")
    return exc


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        out += _leaves(e) if isinstance(e, BaseExceptionGroup) else [e]
    return out


if __name__ == "__main__":
    sys.exit(main())
