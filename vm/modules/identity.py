"""Identity module: vehicle NFTs, device NFTs, manufacturer licenses, pairing, permissions.

Modelled on DIMO's identity contracts (docs/identity.md):

- Vehicles are an ERC-721 collection living at the module address. Anyone mints a
  vehicle for themselves with make, model, year and the VIN, which the module
  normalises, validates and hashes itself (:mod:`vm.vin`); a VIN is bound to one live
  vehicle, with the evidence it was minted with: none (``mintVehicle``) or a reading
  signed by the owner's device, which is paired in the same call
  (``mintVehicleWithDevice``). A VIN bound with weaker evidence is reclaimed with
  stronger evidence (``reclaimVin``). Transfers reset every data permission, as DIMO's
  SACD does.
- Licensed manufacturers mint device NFTs bound to the device's key address. A buyer
  claims a device with the device's EIP-712 signature (proof of physical possession);
  the owner of both pairs a device with a vehicle, again with the device's signature.
  One device per vehicle, one vehicle per device; either owner unpairs.
- The vehicle owner grants an address a permission bitmask until an expiry time.
- Every mint, transfer and burn opens an **ownership period** (owner, from block time,
  from height); records and rewards are attributed to the period in which they were
  produced (docs/identity.md, "Ownership periods").

Every refusal raises :class:`ModuleRevert` with a stable reason, so the whole call is
rolled back. The storage layout (Solidity-style, one slot per struct field) is given
by the ``SLOT_*`` and field constants below and documented in docs/identity.md; the
owner of vehicle ``v`` is at ``mapping_slot(SLOT_OWNER, v)``.

The ``get_*``/``is_*``/``has_*`` functions and :func:`set_manufacturer` are the
Python API used by other modules, governance and the node's RPC: they read and
write state directly, without gas.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth.abc import StateAPI

from vm.eip712 import StructType, compute_digest, compute_domain_separator, recover_signer
from vm.errors import InvalidGenesis
from vm.modules import addresses
from vm.modules.base import (
    G_ECRECOVER,
    Call,
    ModuleRevert,
    Store,
    SystemModule,
    mapping_slot,
)
from vm.modules.erc721 import (
    INTERFACE_ERC165,
    INTERFACE_ERC721,
    INTERFACE_ERC721_METADATA,
    check_erc721_receiver,
)
from vm.vin import VinError, normalize_vin
from vm.vin import vin_hash as compute_vin_hash

ZERO_ADDRESS = b"\x00" * 20
MASK64 = (1 << 64) - 1

# --- ERC-721 identity of the vehicle collection ------------------------------
NAME = "Motus Vehicle"
SYMBOL = "MVEH"

# --- EIP-712 ------------------------------------------------------------------
DOMAIN_NAME = "Motus Identity"
DOMAIN_VERSION = "1"
CLAIM_DEVICE = StructType(
    "ClaimDevice",
    (("address", "device"), ("address", "owner"), ("uint256", "nonce"), ("uint256", "deadline")),
)
# The device's reading of the VIN from the car it is plugged into, for ``owner``: the
# evidence that binds a VIN to a vehicle NFT (docs/identity.md, "VINs"). The VIN is the
# normalised one; chain id and module address are in the domain.
VIN_READING = StructType(
    "VinReading",
    (
        ("string", "vin"),
        ("address", "device"),
        ("address", "owner"),
        ("uint256", "nonce"),
        ("uint256", "deadline"),
    ),
)
PAIR_DEVICE = StructType(
    "PairDevice",
    (
        ("uint256", "vehicleId"),
        ("address", "device"),
        ("address", "owner"),
        ("uint256", "nonce"),
        ("uint256", "deadline"),
    ),
)

# A licensed integration's consent to connect one car through its key ``device``: signed
# by a current signer of the license, so nobody can claim a synthetic device in the name
# of an integration that did not agree (docs/developers.md, "Synthetic devices").
SYNTHETIC_DEVICE = StructType(
    "SyntheticDevice",
    (
        ("uint256", "vehicleId"),
        ("uint256", "licenseId"),
        ("address", "device"),
        ("address", "owner"),
        ("uint256", "deadline"),
    ),
)

# --- permission bits (docs/identity.md, DIMO's privileges) -----------------
# What each bit opens is in docs/privacy.md ("Who can read what"). DIMO's bits 1
# (commands) and 4 (VIN credential) gate nothing on this chain (no command path, no
# VIN credential is served): they are not granted, so a grant cannot promise them.
PERMISSION_BITS: dict[str, int] = {
    "non_location_history": 0,
    "current_location": 2,
    "location_history": 3,
    "live_data": 5,
    "raw_data": 6,
    "approximate_location": 7,
}
PERMISSIONS_ALL = sum(1 << bit for bit in PERMISSION_BITS.values())
# bits that open something in stored reads (live_data opens live streams and webhooks only)
READ_PERMISSIONS = PERMISSIONS_ALL & ~(1 << PERMISSION_BITS["live_data"])


def _bits(*names: str) -> int:
    return sum(1 << PERMISSION_BITS[n] for n in names)


# Permission templates: the common grants by number, one click in a consent screen
# (docs/developers.md, "Consent"). Fixed by the protocol: a template's meaning never changes.
PERMISSION_TEMPLATES: dict[int, tuple[str, int]] = {
    1: ("basic", _bits("non_location_history", "approximate_location")),
    2: ("history", _bits("non_location_history", "location_history", "approximate_location")),
    3: ("live", _bits("non_location_history", "current_location", "live_data",
                      "approximate_location")),
    4: ("full", PERMISSIONS_ALL),
}
MAX_GRANT_VEHICLES = 100  # vehicles one grantLicense/revokeLicense call may name

# --- VIN evidence, weakest first (a stronger one reclaims a VIN bound with a weaker) --
EVIDENCE_NONE = 0  # mintVehicle: the minter's word
EVIDENCE_DEVICE = 1  # mintVehicleWithDevice / reclaimVin: the paired device's signed reading
EVIDENCE_NAMES = {EVIDENCE_NONE: "none", EVIDENCE_DEVICE: "device"}
# stable refusal reasons of the VIN paths (docs/identity.md): "<code>: <sentence>"
VIN_TAKEN = "vin_taken: the VIN is bound to another vehicle"
VIN_TAKEN_RECLAIMABLE = ("vin_taken: the VIN is bound to another vehicle without evidence; "
                         "reclaimVin moves it")
VIN_TAKEN_WITH_EVIDENCE = "vin_taken: the VIN is bound with device evidence already"

# --- vehicle attribute bounds --------------------------------------------------
MAX_LABEL_BYTES = 64  # make and model, UTF-8
MIN_YEAR = 1886  # Benz Patent-Motorwagen
MAX_YEAR = 2200

# --- gas beyond the framework's storage/log/call charges ----------------------

# --- storage layout (see docs/identity.md) ------------------------------------
SLOT_VEHICLE_COUNT = 0  # uint256: last vehicle id minted (ids start at 1, never reused)
SLOT_TOTAL_SUPPLY = 1  # uint256: vehicles in existence (minted - burned)
SLOT_DEVICE_COUNT = 2  # uint256: last device token id minted (ids start at 1)
SLOT_MANUFACTURER_COUNT = 3  # uint256: length of the manufacturer list
SLOT_OWNER = 10  # mapping(uint256 vehicleId => address owner); zero = no such vehicle
SLOT_BALANCE = 11  # mapping(address owner => uint256 vehicles owned)
SLOT_TOKEN_APPROVAL = 12  # mapping(uint256 vehicleId => address approved)
SLOT_OPERATOR_APPROVAL = 13  # mapping(address owner => mapping(address operator => bool))
SLOT_OWNED_TOKENS = 14  # mapping(address owner => mapping(uint256 index => uint256 vehicleId))
SLOT_OWNED_INDEX = 15  # mapping(uint256 vehicleId => uint256 index in its owner's list)
SLOT_VEHICLE = 16  # mapping(uint256 vehicleId => Vehicle)
SLOT_VIN = 17  # mapping(bytes32 vinHash => uint256 vehicleId)
SLOT_DEVICE = 20  # mapping(address device => Device)
SLOT_DEVICE_BY_ID = 21  # mapping(uint256 deviceTokenId => address device)
SLOT_MANUFACTURER = 30  # mapping(address => Manufacturer)
SLOT_MANUFACTURER_LIST = 31  # mapping(uint256 index => address), every address ever licensed
SLOT_PERMISSION_GENERATION = 40  # mapping(uint256 vehicleId => uint256 generation)
SLOT_GRANT = 41  # mapping(vehicleId => mapping(generation => mapping(address grantee => Grant)))
SLOT_GRANTEE = 42  # mapping(vehicleId => mapping(generation => mapping(uint256 index => address)))
SLOT_GRANTEE_COUNT = 43  # mapping(vehicleId => mapping(generation => uint256))
SLOT_PERIOD_COUNT = 44  # mapping(uint256 vehicleId => uint256 ownership periods opened)
SLOT_PERIOD = 45  # mapping(vehicleId => mapping(uint256 index => Period))
# every vehicle a grantee was ever granted on (append-only; readers keep the live grants):
# what motus_getGrants lists for a license or an address
SLOT_GRANTED_VEHICLE = 46  # mapping(address grantee => mapping(uint256 index => vehicleId))
SLOT_GRANTED_COUNT = 47  # mapping(address grantee => uint256)
SLOT_GRANTED_LISTED = 48  # mapping(address grantee => mapping(uint256 vehicleId => bool))

# struct field offsets from the struct's mapping slot
# make/model: length + keccak(slot) chunks; vin evidence: EVIDENCE_* below
V_MAKE, V_MODEL, V_YEAR, V_VIN_HASH, V_DEVICE, V_VIN_EVIDENCE = range(6)
# synthetic: the id of the license whose integration holds the device key (0: hardware)
D_TOKEN_ID, D_MANUFACTURER, D_OWNER, D_VEHICLE, D_NONCE, D_CLAIMED, D_SYNTHETIC = range(7)
M_LICENSED, M_NAME, M_LISTED = range(3)  # listed = 1 + index in SLOT_MANUFACTURER_LIST
G_BITS, G_EXPIRY, G_LISTED = range(3)  # listed = 1 + index in the grantee list
P_OWNER, P_START = range(2)  # start = from_ms << 64 | from_height
# A device's ``+3`` field is its vehicle id, with this bit set while that vehicle has had
# exactly one ownership period (set by pairing when so, cleared when a second opens):
# telemetry counts the device's attestations without reading the vehicle's period count.
# Unset says nothing (the count is read); every reader of the vehicle id masks it.
SINGLE_PERIOD_HINT = 1 << 255
_VEHICLE_ID_MASK = SINGLE_PERIOD_HINT - 1


@dataclass(frozen=True)
class DeviceRecord:
    address: bytes
    token_id: int
    manufacturer: bytes
    owner: bytes
    vehicle_id: int  # 0 = unpaired
    claimed: bool = False
    nonce: int = 0  # next nonce a device signature must carry
    synthetic_license: int = 0  # a synthetic device: the license of its integration

    @property
    def synthetic(self) -> bool:
        return self.synthetic_license != 0


@dataclass(frozen=True)
class VehicleRecord:
    vehicle_id: int
    owner: bytes
    make: str
    model: str
    year: int
    vin_hash: bytes
    device: bytes  # 20 zero bytes = unpaired


@dataclass(frozen=True)
class OwnershipPeriod:
    """One owner's stretch of a vehicle's history: from the block that gave it the NFT
    (mint or transfer) to the block that took it away (transfer or burn); ``to_ms`` and
    ``to_height`` are None while it lasts. Times are block times in unix ms (the
    header's ``timestamp_ms``); a record with device timestamp ``t``
    belongs to the period with ``from_ms <= t < to_ms``. A burn opens a last period
    owned by the zero address (nobody reads it)."""

    index: int
    owner: bytes
    from_ms: int
    from_height: int
    to_ms: int | None = None
    to_height: int | None = None

    def contains(self, timestamp_ms: int) -> bool:
        return self.from_ms <= timestamp_ms and (self.to_ms is None or timestamp_ms < self.to_ms)


@dataclass(frozen=True)
class GrantState:
    """A grantee's standing on a vehicle in the current permission generation:
    ``listed`` once granted since the last transfer (a revocation leaves it listed with
    zero bits, which tells "revoked" from "never granted")."""

    generation: int
    listed: bool
    bits: int
    expiry: int


def vehicle_owner_slot(vehicle_id: int) -> int:
    """Storage slot of the identity account holding a vehicle's owner (for eth_getProof)."""
    return mapping_slot(SLOT_OWNER, vehicle_id)


class _Ledger:
    """Typed access to the identity account's storage; metered when its Store is."""

    def __init__(self, store: Store) -> None:
        self.st = store

    # vehicles
    def owner(self, vehicle_id: int) -> bytes:
        return self.st.load_address(mapping_slot(SLOT_OWNER, vehicle_id))

    def balance(self, owner: bytes) -> int:
        return self.st.load(mapping_slot(SLOT_BALANCE, owner))

    def approved(self, vehicle_id: int) -> bytes:
        return self.st.load_address(mapping_slot(SLOT_TOKEN_APPROVAL, vehicle_id))

    def set_approved(self, vehicle_id: int, spender: bytes) -> None:
        self.st.store_address(mapping_slot(SLOT_TOKEN_APPROVAL, vehicle_id), spender)

    def is_operator(self, owner: bytes, operator: bytes) -> bool:
        return bool(self.st.load(mapping_slot(SLOT_OPERATOR_APPROVAL, owner, operator)))

    def owned_token(self, owner: bytes, index: int) -> int:
        return self.st.load(mapping_slot(SLOT_OWNED_TOKENS, owner, index))

    def vehicle_field(self, vehicle_id: int, offset: int) -> int:
        return mapping_slot(SLOT_VEHICLE, vehicle_id) + offset

    def vehicle_device(self, vehicle_id: int) -> bytes:
        return self.st.load_address(self.vehicle_field(vehicle_id, V_DEVICE))

    def vehicle_by_vin(self, vin_hash: bytes) -> int:
        return self.st.load(mapping_slot(SLOT_VIN, vin_hash))

    def vin_evidence(self, vehicle_id: int) -> int:
        return self.st.load(self.vehicle_field(vehicle_id, V_VIN_EVIDENCE))

    def add_owned(self, owner: bytes, vehicle_id: int) -> None:
        count = self.balance(owner)
        self.st.store(mapping_slot(SLOT_OWNED_TOKENS, owner, count), vehicle_id)
        self.st.store(mapping_slot(SLOT_OWNED_INDEX, vehicle_id), count)
        self.st.store(mapping_slot(SLOT_BALANCE, owner), count + 1)
        self.st.store_address(mapping_slot(SLOT_OWNER, vehicle_id), owner)

    def remove_owned(self, owner: bytes, vehicle_id: int) -> None:
        # swap-and-pop keeps each owner's list dense, so enumeration costs O(balance)
        last = self.balance(owner) - 1
        index = self.st.load(mapping_slot(SLOT_OWNED_INDEX, vehicle_id))
        if index != last:
            moved = self.owned_token(owner, last)
            self.st.store(mapping_slot(SLOT_OWNED_TOKENS, owner, index), moved)
            self.st.store(mapping_slot(SLOT_OWNED_INDEX, moved), index)
        self.st.store(mapping_slot(SLOT_OWNED_TOKENS, owner, last), 0)
        self.st.store(mapping_slot(SLOT_OWNED_INDEX, vehicle_id), 0)
        self.st.store(mapping_slot(SLOT_BALANCE, owner), last)
        # the owner slot is left to the caller: a transfer overwrites it (one write, not two)

    def vehicle(self, vehicle_id: int) -> VehicleRecord | None:
        owner = self.owner(vehicle_id)
        if owner == ZERO_ADDRESS:
            return None
        f = self.vehicle_field
        return VehicleRecord(
            vehicle_id=vehicle_id,
            owner=owner,
            make=self.st.load_bytes(f(vehicle_id, V_MAKE)).decode("utf-8", "replace"),
            model=self.st.load_bytes(f(vehicle_id, V_MODEL)).decode("utf-8", "replace"),
            year=self.st.load(f(vehicle_id, V_YEAR)),
            vin_hash=self.st.load(f(vehicle_id, V_VIN_HASH)).to_bytes(32, "big"),
            device=self.vehicle_device(vehicle_id),
        )

    # devices
    def device_field(self, device: bytes, offset: int) -> int:
        return mapping_slot(SLOT_DEVICE, device) + offset

    def device_token_id(self, device: bytes) -> int:
        return self.st.load(self.device_field(device, D_TOKEN_ID))

    def device_owner(self, device: bytes) -> bytes:
        return self.st.load_address(self.device_field(device, D_OWNER))

    def device_vehicle(self, device: bytes) -> int:
        return self.st.load(self.device_field(device, D_VEHICLE)) & _VEHICLE_ID_MASK

    def device_nonce(self, device: bytes) -> int:
        return self.st.load(self.device_field(device, D_NONCE))

    def device_claimed(self, device: bytes) -> bool:
        return bool(self.st.load(self.device_field(device, D_CLAIMED)))

    def device(self, device: bytes) -> DeviceRecord | None:
        token_id = self.device_token_id(device)
        if token_id == 0:
            return None
        return DeviceRecord(
            address=device,
            token_id=token_id,
            manufacturer=self.st.load_address(self.device_field(device, D_MANUFACTURER)),
            owner=self.device_owner(device),
            vehicle_id=self.device_vehicle(device),
            claimed=self.device_claimed(device),
            nonce=self.device_nonce(device),
            synthetic_license=self.st.load(self.device_field(device, D_SYNTHETIC)),
        )

    def link(self, vehicle_id: int, device: bytes) -> None:
        """Pair (or, with vehicle 0 / zero device, unpair) both directions at once; a
        vehicle with exactly one ownership period gives its device the hint."""
        self.st.store_address(self.vehicle_field(vehicle_id, V_DEVICE), device)
        value = vehicle_id
        if vehicle_id and self.st.load(mapping_slot(SLOT_PERIOD_COUNT, vehicle_id)) == 1:
            value |= SINGLE_PERIOD_HINT
        self.st.store(self.device_field(device, D_VEHICLE), value)

    # manufacturers
    def is_manufacturer(self, address: bytes) -> bool:
        return bool(self.st.load(mapping_slot(SLOT_MANUFACTURER, address) + M_LICENSED))

    def manufacturer_name(self, address: bytes) -> str:
        return self.st.load_bytes(mapping_slot(SLOT_MANUFACTURER, address) + M_NAME).decode(
            "utf-8", "replace"
        )

    # ownership periods
    def open_period(self, vehicle_id: int, owner: bytes, from_ms: int, height: int) -> None:
        count_slot = mapping_slot(SLOT_PERIOD_COUNT, vehicle_id)
        index = self.st.load(count_slot)
        if index == 1:  # a second period: a paired device loses the one-period hint
            device = self.vehicle_device(vehicle_id)
            if device != ZERO_ADDRESS:
                self.st.store(self.device_field(device, D_VEHICLE), vehicle_id)
        base = mapping_slot(SLOT_PERIOD, vehicle_id, index)
        self.st.store_address(base + P_OWNER, owner)
        self.st.store(base + P_START, from_ms << 64 | height)
        self.st.store(count_slot, index + 1)

    def periods(self, vehicle_id: int) -> list[OwnershipPeriod]:
        count = self.st.load(mapping_slot(SLOT_PERIOD_COUNT, vehicle_id))
        starts = []
        for index in range(count):
            base = mapping_slot(SLOT_PERIOD, vehicle_id, index)
            start = self.st.load(base + P_START)
            starts.append((self.st.load_address(base + P_OWNER), start >> 64, start & MASK64))
        if not starts:
            owner = self.owner(vehicle_id)
            # minted before periods were recorded: one period since the beginning
            return [OwnershipPeriod(0, owner, 0, 0)] if owner != ZERO_ADDRESS else []
        out = []
        for index, (owner, from_ms, from_height) in enumerate(starts):
            nxt = starts[index + 1] if index + 1 < len(starts) else None
            out.append(OwnershipPeriod(index, owner, from_ms, from_height,
                                       nxt[1] if nxt else None, nxt[2] if nxt else None))
        return out

    # permissions
    def generation(self, vehicle_id: int) -> int:
        return self.st.load(mapping_slot(SLOT_PERMISSION_GENERATION, vehicle_id))

    def reset_permissions(self, vehicle_id: int) -> None:
        # O(1) reset: grants are keyed by generation, so a new generation starts empty
        # (DIMO's SACD versions its permission records the same way)
        slot = mapping_slot(SLOT_PERMISSION_GENERATION, vehicle_id)
        self.st.store(slot, self.st.load(slot) + 1)

    def grant_slot(self, vehicle_id: int, generation: int, grantee: bytes) -> int:
        return mapping_slot(SLOT_GRANT, vehicle_id, generation, grantee)

    def grant_state(self, vehicle_id: int, grantee: bytes) -> GrantState:
        generation = self.generation(vehicle_id)
        base = self.grant_slot(vehicle_id, generation, grantee)
        return GrantState(generation, self.st.load(base + G_LISTED) != 0,
                          self.st.load(base + G_BITS), self.st.load(base + G_EXPIRY))

    def granted_vehicles(self, grantee: bytes) -> list[int]:
        count = self.st.load(mapping_slot(SLOT_GRANTED_COUNT, grantee))
        return [self.st.load(mapping_slot(SLOT_GRANTED_VEHICLE, grantee, i)) for i in range(count)]

    def grant(self, vehicle_id: int, grantee: bytes) -> tuple[int, int]:
        base = self.grant_slot(vehicle_id, self.generation(vehicle_id), grantee)
        return self.st.load(base + G_BITS), self.st.load(base + G_EXPIRY)

    def grants(self, vehicle_id: int) -> list[tuple[bytes, int, int]]:
        generation = self.generation(vehicle_id)
        out = []
        for i in range(self.st.load(mapping_slot(SLOT_GRANTEE_COUNT, vehicle_id, generation))):
            grantee = self.st.load_address(mapping_slot(SLOT_GRANTEE, vehicle_id, generation, i))
            base = self.grant_slot(vehicle_id, generation, grantee)
            bits = self.st.load(base + G_BITS)
            if bits:
                out.append((grantee, bits, self.st.load(base + G_EXPIRY)))
        return out

    def has_permission(self, vehicle_id: int, grantee: bytes, bits: int, now: int) -> bool:
        if bits == 0 or bits & ~PERMISSIONS_ALL:
            return False
        owner = self.owner(vehicle_id)
        if owner == ZERO_ADDRESS:
            return False
        if grantee == owner:
            return True  # the owner may always read their own car
        granted, expiry = self.grant(vehicle_id, grantee)
        return granted & bits == bits and now < expiry


# --- Python read API (other modules, governance, RPC) --------------------------


def _ledger(state: StateAPI) -> _Ledger:
    return _Ledger(Store(state, addresses.IDENTITY))


def get_device(state: StateAPI, device_address: bytes) -> DeviceRecord | None:
    """The device NFT bound to ``device_address``, or None if no manufacturer minted one."""
    return _ledger(state).device(device_address)


def get_owner(state: StateAPI, vehicle_id: int) -> bytes | None:
    """The vehicle's current owner (one storage read), None if it does not exist."""
    owner = _ledger(state).owner(vehicle_id)
    return None if owner == ZERO_ADDRESS else owner


def get_vehicle_pairing(state: StateAPI, vehicle_id: int) -> tuple[bytes | None, bytes | None, bool]:
    """(current owner or None if the vehicle does not exist, paired device or None,
    whether that device is synthetic): what rewards reads of a vehicle to score it, in at
    most three storage reads (``get_vehicle`` reads the whole record)."""
    led = _ledger(state)
    owner = led.owner(vehicle_id)
    if owner == ZERO_ADDRESS:
        return None, None, False
    device = led.vehicle_device(vehicle_id)
    if device == ZERO_ADDRESS:
        return owner, None, False
    return owner, device, bool(led.st.load(led.device_field(device, D_SYNTHETIC)))


def device_pairing(state: StateAPI, device_address: bytes) -> int | None:
    """The vehicle the device is paired with (0: none), or None if no manufacturer minted
    it: the two fields of :func:`get_device` that attestation checks use, in one read for a
    paired device (two otherwise)."""
    return pairing_reader(state)(device_address)


def pairing_reader(state: StateAPI) -> Callable[[bytes], int | None]:
    """:func:`device_pairing` for many devices of one state."""
    hinted = hinted_pairing_reader(state)

    def pairing(device_address: bytes) -> int | None:
        value = hinted(device_address)
        return None if value is None else value & _VEHICLE_ID_MASK

    return pairing


def hinted_pairing_reader(state: StateAPI) -> Callable[[bytes], int | None]:
    """:func:`pairing_reader` with the device's one-period hint left in (the bit
    :data:`SINGLE_PERIOD_HINT` of the answer; mask it off for the vehicle id):
    telemetry's checks, one read for a paired device."""
    load = Store(state, addresses.IDENTITY).reader()

    # The pairing first: a device is paired only after it was minted and a token id is
    # never cleared (no device is burned), so a paired device needs one read, and only an
    # unpaired one the second (minted or unknown). Same answers as token id first.
    def pairing(device_address: bytes) -> int | None:
        device_slot = mapping_slot(SLOT_DEVICE, device_address)
        vehicle_id = load(device_slot + D_VEHICLE)  # (device_pairing_slot)
        if vehicle_id:
            return vehicle_id
        return None if load(device_slot + D_TOKEN_ID) == 0 else 0

    return pairing


def device_pairing_slot(device_address: bytes) -> int:
    """The slot of a device's pairing field (its vehicle, with the one-period hint): the
    first read of :func:`hinted_pairing_reader`."""
    return mapping_slot(SLOT_DEVICE, device_address) + D_VEHICLE


def period_count(state: StateAPI, vehicle_id: int) -> int:
    """Number of ownership periods recorded for the vehicle (0 for one minted before
    periods were recorded, or never minted); one read."""
    return _ledger(state).st.load(mapping_slot(SLOT_PERIOD_COUNT, vehicle_id))


def get_vehicle(state: StateAPI, vehicle_id: int) -> VehicleRecord | None:
    """The vehicle with this id, or None if it was never minted or was burned."""
    return _ledger(state).vehicle(vehicle_id)


def vehicles_of(state: StateAPI, owner: bytes) -> list[int]:
    """Ids of the vehicles ``owner`` holds now, ascending."""
    led = _ledger(state)
    return sorted(led.owned_token(owner, i) for i in range(led.balance(owner)))


def balance_of(state: StateAPI, owner: bytes) -> int:
    """Number of vehicles ``owner`` holds (ERC-721 balanceOf)."""
    return _ledger(state).balance(owner)


def total_supply(state: StateAPI) -> int:
    """Vehicles in existence: minted minus burned."""
    return Store(state, addresses.IDENTITY).load(SLOT_TOTAL_SUPPLY)


def vehicle_by_vin(state: StateAPI, vin_hash: bytes) -> int | None:
    """Id of the live vehicle registered with this VIN hash, or None."""
    return _ledger(state).vehicle_by_vin(vin_hash) or None


def vin_evidence(state: StateAPI, vehicle_id: int) -> int:
    """The evidence its VIN was bound with: EVIDENCE_NONE or EVIDENCE_DEVICE (0 for a
    vehicle whose VIN was reclaimed, or that does not exist)."""
    return _ledger(state).vin_evidence(vehicle_id)


def get_permissions(state: StateAPI, vehicle_id: int) -> list[tuple[bytes, int, int]]:
    """(grantee, bits, expiry) of every grant made since the last transfer, live or expired,
    in the order grantees were first granted; revoked grants are left out."""
    return _ledger(state).grants(vehicle_id)


def ownership_periods(state: StateAPI, vehicle_id: int) -> list[OwnershipPeriod]:
    """The vehicle's ownership periods, oldest first (empty for an id never minted)."""
    return _ledger(state).periods(vehicle_id)


def period_at(periods: list[OwnershipPeriod], timestamp_ms: int) -> OwnershipPeriod | None:
    """The period a record with device time ``timestamp_ms`` belongs to. A time before
    the first period (a device may send readings up to ``attestation_stale_ms`` old)
    belongs to the first; None only when there is no period at all."""
    for period in reversed(periods):
        if period.from_ms <= timestamp_ms:
            return period
    return periods[0] if periods else None


def get_permission(state: StateAPI, vehicle_id: int, grantee: bytes) -> tuple[int, int]:
    """(bits, expiry) the current owner granted ``grantee`` (zeros when none; a transfer
    resets every grant)."""
    return _ledger(state).grant(vehicle_id, grantee)


def has_permission(state: StateAPI, vehicle_id: int, grantee: bytes, bits: int, now: int) -> bool:
    """True when ``grantee`` may use every permission in ``bits`` of the vehicle at unix time
    ``now`` (seconds, as block timestamps): it is the current owner, or holds a grant with
    all those bits and ``now < expiry``. False for zero or unknown bits and missing vehicles."""
    return _ledger(state).has_permission(vehicle_id, grantee, bits, now)


def get_grant_state(state: StateAPI, vehicle_id: int, grantee: bytes) -> GrantState:
    """``grantee``'s grant on the vehicle in its current permission generation."""
    return _ledger(state).grant_state(vehicle_id, grantee)


def get_grants_of(state: StateAPI, grantee: bytes, now: int) -> list[tuple[int, int, int]]:
    """``(vehicleId, bits, expiry)`` of every live grant ``grantee`` holds now (block time
    ``now`` in seconds), ascending by vehicle id: what motus_getGrants answers."""
    led = _ledger(state)
    out = []
    for vehicle_id in sorted(set(led.granted_vehicles(grantee))):
        if led.owner(vehicle_id) == ZERO_ADDRESS:
            continue
        bits, expiry = led.grant(vehicle_id, grantee)
        if bits and now < expiry:
            out.append((vehicle_id, bits, expiry))
    return out


def is_manufacturer(state: StateAPI, address: bytes) -> bool:
    """True while ``address`` holds a manufacturer license (may mint device NFTs)."""
    return _ledger(state).is_manufacturer(address)


def list_manufacturers(state: StateAPI) -> list[tuple[bytes, str, bool]]:
    """(address, name, licensed) of every address ever licensed, in licensing order."""
    led = _ledger(state)
    out = []
    for i in range(led.st.load(SLOT_MANUFACTURER_COUNT)):
        address = led.st.load_address(mapping_slot(SLOT_MANUFACTURER_LIST, i))
        out.append((address, led.manufacturer_name(address), led.is_manufacturer(address)))
    return out


def set_manufacturer(state: StateAPI, address: bytes, licensed: bool, name: str = "") -> None:
    """License or unlicense a manufacturer (genesis, governance). A non-empty ``name``
    replaces the recorded one; devices already minted are unaffected by a removal."""
    if len(address) != 20 or address == ZERO_ADDRESS:
        raise ValueError("manufacturer address must be 20 non-zero bytes")
    st = Store(state, addresses.IDENTITY)
    base = mapping_slot(SLOT_MANUFACTURER, address)
    if st.load(base + M_LISTED) == 0:
        count = st.load(SLOT_MANUFACTURER_COUNT)
        st.store_address(mapping_slot(SLOT_MANUFACTURER_LIST, count), address)
        st.store(SLOT_MANUFACTURER_COUNT, count + 1)
        st.store(base + M_LISTED, count + 1)
    st.store(base + M_LICENSED, 1 if licensed else 0)
    if name:
        st.store_bytes(base + M_NAME, name.encode())


def compute_identity_domain_separator(chain_id: int) -> bytes:
    """EIP-712 domain separator of the identity module on chain ``chain_id``."""
    return compute_domain_separator(DOMAIN_NAME, DOMAIN_VERSION, chain_id, addresses.IDENTITY)


def typed_data(struct: StructType, chain_id: int, message: dict[str, Any]) -> dict[str, Any]:
    """The full EIP-712 message (``eth_signTypedData_v4`` / eth-account ``full_message``)
    a device signs for ``struct`` (CLAIM_DEVICE or PAIR_DEVICE) on chain ``chain_id``."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **struct.eth_account_types(),
        },
        "primaryType": struct.name,
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": "0x" + addresses.IDENTITY.hex(),
        },
        "message": message,
    }


# --- the module ---------------------------------------------------------------


def _address(value: str) -> bytes:
    """eth-abi decodes ``address`` arguments as 0x-hex strings."""
    return bytes.fromhex(value[2:])


def _hex(address: bytes) -> str:
    return "0x" + address.hex()


class IdentityModule(SystemModule):
    name = "identity"
    address = addresses.IDENTITY

    def __init__(self) -> None:
        super().__init__()
        # ERC-721's ``name()`` collides with SystemModule.name (the ABI file name), so the
        # framework's by-name lookup found the string; point that selector at erc721_name.
        for selector, (fn_abi, _) in list(self._functions.items()):
            if fn_abi["name"] == "name":
                self._functions[selector] = (fn_abi, self.erc721_name)

    # genesis ------------------------------------------------------------------

    def init_genesis(self, state: StateAPI, spec: Any) -> None:
        """License the manufacturers listed in ``spec.modules["identity"]["manufacturers"]``
        (entries ``{"address": "0x..", "name": ".."}``)."""
        section = (getattr(spec, "modules", None) or {}).get(self.name, {})
        for entry in section.get("manufacturers", []):
            try:
                raw = entry["address"]
                address = bytes.fromhex(raw[2:]) if raw.startswith("0x") else b""
                name = str(entry.get("name", ""))
            except (KeyError, TypeError, AttributeError, ValueError):
                raise InvalidGenesis(f"identity: bad manufacturer entry {entry!r}") from None
            if len(address) != 20 or address == ZERO_ADDRESS:
                raise InvalidGenesis(
                    f"identity: manufacturer address must be 20 non-zero bytes: {raw!r}"
                )
            set_manufacturer(state, address, True, name)

    # ERC-165 / ERC-721 metadata ---------------------------------------------------

    def supportsInterface(self, call: Call, interface_id: bytes) -> bool:
        return interface_id in (INTERFACE_ERC165, INTERFACE_ERC721, INTERFACE_ERC721_METADATA)

    def erc721_name(self, call: Call) -> str:
        """ERC-721 ``name()``; bound by hand in ``__init__`` (see there)."""
        return NAME

    def symbol(self, call: Call) -> str:
        return SYMBOL

    def tokenURI(self, call: Call, vehicle_id: int) -> str:
        vehicle = _Ledger(call.store).vehicle(vehicle_id)
        if vehicle is None:
            raise ModuleRevert("nonexistent token")
        meta = {
            "name": f"Motus Vehicle #{vehicle_id}",
            "description": f"{vehicle.year} {vehicle.make} {vehicle.model}",
            "attributes": [
                {"trait_type": "Make", "value": vehicle.make},
                {"trait_type": "Model", "value": vehicle.model},
                {"trait_type": "Year", "value": vehicle.year},
            ],
        }
        body = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
        return "data:application/json;base64," + base64.b64encode(body).decode()

    def totalSupply(self, call: Call) -> int:
        return call.store.load(SLOT_TOTAL_SUPPLY)

    # ERC-721 ----------------------------------------------------------------------

    def balanceOf(self, call: Call, owner: str) -> int:
        owner_b = _address(owner)
        call.require(owner_b != ZERO_ADDRESS, "zero address")
        return _Ledger(call.store).balance(owner_b)

    def ownerOf(self, call: Call, vehicle_id: int) -> str:
        return _hex(self._require_owner(_Ledger(call.store), vehicle_id))

    def getApproved(self, call: Call, vehicle_id: int) -> str:
        led = _Ledger(call.store)
        self._require_owner(led, vehicle_id)
        return _hex(led.approved(vehicle_id))

    def isApprovedForAll(self, call: Call, owner: str, operator: str) -> bool:
        return _Ledger(call.store).is_operator(_address(owner), _address(operator))

    def approve(self, call: Call, spender: str, vehicle_id: int) -> None:
        led = _Ledger(call.store)
        owner = self._require_owner(led, vehicle_id)
        spender_b = _address(spender)
        call.require(spender_b != owner, "approval to current owner")
        call.require(
            call.sender == owner or led.is_operator(owner, call.sender),
            "not owner nor approved for all",
        )
        led.set_approved(vehicle_id, spender_b)
        call.emit("Approval", owner, spender_b, vehicle_id)

    def setApprovalForAll(self, call: Call, operator: str, approved: bool) -> None:
        operator_b = _address(operator)
        call.require(operator_b != call.sender, "approve to caller")
        call.store.store(
            mapping_slot(SLOT_OPERATOR_APPROVAL, call.sender, operator_b), int(approved)
        )
        call.emit("ApprovalForAll", call.sender, operator_b, approved)

    def transferFrom(self, call: Call, from_: str, to: str, vehicle_id: int) -> None:
        self._transfer(call, _address(from_), _address(to), vehicle_id)

    def safeTransferFrom(
        self, call: Call, from_: str, to: str, vehicle_id: int, data: bytes = b""
    ) -> None:
        """Both ERC-721 overloads: the 3-argument one arrives without ``data``."""
        from_b, to_b = _address(from_), _address(to)
        self._transfer(call, from_b, to_b, vehicle_id)
        self._check_receiver(call, from_b, to_b, vehicle_id, data)

    def _require_owner(self, led: _Ledger, vehicle_id: int) -> bytes:
        owner = led.owner(vehicle_id)
        if owner == ZERO_ADDRESS:
            raise ModuleRevert("nonexistent token")
        return owner

    def _transfer(self, call: Call, from_: bytes, to: bytes, vehicle_id: int) -> None:
        led = _Ledger(call.store)
        owner = self._require_owner(led, vehicle_id)
        call.require(to != ZERO_ADDRESS, "transfer to the zero address")
        call.require(owner == from_, "transfer from incorrect owner")
        call.require(
            call.sender == owner
            or led.approved(vehicle_id) == call.sender
            or led.is_operator(owner, call.sender),
            "not owner nor approved",
        )
        led.set_approved(vehicle_id, ZERO_ADDRESS)
        led.remove_owned(from_, vehicle_id)
        led.add_owned(to, vehicle_id)
        led.reset_permissions(vehicle_id)
        led.open_period(vehicle_id, to, call.timestamp_ms, call.block_number)
        call.emit("Transfer", from_, to, vehicle_id)
        call.emit("PermissionsReset", vehicle_id)

    def _check_receiver(
        self, call: Call, from_: bytes, to: bytes, vehicle_id: int, data: bytes
    ) -> None:
        check_erc721_receiver(call, from_, to, vehicle_id, data)

    # vehicles -------------------------------------------------------------------

    def _vin(self, call: Call, vin: str) -> tuple[str, bytes]:
        """The normalised VIN and its hash, or the call reverts ``bad_vin: ...``."""
        try:
            normal = normalize_vin(vin)
        except VinError as exc:
            raise ModuleRevert(str(exc)) from None
        return normal, compute_vin_hash(normal)

    def _check_labels(self, call: Call, make: str, model: str, year: int) -> tuple[bytes, bytes]:
        make_b, model_b = make.encode(), model.encode()
        call.require(0 < len(make_b) <= MAX_LABEL_BYTES, "invalid make")
        call.require(0 < len(model_b) <= MAX_LABEL_BYTES, "invalid model")
        call.require(MIN_YEAR <= year <= MAX_YEAR, "invalid year")
        return make_b, model_b

    def _mint(self, call: Call, led: _Ledger, make: str, model: str, year: int,
              vin_hash: bytes, evidence: int) -> int:
        vehicle_id = call.store.load(SLOT_VEHICLE_COUNT) + 1
        call.store.store(SLOT_VEHICLE_COUNT, vehicle_id)
        call.store.store(SLOT_TOTAL_SUPPLY, call.store.load(SLOT_TOTAL_SUPPLY) + 1)
        led.add_owned(call.sender, vehicle_id)
        call.store.store_bytes(led.vehicle_field(vehicle_id, V_MAKE), make.encode())
        call.store.store_bytes(led.vehicle_field(vehicle_id, V_MODEL), model.encode())
        call.store.store(led.vehicle_field(vehicle_id, V_YEAR), year)
        call.store.store(led.vehicle_field(vehicle_id, V_VIN_HASH), int.from_bytes(vin_hash, "big"))
        call.store.store(led.vehicle_field(vehicle_id, V_VIN_EVIDENCE), evidence)
        call.store.store(mapping_slot(SLOT_VIN, vin_hash), vehicle_id)
        led.open_period(vehicle_id, call.sender, call.timestamp_ms, call.block_number)
        call.emit("Transfer", ZERO_ADDRESS, call.sender, vehicle_id)
        call.emit("VehicleMinted", vehicle_id, call.sender, vin_hash, make, model, year)
        return vehicle_id

    def mintVehicle(self, call: Call, make: str, model: str, year: int, vin: str) -> int:
        """Mint a vehicle for the caller with no evidence for its VIN (it can be reclaimed
        by anyone presenting the car's device reading)."""
        led = _Ledger(call.store)
        _, vin_hash = self._vin(call, vin)
        self._check_labels(call, make, model, year)
        call.require(led.vehicle_by_vin(vin_hash) == 0, VIN_TAKEN)
        return self._mint(call, led, make, model, year, vin_hash, EVIDENCE_NONE)

    def mintVehicleWithDevice(self, call: Call, make: str, model: str, year: int, vin: str,
                              device: str, nonce: int, deadline: int, signature: bytes) -> int:
        """Mint a vehicle for the caller, its VIN backed by the caller's own claimed,
        unpaired device's signed reading (``VinReading``), and pair that device with it."""
        return self._mint_with_device(call, make, model, year, vin, device, nonce, deadline,
                                      signature, reclaim=False)

    def reclaimVin(self, call: Call, make: str, model: str, year: int, vin: str,
                   device: str, nonce: int, deadline: int, signature: bytes) -> int:
        """As :meth:`mintVehicleWithDevice`, and a VIN bound with weaker evidence moves to
        the new vehicle (the old one keeps existing, without a VIN)."""
        return self._mint_with_device(call, make, model, year, vin, device, nonce, deadline,
                                      signature, reclaim=True)

    def _mint_with_device(self, call: Call, make: str, model: str, year: int, vin: str,
                          device: str, nonce: int, deadline: int, signature: bytes,
                          reclaim: bool) -> int:
        led = _Ledger(call.store)
        normal, vin_hash = self._vin(call, vin)
        self._check_labels(call, make, model, year)
        holder = led.vehicle_by_vin(vin_hash)
        call.require(holder == 0 or reclaim, VIN_TAKEN_RECLAIMABLE
                     if led.vin_evidence(holder) < EVIDENCE_DEVICE else VIN_TAKEN)
        call.require(holder == 0 or led.vin_evidence(holder) < EVIDENCE_DEVICE,
                     VIN_TAKEN_WITH_EVIDENCE)
        device_b = _address(device)
        call.require(led.device_token_id(device_b) != 0, "bad_evidence: unknown device")
        call.require(led.device_claimed(device_b) and led.device_owner(device_b) == call.sender,
                     "bad_evidence: the device is not claimed by the caller")
        call.require(led.device_vehicle(device_b) == 0,
                     "bad_evidence: the device is paired with another vehicle")
        self._use_device_signature(
            call, led, device_b, VIN_READING,
            {"vin": normal, "device": device_b, "owner": call.sender, "nonce": nonce,
             "deadline": deadline},
            signature, reason_prefix="bad_evidence: ",
        )
        if holder != 0:  # reclaim: the squatting vehicle loses the VIN
            call.store.store(led.vehicle_field(holder, V_VIN_HASH), 0)
            call.store.store(led.vehicle_field(holder, V_VIN_EVIDENCE), 0)
        vehicle_id = self._mint(call, led, make, model, year, vin_hash, EVIDENCE_DEVICE)
        if holder != 0:
            call.emit("VinReclaimed", vin_hash, holder, vehicle_id)
        led.link(vehicle_id, device_b)
        call.emit("DevicePaired", vehicle_id, device_b, call.sender)
        return vehicle_id

    def hashVin(self, call: Call, vin: str) -> bytes:
        """The chain's hash of a VIN (docs/identity.md); reverts ``bad_vin`` for a bad one."""
        return self._vin(call, vin)[1]

    def getVinEvidence(self, call: Call, vehicle_id: int) -> int:
        led = _Ledger(call.store)
        self._require_owner(led, vehicle_id)
        return led.vin_evidence(vehicle_id)

    def burnVehicle(self, call: Call, vehicle_id: int) -> None:
        led = _Ledger(call.store)
        owner = self._require_owner(led, vehicle_id)
        call.require(call.sender == owner, "not owner")
        call.require(
            led.vehicle_device(vehicle_id) == ZERO_ADDRESS, "paired vehicle cannot be burned"
        )
        vin_slot = led.vehicle_field(vehicle_id, V_VIN_HASH)
        vin_hash = call.store.load(vin_slot).to_bytes(32, "big")
        led.set_approved(vehicle_id, ZERO_ADDRESS)
        led.remove_owned(owner, vehicle_id)
        call.store.store_address(mapping_slot(SLOT_OWNER, vehicle_id), ZERO_ADDRESS)
        call.store.store(SLOT_TOTAL_SUPPLY, call.store.load(SLOT_TOTAL_SUPPLY) - 1)
        # the VIN becomes free again: a scrapped-and-reregistered car must not be locked out
        call.store.store(mapping_slot(SLOT_VIN, vin_hash), 0)
        call.store.store_bytes(led.vehicle_field(vehicle_id, V_MAKE), b"")
        call.store.store_bytes(led.vehicle_field(vehicle_id, V_MODEL), b"")
        call.store.store(led.vehicle_field(vehicle_id, V_YEAR), 0)
        call.store.store(vin_slot, 0)
        call.store.store(led.vehicle_field(vehicle_id, V_VIN_EVIDENCE), 0)
        led.reset_permissions(vehicle_id)
        led.open_period(vehicle_id, ZERO_ADDRESS, call.timestamp_ms, call.block_number)
        call.emit("Transfer", owner, ZERO_ADDRESS, vehicle_id)
        call.emit("PermissionsReset", vehicle_id)

    def getVehicle(self, call: Call, vehicle_id: int) -> tuple[str, str, str, int, bytes, str]:
        vehicle = _Ledger(call.store).vehicle(vehicle_id)
        if vehicle is None:
            raise ModuleRevert("nonexistent token")
        return (
            _hex(vehicle.owner),
            vehicle.make,
            vehicle.model,
            vehicle.year,
            vehicle.vin_hash,
            _hex(vehicle.device),
        )

    def vehicleIdByVin(self, call: Call, vin_hash: bytes) -> int:
        return _Ledger(call.store).vehicle_by_vin(vin_hash)

    def tokenOfOwnerByIndex(self, call: Call, owner: str, index: int) -> int:
        led = _Ledger(call.store)
        owner_b = _address(owner)
        call.require(index < led.balance(owner_b), "owner index out of bounds")
        return led.owned_token(owner_b, index)

    # manufacturers and devices ------------------------------------------------------

    def isManufacturer(self, call: Call, address: str) -> bool:
        return _Ledger(call.store).is_manufacturer(_address(address))

    def getManufacturer(self, call: Call, address: str) -> tuple[bool, str]:
        led = _Ledger(call.store)
        address_b = _address(address)
        return led.is_manufacturer(address_b), led.manufacturer_name(address_b)

    def mintDevice(self, call: Call, device: str) -> int:
        led = _Ledger(call.store)
        device_b = _address(device)
        call.require(led.is_manufacturer(call.sender), "manufacturer not licensed")
        call.require(device_b != ZERO_ADDRESS, "zero address")
        call.require(led.device_token_id(device_b) == 0, "device already minted")
        token_id = call.store.load(SLOT_DEVICE_COUNT) + 1
        call.store.store(SLOT_DEVICE_COUNT, token_id)
        call.store.store(led.device_field(device_b, D_TOKEN_ID), token_id)
        call.store.store_address(led.device_field(device_b, D_MANUFACTURER), call.sender)
        call.store.store_address(led.device_field(device_b, D_OWNER), call.sender)
        call.store.store_address(mapping_slot(SLOT_DEVICE_BY_ID, token_id), device_b)
        call.emit("DeviceMinted", device_b, token_id, call.sender)
        return token_id

    def claimDevice(
        self, call: Call, device: str, nonce: int, deadline: int, signature: bytes
    ) -> None:
        led = _Ledger(call.store)
        device_b = _address(device)
        token_id = led.device_token_id(device_b)
        call.require(token_id != 0, "unknown device")
        call.require(not led.device_claimed(device_b), "device already claimed")
        self._use_device_signature(
            call,
            led,
            device_b,
            CLAIM_DEVICE,
            {
                "device": device_b,
                "owner": call.sender,
                "nonce": nonce,
                "deadline": deadline,
            },
            signature,
        )
        call.store.store_address(led.device_field(device_b, D_OWNER), call.sender)
        call.store.store(led.device_field(device_b, D_CLAIMED), 1)
        call.emit("DeviceClaimed", device_b, call.sender, token_id)

    def transferDevice(self, call: Call, device: str, to: str) -> None:
        led = _Ledger(call.store)
        device_b, to_b = _address(device), _address(to)
        call.require(led.device_token_id(device_b) != 0, "unknown device")
        call.require(led.device_claimed(device_b), "device not claimed")
        owner = led.device_owner(device_b)
        call.require(call.sender == owner, "not device owner")
        call.require(to_b != ZERO_ADDRESS, "transfer to the zero address")
        call.store.store_address(led.device_field(device_b, D_OWNER), to_b)
        call.emit("DeviceTransfer", device_b, owner, to_b)

    def pairDevice(
        self, call: Call, vehicle_id: int, device: str, nonce: int, deadline: int, signature: bytes
    ) -> None:
        led = _Ledger(call.store)
        device_b = _address(device)
        owner = self._require_owner(led, vehicle_id)
        call.require(call.sender == owner, "not owner")
        call.require(led.device_token_id(device_b) != 0, "unknown device")
        call.require(led.device_claimed(device_b), "device not claimed")
        call.require(led.device_owner(device_b) == call.sender, "not device owner")
        call.require(led.vehicle_device(vehicle_id) == ZERO_ADDRESS, "vehicle already paired")
        call.require(led.device_vehicle(device_b) == 0, "device already paired")
        self._use_device_signature(
            call,
            led,
            device_b,
            PAIR_DEVICE,
            {
                "vehicleId": vehicle_id,
                "device": device_b,
                "owner": call.sender,
                "nonce": nonce,
                "deadline": deadline,
            },
            signature,
        )
        led.link(vehicle_id, device_b)
        call.emit("DevicePaired", vehicle_id, device_b, call.sender)

    def unpairDevice(self, call: Call, vehicle_id: int) -> None:
        led = _Ledger(call.store)
        owner = self._require_owner(led, vehicle_id)
        device = led.vehicle_device(vehicle_id)
        call.require(device != ZERO_ADDRESS, "vehicle not paired")
        call.require(
            call.sender in (owner, led.device_owner(device)), "not vehicle or device owner"
        )
        call.store.store_address(led.vehicle_field(vehicle_id, V_DEVICE), ZERO_ADDRESS)
        call.store.store(led.device_field(device, D_VEHICLE), 0)
        call.emit("DeviceUnpaired", vehicle_id, device, call.sender)

    def getDevice(self, call: Call, device: str) -> tuple[int, str, str, int, int, bool]:
        record = _Ledger(call.store).device(_address(device))
        if record is None:
            raise ModuleRevert("unknown device")
        return (
            record.token_id,
            _hex(record.manufacturer),
            _hex(record.owner),
            record.vehicle_id,
            record.nonce,
            record.claimed,
        )

    def deviceOfToken(self, call: Call, token_id: int) -> str:
        device = call.store.load_address(mapping_slot(SLOT_DEVICE_BY_ID, token_id))
        call.require(device != ZERO_ADDRESS, "nonexistent device token")
        return _hex(device)

    def nonces(self, call: Call, device: str) -> int:
        return _Ledger(call.store).device_nonce(_address(device))

    def _use_device_signature(
        self,
        call: Call,
        led: _Ledger,
        device: bytes,
        struct: StructType,
        message: dict[str, Any],
        signature: bytes,
        reason_prefix: str = "",
    ) -> None:
        """Check a device's EIP-712 authorisation and consume its nonce: the deadline has not
        passed (inclusive, in block seconds), the nonce is the device's next one, and the
        device key signed exactly this message on this chain for this module. Refusal
        reasons start with ``reason_prefix`` (a stable code, e.g. ``bad_evidence: ``)."""
        call.require(call.timestamp <= message["deadline"], reason_prefix + "signature expired")
        expected = led.device_nonce(device)
        call.require(message["nonce"] >= expected, reason_prefix + "signature replay")
        call.require(message["nonce"] == expected, reason_prefix + "invalid nonce")
        call.gas(G_ECRECOVER, "device signature")
        digest = compute_digest(
            compute_identity_domain_separator(call.chain_id), struct.hash_struct(message)
        )
        call.require(recover_signer(digest, bytes(signature)) == device,
                     reason_prefix + "bad device signature")
        call.store.store(led.device_field(device, D_NONCE), expected + 1)

    # permissions ---------------------------------------------------------------------

    def grantPermissions(
        self, call: Call, vehicle_id: int, grantee: str, bits: int, expiry: int
    ) -> None:
        """Set (replace) ``grantee``'s permission bits and expiry on the vehicle."""
        led = _Ledger(call.store)
        grantee_b = _address(grantee)
        owner = self._require_owner(led, vehicle_id)
        call.require(call.sender == owner, "not owner")
        call.require(grantee_b != ZERO_ADDRESS, "zero address")
        self._set_grant(call, led, vehicle_id, grantee_b, bits, expiry)

    def _set_grant(self, call: Call, led: _Ledger, vehicle_id: int, grantee_b: bytes,
                   bits: int, expiry: int) -> None:
        call.require(bits != 0, "no permission bits")
        call.require(bits & ~PERMISSIONS_ALL == 0, "unknown permission bits")
        call.require(expiry > call.timestamp, "expiry in the past")
        generation = led.generation(vehicle_id)
        base = led.grant_slot(vehicle_id, generation, grantee_b)
        if call.store.load(base + G_LISTED) == 0:
            count_slot = mapping_slot(SLOT_GRANTEE_COUNT, vehicle_id, generation)
            count = call.store.load(count_slot)
            call.store.store_address(
                mapping_slot(SLOT_GRANTEE, vehicle_id, generation, count), grantee_b
            )
            call.store.store(count_slot, count + 1)
            call.store.store(base + G_LISTED, count + 1)
        listed_slot = mapping_slot(SLOT_GRANTED_LISTED, grantee_b, vehicle_id)
        if call.store.load(listed_slot) == 0:  # the grantee's reverse index, once per vehicle
            count_slot = mapping_slot(SLOT_GRANTED_COUNT, grantee_b)
            count = call.store.load(count_slot)
            call.store.store(mapping_slot(SLOT_GRANTED_VEHICLE, grantee_b, count), vehicle_id)
            call.store.store(count_slot, count + 1)
            call.store.store(listed_slot, 1)
        call.store.store(base + G_BITS, bits)
        call.store.store(base + G_EXPIRY, expiry)
        call.emit("PermissionsGranted", vehicle_id, grantee_b, bits, expiry)

    # consent to developer licenses (docs/developers.md, "Consent") ----------------

    def _license_vehicles(self, call: Call, vehicle_ids: list[int], license_id: int
                          ) -> tuple[_Ledger, bytes]:
        from vm.modules.licenses import license_grantee, license_owner

        call.require(0 < len(vehicle_ids) <= MAX_GRANT_VEHICLES,
                     f"bad_vehicles: 1 to {MAX_GRANT_VEHICLES} vehicle ids")
        call.require(len(set(vehicle_ids)) == len(vehicle_ids), "bad_vehicles: duplicate id")
        call.require(license_owner(call.state, license_id) is not None, "unknown_license")
        led = _Ledger(call.store)
        for vehicle_id in vehicle_ids:
            call.require(self._require_owner(led, vehicle_id) == call.sender,
                         f"not owner of vehicle {vehicle_id}")
        return led, license_grantee(license_id)

    def grantLicense(self, call: Call, vehicle_ids: list[int], license_id: int, bits: int,
                     expiry: int) -> None:
        """Grant a license ``bits`` until ``expiry`` on each of the caller's vehicles, in
        one transaction; replaces earlier grants to it on those vehicles."""
        led, grantee = self._license_vehicles(call, list(vehicle_ids), license_id)
        for vehicle_id in vehicle_ids:
            self._set_grant(call, led, vehicle_id, grantee, bits, expiry)
            call.emit("LicenseGranted", vehicle_id, license_id, bits, expiry)

    def grantLicenseTemplate(self, call: Call, vehicle_ids: list[int], license_id: int,
                             template: int, expiry: int) -> None:
        """grantLicense with the bits of a permission template (PERMISSION_TEMPLATES)."""
        call.require(template in PERMISSION_TEMPLATES,
                     f"unknown_template: one of {sorted(PERMISSION_TEMPLATES)}")
        self.grantLicense(call, vehicle_ids, license_id, PERMISSION_TEMPLATES[template][1],
                          expiry)

    def revokeLicense(self, call: Call, vehicle_ids: list[int], license_id: int) -> None:
        """Revoke a license's grants on the caller's vehicles; effective from this block:
        tokens issued for them are refused ``revoked`` from then on."""
        led, grantee = self._license_vehicles(call, list(vehicle_ids), license_id)
        for vehicle_id in vehicle_ids:
            base = led.grant_slot(vehicle_id, led.generation(vehicle_id), grantee)
            call.require(call.store.load(base + G_BITS) != 0,
                         f"no permissions granted on vehicle {vehicle_id}")
            call.store.store(base + G_BITS, 0)
            call.store.store(base + G_EXPIRY, 0)
            call.emit("PermissionsRevoked", vehicle_id, grantee)
            call.emit("LicenseRevoked", vehicle_id, license_id)

    def getLicenseGrant(self, call: Call, vehicle_id: int, license_id: int) -> tuple[int, int]:
        """(bits, expiry) the current owner granted the license (zeros when none)."""
        from vm.modules.licenses import license_grantee

        return _Ledger(call.store).grant(vehicle_id, license_grantee(license_id))

    def getTemplate(self, call: Call, template: int) -> tuple[str, int]:
        call.require(template in PERMISSION_TEMPLATES, "unknown_template")
        return PERMISSION_TEMPLATES[template]

    # synthetic devices (docs/developers.md, "Synthetic devices") -------------------

    def mintSyntheticDevice(self, call: Call, vehicle_id: int, license_id: int,
                            device: str, deadline: int, signature: bytes) -> int:
        """The vehicle owner connects the car through a licensed integration: mints a
        device NFT for the integration's key ``device``, marked synthetic with the
        license, owned by the caller and paired with the vehicle at once. ``signature``
        is the integration's consent: an EIP-712 SYNTHETIC_DEVICE signed by a current
        signer of the license, valid until ``deadline`` (block seconds; the device
        address can be minted once, so it cannot be replayed). The integration signs
        attestations with that key; rewards cap the vehicle's data level at
        ``synthetic_max_data_level``."""
        from vm.modules.licenses import is_license_signer, license_owner

        led = _Ledger(call.store)
        device_b = _address(device)
        call.require(self._require_owner(led, vehicle_id) == call.sender, "not owner")
        integration = license_owner(call.state, license_id)
        if integration is None:
            raise ModuleRevert("unknown_license")
        call.require(device_b != ZERO_ADDRESS, "zero address")
        call.require(led.device_token_id(device_b) == 0, "device already minted")
        call.require(led.vehicle_device(vehicle_id) == ZERO_ADDRESS, "vehicle already paired")
        call.require(call.timestamp <= deadline, "bad_consent: signature expired")
        call.gas(G_ECRECOVER, "integration signature")
        digest = compute_digest(
            compute_identity_domain_separator(call.chain_id),
            SYNTHETIC_DEVICE.hash_struct({"vehicleId": vehicle_id, "licenseId": license_id,
                                          "device": device_b, "owner": call.sender,
                                          "deadline": deadline}))
        signer = recover_signer(digest, bytes(signature))
        call.require(signer is not None and is_license_signer(call.state, license_id, signer),
                     "bad_consent: not signed by a signer of the license")
        token_id = call.store.load(SLOT_DEVICE_COUNT) + 1
        call.store.store(SLOT_DEVICE_COUNT, token_id)
        call.store.store(led.device_field(device_b, D_TOKEN_ID), token_id)
        # the integration stands where a hardware device has its manufacturer
        call.store.store_address(led.device_field(device_b, D_MANUFACTURER), integration)
        call.store.store_address(led.device_field(device_b, D_OWNER), call.sender)
        call.store.store(led.device_field(device_b, D_CLAIMED), 1)
        call.store.store(led.device_field(device_b, D_SYNTHETIC), license_id)
        call.store.store_address(mapping_slot(SLOT_DEVICE_BY_ID, token_id), device_b)
        led.link(vehicle_id, device_b)
        call.emit("DeviceMinted", device_b, token_id, integration)
        call.emit("SyntheticDeviceMinted", device_b, vehicle_id, license_id)
        call.emit("DevicePaired", vehicle_id, device_b, call.sender)
        return token_id

    def syntheticLicenseOf(self, call: Call, device: str) -> int:
        """The license of a synthetic device's integration; 0 for a hardware device."""
        return call.store.load(_Ledger(call.store).device_field(_address(device), D_SYNTHETIC))

    def revokePermissions(self, call: Call, vehicle_id: int, grantee: str) -> None:
        led = _Ledger(call.store)
        grantee_b = _address(grantee)
        owner = self._require_owner(led, vehicle_id)
        call.require(call.sender == owner, "not owner")
        base = led.grant_slot(vehicle_id, led.generation(vehicle_id), grantee_b)
        call.require(call.store.load(base + G_BITS) != 0, "no permissions granted")
        call.store.store(base + G_BITS, 0)
        call.store.store(base + G_EXPIRY, 0)
        call.emit("PermissionsRevoked", vehicle_id, grantee_b)

    def hasPermission(self, call: Call, vehicle_id: int, grantee: str, bits: int) -> bool:
        return _Ledger(call.store).has_permission(
            vehicle_id, _address(grantee), bits, call.timestamp
        )

    def getPermission(self, call: Call, vehicle_id: int, grantee: str) -> tuple[int, int]:
        led = _Ledger(call.store)
        self._require_owner(led, vehicle_id)
        return led.grant(vehicle_id, _address(grantee))

    def getPermissions(self, call: Call, vehicle_id: int) -> tuple[list[str], list[int], list[int]]:
        led = _Ledger(call.store)
        self._require_owner(led, vehicle_id)
        grants = led.grants(vehicle_id)
        return [_hex(g) for g, _, _ in grants], [b for _, b, _ in grants], [e for _, _, e in grants]

    def getOwnershipPeriods(
        self, call: Call, vehicle_id: int
    ) -> tuple[list[str], list[int], list[int]]:
        """(owners, fromMs, fromHeights), oldest first; period i ends where i + 1 starts."""
        periods = _Ledger(call.store).periods(vehicle_id)
        call.require(bool(periods), "nonexistent token")
        return ([_hex(p.owner) for p in periods], [p.from_ms for p in periods],
                [p.from_height for p in periods])

    # EIP-712 domain ----------------------------------------------------------------

    def DOMAIN_SEPARATOR(self, call: Call) -> bytes:
        return compute_identity_domain_separator(call.chain_id)

    def eip712Domain(self, call: Call) -> tuple[bytes, str, str, int, str, bytes, list[int]]:
        """EIP-5267: lets wallets discover the domain (fields 0x0f: name, version, chainId,
        verifyingContract)."""
        return (
            b"\x0f",
            DOMAIN_NAME,
            DOMAIN_VERSION,
            call.chain_id,
            _hex(self.address),
            b"\x00" * 32,
            [],
        )
