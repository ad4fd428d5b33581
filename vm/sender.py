"""Transaction sender recovery from the envelope bytes.

py-evm recovers a sender by rebuilding the unsigned transaction object, RLP-encoding
it again, and going through eth_keys' wrappers (~100 us a transaction, more than
half of it Python). The bytes it signs are already inside the envelope: for typed
transactions ``type || rlp(all fields but y_parity, r, s)``, for legacy ones
``rlp(first six fields [+ chain_id, 0, 0 under EIP-155])``. This module cuts them
out of the envelope, hashes them and recovers through :mod:`vm.crypto` (~45 us).

The result is stored in py-evm's own cache of the sender (the ``sender`` cached
property), so everything downstream (execution, receipts, RPC) reads the same
value. Only envelopes a strict RLP decoder accepted are ever sliced: a canonical
encoding re-encodes to the same bytes, so the slice equals what py-evm would sign
(``tests/vm/test_sender.py`` checks both paths agree on random transactions).
Anything unusual (other types, a signature libsecp256k1 refuses, an invalid ``v``)
goes to py-evm's path, whose errors are the reference.
"""

from __future__ import annotations

from eth.abc import SignedTransactionAPI
from eth_typing import Address

from vm.block import rlp_length_prefix, rlp_uint
from vm.crypto import keccak256, recover_address

ACCESS_LIST_TX_TYPE = 1
DYNAMIC_FEE_TX_TYPE = 2
_UNSIGNED_ITEMS = {None: 6, ACCESS_LIST_TX_TYPE: 8, DYNAMIC_FEE_TX_TYPE: 9}
EIP155_OFFSET = 35


def _item_end(b: bytes, i: int) -> int:
    """Offset just past the RLP item starting at ``b[i]``."""
    p = b[i]
    if p < 0x80:
        return i + 1
    if p < 0xB8:
        return i + 1 + p - 0x80
    if p < 0xC0:
        n = p - 0xB7
        return i + 1 + n + int.from_bytes(b[i + 1:i + 1 + n], "big")
    if p < 0xF8:
        return i + 1 + p - 0xC0
    n = p - 0xF7
    return i + 1 + n + int.from_bytes(b[i + 1:i + 1 + n], "big")


def _list_start(b: bytes, i: int) -> int:
    """Offset of the first item inside the RLP list starting at ``b[i]``."""
    p = b[i]
    if p < 0xC0:
        raise ValueError("not an RLP list")
    return i + 1 if p < 0xF8 else i + 1 + p - 0xF7


def signing_message(raw: bytes, type_id: int | None, chain_id: int | None = None) -> bytes:
    """The bytes the sender signed, cut from a canonical envelope ``raw``.
    ``chain_id`` only for EIP-155 legacy transactions."""
    unsigned = _UNSIGNED_ITEMS[type_id]
    offset = 0 if type_id is None else 1
    start = _list_start(raw, offset)
    end = start
    for _ in range(unsigned):
        end = _item_end(raw, end)
    body = raw[start:end]
    if chain_id is not None:
        # py-evm signs int_to_big_endian(chain_id), which is b"\x00" (not RLP's 0x80) for
        # chain id 0 (v = 35, 36): same bytes as py-evm, or the senders would differ
        body += (b"\x00" if chain_id == 0 else rlp_uint(chain_id)) + b"\x80\x80"
    return raw[:offset] + rlp_length_prefix(len(body), 0xC0) + body


def _fast_sender(raw: bytes, tx: SignedTransactionAPI) -> bytes | None:
    type_id = getattr(tx, "type_id", None)
    if type_id not in _UNSIGNED_ITEMS:
        return None
    chain_id = None
    if type_id is None:
        v = tx.v  # type: ignore[attr-defined]  # legacy transactions only
        if v in (27, 28):
            parity = v - 27
        elif v >= EIP155_OFFSET:
            parity = (v - EIP155_OFFSET) % 2
            chain_id = (v - EIP155_OFFSET) // 2
        else:
            return None
    else:
        parity = tx.y_parity
        if parity not in (0, 1):
            return None
    r, s = tx.r, tx.s
    if not (0 < r < 2**256 and 0 < s < 2**256):
        return None
    digest = keccak256(signing_message(raw, type_id, chain_id))
    return recover_address(r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((parity,)), digest)


def recover_sender(raw: bytes, tx: SignedTransactionAPI) -> Address:
    """The sender of ``tx``, decoded (strictly) from the envelope ``raw``. Fills
    py-evm's cached ``tx.sender``; raises what py-evm raises for a bad signature."""
    cached = tx.__dict__.get("sender")
    if cached is not None:
        return cached
    try:
        sender = _fast_sender(raw, tx)
    except (ValueError, IndexError):
        sender = None
    if sender is None:
        return tx.sender  # py-evm's path: its answer, or its error
    tx.__dict__["sender"] = sender
    return Address(sender)
