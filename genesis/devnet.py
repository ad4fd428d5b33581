"""The bundled devnet genesis (docs/protocol.md): chain id 7077, the ten accounts
of the standard development mnemonic funded with 10,000 MOTUS each, account 1
licensed as a device manufacturer. For local development only."""

from __future__ import annotations

import time
from functools import lru_cache

from eth_account import Account

from genesis.spec import DEV_CHAIN_ID, DEV_MNEMONIC, GenesisAccount, GenesisSpec, GenesisValidator
from vm.errors import InvalidGenesis
from vm.params import ETHER, defaults

DEV_BALANCE = 10_000 * ETHER
DEV_ACCOUNT_COUNT = 10


@lru_cache(maxsize=1)
def dev_accounts() -> tuple[tuple[bytes, bytes], ...]:
    """(address, private key) of m/44'/60'/0'/0/i for i in 0..9 (Hardhat/Anvil accounts)."""
    Account.enable_unaudited_hdwallet_features()
    out = []
    for i in range(DEV_ACCOUNT_COUNT):
        acct = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        out.append((bytes.fromhex(acct.address[2:]), bytes(acct.key)))
    return tuple(out)


def new_genesis(
    chain_id: int,
    validators: list[tuple[bytes, int]],
    *,
    fund_dev_accounts: bool = True,
    allow_dev_keys: bool = False,
    params: dict[str, int] | None = None,
    extra_alloc: dict[bytes, int] | None = None,
    genesis_time_ms: int | None = None,
) -> GenesisSpec:
    if fund_dev_accounts and chain_id != DEV_CHAIN_ID and not allow_dev_keys:
        raise InvalidGenesis(
            f"refusing to fund the well-known development keys on chain id {chain_id}: "
            "anyone can spend them; pass --allow-dev-keys if this is really a test chain"
        )
    alloc: dict[bytes, GenesisAccount] = {}
    modules: dict = {}
    if fund_dev_accounts:
        accounts = dev_accounts()
        for address, _ in accounts:
            alloc[address] = GenesisAccount(balance=DEV_BALANCE)
        modules["identity"] = {"manufacturers": [{"address": "0x" + accounts[1][0].hex(), "name": "Motus Dev Devices"}]}
    for address, balance in (extra_alloc or {}).items():
        alloc[address] = GenesisAccount(balance=balance)
    all_params = defaults()
    all_params.update(params or {})
    return GenesisSpec(
        chain_id=chain_id,
        genesis_time_ms=int(time.time() * 1000) if genesis_time_ms is None else genesis_time_ms,
        validators=tuple(GenesisValidator(a, p, f"validator-{i}") for i, (a, p) in enumerate(validators)),
        alloc=alloc,
        params=all_params,
        modules=modules,
    )


# Chain parameters of ``motus devnet up --preset``: "standard" is the mainnet-like table
# of vm.params; "fast" shrinks every wait to seconds so that a new user sees an epoch
# settle, a reward paid and a governance change applied within a few minutes (1 s blocks).
PRESETS: dict[str, dict[str, int]] = {
    "standard": {},
    "fast": {
        "epoch_length_blocks": 30,  # an epoch of about 30 s
        "min_attestations": 5,  # a car driving from mid-epoch still qualifies
        "gov_voting_period_blocks": 30,  # half a minute to vote
        "gov_execution_delay_blocks": 5,
        "gov_unlock_delay_blocks": 10,
    },
}


def parse_param_assignment(text: str) -> tuple[str, int]:
    """``NAME=VALUE`` for a chain parameter: VALUE an integer (decimal with optional
    ``_``, or 0x-hex) within the parameter's bounds. Raises InvalidGenesis with one line
    that says what is wrong, listing the parameter names for an unknown one."""
    from vm.params import PARAMS, check_param

    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise InvalidGenesis(f"--param wants NAME=VALUE, got {text!r}")
    if name not in PARAMS:
        raise InvalidGenesis(f"unknown chain parameter {name!r}; known: {', '.join(PARAMS)}")
    try:
        value = int(raw.strip().replace("_", ""), 0)
    except ValueError:
        raise InvalidGenesis(f"--param {name}: not an integer: {raw!r}") from None
    try:
        check_param(name, value)
    except ValueError as exc:
        raise InvalidGenesis(f"--param {exc}") from None
    return name, value


def preset_params(preset: str | None, assignments: list[str] | None) -> dict[str, int]:
    """The parameters a preset sets, then each ``NAME=VALUE`` of ``assignments`` over
    them (validated: :func:`parse_param_assignment`)."""
    if preset is not None and preset not in PRESETS:
        raise InvalidGenesis(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    out = dict(PRESETS[preset or "standard"])
    for text in assignments or []:
        name, value = parse_param_assignment(text)
        out[name] = value
    return out
