"""Off-chain signal store: verification against the attestation, indexes, retention, and
the motus_getTelemetry access rule against real identity permissions."""

from __future__ import annotations

import msgpack
import pytest
from eth_account import Account

from devnet.device import Device
from node.signal_store import (
    DAY_MS,
    SignalStore,
    SignalStoreError,
    TelemetryAccessError,
    get_telemetry,
    sign_request,
)
from vm.attestation import VERSION, Attestation, compute_commitment

CHAIN_ID = 7077
T0 = 1_700_000_000_000


def reading(dev: Device, vid: int, ts: int, **signals):
    return dev.attest(vehicle_id=vid, timestamp_ms=ts, lat=48.137154, lon=11.576124,
                      odometer_m=1_000, signals=signals)


@pytest.fixture
def store(tmp_path):
    s = SignalStore(str(tmp_path / "signals"), CHAIN_ID, retention_days=30)
    yield s
    s.close()


def test_put_get_query_and_dedupe(store):
    dev = Device.generate(CHAIN_ID, seed=b"signals")
    rs = [reading(dev, 5, T0 + i * 1_000, soc=80 - i) for i in range(5)]
    other = reading(Device.generate(CHAIN_ID, seed=b"other"), 6, T0 + 2_000, soc=1)
    for r in rs + [other]:
        assert store.put(r.raw, r.payload) == r.id
    assert store.put(rs[0].raw, rs[0].payload) == rs[0].id  # idempotent
    got = store.get(rs[1].id)
    assert got.payload == rs[1].payload and got.signals["soc"] == 79 and got.vehicle_id == 5
    assert [x.id for x in store.query(5, T0 + 1_000, T0 + 3_000)] == [r.id for r in rs[1:4]]
    assert [x.id for x in store.query(6, 0, 2**63)] == [other.id]
    assert store.query(5, T0 + 3_000, T0 + 1_000) == []
    assert store.latest(5).id == rs[-1].id


def test_payload_must_match_the_attestation(store):
    dev = Device.generate(CHAIN_ID, seed=b"signals")
    r = reading(dev, 5, T0, soc=80)
    cases = [
        (r.raw, r.payload + b"\x00", "hash_mismatch"),
        (r.raw[:-1] + bytes([r.raw[-1] ^ 1]), r.payload, "bad_attestation"),
    ]
    # a device that hashed a non-canonical payload: signed, hash matches, still refused
    loose = msgpack.packb({"z": 1, "a": 2})
    att = dev.sign(Attestation(VERSION, dev.address, 5, 99, T0 // 1000, 0x871F8D7A4FFFFFF, 0,
                               compute_commitment(loose), b""))
    cases.append((att.encode(), loose, "bad_payload"))
    for raw, payload, code in cases:
        with pytest.raises(SignalStoreError) as exc:
            store.put(raw, payload)
        assert exc.value.code == code
    assert store.query(5, 0, 2**63) == []


def test_prune_deletes_everything_older_than_retention(store):
    dev = Device.generate(CHAIN_ID, seed=b"prune")
    old = reading(dev, 5, T0, soc=1)
    new = reading(dev, 5, T0 + 20 * DAY_MS, soc=2)
    store.put(old.raw, old.payload)
    store.put(new.raw, new.payload)
    assert store.prune(T0 + 31 * DAY_MS) == 1
    assert store.get(old.id) is None and store.get(new.id) is not None
    assert [x.id for x in store.query(5, 0, 2**63)] == [new.id]
    assert store.prune(T0 + 31 * DAY_MS) == 0


# --- access rule ----------------------------------------------------------------------

BIT = {"history": 1 << 0, "current": 1 << 2, "location_history": 1 << 3, "approximate": 1 << 7}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.vm.test_telemetry_fleet import Fleet

    fleet = Fleet(1)
    dev, vid = fleet.devices[0], fleet.vehicle_ids[0]
    owner_addr, owner_key = fleet.owner_of[dev.address]
    grantees = {}
    for i, bits in enumerate([BIT["history"], BIT["history"] | BIT["approximate"],
                              BIT["history"] | BIT["current"],
                              BIT["history"] | BIT["location_history"], BIT["location_history"]]):
        acct = Account.from_key(bytes([i + 1]) * 32)
        fleet.identity.send(owner_key, "grantPermissions", vid, acct.address, bits, 2**40)
        grantees[bits] = bytes(acct.key)
    store = SignalStore(str(tmp_path_factory.mktemp("acl") / "signals"), CHAIN_ID)
    rs = [reading(dev, vid, T0 + i * 1_000, soc=90 - i) for i in range(3)]
    for r in rs:
        store.put(r.raw, r.payload)
    yield fleet, store, vid, owner_key, grantees, rs
    store.close()


def ask(world, key, now=T0 + 10_000, ts=None, frm=T0, to=T0 + 10_000):
    fleet, store, vid, *_ = world
    request = sign_request(key, CHAIN_ID, vid, frm, to, now if ts is None else ts)
    return get_telemetry(store, fleet.chain.state(), request, now)


@pytest.mark.parametrize("who,locations", [
    ("owner", ["exact", "exact", "exact"]),
    ("history", ["none", "none", "none"]),
    ("history+approximate", ["approximate"] * 3),
    ("history+current", ["none", "none", "exact"]),
    ("history+location_history", ["exact"] * 3),
])
def test_location_signals_follow_the_permission_held(world, who, locations):
    _, _, _, owner_key, grantees, rs = world
    bits = {"history": BIT["history"], "history+approximate": BIT["history"] | BIT["approximate"],
            "history+current": BIT["history"] | BIT["current"],
            "history+location_history": BIT["history"] | BIT["location_history"]}
    key = owner_key if who == "owner" else grantees[bits[who]]
    answer = ask(world, key)
    assert [a["location"] for a in answer] == locations
    for a, r in zip(answer, rs, strict=True):
        assert a["id"] == "0x" + r.id.hex() and a["signals"]["soc"] == r.signals["soc"]
        if a["location"] == "exact":
            assert a["signals"]["lat"] == r.signals["lat"]
            assert a["payload"] == "0x" + r.payload.hex()  # verifiable against the commitment
            assert compute_commitment(r.payload) == r.attestation.commitment
        else:
            # the salt and the fine cell go with the location: with them a reader could
            # brute-force the position against the public commitment
            assert not {"salt", "cell"} & set(a["signals"])
        if a["location"] == "approximate":
            assert a["signals"]["lat"] != r.signals["lat"]
            assert abs(a["signals"]["lat"] - r.signals["lat"]) < 0.02
            assert a["payload"] is None
        elif a["location"] == "none":
            assert "lat" not in a["signals"] and "lon" not in a["signals"] and a["payload"] is None


@pytest.mark.parametrize("case,code", [
    ("no data permission", "denied"),
    ("stranger", "denied"),
    ("old request", "stale_request"),
    ("future request", "stale_request"),
    ("range backwards", "bad_request"),
    ("range too long", "bad_request"),
])
def test_refused_requests(world, case, code):
    _, _, _, owner_key, grantees, _ = world
    kwargs = {
        "no data permission": dict(key=grantees[BIT["location_history"]]),
        "stranger": dict(key=b"\x77" * 32),
        "old request": dict(key=owner_key, ts=T0 + 10_000 - 60_001),
        "future request": dict(key=owner_key, ts=T0 + 10_000 + 60_001),
        "range backwards": dict(key=owner_key, frm=T0 + 5, to=T0),
        "range too long": dict(key=owner_key, frm=0, to=T0),
    }[case]
    with pytest.raises(TelemetryAccessError) as exc:
        ask(world, **kwargs)
    assert exc.value.code == code


def test_request_signed_for_another_vehicle_is_not_reused(world):
    fleet, store, vid, owner_key, _, _ = world
    request = sign_request(owner_key, CHAIN_ID, vid, T0, T0 + 10_000, T0 + 10_000)
    forged = type(request)(vid + 1, request.from_ms, request.to_ms, request.timestamp_ms,
                           request.signature)
    with pytest.raises(TelemetryAccessError) as exc:
        get_telemetry(store, fleet.chain.state(), forged, T0 + 10_000)
    assert exc.value.code == "denied"  # recovers some other address, which holds nothing
