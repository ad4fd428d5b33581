"""Live stream fan-out: telemetry notifications queued per second to S subscribers of one
vehicle (node/rpc/streams.py: decode, filter by the stream's bits, JSON, enqueue on the
session), against the raw rate of the signature checks the same signals cost on arrival
(coincurve recovery of each attestation's device signature), in the same run.

Each subscriber is a real WebSocketSession whose outgoing queue a trio task drains (the
writer's side, without a socket), so nothing is dropped unless the fan-out outruns the
drain. Prints, per subscriber count: signals/s, notifications/s (subscribers x signals
per second), the ratio of notifications/s to raw checks/s, drops, and the load average.

Run: ``python -m bench bench_streams`` or ``python -m bench.bench_streams [--signals K]
[--subscribers 1,10,100]``.
"""

from __future__ import annotations

import argparse
import os
import time

import trio
from coincurve import PublicKey

import vm.attestation as attestation
from node.access import Credential
from node.rpc.streams import TelemetryStreams
from node.rpc.websocket import WebSocketSession
from node.signal_store import sign_request
from tests.vm.test_telemetry_fleet import HOME, Fleet

CHAIN_ID = 7077
NODE = "12D3KooWBenchStreams"


def readings(fleet: Fleet, count: int) -> list[tuple[bytes, bytes]]:
    dev, vid = fleet.devices[0], fleet.vehicle_ids[0]
    start = fleet.chain.head.timestamp_ms
    out = []
    for i in range(count):
        r = dev.attest(vehicle_id=vid, timestamp_ms=start + 1_000 * i, lat=HOME[0] + 1e-4 * i,
                       lon=HOME[1], odometer_m=10_000 + 15 * i,
                       signals={"soc": 80 - i / 100, "speed_kmh": 40.0, "ambient_c": 14.5})
        out.append((r.raw, r.payload))
    return out


def raw_checks_per_second(pairs: list[tuple[bytes, bytes]]) -> float:
    """Baseline: coincurve recovery alone on the same signatures and digests."""
    atts = [attestation.decode_attestation(raw) for raw, _ in pairs]
    work = [(a.signature, attestation.compute_signing_digest(a, CHAIN_ID)) for a in atts]
    t0 = time.perf_counter()
    for signature, digest in work:
        PublicKey.from_signature_and_message(signature, digest, hasher=None)
    return len(work) / (time.perf_counter() - t0)


def fan_out(fleet: Fleet, pairs: list[tuple[bytes, bytes]], subscribers: int) -> dict:
    """Signals/s and notifications/s through TelemetryStreams to ``subscribers``."""
    vid = fleet.vehicle_ids[0]
    _, owner_key = fleet.owner_of[fleet.devices[0].address]

    class Node:  # what TelemetryStreams reads of a node, from the bench's chain
        chain_id = CHAIN_ID
        peer_id = NODE
        attestations = None

        class app:  # noqa: N801
            head_state = staticmethod(fleet.chain.state)

    result: dict = {}

    async def main() -> None:
        streams = TelemetryStreams(Node())
        sessions = []
        received = [0]

        async def drain(session: WebSocketSession) -> None:
            async for _ in session._queue_out:
                received[0] += 1

        async with trio.open_nursery() as nursery:
            for i in range(subscribers):
                session = WebSocketSession(None, f"127.0.0.{i % 250 + 1}", None, None, 1 << 20)
                wall = int(time.time() * 1000)
                request = sign_request(owner_key, CHAIN_ID, NODE, vid, wall - 1_000, wall, wall)
                streams.open(session, f"0x{i:032x}", Credential("request", request=request),
                             vid, None)
                session.subscriptions[f"0x{i:032x}"] = object()
                sessions.append(session)
                nursery.start_soon(drain, session)
            t0 = time.perf_counter()
            for start in range(0, len(pairs), 10):  # batches as the store announces them
                streams.on_signals(pairs[start:start + 10])
                await trio.sleep(0)
            while received[0] < subscribers * len(pairs):
                dropped = sum(s.dropped for ss in streams.by_vehicle.values() for s in ss)
                if received[0] + dropped >= subscribers * len(pairs):
                    break
                await trio.sleep(0)
            elapsed = time.perf_counter() - t0
            dropped = sum(s.dropped for ss in streams.by_vehicle.values() for s in ss)
            for session in sessions:
                session._queue_in.close()
            result.update(signals_per_s=len(pairs) / elapsed,
                          notifications_per_s=received[0] / elapsed, dropped=dropped)

    trio.run(main)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--signals", type=int, default=400)
    ap.add_argument("--subscribers", default="1,10,100")
    args = ap.parse_args(argv or [])
    fleet = Fleet(1)
    pairs = readings(fleet, args.signals)
    raw = raw_checks_per_second(pairs)
    print(f"raw signature checks (coincurve recovery): {raw:,.0f}/s on {len(pairs)} signals")
    for subscribers in (int(s) for s in args.subscribers.split(",")):
        got = fan_out(fleet, pairs, subscribers)
        print(f"{subscribers:>4} subscribers x {len(pairs)} signals: "
              f"{got['signals_per_s']:,.0f} signals/s, "
              f"{got['notifications_per_s']:,.0f} notifications/s "
              f"({got['notifications_per_s'] / raw:.2f}x raw checks), "
              f"dropped {got['dropped']}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
