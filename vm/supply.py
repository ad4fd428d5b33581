"""Supply accounting kept in state (slots of the params account):
total supply = genesis supply + minted rewards - burned deposits - burned fees."""

from __future__ import annotations

from eth.abc import StateAPI
from eth_hash.auto import keccak

from vm.modules import addresses


def _slot(name: str) -> int:
    return int.from_bytes(keccak(b"supply:" + name.encode()), "big")


GENESIS = _slot("genesis")
MINTED = _slot("minted")
BURNED_DEPOSITS = _slot("burned_deposits")
BURNED_FEES = _slot("burned_fees")


def _add(state: StateAPI, slot: int, amount: int) -> None:
    state.set_storage(addresses.PARAMS, slot, state.get_storage(addresses.PARAMS, slot) + amount)


def set_genesis_supply(state: StateAPI, amount: int) -> None:
    state.set_storage(addresses.PARAMS, GENESIS, amount)


def record_minted(state: StateAPI, amount: int) -> None:
    _add(state, MINTED, amount)


def record_burned_deposit(state: StateAPI, amount: int) -> None:
    _add(state, BURNED_DEPOSITS, amount)


def record_burned_fees(state: StateAPI, amount: int) -> None:
    _add(state, BURNED_FEES, amount)


def get_supply(state: StateAPI) -> dict[str, int]:
    g = state.get_storage(addresses.PARAMS, GENESIS)
    m = state.get_storage(addresses.PARAMS, MINTED)
    bd = state.get_storage(addresses.PARAMS, BURNED_DEPOSITS)
    bf = state.get_storage(addresses.PARAMS, BURNED_FEES)
    return {"genesis": g, "minted": m, "burned_deposits": bd, "burned_fees": bf, "total": g + m - bd - bf}
