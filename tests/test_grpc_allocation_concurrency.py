"""Channel allocation under a race: 200 gRPC clients from three channels with
SHARE, CAP and PROTECT rules reserve one hot SKU at the same moment.

dc-1 has 100 units, store-1 has 20. ``web`` may take 40% of DC stock and never
a store's last 5 units (kept for ``pos``); ``marketplace:demo`` is capped at 25
units; ``pos`` has no rule. Demand exceeds every allowance, so the end state is
exact: web holds 40 at the DC, the marketplace 25, the store's 20 units are all
held with at least 5 of them by pos, every other call is OUT_OF_STOCK, and the
audit (channel counters included) is clean. On the embedded store and on Redis.
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
SKU = "HOT-SKU"
CHANNELS = ("web", "marketplace:demo", "pos")
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
Rule = net_pb.AllocationRule


@pytest.fixture(params=store_params("embedded-fast", "redis", ids={"embedded-fast": "embedded"}))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(store_factory(backing_for(request.param, request, tmp_path / "data"))) as running:
        yield running


async def _setup(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as setup:
        network = net_grpc.NetworkServiceStub(setup)
        await network.UpsertNode(
            net_pb.UpsertNodeRequest(node=net_pb.Node(id="dc-1", type=net_pb.NODE_TYPE_DC))
        )
        await network.UpsertNode(
            net_pb.UpsertNodeRequest(node=net_pb.Node(id="store-1", type=net_pb.NODE_TYPE_STORE))
        )
        channels = [
            net_pb.Channel(
                id="web",
                nodes=["dc-1", "store-1"],
                allocation_rules=[
                    Rule(kind=net_pb.ALLOCATION_RULE_KIND_SHARE, value=40, node_type=net_pb.NODE_TYPE_DC),
                    Rule(
                        kind=net_pb.ALLOCATION_RULE_KIND_PROTECT,
                        value=5,
                        node_type=net_pb.NODE_TYPE_STORE,
                        protects="pos",
                    ),
                ],
            ),
            net_pb.Channel(
                id="marketplace:demo",
                nodes=["dc-1"],
                allocation_rules=[Rule(kind=net_pb.ALLOCATION_RULE_KIND_CAP, value=25)],
            ),
            net_pb.Channel(id="pos", nodes=["store-1"]),
        ]
        for channel in channels:
            await network.UpsertChannel(net_pb.UpsertChannelRequest(channel=channel))
        await sup_grpc.SupplyServiceStub(setup).AdjustStock(
            sup_pb.AdjustStockRequest(
                changes=[
                    sup_pb.StockAdjustment(sku=SKU, node="dc-1", delta=100),
                    sup_pb.StockAdjustment(sku=SKU, node="store-1", delta=20),
                ]
            )
        )


async def _race(target: str) -> list[tuple[str, inv_pb.Reservation | grpc.aio.AioRpcError]]:
    await _setup(target)
    connections = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(CLIENTS)]
    try:
        await asyncio.gather(*(asyncio.wait_for(c.channel_ready(), 20) for c in connections))
        start = asyncio.Event()

        async def client(i: int, connection: grpc.aio.Channel) -> inv_pb.Reservation | grpc.aio.AioRpcError:
            request = inv_pb.ReserveRequest(
                reservation_id=f"cart-{i:03d}",
                channel=CHANNELS[i % 3],
                lines=[inv_pb.LineRequest(sku=SKU, quantity=1)],
                ttl=Duration(seconds=600),
            )
            stub = inv_grpc.InventoryServiceStub(connection)
            await start.wait()
            try:
                return await stub.Reserve(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                return exc

        tasks = [asyncio.create_task(client(i, c)) for i, c in enumerate(connections)]
        await asyncio.sleep(0)
        start.set()
        results = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    return [(CHANNELS[i % 3], r) for i, r in enumerate(results)]


async def _after(target: str) -> tuple[dict[str, int], bool, list[str]]:
    async with grpc.aio.insecure_channel(target) as connection:
        inventory = inv_grpc.InventoryServiceStub(connection)
        seen = {}
        for channel in CHANNELS:
            reply = await inventory.GetAvailability(
                inv_pb.GetAvailabilityRequest(skus=[SKU], channel=channel)
            )
            seen[channel] = reply.availabilities[0].atp
        audit = await admin_grpc.AdminServiceStub(connection).Audit(admin_pb.AuditRequest())
        return seen, audit.ok, list(audit.violations)


def test_no_channel_exceeds_its_rules_under_200_concurrent_clients(server: ServerThread) -> None:
    results = uvloop.run(_race(server.target))
    taken: Counter[tuple[str, str]] = Counter()
    errors: Counter[tuple[grpc.StatusCode, str]] = Counter()
    for channel, result in results:
        if isinstance(result, grpc.aio.AioRpcError):
            errors[(result.code(), decode_error(result).reason)] += 1
            continue
        for allocation in result.lines[0].allocations:
            taken[(channel, allocation.node)] += allocation.quantity
    # Every refusal is OUT_OF_STOCK, nothing else.
    assert set(errors) <= {(grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_STOCK")}
    # Shares and caps are met exactly (demand exceeds them) and never exceeded.
    assert taken[("web", "dc-1")] == 40
    assert taken[("marketplace:demo", "dc-1")] == 25
    # The store's units are all sold, never more; web never took the protected 5.
    assert taken[("web", "store-1")] + taken[("pos", "store-1")] == 20
    assert taken[("web", "store-1")] <= 15
    assert taken[("pos", "store-1")] >= 5
    assert sum(taken.values()) + sum(errors.values()) == CLIENTS
    seen, ok, violations = uvloop.run(_after(server.target))
    assert seen == {"web": 0, "marketplace:demo": 0, "pos": 0}
    assert ok, violations
