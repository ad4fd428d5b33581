"""The identity methods of the ``motus_`` namespace: vehicles, devices, vehicle lists and
data permissions, read with the identity module's Python API (``vm.modules.identity``) on
the state after the requested block.

Conventions (docs/rpc.md): ids, years, bits and nonces are JSON numbers (all far below
2^53); addresses and hashes are lower-case 0x-hex; a permission ``expiry`` is a decimal
string because a grant's expiry is any uint256. Something that does not exist at that
block answers ``null`` (or ``[]``); a block that does not exist answers
``-32001 header not found``, so ``null`` never means "unknown block".
"""

from __future__ import annotations

from typing import Any

from eth.abc import StateAPI

from node.rpc import params as p
from node.rpc.credentials import parse_vehicle_id  # noqa: F401  (its old home)
from node.rpc.errors import limit_exceeded
from node.rpc.eth import resolve_header
from node.rpc.ethjson import hexb
from node.rpc.registry import MethodTable, Param, RPCContext
from vm.block import Header
from vm.modules import identity

methods = MethodTable()

ZERO_ADDRESS = b"\x00" * 20
MAX_VEHICLES_OF = 10_000  # a larger fleet answers -32005 rather than a slow, huge answer




def block_param(value: Any) -> p.BlockRef:
    """A block as the ``motus_`` namespace takes it: a height (number or hex), a tag, or an
    EIP-1898 object ``{"blockHash": ..}`` / ``{"blockNumber": ..}``."""
    if isinstance(value, dict):
        return p.block_ref(value)
    if isinstance(value, str) and value in p.BLOCK_TAGS:
        return p.BlockRef(tag=value)
    try:
        return p.BlockRef(number=p.height(value))
    except p.ParamError:
        raise p.ParamError(
            f"expected a block height, tag ({', '.join(p.BLOCK_TAGS)}) or "
            f'{{"blockHash": ..}}, got {p.show(value)}'
        ) from None


BLOCK = Param("block", block_param, p.LATEST)


def state_for(ctx: RPCContext, ref: p.BlockRef) -> tuple[Header, StateAPI]:
    """The header ``ref`` names and a read-only view of the state after it (the shared
    head state for the head); ``-32001`` when there is no such block."""
    header = resolve_header(ctx, ref)
    if header.hash == ctx.store.head.hash:
        return header, ctx.app.head_state()
    return header, ctx.app.state_at(header)


def _address_or_null(address: bytes) -> str | None:
    return None if address == ZERO_ADDRESS else hexb(address)


def permission_names(bits: int) -> list[str]:
    """Names of the set permission bits, lowest bit first (``PERMISSION_BITS``)."""
    return [name for name, bit in identity.PERMISSION_BITS.items() if bits >> bit & 1]


def permissions_json(state: StateAPI, vid: int, now: int) -> list[dict[str, Any]]:
    """Every grant since the vehicle's last transfer (revoked ones left out), in the order
    grantees were first granted; ``active`` at unix time ``now`` (the block's time)."""
    return [
        {
            "grantee": hexb(grantee),
            "bits": bits,
            "bitNames": permission_names(bits),
            "expiry": str(expiry),
            "active": now < expiry,
        }
        for grantee, bits, expiry in identity.get_permissions(state, vid)
    ]


@methods.method("motus_getVehicle", Param("vehicleId", parse_vehicle_id), BLOCK)
def get_vehicle(ctx: RPCContext, vid: int, ref: p.BlockRef) -> dict[str, Any] | None:
    """The vehicle at that block, or null if it was not minted yet or was burned."""
    header, state = state_for(ctx, ref)
    vehicle = identity.get_vehicle(state, vid)
    if vehicle is None:
        return None
    grants = permissions_json(state, vid, header.timestamp_ms // 1000)
    return {
        "id": vehicle.vehicle_id,
        "owner": hexb(vehicle.owner),
        "make": vehicle.make,
        "model": vehicle.model,
        "year": vehicle.year,
        "vinHash": hexb(vehicle.vin_hash),
        "device": _address_or_null(vehicle.device),
        "permissionsCount": len(grants),
        "activePermissionsCount": sum(g["active"] for g in grants),
        "blockNumber": header.height,
    }


@methods.method("motus_getDevice", Param("address", p.address), BLOCK)
def get_device(ctx: RPCContext, address: bytes, ref: p.BlockRef) -> dict[str, Any] | None:
    """The device NFT bound to ``address`` at that block, or null if none was minted."""
    header, state = state_for(ctx, ref)
    record = identity.get_device(state, address)
    if record is None:
        return None
    return {
        "address": hexb(record.address),
        "tokenId": record.token_id,
        "manufacturer": hexb(record.manufacturer),
        "owner": hexb(record.owner),
        "vehicleId": record.vehicle_id or None,
        "claimed": record.claimed,
        "nonce": record.nonce,
        "blockNumber": header.height,
    }


@methods.method("motus_vehiclesOf", Param("owner", p.address), BLOCK)
def vehicles_of(ctx: RPCContext, owner: bytes, ref: p.BlockRef) -> list[int]:
    """Ids of the vehicles ``owner`` holds at that block, ascending."""
    _, state = state_for(ctx, ref)
    held = identity.balance_of(state, owner)
    if held > MAX_VEHICLES_OF:
        raise limit_exceeded(
            f"owner holds {held} vehicles, more than {MAX_VEHICLES_OF}; "
            "page with tokenOfOwnerByIndex through eth_call",
            reason="too_many_vehicles",
        )
    return identity.vehicles_of(state, owner)


@methods.method("motus_getPermissions", Param("vehicleId", parse_vehicle_id), BLOCK)
def get_permissions(ctx: RPCContext, vid: int, ref: p.BlockRef) -> list[dict[str, Any]] | None:
    """The vehicle's grants at that block (see :func:`permissions_json`); null if the
    vehicle does not exist there."""
    header, state = state_for(ctx, ref)
    if identity.get_vehicle(state, vid) is None:
        return None
    return permissions_json(state, vid, header.timestamp_ms // 1000)


def register(table: MethodTable) -> None:
    table.include(methods)
