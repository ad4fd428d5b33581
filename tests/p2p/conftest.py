"""Helpers for p2p tests: real libp2p hosts on 127.0.0.1, in one trio run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from p2p.host import GossipConfig, P2PConfig, P2PNode
from tests.procs import free_port  # noqa: F401  (the p2p tests' fixtures use it)

CHAIN_ID = 7077


def make_config(tmp_path: Path, name: str, **overrides: object) -> P2PConfig:
    """A config listening on an OS-chosen loopback port, quick to reconnect."""
    fields: dict[str, object] = {
        "key_path": tmp_path / f"{name}.key",
        "chain_id": CHAIN_ID,
        "listen_port": 0,
        "reconnect_max_backoff": 1.0,
        "gossip": GossipConfig(),
    }
    fields.update(overrides)
    return P2PConfig(**fields)  # type: ignore[arg-type]


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


def meshed(node: P2PNode, other: P2PNode, topic: str) -> bool:
    """True when ``other`` is in ``node``'s gossip mesh for ``topic``."""
    return any(peer.peer_id == other.peer_id and topic in peer.mesh for peer in node.peers())


def accept_all(peer_id: str, data: bytes) -> bool:
    return True


@pytest.fixture
def node_factory(tmp_path: Path) -> Callable[..., P2PNode]:
    """Build a ``P2PNode`` named ``name`` with ``make_config`` overrides."""

    def build(name: str, **overrides: object) -> P2PNode:
        return P2PNode(make_config(tmp_path, name, **overrides))

    return build
