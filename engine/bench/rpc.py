"""`inventory-engine bench grpc`: Reserve against a no-op RPC on the same server stack.

One run starts a real server process (embedded store, journal fsync on, in a
temporary data directory; or, with ``backend="redis"`` / ``"redis-cluster"``,
on the Redis store against its own ``redis-server`` or 3-master Redis Cluster
with AOF on), loads a catalogue, then alternates measured phases of
``AdminService/Noop`` and ``InventoryService/Reserve`` (1-3 lines) from one
asyncio client. Alternating phases in one run keeps the ratio honest on a noisy
shared machine: both see the same neighbours.

The client sends pre-serialized requests and does not parse replies, so its own
cost per call is as small as Python allows and identical for both methods. On a
2-core machine client and server still share the CPU, so besides throughput we
report the server process's CPU time per call (from /proc), which does not depend
on how fast the client is.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine.launcher import free_port, start_server, wait_serving

__all__ = ["run", "tree_cpu_seconds"]

_SKUS = 10_000
_NODES = ("bench-dc-1", "bench-dc-2", "bench-dc-3")


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live descendants (``--workers``), from /proc."""
    total = 0.0
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # fields[11] is utime, fields[12] stime (0-based after the command name).
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            with open(f"/proc/{p}/task/{p}/children") as f:
                pending.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between the two reads
    return total


async def _load_catalogue(target: str) -> None:
    import grpc

    from engine._proto.inventory.v1 import (
        network_service_pb2 as net,
    )
    from engine._proto.inventory.v1 import (
        network_service_pb2_grpc as net_grpc,
    )
    from engine._proto.inventory.v1 import (
        supply_service_pb2 as sup,
    )
    from engine._proto.inventory.v1 import (
        supply_service_pb2_grpc as sup_grpc,
    )

    async with grpc.aio.insecure_channel(target) as channel:
        network = net_grpc.NetworkServiceStub(channel)
        supply = sup_grpc.SupplyServiceStub(channel)
        for node in _NODES:
            await network.UpsertNode(
                net.UpsertNodeRequest(node=net.Node(id=node, type=net.NODE_TYPE_DC, name=node))
            )
        await network.UpsertChannel(
            net.UpsertChannelRequest(channel=net.Channel(id="web", name="web", nodes=list(_NODES)))
        )
        changes = [
            sup.StockCount(sku=f"B-{i:05d}", node=node, on_hand=1_000_000_000, version=1)
            for i in range(_SKUS)
            for node in _NODES
        ]
        for start in range(0, len(changes), 1000):
            await supply.SetStock(sup.SetStockRequest(changes=changes[start : start + 1000]))


def _reserve_payloads(count: int, seed: int) -> list[bytes]:
    from google.protobuf.duration_pb2 import Duration

    from engine._proto.inventory.v1 import inventory_service_pb2 as pb

    rng = random.Random(seed)
    out = []
    for i in range(count):
        lines = [
            pb.LineRequest(sku=f"B-{rng.randrange(_SKUS):05d}", quantity=rng.randint(1, 3))
            for _ in range(rng.randint(1, 3))
        ]
        request = pb.ReserveRequest(
            reservation_id=f"bench-{seed}-{i}", channel="web", lines=lines, ttl=Duration(seconds=600)
        )
        out.append(request.SerializeToString())
    return out


async def _phase(
    calls: list[Callable[[bytes], Any]],
    payloads: Callable[[], bytes],
    duration_s: float,
    concurrency: int,
    server_pid: int,
) -> dict[str, Any]:
    import grpc

    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def worker(k: int) -> None:
        nonlocal errors
        call = calls[k % len(calls)]
        while time.perf_counter() < stop_at:
            body = payloads()
            t0 = time.perf_counter()
            try:
                await call(body)
            except grpc.aio.AioRpcError:
                errors += 1
            latencies.append(time.perf_counter() - t0)

    cpu0 = tree_cpu_seconds(server_pid)
    t0 = time.perf_counter()
    stop_at = t0 + duration_s
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - t0
    cpu = tree_cpu_seconds(server_pid) - cpu0
    return {
        "rps": len(latencies) / elapsed,
        "calls": len(latencies),
        "errors": errors,
        "latencies": latencies,
        "server_cpu_us_per_call": cpu / max(1, len(latencies)) * 1e6,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def _bench(
    target: str, server_pid: int, duration_s: float, concurrency: int, rounds: int, connections: int | None
) -> dict[str, Any]:
    import grpc

    await _load_catalogue(target)
    if connections is None:
        channels = [grpc.aio.insecure_channel(target) for _ in range(4)]
    else:
        # One TCP connection per channel (gRPC would otherwise share one), so
        # that SO_REUSEPORT can spread them over the worker processes.
        own = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.aio.insecure_channel(target, options=own) for _ in range(connections)]
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731 - bytes pass through untouched
    noop_calls = [
        ch.unary_unary(
            "/inventory.v1.AdminService/Noop", request_serializer=identity, response_deserializer=identity
        )
        for ch in channels
    ]
    reserve_calls = [
        ch.unary_unary(
            "/inventory.v1.InventoryService/Reserve",
            request_serializer=identity,
            response_deserializer=identity,
        )
        for ch in channels
    ]
    reserve_bodies = iter(_reserve_payloads(int(max(1.0, duration_s) * rounds * 20_000), seed=1))
    noop_body = b""
    results: dict[str, list[dict[str, Any]]] = {"noop": [], "reserve": []}
    # A short warm-up of both so neither phase pays for first-call setup.
    await _phase(noop_calls, lambda: noop_body, min(1.0, duration_s), concurrency, server_pid)
    await _phase(reserve_calls, lambda: next(reserve_bodies), min(1.0, duration_s), concurrency, server_pid)
    for _ in range(rounds):
        results["noop"].append(
            await _phase(noop_calls, lambda: noop_body, duration_s, concurrency, server_pid)
        )
        results["reserve"].append(
            await _phase(reserve_calls, lambda: next(reserve_bodies), duration_s, concurrency, server_pid)
        )
    for ch in channels:
        await ch.close()

    def summary(name: str) -> dict[str, float]:
        phases = results[name]
        lat = [x for p in phases for x in p["latencies"]]
        return {
            f"{name}_rps": round(statistics.median(p["rps"] for p in phases), 1),
            f"{name}_p50_ms": round(_percentile(lat, 0.50) * 1e3, 3),
            f"{name}_p99_ms": round(_percentile(lat, 0.99) * 1e3, 3),
            f"{name}_p999_ms": round(_percentile(lat, 0.999) * 1e3, 3),
            f"{name}_errors": sum(p["errors"] for p in phases),
            f"{name}_server_cpu_us_per_call": round(
                statistics.median(p["server_cpu_us_per_call"] for p in phases), 1
            ),
        }

    out: dict[str, Any] = {**summary("noop"), **summary("reserve")}
    out["ratio"] = round(out["reserve_rps"] / out["noop_rps"], 3)
    out["server_cpu_ratio"] = round(
        out["noop_server_cpu_us_per_call"] / out["reserve_server_cpu_us_per_call"], 3
    )
    return out


BACKENDS = ("embedded", "redis", "redis-cluster")


@contextlib.contextmanager
def _store_args(backend: str, memory: bool) -> Iterator[tuple[str | None, list[str]]]:
    """The server's data dir (None: memory) and store flags, with whatever they need running."""
    with tempfile.TemporaryDirectory(prefix="inventory-bench-") as tmp:
        if backend == "embedded":
            yield (None if memory else tmp), []
        elif backend == "redis":
            from engine.redis_launcher import RedisServer

            with RedisServer(tmp) as redis:
                yield None, ["--redis", redis.url]
        elif backend == "redis-cluster":
            from engine.redis_launcher import LocalRedisCluster

            with LocalRedisCluster(tmp) as cluster:
                yield None, ["--redis-cluster", ",".join(cluster.startup_nodes)]
        else:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")


def run(
    duration_s: float = 5.0,
    concurrency: int = 64,
    rounds: int = 3,
    *,
    memory: bool = False,
    backend: str = "embedded",
    workers: int = 1,
    connections: int | None = None,
) -> dict[str, Any]:
    """Start a server, measure, stop it; returns the figures (see module docstring).

    ``memory=True`` runs the embedded server without a journal, which shows
    what durability costs next to the same run with it. ``workers`` (Redis
    stores only) serves with that many processes on one port; ``connections``
    opens that many client connections (default: 4 channels that gRPC may
    multiplex on one). Server CPU then covers the supervisor and its workers.
    """
    import uvloop

    if memory and backend != "embedded":
        raise ValueError("memory applies to the embedded store only")
    port = free_port()
    target = f"127.0.0.1:{port}"
    with _store_args(backend, memory) as (data_dir, extra):
        if workers != 1:
            extra = [*extra, "--workers", str(workers)]
        server = start_server(port, data_dir, extra)
        try:
            uvloop.run(wait_serving(target, process=server))
            result = uvloop.run(_bench(target, server.pid, duration_s, concurrency, rounds, connections))
        finally:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=15)
            if server.poll() is None:
                server.kill()
    store = backend if backend != "embedded" else ("embedded-memory" if memory else "embedded")
    result.update(
        {
            "store": store,
            "fsync": backend == "embedded" and not memory,
            "concurrency": concurrency,
            "workers": workers,
            "connections": connections,
            "phase_s": duration_s,
            "rounds": rounds,
            "cpus": os.cpu_count(),
        }
    )
    # Targets from the issues: 0.8 on the embedded store, 0.7 on Redis.
    result["target"] = 0.8 if backend == "embedded" else 0.7
    result["target_met"] = result["ratio"] >= result["target"]
    return result
