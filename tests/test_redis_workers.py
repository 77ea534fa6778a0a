"""``serve --workers 2`` on Redis and on the Cluster: 200 clients, 50 units, exactly 50 holds.

Two real worker processes share one port (SO_REUSEPORT) and one truth in
Redis. Every client has its own connection, so the kernel spreads them over
both workers; the generated request ids (a random prefix per process) prove
that both answered. Exactly 50 win, the other 150 get OUT_OF_STOCK, and the
counters, the holds and the audit agree whichever worker is asked.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
import uvloop
from google.protobuf.duration_pb2 import Duration
from store_helpers import backing_for, store_params

from engine._proto.inventory.v1 import admin_service_pb2 as admin_pb
from engine._proto.inventory.v1 import admin_service_pb2_grpc as admin_grpc
from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine._proto.inventory.v1 import network_service_pb2 as net_pb
from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
from engine._proto.inventory.v1 import supply_service_pb2 as sup_pb
from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc
from engine.launcher import free_port, wait_serving
from engine.service.errors import decode_error

CLIENTS = 200
UNITS = 50
SKU = "HOT-SKU"
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
WORKERS = 2


@pytest.fixture(params=store_params("redis", "cluster"))
def target(request: pytest.FixtureRequest) -> Iterator[str]:
    backing = backing_for(request.param, request, None)
    store_args = (
        ["--redis", str(backing.redis_url)]
        if request.param == "redis"
        else ["--redis-cluster", ",".join(backing.cluster_nodes or ())]
    )
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "engine.cli", "--log-level", "WARNING", "serve",
            "--listen", f"127.0.0.1:{port}", "--metrics-port", "0",
            "--workers", str(WORKERS), "--redis-namespace", str(backing.namespace), *store_args,
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        asyncio.run(wait_serving(f"127.0.0.1:{port}", process=process))
        asyncio.run(_wait_all_workers(f"127.0.0.1:{port}"))
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


async def _wait_all_workers(target: str, timeout_s: float = 60.0) -> None:
    """Until every worker answers: health says SERVING once the first one listens."""
    seen: set[str] = set()
    deadline = asyncio.get_running_loop().time() + timeout_s
    while len(seen) < WORKERS:
        assert asyncio.get_running_loop().time() < deadline, f"only {len(seen)} worker(s) answered"
        async with grpc.aio.insecure_channel(target, options=OWN_CONNECTION) as channel:
            call = admin_grpc.AdminServiceStub(channel).Noop(admin_pb.NoopRequest(), timeout=10)
            await call
            trailers = dict(await call.trailing_metadata() or ())
            seen.add(str(trailers["x-request-id"]).rsplit("-", 1)[0])


async def _setup(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        network = net_grpc.NetworkServiceStub(channel)
        await network.UpsertNode(
            net_pb.UpsertNodeRequest(node=net_pb.Node(id="dc-1", type=net_pb.NODE_TYPE_DC))
        )
        await network.UpsertChannel(
            net_pb.UpsertChannelRequest(channel=net_pb.Channel(id="web", nodes=["dc-1"]))
        )
        await sup_grpc.SupplyServiceStub(channel).AdjustStock(
            sup_pb.AdjustStockRequest(changes=[sup_pb.StockAdjustment(sku=SKU, node="dc-1", delta=UNITS)])
        )


async def _race(target: str) -> list[tuple[inv_pb.Reservation | grpc.aio.AioRpcError, str]]:
    # A local subchannel pool per channel: otherwise gRPC shares one TCP
    # connection among all channels to the same target.
    channels = [grpc.aio.insecure_channel(target, options=OWN_CONNECTION) for _ in range(CLIENTS)]
    try:
        await asyncio.gather(*(asyncio.wait_for(ch.channel_ready(), 20) for ch in channels))
        start = asyncio.Event()

        async def client(
            i: int, channel: grpc.aio.Channel
        ) -> tuple[inv_pb.Reservation | grpc.aio.AioRpcError, str]:
            stub = inv_grpc.InventoryServiceStub(channel)
            request = inv_pb.ReserveRequest(
                reservation_id=f"cart-{i:03d}",
                channel="web",
                lines=[inv_pb.LineRequest(sku=SKU, quantity=1)],
                ttl=Duration(seconds=600),
            )
            await start.wait()
            call = stub.Reserve(request, timeout=30)
            result: inv_pb.Reservation | grpc.aio.AioRpcError
            try:
                result = await call
            except grpc.aio.AioRpcError as exc:
                result = exc
            trailers = dict(await call.trailing_metadata() or ())
            return result, str(trailers.get("x-request-id", ""))

        tasks = [asyncio.create_task(client(i, ch)) for i, ch in enumerate(channels)]
        await asyncio.sleep(0)
        start.set()
        return await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(ch.close() for ch in channels))


async def _check(target: str, won: list[inv_pb.Reservation]) -> None:
    # Fresh connections: each may land on either worker, and both must agree.
    for _ in range(4):
        async with grpc.aio.insecure_channel(target) as channel:
            inventory = inv_grpc.InventoryServiceStub(channel)
            stored = await asyncio.gather(
                *(
                    inventory.GetReservation(inv_pb.GetReservationRequest(reservation_id=r.reservation_id))
                    for r in won
                )
            )
            assert all(r.state == inv_pb.RESERVATION_STATE_HELD for r in stored)
            assert sum(line.allocated_quantity for r in stored for line in r.lines) == UNITS
            audit = await admin_grpc.AdminServiceStub(channel).Audit(admin_pb.AuditRequest())
            assert audit.ok, list(audit.violations)
            assert audit.reservation_count == UNITS
            levels = [row for row in audit.shortages]
            assert levels == []


def test_two_workers_200_clients_50_units_exactly_50_holds(target: str) -> None:
    uvloop.run(_setup(target))
    results = uvloop.run(_race(target))
    won = [r for r, _ in results if isinstance(r, inv_pb.Reservation)]
    lost = [r for r, _ in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(won) == UNITS
    assert len({r.reservation_id for r in won}) == UNITS
    outcomes = Counter((e.code(), decode_error(e).reason) for e in lost)
    assert outcomes == Counter({(grpc.StatusCode.FAILED_PRECONDITION, "OUT_OF_STOCK"): CLIENTS - UNITS})
    # Request ids are "<process prefix>-<counter>": both workers answered.
    processes = {request_id.rsplit("-", 1)[0] for _, request_id in results}
    assert len(processes) == WORKERS, processes
    uvloop.run(_check(target, won))
