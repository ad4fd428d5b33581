"""Closing libp2p streams without letting a dead peer's failure escape (bounded waits)."""

from __future__ import annotations

import logging

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

logger = logging.getLogger(__name__)


async def reset(stream: INetStream) -> None:
    with trio.move_on_after(1.0):
        try:
            await stream.reset()
        except Exception:
            logger.debug("stream reset failed", exc_info=True)


async def close(stream: INetStream | None) -> None:
    if stream is None:
        return
    with trio.move_on_after(1.0):
        try:
            await stream.close()
        except Exception:
            logger.debug("stream close failed", exc_info=True)


def base58(peer_id_bytes: bytes) -> str:
    """A peer id's text form; the hex of bytes that are not a peer id."""
    try:
        return ID(peer_id_bytes).to_base58()
    except Exception:
        return peer_id_bytes.hex()
