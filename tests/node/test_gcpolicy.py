"""Full garbage collections moved to the wait for the next height (node/gcpolicy.py)."""

from __future__ import annotations

import gc

from node.gcpolicy import BACKSTOP_THRESHOLD2, FULL_EVERY_S, QUIET_MIN_S, FullCollections


def test_install_pushes_the_automatic_full_collections_back_and_uninstall_restores() -> None:
    before = gc.get_threshold()
    policy = FullCollections()
    policy.install()
    try:
        young, middle, full = gc.get_threshold()
        assert (young, middle) == before[:2] and full == BACKSTOP_THRESHOLD2
        assert gc.isenabled()  # the young generations are collected as before
        assert gc.get_freeze_count() > 0  # what lives at start is out of later scans
    finally:
        policy.uninstall()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_full_collection_is_due_in_a_quiet_moment_at_most_every_period() -> None:
    now = [1_000.0]
    policy = FullCollections(clock=lambda: now[0])
    assert not policy.due(1.0)  # not before a whole period since start
    now[0] += FULL_EVERY_S
    assert not policy.due(QUIET_MIN_S / 2)  # too little time before the next height
    assert policy.due(QUIET_MIN_S)
    policy.collect()
    assert policy.collections == 1 and not policy.due(1.0)
    now[0] += FULL_EVERY_S
    assert policy.due(1.0)
