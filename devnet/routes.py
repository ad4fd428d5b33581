"""Routes for ``motus device drive``: built-in loops and GPX tracks, followed at a
steady speed by :class:`RouteDrive` (what a car with a paired device would report).

A route is a list of (lat, lon) points. A GPX file's track points (``<trkpt>``, else
route points ``<rtept>``) are read in order; their times are ignored (the drive runs
now, at ``--speed``). A closed route is driven round and round; an open one there and
back, so the car never jumps.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

EARTH_RADIUS_M = 6_371_008.8
MAX_GPX_BYTES = 20 * 1024 * 1024  # a day of 1 Hz points is a few MB
MAX_POINTS = 200_000

# Built-in loops (about 4-6 km each) around city centres; closed: last point = first.
BUILTIN: dict[str, list[tuple[float, float]]] = {
    "munich": [(48.1372, 11.5756), (48.1440, 11.5800), (48.1500, 11.5700), (48.1530, 11.5580),
               (48.1470, 11.5480), (48.1390, 11.5520), (48.1330, 11.5640), (48.1372, 11.5756)],
    "berlin": [(52.5163, 13.3777), (52.5200, 13.3900), (52.5250, 13.4050), (52.5190, 13.4130),
               (52.5120, 13.4000), (52.5100, 13.3850), (52.5163, 13.3777)],
    "paris": [(48.8584, 2.2945), (48.8650, 2.3000), (48.8700, 2.3100), (48.8650, 2.3250),
              (48.8580, 2.3200), (48.8530, 2.3050), (48.8584, 2.2945)],
}


class RouteError(Exception):
    """A route name or GPX file that cannot be driven (the message says why)."""

    code = "bad_route"


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance between two (lat, lon) points (haversine)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


def load_gpx(path: str | Path) -> list[tuple[float, float]]:
    """The track points of a GPX file (at most MAX_POINTS, file at most MAX_GPX_BYTES)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_GPX_BYTES:
            raise RouteError(f"{path}: {size} bytes, more than {MAX_GPX_BYTES} for a GPX file")
        root = ET.fromstring(path.read_bytes())
    except OSError as exc:
        raise RouteError(f"{path}: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise RouteError(f"{path}: not GPX (XML error: {exc})") from None
    points: list[tuple[float, float]] = []
    for tag in ("trkpt", "rtept"):
        for el in root.iter():
            if el.tag.rsplit("}", 1)[-1] != tag:
                continue
            try:
                lat, lon = float(el.attrib["lat"]), float(el.attrib["lon"])
            except (KeyError, ValueError):
                raise RouteError(f"{path}: a <{tag}> without numeric lat and lon") from None
            if not (-90 <= lat <= 90 and -180 <= lon <= 180):
                raise RouteError(f"{path}: point ({lat}, {lon}) is not on Earth")
            points.append((lat, lon))
            if len(points) > MAX_POINTS:
                raise RouteError(f"{path}: more than {MAX_POINTS} points")
        if points:
            break
    if len(points) < 2:
        raise RouteError(f"{path}: a route needs at least two track points (<trkpt>)")
    return points


def load_route(spec: str) -> list[tuple[float, float]]:
    """A built-in route by name, or the points of a ``.gpx`` file."""
    if spec in BUILTIN:
        return BUILTIN[spec]
    if spec.lower().endswith(".gpx") or Path(spec).is_file():
        return load_gpx(spec)
    raise RouteError(f"unknown route {spec!r}: use one of {', '.join(BUILTIN)} or a .gpx file")


@dataclass
class RouteDrive:
    """A car following ``points`` at ``speed_mps``: :meth:`advance` moves it on and
    returns where it is; the odometer counts whole metres and never lags."""

    points: list[tuple[float, float]]
    speed_mps: float = 13.9
    odometer_m: int = 0
    _leg: int = 0
    _along_m: float = 0.0
    _carry_m: float = 0.0
    _path: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        closed = distance_m(self.points[0], self.points[-1]) < 50
        # an open track is driven there and back; zero-length legs are dropped
        path = list(self.points) if closed else list(self.points) + list(reversed(self.points))[1:]
        self._path = [p for i, p in enumerate(path) if i == 0 or distance_m(path[i - 1], p) > 0.01]
        if len(self._path) < 2:
            raise RouteError("the route's points are all in one place")

    @property
    def position(self) -> tuple[float, float]:
        a, b = self._path[self._leg], self._path[(self._leg + 1) % len(self._path)]
        leg = distance_m(a, b)
        f = 0.0 if leg == 0 else self._along_m / leg
        return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f

    def advance(self, dt_ms: int) -> tuple[float, float]:
        """Drive ``dt_ms`` further; the new (lat, lon)."""
        d = self.speed_mps * dt_ms / 1000
        self._carry_m += d
        self.odometer_m += int(self._carry_m)
        self._carry_m -= int(self._carry_m)
        while True:
            a, b = self._path[self._leg], self._path[(self._leg + 1) % len(self._path)]
            leg = distance_m(a, b)
            if self._along_m + d < leg:
                self._along_m += d
                return self.position
            d -= leg - self._along_m
            self._along_m = 0.0
            self._leg = (self._leg + 1) % len(self._path)
