"""Protobuf <-> domain conversion: the only place that knows both.

Requests become engine/core types before validation, so the limits are checked
on the values the store will see; replies are built straight from the store's
results. Enums are mapped by name (``HELD`` <-> ``RESERVATION_STATE_HELD``), so a
member added on one side only fails at import, not on the wire. Empty strings
in the API mean "not given" and become None here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2
from google.type import date_pb2, timeofday_pb2

from engine._proto.inventory.v1 import (
    admin_service_pb2,
    inventory_service_pb2,
    network_service_pb2,
    stock_pb2,
    supply_service_pb2,
)
from engine.core.allocation_rules import AllocationRule, RuleKind
from engine.core.carriers import CarrierTable, dump_carriers, parse_carriers
from engine.core.errors import FieldViolation, InvalidArgument
from engine.core.future_supply import (
    DEFAULT_INBOUND_PAGE,
    MAX_INBOUND_PAGE,
    InboundKind,
    InboundOutcome,
    InboundPage,
    InboundSupply,
    PhasedAvailability,
    TimePhasedAtp,
)
from engine.core.network import Destination
from engine.core.promising import (
    LineOption,
    Quote,
    QuoteLine,
    QuoteRequest,
    ReserveFulfillment,
    ReserveRanking,
    StoreStock,
    SupplySource,
)
from engine.core.types import (
    Capability,
    Channel,
    FulfillmentMethod,
    LineRequest,
    Node,
    NodeType,
    Reservation,
    ReservationState,
    ReserveRequest,
    SkuAvailability,
    StockChange,
    StockLevel,
    SupplyKind,
    SupplyOp,
)
from engine.service.quoting import StoreAisle
from engine.store.base import AuditReport, CarrierRecord

__all__ = [
    "adjust_ops",
    "audit_pb",
    "availability_pb",
    "carrier_document",
    "carrier_table_pb",
    "carriers_etag",
    "channel_from_pb",
    "channel_pb",
    "duration_s",
    "find_in_stores_pb",
    "inbound_delete_pb",
    "inbound_list_pb",
    "inbound_list_request",
    "inbound_records",
    "inbound_upsert_pb",
    "node_from_pb",
    "node_pb",
    "quote_pb",
    "quote_request",
    "reservation_pb",
    "reserve_fulfillment",
    "reserve_request",
    "safety_stock_ops",
    "set_stock_ops",
    "stock_level_pb",
    "supply_pb",
]

_Reservation = inventory_service_pb2.Reservation

_STATE_PB = {
    s: inventory_service_pb2.ReservationState.Value(f"RESERVATION_STATE_{s.name}") for s in ReservationState
}
_NODE_TYPE_PB = {t: network_service_pb2.NodeType.Value(f"NODE_TYPE_{t.name}") for t in NodeType}
_NODE_TYPE_FROM_PB = {pb: t for t, pb in _NODE_TYPE_PB.items()}
# AllocationRuleKind numbers are RuleKind's (UNSPECIFIED = NONE, refused by validation).
_RULE_KINDS = frozenset(int(k) for k in RuleKind)
_METHOD_PB = {
    m: inventory_service_pb2.FulfillmentMethod.Value(f"FULFILLMENT_METHOD_{m.name}")
    for m in FulfillmentMethod
}
_METHOD_FROM_PB = {pb: m for m, pb in _METHOD_PB.items()}
_SOURCE_PB: dict[SupplySource, int] = {
    s: inventory_service_pb2.SupplySource.Value(f"SUPPLY_SOURCE_{s.name}") for s in SupplySource
}
_INBOUND_KIND_PB = {k: supply_service_pb2.InboundKind.Value(f"INBOUND_KIND_{k.name}") for k in InboundKind}
_INBOUND_KIND_FROM_PB = {pb: k for k, pb in _INBOUND_KIND_PB.items()}
_INBOUND_OUTCOME_PB = {
    o: supply_service_pb2.InboundOutcome.Value(f"INBOUND_OUTCOME_{o.name}") for o in InboundOutcome
}


# ------------------------------------------------------------------- requests


def duration_s(d: duration_pb2.Duration) -> float:
    # Duration.ToTimedelta() and friends are several times slower than this.
    return d.seconds + d.nanos / 1e9


def reserve_request(pb: inventory_service_pb2.ReserveRequest) -> ReserveRequest:
    return ReserveRequest(
        reservation_id=pb.reservation_id,
        channel=pb.channel,
        lines=tuple(LineRequest(line.sku, line.quantity, line.node or None) for line in pb.lines),
        ttl_s=duration_s(pb.ttl),
        allow_partial=pb.allow_partial,
    )


def reserve_fulfillment(pb: inventory_service_pb2.ReserveRequest) -> ReserveFulfillment | None:
    """The request's fulfillment context; None when it has none (plain sourcing).
    An UNSPECIFIED method is SHIP with a destination, else PICKUP (as Quote
    fills in its methods); an unknown number stays an int, refused by validation."""
    if not pb.HasField("fulfillment"):
        return None
    f = pb.fulfillment
    destination = _destination(f.destination) if f.HasField("destination") else None
    method = (
        _METHOD_FROM_PB.get(f.method, f.method)
        if f.method
        else (FulfillmentMethod.SHIP if destination is not None else FulfillmentMethod.PICKUP)
    )
    return ReserveFulfillment(
        method=method,  # type: ignore[arg-type]
        destination=destination,
        pickup_store=f.pickup_store or None,
        service_level=f.service_level or None,
        allow_split=f.allow_split,
        allow_backorder=f.allow_backorder,
    )


def _destination(d: inventory_service_pb2.Destination) -> Destination:
    return Destination(
        postal_code=d.postal_code,
        latitude=d.latitude if d.HasField("latitude") else None,
        longitude=d.longitude if d.HasField("longitude") else None,
        region=d.region,
    )


def adjust_ops(pb: supply_service_pb2.AdjustStockRequest) -> list[SupplyOp]:
    return [SupplyOp(SupplyKind.ADJUST, c.sku, c.node, c.delta, 0, c.event_id or None) for c in pb.changes]


def set_stock_ops(pb: supply_service_pb2.SetStockRequest) -> list[SupplyOp]:
    return [
        SupplyOp(SupplyKind.SET, c.sku, c.node, c.on_hand, c.version, c.event_id or None) for c in pb.changes
    ]


def safety_stock_ops(pb: supply_service_pb2.SetSafetyStockRequest) -> list[SupplyOp]:
    return [
        SupplyOp(
            SupplyKind.SAFETY_DEFAULT if c.use_node_default else SupplyKind.SAFETY,
            c.sku,
            c.node,
            c.safety_stock,
            0,
            c.event_id or None,
        )
        for c in pb.changes
    ]


def node_from_pb(pb: network_service_pb2.Node) -> Node:
    # UNSPECIFIED or an unknown number stays an int, which validation rejects by name.
    node_type = _NODE_TYPE_FROM_PB.get(pb.type, pb.type)
    # Unset fields keep the domain's defaults (see engine.core.types.Node), so a
    # client that predates the calendar fields defines the same node as before.
    optional: dict[str, object] = {}
    if pb.HasField("capabilities"):
        c = pb.capabilities
        optional["capabilities"] = (
            (Capability.SHIP if c.ship else Capability.NONE)
            | (Capability.PICKUP if c.pickup else Capability.NONE)
            | (Capability.SHIP_FROM_STORE if c.ship_from_store else Capability.NONE)
        )
    if pb.HasField("pickup_minutes"):
        optional["pickup_minutes"] = pb.pickup_minutes
    if pb.HasField("cutoff"):
        optional["cutoff"] = _hhmm(pb.cutoff)
    if pb.HasField("opens_at"):
        optional["opens_at"] = _hhmm(pb.opens_at)
    if pb.open_weekdays:
        # google.type.DayOfWeek numbers Monday 1 .. Sunday 7, as ISO does;
        # UNSPECIFIED (0) is left for validation to refuse.
        optional["open_weekdays"] = tuple(pb.open_weekdays)
    if pb.HasField("daily_capacity"):
        optional["daily_capacity"] = pb.daily_capacity
    optional["default_safety_stock"] = pb.default_safety_stock
    return Node(
        id=pb.id,
        type=node_type,  # type: ignore[arg-type]
        name=pb.name,
        region=pb.region,
        latitude=pb.latitude,
        longitude=pb.longitude,
        time_zone=pb.time_zone or "UTC",
        postal_prefix=pb.postal_prefix,
        processing_days=pb.processing_days,
        holidays=tuple(_iso_date(d) for d in pb.holidays),
        **optional,  # type: ignore[arg-type]
    )


def _hhmm(t: timeofday_pb2.TimeOfDay) -> str:
    """``HH:MM``; seconds or out-of-range values give a text validation refuses."""
    if t.seconds or t.nanos:
        return f"{t.hours:02d}:{t.minutes:02d}:{t.seconds:02d}.{t.nanos:09d}"
    return f"{t.hours:02d}:{t.minutes:02d}"


def _iso_date(d: date_pb2.Date) -> str:
    # A partial date (year, month or day 0) becomes an invalid ISO date, refused by validation.
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}"


def channel_from_pb(pb: network_service_pb2.Channel) -> Channel:
    return Channel(
        id=pb.id,
        nodes=tuple(pb.nodes),
        name=pb.name,
        allocation_rules=tuple(_rule_from_pb(pb.id, r) for r in pb.allocation_rules),
        allow_backorder=pb.allow_backorder,
    )


def _rule_from_pb(channel: str, pb: network_service_pb2.AllocationRule) -> AllocationRule:
    # UNSPECIFIED (NONE) or an unknown number is kept as is, for validation to refuse by name.
    kind = RuleKind(pb.kind) if pb.kind in _RULE_KINDS else pb.kind
    node_type = _NODE_TYPE_FROM_PB.get(pb.node_type, pb.node_type) if pb.node_type else None
    return AllocationRule(
        channel=channel,
        kind=kind,  # type: ignore[arg-type]
        value=pb.value,
        node=pb.node or None,
        node_type=node_type,  # type: ignore[arg-type]
        protects=pb.protects or None,
    )


def quote_request(pb: inventory_service_pb2.QuoteRequest) -> tuple[str, QuoteRequest]:
    """The channel and the domain request; an empty method list is filled in from
    what the request gives (a destination: SHIP; a pickup store: PICKUP)."""
    destination = _destination(pb.destination) if pb.HasField("destination") else None
    # UNSPECIFIED or an unknown number stays an int, which validation rejects by position.
    methods = tuple(_METHOD_FROM_PB.get(m, m) for m in pb.methods)
    if not methods:
        given = (
            (FulfillmentMethod.SHIP, destination is not None),
            (FulfillmentMethod.PICKUP, bool(pb.pickup_store)),
        )
        methods = tuple(m for m, present in given if present)
    return pb.channel, QuoteRequest(
        lines=tuple(QuoteLine(line.sku, line.quantity) for line in pb.lines),
        destination=destination,
        pickup_store=pb.pickup_store or None,
        methods=methods,  # type: ignore[arg-type]
        service_levels=tuple(pb.service_levels),
        allow_split=pb.allow_split,
        allow_backorder=pb.allow_backorder,
    )


def inbound_records(pb: supply_service_pb2.UpsertInboundSupplyRequest) -> list[InboundSupply]:
    """The records to upsert. An unset ETA becomes NaN and UNSPECIFIED or an
    unknown kind stays an int: validation names both."""
    return [
        InboundSupply(
            id=r.id,
            sku=r.sku,
            node=r.node,
            quantity=r.quantity,
            eta=r.eta.seconds + r.eta.nanos / 1e9 if r.HasField("eta") else math.nan,
            kind=_INBOUND_KIND_FROM_PB.get(r.kind, r.kind),  # type: ignore[arg-type]
        )
        for r in pb.records
    ]


def inbound_list_request(
    pb: supply_service_pb2.ListInboundSupplyRequest,
) -> tuple[str | None, str | None, str | None, int]:
    """(sku, node, after, limit) of a listing, page size and token checked (AIP-158).

    The token is opaque to clients: base64 of the last id served and the
    filters it was served under, so a token reused with other filters is
    refused rather than silently paging through another listing.
    """
    sku, node = pb.sku or None, pb.node or None
    violations: list[FieldViolation] = []
    if pb.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    after: str | None = None
    if pb.page_token:
        try:
            token = json.loads(base64.urlsafe_b64decode(pb.page_token.encode("ascii")))
            after, token_sku, token_node = token["after"], token["sku"], token["node"]
            if not isinstance(after, str) or (token_sku, token_node) != (sku, node):
                raise ValueError("the token belongs to another listing")
        except (ValueError, KeyError, TypeError, UnicodeEncodeError, binascii.Error):
            violations.append(
                FieldViolation("page_token", "is not a token of a listing with this sku and node")
            )
    if violations:
        first = violations[0]
        raise InvalidArgument(f"{first.field} {first.description}", tuple(violations))
    limit = min(pb.page_size or DEFAULT_INBOUND_PAGE, MAX_INBOUND_PAGE)
    return sku, node, after, limit


# -------------------------------------------------------------------- replies


def reservation_pb(
    res: Reservation, ranking: ReserveRanking | None = None
) -> inventory_service_pb2.Reservation:
    """The reservation; with the ranking of a promise-driven Reserve, each
    allocation dated by the promise at its node (see ``_date_lines``)."""
    out = _reservation_pb(res)
    if ranking is not None:
        _date_lines(out, ranking)
    return out


def _date_lines(out: inventory_service_pb2.Reservation, ranking: ReserveRanking) -> None:
    """Promise dates of the allocations the store made, from the promiser's
    per-node promises (a backordered line's from its inbound supply); a line's
    promise is the latest of its allocations'. A line with an allocation the
    promiser could not date (a named node that cannot serve the method) gets
    no line promise."""
    for line in out.lines:
        latest = None
        dated = bool(line.allocations)
        for a in line.allocations:
            promise = ranking.promise(a.node, line.line_index, line.sku)
            if promise is None:
                dated = False
                continue
            _set_date(a.promise_date, promise.promise_date)
            a.source = _SOURCE_PB[promise.source]
            if promise.ready_at is not None:
                _set_timestamp(a.ready_time, promise.ready_at.timestamp())
            if promise.source == SupplySource.INBOUND:
                line.backorder = True
                if promise.available_at is not None:
                    _set_timestamp_us(a.available_time, promise.available_at.timestamp())
                a.supply_ids.extend(promise.supply_ids)
            if (
                latest is None
                or promise.promise_date > latest.promise_date
                or (
                    promise.ready_at is not None
                    and latest.ready_at is not None
                    and promise.ready_at > latest.ready_at
                )
            ):
                latest = promise
        if dated and latest is not None:
            _set_date(line.promise_date, latest.promise_date)
            if latest.ready_at is not None:
                _set_timestamp(line.ready_time, latest.ready_at.timestamp())
                line.ready_time_zone = ranking.time_zone or ""


def _reservation_pb(res: Reservation) -> inventory_service_pb2.Reservation:
    # Filled in place: building sub-messages and passing them as kwargs copies
    # each one, which doubles the cost of this hot path.
    out = _Reservation(
        reservation_id=res.id,
        channel=res.channel,
        state=_STATE_PB[res.state],
        allow_partial=res.allow_partial,
    )
    ttl_ns = round(res.ttl_s * 1e9)
    out.ttl.seconds, out.ttl.nanos = divmod(ttl_ns, 1_000_000_000)
    _set_timestamp(out.create_time, res.created_at)
    _set_timestamp(out.expire_time, res.expires_at)
    add_line = out.lines.add
    for line in res.lines:
        allocated = 0
        pb_line = add_line(
            line_index=line.index,
            sku=line.sku,
            requested_quantity=line.requested,
            requested_node=line.requested_node or "",
            state=_STATE_PB[line.state],
        )
        add_allocation = pb_line.allocations.add
        for a in line.allocations:
            add_allocation(node=a.node, quantity=a.quantity)
            allocated += a.quantity
        pb_line.allocated_quantity = allocated
    return out


def inbound_pb(out: supply_service_pb2.InboundSupply, record: InboundSupply) -> None:
    out.id, out.sku, out.node, out.quantity = record.id, record.sku, record.node, record.quantity
    out.kind = _INBOUND_KIND_PB[InboundKind(record.kind)]
    _set_timestamp_us(out.eta, record.eta)


def inbound_upsert_pb(
    records: Sequence[InboundSupply], outcomes: Sequence[InboundOutcome]
) -> supply_service_pb2.UpsertInboundSupplyResponse:
    out = supply_service_pb2.UpsertInboundSupplyResponse()
    for record, outcome in zip(records, outcomes, strict=True):
        result = out.results.add(outcome=_INBOUND_OUTCOME_PB[outcome])
        inbound_pb(result.record, record)
    return out


def inbound_delete_pb(
    ids: Sequence[str], removed: Sequence[bool]
) -> supply_service_pb2.DeleteInboundSupplyResponse:
    return supply_service_pb2.DeleteInboundSupplyResponse(
        deleted_ids=[i for i, gone in zip(ids, removed, strict=True) if gone],
        not_found_ids=[i for i, gone in zip(ids, removed, strict=True) if not gone],
    )


def inbound_list_pb(
    page: InboundPage, sku: str | None, node: str | None
) -> supply_service_pb2.ListInboundSupplyResponse:
    out = supply_service_pb2.ListInboundSupplyResponse()
    for record in page.records:
        inbound_pb(out.records.add(), record)
    if page.next_after is not None:
        token = json.dumps({"after": page.next_after, "sku": sku, "node": node}, separators=(",", ":"))
        out.next_page_token = base64.urlsafe_b64encode(token.encode("ascii")).decode("ascii")
    return out


def _set_timestamp_us(ts: timestamp_pb2.Timestamp, t: float) -> None:
    """To the microsecond: a float of epoch seconds carries no more (about 0.2 us
    today), and rounding makes an ETA read back as the value that was sent."""
    us = round(t * 1e6)
    ts.seconds, micros = divmod(us, 1_000_000)
    ts.nanos = micros * 1000


def _set_timestamp(ts: timestamp_pb2.Timestamp, t: float) -> None:
    seconds = int(t // 1)
    ts.seconds = seconds
    ts.nanos = int((t - seconds) * 1e9)


def availability_pb(
    results: Sequence[SkuAvailability],
    phased: Sequence[PhasedAvailability] | None = None,
    *,
    include_nodes: bool = True,
) -> inventory_service_pb2.GetAvailabilityResponse:
    """``phased``: each result's availability by date, in the same order.
    ``include_nodes=False`` leaves out the breakdown that ``phased`` was computed from."""
    response = inventory_service_pb2.GetAvailabilityResponse()
    add = response.availabilities.add
    for i, r in enumerate(results):
        entry = add(sku=r.sku, atp=r.atp)
        future = phased[i] if phased is not None else None
        if future is not None:
            _add_steps(entry.future, future.total, {})
        if r.nodes and include_nodes:
            add_node = entry.nodes.add
            for n in r.nodes:
                node = add_node(
                    node=n.node,
                    on_hand=n.on_hand,
                    reserved=n.reserved,
                    committed=n.committed,
                    safety_stock=n.safety_stock,
                    atp=n.atp,
                )
                if future is not None:
                    _add_steps(node.future, future.nodes[n.node], future.supply_ids[n.node])
    return response


def _add_steps(out: Any, phased: TimePhasedAtp, supply_ids: dict[float, tuple[str, ...]]) -> None:
    # The first step is today's ATP, which the answer already carries.
    for start, available in phased.steps[1:]:
        step = out.add(atp=available, supply_ids=supply_ids.get(start, ()))
        _set_timestamp_us(step.time, start)


def stock_level_pb(level: StockLevel) -> stock_pb2.StockLevel:
    return stock_pb2.StockLevel(
        sku=level.sku,
        node=level.node,
        on_hand=level.on_hand,
        reserved=level.reserved,
        committed=level.committed,
        safety_stock=level.safety_stock,
        version=level.version,
        atp=level.atp,
        shortage=level.shortage,
    )


def supply_pb(changes: Sequence[StockChange]) -> supply_service_pb2.SupplyChangeResponse:
    return supply_service_pb2.SupplyChangeResponse(
        results=[
            supply_service_pb2.SupplyChangeResult(
                level=stock_level_pb(c.level), applied=c.applied, duplicate=c.duplicate
            )
            for c in changes
        ]
    )


def node_pb(node: Node) -> network_service_pb2.Node:
    """Every field with its effective value (defaults filled in), except
    capabilities by type and unlimited capacity, which stay unset."""
    out = network_service_pb2.Node(
        id=node.id,
        type=_NODE_TYPE_PB[node.type],
        name=node.name,
        region=node.region,
        latitude=node.latitude,
        longitude=node.longitude,
        time_zone=node.time_zone,
        postal_prefix=node.postal_prefix,
        processing_days=node.processing_days,
        pickup_minutes=node.pickup_minutes,
        open_weekdays=list(node.open_weekdays),
    )
    if node.capabilities is not None:
        caps = node.capabilities
        out.capabilities.ship = bool(caps & Capability.SHIP)
        out.capabilities.pickup = bool(caps & Capability.PICKUP)
        out.capabilities.ship_from_store = bool(caps & Capability.SHIP_FROM_STORE)
    for wall, target in ((node.cutoff, out.cutoff), (node.opens_at, out.opens_at)):
        hours, minutes = wall.split(":")
        target.hours, target.minutes = int(hours), int(minutes)
    for holiday in node.holidays:
        d = date.fromisoformat(holiday)
        out.holidays.add(year=d.year, month=d.month, day=d.day)
    if node.daily_capacity is not None:
        out.daily_capacity = node.daily_capacity
    out.default_safety_stock = node.default_safety_stock
    return out


def channel_pb(channel: Channel) -> network_service_pb2.Channel:
    return network_service_pb2.Channel(
        id=channel.id,
        name=channel.name,
        nodes=list(channel.nodes),
        allocation_rules=[
            network_service_pb2.AllocationRule(
                kind=int(rule.kind),  # type: ignore[arg-type]
                value=rule.value,
                node=rule.node or "",
                node_type=_NODE_TYPE_PB[rule.node_type] if rule.node_type is not None else 0,  # type: ignore[arg-type]
                protects=rule.protects or "",
            )
            for rule in channel.allocation_rules
        ],
        allow_backorder=channel.allow_backorder,
    )


def _set_date(out: date_pb2.Date, d: date) -> None:
    out.year, out.month, out.day = d.year, d.month, d.day


def quote_pb(quote: Quote) -> inventory_service_pb2.QuoteResponse:
    out = inventory_service_pb2.QuoteResponse()
    _set_timestamp(out.quote_time, quote.quoted_at.timestamp())
    for line in quote.lines:
        pb_line = out.lines.add(line_index=line.index, sku=line.sku, quantity=line.quantity)
        for option in line.options:
            _option_pb(pb_line.options.add(), option)
    return out


def _option_pb(out: inventory_service_pb2.FulfillmentOption, option: LineOption) -> None:
    out.method = _METHOD_PB[option.method]
    out.service_level = option.service_level or ""
    out.split = option.split
    out.backorder = option.backorder
    _set_date(out.promise_date, option.promise_date)
    if option.ready_at is not None:
        _set_timestamp(out.ready_time, option.ready_at.timestamp())
        out.ready_time_zone = str(option.ready_at.tzinfo)
    for a in option.allocations:
        pb = out.allocations.add(node=a.node, quantity=a.quantity, source=_SOURCE_PB[a.source])
        _set_date(pb.promise_date, a.promise_date)
        if a.ship_date is not None:
            _set_date(pb.ship_date, a.ship_date)
        if a.distance_km is not None:
            pb.distance_km = a.distance_km
        if a.available_at is not None:
            _set_timestamp_us(pb.available_time, a.available_at.timestamp())
            pb.supply_ids.extend(a.supply_ids)


def find_in_stores_pb(found: StoreAisle) -> inventory_service_pb2.FindInStoresResponse:
    aisle = found.aisle
    out = inventory_service_pb2.FindInStoresResponse(sku=aisle.sku, quantity=aisle.quantity)
    _store_stock_pb(out.store, aisle.here, found.time_zones[aisle.here.node])
    for stock in aisle.nearby:
        _store_stock_pb(out.nearby_stores.add(), stock, found.time_zones[stock.node])
    return out


def _store_stock_pb(out: inventory_service_pb2.StoreAvailability, stock: StoreStock, zone: str) -> None:
    out.node, out.name, out.atp, out.distance_km = stock.node, stock.name, stock.atp, stock.distance_km
    out.time_zone = zone
    if stock.ready_at is not None:
        _set_timestamp(out.pickup_time, stock.ready_at.timestamp())
        _set_date(out.pickup_date, stock.ready_at.date())


def audit_pb(report: AuditReport) -> admin_service_pb2.AuditResponse:
    return admin_service_pb2.AuditResponse(
        ok=report.ok,
        violations=list(report.violations),
        shortages=[stock_level_pb(level) for level in report.shortages],
        row_count=report.rows,
        reservation_count=report.reservations,
    )


# ------------------------------------------------------------- carrier table
#
# The API's CarrierTable is the carriers file's structure with repeated
# messages where the file has mappings (regions, centroids) and explicit
# field names where it has YAML keys (``from_region`` for ``from``). A table
# from a request becomes that file document and is checked by the very
# function that checks files (engine/core/carriers.py); its violation paths
# are then translated to the request's fields.

_CARRIER_SOURCE_PB = {
    "server": network_service_pb2.CARRIER_TABLE_SOURCE_SERVER,
    "api": network_service_pb2.CARRIER_TABLE_SOURCE_API,
}
_INDEXED = re.compile(r"(.*)\[(\d+)\]")
_TRANSIT_END = re.compile(r"(transit\[\d+\])\.(from|to)\b")


def carriers_etag(etag: str, field: str) -> int | None:
    """The version an etag names (None for an empty one: no precondition)."""
    if not etag:
        return None
    if not etag.isascii() or not etag.isdigit() or len(etag) > 18:
        raise InvalidArgument(
            f"{field} is not an etag this server returned",
            (FieldViolation(field, "must be empty or an etag this server returned"),),
        )
    return int(etag)


def carrier_document(pb: network_service_pb2.CarrierTable, prefix: str = "carrier_table") -> dict[str, Any]:
    """A table from a request as the stores keep it (``dump_carriers``), or one
    InvalidArgument listing every problem at its request field path."""
    violations: list[FieldViolation] = []
    regions: dict[str, list[str]] = {}
    region_at: dict[str, int] = {}
    for i, region in enumerate(pb.regions):
        if region.name in region_at:
            where = f"{prefix}.regions[{i}].name"
            violations.append(FieldViolation(where, f"region {region.name!r} is listed twice"))
            continue
        region_at[region.name] = i
        regions[region.name] = list(region.postal_prefixes)
    centroids: dict[str, list[float]] = {}
    centroid_at: dict[str, int] = {}
    for i, centroid in enumerate(pb.postal_centroids):
        if centroid.postal_prefix in centroid_at:
            where = f"{prefix}.postal_centroids[{i}].postal_prefix"
            violations.append(FieldViolation(where, f"prefix {centroid.postal_prefix!r} is listed twice"))
            continue
        centroid_at[centroid.postal_prefix] = i
        centroids[centroid.postal_prefix] = [centroid.latitude, centroid.longitude]
    document: dict[str, Any] = {"version": 1, "regions": regions}
    if centroids:
        document["postal_centroids"] = centroids
    if pb.transfer_service:
        document["transfer_service"] = pb.transfer_service
    document["service_levels"] = [_service_level_document(level) for level in pb.service_levels]

    def at(path: str) -> str:
        if path.startswith("regions."):
            name = path[len("regions.") :]
            if name in region_at:
                return f"{prefix}.regions[{region_at[name]}].name"
            m = _INDEXED.fullmatch(name)
            if m is not None and m.group(1) in region_at:
                return f"{prefix}.regions[{region_at[m.group(1)]}].postal_prefixes[{m.group(2)}]"
        if path.startswith("postal_centroids."):
            key = path[len("postal_centroids.") :]
            if key in centroid_at:
                return f"{prefix}.postal_centroids[{centroid_at[key]}]"
        path = _TRANSIT_END.sub(lambda m: f"{m.group(1)}.{m.group(2)}_region", path)
        return f"{prefix}.{path}" if path else prefix

    try:
        table = parse_carriers(document, source=prefix)
    except InvalidArgument as exc:
        violations.extend(FieldViolation(at(v.field), v.description) for v in exc.violations)
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        raise InvalidArgument(
            f"{first.field} {first.description}{more}", tuple(violations), reason="INVALID_CARRIERS"
        )
    return dump_carriers(table)


def _service_level_document(pb: network_service_pb2.ServiceLevel) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": pb.name}
    if pb.description:
        spec["description"] = pb.description
    if pb.delivery_days:
        # google.type.DayOfWeek numbers Monday 1 .. Sunday 7, as the file does;
        # UNSPECIFIED (0) is refused by the check.
        spec["delivery_days"] = [int(d) for d in pb.delivery_days]
    if pb.transit:
        spec["transit"] = [{"from": t.from_region, "to": t.to_region, "days": t.days} for t in pb.transit]
    if pb.distance_bands:
        spec["distance_bands"] = [{"max_km": b.max_km, "days": b.days} for b in pb.distance_bands]
    if pb.HasField("default_days"):
        spec["default_days"] = pb.default_days
    if pb.internal:
        spec["internal"] = True
    return spec


def carrier_table_pb(table: CarrierTable, record: CarrierRecord) -> network_service_pb2.CarrierTable:
    """The table in force (``table``: the record's, or the server's when the
    record holds none) with the record's etag, source and update time."""
    out = network_service_pb2.CarrierTable(
        transfer_service=table.transfer_service or "",
        etag=str(record.version),
        source=_CARRIER_SOURCE_PB["server" if record.document is None else "api"],
    )
    prefixes: dict[str, list[str]] = {region: [] for region in table.regions}
    for prefix, region in table.postal_regions:
        prefixes[region].append(prefix)
    for region, members in prefixes.items():
        out.regions.add(name=region, postal_prefixes=members)
    for prefix, lat, lon in table.postal_centroids:
        out.postal_centroids.add(postal_prefix=prefix, latitude=lat, longitude=lon)
    for level in table.service_levels:
        lv = out.service_levels.add(
            name=level.name,
            description=level.description,
            delivery_days=list(level.delivery_weekdays),
            internal=level.internal,
        )
        for origin, destination, days in level.transit:
            lv.transit.add(from_region=origin, to_region=destination, days=days)
        for band in level.distance_bands:
            lv.distance_bands.add(max_km=band.max_km, days=band.days)
        if level.default_days is not None:
            lv.default_days = level.default_days
    if record.updated_at is not None:
        _set_timestamp(out.update_time, record.updated_at)
    return out
