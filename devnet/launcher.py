"""``motus devnet up``: N validators (and the fleet simulator) as local processes
(docs/protocol.md). Keys and genesis live under --home and are reused on the next
run, so a devnet can be stopped and resumed. Validator i serves JSON-RPC on
127.0.0.1:(rpc_base+i) and libp2p on 127.0.0.1:(p2p_base+i)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cli.common import RED, paint, use_colour
from codec.files import write_atomic
from consensus.crypto import address_of_private_key
from genesis.devnet import new_genesis
from genesis.spec import GenesisSpec
from node.config import Config
from node.home import Home
from node.keys import load_validator_key, new_validator_key
from rpcclient import rpc_call


@dataclass
class Member:
    index: int
    home: Home
    address: bytes
    peer_id: str
    rpc_port: int
    p2p_port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"


# Voting power of each devnet validator: large enough that the 5 % double-sign slash
# (vm/modules/validators.py SLASH_BPS) is visible, which it is not on a power of 10.
DEVNET_POWER = 100


def prepare(root: Path, validators: int, rpc_base: int, p2p_base: int, chain_id: int,
            block_interval_ms: int | None = None,
            ports: list[tuple[int, int]] | None = None) -> list[Member]:
    """Create (or reuse) homes, keys, genesis and configs; returns the members.

    ``ports`` gives member i its own (rpc, p2p) ports instead of the bases plus i
    (tests and benchmarks pass ports the OS reported free)."""
    from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of

    root.mkdir(parents=True, exist_ok=True)
    members = []
    for i in range(validators):
        home = Home(root / f"validator-{i}")
        key = load_validator_key(home.validator_key) if home.validator_key.exists() else new_validator_key(
            home.validator_key)
        peer_id = peer_id_of(load_or_create_node_key(home.node_key))
        rpc_port, p2p_port = ports[i] if ports is not None else (rpc_base + i, p2p_base + i)
        members.append(Member(i, home, address_of_private_key(key), peer_id, rpc_port, p2p_port))
    genesis_path = root / "genesis.json"
    wanted = sorted(m.address for m in members)
    if genesis_path.exists():
        spec = GenesisSpec.load(genesis_path)
        if sorted(v.address for v in spec.validators) != wanted or spec.chain_id != chain_id:
            raise SystemExit(f"{genesis_path} was made for other validators or another chain id: "
                             f"remove {root} to start a fresh devnet")
    else:
        spec = new_genesis(chain_id, [(m.address, DEVNET_POWER) for m in members])
        write_atomic(genesis_path, spec.to_json().encode(), mode=0o644)
    for m in members:
        cfg = Config.load(m.home.config) if m.home.config.exists() else Config()
        cfg.node.moniker = f"validator-{m.index}"
        cfg.rpc.port = m.rpc_port
        cfg.p2p.port = m.p2p_port
        cfg.p2p.bootstrap = [node_multiaddr("127.0.0.1", o.p2p_port, o.peer_id) for o in members if o is not m]
        if block_interval_ms is not None:
            cfg.consensus.block_interval_ms = block_interval_ms
        write_atomic(m.home.config, cfg.to_toml().encode(), mode=0o644)
        if not m.home.genesis.exists():
            write_atomic(m.home.genesis, genesis_path.read_bytes(), mode=0o644)
    return members


def start(members: list[Member], log_level: str = "info") -> None:
    for m in members:
        log = open(m.home.root / "node.log", "ab")
        m.proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "node", "start", "--home", str(m.home.root),
             "--rpc-port", str(m.rpc_port), "--p2p-port", str(m.p2p_port), "--log-level", log_level],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )


def stop(procs: list[subprocess.Popen], timeout: float = 15) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _rpc(url: str, method: str, params: list | None = None, timeout: float = 1.0):
    """A quick call for the status view: a slow or unreachable node shows as down."""
    return rpc_call(url, method, params, timeout=timeout)


def status_lines(members: list[Member], fleet: subprocess.Popen | None,
                 colour: bool = False) -> list[str]:
    """One line per validator: head height, peers, mempool size, consensus round/step and
    its state (down, starting, syncing, not in the validator set, e.g. jailed, or what its
    ``/health`` finds wrong: STALLED, NO PEERS); then a line for the chain when it has
    stopped, and the fleet's. ``colour`` paints problems red (for a terminal)."""
    def red(text: str) -> str:
        return paint(text, RED, colour)

    lines = [f"{'validator':<12} {'rpc':<24} {'height':>7} {'peers':>5} {'mempool':>7} "
             f"{'round':>10}  address"]
    stalled: list[tuple[int, float]] = []  # (height, head age) of each stalled member
    reachable = 0
    for m in members:
        height = peers = pool = consensus = "-"
        state = "down" if m.proc is None or m.proc.poll() is not None else "up"
        try:
            st = _rpc(m.url, "motus_nodeStatus") or {}
            reachable += 1
            height = st["head"]["height"]
            peers = st.get("peers", "-")
            pool = st.get("mempoolSize", "-")
            if st.get("consensus"):
                consensus = f"{st['consensus']['round']} {st['consensus']['step'][:8]}"
            health = (st.get("health") or {}).get("status", "ok")
            if health == "stalled":
                age = time.time() - st["head"]["timestampMs"] / 1000
                stalled.append((int(height), age))
                state = red(f"STALLED {age:.0f}s")
            elif health == "no_peers":
                state = red("NO PEERS")
            elif st.get("syncing") or health == "syncing":
                state = "syncing"
            elif st.get("isValidator") is False:
                state = "not in validator set"
        except Exception:
            try:
                height = int(_rpc(m.url, "eth_blockNumber"), 16)
            except Exception:
                state = "starting" if state == "up" else state
        lines.append(f"validator-{m.index:<2} {m.url:<24} {height!s:>7} {peers!s:>5} {pool!s:>7} "
                     f"{consensus:>10}  0x{m.address.hex()} {state if state != 'up' else ''}")
    chain_stalled = bool(stalled) and len(stalled) == reachable
    if chain_stalled:
        height, age = max(stalled)
        lines.append(red(f"chain STALLED at height {height}: no new block for {age:.0f} s "
                         f"(see each validator's node.log under the devnet home)"))
    if fleet is not None:
        if fleet.poll() is not None:
            fleet_state = f"exited {fleet.returncode}"
        elif chain_stalled:
            fleet_state = red("waiting (chain stalled)")
        else:
            fleet_state = "running"
        lines.append(f"fleet simulator: {fleet_state}")
    return lines


def devnet_up(args) -> int:
    root = Path(args.home).resolve()
    members = prepare(root, args.validators, args.rpc_port, args.p2p_port, args.chain_id)
    procs: list[subprocess.Popen] = []
    fleet = None
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    start(members)
    procs = [m.proc for m in members if m.proc is not None]
    if not args.no_fleet and _fleet_available():
        fleet_log = open(root / "fleet.log", "ab")
        fleet = subprocess.Popen([sys.executable, "-m", "devnet.fleet", "--rpc", members[0].url],
                                 stdout=fleet_log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(fleet)
    print(f"devnet: {len(members)} validator(s) under {root}; chain id {args.chain_id}; Ctrl-C stops", flush=True)
    started = time.monotonic()
    tty = sys.stdout.isatty()
    try:
        while not stopping:
            if args.duration and time.monotonic() - started > args.duration:
                break
            lines = status_lines(members, fleet, colour=use_colour(sys.stdout))
            if tty:
                sys.stdout.write("\x1b[2J\x1b[H")
            sys.stdout.write("\n".join(lines) + "\n" + ("" if tty else "\n"))
            sys.stdout.flush()
            for _ in range(10):
                if stopping:
                    break
                time.sleep(0.1)
    finally:
        print("devnet: stopping", flush=True)
        stop(procs)
        print("devnet: stopped", flush=True)
    return 0


def _fleet_available() -> bool:
    try:
        import devnet.fleet  # noqa: F401
    except ImportError:
        return False
    return True
