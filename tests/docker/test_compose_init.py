"""The Docker devnet's init service (devnet/compose_init.py), without an engine: what it
writes is what the compose file's addresses and the containers' RPC need."""

from __future__ import annotations

import tomllib

import pytest

from devnet.compose_init import CONTAINER_RPC_HOST, P2P_PORT, RPC_PORT, configure, main
from genesis.spec import GenesisSpec

HOSTS = ["10.77.77.10", "10.77.77.11", "10.77.77.12", "10.77.77.13"]


def test_homes_with_addresses_and_bootstrap(tmp_path):
    first = configure(tmp_path, HOSTS)
    assert [m["multiaddr"].split("/")[2] for m in first] == HOSTS
    genesis = GenesisSpec.load(tmp_path / "genesis.json")
    assert sorted("0x" + v.address.hex() for v in genesis.validators) == sorted(m["validator"] for m in first)
    for i, member in enumerate(first):
        home = tmp_path / f"validator-{i}"
        cfg = tomllib.loads((home / "config.toml").read_text())
        assert cfg["rpc"] == {**cfg["rpc"], "host": CONTAINER_RPC_HOST, "port": RPC_PORT}
        assert cfg["p2p"]["host"] == HOSTS[i] and cfg["p2p"]["port"] == P2P_PORT
        # every other validator, at its own address: never itself, never 127.0.0.1
        assert sorted(cfg["p2p"]["bootstrap"]) == sorted(m["multiaddr"] for m in first if m is not member)
        assert (home / "genesis.json").read_bytes() == (tmp_path / "genesis.json").read_bytes()
    # `docker compose up` again: the same keys, so the same chain resumes
    assert configure(tmp_path, HOSTS) == first


def test_bad_hosts_are_usage_errors(tmp_path, capsys):
    for hosts in ("10.0.0.1,10.0.0.1", "validator-0,validator-1", ""):
        with pytest.raises(SystemExit) as exit_:
            main(["--root", str(tmp_path), "--hosts", hosts])
        assert exit_.value.code == 2, hosts
        assert "--hosts" in capsys.readouterr().err
    assert not (tmp_path / "genesis.json").exists()
