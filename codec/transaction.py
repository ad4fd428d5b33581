"""The shape of an Ethereum transaction envelope, checked before py-evm decodes it.

py-evm decodes transactions with pyrlp, whose memory grows with nesting depth x size
(see :mod:`codec.rlp`). No valid transaction nests deeper than an access list
(``[..., [[address, [key, ...]], ...], ...]``, depth 4), so the envelope is first
decoded by the bounded decoder with that depth: a hostile envelope costs O(size), and
what reaches py-evm costs it at most 4 x size.
"""

from __future__ import annotations

from codec.errors import RLPDecodeError
from codec.rlp import decode_items

LEGACY_TX_DEPTH = 1  # [nonce, gas_price, gas, to, value, data, v, r, s]
TYPED_TX_DEPTH = 4  # type || [..., access_list=[[address, [storage_key, ...]], ...], ...]


def check_transaction_shape(raw: bytes, *, max_items: int | None = None) -> None:
    """Refuse an envelope that is not ``rlp(list)`` (legacy) or ``type || rlp(list)``
    (typed, type below 0x80) nested within the depth its kind needs, with at most
    ``max_items`` RLP items. Raises only :class:`RLPDecodeError`; says nothing about the
    fields themselves (py-evm checks those).

    By default the item count is bounded only by the size (every item takes a byte):
    any fixed count below that refuses valid transactions (an access-list entry with no
    keys, ``[address, []]``, is 3 items in 23 bytes), and the depth bound already keeps
    py-evm's cost linear in the size."""
    if max_items is None:
        max_items = len(raw) + 1
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise RLPDecodeError("rlp_malformed", f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if not raw:
        raise RLPDecodeError("rlp_malformed", "empty transaction")
    if raw[0] >= 0xC0:
        items = decode_items(raw, max_depth=LEGACY_TX_DEPTH, max_items=max_items)
    elif raw[0] < 0x80:
        items = decode_items(raw[1:], max_depth=TYPED_TX_DEPTH, max_items=max_items)
    else:
        raise RLPDecodeError("rlp_bad_shape", "a transaction is an RLP list or a type byte and a list")
    if not isinstance(items, list):
        raise RLPDecodeError("rlp_bad_shape", "a transaction payload is an RLP list")
