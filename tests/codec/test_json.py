"""The bounded JSON parser: depth measured exactly, refusals typed, never deeper than its limit."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec import JSONParseError
from codec.json import json_depth_exceeds, parse_json

documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\u00e9\n', max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(alphabet='[]{}"\\x', max_size=4), children, max_size=4),
    max_leaves=40,
)


def depth(doc) -> int:
    if isinstance(doc, list):
        return 1 + max((depth(d) for d in doc), default=0)
    if isinstance(doc, dict):
        return 1 + max((depth(d) for d in doc.values()), default=0)
    return 0


def lexer_depth(text: bytes) -> int:
    """Reference: the deepest bracket nesting a JSON lexer sees, scanning up to the
    first byte json.loads must refuse outside a string (a backslash)."""
    level = deepest = 0
    in_string = escaped = False
    for b in text:
        if in_string:
            if escaped:
                escaped = False
            elif b == ord("\\"):
                escaped = True
            elif b == ord('"'):
                in_string = False
        elif b == ord('"'):
            in_string = True
        elif b == ord("\\"):
            break
        elif b in b"[{":
            level += 1
            deepest = max(deepest, level)
        elif b in b"]}":
            level -= 1
    return deepest


@given(documents, st.integers(0, 6))
@settings(max_examples=400, deadline=None)
def test_depth_of_valid_documents_is_exact(doc, limit: int) -> None:
    text = json.dumps(doc, ensure_ascii=False).encode()
    assert json_depth_exceeds(text, limit) == (depth(doc) > limit)
    if depth(doc) <= limit:
        assert parse_json(text, max_bytes=10**6, max_depth=limit) == doc


@given(documents, st.data())
@settings(max_examples=400, deadline=None)
def test_an_accepted_text_never_nests_deeper_than_the_limit(doc, data) -> None:
    """Mutated (mostly invalid) text: whatever passes the check nests no deeper than
    the limit as far as json.loads can read it."""
    text = bytearray(json.dumps(doc).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        text[at:at + data.draw(st.integers(0, 1))] = data.draw(st.sampled_from([b"[", b"]", b"{", b'"', b"\\", b"", b"x"]))
    limit = data.draw(st.integers(0, 5))
    if not json_depth_exceeds(bytes(text), limit):
        assert lexer_depth(bytes(text)) <= limit


@pytest.mark.parametrize("body", [b"[" * 100_000, b"{\"a\":" * 100_000, b"[" * 65 + b"]" * 65])
def test_deep_nesting_is_refused_before_parsing(body: bytes) -> None:
    assert sys.getrecursionlimit() >= 1000
    with pytest.raises(JSONParseError) as err:
        parse_json(body, max_bytes=10**6)
    assert err.value.code == "json_too_deep"


def test_limits_and_errors() -> None:
    assert parse_json(b"[" * 64 + b"]" * 64, max_bytes=1000)
    assert parse_json('{"a": "[[[[[[["}', max_bytes=100, max_depth=1) == {"a": "[[[[[[["}
    assert parse_json(b'\xef\xbb\xbf{"a": 1}', max_bytes=100) == {"a": 1}
    for text, code in [
        (b"x" * 101, "json_too_large"),
        (b"[1,", "json_malformed"),
        (b'"\xff"', "json_malformed"),
        (b"[\x00\x00\x00", "json_malformed"),
        (42, "json_malformed"),
        (b"]" * 70, "json_malformed"),  # unbalanced, not deep
        (b"[" * 30 + b"]" * 50, "json_malformed"),
    ]:
        with pytest.raises(JSONParseError) as err:
            parse_json(text, max_bytes=100)
        assert err.value.code == code
        assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("text", [
    b'{"id": 18446744073709551616, "v": -9223372036854775809}',  # beyond 64 bits: exact ints
    b'[123456789012345678901234567890, 1.2345678901234567890123]',
    b'\xef\xbb\xbf{"a": 1}',  # a byte-order mark
    b'"\\ud800"',  # a lone surrogate escape
    b'[NaN, Infinity, -Infinity, 1e400]',
    b'{"a": 1, "a": 2}',
    '{"caf\u00e9": "\u4e2d\u6587 \U0001f697"}'.encode(),
    b'[-0, -0.0, 1E2, 0.1, 1.7976931348623157e308, 5e-324]',
    b'{"jsonrpc": "2.0", "id": null, "method": "eth_chainId", "params": []}',
])
def test_the_fast_parser_reads_what_json_reads(text: bytes) -> None:
    """parse_json hands most documents to orjson: its values (ints stay ints, however
    large) and its refusals are json.loads's."""
    expected = json.loads(text.decode("utf-8-sig"))
    got = parse_json(text, max_bytes=None)
    assert json.dumps(got) == json.dumps(expected)  # NaN-safe, and int vs float visible
    assert json.dumps(parse_json(text.decode("utf-8-sig"), max_bytes=None)) == json.dumps(got)


@pytest.mark.parametrize("text", [b'[1,]', b'{"a":1}x', b'01', b'"a\x01b"', b'\xff', b'"\xed\xa0\x80"', b''])
def test_the_fast_parser_refuses_what_json_refuses(text: bytes) -> None:
    with pytest.raises(JSONParseError) as err:
        parse_json(text, max_bytes=None)
    assert err.value.code == "json_malformed"


def test_without_orjson_json_alone_parses(monkeypatch) -> None:
    """codec is also used without the node's dependencies (the SDK): json alone."""
    import codec.json

    monkeypatch.setattr(codec.json, "orjson", None)
    assert parse_json(b'{"id": 18446744073709551616, "a": [1.5, "x"]}', max_bytes=None) == {
        "id": 18446744073709551616, "a": [1.5, "x"]}
    with pytest.raises(JSONParseError):
        parse_json(b"[1,]", max_bytes=None)
