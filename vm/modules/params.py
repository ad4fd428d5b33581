"""Chain parameters module: the integers of :mod:`vm.params`, kept in state."""

from __future__ import annotations

from eth.abc import StateAPI

from vm.modules import addresses
from vm.modules.base import Call, ModuleRevert, Store, SystemModule
from vm.params import PARAMS, check_param, param_slot


def get_param(state: StateAPI, name: str) -> int:
    if name not in PARAMS:
        raise KeyError(name)
    return state.get_storage(addresses.PARAMS, param_slot(name))


def get_all_params(state: StateAPI) -> dict[str, int]:
    return {name: get_param(state, name) for name in PARAMS}


def set_param(state: StateAPI, name: str, value: int) -> None:
    """Write a parameter (genesis, governance activation). Bounds are checked."""
    check_param(name, value)
    Store(state, addresses.PARAMS).store(param_slot(name), value)


class ParamsModule(SystemModule):
    name = "params"
    address = addresses.PARAMS

    def getParam(self, call: Call, name: str) -> int:
        if name not in PARAMS:
            raise ModuleRevert(f"unknown parameter {name!r}")
        return call.store.load(param_slot(name))

    def getParams(self, call: Call) -> tuple[list[str], list[int]]:
        names = list(PARAMS)
        return names, [call.store.load(param_slot(n)) for n in names]
