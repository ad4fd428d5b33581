"""A decided block committed with its LevelDB write in a worker thread
(``Application.commit_async``, node/store.py ``stage_commit``): the event loop runs
meanwhile, the head stays the parent until the block is written, nothing else commits
then, and the result is the block a plain ``commit`` stores."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from eth_account import Account
from eth_utils import to_checksum_address

from genesis.devnet import dev_accounts
from node.app import Application
from node.block import EMPTY_COMMIT
from node.store import CommitInProgress, StagedCommit, StoreError
from tests.node.chain_app import genesis_app

pytestmark = pytest.mark.timeout(60)

CHAIN_ID = 7077
VALIDATOR = b"\x11" * 20


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    with genesis_app(tmp_path, VALIDATOR, CHAIN_ID) as app:
        yield app


def transfer(app: Application, nonce: int) -> None:
    _, key = dev_accounts()[0]
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "value": 1, "gas": 21_000,
          "to": to_checksum_address(b"\x22" * 20), "maxFeePerGas": 100 * 10**9,
          "maxPriorityFeePerGas": 10**9}
    app.submit_transaction(bytes(Account.sign_transaction(tx, key).raw_transaction),
                           gossip=False)


async def test_the_loop_runs_while_the_block_is_written_and_nothing_else_commits(
        app: Application, monkeypatch: pytest.MonkeyPatch) -> None:
    transfer(app, 0)
    parent = app.head
    value = app.propose(1, VALIDATOR)
    held, release = threading.Event(), threading.Event()
    write = StagedCommit.write

    def slow_write(self: StagedCommit) -> None:
        held.set()
        release.wait(10)
        write(self)

    monkeypatch.setattr(StagedCommit, "write", slow_write)
    ticks = 0
    committed = []

    async def commit() -> None:
        committed.append(await app.commit_async(1, value, EMPTY_COMMIT))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit)
        while not held.is_set():
            await trio.sleep(0.001)
        for _ in range(5):  # the loop goes on while the thread writes
            await trio.sleep(0.001)
            ticks += 1
        assert app.committing == 1 and app.head == parent  # the head is the parent still
        assert app.store.head_height == 0
        # gossip checks judge heights against the decided block, and height 2's set is
        # known from it: a vote or proposal for 2 that comes now is not "too far ahead"
        assert app.store.decided_height == 1
        assert app.store.validators_for(2) == app.store.staged.next_validators  # type: ignore[union-attr]
        with pytest.raises(CommitInProgress, match="being committed") as refused:
            app.commit(1, value, EMPTY_COMMIT)
        assert refused.value.code == "commit_in_progress"
        release.set()
    assert ticks == 5 and app.committing is None and app.store.staged is None
    assert app.store.validators_for(2) is not None  # (stored now)
    (block,) = committed
    assert app.head == block.header and app.store.block_by_height(1).hash == block.hash
    assert len(app.mempool) == 0  # the commit's steps after the write ran
    transfer(app, 1)  # and the next block builds on it, committed the plain way
    app.commit(2, app.propose(2, VALIDATOR), EMPTY_COMMIT)
    assert app.store.head_height == 2


def test_a_staged_commit_is_the_head_only_once_written(app: Application) -> None:
    transfer(app, 0)
    value = app.propose(1, VALIDATOR)
    executed = app.check_block(1, value)
    store = app.store
    staged = store.stage_commit(executed.block, executed.result, EMPTY_COMMIT,
                                executed.overlay, store.validators_for(1).next_for_height(), [],
                                [])
    with pytest.raises(StoreError):
        store.finish_commit(staged)
    with pytest.raises(CommitInProgress):  # one block at a time, at the store too
        store.stage_commit(executed.block, executed.result, EMPTY_COMMIT, executed.overlay,
                           store.validators_for(1).next_for_height(), [], [])
    assert store.head_height == 0 and store.block_by_height(1) is None
    staged.write()
    store.finish_commit(staged)
    assert store.head_height == 1 and store.block_by_height(1).hash == executed.block.hash


def test_a_proposal_takes_a_given_timestamp_never_after_the_clock(app: Application) -> None:
    parent = app.head
    now_ms = int(app.clock() * 1000)
    block = app.block_of(app.propose(1, VALIDATOR, timestamp_ms=now_ms - 100))
    assert block.header.timestamp_ms == now_ms - 100
    block = app.block_of(app.propose(1, VALIDATOR, timestamp_ms=now_ms + 60_000))
    assert now_ms <= block.header.timestamp_ms <= int(app.clock() * 1000)  # the clock's
    block = app.block_of(app.propose(1, VALIDATOR, timestamp_ms=parent.timestamp_ms - 5))
    assert block.header.timestamp_ms == parent.timestamp_ms + 1  # after its parent


async def test_a_write_that_fails_leaves_the_parent_the_head_and_the_block_can_be_committed(
        app: Application) -> None:
    """The pruner's listener (told of the trie keys before the batch is written) raises:
    nothing is written, nothing stays staged, the head is the parent in memory and on
    disk, and the same decided block commits when asked again."""
    transfer(app, 0)
    parent = app.head
    value = app.propose(1, VALIDATOR)

    def failing(puts: dict[bytes, bytes]) -> None:
        raise OSError("disk gone")

    app.store.trie_listener = failing
    with pytest.raises(OSError, match="disk gone"):
        await app.commit_async(1, value, EMPTY_COMMIT)
    assert app.store.staged is None and app.committing is None
    assert app.head == parent and app.store.head_height == 0
    assert app.store.block_by_height(1) is None and app.store.validators_for(2) is None
    app.store.trie_listener = None
    block = await app.commit_async(1, value, EMPTY_COMMIT)
    assert app.head == block.header and app.store.head_height == 1
    assert len(app.mempool) == 0
