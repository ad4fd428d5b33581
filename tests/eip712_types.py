"""The identity module's EIP-712 types as a wallet would write them (docs/identity.md),
kept apart from the module's own definitions so tests prove that signatures made by
eth-account from the documented types verify on chain."""

CLAIM_TYPES = {
    "ClaimDevice": [
        {"name": "device", "type": "address"},
        {"name": "owner", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}
PAIR_TYPES = {
    "PairDevice": [
        {"name": "vehicleId", "type": "uint256"},
        {"name": "device", "type": "address"},
        {"name": "owner", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
}
