"""Daily release capacity: which nodes an order uses, and on which local day.

A node's ``daily_capacity`` is the number of orders it can release per day.
Both stores count an order once per node it allocates from, on the local date
(in the node's own time zone) at the moment it is committed; the quoting layer
reads today's counts and treats a node that reached its capacity as releasing
the next working day (:meth:`engine.core.network.Network.at_capacity`).

The counts are advisory: they move promise dates, they never refuse an order.
Only nodes that have a ``daily_capacity`` when an order is committed count it,
so a network without capacities pays nothing on commit; a capacity set during
a day counts that day's orders from then on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

from engine.core.calendar import load_zone
from engine.core.types import Node, Reservation, ReservationState

__all__ = ["CAPACITY_RETENTION_DAYS", "capacity_days", "capacity_nodes", "local_day"]

# How long a day's count is kept: today's is what promises read; a few more
# days cover a commit retried around midnight and clocks a little apart.
CAPACITY_RETENTION_DAYS = 3

_UTC = ZoneInfo("UTC")


def local_day(time_zone: str, instant: float) -> str:
    """The ISO date of ``instant`` in ``time_zone`` (UTC for a zone the system lacks:
    nodes are validated at the edge, a store-level caller may skip that)."""
    try:
        zone = load_zone(time_zone)
    except ValueError:
        zone = _UTC
    return datetime.fromtimestamp(instant, zone).date().isoformat()


def capacity_nodes(reservation: Reservation, nodes: Mapping[str, Node]) -> list[str]:
    """The nodes with a daily capacity that the committed lines of ``reservation``
    allocate from, sorted, once each (a line released before the commit ships nothing)."""
    used: set[str] = set()
    for line in reservation.lines:
        if line.state != ReservationState.COMMITTED:
            continue
        for allocation in line.allocations:
            if allocation.quantity > 0:
                used.add(allocation.node)
    return sorted(n for n in used if _has_capacity(nodes.get(n)))


def capacity_days(
    node_ids: Iterable[str], nodes: Mapping[str, Node], instant: float
) -> list[tuple[str, str]]:
    """(node, local ISO date at ``instant``) for each node: the counters to read or bump."""
    return [(n, local_day(nodes[n].time_zone, instant)) for n in node_ids]


def _has_capacity(node: Node | None) -> bool:
    return node is not None and node.daily_capacity is not None
