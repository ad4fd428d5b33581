"""The epoch clock, kept in state: epoch number and the height that started it.

Stored rather than derived from ``height // epoch_length`` so that governance can
change the epoch length at a boundary without renumbering past epochs.
"""

from __future__ import annotations

from eth.abc import StateAPI
from eth_hash.auto import keccak

from vm.modules import addresses
from vm.modules.params import get_param

EPOCH_SLOT = int.from_bytes(keccak(b"clock:epoch"), "big")
EPOCH_START_SLOT = int.from_bytes(keccak(b"clock:epoch_start"), "big")


def get_epoch(state: StateAPI) -> int:
    return state.get_storage(addresses.PARAMS, EPOCH_SLOT)


def get_epoch_start(state: StateAPI) -> int:
    return state.get_storage(addresses.PARAMS, EPOCH_START_SLOT)


def init_clock(state: StateAPI) -> None:
    state.set_storage(addresses.PARAMS, EPOCH_SLOT, 0)
    state.set_storage(addresses.PARAMS, EPOCH_START_SLOT, 1)


def advance_clock(state: StateAPI, height: int) -> bool:
    """Called first thing in every block; True when ``height`` starts a new epoch."""
    start = get_epoch_start(state)
    if height < start + get_param(state, "epoch_length_blocks"):
        return False
    state.set_storage(addresses.PARAMS, EPOCH_SLOT, get_epoch(state) + 1)
    state.set_storage(addresses.PARAMS, EPOCH_START_SLOT, height)
    return True
