"""A bounded, iterative RLP decoder.

:func:`decode_items` returns exactly what ``rlp.decode(data)`` (pyrlp, strict) returns
for every input pyrlp accepts, and refuses every input pyrlp refuses, but:

- it does not recurse, so nesting cannot exhaust the C stack or the recursion limit;
- it keeps no per-sub-list copy of the encoding (pyrlp does, which makes its memory
  grow with nesting depth x size: a 126 KB input nested deep costs it ~0.5 GB), so its
  memory is O(len(data)) plus one Python object per item;
- it refuses, before allocating them, a list nested deeper than ``max_depth`` and more
  than ``max_items`` items in total.

Every Motus format has a fixed shape, so each decoder passes the depth its shape needs
(docs/encoding.md lists them). :func:`decode` adds the format's sedes on top, as
``rlp.decode(data, sedes=...)`` does.
"""

from __future__ import annotations

from typing import Any

from rlp.exceptions import RLPException

from codec.errors import RLPDecodeError

RLPItem = bytes | list[Any]


def decode_items(data: bytes, *, max_depth: int, max_items: int, max_bytes: int | None = None) -> RLPItem:
    """The item tree of strict RLP ``data`` (bytes and nested lists of bytes).

    ``max_depth`` is the deepest list nesting accepted (a byte string alone is depth 0,
    ``[b"a"]`` depth 1, ``[[b"a"]]`` depth 2); ``max_items`` counts every byte string and
    every list, the outermost included. Raises only :class:`RLPDecodeError`."""
    if not isinstance(data, bytes):
        if not isinstance(data, bytearray | memoryview):
            raise RLPDecodeError("rlp_malformed", f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if max_bytes is not None and size > max_bytes:
        raise RLPDecodeError("rlp_too_large", f"{size} bytes exceeds the limit of {max_bytes}")
    if size == 0:
        raise RLPDecodeError("rlp_malformed", "empty input")

    root: list[Any] = []
    container = root  # the list being filled
    end = size  # where the payload of ``container`` ends
    parents: list[tuple[list[Any], int]] = []  # enclosing (container, end), outermost first
    pos = 0
    items = 0
    while True:
        if pos == end:
            if not parents:
                break
            container, end = parents.pop()
            continue
        if container is root and root:
            raise RLPDecodeError("rlp_malformed", f"{size - pos} bytes after the RLP item")
        items += 1
        if items > max_items:
            raise RLPDecodeError("rlp_too_many_items", f"more than {max_items} RLP items")
        b0 = data[pos]
        if b0 < 0x80:  # a single byte is its own encoding
            container.append(data[pos : pos + 1])
            pos += 1
            continue
        if b0 < 0xB8:  # short string
            start, length = pos + 1, b0 - 0x80
            if length == 1 and start < size and data[start] < 0x80:
                raise RLPDecodeError("rlp_malformed", "single byte below 0x80 encoded as a string")
        elif b0 < 0xC0:  # long string
            start, length = _long_length(data, pos, b0 - 0xB7, end)
        elif b0 < 0xF8:  # short list
            start, length = pos + 1, b0 - 0xC0
        else:  # long list
            start, length = _long_length(data, pos, b0 - 0xF7, end)
        stop = start + length
        if stop > end:
            raise RLPDecodeError("rlp_malformed", "RLP item runs past the end of its list or input")
        if b0 < 0xC0:
            container.append(data[start:stop])
            pos = stop
            continue
        if len(parents) >= max_depth:
            raise RLPDecodeError("rlp_too_deep", f"RLP lists nested deeper than {max_depth}")
        sub: list[Any] = []
        container.append(sub)
        parents.append((container, end))
        container, end, pos = sub, stop, start
    return root[0]


def _long_length(data: bytes, pos: int, length_of_length: int, end: int) -> tuple[int, int]:
    start = pos + 1 + length_of_length
    if start > end:
        raise RLPDecodeError("rlp_malformed", "RLP length prefix runs past the end of its list or input")
    if data[pos + 1] == 0:
        raise RLPDecodeError("rlp_malformed", "RLP length starts with a zero byte")
    length = int.from_bytes(data[pos + 1 : start], "big")
    if length < 56:
        raise RLPDecodeError("rlp_malformed", "long RLP length prefix used for a short payload")
    return start, length


def decode(data: bytes, sedes: Any, *, max_depth: int, max_items: int, max_bytes: int | None = None) -> Any:
    """``rlp.decode(data, sedes=sedes)`` on the bounded decoder: the bytes are decoded
    within the limits, then deserialised by ``sedes``. A refusal by the sedes (valid
    RLP of the wrong shape or range) is ``rlp_bad_shape``. Raises only RLPDecodeError."""
    items = decode_items(data, max_depth=max_depth, max_items=max_items, max_bytes=max_bytes)
    try:
        obj = sedes.deserialize(items)
    except (RLPException, ValueError, TypeError, IndexError, OverflowError) as exc:
        raise RLPDecodeError("rlp_bad_shape", f"{type(exc).__name__}: {exc}") from None
    if hasattr(obj, "_cached_rlp"):  # as pyrlp does: re-encoding (hashing) reuses the input
        obj._cached_rlp = bytes(data)
    return obj
