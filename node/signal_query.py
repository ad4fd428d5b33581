"""The query API over the signal store, for a checked access (node/access.py).

Every function takes a :class:`~node.signal_store.TelemetryAccess` (who reads which
ownership periods with which bits, and its scope: one vehicle, a range of device times)
and answers only from those periods, each record filtered by
:func:`~node.signal_store.filter_record`. docs/developers.md, "Query API", is the
contract; the limits below are documented there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.signal_store import (
    BIT_NON_LOCATION_HISTORY,
    MINUTE_MS,
    ReadablePeriod,
    SignalStore,
    StoredSignals,
    TelemetryAccess,
    TelemetryAccessError,
    filter_record,
    numeric_signals,
    readable_windows,
)

MAX_PAGE = 1_000  # records per motus_querySignals page
DEFAULT_PAGE = 100
MAX_SIGNAL_NAMES = 64  # signals named in one call
MAX_LATEST_SCAN = 5_000  # records looked at, newest first, to find each signal's latest
MAX_BUCKETS = 10_000  # intervals in one aggregation or coverage answer
AGGREGATES = ("min", "max", "avg", "last", "count")

# The signals the fleet and the reference device send: unit, JSON type, the permission
# that shows them (docs/developers.md, "Signal catalogue"). Devices may send others:
# they are served as they come, and listed with unit null.
CATALOGUE: dict[str, dict[str, Any]] = {
    "timestamp_ms": {"unit": "ms", "type": "integer", "description": "device time (unix ms)"},
    "odometer_m": {"unit": "m", "type": "integer", "description": "odometer"},
    "speed_cmps": {"unit": "cm/s", "type": "integer", "description": "speed"},
    "speed_kmh": {"unit": "km/h", "type": "number", "description": "speed"},
    "soc": {"unit": "%", "type": "number", "description": "battery state of charge"},
    "ambient_c": {"unit": "degC", "type": "number", "description": "outside temperature"},
    "heading_deg": {"unit": "deg", "type": "number", "description": "heading, 0 = north"},
    "dtc": {"unit": None, "type": "array", "description": "diagnostic trouble codes"},
    "lat": {"unit": "deg", "type": "number", "description": "latitude (WGS84)",
            "location": True},
    "lon": {"unit": "deg", "type": "number", "description": "longitude (WGS84)",
            "location": True},
}
for _entry in CATALOGUE.values():
    _entry.setdefault("location", False)


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last record returned (device time, attestation id)."""

    timestamp_ms: int
    att_id: bytes

    def encode(self) -> str:
        return f"{self.timestamp_ms}:{self.att_id.hex()}"

    @staticmethod
    def decode(text: str) -> Cursor:
        try:
            ts, ident = text.split(":")
            att_id = bytes.fromhex(ident)
            if len(att_id) != 32 or not 0 <= int(ts) < 2**63:
                raise ValueError
            return Cursor(int(ts), att_id)
        except ValueError:
            raise TelemetryAccessError("bad_request", "cursor: not one this node gave") from None


def _only(signals: dict[str, Any], names: frozenset[str] | None) -> dict[str, Any]:
    return signals if names is None else {k: v for k, v in signals.items() if k in names}


def latest(store: SignalStore, access: TelemetryAccess,
           names: frozenset[str] | None = None) -> dict[str, Any]:
    """The newest visible value of each signal (or of each named one) in the scope:
    ``{signal: {value, timestampMs, id}}``. Looks at up to :data:`MAX_LATEST_SCAN`
    records, newest first; ``complete`` is False when it stopped there with names
    still unfound."""
    newest = store.latest(access.vehicle_id)
    found: dict[str, dict[str, Any]] = {}
    scanned = 0
    for readable, lo, hi in reversed(readable_windows(access)):
        for rec in store.query(access.vehicle_id, lo, hi, MAX_LATEST_SCAN - scanned,
                               reverse=True):
            scanned += 1
            shown = filter_record(rec, readable.bits, newest is not None and rec.id == newest.id)
            for name, value in _only(shown["signals"], names).items():
                found.setdefault(name, {"value": value, "timestampMs": rec.timestamp_ms,
                                        "id": shown["id"], "period": readable.period.index})
            if names is not None and names <= found.keys():
                return {"signals": found, "complete": True}
        if scanned >= MAX_LATEST_SCAN:
            return {"signals": found, "complete": names is not None and names <= found.keys()}
    return {"signals": found, "complete": True}


def page(store: SignalStore, access: TelemetryAccess, cursor: Cursor | None,
         limit: int = DEFAULT_PAGE, names: frozenset[str] | None = None) -> dict[str, Any]:
    """One page of the scope's records, oldest first, after ``cursor`` (exclusive):
    ``{records, nextCursor}`` (``nextCursor`` null on the last page)."""
    limit = max(1, min(limit, MAX_PAGE))
    newest = store.latest(access.vehicle_id)
    out: list[dict[str, Any]] = []
    last: StoredSignals | None = None
    for readable, lo, hi in readable_windows(access):
        if cursor is not None:
            if cursor.timestamp_ms > hi:
                continue
            lo = max(lo, cursor.timestamp_ms)
        # one more than asked: tells whether a next page exists
        for rec in store.query(access.vehicle_id, lo, hi, limit + 2 - len(out)):
            if cursor is not None and (rec.timestamp_ms, rec.id) <= (cursor.timestamp_ms,
                                                                     cursor.att_id):
                continue
            if len(out) == limit:
                assert last is not None
                return {"records": out,
                        "nextCursor": Cursor(last.timestamp_ms, last.id).encode()}
            shown = filter_record(rec, readable.bits, newest is not None and rec.id == newest.id)
            shown["signals"] = _only(shown["signals"], names)
            out.append(shown | {"period": readable.period.index})
            last = rec
    return {"records": out, "nextCursor": None}


def _bucket_of(ts: int, interval_ms: int) -> int:
    return ts - ts % interval_ms


def aggregate(store: SignalStore, access: TelemetryAccess, interval_ms: int,
              names: frozenset[str] | None = None) -> dict[str, Any]:
    """Per interval (aligned to multiples of ``interval_ms`` since the unix epoch, a
    whole number of minutes), each numeric non-location signal's ``min``, ``max``,
    ``avg``, ``last`` and ``count`` over the records of the scope the reader may see
    with ``non_location_history`` (bit 0). Whole minutes come from the store's minute
    index, the partial minutes at a window's edges from the records themselves."""
    if interval_ms < MINUTE_MS or interval_ms % MINUTE_MS:
        raise TelemetryAccessError("bad_request", "intervalMs must be a whole number of "
                                                  "minutes (a multiple of 60000)")
    span = access.to_ms - access.from_ms
    if span // interval_ms + 1 > MAX_BUCKETS:
        raise TelemetryAccessError("bad_request", f"more than {MAX_BUCKETS} intervals: "
                                                  "widen intervalMs or narrow the range")
    buckets: dict[int, dict[str, list[Any]]] = {}

    def fold(ts: int, name: str, agg: list[Any]) -> None:
        if names is not None and name not in names:
            return
        slot = buckets.setdefault(_bucket_of(ts, interval_ms), {})
        have = slot.get(name)
        if have is None:
            slot[name] = list(agg)
            return
        count, total, low, high, last_ts, last = agg
        slot[name] = [have[0] + count, have[1] + total, min(have[2], low), max(have[3], high),
                      *((last_ts, last) if last_ts >= have[4] else (have[4], have[5]))]

    def from_records(lo: int, hi: int) -> None:
        for rec in store.query(access.vehicle_id, lo, hi):
            for name, value in numeric_signals(rec.signals).items():
                fold(rec.timestamp_ms, name, [1, value, value, value, rec.timestamp_ms, value])

    read = [w for w in readable_windows(access) if _sees_history(w[0])]
    for _, lo, hi in read:
        first_whole = lo if lo % MINUTE_MS == 0 else lo - lo % MINUTE_MS + MINUTE_MS
        last_whole_end = hi + 1 - (hi + 1) % MINUTE_MS  # exclusive end of the last whole minute
        if first_whole >= last_whole_end:
            from_records(lo, hi)
            continue
        if lo < first_whole:
            from_records(lo, first_whole - 1)
        for minute, name, agg in store.minute_aggregates(access.vehicle_id, first_whole,
                                                         last_whole_end - MINUTE_MS):
            fold(minute, name, agg)
        if last_whole_end <= hi:
            from_records(last_whole_end, hi)
    intervals = []
    for start in sorted(buckets):
        intervals.append({"fromMs": start, "toMs": start + interval_ms - 1, "signals": {
            name: {"min": a[2], "max": a[3], "avg": a[1] / a[0], "last": a[5], "count": a[0]}
            for name, a in sorted(buckets[start].items())}})
    return {"intervalMs": interval_ms, "intervals": intervals,
            "readable": [{"fromMs": lo, "toMs": hi} for _, lo, hi in read]}


def _sees_history(readable: ReadablePeriod) -> bool:
    return bool(readable.bits & (1 << BIT_NON_LOCATION_HISTORY))


def coverage(store: SignalStore, access: TelemetryAccess, interval_ms: int,
             now_ms: int) -> dict[str, Any]:
    """Which intervals of the scope this node holds and which it lacks. Per interval
    (aligned like :func:`aggregate`), runs of equal status are merged:

    - ``held``: the chain's records there are all here (``records`` counts them);
    - ``partial`` / ``missing``: the chain included records whose payload this node
      does not hold (``missing`` counts them; motus_getTelemetry lists their ids);
    - ``empty``: the chain has no record of the vehicle there: no data, not lost data;
    - ``pruned``: older than this node's retention, it keeps nothing there;
    - ``not_readable``: outside the ownership periods the credential may read.
    """
    if interval_ms < MINUTE_MS or interval_ms % MINUTE_MS:
        raise TelemetryAccessError("bad_request", "intervalMs must be a whole number of "
                                                  "minutes (a multiple of 60000)")
    first, end = _bucket_of(access.from_ms, interval_ms), access.to_ms
    if (end - first) // interval_ms + 1 > MAX_BUCKETS:
        raise TelemetryAccessError("bad_request", f"more than {MAX_BUCKETS} intervals: "
                                                  "widen intervalMs or narrow the range")
    windows = readable_windows(access)
    cutoff = max(0, now_ms - store.retention_ms)
    runs: list[dict[str, Any]] = []
    start = first
    while start <= end:
        lo, hi = max(start, access.from_ms), min(start + interval_ms - 1, end)
        held = missing = 0
        readable = False
        for _, wlo, whi in windows:
            a, b = max(lo, wlo), min(hi, whi)
            if a <= b:
                readable = True
                held += store.count(access.vehicle_id, a, b)
                missing += store.count_missing(access.vehicle_id, a, b)
        if not readable:
            status = "not_readable"
        elif hi < cutoff:
            status = "pruned"
        elif held and missing:
            status = "partial"
        elif missing:
            status = "missing"
        elif held:
            status = "held"
        else:
            status = "empty"
        if runs and runs[-1]["status"] == status and runs[-1]["toMs"] == lo - 1:
            runs[-1]["toMs"] = hi
            runs[-1]["records"] += held
            runs[-1]["missing"] += missing
        else:
            runs.append({"fromMs": lo, "toMs": hi, "status": status, "records": held,
                         "missing": missing})
        start += interval_ms
    return {"intervalMs": interval_ms, "retainedFromMs": cutoff,
            "complete": all(r["status"] in ("held", "empty") for r in runs
                            if r["status"] != "not_readable"),
            "intervals": runs}


def catalogue(store: SignalStore | None = None,
              access: TelemetryAccess | None = None) -> dict[str, Any]:
    """The known signals with units; with an access, also the signal names the
    vehicle's readable records in scope carry (from the minute index: numeric ones)."""
    out: dict[str, Any] = {"signals": {k: dict(v) for k, v in CATALOGUE.items()}}
    if store is not None and access is not None:
        seen: set[str] = set()
        for readable, lo, hi in readable_windows(access):
            if not _sees_history(readable):
                continue
            first = lo - lo % MINUTE_MS
            for _, name, _agg in store.minute_aggregates(access.vehicle_id, first, hi):
                seen.add(name)
        out["vehicle"] = {"vehicleId": access.vehicle_id, "numericSignals": sorted(seen)}
        for name in seen - CATALOGUE.keys():
            out["signals"][name] = {"unit": None, "type": "number", "description": None,
                                    "location": False}
    return out


def names_param(value: Any) -> frozenset[str] | None:
    """A ``signals`` option: null/absent (every signal) or a list of at most
    :data:`MAX_SIGNAL_NAMES` names."""
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) > MAX_SIGNAL_NAMES
            or not all(isinstance(v, str) and 0 < len(v) <= 64 for v in value)):
        raise TelemetryAccessError("bad_request", f"signals: a list of at most "
                                                  f"{MAX_SIGNAL_NAMES} signal names")
    return frozenset(value)


__all__ = ["AGGREGATES", "CATALOGUE", "Cursor", "aggregate", "catalogue", "coverage",
           "latest", "names_param", "page"]
