"""Fixed addresses of the system modules (docs/protocol.md).

Outside Ethereum's precompile range (0x01..0x11, 0x100) so no fork collides.
"""


from eth_typing import Address


def _addr(n: int) -> Address:
    return Address((0x4D0700 + n).to_bytes(20, "big"))  # 0x...4d07xx: "Motus", 7077


PARAMS = _addr(1)
VALIDATORS = _addr(2)
IDENTITY = _addr(3)
TELEMETRY = _addr(4)
REWARDS = _addr(5)
GOVERNANCE = _addr(6)
LICENSES = _addr(7)

ALL = {
    "params": PARAMS,
    "validators": VALIDATORS,
    "identity": IDENTITY,
    "telemetry": TELEMETRY,
    "rewards": REWARDS,
    "governance": GOVERNANCE,
    "licenses": LICENSES,
}
