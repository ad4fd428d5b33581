"""Live streams and webhooks end to end (docs/developers.md): a real node process, the
fleet simulator's cars driving into it, a developer holding a live-data grant.

In file order, on one chain:

1. the query API answers what the fleet sent (latest, pages, aggregates, coverage);
2. a live stream delivers the fleet's signals for the one vehicle it names, filtered by
   the bits granted;
3. webhooks to local HTTP receivers (127.0.0.1, free ports): a receiver that answers 500
   and then hangs gets every delivery in order once it recovers, signed with the
   webhook's secret, while a healthy receiver is not slowed; the log and replay work;
   https receivers: one whose certificate the node's ``webhooks.ca_file`` CA signed gets
   its deliveries, one with a self-signed certificate is refused (``bad_certificate``)
   and retried on the retry schedule;
4. a revocation ends the stream and disables the webhooks: nothing is delivered after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from websockets.sync.client import connect

from codec.developer import SIGNATURE_HEADER, verify_webhook_signature
from devnet import fleet
from node.signal_store import request_json, sign_request
from rpcclient.txsend import encode_call
from tests.procs import NodeProcess, free_port, init_home, rpc, set_config, wait_until
from tests.tls import ServerCert, make_ca_and_certs

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("developer_e2e"),
              pytest.mark.timeout(240)]

SEED = "developer e2e"
IDENTITY = "0x00000000000000000000000000000000004d0703"
LIVE, HISTORY, APPROXIMATE = 1 << 5, 1 << 0, 1 << 7
TIMEOUT_S = 2  # [webhooks] timeout_seconds of the node
RETRY_INITIAL_MS, RETRY_MAX_MS = 200, 1_000  # [webhooks] retry_initial_ms, retry_max_ms


def identity_abi() -> list[dict[str, Any]]:
    path = Path(__file__).resolve().parents[2] / "vm" / "abi" / "identity.json"
    return json.loads(path.read_text())


@dataclass
class World:
    node: NodeProcess
    chain_id: int
    node_id: str
    cars: list[Any]
    developer: Any
    stop: threading.Event
    certs: tuple[ServerCert, ServerCert]  # signed by the node's webhooks.ca_file, self-signed
    driver: threading.Thread
    errors: list[BaseException] = field(default_factory=list)

    @property
    def car(self) -> Any:
        return self.cars[0]

    def credential(self, key: bytes | None = None, vehicle: int | None = None,
                   span_ms: int = 3_600_000) -> dict[str, Any]:
        now = int(time.time() * 1000)
        request = sign_request(key or bytes(self.developer.key), self.chain_id, self.node_id,
                               vehicle or self.car.vehicle_id, now - span_ms, now + 60_000, now)
        return {"request": request_json(request)}

    def call(self, method: str, *params: Any) -> Any:
        return rpc(self.node.url, method, list(params))

    def refusal(self, method: str, *params: Any) -> str:
        with pytest.raises(RuntimeError) as info:
            self.call(method, *params)
        error = info.value.args[0]
        assert "data" in error, error
        return error["data"]["code"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = init_home(tmp_path_factory.mktemp("developer_e2e"))
    ca_file, signed, self_signed = make_ca_and_certs(home / "tls")
    set_config(home, allowed_targets='["127.0.0.1"]', timeout_seconds=TIMEOUT_S,
               retry_initial_ms=RETRY_INITIAL_MS, retry_max_ms=RETRY_MAX_MS,
               ca_file="tls/ca.pem")  # relative: under the home
    assert ca_file == home / "tls" / "ca.pem"
    node = NodeProcess(home).start()
    stop = threading.Event()
    try:
        node.wait_height(2, timeout=60)
        chain_id = int(rpc(node.url, "eth_chainId"), 16)
        node_id = rpc(node.url, "motus_nodeStatus")["peerId"]
        resolution = fleet.chain_param(node.url, "h3_resolution")
        cars = fleet.setup_fleet(node.url, fleet.plan_fleet(SEED, 2, chain_id, resolution))
        fleet.place_cars(node.url, cars, int(time.time() * 1000))
        developer = Account.from_key(b"\x5d" * 32)
        car = cars[0]
        fleet.send_batches(node.url, IDENTITY, [(car.owner_key, [encode_call(
            identity_abi(), "grantPermissions", car.vehicle_id, developer.address,
            LIVE | HISTORY | APPROXIMATE, int(time.time()) + 3_600)])])
        world = World(node, chain_id, node_id, cars, developer, stop, (signed, self_signed),
                      threading.Thread())

        def drive() -> None:  # the fleet simulator's rounds, one a second
            tally = fleet.Tally()
            while not stop.is_set():
                try:
                    fleet.submit_round(node.url, cars, tally, interval_ms=1_000)
                except Exception as exc:  # noqa: BLE001 - reported by the tests
                    world.errors.append(exc)
                stop.wait(0.5)

        world.driver = threading.Thread(target=drive, daemon=True)
        world.driver.start()
        yield world
    finally:
        stop.set()
        node.stop()


# --- 1. the query API --------------------------------------------------------------------


def test_query_api_answers_what_the_fleet_sent(world: World) -> None:
    def enough() -> dict[str, Any] | None:
        got = world.call("motus_querySignals", world.credential(), {"limit": 3})
        return got if got["nextCursor"] is not None else None

    first = wait_until(enough, 60, "the fleet's first records")
    assert len(first["records"]) == 3 and all(r["location"] == "approximate"
                                              for r in first["records"])
    second = world.call("motus_querySignals", world.credential(),
                        {"limit": 3, "cursor": first["nextCursor"]})
    assert second["records"][0]["timestampMs"] > first["records"][-1]["timestampMs"]
    latest = world.call("motus_getLatestSignals", world.credential(), {"signals": ["soc"]})
    assert set(latest["signals"]) == {"soc"} and latest["complete"]
    agg = world.call("motus_aggregateSignals", world.credential(), {"intervalMs": 60_000,
                                                                   "signals": ["speed_kmh"]})
    assert agg["intervals"] and all(0 < i["signals"]["speed_kmh"]["min"]
                                    <= i["signals"]["speed_kmh"]["avg"]
                                    <= i["signals"]["speed_kmh"]["max"]
                                    for i in agg["intervals"])
    cov = world.call("motus_getCoverage", world.credential(), {"intervalMs": 60_000})
    statuses = {r["status"] for r in cov["intervals"]}
    assert "held" in statuses and "missing" not in statuses and "partial" not in statuses
    assert world.call("motus_getSignalCatalogue")["signals"]["soc"]["unit"] == "%"
    # a stranger: denied; the other car (no grant): denied; a bad interval: bad_request
    stranger = b"\x66" * 32
    assert world.refusal("motus_getLatestSignals", world.credential(stranger)) == "denied"
    assert world.refusal("motus_getLatestSignals",
                         world.credential(vehicle=world.cars[1].vehicle_id)) == "denied"
    assert world.refusal("motus_aggregateSignals", world.credential(),
                         {"intervalMs": 1_000}) == "bad_request"


# --- 2. a live stream ----------------------------------------------------------------------


def ws_url(world: World) -> str:
    return f"ws://127.0.0.1:{world.node.rpc_port}"


def subscribe(ws: Any, options: dict[str, Any]) -> str:
    ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                        "params": ["motus_telemetry", options]}))
    answer = json.loads(ws.recv(timeout=10))
    assert "result" in answer, answer
    return answer["result"]


def test_a_live_stream_delivers_the_fleets_signals(world: World) -> None:
    car = world.car
    with connect(ws_url(world)) as ws:
        sub = subscribe(ws, {"vehicleId": car.vehicle_id, "signals": ["soc", "speed_kmh", "lat"],
                             "credential": world.credential()})
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 4 and time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=10))
            assert msg["params"]["subscription"] == sub
            got.append(msg["params"]["result"])
    assert len(got) == 4
    assert all(r["vehicleId"] == car.vehicle_id and r["dropped"] == 0 for r in got)
    assert all(set(r["signals"]) == {"soc", "speed_kmh", "lat"} and r["location"] ==
               "approximate" and r["payload"] is None for r in got)
    times = [r["timestampMs"] for r in got]
    assert times == sorted(times) and len(set(times)) == 4
    # without the live-data bit (the other car's owner grants none): refused at subscribe
    with connect(ws_url(world)) as ws:
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "eth_subscribe", "params": [
            "motus_telemetry", {"vehicleId": world.cars[1].vehicle_id,
                                "credential": world.credential(vehicle=world.cars[1].vehicle_id)}]}))
        answer = json.loads(ws.recv(timeout=10))
        assert answer["error"]["data"]["code"] == "denied"


# --- the SDK and the example app ------------------------------------------------------------


def test_the_sdk_and_the_example_app(world: World, tmp_path: Path) -> None:
    from rpcclient.sdk import Motus, MotusError

    car = world.car
    motus = Motus(world.node.url, bytes(world.developer.key))
    shared = motus.shared_vehicles("0x" + car.owner.hex())
    assert [s["vehicleId"] for s in shared] == [car.vehicle_id]
    assert set(shared[0]["bitNames"]) == {"live_data", "non_location_history",
                                          "approximate_location"}
    now = int(time.time() * 1000)
    every = list(motus.records(car.vehicle_id, now - 3_600_000, now, ["soc"], page_size=4))
    assert len(every) >= 8 and len({r["id"] for r in every}) == len(every)
    live = []
    for record in motus.stream(car.vehicle_id, ["soc"], timeout=20):
        live.append(record)
        if len(live) == 2:
            break
    assert len(live) == 2 and all(set(r["signals"]) == {"soc"} for r in live)
    with pytest.raises(MotusError) as info:
        Motus(world.node.url, b"\x66" * 32).latest(car.vehicle_id)
    assert info.value.code == "denied"
    key_file = tmp_path / "developer.key"
    key_file.write_text(bytes(world.developer.key).hex())
    out_svg = tmp_path / "soc.svg"
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "shared_vehicles.py"
    done = subprocess.run(
        [sys.executable, str(example), "--rpc", world.node.url, "--key-file", str(key_file),
         "--owner", "0x" + car.owner.hex(), "--signal", "soc", "--minutes", "10",
         "--out", str(out_svg)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(example.parents[2])})
    assert done.returncode == 0, done.stderr
    assert "1 vehicle(s) shared" in done.stdout and f"vehicle {car.vehicle_id}:" in done.stdout
    assert "<polyline" in out_svg.read_text()


# --- 3. webhooks -----------------------------------------------------------------------------


class Receiver:
    """An HTTP receiver on 127.0.0.1: records each POST (its body, when it came, whether
    the signature checked); ``mode`` says how it answers: ok, fail (500) or hang."""

    def __init__(self, tls: ServerCert | None = None) -> None:
        self.mode = "ok"
        self.scheme = "https" if tls else "http"
        self.secret = b""
        self.got: list[tuple[float, dict[str, Any], bool, str]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                mode = receiver.mode
                signed = verify_webhook_signature(receiver.secret, self.headers[SIGNATURE_HEADER],
                                          body, int(time.time() * 1000))
                with receiver.lock:
                    receiver.got.append((time.time(), json.loads(body), signed, mode))
                if mode == "hang":
                    time.sleep(TIMEOUT_S * 3)
                    return
                self.send_response(200 if mode == "ok" else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        if tls is not None:
            # a failed handshake raises ssl.SSLError (an OSError) in accept: the server skips it
            self.server.socket = tls.server_context().wrap_socket(self.server.socket,
                                                                 server_side=True)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> list[dict[str, Any]]:
        """Bodies this receiver answered 200 to, in arrival order."""
        with self.lock:
            return [body for _, body, _, mode in self.got if mode == "ok"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    pair = (Receiver(), Receiver())
    yield pair
    for r in pair:
        r.close()


def register(world: World, receiver: Receiver) -> dict[str, Any]:
    hook = world.call("motus_registerWebhook", world.credential(),
                      {"url": receiver.url, "condition": {"type": "change", "signal": "soc"}})
    receiver.secret = bytes.fromhex(hook["secret"][2:])
    return hook


def test_a_failing_receiver_gets_everything_in_order_and_slows_nobody(
        world: World, receivers: tuple[Receiver, Receiver]) -> None:
    healthy, flaky = receivers
    # a target the operator did not allow is refused, as is a location fence without bits
    assert world.refusal("motus_registerWebhook", world.credential(), {
        "url": "http://10.1.2.3/x", "condition": {"type": "trip", "event": "start"}}) == \
        "target_not_allowed"
    assert world.refusal("motus_registerWebhook", world.credential(), {
        "url": healthy.url, "condition": {"type": "geofence", "event": "enter",
                                          "cells": [hex(0x8f1f8d7a4d2a9ff)]}}) in (
        "precision_not_allowed", "bad_condition")
    flaky.mode = "fail"
    good_hook, bad_hook = register(world, healthy), register(world, flaky)
    outage_start = time.time()
    time.sleep(3)
    flaky.mode = "hang"
    time.sleep(TIMEOUT_S * 2.5)
    outage_end = time.time()
    flaky.mode = "ok"

    # the healthy receiver kept getting its events promptly during the outage
    with healthy.lock:
        during = [(t, body) for t, body, _, _ in healthy.got if outage_start < t < outage_end]
    assert len(during) >= 3, during
    lateness = [t - body["createdMs"] / 1000 for t, body in during]
    assert max(lateness) < TIMEOUT_S, lateness
    with flaky.lock:
        modes = {mode for _, _, _, mode in flaky.got}
    assert {"fail", "hang"} <= modes  # it was tried while down

    def caught_up() -> list[dict[str, Any]] | None:
        log = world.call("motus_getWebhookDeliveries", world.credential(), bad_hook["id"],
                         {"limit": 1000})
        hook = log["webhook"]
        done = hook["cursor"] == hook["nextSeq"] and hook["nextSeq"] > 8
        return log["deliveries"] if done else None

    deliveries = wait_until(caught_up, 60, "the flaky receiver to catch up")
    assert all(d["status"] == "delivered" for d in deliveries)
    assert any(d["attempts"] > 1 and d["lastError"] in (None, "timeout") for d in deliveries)
    for receiver, hook in ((flaky, bad_hook), (healthy, good_hook)):
        seqs = [body["seq"] for body in receiver.accepted() if body["webhookId"] == hook["id"]]
        assert seqs[:len(deliveries)] == list(range(1, len(seqs) + 1))[:len(deliveries)], seqs
        with receiver.lock:
            assert all(signed for _, _, signed, _ in receiver.got)
        bodies = [b for b in receiver.accepted() if b["webhookId"] == hook["id"]]
        assert all(b["vehicleId"] == world.car.vehicle_id and b["trigger"]["type"] == "change"
                   for b in bodies)
        times = [b["record"]["timestampMs"] for b in bodies]
        assert times == sorted(times)  # in order per vehicle
    # replay: the kept events from 1 on come again, in order
    before = len(flaky.accepted())
    queued = world.call("motus_replayWebhook", world.credential(), bad_hook["id"], 1)["queued"]
    assert queued >= len(deliveries)
    again = wait_until(lambda: (lambda a: a if len(a) >= before + queued else None)(
        flaky.accepted()), 30, "the replay")
    replayed = [b["seq"] for b in again[before:before + queued]]
    assert replayed == sorted(replayed) and replayed[0] == 1
    # another address cannot read or replay this webhook
    assert world.refusal("motus_replayWebhook", world.credential(b"\x66" * 32),
                         bad_hook["id"], 1) == "not_yours"


def attempts_possible(seconds: float) -> int:
    """The most attempts of one event the retry rule allows within ``seconds``: the first
    at once, then after waits of min(retry_max_ms, retry_initial_ms x 2^(n-1))."""
    attempts, waited = 1, 0
    while True:
        waited += min(RETRY_MAX_MS, RETRY_INITIAL_MS * 2 ** (attempts - 1))
        if waited > seconds * 1000:
            return attempts
        attempts += 1


def test_https_targets_must_present_a_certificate_the_node_trusts(world: World) -> None:
    trusted, untrusted = Receiver(world.certs[0]), Receiver(world.certs[1])
    try:
        good, bad = register(world, trusted), register(world, untrusted)
        started = time.monotonic()
        assert good["url"].startswith("https://127.0.0.1:")
        wait_until(lambda: len([b for b in trusted.accepted() if b["webhookId"] == good["id"]])
                   >= 2, 30, "deliveries over https to the receiver the CA file vouches for")
        with trusted.lock:
            assert all(signed for _, _, signed, _ in trusted.got)

        def failing() -> dict[str, Any] | None:
            log = world.call("motus_getWebhookDeliveries", world.credential(), bad["id"],
                             {"limit": 10})["deliveries"]
            return log[0] if log and log[0]["attempts"] >= 3 else None

        first = wait_until(failing, 30, "three refused attempts at the self-signed receiver")
        elapsed = time.monotonic() - started
        assert first["status"] == "failing" and first["lastStatus"] is None
        assert first["lastError"].startswith("bad_certificate: "), first["lastError"]
        assert first["attempts"] <= attempts_possible(elapsed), (first, elapsed)
        with untrusted.lock:
            assert untrusted.got == []  # no request ever reached it
        for hook in (good, bad):
            world.call("motus_deleteWebhook", world.credential(), hook["id"])
    finally:
        trusted.close()
        untrusted.close()


# --- 4. revocation ---------------------------------------------------------------------------


def test_a_revocation_ends_streams_and_webhook_deliveries(
        world: World, receivers: tuple[Receiver, Receiver]) -> None:
    healthy, _ = receivers
    car = world.car
    with connect(ws_url(world)) as ws:
        sub = subscribe(ws, {"vehicleId": car.vehicle_id, "credential": world.credential()})
        assert "result" in json.loads(ws.recv(timeout=10))["params"]
        fleet.send_batches(world.node.url, IDENTITY, [(car.owner_key, [encode_call(
            identity_abi(), "revokePermissions", car.vehicle_id, world.developer.address)])])
        revoked_at = time.time()
        ended = None
        deadline = time.monotonic() + 30
        while ended is None and time.monotonic() < deadline:
            result = json.loads(ws.recv(timeout=10))["params"]["result"]
            if "ended" in result:
                ended = result
        assert ended is not None and ended["ended"] == "revoked"
        ws.send(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "eth_unsubscribe",
                            "params": [sub]}))
        assert json.loads(ws.recv(timeout=10))["result"] is False  # already ended
    hooks = world.call("motus_getWebhooks", world.credential())
    assert hooks and all(not h["enabled"] and h["disabledReason"] == "revoked" for h in hooks)
    time.sleep(1)
    count = len(healthy.accepted())
    time.sleep(4)  # the fleet keeps driving: nothing more arrives
    assert len(healthy.accepted()) == count
    assert all(b["record"]["timestampMs"] / 1000 < revoked_at + 5 for b in healthy.accepted())
    # re-enabling needs the live-data permission again
    assert world.refusal("motus_setWebhookEnabled", world.credential(), hooks[0]["id"],
                         True) == "denied"
    assert not world.errors, world.errors
