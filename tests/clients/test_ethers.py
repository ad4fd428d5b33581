"""ethers v6 (npm, pinned by package-lock.json) against a real node: tests/clients/ethers.mjs."""

from __future__ import annotations

import pytest

from tests.clients.runner import CLIENTS, ClientRun, case_names, require_npm_packages, run_client

SCRIPT = CLIENTS / "ethers.mjs"
pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> ClientRun:
    require_npm_packages()
    return run_client(["node", str(SCRIPT)], tmp_path_factory.mktemp("ethers"))


@pytest.mark.parametrize("case", case_names(SCRIPT))
def test_case(run: ClientRun, case: str) -> None:
    run.check(case)


def test_no_undeclared_case(run: ClientRun) -> None:
    """Every line the script printed is a declared case (a typo cannot hide a result)."""
    assert set(run.results) <= set(case_names(SCRIPT))
