"""Block events (vm/events.py): payouts, tallies and activations emitted by the epoch work
of a block, decoded with the shipped ABIs by web3.py, and committed by the state root."""

from __future__ import annotations

from typing import Any

from web3 import Web3

from tests.harness import LocalChain, Module
from tests.vm.test_rewards_telemetry import new_fleet
from vm.events import (
    BlockEvent,
    collect_block_events,
    compute_block_events_hash,
    decode_block_events,
    encode_block_events,
    get_block_events_hash,
)
from vm.execute import BlockResult
from vm.modules import SYSTEM_MODULES, addresses
from vm.modules.base import load_abi
from vm.modules.governance import OPTION_VETO, OPTION_YES, STATUS_PASSED, STATUS_VETOED
from vm.modules.rewards import get_epoch_result, list_epoch_rewards
from vm.params import ETHER

GOV_PARAMS = {
    "epoch_length_blocks": 10,
    "gov_voting_period_blocks": 10,
    "gov_execution_delay_blocks": 0,
    "gov_min_deposit": ETHER,
}


def decode(events: list[BlockEvent]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, args) of each event, decoded by web3.py contract objects built from the
    shipped ABIs, as a dapp decodes eth_getLogs answers."""
    w3 = Web3()
    contracts = {
        addresses.REWARDS: w3.eth.contract(abi=load_abi("rewards")),
        addresses.GOVERNANCE: w3.eth.contract(abi=load_abi("governance")),
    }
    out = []
    for i, ev in enumerate(events):
        contract = contracts[ev.address]
        log = {
            "address": Web3.to_checksum_address(ev.address),
            "topics": list(ev.topics),
            "data": ev.data,
            "logIndex": i,
            "transactionIndex": 0,
            "transactionHash": b"\0" * 32,
            "blockHash": b"\0" * 32,
            "blockNumber": 1,
        }
        for abi_event in contract.all_events():
            try:
                decoded = abi_event().process_log(log)
            except Exception:
                continue
            out.append((decoded["event"], dict(decoded["args"])))
            break
        else:
            raise AssertionError(f"event {i} matches no ABI event: {ev}")
    return out


def all_events(results: list[BlockResult]) -> list[tuple[str, dict[str, Any]]]:
    return [e for r in results for e in decode(r.block_events)]


def test_each_payout_is_a_reward_paid_event_then_the_epoch_is_settled():
    fleet, road = new_fleet(3)
    chain = fleet.chain
    epoch = road.run_epoch({0: 7, 1: 4, 2: 3})  # vehicle 2 does not qualify
    result = chain.results[-1]
    s = chain.state()
    paid = [r for r in list_epoch_rewards(s, epoch) if r.reward]
    assert len(paid) == 2
    expected = [
        (
            "RewardPaid",
            {
                "epoch": epoch,
                "vehicleId": r.vehicle_id,
                "owner": Web3.to_checksum_address(r.owner),
                "points": r.points,
                "amount": r.reward,
            },
        )
        for r in paid
    ]
    settled = get_epoch_result(s, epoch)
    expected.append(
        (
            "EpochSettled",
            {
                "epoch": epoch,
                "pool": settled.pool,
                "totalPoints": settled.total_points,
                "minted": settled.minted,
                "carry": settled.carry_out,
            },
        )
    )
    assert decode(result.block_events) == expected
    assert {e.address for e in result.block_events} == {addresses.REWARDS}
    assert settled.settled_at == chain.head.height


def test_events_are_committed_by_the_state_root_only_where_a_block_has_some():
    fleet, road = new_fleet(1)
    chain = fleet.chain
    road.run_epoch({0: 4})
    boundary, before = chain.results[-1], chain.results[-2]
    assert boundary.block_events and not before.block_events
    s = chain.state()
    assert get_block_events_hash(s, chain.head.height) == compute_block_events_hash(
        boundary.block_events
    )
    assert get_block_events_hash(s, chain.head.height - 1) is None
    raw = encode_block_events(boundary.block_events)
    assert decode_block_events(raw) == boundary.block_events


def test_tally_refund_activation_and_veto_burn_are_events():
    chain = LocalChain(params=GOV_PARAMS)
    gov = Module(chain, "governance", addresses.GOVERNANCE)
    k0, (a5, k5) = chain.accounts[0][1], chain.accounts[5]
    gov.send(k0, "lock", value=10 * ETHER)
    first = len(chain.results)
    gov.send(k5, "proposeParam", "min_attestations", 5, "fewer", value=2 * ETHER)
    gov.send(k0, "vote", 1, OPTION_YES)
    gov.send(k5, "proposeDeny", "0x" + "11" * 20, True, "no", value=3 * ETHER)
    gov.send(k0, "vote", 2, OPTION_VETO)
    chain.advance(25)
    events = [e for e in all_events(chain.results[first:]) if e[0] != "EpochSettled"]
    proposer = Web3.to_checksum_address(a5)
    assert events == [
        (
            "ProposalTallied",
            {
                "proposalId": 1,
                "status": STATUS_PASSED,
                "yes": 10 * ETHER,
                "no": 0,
                "abstain": 0,
                "veto": 0,
            },
        ),
        ("DepositRefunded", {"proposalId": 1, "proposer": proposer, "amount": 2 * ETHER}),
        (
            "ProposalTallied",
            {
                "proposalId": 2,
                "status": STATUS_VETOED,
                "yes": 0,
                "no": 0,
                "abstain": 0,
                "veto": 10 * ETHER,
            },
        ),
        ("DepositBurned", {"proposalId": 2, "proposer": proposer, "amount": 3 * ETHER}),
        ("ProposalExecuted", {"proposalId": 1}),
    ]
    assert chain.param("min_attestations") == 5


def test_emit_outside_block_execution_is_dropped():
    rewards = SYSTEM_MODULES[addresses.REWARDS]
    s = LocalChain().state()
    rewards.emit(s, None, "EpochSettled", 1, 2, 3, 4, 5)  # no sink open: nothing happens
    with collect_block_events() as events:
        rewards.emit(s, None, "EpochSettled", 1, 2, 3, 4, 5)
    assert [e[0] for e in decode(events)] == ["EpochSettled"]
