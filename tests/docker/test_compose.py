"""The Docker devnet with a real engine (docs/docker.md): the image builds with no network,
`docker compose up` brings up four validators on a private bridge network and the fleet,
RPC answers through the published port on 127.0.0.1, and the chain behaves as BFT
consensus must when containers lose the network: three of four keep finalising, two of
four halt without forking, and all four converge on one chain when reconnected.

Opt-in (it installs and starts an engine, builds images): ``make test-docker`` sets
MOTUS_DOCKER_TEST=1. As root, a missing engine is installed from Debian's packages
(docker.io, docker-compose, debootstrap) and ``dockerd`` is started for the test and
stopped after it; without root and without an engine the test is skipped. The base image
motus-base:bookworm is made once from Debian packages (devnet/docker/base-image.sh) and
reused while its tag exists; MOTUS_BASE_IMAGE names another (python:3.11-slim)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.procs import free_port, rpc

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("MOTUS_BASE_IMAGE", "motus-base:bookworm")
IMAGE = "motus:dev"  # the tag docker-compose.yml runs
VALIDATORS = 4

pytestmark = [
    pytest.mark.skipif(not os.environ.get("MOTUS_DOCKER_TEST"),
                       reason="Docker devnet test: run it with `make test-docker` (MOTUS_DOCKER_TEST=1)"),
    pytest.mark.timeout(1500),  # cold on a busy machine: ~15 min seen
]


def log(msg: str) -> None:
    print(f"[docker {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: list[str], timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command, its output captured; a failure shows the command's output."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def engine_up() -> bool:
    return shutil.which("docker") is not None and run(["docker", "info"], timeout=30, check=False).returncode == 0


def apt_install(*packages: str) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"apt-get install {' '.join(packages)}")
    run(["apt-get", "update", "-qq"], timeout=300, env=env)
    run(["apt-get", "install", "-y", "-qq", *packages], timeout=600, env=env)


@pytest.fixture(scope="module")
def engine():
    """A running Docker engine: the one present, or dockerd installed and started here
    (and stopped at the end)."""
    started = None
    if not engine_up():
        if os.geteuid() != 0:
            pytest.skip("no Docker engine, and installing one (apt-get install docker.io; "
                        "dockerd) needs root")
        if shutil.which("dockerd") is None or shutil.which("docker") is None:
            apt_install("docker.io")
        logfile = open(Path(tempfile.gettempdir()) / "motus-test-dockerd.log", "ab")
        log("starting dockerd")
        started = subprocess.Popen(["dockerd"], stdout=logfile, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        deadline = time.monotonic() + 60
        while not engine_up():
            assert started.poll() is None, f"dockerd exited {started.returncode}: see {logfile.name}"
            assert time.monotonic() < deadline, f"dockerd not ready in 60 s: see {logfile.name}"
            time.sleep(0.5)
    yield
    if started is not None:
        log("stopping dockerd")
        started.terminate()
        try:
            started.wait(30)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait()


def compose_command() -> list[str]:
    """`docker compose` (the v2 plugin) where present, else Debian's docker-compose."""
    if run(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is None:
        if os.geteuid() != 0:
            pytest.skip("neither `docker compose` nor docker-compose is installed")
        apt_install("docker-compose")
    return ["docker-compose"]


def build_images() -> None:
    """The base image (once), the wheels on this machine, then the image with no network."""
    jobs = {}
    with ThreadPoolExecutor(2) as pool:
        if run(["docker", "image", "inspect", BASE_IMAGE], check=False).returncode != 0:
            if BASE_IMAGE != "motus-base:bookworm":
                pytest.fail(f"base image {BASE_IMAGE} is not present: pull it first")
            if shutil.which("debootstrap") is None:
                apt_install("debootstrap")
            jobs["base image"] = pool.submit(timed, [str(ROOT / "devnet/docker/base-image.sh")], 600)
        jobs["wheels"] = pool.submit(timed, [str(ROOT / "devnet/docker/wheels.sh")], 600,
                                     env=dict(os.environ, PYTHON=sys.executable))
        for name, job in jobs.items():
            log(f"{name}: {job.result():.0f} s")
    log(f"image: {timed(['docker', 'build', '--network', 'none', '-f', 'devnet/Dockerfile', '--build-arg', f'BASE_IMAGE={BASE_IMAGE}', '-t', IMAGE, '.'], 900):.0f} s")


def timed(cmd: list[str], timeout: float, **kw) -> float:
    t0 = time.monotonic()
    run(cmd, timeout=timeout, cwd=ROOT, **kw)
    return time.monotonic() - t0


class Devnet:
    """The compose project under test: its services' containers, RPC reached through the
    published port (validator-0) or from inside each container (every validator, whether
    or not it is on the network)."""

    def __init__(self, compose: list[str], project: str, env: dict[str, str]) -> None:
        self.compose = [*compose, "-p", project, "-f", str(ROOT / "docker-compose.yml")]
        self.project = project
        self.env = env
        self.network = f"{project}_chain"
        self.net_prefix = env["MOTUS_NET"]
        self.url = f"http://127.0.0.1:{env['MOTUS_RPC_PORT_0']}"

    def __call__(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return run([*self.compose, *args], timeout=timeout, check=check, cwd=ROOT, env=self.env)

    def container(self, service: str) -> str:
        cid = self("ps", "-q", service).stdout.strip()
        assert cid, f"no container for {service}"
        return cid

    def validator(self, i: int) -> str:
        return self.container(f"validator-{i}")

    def hashes(self, i: int) -> list[str]:
        """Block hashes 1..head as validator i has them (asked inside its container)."""
        out = run(["docker", "exec", self.validator(i), "python", "-c", CHAIN_SCRIPT], timeout=60)
        return json.loads(out.stdout)

    def heads(self) -> list[int]:
        with ThreadPoolExecutor(VALIDATORS) as pool:
            return [len(h) for h in pool.map(self.hashes, range(VALIDATORS))]

    def height(self) -> int:
        return int(rpc(self.url, "eth_blockNumber"), 16)

    def disconnect(self, i: int) -> None:
        log(f"disconnecting validator-{i}")
        run(["docker", "network", "disconnect", self.network, self.validator(i)])

    def reconnect(self, i: int) -> None:
        # the same address: the other validators' bootstrap lists name it
        log(f"reconnecting validator-{i}")
        run(["docker", "network", "connect", "--ip", f"{self.net_prefix}.{10 + i}", self.network,
             self.validator(i)])

    def logs(self) -> str:
        return self("logs", "--no-color", "--tail", "40", check=False).stdout


# Run inside a validator's container (python of the image, standard library only): print
# the hashes of blocks 1..head, fetched in batches within rpc.max_batch.
CHAIN_SCRIPT = """
import json, urllib.request
def call(body):
    req = urllib.request.Request("http://127.0.0.1:8545", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=10))
head = int(call({"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber", "params": []})["result"], 16)
hashes = []
for start in range(1, head + 1, 100):
    batch = [{"jsonrpc": "2.0", "id": n, "method": "eth_getBlockByNumber", "params": [hex(n), False]}
             for n in range(start, min(head, start + 99) + 1)]
    hashes += [r["result"]["hash"] for r in sorted(call(batch), key=lambda r: r["id"])]
print(json.dumps(hashes))
"""


def wait_for(what: str, check, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # a node still starting, a container between networks
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def same_chain(chains: list[list[str]]) -> None:
    """No fork: at every height all validators have, they have the same block."""
    common = min(len(c) for c in chains)
    for n in range(common):
        assert len({c[n] for c in chains}) == 1, f"fork at height {n + 1}: {[c[n] for c in chains]}"


@pytest.fixture(scope="module")
def devnet(engine):
    t0 = time.monotonic()
    compose = compose_command()
    build_images()
    env = dict(os.environ, MOTUS_BASE_IMAGE=BASE_IMAGE,
               MOTUS_NET=f"10.{random.randint(100, 250)}.{random.randint(0, 255)}",
               **{f"MOTUS_RPC_PORT_{i}": str(free_port()) for i in range(VALIDATORS)})
    net = Devnet(compose, f"motustest{os.getpid()}", env)
    try:
        t1 = time.monotonic()
        net("up", "-d", "--no-build", timeout=300)
        wait_for("blocks through the published port", lambda: net.height() >= 3, 180)
        log(f"devnet up and making blocks: {time.monotonic() - t1:.0f} s "
            f"(from the start of the test: {time.monotonic() - t0:.0f} s)")
        yield net
    except BaseException:
        print(net.logs())
        raise
    finally:
        net("down", "-v", "--remove-orphans", timeout=180, check=False)
        log(f"torn down; whole test {time.monotonic() - t0:.0f} s")


def test_rpc_through_published_port(devnet):
    assert int(rpc(devnet.url, "eth_chainId"), 16) == 7077
    status = rpc(devnet.url, "motus_nodeStatus")
    assert status["peers"] >= VALIDATORS - 1
    health = wait_for("GET /health ok", lambda: json.load(
        urllib.request.urlopen(devnet.url + "/health", timeout=5)), 60)
    assert health["status"] == "ok"
    # the compose healthchecks, run by the engine inside each container
    for i in range(VALIDATORS):
        cid = devnet.validator(i)
        wait_for(f"validator-{i} healthy", lambda cid=cid: run(
            ["docker", "inspect", "--format", "{{.State.Health.Status}}", cid]).stdout.strip() == "healthy", 120, 2)
    # the init job finished, and the fleet is running against validator-0
    assert run(["docker", "inspect", "--format", "{{.State.ExitCode}}", devnet.container("init")],
               ).stdout.strip() == "0"
    assert run(["docker", "inspect", "--format", "{{.State.Running}}", devnet.container("fleet")],
               ).stdout.strip() == "true"


def test_partitions(devnet):
    same_chain([devnet.hashes(i) for i in range(VALIDATORS)])

    # One of four off the network: the other three (3/4 > 2/3 of the power) finalise on.
    devnet.disconnect(3)
    h = devnet.height()
    wait_for("three validators finalising", lambda: devnet.height() >= h + 3, 90)

    # Two of four off: no side has more than 2/3; the chain stops, on one fork.
    devnet.disconnect(2)

    def halted() -> int | None:
        before = devnet.heads()
        time.sleep(12)
        after = devnet.heads()
        return max(after) if after == before else None

    halt = wait_for("chain halted with two of four disconnected", halted, 120, 0)
    log(f"halted at height {halt}")
    halted_chains = [devnet.hashes(i) for i in range(VALIDATORS)]
    same_chain(halted_chains)

    # Both back: all four converge on one chain and finalise again.
    devnet.reconnect(2)
    devnet.reconnect(3)
    wait_for("all four past the halt", lambda: min(devnet.heads()) >= halt + 3, 180, 2)
    chains = [devnet.hashes(i) for i in range(VALIDATORS)]
    same_chain(chains)
    for old, new in zip(halted_chains, chains, strict=True):
        assert new[:len(old)] == old, "a block finalised before the partition was replaced"
