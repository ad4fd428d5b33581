"""Genesis spec: a JSON document, parsed into frozen dataclasses and validated."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vm.errors import InvalidGenesis
from vm.params import PARAMS, check_param, defaults

MAX_GENESIS_BYTES = 64 * 1024 * 1024
DEV_CHAIN_ID = 7077
DEV_MNEMONIC = "test test test test test test test test test test test junk"


@dataclass(frozen=True)
class GenesisValidator:
    address: bytes
    power: int
    name: str = ""


@dataclass(frozen=True)
class GenesisAccount:
    balance: int = 0
    nonce: int = 0
    code: bytes = b""
    storage: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class GenesisSpec:
    chain_id: int
    genesis_time_ms: int
    validators: tuple[GenesisValidator, ...]
    alloc: dict[bytes, GenesisAccount]
    params: dict[str, int]
    gas_limit: int = 30_000_000
    base_fee_per_gas: int = 1_000_000_000
    modules: dict[str, Any] = field(default_factory=dict)  # per-module sections (identity: manufacturers...)

    @classmethod
    def from_json(cls, text: str | bytes) -> GenesisSpec:
        if len(text) > MAX_GENESIS_BYTES:
            raise InvalidGenesis("genesis file too large")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidGenesis(f"genesis is not valid JSON: {exc}") from None
        return cls.from_dict(doc)

    @classmethod
    def load(cls, path: str | Path) -> GenesisSpec:
        return cls.from_json(Path(path).read_bytes())

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> GenesisSpec:
        try:
            params = defaults()
            for name, value in doc.get("params", {}).items():
                check_param(name, int(value))
                params[name] = int(value)
            spec = cls(
                chain_id=int(doc["chain_id"]),
                genesis_time_ms=int(doc.get("genesis_time_ms", 0)),
                validators=tuple(
                    GenesisValidator(_addr(v["address"]), int(v["power"]), v.get("name", ""))
                    for v in doc["validators"]
                ),
                alloc={
                    _addr(a): GenesisAccount(
                        balance=int(acct.get("balance", 0)),
                        nonce=int(acct.get("nonce", 0)),
                        code=_hex(acct.get("code", "0x")),
                        storage={int(k, 0): int(v, 0) for k, v in acct.get("storage", {}).items()},
                    )
                    for a, acct in doc.get("alloc", {}).items()
                },
                params=params,
                gas_limit=int(doc.get("gas_limit", 30_000_000)),
                base_fee_per_gas=int(doc.get("base_fee_per_gas", 1_000_000_000)),
                modules=dict(doc.get("modules", {})),
            )
        except InvalidGenesis:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidGenesis(f"bad genesis field: {exc!r}") from None
        spec.validate()
        return spec

    def validate(self) -> None:
        if not 0 < self.chain_id < 2**63:
            raise InvalidGenesis("chain_id must be a positive 63-bit integer")
        if not self.validators or all(v.power == 0 for v in self.validators):
            raise InvalidGenesis("genesis needs at least one validator with power")
        if len({v.address for v in self.validators}) != len(self.validators):
            raise InvalidGenesis("duplicate validator address")
        if any(v.power < 0 for v in self.validators):
            raise InvalidGenesis("validator power must not be negative")
        if set(self.params) != set(PARAMS):
            raise InvalidGenesis("params must cover every chain parameter")

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "gas_limit": self.gas_limit,
            "base_fee_per_gas": self.base_fee_per_gas,
            "validators": [
                {"address": "0x" + v.address.hex(), "power": v.power, "name": v.name} for v in self.validators
            ],
            "alloc": {
                "0x" + a.hex(): {
                    k: v
                    for k, v in {
                        "balance": str(acct.balance),
                        "nonce": acct.nonce,
                        "code": "0x" + acct.code.hex(),
                        "storage": {hex(s): hex(x) for s, x in acct.storage.items()},
                    }.items()
                    if v not in (0, "0x", {}, "0")
                }
                for a, acct in sorted(self.alloc.items())
            },
            "params": dict(self.params),
            "modules": self.modules,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def _hex(s: str) -> bytes:
    if not isinstance(s, str) or not s.startswith("0x"):
        raise InvalidGenesis(f"expected 0x-prefixed hex, got {s!r}")
    return bytes.fromhex(s[2:])


def _addr(s: str) -> bytes:
    b = _hex(s)
    if len(b) != 20:
        raise InvalidGenesis(f"address must be 20 bytes: {s}")
    return b
