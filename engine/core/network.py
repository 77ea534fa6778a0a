"""The fulfillment network compiled for sourcing: nodes, calendars, regions, carriers.

Built once when the network or the carrier table changes, then shared by
every quote. Everything the sourcing loop reads per node is laid out in flat
tuples indexed by the node's position (coordinates in radians, the cosine of
the latitude, carrier region number, capability bits), and every service
level's transit table becomes a dense region x region matrix, so both sourcing
twins (pure and Cython) read the very same numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from engine.core.calendar import NodeCalendar, calendar_violations
from engine.core.carriers import ANY_REGION, MAX_POSTAL_PREFIX, CarrierTable, ServiceLevel, weekday_mask
from engine.core.errors import FieldViolation, InvalidArgument, UnknownNode
from engine.core.types import Capability, Node

__all__ = [
    "CompiledService",
    "Destination",
    "Network",
    "ResolvedDestination",
    "node_violations",
    "validate_network_node",
]

_POSTAL = re.compile(rf"[A-Za-z0-9 \-]{{0,{MAX_POSTAL_PREFIX}}}")
_ALL_CAPABILITIES = int(Capability.SHIP | Capability.PICKUP | Capability.SHIP_FROM_STORE)
MAX_DAILY_CAPACITY = 10_000_000
MAX_DEFAULT_SAFETY_STOCK = 1_000_000_000


def node_violations(node: Node, prefix: str = "node") -> list[FieldViolation]:
    """Problems with the fulfillment fields of a node (calendar, capabilities, capacity).

    ``engine.core.validation.validate_node`` checks the identity fields
    (id, type, name, coordinates) and adds these, with the same paths.
    """
    v = calendar_violations(node, prefix)
    caps = node.capabilities
    if caps is not None and (type(caps) not in (int, Capability) or not 0 <= int(caps) <= _ALL_CAPABILITIES):
        v.append(FieldViolation(f"{prefix}.capabilities", "must combine SHIP, PICKUP and SHIP_FROM_STORE"))
    if not isinstance(node.postal_prefix, str) or _POSTAL.fullmatch(node.postal_prefix) is None:
        v.append(
            FieldViolation(
                f"{prefix}.postal_prefix", f"at most {MAX_POSTAL_PREFIX} letters, digits or spaces"
            )
        )
    cap = node.daily_capacity
    if cap is not None and (type(cap) is not int or not 1 <= cap <= MAX_DAILY_CAPACITY):
        v.append(FieldViolation(f"{prefix}.daily_capacity", f"must be 1..{MAX_DAILY_CAPACITY} or unset"))
    safety = node.default_safety_stock
    if type(safety) is not int or not 0 <= safety <= MAX_DEFAULT_SAFETY_STOCK:
        v.append(
            FieldViolation(
                f"{prefix}.default_safety_stock", f"must be 0..{MAX_DEFAULT_SAFETY_STOCK}, got {safety!r}"
            )
        )
    return v


def validate_network_node(node: Node, prefix: str = "node") -> None:
    v = node_violations(node, prefix)
    if v:
        first = v[0]
        more = f" (and {len(v) - 1} more)" if len(v) > 1 else ""
        raise InvalidArgument(f"{first.field} {first.description}{more}", tuple(v))


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """Where a parcel goes: a postal code, coordinates, or both.

    Coordinates give exact distances; a postal code alone finds the carrier
    region and, if the carrier table has a centroid for its prefix, an
    approximate location. ``region`` overrides the postal lookup.
    """

    postal_code: str = ""
    latitude: float | None = None
    longitude: float | None = None
    region: str = ""


class ResolvedDestination(NamedTuple):
    """A destination as the sourcing loop reads it."""

    lat: float  # radians; nan when unknown
    lon: float
    cos_lat: float
    has_coords: bool
    region: int  # carrier region number (Network.unknown_region when unknown)


class CompiledService(NamedTuple):
    name: str
    matrix: tuple[int, ...]  # [origin * Network.n_regions + destination] -> days; -1 = no entry
    band_km: tuple[float, ...]
    band_days: tuple[int, ...]
    default_days: int  # -1 = none
    weekday_mask: int  # carrier delivery days, bit (ISO weekday - 1)
    internal: bool


class Network:
    """Nodes and carriers, compiled. Immutable: build a new one when either changes."""

    def __init__(self, nodes: Iterable[Node], carriers: CarrierTable) -> None:
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.carriers = carriers
        violations: list[FieldViolation] = []
        index: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            if node.id in index:
                violations.append(FieldViolation(f"nodes[{i}].id", f"node {node.id!r} is listed twice"))
            index[node.id] = i
            violations.extend(node_violations(node, f"nodes[{i}]"))
            if not (math.isfinite(node.latitude) and -90.0 <= node.latitude <= 90.0):
                violations.append(FieldViolation(f"nodes[{i}].latitude", "must be -90..90"))
            if not (math.isfinite(node.longitude) and -180.0 <= node.longitude <= 180.0):
                violations.append(FieldViolation(f"nodes[{i}].longitude", "must be -180..180"))
        if violations:
            first = violations[0]
            raise InvalidArgument(f"{first.field} {first.description}", tuple(violations))
        self.index = index
        self.node_ids: tuple[str, ...] = tuple(n.id for n in self.nodes)
        self.calendars: tuple[NodeCalendar, ...] = tuple(
            NodeCalendar(n, f"nodes[{i}]") for i, n in enumerate(self.nodes)
        )
        self.lat: tuple[float, ...] = tuple(math.radians(n.latitude) for n in self.nodes)
        self.lon: tuple[float, ...] = tuple(math.radians(n.longitude) for n in self.nodes)
        self.cos_lat: tuple[float, ...] = tuple(math.cos(r) for r in self.lat)
        self.caps: tuple[int, ...] = tuple(int(n.effective_capabilities) for n in self.nodes)

        self.region_names: tuple[str, ...] = carriers.regions
        self.region_index: dict[str, int] = {r: i for i, r in enumerate(self.region_names)}
        # Ends whose region the carriers do not know get this number; they match
        # only wildcard transit entries ("*"), then distance bands and defaults.
        self.unknown_region = len(self.region_names)
        self.n_regions = self.unknown_region + 1
        self.region: tuple[int, ...] = tuple(self._node_region(n) for n in self.nodes)
        self.services: tuple[CompiledService, ...] = tuple(
            self._compile_service(level) for level in carriers.service_levels
        )
        self.service_index: dict[str, int] = {s.name: i for i, s in enumerate(self.services)}
        transfer = carriers.transfer_service
        self.transfer_service: int | None = None if transfer is None else self.service_index[transfer]

    # ------------------------------------------------------------------ lookups

    def position(self, node_id: str, field: str = "node") -> int:
        try:
            return self.index[node_id]
        except KeyError:
            raise UnknownNode(node_id, field=field) from None

    def node(self, node_id: str, field: str = "node") -> Node:
        return self.nodes[self.position(node_id, field)]

    def calendar(self, node_id: str) -> NodeCalendar:
        return self.calendars[self.position(node_id)]

    def at_capacity(self, released_today: Mapping[str, int]) -> frozenset[str]:
        """Nodes whose orders released today (each node's own local day, counted
        by the caller) reached their ``daily_capacity``: the promiser's ``full``."""
        index, nodes = self.index, self.nodes
        full = []
        for node_id, count in released_today.items():
            k = index.get(node_id)
            if k is not None:
                cap = nodes[k].daily_capacity
                if cap is not None and count >= cap:
                    full.append(node_id)
        return frozenset(full)

    def resolve(self, destination: Destination) -> ResolvedDestination:
        """Coordinates and carrier region of a destination (either may stay unknown)."""
        carriers = self.carriers
        region = self.unknown_region
        if destination.region:
            region = self.region_index.get(destination.region, region)
        elif destination.postal_code:
            name = carriers.region_of_postal(destination.postal_code)
            if name is not None:
                region = self.region_index[name]
        lat, lon = destination.latitude, destination.longitude
        if (lat is None or lon is None) and destination.postal_code:
            centroid = carriers.centroid_of_postal(destination.postal_code)
            if centroid is not None:
                lat, lon = centroid
        if lat is None or lon is None:
            nan = math.nan
            return ResolvedDestination(nan, nan, nan, False, region)
        r = math.radians(lat)
        return ResolvedDestination(r, math.radians(lon), math.cos(r), True, region)

    def resolve_node(self, k: int) -> ResolvedDestination:
        """A node as a destination (transfers to a pickup store)."""
        return ResolvedDestination(self.lat[k], self.lon[k], self.cos_lat[k], True, self.region[k])

    # ----------------------------------------------------------------- compile

    def _node_region(self, node: Node) -> int:
        if node.region in self.region_index:
            return self.region_index[node.region]
        if node.postal_prefix:
            name = self.carriers.region_of_postal(node.postal_prefix)
            if name is not None:
                return self.region_index[name]
        return self.unknown_region

    def _compile_service(self, level: ServiceLevel) -> CompiledService:
        n = len(self.region_names) + 1  # the last row and column: "region unknown"
        names = (*self.region_names, ANY_REGION)
        matrix = [-1] * (n * n)
        for o in range(n):
            for d in range(n):
                days = level.pair_days(names[o], names[d])
                if days is not None:
                    matrix[o * n + d] = days
        return CompiledService(
            name=level.name,
            matrix=tuple(matrix),
            band_km=tuple(b.max_km for b in level.distance_bands),
            band_days=tuple(b.days for b in level.distance_bands),
            default_days=-1 if level.default_days is None else level.default_days,
            weekday_mask=weekday_mask(level.delivery_weekdays),
            internal=level.internal,
        )
