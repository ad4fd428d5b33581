"""EIP-712 typed structured data: struct types, domain separators, digests and signer recovery.

System modules verify authorisations signed by any Ethereum wallet
(``eth_signTypedData_v4``, eth-account's ``Account.sign_typed_data``, ethers'
``signTypedData``). The digest is computed here from first principles, so the
consensus path does not depend on a client library's encoder:

    digest = keccak256(0x19 0x01 ++ domainSeparator ++ hashStruct(message))

Supported field types are the ones authorisations need: atomic types
(``address``, ``bool``, ``uintN``, ``intN``, ``bytesN``) and dynamic ``bytes`` and
``string`` (hashed, as the EIP says). Nested structs and arrays are not supported
and are refused when a type is declared.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import eth_abi
from coincurve import PublicKey
from eth_hash.auto import keccak

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_ATOMIC = re.compile(
    r"^(address|bool|u?int(8|16|24|32|40|48|56|64|72|80|88|96|104|112|120|128|136|"
    r"144|152|160|168|176|184|192|200|208|216|224|232|240|248|256)|bytes([1-9]|[12][0-9]|3[0-2]))$"
)


@dataclass(frozen=True)
class StructType:
    """An EIP-712 struct type: a name and ordered ``(type, name)`` fields."""

    name: str
    fields: tuple[tuple[str, str], ...]
    type_hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for typ, _ in self.fields:
            if typ not in ("string", "bytes") and not _ATOMIC.match(typ):
                raise ValueError(f"unsupported EIP-712 field type {typ!r}")
        object.__setattr__(self, "type_hash", keccak(self.encode_type().encode()))

    def encode_type(self) -> str:
        """``Name(type1 name1,type2 name2)`` as EIP-712 ``encodeType`` defines it."""
        return f"{self.name}({','.join(f'{t} {n}' for t, n in self.fields)})"

    def hash_struct(self, values: Mapping[str, Any]) -> bytes:
        """``keccak256(typeHash ++ encodeData(values))``; every field must be present."""
        parts = [self.type_hash]
        for typ, name in self.fields:
            parts.append(_encode_value(typ, values[name]))
        return keccak(b"".join(parts))

    def eth_account_types(self) -> dict[str, list[dict[str, str]]]:
        """The ``types`` entry a wallet library expects for this struct."""
        return {self.name: [{"name": n, "type": t} for t, n in self.fields]}


EIP712_DOMAIN = StructType(
    "EIP712Domain",
    (
        ("string", "name"),
        ("string", "version"),
        ("uint256", "chainId"),
        ("address", "verifyingContract"),
    ),
)


def _encode_value(typ: str, value: Any) -> bytes:
    if typ == "string":
        return keccak(value.encode() if isinstance(value, str) else bytes(value))
    if typ == "bytes":
        return keccak(bytes(value))
    return eth_abi.encode([typ], [value])


def compute_domain_separator(
    name: str, version: str, chain_id: int, verifying_contract: bytes
) -> bytes:
    """hashStruct of the EIP712Domain with name, version, chainId and verifyingContract."""
    return EIP712_DOMAIN.hash_struct(
        {
            "name": name,
            "version": version,
            "chainId": chain_id,
            "verifyingContract": verifying_contract,
        }
    )


def compute_digest(domain_separator: bytes, struct_hash: bytes) -> bytes:
    """The 32 bytes a wallet signs for typed data: keccak256(0x1901 ++ domain ++ struct)."""
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


def recover_signer(digest: bytes, signature: bytes) -> bytes | None:
    """Address whose key made ``signature`` (65 bytes ``r || s || v``, v in 0, 1, 27, 28)
    over ``digest``, or None when the signature is malformed or not recoverable.

    High-s signatures are refused (EIP-2), so each authorisation has exactly one valid
    encoding and a signature cannot be altered into a second valid one.
    """
    if len(signature) != 65:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1) or not 0 < r < SECP256K1_N or not 0 < s <= SECP256K1_N // 2:
        return None
    try:
        public = PublicKey.from_signature_and_message(
            signature[:64] + bytes([v]), digest, hasher=None
        )
    except Exception:  # coincurve raises on points that do not recover
        return None
    return keccak(public.format(compressed=False)[1:])[-20:]
