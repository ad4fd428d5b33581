"""The pool's rules at their edges, in process with real signed transactions
(docs/rpc.md, "Transaction pool"); the model test (test_mempool_model.py) drives the
same rules at random."""

from __future__ import annotations

import pytest
from eth_account import Account

from genesis.devnet import dev_accounts
from node.config import Config, ConfigError
from node.mempool import EVICTED, EXPIRED, REPLACED, Mempool, TxRejected
from tests.harness import CHAIN_ID, LocalChain

GWEI = 10**9


def transfer(sender: int, nonce: int, tip: int, fee: int | None = None) -> bytes:
    key = dev_accounts()[sender][1]
    tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": "0x" + "11" * 20, "value": 0,
          "gas": 21_000, "maxFeePerGas": fee if fee is not None else 10 * tip,
          "maxPriorityFeePerGas": tip}
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


@pytest.fixture(scope="module")
def state():
    return LocalChain().state()


def refusal(pool: Mempool, raw: bytes, state) -> TxRejected:
    with pytest.raises(TxRejected) as exc:
        pool.add(raw, state)
    return exc.value


def test_replacement_threshold_is_geths_integer_rule(state) -> None:
    """Both caps strictly higher and at least old * 110 // 100: 15 -> 16 passes (geth's
    threshold is 16), 10 -> 10 never does, a higher fee cap with the same tip does not."""
    pool = Mempool(CHAIN_ID)
    pool.add(transfer(0, 0, tip=15 * GWEI, fee=150 * GWEI), state)
    assert refusal(pool, transfer(0, 0, tip=15 * GWEI, fee=200 * GWEI), state).message == \
        "replacement transaction underpriced"
    assert refusal(pool, transfer(0, 0, tip=16 * GWEI - 1, fee=200 * GWEI), state).code == \
        "replacement_underpriced"
    pool.add(transfer(0, 0, tip=int(16.5 * GWEI), fee=165 * GWEI), state)
    assert len(pool) == 1 and pool.removed[REPLACED] == 1

    small = Mempool(CHAIN_ID)
    small.add(transfer(1, 0, tip=15, fee=10 * GWEI), state)
    small.add(transfer(1, 0, tip=16, fee=11 * GWEI), state)  # 15 * 110 // 100 = 16
    assert refusal(small, transfer(1, 0, tip=17, fee=11 * GWEI), state).code == \
        "replacement_underpriced"  # the fee cap did not move


def test_a_full_pool_names_why_it_refuses(state) -> None:
    pool = Mempool(CHAIN_ID, max_total=2)
    pool.add(transfer(0, 0, tip=2 * GWEI), state)
    pool.add(transfer(0, 1, tip=2 * GWEI), state)
    # only the newcomer's own sender holds transactions: nothing may give way
    assert refusal(pool, transfer(0, 2, tip=5 * GWEI), state).message == "txpool is full"
    # another sender's pending transaction gives way only to a better paying one
    refused = refusal(pool, transfer(1, 0, tip=2 * GWEI), state)
    assert (refused.code, refused.message) == ("underpriced", "transaction underpriced")
    # a queued newcomer never pushes out a pending transaction
    assert refusal(pool, transfer(1, 5, tip=9 * GWEI), state).code == "pool_full"
    pool.add(transfer(1, 0, tip=3 * GWEI), state)  # takes sender 0's last place
    assert pool.removed[EVICTED] == 1 and pool.pending_nonce(
        bytes(dev_accounts()[0][0]), 0) == 1
    assert pool.refused == {"pool_full": 2, "underpriced": 1}


def test_a_queued_transaction_gives_way_to_an_executable_one(state) -> None:
    pool = Mempool(CHAIN_ID, max_total=2)
    pool.add(transfer(0, 3, tip=9 * GWEI), state)  # queued behind nonces 0-2, pays most
    pool.add(transfer(1, 0, tip=GWEI), state)
    pool.add(transfer(2, 0, tip=GWEI), state)  # executable: takes the queued one's place
    assert pool.removed[EVICTED] == 1 and pool.stats() == (2, 0)


def test_gap_expiry_counts_only_the_time_spent_queued(state) -> None:
    now = [0.0]
    pool = Mempool(CHAIN_ID, queued_lifetime_s=180, clock=lambda: now[0])
    pool.add(transfer(0, 2, tip=GWEI), state)
    now[0] = 100.0
    pool.add(transfer(0, 1, tip=GWEI), state)
    assert pool.stats() == (0, 2)
    now[0] = 150.0
    pool.add(transfer(0, 0, tip=GWEI), state)  # fills the gap: all pending, none expires
    pool.add(transfer(1, 1, tip=GWEI), state)  # queued since 150
    assert pool.stats() == (3, 1)
    now[0] = 329.9
    assert pool.expire() == 0
    now[0] = 330.0
    assert pool.expire() == 1 and pool.stats() == (3, 0) and pool.removed[EXPIRED] == 1


def test_config_refuses_a_pool_that_refuses_everything() -> None:
    for key in ("max_per_sender", "max_total", "queued_lifetime_seconds"):
        with pytest.raises(ConfigError, match=f"mempool.{key} must be at least 1"):
            Config.from_dict({"mempool": {key: 0}})
    assert Config().mempool.queued_lifetime_seconds == 180


def test_a_sender_refused_at_its_limit_recovers_when_the_pool_drains_or_the_gap_expires() -> None:
    """The issue-15 stall: a sender that ran into ``max_per_sender`` (nonce_too_high) and
    lost nonces to it must be able to send again, once its pooled transactions are mined
    and, for those stuck behind a lost nonce, once they expire (docs/rpc.md)."""
    chain = LocalChain()
    now = [0.0]
    pool = Mempool(CHAIN_ID, max_per_sender=4, queued_lifetime_s=180, clock=lambda: now[0])

    def mine(n: int) -> None:
        txs = [e for e in pool.select(chain.state(), 0, 30_000_000) if e.sender == chain.accounts[0][0]][:n]
        chain.block([e.raw for e in txs])
        pool.on_block(chain.state(), [e.hash for e in txs])

    for nonce in range(4):
        pool.add(transfer(0, nonce, tip=GWEI), chain.state())
    assert refusal(pool, transfer(0, 4, tip=GWEI), chain.state()).code == "nonce_too_high"  # the limit
    mine(4)  # the pool drains: the limit moves with the account's nonce
    pool.add(transfer(0, 4, tip=GWEI), chain.state())
    # nonce 5 is lost (say refused under load); 6 and 7 wait behind the gap
    pool.add(transfer(0, 6, tip=GWEI), chain.state())
    pool.add(transfer(0, 7, tip=GWEI), chain.state())
    mine(1)  # 4 is mined; the account's next nonce is 5
    assert pool.content_of(chain.accounts[0][0])[1] and pool.stats() == (0, 2)
    assert refusal(pool, transfer(0, 9, tip=GWEI), chain.state()).code == "nonce_too_high"
    now[0] = 181.0  # the queued ones expire
    mine(0)
    assert len(pool) == 0 and pool.removed[EXPIRED] == 2
    for nonce in range(5, 9):  # the sender starts again from its next nonce, up to the limit
        pool.add(transfer(0, nonce, tip=GWEI), chain.state())
    assert pool.stats() == (4, 0)


def test_a_source_of_refused_transactions_is_throttled_and_others_are_not(state) -> None:
    """Fair admission (node/fairness.py): refusals that are the transaction's fault charge
    its source; out of credit, its transactions are refused unchecked ("throttled")
    while another source's are checked as ever."""
    now = [0.0]
    pool = Mempool(CHAIN_ID, clock=lambda: now[0])
    burst = int(pool.credit.burst)
    for i in range(burst):
        assert refusal_from(pool, transfer(0, 1_000 + i, tip=GWEI), state, "rpc:attacker") == "nonce_too_high"
    assert refusal_from(pool, transfer(0, 5_000, tip=GWEI), state, "rpc:attacker") == "throttled"
    assert pool.refused["throttled"] == 1
    pool.add(transfer(1, 0, tip=GWEI), state, "rpc:honest")  # another source: checked, pooled
    assert refusal_from(pool, transfer(1, 0, tip=GWEI), state, "rpc:honest") == "already_known"
    now[0] += 1.0  # the credit refills at its rate
    assert refusal_from(pool, transfer(0, 5_001, tip=GWEI), state, "rpc:attacker") == "nonce_too_high"


def refusal_from(pool: Mempool, raw: bytes, state, source: str) -> str:
    with pytest.raises(TxRejected) as exc:
        pool.add(raw, state, source)
    return exc.value.code


def test_gas_that_could_outcost_a_whole_block_is_refused_not_left_pending(state) -> None:
    """Block building never tries a transaction whose cost at full gas exceeds the block
    cost cap (docs/consensus.md, "Proposal budget"), so the pool refuses it up front with
    geth's code for a transaction over the block's limit: 3.5 M gas of EVM code fits the
    default cap, 5 M does not (both are under the header's 30 M gas limit)."""
    key = dev_accounts()[2][1]

    def call(nonce: int, gas: int) -> bytes:
        tx = {"type": 2, "chainId": CHAIN_ID, "nonce": nonce, "to": "0x" + "22" * 20, "value": 0,
              "gas": gas, "maxFeePerGas": 20 * GWEI, "maxPriorityFeePerGas": GWEI}
        return bytes(Account.sign_transaction(tx, key).raw_transaction)

    pool = Mempool(CHAIN_ID)
    refused = refusal(pool, call(0, 5_000_000), state)
    assert refused.code == "gas_limit_exceeded" and "max_block_cost" in refused.message
    pool.add(call(0, 3_500_000), state)
    assert len(pool) == 1
