"""The per-process availability view on Redis: the change feed, gaps, and the sold-out fast path."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from store_helpers import Backing, adjust, backing_for, build_store, close_stores, req, seed, store_params

from engine.core.allocation_rules import AllocationRule, RuleKind
from engine.core.errors import OutOfStock
from engine.core.types import Channel, LineRequest, ReservationState, ReserveRequest
from engine.store.redis import RedisStore

pytestmark = [pytest.mark.asyncio]

Opener = Callable[..., Awaitable[RedisStore]]


# redis-py: the feed on a redis-py connection (as with TLS) instead of the engine's own.
@pytest.fixture(params=store_params("redis", "redis-py", "cluster"))
def backing(request: pytest.FixtureRequest) -> Backing:
    return backing_for(request.param, request, None)


@pytest_asyncio.fixture
async def open_store(backing: Backing) -> AsyncIterator[Opener]:
    opened: list[Any] = []

    async def make(**config: Any) -> RedisStore:
        store = build_store(backing, **config)
        assert isinstance(store, RedisStore)
        await store.start()
        opened.append(store)
        return store

    yield make
    await close_stores(opened)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "the view did not catch up"
        await asyncio.sleep(0.01)


async def caught_up_after_now(store: RedisStore) -> None:
    """Until a read of the feed that began after this moment has completed."""
    assert store.view is not None
    view, now = store.view, time.monotonic()

    async def check() -> bool:
        return view.caught_up_at > now

    await eventually(check)


async def view_matches_store(
    store: RedisStore, truth: RedisStore, skus: list[str], channel: str = "web"
) -> bool:
    """Whether ``store``'s view shows what Redis holds (read by ``truth``, a store without a view)."""
    assert store.view is not None and truth.view is None
    # A request names the channel: the store learns a network another process changed.
    await store.availability(skus, channel, None, False)
    expected = await truth.availability(skus, channel, None, True)
    return store.view.availability(skus, channel, None, True) == expected


async def test_the_view_follows_writes_of_every_process(open_store: Opener) -> None:
    store = await open_store()
    truth = await open_store(view=False)
    other = await open_store()  # another engine process on the same Redis
    await seed(other)
    await other.reserve(req("cart-1", ("sku-a", 4)))
    await eventually(lambda: view_matches_store(store, truth, ["sku-a", "sku-b"]))
    assert store.view is not None
    (level,) = store.view.availability(["sku-a"], "web", None, False)
    assert level.atp == 16


async def test_sold_out_is_answered_from_the_view_and_replays_stay_exact(open_store: Opener) -> None:
    store = await open_store()
    truth = await open_store(view=False)
    await seed(store)  # sku-b: 3 units at dc1
    held = await store.reserve(req("cart-1", ("sku-b", 3)))
    assert store.view is not None
    await eventually(lambda: view_matches_store(store, truth, ["sku-b"]))
    await caught_up_after_now(store)

    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("cart-2", ("sku-b", 1)))
    assert [(s.line_index, s.sku, s.requested, s.available) for s in info.value.shortfalls] == [
        (0, "sku-b", 1, 0)
    ]
    assert store.sold_out_fast_path_hits == 1
    # A replay of the reservation that got the units is not refused by the view.
    replay = await store.reserve(req("cart-1", ("sku-b", 3)))
    assert replay == held
    assert store.sold_out_fast_path_hits == 1
    # The fast path wrote nothing: the row is as the one hold left it.
    level = await store.stock("sku-b", "dc1")
    assert (level.on_hand, level.reserved) == (3, 3)


async def test_the_view_never_contradicts_this_process_own_writes(open_store: Opener) -> None:
    store = await open_store()
    truth = await open_store(view=False)
    await seed(store)
    await store.reserve(req("cart-1", ("sku-b", 3)))
    await eventually(lambda: view_matches_store(store, truth, ["sku-b"]))
    await caught_up_after_now(store)
    # A receipt, then at once a reserve: the view has not seen the receipt yet,
    # but it knows this process wrote after its last read, so the script decides.
    await store.apply_supply([adjust("sku-b", "dc1", 2)])
    got = await store.reserve(req("cart-2", ("sku-b", 2)))
    assert got.state == ReservationState.HELD
    assert store.sold_out_fast_path_hits == 0


@pytest.mark.parametrize("backing", store_params("redis", "redis-py"), indirect=True)
async def test_a_busy_feed_is_read_in_rounds_that_bring_many_changes(open_store: Opener) -> None:
    store = await open_store(feed_busy_interval_s=0.05)
    truth = await open_store(view=False)
    await seed(truth)
    await eventually(lambda: view_matches_store(store, truth, ["sku-a"]))
    assert store._feed is not None
    before = store._feed.rounds
    writes = 60
    for _ in range(writes):  # another process writes every 5 ms
        await truth.apply_supply([adjust("sku-a", "dc1", 1)])
        await asyncio.sleep(0.005)
    await eventually(lambda: view_matches_store(store, truth, ["sku-a"]))
    # Read back to back, the feed would take a round per write or so.
    assert store._feed.rounds - before < writes // 3


@pytest.mark.parametrize("backing", store_params("cluster"), indirect=True)
async def test_a_quiet_cluster_feed_is_polled_less_often_and_still_followed(open_store: Opener) -> None:
    store = await open_store()
    truth = await open_store(view=False)
    await seed(truth)
    await eventually(lambda: view_matches_store(store, truth, ["sku-a"]))
    assert store._feed is not None
    before = store._feed.rounds
    await asyncio.sleep(1.0)
    # Measured: 47 rounds polling every 20 ms, 8 backing off to 160 ms.
    assert store._feed.rounds - before < 12
    await truth.apply_supply([adjust("sku-a", "dc1", 7)])
    await eventually(lambda: view_matches_store(store, truth, ["sku-a"]))
    # Connections lost: the follower reconnects (after a failed round, reading the slot map again).
    connections = [conn for conn, _ in await store._feed._by_master()]
    for conn in connections:
        await conn.close()
    await truth.apply_supply([adjust("sku-a", "dc1", 2)])
    await eventually(lambda: view_matches_store(store, truth, ["sku-a"]))
    assert len(connections) == 3  # one per master


async def test_a_stale_view_refuses_nothing(open_store: Opener) -> None:
    store = await open_store(view_max_lag_s=0.05)
    truth = await open_store(view=False)
    await seed(store)
    await store.reserve(req("cart-1", ("sku-b", 3)))
    await eventually(lambda: view_matches_store(store, truth, ["sku-b"]))
    assert store.view is not None
    store.view.mark_stale()
    with pytest.raises(OutOfStock):
        await store.reserve(req("cart-2", ("sku-b", 1)))
    # Refused by the script, which had to run: the view was not trusted.
    assert store.sold_out_fast_path_hits == 0


async def test_a_gap_in_the_feed_is_found_and_the_shard_resynced(open_store: Opener) -> None:
    store = await open_store()
    truth = await open_store(view=False)
    await seed(store)
    await eventually(lambda: view_matches_store(store, truth, ["sku-a", "sku-b"]))
    feed = store._feed
    assert feed is not None and store.view is not None
    await feed.close()  # this process stops reading...
    await store.apply_supply([adjust("sku-a", "dc1", 5), adjust("sku-b", "dc1", 7)])
    for shard in {store.keys.shard_of_sku(s) for s in ("sku-a", "sku-b")}:
        # ...and the feed is trimmed past what it read (as MAXLEN does under load).
        await store.client.xtrim(store.keys.feed(shard), maxlen=0, approximate=False)
    assert not await view_matches_store(store, truth, ["sku-a", "sku-b"])
    await feed.check_gaps(range(store.keys.shards))
    assert feed.gaps >= 1
    assert await view_matches_store(store, truth, ["sku-a", "sku-b"])


async def test_availability_is_served_from_the_view_and_reads_this_process_writes(open_store: Opener) -> None:
    store = await open_store()
    truth = await open_store(view=False)
    await seed(store)
    await eventually(lambda: view_matches_store(store, truth, ["sku-a", "sku-b"]))
    await caught_up_after_now(store)
    served = store.view_availability_reads
    skus = ["sku-a", "sku-b", "sku-a"]
    expected = await truth.availability(skus, "web", None, True)
    assert await store.availability(skus, "web", None, True) == expected
    assert store.view_availability_reads == served + 1
    # Right after this process's own hold the view may not have read it yet:
    # then Redis answers. Either way the client sees its hold at once
    # (read-your-writes), every time it asks.
    await store.reserve(req("cart-1", ("sku-b", 2)))
    for _ in range(20):
        (level,) = await store.availability(["sku-b"], "web", None, False)
        assert level.atp == 1
    assert (await truth.availability(["sku-b"], "web", None, False))[0].atp == 1
    # Once the feed caught up, the view answers again, with the hold in it. (On
    # a loaded machine the view can go stale again before the read, and Redis
    # answers that one: catch up and ask again.)
    for _ in range(5):
        await caught_up_after_now(store)
        answered = store.view_availability_reads
        (level,) = await store.availability(["sku-b"], "web", None, False)
        assert level.atp == 1
        if store.view_availability_reads == answered + 1:
            break
    else:
        pytest.fail("the view never answered after catching up with the feed")


async def test_a_channel_created_by_another_process_is_seen_with_its_counters(open_store: Opener) -> None:
    """The feed carries every channel's units; a process that learns of a
    channel after its units moved must still show its allowance, not its rule's
    full quota (the counters are only sent again when they change)."""
    store = await open_store()
    other = await open_store()
    truth = await open_store(view=False)
    await seed(other)  # sku-a: 20 units at dc1
    cap = AllocationRule(channel="marketplace:x", kind=RuleKind.CAP, value=5)
    capped = Channel("marketplace:x", ("dc1",), allocation_rules=(cap,))
    await other.upsert_channel(capped)
    await other.reserve(ReserveRequest("mx-1", "marketplace:x", (LineRequest("sku-a", 4),), 600.0))
    # `store` hears of the channel only now, after the units moved.
    await eventually(lambda: view_matches_store(store, truth, ["sku-a"], "marketplace:x"))
    assert store.view is not None
    (level,) = store.view.availability(["sku-a"], "marketplace:x", None, False)
    assert level.atp == 1  # the cap of 5, less the 4 held
