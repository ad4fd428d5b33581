"""The validator's lock survives a restart: the signing guard records it with the
precommit that makes it (Algorithm 1, line 36), and a machine restarted at the same
height restores it, so it cannot prevote against its own lock in a later round (the
"amnesia" gap docs/consensus.md used to list)."""

from __future__ import annotations

import json

import pytest

from consensus.effects import Step
from consensus.errors import SigningStateCorrupt
from consensus.types import NIL, PRECOMMIT, PREVOTE
from consensus.wal import Signer, SigningGuard
from tests.consensus.helpers import CHAIN_ID, KEYS, Harness, h, votes_sent

A = b"valid block A"
B = b"valid block B"


def test_guard_records_the_lock_with_the_precommit_and_keeps_it_for_the_height(tmp_path) -> None:
    path = tmp_path / "signing.json"
    with SigningGuard(path) as guard:
        signer = Signer(KEYS[0], CHAIN_ID, guard)
        signer.sign_vote(PREVOTE, 5, 0, h(A))
        assert guard.lock_at(5) is None
        signer.sign_vote(PRECOMMIT, 5, 0, h(A))
        assert guard.lock_at(5) == (0, h(A))
        signer.sign_vote(PREVOTE, 5, 1, NIL)  # a later round keeps the lock
        signer.sign_vote(PRECOMMIT, 5, 1, NIL)
        assert guard.lock_at(5) == (0, h(A))
    doc = json.loads(path.read_text())
    assert (doc["locked_round"], doc["locked_hash"]) == (0, h(A).hex())
    with SigningGuard(path) as guard:  # and it is read back after a restart
        assert guard.lock_at(5) == (0, h(A))
        signer = Signer(KEYS[0], CHAIN_ID, guard)
        signer.sign_vote(PRECOMMIT, 5, 2, h(B))  # relocking moves it
        assert guard.lock_at(5) == (2, h(B))
        signer.sign_vote(PREVOTE, 6, 0, h(B))  # a new height starts unlocked
        assert guard.lock_at(6) is None and guard.lock_at(5) is None
    assert "locked_round" not in json.loads(path.read_text())


def test_files_without_a_lock_still_load_and_half_a_lock_is_corrupt(tmp_path) -> None:
    path = tmp_path / "signing.json"
    with SigningGuard(path) as guard:
        Signer(KEYS[0], CHAIN_ID, guard).sign_vote(PREVOTE, 3, 0, h(A))
    with SigningGuard(path) as guard:
        assert guard.last is not None and guard.lock_at(3) is None
    doc = json.loads(path.read_text())
    doc["locked_round"] = 0  # a round without a hash
    path.write_text(json.dumps(doc))
    with pytest.raises(SigningStateCorrupt):
        SigningGuard(path)


def _restart(path, lock: bool) -> Harness:
    """Lock on A in round 0, crash, restart at the same height, go to round 1."""
    with SigningGuard(path) as guard:
        first = Harness(guard=guard)
        assert votes_sent(first.lock_on(A), PRECOMMIT) == [(PRECOMMIT, 0, h(A))]
    guard = SigningGuard(path if lock else path.with_name("fresh.json"))
    again = Harness(guard=guard)
    again.skip_to(1)
    assert again.machine.round == 1 and again.machine.step == Step.PROPOSE
    return again


def test_restarted_validator_keeps_its_lock_and_refuses_a_fresh_other_value(tmp_path) -> None:
    t = _restart(tmp_path / "signing.json", lock=True)
    assert (t.machine.locked_round, t.machine.locked_hash) == (0, h(A))
    assert t.machine.stats["lock_restored"] == 1
    effects = t.feed(t.proposal(1, B))  # no proof of lock: line 22 needs us unlocked
    assert votes_sent(effects, PREVOTE) == [(PREVOTE, 1, NIL)]
    t.machine.signer.guard.close()  # type: ignore[union-attr]


def test_restarted_validator_accepts_its_locked_value_re_proposed(tmp_path) -> None:
    t = _restart(tmp_path / "signing.json", lock=True)
    t.feed_votes(PREVOTE, 0, h(A), t.others())  # the proof of lock of round 0
    effects = t.feed(t.proposal(1, A, pol_round=0))
    assert votes_sent(effects, PREVOTE) == [(PREVOTE, 1, h(A))]
    t.machine.signer.guard.close()  # type: ignore[union-attr]


def test_without_the_recorded_lock_it_would_prevote_the_other_value(tmp_path) -> None:
    """The amnesia this closes: the same restart with the lock forgotten."""
    t = _restart(tmp_path / "signing.json", lock=False)
    assert t.machine.locked_round == -1
    assert votes_sent(t.feed(t.proposal(1, B)), PREVOTE) == [(PREVOTE, 1, h(B))]
    t.machine.signer.guard.close()  # type: ignore[union-attr]
