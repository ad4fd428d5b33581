"""viem 2.x (npm, pinned by package-lock.json) driving a real node: each case of
tests/clients/viem.mjs is one test (tests/clients/runner.py)."""

from __future__ import annotations

import pytest

from tests.clients.runner import CLIENTS, client_tests

SCRIPT = CLIENTS / "viem.mjs"
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

run, test_case, test_no_undeclared_case = client_tests(SCRIPT, ["node", str(SCRIPT)])
