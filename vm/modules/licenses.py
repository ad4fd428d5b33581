"""Licenses module: developer licenses, an ERC-721 collection wallets show (docs/developers.md).

A license is what a developer's app is on chain: a name, a client id (unique, chosen
at mint), redirect URIs for the owner-facing consent flow, and up to
:data:`MAX_SIGNERS` signer keys the developer rotates without changing the license.
Anyone mints one by paying exactly the governance parameter ``license_fee`` (kept by
this module's account, which nobody can spend). Vehicle owners grant permissions to
a license (``identity.grantLicense``), not to one key: whichever current signer asks
for an access token is served, so a leaked key is rotated out without re-consent.

A license is also a grantee of the identity module's permission table under a
derived address, :func:`license_grantee` (keccak of a fixed prefix and the id: no
key can sign for it), so every rule of permissions (expiry, revocation, reset on a
vehicle transfer) holds for licenses unchanged.

Storage (Solidity-style, documented in docs/developers.md): the ``SLOT_*`` constants
and the field offsets ``L_*`` below.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from eth.abc import StateAPI
from eth_hash.auto import keccak

from vm.modules import addresses
from vm.modules.base import Call, ModuleRevert, Store, SystemModule, mapping_slot
from vm.modules.erc721 import (
    INTERFACE_ERC165,
    INTERFACE_ERC721,
    INTERFACE_ERC721_METADATA,
    check_erc721_receiver,
)
from vm.modules.params import get_param

ZERO_ADDRESS = b"\x00" * 20

NAME = "Motus Developer License"
SYMBOL = "MDL"

# --- bounds (docs/developers.md, "Licenses") --------------------------------------
MAX_NAME_BYTES = 64
MAX_CLIENT_ID_BYTES = 64
# starts with a letter, so a client id never reads as a license id (a number or 0x-hex)
CLIENT_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
MAX_REDIRECT_URIS = 8
MAX_URI_BYTES = 256
# OAuth 2.0 practice (RFC 8252): https, or plain http only to the developer's own machine
URI_PREFIXES = ("https://", "http://localhost", "http://127.0.0.1")
MAX_SIGNERS = 8
LICENSE_GRANTEE_PREFIX = b"Motus license grantee"

# --- storage layout -----------------------------------------------------------------
SLOT_COUNT = 0  # uint256: last license id minted (ids start at 1, never reused)
SLOT_OWNER = 10  # mapping(uint256 id => address owner)
SLOT_BALANCE = 11  # mapping(address owner => uint256)
SLOT_TOKEN_APPROVAL = 12  # mapping(uint256 id => address)
SLOT_OPERATOR_APPROVAL = 13  # mapping(address owner => mapping(address operator => bool))
SLOT_LICENSE = 16  # mapping(uint256 id => License)
SLOT_URI = 17  # mapping(uint256 id => mapping(uint256 index => string))
SLOT_SIGNER_INDEX = 18  # mapping(uint256 id => mapping(address => 1 + index in the list))
SLOT_SIGNER = 19  # mapping(uint256 id => mapping(uint256 index => address))
SLOT_CLIENT_ID = 20  # mapping(bytes32 keccak(clientId) => uint256 id)
L_NAME, L_CLIENT_ID, L_URI_COUNT, L_SIGNER_COUNT, L_FEE_PAID = range(5)


@dataclass(frozen=True)
class License:
    license_id: int
    owner: bytes
    name: str
    client_id: str
    redirect_uris: tuple[str, ...]
    signers: tuple[bytes, ...]


def license_grantee(license_id: int) -> bytes:
    """The address under which a license holds grants in the identity module's
    permission table: ``keccak256("Motus license grantee" ++ uint256(id))[12:]``."""
    return keccak(LICENSE_GRANTEE_PREFIX + license_id.to_bytes(32, "big"))[12:]


class _Ledger:
    def __init__(self, store: Store) -> None:
        self.st = store

    def owner(self, license_id: int) -> bytes:
        return self.st.load_address(mapping_slot(SLOT_OWNER, license_id))

    def field(self, license_id: int, offset: int) -> int:
        return mapping_slot(SLOT_LICENSE, license_id) + offset

    def signers(self, license_id: int) -> list[bytes]:
        count = self.st.load(self.field(license_id, L_SIGNER_COUNT))
        return [self.st.load_address(mapping_slot(SLOT_SIGNER, license_id, i)) for i in range(count)]

    def is_signer(self, license_id: int, signer: bytes) -> bool:
        return self.st.load(mapping_slot(SLOT_SIGNER_INDEX, license_id, signer)) != 0

    def add_signer(self, license_id: int, signer: bytes) -> None:
        if signer == ZERO_ADDRESS:
            raise ModuleRevert("bad_signer: zero address")
        if self.is_signer(license_id, signer):
            raise ModuleRevert("bad_signer: already a signer")
        count_slot = self.field(license_id, L_SIGNER_COUNT)
        count = self.st.load(count_slot)
        if count >= MAX_SIGNERS:
            raise ModuleRevert(f"too_many_signers: at most {MAX_SIGNERS}")
        self.st.store_address(mapping_slot(SLOT_SIGNER, license_id, count), signer)
        self.st.store(mapping_slot(SLOT_SIGNER_INDEX, license_id, signer), count + 1)
        self.st.store(count_slot, count + 1)

    def remove_signer(self, license_id: int, signer: bytes) -> None:
        index_slot = mapping_slot(SLOT_SIGNER_INDEX, license_id, signer)
        position = self.st.load(index_slot)
        if position == 0:
            raise ModuleRevert("bad_signer: not a signer of this license")
        count_slot = self.field(license_id, L_SIGNER_COUNT)
        last = self.st.load(count_slot) - 1
        if position - 1 != last:  # swap-and-pop keeps the list dense
            moved = self.st.load_address(mapping_slot(SLOT_SIGNER, license_id, last))
            self.st.store_address(mapping_slot(SLOT_SIGNER, license_id, position - 1), moved)
            self.st.store(mapping_slot(SLOT_SIGNER_INDEX, license_id, moved), position)
        self.st.store_address(mapping_slot(SLOT_SIGNER, license_id, last), ZERO_ADDRESS)
        self.st.store(index_slot, 0)
        self.st.store(count_slot, last)

    def redirect_uris(self, license_id: int) -> list[str]:
        count = self.st.load(self.field(license_id, L_URI_COUNT))
        return [self.st.load_bytes(mapping_slot(SLOT_URI, license_id, i)).decode("utf-8", "replace")
                for i in range(count)]

    def set_redirect_uris(self, license_id: int, uris: list[str]) -> None:
        encoded = [_check_uri(u) for u in uris]
        if len(encoded) > MAX_REDIRECT_URIS:
            raise ModuleRevert(f"bad_redirect_uri: at most {MAX_REDIRECT_URIS}")
        if len(set(encoded)) != len(encoded):
            raise ModuleRevert("bad_redirect_uri: duplicate")
        count_slot = self.field(license_id, L_URI_COUNT)
        old = self.st.load(count_slot)
        for i, uri in enumerate(encoded):
            self.st.store_bytes(mapping_slot(SLOT_URI, license_id, i), uri)
        for i in range(len(encoded), old):
            self.st.store_bytes(mapping_slot(SLOT_URI, license_id, i), b"")
        self.st.store(count_slot, len(encoded))

    def license(self, license_id: int) -> License | None:
        owner = self.owner(license_id)
        if owner == ZERO_ADDRESS:
            return None
        return License(
            license_id, owner,
            self.st.load_bytes(self.field(license_id, L_NAME)).decode("utf-8", "replace"),
            self.st.load_bytes(self.field(license_id, L_CLIENT_ID)).decode("utf-8", "replace"),
            tuple(self.redirect_uris(license_id)), tuple(self.signers(license_id)))


def _check_uri(uri: str) -> bytes:
    raw = uri.encode()
    if not 0 < len(raw) <= MAX_URI_BYTES or not uri.startswith(URI_PREFIXES) or any(
            c.isspace() for c in uri):
        raise ModuleRevert(f"bad_redirect_uri: {uri[:80]!r} (https://, or http://localhost / "
                           f"http://127.0.0.1; at most {MAX_URI_BYTES} bytes, no spaces)")
    return raw


# --- Python read API (identity, RPC, token verification) ------------------------------


def _ledger(state: StateAPI) -> _Ledger:
    return _Ledger(Store(state, addresses.LICENSES))


def get_license(state: StateAPI, license_id: int) -> License | None:
    """The license with this id, or None if it was never minted."""
    return _ledger(state).license(license_id)


def license_owner(state: StateAPI, license_id: int) -> bytes | None:
    owner = _ledger(state).owner(license_id)
    return None if owner == ZERO_ADDRESS else owner


def is_license_signer(state: StateAPI, license_id: int, signer: bytes) -> bool:
    """True while ``signer`` is one of the license's current signer keys."""
    return _ledger(state).is_signer(license_id, signer)


def license_by_client_id(state: StateAPI, client_id: str) -> int | None:
    found = Store(state, addresses.LICENSES).load(
        mapping_slot(SLOT_CLIENT_ID, keccak(client_id.encode())))
    return found or None


def _hex(address: bytes) -> str:
    return "0x" + address.hex()


def _address(value: str) -> bytes:
    return bytes.fromhex(value[2:])


class LicensesModule(SystemModule):
    name = "licenses"
    address = addresses.LICENSES

    def __init__(self) -> None:
        super().__init__()
        # ERC-721's name() collides with SystemModule.name, as in the identity module
        for selector, (fn_abi, _) in list(self._functions.items()):
            if fn_abi["name"] == "name":
                self._functions[selector] = (fn_abi, self.erc721_name)

    # --- licenses ---------------------------------------------------------------

    def mintLicense(self, call: Call, name: str, client_id: str, redirect_uris: list[str],
                    signer: str) -> int:
        """Mint a license to the caller for exactly ``license_fee``; ``signer`` zero means
        the caller's own key is the first signer."""
        fee = get_param(call.state, "license_fee")
        call.require(call.value == fee, f"wrong_fee: send exactly {fee} wei (license_fee)")
        name_b, client_b = name.encode(), client_id.encode()
        call.require(0 < len(name_b) <= MAX_NAME_BYTES,
                     f"bad_name: 1 to {MAX_NAME_BYTES} bytes")
        call.require(0 < len(client_b) <= MAX_CLIENT_ID_BYTES and CLIENT_ID_RE.fullmatch(client_id),
                     f"bad_client_id: 1 to {MAX_CLIENT_ID_BYTES} of A-Z a-z 0-9 . _ -, "
                     "starting with a letter")
        id_slot = mapping_slot(SLOT_CLIENT_ID, keccak(client_b))
        call.require(call.store.load(id_slot) == 0, "client_id_taken: another license has it")
        led = _Ledger(call.store)
        license_id = call.store.load(SLOT_COUNT) + 1
        call.store.store(SLOT_COUNT, license_id)
        call.store.store(id_slot, license_id)
        call.store.store_address(mapping_slot(SLOT_OWNER, license_id), call.sender)
        balance_slot = mapping_slot(SLOT_BALANCE, call.sender)
        call.store.store(balance_slot, call.store.load(balance_slot) + 1)
        call.store.store_bytes(led.field(license_id, L_NAME), name_b)
        call.store.store_bytes(led.field(license_id, L_CLIENT_ID), client_b)
        call.store.store(led.field(license_id, L_FEE_PAID), fee)
        led.set_redirect_uris(license_id, list(redirect_uris))
        signer_b = _address(signer)
        led.add_signer(license_id, call.sender if signer_b == ZERO_ADDRESS else signer_b)
        call.emit("Transfer", ZERO_ADDRESS, call.sender, license_id)
        call.emit("LicenseMinted", license_id, call.sender, client_id, name)
        for s in led.signers(license_id):
            call.emit("SignerAdded", license_id, s)
        return license_id

    def _owned(self, call: Call, license_id: int) -> _Ledger:
        led = _Ledger(call.store)
        owner = self._require_owner(led, license_id)
        call.require(call.sender == owner, "not_license_owner")
        return led

    def addSigner(self, call: Call, license_id: int, signer: str) -> None:
        self._owned(call, license_id).add_signer(license_id, _address(signer))
        call.emit("SignerAdded", license_id, _address(signer))

    def removeSigner(self, call: Call, license_id: int, signer: str) -> None:
        self._owned(call, license_id).remove_signer(license_id, _address(signer))
        call.emit("SignerRemoved", license_id, _address(signer))

    def rotateSigner(self, call: Call, license_id: int, old: str, new: str) -> None:
        """Replace signer ``old`` by ``new`` in one call: ``old`` gets no new tokens, and
        nodes refuse the ones it obtained from this block on (node/tokens.py checks each
        token's signer is still a signer on every use)."""
        led = self._owned(call, license_id)
        led.remove_signer(license_id, _address(old))
        led.add_signer(license_id, _address(new))
        call.emit("SignerRemoved", license_id, _address(old))
        call.emit("SignerAdded", license_id, _address(new))

    def setRedirectUris(self, call: Call, license_id: int, uris: list[str]) -> None:
        self._owned(call, license_id).set_redirect_uris(license_id, list(uris))
        call.emit("RedirectUrisSet", license_id, list(uris))

    def getLicense(self, call: Call, license_id: int) -> tuple[str, str, str, list[str], list[str]]:
        found = _Ledger(call.store).license(license_id)
        if found is None:
            raise ModuleRevert("nonexistent token")
        return (_hex(found.owner), found.name, found.client_id, list(found.redirect_uris),
                [_hex(s) for s in found.signers])

    def isSigner(self, call: Call, license_id: int, signer: str) -> bool:
        return _Ledger(call.store).is_signer(license_id, _address(signer))

    def licenseIdByClientId(self, call: Call, client_id: str) -> int:
        return call.store.load(mapping_slot(SLOT_CLIENT_ID, keccak(client_id.encode())))

    def licenseGrantee(self, call: Call, license_id: int) -> str:
        return _hex(license_grantee(license_id))

    # --- ERC-165 / ERC-721 -----------------------------------------------------

    def supportsInterface(self, call: Call, interface_id: bytes) -> bool:
        return interface_id in (INTERFACE_ERC165, INTERFACE_ERC721, INTERFACE_ERC721_METADATA)

    def erc721_name(self, call: Call) -> str:
        return NAME

    def symbol(self, call: Call) -> str:
        return SYMBOL

    def totalSupply(self, call: Call) -> int:
        return call.store.load(SLOT_COUNT)  # licenses are never burned

    def tokenURI(self, call: Call, license_id: int) -> str:
        found = _Ledger(call.store).license(license_id)
        if found is None:
            raise ModuleRevert("nonexistent token")
        meta = {"name": f"{found.name} (Motus license #{license_id})",
                "description": f"Motus developer license, client id {found.client_id}",
                "attributes": [{"trait_type": "Client ID", "value": found.client_id},
                               {"trait_type": "Signers", "value": len(found.signers)}]}
        body = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
        return "data:application/json;base64," + base64.b64encode(body).decode()

    def balanceOf(self, call: Call, owner: str) -> int:
        owner_b = _address(owner)
        call.require(owner_b != ZERO_ADDRESS, "zero address")
        return call.store.load(mapping_slot(SLOT_BALANCE, owner_b))

    def ownerOf(self, call: Call, license_id: int) -> str:
        return _hex(self._require_owner(_Ledger(call.store), license_id))

    def getApproved(self, call: Call, license_id: int) -> str:
        self._require_owner(_Ledger(call.store), license_id)
        return _hex(call.store.load_address(mapping_slot(SLOT_TOKEN_APPROVAL, license_id)))

    def isApprovedForAll(self, call: Call, owner: str, operator: str) -> bool:
        return bool(call.store.load(
            mapping_slot(SLOT_OPERATOR_APPROVAL, _address(owner), _address(operator))))

    def approve(self, call: Call, spender: str, license_id: int) -> None:
        owner = self._require_owner(_Ledger(call.store), license_id)
        spender_b = _address(spender)
        call.require(spender_b != owner, "approval to current owner")
        call.require(call.sender == owner or self.isApprovedForAll(call, _hex(owner), _hex(call.sender)),
                     "not owner nor approved for all")
        call.store.store_address(mapping_slot(SLOT_TOKEN_APPROVAL, license_id), spender_b)
        call.emit("Approval", owner, spender_b, license_id)

    def setApprovalForAll(self, call: Call, operator: str, approved: bool) -> None:
        operator_b = _address(operator)
        call.require(operator_b != call.sender, "approve to caller")
        call.store.store(mapping_slot(SLOT_OPERATOR_APPROVAL, call.sender, operator_b), int(approved))
        call.emit("ApprovalForAll", call.sender, operator_b, approved)

    def transferFrom(self, call: Call, from_: str, to: str, license_id: int) -> None:
        self._transfer(call, _address(from_), _address(to), license_id)

    def safeTransferFrom(self, call: Call, from_: str, to: str, license_id: int,
                         data: bytes = b"") -> None:
        """Both ERC-721 overloads; a receiver with code must accept (onERC721Received)."""
        from_b, to_b = _address(from_), _address(to)
        self._transfer(call, from_b, to_b, license_id)
        check_erc721_receiver(call, from_b, to_b, license_id, data)

    def _require_owner(self, led: _Ledger, license_id: int) -> bytes:
        owner = led.owner(license_id)
        if owner == ZERO_ADDRESS:
            raise ModuleRevert("nonexistent token")
        return owner

    def _transfer(self, call: Call, from_: bytes, to: bytes, license_id: int) -> None:
        """A license changes hands with its signers and its grants: the new owner rotates
        the signers it does not trust."""
        owner = self._require_owner(_Ledger(call.store), license_id)
        call.require(to != ZERO_ADDRESS, "transfer to the zero address")
        call.require(owner == from_, "transfer from incorrect owner")
        approval_slot = mapping_slot(SLOT_TOKEN_APPROVAL, license_id)
        call.require(call.sender == owner or call.store.load_address(approval_slot) == call.sender
                     or self.isApprovedForAll(call, _hex(owner), _hex(call.sender)),
                     "not owner nor approved")
        call.store.store_address(approval_slot, ZERO_ADDRESS)
        for who, delta in ((from_, -1), (to, 1)):
            slot = mapping_slot(SLOT_BALANCE, who)
            call.store.store(slot, call.store.load(slot) + delta)
        call.store.store_address(mapping_slot(SLOT_OWNER, license_id), to)
        call.emit("Transfer", from_, to, license_id)
