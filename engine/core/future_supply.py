"""Future supply: inbound purchase orders and transfers, and availability by date.

An inbound record says "``quantity`` units of ``sku`` arrive at ``node`` at
``eta``". Records are upserted and removed by id (a PO line is revised, a
shipment is received), so feeding the same record twice changes nothing.

Time-phased ATP of one (SKU, node) is a step function of time: today's ATP,
plus every inbound quantity from its ETA on, minus what was already promised
against future supply (backorders and preorders). Promised units are taken
from the earliest supply first, the conservative reading: a new backorder is
never dated before supply that earlier promises are waiting for. A shortage
today (negative ATP) is covered by the first arrivals before anything becomes
available.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum

from engine.core.errors import FieldViolation, InvalidArgument
from engine.core.types import MAX_QUANTITY

__all__ = [
    "FutureSupply",
    "InboundKind",
    "InboundSupply",
    "TimePhasedAtp",
    "inbound_violations",
    "time_phased_atp",
]

_ID = re.compile(r"[!-~]{1,128}")
_KEY = re.compile(r"[!-z|~]{1,64}")


class InboundKind(IntEnum):
    PURCHASE_ORDER = 1
    TRANSFER = 2


@dataclass(frozen=True, slots=True)
class InboundSupply:
    id: str
    sku: str
    node: str
    quantity: int
    eta: float  # epoch seconds: when the units can be sold from the node
    kind: InboundKind = InboundKind.PURCHASE_ORDER


def inbound_violations(records: Iterable[InboundSupply], prefix: str = "inbound") -> list[FieldViolation]:
    v: list[FieldViolation] = []
    for i, r in enumerate(records):
        at = f"{prefix}[{i}]"
        if not isinstance(r.id, str) or _ID.fullmatch(r.id) is None:
            v.append(
                FieldViolation(f"{at}.id", "must be 1-128 printable ASCII characters without whitespace")
            )
        if not isinstance(r.sku, str) or _KEY.fullmatch(r.sku) is None:
            v.append(FieldViolation(f"{at}.sku", "must be a valid SKU id"))
        if not isinstance(r.node, str) or _KEY.fullmatch(r.node) is None:
            v.append(FieldViolation(f"{at}.node", "must be a valid node id"))
        if type(r.quantity) is not int or not 1 <= r.quantity <= MAX_QUANTITY:
            v.append(FieldViolation(f"{at}.quantity", f"must be 1..{MAX_QUANTITY}"))
        if not isinstance(r.eta, (int, float)) or not math.isfinite(r.eta):
            v.append(FieldViolation(f"{at}.eta", "must be a finite time"))
        if r.kind not in (InboundKind.PURCHASE_ORDER, InboundKind.TRANSFER):
            v.append(FieldViolation(f"{at}.kind", "must be PURCHASE_ORDER or TRANSFER"))
    return v


@dataclass(frozen=True, slots=True)
class TimePhasedAtp:
    """Availability of one (SKU, node) over time.

    ``steps[i] = (from_instant, available)``: from that instant on (until the
    next step), ``available`` units can be promised. The first step starts at
    ``-inf`` (now); ``available`` never decreases.
    """

    steps: tuple[tuple[float, int], ...]

    def available_at(self, instant: float) -> int:
        i = bisect_right([s[0] for s in self.steps], instant) - 1
        return self.steps[i][1] if i >= 0 else 0

    def earliest(self, quantity: int) -> float | None:
        """The first instant at which ``quantity`` units are available (``-inf``:
        now); None when even all known supply does not reach it."""
        for start, available in self.steps:
            if available >= quantity:
                return start
        return None

    @property
    def total(self) -> int:
        return self.steps[-1][1]


def time_phased_atp(
    current_atp: int, inbound: Iterable[InboundSupply], *, promised: int = 0
) -> TimePhasedAtp:
    """Availability by date from today's ATP, the inbound records of one (SKU, node),
    and the units already promised against future supply."""
    level = current_atp - promised
    steps: list[tuple[float, int]] = [(-math.inf, max(0, level))]
    for record in sorted(inbound, key=lambda r: (r.eta, r.id)):
        level += record.quantity
        available = max(0, level)
        if steps[-1][0] == record.eta:
            steps[-1] = (record.eta, available)
        elif available != steps[-1][1]:
            steps.append((record.eta, available))
    return TimePhasedAtp(tuple(steps))


class FutureSupply:
    """The inbound book: every expected arrival, by id, indexed by SKU and node."""

    __slots__ = ("_by_id", "_by_sku")

    def __init__(self, records: Iterable[InboundSupply] = ()) -> None:
        self._by_id: dict[str, InboundSupply] = {}
        self._by_sku: dict[str, dict[str, dict[str, InboundSupply]]] = {}
        self.upsert(records)

    def upsert(self, records: Iterable[InboundSupply]) -> None:
        """Add or replace records by id; the whole batch is checked before any is applied."""
        batch = list(records)
        v = inbound_violations(batch)
        if v:
            first = v[0]
            raise InvalidArgument(f"{first.field} {first.description}", tuple(v))
        for record in batch:
            self._unlink(record.id)
            self._by_id[record.id] = record
            self._by_sku.setdefault(record.sku, {}).setdefault(record.node, {})[record.id] = record

    def remove(self, supply_id: str) -> bool:
        """Forget a record (received, or cancelled); False when it was not there."""
        return self._unlink(supply_id)

    def get(self, supply_id: str) -> InboundSupply | None:
        return self._by_id.get(supply_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[InboundSupply]:
        return iter(sorted(self._by_id.values(), key=lambda r: (r.sku, r.node, r.eta, r.id)))

    def for_sku(self, sku: str) -> dict[str, tuple[InboundSupply, ...]]:
        """Inbound records of a SKU by node, each node's by (eta, id)."""
        nodes = self._by_sku.get(sku)
        if not nodes:
            return {}
        return {
            node: tuple(sorted(records.values(), key=lambda r: (r.eta, r.id)))
            for node, records in nodes.items()
        }

    def time_phased(
        self,
        sku: str,
        current_atp: Mapping[str, int],
        promised: Mapping[str, int] | None = None,
    ) -> dict[str, TimePhasedAtp]:
        """Availability by date of a SKU at every node with stock or inbound supply."""
        inbound = self.for_sku(sku)
        out: dict[str, TimePhasedAtp] = {}
        for node in sorted(set(current_atp) | set(inbound)):
            out[node] = time_phased_atp(
                current_atp.get(node, 0),
                inbound.get(node, ()),
                promised=(promised or {}).get(node, 0),
            )
        return out

    def _unlink(self, supply_id: str) -> bool:
        old = self._by_id.pop(supply_id, None)
        if old is None:
            return False
        nodes = self._by_sku[old.sku]
        del nodes[old.node][supply_id]
        if not nodes[old.node]:
            del nodes[old.node]
        if not nodes:
            del self._by_sku[old.sku]
        return True
