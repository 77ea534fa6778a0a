"""Domain metrics move where the engine answers: a refused reserve, a supply change leaving a row short."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from prometheus_client import REGISTRY
from store_helpers import Backing, backing_for, store_factory, store_params

from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.service.testing import ServerThread

TTL = Duration(seconds=600)


def total(metric: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    value = 0.0
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                value += sample.value
    return value


def test_out_of_stock_refusals_and_new_shortages_are_counted() -> None:
    with ServerThread(store_factory(Backing("embedded-fast", data_dir=None))) as server:
        channel = grpc.insecure_channel(server.target)
        network = net_grpc.NetworkServiceStub(channel)
        network.UpsertNode(net_pb.UpsertNodeRequest(node=net_pb.Node(id="dc-1", type=net_pb.NODE_TYPE_DC)))
        network.UpsertChannel(net_pb.UpsertChannelRequest(channel=net_pb.Channel(id="web", nodes=["dc-1"])))
        supply = sup_grpc.SupplyServiceStub(channel)
        supply.AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku="S", node="dc-1", delta=2)])
        )
        inventory = inv_grpc.InventoryServiceStub(channel)
        inventory.Reserve(
            inv_pb.ReserveRequest(
                reservation_id="c1", channel="web", lines=[inv_pb.LineRequest(sku="S", quantity=2)], ttl=TTL
            )
        )

        refused_before = total("inventory_reservations_total", outcome="out_of_stock")
        lines_before = total("inventory_out_of_stock_rejections_total")
        try:
            inventory.Reserve(
                inv_pb.ReserveRequest(
                    reservation_id="c2",
                    channel="web",
                    lines=[inv_pb.LineRequest(sku="S", quantity=1)],
                    ttl=TTL,
                )
            )
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert total("inventory_reservations_total", outcome="out_of_stock") == refused_before + 1
        assert total("inventory_out_of_stock_rejections_total") == lines_before + 1

        shortages_before = total("inventory_shortages_created_total")
        # A count of 1 under 2 held units: a shortage, reported and counted.
        supply.SetStock(
            sup_pb.SetStockRequest(changes=[sup_pb.StockCount(sku="S", node="dc-1", on_hand=1, version=5)])
        )
        assert total("inventory_shortages_created_total") == shortages_before + 1
        channel.close()


@pytest.fixture(params=store_params("embedded-fast", "redis"))
def backing(request: pytest.FixtureRequest, tmp_path: Path) -> Backing:
    return backing_for(request.param, request, tmp_path / "data")


def _reserve(
    inventory: inv_grpc.InventoryServiceStub, rid: str, sku: str, qty: int, ttl_s: int = 600
) -> None:
    inventory.Reserve(
        inv_pb.ReserveRequest(
            reservation_id=rid,
            channel="web",
            lines=[inv_pb.LineRequest(sku=sku, quantity=qty)],
            ttl=Duration(seconds=ttl_s),
        )
    )


def test_reservation_outcomes_are_counted_once_where_they_happen(backing: Backing) -> None:
    with ServerThread(store_factory(backing)) as server:
        channel = grpc.insecure_channel(server.target)
        network = net_grpc.NetworkServiceStub(channel)
        network.UpsertNode(net_pb.UpsertNodeRequest(node=net_pb.Node(id="dc-1", type=net_pb.NODE_TYPE_DC)))
        network.UpsertChannel(net_pb.UpsertChannelRequest(channel=net_pb.Channel(id="web", nodes=["dc-1"])))
        sup_grpc.SupplyServiceStub(channel).AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku="M", node="dc-1", delta=20)])
        )
        inventory = inv_grpc.InventoryServiceStub(channel)

        def outcome(name: str) -> float:
            return total("inventory_reservations_total", channel="web", outcome=name)

        before = {name: outcome(name) for name in ("held", "committed", "fulfilled", "released", "expired")}
        units_before = total("inventory_reserved_units_total", channel="web")
        fsyncs_before = total("inventory_journal_fsync_seconds_count")

        _reserve(inventory, "m-1", "M", 3)
        _reserve(inventory, "m-1", "M", 3)  # a replay: no second hold, not counted
        _reserve(inventory, "m-2", "M", 2)
        assert outcome("held") == before["held"] + 2
        assert total("inventory_reserved_units_total", channel="web") == units_before + 5

        inventory.Commit(inv_pb.CommitRequest(reservation_id="m-1"))
        inventory.Fulfill(inv_pb.FulfillRequest(reservation_id="m-1"))
        inventory.Release(inv_pb.ReleaseRequest(reservation_id="m-2"))
        assert outcome("committed") == before["committed"] + 1
        assert outcome("fulfilled") == before["fulfilled"] + 1
        assert outcome("released") == before["released"] + 1

        # A hold left to expire is counted by the sweeper; nothing else touches
        # its SKU meanwhile (on Redis, a script that did would expire it lazily).
        sup_grpc.SupplyServiceStub(channel).AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku="E", node="dc-1", delta=1)])
        )
        _reserve(inventory, "m-3", "E", 1, ttl_s=1)
        deadline = time.monotonic() + 5.0
        while outcome("expired") < before["expired"] + 1:
            assert time.monotonic() < deadline, "the expired hold was not counted"
            time.sleep(0.05)
        assert outcome("expired") == before["expired"] + 1
        # Another, read as soon as it is due: the read's script (or the sweeper,
        # whichever comes first) expires it, and it is counted exactly once.
        _reserve(inventory, "m-4", "E", 1, ttl_s=1)
        get = inv_pb.GetReservationRequest(reservation_id="m-4")
        while inventory.GetReservation(get).state != inv_pb.RESERVATION_STATE_EXPIRED:
            assert time.monotonic() < deadline + 5.0, "the second hold did not expire"
            time.sleep(0.01)
        while outcome("expired") < before["expired"] + 2:
            assert time.monotonic() < deadline + 10.0, "the second expired hold was not counted"
            time.sleep(0.05)
        time.sleep(0.5)  # a few more sweeps: nothing is counted twice
        assert outcome("expired") == before["expired"] + 2
        # Both stores count a reservation whose first line was held until the
        # end (Redis cannot see across the shards of its lines): one whose first
        # line was released before the rest expired is not counted, in either.
        sup_grpc.SupplyServiceStub(channel).AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku="F", node="dc-1", delta=1)])
        )
        inventory.Reserve(
            inv_pb.ReserveRequest(
                reservation_id="m-5",
                channel="web",
                lines=[inv_pb.LineRequest(sku="F", quantity=1), inv_pb.LineRequest(sku="E", quantity=1)],
                ttl=Duration(seconds=1),
            )
        )
        inventory.Release(inv_pb.ReleaseRequest(reservation_id="m-5", line_indexes=[0]))
        get = inv_pb.GetReservationRequest(reservation_id="m-5")
        while inventory.GetReservation(get).state != inv_pb.RESERVATION_STATE_EXPIRED:
            assert time.monotonic() < deadline + 10.0, "the third hold did not expire"
            time.sleep(0.01)
        time.sleep(0.5)  # sweeps that would count it
        assert outcome("expired") == before["expired"] + 2
        if backing.kind.startswith("embedded"):
            assert total("inventory_journal_fsync_seconds_count") > fsyncs_before
        channel.close()
