"""`inventory-engine bench rowlock`: the engine against PostgreSQL row locks, in one run.

The systems, all started by the run and stopped at its end:

- ``engine-embedded``: an engine server on the embedded store, journal fsync on;
- ``engine-redis``: an engine server on the Redis store, against its own
  ``redis-server`` (AOF with ``appendfsync everysec``, the launcher's default);
- ``postgres``: a PostgreSQL from Debian's package with fsync and
  synchronous_commit on, reserving with ``SELECT ... FOR UPDATE`` in one
  transaction per reservation (see :mod:`engine.bench.postgres`).

All get the same stock (10,000 SKUs x 3 nodes, plus a hot SKU at one node) and
the same requests, in the same order: request ``k`` is the same lines with the
same quantities whichever system serves it. Lines name their node, so every
system touches exactly the same (SKU, node) rows. One asyncio client (uvloop)
drives every system with ``concurrency`` calls in flight: gRPC Reserve with
pre-serialized requests for the engine, one asyncpg connection per in-flight
call for PostgreSQL. The client runs the phases alternately (embedded, Redis,
PostgreSQL, embedded, ...) so that all see the same neighbours on a shared
machine.

Scenarios:

- ``hot``: every request reserves 1 unit of the one hot SKU at one node, from a
  stock large enough that the phases do not sell it out (successes and
  rejections are both counted);
- ``spread``: 1-3 lines, 1-3 units each, over the 10,000 x 3 rows.

After the phases each system sells out a second hot SKU (``sellout_stock``
units, four times as many buyers, all at once) and is checked: exactly
``sellout_stock`` buyers succeed; the units held equal what clients were told
succeeded; nothing is oversold (PostgreSQL: :func:`oversell_report`'s SQL;
the engine: its Audit RPC and the counters it reports).

Besides throughput and latency the run reports server CPU per reservation (the
engine process, plus redis-server for the Redis store; the PostgreSQL
postmaster and its backends), which does not depend on how fast the client is.
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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.bench.postgres import PostgresServer, load_stock, oversell_report, reserve
from engine.bench.rpc import tree_cpu_seconds
from engine.launcher import free_port, start_server, wait_serving

__all__ = ["SYSTEMS", "run"]

SYSTEMS = ("engine-embedded", "engine-redis", "postgres")
SCENARIOS = ("hot", "spread")
CHANNEL = "web"
NODES = ("rl-dc-1", "rl-dc-2", "rl-dc-3")
HOT_SKU = "HOT-0001"
SELLOUT_SKU = "SELLOUT-0001"
_TTL_S = 3600

Line = tuple[str, str, int]
Request = tuple[str, list[Line]]


def _sku(i: int) -> str:
    return f"RL-{i:05d}"


def _stock_rows(skus: int, spread_on_hand: int, hot_stock: int, sellout_stock: int) -> list[Line]:
    rows = [(_sku(i), node, spread_on_hand) for i in range(skus) for node in NODES]
    rows.append((HOT_SKU, NODES[0], hot_stock))
    rows.append((SELLOUT_SKU, NODES[0], sellout_stock))
    return rows


def _requests(scenario: str, count: int, skus: int, seed: int) -> list[Request]:
    """The request program of a scenario; ids are unique within it."""
    if scenario == "hot":
        return [(f"hot-{k}", [(HOT_SKU, NODES[0], 1)]) for k in range(count)]
    rng = random.Random(seed)
    out: list[Request] = []
    for k in range(count):
        n_lines = rng.randint(1, 3)
        lines = [(_sku(rng.randrange(skus)), rng.choice(NODES), rng.randint(1, 3)) for _ in range(n_lines)]
        out.append((f"spread-{k}", lines))
    return out


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


# ----------------------------------------------------------------------- systems


class _System(Protocol):
    """One system under test: serves ``reserve(worker, request)`` -> held or rejected."""

    name: str
    server_pids: list[int]

    async def prepare(self, concurrency: int) -> None: ...

    async def reserve(self, worker: int, request: Request) -> bool: ...

    async def check(self, expected: dict[tuple[str, str], int]) -> dict[str, Any]:
        """Invariants and counters after the run; ``expected``: units held per row, as clients were told."""
        ...

    async def close(self) -> None: ...


class _Engine:
    """An engine server: gRPC Reserve with pre-serialized requests, replies unparsed."""

    def __init__(self, name: str, target: str, server_pids: list[int], rows: list[Line]) -> None:
        self.name = name
        self.target = target
        self.server_pids = server_pids
        self.rows = rows
        self._channels: list[Any] = []
        self._calls: list[Callable[[bytes], Awaitable[bytes]]] = []
        self._encoded: dict[str, bytes] = {}

    async def prepare(self, concurrency: int) -> None:
        import grpc

        from engine._proto.inventory.v1 import network_service_pb2 as net
        from engine._proto.inventory.v1 import network_service_pb2_grpc as net_grpc
        from engine._proto.inventory.v1 import supply_service_pb2 as sup
        from engine._proto.inventory.v1 import supply_service_pb2_grpc as sup_grpc

        async with grpc.aio.insecure_channel(self.target) as channel:
            network = net_grpc.NetworkServiceStub(channel)
            for node in NODES:
                await network.UpsertNode(
                    net.UpsertNodeRequest(node=net.Node(id=node, type=net.NODE_TYPE_DC, name=node))
                )
            await network.UpsertChannel(
                net.UpsertChannelRequest(channel=net.Channel(id=CHANNEL, name=CHANNEL, nodes=list(NODES)))
            )
            supply = sup_grpc.SupplyServiceStub(channel)
            changes = [sup.StockCount(sku=s, node=n, on_hand=q, version=1) for s, n, q in self.rows]
            for start in range(0, len(changes), 1000):
                await supply.SetStock(sup.SetStockRequest(changes=changes[start : start + 1000]))
        # As `bench grpc`: a few channels (gRPC may multiplex them on one
        # connection), bytes in and out so the client does the least it can.
        identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731 - bytes pass through untouched
        self._channels = [grpc.aio.insecure_channel(self.target) for _ in range(4)]
        self._calls = [
            ch.unary_unary(
                "/inventory.v1.InventoryService/Reserve",
                request_serializer=identity,
                response_deserializer=identity,
            )
            for ch in self._channels
        ]

    def encode(self, requests: list[Request]) -> None:
        """Serialize requests ahead of the timed phases (the client's cost stays flat)."""
        from google.protobuf.duration_pb2 import Duration

        from engine._proto.inventory.v1 import inventory_service_pb2 as pb

        for rid, lines in requests:
            self._encoded[rid] = pb.ReserveRequest(
                reservation_id=rid,
                channel=CHANNEL,
                lines=[pb.LineRequest(sku=s, node=n, quantity=q) for s, n, q in lines],
                ttl=Duration(seconds=_TTL_S),
            ).SerializeToString()

    async def reserve(self, worker: int, request: Request) -> bool:
        import grpc

        try:
            await self._calls[worker % len(self._calls)](self._encoded[request[0]])
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # out of stock
                return False
            raise
        return True

    async def _reserved(self, stub: Any, pb: Any) -> dict[tuple[str, str], int]:
        skus = sorted({s for s, _, _ in self.rows})
        out: dict[tuple[str, str], int] = {}
        for start in range(0, len(skus), 1000):
            request = pb.GetAvailabilityRequest(
                skus=skus[start : start + 1000], channel=CHANNEL, include_nodes=True
            )
            response = await stub.GetAvailability(request)
            for availability in response.availabilities:
                for node in availability.nodes:
                    out[(availability.sku, node.node)] = node.reserved
                    if node.reserved + node.committed + node.safety_stock > node.on_hand:
                        out[("__oversold__", "")] = out.get(("__oversold__", ""), 0) + 1
        return out

    async def check(self, expected: dict[tuple[str, str], int]) -> dict[str, Any]:
        import grpc

        from engine._proto.inventory.v1 import admin_service_pb2 as admin
        from engine._proto.inventory.v1 import admin_service_pb2_grpc as admin_grpc
        from engine._proto.inventory.v1 import inventory_service_pb2 as pb
        from engine._proto.inventory.v1 import inventory_service_pb2_grpc as pb_grpc

        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = pb_grpc.InventoryServiceStub(channel)
            # The Redis store answers availability from its in-memory view, fed by
            # a change feed: give it a moment to catch up before comparing.
            deadline = time.monotonic() + 10.0
            while True:
                reserved = await self._reserved(stub, pb)
                mismatched = sum(
                    1 for key, units in reserved.items() if key[1] and units != expected.get(key, 0)
                )
                if mismatched == 0 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            audit = await admin_grpc.AdminServiceStub(channel).Audit(admin.AuditRequest(), timeout=120)
        return {
            "audit_ok": bool(audit.ok),
            "violations": list(audit.violations)[:5],
            "oversold_rows": reserved.get(("__oversold__", ""), 0),
            "rows_disagreeing_with_clients": mismatched,
            "reserved_units": sum(u for key, u in reserved.items() if key[1]),
        }

    async def close(self) -> None:
        for ch in self._channels:
            await ch.close()


class _Postgres:
    """PostgreSQL: one asyncpg connection per in-flight call."""

    name = "postgres"

    def __init__(self, server: PostgresServer, rows: list[Line]) -> None:
        self.server = server
        self.server_pids = [server.pid]
        self.rows = rows
        self._connections: list[Any] = []

    async def prepare(self, concurrency: int) -> None:
        import asyncpg

        admin = await asyncpg.connect(self.server.dsn)
        try:
            await load_stock(admin, self.rows)
        finally:
            await admin.close()
        self._connections = [await asyncpg.connect(self.server.dsn) for _ in range(concurrency)]

    async def reserve(self, worker: int, request: Request) -> bool:
        return await reserve(self._connections[worker], request[0], CHANNEL, request[1], _TTL_S)

    async def check(self, expected: dict[tuple[str, str], int]) -> dict[str, Any]:
        conn = self._connections[0]
        report = await oversell_report(conn)
        mismatched = 0
        for r in await conn.fetch("SELECT sku, node, reserved FROM stock"):
            if r["reserved"] != expected.get((r["sku"], r["node"]), 0):
                mismatched += 1
        return {
            "audit_ok": report["oversold_rows"] == 0 and report["rows_disagreeing_with_lines"] == 0,
            "oversold_rows": report["oversold_rows"],
            "rows_disagreeing_with_lines": report["rows_disagreeing_with_lines"],
            "rows_disagreeing_with_clients": mismatched,
            "reserved_units": report["reserved_units"],
        }

    async def close(self) -> None:
        for conn in self._connections:
            await conn.close()


# ------------------------------------------------------------------------ phases


@dataclass
class _Tally:
    """What one system did in one scenario, over all its phases."""

    phase_rps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    rejected: int = 0
    errors: int = 0
    cpu_s: float = 0.0
    first_error: str = ""

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        calls = len(ordered)
        return {
            "rps": round(statistics.median(self.phase_rps), 1) if self.phase_rps else 0.0,
            "calls": calls,
            "ok": self.ok,
            "rejected": self.rejected,
            "errors": self.errors,
            "first_error": self.first_error,
            "p50_ms": round(_percentile(ordered, 0.50) * 1e3, 2),
            "p99_ms": round(_percentile(ordered, 0.99) * 1e3, 2),
            "p999_ms": round(_percentile(ordered, 0.999) * 1e3, 2),
            "server_cpu_us_per_call": round(self.cpu_s / max(1, calls) * 1e6, 1),
        }


async def _phase(
    system: _System,
    requests: list[Request],
    cursor: list[int],
    duration_s: float,
    concurrency: int,
    tally: _Tally,
    held: dict[tuple[str, str], int],
) -> None:
    """Run ``duration_s`` of calls, taking requests from ``requests[cursor[0]:]``."""
    stop_at = 0.0
    calls = 0

    async def worker(k: int) -> None:
        nonlocal calls
        while time.perf_counter() < stop_at and cursor[0] < len(requests):
            request = requests[cursor[0]]
            cursor[0] += 1
            t0 = time.perf_counter()
            try:
                ok = await system.reserve(k, request)
            except Exception as exc:  # a benchmark counts failures rather than stopping at the first
                tally.errors += 1
                tally.first_error = tally.first_error or f"{type(exc).__name__}: {exc}"[:200]
            else:
                if ok:
                    tally.ok += 1
                    for sku, node, quantity in request[1]:
                        held[(sku, node)] = held.get((sku, node), 0) + quantity
                else:
                    tally.rejected += 1
            tally.latencies.append(time.perf_counter() - t0)
            calls += 1

    cpu0 = sum(tree_cpu_seconds(pid) for pid in system.server_pids)
    t0 = time.perf_counter()
    stop_at = t0 + duration_s
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - t0
    tally.cpu_s += sum(tree_cpu_seconds(pid) for pid in system.server_pids) - cpu0
    tally.phase_rps.append(calls / elapsed)


async def _sellout(system: _System, buyers: int, concurrency: int) -> int:
    """Every buyer wants 1 unit of the sell-out SKU, all at once; returns how many got one."""
    requests = [(f"sellout-{k}", [(SELLOUT_SKU, NODES[0], 1)]) for k in range(buyers)]
    if isinstance(system, _Engine):
        system.encode(requests)
    position = 0
    succeeded = 0

    async def worker(k: int) -> None:
        nonlocal position, succeeded
        while position < len(requests):
            request = requests[position]
            position += 1
            if await system.reserve(k, request):
                succeeded += 1

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return succeeded


async def _bench(
    systems: list[_System],
    *,
    duration_s: float,
    rounds: int,
    concurrency: int,
    skus: int,
    hot_stock: int,
    sellout_stock: int,
    seed: int,
) -> dict[str, Any]:
    for system in systems:
        await system.prepare(concurrency)
    # Enough requests that no phase runs out (a phase that does simply ends early).
    budget = int(duration_s * (rounds + 1) * 8_000) + 10_000
    programs = {scenario: _requests(scenario, budget, skus, seed) for scenario in SCENARIOS}
    for system in systems:
        if isinstance(system, _Engine):
            for requests in programs.values():
                system.encode(requests)
    tallies = {(s.name, sc): _Tally() for s in systems for sc in SCENARIOS}
    warm = {(s.name, sc): _Tally() for s in systems for sc in SCENARIOS}
    cursors = {(s.name, sc): [0] for s in systems for sc in SCENARIOS}
    # Units each system told its clients it held, per row: what the checks expect to find.
    held: dict[str, dict[tuple[str, str], int]] = {s.name: {} for s in systems}
    # A short warm-up per system and scenario, outside the figures (first-call
    # setup, prepared statements, caches); its holds still count in the checks.
    for tally_set, phase_s, repeats in ((warm, min(1.0, duration_s), 1), (tallies, duration_s, rounds)):
        for _ in range(repeats):
            for scenario in SCENARIOS:
                for system in systems:
                    await _phase(
                        system, programs[scenario], cursors[(system.name, scenario)],
                        phase_s, concurrency, tally_set[(system.name, scenario)], held[system.name],
                    )  # fmt: skip
    results: dict[str, Any] = {
        sc: {s.name: tallies[(s.name, sc)].summary() for s in systems} for sc in SCENARIOS
    }
    checks: dict[str, Any] = {}
    for system in systems:
        sold = await _sellout(system, sellout_stock * 4, concurrency)
        expected = dict(held[system.name])
        expected[(SELLOUT_SKU, NODES[0])] = sold
        check = await system.check(expected)
        check["sellout_stock"] = sellout_stock
        check["sellout_succeeded"] = sold
        check["zero_oversell"] = (
            check["audit_ok"]
            and check["oversold_rows"] == 0
            and sold == sellout_stock
            and check["rows_disagreeing_with_clients"] == 0
        )
        checks[system.name] = check
    results["checks"] = checks
    for system in systems:
        await system.close()
    return results


# -------------------------------------------------------------------------- run


@contextlib.contextmanager
def _engine_server(name: str, tmp: str, rows: list[Line]) -> Iterator[_Engine]:
    """An engine server process (and its Redis), stopped on the way out."""
    from engine.redis_launcher import RedisServer

    port = free_port()
    target = f"127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        pids: list[int] = []
        if name == "engine-redis":
            redis = stack.enter_context(RedisServer(os.path.join(tmp, "redis")))
            server = start_server(port, None, ["--redis", redis.url])
            if redis.pid is not None:
                pids.append(redis.pid)
        else:
            server = start_server(port, os.path.join(tmp, "embedded"))

        def stop() -> None:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=15)
            if server.poll() is None:
                server.kill()
                server.wait()

        stack.callback(stop)
        import uvloop

        uvloop.run(wait_serving(target, process=server))
        yield _Engine(name, target, [server.pid, *pids], rows)


def run(
    duration_s: float = 5.0,
    rounds: int = 3,
    concurrency: int = 64,
    *,
    skus: int = 10_000,
    hot_stock: int = 10_000_000,
    sellout_stock: int = 500,
    systems: tuple[str, ...] = SYSTEMS,
    seed: int = 0,
) -> dict[str, Any]:
    """Start every system, run the alternating phases and the checks, stop them all."""
    import uvloop

    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise ValueError(f"systems must be among {SYSTEMS}, not {sorted(unknown)}")
    # Stock that the spread phases never exhaust: they measure reserving, not refusing.
    rows = _stock_rows(skus, 1_000_000, hot_stock, sellout_stock)
    with tempfile.TemporaryDirectory(prefix="inventory-rowlock-") as tmp, contextlib.ExitStack() as stack:
        chosen: list[_System] = []
        pg_version = ""
        for name in systems:
            if name == "postgres":
                pg = stack.enter_context(PostgresServer(max_connections=concurrency + 20))
                pg_version = pg.version()
                chosen.append(_Postgres(pg, rows))
            else:
                chosen.append(stack.enter_context(_engine_server(name, tmp, rows)))
        loop_result: dict[str, Any] = uvloop.run(
            _bench(
                chosen, duration_s=duration_s, rounds=rounds, concurrency=concurrency, skus=skus,
                hot_stock=hot_stock, sellout_stock=sellout_stock, seed=seed,
            )
        )  # fmt: skip
    ratios: dict[str, dict[str, float]] = {}
    for scenario in SCENARIOS:
        figures = loop_result[scenario]
        pg_rps = figures.get("postgres", {}).get("rps", 0.0)
        ratios[scenario] = {
            f"{name}/postgres": round(figures[name]["rps"] / pg_rps, 2)
            for name in figures
            if name != "postgres" and pg_rps
        }
    return {
        **loop_result,
        "rps_ratios": ratios,
        "zero_oversell": all(c["zero_oversell"] for c in loop_result["checks"].values()),
        "systems": list(systems),
        "concurrency": concurrency,
        "phase_s": duration_s,
        "rounds": rounds,
        "skus": skus,
        "nodes": len(NODES),
        "hot_stock": hot_stock,
        "postgres_version": pg_version,
        "postgres_settings": "fsync=on synchronous_commit=on full_page_writes=on",
        "redis_appendfsync": "everysec",
        "embedded_fsync": True,
        "cpus": os.cpu_count(),
    }
