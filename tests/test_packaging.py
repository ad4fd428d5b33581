"""What can be checked of the release artefacts without a container engine: the wheel
carries every package and the ABI files, and the Docker files agree with the devnet
contract (ports, packages)."""

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
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    # PEP 639: an SPDX expression, not the deprecated license table (pip warned about it)
    assert "License-Expression: Apache-2.0" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_dockerfile_copies_every_package():
    text = (ROOT / "devnet" / "Dockerfile").read_text()
    for pkg in PACKAGES:
        assert re.search(rf"^COPY {pkg} {pkg}$", text, re.M), pkg
    assert 'ENTRYPOINT ["motus"]' in text


def test_compose_matches_the_devnet_ports():
    text = (ROOT / "devnet" / "docker-compose.yml").read_text()
    for i in range(4):
        assert f"validator-{i}:" in text
        assert f'"--rpc-port", "{8545 + i}", "--p2p-port", "{30333 + i}"' in text
    assert "network_mode: host" in text  # nothing published beyond 127.0.0.1
