"""``motus devnet up`` end to end: validators start, finalize, and the plain status lines
(stdout is not a TTY) show each one's height, peers and mempool until --duration ends."""

from __future__ import annotations

import re
import socket

import pytest

from tests.procs import free_port, motus

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("network"), pytest.mark.timeout(120)]


def free_base(count: int) -> int:
    """A port such that it and the ``count - 1`` ports after it are free now."""
    while True:
        base = free_port()
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue


def test_devnet_up_shows_live_status_and_stops_cleanly(tmp_path) -> None:
    rpc_base, p2p_base = free_base(2), free_base(2)
    out = motus("devnet", "up", "--validators", "2", "--home", str(tmp_path / "devnet"),
                "--no-fleet", "--duration", "20", "--rpc-port", str(rpc_base),
                "--p2p-port", str(p2p_base), timeout=90).stdout
    assert "devnet: stopped" in out
    tables = out.split("validator    rpc")
    rows = [line for line in tables[-1].splitlines() if line.startswith("validator-")]
    assert len(rows) == 2, out
    for i, row in enumerate(rows):
        assert f"127.0.0.1:{rpc_base + i}" in row
        height, peers, mempool = re.split(r"\s+", row)[2:5]
        assert int(height) >= 2 and int(peers) == 1 and int(mempool) == 0, row
