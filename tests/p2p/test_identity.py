"""The node key: created once with mode 0600, same peer id after a restart."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import trio

from p2p.errors import KeyFileError
from p2p.host import P2PNode
from p2p.identity import load_or_create_node_key, main, node_multiaddr, peer_id_of
from tests.p2p.conftest import make_config


def test_key_file_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "node.key"
    first = load_or_create_node_key(path)
    content = path.read_bytes()
    second = load_or_create_node_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == content
    assert peer_id_of(first) == peer_id_of(second)
    assert peer_id_of(first).startswith("12D3Koo")  # ed25519 by default
    assert [p.name for p in path.parent.iterdir()] == ["node.key"]  # no temp file left


def test_secp256k1_key(tmp_path: Path) -> None:
    key = load_or_create_node_key(tmp_path / "k", "secp256k1")
    assert peer_id_of(key).startswith("16Uiu2")
    assert peer_id_of(load_or_create_node_key(tmp_path / "k")) == peer_id_of(key)


def test_loose_mode_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    load_or_create_node_key(path)
    path.chmod(0o644)
    load_or_create_node_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", [b"", b"not a key", b"\x08\x01\x12\x03abc", b"x" * 5000])
def test_corrupt_key_file_is_a_typed_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as raised:
        load_or_create_node_key(path)
    assert raised.value.code == "key_file"


async def test_peer_id_persists_across_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path, "restart")
    addresses = []
    with trio.fail_after(20):
        for _ in range(2):
            node = P2PNode(config)
            async with trio.open_nursery() as nursery:
                addresses.append(await nursery.start(node.run))
                nursery.cancel_scope.cancel()
    peer_ids = [address.rsplit("/", 1)[1] for address in addresses]
    assert peer_ids[0] == peer_ids[1] == peer_id_of(load_or_create_node_key(config.key_path))
    assert stat.S_IMODE(config.key_path.stat().st_mode) == 0o600


def test_cli_prints_peer_id_and_multiaddr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.key"
    assert main([str(path), "--port", "30334"]) == 0
    peer_id, address = capsys.readouterr().out.split()
    assert peer_id == peer_id_of(load_or_create_node_key(path))
    assert address == node_multiaddr("127.0.0.1", 30334, peer_id)
