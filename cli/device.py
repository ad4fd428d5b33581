"""``motus device new`` and ``motus device drive``: an owner's own car on a devnet
(docs/cli.md).

- ``device new`` makes a device key: a raw hex key file, mode 0600, written atomically
  (as validator keys are, ``node.keys``), which the identity commands take as
  ``--device-key-file``.
- ``device drive`` plays a drive with that key: a built-in loop or a GPX track
  (``devnet.routes``), one signed attestation every ``--interval`` seconds submitted
  with its signal payload (``motus_submitAttestations``), answering the device's
  challenge while its window is open; a reading per line on stderr and a JSON summary
  on stdout at the end.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from eth_account import Account

from cli.common import NotFound, UsageError, load_key_file, parse_id, rpc_args, run
from codec.files import write_atomic
from node.home import Home
from rpcclient import rpc_call

DEFAULT_INTERVAL_S = 2.0
DEFAULT_SPEED_MPS = 13.9  # 50 km/h
CHALLENGE_POLL_S = 10.0


# --- device new ------------------------------------------------------------------------


def cmd_device_new(args: argparse.Namespace) -> dict[str, Any]:
    """A new device key in a mode-0600 file (HOME/devices/ADDRESS.key by default)."""
    import secrets

    key = secrets.token_bytes(32)
    address = Account.from_key(key).address.lower()
    if args.out:
        path = Path(args.out)
    elif args.home:
        path = Home(Path(args.home)).root / "devices" / f"{address}.key"
    else:
        raise UsageError("give --home DIR (the key goes to DIR/devices/) or --out FILE")
    if path.exists():
        raise UsageError(f"{path} exists: not overwriting a key")
    write_atomic(path, ("0x" + key.hex() + "\n").encode(), mode=0o600)
    return {"device": address, "keyFile": str(path)}


# --- device drive ----------------------------------------------------------------------


def _device_state(rpc: str, device: str) -> tuple[int, int, int]:
    """(seq, timestamp_ms, odometer_m) of the device's last accepted attestation."""
    from devnet.fleet import _abi, _address
    from rpcclient.txsend import decode_result, encode_call, eth_call

    abi = _abi("telemetry")
    out = eth_call(rpc, _address("TELEMETRY"), encode_call(abi, "getDeviceState", device))
    seq, last_ms, _cell, odometer = decode_result(abi, "getDeviceState", 1, out)[:4]
    return int(seq), int(last_ms), int(odometer)


def cmd_device_drive(args: argparse.Namespace) -> dict[str, Any]:
    """Drive the vehicle with its paired device: sign and submit a reading every
    --interval seconds until --duration ends or Ctrl-C."""
    from devnet.device import Device
    from devnet.fleet import chain_param
    from devnet.routes import RouteDrive, RouteError, load_route

    key = load_key_file(args.device_key_file)
    device_hex = Account.from_key(key).address.lower()
    try:
        points = load_route(args.route)
    except RouteError as exc:
        raise UsageError(str(exc)) from None
    record = rpc_call(args.rpc, "motus_getDevice", [device_hex])
    if record is None:
        raise NotFound(f"device {device_hex} has no device NFT (a licensed manufacturer mints "
                       f"it: motus device mint --device {device_hex})")
    if record.get("vehicleId") != args.vehicle:
        raise NotFound(f"device {device_hex} is not paired with vehicle {args.vehicle} "
                       f"(paired: {record.get('vehicleId')}); pair it: motus vehicle pair "
                       f"--vehicle {args.vehicle} --device {device_hex} ...")
    chain_id = int(rpc_call(args.rpc, "eth_chainId"), 16)
    seq, last_ms, odometer = _device_state(args.rpc, device_hex)
    device = Device(key, chain_id, chain_param(args.rpc, "h3_resolution"), seq=seq)
    car = RouteDrive(points, speed_mps=args.speed, odometer_m=max(odometer, args.odometer))
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGINT, on_signal), signal.signal(signal.SIGTERM, on_signal)
    sent = accepted = 0
    codes: Counter[str] = Counter()
    first_block = int(rpc_call(args.rpc, "eth_blockNumber"), 16)
    started = time.monotonic()
    last_ts = max(last_ms, int(time.time() * 1000) - int(args.interval * 1000))
    next_challenge = 0.0
    try:
        while not stopping and not (args.duration and time.monotonic() - started >= args.duration):
            now_ms = int(time.time() * 1000)
            if now_ms - last_ts < int(args.interval * 1000):
                time.sleep(0.05)
                continue
            if time.monotonic() >= next_challenge:
                c = rpc_call(args.rpc, "motus_getChallenge", [device_hex])
                device.answer_challenge(bytes.fromhex(c["nonce"][2:])
                                        if c["challenged"] and c["inWindow"] else b"")
                next_challenge = time.monotonic() + CHALLENGE_POLL_S
            lat, lon = car.advance(now_ms - last_ts)
            last_ts = now_ms
            reading = device.attest(vehicle_id=args.vehicle, timestamp_ms=now_ms, lat=lat, lon=lon,
                                    odometer_m=car.odometer_m, speed_cmps=int(args.speed * 100),
                                    signals={"speed_kmh": round(args.speed * 3.6, 1)})
            (result,) = rpc_call(args.rpc, "motus_submitAttestations",
                                 [["0x" + reading.raw.hex()], ["0x" + reading.payload.hex()]])
            sent += 1
            if result["accepted"]:
                accepted += 1
            else:
                codes[result["code"]] += 1
            print(f"drive: seq {device.seq} at {lat:.5f},{lon:.5f} odometer {car.odometer_m} m: "
                  f"{'accepted' if result['accepted'] else 'refused ' + result['code']}",
                  file=sys.stderr, flush=True)
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])
    return {"device": device_hex, "vehicleId": args.vehicle, "route": args.route,
            "sent": sent, "accepted": accepted, "refused": dict(codes),
            "odometerM": car.odometer_m, "fromBlock": first_block,
            "toBlock": int(rpc_call(args.rpc, "eth_blockNumber"), 16)}


# --- parser ----------------------------------------------------------------------------


def register_device_commands(ds: argparse._SubParsersAction) -> None:
    """Add ``new`` and ``drive`` to the ``motus device`` subcommands."""
    new = ds.add_parser("new", help="make a device key (mode-0600 file)")
    new.add_argument("--home", help="node home: the key goes to HOME/devices/ADDRESS.key")
    new.add_argument("--out", metavar="FILE", help="write the key here instead")
    new.set_defaults(fn=run(cmd_device_new))

    drive = ds.add_parser("drive", help="drive your vehicle: signed readings from a route")
    drive.add_argument("--vehicle", type=parse_id, required=True, metavar="ID")
    drive.add_argument("--device-key-file", required=True, metavar="FILE",
                       help="the paired device's key (motus device new), mode 0600")
    drive.add_argument("--route", default="munich",
                       help="a built-in loop (munich, berlin, paris) or a .gpx file (default munich)")
    drive.add_argument("--interval", type=_interval, default=DEFAULT_INTERVAL_S,
                       help=f"seconds between readings, at least 1 (default {DEFAULT_INTERVAL_S:g})")
    drive.add_argument("--speed", type=_speed, default=DEFAULT_SPEED_MPS,
                       help=f"m/s along the route (default {DEFAULT_SPEED_MPS}, 50 km/h)")
    drive.add_argument("--odometer", type=int, default=0, metavar="METRES",
                       help="the car's odometer at the start (default: where the chain last saw it)")
    drive.add_argument("--duration", type=float, default=0.0,
                       help="seconds to drive, then stop (0: until Ctrl-C)")
    rpc_args(drive)
    drive.set_defaults(fn=run(cmd_device_drive))


def _interval(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 3600:
        raise argparse.ArgumentTypeError("--interval must be within 1..3600 seconds (the chain "
                                         "refuses readings less than min_interval_ms apart)")
    return value


def _speed(text: str) -> float:
    value = float(text)
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError("--speed must be within 0..60 m/s")
    return value
