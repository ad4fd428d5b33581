"""Telemetry module: every reject code, honest and tampered drives, epochs and challenges
on a LocalChain whose devices were paired through real identity transactions."""

from __future__ import annotations

import dataclasses
import math

import h3.api.basic_int as h3
import pytest
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devnet.device import Device, Drive
from tests.harness import CHAIN_ID
from tests.vm.test_telemetry_fleet import HOME, Fleet, check_all
from vm.attestation import VERSION, Attestation, RejectCode
from vm.errors import InvalidBlock
from vm.geo import CELL_SIZE_MM, cell_distance_lower_bound_m
from vm.modules.params import set_param
from vm.modules.telemetry import (
    VehicleEpochStats,
    build_attestations,
    compute_challenge_nonce,
    epoch_vehicles,
    get_challenge,
    get_device_state,
    get_epoch_seed,
    get_vehicle_epoch,
    is_challenged,
    process_attestations,
    set_denied,
)

RES = 7
CELL = h3.latlng_to_cell(*HOME, RES)
ODO = 50_000


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    return Fleet(3, extra=1)


def make(dev: Device, vehicle_id: int, seq: int, ts: int, cell: int = CELL, odo: int = ODO,
         challenge: bytes = b"", signals: bytes = b"\x01" * 32) -> Attestation:
    """A signed attestation with every field chosen by the test; ``ts`` in ms and ``odo``
    in metres, floored to the wire's whole seconds and hectometres."""
    return dev.sign(Attestation(VERSION, dev.address, vehicle_id, seq, ts // 1000, cell,
                                odo // 100, signals, challenge))


def far_cell(k: int) -> int:
    """A cell k rings (about k * 2.4 km at res 7) from CELL."""
    return h3.grid_ring(CELL, k)[0]


# --- one row per reject code ------------------------------------------------------
# Each row: (code, build(fleet, now) -> (setup(state) or None, attestations)); all but the
# last attestation must be accepted, the last must be refused with exactly ``code``.

def _row_malformed(f, now):
    return None, [b"\x00"]


def _row_bad_signature(f, now):
    d, v = f.devices[0], f.vehicle_ids[0]
    good = make(d, v, 1, now)
    return None, [good._replace(odometer_hm=ODO // 100 + 1).encode()]


def _row_unknown_device(f, now):
    stranger = Device.generate(CHAIN_ID, seed=b"never minted")
    return None, [make(stranger, f.vehicle_ids[0], 1, now)]


def _row_not_paired_unpaired_device(f, now):
    return None, [make(f.unpaired[0], f.vehicle_ids[0], 1, now)]


def _row_not_paired_other_vehicle(f, now):
    return None, [make(f.devices[0], f.vehicle_ids[1], 1, now)]


def _row_denied(f, now):
    d = f.devices[0]
    return (lambda s: set_denied(s, d.address, True)), [make(d, f.vehicle_ids[0], 1, now)]


def _row_stale(f, now):
    return None, [make(f.devices[0], f.vehicle_ids[0], 1, now - 300_001)]


def _row_future(f, now):
    return None, [make(f.devices[0], f.vehicle_ids[0], 1, now + 11_000)]


def _row_replay(f, now):
    d, v = f.devices[0], f.vehicle_ids[0]
    return None, [make(d, v, 5, now - 10_000), make(d, v, 5, now)]


def _row_replay_lower_seq(f, now):
    d, v = f.devices[0], f.vehicle_ids[0]
    return None, [make(d, v, 5, now - 10_000), make(d, v, 4, now)]


def _row_too_frequent(f, now):
    d, v = f.devices[0], f.vehicle_ids[0]
    return None, [make(d, v, 1, now), make(d, v, 2, now)]  # the same whole second


def _row_too_frequent_backwards(f, now):
    d, v = f.devices[0], f.vehicle_ids[0]
    return None, [make(d, v, 1, now), make(d, v, 2, now - 5_000)]


def _row_bad_cell_garbage(f, now):
    return None, [make(f.devices[0], f.vehicle_ids[0], 1, now, cell=12345)]


def _row_bad_cell_resolution(f, now):
    return None, [make(f.devices[0], f.vehicle_ids[0], 1, now, cell=h3.cell_to_parent(CELL, 6))]


def _row_bad_cell_fine(f, now):
    # the old, finer resolution: the chain never takes more location than h3_resolution
    fine = h3.cell_to_children(CELL, 8)[0]
    return None, [make(f.devices[0], f.vehicle_ids[0], 1, now, cell=fine)]


def _row_implausible_speed(f, now):
    d, v = f.devices[0], f.vehicle_ids[0]
    # 20 rings (~48 km) in 10 s
    return None, [make(d, v, 1, now - 10_000),
                  make(d, v, 2, now, cell=far_cell(20), odo=ODO + 16_000)]


def _row_odometer_rollback(f, now):
    d, v = f.devices[0], f.vehicle_ids[0]
    return None, [make(d, v, 1, now - 10_000), make(d, v, 2, now, odo=ODO - 100)]


def _row_odometer_mismatch(f, now):
    d, v = f.devices[0], f.vehicle_ids[0]
    # 8 rings (>= 3 km however measured) in 300 s with the odometer +500 m
    return None, [make(d, v, 1, now - 300_000), make(d, v, 2, now, cell=far_cell(8), odo=ODO + 500)]


def _row_rate_cap(f, now):
    d, v = f.devices[0], f.vehicle_ids[0]
    return ((lambda s: set_param(s, "max_attestations_per_epoch", 2)),
            [make(d, v, 1, now - 2_000), make(d, v, 2, now - 1_000), make(d, v, 3, now)])


ROWS = [
    ("malformed", _row_malformed),
    ("bad_signature", _row_bad_signature),
    ("unknown_device", _row_unknown_device),
    ("not_paired", _row_not_paired_unpaired_device),
    ("not_paired", _row_not_paired_other_vehicle),
    ("denied", _row_denied),
    ("stale", _row_stale),
    ("future", _row_future),
    ("replay", _row_replay),
    ("replay", _row_replay_lower_seq),
    ("too_frequent", _row_too_frequent),
    ("too_frequent", _row_too_frequent_backwards),
    ("bad_cell", _row_bad_cell_garbage),
    ("bad_cell", _row_bad_cell_resolution),
    ("bad_cell", _row_bad_cell_fine),
    ("implausible_speed", _row_implausible_speed),
    ("odometer_rollback", _row_odometer_rollback),
    ("odometer_mismatch", _row_odometer_mismatch),
    ("rate_cap", _row_rate_cap),
]


@pytest.mark.parametrize("code,build", ROWS, ids=[b.__name__[5:] for _, b in ROWS])
def test_each_reject_code(fleet: Fleet, code: str, build):
    env = fleet.chain.env()
    setup, atts = build(fleet, env.timestamp_ms)
    raws = [a if isinstance(a, bytes) else a.encode() for a in atts]
    state = fleet.chain.state()
    if setup is not None:
        setup(state)
    included, results, _, _ = build_attestations(state, env, raws)
    assert [c for _, c in results] == ["ok"] * (len(raws) - 1) + [code]
    assert included == raws[:-1]
    # the same body checked as a block is refused with that code
    state = fleet.chain.state()
    if setup is not None:
        setup(state)
    with pytest.raises(InvalidBlock, match=code):
        process_attestations(state, env, raws)


def test_every_reject_code_has_a_row():
    assert {code for code, _ in ROWS} == {c.value for c in RejectCode}


def test_stale_and_future_bounds_are_inclusive(fleet: Fleet):
    env = fleet.chain.env()
    d, v = fleet.devices[1], fleet.vehicle_ids[1]
    # the wire's whole seconds nearest the bounds, inside them
    oldest = -(-(env.timestamp_ms - 300_000) // 1000) * 1000
    newest = (env.timestamp_ms + 10_000) // 1000 * 1000
    atts = [make(d, v, 1, oldest), make(d, v, 2, newest)]
    _, results, _, _ = build_attestations(fleet.chain.state(), env, [a.encode() for a in atts])
    assert [c for _, c in results] == ["ok", "ok"]


def test_odometer_anchor_expires_after_the_staleness_window(fleet: Fleet):
    """A car carried (ferry, truck) has cells far apart and a still odometer: refused while
    the previous record is fresh, accepted once it is older than attestation_stale_ms."""
    d, v = fleet.devices[1], fleet.vehicle_ids[1]
    view = fleet.view(now_ms=10**7)
    assert check_all(view, [make(d, v, 1, 10**7)]) == [None]
    view.now_ms = 10**7 + 300_000
    assert view.check(make(d, v, 2, 10**7 + 300_000, cell=far_cell(8))) == "odometer_mismatch"
    view.now_ms = 10**7 + 301_000
    assert view.check(make(d, v, 2, 10**7 + 301_000, cell=far_cell(8))) is None


def test_device_moved_to_another_vehicle_skips_odometer_rules(fleet: Fleet):
    d, v = fleet.devices[1], fleet.vehicle_ids[1]
    view = fleet.view()
    now = view.now_ms
    assert check_all(view, [make(d, v, 1, now - 5_000)]) == [None]
    # same device, its record now says vehicle 999: the odometer of the old car does not bind
    view._tracks[d.address].vehicle_id = 999
    assert view.check(make(d, v, 2, now, odo=1)) is None


# --- properties: honest drives pass, tampered ones do not ----------------------------

DRIVE_SETTINGS = settings(max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
drives = st.fixed_dictionaries(dict(
    lat=st.floats(-60, 60), lon=st.floats(-179, 179), heading=st.floats(0, 360),
    speed=st.floats(0, 60), dt_ms=st.integers(1_000, 60_000), count=st.integers(2, 12),
))


def _drive(fleet: Fleet, p: dict, dev_index: int = 2) -> tuple[Device, int, list[Attestation]]:
    template = fleet.devices[dev_index]
    dev = Device(template.private_key, CHAIN_ID, RES)
    vid = fleet.vehicle_ids[dev_index]
    drive = Drive(p["lat"], p["lon"], p["heading"], p["speed"], 10_000, timestamp_ms=1_000_000_000)
    return dev, vid, [r.attestation for r in drive.readings(dev, vid, p["count"], p["dt_ms"])]


def _run(fleet: Fleet, atts: list[Attestation]) -> list[str | None]:
    view = fleet.view()
    out = []
    for att in atts:
        view.now_ms = att.timestamp_ms + 500  # each one goes into the next block
        code = view.check(att)
        if code is None:
            view.apply(att)
        out.append(None if code is None else code.value)
    return out


@DRIVE_SETTINGS
@given(drives)
def test_honest_drive_is_always_accepted(fleet: Fleet, p):
    _, _, atts = _drive(fleet, p)
    assert _run(fleet, atts) == [None] * len(atts)


FIELDS = ["version", "device", "vehicle_id", "seq", "timestamp_s", "cell", "odometer_hm",
          "commitment", "challenge"]


@DRIVE_SETTINGS
@given(drives, st.data())
def test_tampered_drive_is_always_refused(fleet: Fleet, p, data):
    from vm.attestation import AttestationError, check_stateless

    dev, vid, atts = _drive(fleet, p)
    k = data.draw(st.integers(0, len(atts) - 1))
    field = data.draw(st.sampled_from(FIELDS))
    original = atts[k]
    value = getattr(original, field)
    if isinstance(value, int):
        new = data.draw(st.integers(0, 2**64 - 1).filter(lambda x: x != value))
    elif field == "challenge":
        new = data.draw(st.binary(min_size=8, max_size=8))
    else:
        same_size = st.binary(min_size=len(value), max_size=len(value))
        new = data.draw(same_size.filter(lambda x: x != value))
    tampered = original._replace(**{field: new})
    # not re-signed: the stateless checks refuse it whatever the field
    with pytest.raises(AttestationError):
        check_stateless(tampered.encode(), CHAIN_ID)


@DRIVE_SETTINGS
@given(drives, st.data())
def test_inconsistent_drive_signed_by_its_own_device_is_refused(fleet: Fleet, p, data):
    """A device that lies (signs physically impossible data) is caught by the stateful rules."""
    dev, vid, atts = _drive(fleet, p)
    k = data.draw(st.integers(1, len(atts) - 1))
    prev, att = atts[k - 1], atts[k]
    lie = data.draw(st.sampled_from(["teleport", "rollback", "replay", "backwards", "fast"]))
    if lie == "teleport":  # 200 km away in at most 60 s
        change = dict(cell=h3.latlng_to_cell(p["lat"] + 1.8, p["lon"], RES))
    elif lie == "rollback":
        change = dict(odometer_hm=prev.odometer_hm - 1)
    elif lie == "replay":
        change = dict(seq=prev.seq)
    elif lie == "backwards":
        change = dict(timestamp_s=prev.timestamp_s - 1)
    else:
        change = dict(timestamp_s=prev.timestamp_s)  # less than a second after the previous
    atts[k] = dev.sign(att._replace(**change))
    codes = _run(fleet, atts)
    assert codes[:k] == [None] * k
    assert codes[k] is not None


def test_distance_bound_never_exceeds_true_distance():
    """The integer bound stays below the great-circle distance of the cell centres (the
    float here is the test's reference only)."""
    import random

    rng = random.Random(5)
    for _ in range(2_000):
        a = h3.latlng_to_cell(rng.uniform(-70, 70), rng.uniform(-180, 180), RES)
        b = rng.choice(h3.grid_ring(a, rng.randint(1, 60)))
        bound = cell_distance_lower_bound_m(a, b, RES)
        true = h3.great_circle_distance(h3.cell_to_latlng(a), h3.cell_to_latlng(b), "m")
        assert bound <= true
        assert bound >= 0.55 * true - CELL_SIZE_MM[RES] / 1000  # and it is not uselessly loose
    assert cell_distance_lower_bound_m(CELL, h3.grid_ring(CELL, 1)[0], RES) == 0


def test_geo_tables_follow_h3_average_edges():
    from vm.geo import CELL_SIZE_MM, SPACING_LOWER_MM

    for res in range(16):
        edge_mm = h3.average_hexagon_edge_length(res, "m") * 1000
        assert abs(SPACING_LOWER_MM[res] - 0.70 * math.sqrt(3) * edge_mm) <= 1
        assert abs(CELL_SIZE_MM[res] - 2.4 * edge_mm) <= 1


# --- on a chain: blocks, epochs, counters, challenges ------------------------------------


def test_epochs_counters_and_challenges_on_chain():
    epoch_len = 20
    fleet = Fleet(3, params={"epoch_length_blocks": epoch_len, "challenge_fraction_bps": 10_000,
                             "challenge_window_bps": 5_000})
    chain, tel = fleet.chain, fleet.telemetry
    (d0, d1, d2), (v0, v1, v2) = fleet.devices, fleet.vehicle_ids
    # run into epoch 1 so it has a seed taken from a real block
    while chain.results[-1].epoch < 1:
        chain.advance(1)
    epoch = chain.results[-1].epoch
    first_height = chain.head.height
    assert get_epoch_seed(chain.state(), epoch) == chain.hashes[-2]
    assert tel.call("getEpochSeed", epoch) == chain.hashes[-2]
    for dev in (d0, d1):
        challenged, nonce = get_challenge(chain.state(), dev.address, epoch)
        assert challenged and nonce == compute_challenge_nonce(chain.hashes[-2], dev.address)
        assert tel.call("getChallenge", dev.checksum_address, epoch) == (True, nonce)
    d0.answer_challenge(get_challenge(chain.state(), d0.address, epoch)[1])

    drives = {d.address: Drive(*HOME, heading_deg=90 * i, speed_mps=20.0, odometer_m=1_000 * i)
              for i, d in enumerate(fleet.devices)}
    sent = {v0: [], v1: [], v2: []}
    for block in range(epoch_len - 1):
        atts = []
        for dev, vid in ((d0, v0), (d1, v1), (d2, v2)):
            if dev is d2 and block % 2:  # vehicle 2 reports every other block
                continue
            if dev is d1 and block == epoch_len // 2 + 2:  # after the window: too late
                dev.answer_challenge(get_challenge(chain.state(), d1.address, epoch)[1])
            drive = drives[dev.address]
            lat, lon, odo, _ = drive.step(1_000)
            reading = dev.attest(vehicle_id=vid, timestamp_ms=chain.head.timestamp_ms + 500,
                                 lat=lat, lon=lon, odometer_m=odo, speed_cmps=2_000,
                                 signals={"soc": 80 - block})
            atts.append(reading.raw)
            sent[vid].append(reading.attestation)
        result = chain.block(attestations=atts)
        assert [c for _, c in result.attestation_results] == ["ok"] * len(atts)
        assert result.attestations == atts
        assert chain.results[-1].epoch == epoch
    assert chain.head.height == first_height + epoch_len - 1

    s = chain.state()
    assert epoch_vehicles(s, epoch) == sorted([v0, v1, v2])
    assert list(tel.call("getEpochVehicles", epoch)) == sorted([v0, v1, v2])
    for vid, atts in sent.items():
        stats = get_vehicle_epoch(s, epoch, vid)
        expected_distance = sum(b.odometer_m - a.odometer_m
                                for a, b in zip(atts, atts[1:], strict=False))
        assert stats.accepted == len(atts)
        assert stats.moving == len(atts) - 1  # every reading changes; the first has no previous
        assert stats.distance_m == expected_distance
        assert stats.challenged
        assert stats.challenge_passed == (vid == v0)
        assert tel.call("getVehicleEpoch", epoch, vid) == dataclasses.astuple(stats)
    last = sent[v0][-1]
    state0 = get_device_state(s, d0.address)
    assert (state0.seq, state0.timestamp_ms, state0.cell, state0.odometer_m, state0.vehicle_id) == (
        last.seq, last.timestamp_ms, last.cell, last.odometer_m, v0)
    assert state0.accepted_in_epoch == len(sent[v0])
    assert tel.call("getDeviceState", d0.checksum_address)[0] == last.seq
    assert get_vehicle_epoch(s, epoch + 1, v0) == VehicleEpochStats(0, 0, 0, False, False)
    assert epoch_vehicles(s, epoch - 1) == []

    # next epoch: new seed, counters start again, the rate cap counts per epoch
    chain.advance(1)
    assert chain.results[-1].epoch == epoch + 1
    assert get_epoch_seed(chain.state(), epoch + 1) == chain.hashes[-2]


def test_block_with_an_invalid_attestation_is_refused_and_builder_leaves_it_out():
    fleet = Fleet(1)
    chain = fleet.chain
    d, v = fleet.devices[0], fleet.vehicle_ids[0]
    now = chain.head.timestamp_ms + 1_000
    good, stale = make(d, v, 2, now).encode(), make(d, v, 1, now - 400_000).encode()
    head = chain.head
    with pytest.raises(InvalidBlock, match="stale"):
        chain.block(attestations=[good, stale])
    assert chain.head == head
    result = chain.block(attestations=[stale, good], skip_invalid=True)
    assert result.attestations == [good]
    assert [c for _, c in result.attestation_results] == ["stale", "ok"]
    # the stored record now rejects a replay of the included one in the next block
    with pytest.raises(InvalidBlock, match="replay"):
        chain.block(attestations=[good])


def test_deny_list_from_genesis_and_governance():
    from tests.harness import LocalChain

    d = Device.generate(CHAIN_ID, RES, seed=b"fleet 0")  # Fleet's first device
    chain = LocalChain(modules={"telemetry": {"denied": ["0x" + d.address.hex()]}})
    fleet = Fleet(1, chain=chain)
    assert fleet.devices[0].address == d.address
    assert fleet.telemetry.call("isDenied", d.checksum_address) is True
    env = chain.env()
    att = make(d, fleet.vehicle_ids[0], 1, env.timestamp_ms).encode()
    assert build_attestations(chain.state(), env, [att])[1][0][1] == "denied"
    s = chain.state()
    set_denied(s, d.address, False)  # what an executed governance deny-list proposal does
    assert build_attestations(s, env, [att])[1][0][1] == "ok"


def test_challenge_selection():
    device = b"\x42" * 20
    seed = b"\x07" * 32
    assert is_challenged(seed, device, 10_000)
    assert not is_challenged(seed, device, 0)
    assert not is_challenged(b"\x00" * 32, device, 10_000)  # no seed, no challenge
    share = sum(is_challenged(seed, bytes([i]) * 20, 1_000) for i in range(256)) / 256
    assert 0.04 < share < 0.18
    assert compute_challenge_nonce(seed, device) == keccak(seed + device + b"nonce")[:8]


def test_moving_compares_the_first_8_bytes_of_the_commitment():
    """Same cell and odometer: "moving" is the commitment's 64-bit digest changing (the
    chain keeps only that digest, in the device's meta slot beside its deny flag and
    epoch count: docs/telemetry.md "State layout")."""
    fleet = Fleet(1)
    chain, tel = fleet.chain, fleet.telemetry
    d, v = fleet.devices[0], fleet.vehicle_ids[0]
    first = b"\x11" * 32
    same_digest = b"\x11" * 8 + b"\x22" * 24  # differs only after the digest's 8 bytes
    other = b"\x33" + b"\x11" * 31
    now = chain.head.timestamp_ms + 1_000
    chain.block(attestations=[make(d, v, 1, now, signals=first).encode()])
    for seq, commitment in ((2, first), (3, same_digest), (4, other)):
        now = chain.head.timestamp_ms + 1_000
        chain.block(attestations=[make(d, v, seq, now, signals=commitment).encode()])
    s = chain.state()
    epoch = chain.results[-1].epoch
    assert get_vehicle_epoch(s, epoch, v).moving == 1  # only the last one changed it
    state = get_device_state(s, d.address)
    assert state.commitment_digest == other[:8]
    assert (state.seq, state.vehicle_id, state.accepted_in_epoch, state.denied) == (4, v, 4, False)
    set_denied(s, d.address, True)  # the deny flag shares the slot: the rest is kept
    again = get_device_state(s, d.address)
    assert again.denied and dataclasses.replace(again, denied=False) == state
    assert tel.call("getDeviceState", d.checksum_address)[4] == other[:8]


def test_reads_ahead_change_no_result(fleet: Fleet, monkeypatch):
    """The slots read ahead of a block's checks (TelemetryView.read_ahead) only save
    reads: with hostile bytes among the attestations (not msgpack, a list of the wrong
    shape, a claimed vehicle not the device's, oversized), the same results, the same
    committed state, and nothing raised that the checks would not raise."""
    import msgpack

    from vm.modules.telemetry import TelemetryView

    env = fleet.chain.env()
    now = env.timestamp_ms
    (d0, d1), (v0, v1) = fleet.devices[:2], fleet.vehicle_ids[:2]
    good = make(d1, v1, 1, now).encode()
    raws = [make(d0, v0, 1, now).encode(), b"\x00", msgpack.packb([2, b"x" * 20, -1]),
            msgpack.packb([2, [b"\x01"], {"a": 1}]), make(d1, v0, 1, now).encode(), good,
            msgpack.packb([2, d1.address, 2**64 - 1]), b"\x93" * 300,
            make(d0, v0, 2, now + 60_000).encode()]

    def run() -> tuple[object, ...]:
        state = fleet.chain.state()
        included, results, _, _ = build_attestations(state, env, raws)
        with pytest.raises(InvalidBlock) as refused:
            process_attestations(fleet.chain.state(), env, raws)
        return included, results, state.make_state_root(), str(refused.value)

    assert hasattr(fleet.chain.state(), "slots_reader")  # (so the reads ahead are made)
    ahead = run()
    assert [c for _, c in ahead[1]][:2] == ["ok", "malformed"] and good in ahead[0]
    monkeypatch.setattr(TelemetryView, "read_ahead", lambda self, raws: None)
    assert run() == ahead


def test_reads_ahead_in_steps_beside_a_worker_change_no_result(fleet: Fleet, monkeypatch):
    """Checking a block beside a signature worker, the slots are read ahead a few
    attestations at a time (READ_AHEAD_STEP): a device met again in a later step, a
    claimed vehicle not the device's, bytes that are not an attestation: the serial
    results, state root and error."""
    import vm.attestation as attestation
    import vm.attestation_ahead as ahead_module
    from tests.vm.test_signatures_ahead import _started
    from vm.attestation_ahead import SignaturesAhead, SignatureWorker
    from vm.modules import telemetry

    monkeypatch.setattr(telemetry, "READ_AHEAD_STEP", 2)
    monkeypatch.setattr(ahead_module, "SHARE_WAIT_S", 30.0)  # (answers count under load)
    env = fleet.chain.env()
    now = env.timestamp_ms
    (d0, d1, d2), (v0, v1, v2) = fleet.devices[:3], fleet.vehicle_ids[:3]
    early = now - 120_000
    valid = [make(d0, v0, 1, early).encode(), make(d2, v2, 1, early).encode(),
             make(d1, v1, 1, now).encode(), make(d0, v0, 2, now).encode(),
             make(d2, v2, 2, now).encode()]
    invalid = [valid[0], valid[1], make(d1, v0, 1, now).encode(), valid[2], b"\x00"]

    def run(raws: list[bytes], worker: SignatureWorker | None) -> tuple[object, ...]:
        attestation._VERIFIED.clear()
        state = fleet.chain.state()
        ahead = SignaturesAhead(worker, raws, env.chain_id, chunk=2) if worker else None
        try:
            included, results = process_attestations(state, env, raws, ahead=ahead)
        except InvalidBlock as exc:
            return ("invalid", str(exc))
        finally:
            if ahead is not None:
                ahead.close()
        return included, results, state.make_state_root()

    serial = run(valid, None)
    assert [c for _, c in serial[1]].count("ok") == 5
    refused = run(invalid, None)
    assert refused[0] == "invalid" and "attestation 2 " in refused[1]
    worker = _started(SignatureWorker())
    try:
        assert run(valid, worker) == serial
        assert run(invalid, worker) == refused
    finally:
        worker.close()
