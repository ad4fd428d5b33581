"""The evidence topic's verdict (``NetworkService._check_evidence``), against a real
Application on a fresh LevelDB chain: evidence invalid in every state is REJECTed (the
forwarder is penalised), evidence that is only known or not checkable here is IGNOREd,
and new valid evidence is ACCEPTed (pooled and relayed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from consensus.errors import InvalidEvidence
from consensus.types import PRECOMMIT, PREVOTE, Commit, DuplicateVoteEvidence, Vote
from genesis.devnet import dev_accounts, new_genesis
from node.app import Application
from node.db import Database
from node.mempool import Mempool
from node.network import NetworkService
from node.store import ChainStore
from p2p.host import Verdict
from tests.node.chain_app import genesis_app

CHAIN_ID = 7077
(OFFENDER, OFFENDER_KEY), (OUTSIDER, OUTSIDER_KEY) = dev_accounts()[:2]
UNKNOWN_HEIGHT = 50  # no validator set stored for it
HASH_A, HASH_B = b"\xaa" * 32, b"\xbb" * 32


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    """A chain at genesis whose only validator is dev account 0 (set known for height 1)."""
    with genesis_app(tmp_path, OFFENDER, CHAIN_ID) as app:
        assert app.store.validators_for(1) is not None
        assert app.store.validators_for(UNKNOWN_HEIGHT) is None
        yield app


def vote(block_hash: bytes, *, height: int = 1, round_: int = 0, vote_type: int = PREVOTE,
         key: bytes = OFFENDER_KEY, validator: bytes = OFFENDER) -> Vote:
    return Vote.create(CHAIN_ID, key, vote_type, height, round_, block_hash, validator)


def double_sign(height: int = 1, key: bytes = OFFENDER_KEY,
                validator: bytes = OFFENDER) -> DuplicateVoteEvidence:
    return DuplicateVoteEvidence.of(
        vote(HASH_A, height=height, key=key, validator=validator),
        vote(HASH_B, height=height, key=key, validator=validator))


def check(app: Application, data: bytes) -> Verdict:
    # The topic check only needs the node's application.
    return NetworkService._check_evidence(SimpleNamespace(app=app), "forwarder", data)  # type: ignore[arg-type]


def test_new_valid_evidence_is_accepted_then_ignored_as_known(app: Application) -> None:
    ev = double_sign()
    assert check(app, ev.encode()) is Verdict.ACCEPT
    assert ev.hash() in app.pending_evidence
    assert check(app, ev.encode()) is Verdict.IGNORE


def test_undecodable_evidence_is_malformed(app: Application) -> None:
    """No honest node relays bytes it could not decode: the forwarder is banned at once."""
    assert check(app, b"\xc1not rlp") is Verdict.MALFORMED
    assert not app.pending_evidence


INVALID_IN_EVERY_STATE: dict[str, Callable[[], bytes]] = {
    "same block twice": lambda: DuplicateVoteEvidence(
        vote(HASH_A), vote(HASH_A, round_=0)).encode(),
    "different rounds": lambda: DuplicateVoteEvidence(
        vote(HASH_A), vote(HASH_B, round_=1)).encode(),
    "different types": lambda: DuplicateVoteEvidence(
        vote(HASH_A), vote(HASH_B, vote_type=PRECOMMIT)).encode(),
    "signed by another key": lambda: double_sign(key=OUTSIDER_KEY).encode(),
    "bad signature, set unknown": lambda: double_sign(
        height=UNKNOWN_HEIGHT, key=OUTSIDER_KEY).encode(),
    "offender not in the known set": lambda: double_sign(
        key=OUTSIDER_KEY, validator=OUTSIDER).encode(),
}


@pytest.mark.parametrize("case", sorted(INVALID_IN_EVERY_STATE))
def test_evidence_invalid_in_every_state_is_rejected(app: Application, case: str) -> None:
    assert check(app, INVALID_IN_EVERY_STATE[case]()) is Verdict.REJECT
    assert not app.pending_evidence


def test_evidence_not_checkable_here_is_ignored(app: Application) -> None:
    """Well-formed, properly signed, but we lack the validator set of its height: another
    node may well hold it, so the forwarder is not at fault."""
    for validator, key in ((OFFENDER, OFFENDER_KEY), (OUTSIDER, OUTSIDER_KEY)):
        ev = double_sign(height=UNKNOWN_HEIGHT, key=key, validator=validator)
        assert check(app, ev.encode()) is Verdict.IGNORE
    assert not app.pending_evidence


def test_add_evidence_names_invalid_evidence(app: Application) -> None:
    with pytest.raises(InvalidEvidence, match="not a validator"):
        app.add_evidence(double_sign(key=OUTSIDER_KEY, validator=OUTSIDER))
    assert app.add_evidence(double_sign(height=UNKNOWN_HEIGHT)) is False
    assert app.add_evidence(double_sign()) is True
    assert app.add_evidence(double_sign()) is False


def test_evidence_is_recorded_in_the_blocks_own_batch(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed-evidence record lands in the same write batch as the block: a crash
    can never leave a head that punished a validator without the record that stops the
    node from accepting, gossiping or proposing that evidence again."""
    (honest, honest_key) = dev_accounts()[2]
    database = Database(tmp_path / "data")
    try:
        store = ChainStore(database)
        store.init_genesis(new_genesis(CHAIN_ID, [(OFFENDER, 10), (honest, 30)],
                                       genesis_time_ms=int(time.time() * 1000) - 5_000))
        app = Application(store, Mempool(CHAIN_ID))

        def commit_next() -> None:
            height = app.head.height + 1
            value = app.propose(height, honest)
            block_hash = app.block_hash(value)
            precommit = Vote.create(CHAIN_ID, honest_key, PRECOMMIT, height, 0, block_hash, honest)
            app.commit(height, value, Commit.from_votes(height, 0, block_hash, [precommit]))

        commit_next()
        ev = double_sign(height=1)
        assert app.add_evidence(ev)
        batches: list[list[bytes]] = []  # the keys each write batch put
        real_batch = database.batch

        class RecordingBatch:
            def __init__(self) -> None:
                self.inner = real_batch()
                self.keys: list[bytes] = []
                batches.append(self.keys)

            def __enter__(self) -> RecordingBatch:
                self.inner.__enter__()
                return self

            def __exit__(self, *exc: object) -> None:
                self.inner.__exit__(*exc)

            def put(self, key: bytes, value: bytes) -> None:
                self.keys.append(key)
                self.inner.put(key, value)

        monkeypatch.setattr(database, "batch", RecordingBatch)
        commit_next()
        monkeypatch.undo()
        assert app.head.height == 2
        assert len(batches) == 1, "the block must be one write batch"
        assert b"H" in batches[0] and b"E" + ev.hash() in batches[0], \
            "the evidence record must be written with the new head, in the same batch"
        assert store.evidence_height(ev.hash()) == 2
        # A restarted node (same database, fresh application) knows the evidence is spent.
        again = Application(ChainStore(database), Mempool(CHAIN_ID))
        assert again.add_evidence(ev) is False
        assert ev.hash() not in again.pending_evidence
    finally:
        database.close()
