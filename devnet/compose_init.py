"""The ``init`` service of the Docker devnet (docker-compose.yml, docs/docker.md): the
homes of N validators under one directory (a named volume), each with its keys, the
shared genesis and a config for a container of its own on the compose network.

    python -m devnet.compose_init --root /homes --hosts 172.30.77.10,172.30.77.11,...

Validator i listens for libp2p on hosts[i]:P2P_PORT and bootstraps from every other
validator at its address; every validator serves RPC on 0.0.0.0:RPC_PORT inside its
container (docs/docker.md, "RPC bind address"). Homes, keys and genesis are made by
:func:`devnet.launcher.prepare`, as for ``motus devnet up``, and are reused when they exist,
so ``docker compose up`` after ``docker compose stop`` resumes the same chain."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from pathlib import Path

from genesis.spec import DEV_CHAIN_ID
from node.config import Config
from node.keys import write_atomic

# The same ports in every container: each validator has an address of its own.
RPC_PORT = 8545
P2P_PORT = 30333
# Every container's RPC listens on all its interfaces, so that the published port and the
# other containers reach it (docs/docker.md, "RPC bind address").
CONTAINER_RPC_HOST = "0.0.0.0"


def configure(root: Path, hosts: list[str], chain_id: int = DEV_CHAIN_ID) -> list[dict]:
    """Make (or reuse) the homes under ``root`` for validators at ``hosts``; return one
    summary per validator (home, address, peer id, bootstrap multiaddr)."""
    from devnet.launcher import prepare
    from p2p.identity import node_multiaddr

    members = prepare(root, len(hosts), RPC_PORT, P2P_PORT, chain_id,
                      ports=[(RPC_PORT, P2P_PORT)] * len(hosts))
    addrs = [node_multiaddr(host, P2P_PORT, m.peer_id) for host, m in zip(hosts, members, strict=True)]
    out = []
    for m, host, addr in zip(members, hosts, addrs, strict=True):
        cfg = Config.load(m.home.config)
        cfg.rpc.host = CONTAINER_RPC_HOST
        cfg.p2p.host = host
        cfg.p2p.bootstrap = [a for a in addrs if a != addr]
        write_atomic(m.home.config, cfg.to_toml().encode(), mode=0o644)
        out.append({"home": str(m.home.root), "validator": "0x" + m.address.hex(), "multiaddr": addr})
    return out


def _hosts(text: str) -> list[str]:
    hosts = [h.strip() for h in text.split(",") if h.strip()]
    try:
        for h in hosts:
            ipaddress.IPv4Address(h)  # bootstrap multiaddrs are /ip4/ (p2p.host)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IPv4 address: {exc}") from None
    if not hosts or len(set(hosts)) != len(hosts):
        raise argparse.ArgumentTypeError("need one distinct IPv4 address per validator")
    return hosts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devnet.compose_init",
                                     description="Prepare the Docker devnet's validator homes.")
    parser.add_argument("--root", required=True, help="directory holding validator-0 .. validator-N-1")
    parser.add_argument("--hosts", required=True, type=_hosts,
                        help="comma-separated IPv4 address of each validator's container")
    parser.add_argument("--chain-id", type=int, default=DEV_CHAIN_ID)
    args = parser.parse_args(argv)
    for line in configure(Path(args.root), args.hosts, args.chain_id):
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
