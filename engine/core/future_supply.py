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

import json
import math
import re
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from engine.core.errors import FieldViolation, InvalidArgument, UnknownNode
from engine.core.types import MAX_QUANTITY, SkuAvailability, StockLevel

__all__ = [
    "DEFAULT_INBOUND_PAGE",
    "MAX_ETA_AHEAD_S",
    "MAX_ETA_BEHIND_S",
    "MAX_INBOUND_BATCH",
    "MAX_INBOUND_PAGE",
    "FutureSupply",
    "InboundKind",
    "InboundOutcome",
    "InboundPage",
    "InboundSupply",
    "PhasedAvailability",
    "TimePhasedAtp",
    "backorder_basis",
    "check_inbound_batch",
    "decode_inbound",
    "encode_inbound",
    "inbound_violations",
    "page_of",
    "phased_availability",
    "time_phased_atp",
    "uncovered_shortages",
    "validate_inbound_ids",
    "validate_inbound_records",
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


def backorder_basis(
    levels: Iterable[SkuAvailability],
    ruled_nodes: Collection[str] = (),
) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
    """From a channel's per-node availability: the units per (SKU, node) already
    promised beyond the shelf, and the (SKU, node)s whose supply it cannot count on.

    A backorder hold takes the shelf's ATP first, then counts on supply
    (engine/core/ledger.py, ``reserve``), so backorders held at a node leave
    its raw ATP below zero by the units they wait for: those are promised. A
    channel with an allocation rule at a node (any kind) takes no backorders
    there, however much of the shelf the rule leaves it: ``ruled_nodes`` are
    those nodes (``allocation_rules.ruled_nodes``), every SKU's row there is
    ruled. The ATP cannot tell them all (with an empty shelf the channel's
    ATP and the raw ATP are both 0), but a node whose channel ATP is below
    the raw ATP is ruled too, whatever ``ruled_nodes`` says (a rule the
    caller's copy of the channel may not know of yet).
    """
    promised: dict[tuple[str, str], int] = {}
    ruled: set[tuple[str, str]] = set()
    for level in levels:
        for n in level.nodes:
            raw = n.on_hand - n.reserved - n.committed - n.safety_stock
            if n.node in ruled_nodes or (raw >= 0 and n.atp < raw):
                ruled.add((level.sku, n.node))
            if raw < 0:
                promised[(level.sku, n.node)] = -raw
    return promised, ruled


@dataclass(frozen=True, slots=True)
class PhasedAvailability:
    """Availability by date of one SKU over the nodes of an availability answer."""

    sku: str
    total: TimePhasedAtp  # over all the nodes: at each instant, the sum of theirs
    nodes: dict[str, TimePhasedAtp]  # per node, in the answer's node order
    # Per node: the ids of the records arriving at each step's instant.
    supply_ids: dict[str, dict[float, tuple[str, ...]]]


def phased_availability(
    levels: Sequence[SkuAvailability],
    inbound: Iterable[InboundSupply],
    ruled_nodes: Collection[str] = (),
) -> list[PhasedAvailability]:
    """Time-phased ATP of each SKU as the answer's channel could promise it.

    ``levels`` is an availability answer with its per-node breakdown; each
    node starts from the ATP shown there, then gains its inbound records from
    their ETAs on, less the units already promised against them, exactly as
    Quote and a backorder Reserve count supply (``backorder_basis``). Supply
    at nodes outside the answer, or at ``ruled_nodes`` (where the channel has
    an allocation rule, so takes no backorders), does not count.
    """
    promised, ruled = backorder_basis(levels, ruled_nodes)
    by_key: dict[tuple[str, str], list[InboundSupply]] = {}
    for record in inbound:
        by_key.setdefault((record.sku, record.node), []).append(record)
    out: list[PhasedAvailability] = []
    for level in levels:
        nodes: dict[str, TimePhasedAtp] = {}
        ids: dict[str, dict[float, tuple[str, ...]]] = {}
        for n in level.nodes:
            key = (level.sku, n.node)
            records = () if key in ruled else sorted(by_key.get(key, ()), key=lambda r: (r.eta, r.id))
            nodes[n.node] = time_phased_atp(n.atp, records, promised=promised.get(key, 0))
            arriving: dict[float, list[str]] = {}
            for record in records:
                arriving.setdefault(record.eta, []).append(record.id)
            ids[n.node] = {eta: tuple(found) for eta, found in arriving.items()}
        out.append(PhasedAvailability(level.sku, _summed(nodes.values()), nodes, ids))
    return out


def _summed(parts: Iterable[TimePhasedAtp]) -> TimePhasedAtp:
    """The step function whose value at every instant is the sum of ``parts``' values."""
    parts = list(parts)
    instants = sorted({start for part in parts for start, _ in part.steps[1:]})
    steps = [(-math.inf, sum(part.steps[0][1] for part in parts))]
    for instant in instants:
        available = sum(part.available_at(instant) for part in parts)
        if available != steps[-1][1]:
            steps.append((instant, available))
    return TimePhasedAtp(tuple(steps))


def uncovered_shortages(
    shortages: Iterable[StockLevel], expected: Mapping[tuple[str, str], int]
) -> list[StockLevel]:
    """The rows whose shortage the expected inbound supply does not cover.

    A backorder hold is promised from supply still on its way: it leaves
    ``on_hand < reserved + committed`` by design, up to the units expected
    at that (SKU, node). Only what goes beyond them is a shortage to report:
    a recount, or a purchase order cut after backorders were taken on it.
    """
    return [level for level in shortages if level.shortage > expected.get((level.sku, level.node), 0)]


class InboundOutcome(IntEnum):
    """What an upsert did to one record."""

    CREATED = 1
    UPDATED = 2  # same id, another body: the PO line was revised (ETA, quantity...)
    UNCHANGED = 3  # the same record again: nothing written


@dataclass(frozen=True, slots=True)
class InboundPage:
    """One page of a listing in id order; ``next_after`` is the last id of this
    page when more may follow (the next page starts after it), else None."""

    records: tuple[InboundSupply, ...]
    next_after: str | None


# ------------------------------------------------------------------ limits

# Records one upsert (or ids one delete) may carry: the supply batches' limit.
MAX_INBOUND_BATCH = 1_000
# Listing pages (AIP-158): the default page and the largest one served.
DEFAULT_INBOUND_PAGE = 100
MAX_INBOUND_PAGE = 1_000
# How far from the engine's clock an ETA may be. Behind: a PO that is overdue
# (the truck is late) is still expected and stays promisable from "now", but
# one more than a year late is a record nobody closed or a bad timestamp (an
# unset proto Timestamp is 1970). Ahead: three years covers long-lead imports
# and preorders; beyond that it is a typo that would pin a promise date years out.
MAX_ETA_BEHIND_S = 365 * 86_400.0
MAX_ETA_AHEAD_S = 3 * 365 * 86_400.0


def validate_inbound_records(records: Sequence[InboundSupply], now: float, prefix: str = "records") -> None:
    """An upsert batch, as the API's ``records`` field: every violation at once.

    On top of :func:`inbound_violations`: 1..1,000 records, each id once (two
    bodies for one id in one batch would make the outcome depend on order),
    and the ETA present and within the bounds above around ``now``. A NaN
    ETA stands for "not given" (see ``engine.service.convert``).
    """
    v: list[FieldViolation] = []
    if not records:
        v.append(FieldViolation(prefix, "at least one record is required"))
    elif len(records) > MAX_INBOUND_BATCH:
        v.append(FieldViolation(prefix, f"at most {MAX_INBOUND_BATCH} records, got {len(records)}"))
    for found in inbound_violations(records, prefix):
        index = int(found.field[len(prefix) + 1 : found.field.index("]")])
        eta = records[index].eta
        if found.field.endswith(".eta") and isinstance(eta, float) and math.isnan(eta):
            v.append(FieldViolation(found.field, "is required"))
        else:
            v.append(found)
    earliest, latest = now - MAX_ETA_BEHIND_S, now + MAX_ETA_AHEAD_S
    seen: dict[str, int] = {}
    for i, r in enumerate(records):
        eta = r.eta
        if isinstance(eta, (int, float)) and math.isfinite(eta) and not earliest <= eta <= latest:
            v.append(
                FieldViolation(
                    f"{prefix}[{i}].eta", "must be within 1 year before and 3 years after the engine's time"
                )
            )
        if isinstance(r.id, str) and r.id in seen:
            v.append(FieldViolation(f"{prefix}[{i}].id", f"repeats {prefix}[{seen[r.id]}].id"))
        seen.setdefault(r.id, i)
    if v:
        _fail(v)


def validate_inbound_ids(ids: Sequence[str], prefix: str = "ids") -> None:
    """A delete batch: 1..1,000 ids, each 1-128 printable ASCII characters."""
    v: list[FieldViolation] = []
    if not ids:
        v.append(FieldViolation(prefix, "at least one id is required"))
    elif len(ids) > MAX_INBOUND_BATCH:
        v.append(FieldViolation(prefix, f"at most {MAX_INBOUND_BATCH} ids, got {len(ids)}"))
    for i, supply_id in enumerate(ids):
        if not isinstance(supply_id, str) or _ID.fullmatch(supply_id) is None:
            v.append(
                FieldViolation(
                    f"{prefix}[{i}]", "must be 1-128 printable ASCII characters without whitespace"
                )
            )
    if v:
        _fail(v)


def check_inbound_batch(
    records: Sequence[InboundSupply], node_exists: Callable[[str], bool], prefix: str = "records"
) -> None:
    """What a store checks of an upsert batch before changing anything.

    Shapes (:func:`inbound_violations`) and repeated ids fail as
    InvalidArgument with every violation; then the first record whose node
    the store does not know fails as UnknownNode (NODE_NOT_FOUND). The ETA
    bounds are the edge's (they depend on the server's clock, not the store's).
    """
    v = inbound_violations(records, prefix)
    seen: set[str] = set()
    for i, r in enumerate(records):
        if r.id in seen:
            v.append(FieldViolation(f"{prefix}[{i}].id", "repeats an earlier record's id"))
        seen.add(r.id)
    if v:
        _fail(v)
    for i, r in enumerate(records):
        if not node_exists(r.node):
            raise UnknownNode(r.node, field=f"{prefix}[{i}].node")


def _fail(violations: list[FieldViolation]) -> None:
    first = violations[0]
    more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
    raise InvalidArgument(f"{first.field} {first.description}{more}", tuple(violations))


# ------------------------------------------------------------- persistence

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)


def encode_inbound(record: InboundSupply) -> str:
    """The record as compact JSON, the same text for the same record.

    Both stores keep this text (the journal, snapshots, Redis): the Redis
    scripts recognise a re-sent record by comparing it. The ETA is written
    with ``repr`` precision, so it reads back as the same float.
    """
    return _ENCODER.encode(
        {
            "id": record.id,
            "sku": record.sku,
            "node": record.node,
            "quantity": record.quantity,
            "eta": float(record.eta),
            "kind": InboundKind(record.kind).name,
        }
    )


def decode_inbound(text: str | bytes) -> InboundSupply:
    data: dict[str, Any] = json.loads(text)
    return InboundSupply(
        id=data["id"],
        sku=data["sku"],
        node=data["node"],
        quantity=int(data["quantity"]),
        eta=float(data["eta"]),
        kind=InboundKind[data["kind"]],
    )


def page_of(
    records: Iterable[InboundSupply], *, sku: str | None, node: str | None, after: str | None, limit: int
) -> InboundPage:
    """The listing rule both stores follow: filter, order by id, the ``limit``
    records after id ``after``. Ids are ASCII, so str order is byte order,
    which Redis's ZRANGEBYLEX uses too."""
    limit = max(1, limit)
    chosen = sorted(
        (
            r
            for r in records
            if (sku is None or r.sku == sku)
            and (node is None or r.node == node)
            and (after is None or r.id > after)
        ),
        key=lambda r: r.id,
    )
    page = tuple(chosen[:limit])
    return InboundPage(page, page[-1].id if len(chosen) > limit else None)


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

    def expected(self) -> dict[tuple[str, str], int]:
        """Units expected per (SKU, node): what backorders there may be held against."""
        return {
            (sku, node): sum(r.quantity for r in records.values())
            for sku, nodes in self._by_sku.items()
            for node, records in nodes.items()
        }

    def expected_at(self, sku: str, node: str) -> int:
        records = self._by_sku.get(sku, {}).get(node)
        return sum(r.quantity for r in records.values()) if records else 0

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
