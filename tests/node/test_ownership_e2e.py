"""Data ownership end to end on a 2-validator devnet (issue 13; docs/privacy.md, "Who can
read what"): each test fails on the code before ownership periods, bit-exact permissions,
audience-bound requests and signal replication.

Validator 0 and validator 1 run as real processes connected by libp2p; one car (minted,
claimed and paired by transactions) drives and sends its signed payloads to validator 0
only. The module's tests share that chain and run in file order:

1. the payloads sent to validator 0 are readable on validator 1 (replicated by gossip),
   and a record whose payload no node holds is reported by ``coverage``;
2. a signed request is answered once by the node it names: replayed on that node it is
   ``replayed``, on the other ``wrong_audience``;
3. a developer holding one permission bit sees exactly what the bit opens;
4. after a mid-epoch sale the buyer cannot read the seller's records, the seller still
   can, the seller's developer lost access, and the epoch's reward is split between
   seller and buyer by the data each produced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from devnet import fleet
from devnet.device import Drive
from node.signal_store import request_json, sign_request
from rpcclient.txsend import encode_call, wait_for_receipt
from tests.procs import NodeProcess, motus, rpc, validator_pair, wait_until
from vm.modules.base import load_abi
from vm.scoring import compute_owner_split

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ownership_e2e"),
              pytest.mark.timeout(240)]

CHAIN_ID = 7077
SEED = "e2e ownership"
EPOCH = 100  # blocks: a sale and the data around it fit in one epoch
GENESIS_PARAMS = {"epoch_length_blocks": EPOCH, "min_attestations": 3}
IDENTITY = "0x00000000000000000000000000000000004d0703"
BITS = {"non_location_history": 1 << 0, "current_location": 1 << 2, "location_history": 1 << 3,
        "live_data": 1 << 5, "raw_data": 1 << 6, "approximate_location": 1 << 7}


def hexs(data: bytes) -> str:
    return "0x" + data.hex()


def refusal(url: str, request: dict[str, Any]) -> str:
    """The ``data.code`` of a telemetry request that must be refused."""
    with pytest.raises(RuntimeError) as info:
        rpc(url, "motus_getTelemetry", [request])
    error = info.value.args[0]
    assert error["code"] == -32000, error
    return error["data"]["code"]


@dataclass
class Devnet:
    nodes: list[NodeProcess]
    node_ids: list[str]
    car: fleet.Car
    drive: Drive
    sent: list[Any]  # readings the car sent, with payloads, to validator 0
    included: dict[bytes, int]  # attestation id -> inclusion height, of everything sent

    def readings(self, count: int, start_ms: int) -> list[Any]:
        self.drive.timestamp_ms = max(self.drive.timestamp_ms, start_ms - 1_000)
        return list(self.drive.readings(self.car.device, self.car.vehicle_id, count, 1_000,
                                        signals={"soc": 64.0}))

    def send(self, readings: list[Any], payloads: bool = True) -> None:
        params: list[Any] = [[hexs(r.raw) for r in readings]]
        if payloads:
            params.append([hexs(r.payload) for r in readings])
        results = rpc(self.nodes[0].url, "motus_submitAttestations", params)
        assert [r["code"] for r in results] == ["ok"] * len(readings), results

    def heights(self, readings: list[Any], timeout: float = 30) -> list[int]:
        """Inclusion heights (waits for all)."""
        def look() -> list[int] | None:
            out = []
            for r in readings:
                st = rpc(self.nodes[1].url, "motus_getAttestation", [hexs(r.id)])
                if st is None or st["status"] != "included":
                    return None
                out.append(st["height"])
            return out

        heights = wait_until(look, timeout, f"{len(readings)} attestations to be included")
        self.included.update((r.id, h) for r, h in zip(readings, heights, strict=True))
        return heights

    def read(self, key: bytes, node: int = 1, from_ms: int = 0,
             to_ms: int | None = None) -> dict[str, Any]:
        return request_json(self.request(key, node, from_ms, to_ms))

    def request(self, key: bytes, node: int, from_ms: int = 0, to_ms: int | None = None) -> Any:
        now = int(time.time() * 1000)
        to_ms = now + 60_000 if to_ms is None else to_ms
        return sign_request(key, CHAIN_ID, self.node_ids[node], self.car.vehicle_id,
                            max(from_ms, to_ms - 30 * 86_400_000), to_ms, now)

    def grant(self, grants: dict[bytes, int]) -> None:
        expiry = int(time.time()) + 3_600
        fleet.send_batches(self.nodes[0].url, IDENTITY, [(self.car.owner_key, [
            encode_call(load_abi("identity"), "grantPermissions", self.car.vehicle_id, hexs(who), bits,
                        expiry) for who, bits in grants.items()])])


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    with validator_pair(tmp_path_factory.mktemp("ownership_e2e"), GENESIS_PARAMS) as (
            nodes, node_ids):
        car = fleet.setup_fleet(nodes[0].url, fleet.plan_fleet(SEED, 1, CHAIN_ID, 7))[0]
        drive = Drive(48.137, 11.575, heading_deg=45.0, odometer_m=20_000)
        yield Devnet(nodes, node_ids, car, drive, [], {})


# --- 1. where data lives ----------------------------------------------------------------


def test_payloads_sent_to_one_validator_are_readable_on_the_other(devnet: Devnet) -> None:
    assert rpc(devnet.nodes[1].url, "motus_nodeStatus")["peerId"] == devnet.node_ids[1]
    readings = devnet.readings(4, int(time.time() * 1000) - 6_000)
    devnet.send(readings)
    devnet.sent += readings
    devnet.heights(readings)
    key = devnet.car.owner_key

    def on_node1() -> dict[str, Any] | None:
        got = rpc(devnet.nodes[1].url, "motus_getTelemetry", [devnet.read(key)])
        return got if len(got["records"]) == len(readings) else None

    got = wait_until(on_node1, 15, "validator 1 to hold the payloads sent to validator 0")
    assert [r["id"] for r in got["records"]] == [hexs(r.id) for r in readings]
    assert got["coverage"] == {"complete": True, "missing": []}
    assert got["records"][0]["signals"]["soc"] == 64.0
    assert got["records"][0]["payload"] == hexs(readings[0].payload)  # the owner: raw bytes
    # an attestation whose payload was never given to any node: included, and reported
    withheld = devnet.readings(1, int(time.time() * 1000) - 1_000)
    devnet.send(withheld, payloads=False)
    devnet.heights(withheld)
    for node in (0, 1):
        got = wait_until(lambda node=node: (
            lambda a: a if not a["coverage"]["complete"] else None)(
                rpc(devnet.nodes[node].url, "motus_getTelemetry", [devnet.read(key, node)])),
            15, "the withheld payload to be reported")
        assert got["coverage"]["missing"] == [hexs(withheld[0].id)]
        assert [r["id"] for r in got["records"]] == [hexs(r.id) for r in readings]


# --- 2. requests bound to a node and used once ------------------------------------------


def test_a_request_is_answered_once_by_the_node_it_names(devnet: Devnet, tmp_path: Path) -> None:
    key = devnet.car.owner_key
    for_node0 = devnet.read(key, node=0)
    assert len(rpc(devnet.nodes[0].url, "motus_getTelemetry", [for_node0])["records"]) >= 4
    assert refusal(devnet.nodes[0].url, for_node0) == "replayed"
    assert refusal(devnet.nodes[1].url, for_node0) == "wrong_audience"
    for_node1 = devnet.read(key, node=1)
    assert refusal(devnet.nodes[0].url, for_node1) == "wrong_audience"
    assert rpc(devnet.nodes[1].url, "motus_getTelemetry", [for_node1])["nodeId"] == \
        devnet.node_ids[1]
    assert refusal(devnet.nodes[1].url, for_node1) == "replayed"
    # the CLI asks the node for its peer id and signs a fresh request each time
    owner_file, stranger_file = tmp_path / "owner.key", tmp_path / "stranger.key"
    for path, secret in ((owner_file, key), (stranger_file, b"\x77" * 32)):
        path.write_text(secret.hex())
        path.chmod(0o600)
    for _ in range(2):
        done = motus("telemetry", "read", "--vehicle", str(devnet.car.vehicle_id), "--rpc",
                     devnet.nodes[1].url, "--private-key-file", str(owner_file))
        assert len(json.loads(done.stdout)["records"]) >= 4
    refused = motus("telemetry", "read", "--vehicle", str(devnet.car.vehicle_id), "--rpc",
                    devnet.nodes[1].url, "--private-key-file", str(stranger_file), check=False)
    assert refused.returncode == 1 and json.loads(refused.stdout)["code"] == "denied"
    # a request missing its audience says what to add
    old_style = {k: v for k, v in devnet.read(key).items() if k not in ("nodeId", "nonce")}
    with pytest.raises(RuntimeError) as info:
        rpc(devnet.nodes[1].url, "motus_getTelemetry", [old_style])
    assert info.value.args[0]["code"] == -32602 and "nodeId" in info.value.args[0]["message"]


# --- 3. each permission bit ---------------------------------------------------------------


def test_a_developer_sees_exactly_what_each_bit_opens(devnet: Devnet) -> None:
    developers = {name: Account.from_key(bytes([0x50 + i]) * 32)
                  for i, name in enumerate(BITS)}
    devnet.grant({bytes.fromhex(a.address[2:]): BITS[n] for n, a in developers.items()})
    sent = devnet.sent

    def view(name: str) -> list[dict[str, Any]]:
        key = bytes(developers[name].key)
        return rpc(devnet.nodes[1].url, "motus_getTelemetry", [devnet.read(key)])["records"]

    records = view("non_location_history")
    assert [r["id"] for r in records] == [hexs(r.id) for r in sent]
    assert all(r["signals"]["soc"] == 64.0 and "lat" not in r["signals"] and r["cell"] is None
               and r["payload"] is None for r in records)
    records = view("location_history")  # location alone: no longer refused
    assert all(r["location"] == "exact" and "soc" not in r["signals"] for r in records)
    assert [(r["signals"]["lat"], r["cell"]) for r in records] == [
        (s.signals["lat"], hex(s.attestation.cell)) for s in sent]
    records = view("approximate_location")
    assert all(r["location"] == "approximate" and r["cell"] is not None
               and "soc" not in r["signals"] for r in records)
    assert all(r["signals"]["lat"] != s.signals["lat"] for r, s in zip(records, sent, strict=True))
    records = view("current_location")
    assert [r["location"] for r in records] == ["none"] * (len(sent) - 1) + ["exact"]
    records = view("raw_data")  # raw bytes only where everything is visible: here nothing
    assert all(r["payload"] is None and r["signals"] == {} for r in records)
    # live data opens no stored record (there is no live stream yet)
    key = bytes(developers["live_data"].key)
    assert refusal(devnet.nodes[1].url, devnet.read(key)) == "denied"


# --- 4. a mid-epoch sale ----------------------------------------------------------------


def test_a_sale_splits_data_access_and_the_epoch_reward(devnet: Devnet) -> None:
    car, nodes = devnet.car, devnet.nodes
    seller, buyer_acct = car.owner, fleet.dev_accounts()[9]
    buyer, buyer_key = buyer_acct
    assert buyer != seller
    developer = Account.from_key(b"\x61" * 32)
    devnet.grant({bytes.fromhex(developer.address[2:]): BITS["non_location_history"]})
    # start early in an epoch so that the sale and the data around it share it
    wait_until(lambda: (int(rpc(nodes[0].url, "eth_blockNumber"), 16) - 1) % EPOCH < EPOCH // 4,
             90, "an epoch to begin")
    before = devnet.readings(4, int(time.time() * 1000) - 5_000)
    devnet.send(before)
    devnet.heights(before)
    # the sale comes after the seller's last reading by the device's own clock
    time.sleep(max(0.0, before[-1].attestation.timestamp_ms / 1000 - time.time() + 0.2))
    tx = fleet.queue_calls(nodes[0].url, car.owner_key, IDENTITY, [encode_call(
        load_abi("identity"), "transferFrom", hexs(seller), hexs(buyer), car.vehicle_id)])[0]
    receipt = wait_for_receipt(nodes[0].url, tx, 30)
    assert int(receipt["status"], 16) == 1
    block = rpc(nodes[0].url, "eth_getBlockByNumber", [receipt["blockNumber"], False])
    sold_s = int(block["timestamp"], 16)  # the period starts at the header's exact ms
    after = devnet.readings(5, max((sold_s + 1) * 1000, devnet.drive.timestamp_ms + 1_000))
    devnet.send(after)
    devnet.heights(after)

    def ids(answer: dict[str, Any]) -> list[str]:
        return [r["id"] for r in answer["records"]]

    earlier = [hexs(r.id) for r in devnet.sent + before]
    seen: list[Any] = []

    def buyer_reads() -> dict[str, Any] | None:
        seen.append(rpc(nodes[1].url, "motus_getTelemetry", [devnet.read(buyer_key)]))
        return seen[-1] if len(seen[-1]["records"]) == len(after) else None

    try:
        buyer_view = wait_until(buyer_reads, 15, "the buyer's records on validator 1")
    except AssertionError:
        raise AssertionError(f"buyer sees {[r['timestampMs'] for r in seen[-1]['records']]} "
                             f"{seen[-1]['periods']}; before "
                             f"{[r.attestation.timestamp_ms for r in before]}; sold at {sold_s} s, after "
                             f"{[r.attestation.timestamp_ms for r in after]}") from None
    assert ids(buyer_view) == [hexs(r.id) for r in after]
    assert not set(ids(buyer_view)) & set(earlier)  # none of the seller's history
    assert [p["owner"] for p in buyer_view["periods"]] == [hexs(buyer)]
    sold_ms = buyer_view["periods"][0]["fromMs"]
    assert sold_ms // 1000 == sold_s
    assert all(r.attestation.timestamp_ms < sold_ms for r in before)
    seller_view = rpc(nodes[1].url, "motus_getTelemetry", [devnet.read(car.owner_key)])
    assert ids(seller_view) == earlier  # the seller keeps its own, and only its own
    assert seller_view["records"][0]["location"] == "exact"
    # the seller's developer: its grant ended with the sale
    dev_key = bytes(developer.key)
    assert refusal(nodes[1].url, devnet.read(dev_key)) == "denied"
    # the buyer asking only for the seller's time
    assert refusal(nodes[1].url, devnet.read(buyer_key, to_ms=sold_ms - 1)) == "period_mismatch"

    # the reward of each epoch with this car's data, split by who produced it there
    # everything sent before the sale was produced in the seller's period
    owner_of = {att_id: seller for att_id in devnet.included} | {r.id: buyer for r in after}
    epochs = {(h - 1) // EPOCH for h in devnet.included.values()}
    last = max(epochs)
    wait_until(lambda: int(rpc(nodes[1].url, "eth_blockNumber"), 16) > (last + 1) * EPOCH + 1,
             90, "the epochs to be settled")
    split_seen = False
    for epoch in sorted(epochs):
        got = rpc(nodes[1].url, "motus_getRewards", [car.vehicle_id, epoch, epoch])["rewards"]
        assert len(got) == 1, got
        counts = {seller: 0, buyer: 0}
        for att_id, height in devnet.included.items():
            if (height - 1) // EPOCH == epoch:
                counts[owner_of[att_id]] += 1
        reward = int(got[0]["reward"])
        shares = [(bytes.fromhex(s["owner"][2:]), int(s["amount"])) for s in got[0]["shares"]]
        if reward:
            assert shares == compute_owner_split(reward, list(counts.items()), buyer)
            split_seen |= all(counts.values())
    assert split_seen, f"no paid epoch held both owners' data: {epochs}"
