"""The node's persistent libp2p identity: a key pair in a 0600 file.

The peer id is derived from the public key, so keeping the key file keeps the
peer id (and every bootstrap multiaddr that names it) stable across restarts.

The file holds the libp2p protobuf encoding of the private key (the format of
``PrivateKey.serialize``), so other libp2p tools can read it. It is created
once, atomically: written to a temporary file with mode 0600, fsynced, then
hard-linked into place, so a crash never leaves a half-written key and two
processes racing to create it end up using the same key.

``python -m p2p.identity KEYFILE [--port N]`` prints the peer id and the full
multiaddr other nodes use to bootstrap from this one, creating the key if
needed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Literal

from libp2p.crypto.ed25519 import create_new_key_pair as new_ed25519_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.secp256k1 import create_new_key_pair as new_secp256k1_key_pair
from libp2p.crypto.serialization import deserialize_private_key
from libp2p.peer.id import ID

from p2p.errors import KeyFileError

logger = logging.getLogger(__name__)

KeyType = Literal["ed25519", "secp256k1"]

KEY_FILE_MODE = 0o600
# A libp2p protobuf private key is well under 200 bytes; anything bigger is not
# a key file, so do not read it into memory.
MAX_KEY_FILE_SIZE = 4096


def load_or_create_node_key(path: Path | str, key_type: KeyType = "ed25519") -> KeyPair:
    """Return the key pair stored at ``path``, creating it first if absent.

    A new key is ``key_type`` (ed25519 by default: cheapest to verify, which
    matters because every gossip message is signed). An existing key is used
    whatever its type. A file readable by group or others is tightened to
    0600 with a warning. Raises ``KeyFileError`` when the file is unreadable
    or does not hold a libp2p private key.
    """
    path = Path(path)
    if not path.exists():
        _create_key_file(path, key_type)
    return _load_key_file(path)


def peer_id_of(key_pair: KeyPair) -> str:
    """Return the base58 peer id (``12D3Koo...`` / ``16Uiu2...``) of ``key_pair``."""
    return ID.from_pubkey(key_pair.public_key).to_base58()


def node_multiaddr(host: str, port: int, peer_id: str) -> str:
    """Return ``/ip4/HOST/tcp/PORT/p2p/PEER_ID``, the address peers bootstrap from."""
    return f"/ip4/{host}/tcp/{port}/p2p/{peer_id}"


def _create_key_file(path: Path, key_type: KeyType) -> None:
    if key_type == "ed25519":
        key_pair = new_ed25519_key_pair()
    elif key_type == "secp256k1":
        key_pair = new_secp256k1_key_pair()
    else:
        raise KeyFileError(f"unknown key type {key_type!r}: use ed25519 or secp256k1")
    data = key_pair.private_key.serialize()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        try:
            # The umask cannot widen 0600, but fchmod makes the mode explicit.
            os.fchmod(fd, KEY_FILE_MODE)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails if the key appeared meanwhile: the first creator wins
            # and everyone loads its key, unlike rename() which would replace it.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        _fsync_dir(path.parent)
    except OSError as exc:
        raise KeyFileError(f"cannot create node key {path}: {exc}") from exc
    logger.info("created node key %s (peer id %s)", path, peer_id_of(key_pair))


def _load_key_file(path: Path) -> KeyPair:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            logger.warning("node key %s had mode %o; tightening to 0600", path, mode)
            path.chmod(KEY_FILE_MODE)
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_FILE_SIZE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read node key {path}: {exc}") from exc
    if len(data) > MAX_KEY_FILE_SIZE:
        raise KeyFileError(f"{path} is larger than any libp2p key: not a node key file")
    try:
        private_key = deserialize_private_key(data)
        public_key = private_key.get_public_key()
        public_key.serialize()
    except Exception as exc:  # the protobuf and key parsers raise many types
        raise KeyFileError(f"{path} does not hold a libp2p private key: {exc}") from exc
    return KeyPair(private_key, public_key)


def _fsync_dir(directory: Path) -> None:
    # The rename/link is durable only once the directory entry is on disk.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def main(argv: list[str] | None = None) -> int:
    """Print the peer id and bootstrap multiaddr of a key file (creating it if absent)."""
    parser = argparse.ArgumentParser(prog="python -m p2p.identity", description=main.__doc__)
    parser.add_argument("key_file", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30333)
    parser.add_argument("--key-type", choices=["ed25519", "secp256k1"], default="ed25519")
    args = parser.parse_args(argv)
    try:
        key_pair = load_or_create_node_key(args.key_file, args.key_type)
    except KeyFileError as exc:
        print(exc, file=sys.stderr)
        return 1
    peer_id = peer_id_of(key_pair)
    print(peer_id)
    print(node_multiaddr(args.host, args.port, peer_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
