"""The devnet's fleet simulator: cars with paired devices driving around, attesting.

    python -m devnet.fleet --rpc http://127.0.0.1:8545 [--vehicles 8] [--interval 2]
                           [--duration 0] [--seed "motus devnet fleet"] [--report 10]

Setup, all through ordinary signed transactions (docs/fleet.md): with the development
accounts of docs/protocol.md, account 1 (the licensed manufacturer) mints one device
NFT per car; car i belongs to account ``2 + i % 8``, which claims the device and mints
the vehicle NFT with the device's signed VIN reading (which pairs them), each step
carrying the device's own EIP-712 signature. Device keys and VINs are derived from ``--seed``, so a rerun finds what an
earlier run made and only does what is missing (idempotent restarts).

Then every ``--interval`` seconds each car moves along a plausible loop
(``devnet.device.Drive``), its device signs an attestation, and all of them go to the
node in one ``motus_submitAttestations`` call together with their signal payloads.
Devices ask ``motus_getChallenge`` every ``CHALLENGE_POLL_S`` and carry the nonce while
their challenge window is open. One summary line is printed every ``--report`` seconds
and at exit: height, epoch, cars, attestations sent and accepted, refusals per code.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from devnet.device import Device, Drive
from devnet.spoofers import STRATEGIES, Spoofer
from rpcclient import RPCError, rpc_call
from rpcclient.txsend import TxError, decode_result, encode_call, eth_call, wait_for_receipt
from vm.vin import vin_hash

log = logging.getLogger("motus.fleet")

DEFAULT_SEED = "motus devnet fleet"
OWNER_ACCOUNTS = tuple(range(2, 10))  # dev accounts 2..9 own the cars
MANUFACTURER_ACCOUNT = 1  # licensed in the devnet genesis
HOME = (48.137, 11.575)  # Munich: the cars start around here
TX_GAS = 1_000_000  # identity calls use a fraction of this; the unused part is not charged
TX_CHUNK = 48  # transactions queued per sender at once (the mempool keeps 64)
SIGNATURE_TTL_S = 600
CHALLENGE_POLL_S = 10.0
HEALTH_POLL_S = 2.0  # how often the node's health is asked while driving
LOOP_PERIOD_S = 900.0  # a car drives a loop of about this many seconds
MIN_STEP_MS = 1_000  # the chain's default min_interval_ms


class SetupError(Exception):
    """The fleet could not be minted, claimed or paired (the message says which step)."""


def _abi(name: str) -> list[dict[str, Any]]:
    return json.loads(resources.files("vm.abi").joinpath(f"{name}.json").read_text())


def _address(module: str) -> str:
    from vm.modules import addresses

    return "0x" + getattr(addresses, module).hex()


def device_key(seed: str, index: int) -> bytes:
    """The private key of car ``index``'s device: the same for the same seed, every run."""
    return keccak(b"motus fleet device\x00" + seed.encode() + index.to_bytes(4, "big"))


def vin(seed: str, index: int) -> str:
    """Car ``index``'s 17-character VIN (hex digits only: valid VIN characters)."""
    return "MF" + keccak(b"motus fleet vin\x00" + seed.encode() + index.to_bytes(4, "big")).hex()[
        :15].upper()


def dev_accounts() -> tuple[tuple[bytes, bytes], ...]:
    """(address, key) of the ten development accounts (genesis.devnet)."""
    from genesis.devnet import dev_accounts as accounts

    return accounts()


@dataclass
class Car:
    """One simulated car: its owner, device, vehicle NFT and where it is."""

    index: int
    owner: bytes
    owner_key: bytes
    device: Device
    vin: str  # normalised (vm.vin)
    vin_hash: bytes  # the chain's hash of it (vm.vin.vin_hash)
    vehicle_id: int = 0
    drive: Drive | None = None
    rng: random.Random = field(default_factory=random.Random)
    soc: float = 80.0
    challenge_epoch: int = -1
    kind: str = "honest"  # or a spoofer kind (devnet.spoofers.STRATEGIES)
    spoofer: Spoofer | None = None

    @property
    def device_hex(self) -> str:
        return "0x" + self.device.address.hex()


# --- transactions -------------------------------------------------------------------------


def queue_calls(rpc: str, key: bytes, to: str, calls: Sequence[bytes]) -> list[str]:
    """Sign and send ``calls`` from one account with consecutive nonces (after its
    pending ones), without waiting; returns the transaction hashes."""
    account = Account.from_key(key)
    sender = account.address.lower()
    chain_id = int(rpc_call(rpc, "eth_chainId"), 16)
    tip = int(rpc_call(rpc, "eth_maxPriorityFeePerGas"), 16)
    base = max(int(rpc_call(rpc, "eth_gasPrice"), 16) - tip, 0)
    nonce = int(rpc_call(rpc, "eth_getTransactionCount", [sender, "pending"]), 16)
    hashes = []
    for k, data in enumerate(calls):
        tx = {"type": 2, "chainId": chain_id, "nonce": nonce + k, "to": to_checksum_address(to),
              "value": 0, "data": data, "gas": TX_GAS, "maxPriorityFeePerGas": tip,
              "maxFeePerGas": 2 * base + tip}
        raw = bytes(account.sign_transaction(tx).raw_transaction)
        hashes.append(rpc_call(rpc, "eth_sendRawTransaction", ["0x" + raw.hex()]))
    return hashes


def send_batches(rpc: str, to: str, batches: Sequence[tuple[bytes, Sequence[bytes]]],
                 timeout: float = 60.0) -> None:
    """Send every sender's calls (``(key, calls)`` each), all senders at once and at
    most ``TX_CHUNK`` queued per sender, and wait for every receipt; SetupError if one
    failed. Calls of one sender execute in their order."""
    left = [(key, list(calls)) for key, calls in batches if calls]
    while left:
        hashes = []
        for key, calls in left:
            hashes += queue_calls(rpc, key, to, calls[:TX_CHUNK])
            del calls[:TX_CHUNK]
        for tx_hash in hashes:
            receipt = wait_for_receipt(rpc, tx_hash, timeout)
            if int(receipt["status"], 16) != 1:
                raise SetupError(f"transaction {tx_hash} from {receipt['from']} failed")
        left = [(key, calls) for key, calls in left if calls]


# --- setup -------------------------------------------------------------------------------


def plan_fleet(seed: str, count: int, chain_id: int, resolution: int) -> list[Car]:
    """The cars of this seed (nothing on chain yet): owner, device key, VIN hash."""
    accounts = dev_accounts()
    cars = []
    for i in range(count):
        owner, owner_key = accounts[OWNER_ACCOUNTS[i % len(OWNER_ACCOUNTS)]]
        device = Device(device_key(seed, i), chain_id, resolution)
        cars.append(Car(i, owner, owner_key, device, vin(seed, i), vin_hash(vin(seed, i)),
                        rng=random.Random(f"{seed}/{i}")))
    return cars


def _vehicles_by_vin(rpc: str, owners: set[bytes]) -> dict[bytes, int]:
    found = {}
    for owner in owners:
        for vid in rpc_call(rpc, "motus_vehiclesOf", ["0x" + owner.hex()]):
            vehicle = rpc_call(rpc, "motus_getVehicle", [vid])
            if vehicle is not None:
                found[bytes.fromhex(vehicle["vinHash"][2:])] = int(vid)
    return found


def setup_fleet(rpc: str, cars: list[Car]) -> list[Car]:
    """Mint, claim and pair whatever the cars still lack; returns the cars ready to
    drive (a car whose device or vehicle belongs to someone else is left out, with a
    warning). Idempotent: a second run sends nothing.

    A car's vehicle NFT is minted with its device's signed VIN reading
    (``mintVehicleWithDevice``), which pairs the device too: the VIN is bound with
    device evidence and nobody can reclaim it (docs/identity.md, "VINs")."""
    identity = _address("IDENTITY")
    abi = _abi("identity")
    accounts = dev_accounts()
    manufacturer_key = accounts[MANUFACTURER_ACCOUNT][1]
    # 1. device NFTs (manufacturer)
    records = {c.index: rpc_call(rpc, "motus_getDevice", [c.device_hex]) for c in cars}
    missing = [encode_call(abi, "mintDevice", c.device_hex) for c in cars
               if records[c.index] is None]
    if missing:
        log.info("minting %d devices", len(missing))
        send_batches(rpc, identity, [(manufacturer_key, missing)])
    # 2. claim (device signature), then the vehicle with the device's VIN reading, which
    # pairs them; a vehicle minted earlier without its device is paired with pairDevice
    by_vin = _vehicles_by_vin(rpc, {c.owner for c in cars})
    ready: list[Car] = []
    batches: dict[bytes, list[bytes]] = {}
    deadline = int(time.time()) + SIGNATURE_TTL_S
    minting = 0
    for c in cars:
        record = rpc_call(rpc, "motus_getDevice", [c.device_hex])
        if record is None:
            log.warning("car %d: device missing after minting; skipped", c.index)
            continue
        owner_hex = "0x" + c.owner.hex()
        nonce = int(record["nonce"])
        calls = batches.setdefault(c.owner_key, [])
        if record["owner"] != owner_hex:
            if record["claimed"]:
                log.warning("car %d: device %s was claimed by %s; skipped", c.index,
                            c.device_hex, record["owner"])
                continue
            signature = c.device.claim_signature(c.owner, nonce, deadline)
            calls.append(encode_call(abi, "claimDevice", c.device_hex, nonce, deadline, signature))
            nonce += 1
        vehicle_id = by_vin.get(c.vin_hash, 0)
        if vehicle_id == 0:
            if record["vehicleId"] is not None:
                log.warning("car %d: device %s is paired with vehicle %s; skipped", c.index,
                            c.device_hex, record["vehicleId"])
                continue
            signature = c.device.vin_signature(c.vin, c.owner, nonce, deadline)
            calls.append(encode_call(abi, "mintVehicleWithDevice", "Motus", "Fleet Sim",
                                     2018 + c.index % 8, c.vin, c.device_hex, nonce, deadline,
                                     signature))
            minting += 1
        else:
            vehicle = rpc_call(rpc, "motus_getVehicle", [vehicle_id])
            if vehicle["device"] != c.device_hex:
                if vehicle["device"] is not None or record["vehicleId"] is not None:
                    log.warning("car %d: vehicle %d or its device is paired elsewhere; skipped",
                                c.index, vehicle_id)
                    continue
                signature = c.device.pair_signature(vehicle_id, c.owner, nonce, deadline)
                calls.append(encode_call(abi, "pairDevice", vehicle_id, c.device_hex, nonce,
                                         deadline, signature))
        ready.append(c)
    if any(batches.values()):
        log.info("claiming devices and minting %d vehicles with their devices' VIN readings",
                 minting)
        send_batches(rpc, identity, list(batches.items()))
        by_vin = _vehicles_by_vin(rpc, {c.owner for c in cars})
    for c in ready:
        c.vehicle_id = by_vin.get(c.vin_hash, 0)
        record = rpc_call(rpc, "motus_getDevice", [c.device_hex])
        if c.vehicle_id == 0 or record is None or record["vehicleId"] != c.vehicle_id:
            raise SetupError(f"car {c.index}: device {c.device_hex} is not paired with "
                             f"a vehicle holding its VIN after setup")
    return ready


def chain_param(rpc: str, name: str) -> int:
    """A chain parameter (params module ``getParam``)."""
    out = eth_call(rpc, _address("PARAMS"), encode_call(_abi("params"), "getParam", name))
    return int(decode_result(_abi("params"), "getParam", 1, out)[0])


def place_cars(rpc: str, cars: list[Car], now_ms: int) -> None:
    """Where each car starts: where the chain last saw its device (seq, cell and
    odometer of its last accepted attestation), else a spot near HOME."""
    from vm.geo import cell_to_latlng

    abi = _abi("telemetry")
    telemetry = _address("TELEMETRY")
    for c in cars:
        out = eth_call(rpc, telemetry, encode_call(abi, "getDeviceState", c.device_hex))
        seq, last_ms, cell, odometer = decode_result(abi, "getDeviceState", 1, out)[:4]
        c.device.seq = int(seq)
        if seq:
            lat, lon = cell_to_latlng(int(cell))
        else:
            lat = HOME[0] + 0.01 * (c.index % 7 - 3)
            lon = HOME[1] + 0.015 * (c.index // 7 % 7 - 3)
            odometer = 10_000 + 1_000 * c.index
        # a quick restart must not come back sooner than the chain's minimum interval
        c.drive = Drive(lat, lon, heading_deg=(37.0 * c.index) % 360,
                        speed_mps=9.0 + 2.0 * (c.index % 6), odometer_m=int(odometer),
                        timestamp_ms=max(now_ms - MIN_STEP_MS, int(last_ms)))


# --- driving -----------------------------------------------------------------------------


@dataclass
class KindTally:
    """What the cars of one kind (honest, or a spoofer kind) sent and got back."""

    vehicle_ids: list[int] = field(default_factory=list)
    sent: int = 0
    accepted: int = 0
    codes: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"vehicles": len(self.vehicle_ids), "vehicleIds": self.vehicle_ids,
                "sent": self.sent, "accepted": self.accepted, "refused": dict(self.codes)}


@dataclass
class Tally:
    """What the fleet has done so far (the summary line)."""

    sent: int = 0
    accepted: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    kinds: dict[str, KindTally] = field(default_factory=dict)
    challenged: int = 0
    answered: int = 0
    errors: int = 0
    height: int = 0
    epoch: int = 0


def reading_of(car: Car, now_ms: int) -> tuple[bytes, bytes] | None:
    """The car moves to ``now_ms`` and its device signs; None when less than the
    chain's minimum interval has passed since its last reading."""
    drive = car.drive
    assert drive is not None
    dt = now_ms - drive.timestamp_ms
    if dt < MIN_STEP_MS:
        return None
    # a slow loop with a little wander, at a speed that breathes
    drive.heading_deg = (drive.heading_deg + 360.0 * dt / 1000 / LOOP_PERIOD_S
                         + car.rng.uniform(-4.0, 4.0)) % 360
    base = 9.0 + 2.0 * (car.index % 6)
    drive.speed_mps = max(0.0, base + 3.0 * math.sin(now_ms / 60_000 + car.index))
    lat, lon, odometer, ts = drive.step(dt)
    car.soc = max(5.0, car.soc - 0.002 * dt / 1000 * drive.speed_mps)
    signals = {"soc": round(car.soc, 2), "speed_kmh": round(drive.speed_mps * 3.6, 1),
               "ambient_c": 14.5, "heading_deg": round(drive.heading_deg, 1), "dtc": []}
    r = car.device.attest(vehicle_id=car.vehicle_id, timestamp_ms=ts, lat=lat, lon=lon,
                          odometer_m=odometer, speed_cmps=int(drive.speed_mps * 100),
                          signals=signals)
    return r.raw, r.payload


def on_result(car: Car, code: str) -> None:
    """Recover from what a previous run may have left behind: attestations of ours still
    pending (replay) or an odometer ahead of where the chain last saw us."""
    if code == "replay":
        car.device.seq += 64
    elif code == "odometer_rollback" and car.drive is not None:
        car.drive.odometer_m += 2_000


def submit_round(rpc: str, cars: list[Car], tally: Tally, interval_ms: int = 0) -> None:
    """One reading per car that is due (at least ``interval_ms`` after its previous
    one, less a little jitter; what a spoofer claims for a spoofer's car), submitted in
    calls of at most 1000; answers are counted per kind."""
    now_ms = int(time.time() * 1000)
    due = []
    for car in cars:
        if car.spoofer is not None:
            due += [(car, reading) for reading in car.spoofer.readings(now_ms)]
            continue
        if car.drive is not None and now_ms - car.drive.timestamp_ms < interval_ms - 300:
            continue
        reading = reading_of(car, now_ms)
        if reading is not None:
            due.append((car, reading))
    for start in range(0, len(due), 1000):
        chunk = due[start:start + 1000]
        raws = ["0x" + raw.hex() for _, (raw, _) in chunk]
        payloads = ["0x" + payload.hex() for _, (_, payload) in chunk]
        results = rpc_call(rpc, "motus_submitAttestations", [raws, payloads])
        tally.sent += len(chunk)
        for (car, _), result in zip(chunk, results, strict=True):
            kind = tally.kinds.setdefault(car.kind, KindTally())
            kind.sent += 1
            if result["accepted"]:
                tally.accepted += 1
                kind.accepted += 1
            else:
                tally.codes[result["code"]] += 1
                kind.codes[result["code"]] += 1
                if car.spoofer is None:
                    on_result(car, result["code"])


def answer_challenges(rpc: str, cars: list[Car], tally: Tally) -> None:
    """Ask each device's challenge for the current epoch; carry the nonce while the
    window is open (and nothing otherwise)."""
    for car in cars:
        c = rpc_call(rpc, "motus_getChallenge", [car.device_hex])
        tally.epoch, tally.height = int(c["epoch"]), int(c["blockNumber"])
        if c["challenged"] and c["inWindow"]:
            if car.challenge_epoch != c["epoch"]:
                car.challenge_epoch = int(c["epoch"])
                tally.challenged += 1
                tally.answered += 1
            car.device.answer_challenge(bytes.fromhex(c["nonce"][2:]))
        else:
            car.device.answer_challenge(b"")


def plan_spoofers(seed: str, per_kind: int, chain_id: int, resolution: int) -> list[Car]:
    """``per_kind`` cars of every spoofer kind, with their own devices and VINs (derived
    from ``seed`` + " spoofers", so they never collide with the honest cars)."""
    kinds = list(STRATEGIES)
    cars = plan_fleet(f"{seed} spoofers", per_kind * len(kinds), chain_id, resolution)
    for car in cars:
        car.kind = kinds[car.index % len(kinds)]
    return cars


def arm_spoofers(cars: list[Car], interval_s: float) -> None:
    """Give each spoofer car its strategy, starting from where the car was placed."""
    for car in cars:
        if car.kind != "honest" and car.drive is not None:
            car.spoofer = STRATEGIES[car.kind](car.device, car.vehicle_id, car.drive, car.rng,
                                               int(interval_s * 1000))


def write_status(path: str, tally: Tally) -> None:
    """The fleet's tally per kind as JSON, for ``motus devnet up``'s view (docs/fleet.md)."""
    from node.keys import write_atomic

    doc = {"updatedMs": int(time.time() * 1000), "height": tally.height, "epoch": tally.epoch,
           "sent": tally.sent, "accepted": tally.accepted,
           "kinds": {k: t.to_json() for k, t in tally.kinds.items()}}
    write_atomic(path, json.dumps(doc).encode(), mode=0o644)


def summary(tally: Tally, cars: int, prefix: str = "fleet") -> str:
    """One line: where the chain is and what the fleet got."""
    refused = " ".join(f"{code}={n}" for code, n in sorted(tally.codes.items())) or "none"
    return (f"{prefix}: height {tally.height} epoch {tally.epoch} vehicles {cars} "
            f"sent {tally.sent} accepted {tally.accepted} refused {refused} "
            f"challenged {tally.challenged} answered {tally.answered} errors {tally.errors}")


def kind_lines(tally: Tally) -> list[str]:
    """One line per spoofer kind: what its cars sent and the codes they earned."""
    out = []
    for kind, k in tally.kinds.items():
        if kind == "honest":
            continue
        refused = " ".join(f"{c}={n}" for c, n in sorted(k.codes.items())) or "none"
        out.append(f"fleet: spoofer {kind} (vehicles {', '.join(map(str, k.vehicle_ids))}): "
                   f"sent {k.sent} accepted {k.accepted} refused {refused}")
    return out


def chain_problem(rpc: str) -> str | None:
    """What the node says is wrong with the chain it follows (its ``/health`` verdict,
    docs/rpc.md "Health"), e.g. ``chain stalled at height 769: no new block for 40 s
    (bound 10 s)``; None while it is healthy."""
    status = rpc_call(rpc, "motus_nodeStatus", timeout=2)
    health = status.get("health") if isinstance(status, dict) else None
    if not isinstance(health, dict) or health.get("status", "ok") == "ok":
        return None
    return str(health.get("reason") or health.get("status"))


def wait_for_node(rpc: str, timeout: float, report_s: float = 10.0) -> int:
    """Wait until the node answers and has a first block; returns its chain id. Says what
    it waits for every ``report_s`` (a node that is down, a chain that does not move)."""
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + min(report_s, 2.0)
    while True:
        seen = f"no answer from {rpc}"
        try:
            if int(rpc_call(rpc, "eth_blockNumber", timeout=2), 16) >= 1:
                return int(rpc_call(rpc, "eth_chainId"), 16)
            seen = chain_problem(rpc) or "no block yet"
        except RPCError:
            pass
        if time.monotonic() >= next_report:
            print(f"fleet: waiting: {seen}", flush=True)
            next_report = time.monotonic() + report_s
        if time.monotonic() > deadline:
            raise SetupError(f"no node with blocks at {rpc} after {timeout:g}s ({seen})")
        time.sleep(0.5)


def wait_blocks(rpc: str, count: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` more blocks are committed (or ``timeout`` passes)."""
    target = int(rpc_call(rpc, "eth_blockNumber"), 16) + count
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if int(rpc_call(rpc, "eth_blockNumber"), 16) >= target:
            return
        time.sleep(0.2)


def run(args: argparse.Namespace) -> int:
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        chain_id = wait_for_node(args.rpc, args.wait, args.report)
        resolution = chain_param(args.rpc, "h3_resolution")
        planned = plan_fleet(args.seed, args.vehicles, chain_id, resolution)
        if args.spoofers:
            planned += plan_spoofers(args.seed, args.spoofers, chain_id, resolution)
        cars = setup_fleet(args.rpc, planned)
    except (SetupError, RPCError, TxError) as exc:
        print(f"fleet: setup failed: {exc}", file=sys.stderr, flush=True)
        return 1
    if not cars:
        print("fleet: no car could be set up", file=sys.stderr, flush=True)
        return 1
    # what an earlier run left pending gets into a block first, so the chain's view of
    # each device (seq, position, odometer) is where we go on from
    wait_blocks(args.rpc, 2)
    place_cars(args.rpc, cars, int(time.time() * 1000))
    arm_spoofers(cars, args.interval)
    honest = [c for c in cars if c.spoofer is None]
    print(f"fleet: {len(honest)} vehicles ready (ids "
          f"{', '.join(str(c.vehicle_id) for c in honest)}) on chain {chain_id}", flush=True)
    tally = Tally()
    for c in cars:
        tally.kinds.setdefault(c.kind, KindTally()).vehicle_ids.append(c.vehicle_id)
    spoofers = [c for c in cars if c.spoofer is not None]
    if spoofers:
        print("fleet: spoofers ready: " + ", ".join(
            f"{c.kind} (vehicle {c.vehicle_id})" for c in spoofers), flush=True)
    started = time.monotonic()
    next_round = next_report = started
    next_challenge = next_health = started
    problem: str | None = None
    while not stopping:
        now = time.monotonic()
        if args.duration and now - started >= args.duration:
            break
        if now >= next_health:
            # A stalled chain accepts attestations into a pool no block drains: say so
            # and hold the readings back rather than report "accepted" forever.
            was = problem
            try:
                problem = chain_problem(args.rpc)
            except RPCError as exc:
                problem = f"node unreachable: {exc}"
            next_health = now + HEALTH_POLL_S
            if problem != was:
                next_report = now  # say it at once when it starts, and when it ends
            # the rounds below are paced from when they start: a reading less than
            # --interval after the car's previous one would not be due yet
            now = time.monotonic()
        if problem is not None:
            if now >= next_report:
                print(f"fleet: waiting: {problem}", flush=True)
                next_report = now + args.report
            time.sleep(0.2)
            continue
        try:
            if now >= next_challenge:
                answer_challenges(args.rpc, cars, tally)
                next_challenge = now + CHALLENGE_POLL_S
            if now >= next_round:
                submit_round(args.rpc, cars, tally, int(args.interval * 1000))
                # spoofers pace themselves (a clone sends between two rounds)
                next_round = now + (min(args.interval, 0.5) if spoofers else args.interval)
                if args.status_file:
                    write_status(args.status_file, tally)
        except RPCError as exc:
            tally.errors += 1
            log.warning("fleet round failed: %s", exc)
        if now >= next_report:
            try:
                tally.height = int(rpc_call(args.rpc, "eth_blockNumber"), 16)
            except RPCError:
                pass
            print(summary(tally, len(cars)), flush=True)
            for line in kind_lines(tally):
                print(line, flush=True)
            next_report = now + args.report
        time.sleep(max(0.0, min(0.1, next_round - time.monotonic())))
    try:
        c = rpc_call(args.rpc, "motus_getChallenge", [cars[0].device_hex])
        tally.epoch, tally.height = int(c["epoch"]), int(c["blockNumber"])
    except RPCError:
        pass
    print(summary(tally, len(cars), prefix="fleet: done"), flush=True)
    for line in kind_lines(tally):
        print(line, flush=True)
    if args.status_file:
        write_status(args.status_file, tally)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devnet.fleet",
        description="Simulate a fleet of cars with paired devices attesting to a Motus node.")
    parser.add_argument("--rpc", default="http://127.0.0.1:8545", help="node JSON-RPC URL")
    parser.add_argument("--vehicles", type=int, default=8, help="cars (default 8)")
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between readings of a car (at least 1; default 2)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="seconds of driving after setup, then exit (0: until Ctrl-C)")
    parser.add_argument("--seed", default=DEFAULT_SEED,
                        help="derives device keys and VINs: the same seed finds the same cars")
    parser.add_argument("--report", type=float, default=10.0,
                        help="seconds between summary lines (default 10)")
    parser.add_argument("--spoofers", type=int, default=0, metavar="N",
                        help="N cars of each spoofer kind besides the honest ones (default 0; "
                             "docs/fleet.md, devnet.spoofers)")
    parser.add_argument("--status-file", metavar="FILE",
                        help="write the tally per kind as JSON here after every round")
    parser.add_argument("--wait", type=float, default=120.0,
                        help="seconds to wait for the node at start (default 120)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.vehicles < 1 or args.interval < 1.0 or args.report <= 0 or args.spoofers < 0:
        print("fleet: need --vehicles >= 1, --interval >= 1, --report > 0, --spoofers >= 0",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
