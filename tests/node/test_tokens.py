"""Access tokens (node/tokens.py) against a LocalChain's state: issuing, verifying from
chain state, and every refusal code, each with the chain change that causes it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import rlp
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.crypto import address_of_private_key
from node import access
from node.access import AccessContext, Credential, Scope, authorize, recheck
from node.signal_store import TelemetryAccessError
from node.tokens import (
    AccessToken,
    TokenRequests,
    check_standing,
    decode_token,
    issue_token,
    sign_token,
    sign_token_request,
    verify_token,
)
from tests.harness import LocalChain, Module
from vm.modules import addresses
from vm.modules.identity import PERMISSION_TEMPLATES
from vm.vin import with_check_digit

ETHER = 10**18
VALIDATOR_KEY = bytes.fromhex("11" * 32)
OTHER_KEY = bytes.fromhex("22" * 32)
ISSUER = address_of_private_key(VALIDATOR_KEY)
NODE = "12D3KooWNodeA"
FULL = PERMISSION_TEMPLATES[4][1]


class World:
    """A chain with one validator (our issuing key), a license (signer: dev account 5)
    granted the full template on vehicle 1 of dev account 4."""

    def __init__(self) -> None:
        self.chain = LocalChain(validators=((address_of_private_key(VALIDATOR_KEY), 10),))
        self.lic = Module(self.chain, "licenses", addresses.LICENSES)
        self.ident = Module(self.chain, "identity", addresses.IDENTITY)
        self.owner_key = self.chain.accounts[4][1]
        self.signer_key = self.chain.accounts[5][1]
        self.lic.send(self.chain.accounts[2][1], "mintLicense", "App", "app", [],
                      self.addr(5), value=100 * ETHER)
        vin = with_check_digit("1HGCM82630A000001")
        self.ident.send(self.owner_key, "mintVehicle", "Make", "Model", 2020, vin)
        self.vid = self.ident.call("vehicleIdByVin", self.ident.call("hashVin", vin))
        self.ident.send(self.owner_key, "grantLicenseTemplate", [self.vid], 1, 4, self.far())

    def addr(self, i: int) -> str:
        return "0x" + self.chain.accounts[i][0].hex()

    def now(self) -> int:
        return self.chain.head.timestamp_ms

    def far(self) -> int:
        return self.now() // 1000 + 86_400

    def issue(self, *, key: bytes | None = None, bits: int = 0, audience: str = "*",
              ttl_ms: int = 600_000, at: int | None = None, license_id: int = 1) -> AccessToken:
        now = self.now() if at is None else at
        request = sign_token_request(key or self.signer_key, 7077, ISSUER, license_id, self.vid, now,
                                     bits=bits, audience=audience, ttl_ms=ttl_ms)
        return issue_token(self.chain.state(), request, 7077, VALIDATOR_KEY, now)

    def verify(self, token: AccessToken | bytes, *, at: int | None = None,
               node: str = NODE) -> int:
        raw = token if isinstance(token, bytes) else token.encode()
        return verify_token(self.chain.state(), raw, 7077, node, self.now() if at is None else at)[1]


def refusal(fn, *args, **kw) -> str:
    with pytest.raises(TelemetryAccessError) as info:
        fn(*args, **kw)
    return info.value.code


@pytest.fixture
def world() -> World:
    return World()


def test_issued_token_round_trips_and_verifies_from_chain_state(world: World) -> None:
    token = world.issue()
    assert decode_token(token.encode()) == token
    assert token.bits == FULL and token.issuer == address_of_private_key(VALIDATOR_KEY)
    assert world.verify(token) == FULL
    narrow = world.issue(bits=1)
    assert world.verify(narrow) == 1


def test_refresh_needs_no_reconsent_and_never_outlives_the_grant(world: World) -> None:
    first = world.issue()
    world.chain.advance(3)
    second = world.issue()  # asked again: no owner transaction in between
    assert second.expires_ms > first.expires_ms
    world.ident.send(world.owner_key, "grantLicense", [world.vid], 1, FULL,
                     world.now() // 1000 + 30)
    short = world.issue(ttl_ms=3_600_000)
    assert short.expires_ms <= (world.now() // 1000 + 31) * 1000


def test_issue_refusals(world: World) -> None:
    assert refusal(world.issue, key=world.chain.accounts[6][1]) == "not_signer"
    assert refusal(world.issue, license_id=9) == "not_signer"
    assert refusal(world.issue, bits=1 << 1) == "bad_request"  # bit 1 is not grantable
    assert refusal(world.issue, ttl_ms=1) == "bad_request"
    now = world.now()
    request = sign_token_request(world.signer_key, 7077, ISSUER, 1, world.vid, now - 120_000)
    assert refusal(issue_token, world.chain.state(), request, 7077, VALIDATOR_KEY, now) == "expired"
    # a request changed after signing recovers another address: not a signer
    forged = replace(sign_token_request(world.signer_key, 7077, ISSUER, 1, world.vid, now), bits=1)
    assert refusal(issue_token, world.chain.state(), forged, 7077, VALIDATOR_KEY, now) == "not_signer"
    garbled = replace(forged, signature=b"\x00" * 65)
    assert refusal(issue_token, world.chain.state(), garbled, 7077, VALIDATOR_KEY, now) == "bad_signature"
    world.ident.send(world.owner_key, "grantLicense", [world.vid], 1, 1, world.far())
    assert refusal(world.issue, bits=FULL) == "insufficient_grant"


def test_a_request_is_answered_once_and_by_the_validator_it_names(world: World) -> None:
    now = world.now()
    answered = TokenRequests()
    request = sign_token_request(world.signer_key, 7077, ISSUER, 1, world.vid, now)
    state = world.chain.state()
    issue_token(state, request, 7077, VALIDATOR_KEY, now, answered)
    # the same signed bytes again, at once or later in their window: nothing new is minted
    assert refusal(issue_token, state, request, 7077, VALIDATOR_KEY, now, answered) == "replayed"
    assert refusal(issue_token, state, request, 7077, VALIDATOR_KEY, now + 59_000,
                   answered) == "replayed"
    # past the window the request is stale, and the node forgets it
    assert refusal(issue_token, state, request, 7077, VALIDATOR_KEY, now + 61_000,
                   answered) == "expired"
    assert len(answered) == 1
    issue_token(state, sign_token_request(world.signer_key, 7077, ISSUER, 1, world.vid,
                                          now + 61_000), 7077, VALIDATOR_KEY, now + 61_000, answered)
    assert len(answered) == 1  # the first one expired when the second was recorded
    # another validator does not answer a copy: the request names its issuer
    assert refusal(issue_token, state, request, 7077, OTHER_KEY, now,
                   TokenRequests()) == "wrong_audience"
    # a refused request is not recorded (the node remembers only what it answered)
    answered = TokenRequests()
    narrow = sign_token_request(world.signer_key, 7077, ISSUER, 1, world.vid, now, bits=1 << 1)
    assert refusal(issue_token, state, narrow, 7077, VALIDATOR_KEY, now, answered) == "bad_request"
    assert len(answered) == 0


def test_answered_requests_are_bounded_per_signer_and_in_total(world: World) -> None:
    now = world.now()
    state = world.chain.state()
    answered = TokenRequests(per_signer=2, total=3)
    for i in range(2):
        issue_token(state, sign_token_request(world.signer_key, 7077, ISSUER, 1, world.vid,
                                              now + i), 7077, VALIDATOR_KEY, now, answered)
    third = sign_token_request(world.signer_key, 7077, ISSUER, 1, world.vid, now + 2)
    assert refusal(issue_token, state, third, 7077, VALIDATOR_KEY, now,
                   answered) == "too_many_requests"
    world.lic.send(world.chain.accounts[2][1], "addSigner", 1, world.addr(6))
    state = world.chain.state()
    other = world.chain.accounts[6][1]
    issue_token(state, sign_token_request(other, 7077, ISSUER, 1, world.vid, now), 7077,
                VALIDATOR_KEY, now, answered)
    fourth = sign_token_request(other, 7077, ISSUER, 1, world.vid, now + 1)
    assert refusal(issue_token, state, fourth, 7077, VALIDATOR_KEY, now, answered) == "busy"
    # an outsider's requests are refused before they reach the memory (not_signer)
    stranger = sign_token_request(world.chain.accounts[7][1], 7077, ISSUER, 1, world.vid, now)
    assert refusal(issue_token, state, stranger, 7077, VALIDATOR_KEY, now, answered) == "not_signer"


def test_no_grant(world: World) -> None:
    vin = with_check_digit("1HGCM82630A000002")
    world.ident.send(world.owner_key, "mintVehicle", "Make", "Model", 2020, vin)
    other = world.ident.call("vehicleIdByVin", world.ident.call("hashVin", vin))
    request = sign_token_request(world.signer_key, 7077, ISSUER, 1, other, world.now())
    assert refusal(issue_token, world.chain.state(), request, 7077, VALIDATOR_KEY,
                   world.now()) == "no_grant"


def test_revoked_within_one_block(world: World) -> None:
    token = world.issue()
    world.ident.send(world.owner_key, "revokeLicense", [world.vid], 1)  # one block
    assert refusal(world.verify, token) == "revoked"
    assert refusal(world.issue) == "revoked"


def test_expired_grant(world: World) -> None:
    world.ident.send(world.owner_key, "grantLicense", [world.vid], 1, FULL,
                     world.now() // 1000 + 5)
    token = world.issue()
    # a token never outlives its grant: past the grant's expiry the token's own ends too
    assert refusal(world.verify, token, at=world.now() + 6_000) == "token_expired"
    long_token = replace(token, expires_ms=token.expires_ms + 60_000)
    resigned = sign_token(long_token, VALIDATOR_KEY)
    assert refusal(world.verify, resigned, at=world.now() + 6_000) == "expired_grant"


def test_vehicle_transferred_within_one_block(world: World) -> None:
    token = world.issue()
    world.ident.send(world.owner_key, "transferFrom", world.addr(4), world.addr(7), world.vid)
    assert refusal(world.verify, token) == "vehicle_transferred"
    # back to the first owner, who grants again: the old token stays dead (new generation)
    world.ident.send(world.chain.accounts[7][1], "transferFrom", world.addr(7), world.addr(4),
                     world.vid)
    world.ident.send(world.owner_key, "grantLicenseTemplate", [world.vid], 1, 4, world.far())
    assert refusal(world.verify, token) == "vehicle_transferred"
    assert world.verify(world.issue()) == FULL


def test_token_expired(world: World) -> None:
    token = world.issue(ttl_ms=10_000)
    assert refusal(world.verify, token, at=token.expires_ms) == "token_expired"


def test_wrong_audience(world: World) -> None:
    token = world.issue(audience="12D3KooWNodeB")
    assert refusal(world.verify, token) == "wrong_audience"
    assert world.verify(token, node="12D3KooWNodeB") == FULL
    assert refusal(verify_token, world.chain.state(), world.issue().encode(), 1, NODE,
                   world.now()) == "wrong_audience"


def test_bad_and_foreign_tokens(world: World) -> None:
    token = world.issue()
    raw = token.encode()
    assert refusal(world.verify, raw[:-1]) == "bad_token"
    assert refusal(world.verify, b"\x00" * 600) == "bad_token"
    items = rlp.decode(raw)
    items[4] = (1).to_bytes(1, "big")  # bits changed after signing
    assert refusal(world.verify, rlp.encode(items)) == "bad_token"
    stranger = sign_token(replace(token, issuer=address_of_private_key(OTHER_KEY)), OTHER_KEY)
    assert refusal(world.verify, stranger) == "unknown_issuer"


def test_a_rotated_out_signer_takes_its_tokens_with_it(world: World) -> None:
    token = world.issue()
    assert token.signer == world.chain.accounts[5][0]
    world.lic.send(world.chain.accounts[2][1], "rotateSigner", 1, world.addr(5), world.addr(6))
    assert refusal(world.verify, token) == "signer_removed"  # the next block on
    # standing reads (streams, webhooks) re-check the same rule before each delivery
    assert refusal(check_standing, world.chain.state(), token, world.now()) == "signer_removed"
    assert refusal(world.issue) == "not_signer"
    fresh = world.issue(key=world.chain.accounts[6][1])
    assert world.verify(fresh) == FULL
    # put back, the key's old tokens are good again: the rule is "a current signer"
    world.lic.send(world.chain.accounts[2][1], "addSigner", 1, world.addr(5))
    assert world.verify(token) == FULL
    world.lic.send(world.chain.accounts[2][1], "removeSigner", 1, world.addr(6))
    assert refusal(world.verify, fresh) == "signer_removed"


def test_version_1_tokens_are_refused_as_outdated(world: World) -> None:
    token = world.issue()
    items = rlp.decode(token.encode())
    v1 = [b"\x01", *items[1:11], items[12]]  # the version 1 layout: no signer field
    assert refusal(world.verify, rlp.encode(v1)) == "outdated_token"
    # an unknown version stays a plain bad token
    assert refusal(world.verify, rlp.encode([b"\x03", *items[1:]])) == "bad_token"


def test_tokens_plug_into_the_access_choke_point(world: World) -> None:
    from node import tokens

    tokens.install()
    try:
        ctx = AccessContext(7077, NODE, world.now())
        token = world.issue()
        credential = Credential("token", token=token.encode())
        got = authorize(world.chain.state(), credential, ctx, Scope(world.vid, 0, world.now()))
        assert got.via == "token" and got.vehicle_id == world.vid
        assert [r.bits for r in got.periods] == [FULL]
        assert recheck(world.chain.state(), got, world.now(), need_live=True) == FULL
        assert refusal(authorize, world.chain.state(), credential, ctx,
                       Scope(world.vid + 1, 0, 1)) == "bad_request"
        world.ident.send(world.owner_key, "revokeLicense", [world.vid], 1)
        assert refusal(recheck, world.chain.state(), got, world.now()) == "revoked"
    finally:
        access.TOKEN_VERIFIER = access.TOKEN_RECHECK = None


def test_digest_from_raw_bytes_is_the_signed_digest(world: World) -> None:
    from node.tokens import _digest_of_raw, compute_token_digest

    for audience in ("*", "x" * 128):
        token = world.issue(audience=audience)
        assert _digest_of_raw(token.encode(), 7077) == compute_token_digest(token)


# the vector of docs/developers.md ("Token bytes"): any change to the format breaks it
VECTOR_RAW = (
    "f89a02821ba5012a81ed2a9490f79bf6eb2c4f870365e785982e1f101e93b9068086019af232b20086019af2"
    "406da09419e7e376e7c213b7e7e7e46cc70a5dd086daff2a941563915e194d8cfba1943570603f7606a31155"
    "08b841053bfa1e66bde48c85737c30b05f48786d636020e1ea35aa68151bea3a09b9842c8cc564328bb2ef68"
    "51503b9afb971699c5be403fb03203d94020ed6102e1cb00")
VECTOR_DIGEST = "e5d459d2d4d2efd6fb263405f1a96ce6ad0d4df44850ca6f9844ae26ab82b949"


def test_token_vector_is_pinned() -> None:
    from node.tokens import compute_token_digest

    token = AccessToken(7077, 1, 42, 0xED, "*",
                        bytes.fromhex("90f79bf6eb2c4f870365e785982e1f101e93b906"), 0,
                        1_765_000_000_000, 1_765_000_900_000, address_of_private_key(VALIDATOR_KEY),
                        address_of_private_key(OTHER_KEY))
    assert compute_token_digest(token).hex() == VECTOR_DIGEST
    signed = sign_token(token, VALIDATOR_KEY)  # RFC 6979: deterministic
    assert signed.encode().hex() == VECTOR_RAW
    assert decode_token(bytes.fromhex(VECTOR_RAW)) == signed


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=700))
def test_decoding_any_bytes_is_a_token_or_bad_token(raw: bytes) -> None:
    try:
        decode_token(raw)
    except TelemetryAccessError as exc:
        assert exc.code == "bad_token"


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 155), st.integers(0, 255))
def test_a_changed_byte_never_verifies_as_another_token(position: int, value: int) -> None:
    raw = bytearray.fromhex(VECTOR_RAW)
    if raw[position] == value:
        return
    raw[position] = value
    try:
        token = decode_token(bytes(raw))
    except TelemetryAccessError:
        return
    from consensus.crypto import recover_address
    from node.tokens import _digest_of_raw

    try:
        signer = recover_address(_digest_of_raw(bytes(raw), token.chain_id), token.signature)
    except Exception:
        return
    assert signer != token.issuer or token.encode() == bytes.fromhex(VECTOR_RAW)
