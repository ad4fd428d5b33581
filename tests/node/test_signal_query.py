"""The query API (node/signal_query.py) and the credential choke point (node/access.py)
over a real LevelDB signal store and real identity state: aggregates from the minute
index equal the brute-force answer over the records, pages cover a range exactly once,
coverage tells held from missing from empty from pruned, and a standing access ends
with a revocation, an expiry or a sale, each with its own code."""

from __future__ import annotations

import random

import pytest
from eth_account import Account

from devnet.device import Device
from node.access import AccessContext, Credential, Scope, authorize, recheck
from node.signal_query import Cursor, aggregate, catalogue, coverage, latest, page
from node.signal_store import (
    DAY_MS,
    MINUTE_MS,
    SignalStore,
    TelemetryAccessError,
    UsedNonces,
    numeric_signals,
    sign_request,
)

CHAIN_ID = 7077
NODE = "12D3KooWTestNodeQ"
T0 = 1_700_000_000_000 + 20_000  # mid-minute: windows start and end inside minutes
LIVE, HISTORY = 1 << 5, 1 << 0


def reading(dev: Device, vid: int, ts: int, **signals):
    return dev.attest(vehicle_id=vid, timestamp_ms=ts, lat=48.137154, lon=11.576124,
                      odometer_m=1_000, signals=signals)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.vm.test_telemetry_fleet import Fleet

    fleet = Fleet(1)
    dev, vid = fleet.devices[0], fleet.vehicle_ids[0]
    _, owner_key = fleet.owner_of[dev.address]
    store = SignalStore(str(tmp_path_factory.mktemp("query") / "signals"), CHAIN_ID)
    rng = random.Random(7)
    rs = []
    # 300 readings over ~13 minutes, at uneven times, then a gap, then 20 more
    ts = T0
    for i in range(300):
        ts += rng.randint(1_000, 5_000)
        rs.append(reading(dev, vid, ts, soc=round(rng.uniform(10, 90), 2), speed_kmh=i % 50,
                          ok=True))
    gap_end = ts + 30 * MINUTE_MS
    for i in range(20):
        rs.append(reading(dev, vid, gap_end + i * 2_000, soc=50.0 + i, speed_kmh=0))
    for r in rs:
        store.put(r.raw, r.payload)
    yield fleet, store, vid, owner_key, rs
    store.close()


def owner_access(world, frm, to, now=None):
    fleet, store, vid, owner_key, _ = world
    now = to if now is None else now
    request = sign_request(owner_key, CHAIN_ID, NODE, vid, frm, to, now)
    return authorize(fleet.chain.state(), Credential("request", request=request),
                     AccessContext(CHAIN_ID, NODE, now))


def brute_force(rs, frm, to, interval):
    out: dict[int, dict[str, list[float]]] = {}
    for r in rs:
        ts = r.attestation.timestamp_ms
        if frm <= ts <= to:
            sigs = numeric_signals(__import__("vm.attestation", fromlist=["x"])
                                   .decode_signals(r.payload))
            for name, value in sigs.items():
                out.setdefault(ts - ts % interval, {}).setdefault(name, []).append((ts, value))
    return {b: {n: {"min": min(v for _, v in vals), "max": max(v for _, v in vals),
                    "avg": sum(v for _, v in vals) / len(vals), "last": max(vals)[1],
                    "count": len(vals)} for n, vals in sigs.items()}
            for b, sigs in out.items()}


@pytest.mark.parametrize("interval", [MINUTE_MS, 5 * MINUTE_MS, 60 * MINUTE_MS])
@pytest.mark.parametrize("edges", ["inside", "whole"])
def test_aggregates_from_the_minute_index_equal_the_records(world, interval, edges):
    _, store, _, _, rs = world
    first, last = rs[0].attestation.timestamp_ms, rs[-1].attestation.timestamp_ms
    frm, to = (first + 7_777, last - 3_333) if edges == "inside" else (first - DAY_MS, last + DAY_MS)
    access = owner_access(world, frm, to, now=last + 1_000)
    got = aggregate(store, access, interval)
    want = brute_force(rs, frm, to, interval)
    assert [i["fromMs"] for i in got["intervals"]] == sorted(want)
    for item in got["intervals"]:
        expect = want[item["fromMs"]]
        assert item["signals"].keys() == expect.keys() == {"soc", "speed_kmh", "odometer_m",
                                                            "speed_cmps", "timestamp_ms"}
        for name, agg in item["signals"].items():
            assert agg["count"] == expect[name]["count"]
            assert agg["min"] == expect[name]["min"] and agg["max"] == expect[name]["max"]
            assert agg["last"] == expect[name]["last"]
            assert agg["avg"] == pytest.approx(expect[name]["avg"])


def test_aggregate_refuses_bad_intervals(world):
    _, store, _, _, rs = world
    access = owner_access(world, T0, T0 + DAY_MS)
    for interval in (0, 59_999, 90_000):
        with pytest.raises(TelemetryAccessError) as exc:
            aggregate(store, access, interval)
        assert exc.value.code == "bad_request"
    with pytest.raises(TelemetryAccessError):  # 1440 minutes of a day fit; 10 days don't
        aggregate(store, owner_access(world, T0, T0 + 10 * DAY_MS), MINUTE_MS)


def test_the_index_is_rebuilt_for_a_store_written_before_it(world, tmp_path):
    _, _, _, _, rs = world
    path = str(tmp_path / "old")
    with SignalStore(path, CHAIN_ID) as store:
        for r in rs[:50]:
            store.put(r.raw, r.payload)
        for key, _ in store._db.iterator(prefix=b"m"):
            store._db.delete(key)
        store._db.delete(b"M")
    with SignalStore(path, CHAIN_ID) as store:
        frm, to = T0, rs[49].attestation.timestamp_ms
        got = aggregate(store, owner_access(world, frm, to), MINUTE_MS)
        assert sum(i["signals"]["soc"]["count"] for i in got["intervals"]) == 50


def test_pages_cover_the_range_once_in_order(world):
    _, store, _, _, rs = world
    frm, to = rs[10].attestation.timestamp_ms, rs[-5].attestation.timestamp_ms
    access = owner_access(world, frm, to)
    seen, cursor = [], None
    for _ in range(100):
        got = page(store, access, cursor, limit=7, names=frozenset({"soc"}))
        assert all(set(r["signals"]) <= {"soc"} for r in got["records"])
        seen += [r["id"] for r in got["records"]]
        if got["nextCursor"] is None:
            break
        cursor = Cursor.decode(got["nextCursor"])
    assert seen == ["0x" + r.id.hex() for r in rs[10:-4]]
    with pytest.raises(TelemetryAccessError):
        Cursor.decode("12:nothex")


def test_latest_value_per_signal(world):
    _, store, _, _, rs = world
    access = owner_access(world, T0, rs[-1].attestation.timestamp_ms)
    got = latest(store, access)
    assert got["complete"] and got["signals"]["soc"]["value"] == 69.0
    assert got["signals"]["ok"]["id"] == "0x" + rs[299].id.hex()  # only the first 300 have it
    assert latest(store, access, frozenset({"nope"}))["signals"] == {}


def test_coverage_tells_held_missing_empty_and_pruned(world, tmp_path):
    fleet, _, vid, _, rs = world
    with SignalStore(str(tmp_path / "cov"), CHAIN_ID, retention_days=1) as store:
        held = rs[:40]
        for r in held:
            store.put(r.raw, r.payload)
        lost = rs[-1]
        store.note_included([(lost.id, vid, lost.attestation.timestamp_ms)])
        frm = held[0].attestation.timestamp_ms - held[0].attestation.timestamp_ms % MINUTE_MS
        to = lost.attestation.timestamp_ms
        access = owner_access(world, frm, to)
        got = coverage(store, access, MINUTE_MS, now_ms=to)
        statuses = [r["status"] for r in got["intervals"]]
        assert statuses == ["held", "empty", "missing"]
        assert got["intervals"][0]["records"] == 40 and got["intervals"][-1]["missing"] == 1
        assert not got["complete"]
        later = coverage(store, access, MINUTE_MS, now_ms=to + 2 * DAY_MS)
        assert [r["status"] for r in later["intervals"]] == ["pruned"]


def test_a_scope_outside_the_signed_range_is_refused(world):
    fleet, _, vid, owner_key, _ = world
    request = sign_request(owner_key, CHAIN_ID, NODE, vid, T0, T0 + 1_000, T0)
    for scope in (Scope(vid, T0 - 1, T0 + 1_000), Scope(vid, T0, T0 + 1_001),
                  Scope(vid + 1, T0, T0 + 1_000)):
        with pytest.raises(TelemetryAccessError) as exc:
            authorize(fleet.chain.state(), Credential("request", request=request),
                      AccessContext(CHAIN_ID, NODE, T0, UsedNonces()), scope)
        assert exc.value.code == "bad_request"
    token = Credential("token", token=b"\x01")
    with pytest.raises(TelemetryAccessError) as exc:
        authorize(fleet.chain.state(), token, AccessContext(CHAIN_ID, NODE, T0))
    assert exc.value.code == "bad_request"


def test_catalogue_lists_units_and_the_vehicles_signals(world):
    _, store, _, _, rs = world
    assert catalogue()["signals"]["soc"]["unit"] == "%"
    got = catalogue(store, owner_access(world, T0, rs[-1].attestation.timestamp_ms))
    assert {"soc", "speed_kmh"} <= set(got["vehicle"]["numericSignals"])


def test_a_standing_access_ends_with_revocation_expiry_and_sale():
    from tests.vm.test_telemetry_fleet import Fleet

    fleet = Fleet(1)
    chain, dev, vid = fleet.chain, fleet.devices[0], fleet.vehicle_ids[0]
    seller, seller_key = fleet.owner_of[dev.address]
    buyer, _ = chain.accounts[9]
    devs = {n: Account.from_key(bytes([0x70 + i]) * 32) for i, n in
            enumerate(("live", "nolive", "short"))}
    now_s = chain.head.timestamp_ms // 1000
    for name, bits, expiry in (("live", LIVE | HISTORY, 2**40), ("nolive", HISTORY, 2**40),
                               ("short", LIVE | HISTORY, now_s + 100)):
        fleet.identity.send(seller_key, "grantPermissions", vid, devs[name].address, bits, expiry)
    now = chain.head.timestamp_ms

    def access_of(key):
        request = sign_request(key, CHAIN_ID, NODE, vid, now - 1_000, now, now)
        return authorize(chain.state(), Credential("request", request=request),
                         AccessContext(CHAIN_ID, NODE, now))

    def code(access, at=now):
        with pytest.raises(TelemetryAccessError) as exc:
            recheck(chain.state(), access, at)
        return exc.value.code

    owner = access_of(seller_key)
    live, nolive, short = (access_of(bytes(devs[n].key)) for n in ("live", "nolive", "short"))
    assert recheck(chain.state(), live, now) == LIVE | HISTORY
    assert code(nolive) == "no_live_data"
    assert recheck(chain.state(), short, now) and code(short, (now_s + 100) * 1000) == \
        "expired_grant"
    fleet.identity.send(seller_key, "revokePermissions", vid, devs["live"].address)
    assert code(live) == "revoked"
    assert recheck(chain.state(), owner, now) > 0
    fleet.identity.send(seller_key, "transferFrom", "0x" + seller.hex(), "0x" + buyer.hex(), vid)
    assert code(owner) == "vehicle_transferred"
    assert code(short) == "vehicle_transferred"
