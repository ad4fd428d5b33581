"""Operator mistakes give one line on stderr that says what to do, and the documented
exit status (docs/cli.md, "Exit status"), never a traceback: a busy RPC or p2p port, a
database held by a running node, an RPC URL where no node answers. Real processes."""

from __future__ import annotations

import pytest

from tests.procs import NodeProcess, free_port, init_home, motus

pytestmark = [pytest.mark.timeout(120)]

EXIT_LOCAL_PROBLEM = 2
EXIT_IN_USE = 3


def one_line(result) -> str:
    """The stderr of a failed command, checked to be one line with no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    home = init_home(tmp_path_factory.mktemp("errors"), "running")
    with NodeProcess(home) as node:
        node.wait_height(1)
        yield node


def test_db_check_on_a_running_nodes_home(running: NodeProcess) -> None:
    result = motus("db", "check", "--home", str(running.home), check=False)
    assert result.returncode == EXIT_IN_USE
    line = one_line(result)
    assert line.startswith("motus: error: database ") and "stop that node first" in line


def test_second_node_on_the_same_home(running: NodeProcess) -> None:
    result = motus("node", "start", "--home", str(running.home), "--rpc-port", str(free_port()),
                   "--p2p-port", str(free_port()), check=False)
    assert result.returncode == EXIT_IN_USE
    assert "in use by another process" in one_line(result)


@pytest.mark.parametrize(("which", "flag"), [("rpc", "--rpc-port"), ("p2p", "--p2p-port")])
def test_busy_port(running: NodeProcess, tmp_path, which: str, flag: str) -> None:
    home = init_home(tmp_path, "second")
    ports = {"rpc": str(free_port()), "p2p": str(free_port())}
    ports[which] = str(running.rpc_port if which == "rpc" else running.p2p_port)
    result = motus("node", "start", "--home", str(home), "--rpc-port", ports["rpc"],
                   "--p2p-port", ports["p2p"], check=False, timeout=30)
    assert result.returncode == EXIT_IN_USE
    line = one_line(result)
    assert f"127.0.0.1:{ports[which]} is in use" in line and flag in line
    assert running.proc is not None and running.proc.poll() is None  # the first node runs on


def test_status_of_an_unreachable_rpc() -> None:
    result = motus("status", "--rpc", f"http://127.0.0.1:{free_port()}", check=False)
    assert result.returncode == EXIT_LOCAL_PROBLEM and result.stdout == ""
    line = one_line(result)
    assert "cannot reach node" in line and "is the node running" in line
