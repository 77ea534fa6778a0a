"""Backorders over real gRPC, on every store kind: a Reserve whose fulfillment
context allows it holds a line no shelf stock covers against inbound supply,
dated from that supply, and never promises more than the supply brings, however
many shoppers try at once; and GetAvailability shows by date what supply is
left to promise.

The network, carriers and pinned clock are test_grpc_promise.py's: a DC in
Berlin and stores in Hamburg, Munich and Bremen, Wednesday 2033-06-15 10:00 in
Berlin; `web` sells from dc-1 and the stores and takes backorders, `pos`
sells from the stores and does not.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import grpc
import pytest
import test_grpc_promise
from google.protobuf import duration_pb2
from store_helpers import FakeClock, backing_for, store_factory, store_params
from test_grpc_api import failure
from test_grpc_promise import (
    DAY,
    INBOUND,
    PICKUP,
    SHIP,
    STOCK,
    WED_10,
    Client,
    day,
    inbound,
    local,
    to_hamburg,
)
from test_grpc_promise import upsert as upsert_inbound
from test_metrics_call_sites import total

from engine._proto.inventory.v1 import admin_service_pb2 as admin_pb
from engine._proto.inventory.v1 import admin_service_pb2_grpc as admin_grpc
from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine.service.testing import ServerThread


@pytest.fixture(scope="module", params=store_params("embedded-fast", "redis", "cluster"))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    backing = backing_for(request.param, request, tmp_path_factory.mktemp("grpc-backorder"))
    clock = FakeClock(WED_10)
    with ServerThread(store_factory(backing), clock=clock) as running:
        running.quote_clock = clock  # type: ignore[attr-defined]
        yield running


# test_grpc_promise.py's network on this module's server.
client = test_grpc_promise.client
at = test_grpc_promise.at


@pytest.fixture(scope="module")
def admin(server: ServerThread) -> Iterator[admin_grpc.AdminServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield admin_grpc.AdminServiceStub(channel)


_ids = itertools.count()
_skus = itertools.count(1)


def fresh_sku() -> str:
    return f"BR-{next(_skus)}"


def request(
    lines: list[tuple[str, int]],
    *,
    channel: str = "web",
    fulfillment: inv_pb.FulfillmentContext | None = None,
) -> inv_pb.ReserveRequest:
    return inv_pb.ReserveRequest(
        reservation_id=f"backorder-{next(_ids)}",
        channel=channel,
        lines=[inv_pb.LineRequest(sku=s, quantity=q) for s, q in lines],
        ttl=duration_pb2.Duration(seconds=600),
        fulfillment=fulfillment or ship_backorder(),
    )


def ship_backorder(**fields: object) -> inv_pb.FulfillmentContext:
    return inv_pb.FulfillmentContext(
        method=SHIP,
        destination=to_hamburg(),
        service_level="standard",
        allow_backorder=True,
        **fields,  # type: ignore[arg-type]
    )


def shortages(admin: admin_grpc.AdminServiceStub, sku: str) -> list[tuple[str, int]]:
    report = admin.Audit(admin_pb.AuditRequest())
    assert list(report.violations) == []
    return [(s.node, s.shortage) for s in report.shortages if s.sku == sku]


def raw_atp(client: Client, sku: str, node: str) -> int:
    (found,) = client.inventory.GetAvailability(
        inv_pb.GetAvailabilityRequest(skus=[sku], nodes=[node], include_nodes=True)
    ).availabilities
    (n,) = found.nodes
    return n.on_hand - n.reserved - n.committed - n.safety_stock


def test_a_line_without_stock_is_held_against_the_purchase_order_dated_as_quoted(
    client: Client, at: FakeClock, admin: admin_grpc.AdminServiceStub
) -> None:
    sku = fresh_sku()
    arrives = WED_10 + 5 * DAY  # Monday 2033-06-20, 10:00 in Berlin
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "dc-1", 10, arrives))
    (quoted,) = client.quote(
        [(sku, 4)], destination=to_hamburg(), service_levels=["standard"], allow_backorder=True
    ).lines

    res = client.inventory.Reserve(request([(sku, 4)]))
    (line,) = res.lines
    assert line.backorder and line.state == inv_pb.RESERVATION_STATE_HELD
    (alloc,) = line.allocations
    assert (alloc.node, alloc.quantity, alloc.source) == ("dc-1", 4, INBOUND)
    assert alloc.available_time.ToSeconds() == arrives
    assert alloc.available_time == quoted.options[0].allocations[0].available_time
    assert list(alloc.supply_ids) == [f"{sku}/po-1"]
    # Leaves Monday, 2 carrier days: Wednesday, what Quote promised.
    assert day(line.promise_date) == day(alloc.promise_date) == day(quoted.options[0].promise_date)
    assert day(line.promise_date) == date(2033, 6, 22)
    # Promised, not short: the order covers the units the hold waits for.
    assert raw_atp(client, sku, "dc-1") == -4
    assert shortages(admin, sku) == []

    # What the order brings is spoken for by the first hold: 6 are left.
    (quoted,) = client.quote(
        [(sku, 7)], destination=to_hamburg(), service_levels=["standard"], allow_backorder=True
    ).lines
    assert list(quoted.options) == []
    details = failure(client.inventory.Reserve, request([(sku, 7)]))
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_STOCK")
    assert raw_atp(client, sku, "dc-1") == -4, "a refused reserve holds nothing"
    assert client.inventory.Reserve(request([(sku, 6)])).lines[0].backorder


def test_the_units_ship_once_received(
    client: Client, at: FakeClock, admin: admin_grpc.AdminServiceStub
) -> None:
    sku = fresh_sku()
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "dc-1", 5, WED_10 + 2 * DAY))
    res = client.inventory.Reserve(request([(sku, 3)]))
    rid = res.reservation_id
    client.inventory.Commit(inv_pb.CommitRequest(reservation_id=rid))
    details = failure(client.inventory.Fulfill, inv_pb.FulfillRequest(reservation_id=rid))
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NEGATIVE_ON_HAND")

    # The receipt: the units go on the shelf and the order is closed.
    client.supply.AdjustStock(
        sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku=sku, node="dc-1", delta=5)])
    )
    client.supply.DeleteInboundSupply(sup_pb.DeleteInboundSupplyRequest(ids=[f"{sku}/po-1"]))
    assert raw_atp(client, sku, "dc-1") == 2, "the 2 units nobody waits for are on sale"
    assert shortages(admin, sku) == []
    done = client.inventory.Fulfill(inv_pb.FulfillRequest(reservation_id=rid))
    assert done.state == inv_pb.RESERVATION_STATE_FULFILLED


def test_an_order_cut_after_backorders_is_a_reported_shortage(
    client: Client, at: FakeClock, admin: admin_grpc.AdminServiceStub
) -> None:
    sku = fresh_sku()
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "dc-1", 5, WED_10 + 2 * DAY))
    client.inventory.Reserve(request([(sku, 4)]))
    # The supplier ships 2 of the 5.
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "dc-1", 2, WED_10 + 2 * DAY))
    assert shortages(admin, sku) == [("dc-1", 4)]
    client.supply.DeleteInboundSupply(sup_pb.DeleteInboundSupplyRequest(ids=[f"{sku}/po-1"]))
    assert shortages(admin, sku) == [("dc-1", 4)]


def test_stock_comes_first_and_a_cart_is_held_whole_or_not_at_all(client: Client, at: FakeClock) -> None:
    on_shelf = client.sku_with(dc_1=5)
    on_order = fresh_sku()
    upsert_inbound(client, inbound(f"{on_order}/po-1", on_order, "dc-1", 3, WED_10 + 4 * DAY))

    res = client.inventory.Reserve(request([(on_shelf, 2), (on_order, 2)]))
    shelf_line, order_line = res.lines
    assert not shelf_line.backorder and shelf_line.allocations[0].source == STOCK
    assert order_line.backorder and order_line.allocations[0].source == INBOUND
    assert day(shelf_line.promise_date) < day(order_line.promise_date)

    # A cart whose backordered line the order cannot cover holds nothing.
    before = raw_atp(client, on_shelf, "dc-1"), raw_atp(client, on_order, "dc-1")
    details = failure(client.inventory.Reserve, request([(on_shelf, 2), (on_order, 2)]))
    assert details.reason == "OUT_OF_STOCK"
    assert (raw_atp(client, on_shelf, "dc-1"), raw_atp(client, on_order, "dc-1")) == before


def test_release_returns_the_promised_units_and_a_replay_changes_nothing(
    client: Client, at: FakeClock
) -> None:
    sku = fresh_sku()
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "dc-1", 4, WED_10 + 3 * DAY))
    first = request([(sku, 4)])
    res = client.inventory.Reserve(first)
    again = client.inventory.Reserve(first)
    assert [(a.node, a.quantity) for a in again.lines[0].allocations] == [("dc-1", 4)]
    # Dates are not stored; a replay is dated from a fresh read, where the
    # supply is spoken for by this very hold: never passed off as shelf stock.
    assert not again.lines[0].HasField("promise_date")
    assert not again.lines[0].allocations[0].HasField("promise_date")
    assert raw_atp(client, sku, "dc-1") == -4
    client.inventory.Release(inv_pb.ReleaseRequest(reservation_id=res.reservation_id))
    assert raw_atp(client, sku, "dc-1") == 0
    assert client.inventory.Reserve(request([(sku, 4)])).lines[0].backorder


def test_pickup_backorder_waits_for_the_transfer_to_the_store(client: Client, at: FakeClock) -> None:
    sku = fresh_sku()
    arrives = WED_10 + 2 * DAY  # Friday 10:00
    upsert_inbound(
        client, inbound(f"{sku}/tr-1", sku, "store-a", 2, arrives, kind=sup_pb.INBOUND_KIND_TRANSFER)
    )
    pickup = inv_pb.FulfillmentContext(method=PICKUP, pickup_store="store-a", allow_backorder=True)
    res = client.inventory.Reserve(request([(sku, 2)], fulfillment=pickup))
    (line,) = res.lines
    assert line.backorder and [(a.node, a.source) for a in line.allocations] == [("store-a", INBOUND)]
    assert local(line.ready_time).date() == date(2033, 6, 17)
    assert line.ready_time_zone == "Europe/Berlin"


def test_a_channel_that_does_not_take_backorders_says_so(client: Client, at: FakeClock) -> None:
    sku = fresh_sku()
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "store-b", 10, WED_10 + DAY))
    pickup = inv_pb.FulfillmentContext(method=PICKUP, pickup_store="store-b", allow_backorder=True)
    details = failure(client.inventory.Reserve, request([(sku, 1)], channel="pos", fulfillment=pickup))
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BACKORDER_NOT_ALLOWED")
    assert raw_atp(client, sku, "store-b") == 0, "a refused reserve holds nothing"
    details = failure(
        client.inventory.Quote,
        test_grpc_promise.quote_request([(sku, 1)], "pos", pickup_store="store-b", allow_backorder=True),
    )
    assert details.reason == "BACKORDER_NOT_ALLOWED"
    # Without backorders the channel's reserve is refused for want of stock, as always.
    plain = inv_pb.FulfillmentContext(method=PICKUP, pickup_store="store-b")
    assert failure(
        client.inventory.Reserve, request([(sku, 1)], channel="pos", fulfillment=plain)
    ).reason == ("OUT_OF_STOCK")


def test_many_shoppers_never_get_more_than_the_order_brings(
    client: Client, at: FakeClock, admin: admin_grpc.AdminServiceStub
) -> None:
    sku = fresh_sku()
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "dc-1", 60, WED_10 + 7 * DAY))
    shoppers = 200

    def attempt(_: int) -> bool:
        try:
            res = client.inventory.Reserve(request([(sku, 1)]))
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc
            return False
        assert res.lines[0].backorder
        return True

    with ThreadPoolExecutor(max_workers=32) as pool:
        held = sum(pool.map(attempt, range(shoppers)))
    assert held == 60
    assert raw_atp(client, sku, "dc-1") == -60
    assert shortages(admin, sku) == []


def test_a_channel_with_a_rule_at_a_node_takes_no_backorders_there(
    client: Client, at: FakeClock, admin: admin_grpc.AdminServiceStub
) -> None:
    """The review's case: the call center, capped at 5 units at dc-1, held 60
    (and then 40 more) of a purchase order of 100 there once the shelf was
    empty. Any allocation rule at a node now means no backorders there for
    the channel (README, Backorders): Reserve refuses, Quote offers none, and
    availability by date counts no supply there; at store-a, where it has no
    rule, the channel still backorders."""
    cap = net_pb.AllocationRule(kind=net_pb.ALLOCATION_RULE_KIND_CAP, value=5, node="dc-1")
    client.network.UpsertChannel(
        net_pb.UpsertChannelRequest(
            channel=net_pb.Channel(
                id="callcenter", nodes=["dc-1", "store-a"], allow_backorder=True, allocation_rules=[cap]
            )
        )
    )
    sku = fresh_sku()
    monday = WED_10 + 5 * DAY
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "dc-1", 100, monday))
    for quantity in (60, 40, 5, 1):
        details = failure(client.inventory.Reserve, request([(sku, quantity)], channel="callcenter"))
        assert details.reason == "OUT_OF_STOCK", quantity
    assert raw_atp(client, sku, "dc-1") == 0, "a refused reserve holds nothing"
    assert shortages(admin, sku) == []
    # Quote offers the call center no backorder; web, without a rule, gets one.
    ship = {"destination": to_hamburg(), "service_levels": ["standard"], "allow_backorder": True}
    (line,) = client.quote([(sku, 5)], "callcenter", **ship).lines
    assert list(line.options) == []
    (line,) = client.quote([(sku, 5)], **ship).lines
    (option,) = line.options
    assert option.backorder and [(a.node, a.source) for a in option.allocations] == [("dc-1", INBOUND)]
    # Availability by date: no supply at dc-1 for the call center.
    found = phased(client, sku, "callcenter")
    assert found.atp == 0 and steps(found.future) == []
    assert {n.node: steps(n.future) for n in found.nodes} == {"dc-1": [], "store-a": []}
    assert steps(phased(client, sku).future) == [(monday, 100, [])]

    # Shelf stock within the cap stays the channel's, as an ordinary hold;
    # one unit more would need the order, which the rule's node does not give it.
    shelf = client.sku_with(dc_1=3)
    upsert_inbound(client, inbound(f"{shelf}/po-1", shelf, "dc-1", 100, monday))
    assert failure(client.inventory.Reserve, request([(shelf, 4)], channel="callcenter")).reason == (
        "OUT_OF_STOCK"
    )
    (line,) = client.quote([(shelf, 4)], "callcenter", **ship).lines
    assert list(line.options) == []
    assert steps(phased(client, shelf, "callcenter").future) == []
    held = client.inventory.Reserve(request([(shelf, 3)], channel="callcenter"))
    assert not held.lines[0].backorder
    assert [(a.node, a.quantity, a.source) for a in held.lines[0].allocations] == [("dc-1", 3, STOCK)]
    assert raw_atp(client, shelf, "dc-1") == 0

    # store-a has no rule for the call center: a transfer there is promised.
    upsert_inbound(
        client, inbound(f"{sku}/tr-1", sku, "store-a", 2, WED_10 + 2 * DAY, kind=sup_pb.INBOUND_KIND_TRANSFER)
    )
    pickup = inv_pb.FulfillmentContext(method=PICKUP, pickup_store="store-a", allow_backorder=True)
    res = client.inventory.Reserve(request([(sku, 2)], channel="callcenter", fulfillment=pickup))
    (line,) = res.lines
    assert line.backorder and [(a.node, a.source) for a in line.allocations] == [("store-a", INBOUND)]
    assert raw_atp(client, sku, "store-a") == -2
    assert shortages(admin, sku) == []


# ---------------------------------------------------------------- availability by date


def phased(
    client: Client, sku: str, channel: str = "web", *, include_nodes: bool = True
) -> inv_pb.SkuAvailability:
    (found,) = client.inventory.GetAvailability(
        inv_pb.GetAvailabilityRequest(
            skus=[sku], channel=channel, include_nodes=include_nodes, include_future=True
        )
    ).availabilities
    return found


def steps(future: Iterable[inv_pb.AvailabilityStep]) -> list[tuple[float, int, list[str]]]:
    return [(s.time.ToSeconds(), s.atp, list(s.supply_ids)) for s in future]


def test_availability_by_date_adds_each_nodes_supply_from_its_eta(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=5)
    monday, friday = WED_10 + 5 * DAY, WED_10 + 2 * DAY
    upsert_inbound(
        client,
        inbound(f"{sku}/po-1", sku, "dc-1", 10, monday),
        inbound(f"{sku}/po-2", sku, "dc-1", 4, monday),
        inbound(f"{sku}/tr-1", sku, "store-a", 7, friday),
    )
    found = phased(client, sku)
    assert found.atp == 5
    assert steps(found.future) == [(friday, 12, []), (monday, 26, [])]
    by_node = {n.node: steps(n.future) for n in found.nodes}
    assert by_node == {
        "dc-1": [(monday, 19, [f"{sku}/po-1", f"{sku}/po-2"])],
        "store-a": [(friday, 7, [f"{sku}/tr-1"])],
        "store-b": [],
        "store-c": [],
    }
    # The DC is not one of pos's nodes: its supply does not count there.
    assert steps(phased(client, sku, "pos").future) == [(friday, 7, [])]
    # Without the breakdown, the SKU's steps alone.
    alone = phased(client, sku, include_nodes=False)
    assert list(alone.nodes) == [] and steps(alone.future) == steps(found.future)


def test_availability_by_date_leaves_out_supply_already_promised(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=2)
    arrives = WED_10 + 5 * DAY
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "dc-1", 10, arrives))
    assert steps(phased(client, sku).future) == [(arrives, 12, [])]

    held = client.inventory.Reserve(request([(sku, 5)]))  # 2 from the shelf, 3 from the order
    assert held.lines[0].backorder
    found = phased(client, sku)
    assert found.atp == 0
    assert steps(found.future) == [(arrives, 7, [])]
    (dc,) = [n for n in found.nodes if n.node == "dc-1"]
    assert steps(dc.future) == [(arrives, 7, [f"{sku}/po-1"])]

    # Released: the order's units are free again.
    client.inventory.Release(inv_pb.ReleaseRequest(reservation_id=held.reservation_id))
    assert steps(phased(client, sku).future) == [(arrives, 12, [])]


def test_availability_by_date_skips_supply_where_the_channel_has_a_rule(
    client: Client, at: FakeClock
) -> None:
    """A channel with a rule at a node takes no backorders there (README, Backorders): no dates either."""
    cap = net_pb.AllocationRule(kind=net_pb.ALLOCATION_RULE_KIND_CAP, value=2, node="dc-1")
    client.network.UpsertChannel(
        net_pb.UpsertChannelRequest(
            channel=net_pb.Channel(id="marketplace:capped", nodes=["dc-1", "store-a"], allocation_rules=[cap])
        )
    )
    sku = client.sku_with(dc_1=5)
    monday = WED_10 + 5 * DAY
    upsert_inbound(
        client,
        inbound(f"{sku}/po-1", sku, "dc-1", 10, monday),
        inbound(f"{sku}/tr-1", sku, "store-a", 3, monday),
    )
    found = phased(client, sku, "marketplace:capped")
    assert found.atp == 2
    assert steps(found.future) == [(monday, 5, [])]
    assert {n.node: steps(n.future) for n in found.nodes} == {
        "dc-1": [],
        "store-a": [(monday, 3, [f"{sku}/tr-1"])],
    }


def test_availability_by_date_is_empty_without_supply_and_checks_its_input(client: Client) -> None:
    sku = client.sku_with(dc_1=5)
    found = phased(client, sku)
    assert found.atp == 5 and list(found.future) == []
    assert all(list(n.future) == [] for n in found.nodes)
    details = failure(
        client.inventory.GetAvailability,
        inv_pb.GetAvailabilityRequest(skus=["bad sku"], channel="web", include_future=True),
    )
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_receipt_short_of_what_backorders_wait_for_is_not_counted_as_a_new_shortage(
    client: Client, at: FakeClock, admin: admin_grpc.AdminServiceStub
) -> None:
    sku = fresh_sku()
    upsert_inbound(client, inbound(f"{sku}/po-1", sku, "dc-1", 10, WED_10 + 5 * DAY))
    assert client.inventory.Reserve(request([(sku, 6)])).lines[0].backorder

    def receive(units: int) -> None:
        client.supply.AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku=sku, node="dc-1", delta=units)])
        )

    before = total("inventory_shortages_created_total")
    receive(2)  # 2 of the 6 awaited are in: short by 4, which the order still covers
    assert total("inventory_shortages_created_total") == before
    assert shortages(admin, sku) == []
    # The order is cut to nothing: what the next change leaves short is a shortage.
    client.supply.DeleteInboundSupply(sup_pb.DeleteInboundSupplyRequest(ids=[f"{sku}/po-1"]))
    receive(1)
    assert total("inventory_shortages_created_total") == before + 1
    assert shortages(admin, sku) == [("dc-1", 3)]
