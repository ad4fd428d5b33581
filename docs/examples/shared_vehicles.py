"""Example app on the Motus SDK (docs/developers.md, "SDK"): list the vehicles a user
shares with you, and plot one signal of each to an SVG file (and the terminal).

    python docs/examples/shared_vehicles.py --rpc http://127.0.0.1:8545 \\
        --key-file developer.key --owner 0xOWNER --signal soc --minutes 30 --out soc.svg

Uses only the SDK (``rpcclient.sdk``) and the standard library.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rpcclient.sdk import Motus, MotusError

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    if not values:
        return "(no data)"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[int((v - low) / span * (len(SPARKS) - 1))] for v in values)


def svg(series: dict[int, list[tuple[int, float]]], signal: str, unit: str | None) -> str:
    """One polyline per vehicle, time on x, the signal's per-minute average on y."""
    width, height, pad = 640, 320, 40
    points = [p for line in series.values() for p in line]
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
                f'<text x="{pad}" y="{height // 2}">no data</text></svg>')
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    v0, v1 = min(v for _, v in points), max(v for _, v in points)
    tx = (width - 2 * pad) / ((t1 - t0) or 1)
    vy = (height - 2 * pad) / ((v1 - v0) or 1)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
           f'<text x="{pad}" y="20">{signal} ({unit or "no unit"}), per-minute average; '
           f'{v0:.2f} .. {v1:.2f}</text>']
    for i, (vid, line) in enumerate(sorted(series.items())):
        coords = " ".join(f"{pad + (t - t0) * tx:.1f},{height - pad - (v - v0) * vy:.1f}"
                          for t, v in line)
        colour = colours[i % len(colours)]
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                   f'points="{coords}"/>')
        out.append(f'<text x="{width - pad - 80}" y="{40 + 16 * i}" fill="{colour}">'
                   f'vehicle {vid}</text>')
    out.append("</svg>")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rpc", default="http://127.0.0.1:8545")
    ap.add_argument("--key-file", required=True, help="the developer's private key (hex)")
    ap.add_argument("--owner", required=True, help="the user's address")
    ap.add_argument("--signal", default="soc")
    ap.add_argument("--minutes", type=int, default=30)
    ap.add_argument("--out", default="signal.svg")
    args = ap.parse_args(argv)
    motus = Motus(args.rpc, Path(args.key_file).read_text().strip())
    shared = motus.shared_vehicles(args.owner)
    print(f"{len(shared)} vehicle(s) shared with {motus.address} by {args.owner}")
    unit = motus.catalogue()["signals"].get(args.signal, {}).get("unit")
    to_ms = int(time.time() * 1000)
    from_ms = to_ms - args.minutes * 60_000
    series: dict[int, list[tuple[int, float]]] = {}
    for car in shared:
        vid = car["vehicleId"]
        v = car["vehicle"]
        try:
            intervals = motus.aggregate(vid, 60_000, [args.signal], from_ms, to_ms)
            coverage = motus.coverage(vid, from_ms, to_ms)
        except MotusError as exc:
            print(f"  vehicle {vid}: {exc.code}: {exc}")
            continue
        line = [(i["fromMs"], i["signals"][args.signal]["avg"]) for i in intervals
                if args.signal in i["signals"]]
        series[vid] = line
        gaps = [r for r in coverage["intervals"] if r["status"] in ("missing", "partial")]
        print(f"  vehicle {vid}: {v['make']} {v['model']} {v['year']}, "
              f"bits {','.join(car['bitNames'])}; {args.signal} {sparkline([x for _, x in line])}"
              f"; coverage {'complete' if coverage['complete'] else f'{len(gaps)} gap(s)'}")
    Path(args.out).write_text(svg(series, args.signal, unit))
    print(f"plot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
