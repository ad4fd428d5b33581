"""Spoofers for the devnet fleet: devices that lie, one small strategy class per kind.

Each strategy decides only what its device *claims* in a reading (where it is, when,
its odometer, its sequence number, or bytes it sends again); signing and the wire
format stay in :class:`devnet.device.Device`, so a change of the attestation format
does not touch them. The chain's proof-of-coverage checks (docs/telemetry.md) refuse
them, and the fleet counts each kind's answers by reject code (docs/fleet.md):

==================  =================================================  ===================
kind                what the device claims                             refused as
==================  =================================================  ===================
teleporter          a new city hundreds of km away at every reading    implausible_speed
replayer            the exact bytes of its own earlier readings        replay
cloned              a second unit with the same key, in another city   implausible_speed
backdater           readings timestamped 10 minutes ago                stale
odometer_tamperer   an odometer clocked back by 5 km                   odometer_rollback
desk                a recorded trip played 5x faster than real time,   future
                    stamped with the trip's own clock
==================  =================================================  ===================
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devnet.device import Device, Drive

# (raw attestation, signal payload): what the fleet submits for one reading
Reading = tuple[bytes, bytes]

CITIES = [  # far enough apart that no car covers the distance between two readings
    (52.520, 13.405), (53.551, 9.993), (50.938, 6.960), (48.208, 16.373), (47.377, 8.541),
    (48.857, 2.352), (45.464, 9.190), (50.075, 14.438), (52.370, 4.895), (51.107, 17.038),
]
BACKDATE_MS = 600_000  # twice the chain's default staleness bound (attestation_stale_ms)
CLOCKED_BACK_M = 5_000  # how far the tamperer winds the odometer back
REPLAY_AFTER_MS = 10_000  # replay only readings old enough to be in a block
RECORDED = 5  # readings the replayer records before it loops them
HONEST_FIRST = 3  # readings a tamperer sends honestly before it starts lying
DESK_SPEEDUP = 5  # the desk rig plays its trip this many times faster than real time


@dataclass
class Claim:
    """What a device says at one reading; :meth:`Spoofer.sign` turns it into bytes."""

    timestamp_ms: int
    lat: float
    lon: float
    odometer_m: int
    speed_mps: float


def _signals(claim: Claim) -> dict[str, Any]:
    return {"soc": 70.0, "speed_kmh": round(claim.speed_mps * 3.6, 1), "ambient_c": 14.5,
            "dtc": []}


class Spoofer:
    """A dishonest device on a paired vehicle. ``readings(now_ms)`` returns what it
    submits now (possibly nothing, or several readings); ``kind`` names the strategy.
    The base class drives a plausible straight-ish line that strategies bend."""

    kind = "spoofer"

    def __init__(self, device: Device, vehicle_id: int, drive: Drive, rng: random.Random,
                 interval_ms: int) -> None:
        self.device = device
        self.vehicle_id = vehicle_id
        self.drive = drive
        self.rng = rng
        self.interval_ms = interval_ms
        self.sent = 0

    def due(self, now_ms: int) -> bool:
        # a little early is fine (rounds jitter), sooner than the chain's 1 s minimum is not
        return now_ms - self.drive.timestamp_ms >= max(1_000, self.interval_ms - 300)

    def honest_claim(self, now_ms: int) -> Claim:
        """Where the car really is now (it moves along its drive)."""
        lat, lon, odometer, ts = self.drive.step(now_ms - self.drive.timestamp_ms)
        return Claim(ts, lat, lon, odometer, self.drive.speed_mps)

    def sign(self, claim: Claim, device: Device | None = None) -> Reading:
        dev = device or self.device
        r = dev.attest(vehicle_id=self.vehicle_id, timestamp_ms=claim.timestamp_ms,
                       lat=claim.lat, lon=claim.lon, odometer_m=claim.odometer_m,
                       speed_cmps=int(claim.speed_mps * 100), signals=_signals(claim))
        return r.raw, r.payload

    def readings(self, now_ms: int) -> list[Reading]:
        if not self.due(now_ms):
            return []
        self.sent += 1
        return [self.sign(self.claim(now_ms))]

    def claim(self, now_ms: int) -> Claim:
        return self.honest_claim(now_ms)


class Teleporter(Spoofer):
    """Claims a different far-away city at every reading (a GPS spoofer that jumps)."""

    kind = "teleporter"

    def claim(self, now_ms: int) -> Claim:
        c = self.honest_claim(now_ms)
        if self.sent > 1:  # the first reading anchors the device where it really is
            c.lat, c.lon = self.rng.choice(CITIES)
        return c


class Replayer(Spoofer):
    """Records its first readings, then sends those same bytes again and again."""

    kind = "replayer"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.recorded: list[tuple[int, Reading]] = []

    def readings(self, now_ms: int) -> list[Reading]:
        if not self.due(now_ms):
            return []
        self.sent += 1
        if len(self.recorded) < RECORDED:
            reading = self.sign(self.honest_claim(now_ms))
            self.recorded.append((now_ms, reading))
            return [reading]
        self.drive.timestamp_ms = now_ms  # keeps its pace
        old = [r for at, r in self.recorded if now_ms - at >= REPLAY_AFTER_MS]
        return [self.rng.choice(old)] if old else []


class ClonedDevice(Spoofer):
    """Two units with one key: the original drives here; the clone, in another city,
    sends between the original's readings with its counter moved well ahead (so that
    its readings are not mere replays)."""

    kind = "cloned"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.clone = Device(self.device.private_key, self.device.chain_id, self.device.resolution)
        self.clone_drive = Drive(*CITIES[0], heading_deg=200.0, speed_mps=12.0,
                                 odometer_m=self.drive.odometer_m, timestamp_ms=self.drive.timestamp_ms)
        self.clone_due_ms = 0

    def readings(self, now_ms: int) -> list[Reading]:
        out = []
        if self.due(now_ms):
            self.sent += 1
            out.append(self.sign(self.honest_claim(now_ms)))
            self.clone_due_ms = now_ms + self.interval_ms // 2
        elif self.clone_due_ms and now_ms >= self.clone_due_ms:
            self.clone_due_ms = 0
            self.clone.seq = max(self.clone.seq, self.device.seq + 10_000)
            lat, lon, odometer, ts = self.clone_drive.step(now_ms - self.clone_drive.timestamp_ms)
            out.append(self.sign(Claim(ts, lat, lon, odometer, self.clone_drive.speed_mps),
                                 self.clone))
        return out


class Backdater(Spoofer):
    """Uploads a drive as if it happened ten minutes ago (pre-generated data)."""

    kind = "backdater"

    def claim(self, now_ms: int) -> Claim:
        c = self.honest_claim(now_ms)
        c.timestamp_ms -= BACKDATE_MS
        return c


class OdometerTamperer(Spoofer):
    """Drives for real but reports an odometer clocked back by 5 km after a few readings
    (refused until the real odometer passes the last accepted value, then clocked back
    again)."""

    kind = "odometer_tamperer"

    def claim(self, now_ms: int) -> Claim:
        c = self.honest_claim(now_ms)
        if self.sent > HONEST_FIRST:
            c.odometer_m = max(0, c.odometer_m - CLOCKED_BACK_M)
        return c


class DeskDevice(Spoofer):
    """A dongle on a desk fed by a trip simulator that plays a recorded drive five
    times faster than real time, to farm data: each reading is stamped with the trip's
    clock, which runs ahead of the wall clock (a plausible track, an impossible time)."""

    kind = "desk"

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.wall_ms = self.drive.timestamp_ms  # when it last sent, by the wall clock

    def due(self, now_ms: int) -> bool:
        return now_ms - self.wall_ms >= max(1_000, self.interval_ms - 300)

    def claim(self, now_ms: int) -> Claim:
        trip_dt = DESK_SPEEDUP * (now_ms - self.wall_ms)
        self.wall_ms = now_ms
        lat, lon, odometer, ts = self.drive.step(trip_dt)
        return Claim(ts, lat, lon, odometer, self.drive.speed_mps)


STRATEGIES: dict[str, Callable[..., Spoofer]] = {
    s.kind: s for s in (Teleporter, Replayer, ClonedDevice, Backdater, OdometerTamperer, DeskDevice)
}
EXPECTED_CODE = {  # the reject code each kind is built to earn (docs/fleet.md)
    "teleporter": "implausible_speed",
    "replayer": "replay",
    "cloned": "implausible_speed",
    "backdater": "stale",
    "odometer_tamperer": "odometer_rollback",
    "desk": "future",
}

