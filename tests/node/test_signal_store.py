"""Off-chain signal store: verification against the attestation, indexes, retention, and
the motus_getTelemetry access rule against real identity permissions."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from eth_account import Account

from devnet.device import Device
from node.signal_store import (
    DAY_MS,
    SignalStore,
    SignalStoreError,
    TelemetryAccessError,
    UsedNonces,
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

BIT = {"history": 1 << 0, "current": 1 << 2, "location_history": 1 << 3, "live": 1 << 5,
       "raw": 1 << 6, "approximate": 1 << 7}
NODE = "12D3KooWTestNodeA"


def grant_set(*names):
    return sum(BIT[n] for n in names)


GRANTS = [("history",), ("history", "approximate"), ("history", "current"),
          ("history", "location_history"), ("location_history",), ("approximate",),
          ("history", "location_history", "raw"), ("live",), ("raw",)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.vm.test_telemetry_fleet import Fleet

    fleet = Fleet(1)
    dev, vid = fleet.devices[0], fleet.vehicle_ids[0]
    owner_addr, owner_key = fleet.owner_of[dev.address]
    grantees = {}
    for i, names in enumerate(GRANTS):
        acct = Account.from_key(bytes([i + 1]) * 32)
        fleet.identity.send(owner_key, "grantPermissions", vid, acct.address, grant_set(*names),
                            2**40)
        grantees[names] = bytes(acct.key)
    store = SignalStore(str(tmp_path_factory.mktemp("acl") / "signals"), CHAIN_ID)
    rs = [reading(dev, vid, T0 + i * 1_000, soc=90 - i) for i in range(3)]
    for r in rs:
        store.put(r.raw, r.payload)
    yield fleet, store, vid, owner_key, grantees, rs
    store.close()


def ask(world, key, now=T0 + 10_000, ts=None, frm=T0, to=T0 + 10_000, node=NODE, nonces=None,
        state=None):
    fleet, store, vid, *_ = world
    request = sign_request(key, CHAIN_ID, node, vid, frm, to, now if ts is None else ts)
    return get_telemetry(store, state or fleet.chain.state(), request, now, node_id=NODE,
                         nonces=nonces)


@pytest.mark.parametrize("who,locations,cells,non_location,raw", [
    ("owner", ["exact"] * 3, True, True, True),
    (("history",), ["none"] * 3, False, True, False),
    (("history", "approximate"), ["approximate"] * 3, True, True, False),
    (("history", "current"), ["none", "none", "exact"], None, True, False),
    (("history", "location_history"), ["exact"] * 3, True, True, False),
    (("location_history",), ["exact"] * 3, True, False, False),
    (("approximate",), ["approximate"] * 3, True, False, False),
    (("history", "location_history", "raw"), ["exact"] * 3, True, True, True),
    (("raw",), ["none"] * 3, False, False, False),
], ids=["owner", "history", "history+approximate", "history+current",
        "history+location_history", "location_history", "approximate",
        "history+location_history+raw", "raw"])
def test_each_permission_bit_opens_what_it_names(world, who, locations, cells, non_location,
                                                 raw):
    """docs/privacy.md, "Who can read what": the bit table, row by row."""
    _, _, _, owner_key, grantees, rs = world
    key = owner_key if who == "owner" else grantees[who]
    answer = ask(world, key)
    records = answer["records"]
    assert [a["location"] for a in records] == locations
    assert answer["coverage"] == {"complete": True, "missing": []}
    for a, r in zip(records, rs, strict=True):
        assert a["id"] == "0x" + r.id.hex()
        assert ("soc" in a["signals"]) == non_location
        if non_location:
            assert a["signals"]["soc"] == r.signals["soc"]
        if cells is not None:
            assert (a["cell"] is not None) == cells
        if a["location"] == "exact":
            assert (a["signals"]["lat"], a["signals"]["lon"]) == (r.signals["lat"],
                                                                  r.signals["lon"])
            assert a["cell"] == hex(r.attestation.cell)
        elif a["location"] == "approximate":
            assert a["signals"]["lat"] != r.signals["lat"]
            assert abs(a["signals"]["lat"] - r.signals["lat"]) < 0.02
        else:
            assert "lat" not in a["signals"] and "lon" not in a["signals"]
            assert a["cell"] is None
        if a["location"] != "exact":
            # the salt and the fine cell go with the location: with them a reader could
            # brute-force the position against the public commitment
            assert not {"salt", "cell"} & set(a["signals"])
        # the raw bytes, verifiable against the commitment, only with raw_data and a full view
        assert (a["payload"] == "0x" + r.payload.hex()) if raw else a["payload"] is None
        if raw:
            assert compute_commitment(r.payload) == r.attestation.commitment


@pytest.mark.parametrize("case,code", [
    ("live data only", "denied"),
    ("stranger", "denied"),
    ("old request", "expired"),
    ("future request", "expired"),
    ("range backwards", "bad_request"),
    ("range too long", "bad_request"),
    ("another node", "wrong_audience"),
])
def test_refused_requests(world, case, code):
    _, _, _, owner_key, grantees, _ = world
    kwargs = {
        "live data only": dict(key=grantees[("live",)]),
        "stranger": dict(key=b"\x77" * 32),
        "old request": dict(key=owner_key, ts=T0 + 10_000 - 60_001),
        "future request": dict(key=owner_key, ts=T0 + 10_000 + 60_001),
        "range backwards": dict(key=owner_key, frm=T0 + 5, to=T0),
        "range too long": dict(key=owner_key, frm=0, to=T0),
        "another node": dict(key=owner_key, node="12D3KooWTestNodeB"),
    }[case]
    with pytest.raises(TelemetryAccessError) as exc:
        ask(world, **kwargs)
    assert exc.value.code == code


def test_request_signed_for_another_vehicle_is_not_reused(world):
    fleet, store, vid, owner_key, _, _ = world
    request = sign_request(owner_key, CHAIN_ID, NODE, vid, T0, T0 + 10_000, T0 + 10_000)
    forged = dataclasses.replace(request, vehicle_id=vid + 1)
    with pytest.raises(TelemetryAccessError) as exc:
        get_telemetry(store, fleet.chain.state(), forged, T0 + 10_000, node_id=NODE)
    assert exc.value.code == "denied"  # recovers some other address, which holds nothing


def test_a_request_is_answered_once_and_refusals_use_no_nonce(world):
    fleet, store, vid, owner_key, grantees, _ = world
    nonces = UsedNonces()
    request = sign_request(owner_key, CHAIN_ID, NODE, vid, T0, T0 + 10_000, T0 + 10_000)
    assert len(get_telemetry(store, fleet.chain.state(), request, T0 + 10_000, node_id=NODE,
                             nonces=nonces)["records"]) == 3
    for now in (T0 + 10_000, T0 + 70_000):  # replayed within the window, and at its end
        with pytest.raises(TelemetryAccessError) as exc:
            get_telemetry(store, fleet.chain.state(), request, now, node_id=NODE, nonces=nonces)
        assert exc.value.code == "replayed"
    with pytest.raises(TelemetryAccessError) as exc:  # past the window: expired, not replayed
        get_telemetry(store, fleet.chain.state(), request, T0 + 70_001, node_id=NODE,
                      nonces=nonces)
    assert exc.value.code == "expired"
    denied = sign_request(grantees[("live",)], CHAIN_ID, NODE, vid, T0, T0 + 10_000, T0 + 10_000)
    with pytest.raises(TelemetryAccessError):
        get_telemetry(store, fleet.chain.state(), denied, T0 + 10_000, node_id=NODE,
                      nonces=nonces)
    assert len(nonces) == 1  # the refusal recorded nothing


def test_used_nonces_are_bounded_per_signer_and_overall():
    nonces = UsedNonces(per_signer=2, total=3)
    a, b = b"\xaa" * 20, b"\xbb" * 20
    for i in range(2):
        nonces.check(a, bytes([i]) * 16, T0)
        nonces.use(a, bytes([i]) * 16, T0, T0)
    with pytest.raises(TelemetryAccessError) as exc:
        nonces.check(a, b"\x09" * 16, T0)
    assert exc.value.code == "too_many_requests"
    nonces.use(b, b"\x01" * 16, T0, T0)
    with pytest.raises(TelemetryAccessError) as exc:
        nonces.check(b, b"\x02" * 16, T0)
    assert exc.value.code == "busy"
    nonces.check(a, b"\x09" * 16, T0 + 60_001)  # expired entries are forgotten
    assert len(nonces) == 0


def test_records_belong_to_the_ownership_period_that_produced_them(tmp_path):
    """The buyer reads none of the seller's records, the seller keeps its own, and the
    seller's developer loses its access on transfer."""
    from tests.vm.test_telemetry_fleet import Fleet

    fleet = Fleet(1)
    chain, dev, vid = fleet.chain, fleet.devices[0], fleet.vehicle_ids[0]
    seller, seller_key = fleet.owner_of[dev.address]
    buyer, buyer_key = chain.accounts[9]
    developer = Account.from_key(b"\x42" * 32)
    fleet.identity.send(seller_key, "grantPermissions", vid, developer.address, 1, 2**40)
    sold_at = chain.head.timestamp_ms + 10_000
    with SignalStore(str(tmp_path / "signals"), CHAIN_ID) as store:
        before = [reading(dev, vid, sold_at - 5_000 + i * 1_000, soc=i) for i in range(3)]
        for r in before:
            store.put(r.raw, r.payload)
        while chain.head.timestamp_ms < sold_at:
            chain.block()
        fleet.identity.send(seller_key, "transferFrom", "0x" + seller.hex(), "0x" + buyer.hex(),
                            vid)
        start = chain.head.timestamp_ms // 1000 * 1000
        after = [reading(dev, vid, start + 1_000 + i * 1_000, soc=10 + i) for i in range(2)]
        for r in after:
            store.put(r.raw, r.payload)
        now = start + 10_000
        frm, to = sold_at - 60_000, now

        def read(key):
            request = sign_request(key, CHAIN_ID, NODE, vid, frm, to, now)
            return get_telemetry(store, chain.state(), request, now, node_id=NODE)

        seller_view, buyer_view = read(seller_key), read(buyer_key)
        assert [r["id"] for r in seller_view["records"]] == ["0x" + r.id.hex() for r in before]
        assert [r["id"] for r in buyer_view["records"]] == ["0x" + r.id.hex() for r in after]
        assert [p["owner"] for p in seller_view["periods"]] == ["0x" + seller.hex()]
        assert [p["owner"] for p in buyer_view["periods"]] == ["0x" + buyer.hex()]
        with pytest.raises(TelemetryAccessError) as exc:
            read(bytes(developer.key))
        assert exc.value.code == "denied"  # the grant ended with the transfer
        request = sign_request(buyer_key, CHAIN_ID, NODE, vid, frm, start - 1, now)
        with pytest.raises(TelemetryAccessError) as exc:  # only the seller's time asked
            get_telemetry(store, chain.state(), request, now, node_id=NODE)
        assert exc.value.code == "period_mismatch"
        # the buyer's developer reads the buyer's records only
        fleet.identity.send(buyer_key, "grantPermissions", vid, developer.address, 1, 2**40)
        assert [r["id"] for r in read(bytes(developer.key))["records"]] == [
            "0x" + r.id.hex() for r in after]


def test_coverage_names_included_records_whose_payload_is_not_here(world, tmp_path):
    fleet, _, vid, owner_key, _, rs = world
    with SignalStore(str(tmp_path / "partial"), CHAIN_ID) as store:
        store.put(rs[0].raw, rs[0].payload)
        assert store.note_included([(r.id, vid, r.attestation.timestamp_ms) for r in rs]) == 2
        answer = get_telemetry(store, fleet.chain.state(), sign_request(
            owner_key, CHAIN_ID, NODE, vid, T0, T0 + 10_000, T0 + 10_000), T0 + 10_000,
            node_id=NODE)
        assert len(answer["records"]) == 1
        assert answer["coverage"] == {"complete": False,
                                      "missing": ["0x" + r.id.hex() for r in rs[1:]]}
        store.put(rs[1].raw, rs[1].payload)  # the payload arrives: no longer missing
        assert store.missing(vid, T0, T0 + 10_000, 10) == [rs[2].id]
        assert store.prune(T0 + 31 * DAY_MS) == 3
        assert store.missing(vid, 0, 2**62, 10) == []
