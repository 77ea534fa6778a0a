"""The Redis store when Redis goes away: restarts, crashes and outages.

- Redis restarted (SIGKILL with ``appendfsync always``, or a clean SHUTDOWN):
  every acknowledged reservation, state change and supply change is still
  there after the AOF replay, the counters agree with the holds, and the audit
  is clean.
- Redis unreachable: calls fail with StoreUnavailable and change nothing; once
  Redis is back, a retry with the same reservation id (or event id) takes
  effect exactly once.
- The same on a 3-master Redis Cluster with one master killed: the calls that
  need it fail with StoreUnavailable, and after its restart the retries leave
  exactly one hold per reservation line, nothing more (a failed cross-slot
  reservation that is never retried is gone once its TTL has passed).

Each test gets its own Redis (a killed server must not disturb other tests); a
fake clock keeps holds from expiring unless a test moves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
from store_helpers import (
    Backing,
    FakeClock,
    adjust,
    build_store,
    close_stores,
    req,
    reserved_total,
    seed,
    unique_namespace,
)

from engine.core.errors import NotFound, StoreUnavailable
from engine.core.future_supply import InboundSupply
from engine.core.types import Channel, Node, NodeType, Reservation, ReservationState
from engine.redis_launcher import LocalRedisCluster, RedisServer
from engine.store.base import Store

pytestmark = [pytest.mark.asyncio, pytest.mark.redis]

HELD = ReservationState.HELD
COMMITTED = ReservationState.COMMITTED
RELEASED = ReservationState.RELEASED
EXPIRED = ReservationState.EXPIRED
T = TypeVar("T")

# Hang guards, not measurements: how long to wait for workers to notice that
# Redis is gone, and how often a client retries while Redis comes back.
GIVE_UP_S = 120.0
RETRIES = 200
RETRY_PAUSE_S = 0.1


async def until_available(call: Callable[[], Awaitable[T]]) -> T:
    """Retry on StoreUnavailable, as a client told UNAVAILABLE does (same id, same body)."""
    for _ in range(RETRIES - 1):
        try:
            return await call()
        except StoreUnavailable:
            await asyncio.sleep(RETRY_PAUSE_S)
    return await call()


@dataclass
class Stores:
    """Opens Redis stores on one backing and closes them all at teardown."""

    backing: Backing
    clock: FakeClock = field(default_factory=FakeClock)
    opened: list[Store] = field(default_factory=list)

    async def open(self, **config: Any) -> Store:
        store = build_store(self.backing, clock=self.clock, **config)
        await store.start()
        self.opened.append(store)
        return store


@pytest.fixture
def always_fsynced_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendfsync="always") as server:
        yield server


@pytest_asyncio.fixture
async def stores_on(always_fsynced_redis: RedisServer) -> AsyncIterator[Stores]:
    stores = Stores(Backing("redis", redis_url=always_fsynced_redis.url, namespace=unique_namespace()))
    yield stores
    if not always_fsynced_redis.running:  # a failed test may leave it down
        always_fsynced_redis.restart()
    await close_stores(stores.opened)


# ================================================================ (a) restarts


@dataclass
class Book:
    """What the clients were told, and what was in flight when Redis went away."""

    acked: dict[str, str] = field(default_factory=dict)  # reservation id -> last acknowledged step
    in_flight: dict[str, str] = field(default_factory=dict)  # id -> the step whose answer was lost
    supplied: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # sku -> acked units
    events: list[str] = field(default_factory=list)  # acknowledged receipt event ids
    supply_in_flight: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ops: int = 0


async def traffic(store: Store, book: Book, workers: int, enough: asyncio.Event, ops: int) -> None:
    """``workers`` clients reserving, committing, releasing and receiving stock until
    Redis goes away; each stops at its first StoreUnavailable."""

    async def step(rid: str, name: str, call: Awaitable[Reservation]) -> bool:
        book.in_flight[rid] = name
        try:
            await call
        except StoreUnavailable:
            return False
        del book.in_flight[rid]
        book.acked[rid] = name
        book.ops += 1
        if book.ops >= ops:
            enough.set()
        return True

    async def worker(w: int) -> None:
        sku = f"sku-{w}"
        for i in itertools.count():
            if i % 10 == 0:
                event = f"rcpt-{w}-{i}"
                book.supply_in_flight[sku] += 10
                try:
                    await store.apply_supply([adjust(sku, "dc1", 10, event)])
                except StoreUnavailable:
                    return
                book.supply_in_flight[sku] -= 10
                book.supplied[sku] += 10
                book.events.append(event)
            rid = f"r-{w}-{i}"
            if not await step(rid, "held", store.reserve(req(rid, (sku, 1)))):
                return
            if i % 3 == 0 and not await step(rid, "committed", store.commit(rid)):
                return
            if i % 3 == 1 and not await step(rid, "released", store.release(rid, None)):
                return

    await asyncio.gather(*(worker(w) for w in range(workers)))


async def check_everything_acknowledged_is_there(store: Store, book: Book) -> None:
    states = {"held": HELD, "committed": COMMITTED, "released": RELEASED}
    found: dict[str, Reservation] = {}
    for rid in sorted(set(book.acked) | set(book.in_flight)):
        try:
            found[rid] = await store.get_reservation(rid)
        except NotFound:
            assert rid not in book.acked, f"acknowledged reservation {rid} was lost"
            continue
        allowed = {states[book.acked[rid]]} if rid in book.acked else {HELD}
        if rid in book.in_flight:  # its last step may or may not have landed
            allowed.add(states[book.in_flight[rid]])
        assert found[rid].state in allowed, (rid, found[rid].state, allowed)
        assert [line.allocated for line in found[rid].lines] == [1], rid

    for sku in sorted(set(book.supplied) | set(book.supply_in_flight)):
        level = await store.stock(sku, "dc1")
        acked = book.supplied[sku]
        assert acked <= level.on_hand <= acked + book.supply_in_flight[sku], sku
        # The counters agree with the reservations, seen from outside.
        mine = [r for r in found.values() if r.lines[0].sku == sku]
        assert level.reserved == sum(1 for r in mine if r.state == HELD), sku
        assert level.committed == sum(1 for r in mine if r.state == COMMITTED), sku
    for event in book.events:  # the event ids survived too: a redelivery is a no-op
        sku = "sku-" + event.split("-")[1]
        [change] = await store.apply_supply([adjust(sku, "dc1", 10, event)])
        assert change.duplicate, event
    report = await store.audit()
    assert report.ok, report.violations


@pytest.mark.parametrize(
    ("appendfsync", "how"),
    [("always", "sigkill"), ("everysec", "shutdown")],
    ids=["sigkill-appendfsync-always", "clean-shutdown"],
)
async def test_everything_acknowledged_survives_a_redis_restart(
    tmp_path: Path, appendfsync: str, how: str
) -> None:
    server = RedisServer(tmp_path / "redis", appendfsync=appendfsync).start()
    stores = Stores(Backing("redis", redis_url=server.url, namespace=unique_namespace()))
    try:
        store = await stores.open()
        await store.upsert_node(Node("dc1", NodeType.DC))
        await store.upsert_channel(Channel("web", ("dc1",)))

        book, enough = Book(), asyncio.Event()
        clients = asyncio.create_task(traffic(store, book, workers=8, enough=enough, ops=300))
        waiter = asyncio.create_task(enough.wait())
        await asyncio.wait({clients, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if clients.done():
            clients.result()  # a client failed: show why
            pytest.fail("the clients stopped before Redis did")
        # In the middle of the traffic: calls are on the wire right now.
        if how == "sigkill":
            server.kill()
        else:
            server.stop()
        await asyncio.wait_for(clients, GIVE_UP_S)  # every client got StoreUnavailable
        assert book.ops >= 300

        server.restart()  # the same directory and port: Redis replays its AOF
        await check_everything_acknowledged_is_there(await stores.open(), book)
        # The store that lived through the outage works again.
        again = await until_available(lambda: store.reserve(req("after-restart", ("sku-0", 1))))
        assert again.state == HELD
    finally:
        if not server.running:
            server.restart()  # so that the stores can close cleanly
        await close_stores(stores.opened)
        server.stop()


# ============================================================= (b) unreachable


async def test_while_redis_is_down_calls_fail_unavailable_and_change_nothing(
    always_fsynced_redis: RedisServer, stores_on: Stores
) -> None:
    store = await stores_on.open()
    await seed(store)
    before = await store.reserve(req("before", ("sku-a", 2)))
    assert store.healthy

    always_fsynced_redis.kill()
    with pytest.raises(StoreUnavailable):
        await store.reserve(req("during", ("sku-a", 3), ("sku-b", 1)))
    assert not store.healthy  # what inventory_store_up reports
    with pytest.raises(StoreUnavailable):
        await store.commit("before")
    with pytest.raises(StoreUnavailable):
        await store.apply_supply([adjust("sku-b", "dc1", 5, "rcpt-during")])
    with pytest.raises(StoreUnavailable):
        await store.get_reservation("before")

    always_fsynced_redis.restart()
    await store.get_reservation("before")  # a call that reaches Redis again...
    assert store.healthy  # ...makes the store healthy again
    # Nothing of the failed calls happened (Redis was down when they were made).
    fresh = await stores_on.open()
    with pytest.raises(NotFound):
        await fresh.get_reservation("during")
    assert await fresh.get_reservation("before") == before
    assert (await reserved_total(fresh, "sku-a"), await reserved_total(fresh, "sku-b")) == (2, 0)
    assert (await fresh.stock("sku-b", "dc1")).on_hand == 3

    # The clients retry with the same ids, through the store that saw the outage.
    during = await until_available(lambda: store.reserve(req("during", ("sku-a", 3), ("sku-b", 1))))
    assert during.state == HELD
    assert await store.reserve(req("during", ("sku-a", 3), ("sku-b", 1))) == during  # a replay
    [receipt] = await store.apply_supply([adjust("sku-b", "dc1", 5, "rcpt-during")])
    assert receipt.applied
    [replayed] = await store.apply_supply([adjust("sku-b", "dc1", 5, "rcpt-during")])
    assert replayed.duplicate
    assert (await store.commit("before")).state == COMMITTED

    for reader in (store, fresh):
        assert (await reserved_total(reader, "sku-a"), await reserved_total(reader, "sku-b")) == (3, 1)
        assert sum([(await reader.stock("sku-a", n)).committed for n in ("dc1", "dc2")]) == 2
        assert (await reader.stock("sku-b", "dc1")).on_hand == 8
        report = await reader.audit()
        assert report.ok, report.violations


async def test_a_kill_among_concurrent_reserves_leaves_exactly_one_hold_each_after_retries(
    always_fsynced_redis: RedisServer, stores_on: Stores
) -> None:
    store = await stores_on.open()
    await seed(store)
    await store.apply_supply([adjust("hot", "dc1", 100)])

    racing = [asyncio.create_task(store.reserve(req(f"c-{i}", ("hot", 1)))) for i in range(40)]
    await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    always_fsynced_redis.kill()  # some answered, some on the wire, some not sent yet
    late = [asyncio.create_task(store.reserve(req(f"late-{i}", ("hot", 1)))) for i in range(10)]
    outcomes = await asyncio.gather(*racing, *late, return_exceptions=True)
    ids = [f"c-{i}" for i in range(40)] + [f"late-{i}" for i in range(10)]
    for rid, outcome in zip(ids, outcomes, strict=True):
        assert isinstance(outcome, (Reservation, StoreUnavailable)), (rid, outcome)
    acked = {rid: o for rid, o in zip(ids, outcomes, strict=True) if isinstance(o, Reservation)}
    assert acked, "the first answer came before the kill"
    assert not any(rid.startswith("late") for rid in acked)

    always_fsynced_redis.restart()
    for rid in ids:
        res = await until_available(lambda rid=rid: store.reserve(req(rid, ("hot", 1))))
        assert res.state == HELD and res.lines[0].allocated == 1
        if rid in acked:
            assert res == acked[rid]  # the acknowledged hold survived and the retry replayed it
    fresh = await stores_on.open()
    for reader in (store, fresh):
        assert await reserved_total(reader, "hot") == 50
        report = await reader.audit()
        assert report.ok, report.violations


# ==================================================================== (c) cluster


async def test_a_cluster_master_down_fails_its_calls_and_retries_after_its_restart_are_exactly_once(
    tmp_path: Path,
) -> None:
    cluster = LocalRedisCluster(tmp_path / "cluster", appendfsync="always", node_timeout_ms=2000).start()
    stores = Stores(Backing("cluster", cluster_nodes=cluster.startup_nodes, namespace=unique_namespace()))
    skus = [f"sku-{i:02d}" for i in range(24)]
    try:
        store = await stores.open()
        await store.upsert_node(Node("dc1", NodeType.DC))
        await store.upsert_channel(Channel("web", ("dc1",)))
        await store.apply_supply([adjust(sku, "dc1", 10) for sku in skus])
        for sku in skus:
            await store.reserve(req(f"pre-{sku}", (sku, 1)))

        # The master holding the most of this test's keys: some SKUs are surely there.
        sizes = []
        for node in cluster.nodes:
            with node.client() as client:
                sizes.append(client.dbsize())
        victim = cluster.nodes[sizes.index(max(sizes))]
        victim.kill()
        singles = await asyncio.gather(
            *(store.reserve(req(f"down-{sku}", (sku, 1))) for sku in skus), return_exceptions=True
        )
        for sku, outcome in zip(skus, singles, strict=True):
            assert isinstance(outcome, (Reservation, StoreUnavailable)), (sku, outcome)
        failed = [sku for sku, o in zip(skus, singles, strict=True) if isinstance(o, StoreUnavailable)]
        assert failed, "no call needed the killed master"
        # Reservations across every slot: both need the killed master.
        every_line = [(sku, 1) for sku in skus]
        with pytest.raises(StoreUnavailable):
            await store.reserve(req("multi", *every_line))
        with pytest.raises(StoreUnavailable):
            await store.reserve(req("abandoned", *every_line, ttl=30.0))  # never retried

        victim.restart()  # rejoins from nodes.conf, its data from the AOF
        cluster.wait_ready()
        for sku in failed:
            await until_available(lambda sku=sku: store.reserve(req(f"down-{sku}", (sku, 1))))
        multi = await until_available(lambda: store.reserve(req("multi", *every_line)))
        assert [line.allocated for line in multi.lines] == [1] * len(skus)

        # Past the abandoned reservation's TTL, but not the others': whatever it
        # held on the slots that answered is back.
        stores.clock.now += 60.0
        fresh = await stores.open()
        for reader in (store, fresh):
            for sku in skus:
                assert await reserved_total(reader, sku, ("dc1",)) == 3, sku  # pre, down, multi
                for rid in (f"pre-{sku}", f"down-{sku}"):
                    res = await reader.get_reservation(rid)
                    assert res.state == HELD and res.lines[0].allocated == 1, rid
            assert (await reader.get_reservation("multi")).state == HELD
            with contextlib.suppress(NotFound):  # never written, or written and expired
                assert (await reader.get_reservation("abandoned")).state != HELD
            report = await reader.audit()
            assert report.ok, report.violations
    finally:
        for node in cluster.nodes:
            if not node.running:
                node.restart()
        await close_stores(stores.opened)
        cluster.stop()


async def test_inbound_supply_survives_a_redis_kill(
    always_fsynced_redis: RedisServer, stores_on: Stores
) -> None:
    store = await stores_on.open()
    await seed(store)
    eta = stores_on.clock.now + 86_400.0
    records = [InboundSupply(f"po-{i}", "sku-a", ("dc1", "dc2")[i % 2], i + 1, eta + i) for i in range(4)]
    await store.upsert_inbound(records)
    await store.remove_inbound(["po-2"])

    always_fsynced_redis.kill()  # SIGKILL: only the AOF (fsynced on every write) is left
    with pytest.raises(StoreUnavailable):
        await store.upsert_inbound([InboundSupply("po-9", "sku-a", "dc1", 1, eta)])
    always_fsynced_redis.restart()

    fresh = await stores_on.open()
    kept = [records[0], records[1], records[3]]
    assert (await fresh.list_inbound(limit=10)).records == tuple(kept)
    assert sorted(await fresh.inbound(["sku-a"]), key=lambda r: r.id) == kept
