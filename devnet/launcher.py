"""``motus devnet up``: N validators (and the fleet simulator) as local processes
(docs/protocol.md). Keys and genesis live under --home and are reused on the next
run, so a devnet can be stopped and resumed. Validator i serves JSON-RPC on
127.0.0.1:(rpc_base+i) and libp2p on 127.0.0.1:(p2p_base+i)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cli.common import RED, UsageError, paint, use_colour
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


class DevnetError(UsageError):
    """Something about the devnet home or its processes the user fixes (one line, exit 2)."""


# Voting power of each devnet validator: large enough that the 5 % double-sign slash
# (vm/modules/validators.py SLASH_BPS) is visible, which it is not on a power of 10.
DEVNET_POWER = 100


def prepare(root: Path, validators: int, rpc_base: int, p2p_base: int, chain_id: int,
            block_interval_ms: int | None = None,
            ports: list[tuple[int, int]] | None = None,
            params: dict[str, int] | None = None) -> list[Member]:
    """Create (or reuse) homes, keys, genesis and configs; returns the members.

    ``ports`` gives member i its own (rpc, p2p) ports instead of the bases plus i
    (tests and benchmarks pass ports the OS reported free). ``params`` are chain
    parameters for a new genesis (the rest at their defaults); an existing genesis with
    other values for them is refused with a hint to ``motus devnet reset``."""
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
            raise DevnetError(f"{genesis_path} was made for other validators or another chain id: "
                              f"run motus devnet reset --home {root} to start a fresh devnet")
        differ = [f"{n}={spec.params.get(n)} (asked {v})" for n, v in sorted((params or {}).items())
                  if spec.params.get(n) != v]
        if differ:
            raise DevnetError(f"the devnet under {root} was made with other chain parameters: "
                              f"{', '.join(differ)}; run motus devnet reset --home {root} "
                              f"for a fresh one, or omit --preset/--param to keep it")
    else:
        spec = new_genesis(chain_id, [(m.address, DEVNET_POWER) for m in members],
                           params=params)
        spec = GenesisSpec.from_dict(spec.to_dict())  # the bounds of every parameter
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



# --- the chain-wide part of the view ---------------------------------------------------

WEI_PER_MOTUS = 10**18
FLEET_STATUS = "fleet-status.json"  # what the fleet simulator writes for the view
ACCOUNTS_FILE = "accounts.txt"  # the development accounts, as printed at start
PID_FILE = "devnet.pid"  # the running `devnet up`, so that `reset` can refuse


def motus_amount(wei: int | str, decimals: int = 2) -> str:
    """``wei`` as MOTUS with ``decimals`` places and thousands separators."""
    return f"{int(wei) / WEI_PER_MOTUS:,.{decimals}f} MOTUS"


@dataclass
class ChainSample:
    """What one poll of validator 0 saw (None where it did not answer)."""

    at: float
    height: int | None = None
    accepted: int | None = None
    refused: dict[str, int] | None = None
    epoch: dict | None = None


class ChainWatch:
    """Polls validator 0 (where the fleet submits) and the fleet's status file, and
    turns what changed into lines: the epoch and time to its end, attestations per
    second accepted and refused by code, the last payouts, open proposals with tallies.
    One instance per ``devnet up``; :meth:`poll` once a second."""

    RATE_WINDOW_S = 10.0  # attestation rates are averaged over this many seconds

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.samples: list[ChainSample] = []
        self.block_times: list[tuple[int, float]] = []  # (height, when first seen)
        self.payouts: dict[int, list[str]] = {}  # settled epoch -> lines (cached)
        self.proposals: list[str] = []
        self._proposals_at = -1
        self.fleet: dict | None = None

    def poll(self) -> ChainSample:
        now = time.monotonic()
        sample = ChainSample(now)
        try:
            st = _rpc(self.url, "motus_nodeStatus") or {}
            sample.height = int(st["head"]["height"])
            atts = st.get("attestations") or {}
            sample.accepted = atts.get("accepted")
            sample.refused = _rpc(self.url, "motus_getRejectCounts")
            sample.epoch = _rpc(self.url, "motus_getEpoch")
        except Exception:
            pass
        if sample.height is not None and (not self.block_times or sample.height > self.block_times[-1][0]):
            self.block_times.append((sample.height, now))
            self.block_times = self.block_times[-30:]
        self.samples.append(sample)
        self.samples = [s for s in self.samples if now - s.at <= self.RATE_WINDOW_S + 1.5]
        self.fleet = self._read_fleet()
        if sample.epoch is not None and sample.height is not None:
            self._update_payouts(int(sample.epoch["epoch"]))
            if sample.height != self._proposals_at:
                self._update_proposals(sample.height)
        return sample

    def block_time(self) -> float | None:
        """Seconds per block over the last blocks seen (None before two)."""
        if len(self.block_times) < 2:
            return None
        (h0, t0), (h1, t1) = self.block_times[0], self.block_times[-1]
        return (t1 - t0) / (h1 - h0) if h1 > h0 else None

    def rates(self) -> tuple[float, dict[str, float]] | None:
        """Attestations per second accepted, and refused by code, over the window."""
        known = [(s.at, s.accepted, s.refused) for s in self.samples
                 if s.accepted is not None and s.refused is not None]
        if len(known) < 2 or known[-1][0] - known[0][0] < 0.5:
            return None
        (t0, accepted0, refused0), (t1, accepted1, refused1) = known[0], known[-1]
        span = t1 - t0
        refused = {code: (n - refused0.get(code, 0)) / span for code, n in refused1.items()}
        return (accepted1 - accepted0) / span, {c: r for c, r in refused.items() if r > 0}

    def _update_payouts(self, current: int) -> None:
        for epoch in range(max(0, current - 2), current):
            if epoch in self.payouts:
                continue
            try:
                info = _rpc(self.url, "motus_getEpoch", [epoch])
            except Exception:
                return
            if not info or info.get("status") != "settled":
                continue
            line = (f"epoch {epoch}: {info['vehicles'] or 0} vehicle(s) paid "
                    f"{motus_amount(info['minted'] or 0)}")
            if not info["vehicles"]:
                line += " (no vehicle qualified: nothing minted)"
            lines = [line]
            for kind, k in ((self.fleet or {}).get("kinds") or {}).items():
                try:
                    earned = sum(int(_rpc(self.url, "motus_getRewards", [vid, epoch, epoch])["total"])
                                 for vid in k.get("vehicleIds", []))
                except Exception:
                    break
                lines.append(f"  {kind}: {motus_amount(earned)} to {len(k.get('vehicleIds', []))} car(s)")
            self.payouts[epoch] = lines
        for old in [e for e in self.payouts if e < current - 3]:
            del self.payouts[old]

    def _update_proposals(self, height: int) -> None:
        self._proposals_at = height
        out = []
        try:
            for status in ("voting", "passed"):
                page = _rpc(self.url, "motus_listProposals", [status, 1, 5])
                for prop in page["proposals"]:
                    out.append(proposal_line(prop, height))
        except Exception:
            return
        self.proposals = out

    def _read_fleet(self) -> dict | None:
        try:
            doc = json.loads((self.root / FLEET_STATUS).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def lines(self, height: int | None) -> list[str]:
        """The chain-wide rows of the view."""
        out = []
        last = self.samples[-1] if self.samples else None
        bt = self.block_time()
        if last is not None and last.epoch is not None:
            e = last.epoch
            left = max(0, int(e["endHeight"]) - (height or last.height or 0) + 1)
            eta = f" (~{left * bt:.0f} s)" if bt else ""
            out.append(f"epoch {e['epoch']}: blocks {e['startHeight']}..{e['endHeight']}, "
                       f"{left} block(s){eta} to its end; {e['vehiclesWithData']} vehicle(s) "
                       f"with data; block time {bt:.2f} s" if bt else
                       f"epoch {e['epoch']}: blocks {e['startHeight']}..{e['endHeight']}, "
                       f"{left} block(s) to its end; {e['vehiclesWithData']} vehicle(s) with data")
        rates = self.rates()
        if rates is not None:
            accepted, refused = rates
            by_code = " ".join(f"{c} {r:.1f}" for c, r in sorted(refused.items())) or "none"
            out.append(f"attestations/s (validator-0, last {self.RATE_WINDOW_S:.0f} s): "
                       f"accepted {accepted:.1f}, refused {sum(refused.values()):.1f}: {by_code}")
        if last is not None and last.refused:
            total = " ".join(f"{c}={n}" for c, n in sorted(last.refused.items()) if n) or "none"
            out.append(f"refused since start (validator-0): {total}")
        out += fleet_lines(self.fleet)
        if self.payouts:
            out.append("last payouts:")
            for epoch in sorted(self.payouts, reverse=True)[:2]:
                out += [f"  {x}" for x in self.payouts[epoch]]
        else:
            out.append("last payouts: nothing yet (the first epoch has not ended)")
        if self.proposals:
            out.append("proposals:")
            out += [f"  {x}" for x in self.proposals]
        return out


def proposal_line(prop: dict, height: int) -> str:
    """One open proposal: what it changes, its tally, and when what happens next."""
    change = prop["change"]
    if prop["kind"] == "param":
        what = f"{change['param']} = {change['value']}"
    elif prop["kind"] == "validator":
        what = f"validator {change['validator']} power {change['power']}"
    elif prop["kind"] == "deny":
        what = f"{'deny' if change['denied'] else 'allow'} device {change['device']}"
    else:
        what = f"{'license' if change['licensed'] else 'revoke'} manufacturer {change['manufacturer']}"
    v = prop["votes"]
    tally = " ".join(f"{k} {int(v[k]) / WEI_PER_MOTUS:,.0f}" for k in ("yes", "no", "abstain", "veto"))
    if prop["status"] == "voting":
        when = f"voting until block {prop['votingEndBlock']} (in {max(0, prop['votingEndBlock'] - height)})"
    else:
        at = int(prop.get("effectiveAt") or prop.get("executableAt") or height)
        when = f"passed; applies at block {at} (in {max(0, at - height)})"
    return f"#{prop['id']} {what} [{prop['class']}]: {when}; {tally}"


def fleet_lines(doc: dict | None) -> list[str]:
    """The fleet simulator's cars per kind: sent, accepted, refused by code."""
    if not doc or not doc.get("kinds"):
        return []
    out = [f"{'fleet kind':<16} {'cars':>4} {'sent':>6} {'accepted':>8}  refused by code"]
    for kind, k in doc["kinds"].items():
        refused = " ".join(f"{c}={n}" for c, n in sorted(k["refused"].items())) or "-"
        out.append(f"{kind:<16} {k['vehicles']:>4} {k['sent']:>6} {k['accepted']:>8}  {refused}")
    return out


# --- devnet up -------------------------------------------------------------------------


def account_lines(spec: GenesisSpec) -> list[str]:
    """The funded development accounts and their private keys, marked as public keys for
    a devnet only (as anvil prints them)."""
    from genesis.devnet import dev_accounts
    from genesis.spec import DEV_MNEMONIC

    accounts = dev_accounts()
    out = ["Development accounts (DEVNET ONLY: these keys are public; never send real funds to them)",
           "", "Available accounts"]
    for i, (address, _) in enumerate(accounts):
        balance = spec.alloc.get(address)
        amount = motus_amount(balance.balance, 0) if balance is not None else "unfunded"
        role = {0: "", 1: "  (licensed device manufacturer)"}.get(i, "  (fleet car owner)")
        from eth_utils import to_checksum_address

        out.append(f"({i}) {to_checksum_address(address)} ({amount}){role}")
    out += ["", "Private keys"]
    out += [f"({i}) 0x{key.hex()}" for i, (_, key) in enumerate(accounts)]
    out += ["", f"Mnemonic: {DEV_MNEMONIC}", "Derivation path: m/44'/60'/0'/0/i", ""]
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(root: Path) -> int | None:
    """The pid of a ``devnet up`` running on ``root``, if one is."""
    try:
        pid = int((root / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _pid_alive(pid) else None


def devnet_reset(args) -> int:
    """Delete the devnet under --home (keys, genesis, chains, logs) so that the next
    ``up`` starts a fresh chain; refused while a ``devnet up`` runs on it."""
    import shutil

    root = Path(args.home).resolve()
    if not root.exists():
        print(json.dumps({"home": str(root), "reset": False, "reason": "nothing there"}))
        return 0
    if not (root / "genesis.json").exists() and not (root / "validator-0").exists():
        raise DevnetError(f"{root} does not look like a devnet home (no genesis.json, no "
                          f"validator-0/): not deleting it")
    pid = running_pid(root)
    if pid is not None:
        raise DevnetError(f"a devnet is running on {root} (pid {pid}): stop it (Ctrl-C) first")
    shutil.rmtree(root)
    print(json.dumps({"home": str(root), "reset": True}))
    return 0


def devnet_up(args) -> int:
    from genesis.devnet import preset_params

    root = Path(args.home).resolve()
    if args.validators < 1:
        raise DevnetError("--validators must be at least 1")
    pid = running_pid(root)
    if pid is not None:
        raise DevnetError(f"a devnet is already running on {root} (pid {pid})")
    wanted = None
    if args.preset is not None or args.param:
        wanted = preset_params(args.preset, args.param)
    members = prepare(root, args.validators, args.rpc_port, args.p2p_port, args.chain_id,
                      params=wanted)
    spec = GenesisSpec.load(root / "genesis.json")
    write_atomic(root / PID_FILE, str(os.getpid()).encode(), mode=0o644)
    procs: list[subprocess.Popen] = []
    fleet = None
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    accounts = account_lines(spec)
    write_atomic(root / ACCOUNTS_FILE, "\n".join(accounts).encode(), mode=0o600)
    print("\n".join(accounts), flush=True)
    start(members)
    procs = [m.proc for m in members if m.proc is not None]
    (root / FLEET_STATUS).unlink(missing_ok=True)
    if not args.no_fleet and _fleet_available():
        fleet_log = open(root / "fleet.log", "ab")
        fleet = subprocess.Popen(
            [sys.executable, "-m", "devnet.fleet", "--rpc", members[0].url,
             "--spoofers", str(args.spoofers), "--status-file", str(root / FLEET_STATUS)],
            stdout=fleet_log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(fleet)
    epoch_len = spec.params["epoch_length_blocks"]
    print(f"devnet: {len(members)} validator(s) under {root}; chain id {args.chain_id}; "
          f"epochs of {epoch_len} blocks; RPC {members[0].url}; accounts in "
          f"{root / ACCOUNTS_FILE}; Ctrl-C stops", flush=True)
    # every validator serves the explorer on its RPC port (docs/explorer.md)
    print(f"devnet: explorer {members[0].url}/ (open it in a browser)", flush=True)
    started = time.monotonic()
    tty = sys.stdout.isatty()
    watch = ChainWatch(root, members[0].url)
    log = BlockLog()
    try:
        while not stopping:
            if args.duration and time.monotonic() - started > args.duration:
                break
            watch.poll()
            colour = use_colour(sys.stdout)
            rows = status_lines(members, fleet, colour=colour)
            if tty:
                title = (f"Motus devnet: chain {args.chain_id}, {len(members)} validator(s), "
                         f"epochs of {epoch_len} blocks, home {root} (accounts in "
                         f"{ACCOUNTS_FILE}); Ctrl-C stops")
                sys.stdout.write("\x1b[H\x1b[2J" + "\n".join([title, *rows, *watch.lines(None)]) + "\n")
            else:
                sys.stdout.write("".join(line + "\n" for line in log.lines(rows, watch)))
            sys.stdout.flush()
            for _ in range(10):
                if stopping:
                    break
                time.sleep(0.1)
    finally:
        if not tty:  # the last full picture, once, while everything still answers
            print("\n".join(status_lines(members, fleet) + watch.lines(None)), flush=True)
        print("devnet: stopping", flush=True)
        stop(procs)
        (root / PID_FILE).unlink(missing_ok=True)
        print("devnet: stopped", flush=True)
    return 0


class BlockLog:
    """The view without a terminal: the table once, then one line per new block (and
    a line for each payout, proposal change or stall), each after the time of day;
    never a repeated table."""

    def __init__(self) -> None:
        self.height = -1
        self.shown_table = False
        self.said: set[str] = set()

    def lines(self, rows: list[str], watch: ChainWatch) -> list[str]:
        out: list[str] = []
        sample = watch.samples[-1] if watch.samples else None
        height = sample.height if sample is not None else None
        if not self.shown_table and height is not None:
            out += rows
            self.shown_table = True
        if height is not None and height > self.height:
            heights = [r.split()[2] for r in rows[1:] if r.startswith("validator-")]
            line = f"block {height}"
            if sample is not None and sample.epoch is not None:
                e = sample.epoch
                line += f" epoch {e['epoch']} ({max(0, int(e['endHeight']) - height + 1)} left)"
            line += f" heights {','.join(heights)}"
            rates = watch.rates()
            if rates is not None:
                accepted, refused = rates
                by_code = " ".join(f"{c}={r:.1f}" for c, r in sorted(refused.items()))
                line += f" att/s ok={accepted:.1f}" + (f" {by_code}" if by_code else "")
            out.append(line)
            self.height = height
        events = [(r.split(":")[0], r) for r in rows if r.startswith("chain STALLED")]
        for epoch, payout in sorted(watch.payouts.items()):
            events.append((f"payout {epoch}", "payout " + "; ".join(x.strip() for x in payout)))
        events += [(p.split(" ")[0] + ("voting" if "voting until" in p else "passed"),
                    f"proposal {p}") for p in watch.proposals]
        for key, text in events:  # each said once (a stall once per height)
            if key not in self.said:
                out.append(text)
                self.said.add(key)
        stamp = time.strftime("%H:%M:%S ")  # a log line says when (local time)
        return [line if line in rows else stamp + line for line in out]


def _fleet_available() -> bool:
    try:
        import devnet.fleet  # noqa: F401
    except ImportError:
        return False
    return True
