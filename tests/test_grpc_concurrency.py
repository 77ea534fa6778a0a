"""Never sell a unit twice: 200 clients race for the 50 units of one SKU over real gRPC.

Each client has its own channel (its own TCP connection) and reserves one unit
at the same moment. Exactly 50 must win; the other 150 must get OUT_OF_STOCK
(no other error); the counters, the sum of the winners' holds and the audit
must agree. It runs on each store: the embedded one journals to disk with fsync,
so calls interleave at their durability waits as in production; the Redis ones
run on a real redis-server and a real 3-master Redis Cluster.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import uvloop
from google.protobuf.duration_pb2 import Duration
from store_helpers import backing_for, store_factory, store_params

from engine._proto.inventory.v1 import admin_service_pb2 as admin_pb
from engine._proto.inventory.v1 import admin_service_pb2_grpc as admin_grpc
from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.service.errors import decode_error
from engine.service.testing import ServerThread

CLIENTS = 200
UNITS = 50
SKU = "HOT-SKU"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


@pytest.fixture(params=store_params("embedded-pure", "redis", "cluster", ids={"embedded-pure": "embedded"}))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(store_factory(backing_for(request.param, request, tmp_path / "data"))) as running:
        yield running


async def _race(target: str) -> tuple[list[inv_pb.Reservation], list[grpc.aio.AioRpcError]]:
    # A local subchannel pool per channel: otherwise gRPC shares one TCP
    # connection among all channels to the same target.
    channels = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(CLIENTS)]
    try:
        async with grpc.aio.insecure_channel(target) as setup:
            await net_grpc.NetworkServiceStub(setup).UpsertNode(
                net_pb.UpsertNodeRequest(node=net_pb.Node(id="dc-1", type=net_pb.NODE_TYPE_DC))
            )
            await net_grpc.NetworkServiceStub(setup).UpsertChannel(
                net_pb.UpsertChannelRequest(channel=net_pb.Channel(id="web", nodes=["dc-1"]))
            )
            await sup_grpc.SupplyServiceStub(setup).AdjustStock(
                sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku=SKU, node="dc-1", delta=UNITS)])
            )
        # Connect every channel first, so the race is between calls, not handshakes.
        await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), 20) for ch in channels))
        start = asyncio.Event()

        async def client(i: int, channel: grpc.aio.Channel) -> inv_pb.Reservation | grpc.aio.AioRpcError:
            request = inv_pb.ReserveRequest(
                reservation_id=f"cart-{i:03d}",
                channel="web",
                lines=[inv_pb.LineRequest(sku=SKU, quantity=1)],
                ttl=Duration(seconds=600),
            )
            stub = inv_grpc.InventoryServiceStub(channel)
            await start.wait()
            try:
                return await stub.Reserve(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc

        tasks = [asyncio.create_task(client(i, ch)) for i, ch in enumerate(channels)]
        await asyncio.sleep(0)
        start.set()
        results = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))
    won = [r for r in results if isinstance(r, inv_pb.Reservation)]
    lost = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    return won, lost


async def _check(target: str, won: list[inv_pb.Reservation]) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        inventory = inv_grpc.InventoryServiceStub(channel)
        availability = await inventory.GetAvailability(
            inv_pb.GetAvailabilityRequest(skus=[SKU], channel="web", include_nodes=True)
        )
        node = availability.availabilities[0].nodes[0]
        assert (node.on_hand, node.reserved, node.committed, node.atp) == (UNITS, UNITS, 0, 0)
        stored = await asyncio.gather(
            *(
                inventory.GetReservation(inv_pb.GetReservationRequest(reservation_id=r.reservation_id))
                for r in won
            )
        )
        assert sum(line.allocated_quantity for r in stored for line in r.lines) == UNITS
        assert all(r.state == inv_pb.RESERVATION_STATE_HELD for r in stored)
        audit = await admin_grpc.AdminServiceStub(channel).Audit(admin_pb.AuditRequest())
        assert audit.ok, list(audit.violations)
        assert audit.reservation_count == UNITS


def test_200_clients_50_units_exactly_50_holds(server: ServerThread) -> None:
    won, lost = uvloop.run(_race(server.target))
    assert len(won) == UNITS
    assert len({r.reservation_id for r in won}) == UNITS
    assert all(r.lines[0].allocated_quantity == 1 for r in won)
    outcomes = Counter((e.code(), decode_error(e).reason) for e in lost)
    assert outcomes == Counter({(grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_STOCK"): CLIENTS - UNITS})
    for error in lost:
        assert decode_error(error).shortfalls[0].available == 0
    uvloop.run(_check(server.target, won))
