"""System modules: one table from address to module (docs/protocol.md).

Each module is a Python precompile with an ABI shipped in ``vm/abi/<name>.json``.
Modules listed here are merged into py-evm's precompile table by
:mod:`vm.state`; their accounts get nonce 1 at genesis so EIP-161 never deletes
their storage.
"""

from __future__ import annotations

from vm.modules.base import SystemModule
from vm.modules.governance import GovernanceModule
from vm.modules.identity import IdentityModule
from vm.modules.licenses import LicensesModule
from vm.modules.params import ParamsModule
from vm.modules.rewards import RewardsModule
from vm.modules.telemetry import TelemetryModule
from vm.modules.validators import ValidatorsModule

SYSTEM_MODULES: dict[bytes, SystemModule] = {
    m.address: m
    for m in (
        ParamsModule(),
        ValidatorsModule(),
        IdentityModule(),
        RewardsModule(),
        GovernanceModule(),
        TelemetryModule(),
        LicensesModule(),
    )
}


