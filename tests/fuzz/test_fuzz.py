"""Every decoder of untrusted bytes, fuzzed briefly in ``make test`` (hypothesis: random
bytes and mutations of valid encodings); ``make fuzz`` runs the long campaign."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.engine import check_one, mutate
from tests.fuzz.targets import TARGETS
from tests.security.bombs import rlp_bomb

BOMB_LEVELS = 400


def _bomb_within(max_bytes: int) -> bytes:
    """400 nested lists around as large a string as fits ``max_bytes`` (64 KiB at most)."""
    return rlp_bomb(BOMB_LEVELS, max(0, min(64 * 1024, max_bytes - 4 * BOMB_LEVELS - 16)))

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_contract(name: str) -> None:
    target = TARGETS[name]
    seeds = target.seeds()
    for seed in seeds:  # the seeds decode (the contract holds on valid input too)
        check_one(target, seed, measure_memory=True)
    # A nesting bomb as large as the target takes: random inputs are too small for the
    # memory bound to tell a bounded decoder from pyrlp (~levels x size bytes).
    check_one(target, _bomb_within(target.max_bytes), measure_memory=True)

    @given(st.one_of(
        st.binary(max_size=512),
        st.tuples(st.sampled_from(seeds), st.integers(0, 2**32)).map(
            lambda pair: mutate(pair[0], random.Random(pair[1]), seeds)),
    ))
    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    def run(data: bytes) -> None:
        check_one(target, data, measure_memory=True)

    run()
