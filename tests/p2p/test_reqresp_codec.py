"""Wire format of /motus/status/1 and /motus/blocks/1: limits and typed errors."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2p import reqresp
from p2p.errors import BadRequest, BadResponse, MessageTooLarge, RemoteError
from p2p.reqresp import ChainStatus


def test_status_round_trip() -> None:
    assert reqresp.decode_status_request(reqresp.encode_status_request(7077)) == 7077
    status = ChainStatus(7077, 12, b"\xaa" * 32)
    assert reqresp.decode_status_response(reqresp.encode_status_response(status)) == status


def test_blocks_round_trip_and_range() -> None:
    assert reqresp.decode_blocks_request(reqresp.encode_blocks_request(5, 9)) == (5, 9)
    assert reqresp.compute_served_range(1, 1000) == (1, 128)
    blocks = [b"a", b"bb"]
    assert reqresp.decode_blocks_response(reqresp.encode_blocks_response(blocks), 2) == blocks


@pytest.mark.parametrize(
    "fields",
    [
        {"start": 9, "end": 5},
        {"start": -1, "end": 5},
        {"start": 1.5, "end": 2},
        {"start": 1},
        {"start": 1, "end": 2, "extra": 3},
        {"start": "1", "end": 2},
        {"start": True, "end": 2},
        [1, 2],
    ],
)
def test_bad_blocks_requests(fields: object) -> None:
    with pytest.raises(BadRequest):
        reqresp.decode_blocks_request(msgpack.packb(fields))


@given(st.binary(max_size=300))
def test_random_request_bytes_only_raise_bad_request(data: bytes) -> None:
    for decode in (reqresp.decode_blocks_request, reqresp.decode_status_request):
        try:
            decode(data)
        except BadRequest:
            pass


@given(st.binary(max_size=300), st.integers(1, 200))
def test_random_response_bytes_only_raise_typed_errors(data: bytes, requested: int) -> None:
    for decode in (
        reqresp.decode_status_response,
        lambda raw: reqresp.decode_blocks_response(raw, requested),
    ):
        try:
            decode(data)
        except (BadResponse, RemoteError):
            pass


def test_response_bounds() -> None:
    too_many = reqresp.encode_blocks_response([b"x"] * 5)
    with pytest.raises(BadResponse):
        reqresp.decode_blocks_response(too_many, 4)
    with pytest.raises(BadResponse):
        reqresp.decode_blocks_response(reqresp.encode_blocks_response([b""]), 4)
    with pytest.raises(BadResponse):
        reqresp.decode_status_response(reqresp.encode_status_response(ChainStatus(1, 1, b"h" * 65)))
    with pytest.raises(RemoteError) as raised:
        reqresp.decode_status_response(reqresp.encode_error("unavailable", "no handler"))
    assert raised.value.remote_code == "unavailable"


def test_fit_blocks_response_respects_byte_budget() -> None:
    block = b"b" * (100 * 1024)
    fitted = reqresp.fit_blocks_response([block] * 200)
    encoded = reqresp.encode_blocks_response(fitted)
    assert len(encoded) <= reqresp.MAX_BLOCKS_RESPONSE_BYTES
    assert len(fitted) == 81  # 81 * (100 KiB + 3) fits in 8 MiB, 82 does not
    assert len(reqresp.fit_blocks_response([b"s"] * 500)) == reqresp.MAX_BLOCKS_PER_RESPONSE
    with pytest.raises(MessageTooLarge):
        reqresp.fit_blocks_response([b"x" * reqresp.MAX_BLOCKS_RESPONSE_BYTES])
