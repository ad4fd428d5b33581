"""Telemetry attestations end to end on real node processes (docs/telemetry.md).

One validator with short epochs (10 blocks of 200 ms, every device challenged, the
whole epoch as challenge window) and one non-validator follower connected by p2p.
Vehicles are minted, claimed and paired through transactions (devnet.fleet's setup).
The module's tests run in file order and share that chain:

1. honest drives submitted with their payloads are admitted and included;
2. spoofed attestations (forged signature, replay, teleport, backdated, future-dated,
   oversized, non-canonical, too frequent, odometer rollback, unpaired and unknown
   device) are each refused with their code, counted, and never in a block;
3. epoch counters in state (motus_getEpochStats and eth_call of the telemetry ABI) match
   what was included;
4. a challenged device answers with its nonce and passes;
5. a permissioned developer reads the signals, an unpermissioned one is refused;
6. a garbage burst from one client does not stop an honest device;
7. attestations submitted to the follower reach the validator by gossip and are included;
   the proposals reach the follower in compact form and are rebuilt from its pool.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_hash.auto import keccak

from codec.files import write_atomic
from devnet import fleet
from devnet.device import Device, Drive
from node.config import Config
from node.signal_store import request_json, sign_request
from p2p.identity import load_or_create_node_key, node_multiaddr, peer_id_of
from rpcclient.txsend import decode_result, encode_call, eth_call
from tests.procs import NodeProcess, free_port, init_home, motus, rpc, wait_until
from vm.attestation import Attestation, compute_commitment

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("attest_node"), pytest.mark.timeout(180)]

CHAIN_ID = 7077
SEED = "e2e attestations"
GENESIS_PARAMS = {
    "epoch_length_blocks": 10,
    "challenge_fraction_bps": 10_000,  # every device is challenged
    "challenge_window_bps": 10_000,  # for the whole epoch
}
IDENTITY = "0x00000000000000000000000000000000004d0703"
TELEMETRY = "0x00000000000000000000000000000000004d0704"
START = (48.137, 11.575)
LOCATION_HISTORY = (1 << 0) | (1 << 3)  # non-location history + location history


def abi(name: str) -> list[dict[str, Any]]:
    return json.loads((Path(__file__).resolve().parents[2] / "vm" / "abi" / f"{name}.json")
                      .read_text())


def rpc_error(url: str, method: str, params: list[Any]) -> dict[str, Any]:
    """The error object of a call that must fail."""
    with pytest.raises(RuntimeError) as info:
        rpc(url, method, params)
    return info.value.args[0]


def rpc_from(url: str, source: str, method: str, params: list[Any], timeout: float = 60) -> Any:
    """A call from another loopback address: another client for the node (rate limits,
    pool quotas)."""
    port = int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0))
    try:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        conn.request("POST", "/", body, {"Content-Type": "application/json"})
        doc = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    if "error" in doc:
        raise RuntimeError(doc["error"])
    return doc["result"]


def scrape(url: str) -> str:
    """The node's /metrics page."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def hexs(data: bytes) -> str:
    return "0x" + data.hex()


# --- the chain --------------------------------------------------------------------------


@dataclass
class Chain:
    validator: NodeProcess
    follower: NodeProcess
    cars: list[fleet.Car]
    drives: dict[int, Drive]
    honest: dict[int, list[bytes]]  # car index -> included attestation ids
    unpaired: Device

    @property
    def url(self) -> str:
        return self.validator.url

    def readings(self, car: fleet.Car, count: int, *, start_ms: int | None = None,
                 step_ms: int = 1_000) -> list[Any]:
        """The car's next ``count`` honest readings, ``step_ms`` apart (from ``start_ms``,
        else from its last reading)."""
        drive = self.drives[car.index]
        if start_ms is not None:
            drive.timestamp_ms = max(drive.timestamp_ms, start_ms - step_ms)
        return list(drive.readings(car.device, car.vehicle_id, count, step_ms,
                                   signals={"soc": 77.5}))

    def submit(self, readings: list[Any], url: str | None = None) -> list[dict[str, Any]]:
        return rpc(url or self.url, "motus_submitAttestations",
                   [[hexs(r.raw) for r in readings], [hexs(r.payload) for r in readings]])

    def wait_included(self, ids: list[bytes], url: str | None = None,
                      timeout: float = 20) -> list[int]:
        """Heights at which ``ids`` were included (waits for all of them)."""
        def heights() -> list[int] | None:
            out = []
            for att_id in ids:
                st = rpc(url or self.url, "motus_getAttestation", [hexs(att_id)])
                if st is None or st["status"] != "included":
                    return None
                out.append(st["height"])
            return out

        return wait_until(heights, timeout, f"{len(ids)} attestations to be included")


def write_genesis_params(home: Path) -> None:
    genesis = home / "genesis.json"
    doc = json.loads(genesis.read_text())
    doc["params"].update(GENESIS_PARAMS)
    genesis.write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("attest_e2e")
    home = init_home(root, "validator")
    write_genesis_params(home)
    p2p_port = free_port()
    peer = peer_id_of(load_or_create_node_key(home / "keys" / "node.key"))
    validator = NodeProcess(home, p2p_port=p2p_port).start()
    follower_home = root / "follower"
    motus("init", "--home", str(follower_home), "--genesis", str(home / "genesis.json"))
    cfg = Config.load(follower_home / "config.toml")
    cfg.p2p.bootstrap = [node_multiaddr("127.0.0.1", p2p_port, peer)]
    write_atomic(follower_home / "config.toml", cfg.to_toml().encode(), mode=0o644)
    follower = NodeProcess(follower_home)
    try:
        follower.start()
        validator.wait_height(1)
        cars = fleet.setup_fleet(validator.url, fleet.plan_fleet(SEED, 4, CHAIN_ID, 7))
        assert [c.vehicle_id for c in cars] == [1, 2, 3, 4]
        # a device claimed by car 0's owner but paired with nothing
        unpaired = Device(fleet.device_key(SEED, 99), CHAIN_ID)
        manufacturer_key = fleet.dev_accounts()[fleet.MANUFACTURER_ACCOUNT][1]
        fleet.send_batches(validator.url, IDENTITY, [(manufacturer_key, [
            encode_call(abi("identity"), "mintDevice", hexs(unpaired.address))])])
        deadline = int(time.time()) + 600
        owner = cars[0]
        fleet.send_batches(validator.url, IDENTITY, [(owner.owner_key, [encode_call(
            abi("identity"), "claimDevice", hexs(unpaired.address), 0, deadline,
            unpaired.claim_signature(owner.owner, 0, deadline))])])
        drives = {c.index: Drive(START[0] + 0.02 * c.index, START[1], heading_deg=30.0 * c.index,
                                 odometer_m=50_000 + c.index) for c in cars}
        yield Chain(validator, follower, cars, drives, {}, unpaired)
    finally:
        follower.stop()
        validator.stop()


# --- 1. honest drives -----------------------------------------------------------------


def test_honest_drives_are_admitted_and_included(chain: Chain) -> None:
    now = int(time.time() * 1000)
    readings = {c.index: chain.readings(c, 20, start_ms=now - 60_000) for c in chain.cars[:2]}
    batch = readings[0] + readings[1]
    results = chain.submit(batch)
    assert [r["code"] for r in results] == ["ok"] * len(batch)
    assert all(r["accepted"] for r in results)
    assert [r["id"] for r in results] == [hexs(r.id) for r in batch]
    heights = chain.wait_included([r.id for r in batch])
    for index, rs in readings.items():
        chain.honest[index] = [r.id for r in rs]
    # the block shows them, decoded, in the order they were sent
    first = rpc(chain.url, "motus_getBlockAttestations", [heights[0]])
    in_block = [a for a in first if a["vehicleId"] == chain.cars[0].vehicle_id]
    assert in_block and in_block[0]["id"] == hexs(batch[0].id)
    assert in_block[0]["seq"] == batch[0].attestation.seq
    assert in_block[0]["device"] == chain.cars[0].device_hex
    assert in_block[0]["raw"] == hexs(batch[0].raw)
    # the exact bytes again, once included: a replay
    assert chain.submit(batch[:1])[0] == {"id": hexs(batch[0].id), "accepted": False,
                                          "code": "replay"}


# --- 2. spoofed attestations ---------------------------------------------------------------


def _spoofs(chain: Chain) -> list[tuple[str, bytes]]:
    """(expected code, wire bytes) of attestations a cheating device or a forger sends
    for car 0, whose last accepted reading is the last of test 1."""
    car = chain.cars[0]
    dev = car.device
    drive = chain.drives[car.index]
    last_ts, last_odo = drive.timestamp_ms, drive.odometer_m
    lat, lon = drive.lat, drive.lon
    now = int(time.time() * 1000)

    def next_reading(**kw: Any) -> Any:
        args = {"vehicle_id": car.vehicle_id, "timestamp_ms": last_ts + 5_000, "lat": lat,
                "lon": lon, "odometer_m": last_odo + 60, "speed_cmps": 1_200}
        args.update(kw)
        return dev.attest(**args)

    out = []
    honest_next = next_reading()  # the shape of a valid next reading (never sent as is)
    forger = Device(keccak(b"forger"), CHAIN_ID)
    forged = forger.sign(honest_next.attestation._replace(seq=dev.seq + 1, signature=b""))
    out.append(("bad_signature", forged.encode()))
    dev.seq -= 2  # a seq at or below the last accepted one
    out.append(("replay", next_reading(timestamp_ms=last_ts + 6_000).raw))
    dev.seq += 2
    out.append(("implausible_speed", next_reading(lat=lat + 1.0).raw))  # 111 km in 5 s
    out.append(("stale", next_reading(timestamp_ms=now - 400_000).raw))
    out.append(("future", next_reading(timestamp_ms=now + 60_000).raw))
    out.append(("too_frequent", next_reading(timestamp_ms=last_ts).raw))  # the same second
    out.append(("odometer_rollback", next_reading(odometer_m=last_odo - 500).raw))
    oversized = next_reading().raw + b"\x00" * 100
    out.append(("malformed", oversized))
    canonical = next_reading().raw
    assert canonical[:2] == b"\x9a\x02"
    out.append(("malformed", b"\x9a\xcc\x02" + canonical[2:]))  # version as uint8: not shortest
    out.append(("not_paired", chain.unpaired.attest(
        vehicle_id=car.vehicle_id, timestamp_ms=last_ts + 5_000, lat=lat, lon=lon,
        odometer_m=last_odo + 60).raw))
    stranger = Device(keccak(b"never minted"), CHAIN_ID)
    out.append(("unknown_device", stranger.attest(
        vehicle_id=car.vehicle_id, timestamp_ms=last_ts + 5_000, lat=lat, lon=lon,
        odometer_m=last_odo + 60).raw))
    return out


def test_spoofed_attestations_are_refused_with_their_code_and_never_included(
        chain: Chain) -> None:
    before = rpc(chain.url, "motus_getRejectCounts")
    spoofs = _spoofs(chain)
    results = rpc(chain.url, "motus_submitAttestations", [[hexs(raw) for _, raw in spoofs]])
    assert [(r["accepted"], r["code"]) for r in results] == [(False, c) for c, _ in spoofs]
    assert [r["id"] for r in results] == [hexs(keccak(raw)) for _, raw in spoofs]
    for (code, raw) in spoofs:
        assert rpc(chain.url, "motus_getAttestation", [hexs(keccak(raw))]) == {
            "status": "rejected", "code": code}
    after = rpc(chain.url, "motus_getRejectCounts")
    for code in {c for c, _ in spoofs}:
        assert after[code] - before[code] == sum(c == code for c, _ in spoofs), code
    # an honest reading of the same device still gets in afterwards
    car = chain.cars[0]
    chain.drives[car.index].timestamp_ms += 5_000  # past the spoofs' timestamps
    honest = chain.readings(car, 1)
    assert chain.submit(honest)[0]["code"] == "ok"
    chain.wait_included([honest[0].id])
    chain.honest[0].append(honest[0].id)
    # no spoof in any block; every honest attestation in one
    head = int(rpc(chain.url, "eth_blockNumber"), 16)
    in_blocks = {a["id"] for h in range(1, head + 1)
                 for a in rpc(chain.url, "motus_getBlockAttestations", [h])}
    assert not in_blocks & {hexs(keccak(raw)) for _, raw in spoofs}
    assert {hexs(i) for ids in chain.honest.values() for i in ids} <= in_blocks
    # Prometheus: one counter per reject code
    metrics = scrape(chain.url)
    found = re.search(r'^motus_attestation_rejects_total\{code="implausible_speed"\} (\S+)$',
                      metrics, re.M)
    assert found and float(found.group(1)) == after["implausible_speed"]
    assert re.search(r"^motus_attestations_accepted_total (\S+)$", metrics, re.M)


def test_submit_limits_and_bad_params(chain: Chain) -> None:
    err = rpc_error(chain.url, "motus_submitAttestations", [["0x00"] * 1001])
    assert err["code"] == -32005
    err = rpc_error(chain.url, "motus_submitAttestations", [["0x0", "zz"]])
    assert err["code"] == -32602 and "item 0" in err["message"]
    reading = chain.readings(chain.cars[1], 1)[0]  # refused below: a gap in seq, harmless
    err = rpc_error(chain.url, "motus_submitAttestations",
                    [[hexs(reading.raw)], [hexs(reading.payload + b"\x00")]])
    assert err["code"] == -32602 and err["data"]["reason"] == "hash_mismatch"
    assert rpc(chain.url, "motus_getAttestation", [hexs(reading.id)]) is None  # not admitted
    assert rpc(chain.url, "motus_getAttestation", [hexs(b"\x01" * 32)]) is None


# --- 3. epoch counters ------------------------------------------------------------------------


def test_epoch_counters_in_state_match_what_was_included(chain: Chain) -> None:
    telemetry_abi = abi("telemetry")
    for car in chain.cars[:2]:
        ids = chain.honest[car.index]
        heights = chain.wait_included(ids)
        stats = rpc(chain.url, "motus_getEpochStats", [car.vehicle_id, None, max(heights)])
        current = stats["epoch"]
        total = distance = 0
        for epoch in range(current + 1):
            s = rpc(chain.url, "motus_getEpochStats", [car.vehicle_id, epoch, max(heights)])
            out = eth_call(chain.url, TELEMETRY, encode_call(telemetry_abi, "getVehicleEpoch",
                                                             epoch, car.vehicle_id),
                           block=max(heights))
            accepted, dist, moving, challenged, passed = decode_result(
                telemetry_abi, "getVehicleEpoch", 2, out)
            assert (s["accepted"], s["distanceM"], s["moving"], s["challenged"],
                    s["challengePassed"]) == (accepted, dist, moving, challenged, passed)
            assert s["moving"] <= s["accepted"]
            total += s["accepted"]
            distance += s["distanceM"]
        assert total == len(ids)
        drive = chain.drives[car.index]
        assert 0 < distance <= drive.odometer_m - (50_000 + car.index)


# --- 4. challenges ----------------------------------------------------------------------------


def test_challenged_device_answers_with_its_nonce_and_passes(chain: Chain) -> None:
    car = chain.cars[1]
    for _ in range(10):
        c = rpc(chain.url, "motus_getChallenge", [car.device_hex])
        assert c["challenged"] and len(bytes.fromhex(c["nonce"][2:])) == 8
        if c["windowEnd"] - c["blockNumber"] < 4:  # too close to the end: next epoch
            time.sleep(0.2)
            continue
        car.device.answer_challenge(bytes.fromhex(c["nonce"][2:]))
        reading = chain.readings(car, 1, start_ms=int(time.time() * 1000))[0]
        car.device.answer_challenge(b"")
        assert reading.attestation.challenge == bytes.fromhex(c["nonce"][2:])
        assert chain.submit([reading])[0]["code"] == "ok"
        (height,) = chain.wait_included([reading.id])
        chain.honest[car.index].append(reading.id)
        if height >= c["windowEnd"]:
            continue  # the block fell into the next epoch: try again
        stats = rpc(chain.url, "motus_getEpochStats", [car.vehicle_id, c["epoch"]])
        assert stats["challenged"] and stats["challengePassed"]
        other = rpc(chain.url, "motus_getEpochStats", [chain.cars[0].vehicle_id, c["epoch"]])
        assert not other["challengePassed"]
        return
    pytest.fail("no epoch left room to answer the challenge")


# --- 5. reading the signals -------------------------------------------------------------------


def test_permissioned_developer_reads_signals_and_unpermissioned_is_refused(
        chain: Chain) -> None:
    from genesis.devnet import dev_accounts

    car = chain.cars[0]
    developer, developer_key = dev_accounts()[0]
    stranger_key = dev_accounts()[1][1]
    expiry = int(time.time()) + 3_600
    fleet.send_batches(chain.url, IDENTITY, [(car.owner_key, [encode_call(
        abi("identity"), "grantPermissions", car.vehicle_id, hexs(developer), LOCATION_HISTORY,
        expiry)])])
    now = int(time.time() * 1000)
    node_id = rpc(chain.url, "motus_nodeStatus")["peerId"]

    def request(key: bytes) -> dict[str, Any]:
        return request_json(sign_request(key, CHAIN_ID, node_id, car.vehicle_id, now - 600_000,
                                         now, now))

    got = rpc(chain.url, "motus_getTelemetry", [request(developer_key)])
    records = got["records"]
    assert [r["id"] for r in records] == [hexs(i) for i in chain.honest[0]]
    first = records[0]
    assert first["location"] == "exact" and {"lat", "lon", "soc"} <= set(first["signals"])
    assert first["signals"]["soc"] == 77.5
    assert first["payload"] is None  # the raw bytes need raw_data
    owner_view = rpc(chain.url, "motus_getTelemetry", [request(car.owner_key)])["records"][0]
    payload = bytes.fromhex(owner_view["payload"][2:])
    block_atts = {a["id"]: a for h in chain.wait_included(chain.honest[0][:1])
                  for a in rpc(chain.url, "motus_getBlockAttestations", [h])}
    assert block_atts[first["id"]]["commitment"] == hexs(compute_commitment(payload))
    err = rpc_error(chain.url, "motus_getTelemetry", [request(stranger_key)])
    assert err["code"] == -32000 and err["data"]["code"] == "denied"
    stale = request(developer_key) | {"timestampMs": now - 120_000}
    err = rpc_error(chain.url, "motus_getTelemetry", [stale])
    assert err["data"]["code"] in ("bad_signature", "expired")


# --- 6. a garbage burst -----------------------------------------------------------------------


def test_garbage_burst_from_one_client_does_not_stop_an_honest_device(chain: Chain) -> None:
    template = chain.readings(chain.cars[2], 1, start_ms=int(time.time() * 1000))[0]
    forged = []
    for i in range(1_000):  # well-formed, low s, but recovering nobody's key: full work
        att: Attestation = template.attestation._replace(seq=10_000 + i)
        signature = keccak(b"r%d" % i) + b"\x00" + keccak(b"s%d" % i)[:31] + b"\x00"
        forged.append(att._replace(signature=signature).encode())
    garbage = [hexs(keccak(b"g%d" % i) * (1 + i % 5)) for i in range(1_000)]
    calls = [garbage, [hexs(f) for f in forged]] * 3
    before = rpc(chain.url, "motus_getRejectCounts")
    started = threading.Event()

    def burst(items: list[str]) -> list[dict[str, Any]]:
        started.set()
        return rpc_from(chain.url, "127.0.0.2", "motus_submitAttestations", [items])

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(burst, items) for items in calls]
        started.wait(5)
        honest = chain.readings(chain.cars[2], 3, start_ms=int(time.time() * 1000))
        t0 = time.monotonic()
        results = chain.submit(honest)
        answered_in = time.monotonic() - t0
        assert [r["code"] for r in results] == ["ok"] * 3
        chain.wait_included([r.id for r in honest], timeout=30)
        chain.honest[2] = [r.id for r in honest]
        outcomes = [f.result() for f in futures]
    assert answered_in < 10
    for items, out in zip(calls, outcomes, strict=True):
        assert len(out) == len(items) and not any(r["accepted"] for r in out)
        assert {r["code"] for r in out} <= {"malformed", "bad_signature", "throttled"}
    after = rpc(chain.url, "motus_getRejectCounts")
    # Fair admission (docs/rpc.md): the client's first call is checked (its credit of
    # refused items is one call); once it has used it up, its further calls are refused
    # unchecked, so the flood costs the node hashes, not signature recoveries
    checked = sum(after[c] - before[c] for c in ("bad_signature", "malformed"))
    assert checked >= 1_000
    assert after["throttled"] - before["throttled"] >= 1_000


# --- 7. gossip to the proposer -----------------------------------------------------------------


def test_attestations_sent_to_a_follower_are_gossiped_and_included(chain: Chain) -> None:
    head = int(rpc(chain.url, "eth_blockNumber"), 16)
    wait_until(lambda: int(rpc(chain.follower.url, "eth_blockNumber"), 16) >= head, 30,
             "the follower to reach the validator's head")
    status = rpc(chain.follower.url, "motus_nodeStatus")
    assert status["isValidator"] is False and status["peers"] >= 1
    car = chain.cars[3]
    readings = chain.readings(car, 5, start_ms=int(time.time() * 1000) - 10_000)
    results = chain.submit(readings, url=chain.follower.url)
    assert [r["code"] for r in results] == ["ok"] * 5
    # the only proposer is the validator: it can only have them by gossip
    heights = chain.wait_included([r.id for r in readings], timeout=30)
    assert chain.wait_included([r.id for r in readings], url=chain.follower.url) == heights
    metrics = scrape(chain.url)
    items_in = re.search(r'^motus_attestation_gossip_total\{kind="items_in"\} (\S+)$', metrics,
                         re.M)
    assert items_in and float(items_in.group(1)) >= 5
    # the validator's proposals reach the follower in compact form (docs/network.md,
    # "Compact proposals"): these five by id, since they reached the validator by gossip,
    # and the follower rebuilt every block from its own pool, fetching nothing
    follower_metrics = scrape(chain.follower.url)
    rebuilt = re.search(r'^motus_compact_proposals_total\{outcome="pool"\} (\S+)$',
                        follower_metrics, re.M)
    assert rebuilt and float(rebuilt.group(1)) >= 1
    assert 'motus_compact_proposals_total{outcome="dropped"}' not in follower_metrics
    # the payloads were stored by the node they were given to (and gossiped to the others:
    # tests/node/test_ownership_e2e.py)
    stored = rpc(chain.follower.url, "motus_submitSignals",
                 [[{"attestation": hexs(readings[0].raw), "payload": hexs(readings[0].payload)}]])
    assert stored == [{"id": hexs(readings[0].id), "stored": True, "code": "ok"}]
