"""Supply accounting holds exactly: total supply = genesis + minted rewards - burned
deposits - burned fees = the sum of every balance, over random sequences of transfers,
locks, unlocks, proposals, votes, epochs with vehicle activity and vehicle transfers.
No vehicle is paid twice for one epoch, and every epoch mints exactly what it pays."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import VALIDATOR, LocalChain, Module
from tests.vm.test_rewards import Activity, FakeWorld, fake_world
from vm.epoch import get_epoch
from vm.modules import addresses
from vm.modules.governance import get_lock, list_proposals, total_locked
from vm.modules.rewards import get_epoch_result, list_epoch_rewards, processed_epochs
from vm.params import ETHER
from vm.supply import get_supply

VEHICLES = range(1, 6)
PARAM_CHANGES = [("max_speed_cmps", 8_000), ("epoch_issuance", 3 * ETHER + 1), ("decay_bps", 5_000),
                 ("min_attestations", 3), ("epoch_length_blocks", 13), ("gov_quorum_bps", 100)]

account = st.integers(0, 9)
actions = st.one_of(
    st.tuples(st.just("transfer"), account, account, st.integers(0, 100 * ETHER)),
    st.tuples(st.just("lock"), account, st.integers(0, 3_000 * ETHER)),
    st.tuples(st.just("unlock"), account, st.integers(0, 3_000 * ETHER)),
    st.tuples(st.just("withdraw"), account),
    st.tuples(st.just("propose"), account, st.sampled_from(PARAM_CHANGES), st.integers(0, 3)),
    st.tuples(st.just("vote"), st.integers(0, 3), st.integers(1, 3), st.integers(0, 4)),
    st.tuples(st.just("sell"), st.sampled_from(list(VEHICLES)), account, st.booleans()),
    st.tuples(st.just("advance"), st.integers(1, 12)),
)
votes = st.tuples(st.just("vote"), st.integers(0, 2), st.integers(1, 3), st.integers(1, 4))
activity = st.dictionaries(
    st.sampled_from(list(VEHICLES)),
    st.tuples(st.integers(0, 60), st.integers(0, 60), st.booleans(), st.booleans()),
    max_size=5,
)


def holders(chain: LocalChain) -> list[bytes]:
    return [a for a, _ in chain.accounts] + [VALIDATOR] + list(addresses.ALL.values())


def check_supply(chain: LocalChain) -> None:
    s = chain.state()
    supply = get_supply(s)
    assert supply["total"] == supply["genesis"] + supply["minted"] - supply["burned_deposits"] - supply["burned_fees"]
    assert supply["total"] == sum(s.get_balance(a) for a in holders(chain))
    # the governance account holds exactly the locked, unlocking and deposited tokens
    locks = [get_lock(s, a) for a, _ in chain.accounts]
    assert total_locked(s) == sum(lk.locked for lk in locks)
    deposits = sum(p.deposit for p in list_proposals(s, "voting", limit=10**6))
    assert s.get_balance(addresses.GOVERNANCE) == sum(lk.locked + lk.pending_unlock for lk in locks) + deposits


def check_epochs(chain: LocalChain) -> None:
    s = chain.state()
    minted = 0
    carry = 0
    for epoch in range(processed_epochs(s)):
        r = get_epoch_result(s, epoch)
        records = list_epoch_rewards(s, epoch)
        ids = [x.vehicle_id for x in records]
        assert ids == sorted(set(ids)), "a vehicle was scored twice in one epoch"
        assert sum(x.reward for x in records) == r.minted
        assert r.carry_in == carry and r.pool == r.issuance + r.carry_in
        assert r.minted + r.carry_out == r.pool if r.minted else r.carry_out == r.carry_in
        carry = r.carry_out
        minted += r.minted
    assert minted == get_supply(s)["minted"]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(actions, activity, st.none() | votes), min_size=5, max_size=25))
def test_supply_equals_sum_of_balances(steps):
    chain = LocalChain(params={
        "epoch_length_blocks": 10, "gov_voting_period_blocks": 20, "gov_execution_delay_blocks": 3,
        "gov_unlock_delay_blocks": 3, "gov_min_deposit": ETHER, "epoch_issuance": 10 * ETHER + 7,
        "decay_bps": 1_500, "decay_period_epochs": 2, "min_attestations": 12,
    })
    gov = Module(chain, "governance", addresses.GOVERNANCE)
    keys = [k for _, k in chain.accounts]
    addrs = [a for a, _ in chain.accounts]
    world = FakeWorld(vehicles={v: (addrs[v], True) for v in VEHICLES})
    with fake_world(world):
        for i, amount in enumerate((2_000, 1_000, 500)):  # voters, so random votes decide things
            chain.transact(keys[i], gov.address, gov.data("lock"), value=amount * ETHER)
        chain.transact(keys[3], gov.address, gov.data("proposeParam", "epoch_issuance", 3 * ETHER + 1, "p"),
                       value=ETHER)
        for action, acts, vote in steps:
            epoch = get_epoch(chain.state())
            for vid, (accepted, moving, challenged, passed) in acts.items():
                world.activity.setdefault(epoch, {})[vid] = Activity(accepted, moving, 0, challenged, passed)
            if vote is not None:
                _, i, pid, option = vote
                chain.transact(keys[i], gov.address, gov.data("vote", pid, option))
            kind, *args = action
            if kind == "transfer":
                i, j, amount = args
                chain.transact(keys[i], addrs[j], value=amount)
            elif kind == "lock":
                chain.transact(keys[args[0]], gov.address, gov.data("lock"), value=args[1])
            elif kind == "unlock":
                chain.transact(keys[args[0]], gov.address, gov.data("unlock", args[1]))
            elif kind == "withdraw":
                chain.transact(keys[args[0]], gov.address, gov.data("withdraw"))
            elif kind == "propose":
                i, (name, value), deposit = args
                chain.transact(keys[i], gov.address, gov.data("proposeParam", name, value, "p"), value=deposit * ETHER)
            elif kind == "vote":
                i, pid, option = args
                chain.transact(keys[i], gov.address, gov.data("vote", pid, option))
            elif kind == "sell":
                vid, owner, paired = args
                world.vehicles[vid] = (addrs[owner], paired)
            else:
                chain.advance(args[0])
            check_supply(chain)
        chain.advance(40)  # let open proposals and the current epoch finish
        check_supply(chain)
        check_epochs(chain)
