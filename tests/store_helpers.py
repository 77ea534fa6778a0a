"""Stores of every kind for the contract and gRPC suites: how each is built, on what.

The kinds a suite runs over:

- ``embedded-fast`` / ``embedded-pure``: the embedded store on the Cython or the
  pure ledger, journaling to a temporary data directory with real fsync;
- ``redis``: the Redis store on the session's ``redis-server``;
- ``cluster``: the Redis store on the session's 3-master Redis Cluster.

Redis-backed stores share one server per session and are kept apart by a unique
namespace per test (or per gRPC server), which is far cheaper than a server
each. Their parameters carry the ``redis`` mark: ``-m "not redis"`` runs the rest
without Redis. Nothing here skips: a missing ``redis-server`` fails the tests
that need it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.config import EmbeddedStoreConfig, RedisStoreConfig
from engine.core.types import (
    Capability,
    Channel,
    LineRequest,
    Node,
    NodeType,
    ReserveRequest,
    SupplyKind,
    SupplyOp,
)
from engine.store.base import Store
from engine.store.embedded import EmbeddedStore
from engine.store.redis.keys import KeySpace

STORE_KINDS = ("embedded-fast", "embedded-pure", "redis", "cluster")
# "redis-py": standalone Redis with redis-py carrying the scripts and the feed
# (lean_transport=False, as TLS does), for the tests that cover that path.
REDIS_KINDS = frozenset({"redis", "redis-py", "cluster"})

# A fake clock starts here: a real-looking epoch (2033), so that a store that also
# hands times to Redis (key expiry, stream ids) sees plausible values.
T0 = 2_000_000_000.0


class FakeClock:
    """``clock()`` returns ``clock.now``; tests move time by assigning to it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ``await make_store(clock=..., **config)`` (the conftest fixture): a started store.
StoreMaker = Callable[..., Awaitable[Store]]


def store_params(*kinds: str, ids: dict[str, str] | None = None) -> list[Any]:
    """``pytest.param`` for each kind, the Redis ones marked ``redis``."""
    ids = ids or {}
    return [
        pytest.param(kind, id=ids.get(kind, kind), marks=[pytest.mark.redis] if kind in REDIS_KINDS else [])
        for kind in kinds
    ]


def unique_namespace(prefix: str = "t") -> str:
    """A Redis key namespace no other test uses (plain characters, no hash-tag braces)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True, slots=True)
class Backing:
    """Where a store of some kind keeps its state: a data directory or a Redis namespace.

    Two stores built on one backing see the same state (one after the other for
    the embedded store, which locks its directory).
    """

    kind: str
    data_dir: Path | None = None
    redis_url: str | None = None
    cluster_nodes: tuple[str, ...] = ()
    namespace: str = ""


def backing_for(kind: str, request: pytest.FixtureRequest, data_dir: Path | None) -> Backing:
    """The backing for ``kind``; Redis servers are session fixtures, started on first use."""
    if kind.startswith("embedded"):
        return Backing(kind, data_dir=data_dir)
    if kind in ("redis", "redis-py"):
        server = request.getfixturevalue("redis_server")
        return Backing(kind, redis_url=server.url, namespace=unique_namespace())
    if kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return Backing(kind, cluster_nodes=cluster.startup_nodes, namespace=unique_namespace())
    raise ValueError(f"unknown store kind {kind!r}")


def store_config(backing: Backing, **overrides: Any) -> Any:
    """The config value object for the backing's kind; ``overrides`` are config fields."""
    if backing.kind.startswith("embedded"):
        impl = "pure" if backing.kind == "embedded-pure" else "fast"
        return EmbeddedStoreConfig(
            **{"data_dir": backing.data_dir, "ledger_impl": impl, "snapshot_interval_s": 3600.0, **overrides}
        )
    # Imported here: until the Redis store exists only its parametrizations fail.
    from engine.config import RedisStoreConfig

    location: dict[str, Any] = (
        {"cluster_nodes": backing.cluster_nodes} if backing.kind == "cluster" else {"url": backing.redis_url}
    )
    if backing.kind == "redis-py":
        location["lean_transport"] = False
    return RedisStoreConfig(**{**location, "namespace": backing.namespace, **overrides})


def build_store(backing: Backing, *, clock: Callable[[], float] | None = None, **overrides: Any) -> Store:
    """A store (not started) on ``backing``; ``clock=None`` means the real one."""
    config = store_config(backing, **overrides)
    clock_kw: dict[str, Any] = {} if clock is None else {"clock": clock}
    if backing.kind.startswith("embedded"):
        return EmbeddedStore(config, **clock_kw)
    from engine.store.redis import RedisStore

    store: Store = RedisStore(config, **clock_kw)
    return store


def store_factory(
    backing: Backing, *, clock: Callable[[], float] | None = None, **overrides: Any
) -> Callable[[], Awaitable[Store]]:
    """For :class:`engine.service.testing.ServerThread`: builds and starts the store on the server's loop."""

    async def make() -> Store:
        store = build_store(backing, clock=clock, **overrides)
        await store.start()
        return store

    return make


def expected_store_class(kind: str) -> type:
    if kind.startswith("embedded"):
        return EmbeddedStore
    from engine.store.redis import RedisStore

    cls: type = RedisStore
    return cls


# A hang guard, not a measurement: a store's close() that has not returned by
# then never will (a background task that survived its cancellation, say).
CLOSE_TIMEOUT_S = 30.0


async def close_stores(stores: Sequence[Store]) -> None:
    """Close every store, newest first; a close() that hangs fails the test instead of hanging it."""
    hung: list[str] = []
    for store in reversed(stores):
        closing = asyncio.ensure_future(store.close())
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_S)
        if done:
            closing.result()
            continue
        stacks = io.StringIO()
        for task in asyncio.all_tasks():
            task.print_stack(file=stacks)
        hung.append(f"{store!r}.close() did not return in {CLOSE_TIMEOUT_S} s; tasks:\n{stacks.getvalue()}")
        closing.cancel()
    if hung:
        pytest.fail("\n".join(hung))


# ------------------------------------------------------------- a small network


def req(
    rid: str, *lines: tuple[str, int] | tuple[str, int, str], ttl: float = 600.0, **kw: Any
) -> ReserveRequest:
    return ReserveRequest(rid, "web", tuple(LineRequest(*line) for line in lines), ttl, **kw)


def adjust(sku: str, node: str, delta: int, event: str | None = None) -> SupplyOp:
    return SupplyOp(SupplyKind.ADJUST, sku, node, delta, 0, event)


# A node with every fulfillment field away from its default.
CALENDAR_NODE = Node(
    "store-cal",
    NodeType.STORE,
    "Calendar store",
    region="west",
    latitude=-36.85,
    longitude=174.76,
    time_zone="Pacific/Auckland",
    capabilities=Capability.PICKUP,
    postal_prefix="10",
    processing_days=2,
    pickup_minutes=45,
    cutoff="16:30",
    opens_at="08:00",
    open_weekdays=(1, 2, 3, 4, 5, 6),
    holidays=("2033-12-25", "2033-12-26"),
    daily_capacity=300,
)


SEEDED_ROWS = (("sku-a", "dc1"), ("sku-a", "dc2"), ("sku-b", "dc1"))


def skus_in_distinct_slots(
    keys: KeySpace, count: int, *, avoid_slot: int | None = None, prefix: str = "sku-"
) -> list[str]:
    """``count`` SKU names (``prefix`` + a number) whose rows live in different
    Redis Cluster slots under ``keys``, none in ``avoid_slot``."""
    found: list[str] = []
    slots: set[int] = {avoid_slot} if avoid_slot is not None else set()
    n = 0
    while len(found) < count:
        sku = f"{prefix}{n}"
        slot = keys.slots[keys.shard_of_sku(sku)]
        if slot not in slots:
            slots.add(slot)
            found.append(sku)
        n += 1
    return found


def cross_slot_skus(count: int) -> list[str]:
    """``count`` SKU names whose rows live in different Redis Cluster slots
    (under the default shard count, whatever the namespace: the slot of a shard
    depends on the shard count only). Any store takes them; on the Cluster a
    reservation of them spans slots."""
    [shards] = [f.default for f in dataclasses.fields(RedisStoreConfig) if f.name == "shards"]
    return skus_in_distinct_slots(KeySpace("any", shards), count, prefix="xs-sku-")


async def seed(store: Store) -> None:
    """Two DCs, a store, channels web (dcs) and pos (store); sku-a: 10 + 10, sku-b: 3."""
    for node in (Node("dc1", NodeType.DC, "DC one"), Node("dc2", NodeType.DC), Node("store1")):
        await store.upsert_node(node)
    await store.upsert_channel(Channel("web", ("dc1", "dc2"), "Web shop"))
    await store.upsert_channel(Channel("pos", ("store1",)))
    await store.apply_supply(
        [adjust("sku-a", "dc1", 10, "r1"), adjust("sku-a", "dc2", 10, "r2"), adjust("sku-b", "dc1", 3, "r3")]
    )


async def reserved_total(store: Store, sku: str, nodes: Sequence[str] = ("dc1", "dc2", "store1")) -> int:
    """Units of ``sku`` held over ``nodes``, read through the Store API."""
    return sum([(await store.stock(sku, node)).reserved for node in nodes])


class Crash(Exception):
    """Stands for the engine process dying between two steps."""


def crash_at_step(
    n: int, steps: list[tuple[str, int]] | None = None
) -> Callable[[str, int], Awaitable[None]]:
    """A Redis store ``step_hook`` that raises Crash at the ``n``th cross-slot step
    (recording each step in ``steps`` when given)."""
    seen = steps if steps is not None else []

    async def hook(step: str, shard: int) -> None:
        seen.append((step, shard))
        if len(seen) == n:
            raise Crash

    return hook
