"""web3.py (the dev extra's version) driving a real node: each case of
tests/clients/web3py_client.py is one test (tests/clients/runner.py). Epochs are 10 blocks
on this node so that block events (EpochSettled) occur within the run."""

from __future__ import annotations

import sys

import pytest

from tests.clients.runner import CLIENTS, client_tests

SCRIPT = CLIENTS / "web3py_client.py"
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

run, test_case, test_no_undeclared_case = client_tests(
    SCRIPT, [sys.executable, str(SCRIPT)], genesis_params={"epoch_length_blocks": 10})
