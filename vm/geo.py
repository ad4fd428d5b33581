"""H3 cells for proof of coverage: validity and an integer-only distance bound.

Consensus needs every validator to compute the same distance, so nothing here
uses floating point. H3's local IJ coordinates (``cell_to_local_ij``) are
computed by the H3 C library with integer arithmetic on the icosahedron's IJK
grid; from them the distance between two cell centres, in units of the
centre spacing, is ``sqrt(di^2 + dj^2 - di*dj)`` (the I and J axes are 120
degrees apart), taken here with ``math.isqrt``.

Real H3 cells vary in size over the globe (about 0.7x to 1.1x the average at
any resolution), so the per-resolution constants below are chosen to make
:func:`cell_distance_lower_bound_m` a *lower bound* of the distance between any
point of one cell and any point of the other: the centre spacing is the
average times 0.70 (measured minimum 0.709), and the subtracted cell size is
2.4 average edges (largest circumradius about 1.1 edges, both sides, with
margin). An honest device is therefore never refused by a movement rule
because of cell geometry.
"""

from __future__ import annotations

from functools import lru_cache
from math import isqrt

import h3.api.basic_int as h3

# floor(0.70 * sqrt(3) * average hexagon edge), millimetres, by resolution
# (average edges from h3.average_hexagon_edge_length, H3 v4).
SPACING_LOWER_MM: tuple[int, ...] = (
    1553440355, 585675291, 221285199, 83632861, 31610328, 11947450, 4515755, 1705261,
    644305, 243440, 91979, 34753, 13130, 4961, 1874, 708,
)
# ceil(2.4 * average hexagon edge), millimetres: the "cell size" subtracted.
CELL_SIZE_MM: tuple[int, ...] = (
    3075014427, 1159336414, 438031096, 165550133, 62572224, 23649819, 8938879, 3375542,
    1275394, 481887, 182074, 68794, 25993, 9821, 3711, 1403,
)


@lru_cache(maxsize=1 << 16)
def is_valid_cell(cell: int, resolution: int) -> bool:
    """True when ``cell`` is a valid H3 cell index at exactly ``resolution`` (memoised:
    a fleet's attestations name the same cells again and again)."""
    try:
        return bool(h3.is_valid_cell(cell)) and h3.get_resolution(cell) == resolution
    except Exception:  # out-of-range integers
        return False


def _ij_distance_mm(a: int, b: int, resolution: int) -> int | None:
    try:
        i0, j0 = h3.cell_to_local_ij(a, a)
        i1, j1 = h3.cell_to_local_ij(a, b)
    except Exception:  # H3 cannot relate the cells (far apart or across a pentagon)
        return None
    di, dj = i1 - i0, j1 - j0
    spacing = SPACING_LOWER_MM[resolution]
    return isqrt((di * di + dj * dj - di * dj) * spacing * spacing)


def cell_distance_lower_bound_m(a: int, b: int, resolution: int) -> int:
    """Metres that a vehicle at least travelled going from somewhere in cell ``a`` to
    somewhere in cell ``b`` (both valid at ``resolution``): centre distance minus
    cell size, never negative, integer-only and identical on every machine.

    When H3 cannot relate the cells at this resolution it retries with their
    parents at coarser resolutions (whose larger cell size keeps the result a lower
    bound); if no resolution works the answer is 0, i.e. no claim.
    """
    if a == b:
        return 0
    for res in range(resolution, -1, -1):
        pa = a if res == resolution else h3.cell_to_parent(a, res)
        pb = b if res == resolution else h3.cell_to_parent(b, res)
        if pa == pb:
            return 0
        dist_mm = _ij_distance_mm(pa, pb, res)
        if dist_mm is not None:
            return max(0, dist_mm - CELL_SIZE_MM[res]) // 1000
    return 0


def latlng_to_cell(lat: float, lng: float, resolution: int) -> int:
    """Device side (off-chain, floats are fine here): the cell of a position."""
    return h3.latlng_to_cell(lat, lng, resolution)


def coarse_cell_of(lat: float, lon: float, resolution: int, fine_resolution: int = 8) -> int:
    """Device side: the public cell of a position, the ancestor at ``resolution`` of its
    cell at ``fine_resolution`` (H3 cells do not nest exactly; the ancestor is always
    within 1.1 average edges of the position, inside the margin of
    :func:`cell_distance_lower_bound_m`)."""
    fine = h3.latlng_to_cell(lat, lon, max(resolution, fine_resolution))
    return fine if resolution >= fine_resolution else h3.cell_to_parent(fine, resolution)


def cell_to_latlng(cell: int) -> tuple[float, float]:
    """Off-chain display and simulation only."""
    return h3.cell_to_latlng(cell)


def cell_is_inside(fine: int, resolution: int, coarse: int) -> bool:
    """True when ``fine`` is a valid H3 cell at exactly ``resolution`` whose ancestor at
    ``coarse``'s (lower) resolution is ``coarse``: the payload's fine cell lies in the
    attestation's public cell."""
    try:
        if not is_valid_cell(fine, resolution) or not h3.is_valid_cell(coarse):
            return False
        coarse_res = h3.get_resolution(coarse)
        return coarse_res <= resolution and h3.cell_to_parent(fine, coarse_res) == coarse
    except Exception:  # H3 refuses odd integers with exceptions of its own
        return False
