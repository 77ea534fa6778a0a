"""Protobuf <-> domain conversion: the only place that knows both.

Requests become engine/core types before validation, so the limits are checked
on the values the store will see; replies are built straight from the store's
results. Enums are mapped by name (``HELD`` <-> ``RESERVATION_STATE_HELD``), so a
member added on one side only fails at import, not on the wire. Empty strings
in the API mean "not given" and become None here.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import duration_pb2, timestamp_pb2

from engine._proto.inventory.v1 import (
    admin_service_pb2,
    inventory_service_pb2,
    network_service_pb2,
    stock_pb2,
    supply_service_pb2,
)
from engine.core.types import (
    Channel,
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
from engine.store.base import AuditReport

__all__ = [
    "adjust_ops",
    "audit_pb",
    "availability_pb",
    "channel_from_pb",
    "channel_pb",
    "duration_s",
    "node_from_pb",
    "node_pb",
    "reservation_pb",
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


def adjust_ops(pb: supply_service_pb2.AdjustStockRequest) -> list[SupplyOp]:
    return [SupplyOp(SupplyKind.ADJUST, c.sku, c.node, c.delta, 0, c.event_id or None) for c in pb.changes]


def set_stock_ops(pb: supply_service_pb2.SetStockRequest) -> list[SupplyOp]:
    return [
        SupplyOp(SupplyKind.SET, c.sku, c.node, c.on_hand, c.version, c.event_id or None) for c in pb.changes
    ]


def safety_stock_ops(pb: supply_service_pb2.SetSafetyStockRequest) -> list[SupplyOp]:
    return [
        SupplyOp(SupplyKind.SAFETY, c.sku, c.node, c.safety_stock, 0, c.event_id or None) for c in pb.changes
    ]


def node_from_pb(pb: network_service_pb2.Node) -> Node:
    # UNSPECIFIED or an unknown number stays an int, which validation rejects by name.
    node_type = _NODE_TYPE_FROM_PB.get(pb.type, pb.type)
    return Node(
        id=pb.id,
        type=node_type,  # type: ignore[arg-type]
        name=pb.name,
        region=pb.region,
        latitude=pb.latitude,
        longitude=pb.longitude,
        time_zone=pb.time_zone or "UTC",
    )


def channel_from_pb(pb: network_service_pb2.Channel) -> Channel:
    return Channel(id=pb.id, nodes=tuple(pb.nodes), name=pb.name)


# -------------------------------------------------------------------- replies


def reservation_pb(res: Reservation) -> inventory_service_pb2.Reservation:
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


def _set_timestamp(ts: timestamp_pb2.Timestamp, t: float) -> None:
    seconds = int(t // 1)
    ts.seconds = seconds
    ts.nanos = int((t - seconds) * 1e9)


def availability_pb(
    results: Sequence[SkuAvailability],
) -> inventory_service_pb2.GetAvailabilityResponse:
    response = inventory_service_pb2.GetAvailabilityResponse()
    add = response.availabilities.add
    for r in results:
        entry = add(sku=r.sku, atp=r.atp)
        if r.nodes:
            add_node = entry.nodes.add
            for n in r.nodes:
                add_node(
                    node=n.node,
                    on_hand=n.on_hand,
                    reserved=n.reserved,
                    committed=n.committed,
                    safety_stock=n.safety_stock,
                    atp=n.atp,
                )
    return response


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
    return network_service_pb2.Node(
        id=node.id,
        type=_NODE_TYPE_PB[node.type],
        name=node.name,
        region=node.region,
        latitude=node.latitude,
        longitude=node.longitude,
        time_zone=node.time_zone,
    )


def channel_pb(channel: Channel) -> network_service_pb2.Channel:
    return network_service_pb2.Channel(id=channel.id, name=channel.name, nodes=list(channel.nodes))


def audit_pb(report: AuditReport) -> admin_service_pb2.AuditResponse:
    return admin_service_pb2.AuditResponse(
        ok=report.ok,
        violations=list(report.violations),
        shortages=[stock_level_pb(level) for level in report.shortages],
        row_count=report.rows,
        reservation_count=report.reservations,
    )
