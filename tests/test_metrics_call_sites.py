"""Domain metrics move where the engine answers: a refused reserve, a supply change leaving a row short."""

from __future__ import annotations

import grpc
from google.protobuf.duration_pb2 import Duration
from prometheus_client import REGISTRY
from store_helpers import Backing, store_factory

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
