"""Carrier tables over NetworkService and daily capacity, over real gRPC on
loopback, against each store kind.

The store and the server share one pinned clock (capacity is counted by the
store at commit, in each node's local day, and read by Quote at the server's
"now": both must agree on what today is). The network is the one of
test_grpc_promise: a DC in Berlin and stores around Germany on Europe/Berlin,
Monday to Friday, 14:00 cutoff; a quote ships to Hamburg (255 km from the DC:
2 days by the sample table's `standard`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from store_helpers import Backing, FakeClock, backing_for, store_factory, store_params, unique_namespace
from test_grpc_api import failure
from test_grpc_promise import BERLIN, WED_10, day, local, to_hamburg

from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.core.carriers import default_carriers
from engine.service.convert import carrier_table_pb
from engine.service.testing import ServerThread
from engine.store.base import CarrierRecord

SERVER = net_pb.CARRIER_TABLE_SOURCE_SERVER
API = net_pb.CARRIER_TABLE_SOURCE_API
INVALID = grpc.StatusCode.INVALID_ARGUMENT
ABORTED = grpc.StatusCode.ABORTED
TZ = "Europe/Berlin"
THU_10 = WED_10 + 86_400.0


def flat_table(days: int = 4, **fields: object) -> net_pb.CarrierTable:
    """One customer level, `standard`: ``days`` carrier days anywhere, Monday to Friday."""
    return net_pb.CarrierTable(
        regions=[net_pb.CarrierRegion(name="de", postal_prefixes=["1", "2"])],
        service_levels=[
            net_pb.ServiceLevel(
                name="standard",
                description="flat rate",
                delivery_days=[1, 2, 3, 4, 5],
                transit=[net_pb.TransitTime(from_region="*", to_region="*", days=days)],
            )
        ],
        **fields,  # type: ignore[arg-type]
    )


def content(table: net_pb.CarrierTable) -> net_pb.CarrierTable:
    """The table without its output-only fields and etag."""
    out = net_pb.CarrierTable()
    out.CopyFrom(table)
    out.ClearField("etag")
    out.ClearField("source")
    out.ClearField("update_time")
    return out


class Client:
    def __init__(self, channel: grpc.Channel, clock: FakeClock) -> None:
        self.inventory = inv_grpc.InventoryServiceStub(channel)
        self.network = net_grpc.NetworkServiceStub(channel)
        self.supply = sup_grpc.SupplyServiceStub(channel)
        self.clock = clock
        self._ids = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}"

    def get(self) -> net_pb.CarrierTable:
        return self.network.GetCarrierTable(net_pb.GetCarrierTableRequest())

    def set(self, table: net_pb.CarrierTable) -> net_pb.CarrierTable:
        return self.network.SetCarrierTable(net_pb.SetCarrierTableRequest(carrier_table=table))

    def reset(self, etag: str = "") -> net_pb.CarrierTable:
        return self.network.ResetCarrierTable(net_pb.ResetCarrierTableRequest(etag=etag))

    def node(self, node_id: str, node_type: int, **fields: object) -> None:
        self.network.UpsertNode(
            net_pb.UpsertNodeRequest(
                node=net_pb.Node(id=node_id, type=node_type, latitude=52.52, longitude=13.40,  # type: ignore[arg-type]
                                 time_zone=TZ, **fields)  # type: ignore[arg-type]
            )
        )  # fmt: skip

    def channel(self, channel_id: str, nodes: list[str]) -> None:
        self.network.UpsertChannel(
            net_pb.UpsertChannelRequest(channel=net_pb.Channel(id=channel_id, nodes=nodes))
        )

    def stock(self, sku: str, node: str, qty: int) -> None:
        self.supply.AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku=sku, node=node, delta=qty)])
        )

    def order(self, channel: str, sku: str, node: str, reservation_id: str | None = None) -> str:
        """Reserve one unit at ``node`` and commit it: an order released by the node."""
        rid = reservation_id or self.new_id("order")
        self.inventory.Reserve(
            inv_pb.ReserveRequest(
                reservation_id=rid,
                channel=channel,
                lines=[inv_pb.LineRequest(sku=sku, quantity=1, node=node)],
                ttl=Duration(seconds=600),
            )
        )
        self.inventory.Commit(inv_pb.CommitRequest(reservation_id=rid))
        return rid

    def ship_date(self, channel: str, sku: str) -> tuple[date, date]:
        """(ship date, promise date) of the `standard` option to Hamburg."""
        (line,) = self.inventory.Quote(
            inv_pb.QuoteRequest(
                channel=channel,
                lines=[inv_pb.QuoteLine(sku=sku, quantity=1)],
                destination=to_hamburg(),
                service_levels=["standard"],
            )
        ).lines
        (option,) = line.options
        return day(option.allocations[0].ship_date), day(option.promise_date)


def serve(backing: Backing, clock: FakeClock) -> ServerThread:
    return ServerThread(store_factory(backing, clock=clock), clock=clock)


@pytest.fixture(scope="module", params=store_params("embedded-pure", "redis", "cluster"))
def backing(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backing:
    return backing_for(request.param, request, tmp_path_factory.mktemp("grpc-network-time"))


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock(WED_10)


@pytest.fixture(scope="module")
def server(backing: Backing, clock: FakeClock) -> Iterator[ServerThread]:
    with serve(backing, clock) as running:
        yield running


@pytest.fixture(scope="module")
def module_client(server: ServerThread, clock: FakeClock) -> Iterator[Client]:
    channel = grpc.insecure_channel(server.target)
    c = Client(channel, clock)
    c.node("dc-1", net_pb.NODE_TYPE_DC)
    c.channel("web", ["dc-1"])
    yield c
    channel.close()


@pytest.fixture
def client(module_client: Client, clock: FakeClock) -> Iterator[Client]:
    """Each test starts on Wednesday 10:00 in Berlin with the server's carrier table
    (only the last test of the module moves the clock on)."""
    clock.now = WED_10
    yield module_client
    clock.now = WED_10
    module_client.reset()


# ------------------------------------------------------------ carrier table


def test_the_servers_own_table_is_in_force_until_one_is_set(client: Client) -> None:
    table = client.get()
    assert table.source == SERVER and not table.HasField("update_time")
    assert content(table) == content(carrier_table_pb(default_carriers(), CarrierRecord()))
    assert [level.name for level in table.service_levels] == ["standard", "express", "transfer"]


def test_a_table_set_over_the_api_round_trips_with_etags(client: Client) -> None:
    before = client.get()
    wanted = flat_table(
        postal_centroids=[net_pb.PostalCentroid(postal_prefix="10", latitude=52.5, longitude=13.4)],
        transfer_service="standard",
    )
    wanted.service_levels.add(name="express", delivery_days=[1, 2, 3, 4, 5, 6], default_days=1,
                              distance_bands=[net_pb.DistanceBand(max_km=300.0, days=0)])  # fmt: skip
    wanted.service_levels.add(name="trucks", default_days=1, internal=True)
    # Without delivery days a level delivers Monday to Friday: answered explicitly.
    expected = content(wanted)
    expected.service_levels[2].delivery_days.extend([1, 2, 3, 4, 5])

    set_ = client.set(wanted)
    assert set_.source == API and set_.etag != before.etag
    assert abs(set_.update_time.ToSeconds() - client.clock.now) < 2
    assert content(set_) == expected
    assert client.get() == set_

    # The same table again writes nothing: same etag.
    assert client.set(wanted).etag == set_.etag
    # Optimistic concurrency: a write based on an older version is refused, nothing changes.
    stale = flat_table(days=9, etag=before.etag)
    error = failure(client.network.SetCarrierTable, net_pb.SetCarrierTableRequest(carrier_table=stale))
    assert (error.code, error.reason) == (ABORTED, "ETAG_MISMATCH")
    assert client.get() == set_
    current = flat_table(days=9, etag=set_.etag)
    replaced = client.set(current)
    assert replaced.etag != set_.etag and replaced.service_levels[0].transit[0].days == 9

    error = failure(client.network.ResetCarrierTable, net_pb.ResetCarrierTableRequest(etag=set_.etag))
    assert (error.code, error.reason) == (ABORTED, "ETAG_MISMATCH")
    reset = client.reset(replaced.etag)
    assert reset.source == SERVER and reset.etag not in (before.etag, set_.etag, replaced.etag)
    assert content(reset) == content(before)


def test_a_bad_table_is_refused_with_every_problem_at_its_field(client: Client) -> None:
    before = client.get()
    bad = net_pb.CarrierTable(
        regions=[
            net_pb.CarrierRegion(name="de", postal_prefixes=["1", "1"]),
            net_pb.CarrierRegion(name="de"),
            net_pb.CarrierRegion(name="bad region"),
        ],
        postal_centroids=[net_pb.PostalCentroid(postal_prefix="10", latitude=95.0)],
        transfer_service="nope",
        service_levels=[
            net_pb.ServiceLevel(
                name="standard",
                delivery_days=[0],
                transit=[net_pb.TransitTime(from_region="mars", to_region="de", days=61)],
            ),
            net_pb.ServiceLevel(name="standard", distance_bands=[net_pb.DistanceBand(max_km=-1.0, days=1)]),
            net_pb.ServiceLevel(name="Express"),
        ],
        etag="W/1",
    )
    error = failure(client.network.SetCarrierTable, net_pb.SetCarrierTableRequest(carrier_table=bad))
    assert (error.code, error.reason) == (INVALID, "INVALID_CARRIERS")
    assert sorted(error.fields) == sorted([
        "carrier_table.regions[1].name",  # listed twice
        "carrier_table.regions[0].postal_prefixes[1]",  # prefix in two places
        "carrier_table.regions[2].name",
        "carrier_table.postal_centroids[0]",
        "carrier_table.service_levels[0].delivery_days[0]",
        "carrier_table.service_levels[0].transit[0].from_region",
        "carrier_table.service_levels[0].transit[0].days",
        "carrier_table.service_levels[0]",  # left without a usable transit entry
        "carrier_table.service_levels[1].name",  # defined twice
        "carrier_table.service_levels[1].distance_bands[0].max_km",
        "carrier_table.service_levels[1]",  # then it has no transit at all
        "carrier_table.service_levels[2].name",
        "carrier_table.service_levels[2]",
        "carrier_table.transfer_service",
        "carrier_table.etag",
    ])  # fmt: skip
    error = failure(client.network.SetCarrierTable, net_pb.SetCarrierTableRequest())
    assert (error.code, error.fields) == (INVALID, ("carrier_table",))
    error = failure(client.network.ResetCarrierTable, net_pb.ResetCarrierTableRequest(etag="x"))
    assert (error.code, error.fields) == (INVALID, ("etag",))
    assert client.get() == before, "nothing changed"


def test_quotes_follow_the_table_set_over_the_api(client: Client) -> None:
    sku = client.new_id("carrier-sku")
    client.stock(sku, "dc-1", 5)
    # The sample table: 255 km is 2 days, Wednesday -> Friday.
    assert client.ship_date("web", sku) == (date(2033, 6, 15), date(2033, 6, 17))
    client.set(flat_table(days=4))
    # 4 carrier days from Wednesday: Thursday, Friday, Monday, Tuesday.
    assert client.ship_date("web", sku) == (date(2033, 6, 15), date(2033, 6, 21))
    (line,) = client.inventory.Quote(
        inv_pb.QuoteRequest(channel="web", lines=[inv_pb.QuoteLine(sku=sku, quantity=1)],
                            destination=to_hamburg())
    ).lines  # fmt: skip
    assert [o.service_level for o in line.options] == ["standard"], "express is gone with the old table"
    client.reset()
    assert client.ship_date("web", sku) == (date(2033, 6, 15), date(2033, 6, 17))


# Redis kinds only: one process owns an embedded store (its restart is
# test_embedded_state_survives_a_restart).
@pytest.mark.parametrize("backing", store_params("redis", "cluster"), indirect=True)
def test_a_table_set_through_one_process_reaches_the_others(backing: Backing, clock: FakeClock) -> None:
    """Another engine process on the same Redis sees the table at once.

    On a namespace of its own: the module's shares one, and a table once set
    leaves its reset time behind for the tests that expect none was ever set."""
    fresh = dataclasses.replace(backing, namespace=unique_namespace())
    clock.now = WED_10
    with serve(fresh, clock) as one:
        here_channel = grpc.insecure_channel(one.target)
        here = Client(here_channel, clock)
        here.node("dc-1", net_pb.NODE_TYPE_DC)
        here.channel("web", ["dc-1"])
        sku = here.new_id("carrier-sku")
        here.stock(sku, "dc-1", 5)
        set_ = here.set(flat_table(days=4))
        with serve(fresh, clock) as other:  # started after the stock: its view begins with it
            there_channel = grpc.insecure_channel(other.target)
            there = Client(there_channel, clock)
            assert there.get() == set_
            assert there.ship_date("web", sku) == (date(2033, 6, 15), date(2033, 6, 21))
            # And back: a reset there is seen here.
            there.reset()
            assert here.get().source == SERVER
            assert here.ship_date("web", sku) == (date(2033, 6, 15), date(2033, 6, 17))
            there_channel.close()
        here_channel.close()


# ----------------------------------------------------------- daily capacity


def test_a_node_at_its_daily_capacity_releases_the_next_working_day(client: Client) -> None:
    client.node("dc-cap", net_pb.NODE_TYPE_DC, daily_capacity=2)
    client.channel("marketplace:cap", ["dc-cap"])
    sku = client.new_id("cap-sku")
    client.stock(sku, "dc-cap", 10)
    assert client.ship_date("marketplace:cap", sku) == (date(2033, 6, 15), date(2033, 6, 17))
    first = client.order("marketplace:cap", sku, "dc-cap")
    assert client.ship_date("marketplace:cap", sku)[0] == date(2033, 6, 15), "1 of 2 used"
    # A retried commit is the same order: it does not count again.
    client.inventory.Commit(inv_pb.CommitRequest(reservation_id=first))
    assert client.ship_date("marketplace:cap", sku)[0] == date(2033, 6, 15), "still 1 of 2"
    # A hold is not an order.
    client.inventory.Reserve(
        inv_pb.ReserveRequest(reservation_id=client.new_id("hold"), channel="marketplace:cap",
                              lines=[inv_pb.LineRequest(sku=sku, quantity=1)], ttl=Duration(seconds=600))
    )  # fmt: skip
    assert client.ship_date("marketplace:cap", sku)[0] == date(2033, 6, 15)
    client.order("marketplace:cap", sku, "dc-cap")
    # Full today: released Thursday, delivered Monday.
    assert client.ship_date("marketplace:cap", sku) == (date(2033, 6, 16), date(2033, 6, 20))
    # Advisory: orders are still taken at a full node.
    client.order("marketplace:cap", sku, "dc-cap")


def test_find_in_stores_rolls_pickup_at_a_full_store(client: Client) -> None:
    client.node("store-cap", net_pb.NODE_TYPE_STORE, daily_capacity=1)
    client.node("store-near", net_pb.NODE_TYPE_STORE, daily_capacity=1)
    client.channel("marketplace:cappos", ["store-cap", "store-near"])
    sku = client.new_id("cap-sku")
    client.stock(sku, "store-cap", 5)
    client.stock(sku, "store-near", 5)

    def ready() -> tuple[datetime, datetime]:
        found = client.inventory.FindInStores(
            inv_pb.FindInStoresRequest(channel="marketplace:cappos", store="store-cap", sku=sku)
        )
        (near,) = found.nearby_stores
        return local(found.store.pickup_time), local(near.pickup_time)

    # Two hours after the order, at both.
    wed_12 = datetime(2033, 6, 15, 12, 0, tzinfo=BERLIN)
    assert ready() == (wed_12, wed_12)
    client.order("marketplace:cappos", sku, "store-cap")
    # Full: prepared from Thursday's 09:00 opening; the other store is not.
    assert ready() == (datetime(2033, 6, 16, 11, 0, tzinfo=BERLIN), wed_12)


def test_the_next_day_has_its_own_capacity(client: Client) -> None:
    """Last of the module: the store's clock never goes back (it dates holds),
    so once it saw Thursday, orders placed "on Wednesday" would count on Thursday."""
    client.node("dc-day", net_pb.NODE_TYPE_DC, daily_capacity=1)
    client.channel("marketplace:day", ["dc-day"])
    sku = client.new_id("cap-sku")
    client.stock(sku, "dc-day", 10)
    client.order("marketplace:day", sku, "dc-day")
    assert client.ship_date("marketplace:day", sku)[0] == date(2033, 6, 16)
    client.clock.now = THU_10
    # Thursday's count starts at 0: released today, delivered Monday (2 days).
    assert client.ship_date("marketplace:day", sku) == (date(2033, 6, 16), date(2033, 6, 20))
    client.order("marketplace:day", sku, "dc-day")
    assert client.ship_date("marketplace:day", sku) == (date(2033, 6, 17), date(2033, 6, 21))


# ------------------------------------------------------ embedded persistence


@pytest.mark.parametrize("with_snapshot", [False, True], ids=["journal", "snapshot"])
def test_embedded_state_survives_a_restart(tmp_path: Path, with_snapshot: bool) -> None:
    backing = Backing("embedded-pure", data_dir=tmp_path / "data")
    clock = FakeClock(WED_10)
    with serve(backing, clock) as first:
        channel = grpc.insecure_channel(first.target)
        c = Client(channel, clock)
        c.node("dc-1", net_pb.NODE_TYPE_DC, daily_capacity=2)
        c.channel("web", ["dc-1"])
        sku = "SKU-1"
        c.stock(sku, "dc-1", 10)
        set_ = c.set(flat_table(days=4))
        c.order("web", sku, "dc-1")
        if with_snapshot:
            assert first.store is not None
            first.run(first.store.snapshot())  # type: ignore[attr-defined]
        c.order("web", sku, "dc-1")
        assert c.ship_date("web", sku) == (date(2033, 6, 16), date(2033, 6, 22))
        channel.close()
    with serve(backing, clock) as again:
        channel = grpc.insecure_channel(again.target)
        c = Client(channel, clock)
        assert c.get() == set_
        # Both orders still count: Thursday + 4 carrier days = Wednesday.
        assert c.ship_date("web", sku) == (date(2033, 6, 16), date(2033, 6, 22))
        channel.close()


# --------------------------------------------------------------------- CLI


def test_cli_carriers_get_set_reset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    backing = Backing("embedded-pure", data_dir=None)
    with serve(backing, FakeClock(WED_10)) as server:
        assert main(["carriers", "get", "--target", server.target]) == 0
        printed = capsys.readouterr().out
        assert printed.startswith("# etag: 0\n# source: server\n")
        # What `get` prints is a carriers file: edit it and send it back.
        edited = tmp_path / "carriers.yaml"
        edited.write_text(printed.replace("name: express", "name: overnight"))
        assert main(["carriers", "set", str(edited), "--etag", "0", "--target", server.target]) == 0
        assert capsys.readouterr().out == "carrier table set: etag 1, 3 service levels\n"
        assert main(["carriers", "get", "--json", "--target", server.target]) == 0
        table = json.loads(capsys.readouterr().out)
        assert table["source"] == "CARRIER_TABLE_SOURCE_API"
        assert [level["name"] for level in table["service_levels"]] == ["standard", "overnight", "transfer"]
        # A stale etag: the server refuses, the CLI says why.
        assert main(["carriers", "set", str(edited), "--etag", "0", "--target", server.target]) == 2
        assert "ETAG_MISMATCH" in capsys.readouterr().err
        assert main(["carriers", "reset", "--target", server.target]) == 0
        assert "# source: server" in capsys.readouterr().out
        # A bad file is refused before anything is sent, with its own paths.
        edited.write_text("service_levels: [{name: standard, default_days: 99}]\n")
        with pytest.raises(SystemExit, match=r"service_levels\[0\]\.default_days"):
            main(["carriers", "set", str(edited), "--target", server.target])
