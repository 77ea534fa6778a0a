"""`inventory-engine bench flash-sale`: one hot SKU, 20x more buyers than units, on Redis.

One run starts its own ``redis-server`` (AOF on, as in production) and an
engine server process on the Redis store, puts ``stock`` units of one SKU in
one DC, and lets ``buyers_per_unit * stock`` buyers reserve one unit each, with
``concurrency`` calls in flight from one asyncio client. Noop phases of the same
length run on the same server stack just before and just after the sale, so
``reject_rps`` (the rate of answers after the last unit was sold, nearly all
sold-out rejections) compares with ``noop_rps`` under the same neighbours.

A reject is an error answer, and gRPC's error path costs more than an empty
reply by itself (a status trailer carrying google.rpc.Status details instead of
a message; an exception on the client). So failing no-op phases run beside the
no-op ones: ``AdminService/Noop`` with ``out_of_stock_sku`` set does nothing and
answers exactly as a sold-out Reserve is refused, building the same status.
``error_noop_ratio`` (``error_noop_rps / noop_rps``) is what answering with a
refusal costs; ``reject_to_error_noop`` is what a reject's own work (the view,
the existence check in Redis) leaves of it. Phases run at different moments
of a noisy machine, so the latter can come out a little above 1.

Correctness is checked, not assumed: ``succeeded`` counts the buyers told they
have a unit, ``oversold`` is what the store's counters show beyond its stock
(``reserved + committed - on_hand``) plus any success beyond ``stock``, and
the run ends with the engine's audit. The engine's CPU per call in each kind of
phase says where a reject's cost goes. Every buyer's request is pre-serialized
and replies are not parsed, so the client costs the same per call in both
kinds of phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

from engine.bench.rpc import tree_cpu_seconds
from engine.launcher import free_port, start_server, wait_serving

__all__ = ["run"]

SKU = "FLASH-0001"
NODE = "dc-flash"
# One timed phase of calls: ((finish time, succeeded) per call, elapsed s, server CPU s).
Phase = tuple[list[tuple[float, bool]], float, float]


async def _setup(target: str, stock: int) -> None:
    import grpc

    from engine._proto.inventory.v1 import network_service_pb2 as net
    from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
    from engine._proto.inventory.v1 import supply_service_pb2 as sup
    from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        network = net_grpc.NetworkServiceStub(channel)
        await network.UpsertNode(net.UpsertNodeRequest(node=net.Node(id=NODE, type=net.NODE_TYPE_DC)))
        await network.UpsertChannel(net.UpsertChannelRequest(channel=net.Channel(id="web", nodes=[NODE])))
        await sup_grpc.SupplyServiceStub(channel).SetStock(
            sup.SetStockRequest(changes=[sup.StockCount(sku=SKU, node=NODE, on_hand=stock, version=1)])
        )


async def _drive(
    call: Callable[[bytes], Any], payloads: list[bytes], concurrency: int
) -> tuple[list[tuple[float, bool]], float]:
    """Send every payload; returns (completion time, succeeded) per call and the elapsed time."""
    import grpc

    done: list[tuple[float, bool]] = []
    position = 0

    async def worker() -> None:
        nonlocal position
        while position < len(payloads):
            body = payloads[position]
            position += 1
            try:
                await call(body)
                ok = True
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
                ok = False
            done.append((time.perf_counter(), ok))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done, time.perf_counter() - t0


async def _bench(target: str, stock: int, buyers: int, concurrency: int, server_pid: int) -> dict[str, Any]:
    import grpc
    from google.protobuf.duration_pb2 import Duration

    from engine._proto.inventory.v1 import admin_service_pb2 as admin
    from engine._proto.inventory.v1 import admin_service_pb2_grpc as admin_grpc
    from engine._proto.inventory.v1 import inventory_service_pb2 as inv
    from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc

    await _setup(target, stock)
    reserves = [
        inv.ReserveRequest(
            reservation_id=f"flash-{i}", channel="web", lines=[inv.LineRequest(sku=SKU, quantity=1)],
            ttl=Duration(seconds=3600),
        ).SerializeToString()
        for i in range(buyers)
    ]  # fmt: skip
    noop_count = max(concurrency * 50, min(buyers - stock, 50_000))
    noops = [admin.NoopRequest().SerializeToString()] * noop_count
    failing_noops = [admin.NoopRequest(out_of_stock_sku=SKU).SerializeToString()] * noop_count
    async with grpc.aio.insecure_channel(target) as channel:
        reserve = channel.unary_unary("/inventory.v1.InventoryService/Reserve")
        noop = channel.unary_unary("/inventory.v1.AdminService/Noop")
        await _drive(noop, noops[: concurrency * 10], concurrency)  # warm up
        await _drive(noop, failing_noops[: concurrency * 10], concurrency)
        # Per kind of no-op: (calls, elapsed s, server CPU s) of each phase.
        phases: dict[str, list[Phase]] = {"noop": [], "error_noop": []}

        async def baselines() -> None:
            for kind, payloads in (("noop", noops), ("error_noop", failing_noops)):
                cpu0 = tree_cpu_seconds(server_pid)
                calls, elapsed = await _drive(noop, payloads, concurrency)
                phases[kind].append((calls, elapsed, tree_cpu_seconds(server_pid) - cpu0))

        await baselines()
        cpu0 = tree_cpu_seconds(server_pid)
        sale, sale_s = await _drive(reserve, reserves, concurrency)
        sale_cpu = tree_cpu_seconds(server_pid) - cpu0
        await baselines()

        succeeded = sum(1 for _, ok in sale if ok)
        last_success = max((t for t, ok in sale if ok), default=sale[0][0])
        after = [t for t, _ in sale if t > last_success]
        reject_rps = (len(after) - 1) / (after[-1] - after[0]) if len(after) > 1 else 0.0

        inventory = inv_grpc.InventoryServiceStub(channel)
        (level,) = (
            await inventory.GetAvailability(
                inv.GetAvailabilityRequest(skus=[SKU], channel="web", include_nodes=True)
            )
        ).availabilities
        row = level.nodes[0]
        audit = await admin_grpc.AdminServiceStub(channel).Audit(admin.AuditRequest())
    def rate(kind: str) -> float:
        return sum(len(calls) for calls, _, _ in phases[kind]) / sum(s for _, s, _ in phases[kind])

    def cpu_us(kind: str) -> float:
        return round(
            sum(cpu for _, _, cpu in phases[kind]) / sum(len(calls) for calls, _, _ in phases[kind]) * 1e6, 1
        )

    noop_rps, error_noop_rps = rate("noop"), rate("error_noop")
    if any(ok for calls, _, _ in phases["error_noop"] for _, ok in calls):
        raise RuntimeError("a failing no-op succeeded: the server does not implement out_of_stock_sku")
    oversold = max(0, row.reserved + row.committed - row.on_hand) + max(0, succeeded - stock)
    return {
        "stock": stock,
        "buyers": buyers,
        "succeeded": succeeded,
        "rejected": buyers - succeeded,
        "oversold": oversold,
        "held_in_store": row.reserved,
        "audit_ok": audit.ok,
        "sale_s": round(sale_s, 3),
        "reject_rps": round(reject_rps, 1),
        "noop_rps": round(noop_rps, 1),
        "ratio": round(reject_rps / noop_rps, 3) if noop_rps else 0.0,
        "error_noop_rps": round(error_noop_rps, 1),
        "error_noop_ratio": round(error_noop_rps / noop_rps, 3) if noop_rps else 0.0,
        "reject_to_error_noop": round(reject_rps / error_noop_rps, 3) if error_noop_rps else 0.0,
        # The engine's CPU per call (Redis' not included): where a sold-out
        # reject's cost goes, beside the no-ops' on the same server stack.
        "noop_server_cpu_us_per_call": cpu_us("noop"),
        "error_noop_server_cpu_us_per_call": cpu_us("error_noop"),
        "sale_server_cpu_us_per_call": round(sale_cpu / len(sale) * 1e6, 1),
    }


def run(stock: int = 10_000, buyers_per_unit: int = 20, concurrency: int = 64) -> dict[str, Any]:
    """Start Redis and an engine on it, run the sale, stop both; returns the figures."""
    import uvloop

    from engine.redis_launcher import RedisServer

    port = free_port()
    target = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="inventory-flash-") as tmp, RedisServer(tmp) as redis:
        server = start_server(port, None, ["--redis", redis.url])
        try:
            uvloop.run(wait_serving(target, process=server))
            result = uvloop.run(_bench(target, stock, stock * buyers_per_unit, concurrency, server.pid))
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=15)
            if server.poll() is None:
                server.kill()
    result.update({"store": "redis", "concurrency": concurrency, "cpus": os.cpu_count()})
    result["target_met"] = result["succeeded"] == stock and result["oversold"] == 0 and result["ratio"] >= 0.9
    return result
