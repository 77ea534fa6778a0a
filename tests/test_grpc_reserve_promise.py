"""Reserve with a fulfillment context over real gRPC, on every store kind:
lines are sourced by promise (as Quote ranks nodes), held atomically, and the
answer carries each allocation's promise date.

The network, carriers and pinned clock are test_grpc_promise.py's: a DC in
Berlin and stores in Hamburg, Munich and Bremen, Wednesday 10:00 in Berlin;
the `web` channel sells from dc-1, store-a, store-b, store-c in that order.
Shipping to Hamburg: store-a is 0 km away (1 carrier day), dc-1 255 km (2).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import grpc
import pytest
import test_grpc_promise
from google.protobuf import duration_pb2
from store_helpers import FakeClock, backing_for, store_factory, store_params
from test_grpc_api import failure
from test_grpc_promise import PICKUP, SHIP, WED_10, Client, day, local, to_hamburg

from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine.cli import main
from engine.service.testing import ServerThread


@pytest.fixture(scope="module", params=store_params("embedded-fast", "embedded-pure", "redis", "cluster"))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    backing = backing_for(request.param, request, tmp_path_factory.mktemp("grpc-reserve-promise"))
    clock = FakeClock(WED_10)
    with ServerThread(store_factory(backing), clock=clock) as running:
        running.quote_clock = clock  # type: ignore[attr-defined]
        yield running


# test_grpc_promise.py's network on this module's server (a fixture finds
# `server` by name in the module of the test that asks).
client = test_grpc_promise.client
at = test_grpc_promise.at

_ids = iter(range(1_000_000))


def reserve(
    c: Client,
    lines: list[tuple[str, int]],
    *,
    rid: str | None = None,
    fulfillment: inv_pb.FulfillmentContext | None = None,
    **fields: object,
) -> inv_pb.Reservation:
    return c.inventory.Reserve(request(lines, rid=rid, fulfillment=fulfillment, **fields))


def request(
    lines: list[tuple[str, int]],
    *,
    rid: str | None = None,
    fulfillment: inv_pb.FulfillmentContext | None = None,
    **fields: object,
) -> inv_pb.ReserveRequest:
    return inv_pb.ReserveRequest(
        reservation_id=rid or f"promise-{next(_ids)}",
        channel="web",
        lines=[inv_pb.LineRequest(sku=s, quantity=q) for s, q in lines],
        ttl=duration_pb2.Duration(seconds=600),
        fulfillment=fulfillment,
        **fields,  # type: ignore[arg-type]
    )


def ship(**fields: object) -> inv_pb.FulfillmentContext:
    return inv_pb.FulfillmentContext(method=SHIP, destination=to_hamburg(), **fields)  # type: ignore[arg-type]


def allocations(res: inv_pb.Reservation) -> list[list[tuple[str, int]]]:
    return [[(a.node, a.quantity) for a in line.allocations] for line in res.lines]


def atp(c: Client, sku: str) -> dict[str, int]:
    (found,) = c.inventory.GetAvailability(
        inv_pb.GetAvailabilityRequest(skus=[sku], channel="web", include_nodes=True)
    ).availabilities
    return {n.node: n.atp for n in found.nodes}


def test_ship_holds_at_the_earliest_promise_not_the_channels_first_node(
    client: Client, at: FakeClock
) -> None:
    sku = client.sku_with(dc_1=10, store_a=10)
    plain = reserve(client, [(sku, 2)])
    assert allocations(plain) == [[("dc-1", 2)]], "without a context: the channel's order, as always"
    assert not plain.lines[0].HasField("promise_date")
    assert not plain.lines[0].allocations[0].HasField("promise_date")

    res = reserve(client, [(sku, 2)], fulfillment=ship(service_level="standard"))
    assert allocations(res) == [[("store-a", 2)]]
    (quoted,) = client.quote([(sku, 2)], destination=to_hamburg(), service_levels=["standard"]).lines
    # Ships Wednesday from Hamburg itself: Thursday, the date Quote promises.
    assert day(res.lines[0].allocations[0].promise_date) == date(2033, 6, 16)
    assert day(res.lines[0].promise_date) == day(quoted.options[0].promise_date) == date(2033, 6, 16)
    assert not res.lines[0].HasField("ready_time")
    # Only Reserve's answer is dated.
    got = client.inventory.GetReservation(inv_pb.GetReservationRequest(reservation_id=res.reservation_id))
    assert allocations(got) == allocations(res) and not got.lines[0].HasField("promise_date")


def test_no_split_unless_allowed(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=3, store_b=3)
    before = atp(client, sku)
    details = failure(client.inventory.Reserve, request([(sku, 5)], fulfillment=ship()))
    assert (details.code, details.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_STOCK")
    assert atp(client, sku) == before, "a refused reserve holds nothing"

    res = reserve(client, [(sku, 5)], fulfillment=ship(allow_split=True, service_level="standard"))
    assert allocations(res) == [[("dc-1", 3), ("store-b", 2)]]
    by_node = {a.node: day(a.promise_date) for a in res.lines[0].allocations}
    # Berlin (255 km) delivers Friday, Munich (612 km, 3 days) Monday: the line's promise.
    assert by_node == {"dc-1": date(2033, 6, 17), "store-b": date(2033, 6, 20)}
    assert day(res.lines[0].promise_date) == date(2033, 6, 20)


def test_pickup_holds_at_the_store_then_by_transfer(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=10, store_a=2)
    pickup = inv_pb.FulfillmentContext(method=PICKUP, pickup_store="store-a")
    (quoted,) = client.quote([(sku, 2)], pickup_store="store-a").lines
    res = reserve(client, [(sku, 2)], fulfillment=pickup)
    assert allocations(res) == [[("store-a", 2)]]
    line = res.lines[0]
    assert line.ready_time == quoted.options[0].ready_time
    assert line.allocations[0].ready_time == line.ready_time
    assert line.ready_time_zone == "Europe/Berlin"
    assert day(line.promise_date) == local(line.ready_time).date() == date(2033, 6, 15)

    # The shelf is empty now: the line comes by transfer from Berlin, ready later.
    res = reserve(client, [(sku, 1)], fulfillment=pickup)
    assert allocations(res) == [[("dc-1", 1)]]
    assert local(res.lines[0].ready_time) > local(line.ready_time)
    assert day(res.lines[0].promise_date) > date(2033, 6, 15)


def test_a_replay_with_another_destination_is_a_mismatch(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=10)
    first = request([(sku, 1)], fulfillment=ship())
    client.inventory.Reserve(first)
    elsewhere = request(
        [(sku, 1)],
        rid=first.reservation_id,
        fulfillment=inv_pb.FulfillmentContext(
            method=SHIP, destination=inv_pb.Destination(postal_code="80331")
        ),
    )
    details = failure(client.inventory.Reserve, elsewhere)
    assert (details.code, details.reason) == (grpc.StatusCode.ALREADY_EXISTS, "IDEMPOTENCY_MISMATCH")
    without = request([(sku, 1)], rid=first.reservation_id)
    details = failure(client.inventory.Reserve, without)
    assert details.reason == "IDEMPOTENCY_MISMATCH"


def test_an_identical_replay_returns_the_stored_result_after_stock_moved(
    client: Client, at: FakeClock
) -> None:
    sku = client.sku_with(dc_1=10, store_a=3)
    first = request([(sku, 3)], fulfillment=ship())
    res = client.inventory.Reserve(first)
    assert allocations(res) == [[("store-a", 3)]]
    # Hamburg is sold out now and Berlin got more: a new sourcing would pick Berlin.
    client.supply.AdjustStock(
        sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku=sku, node="dc-1", delta=50)])
    )
    again = client.inventory.Reserve(first)
    assert allocations(again) == allocations(res)
    assert again.create_time == res.create_time
    assert day(again.lines[0].promise_date) == day(res.lines[0].promise_date)


def test_lines_in_many_slots_are_sourced_by_promise(client: Client, at: FakeClock) -> None:
    """Several SKUs: on the Cluster, a cross-slot reservation (reserve_slot.lua per slot)."""
    skus = [client.sku_with(dc_1=5, store_a=5) for _ in range(5)]
    res = reserve(client, [(s, 4) for s in skus], fulfillment=ship())
    assert allocations(res) == [[("store-a", 4)]] * len(skus)
    assert all(day(line.promise_date) == date(2033, 6, 16) for line in res.lines)


def test_a_bad_context_is_refused_with_its_fields(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=1)
    bad = inv_pb.FulfillmentContext(method=SHIP, service_level="warp", destination=inv_pb.Destination())
    details = failure(client.inventory.Reserve, request([(sku, 1)], fulfillment=bad))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in details.field_violations} == {
        "fulfillment.destination",
        "fulfillment.service_level",
    }
    no_store = inv_pb.FulfillmentContext(method=PICKUP, pickup_store="nowhere")
    details = failure(client.inventory.Reserve, request([(sku, 1)], fulfillment=no_store))
    assert details.reason == "NODE_NOT_FOUND"


def test_cli_reserve_takes_a_fulfillment_context(
    client: Client, at: FakeClock, server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    sku = client.sku_with(dc_1=10, store_a=1)
    argv = ["reserve", "cli-1", "--channel", "web", "--line", f"{sku}:1", "--target", server.target]
    assert main([*argv, "--pickup", "store-a", "--json"]) == 0
    held = json.loads(capsys.readouterr().out)
    (line,) = held["lines"]
    assert [a["node"] for a in line["allocations"]] == ["store-a"]
    assert line["ready_time_zone"] == "Europe/Berlin" and "ready_time" in line
    argv[1] = "cli-2"
    assert main([*argv, "--ship-to", "20095", "--service-level", "express", "--split"]) == 0
    assert "delivered 2033-06-" in capsys.readouterr().out


def test_a_replay_gets_its_stored_result_after_the_network_changed(client: Client, at: FakeClock) -> None:
    """Ranking checks the context against today's network; a replay of a
    reservation made before must not: it gets the stored result (undated)."""
    zoned = {"latitude": 53.08, "longitude": 8.80, "time_zone": "Europe/Berlin"}
    store_z = net_pb.Node(id="store-z", type=net_pb.NODE_TYPE_STORE, name="Bremen 2", **zoned)
    client.network.UpsertNode(net_pb.UpsertNodeRequest(node=store_z))
    sku = client.sku_with(dc_1=5)
    pickup = inv_pb.FulfillmentContext(method=PICKUP, pickup_store="store-z")
    first = reserve(client, [(sku, 1)], rid="replay-after-change", fulfillment=pickup)
    assert allocations(first) == [[("dc-1", 1)]]  # by transfer to the store
    # The store stops offering pickup (it became a DC).
    dc_z = net_pb.Node(id="store-z", type=net_pb.NODE_TYPE_DC, name="Bremen 2", **zoned)
    client.network.UpsertNode(net_pb.UpsertNodeRequest(node=dc_z))
    again = reserve(client, [(sku, 1)], rid="replay-after-change", fulfillment=pickup)
    assert allocations(again) == allocations(first) and again.state == first.state
    assert [a.node for a in again.lines[0].allocations] == ["dc-1"]
    # A new reservation with that context is refused, with its field.
    details = failure(client.inventory.Reserve, request([(sku, 1)], fulfillment=pickup))
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "fulfillment.pickup_store" in {v.field for v in details.field_violations}
