"""Keys at rest. Validator signing keys: small JSON files, mode 0600, written atomically
(as CometBFT's priv_validator_key.json). Account keys: encrypted keystore JSON
(eth-account's scrypt/AES format, the same any Ethereum wallet reads)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from eth_account import Account

from codec.files import write_atomic
from consensus.crypto import address_of_private_key


class KeyError_(Exception):
    code = "bad_key"


def new_validator_key(path: str | Path) -> bytes:
    key = secrets.token_bytes(32)
    save_validator_key(path, key)
    return key


def save_validator_key(path: str | Path, key: bytes) -> None:
    doc = {"address": "0x" + address_of_private_key(key).hex(), "private_key": key.hex()}
    write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())


def require_owner_only(path: str | Path) -> None:
    """Refuse a key file that anyone but its owner may read or write."""
    mode = Path(path).stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyError_(f"{path} is readable by others (mode {oct(mode)}); chmod 600 it")


def load_validator_key(path: str | Path) -> bytes:
    path = Path(path)
    require_owner_only(path)
    try:
        doc = json.loads(path.read_text())
        key = bytes.fromhex(doc["private_key"])
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyError_(f"{path}: not a validator key file ({exc})") from None
    if len(key) != 32:
        raise KeyError_(f"{path}: private key must be 32 bytes")
    return key


def new_keystore(directory: str | Path, password: str, key: bytes | None = None) -> Path:
    """Create an encrypted keystore file named after the address; returns its path."""
    key = key or secrets.token_bytes(32)
    doc = Account.encrypt(key, password)
    path = Path(directory) / f"{doc['address'].lower()}.json"
    write_atomic(path, json.dumps(doc).encode())
    return path


def load_keystore(path: str | Path, password: str) -> bytes:
    try:
        return bytes(Account.decrypt(json.loads(Path(path).read_text()), password))
    except ValueError as exc:
        raise KeyError_(f"cannot decrypt {path}: {exc}") from None


def list_keystores(directory: str | Path) -> list[tuple[str, Path]]:
    out = []
    for p in sorted(Path(directory).glob("*.json")):
        try:
            out.append(("0x" + json.loads(p.read_text())["address"].lower().removeprefix("0x"), p))
        except (ValueError, KeyError):
            continue
    return out
