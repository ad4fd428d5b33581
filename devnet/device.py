"""The device side of telemetry: what firmware (or the fleet simulator) does.

A :class:`Device` holds a secp256k1 key, counts ``seq`` up, maps a position to
its coarse H3 cell at the chain's resolution, commits to the full signal payload
with a fresh random salt, signs the version-2 attestation (docs/telemetry.md) and
answers challenges::

    dev = Device(private_key, chain_id=7077)
    reading = dev.attest(vehicle_id=1, timestamp_ms=t, lat=48.137, lon=11.575,
                         odometer_m=12_345, speed_cmps=1_500, signals={"soc": 81})
    rpc("motus_submitAttestations", ["0x" + reading.raw.hex()])
    # reading.payload goes to the owner's node, next to the attestation

The signature is over ``keccak256(b"\\x19Motus Attestation:\\n" + chain_id (8 bytes)
+ rlp([version, device, vehicle_id, seq, timestamp_s, cell, odometer_hm, commitment,
challenge]))``; ``vm.attestation`` holds the encoding both sides share. What goes on
chain is coarse on purpose (docs/privacy.md); the exact values live in the payload.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey
from eth_account import Account
from eth_utils import to_checksum_address

from vm.attestation import (
    FINE_CELL_RESOLUTION,
    FINE_CELL_SIGNAL,
    MIN_SALT_BYTES,
    ODOMETER_UNIT_M,
    SALT_SIGNAL,
    TIME_UNIT_MS,
    VERSION,
    Attestation,
    compute_attestation_id,
    compute_commitment,
    compute_signing_digest,
    encode_signals,
    keccak256,
)
from vm.geo import coarse_cell_of, latlng_to_cell
from vm.params import defaults as param_defaults

EARTH_RADIUS_M = 6_371_008.8
DEFAULT_RESOLUTION = param_defaults()["h3_resolution"]


@dataclass(frozen=True)
class SignedReading:
    """One signed attestation and the off-chain payload its ``commitment`` commits to
    (the payload holds its salt: keep it, the owner's node needs it to verify)."""

    attestation: Attestation
    raw: bytes  # wire bytes for motus_submitAttestations / gossip
    id: bytes  # keccak256(raw), what motus_getAttestation takes
    payload: bytes  # canonical signal payload for the owner's signal store
    signals: dict[str, Any]


class Device:
    """A telemetry device: key, address, sequence counter, chain id and the chain's public
    H3 resolution (``h3_resolution``)."""

    def __init__(self, private_key: bytes, chain_id: int, resolution: int = DEFAULT_RESOLUTION,
                 seq: int = 0) -> None:
        self._key = PrivateKey(private_key)
        self.private_key = private_key
        self.address: bytes = keccak256(self._key.public_key.format(compressed=False)[1:])[12:]
        self.chain_id = chain_id
        self.resolution = resolution
        self.seq = seq  # last seq used; the first attestation carries seq + 1
        self.challenge = b""  # nonce included while answering a challenge

    @classmethod
    def generate(cls, chain_id: int, resolution: int = DEFAULT_RESOLUTION,
                 seed: bytes | None = None) -> Device:
        """A new device with a random key (or one derived from ``seed``, for tests)."""
        key = keccak256(b"motus device " + seed) if seed is not None else os.urandom(32)
        return cls(key, chain_id, resolution)

    @property
    def checksum_address(self) -> str:
        return Account.from_key(self.private_key).address

    def answer_challenge(self, nonce: bytes) -> None:
        """Carry ``nonce`` (from getChallenge / motus RPC) in the next attestations;
        an empty nonce stops."""
        self.challenge = bytes(nonce)

    def cell_of(self, lat: float, lon: float) -> int:
        """The public cell of a position: the ancestor, at the chain's resolution, of its
        fine (resolution-8) cell. H3 cells do not nest exactly, so the position's own
        coarse cell may differ near an edge; the ancestor is what the payload's fine cell
        is checked against (``vm.attestation.open_commitment``)."""
        return coarse_cell_of(lat, lon, self.resolution)

    def sign(self, att: Attestation) -> Attestation:
        """``att`` with the device's signature (r || s || v, v in {0, 1}, low s)."""
        digest = compute_signing_digest(att, self.chain_id)
        signature = self._key.sign_recoverable(digest, hasher=None)  # RFC 6979, low s
        return att._replace(signature=signature)

    def attest(self, *, vehicle_id: int, timestamp_ms: int, lat: float, lon: float,
               odometer_m: int, speed_cmps: int = 0, signals: dict[str, Any] | None = None,
               challenge: bytes | None = None, cell: int | None = None,
               salt: bytes | None = None) -> SignedReading:
        """Build, sign and encode the next attestation (seq + 1).

        The payload holds ``signals`` plus the exact position (``lat``, ``lon``), its
        resolution-8 cell (``cell``), ``timestamp_ms``, ``odometer_m``, ``speed_cmps``
        and ``salt`` (16 fresh random bytes unless given, for tests). The chain sees only
        the coarse cell, the time in whole seconds, the odometer in whole hectometres
        and the salted commitment. ``cell`` overrides the public cell (tests).
        """
        full = dict(signals or {})
        fine = latlng_to_cell(lat, lon, FINE_CELL_RESOLUTION)
        full.update({"lat": float(lat), "lon": float(lon), "timestamp_ms": timestamp_ms,
                     "odometer_m": odometer_m, "speed_cmps": speed_cmps,
                     FINE_CELL_SIGNAL: fine,
                     SALT_SIGNAL: os.urandom(MIN_SALT_BYTES) if salt is None else salt})
        payload = encode_signals(full)
        self.seq += 1
        att = self.sign(Attestation(
            version=VERSION,
            device=self.address,
            vehicle_id=vehicle_id,
            seq=self.seq,
            timestamp_s=timestamp_ms // TIME_UNIT_MS,
            cell=self.cell_of(lat, lon) if cell is None else cell,
            odometer_hm=odometer_m // ODOMETER_UNIT_M,
            commitment=compute_commitment(payload),
            challenge=self.challenge if challenge is None else challenge,
        ))
        raw = att.encode()
        return SignedReading(att, raw, compute_attestation_id(raw), payload, full)

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes:
        """EIP-712 signature (65 bytes, v 27/28) over a full typed-data message, e.g.
        identity's ClaimDevice / PairDevice (``vm.modules.identity.typed_data``)."""
        signed = Account.sign_typed_data(self.private_key, full_message=full_message)
        return bytes(signed.signature)

    def claim_signature(self, owner: bytes, nonce: int, deadline: int) -> bytes:
        """The device's consent to be claimed by ``owner`` (identity ``claimDevice``);
        ``nonce`` is the device's next identity nonce, ``deadline`` unix seconds."""
        from vm.modules.identity import CLAIM_DEVICE, typed_data

        message = {"device": self.checksum_address, "owner": to_checksum_address(owner),
                   "nonce": nonce, "deadline": deadline}
        return self.sign_typed_data(typed_data(CLAIM_DEVICE, self.chain_id, message))

    def vin_signature(self, vin: str, owner: bytes, nonce: int, deadline: int) -> bytes:
        """The device's signed reading of the car's VIN for ``owner`` (identity
        ``mintVehicleWithDevice`` / ``reclaimVin``): firmware reads the VIN from the car
        it is plugged into; ``vin`` must be normalised (``vm.vin.normalize_vin``)."""
        from vm.modules.identity import VIN_READING, typed_data

        message = {"vin": vin, "device": self.checksum_address,
                   "owner": to_checksum_address(owner), "nonce": nonce, "deadline": deadline}
        return self.sign_typed_data(typed_data(VIN_READING, self.chain_id, message))

    def pair_signature(self, vehicle_id: int, owner: bytes, nonce: int, deadline: int) -> bytes:
        """The device's consent to be paired with ``vehicle_id`` (identity ``pairDevice``)."""
        from vm.modules.identity import PAIR_DEVICE, typed_data

        message = {"vehicleId": vehicle_id, "device": self.checksum_address,
                   "owner": to_checksum_address(owner), "nonce": nonce, "deadline": deadline}
        return self.sign_typed_data(typed_data(PAIR_DEVICE, self.chain_id, message))


@dataclass
class Drive:
    """A plausible straight-line drive for simulations: position, odometer and clock
    advance together at ``speed_mps``."""

    lat: float
    lon: float
    heading_deg: float = 45.0
    speed_mps: float = 15.0
    odometer_m: int = 10_000
    timestamp_ms: int = 0
    _travelled_m: float = 0.0

    def step(self, dt_ms: int) -> tuple[float, float, int, int]:
        """Advance ``dt_ms``; returns (lat, lon, odometer_m, timestamp_ms)."""
        d = self.speed_mps * dt_ms / 1000
        heading = math.radians(self.heading_deg)
        self.lat += math.degrees(d * math.cos(heading) / EARTH_RADIUS_M)
        self.lon += math.degrees(d * math.sin(heading)
                                 / (EARTH_RADIUS_M * max(0.01, math.cos(math.radians(self.lat)))))
        self._travelled_m += d
        # odometers count whole metres and never lag the true distance
        self.odometer_m += int(self._travelled_m)
        self._travelled_m -= int(self._travelled_m)
        self.timestamp_ms += dt_ms
        return self.lat, self.lon, self.odometer_m, self.timestamp_ms

    def readings(self, device: Device, vehicle_id: int, count: int, dt_ms: int,
                 signals: dict[str, Any] | None = None) -> Iterator[SignedReading]:
        for i in range(count):
            lat, lon, odo, ts = self.step(dt_ms)
            yield device.attest(vehicle_id=vehicle_id, timestamp_ms=ts, lat=lat, lon=lon,
                                odometer_m=odo, speed_cmps=int(self.speed_mps * 100),
                                signals={**(signals or {}), "step": i})
