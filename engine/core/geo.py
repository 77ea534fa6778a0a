"""Great-circle distances and postal-prefix lookups.

The distance formula is written once here in the exact operation order the
Cython sourcing loop uses (same libm calls, same grouping), so both twins
compute bit-identical distances and break ranking ties the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

__all__ = ["EARTH_DIAMETER_KM", "haversine_km", "haversine_rad", "longest_prefix"]

# Twice the mean Earth radius (IUGG, 6371.0088 km).
EARTH_DIAMETER_KM = 12742.0176

_V = TypeVar("_V")


def haversine_rad(
    lat1: float, lon1: float, cos_lat1: float, lat2: float, lon2: float, cos_lat2: float
) -> float:
    """Distance in km between two points given in radians, with their latitudes' cosines.

    The cosines are passed in because callers keep them per node: a node's
    cosine is computed once, not once per order.
    """
    s_lat = math.sin((lat2 - lat1) * 0.5)
    s_lon = math.sin((lon2 - lon1) * 0.5)
    a = s_lat * s_lat + cos_lat1 * cos_lat2 * s_lon * s_lon
    if a > 1.0:
        a = 1.0
    return EARTH_DIAMETER_KM * math.asin(math.sqrt(a))


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Distance in km between two points given in degrees."""
    r1, r2 = math.radians(lat1), math.radians(lat2)
    return haversine_rad(r1, math.radians(lon1), math.cos(r1), r2, math.radians(lon2), math.cos(r2))


def longest_prefix(code: str, table: Mapping[str, _V], max_len: int) -> _V | None:
    """The value of the longest key of ``table`` that starts ``code`` (postal codes
    are matched on their leading characters, ignoring spaces and case)."""
    key = code.replace(" ", "").upper()
    for n in range(min(len(key), max_len), 0, -1):
        value = table.get(key[:n])
        if value is not None:
            return value
    return None
