"""Where a node serves RPC (``--rpc-host``, ``rpc.host``; docs/docker.md, "RPC bind
address"), and ``motus init`` on a home that belongs to someone else (docs/docker.md,
"Volumes")."""

from __future__ import annotations

import os
import tomllib
import urllib.error

import pytest

from tests.procs import NodeProcess, init_home, motus, rpc


class NodeOn(NodeProcess):
    """A node whose RPC is reached at ``host`` instead of 127.0.0.1."""

    def __init__(self, home, host: str) -> None:
        super().__init__(home, extra_args=("--rpc-host", host))
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.rpc_port}"


@pytest.mark.timeout(60)
def test_rpc_host_flag_moves_the_listener(tmp_path):
    home = init_home(tmp_path)
    # 127.0.0.2 is loopback too (Linux routes 127.0.0.0/8 there) but not 127.0.0.1
    with NodeOn(home, "127.0.0.2") as node:
        assert int(rpc(node.url, "eth_chainId"), 16) == 7077
        with pytest.raises(urllib.error.URLError):
            rpc(f"http://127.0.0.1:{node.rpc_port}", "eth_chainId", timeout=2)
    # the flag overrides the run, not the file
    assert tomllib.loads((home / "config.toml").read_text())["rpc"]["host"] == "127.0.0.1"


def test_init_writes_rpc_host(tmp_path):
    home = tmp_path / "node"
    motus("init", "--home", str(home), "--rpc-host", "0.0.0.0")
    assert tomllib.loads((home / "config.toml").read_text())["rpc"]["host"] == "0.0.0.0"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the home to another uid")
def test_init_on_a_home_of_another_user_names_the_owner(tmp_path):
    home = tmp_path / "node"
    home.mkdir()
    os.chown(home, 10001, 10001)  # as a Docker volume the image's user owns
    out = motus("init", "--home", str(home), check=False)
    assert out.returncode == 2
    assert f"home {home} belongs to uid 10001, and this command runs as uid 0" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (home / "keys").exists()
