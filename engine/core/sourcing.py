"""Choosing nodes for the lines of an order: the sourcing loop, pure-Python twin.

This module is the reference and the facade: :func:`make_sourcer` returns this
class or its Cython twin (``engine._fast.sourcing.FastSourcer``), which
computes the very same plans; a differential test runs both on random inputs.
Keep this one plain; speed belongs to the other.

One call plans every line of an order for one method and one carrier service
level (for pickup, the transfer service to the store). For each candidate
node (eligible for the channel, capable, with stock) it computes once per
call the **promise day** (the node's ship day from its calendar, plus the
carrier's transit days to the destination, landing on a carrier delivery
day) and the **distance** to the destination. Then:

1. Each line gets its best single-node day and, when splitting is allowed,
   the earliest day by which several nodes together cover it. The line splits
   only when that is strictly earlier (ranking is promise day first, then the
   number of shipments).
2. Lines served by one node are consolidated greedily: the node that serves
   the most unassigned lines at their best day is taken first (fewer
   shipments), ties going to the nearer node, then to the channel's
   priority order; repeat until every such line has its node. Lines of the
   same SKU share a node's stock.
3. Split lines, in line order, take the nodes that reach them by that
   earliest day, largest stock first (fewest parcels), then nearest, then
   channel priority.

Ties are always broken by the channel's node order, so a plan is a pure
function of its inputs. A line that stock cannot cover gets None: the
promiser then looks at future supply.

The result per line is ``None`` or ``(promise_day, allocations)`` with each
allocation ``(node_id, quantity, ship_day, promise_day, distance_km)``; days
are ordinals (``date.toordinal()``), the distance is ``inf`` when the
destination has no coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from engine.core.geo import haversine_rad
from engine.core.network import CompiledService, Network, ResolvedDestination

__all__ = [
    "PlannedUnits",
    "LinePlan",
    "PlanLine",
    "PureSourcer",
    "Sourcer",
    "add_delivery_days",
    "make_sourcer",
    "node_distance",
    "transit_days",
]

# (node_id, quantity, ship_day, promise_day, distance_km)
PlannedUnits = tuple[str, int, int, int, float]
LinePlan = tuple[int, tuple[PlannedUnits, ...]]
# (sku, quantity, ATP by node id): what each line asks and what each node may give.
PlanLine = tuple[str, int, Mapping[str, int]]

_NO_DAY = -1
_INF_DAY = 2**31 - 1
_PRIORITY_CACHE = 64  # distinct eligible-node lists remembered (one per channel in practice)


class Sourcer(Protocol):
    implementation: str

    def plan(
        self,
        now: float,
        service: int,
        destination: ResolvedDestination,
        eligible: Sequence[str],
        lines: Sequence[PlanLine],
        allow_split: bool,
        capabilities: int,
        full: Collection[str] = (),
    ) -> list[LinePlan | None]: ...


def make_sourcer(network: Network, impl: str = "fast") -> Sourcer:
    """The sourcing loop over ``network``: ``fast`` (Cython) or ``pure``.

    A missing extension is an error when ``fast`` is asked for, never a quiet
    fallback to the slow twin.
    """
    if impl == "pure":
        return PureSourcer(network)
    if impl == "fast":
        try:
            from engine._fast.sourcing import FastSourcer
        except ImportError as exc:  # pragma: no cover - the build is tested
            raise RuntimeError(
                "the Cython sourcing loop (engine._fast.sourcing) is not built; "
                "run `python setup.py build_ext --inplace` or choose impl='pure'"
            ) from exc
        return FastSourcer(network)
    raise ValueError(f"unknown sourcing implementation {impl!r}; choose 'fast' or 'pure'")


def add_delivery_days(ship_day: int, days: int, mask: int) -> int:
    """The ``days``-th carrier delivery day after ``ship_day`` (the first one from it for 0)."""
    d = ship_day
    if days == 0:
        while not mask >> ((d - 1) % 7) & 1:
            d += 1
        return d
    while days > 0:
        d += 1
        if mask >> ((d - 1) % 7) & 1:
            days -= 1
    return d


def node_distance(network: Network, k: int, destination: ResolvedDestination) -> float:
    """Kilometres from node ``k`` to the destination; ``inf`` without coordinates."""
    if not destination.has_coords:
        return math.inf
    return haversine_rad(
        destination.lat,
        destination.lon,
        destination.cos_lat,
        network.lat[k],
        network.lon[k],
        network.cos_lat[k],
    )


def transit_days(service: CompiledService, pair: int, km: float) -> int:
    """Carrier days for a parcel: the region pair's entry (``pair`` = origin *
    n_regions + destination), else the first distance band covering ``km``,
    else the level's default; -1 when the level does not serve it."""
    days = service.matrix[pair]
    if days < 0:
        if km < math.inf:
            for b in range(len(service.band_km)):
                if km <= service.band_km[b]:
                    return service.band_days[b]
        days = service.default_days
    return days


class PureSourcer:
    """The sourcing loop in plain Python (see the module docstring)."""

    implementation = "pure"

    def __init__(self, network: Network) -> None:
        self._net = network
        n = len(network.nodes)
        # Per node: the cached ShipWindow of the latest call (see NodeCalendar.ship_window).
        self._valid_from = [math.inf] * n
        self._valid_until = [-math.inf] * n
        self._ship = [0] * n
        self._ship_full = [0] * n
        self._priorities: dict[tuple[str, ...], list[int]] = {}

    def _priority(self, eligible: Sequence[str]) -> list[int]:
        """Position of each node in the channel's list, by node index; -1 = not eligible."""
        key = eligible if type(eligible) is tuple else tuple(eligible)
        prio = self._priorities.get(key)
        if prio is None:
            if len(self._priorities) >= _PRIORITY_CACHE:
                self._priorities.clear()
            prio = [-1] * len(self._net.nodes)
            index = self._net.index
            for p, node_id in enumerate(key):
                k = index.get(node_id)
                if k is not None and prio[k] < 0:
                    prio[k] = p
            self._priorities[key] = prio
        return prio

    def plan(
        self,
        now: float,
        service: int,
        destination: ResolvedDestination,
        eligible: Sequence[str],
        lines: Sequence[PlanLine],
        allow_split: bool,
        capabilities: int,
        full: Collection[str] = (),
    ) -> list[LinePlan | None]:
        net = self._net
        svc = net.services[service]
        prio = self._priority(eligible)
        index = net.index
        caps = net.caps
        dest_region = destination.region
        n_regions = net.n_regions

        # Per node, computed on first use in this call.
        day: dict[int, int] = {}
        ship: dict[int, int] = {}
        dist: dict[int, float] = {}

        def node_day(k: int) -> int:
            if not self._valid_from[k] <= now < self._valid_until[k]:
                w = net.calendars[k].ship_window(now)
                self._valid_from[k] = w.valid_from
                self._valid_until[k] = w.valid_until
                self._ship[k] = w.ship_day
                self._ship_full[k] = w.ship_day_when_full
            s = self._ship_full[k] if full and net.node_ids[k] in full else self._ship[k]
            km = node_distance(net, k, destination)
            ship[k] = s
            dist[k] = km
            transit = transit_days(svc, net.region[k] * n_regions + dest_region, km)
            if transit < 0:
                return _NO_DAY
            return add_delivery_days(s, transit, svc.weekday_mask)

        # Candidates per SKU: (node index, ATP) of usable nodes; lines of the
        # same SKU share one list, so they share its stock.
        group_of: dict[str, int] = {}
        g_nodes: list[list[int]] = []
        g_atp: list[list[int]] = []
        line_group: list[int] = []
        for sku, _qty, atp in lines:
            g = group_of.get(sku)
            if g is None:
                g = group_of[sku] = len(g_nodes)
                ks: list[int] = []
                qs: list[int] = []
                for node_id, q in atp.items():
                    if q <= 0:
                        continue
                    k = index.get(node_id)
                    if k is None or prio[k] < 0 or not caps[k] & capabilities:
                        continue
                    d = day.get(k)
                    if d is None:
                        d = day[k] = node_day(k)
                    if d == _NO_DAY:
                        continue
                    ks.append(k)
                    qs.append(q)
                g_nodes.append(ks)
                g_atp.append(qs)
            line_group.append(g)

        n_lines = len(lines)
        plans: list[LinePlan | None] = [None] * n_lines
        by_day: dict[int, list[int]] = {}  # group -> candidate positions by (day, distance, priority)

        def day_order(g: int) -> list[int]:
            order = by_day.get(g)
            if order is None:
                ks = g_nodes[g]
                order = by_day[g] = sorted(
                    range(len(ks)), key=lambda c: (day[ks[c]], dist[ks[c]], prio[ks[c]])
                )
            return order

        def cover_day(g: int, qty: int) -> int:
            """Earliest day by which the group's nodes together hold ``qty``."""
            ks, qs = g_nodes[g], g_atp[g]
            acc = 0
            for c in day_order(g):
                if qs[c] > 0:
                    acc += qs[c]
                    if acc >= qty:
                        return day[ks[c]]
            return _INF_DAY

        # 1. single node or split, per line
        single: list[int] = []
        split: list[int] = []
        for i in range(n_lines):
            g = line_group[i]
            qty = lines[i][1]
            ks, qs = g_nodes[g], g_atp[g]
            best = _INF_DAY
            for c in range(len(ks)):
                if qs[c] >= qty and day[ks[c]] < best:
                    best = day[ks[c]]
            if allow_split and cover_day(g, qty) < best:
                split.append(i)
            elif best < _INF_DAY:
                single.append(i)

        # 2. consolidate single-node lines
        while single:
            best_day: dict[int, int] = {}
            waiting: list[int] = []
            for i in single:
                g = line_group[i]
                qty = lines[i][1]
                ks, qs = g_nodes[g], g_atp[g]
                best = _INF_DAY
                for c in range(len(ks)):
                    if qs[c] >= qty and day[ks[c]] < best:
                        best = day[ks[c]]
                if best == _INF_DAY:
                    # Another line of the SKU took the stock it counted on.
                    if allow_split:
                        split.append(i)
                    continue
                best_day[i] = best
                waiting.append(i)
            if not waiting:
                break
            cover: dict[int, int] = {}
            for i in waiting:
                g = line_group[i]
                qty = lines[i][1]
                ks, qs = g_nodes[g], g_atp[g]
                for c in range(len(ks)):
                    if qs[c] >= qty and day[ks[c]] == best_day[i]:
                        cover[ks[c]] = cover.get(ks[c], 0) + 1
            chosen = min(cover, key=lambda k: (-cover[k], dist[k], prio[k]))
            single = []
            for i in waiting:
                g = line_group[i]
                qty = lines[i][1]
                ks, qs = g_nodes[g], g_atp[g]
                taken = False
                for c in range(len(ks)):
                    if ks[c] == chosen:
                        if qs[c] >= qty and day[chosen] == best_day[i]:
                            qs[c] -= qty
                            plans[i] = (
                                best_day[i],
                                ((net.node_ids[chosen], qty, ship[chosen], best_day[i], dist[chosen]),),
                            )
                            taken = True
                        break
                if not taken:
                    single.append(i)

        # 3. split lines, in line order
        split.sort()
        for i in split:
            g = line_group[i]
            qty = lines[i][1]
            ks, qs = g_nodes[g], g_atp[g]
            by = cover_day(g, qty)
            if by == _INF_DAY:
                continue
            pool = [c for c in day_order(g) if qs[c] > 0 and day[ks[c]] <= by]
            pool.sort(key=lambda c: (-qs[c], dist[ks[c]], prio[ks[c]]))
            allocations: list[PlannedUnits] = []
            remaining = qty
            latest = 0
            for c in pool:
                k = ks[c]
                take = qs[c] if qs[c] < remaining else remaining
                qs[c] -= take
                remaining -= take
                allocations.append((net.node_ids[k], take, ship[k], day[k], dist[k]))
                if day[k] > latest:
                    latest = day[k]
                if remaining == 0:
                    break
            plans[i] = (latest, tuple(allocations))
        return plans
