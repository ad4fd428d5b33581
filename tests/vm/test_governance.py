"""Governance through LocalChain with real signed transactions (docs/governance.md)."""

import pytest

from tests.harness import LocalChain, Module, Reverted
from vm.modules import addresses
from vm.modules.governance import (
    OPTION_ABSTAIN,
    OPTION_NO,
    OPTION_VETO,
    OPTION_YES,
    compute_tally_status,
    get_proposal,
    list_proposals,
    locked_amount,
    voting_power,
)
from vm.modules.validators import active_validators
from vm.params import ETHER, defaults
from vm.supply import get_supply

GOV = addresses.GOVERNANCE
EPOCH = 10
PARAMS = {
    "epoch_length_blocks": EPOCH,
    "gov_voting_period_blocks": 10,
    "gov_execution_delay_blocks": 0,
    "gov_unlock_delay_blocks": 5,
    "gov_min_deposit": 10 * ETHER,
}


def new_chain(**overrides) -> tuple[LocalChain, Module]:
    chain = LocalChain(params={**PARAMS, **overrides})
    return chain, Module(chain, "governance", GOV)


def addr(chain, i):
    return chain.accounts[i][0]


def key(chain, i):
    return chain.accounts[i][1]


def hexa(b: bytes) -> str:
    return "0x" + b.hex()


def gov_snapshot(chain, sender: bytes):
    s = chain.state()
    return (s._account_db._get_storage_root(GOV), s.get_balance(GOV), get_supply(s))


def assert_refused(chain, gov, i, fn, *args, reason, value=0):
    """The call reverts with ``reason``; governance storage, its balance and the supply
    are unchanged, and the sender lost only gas (the value came back)."""
    before = gov_snapshot(chain, addr(chain, i))
    bal = chain.state().get_balance(addr(chain, i))
    with pytest.raises(Reverted) as exc:
        gov.send(key(chain, i), fn, *args, value=value)
    assert reason in str(exc.value), str(exc.value)
    after = gov_snapshot(chain, addr(chain, i))
    assert after[:2] == before[:2]
    assert after[2]["minted"] == before[2]["minted"] and after[2]["burned_deposits"] == before[2]["burned_deposits"]
    spent = bal - chain.state().get_balance(addr(chain, i))
    assert 0 < spent < 10**17  # gas only


def lock_all(chain, gov, amounts: dict[int, int]):
    for i, amount in amounts.items():
        gov.send(key(chain, i), "lock", value=amount)


def propose_param(chain, gov, i, name, value, deposit=10 * ETHER):
    gov.send(key(chain, i), "proposeParam", name, value, f"set {name} to {value}", value=deposit)
    return gov.call("proposalCount")


def advance_to(chain, height):
    """Execute empty blocks until the head is at ``height``."""
    while chain.head.height < height:
        chain.block()


def next_boundary(height):
    """First epoch boundary at or after ``height`` (epochs start at 1, 11, 21, ...)."""
    return height if (height - 1) % EPOCH == 0 else height + EPOCH - (height - 1) % EPOCH


# --- locking ------------------------------------------------------------------------

def test_lock_unlock_withdraw():
    chain, gov = new_chain()
    a0 = addr(chain, 0)
    start = chain.state().get_balance(a0)
    gov.send(key(chain, 0), "lock", value=100 * ETHER)
    assert gov.call("lockedOf", hexa(a0)) == (100 * ETHER, 0, 0, 0)
    assert gov.call("votingPower", hexa(a0)) == 100 * ETHER == voting_power(chain.state(), a0)
    assert gov.call("totalLocked") == 100 * ETHER
    assert chain.state().get_balance(GOV) == 100 * ETHER
    receipt = gov.send(key(chain, 0), "unlock", 40 * ETHER)
    assert len(receipt.logs) == 1
    release = chain.head.height + 5
    assert gov.call("lockedOf", hexa(a0)) == (60 * ETHER, 40 * ETHER, release, 0)
    assert gov.call("totalLocked") == 60 * ETHER
    assert_refused(chain, gov, 0, "withdraw", reason=f"unlocked tokens are released at block {release}")
    advance_to(chain, release - 1)
    gov.send(key(chain, 0), "withdraw")
    assert gov.call("lockedOf", hexa(a0))[:2] == (60 * ETHER, 0)
    assert chain.state().get_balance(GOV) == 60 * ETHER
    spent = start - chain.state().get_balance(a0)
    assert 60 * ETHER < spent < 60 * ETHER + 10**17  # the rest came back, minus gas


def test_lock_refusals():
    chain, gov = new_chain()
    assert_refused(chain, gov, 0, "lock", reason="lock needs a value")
    assert_refused(chain, gov, 0, "unlock", 1, reason="exceeds locked 0")
    assert_refused(chain, gov, 0, "unlock", 0, reason="unlock amount must be positive")
    assert_refused(chain, gov, 0, "withdraw", reason="nothing to withdraw")
    assert_refused(chain, gov, 0, "unlock", 1, value=5, reason="unlock is not payable")
    # a plain transfer to the module is refused too (no receive function)
    receipt = chain.transact(key(chain, 0), GOV, value=ETHER)
    assert receipt.state_root == b""  # failed (EIP-658 status 0)
    assert chain.state().get_balance(GOV) == 0


# --- a parameter change, end to end -----------------------------------------------------

def test_param_proposal_passes_and_activates_at_next_epoch_boundary():
    chain, gov = new_chain(gov_execution_delay_blocks=15)
    lock_all(chain, gov, {0: 1_000 * ETHER, 1: 1_000 * ETHER, 2: 1_000 * ETHER})
    proposer = addr(chain, 3)
    before = chain.state().get_balance(proposer)
    pid = propose_param(chain, gov, 3, "min_attestations", 20)
    assert pid == 1
    created_at = chain.head.height
    p = get_proposal(chain.state(), pid)
    assert (p.kind, p.status, p.critical, p.name, p.value, p.deposit) == (
        "param", "voting", False, "min_attestations", 20, 10 * ETHER)
    assert p.voting_end_block == created_at + 10
    assert chain.state().get_balance(GOV) == 3_010 * ETHER

    gov.send(key(chain, 0), "vote", pid, OPTION_YES)
    gov.send(key(chain, 1), "vote", pid, OPTION_NO)
    gov.send(key(chain, 2), "vote", pid, OPTION_NO)
    p = get_proposal(chain.state(), pid)
    assert (p.yes, p.no) == (1_000 * ETHER, 2_000 * ETHER)
    # changing a vote replaces it; voting the same again never counts twice
    gov.send(key(chain, 1), "vote", pid, OPTION_YES)
    gov.send(key(chain, 1), "vote", pid, OPTION_YES)
    gov.send(key(chain, 2), "vote", pid, OPTION_ABSTAIN)
    p = get_proposal(chain.state(), pid)
    assert (p.yes, p.no, p.abstain, p.veto) == (2_000 * ETHER, 0, 1_000 * ETHER, 0)
    assert gov.call("getVote", pid, hexa(addr(chain, 1))) == (OPTION_YES, 1_000 * ETHER)

    end = p.voting_end_block
    advance_to(chain, end - 1)
    assert get_proposal(chain.state(), pid).status == "voting"
    chain.block()  # height == end: tallied before any transaction of the block
    p = get_proposal(chain.state(), pid)
    assert p.status == "passed" and p.tallied_at == end and p.executable_at == end + 15
    assert p.locked_at_tally == 3_000 * ETHER
    # the deposit came back to the proposer (who paid gas for one transaction only)
    assert 0 < before - chain.state().get_balance(proposer) < 10**17
    assert chain.state().get_balance(GOV) == 3_000 * ETHER
    assert chain.param("min_attestations") == 12

    activation = next_boundary(end + 15)
    advance_to(chain, activation - 1)
    assert chain.param("min_attestations") == 12  # not before the boundary
    assert get_proposal(chain.state(), pid).status == "passed"
    chain.block()
    assert chain.results[-1].epoch_boundary
    assert chain.param("min_attestations") == 20
    p = get_proposal(chain.state(), pid)
    assert (p.status, p.executed_at) == ("executed", activation)
    assert gov.call("getTally", pid) == (end, 3_000 * ETHER, activation)
    assert [x.id for x in list_proposals(chain.state(), "executed")] == [pid]
    assert list_proposals(chain.state(), "voting") == []


def test_epoch_length_change_applies_to_the_epoch_that_starts_at_activation():
    from vm.epoch import get_epoch, get_epoch_start

    chain, gov = new_chain()
    lock_all(chain, gov, {0: 100 * ETHER})
    pid = propose_param(chain, gov, 1, "epoch_length_blocks", 20)
    gov.send(key(chain, 0), "vote", pid, OPTION_YES)
    end = get_proposal(chain.state(), pid).voting_end_block
    activation = next_boundary(end)
    advance_to(chain, activation)
    assert chain.param("epoch_length_blocks") == 20
    s = chain.state()
    assert get_epoch_start(s) == activation
    epoch = get_epoch(s)
    advance_to(chain, activation + 19)
    assert get_epoch(chain.state()) == epoch
    chain.block()
    assert get_epoch(chain.state()) == epoch + 1


# --- tallies ---------------------------------------------------------------------------

def finish(chain, pid):
    advance_to(chain, get_proposal(chain.state(), pid).voting_end_block)
    return get_proposal(chain.state(), pid)


def test_quorum_failure_refunds_deposit():
    chain, gov = new_chain()
    lock_all(chain, gov, {0: 100 * ETHER, 1: 1_000 * ETHER})
    pid = propose_param(chain, gov, 2, "max_speed_cmps", 8_000)
    gov.send(key(chain, 0), "vote", pid, OPTION_YES)  # 100 of 1,100 locked: below 33.4 %
    p = finish(chain, pid)
    assert p.status == "no_quorum"
    assert chain.state().get_balance(GOV) == 1_100 * ETHER
    assert get_supply(chain.state())["burned_deposits"] == 0
    advance_to(chain, next_boundary(chain.head.height + 1))
    assert chain.param("max_speed_cmps") == 7_000


def test_veto_burns_the_deposit():
    chain, gov = new_chain()
    lock_all(chain, gov, {0: 600 * ETHER, 1: 400 * ETHER})
    proposer = addr(chain, 2)
    bal = chain.state().get_balance(proposer)
    pid = propose_param(chain, gov, 2, "max_speed_cmps", 8_000, deposit=25 * ETHER)
    gov.send(key(chain, 0), "vote", pid, OPTION_YES)
    gov.send(key(chain, 1), "vote", pid, OPTION_VETO)  # 40 % veto > 33.34 %
    supply_before = get_supply(chain.state())
    p = finish(chain, pid)
    assert p.status == "vetoed"
    supply = get_supply(chain.state())
    assert supply["burned_deposits"] == 25 * ETHER
    assert supply["total"] == supply_before["total"] - 25 * ETHER - (supply["burned_fees"] - supply_before["burned_fees"])
    assert chain.state().get_balance(GOV) == 1_000 * ETHER  # the deposit left the module
    assert bal - chain.state().get_balance(proposer) > 25 * ETHER


def test_critical_threshold_is_two_thirds_ordinary_is_half():
    chain, gov = new_chain()
    lock_all(chain, gov, {0: 600 * ETHER, 1: 400 * ETHER})
    critical = propose_param(chain, gov, 2, "epoch_issuance", 10 * ETHER)
    ordinary = propose_param(chain, gov, 2, "max_speed_cmps", 8_000)
    for pid in (critical, ordinary):
        gov.send(key(chain, 0), "vote", pid, OPTION_YES)
        gov.send(key(chain, 1), "vote", pid, OPTION_NO)
    assert get_proposal(chain.state(), critical).critical
    assert finish(chain, critical).status == "rejected"  # 60 % < 66.67 %
    assert finish(chain, ordinary).status == "passed"  # 60 % > 50 %


@pytest.mark.parametrize("votes,locked,critical,status", [
    ((0, 0, 0, 0), 0, False, "no_quorum"),  # nobody voted (and nobody locked)
    ((333, 0, 0, 0), 1000, False, "no_quorum"),  # 33.4 % needed
    ((334, 0, 0, 0), 1000, False, "passed"),
    ((50, 50, 0, 0), 100, False, "rejected"),  # a tie does not pass
    ((51, 49, 0, 0), 100, False, "passed"),
    ((0, 0, 100, 0), 100, False, "rejected"),  # all abstain
    ((66, 33, 0, 0), 100, True, "rejected"),  # 66.67 % needed
    ((67, 33, 0, 0), 100, True, "passed"),
    ((60, 0, 6, 34), 100, False, "vetoed"),  # veto over 33.34 % of all votes
    ((60, 0, 7, 33), 100, False, "passed"),  # veto counts against yes: 60 / 93
])
def test_tally_table(votes, locked, critical, status):
    from vm.modules.governance import STATUS_NAMES

    assert STATUS_NAMES[compute_tally_status(*votes, locked, critical, defaults())] == status


# --- freezing -------------------------------------------------------------------------

def test_voted_tokens_are_frozen_until_the_proposal_ends():
    chain, gov = new_chain()
    lock_all(chain, gov, {0: 100 * ETHER})
    pid = propose_param(chain, gov, 1, "max_speed_cmps", 8_000)
    gov.send(key(chain, 0), "vote", pid, OPTION_YES)
    end = get_proposal(chain.state(), pid).voting_end_block
    assert gov.call("lockedOf", hexa(addr(chain, 0)))[3] == end
    assert_refused(chain, gov, 0, "unlock", ETHER, reason=f"frozen until block {end}")
    # more tokens may be locked; the recorded vote keeps its weight until a re-vote
    gov.send(key(chain, 0), "lock", value=50 * ETHER)
    assert get_proposal(chain.state(), pid).yes == 100 * ETHER
    gov.send(key(chain, 0), "vote", pid, OPTION_YES)
    assert get_proposal(chain.state(), pid).yes == 150 * ETHER
    advance_to(chain, end - 2)
    assert_refused(chain, gov, 0, "unlock", ETHER, reason="frozen")  # in block end - 1
    gov.send(key(chain, 0), "unlock", ETHER)  # this block is `end`: the vote is over
    assert locked_amount(chain.state(), addr(chain, 0)) == 149 * ETHER


# --- refusals -------------------------------------------------------------------------------

def test_vote_refusals_leave_state_unchanged():
    chain, gov = new_chain()
    lock_all(chain, gov, {0: 100 * ETHER})
    pid = propose_param(chain, gov, 1, "max_speed_cmps", 8_000)
    assert_refused(chain, gov, 2, "vote", pid, OPTION_YES, reason="no voting power: lock MOTUS")
    assert_refused(chain, gov, 0, "vote", 99, OPTION_YES, reason="unknown proposal 99")
    assert_refused(chain, gov, 0, "vote", pid, 0, reason="option must be 1 (yes)")
    assert_refused(chain, gov, 0, "vote", pid, 5, reason="option must be 1 (yes)")
    assert_refused(chain, gov, 0, "vote", pid, OPTION_YES, value=1, reason="vote is not payable")
    finish(chain, pid)
    assert_refused(chain, gov, 0, "vote", pid, OPTION_NO, reason=f"voting on proposal {pid} is closed")


def test_propose_refusals_leave_state_unchanged():
    chain, gov = new_chain()
    dep = 10 * ETHER
    assert_refused(chain, gov, 0, "proposeParam", "max_speed_cmps", 8_000, "", value=dep - 1,
                   reason=f"deposit {dep - 1} below the minimum {dep}")
    assert_refused(chain, gov, 0, "proposeParam", "max_speed_cmps", 99, "", value=dep,
                   reason="value out of bounds: max_speed_cmps=99 outside [100, 100000]")
    assert_refused(chain, gov, 0, "proposeParam", "epoch_length_blocks", 5, "", value=dep,
                   reason="outside [10, 1000000]")
    assert_refused(chain, gov, 0, "proposeParam", "no_such_param", 1, "", value=dep,
                   reason="unknown parameter 'no_such_param'")
    assert_refused(chain, gov, 0, "proposeParam", "max_speed_cmps", 8_000, "x" * 1025, value=dep,
                   reason="description longer than 1024 bytes")
    validator = hexa(active_validators(chain.state())[0][0])
    assert_refused(chain, gov, 0, "proposeValidator", validator, 0, "", value=dep,
                   reason="cannot remove the last active validator")
    assert_refused(chain, gov, 0, "proposeValidator", hexa(b"\x07" * 20), 0, "", value=dep,
                   reason="not in the active set")
    assert_refused(chain, gov, 0, "proposeValidator", hexa(b"\x07" * 20), 10**12 + 1, "", value=dep,
                   reason="above the maximum")
    assert_refused(chain, gov, 0, "proposeValidator", hexa(bytes(20)), 5, "", value=dep,
                   reason="validator address must not be zero")
    assert_refused(chain, gov, 0, "proposeManufacturer", hexa(bytes(20)), True, "x", "", value=dep,
                   reason="manufacturer address must not be zero")
    assert_refused(chain, gov, 0, "proposeDeny", hexa(bytes(20)), True, "", value=dep,
                   reason="device address must not be zero")
    assert gov.call("proposalCount") == 0
    assert_refused(chain, gov, 0, "getProposal", 1, reason="unknown proposal 1")


# --- other proposal kinds -----------------------------------------------------------------

def test_validator_set_change_through_governance():
    chain, gov = new_chain()
    lock_all(chain, gov, {0: 100 * ETHER})
    new = b"\x0b" * 20
    gov.send(key(chain, 1), "proposeValidator", hexa(new), 7, "add b", value=10 * ETHER)
    pid = gov.call("proposalCount")
    assert get_proposal(chain.state(), pid).critical
    gov.send(key(chain, 0), "vote", pid, OPTION_YES)
    end = finish(chain, pid).voting_end_block
    advance_to(chain, next_boundary(end))
    assert (new, 7) in active_validators(chain.state())
    assert (new, 7) in chain.results[-1].next_validators
    # and remove the genesis validator again, by power 0
    old = next(a for a, _ in active_validators(chain.state()) if a != new)
    gov.send(key(chain, 1), "proposeValidator", hexa(old), 0, "remove", value=10 * ETHER)
    gov.send(key(chain, 0), "vote", 2, OPTION_YES)
    advance_to(chain, next_boundary(finish(chain, 2).voting_end_block))
    assert active_validators(chain.state()) == [(new, 7)]


def test_last_validator_removal_fails_at_activation_if_set_shrank_meanwhile():
    chain, gov = new_chain()
    extra = b"\x0c" * 20
    lock_all(chain, gov, {0: 100 * ETHER})
    gov.send(key(chain, 1), "proposeValidator", hexa(extra), 5, "add", value=10 * ETHER)
    gov.send(key(chain, 0), "vote", 1, OPTION_YES)
    advance_to(chain, next_boundary(finish(chain, 1).voting_end_block))
    genesis_validator = next(a for a, _ in active_validators(chain.state()) if a != extra)
    # two removals, each valid alone; the second to activate would empty the set
    gov.send(key(chain, 1), "proposeValidator", hexa(extra), 0, "remove extra", value=10 * ETHER)
    gov.send(key(chain, 1), "proposeValidator", hexa(genesis_validator), 0, "remove genesis", value=10 * ETHER)
    gov.send(key(chain, 0), "vote", 2, OPTION_YES)
    gov.send(key(chain, 0), "vote", 3, OPTION_YES)
    advance_to(chain, next_boundary(finish(chain, 3).voting_end_block))
    s = chain.state()
    assert get_proposal(s, 2).status == "executed"
    p3 = get_proposal(s, 3)
    assert p3.status == "failed" and "last active validator" in p3.note
    assert active_validators(s) == [(genesis_validator, 10)]


def test_manufacturer_license_through_governance():
    identity = pytest.importorskip("vm.modules.identity")
    chain, gov = new_chain()
    lock_all(chain, gov, {0: 100 * ETHER})
    maker = b"\x0d" * 20
    gov.send(key(chain, 1), "proposeManufacturer", hexa(maker), True, "Acme Devices", "license Acme",
             value=10 * ETHER)
    gov.send(key(chain, 0), "vote", 1, OPTION_YES)
    p = finish(chain, 1)
    assert not p.critical and p.status == "passed"
    assert not identity.is_manufacturer(chain.state(), maker)
    advance_to(chain, next_boundary(chain.head.height + 1))
    assert identity.is_manufacturer(chain.state(), maker)
    assert get_proposal(chain.state(), 1).status == "executed"


def test_events_of_propose_and_vote():
    chain, gov = new_chain()
    r = gov.send(key(chain, 0), "lock", value=ETHER)
    assert len(r.logs) == 1 and r.logs[0].address == GOV
    r = gov.send(key(chain, 1), "proposeParam", "max_speed_cmps", 8_000, "", value=10 * ETHER)
    assert len(r.logs) == 1 and r.logs[0].topics[1] == 1
    r = gov.send(key(chain, 0), "vote", 1, OPTION_NO)
    assert len(r.logs) == 1 and r.logs[0].topics[1] == 1
    assert int.from_bytes(r.logs[0].data[:32], "big") == OPTION_NO
