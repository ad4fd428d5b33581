"""Webhook targets, conditions and persistence (node/webhooks.py), and a stream's
backpressure (node/rpc/streams.py), against real identity state and real LevelDB."""

from __future__ import annotations

import time

import h3.api.basic_int as h3
import pytest
import trio

from codec.developer import verify_webhook_signature, webhook_signature
from devnet.device import Device
from node.access import AccessContext, Credential, live_access
from node.config import WebhooksSection
from node.rpc.streams import STREAM_QUEUE_LIMIT, TelemetryStreams
from node.rpc.websocket import WebSocketSession
from node.signal_store import TelemetryAccessError, sign_request
from node.webhooks import (
    MAX_LOG,
    TargetPolicy,
    WebhookError,
    WebhookService,
    backoff_ms,
    evaluate,
    parse_condition,
)

CHAIN_ID = 7077
NODE = "12D3KooWTestNodeW"
HISTORY, CURRENT, LIVE, APPROX = 1 << 0, 1 << 2, 1 << 5, 1 << 7


def code_of(fn, *args) -> str:
    with pytest.raises(WebhookError) as exc:
        fn(*args)
    return exc.value.code


def test_only_targets_the_operator_allows():
    nothing = TargetPolicy.parse([])
    assert code_of(nothing.check_url, "http://127.0.0.1:8000/x") == "target_not_allowed"
    local = TargetPolicy.parse(["127.0.0.1", "hooks.example.com"])
    assert local.check_url("http://127.0.0.1:8000/x?a=1") == ("http", "127.0.0.1", 8000, "/x?a=1")
    assert local.check_url("https://hooks.example.com/in")[1:3] == ("hooks.example.com", 443)
    for url in ("http://10.0.0.1/", "http://169.254.169.254/latest/meta-data",
                "http://[::1]/", "http://127.0.0.2/"):
        assert code_of(local.check_url, url) == "target_not_allowed"
    for url in ("ftp://127.0.0.1/", "http://user:pw@127.0.0.1/", "http://127.0.0.1/#f",
                "not a url", "http://" + "a" * 3000):
        assert code_of(local.check_url, url) == "bad_webhook"
    # a host name not listed resolves at delivery, and must land in an allowed network
    assert trio.run(local.address_for, "localhost", 80) == "127.0.0.1"
    other = TargetPolicy.parse(["10.0.0.0/8"])
    with pytest.raises(WebhookError):
        trio.run(other.address_for, "localhost", 80)


def test_signature_header_round_trip():
    body = b'{"seq":1}'
    header = webhook_signature(b"k" * 32, 1_000_000, body)
    assert verify_webhook_signature(b"k" * 32, header, body, 1_000_000)
    assert not verify_webhook_signature(b"k" * 32, header, body + b" ", 1_000_000)
    assert not verify_webhook_signature(b"x" * 32, header, body, 1_000_000)
    assert not verify_webhook_signature(b"k" * 32, header, body, 1_000_000 + 300_001)
    assert not verify_webhook_signature(b"k" * 32, "garbage", body, 1_000_000)


def test_retry_schedule_doubles_to_its_cap():
    limits = WebhooksSection(retry_initial_ms=1_000, retry_max_ms=300_000)
    assert [backoff_ms(n, limits) for n in (1, 2, 3, 9, 10, 100)] == [
        1_000, 2_000, 4_000, 256_000, 300_000, 300_000]


def test_conditions_need_the_bits_and_precision_they_use():
    fine = hex(h3.latlng_to_cell(48.137, 11.575, 9))
    coarse = hex(h3.latlng_to_cell(48.137, 11.575, 6))
    fence = {"type": "geofence", "event": "enter", "cells": [fine]}
    assert parse_condition(fence, LIVE | CURRENT, 7)["resolution"] == 9  # exact: any
    assert code_of(parse_condition, fence, LIVE | APPROX, 7) == "precision_not_allowed"
    assert parse_condition(fence | {"cells": [coarse]}, LIVE | APPROX, 7)["resolution"] == 6
    assert code_of(parse_condition, fence, LIVE | HISTORY, 7) == "no_location_permission"
    threshold = {"type": "threshold", "signal": "soc", "op": "<", "value": 20}
    assert code_of(parse_condition, threshold, LIVE | CURRENT, 7) == "bad_condition"
    assert parse_condition(threshold, LIVE | HISTORY, 7) == threshold
    for bad in ({"type": "threshold", "signal": "soc", "op": "~", "value": 1},
                {"type": "threshold", "signal": "lat", "op": "<", "value": 1},
                {"type": "trip", "event": "jump"}, {"type": "geofence", "event": "enter",
                                                    "cells": ["0x1"]}, {"type": "x"}, []):
        assert code_of(parse_condition, bad, LIVE | HISTORY | CURRENT, 7) == "bad_condition"


def test_conditions_fire_on_edges():
    def shown(**signals):
        return {"signals": signals, "location": "exact" if "lat" in signals else "none",
                "cell": None}

    state: dict = {}
    cond = {"type": "threshold", "signal": "soc", "op": "<", "value": 20}
    fired = [evaluate(cond, shown(soc=v), state) is not None for v in (30, 19, 18, 25, 10)]
    assert fired == [False, True, False, False, True]
    state = {}
    trip = {"type": "trip", "event": "start"}
    fired = [evaluate(trip, shown(speed_kmh=v), state) for v in (0, 0, 12, 30, 0, 5)]
    assert [f is not None for f in fired] == [False, False, True, False, False, True]
    state = {}
    home = h3.latlng_to_cell(48.137, 11.575, 9)
    fence = {"type": "geofence", "event": "exit", "resolution": 9, "cells": [hex(home)]}
    lat, lon = h3.cell_to_latlng(home)
    far = (lat + 0.05, lon)
    fired = [evaluate(fence, shown(lat=a, lon=b), state) for a, b in
             ((lat, lon), (lat, lon), far, far, (lat, lon), far)]
    assert [f is not None for f in fired] == [False, False, True, False, False, True]
    state = {}
    change = {"type": "change", "signal": "soc"}
    fired = [evaluate(change, shown(soc=v), state) for v in (50, 50, 49, 49, 48)]
    assert [f is not None for f in fired] == [True, False, True, False, True]


@pytest.fixture
def chain():
    from tests.vm.test_telemetry_fleet import Fleet

    fleet = Fleet(1)
    dev, vid = fleet.devices[0], fleet.vehicle_ids[0]
    _, owner_key = fleet.owner_of[dev.address]
    return fleet, dev, vid, owner_key


def owner_live_access(fleet, vid, key):
    now = fleet.chain.head.timestamp_ms
    request = sign_request(key, CHAIN_ID, NODE, vid, now - 1_000, now, now)
    return live_access(fleet.chain.state(), Credential("request", request=request),
                       AccessContext(CHAIN_ID, NODE, now))


def reading(dev: Device, vid: int, ts: int, soc: float):
    return dev.attest(vehicle_id=vid, timestamp_ms=ts, lat=48.137154, lon=11.576124,
                      odometer_m=1_000, signals={"soc": soc})


def test_registrations_and_logs_survive_a_restart_and_stay_bounded(chain, tmp_path):
    fleet, dev, vid, owner_key = chain
    limits = WebhooksSection(allowed_targets=["127.0.0.1"])

    def service():
        return WebhookService(tmp_path / "webhooks", limits, fleet.chain.state, lambda: 7)

    svc = service()
    access = owner_live_access(fleet, vid, owner_key)
    hook, secret = svc.register(access, access.periods[0].bits, "http://127.0.0.1:9/h",
                                {"type": "change", "signal": "soc"}, 1)
    t0 = fleet.chain.head.timestamp_ms
    rs = [reading(dev, vid, t0 + i * 1_000, 50.0 + i) for i in range(5)]
    svc.on_signals([(r.raw, r.payload) for r in rs])
    assert hook.next_seq == 6 and hook.cursor == 1
    svc.close()
    again = service()
    [back] = again.hooks.values()
    assert back.id == hook.id and back.secret == "0x" + secret.hex() and back.next_seq == 6
    log = again.deliveries(back, 1, 100)
    assert [d["seq"] for d in log] == [1, 2, 3, 4, 5] and all(d["status"] == "pending"
                                                               for d in log)
    assert [d["body"]["trigger"]["value"] for d in log] == [50.0, 51.0, 52.0, 53.0, 54.0]
    # an undelivered backlog of MAX_LOG disables the webhook rather than drop events
    more = [reading(dev, vid, t0 + (10 + i) * 1_000, 100.0 + i) for i in range(MAX_LOG)]
    again.on_signals([(r.raw, r.payload) for r in more])
    assert not back.enabled and back.disabled_reason == "backlog_full"
    assert back.next_seq - back.cursor == MAX_LOG
    # delivered events give way to new ones: the log keeps at most MAX_LOG
    back.cursor = back.next_seq
    again.set_enabled(back, True)
    again.on_signals([(r.raw, r.payload) for r in [reading(dev, vid, t0 + 5_000_000, 1.0)]])
    assert back.next_seq - back.first_kept <= MAX_LOG
    assert code_of(again.replay, back, back.first_kept - 1) == "replay_out_of_range"
    again.close()


def test_a_revoked_grant_disables_a_webhook_at_the_next_block(chain, tmp_path):
    fleet, dev, vid, owner_key = chain
    from eth_account import Account

    developer = Account.from_key(b"\x71" * 32)
    fleet.identity.send(owner_key, "grantPermissions", vid, developer.address,
                        LIVE | HISTORY, 2**40)
    svc = WebhookService(tmp_path / "webhooks", WebhooksSection(allowed_targets=["127.0.0.1"]),
                         fleet.chain.state, lambda: 7)
    access = owner_live_access(fleet, vid, bytes(developer.key))
    hook, _ = svc.register(access, access.periods[0].bits, "http://127.0.0.1:9/h",
                           {"type": "change", "signal": "soc"}, 1)
    svc.on_commit()
    assert hook.enabled
    fleet.identity.send(owner_key, "revokePermissions", vid, developer.address)
    svc.on_commit()
    assert not hook.enabled and hook.disabled_reason == "revoked"
    svc.close()


def test_a_slow_stream_drops_and_counts_never_blocks(chain):
    fleet, dev, vid, owner_key = chain

    class Node:  # the attributes TelemetryStreams reads, from the real chain
        chain_id = CHAIN_ID
        peer_id = NODE
        attestations = None

        class app:  # noqa: N801
            head_state = staticmethod(fleet.chain.state)

    async def main():
        session = WebSocketSession(None, "127.0.0.1", None, None, 1 << 20)  # nobody reads
        streams = TelemetryStreams(Node())
        now = fleet.chain.head.timestamp_ms
        wall = int(time.time() * 1000)  # streams check requests against the wall clock
        request = sign_request(owner_key, CHAIN_ID, NODE, vid, wall - 1_000, wall, wall)
        stream = streams.open(session, "0xsub", Credential("request", request=request), vid,
                              None)
        session.subscriptions["0xsub"] = object()
        t0 = now
        rs = [reading(dev, vid, t0 + i * 1_000, 50.0) for i in range(STREAM_QUEUE_LIMIT + 40)]
        streams.on_signals([(r.raw, r.payload) for r in rs])
        assert session.queued() == STREAM_QUEUE_LIMIT and not session.closing
        assert stream.sent == STREAM_QUEUE_LIMIT and stream.dropped == 40

    trio.run(main)


def test_a_stream_needs_live_data(chain):
    fleet, dev, vid, owner_key = chain
    from eth_account import Account

    developer = Account.from_key(b"\x72" * 32)
    fleet.identity.send(owner_key, "grantPermissions", vid, developer.address, HISTORY, 2**40)
    with pytest.raises(TelemetryAccessError) as exc:
        owner_live_access(fleet, vid, bytes(developer.key))
    assert exc.value.code == "no_live_data"
    stranger = Account.from_key(b"\x73" * 32)
    with pytest.raises(TelemetryAccessError) as exc:
        owner_live_access(fleet, vid, bytes(stranger.key))
    assert exc.value.code == "denied"


def test_a_bad_ca_file_stops_the_node_with_a_clear_error(tmp_path):
    from node.config import Config, ConfigError
    from node.webhooks import tls_context
    from tests.tls import make_ca_and_certs

    ca_file, signed, _ = make_ca_and_certs(tmp_path / "tls")
    assert tls_context(ca_file).cert_store_stats()["x509_ca"] >= 1
    (tmp_path / "junk.pem").write_text("not a certificate")
    for bad in (tmp_path / "missing.pem", tmp_path / "junk.pem"):
        with pytest.raises(ConfigError, match="webhooks.ca_file"):
            tls_context(bad)
    with pytest.raises(ConfigError, match="webhooks.ca_file must be a string"):
        Config.from_dict({"webhooks": {"ca_file": 1}})
    assert Config.from_dict({"webhooks": {"ca_file": "tls/ca.pem"}}).webhooks.ca_file == "tls/ca.pem"
