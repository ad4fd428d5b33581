"""Rewards and governance RPC over a real node's store, application and method table,
in-process: blocks proposed and committed by the single validator with signed commits,
vehicles minted and paired through signed identity transactions in the mempool, device
attestations in the blocks. Drivers are paid at the boundary (balances, motus_getEpoch,
motus_getRewards by vehicle and by owner, RewardPaid block events from eth_getLogs with
their documented indexes and the events hash in state), a governance cut of the issuance
changes what later epochs pay, the supply audit holds, and bad parameters are refused.

In-process so that each block's contents are exact (a transaction and payouts in the
same boundary block, a transfer between two epochs) and the exact figures can be
asserted; test_governance_e2e.py runs the same flow on a node process over HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from consensus.types import PRECOMMIT, Commit, Vote
from devnet.device import Device, Drive
from genesis.devnet import dev_accounts
from node.node import Node
from node.rpc.errors import INVALID_PARAMS, LIMIT_EXCEEDED, RPCError
from node.rpc.registry import RPCContext, build_method_table
from rpcclient.txsend import decode_logs, encode_call
from tests.procs import init_home
from vm.events import BlockEvent, block_events_slot, compute_block_events_hash
from vm.modules import addresses
from vm.modules.base import load_abi

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("rewards_inproc")]

MOTUS = 10**18
PARAMS = {
    "epoch_length_blocks": 10,
    "min_attestations": 3,
    "challenge_fraction_bps": 0,
    "decay_bps": 0,
    "gov_voting_period_blocks": 10,
    "gov_execution_delay_blocks": 0,
    "gov_min_deposit": MOTUS,
}
MUNICH = (48.137154, 11.576124)
FAR = 2**40  # device signature deadline
REWARDS, GOVERNANCE, IDENTITY = (
    "0x" + a.hex() for a in (addresses.REWARDS, addresses.GOVERNANCE, addresses.IDENTITY)
)
ACCOUNTS = dev_accounts()  # (address, key); 1 is the licensed manufacturer
DRIVERS = (2, 3)


class AttestationFeed:
    """An attestation source for the application (``node.app.AttestationSource``): these
    attestations, once; the block checks them as every validator does."""

    def __init__(self) -> None:
        self.next: list[bytes] = []

    def take_with_ids(self, max_n: int) -> tuple[list[bytes], list[bytes]]:
        out, self.next = self.next[:max_n], self.next[max_n:]
        return out, [keccak(raw) for raw in out]

    def on_built(self, results: Any) -> None:
        return None

    def on_commit(self, block: Any, result: Any, parent_state_root: bytes) -> None:
        return None


class InProcessChain:
    """A node home's chain driven block by block: the validator proposes, precommits and
    commits each block through :class:`node.app.Application`; RPC methods are called
    through the node's method table with parsed parameters, as the server does."""

    def __init__(self, home: Path) -> None:
        self.node = Node(home)
        self.app = self.node.app
        self.feed = AttestationFeed()
        self.app.attestation_pool = self.feed
        self.now_ms = self.app.head.timestamp_ms
        self.app.clock = lambda: self.now_ms / 1000
        self.table = build_method_table()
        self.ctx = RPCContext(self.node)
        self.nonces: dict[bytes, int] = {}

    def close(self) -> None:
        """What ``Node.run`` closes when it stops (so the home can be opened again)."""
        self.node.local_txs.close()
        self.node.webhooks.close()
        self.node.attestations.close()
        self.node.database.close()

    @property
    def height(self) -> int:
        return self.app.head.height

    def block(self, txs: list[bytes] = (), attestations: list[bytes] = ()) -> int:
        """Commit the next block (one second after the head) with these transactions (all
        must be included) and attestations; returns its height."""
        for raw in txs:
            self.app.submit_transaction(raw, gossip=False)
        self.feed.next = list(attestations)
        self.now_ms += 1000
        height = self.height + 1
        value = self.app.propose(height, self.node.address)
        block_hash = self.app.block_hash(value)
        vote = Vote.create(
            self.app.chain_id,
            self.node.validator_key,
            PRECOMMIT,
            height,
            0,
            block_hash,
            self.node.address,
        )
        block = self.app.commit(height, value, Commit.from_votes(height, 0, block_hash, [vote]))
        assert len(block.transactions) == len(txs)
        for receipt in self.node.store.receipts(block.hash):
            assert receipt.state_root == b"\x01", "a transaction failed"
        return height

    def sign(self, index: int, to: str, data: bytes, value: int = 0) -> bytes:
        address, key = ACCOUNTS[index]
        nonce = self.nonces.get(address, 0)
        self.nonces[address] = nonce + 1
        tx = {
            "type": 2,
            "chainId": self.app.chain_id,
            "nonce": nonce,
            "data": data,
            "to": to_checksum_address(to),
            "value": value,
            "gas": 1_000_000,
            "maxFeePerGas": 10**11,
            "maxPriorityFeePerGas": 10**9,
        }
        return bytes(Account.sign_transaction(tx, key).raw_transaction)

    def call(self, fn: str, *args: Any) -> Any:
        """Call RPC method ``fn`` with JSON params; the answer as JSON would carry it."""
        method = self.table.get(fn)
        assert method is not None, fn
        return json.loads(json.dumps(method.handler(self.ctx, *method.bind(list(args)))))


def rpc_error(chain: InProcessChain, fn: str, *args: Any) -> RPCError:
    with pytest.raises(RPCError) as info:
        chain.call(fn, *args)
    return info.value


def topic(address: bytes) -> str:
    return "0x" + address.rjust(32, b"\0").hex()


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Any:
    home = init_home(tmp_path_factory.mktemp("rewards_rpc"), "node")
    genesis = json.loads((home / "genesis.json").read_text())
    genesis["params"].update(PARAMS)
    (home / "genesis.json").write_text(json.dumps(genesis))
    c = InProcessChain(home)
    yield c
    c.close()


@pytest.fixture(scope="module")
def fleet(chain: InProcessChain) -> dict[str, Any]:
    return make_fleet(chain)


def make_fleet(chain: InProcessChain) -> dict[str, Any]:
    """Drivers 2 and 3 each own a vehicle paired with a device (minted by manufacturer 1,
    claimed and paired with the device's EIP-712 signatures); then the chain is run to
    the start of an epoch."""
    abi = load_abi("identity")
    devices = [Device.generate(chain.app.chain_id, seed=b"rpc %d" % i) for i in DRIVERS]
    owners = [ACCOUNTS[i][0] for i in DRIVERS]
    chain.block(
        [
            chain.sign(
                i,
                IDENTITY,
                encode_call(abi, "mintVehicle", "Motus", "Sim", 2024, f"WMZRPC{i:011d}"),
            )
            for i in DRIVERS
        ]
        + [
            chain.sign(1, IDENTITY, encode_call(abi, "mintDevice", d.checksum_address))
            for d in devices
        ]
    )
    vehicles = chain.call("motus_vehiclesOf", "0x" + owners[0].hex()) + chain.call(
        "motus_vehiclesOf", "0x" + owners[1].hex()
    )
    chain.block(
        [
            chain.sign(
                i,
                IDENTITY,
                encode_call(
                    abi, "claimDevice", d.checksum_address, 0, FAR, d.claim_signature(o, 0, FAR)
                ),
            )
            for i, d, o in zip(DRIVERS, devices, owners, strict=True)
        ]
    )
    chain.block(
        [
            chain.sign(
                i,
                IDENTITY,
                encode_call(
                    abi, "pairDevice", v, d.checksum_address, 1, FAR, d.pair_signature(v, o, 1, FAR)
                ),
            )
            for i, d, o, v in zip(DRIVERS, devices, owners, vehicles, strict=True)
        ]
    )
    run_to_boundary(chain, {}, {})
    drives = [Drive(*MUNICH, heading_deg=60 * i, odometer_m=1_000 * i) for i in range(len(devices))]
    return {"devices": devices, "owners": owners, "vehicles": vehicles, "drives": drives}


def run_to_boundary(
    chain: InProcessChain, fleet: dict[str, Any], plan: dict[int, int], last_txs: list[bytes] = (),
    settles: bool = True,
) -> tuple[int, int]:
    """Run the current epoch to its end, device i attesting once a block ``plan[i]`` times,
    ``last_txs`` in the boundary block; returns (ended epoch, boundary height). With
    ``settles`` the boundary block must have settled the ended epoch entirely."""
    epoch = chain.call("motus_getEpoch")
    k = 0
    while chain.height < epoch["endHeight"]:
        atts = []
        for i, n in plan.items():
            if k < n:
                lat, lon, odo, _ = fleet["drives"][i].step(1_000)
                atts.append(
                    fleet["devices"][i]
                    .attest(
                        vehicle_id=fleet["vehicles"][i],
                        timestamp_ms=chain.now_ms + 500,
                        lat=lat,
                        lon=lon,
                        odometer_m=odo,
                        speed_cmps=1_500,
                    )
                    .raw
                )
        chain.block(attestations=atts)
        k += 1
    boundary = chain.block(list(last_txs))
    if settles:
        assert chain.call("motus_getEpoch", epoch["epoch"])["settledAt"] == boundary
    return epoch["epoch"], boundary


def test_rewards_in_the_first_epoch_are_empty_not_an_error(chain):
    """Runs before the fleet fixture moves the chain on: no epoch is settled yet."""
    assert chain.call("motus_getEpoch")["epoch"] == 0
    for who in (1, "0x" + ACCOUNTS[2][0].hex()):
        got = chain.call("motus_getRewards", who)
        assert got["rewards"] == [] and got["total"] == "0", got


def test_drivers_are_paid_and_every_read_agrees(chain, fleet):
    owners, vehicles = fleet["owners"], fleet["vehicles"]
    before = [int(chain.call("eth_getBalance", "0x" + o.hex()), 16) for o in owners]
    supply_before = chain.call("motus_getSupply")
    # the boundary block also carries a transaction with two logs: block events come after
    mint = chain.sign(
        9,
        IDENTITY,
        encode_call(load_abi("identity"), "mintVehicle", "Motus", "Late", 2024,
                    "WMZLATE0000000001"),
    )
    epoch, boundary = run_to_boundary(chain, fleet, {0: 7, 1: 4}, [mint])
    info = chain.call("motus_getEpoch", epoch)
    assert (info["status"], info["vehicles"], info["vehiclesWithData"]) == ("settled", 2, 2)
    assert info["endHeight"] == boundary - 1 and info["startHeight"] == boundary - 10
    pool = int(info["pool"])
    a = chain.call("motus_getRewards", vehicles[0], epoch, epoch)
    b = chain.call("motus_getRewards", vehicles[1])
    (ra,), (rb,) = a["rewards"], [r for r in b["rewards"] if r["epoch"] == epoch]
    assert (ra["points"], ra["dataLevel"], rb["points"], rb["dataLevel"]) == (2_000, 2, 1_000, 1)
    assert int(ra["reward"]) == pool * 2 // 3 and int(rb["reward"]) == pool // 3
    assert int(info["minted"]) == int(ra["reward"]) + int(rb["reward"])
    assert int(info["carryOut"]) == pool - int(info["minted"])
    after = [int(chain.call("eth_getBalance", "0x" + o.hex()), 16) for o in owners]
    assert [x - y for x, y in zip(after, before, strict=True)] == [
        int(ra["reward"]),
        int(rb["reward"]),
    ]
    by_owner = chain.call("motus_getRewards", "0x" + owners[0].hex(), epoch, epoch)
    assert by_owner["rewards"] == [ra] and by_owner["total"] == ra["reward"]

    # payouts as block events: after the mint's two logs, one RewardPaid per driver
    logs = chain.call("eth_getLogs", {"fromBlock": hex(boundary), "toBlock": hex(boundary)})
    block = chain.node.store.block_by_height(boundary)
    assert [int(x["logIndex"], 16) for x in logs] == [0, 1, 2, 3, 4]
    events = logs[2:]
    assert {x["transactionHash"] for x in events} == {
        "0x" + keccak(b"motus:block-events" + block.hash).hex()
    }
    assert {x["transactionIndex"] for x in events} == {"0x1"}
    decoded = decode_logs(load_abi("rewards"), events, REWARDS)
    assert [(d["event"], d["args"].get("vehicleId"), d["args"].get("amount")) for d in decoded] == [
        ("RewardPaid", vehicles[0], int(ra["reward"])),
        ("RewardPaid", vehicles[1], int(rb["reward"])),
        ("EpochSettled", None, None),
    ]
    assert decoded[2]["args"] == {
        "epoch": epoch,
        "pool": pool,
        "totalPoints": 3_000,
        "minted": int(info["minted"]),
        "carry": int(info["carryOut"]),
    }
    paid_topic = logs[2]["topics"][0]
    mine = chain.call(
        "eth_getLogs", {"fromBlock": "0x0", "topics": [paid_topic, None, None, topic(owners[1])]}
    )
    assert [int(x["topics"][2], 16) for x in mine] == [vehicles[1]]

    # the events hash sits in state, so the state root commits the events
    stored = chain.node.store.block_events(block.hash)
    assert [
        BlockEvent(
            bytes.fromhex(x["address"][2:]),
            tuple(bytes.fromhex(t[2:]) for t in x["topics"]),
            bytes.fromhex(x["data"][2:]),
        )
        for x in events
    ] == stored
    slot = chain.call(
        "eth_getStorageAt",
        "0x" + addresses.PARAMS.hex(),
        hex(block_events_slot(boundary)),
        hex(boundary),
    )
    assert bytes.fromhex(slot[2:]) == compute_block_events_hash(stored)

    supply = chain.call("motus_getSupply", "latest", True)
    assert int(supply["minted"]) - int(supply_before["minted"]) == int(info["minted"])
    assert supply["audit"]["matchesTotal"] and supply["audit"]["sumOfBalances"] == supply["total"]


def test_owner_rewards_follow_the_payee_after_a_transfer(chain, fleet):
    seller, vehicle = fleet["owners"][0], fleet["vehicles"][0]
    buyer = ACCOUNTS[9][0]
    sold = chain.call("motus_getRewards", "0x" + seller.hex())["rewards"]
    if not sold:  # run alone (not after the first test): earn an epoch's reward first
        run_to_boundary(chain, fleet, {0: 4})
        sold = chain.call("motus_getRewards", "0x" + seller.hex())["rewards"]
    assert sold and {r["vehicleId"] for r in sold} == {vehicle}
    transfer = chain.sign(
        DRIVERS[0],
        IDENTITY,
        encode_call(
            load_abi("identity"), "transferFrom", "0x" + seller.hex(), "0x" + buyer.hex(), vehicle
        ),
    )
    chain.block([transfer])
    epoch, _ = run_to_boundary(chain, fleet, {0: 4})
    assert chain.call("motus_getRewards", "0x" + seller.hex())["rewards"] == []  # no longer held
    bought = chain.call("motus_getRewards", "0x" + buyer.hex())["rewards"]
    assert [(r["epoch"], r["owner"]) for r in bought] == [(epoch, "0x" + buyer.hex())]
    whole = chain.call("motus_getRewards", vehicle)["rewards"]  # by vehicle: every payee
    assert {r["owner"] for r in whole} == {"0x" + seller.hex(), "0x" + buyer.hex()}


def test_a_governance_cut_of_the_issuance_changes_what_drivers_are_paid(chain, fleet):
    gov = load_abi("governance")
    old = int(chain.call("motus_getParams")["params"]["epoch_issuance"]["value"])
    new = old // 4
    chain.block(
        [
            chain.sign(0, GOVERNANCE, encode_call(gov, "lock"), value=10 * MOTUS),
            chain.sign(
                5,
                GOVERNANCE,
                encode_call(gov, "proposeParam", "epoch_issuance", new, "quarter"),
                value=MOTUS,
            ),
        ]
    )
    (pending,) = chain.call("motus_listProposals", "voting")["proposals"]
    chain.block([chain.sign(0, GOVERNANCE, encode_call(gov, "vote", pending["id"], 1))])
    assert chain.call("motus_getVotingPower", "0x" + ACCOUNTS[0][0].hex())["power"] == str(
        10 * MOTUS
    )
    predicted = set()  # where the RPC said, at every step, the change would take effect
    while (prop := chain.call("motus_getProposal", pending["id"]))["status"] != "executed":
        assert prop["status"] in ("voting", "passed")
        predicted.add(prop["effectiveAt"])
        if prop["status"] == "passed":
            assert chain.call("motus_getParams")["params"]["epoch_issuance"]["pending"] == [
                {"proposalId": prop["id"], "value": str(new), "executableAt": prop["executableAt"],
                 "effectiveAt": prop["effectiveAt"]}
            ]
            # the first epoch boundary at or after executableAt, not executableAt itself
            assert prop["effectiveAt"] >= prop["executableAt"]
        run_to_boundary(chain, fleet, {0: 4, 1: 4})
    assert predicted == {prop["executedAt"]} and prop["effectiveAt"] is None
    epoch, _ = run_to_boundary(chain, fleet, {0: 4, 1: 4})
    info = chain.call("motus_getEpoch", epoch)
    assert info["issuance"] == str(new)
    assert int(info["minted"]) == new + int(info["carryIn"]) - int(info["carryOut"])
    assert sum(
        int(r["reward"])
        for v in fleet["vehicles"]
        for r in chain.call("motus_getRewards", v, epoch, epoch)["rewards"]
    ) == int(info["minted"])


def test_parameters_are_checked(chain, fleet):
    assert chain.call("motus_getEpoch", 10**6) is None
    current = chain.call("motus_getEpoch")
    assert current["status"] == "open" and current["totalPoints"] is None
    cases = [
        ("motus_getRewards", ["car"], INVALID_PARAMS, "vehicleIdOrOwner"),
        ("motus_getRewards", [1, 5, 4], INVALID_PARAMS, "fromEpoch 5 is after toEpoch 4"),
        ("motus_getRewards", [1, 0, 1000], LIMIT_EXCEEDED, "exceeds 1000"),
        ("motus_getEpoch", [-1], INVALID_PARAMS, "epoch"),
        ("motus_getProposal", [0], INVALID_PARAMS, "proposal ids start at 1"),
        ("motus_listProposals", ["open"], INVALID_PARAMS, "status"),
        ("motus_listProposals", [None, 1, 101], INVALID_PARAMS, "limit"),
        ("motus_getVotingPower", ["0x12"], INVALID_PARAMS, "address"),
        ("motus_getSupply", ["latest", "yes"], INVALID_PARAMS, "audit"),
        ("motus_getParams", [hex(10**6)], -32001, "header not found"),
    ]
    for fn, args, code, text in cases:
        err = rpc_error(chain, fn, *args)
        assert err.code == code and text in err.message, (fn, args, err.message)
    assert chain.call("motus_getRewards", 1, 0, 999)["fromEpoch"] == 0  # 1,000 epochs: fine
    assert chain.call("motus_getProposal", 99) is None
    everything = chain.call("motus_getParams")["params"]
    assert everything["gov_quorum_bps"]["class"] == "critical"
    assert everything["min_attestations"] == {
        "value": "3",
        "default": "12",
        "minimum": "1",
        "maximum": "100000",
        "class": "ordinary",
        "doc": everything["min_attestations"]["doc"],
        "pending": [],
    }
