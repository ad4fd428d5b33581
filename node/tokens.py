"""Access tokens: a license's short-lived, node-signed right to read one vehicle
(docs/developers.md, "Access tokens").

A developer signs a *token request* with one of its license's signer keys; a validator
node checks it against the head state (the signer is a current signer of the license,
the license holds a live grant on the vehicle) and answers a *token* bound to (chain,
license, vehicle, permission bits, audience, the vehicle's owner and permission
generation, expiry, the signer key that asked), signed with the node's validator key.
Any node verifies a token from chain state alone: the issuer must be in the active
validator set at the head, the signer still one of the license's signers, and every use
re-reads the grant at the head, so a revocation, an expiry, a transfer or the signer's
rotation refuses outstanding tokens from the next block on. Refreshing is asking again:
no owner action is needed while the grant lasts.

Token bytes (version 2) are the RLP list
``[version, chain_id, license_id, vehicle_id, bits, audience, owner, generation,
issued_ms, expires_ms, issuer, signer, signature]``; the signature is a recoverable
secp256k1 ``r || s || v`` (v in {0, 1}) over ``keccak256(b"\\x19Motus Access Token:\\n" ||
chain_id as 8 bytes big-endian || rlp(the first twelve fields))``. Version 1 (no
``signer``) is refused as ``outdated_token``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import rlp
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak

from consensus.crypto import address_of_private_key, recover_address, sign_digest
from node import access
from node.access import AccessContext, Scope, default_range
from node.signal_store import (
    REQUEST_FRESH_MS,
    ReadablePeriod,
    TelemetryAccess,
    TelemetryAccessError,
    UsedNonces,
)
from vm.modules.identity import (
    PERMISSIONS_ALL,
    GrantState,
    get_grant_state,
    get_owner,
    ownership_periods,
)
from vm.modules.licenses import is_license_signer, license_grantee
from vm.modules.validators import active_validators

TOKEN_VERSION = 2
OUTDATED_TOKEN_VERSIONS = (1,)  # refused as ``outdated_token``: they name no signer
TOKEN_DOMAIN = b"\x19Motus Access Token:\n"
MAX_TOKEN_BYTES = 512
MAX_AUDIENCE_BYTES = 128
ANY_AUDIENCE = "*"  # every node of the chain
DEFAULT_TTL_MS = 15 * 60_000
MAX_TTL_MS = 60 * 60_000
MIN_TTL_MS = 10_000
# a token request is valid REQUEST_FRESH_MS (60 s) around its timestamp, as a signed read
# request, and each node answers it once (TokenRequests)
TOKEN_REQUESTS_PER_SIGNER = 10_000  # answered requests of one signer key in the 2 min window
TOKEN_REQUESTS_TOTAL = 100_000  # over all signers: ~15 MB at most
CLOCK_SKEW_MS = 60_000  # a token issued further in a verifier's future is refused


@dataclass(frozen=True)
class AccessToken:
    chain_id: int
    license_id: int
    vehicle_id: int
    bits: int
    audience: str
    owner: bytes  # the vehicle's owner at issuance
    generation: int  # the vehicle's permission generation at issuance (a transfer bumps it)
    issued_ms: int
    expires_ms: int
    issuer: bytes  # the issuing validator's address
    signer: bytes  # the license signer key whose request the token answers
    signature: bytes = b""

    def fields(self) -> list[Any]:
        return [TOKEN_VERSION, self.chain_id, self.license_id, self.vehicle_id, self.bits,
                self.audience.encode(), self.owner, self.generation, self.issued_ms,
                self.expires_ms, self.issuer, self.signer]

    def encode(self) -> bytes:
        return rlp.encode([*self.fields(), self.signature])


def compute_token_digest(token: AccessToken) -> bytes:
    """The 32 bytes the issuer signs (the module docstring gives the formula)."""
    return keccak(TOKEN_DOMAIN + token.chain_id.to_bytes(8, "big") + rlp.encode(token.fields()))


def _list_prefix(length: int) -> bytes:
    if length < 56:
        return bytes([0xC0 + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0xF7 + len(size)]) + size


def _digest_of_raw(raw: bytes, chain_id: int) -> bytes:
    """compute_token_digest from a strictly decoded token's bytes, without re-encoding:
    the signed list is the token's list minus its last item (the 65-byte signature,
    encoded in 67 bytes)."""
    header = 1 if raw[0] <= 0xF7 else 1 + raw[0] - 0xF7
    body = raw[header:-67]
    return keccak(TOKEN_DOMAIN + chain_id.to_bytes(8, "big") + _list_prefix(len(body)) + body)


def sign_token(token: AccessToken, private_key: bytes) -> AccessToken:
    from dataclasses import replace

    if address_of_private_key(private_key) != token.issuer:
        raise ValueError("the issuer field must be the signing key's address")
    return replace(token, signature=sign_digest(private_key, compute_token_digest(token)))


def _int(item: Any, what: str) -> int:
    if not isinstance(item, bytes) or len(item) > 32 or item[:1] == b"\x00":
        raise TelemetryAccessError("bad_token", f"{what}: not a canonical RLP integer")
    return int.from_bytes(item, "big")


def decode_token(raw: bytes) -> AccessToken:
    """Decode and check the shape (not the signature); ``bad_token`` on anything else."""
    if len(raw) > MAX_TOKEN_BYTES:
        raise TelemetryAccessError("bad_token", f"a token is at most {MAX_TOKEN_BYTES} bytes")
    try:
        items = rlp.decode(raw, strict=True)
    except Exception:
        raise TelemetryAccessError("bad_token", "not an RLP list") from None
    if not isinstance(items, list) or not items or not isinstance(items[0], bytes):
        raise TelemetryAccessError("bad_token", "expected a list of 13 byte strings")
    version = _int(items[0], "version")
    if version in OUTDATED_TOKEN_VERSIONS:
        raise TelemetryAccessError("outdated_token", f"a version {version} token names no signer "
                                                     "and is no longer accepted: ask for a new one")
    if version != TOKEN_VERSION:
        raise TelemetryAccessError("bad_token", f"version must be {TOKEN_VERSION}")
    if len(items) != 13 or any(not isinstance(i, bytes) for i in items):
        raise TelemetryAccessError("bad_token", "expected a list of 13 byte strings")
    owner, issuer, signer, signature = items[6], items[10], items[11], items[12]
    if len(owner) != 20 or len(issuer) != 20 or len(signer) != 20 or len(signature) != 65:
        raise TelemetryAccessError("bad_token", "owner/issuer/signer 20 bytes, signature 65 bytes")
    try:
        audience = items[5].decode()
    except UnicodeDecodeError:
        raise TelemetryAccessError("bad_token", "audience is not UTF-8") from None
    if not 0 < len(items[5]) <= MAX_AUDIENCE_BYTES:
        raise TelemetryAccessError("bad_token", f"audience 1 to {MAX_AUDIENCE_BYTES} bytes")
    return AccessToken(_int(items[1], "chain_id"), _int(items[2], "license_id"),
                       _int(items[3], "vehicle_id"), _int(items[4], "bits"), audience, owner,
                       _int(items[7], "generation"), _int(items[8], "issued_ms"),
                       _int(items[9], "expires_ms"), issuer, signer, signature)


# --- the grant rule, shared by issuing and verifying --------------------------------


def check_grant(grant: GrantState, license_id: int, vehicle_id: int, now_ms: int) -> int:
    """The bits of a license's grant on a vehicle now (:func:`get_grant_state`); raises
    ``no_grant`` (never granted since the vehicle's last transfer: no such license or
    vehicle either), ``revoked`` (granted, then revoked) or ``expired_grant``."""
    if not grant.listed:
        raise TelemetryAccessError("no_grant", f"vehicle {vehicle_id}'s owner granted license "
                                               f"{license_id} nothing")
    if grant.bits == 0:
        raise TelemetryAccessError("revoked", f"the owner of vehicle {vehicle_id} revoked "
                                              f"license {license_id}'s grant")
    if now_ms // 1000 >= grant.expiry:
        raise TelemetryAccessError("expired_grant", f"license {license_id}'s grant on vehicle "
                                                    f"{vehicle_id} expired at {grant.expiry} (unix s)")
    return grant.bits


# --- issuing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    """A developer's signed ask for a token; ``bits`` 0 asks for every bit granted.
    ``issuer`` is the validator asked (its address): no other validator answers it."""

    license_id: int
    vehicle_id: int
    bits: int
    audience: str
    ttl_ms: int
    timestamp_ms: int
    signature: bytes = b""
    chain_id: int | None = None
    issuer: bytes = b""


def token_request_message(chain_id: int, request: TokenRequest) -> str:
    """The exact text a license signer signs with EIP-191 (``personal_sign``)."""
    return (f"Motus access token request\nchain_id: {chain_id}\n"
            f"issuer: 0x{request.issuer.hex()}\n"
            f"license_id: {request.license_id}\nvehicle_id: {request.vehicle_id}\n"
            f"bits: {request.bits}\naudience: {request.audience}\nttl_ms: {request.ttl_ms}\n"
            f"timestamp_ms: {request.timestamp_ms}")


def sign_token_request(private_key: bytes, chain_id: int, issuer: bytes, license_id: int,
                       vehicle_id: int, timestamp_ms: int, bits: int = 0,
                       audience: str = ANY_AUDIENCE, ttl_ms: int = DEFAULT_TTL_MS) -> TokenRequest:
    """Client side: a token request for the validator ``issuer`` (its address,
    ``motus_nodeStatus().validator``) signed by a license signer key."""
    from dataclasses import replace

    request = TokenRequest(license_id, vehicle_id, bits, audience, ttl_ms, timestamp_ms,
                           chain_id=chain_id, issuer=issuer)
    text = token_request_message(chain_id, request)
    signature = bytes(Account.sign_message(encode_defunct(text=text), private_key).signature)
    return replace(request, signature=signature)


def token_request_json(request: TokenRequest) -> dict[str, Any]:
    return {"licenseId": request.license_id, "vehicleId": request.vehicle_id,
            "bits": request.bits, "audience": request.audience, "ttlMs": request.ttl_ms,
            "timestampMs": request.timestamp_ms, "chainId": request.chain_id,
            "issuer": "0x" + request.issuer.hex(), "signature": "0x" + request.signature.hex()}


class TokenRequests(UsedNonces):
    """The token requests this node answered, kept until they expire (timestamp + 60 s):
    each request is answered at most once per node, and names the one validator that
    may answer it, so a copy of a request (a log, a proxy) mints nothing. Keyed by the
    signer and the keccak of the signed text; bounded per signer and in total (then
    ``too_many_requests`` / ``busy``; nothing is evicted early)."""

    def __init__(self, per_signer: int = TOKEN_REQUESTS_PER_SIGNER,
                 total: int = TOKEN_REQUESTS_TOTAL) -> None:
        super().__init__(per_signer, total)


def issue_token(state: Any, request: TokenRequest, chain_id: int, issuer_key: bytes,
                now_ms: int, answered: TokenRequests | None = None) -> AccessToken:
    """Check a token request against the head state and sign the token. Refusals, in
    this order: ``bad_request``, ``wrong_audience`` (another chain, or another validator
    than ``issuer_key``'s), ``expired`` (request timestamp over 60 s from the clock),
    ``bad_signature``, ``not_signer``, then with ``answered`` (the node's memory of
    answered requests) ``replayed`` / ``too_many_requests`` / ``busy``, then
    ``no_grant`` / ``revoked`` / ``expired_grant``, ``insufficient_grant`` (asked bits
    beyond the grant). The token lasts ``ttl_ms`` but never past the grant's expiry."""
    if not MIN_TTL_MS <= request.ttl_ms <= MAX_TTL_MS:
        raise TelemetryAccessError("bad_request", f"ttl_ms from {MIN_TTL_MS} to {MAX_TTL_MS}")
    if request.bits & ~PERMISSIONS_ALL:
        raise TelemetryAccessError("bad_request", "unknown permission bits")
    audience = request.audience.encode()
    if not 0 < len(audience) <= MAX_AUDIENCE_BYTES or "\n" in request.audience:
        raise TelemetryAccessError("bad_request", f"audience: 1 to {MAX_AUDIENCE_BYTES} bytes, "
                                                  "one line ('*' or a node's peer id)")
    if request.chain_id not in (None, chain_id):
        raise TelemetryAccessError("wrong_audience", f"request is for chain {request.chain_id}, "
                                                     f"this is chain {chain_id}")
    issuer = address_of_private_key(issuer_key)
    if request.issuer != issuer:
        raise TelemetryAccessError("wrong_audience", f"request is for validator "
                                                     f"0x{request.issuer.hex()}, this is "
                                                     f"0x{issuer.hex()}")
    if abs(now_ms - request.timestamp_ms) > REQUEST_FRESH_MS:
        raise TelemetryAccessError("expired", "request timestamp is more than 60 s from the "
                                              "node's clock")
    text = token_request_message(chain_id, request)
    try:
        recovered = Account.recover_message(encode_defunct(text=text), signature=request.signature)
        signer = bytes.fromhex(recovered[2:])
    except Exception:
        raise TelemetryAccessError("bad_signature", "signature does not recover an address") from None
    if not is_license_signer(state, request.license_id, signer):
        raise TelemetryAccessError("not_signer", f"0x{signer.hex()} is not a current signer of "
                                                 f"license {request.license_id}")
    request_id = keccak(text.encode())
    if answered is not None:
        answered.check(signer, request_id, now_ms)
    owner = get_owner(state, request.vehicle_id)
    grant = get_grant_state(state, request.vehicle_id, license_grantee(request.license_id))
    granted = check_grant(grant, request.license_id, request.vehicle_id, now_ms)
    bits = request.bits or granted
    if bits & ~granted:
        raise TelemetryAccessError("insufficient_grant", f"asked bits {bits} but the grant holds "
                                                         f"{granted}")
    assert owner is not None  # a listed grant is on a live vehicle (burning resets grants)
    expires_ms = min(now_ms + request.ttl_ms, grant.expiry * 1000)
    token = AccessToken(chain_id, request.license_id, request.vehicle_id, bits,
                        request.audience, owner, grant.generation, now_ms, expires_ms, issuer,
                        signer)
    signed = sign_token(token, issuer_key)
    if answered is not None:
        answered.use(signer, request_id, request.timestamp_ms, now_ms)
    return signed


# --- verifying ---------------------------------------------------------------------------


_ISSUERS: OrderedDict[bytes, frozenset[bytes]] = OrderedDict()
_ISSUERS_KEPT = 8  # heads remembered; a read holds one head, so a few cover every thread
_ISSUERS_LOCK = threading.Lock()  # reads run on RPC worker threads too


def issuers_at(state: Any) -> frozenset[bytes]:
    """The addresses that may issue tokens at ``state``: its active validator set (3
    storage reads per validator), remembered by state root so each head pays once."""
    root = bytes(state.state_root)
    with _ISSUERS_LOCK:
        found = _ISSUERS.get(root)
    if found is None:
        found = frozenset(address for address, _ in active_validators(state))
        with _ISSUERS_LOCK:
            _ISSUERS[root] = found
            while len(_ISSUERS) > _ISSUERS_KEPT:
                _ISSUERS.popitem(last=False)
    return found


@dataclass(frozen=True)
class TokenAccess(TelemetryAccess):
    """A TelemetryAccess given by a token; keeps the token for re-checks."""

    token: AccessToken | None = None


def verify_token(state: Any, raw: bytes, chain_id: int, node_id: str, now_ms: int) -> tuple[AccessToken, int]:
    """Check a token against the head ``state`` now; returns it and the bits it gives now
    (its bits narrowed to the grant's current bits). Refusals, in this order:
    ``outdated_token`` (version 1), ``bad_token`` (shape, signature), ``wrong_audience``
    (another chain, or a node other than the audience), ``unknown_issuer`` (not an active
    validator now), then :func:`check_standing`'s ``token_expired``, ``signer_removed``,
    ``vehicle_transferred``, ``no_grant``, ``revoked``, ``expired_grant``."""
    token = decode_token(raw)
    if token.chain_id != chain_id:
        raise TelemetryAccessError("wrong_audience", f"token is for chain {token.chain_id}, "
                                                     f"this is chain {chain_id}")
    try:
        signer = recover_address(_digest_of_raw(raw, chain_id), token.signature)
    except Exception:
        raise TelemetryAccessError("bad_token", "signature does not recover") from None
    if signer != token.issuer:
        raise TelemetryAccessError("bad_token", "signature is not the issuer's")
    if token.audience not in (ANY_AUDIENCE, node_id):
        raise TelemetryAccessError("wrong_audience", f"token is for {token.audience!r}, this "
                                                     f"node is {node_id!r}")
    if token.issuer not in issuers_at(state):
        raise TelemetryAccessError("unknown_issuer", f"issuer 0x{token.issuer.hex()} is not an "
                                                     "active validator")
    if token.issued_ms > now_ms + CLOCK_SKEW_MS:
        raise TelemetryAccessError("bad_token", "token issued in the future")
    return token, check_standing(state, token, now_ms)


def check_standing(state: Any, token: AccessToken, now_ms: int) -> int:
    """What a token gives at the head now: ``token_expired``, ``signer_removed`` (the
    signer key that asked for it was rotated out of the license: a leaked key's tokens
    die with it), ``vehicle_transferred`` (another owner or a new permission generation:
    the car changed hands, or was burned), then the grant (:func:`check_grant`); the bits
    are the token's narrowed to the grant's (``revoked`` when nothing is left)."""
    if now_ms >= token.expires_ms:
        raise TelemetryAccessError("token_expired", f"token expired at {token.expires_ms} ms; "
                                                    "ask for a new one (no re-consent needed)")
    if not is_license_signer(state, token.license_id, token.signer):
        raise TelemetryAccessError("signer_removed", f"0x{token.signer.hex()}, which asked for "
                                                     "this token, is no longer a signer of "
                                                     f"license {token.license_id}")
    grant = get_grant_state(state, token.vehicle_id, license_grantee(token.license_id))
    if get_owner(state, token.vehicle_id) != token.owner or grant.generation != token.generation:
        raise TelemetryAccessError("vehicle_transferred", f"vehicle {token.vehicle_id} changed "
                                                          "hands since the token was issued")
    bits = token.bits & check_grant(grant, token.license_id, token.vehicle_id, now_ms)
    if bits == 0:
        raise TelemetryAccessError("revoked", "the grant no longer holds any of the token's bits")
    return bits


def verify_token_access(state: Any, raw: bytes, scope: Scope | None,
                        ctx: AccessContext) -> TelemetryAccess:
    """node.access's token hook: the token's reading rights as a TelemetryAccess (the
    current owner's ownership periods, the bits the token gives now), narrowed to
    ``scope`` (its vehicle must be the token's: ``bad_request``; default: the last 31
    days)."""
    token, bits = verify_token(state, raw, ctx.chain_id, ctx.node_id, ctx.now_ms)
    if scope is not None and scope.vehicle_id != token.vehicle_id:
        raise TelemetryAccessError("bad_request", f"the token is for vehicle {token.vehicle_id}, "
                                                  f"not {scope.vehicle_id}")
    from_ms, to_ms = (scope.from_ms, scope.to_ms) if scope is not None else default_range(ctx.now_ms)
    periods = tuple(ReadablePeriod(p, bits) for p in ownership_periods(state, token.vehicle_id)
                    if p.owner == token.owner)
    return TokenAccess(license_grantee(token.license_id), periods, token.vehicle_id, from_ms,
                       to_ms, "token", token.owner, token.expires_ms, token)


def recheck_token_access(state: Any, granted: TelemetryAccess, now_ms: int) -> int:
    """node.access's re-check hook for standing reads given by a token."""
    token = getattr(granted, "token", None)
    if token is None:
        raise TelemetryAccessError("bad_token", "not a token access")
    return check_standing(state, token, now_ms)


def install() -> None:
    """Plug token verification into the credential choke point (node/access.py)."""
    access.TOKEN_VERIFIER = verify_token_access
    access.TOKEN_RECHECK = recheck_token_access


def token_json(token: AccessToken) -> dict[str, Any]:
    return {"token": "0x" + token.encode().hex(), "licenseId": token.license_id,
            "vehicleId": token.vehicle_id, "bits": token.bits, "audience": token.audience,
            "owner": "0x" + token.owner.hex(), "generation": token.generation,
            "issuedMs": token.issued_ms, "expiresMs": token.expires_ms,
            "issuer": "0x" + token.issuer.hex(), "signer": "0x" + token.signer.hex()}
