"""Every RPC over real gRPC on loopback, against each store: the embedded store
(journal on disk), the Redis store on a real redis-server, and on a real
3-master Redis Cluster. One server per store kind serves the whole module.

Happy paths, and the errors a client sees, decoded with the client helper:
status code, ErrorInfo reason, BadRequest field paths, out-of-stock lines. A
failed call must leave no trace, so the counters are read back after each one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.type.date_pb2 import Date
from google.type.dayofweek_pb2 import DayOfWeek
from google.type.timeofday_pb2 import TimeOfDay
from store_helpers import backing_for, store_factory, store_params

from engine._proto.inventory.v1 import admin_service_pb2 as admin_pb
from engine._proto.inventory.v1 import admin_service_pb2_grpc as admin_grpc
from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.core.errors import FieldViolation, IdempotencyMismatch, OutOfStock, Shortfall, UnknownNode
from engine.service.errors import DOMAIN, ErrorDetails, decode_error, to_engine_error
from engine.service.testing import ServerThread

HELD = inv_pb.RESERVATION_STATE_HELD
COMMITTED = inv_pb.RESERVATION_STATE_COMMITTED
FULFILLED = inv_pb.RESERVATION_STATE_FULFILLED
RELEASED = inv_pb.RESERVATION_STATE_RELEASED
EXPIRED = inv_pb.RESERVATION_STATE_EXPIRED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
EMBEDDED_ID = {"embedded-pure": "embedded"}


class Client:
    def __init__(self, channel: grpc.Channel) -> None:
        self.inventory = inv_grpc.InventoryServiceStub(channel)
        self.supply = sup_grpc.SupplyServiceStub(channel)
        self.network = net_grpc.NetworkServiceStub(channel)
        self.admin = admin_grpc.AdminServiceStub(channel)
        self._ids = itertools.count(1)

    def new_id(self, prefix: str = "T") -> str:
        return f"{prefix}-{next(self._ids)}"

    def adjust(self, sku: str, node: str, delta: int) -> None:
        self.supply.AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku=sku, node=node, delta=delta)])
        )

    def level(self, sku: str, node: str) -> inv_pb.NodeAvailability:
        response = self.inventory.GetAvailability(
            inv_pb.GetAvailabilityRequest(skus=[sku], nodes=[node], include_nodes=True)
        )
        return response.availabilities[0].nodes[0]

    def counters(self, sku: str, node: str) -> tuple[int, int, int, int]:
        n = self.level(sku, node)
        return n.on_hand, n.reserved, n.committed, n.safety_stock

    def reserve(
        self,
        lines: list[tuple[str, int] | tuple[str, int, str]],
        *,
        reservation_id: str | None = None,
        channel: str = "web",
        ttl_s: int = 600,
        allow_partial: bool = False,
        metadata: tuple[tuple[str, str], ...] | None = None,
    ) -> inv_pb.Reservation:
        return self.inventory.Reserve(
            reserve_request(lines, reservation_id or self.new_id("R"), channel, ttl_s, allow_partial),
            metadata=metadata,
        )


def reserve_request(
    lines: list[tuple[str, int] | tuple[str, int, str]],
    reservation_id: str,
    channel: str = "web",
    ttl_s: int = 600,
    allow_partial: bool = False,
) -> inv_pb.ReserveRequest:
    return inv_pb.ReserveRequest(
        reservation_id=reservation_id,
        channel=channel,
        lines=[
            inv_pb.LineRequest(sku=line[0], quantity=line[1], node=line[2] if len(line) > 2 else "")
            for line in lines
        ],  # type: ignore[misc]
        ttl=Duration(seconds=ttl_s),
        allow_partial=allow_partial,
    )


def failure(call: Callable[..., Any], request: Any, **kwargs: Any) -> ErrorDetails:
    with pytest.raises(grpc.RpcError) as exc_info:
        call(request, **kwargs)
    details = decode_error(exc_info.value)
    assert details.domain == DOMAIN
    assert details.reason
    assert details.request_id, "every error carries the request id"
    return details


# The embedded store on the pure (reference) ledger; the Redis ones in a
# namespace of this module's own on the session's servers.
@pytest.fixture(scope="module", params=store_params("embedded-pure", "redis", "cluster", ids=EMBEDDED_ID))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    backing = backing_for(request.param, request, tmp_path_factory.mktemp("grpc-api"))
    with ServerThread(store_factory(backing)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[Client]:
    channel = grpc.insecure_channel(server.target)
    c = Client(channel)
    nodes = [
        net_pb.Node(
            id="dc-1",
            type=net_pb.NODE_TYPE_DC,
            name="Main DC",
            region="north",
            latitude=52.5,
            longitude=13.4,
            time_zone="Europe/Berlin",
        ),
        net_pb.Node(id="store-1", type=net_pb.NODE_TYPE_STORE, name="Store 1", region="north"),
        net_pb.Node(id="store-2", type=net_pb.NODE_TYPE_STORE, name="Store 2", region="south"),
        net_pb.Node(id="vendor-1", type=net_pb.NODE_TYPE_VENDOR, name="Vendor"),
    ]
    for node in nodes:
        c.network.UpsertNode(net_pb.UpsertNodeRequest(node=node))
    for channel_id, node_ids in [
        ("web", ["dc-1", "store-1"]),
        ("pos", ["store-1"]),
        ("app", ["dc-1"]),
        ("marketplace:acme", ["vendor-1"]),
    ]:
        c.network.UpsertChannel(
            net_pb.UpsertChannelRequest(
                channel=net_pb.Channel(id=channel_id, name=channel_id.upper(), nodes=node_ids)
            )
        )
    yield c
    channel.close()


# ----------------------------------------------------------------- network


def test_upsert_and_list_nodes(client: Client) -> None:
    node = net_pb.Node(
        id="store-9",
        type=net_pb.NODE_TYPE_STORE,
        name="Nine",
        region="west",
        latitude=-33.9,
        longitude=151.2,
        time_zone="Australia/Sydney",
    )
    # The answer fills in the calendar defaults the request left out.
    stored = net_pb.Node()
    stored.CopyFrom(node)
    stored.pickup_minutes = 120
    stored.cutoff.hours, stored.opens_at.hours = 14, 9
    stored.open_weekdays.extend([1, 2, 3, 4, 5])
    assert client.network.UpsertNode(net_pb.UpsertNodeRequest(node=node)) == stored
    listed = client.network.ListNodes(net_pb.ListNodesRequest()).nodes
    ids = [n.id for n in listed]
    assert ids == sorted(ids)
    assert stored in listed
    # Replacing keeps one node with the new fields; an empty time zone means UTC.
    renamed = net_pb.Node(id="store-9", type=net_pb.NODE_TYPE_STORE, name="Nine bis")
    assert client.network.UpsertNode(net_pb.UpsertNodeRequest(node=renamed)).time_zone == "UTC"
    listed = client.network.ListNodes(net_pb.ListNodesRequest()).nodes
    assert [n.name for n in listed if n.id == "store-9"] == ["Nine bis"]


def test_upsert_node_reports_every_bad_field(client: Client) -> None:
    bad = net_pb.Node(
        id="bad id", type=net_pb.NODE_TYPE_UNSPECIFIED, latitude=91, longitude=-181, time_zone="no zone"
    )
    details = failure(client.network.UpsertNode, net_pb.UpsertNodeRequest(node=bad))
    assert details.code == INVALID and details.reason == "INVALID_ARGUMENT"
    assert details.fields == ("node.id", "node.type", "node.latitude", "node.longitude", "node.time_zone")
    assert "bad id" not in [n.id for n in client.network.ListNodes(net_pb.ListNodesRequest()).nodes]


def test_node_calendar_fields_round_trip(client: Client) -> None:
    node = net_pb.Node(
        id="store-cal",
        type=net_pb.NODE_TYPE_STORE,
        name="Calendar",
        time_zone="Pacific/Auckland",
        capabilities=net_pb.NodeCapabilities(pickup=True),
        postal_prefix="10",
        processing_days=2,
        pickup_minutes=0,
        cutoff=TimeOfDay(hours=16, minutes=30),
        opens_at=TimeOfDay(hours=8),
        open_weekdays=[DayOfWeek.MONDAY, DayOfWeek.SATURDAY],
        holidays=[Date(year=2033, month=12, day=25)],
        daily_capacity=40,
    )
    assert client.network.UpsertNode(net_pb.UpsertNodeRequest(node=node)) == node
    assert node in client.network.ListNodes(net_pb.ListNodesRequest()).nodes
    # A node that only holds stock: capabilities present, every flag false.
    node.capabilities.pickup = False
    node.ClearField("daily_capacity")
    assert client.network.UpsertNode(net_pb.UpsertNodeRequest(node=node)) == node
    listed = [n for n in client.network.ListNodes(net_pb.ListNodesRequest()).nodes if n.id == "store-cal"]
    assert listed == [node]
    assert listed[0].HasField("capabilities") and not listed[0].HasField("daily_capacity")


def test_upsert_node_reports_every_bad_calendar_field(client: Client) -> None:
    bad = net_pb.Node(
        id="store-bad-cal",
        type=net_pb.NODE_TYPE_STORE,
        time_zone="Mars/Olympus_Mons",
        postal_prefix="ABCDEFGHIJK",
        processing_days=61,
        pickup_minutes=-1,
        cutoff=TimeOfDay(hours=14, minutes=0, seconds=30),
        opens_at=TimeOfDay(hours=24),
        open_weekdays=[DayOfWeek.MONDAY, DayOfWeek.DAY_OF_WEEK_UNSPECIFIED, DayOfWeek.MONDAY],
        holidays=[Date(year=2033, month=2, day=30), Date(year=2033, month=12)],
        daily_capacity=0,
    )
    details = failure(client.network.UpsertNode, net_pb.UpsertNodeRequest(node=bad))
    assert details.code == INVALID and details.reason == "INVALID_ARGUMENT"
    assert details.fields == (
        "node.time_zone",
        "node.cutoff",
        "node.opens_at",
        "node.open_weekdays[1]",
        "node.open_weekdays[2]",
        "node.holidays[0]",
        "node.holidays[1]",
        "node.processing_days",
        "node.pickup_minutes",
        "node.postal_prefix",
        "node.daily_capacity",
    )
    assert "store-bad-cal" not in [n.id for n in client.network.ListNodes(net_pb.ListNodesRequest()).nodes]


def test_upsert_and_list_channels(client: Client) -> None:
    channel = net_pb.Channel(id="marketplace:zalando", name="Zalando", nodes=["store-2", "dc-1"])
    assert client.network.UpsertChannel(net_pb.UpsertChannelRequest(channel=channel)) == channel
    listed = client.network.ListChannels(net_pb.ListChannelsRequest()).channels
    assert [c.id for c in listed] == sorted(c.id for c in listed)
    assert channel in listed
    assert {"web", "pos", "app", "callcenter"} & {c.id for c in listed} == {"web", "pos", "app"}


def test_upsert_channel_with_unknown_node_names_the_field(client: Client) -> None:
    channel = net_pb.Channel(id="callcenter", nodes=["dc-1", "ghost"])
    details = failure(client.network.UpsertChannel, net_pb.UpsertChannelRequest(channel=channel))
    assert details.code == INVALID and details.reason == "NODE_NOT_FOUND"
    assert details.fields == ("channel.nodes[1]",)
    assert details.metadata["node"] == "ghost"
    assert "callcenter" not in [
        c.id for c in client.network.ListChannels(net_pb.ListChannelsRequest()).channels
    ]


def test_upsert_channel_validation(client: Client) -> None:
    channel = net_pb.Channel(id="shop", nodes=["dc-1", "dc-1", "{x}"])
    details = failure(client.network.UpsertChannel, net_pb.UpsertChannelRequest(channel=channel))
    assert details.fields == ("channel.id", "channel.nodes[1]", "channel.nodes[2]")


# ------------------------------------------------------------------ supply


def test_adjust_stock_and_event_idempotency(client: Client) -> None:
    sku = client.new_id("SKU")
    change = sup_pb.StockAdjustment(sku=sku, node="dc-1", delta=10, event_id=f"receipt-{sku}")
    first = client.supply.AdjustStock(sup_pb.AdjustStockRequest(changes=[change])).results[0]
    assert (first.applied, first.duplicate) == (True, False)
    assert (first.level.sku, first.level.node, first.level.on_hand, first.level.atp) == (sku, "dc-1", 10, 10)
    again = client.supply.AdjustStock(sup_pb.AdjustStockRequest(changes=[change])).results[0]
    assert (again.applied, again.duplicate, again.level.on_hand) == (False, True, 10)
    assert client.counters(sku, "dc-1") == (10, 0, 0, 0)


def test_adjust_batch_is_atomic(client: Client) -> None:
    sku = client.new_id("SKU")
    client.adjust(sku, "dc-1", 5)
    request = sup_pb.AdjustStockRequest(
        changes=[
            sup_pb.StockAdjustment(sku=sku, node="store-1", delta=7),
            sup_pb.StockAdjustment(sku=sku, node="dc-1", delta=-6),
        ]
    )
    details = failure(client.supply.AdjustStock, request)
    assert (details.code, details.reason) == (PRECONDITION, "NEGATIVE_ON_HAND")
    assert details.precondition_violations[0].type == "NEGATIVE_ON_HAND"
    assert client.counters(sku, "dc-1") == (5, 0, 0, 0)
    assert client.counters(sku, "store-1") == (0, 0, 0, 0)


def test_supply_unknown_node_is_invalid_and_changes_nothing(client: Client) -> None:
    sku = client.new_id("SKU")
    request = sup_pb.AdjustStockRequest(
        changes=[
            sup_pb.StockAdjustment(sku=sku, node="dc-1", delta=3),
            sup_pb.StockAdjustment(sku=sku, node="nowhere", delta=3),
        ]
    )
    details = failure(client.supply.AdjustStock, request)
    assert (details.code, details.reason, details.fields) == (INVALID, "NODE_NOT_FOUND", ("changes[1].node",))
    assert isinstance(to_engine_error(details), UnknownNode)
    assert client.counters(sku, "dc-1") == (0, 0, 0, 0)


def test_supply_validation_collects_every_change(client: Client) -> None:
    request = sup_pb.AdjustStockRequest(
        changes=[
            sup_pb.StockAdjustment(sku="A", node="dc-1", delta=0),
            sup_pb.StockAdjustment(sku="bad sku", node="dc-1", delta=1, event_id="x" * 129),
        ]
    )
    details = failure(client.supply.AdjustStock, request)
    assert details.fields == ("changes[0].delta", "changes[1].sku", "changes[1].event_id")
    assert details.metadata["field_violations"] == "3"


def test_set_stock_versions_and_safety_stock(client: Client) -> None:
    sku = client.new_id("SKU")
    set_v2 = sup_pb.StockCount(sku=sku, node="store-1", on_hand=20, version=2)
    result = client.supply.SetStock(sup_pb.SetStockRequest(changes=[set_v2])).results[0]
    assert (result.applied, result.level.on_hand, result.level.version) == (True, 20, 2)
    stale = sup_pb.StockCount(sku=sku, node="store-1", on_hand=99, version=1)
    result = client.supply.SetStock(sup_pb.SetStockRequest(changes=[stale])).results[0]
    assert (result.applied, result.level.on_hand, result.level.version) == (False, 20, 2)
    safety = sup_pb.SafetyStockSetting(sku=sku, node="store-1", safety_stock=4)
    result = client.supply.SetSafetyStock(sup_pb.SetSafetyStockRequest(changes=[safety])).results[0]
    assert (result.applied, result.level.safety_stock, result.level.atp) == (True, 4, 16)
    response = client.inventory.GetAvailability(inv_pb.GetAvailabilityRequest(skus=[sku], channel="pos"))
    assert response.availabilities[0].atp == 16
    details = failure(
        client.supply.SetStock,
        sup_pb.SetStockRequest(changes=[sup_pb.StockCount(sku=sku, node="store-1", on_hand=-1, version=0)]),
    )
    assert details.fields == ("changes[0].on_hand", "changes[0].version")


def test_event_id_reused_with_another_body(client: Client) -> None:
    sku = client.new_id("SKU")
    event = f"ev-{sku}"
    client.supply.AdjustStock(
        sup_pb.AdjustStockRequest(
            changes=[sup_pb.StockAdjustment(sku=sku, node="dc-1", delta=4, event_id=event)]
        )
    )
    request = sup_pb.AdjustStockRequest(
        changes=[sup_pb.StockAdjustment(sku=sku, node="dc-1", delta=5, event_id=event)]
    )
    details = failure(client.supply.AdjustStock, request)
    assert (details.code, details.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_MISMATCH")
    assert isinstance(to_engine_error(details), IdempotencyMismatch)
    assert client.counters(sku, "dc-1") == (4, 0, 0, 0)


def test_shortage_is_reported_not_hidden(client: Client) -> None:
    sku = client.new_id("SKU")
    client.adjust(sku, "store-1", 5)
    client.reserve([(sku, 4)], channel="pos")
    count = sup_pb.StockCount(sku=sku, node="store-1", on_hand=1, version=1)
    result = client.supply.SetStock(sup_pb.SetStockRequest(changes=[count])).results[0]
    assert (result.applied, result.level.on_hand, result.level.reserved) == (True, 1, 4)
    assert (result.level.shortage, result.level.atp) == (3, -3)
    audit = client.admin.Audit(admin_pb.AuditRequest())
    assert audit.ok
    assert [(s.sku, s.shortage) for s in audit.shortages if s.sku == sku] == [(sku, 3)]
    # Fix the count so later audits in this module see no shortage from this test.
    client.supply.SetStock(
        sup_pb.SetStockRequest(changes=[sup_pb.StockCount(sku=sku, node="store-1", on_hand=10, version=2)])
    )


# ------------------------------------------------------------ reservations


def test_reserve_happy_path(client: Client) -> None:
    sku_a, sku_b = client.new_id("SKU"), client.new_id("SKU")
    client.adjust(sku_a, "dc-1", 3)
    client.adjust(sku_a, "store-1", 10)
    client.adjust(sku_b, "store-1", 2)
    before = time.time()
    res = client.reserve([(sku_a, 5), (sku_b, 2, "store-1")], reservation_id="cart-happy", ttl_s=900)
    assert (res.reservation_id, res.channel, res.state, res.allow_partial) == (
        "cart-happy",
        "web",
        HELD,
        False,
    )
    assert res.ttl.ToSeconds() == 900
    assert before - 1 < res.create_time.ToNanoseconds() / 1e9 < time.time() + 1
    assert abs((res.expire_time.ToNanoseconds() - res.create_time.ToNanoseconds()) / 1e9 - 900) < 1e-3
    line_a, line_b = res.lines
    # The first eligible node that covers the whole line wins (dc-1 has only 3).
    assert (line_a.line_index, line_a.sku, line_a.requested_quantity, line_a.requested_node) == (
        0,
        sku_a,
        5,
        "",
    )
    assert [(a.node, a.quantity) for a in line_a.allocations] == [("store-1", 5)]
    assert (line_a.allocated_quantity, line_a.state) == (5, HELD)
    assert (line_b.line_index, line_b.requested_node, line_b.allocated_quantity) == (1, "store-1", 2)
    assert client.counters(sku_a, "store-1") == (10, 5, 0, 0)
    assert client.counters(sku_b, "store-1") == (2, 2, 0, 0)
    assert client.inventory.GetReservation(inv_pb.GetReservationRequest(reservation_id="cart-happy")) == res


def test_reserve_splits_across_nodes(client: Client) -> None:
    sku = client.new_id("SKU")
    client.adjust(sku, "dc-1", 3)
    client.adjust(sku, "store-1", 4)
    res = client.reserve([(sku, 6)])
    assert [(a.node, a.quantity) for a in res.lines[0].allocations] == [("dc-1", 3), ("store-1", 3)]


def test_reserve_is_idempotent_by_id(client: Client) -> None:
    sku = client.new_id("SKU")
    client.adjust(sku, "dc-1", 10)
    first = client.reserve([(sku, 3)], reservation_id="cart-idem")
    again = client.reserve([(sku, 3)], reservation_id="cart-idem")
    assert again == first
    assert client.counters(sku, "dc-1") == (10, 3, 0, 0)
    request = reserve_request([(sku, 4)], "cart-idem")
    details = failure(client.inventory.Reserve, request)
    assert (details.code, details.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_MISMATCH")
    assert details.metadata["reservation_id"] == "cart-idem"
    assert client.counters(sku, "dc-1") == (10, 3, 0, 0)


def test_out_of_stock_reports_every_short_line_and_holds_nothing(client: Client) -> None:
    ok, short_a, short_b = client.new_id("SKU"), client.new_id("SKU"), client.new_id("SKU")
    client.adjust(ok, "dc-1", 10)
    client.adjust(short_a, "dc-1", 2)
    client.adjust(short_a, "store-1", 1)
    request = reserve_request([(ok, 5), (short_a, 4), (short_b, 1)], client.new_id("R"))
    details = failure(client.inventory.Reserve, request)
    assert (details.code, details.reason) == (PRECONDITION, "OUT_OF_STOCK")
    assert details.shortfalls == (Shortfall(1, short_a, 4, 3), Shortfall(2, short_b, 1, 0))
    assert [(v.type, v.subject) for v in details.precondition_violations] == [
        ("OUT_OF_STOCK", "lines[1]"),
        ("OUT_OF_STOCK", "lines[2]"),
    ]
    assert details.metadata["short_lines"] == "2"
    error = to_engine_error(details)
    assert isinstance(error, OutOfStock) and error.shortfalls == details.shortfalls
    assert client.counters(ok, "dc-1") == (10, 0, 0, 0)
    assert client.counters(short_a, "dc-1") == (2, 0, 0, 0)
    not_found = failure(
        client.inventory.GetReservation, inv_pb.GetReservationRequest(reservation_id=request.reservation_id)
    )
    assert not_found.code == grpc.StatusCode.NOT_FOUND


def test_out_of_stock_with_500_short_lines_still_decodes(client: Client) -> None:
    lines: list[tuple[str, int] | tuple[str, int, str]] = [
        (f"NONE-{i:04d}-{'x' * 50}", 1) for i in range(500)
    ]
    details = failure(client.inventory.Reserve, reserve_request(lines, client.new_id("R")))
    assert (details.code, details.reason) == (PRECONDITION, "OUT_OF_STOCK")
    assert details.metadata["short_lines"] == "500"
    shown = len(details.shortfalls)
    assert 20 <= shown < 500
    assert int(details.metadata["omitted_shortfalls"]) == 500 - shown
    assert [s.line_index for s in details.shortfalls] == list(range(shown))


def test_allow_partial_holds_what_there_is(client: Client) -> None:
    sku_a, sku_b = client.new_id("SKU"), client.new_id("SKU")
    client.adjust(sku_a, "dc-1", 2)
    res = client.reserve([(sku_a, 5), (sku_b, 1)], allow_partial=True)
    assert res.state == HELD and res.allow_partial
    assert (res.lines[0].allocated_quantity, res.lines[0].state) == (2, HELD)
    assert (res.lines[1].allocated_quantity, res.lines[1].state, list(res.lines[1].allocations)) == (
        0,
        RELEASED,
        [],
    )
    assert client.counters(sku_a, "dc-1") == (2, 2, 0, 0)
    # Nothing at all to hold is still OUT_OF_STOCK.
    details = failure(
        client.inventory.Reserve, reserve_request([(sku_b, 1)], client.new_id("R"), allow_partial=True)
    )
    assert details.reason == "OUT_OF_STOCK"


def test_reserve_unknown_channel_and_nodes(client: Client) -> None:
    sku = client.new_id("SKU")
    client.adjust(sku, "store-2", 5)
    details = failure(
        client.inventory.Reserve, reserve_request([(sku, 1)], client.new_id("R"), channel="callcenter")
    )
    assert (details.code, details.reason, details.fields) == (INVALID, "CHANNEL_NOT_FOUND", ("channel",))
    assert details.metadata["channel"] == "callcenter"
    details = failure(
        client.inventory.Reserve, reserve_request([(sku, 1), (sku, 1, "store-2")], client.new_id("R"))
    )
    assert (details.code, details.reason, details.fields) == (
        INVALID,
        "NODE_NOT_ELIGIBLE",
        ("lines[1].node",),
    )
    assert (details.metadata["node"], details.metadata["channel"]) == ("store-2", "web")
    details = failure(client.inventory.Reserve, reserve_request([(sku, 1, "ghost")], client.new_id("R")))
    assert (details.reason, details.fields) == ("NODE_NOT_FOUND", ("lines[0].node",))
    assert client.counters(sku, "store-2") == (5, 0, 0, 0)


def test_reserve_validation_reports_every_field(client: Client) -> None:
    request = inv_pb.ReserveRequest(
        reservation_id="has space",
        channel="Web",
        lines=[
            inv_pb.LineRequest(sku="ok", quantity=1),
            inv_pb.LineRequest(sku="{bad}", quantity=0, node="a b"),
            inv_pb.LineRequest(sku="ok", quantity=1_000_000_001),
        ],
        ttl=Duration(seconds=7 * 86400 + 1),
    )
    details = failure(client.inventory.Reserve, request)
    assert (details.code, details.reason) == (INVALID, "INVALID_ARGUMENT")
    assert details.fields == (
        "reservation_id",
        "channel",
        "lines[1].sku",
        "lines[1].quantity",
        "lines[1].node",
        "lines[2].quantity",
        "ttl",
    )
    assert all(v.description for v in details.field_violations)
    details = failure(client.inventory.Reserve, inv_pb.ReserveRequest(reservation_id="r", channel="web"))
    assert details.fields == ("lines", "ttl")
    too_many = [inv_pb.LineRequest(sku=f"S{i}", quantity=1) for i in range(501)]
    request = inv_pb.ReserveRequest(
        reservation_id="r", channel="web", lines=too_many, ttl=Duration(seconds=60)
    )
    assert failure(client.inventory.Reserve, request).fields == ("lines",)


def test_commit_fulfill_lifecycle(client: Client) -> None:
    sku = client.new_id("SKU")
    client.adjust(sku, "dc-1", 10)
    rid = client.reserve([(sku, 4)]).reservation_id
    committed = client.inventory.Commit(inv_pb.CommitRequest(reservation_id=rid))
    assert committed.state == COMMITTED and committed.lines[0].state == COMMITTED
    assert client.counters(sku, "dc-1") == (10, 0, 4, 0)
    assert client.inventory.Commit(inv_pb.CommitRequest(reservation_id=rid)) == committed  # replay
    fulfilled = client.inventory.Fulfill(inv_pb.FulfillRequest(reservation_id=rid))
    assert fulfilled.state == FULFILLED
    assert client.counters(sku, "dc-1") == (6, 0, 0, 0)
    details = failure(client.inventory.Release, inv_pb.ReleaseRequest(reservation_id=rid))
    assert (details.code, details.reason) == (PRECONDITION, "RESERVATION_FULFILLED")
    assert details.precondition_violations[0].subject == rid
    assert client.counters(sku, "dc-1") == (6, 0, 0, 0)


def test_release_some_lines_then_all(client: Client) -> None:
    sku_a, sku_b = client.new_id("SKU"), client.new_id("SKU")
    client.adjust(sku_a, "dc-1", 5)
    client.adjust(sku_b, "dc-1", 5)
    rid = client.reserve([(sku_a, 1), (sku_b, 2)]).reservation_id
    res = client.inventory.Release(inv_pb.ReleaseRequest(reservation_id=rid, line_indexes=[1]))
    assert [line.state for line in res.lines] == [HELD, RELEASED] and res.state == HELD
    assert client.counters(sku_b, "dc-1") == (5, 0, 0, 0)
    details = failure(
        client.inventory.Release, inv_pb.ReleaseRequest(reservation_id=rid, line_indexes=[0, 2])
    )
    assert (details.code, details.fields) == (INVALID, ("line_indexes",))
    details = failure(client.inventory.Release, inv_pb.ReleaseRequest(reservation_id=rid, line_indexes=[500]))
    assert details.fields == ("line_indexes[0]",)
    assert client.counters(sku_a, "dc-1") == (5, 1, 0, 0)
    res = client.inventory.Release(inv_pb.ReleaseRequest(reservation_id=rid))
    assert res.state == RELEASED
    assert client.counters(sku_a, "dc-1") == (5, 0, 0, 0)


def test_fulfill_requires_commit(client: Client) -> None:
    sku = client.new_id("SKU")
    client.adjust(sku, "dc-1", 5)
    rid = client.reserve([(sku, 2)]).reservation_id
    details = failure(client.inventory.Fulfill, inv_pb.FulfillRequest(reservation_id=rid))
    assert (details.code, details.reason) == (PRECONDITION, "NOT_COMMITTED")
    details = failure(client.inventory.Fulfill, inv_pb.FulfillRequest(reservation_id=rid, line_indexes=[0]))
    assert details.reason == "NOT_COMMITTED"
    assert client.counters(sku, "dc-1") == (5, 2, 0, 0)


def test_extend_reservation(client: Client) -> None:
    sku = client.new_id("SKU")
    client.adjust(sku, "dc-1", 5)
    res = client.reserve([(sku, 1)], ttl_s=60)
    extended = client.inventory.ExtendReservation(
        inv_pb.ExtendReservationRequest(reservation_id=res.reservation_id, ttl=Duration(seconds=3600))
    )
    moved = (extended.expire_time.ToNanoseconds() - res.expire_time.ToNanoseconds()) / 1e9
    assert 3600 - 60 - 1 < moved < 3600 - 60 + 1
    assert extended.ttl == res.ttl  # the TTL the reservation was made with
    details = failure(
        client.inventory.ExtendReservation, inv_pb.ExtendReservationRequest(reservation_id=res.reservation_id)
    )
    assert details.fields == ("ttl",)
    client.inventory.Release(inv_pb.ReleaseRequest(reservation_id=res.reservation_id))
    details = failure(
        client.inventory.ExtendReservation,
        inv_pb.ExtendReservationRequest(reservation_id=res.reservation_id, ttl=Duration(seconds=60)),
    )
    assert (details.code, details.reason) == (PRECONDITION, "RESERVATION_RELEASED")


def test_unknown_reservation(client: Client) -> None:
    for call, request in [
        (client.inventory.GetReservation, inv_pb.GetReservationRequest(reservation_id="nope")),
        (client.inventory.Commit, inv_pb.CommitRequest(reservation_id="nope")),
        (client.inventory.Release, inv_pb.ReleaseRequest(reservation_id="nope")),
        (client.inventory.Fulfill, inv_pb.FulfillRequest(reservation_id="nope")),
        (
            client.inventory.ExtendReservation,
            inv_pb.ExtendReservationRequest(reservation_id="nope", ttl=Duration(seconds=5)),
        ),
    ]:
        details = failure(call, request)
        assert (details.code, details.reason) == (grpc.StatusCode.NOT_FOUND, "RESERVATION_NOT_FOUND")
        assert details.resource_name == "nope"
    details = failure(client.inventory.Commit, inv_pb.CommitRequest(reservation_id=""))
    assert (details.code, details.field_violations) == (
        INVALID,
        (FieldViolation("reservation_id", "is required"),),
    )


def test_expired_hold_returns_its_units(client: Client) -> None:
    sku = client.new_id("SKU")
    client.adjust(sku, "dc-1", 3)
    res = client.reserve([(sku, 3)], ttl_s=1)
    assert client.counters(sku, "dc-1") == (3, 3, 0, 0)
    deadline = time.monotonic() + 3.0
    while (
        client.inventory.GetReservation(inv_pb.GetReservationRequest(reservation_id=res.reservation_id)).state
        != EXPIRED
    ):
        assert time.monotonic() < deadline, "the hold did not expire within 2 s of its expiry"
        time.sleep(0.05)
    assert client.counters(sku, "dc-1") == (3, 0, 0, 0)
    details = failure(client.inventory.Commit, inv_pb.CommitRequest(reservation_id=res.reservation_id))
    assert (details.code, details.reason) == (PRECONDITION, "RESERVATION_EXPIRED")


# ------------------------------------------------------------ availability


def test_availability_for_channel_and_nodes(client: Client) -> None:
    sku_a, sku_b = client.new_id("SKU"), client.new_id("SKU")
    client.adjust(sku_a, "dc-1", 10)
    client.adjust(sku_a, "store-1", 4)
    client.adjust(sku_a, "store-2", 100)  # not a web node
    client.supply.SetSafetyStock(
        sup_pb.SetSafetyStockRequest(
            changes=[sup_pb.SafetyStockSetting(sku=sku_a, node="store-1", safety_stock=1)]
        )
    )
    client.reserve([(sku_a, 2, "dc-1")])
    response = client.inventory.GetAvailability(
        inv_pb.GetAvailabilityRequest(skus=[sku_a, sku_b, sku_a], channel="web", include_nodes=True)
    )
    assert [(a.sku, a.atp) for a in response.availabilities] == [(sku_a, 11), (sku_b, 0), (sku_a, 11)]
    nodes = response.availabilities[0].nodes
    assert [(n.node, n.on_hand, n.reserved, n.committed, n.safety_stock, n.atp) for n in nodes] == [
        ("dc-1", 10, 2, 0, 0, 8),
        ("store-1", 4, 0, 0, 1, 3),
    ]
    assert list(response.availabilities[1].nodes) == [
        inv_pb.NodeAvailability(node="dc-1"),
        inv_pb.NodeAvailability(node="store-1"),
    ]
    # Without include_nodes: totals only. Nodes alone: any nodes. Channel + nodes: a subset.
    plain = client.inventory.GetAvailability(inv_pb.GetAvailabilityRequest(skus=[sku_a], channel="web"))
    assert (plain.availabilities[0].atp, list(plain.availabilities[0].nodes)) == (11, [])
    by_nodes = client.inventory.GetAvailability(
        inv_pb.GetAvailabilityRequest(skus=[sku_a], nodes=["store-2", "dc-1"])
    )
    assert by_nodes.availabilities[0].atp == 108
    subset = client.inventory.GetAvailability(
        inv_pb.GetAvailabilityRequest(skus=[sku_a], channel="web", nodes=["store-1"])
    )
    assert subset.availabilities[0].atp == 3


def test_availability_errors(client: Client) -> None:
    details = failure(client.inventory.GetAvailability, inv_pb.GetAvailabilityRequest(skus=["A"]))
    assert (details.code, details.fields) == (INVALID, ("channel",))
    details = failure(
        client.inventory.GetAvailability,
        inv_pb.GetAvailabilityRequest(skus=["A"], channel="web", nodes=["store-2"]),
    )
    assert (details.reason, details.fields) == ("NODE_NOT_ELIGIBLE", ("nodes[0]",))
    details = failure(
        client.inventory.GetAvailability, inv_pb.GetAvailabilityRequest(skus=["A"], nodes=["dc-1", "ghost"])
    )
    assert (details.reason, details.fields) == ("NODE_NOT_FOUND", ("nodes[1]",))
    details = failure(
        client.inventory.GetAvailability,
        inv_pb.GetAvailabilityRequest(skus=["A"], channel="marketplace:none"),
    )
    assert (details.reason, details.fields) == ("CHANNEL_NOT_FOUND", ("channel",))
    details = failure(
        client.inventory.GetAvailability,
        inv_pb.GetAvailabilityRequest(skus=[f"S{i}" for i in range(10_001)], channel="web"),
    )
    assert details.fields == ("skus",)


def test_availability_of_10000_skus(client: Client) -> None:
    skus = [f"BULK-{i:05d}" for i in range(10_000)]
    client.supply.AdjustStock(
        sup_pb.AdjustStockRequest(
            changes=[
                sup_pb.StockAdjustment(sku=s, node="dc-1", delta=i + 1) for i, s in enumerate(skus[:1000])
            ]
        )
    )
    response = client.inventory.GetAvailability(inv_pb.GetAvailabilityRequest(skus=skus, channel="app"))
    assert [a.sku for a in response.availabilities] == skus
    assert [a.atp for a in response.availabilities[:3]] == [1, 2, 3]
    assert sum(a.atp for a in response.availabilities) == sum(range(1, 1001))


# ------------------------------------------------------------------- admin


def test_audit_and_noop(client: Client) -> None:
    audit = client.admin.Audit(admin_pb.AuditRequest())
    assert audit.ok and list(audit.violations) == []
    assert audit.row_count > 0 and audit.reservation_count > 0
    assert client.admin.Noop(admin_pb.NoopRequest()) == admin_pb.NoopResponse()


def test_a_failing_noop_answers_like_a_sold_out_reserve(client: Client) -> None:
    noop = failure(client.admin.Noop, admin_pb.NoopRequest(out_of_stock_sku="SKU-NOOP"))
    assert noop.code == grpc.StatusCode.FAILED_PRECONDITION and noop.reason == "OUT_OF_STOCK"
    assert noop.shortfalls == (Shortfall(0, "SKU-NOOP", 1, 0),)
    assert [(v.type, v.subject) for v in noop.precondition_violations] == [("OUT_OF_STOCK", "lines[0]")]
    bad = failure(client.admin.Noop, admin_pb.NoopRequest(out_of_stock_sku="SKU {1}"))
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and bad.fields == ("out_of_stock_sku",)


# ------------------------------------------------------------- request ids


def test_request_id_is_echoed_or_made(client: Client) -> None:
    _, call = client.admin.Noop.with_call(admin_pb.NoopRequest(), metadata=(("x-request-id", "trace-42"),))
    assert dict(call.trailing_metadata())["x-request-id"] == "trace-42"
    _, call = client.admin.Noop.with_call(admin_pb.NoopRequest())
    made = dict(call.trailing_metadata())["x-request-id"]
    _, call = client.admin.Noop.with_call(admin_pb.NoopRequest())
    assert made and dict(call.trailing_metadata())["x-request-id"] != made
    # An unusable id is replaced, not trusted and not fatal.
    _, call = client.admin.Noop.with_call(admin_pb.NoopRequest(), metadata=(("x-request-id", "x" * 200),))
    assert dict(call.trailing_metadata())["x-request-id"] != "x" * 200
    # Errors carry it twice: in the trailer and in google.rpc.RequestInfo.
    details = failure(
        client.inventory.GetReservation,
        inv_pb.GetReservationRequest(reservation_id="nope"),
        metadata=(("x-request-id", "trace-43"),),
    )
    assert details.request_id == "trace-43"


def test_thousands_of_violations_fit_in_the_trailer(client: Client) -> None:
    request = inv_pb.GetAvailabilityRequest(skus=[f"bad sku {i}" for i in range(5000)], channel="web")
    details = failure(client.inventory.GetAvailability, request)
    assert (details.code, details.metadata["field_violations"]) == (INVALID, "5000")
    shown = len(details.field_violations)
    assert 10 <= shown < 5000
    assert int(details.metadata["omitted_field_violations"]) == 5000 - shown
    assert details.fields[:2] == ("skus[0]", "skus[1]")


def test_node_default_safety_stock_round_trips_is_validated_and_holds_back_units(client: Client) -> None:
    node_id, sku = client.new_id("NODE"), client.new_id("SKU")
    channel = f"marketplace:{client.new_id('m')}"
    node = net_pb.Node(id=node_id, type=net_pb.NODE_TYPE_DC, default_safety_stock=4)
    assert client.network.UpsertNode(net_pb.UpsertNodeRequest(node=node)).default_safety_stock == 4
    [listed] = [n for n in client.network.ListNodes(net_pb.ListNodesRequest()).nodes if n.id == node_id]
    assert listed.default_safety_stock == 4
    bad = net_pb.Node(id=node_id, type=net_pb.NODE_TYPE_DC, default_safety_stock=1_000_000_001)
    details = failure(client.network.UpsertNode, net_pb.UpsertNodeRequest(node=bad))
    assert details.code == INVALID and details.fields == ("node.default_safety_stock",)
    client.network.UpsertChannel(
        net_pb.UpsertChannelRequest(channel=net_pb.Channel(id=channel, nodes=[node_id]))
    )
    client.adjust(sku, node_id, 10)
    # A reserve reaching into the default safety stock is refused.
    details = failure(
        client.inventory.Reserve, reserve_request([(sku, 7)], client.new_id("R"), channel=channel)
    )
    assert details.reason == "OUT_OF_STOCK" and details.shortfalls == (Shortfall(0, sku, 7, 6),)
    # The row's own 0 overrides the default; use_node_default goes back to it.
    own = sup_pb.SafetyStockSetting(sku=sku, node=node_id, safety_stock=0)
    result = client.supply.SetSafetyStock(sup_pb.SetSafetyStockRequest(changes=[own])).results[0]
    assert (result.level.safety_stock, result.level.atp) == (0, 10)
    back = sup_pb.SafetyStockSetting(sku=sku, node=node_id, use_node_default=True)
    result = client.supply.SetSafetyStock(sup_pb.SetSafetyStockRequest(changes=[back])).results[0]
    assert (result.level.safety_stock, result.level.atp) == (4, 6)
    both = sup_pb.SafetyStockSetting(sku=sku, node=node_id, safety_stock=2, use_node_default=True)
    details = failure(client.supply.SetSafetyStock, sup_pb.SetSafetyStockRequest(changes=[both]))
    assert details.code == INVALID and details.fields == ("changes[0].safety_stock",)
