"""Quote and FindInStores over real gRPC on loopback, against each store kind.

The server's clock is pinned (the store keeps the real one: quotes hold
nothing), so every promise date below is exact. The network is three stores
and a DC around Germany, all on Europe/Berlin, working Monday to Friday with a
14:00 cutoff (the node defaults) unless a test says otherwise; the carriers
are the engine's sample table, whose `standard` level goes by distance (up to
150 km: 1 day, 600 km: 2, 1,500 km: 3, on Monday to Friday), `express` takes
2 days (Monday to Saturday) between regions it does not know, and
`transfer` moves stock between nodes in 1 day up to 800 km.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

import grpc
import pytest
from store_helpers import FakeClock, backing_for, store_factory, store_params
from test_grpc_api import failure

from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.core.types import Channel, Node, NodeType, SupplyKind, SupplyOp
from engine.service.testing import ServerThread

BERLIN = ZoneInfo("Europe/Berlin")
SHIP = inv_pb.FULFILLMENT_METHOD_SHIP
PICKUP = inv_pb.FULFILLMENT_METHOD_PICKUP
STOCK = inv_pb.SUPPLY_SOURCE_STOCK
TRANSFER = inv_pb.SUPPLY_SOURCE_TRANSFER
INVALID = grpc.StatusCode.INVALID_ARGUMENT
HAMBURG = (53.55, 9.99)

# 2033-06-15 is a Wednesday.
WED_10 = datetime(2033, 6, 15, 10, 0, tzinfo=BERLIN).timestamp()
WED_15 = datetime(2033, 6, 15, 15, 0, tzinfo=BERLIN).timestamp()
FRI_15 = datetime(2033, 6, 17, 15, 0, tzinfo=BERLIN).timestamp()
SAT_10 = datetime(2033, 6, 18, 10, 0, tzinfo=BERLIN).timestamp()


def day(pb: object) -> date:
    return date(pb.year, pb.month, pb.day)  # type: ignore[attr-defined]


def local(ts: object) -> datetime:
    return datetime.fromtimestamp(ts.ToSeconds(), BERLIN)  # type: ignore[attr-defined]


class Client:
    def __init__(self, channel: grpc.Channel, clock: FakeClock) -> None:
        self.inventory = inv_grpc.InventoryServiceStub(channel)
        self.network = net_grpc.NetworkServiceStub(channel)
        self.supply = sup_grpc.SupplyServiceStub(channel)
        self.clock = clock
        self._skus = itertools.count(1)

    def sku_with(self, **stock: int) -> str:
        """A fresh SKU with this stock per node (keyword = node id with ``_`` for ``-``)."""
        sku = f"Q-{next(self._skus)}"
        changes = [
            sup_pb.StockAdjustment(sku=sku, node=node.replace("_", "-"), delta=qty)
            for node, qty in stock.items()
        ]
        self.supply.AdjustStock(sup_pb.AdjustStockRequest(changes=changes))
        return sku

    def quote(
        self, lines: list[tuple[str, int]], channel: str = "web", **fields: object
    ) -> inv_pb.QuoteResponse:
        return self.inventory.Quote(quote_request(lines, channel, **fields))

    def find(self, sku: str, store: str = "store-a", **fields: object) -> inv_pb.FindInStoresResponse:
        return self.inventory.FindInStores(
            inv_pb.FindInStoresRequest(channel="pos", store=store, sku=sku, **fields)  # type: ignore[arg-type]
        )


def quote_request(
    lines: list[tuple[str, int]], channel: str = "web", **fields: object
) -> inv_pb.QuoteRequest:
    return inv_pb.QuoteRequest(
        channel=channel,
        lines=[inv_pb.QuoteLine(sku=s, quantity=q) for s, q in lines],
        **fields,  # type: ignore[arg-type]
    )


def to_hamburg() -> inv_pb.Destination:
    return inv_pb.Destination(latitude=HAMBURG[0], longitude=HAMBURG[1])


@pytest.fixture(scope="module", params=store_params("embedded-pure", "redis", "cluster"))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    backing = backing_for(request.param, request, tmp_path_factory.mktemp("grpc-promise"))
    clock = FakeClock(WED_10)
    with ServerThread(store_factory(backing), clock=clock) as running:
        running.quote_clock = clock  # type: ignore[attr-defined]
        yield running


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[Client]:
    channel = grpc.insecure_channel(server.target)
    c = Client(channel, server.quote_clock)  # type: ignore[attr-defined]
    tz = "Europe/Berlin"
    for node in (
        net_pb.Node(id="dc-1", type=net_pb.NODE_TYPE_DC, name="DC Berlin", latitude=52.52, longitude=13.40,
                    time_zone=tz),
        net_pb.Node(id="store-a", type=net_pb.NODE_TYPE_STORE, name="Hamburg", latitude=53.55, longitude=9.99,
                    time_zone=tz),
        net_pb.Node(id="store-b", type=net_pb.NODE_TYPE_STORE, name="Munich", latitude=48.14, longitude=11.58,
                    time_zone=tz),
        net_pb.Node(id="store-c", type=net_pb.NODE_TYPE_STORE, name="Bremen", latitude=53.08, longitude=8.80,
                    time_zone=tz),
    ):  # fmt: skip
        c.network.UpsertNode(net_pb.UpsertNodeRequest(node=node))
    for channel_id, nodes, backorders in (
        ("web", ["dc-1", "store-a", "store-b", "store-c"], True),
        ("pos", ["store-a", "store-b", "store-c"], False),
    ):
        c.network.UpsertChannel(
            net_pb.UpsertChannelRequest(
                channel=net_pb.Channel(id=channel_id, nodes=nodes, allow_backorder=backorders)
            )
        )
    yield c
    channel.close()


@pytest.fixture
def at(client: Client) -> Iterator[FakeClock]:
    """The server's quote clock; every test starts on Wednesday 10:00 in Berlin."""
    client.clock.now = WED_10
    yield client.clock
    client.clock.now = WED_10


# ------------------------------------------------------------------- ship


def test_ship_before_cutoff_leaves_today(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=10)
    response = client.quote([(sku, 2)], destination=to_hamburg())
    assert response.quote_time.ToSeconds() == WED_10
    (line,) = response.lines
    assert (line.line_index, line.sku, line.quantity) == (0, sku, 2)
    by_level = {o.service_level: o for o in line.options}
    assert list(by_level) == ["standard", "express"]
    standard = by_level["standard"]
    assert standard.method == SHIP and not standard.split
    assert not standard.HasField("ready_time") and standard.ready_time_zone == ""
    (alloc,) = standard.allocations
    assert (alloc.node, alloc.quantity, alloc.source) == ("dc-1", 2, STOCK)
    # Ships Wednesday; 255 km is 2 carrier days: Friday.
    assert day(alloc.ship_date) == date(2033, 6, 15)
    assert day(standard.promise_date) == day(alloc.promise_date) == date(2033, 6, 17)
    assert alloc.distance_km == pytest.approx(255.1, abs=0.5)
    assert day(by_level["express"].promise_date) == date(2033, 6, 17)


def test_ship_after_cutoff_rolls_to_the_next_working_day(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=10)
    at.now = WED_15
    (line,) = client.quote([(sku, 1)], destination=to_hamburg()).lines
    standard, express = line.options
    assert day(standard.allocations[0].ship_date) == date(2033, 6, 16)
    # Thursday + 2 weekdays = Monday; express delivers on Saturdays too.
    assert day(standard.promise_date) == date(2033, 6, 20)
    assert day(express.promise_date) == date(2033, 6, 18)


@pytest.mark.parametrize("now", [FRI_15, SAT_10], ids=["friday-after-cutoff", "saturday"])
def test_weekend_orders_leave_on_monday(client: Client, at: FakeClock, now: float) -> None:
    sku = client.sku_with(dc_1=10)
    at.now = now
    (line,) = client.quote([(sku, 1)], destination=to_hamburg(), service_levels=["standard"]).lines
    (standard,) = line.options
    assert standard.service_level == "standard"
    assert day(standard.allocations[0].ship_date) == date(2033, 6, 20)
    assert day(standard.promise_date) == date(2033, 6, 22)


def test_a_line_splits_only_when_allowed(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=3, store_b=3)
    request = {"destination": to_hamburg(), "service_levels": ["standard"]}
    (line,) = client.quote([(sku, 5)], **request).lines
    assert list(line.options) == [], "no single node has 5"
    (line,) = client.quote([(sku, 5)], allow_split=True, **request).lines
    (option,) = line.options
    assert option.split
    assert sorted((a.node, a.quantity) for a in option.allocations) == [("dc-1", 3), ("store-b", 2)]
    # The parcel from Munich (612 km, 3 days) arrives last: Monday.
    assert day(option.promise_date) == max(day(a.promise_date) for a in option.allocations)
    assert day(option.promise_date) == date(2033, 6, 20)


def test_one_parcel_beats_two_arriving_the_same_day(client: Client, at: FakeClock) -> None:
    # Hamburg's own store has 1 (delivered Thursday), the DC has 3 (Friday):
    # split, the line would arrive Friday too, in two parcels.
    sku = client.sku_with(dc_1=3, store_a=1)
    (line,) = client.quote([(sku, 2)], destination=to_hamburg(), service_levels=["standard"],
                           allow_split=True).lines  # fmt: skip
    (option,) = line.options
    assert not option.split
    assert [(a.node, a.quantity) for a in option.allocations] == [("dc-1", 2)]
    assert day(option.promise_date) == date(2033, 6, 17)


def test_lines_of_one_sku_share_its_stock(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=3)
    first, second = client.quote([(sku, 2), (sku, 2)], destination=to_hamburg(),
                                 service_levels=["standard"]).lines  # fmt: skip
    assert [a.quantity for a in first.options[0].allocations] == [2]
    assert list(second.options) == [], "the first line took 2 of the 3"


# ----------------------------------------------------------------- pickup


def test_pickup_from_the_stores_own_shelf(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(store_a=4)
    (line,) = client.quote([(sku, 2)], pickup_store="store-a").lines
    (option,) = line.options
    assert option.method == PICKUP and option.service_level == "" and not option.split
    # Ready two hours (the default pick time) after the order.
    assert local(option.ready_time) == datetime(2033, 6, 15, 12, 0, tzinfo=BERLIN)
    assert option.ready_time_zone == "Europe/Berlin"
    assert day(option.promise_date) == date(2033, 6, 15)
    (alloc,) = option.allocations
    assert (alloc.node, alloc.quantity, alloc.source, alloc.distance_km) == ("store-a", 2, STOCK, 0.0)
    assert not alloc.HasField("ship_date")


def test_pickup_after_cutoff_is_ready_next_morning(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(store_a=4)
    at.now = WED_15
    (option,) = client.quote([(sku, 1)], pickup_store="store-a").lines[0].options
    # Prepared from Thursday's 09:00 opening, two hours.
    assert local(option.ready_time) == datetime(2033, 6, 16, 11, 0, tzinfo=BERLIN)


def test_pickup_without_stock_is_a_transfer(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=10)
    (option,) = client.quote([(sku, 3)], pickup_store="store-a").lines[0].options
    (alloc,) = option.allocations
    assert (alloc.node, alloc.quantity, alloc.source) == ("dc-1", 3, TRANSFER)
    assert day(alloc.ship_date) == date(2033, 6, 15)
    # The truck arrives Thursday; ready two hours after opening.
    assert local(option.ready_time) == datetime(2033, 6, 16, 11, 0, tzinfo=BERLIN)
    assert day(option.promise_date) == date(2033, 6, 16)


def test_pickup_nowhere_in_stock_has_no_option(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(store_b=1)
    (line,) = client.quote([(sku, 2)], pickup_store="store-a").lines
    assert list(line.options) == []


def test_both_methods_in_request_order(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=5, store_a=5)
    (line,) = client.quote(
        [(sku, 1)], destination=to_hamburg(), pickup_store="store-a", methods=[PICKUP, SHIP],
        service_levels=["express"],
    ).lines  # fmt: skip
    assert [(o.method, o.service_level) for o in line.options] == [(PICKUP, ""), (SHIP, "express")]
    # Without methods, both are quoted (ship first) because both ends are given.
    (line,) = client.quote([(sku, 1)], destination=to_hamburg(), pickup_store="store-a",
                           service_levels=["express"]).lines  # fmt: skip
    assert [o.method for o in line.options] == [SHIP, PICKUP]


def test_a_quote_holds_nothing(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=2)
    for _ in range(3):
        assert client.quote([(sku, 2)], destination=to_hamburg()).lines[0].options
    levels = client.inventory.GetAvailability(inv_pb.GetAvailabilityRequest(skus=[sku], channel="web"))
    assert levels.availabilities[0].atp == 2


# ------------------------------------------------------------ endless aisle


def test_find_in_stores_nearest_first(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(store_a=1, store_b=6, store_c=3, dc_1=50)
    found = client.find(sku, quantity=2)
    assert (found.sku, found.quantity) == (sku, 2)
    # Hamburg itself has 1 < 2: shown, with no pickup time.
    assert (found.store.node, found.store.atp, found.store.distance_km) == ("store-a", 1, 0.0)
    assert not found.store.HasField("pickup_time")
    assert found.store.time_zone == "Europe/Berlin"
    # Bremen (95 km) before Munich (612 km); the DC is no store.
    assert [s.node for s in found.nearby_stores] == ["store-c", "store-b"]
    bremen, munich = found.nearby_stores
    assert bremen.distance_km == pytest.approx(95, abs=3)
    assert munich.distance_km == pytest.approx(612, abs=3)
    assert bremen.atp == 3 and bremen.name == "Bremen"
    assert local(bremen.pickup_time) == datetime(2033, 6, 15, 12, 0, tzinfo=BERLIN)
    assert day(bremen.pickup_date) == date(2033, 6, 15)


def test_find_in_stores_limits_and_filters(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(store_a=5, store_b=6, store_c=3)
    found = client.find(sku, max_stores=1)
    assert found.quantity == 1, "0 means 1"
    assert local(found.store.pickup_time) == datetime(2033, 6, 15, 12, 0, tzinfo=BERLIN)
    assert [s.node for s in found.nearby_stores] == ["store-c"]
    assert [s.node for s in client.find(sku, quantity=4).nearby_stores] == ["store-b"]
    # From Munich, Bremen (582 km) is nearer than Hamburg (612 km).
    assert [s.node for s in client.find(sku, store="store-b").nearby_stores] == ["store-c", "store-a"]


def test_find_in_stores_shows_what_the_channel_may_take(client: Client, at: FakeClock) -> None:
    """A store's units under the channel's allocation rule, as its Reserve would see them."""
    cap = net_pb.AllocationRule(kind=net_pb.ALLOCATION_RULE_KIND_CAP, value=2, node="store-b")
    client.network.UpsertChannel(
        net_pb.UpsertChannelRequest(
            channel=net_pb.Channel(
                id="callcenter", nodes=["store-a", "store-b", "store-c"], allocation_rules=[cap]
            )
        )
    )
    sku = client.sku_with(store_b=6, store_c=1)
    found = client.inventory.FindInStores(
        inv_pb.FindInStoresRequest(channel="callcenter", store="store-a", sku=sku, quantity=2)
    )
    # Munich has 6 on its shelf, of which the call center may take 2; Bremen's 1 is too few.
    assert [(s.node, s.atp) for s in found.nearby_stores] == [("store-b", 2)]


# ------------------------------------------------------------------ errors


def test_quote_reports_every_bad_field(client: Client, at: FakeClock) -> None:
    sku = client.sku_with(dc_1=5)
    request = quote_request(
        [("bad sku", 0), (sku, 1)],
        channel="shop",
        methods=[SHIP, inv_pb.FULFILLMENT_METHOD_UNSPECIFIED],
        destination=inv_pb.Destination(postal_code="x" * 17, latitude=95.0),
        service_levels=["teleport"],
    )
    details = failure(client.inventory.Quote, request)
    assert details.code == INVALID and details.reason == "INVALID_ARGUMENT"
    assert details.fields == (
        "channel",
        "lines[0].sku",
        "lines[0].quantity",
        "methods[1]",
        "destination.postal_code",
        "destination.latitude",
        "destination.longitude",
        "service_levels[0]",
    )


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({}, ("lines", "methods")),
        ({"lines": True, "methods": [SHIP]}, ("destination",)),
        ({"lines": True, "methods": [PICKUP]}, ("pickup_store",)),
        ({"lines": True, "pickup_store": "dc-1"}, ("pickup_store",)),
        ({"lines": True, "methods": [SHIP, SHIP], "destination": to_hamburg()}, ("methods[1]",)),
        ({"lines": True, "destination": inv_pb.Destination(latitude=1.0, longitude=181.0)},
         ("destination.longitude",)),
        ({"lines": True, "destination": inv_pb.Destination(postal_code="20095", region="r" * 65)},
         ("destination.region",)),
    ],
    ids=["empty", "ship-without-destination", "pickup-without-store", "dc-is-no-pickup-store",
         "repeated-method", "longitude", "region"],
)  # fmt: skip
def test_quote_validation(
    client: Client, at: FakeClock, fields: dict[str, object], violations: tuple[str, ...]
) -> None:
    given = dict(fields)  # the parameter is shared by every store kind
    lines = [("SKU-1", 1)] if given.pop("lines", False) else []
    details = failure(client.inventory.Quote, quote_request(lines, **given))
    assert details.code == INVALID and details.reason == "INVALID_ARGUMENT"
    assert details.fields == violations


def test_quote_unknown_channel_and_store(client: Client, at: FakeClock) -> None:
    details = failure(client.inventory.Quote, quote_request([("SKU-1", 1)], "marketplace:nope",
                                                           destination=to_hamburg()))  # fmt: skip
    assert (details.code, details.reason, details.fields) == (INVALID, "CHANNEL_NOT_FOUND", ("channel",))
    details = failure(client.inventory.Quote, quote_request([("SKU-1", 1)], pickup_store="store-zz"))
    assert (details.code, details.reason, details.fields) == (INVALID, "NODE_NOT_FOUND", ("pickup_store",))
    # With another problem, each is one violation of a plain INVALID_ARGUMENT.
    details = failure(client.inventory.Quote, quote_request([("SKU-1", 0)], "app", pickup_store="store-zz"))
    assert (details.reason, details.fields) == (
        "INVALID_ARGUMENT",
        ("channel", "lines[0].quantity", "pickup_store"),
    )


def test_find_in_stores_errors(client: Client, at: FakeClock) -> None:
    request = inv_pb.FindInStoresRequest(channel="pos", store="dc-1", sku="a b", quantity=-1, max_stores=51)
    details = failure(client.inventory.FindInStores, request)
    assert (details.code, details.reason) == (INVALID, "INVALID_ARGUMENT")
    assert details.fields == ("sku", "quantity", "max_stores", "store")
    details = failure(client.inventory.FindInStores, inv_pb.FindInStoresRequest(channel="pos", sku="X"))
    assert details.fields == ("store",)
    details = failure(
        client.inventory.FindInStores, inv_pb.FindInStoresRequest(channel="pos", store="store-zz", sku="X")
    )
    assert (details.reason, details.fields) == ("NODE_NOT_FOUND", ("store",))
    details = failure(
        client.inventory.FindInStores, inv_pb.FindInStoresRequest(channel="app", store="store-a", sku="X")
    )
    assert (details.reason, details.fields) == ("CHANNEL_NOT_FOUND", ("channel",))


# --------------------------------------------------------------- demo data


def test_the_demo_network_gives_real_dates() -> None:
    """The README's examples: the demo's calendars, ZIP prefixes and carriers agree."""
    from engine.config import EmbeddedStoreConfig
    from engine.demo import load_demo
    from engine.store.embedded import EmbeddedStore

    async def demo_store() -> EmbeddedStore:
        store = EmbeddedStore(EmbeddedStoreConfig(data_dir=None))
        await store.start()
        await load_demo(store, skus=30)
        return store

    new_york = ZoneInfo("America/New_York")
    # Wednesday 2026-11-25, 18:00 in New York: after the DCs' 17:00 cutoff,
    # and Thursday is Thanksgiving, when DCs and stores are closed.
    clock = FakeClock(datetime(2026, 11, 25, 18, 0, tzinfo=new_york).timestamp())
    with ServerThread(demo_store, clock=clock) as running, grpc.insecure_channel(running.target) as channel:
        stub = inv_grpc.InventoryServiceStub(channel)
        levels = stub.GetAvailability(inv_pb.GetAvailabilityRequest(
            skus=[f"SKU-{i:06d}" for i in range(1, 31)], nodes=["dc-east", "store-002", "dc-west"],
            include_nodes=True,
        ))  # fmt: skip
        sku = next(a.sku for a in levels.availabilities if a.nodes[0].atp >= 1 and a.nodes[2].atp >= 1)
        request = quote_request([(sku, 1)], destination=inv_pb.Destination(postal_code="10001"))
        standard, express = stub.Quote(request).lines[0].options
        alloc = standard.allocations[0]
        assert alloc.node == "dc-east"
        # Leaves Friday; standard (15 km: 1 day) arrives Monday.
        assert day(alloc.ship_date) == date(2026, 11, 27)
        assert day(standard.promise_date) == date(2026, 11, 30)
        # Express from Newark would arrive Saturday; Reno, where it is only
        # 15:00, still ships today, and 2 air days make Friday.
        (west,) = express.allocations
        assert (west.node, day(west.ship_date)) == ("dc-west", date(2026, 11, 25))
        assert day(express.promise_date) == date(2026, 11, 27)

        on_shelf = next(a.sku for a in levels.availabilities if a.nodes[1].atp >= 1)
        pickup = quote_request([(on_shelf, 1)], pickup_store="store-002")
        (option,) = stub.Quote(pickup).lines[0].options
        # After the store's 15:00 cutoff, closed Thursday: ready Friday, an
        # hour after its 10:00 opening.
        assert datetime.fromtimestamp(option.ready_time.ToSeconds(), new_york) == datetime(
            2026, 11, 27, 11, 0, tzinfo=new_york
        )
        assert option.ready_time_zone == "America/New_York"


def test_a_server_quotes_with_the_carriers_it_was_given(tmp_path: object) -> None:
    """``serve --carriers FILE``: the table replaces the sample one."""
    from engine.config import EmbeddedStoreConfig, ServerConfig
    from engine.core.carriers import loads_carriers
    from engine.store.embedded import EmbeddedStore

    carriers = loads_carriers(
        "version: 1\n"
        "service_levels:\n"
        "  - name: same-day\n"
        "    delivery_days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun]\n"
        "    distance_bands: [{max_km: 50, days: 0}]\n"
    )

    async def store() -> EmbeddedStore:
        s = EmbeddedStore(EmbeddedStoreConfig(data_dir=None))
        await s.start()
        await s.upsert_node(
            Node("dc-1", NodeType.DC, latitude=52.52, longitude=13.40, time_zone="Europe/Berlin")
        )
        await s.upsert_channel(Channel("web", ("dc-1",)))
        await s.apply_supply([SupplyOp(SupplyKind.ADJUST, "SKU-1", "dc-1", 5)])
        return s

    config = ServerConfig(listen="127.0.0.1:0", grace_s=1.0, carriers=carriers)
    with (
        ServerThread(store, config, clock=FakeClock(WED_10)) as running,
        grpc.insecure_channel(running.target) as channel,
    ):
        stub = inv_grpc.InventoryServiceStub(channel)
        near = inv_pb.Destination(latitude=52.50, longitude=13.45)
        (option,) = stub.Quote(quote_request([("SKU-1", 1)], destination=near)).lines[0].options
        assert option.service_level == "same-day"
        assert day(option.promise_date) == date(2033, 6, 15)
        # Beyond 50 km the only level does not serve the address.
        assert not stub.Quote(quote_request([("SKU-1", 1)], destination=to_hamburg())).lines[0].options
        details = failure(
            stub.Quote, quote_request([("SKU-1", 1)], destination=near, service_levels=["standard"])
        )
        assert details.fields == ("service_levels[0]",)
        assert "offered: same-day" in details.field_violations[0].description


# ----------------------------------------------------------- future supply

INBOUND = inv_pb.SUPPLY_SOURCE_INBOUND
PO = sup_pb.INBOUND_KIND_PURCHASE_ORDER
DAY = 86_400.0
_backorder_skus = itertools.count(1)


def inbound(
    supply_id: str, sku: str, node: str, quantity: int, eta: float, kind: int = PO
) -> sup_pb.InboundSupply:
    record = sup_pb.InboundSupply(id=supply_id, sku=sku, node=node, quantity=quantity, kind=kind)  # type: ignore[arg-type]
    record.eta.FromSeconds(int(eta))
    return record


def upsert(client: Client, *records: sup_pb.InboundSupply) -> sup_pb.UpsertInboundSupplyResponse:
    return client.supply.UpsertInboundSupply(sup_pb.UpsertInboundSupplyRequest(records=records))


def test_a_line_only_on_order_is_promised_from_the_eta(client: Client, at: FakeClock) -> None:
    sku = f"BO-{next(_backorder_skus)}"  # no stock anywhere
    arrives = WED_10 + 5 * DAY  # Monday 2033-06-20, 10:00 in Berlin
    upsert(client, inbound(f"{sku}/po-1", sku, "dc-1", 10, arrives))

    # Without allow_backorder the engine promises stock only.
    (line,) = client.quote([(sku, 2)], destination=to_hamburg()).lines
    assert list(line.options) == []

    response = client.quote([(sku, 2)], destination=to_hamburg(), service_levels=["standard"],
                            allow_backorder=True)  # fmt: skip
    ((option,),) = [line.options for line in response.lines]
    assert option.method == SHIP and option.backorder and not option.split
    (alloc,) = option.allocations
    assert (alloc.node, alloc.quantity, alloc.source) == ("dc-1", 2, INBOUND)
    assert alloc.available_time.ToSeconds() == arrives
    assert list(alloc.supply_ids) == [f"{sku}/po-1"]
    # Received Monday morning, before the DC's 14:00 cutoff: leaves Monday;
    # 255 km is 2 carrier days: Wednesday.
    assert day(alloc.ship_date) == date(2033, 6, 20)
    assert day(option.promise_date) == day(alloc.promise_date) == date(2033, 6, 22)

    # More than the first PO brings waits for a later one that covers the rest.
    upsert(client, inbound(f"{sku}/po-2", sku, "dc-1", 10, arrives + 7 * DAY))
    (line,) = client.quote([(sku, 15)], destination=to_hamburg(), service_levels=["standard"],
                           allow_backorder=True).lines  # fmt: skip
    (alloc,) = line.options[0].allocations
    assert list(alloc.supply_ids) == [f"{sku}/po-1", f"{sku}/po-2"]
    assert day(line.options[0].promise_date) == date(2033, 6, 29)

    # Stock on the shelf still comes first, as a plain option.
    client.supply.AdjustStock(
        sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku=sku, node="dc-1", delta=2)])
    )
    (line,) = client.quote([(sku, 2)], destination=to_hamburg(), service_levels=["standard"],
                           allow_backorder=True).lines  # fmt: skip
    assert not line.options[0].backorder and line.options[0].allocations[0].source == STOCK


def test_pickup_of_a_line_on_order_at_the_store(client: Client, at: FakeClock) -> None:
    sku = f"BO-{next(_backorder_skus)}"
    arrives = datetime(2033, 6, 17, 10, 0, tzinfo=BERLIN).timestamp()  # Friday
    upsert(client, inbound(f"{sku}/tr-1", sku, "store-a", 3, arrives, kind=sup_pb.INBOUND_KIND_TRANSFER))
    (line,) = client.quote([(sku, 3)], pickup_store="store-a", allow_backorder=True).lines
    (option,) = line.options
    assert option.method == PICKUP and option.backorder
    (alloc,) = option.allocations
    assert (alloc.node, alloc.source, list(alloc.supply_ids)) == ("store-a", INBOUND, [f"{sku}/tr-1"])
    # Ready after the store's pick time (2 hours by default).
    assert local(option.ready_time) == datetime(2033, 6, 17, 12, 0, tzinfo=BERLIN)
    assert option.ready_time_zone == "Europe/Berlin"


def test_inbound_supply_is_upserted_listed_and_deleted(client: Client, at: FakeClock) -> None:
    sku = f"BO-{next(_backorder_skus)}"
    eta = WED_10 + 3 * DAY
    records = [inbound(f"{sku}/{i}", sku, ("dc-1", "store-b")[i % 2], i + 1, eta + i) for i in range(5)]
    created = upsert(client, *records)
    assert [r.outcome for r in created.results] == [sup_pb.INBOUND_OUTCOME_CREATED] * 5
    assert [r.record for r in created.results] == records
    revised = inbound(f"{sku}/0", sku, "dc-1", 50, eta + DAY)
    again = upsert(client, records[1], revised)
    assert [r.outcome for r in again.results] == [
        sup_pb.INBOUND_OUTCOME_UNCHANGED,
        sup_pb.INBOUND_OUTCOME_UPDATED,
    ]

    def listing(**fields: object) -> list[sup_pb.InboundSupply]:
        out: list[sup_pb.InboundSupply] = []
        token = ""
        while True:
            page = client.supply.ListInboundSupply(
                sup_pb.ListInboundSupplyRequest(page_size=2, page_token=token, **fields)  # type: ignore[arg-type]
            )
            out += page.records
            token = page.next_page_token
            if not token:
                return out

    assert listing(sku=sku) == [revised, *records[1:]]
    assert listing(sku=sku, node="store-b") == [records[1], records[3]]
    assert [r.id for r in listing(node="store-b") if r.sku == sku] == [f"{sku}/1", f"{sku}/3"]

    first = client.supply.ListInboundSupply(sup_pb.ListInboundSupplyRequest(sku=sku, page_size=2))
    details = failure(
        client.supply.ListInboundSupply,
        sup_pb.ListInboundSupplyRequest(sku=sku, node="dc-1", page_token=first.next_page_token),
    )
    assert (details.code, details.fields) == (INVALID, ("page_token",))
    details = failure(client.supply.ListInboundSupply, sup_pb.ListInboundSupplyRequest(page_size=-1))
    assert details.fields == ("page_size",)

    deleted = client.supply.DeleteInboundSupply(
        sup_pb.DeleteInboundSupplyRequest(ids=[f"{sku}/1", "nope", f"{sku}/3", f"{sku}/1"])
    )
    assert list(deleted.deleted_ids) == [f"{sku}/1", f"{sku}/3"]
    assert list(deleted.not_found_ids) == ["nope", f"{sku}/1"]
    assert [r.id for r in listing(sku=sku)] == [f"{sku}/0", f"{sku}/2", f"{sku}/4"]


def test_inbound_supply_validation(client: Client, at: FakeClock) -> None:
    good = inbound("ok-1", "SKU-1", "dc-1", 1, WED_10)
    no_eta = sup_pb.InboundSupply(id="ok-2", sku="SKU-1", node="dc-1", quantity=1, kind=PO)
    bad = [
        inbound("has space", "a{b", "", 0, WED_10),
        inbound("late", "SKU-1", "dc-1", 1_000_000_001, WED_10 - 400 * DAY),
        inbound("far", "SKU-1", "dc-1", 1, WED_10 + 4 * 365 * DAY, kind=sup_pb.INBOUND_KIND_UNSPECIFIED),
        no_eta,
        good,
        inbound("ok-1", "SKU-1", "dc-1", 2, WED_10),
    ]
    details = failure(client.supply.UpsertInboundSupply, sup_pb.UpsertInboundSupplyRequest(records=bad))
    assert (details.code, details.reason) == (INVALID, "INVALID_ARGUMENT")
    assert details.fields == (
        "records[0].id", "records[0].sku", "records[0].node", "records[0].quantity",
        "records[1].quantity", "records[2].kind", "records[3].eta",
        "records[1].eta", "records[2].eta", "records[5].id",
    )  # fmt: skip
    assert {v.field: v.description for v in details.field_violations}["records[3].eta"] == "is required"
    details = failure(client.supply.UpsertInboundSupply, sup_pb.UpsertInboundSupplyRequest())
    assert details.fields == ("records",)
    details = failure(
        client.supply.UpsertInboundSupply,
        sup_pb.UpsertInboundSupplyRequest(records=[good, inbound("ok-3", "SKU-1", "dc-zz", 1, WED_10)]),
    )
    assert (details.code, details.reason, details.fields) == (INVALID, "NODE_NOT_FOUND", ("records[1].node",))
    # Nothing of a refused batch was kept.
    listed = client.supply.ListInboundSupply(sup_pb.ListInboundSupplyRequest(sku="SKU-1"))
    assert list(listed.records) == []
    details = failure(client.supply.DeleteInboundSupply, sup_pb.DeleteInboundSupplyRequest(ids=["ok", "a b"]))
    assert details.fields == ("ids[1]",)
    details = failure(client.supply.DeleteInboundSupply, sup_pb.DeleteInboundSupplyRequest())
    assert details.fields == ("ids",)
