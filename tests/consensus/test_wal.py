"""The signing guard: what it allows, what it refuses, and that it survives a crash."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from consensus.effects import Step
from consensus.errors import DoubleSignRefused, SigningStateCorrupt, SigningStateLocked
from consensus.types import PRECOMMIT, PREVOTE
from consensus.wal import Signer, SigningGuard
from tests.consensus.helpers import ADDRESSES, CHAIN_ID, KEYS

A = b"\xaa" * 32
B = b"\xbb" * 32
NIL = b""

P, PV, PC = Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT

# (signed before: list of (height, round, step, hash)), attempt, allowed?
SEQUENCES = [
    ("first signature", [], (1, 0, PV, A), True),
    ("next step", [(1, 0, PV, A)], (1, 0, PC, A), True),
    ("next round", [(1, 0, PC, NIL)], (1, 1, P, B), True),
    ("next height", [(1, 3, PC, A)], (2, 0, PV, B), True),
    ("identical again", [(5, 2, PV, A)], (5, 2, PV, A), True),
    ("same step, other block", [(5, 2, PV, A)], (5, 2, PV, B), False),
    ("same step, nil after block", [(5, 2, PC, A)], (5, 2, PC, NIL), False),
    ("earlier step", [(5, 2, PC, A)], (5, 2, PV, A), False),
    ("earlier round", [(5, 2, PV, A)], (5, 1, PC, A), False),
    ("earlier height", [(5, 0, P, A)], (4, 9, PC, A), False),
    ("proposal after own prevote", [(5, 0, PV, A)], (5, 0, P, A), False),
]


def _sign(signer: Signer, height: int, round_: int, step: int, block_hash: bytes) -> bytes:
    if step == P:
        return bytes(signer.sign_proposal(height, round_, -1, block_hash).signature)
    vote_type = PREVOTE if step == PV else PRECOMMIT
    return bytes(signer.sign_vote(vote_type, height, round_, block_hash).signature)


@pytest.mark.parametrize("name,before,attempt,allowed", SEQUENCES, ids=[s[0] for s in SEQUENCES])
@pytest.mark.parametrize("persisted", [False, True], ids=["memory", "file"])
def test_guard_rules(name, before, attempt, allowed, persisted, tmp_path) -> None:
    guard = SigningGuard(tmp_path / "signing.json") if persisted else SigningGuard()
    signer = Signer(KEYS[0], CHAIN_ID, guard)
    for step in before:
        _sign(signer, *step)
    if persisted:  # the rules hold across a restart
        guard.close()
        signer = Signer(KEYS[0], CHAIN_ID, SigningGuard(tmp_path / "signing.json"))
    if allowed:
        _sign(signer, *attempt)
    else:
        with pytest.raises(DoubleSignRefused) as info:
            _sign(signer, *attempt)
        assert info.value.code == "double_sign_refused"
    signer.guard.close()


def test_identical_message_gets_the_recorded_signature(tmp_path) -> None:
    path = tmp_path / "signing.json"
    with SigningGuard(path) as guard:
        first = Signer(KEYS[0], CHAIN_ID, guard).sign_vote(PREVOTE, 3, 1, A)
    with SigningGuard(path) as guard:
        again = Signer(KEYS[0], CHAIN_ID, guard).sign_vote(PREVOTE, 3, 1, A)
    assert again == first and again.signer(CHAIN_ID) == ADDRESSES[0]


def test_proposal_with_other_proof_of_lock_round_conflicts() -> None:
    signer = Signer.in_memory(KEYS[0], CHAIN_ID)
    signer.sign_proposal(4, 2, -1, A)
    with pytest.raises(DoubleSignRefused):
        signer.sign_proposal(4, 2, 1, A)


def test_file_is_private_json_written_atomically(tmp_path) -> None:
    path = tmp_path / "signing.json"
    with SigningGuard(path) as guard:
        Signer(KEYS[0], CHAIN_ID, guard).sign_vote(PRECOMMIT, 7, 2, A)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["format"] == "motus-signing-state/1"
    assert (doc["height"], doc["round"], doc["step"], doc["block_hash"]) == (7, 2, 2, A.hex())
    assert not (tmp_path / "signing.json.tmp").exists()


def test_a_crash_mid_write_leaves_the_old_record(tmp_path) -> None:
    path = tmp_path / "signing.json"
    with SigningGuard(path) as guard:
        Signer(KEYS[0], CHAIN_ID, guard).sign_vote(PREVOTE, 7, 0, A)
    # a crash between writing the temporary file and renaming it
    (tmp_path / "signing.json.tmp").write_text('{"format": "motus-signing-st')
    with SigningGuard(path) as guard:
        assert guard.last is not None and guard.last.position == (7, 0, PV)
        with pytest.raises(DoubleSignRefused):
            Signer(KEYS[0], CHAIN_ID, guard).sign_vote(PREVOTE, 7, 0, B)
        Signer(KEYS[0], CHAIN_ID, guard).sign_vote(PRECOMMIT, 7, 0, A)  # and it still works


CRASHING_CHILD = """
import os, sys
from consensus.types import PREVOTE
from consensus.wal import Signer, SigningGuard
key = bytes.fromhex(sys.argv[2])
signer = Signer(key, 7077, SigningGuard(sys.argv[1]))
vote = signer.sign_vote(PREVOTE, 42, 3, b"\\xaa" * 32)
sys.stdout.write(vote.signature.hex())
sys.stdout.flush()
os._exit(0)  # no close, no cleanup: as if the process died right after sending the vote
"""


def test_crash_restart_with_a_real_process(tmp_path) -> None:
    path = tmp_path / "signing.json"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", CRASHING_CHILD, str(path), KEYS[0].hex()],
        check=True, capture_output=True, text=True, cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    signature = bytes.fromhex(out.stdout)
    with SigningGuard(path) as guard:  # the dead process's lock went with it
        signer = Signer(KEYS[0], CHAIN_ID, guard)
        with pytest.raises(DoubleSignRefused):
            signer.sign_vote(PREVOTE, 42, 3, B)
        with pytest.raises(DoubleSignRefused):
            signer.sign_vote(PRECOMMIT, 42, 2, A)
        assert signer.sign_vote(PREVOTE, 42, 3, A).signature == signature


@pytest.mark.parametrize("content", [
    b"", b"not json", b"[]", b'{"format": "other"}',
    b'{"format": "motus-signing-state/1", "height": -1, "round": 0, "step": 1,'
    b' "block_hash": "", "digest": "", "signature": ""}',
    b"\xff\xfe", b"{" * 5000,
])
def test_unreadable_state_refuses_to_start(tmp_path, content) -> None:
    path = tmp_path / "signing.json"
    path.write_bytes(content)
    with pytest.raises(SigningStateCorrupt) as info:
        SigningGuard(path)
    assert info.value.code == "signing_state_corrupt"


def test_two_guards_on_one_file_are_refused(tmp_path) -> None:
    path = tmp_path / "signing.json"
    with SigningGuard(path):
        with pytest.raises(SigningStateLocked):
            SigningGuard(path)
    SigningGuard(path).close()  # free again once closed


def test_closed_guard_does_not_sign(tmp_path) -> None:
    guard = SigningGuard(tmp_path / "signing.json")
    guard.close()
    with pytest.raises(SigningStateLocked):
        Signer(KEYS[0], CHAIN_ID, guard).sign_vote(PREVOTE, 1, 0, A)
