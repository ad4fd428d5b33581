"""Validator set kept in state, so jailing and governance changes are part of the
state transition and ``next_validators_hash`` follows from the state root.

Layout: slot 0 = count; ``mapping_slot(1, i)`` = address i; ``mapping_slot(2, addr)``
= power; ``mapping_slot(3, addr)`` = jailed flag. Jailed validators keep their
(slashed) power on record but are out of the active set.
"""

from __future__ import annotations

from eth.abc import StateAPI

from vm.modules import addresses
from vm.modules.base import Call, Store, SystemModule, mapping_slot

SLASH_BPS = 500  # power lost on double-signing evidence (5 %)


def _store(state: StateAPI) -> Store:
    return Store(state, addresses.VALIDATORS)


def all_validators(state: StateAPI) -> list[tuple[bytes, int, bool]]:
    st = _store(state)
    out = []
    for i in range(st.load(0)):
        addr = st.load_address(mapping_slot(1, i))
        out.append((addr, st.load(mapping_slot(2, addr)), bool(st.load(mapping_slot(3, addr)))))
    return out


def active_validators(state: StateAPI) -> list[tuple[bytes, int]]:
    """Active set (not jailed, power > 0), sorted by address."""
    return sorted((a, p) for a, p, jailed in all_validators(state) if p > 0 and not jailed)


def set_power(state: StateAPI, validator: bytes, power: int) -> None:
    """Add a validator, change its power, or remove it from the active set (power 0).
    Setting power also lifts a jail: that is how governance re-admits a validator."""
    st = _store(state)
    known = {a for a, _, _ in all_validators(state)}
    if validator not in known:
        n = st.load(0)
        st.store_address(mapping_slot(1, n), validator)
        st.store(0, n + 1)
    st.store(mapping_slot(2, validator), power)
    st.store(mapping_slot(3, validator), 0)


def jail(state: StateAPI, validator: bytes) -> bool:
    """Jail and slash a validator for double signing. Returns False if unknown or already jailed."""
    st = _store(state)
    if validator not in {a for a, _, _ in all_validators(state)}:
        return False
    if st.load(mapping_slot(3, validator)):
        return False
    power = st.load(mapping_slot(2, validator))
    st.store(mapping_slot(2, validator), power - power * SLASH_BPS // 10_000)
    st.store(mapping_slot(3, validator), 1)
    return True


class ValidatorsModule(SystemModule):
    name = "validators"
    address = addresses.VALIDATORS

    def getValidators(self, call: Call) -> tuple[list[str], list[int]]:
        active = active_validators(call.state)
        call.gas(2_100 * 3 * max(1, len(active)), "validator set read")
        return ["0x" + a.hex() for a, _ in active], [p for _, p in active]

    def isJailed(self, call: Call, validator: str) -> bool:
        return bool(call.store.load(mapping_slot(3, bytes.fromhex(validator[2:]))))
