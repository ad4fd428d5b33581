"""JSON from untrusted parties, with nesting depth and size checked before parsing.

CPython's C JSON scanner recurses once per nesting level and stops only at the
interpreter's recursion limit. py-evm's dependency py_ecc raises that limit to 100,000,
so a 100 KB document of ``[`` nested 100,000 deep overflows the C stack and kills the
process (SIGSEGV) instead of raising. :func:`parse_json` therefore measures the nesting
depth first, at C speed, and hands :func:`json.loads` only documents at most
``max_depth`` deep: whatever the recursion limit, the parser never nests deeper.

The depth check (:func:`json_depth_exceeds`) keeps the brackets outside string
literals with a few C-speed bytes operations, folds ``{}`` into ``[]``, then removes
innermost ``[]`` pairs with :meth:`bytes.replace`, one nesting level per pass. A
balanced sequence at most ``max_depth`` deep is empty after ``max_depth`` passes;
anything left over is deeper, or unbalanced (which json would refuse anyway).

Documents within the depth bound are parsed by ``orjson`` (~5x faster than
``json.loads`` on a JSON-RPC request); whatever orjson refuses (a byte-order mark,
lone surrogates, NaN, numbers out of a double's range) and any document with an
integer that may exceed 64 bits goes to ``json.loads`` as before, so the accepted
documents, their values and the error messages are json's.
"""

from __future__ import annotations

import json
import re
from typing import Any

try:
    import orjson
except ImportError:  # codec without the node's dependencies (the SDK alone): json only
    orjson = None  # type: ignore[assignment]

from codec.errors import JSONParseError

MAX_JSON_DEPTH = 64  # JSON-RPC requests and answers nest < 10 levels; eth_getProof ~5

_ESCAPED_BACKSLASH = b"\\\\"
_ESCAPED_QUOTE = b'\\"'
_KEPT = b'[]{}"'  # brackets, and the quotes that say which brackets are in strings
_NOT_KEPT = bytes(b for b in range(256) if b not in _KEPT)
_FOLD = bytes.maketrans(b"{}", b"[]")
_OPENERS = re.compile(rb"\[+")
_BOM = b"\xef\xbb\xbf"
# A run of 19+ digits may be an integer beyond 64 bits, which orjson reads as a float
# (json.loads keeps it exact): such documents go to json.loads.
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def json_depth_exceeds(data: bytes, max_depth: int) -> bool:
    """Whether the JSON text ``data`` (UTF-8) nests brackets deeper than ``max_depth``
    or has unbalanced brackets outside its strings."""
    return _bracket_fault(data, max_depth) is not None


def _bracket_fault(data: bytes, max_depth: int) -> str | None:
    """``"too_deep"``, ``"unbalanced"`` or None for the brackets of ``data``.

    Only C-speed bytes operations: escaped backslashes then escaped quotes are dropped
    (a JSON lexer pairs backslashes left to right, and a backslash outside a string is
    invalid JSON, which json.loads refuses before reaching the brackets after it); all
    but brackets and quotes is deleted; adjacent quotes (strings without brackets) go;
    what is outside the remaining strings is every other piece between quotes."""
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None  # cannot nest deeper, and balance is json.loads's business
    if b"\\" in data:
        data = data.replace(_ESCAPED_BACKSLASH, b"").replace(_ESCAPED_QUOTE, b"")
    brackets = data.translate(None, _NOT_KEPT).replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(brackets.split(b'"')[::2])
    brackets = brackets.translate(_FOLD)
    for passes in range(max_depth):
        if not brackets:
            return None
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            # No innermost pair left, yet brackets remain: unbalanced; and too deep as
            # well when a run of unclosed openers alone goes past the bound (a body of
            # nothing but "[" is refused as the nesting attack it is).
            run = max(map(len, _OPENERS.findall(brackets)), default=0)
            return "too_deep" if passes + run > max_depth else "unbalanced"
        brackets = shorter
    return "too_deep" if brackets else None


def parse_json(data: bytes | str, *, max_bytes: int | None, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads(data)`` for text from an untrusted party, refused with
    :class:`JSONParseError` (``json_too_large``, ``json_too_deep``, ``json_malformed``)
    before parsing when over ``max_bytes`` (None: the caller bounded the size already)
    or nested deeper than ``max_depth``. Bytes
    must be UTF-8 (an initial byte-order mark is skipped, as json.loads does)."""
    if isinstance(data, str):
        text, raw = data, None
    elif isinstance(data, bytes | bytearray | memoryview):
        text, raw = None, bytes(data)
    else:
        raise JSONParseError("json_malformed", f"expected text, got {type(data).__name__}")
    size = len(raw) if raw is not None else len(text)  # type: ignore[arg-type]
    if max_bytes is not None and size > max_bytes:
        raise JSONParseError("json_too_large", f"JSON of {size} bytes exceeds the limit of {max_bytes}")
    if raw is None:
        try:
            raw = text.encode("utf-8")  # type: ignore[union-attr]
        except UnicodeEncodeError:
            raise JSONParseError("json_malformed", "JSON text is not valid Unicode") from None
    if (orjson is not None and _bracket_fault(raw, max_depth) is None
            and _LONG_NUMBER.search(raw) is None):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # json.loads below decides, and words the error, as it always did
    if text is None:
        try:
            # Decoded here, not by json.loads: json guesses UTF-16/32 from NUL bytes, and
            # the depth check below reads the bytes as UTF-8. The BOM is stripped by
            # hand: the "utf-8-sig" codec is Python code, ~3 us a call.
            text = (raw[3:] if raw.startswith(_BOM) else raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONParseError("json_malformed", f"JSON text is not UTF-8: {exc.reason}") from None
    fault = _bracket_fault(raw, max_depth)
    if fault == "too_deep":
        raise JSONParseError("json_too_deep", f"JSON nested deeper than {max_depth} levels")
    if fault == "unbalanced":
        raise JSONParseError("json_malformed", "invalid JSON: unbalanced brackets")
    try:
        return json.loads(text)  # type: ignore[arg-type]
    except (ValueError, RecursionError) as exc:
        raise JSONParseError("json_malformed", f"invalid JSON: {exc}") from None
