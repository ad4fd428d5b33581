"""What can be checked of the release artefacts without a container engine: the wheel
carries every package and the ABI files, and the Docker files agree with the devnet
contract (packages, addresses, ports); tests/docker runs them with an engine."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["node", "cli", "light", "rpcclient", "consensus", "vm", "p2p", "genesis", "codec", "devnet"]


@pytest.mark.timeout(180)
def test_wheel_has_packages_and_abis(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=170)
    wheel = next(tmp_path.glob("motus-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in PACKAGES:
        assert f"{pkg}/__init__.py" in names
    abis = {Path(n).name for n in names if n.startswith("vm/abi/") and n.endswith(".json")}
    assert {"params.json", "validators.json", "identity.json", "telemetry.json", "rewards.json",
            "governance.json"} <= abis
    assert any(n.endswith("entry_points.txt") for n in names)
    # the explorer works offline from the wheel alone (docs/explorer.md)
    assert {f"node/explorer/static/{f}" for f in ("index.html", "app.js", "style.css",
                                                  "favicon.svg")} <= names
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    # PEP 639: an SPDX expression, not the deprecated license table (pip warned about it)
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_dockerfile_copies_every_package():
    text = (ROOT / "devnet" / "Dockerfile").read_text()
    for pkg in PACKAGES:
        assert re.search(rf"^COPY {pkg} /src/{pkg}$", text, re.M), pkg
    assert 'ENTRYPOINT ["motus"]' in text
    assert re.search(r"^USER motus$", text, re.M)  # never root at run time


def test_dockerignore_sends_only_the_sources():
    """Keys (.devnet) and the virtualenv never go to the Docker daemon: the ignore file
    lets through a list, not everything but a list."""
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:] for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", *PACKAGES}


def test_compose_gives_each_validator_an_address_and_a_local_port():
    text = (ROOT / "docker-compose.yml").read_text()
    net = "${MOTUS_NET:-10.77.77}"
    hosts = [f"{net}.{10 + i}" for i in range(4)]
    assert ",".join(hosts) in text  # the init service's --hosts: what bootstrap lists name
    for i in range(4):
        service = text[text.index(f"  validator-{i}:"):]
        service = service[:service.index("\n\n")] if "\n\n" in service else service
        assert f'"--home", "/homes/validator-{i}"' in service
        assert f"ipv4_address: {hosts[i]}" in service
        # published on the host's loopback only (docs/docker.md, "RPC bind address")
        assert f'"127.0.0.1:${{MOTUS_RPC_PORT_{i}:-{8545 + i}}}:8545"' in service
    assert "network_mode: host" not in text
    assert "http://127.0.0.1:8545/health" in text  # the validators' healthcheck
