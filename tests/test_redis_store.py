"""What only the Redis store has: scripts, keys, the change feed, expiry by any
script and by a leased sweeper, coalesced pipelines, the server settings check,
and the cross-slot protocol of a Redis Cluster (with failures injected between
its steps).

The behaviour both stores share is in test_store_contract.py; Redis restarts
and outages in test_redis_durability.py. These tests use the session's Redis
server and 3-master Cluster (conftest.py), a namespace each; the few that need
a server of their own (odd settings, one to stop) start it. A fake clock makes
expiry exact; waits are bounded by hang guards, never asserted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from redis import exceptions as rx
from store_helpers import (
    T0,
    Backing,
    Crash,
    FakeClock,
    adjust,
    backing_for,
    build_store,
    crash_at_step,
    req,
    seed,
    skus_in_distinct_slots,
    unique_namespace,
)

from engine.config import RedisStoreConfig
from engine.core.errors import InvalidArgument, NotFound, OutOfStock, StockRejected, StoreUnavailable
from engine.core.future_supply import InboundSupply, encode_inbound
from engine.core.types import Channel, Node, NodeType, ReservationState, SupplyKind, SupplyOp
from engine.redis_launcher import RedisServer
from engine.store.redis import NamespaceMismatch, RedisStore
from engine.store.redis.keys import CLUSTER_SLOTS, FORMAT_VERSION, key_slot, shard_tags
from engine.store.redis.runner import RATE_WINDOW_S
from engine.store.redis.scripts import SCRIPT_NAMES, load_scripts

HELD = ReservationState.HELD
COMMITTED = ReservationState.COMMITTED
EXPIRED = ReservationState.EXPIRED
REDIS = [pytest.param("redis", marks=pytest.mark.redis), pytest.param("cluster", marks=pytest.mark.redis)]
SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "engine" / "store" / "redis" / "scripts"
HANG_GUARD_S = 30.0

Opener = Callable[..., Awaitable[RedisStore]]


@pytest.fixture(params=REDIS)
def backing(request: pytest.FixtureRequest) -> Backing:
    return backing_for(request.param, request, None)


@pytest.fixture
def cluster_backing(request: pytest.FixtureRequest) -> Backing:
    return backing_for("cluster", request, None)


async def _opener(backing: Backing) -> AsyncIterator[Opener]:
    opened: list[RedisStore] = []

    async def open_store(*, clock: Callable[[], float] | None = None, **config: Any) -> RedisStore:
        store = build_store(backing, clock=clock or FakeClock(), **config)
        assert isinstance(store, RedisStore)
        await store.start()
        opened.append(store)
        return store

    yield open_store
    for store in reversed(opened):
        await store.close()


@pytest_asyncio.fixture
async def open_store(backing: Backing) -> AsyncIterator[Opener]:
    """Redis stores (standalone and Cluster) on one namespace, closed at teardown."""
    async for opener in _opener(backing):
        yield opener


@pytest_asyncio.fixture
async def open_cluster_store(cluster_backing: Backing) -> AsyncIterator[Opener]:
    async for opener in _opener(cluster_backing):
        yield opener


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` (a plain or async predicate); the deadline is a hang guard."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        result = condition()
        if await result if inspect.isawaitable(result) else result:
            return
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.02)


async def rs_is(store: RedisStore, sku: str, node: str, value: int) -> bool:
    return (await raw_row(store, sku, node))["rs"] == value


async def raw_row(store: RedisStore, sku: str, node: str) -> dict[str, int]:
    """A row as Redis holds it, without running any script (no lazy expiry)."""
    key = store.keys.sku(store.keys.shard_of_sku(sku), sku)
    values = await store.client.hmget(key, [f"{node}:{f}" for f in ("oh", "rs", "cm", "ss", "v")])
    return dict(zip(("oh", "rs", "cm", "ss", "v"), (int(v or 0) for v in values), strict=True))


async def no_oversell(store: RedisStore, rows: list[tuple[str, str]]) -> None:
    for sku, node in rows:
        row = await raw_row(store, sku, node)
        assert row["rs"] >= 0 and row["cm"] >= 0, row
        assert row["rs"] + row["cm"] <= row["oh"], (sku, node, row)



async def take_sweeper_lease(store: RedisStore, owner: str = "another-process", px: int = 3_600_000) -> None:
    """Make Redis believe another live process sweeps: this store's sweeper stands by."""
    await store.client.set(store.keys.sweeper, owner, px=px)


# ===================================================================== scripts


def test_every_script_opens_with_its_contract_and_loads_self_contained() -> None:
    files = {path.stem for path in SCRIPTS_DIR.glob("*.lua")}
    assert files == {*SCRIPT_NAMES, "lib"}
    scripts = load_scripts()
    for name in SCRIPT_NAMES:
        source = (SCRIPTS_DIR / f"{name}.lua").read_text()
        header = "".join(line for line in source.splitlines(keepends=True) if line.startswith("--"))
        assert source.startswith(f"-- {name}.lua: "), name
        for word in ("KEYS", "ARGV" if name != "audit" else "flags", "Returns"):
            assert word in header, (name, word)
        text = scripts[name].text
        # The shebang makes Redis refuse a writing script up front when out of
        # memory, instead of failing it half-way.
        assert text.splitlines()[0] == ("#!lua flags=no-writes" if name == "audit" else "#!lua"), name
        assert len(scripts[name].sha) == 40
    assert len({s.sha for s in scripts.values()}) == len(SCRIPT_NAMES)


def test_each_script_carries_only_the_helpers_it_uses() -> None:
    scripts = load_scripts()
    # get.lua loads sub-reservations: load_sub needs decode_line, which needs split_tabs.
    for helper in ("local function load_sub", "local function decode_line", "local function split_tabs"):
        assert helper in scripts["get"].text
    assert "local function source" not in scripts["get"].text  # sourcing is the reserve scripts'
    assert "local function source" in scripts["reserve"].text
    assert "local function" not in scripts["meta"].text


def test_shard_tags_spread_shards_evenly_over_the_slot_range() -> None:
    for shards in (1, 3, 7, 256, 1024):
        tags = shard_tags(shards)
        assert len(set(tags)) == shards
        for k, tag in enumerate(tags):
            assert "{" not in tag and "}" not in tag
            assert k * CLUSTER_SLOTS // shards <= key_slot(tag) < (k + 1) * CLUSTER_SLOTS // shards
    # Three masters with the ranges redis-cli --cluster create gives them.
    counts = [0, 0, 0]
    for tag in shard_tags(256):
        counts[min(key_slot(tag) * 3 // CLUSTER_SLOTS, 2)] += 1
    assert max(counts) - min(counts) <= 1, counts


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_cluster_serves_every_shard_from_the_master_owning_its_band(
    open_cluster_store: Opener,
) -> None:
    store = await open_cluster_store()
    per_master: dict[str, int] = {}
    for k in range(store.keys.shards):
        node = store.client.get_node_from_key(store.keys.expiry(k))
        assert node is not None
        per_master[node.name] = per_master.get(node.name, 0) + 1
    assert sorted(per_master.values()) == [85, 85, 86]


# redis-py: scripts sent as redis-py pipelines (as with TLS), not on the engine's own connection.
REDIS_PY = pytest.param("redis-py", marks=pytest.mark.redis)


@pytest.mark.parametrize("backing", [*REDIS, REDIS_PY], indirect=True)
@pytest.mark.asyncio
async def test_noscript_after_a_script_flush_reloads_and_retries(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    client = store.client
    if store.config.cluster_nodes:
        for node in client.get_primaries():  # type: ignore[union-attr]
            await client.execute_command("SCRIPT FLUSH", target_nodes=node)
    else:
        await client.script_flush()
    held = await store.reserve(req("after-flush", ("sku-a", 2), ("sku-b", 1)))
    assert held.state == HELD
    assert store.stats.runner.noscript_reloads == 1
    assert (await store.commit("after-flush")).state == COMMITTED
    assert store.stats.runner.noscript_reloads == 1  # loaded once, everywhere


@pytest.mark.parametrize("backing", REDIS[:1], indirect=True)  # one script cache to flush
@pytest.mark.asyncio
async def test_a_failed_reload_after_noscript_fails_only_the_calls_that_did_not_run(
    open_store: Opener,
) -> None:
    store = await open_store()
    runner = store._runner
    assert runner is not None
    client = store.client
    await client.script_flush()
    # One script is back in the cache, the other is not: in one pipeline the
    # first runs and the second answers NOSCRIPT.
    await client.execute_command("SCRIPT LOAD", runner.scripts["meta"].text)

    async def unreachable() -> None:
        raise StoreUnavailable("injected: Redis went away during the reload", reason="REDIS_UNAVAILABLE")

    runner.load = unreachable  # type: ignore[method-assign]
    ran = runner.call("meta", [store.keys.meta], [store.config.shards, FORMAT_VERSION])
    lost = runner.call("reservation_exists", [store.keys.directory("nobody")], [])
    done = await asyncio.wait_for(asyncio.gather(ran, lost, return_exceptions=True), HANG_GUARD_S)
    assert done[0] == [str(store.config.shards), str(FORMAT_VERSION)]
    assert isinstance(done[1], StoreUnavailable)
    assert store.stats.runner.noscript_reloads == 1


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_keys_py_names_exactly_what_the_scripts_write(open_store: Opener) -> None:
    clock = FakeClock()
    store = await open_store(clock=clock)
    await seed(store)
    res = await store.reserve(req("r1", ("sku-a", 3)))
    keys, client = store.keys, store.client
    shard = keys.shard_of_sku("sku-a")
    assert await client.hget(keys.sku(shard, "sku-a"), "dc1:rs") == "3"
    assert await client.sismember(keys.skus(shard), "sku-a")
    assert await client.sismember(keys.rids(shard), "r1")
    assert await client.hget(keys.sub(shard, "r1"), "ca") == repr(res.created_at)
    assert await client.zscore(keys.expiry(shard), "r1") == res.expires_at * 1000
    assert await client.hget(keys.events(shard), "r1") == "1\tsku-a\tdc1\t10\t0"
    assert await client.xlen(keys.feed(shard)) >= 2
    assert await client.hget(keys.directory("r1"), "st") == "DONE"
    assert await client.hget(keys.shard_meta(keys.shard_of_reservation("r1")), "done") == "1"
    assert await client.hget(keys.net, "n:dc1")
    assert await client.hgetall(keys.meta) == {"shards": "256", "format": str(FORMAT_VERSION)}
    # The reservation's channel counts at the row, in a TAB-named field.
    assert await client.hget(keys.sku(shard, "sku-a"), "dc1\tweb") is not None
    assert await client.get(keys.sweeper)
    # Every key of the shard carries the shard's hash tag.
    tag = "{" + keys.tags[shard] + "}"
    for key in (keys.sku(shard, "sku-a"), keys.sub(shard, "r1"), keys.expiry(shard), keys.feed(shard)):
        assert key.startswith(f"{keys.namespace}:{tag}:")


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_namespace_keeps_its_shard_count(open_store: Opener) -> None:
    first = await open_store(shards=16)
    await first.close()
    with pytest.raises(NamespaceMismatch, match="16 shards"):
        await open_store(shards=32)


@pytest.mark.redis
@pytest.mark.asyncio
async def test_skus_with_braces_are_refused(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    with pytest.raises(InvalidArgument) as info:
        await store.reserve(req("r", ("sku-a", 1), ("x{1}", 1)))
    assert info.value.violations[0].field == "lines[1].sku"
    with pytest.raises(InvalidArgument):
        await store.apply_supply([adjust("{x}", "dc1", 1)])
    with pytest.raises(InvalidArgument):
        await store.availability(["a}"], "web", None, False)


# ===================================================================== the feed


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_the_feed_has_one_entry_per_changed_row_with_absolute_values(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    keys, client = store.keys, store.client
    feed = keys.feed(keys.shard_of_sku("sku-a"))

    async def entries_since(last: str) -> list[dict[str, str]]:
        return [fields for _, fields in await client.xrange(feed, min=f"({last}")]

    [(start, _)] = await client.xrevrange(feed, count=1)
    await store.reserve(req("r", ("sku-a", 12)))
    entries = await entries_since(start)
    assert [e for e in entries if e["sku"] == "sku-a"] == [
        # with the reserving channel's new channel_used at the row; ss -1: the
        # row follows its node's default safety stock
        {"sku": "sku-a", "node": "dc1", "oh": "10", "rs": "10", "cm": "0", "ss": "-1", "v": "0",
         "u:web": "10"},
        {"sku": "sku-a", "node": "dc2", "oh": "10", "rs": "2", "cm": "0", "ss": "-1", "v": "0",
         "u:web": "2"},
    ]
    [(start, _)] = await client.xrevrange(feed, count=1)
    await store.reserve(req("r", ("sku-a", 12)))  # a replay changes no row
    await store.apply_supply([adjust("sku-a", "dc1", 10, "r1")])  # a duplicate event neither
    assert await entries_since(start) == []
    await store.commit("r")
    await store.apply_supply([SupplyOp(SupplyKind.SET, "sku-a", "dc2", 7, 4, None)])
    assert [(e["node"], e["oh"], e["rs"], e["cm"], e["v"]) for e in await entries_since(start)] == [
        ("dc1", "10", "0", "10", "0"),
        ("dc2", "10", "0", "2", "0"),
        ("dc2", "7", "0", "2", "4"),
    ]
    rows, last_id = await store.read_shard(keys.shard_of_sku("sku-a"))
    [(newest, _)] = await client.xrevrange(feed, count=1)
    assert last_id == newest
    assert sorted(row for row in rows if row[0] == "sku-a") == [
        # safety -1: the rows follow their node's default (the view resolves it)
        ("sku-a", "dc1", 10, 0, 10, -1, 0, {"web": 10}),
        ("sku-a", "dc2", 7, 0, 2, -1, 4, {"web": 2}),
    ]


# ====================================================================== expiry


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_any_script_on_the_shard_expires_its_due_holds_first(open_store: Opener) -> None:
    clock = FakeClock(T0)
    store = await open_store(clock=clock)
    await take_sweeper_lease(store)  # nobody sweeps: only scripts touching the shard expire
    await until(lambda: not store.stats.sweeper_lease, "the store to see the lease taken")
    await seed(store)
    await store.reserve(req("first", ("sku-a", 20), ttl=10.0))
    clock.now = T0 + 11.0
    assert (await raw_row(store, "sku-a", "dc1"))["rs"] == 10  # still held in Redis
    # Another reservation's script finds the units back, because it expires first.
    second = await store.reserve(req("second", ("sku-a", 20), ttl=10.0))
    assert second.state == HELD
    assert (await store.get_reservation("first")).state == EXPIRED
    assert (await store.audit()).ok


@pytest.mark.redis
@pytest.mark.asyncio
async def test_one_process_sweeps_and_another_takes_over_when_it_stops(open_store: Opener) -> None:
    clock = FakeClock(T0)
    a = await open_store(clock=clock, sweep_interval_s=0.05)
    b = await open_store(clock=clock, sweep_interval_s=0.05)
    assert a.stats.sweeper_lease and not b.stats.sweeper_lease  # a started first and took it
    await seed(a)
    await a.reserve(req("r", ("sku-a", 5), ttl=10.0))
    await a.close()  # hands the lease over
    await until(lambda: b.stats.sweeper_lease, "b to take the lease over")

    # A holder that dies keeps the lease until it lapses; then b takes it again.
    await take_sweeper_lease(b, owner="crashed-process", px=200)
    await until(lambda: not b.stats.sweeper_lease, "b to see the lease taken")
    await until(lambda: b.stats.sweeper_lease, "b to take the lapsed lease")
    clock.now = T0 + 11.0
    await until(lambda: b.stats.expired_holds == 1, "b's sweeper to expire the hold")
    assert await rs_is(b, "sku-a", "dc1", 0)


@pytest.mark.redis
@pytest.mark.asyncio
async def test_an_outage_logs_the_first_skipped_sweep_and_the_end_not_every_sweep(
    open_store: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store(sweep_interval_s=0.01)
    real_tick, calls = store._sweep_tick, 0

    async def out_of_reach() -> list[str]:
        nonlocal calls
        calls += 1
        raise StoreUnavailable("Redis is unavailable (test)", reason="STORE_UNAVAILABLE")

    with caplog.at_level(logging.WARNING, logger="engine.store.redis"):
        store._sweep_tick = out_of_reach  # type: ignore[method-assign]
        await until(lambda: calls >= 20, "twenty sweeps skipped")
        store._sweep_tick = real_tick  # type: ignore[method-assign]
        await until(lambda: any("resumed" in r.message for r in caplog.records), "the resumption is said")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("expiry sweep")]
    assert len(lines) == 2, lines
    assert "expiry sweep skipped (1 in this outage)" in lines[0]
    assert re.fullmatch(r"expiry sweeps resumed after \d+ skipped", lines[1])
    assert int(lines[1].split()[4]) >= 20


@pytest.mark.redis
@pytest.mark.asyncio
async def test_close_stops_the_sweeper_even_when_its_cancellation_is_lost(open_store: Opener) -> None:
    """Python 3.11's asyncio.wait_for, which redis-py awaits around every socket
    write, can swallow a cancellation; the sweeper then kept looping and
    close() waited for it forever."""
    store = await open_store(sweep_interval_s=0.01)
    inside = asyncio.Event()

    async def swallows_cancellation() -> None:
        inside.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)

    store._check_network_version = swallows_cancellation  # type: ignore[method-assign]
    await inside.wait()
    closing = asyncio.ensure_future(store.close())
    done, _ = await asyncio.wait({closing}, timeout=HANG_GUARD_S)  # waits without cancelling
    if not done:
        store._sweeper.cancel()  # type: ignore[union-attr]  # unstick it for the teardown
        await closing
    assert done, "close() kept waiting for a sweeper that never stops"


@pytest.mark.redis
@pytest.mark.asyncio
async def test_expire_now_returns_what_it_expired_in_expiry_order(open_store: Opener) -> None:
    clock = FakeClock(T0)
    store = await open_store(clock=clock, sweep_interval_s=1.0)
    await take_sweeper_lease(store)
    await seed(store)
    await store.reserve(req("b", ("sku-a", 1), ttl=10.0))
    await store.reserve(req("a", ("sku-b", 1), ttl=10.0))
    await store.reserve(req("early", ("sku-a", 1), ttl=5.0))
    await store.reserve(req("late", ("sku-a", 1), ttl=50.0))
    assert await store.expire_now() == []
    clock.now = T0 + 10.0
    assert await store.expire_now() == ["early", "a", "b"]


# ================================================================== pipelining


async def stop_sweeper(store: RedisStore) -> None:
    """No sweeper calls in the middle of a pipeline count: even standing by, it
    renews its claim to the lease through the runner every tick, which a loaded
    machine can land inside the measured turn."""
    assert store._sweeper is not None
    store._sweeper.cancel()
    await asyncio.wait({store._sweeper})


async def hot_sku_store(open_store: Opener, **config: Any) -> RedisStore:
    """Seeded, with 1,000 units of sku-z, and no sweeper (its calls would join the pipelines counted)."""
    store = await open_store(**config)
    await stop_sweeper(store)
    await seed(store)
    await store.apply_supply([adjust("sku-z", "dc1", 1_000)])
    return store


def rids_in_slot_of(store: RedisStore, sku: str, count: int, prefix: str = "r") -> list[str]:
    """Reservation ids whose directory shares ``sku``'s slot: a reserve of ``sku``
    under one of them is one script call, on the Cluster too."""
    slot = store.keys.slots[store.keys.shard_of_sku(sku)]
    rids: list[str] = []
    n = 0
    while len(rids) < count:
        rid = f"{prefix}{n}"
        if store.keys.slots[store.keys.shard_of_reservation(rid)] == slot:
            rids.append(rid)
        n += 1
    return rids


@contextlib.asynccontextmanager
async def scripts_paused(store: RedisStore, sku: str) -> AsyncIterator[None]:
    """Redis (on a Cluster: the master serving ``sku``) holds every script it is
    sent until the block ends. ``CLIENT PAUSE ... WRITE`` holds EVALSHA but not
    reads, nor the ``CLIENT UNPAUSE`` that ends it; its timeout is a hang guard."""
    client = store.client
    target: dict[str, Any] = {}
    if store.config.cluster_nodes:
        target["target_nodes"] = client.get_node_from_key(store.keys.sku(store.keys.shard_of_sku(sku), sku))
    await client.execute_command("CLIENT", "PAUSE", int(HANG_GUARD_S * 1000), "WRITE", **target)
    try:
        yield
    finally:
        await client.execute_command("CLIENT", "UNPAUSE", **target)


def calls_waiting(store: RedisStore) -> int:
    """Script calls queued behind a pipeline that is out."""
    runner = store._runner
    assert runner is not None
    return sum(len(lane.waiting) for lane in runner._lanes.values())


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_calls_made_in_one_loop_turn_go_out_as_one_pipeline_per_master(open_store: Opener) -> None:
    store = await hot_sku_store(open_store)
    # On the Cluster, ids in sku-z's slot: each reserve is one script call.
    cluster = bool(store.config.cluster_nodes)
    rids = rids_in_slot_of(store, "sku-z", 50) if cluster else [f"r{i}" for i in range(200)]
    before = store.stats.runner
    results = await asyncio.gather(*(store.reserve(req(rid, ("sku-z", 1))) for rid in rids))
    after = store.stats.runner
    assert all(r.state == HELD for r in results)
    assert after.calls - before.calls == len(rids)
    assert after.pipelines - before.pipelines == 1
    assert after.last_pipeline_calls == len(rids)
    assert (await raw_row(store, "sku-z", "dc1"))["rs"] == len(rids)


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_calls_made_while_a_pipeline_is_out_leave_together_when_its_reply_is_in(
    open_store: Opener,
) -> None:
    store = await hot_sku_store(open_store)
    first, *later = rids_in_slot_of(store, "sku-z", 11)
    before = store.stats.runner
    async with scripts_paused(store, "sku-z"):
        out = asyncio.ensure_future(store.reserve(req(first, ("sku-z", 1))))
        await until(lambda: store.stats.runner.pipelines == before.pipelines + 1, "the first pipeline is out")
        queued = []
        for rid in later:  # each in a turn of the loop of its own
            queued.append(asyncio.ensure_future(store.reserve(req(rid, ("sku-z", 1)))))
            await asyncio.sleep(0)
        await until(lambda: calls_waiting(store) == len(later), "every later call waits for the first reply")
        assert store.stats.runner.pipelines == before.pipelines + 1
    results = await asyncio.wait_for(asyncio.gather(out, *queued), HANG_GUARD_S)
    after = store.stats.runner
    assert [r.state for r in results] == [HELD] * 11
    assert after.pipelines - before.pipelines == 2
    assert after.last_pipeline_calls == len(later)
    assert (await raw_row(store, "sku-z", "dc1"))["rs"] == 11


def lingering(store: RedisStore) -> bool:
    """Whether some lane holds its waiting calls for company."""
    runner = store._runner
    assert runner is not None
    return any(lane.linger is not None for lane in runner._lanes.values())


async def burst(store: RedisStore, rids: list[str], gap_s: float) -> list[asyncio.Future[Any]]:
    """One reserve of sku-z per ``gap_s`` (a steady stream of calls, none in the same turn)."""
    started = []
    for rid in rids:
        started.append(asyncio.ensure_future(store.reserve(req(rid, ("sku-z", 1)))))
        await asyncio.sleep(gap_s)
    return started


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_calls_coming_fast_linger_for_company_and_a_lone_call_does_not(open_store: Opener) -> None:
    # A linger far longer than the gaps between calls: lingering shows in the pipeline sizes.
    store = await hot_sku_store(open_store, pipeline_linger_s=0.1)
    rids = rids_in_slot_of(store, "sku-z", 121)
    steady, lone, last = rids[:80], rids[80], rids[81:]
    await asyncio.sleep(2 * RATE_WINDOW_S)  # the rate starts from quiet
    before = store.stats.runner
    held = await asyncio.wait_for(asyncio.gather(*await burst(store, steady, 0.002)), HANG_GUARD_S)
    after = store.stats.runner
    assert [r.state for r in held] == [HELD] * len(steady)
    # The first window's calls go one by one (no rate yet); once the rate is
    # known, the rest wait for company and leave in a few pipelines.
    assert after.pipelines - before.pipelines < len(steady) // 2

    # After a quiet spell a lone call leaves in the turn after it is made.
    await asyncio.sleep(2 * RATE_WINDOW_S)
    before = store.stats.runner
    call = asyncio.ensure_future(store.reserve(req(lone, ("sku-z", 1))))
    sent_or_held = lambda: store.stats.runner.pipelines > before.pipelines or lingering(store)  # noqa: E731
    await until(sent_or_held, "the call is out")
    assert not lingering(store)
    assert (await asyncio.wait_for(call, HANG_GUARD_S)).state == HELD

    # Closing sends what lingers instead of failing it (the burst outlasts a window).
    await asyncio.sleep(2 * RATE_WINDOW_S)
    calls = await burst(store, last, 0.002)
    await until(lambda: lingering(store), "calls linger")
    await store.close()
    assert [r.state for r in await asyncio.gather(*calls)] == [HELD] * len(last)


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_closing_sends_the_calls_waiting_behind_a_pipeline_of_a_busy_lane(open_store: Opener) -> None:
    store = await hot_sku_store(open_store, pipeline_linger_s=0.1)
    first, second = rids_in_slot_of(store, "sku-z", 2)
    async with scripts_paused(store, "sku-z"):
        before = store.stats.runner
        out = asyncio.ensure_future(store.reserve(req(first, ("sku-z", 1))))
        await until(lambda: store.stats.runner.pipelines > before.pipelines, "its pipeline is out")
        # The lane counts as busy from here on (its rate is not measured again meanwhile).
        assert store._runner is not None
        for lane in store._runner._lanes.values():
            lane.rate, lane.window_start = 1e6, time.monotonic() + 3600
        behind = asyncio.ensure_future(store.reserve(req(second, ("sku-z", 1))))
        await until(lambda: calls_waiting(store) == 1, "a call waits behind it")
        # The runner's own close (the store's sends a lease call first, which would wait alongside).
        closing = asyncio.ensure_future(store._runner.close())
        await asyncio.sleep(0.05)
    await asyncio.wait_for(closing, HANG_GUARD_S)
    assert [r.state for r in await asyncio.gather(out, behind)] == [HELD, HELD]
    assert not lingering(store)


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_stalled_master_holds_up_only_the_calls_bound_for_it(open_cluster_store: Opener) -> None:
    store = await open_cluster_store()
    await stop_sweeper(store)
    await seed(store)
    client = store.client
    by_master: dict[str, str] = {}
    for sku in skus_in_distinct_slots(store.keys, 64):
        node = client.get_node_from_key(store.keys.sku(store.keys.shard_of_sku(sku), sku))
        by_master.setdefault(node.name, sku)
    stalled_sku, free_sku = list(by_master.values())[:2]
    await store.apply_supply([adjust(stalled_sku, "dc1", 10), adjust(free_sku, "dc1", 10)])
    (stalled_rid,) = rids_in_slot_of(store, stalled_sku, 1, prefix="s")
    free_rids = rids_in_slot_of(store, free_sku, 5, prefix="f")
    before = store.stats.runner
    async with scripts_paused(store, stalled_sku):
        stalled = asyncio.ensure_future(store.reserve(req(stalled_rid, (stalled_sku, 1))))
        await until(lambda: store.stats.runner.pipelines == before.pipelines + 1, "the stalled call is out")
        for rid in free_rids:  # one after another: each waits for the previous one's reply
            held = await asyncio.wait_for(store.reserve(req(rid, (free_sku, 1))), HANG_GUARD_S)
            assert held.state == HELD
        assert not stalled.done()
    assert (await asyncio.wait_for(stalled, HANG_GUARD_S)).state == HELD
    assert (await raw_row(store, free_sku, "dc1"))["rs"] == 5


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_call_sent_to_a_master_that_no_longer_serves_its_slot_is_redirected(
    open_cluster_store: Opener,
) -> None:
    """A slot map gone stale (the slot moved, say by resharding): the master
    answers MOVED, the script did not run there, and the runner sends it again
    where it belongs, once."""
    store = await open_cluster_store()
    await stop_sweeper(store)
    await seed(store)
    await store.apply_supply([adjust("sku-z", "dc1", 10)])
    (rid,) = rids_in_slot_of(store, "sku-z", 1)
    client, keys = store.client, store.keys
    slot = keys.slots[keys.shard_of_sku("sku-z")]
    right = client.get_node_from_key(keys.sku(keys.shard_of_sku("sku-z"), "sku-z"))
    wrong = next(node for node in client.get_primaries() if node.name != right.name)
    client.nodes_manager.slots_cache[slot] = [wrong]  # what a map read before the move says
    held = await asyncio.wait_for(store.reserve(req(rid, ("sku-z", 2))), HANG_GUARD_S)
    assert held.state == HELD
    assert (await raw_row(store, "sku-z", "dc1"))["rs"] == 2
    # redis-py followed the redirection and corrected the map the lanes use.
    assert client.nodes_manager.slots_cache[slot][0].name == right.name


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_failed_resend_of_a_redirected_call_fails_only_that_call(open_cluster_store: Opener) -> None:
    store = await open_cluster_store()
    await stop_sweeper(store)
    await seed(store)
    client, keys = store.client, store.keys

    def master_of(sku: str) -> Any:
        return client.get_node_from_key(keys.sku(keys.shard_of_sku(sku), sku))

    by_master: dict[str, str] = {}
    for sku in skus_in_distinct_slots(keys, 64):
        by_master.setdefault(master_of(sku).name, sku)
    home_sku, moved_sku = list(by_master.values())[:2]
    home = master_of(home_sku)
    await store.apply_supply([adjust(home_sku, "dc1", 10), adjust(moved_sku, "dc1", 10)])
    (home_rid,) = rids_in_slot_of(store, home_sku, 1, prefix="h")
    (moved_rid,) = rids_in_slot_of(store, moved_sku, 1, prefix="m")
    # moved_sku's slot looks served by home's master: both calls share its pipeline,
    # home answers MOVED for one, and the resend through redis-py fails (a node
    # dying mid-redirect cannot be staged here, so the pipeline is made to fail).
    client.nodes_manager.slots_cache[keys.slots[keys.shard_of_sku(moved_sku)]] = [home]

    class FailingPipeline:
        def execute_command(self, *args: Any) -> None:
            pass

        async def execute(self, raise_on_error: bool = True) -> list[Any]:
            raise rx.ConnectionError("the node died")

    client.pipeline = lambda *a, **k: FailingPipeline()
    results = await asyncio.gather(
        store.reserve(req(home_rid, (home_sku, 1))), store.reserve(req(moved_rid, (moved_sku, 1))),
        return_exceptions=True,
    )
    del client.pipeline
    assert not isinstance(results[0], BaseException) and results[0].state == HELD
    assert isinstance(results[1], StoreUnavailable)
    assert (await raw_row(store, home_sku, "dc1"))["rs"] == 1


# ===================================================================== settings


@pytest.mark.redis
@pytest.mark.asyncio
async def test_risky_redis_settings_are_reported_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    risky = {"appendonly": "no", "appendfsync": "no", "maxmemory-policy": "allkeys-lru"}
    with RedisServer(tmp_path / "risky", extra_config=risky) as server:
        config = RedisStoreConfig(url=server.url, namespace=unique_namespace())
        store = RedisStore(config, clock=FakeClock())
        with caplog.at_level(logging.WARNING, logger="engine.store.redis"):
            await store.start()
        await store.close()
        warned = [r.getMessage() for r in caplog.records if r.name == "engine.store.redis"]
        for setting in ("maxmemory-policy is 'allkeys-lru'", "appendonly is 'no'", "appendfsync is 'no'"):
            assert any(setting in message for message in warned), (setting, warned)
        assert store.settings_warnings == warned

        caplog.clear()
        quiet = RedisStore(
            RedisStoreConfig(url=server.url, namespace=unique_namespace(), check_settings=False),
            clock=FakeClock(),
        )
        await quiet.start()
        await quiet.close()
        assert not [
            r for r in caplog.records if r.name == "engine.store.redis" and r.levelno >= logging.WARNING
        ]

    caplog.clear()
    with RedisServer(tmp_path / "no-config", extra_config={"rename-command": 'CONFIG ""'}) as server:
        store = RedisStore(RedisStoreConfig(url=server.url, namespace=unique_namespace()), clock=FakeClock())
        with caplog.at_level(logging.WARNING, logger="engine.store.redis"):
            await store.start()
        await store.close()
        assert len(store.settings_warnings) == 3
        assert all("could not check" in message for message in store.settings_warnings)


@pytest.mark.redis
@pytest.mark.asyncio
async def test_good_settings_give_no_warning(open_store: Opener) -> None:
    store = await open_store()  # the launcher's servers run with noeviction and AOF
    assert store.settings_warnings == []


# ================================================================= unavailable


@pytest.mark.redis
@pytest.mark.asyncio
async def test_an_unreachable_redis_fails_calls_and_writes_nothing(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis", appendfsync="always") as server:
        config = RedisStoreConfig(url=server.url, namespace=unique_namespace(), socket_timeout_s=1.0)
        store = RedisStore(config, clock=FakeClock())
        await store.start()
        try:
            await seed(store)
            await store.reserve(req("before", ("sku-a", 2)))
            server.stop()
            calls: list[Callable[[], Awaitable[Any]]] = [
                lambda: store.reserve(req("during", ("sku-a", 3))),
                lambda: store.commit("before"),
                lambda: store.apply_supply([adjust("sku-a", "dc1", 5, "late-receipt")]),
                lambda: store.stock("sku-a", "dc1"),
                lambda: store.upsert_node(Node("dc9", NodeType.DC)),
            ]
            for call in calls:
                with pytest.raises(StoreUnavailable):
                    await call()
            server.restart()
            assert (await store.get_reservation("before")).state == HELD
            with pytest.raises(NotFound):
                await store.get_reservation("during")
            level = await store.stock("sku-a", "dc1")
            assert (level.on_hand, level.reserved) == (10, 2)
            # The retries, with the same ids, take effect exactly once.
            assert (await store.reserve(req("during", ("sku-a", 3)))).state == HELD
            assert not (await store.apply_supply([adjust("sku-a", "dc1", 5, "late-receipt")]))[0].duplicate
            assert (await store.apply_supply([adjust("sku-a", "dc1", 5, "late-receipt")]))[0].duplicate
            assert (await store.audit()).ok
        finally:
            await store.close()
        # Nothing listens any more: starting fails as unavailable, not with a stack of redis-py errors.
        server.stop()
        with pytest.raises(StoreUnavailable):
            await RedisStore(config, clock=FakeClock()).start()
        cluster = RedisStoreConfig(cluster_nodes=(server.address,), socket_timeout_s=1.0)
        with pytest.raises(StoreUnavailable):
            await RedisStore(cluster, clock=FakeClock()).start()


# ========================================================== the Redis Cluster


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_reservation_across_slots_that_crashes_between_slots(open_cluster_store: Opener) -> None:
    """The process dies after one slot's holds and before the next slot's: no
    unit is oversold at any moment, the orphaned holds expire by their TTL,
    the audit stays clean, and a retry with the same id completes it."""
    clock = FakeClock(T0)
    store = await open_cluster_store(clock=clock, sweep_interval_s=0.05)
    other = await open_cluster_store(clock=clock, sweep_interval_s=0.05)  # another engine process
    keys = store.keys
    rid = "cart-1"
    sku_x, sku_y = skus_in_distinct_slots(keys, 2, avoid_slot=keys.slots[keys.shard_of_reservation(rid)])
    await store.upsert_node(Node("dc1", NodeType.DC))
    await store.upsert_channel(Channel("web", ("dc1",)))
    await store.apply_supply([adjust(sku_x, "dc1", 5), adjust(sku_y, "dc1", 5)])
    rows = [(sku_x, "dc1"), (sku_y, "dc1")]

    steps: list[tuple[str, int]] = []
    store.step_hook = crash_at_step(2, steps)
    with pytest.raises(Crash):
        await store.reserve(req(rid, (sku_x, 3), (sku_y, 3), ttl=30.0))
    store.step_hook = None
    held = [(await raw_row(store, sku, "dc1"))["rs"] for sku in (sku_x, sku_y)]
    assert sorted(held) == [0, 3]  # one slot held, the other never ran
    await no_oversell(store, rows)
    with pytest.raises(NotFound):  # never acknowledged
        await store.get_reservation(rid)
    # The orphaned hold is a hold like any other: nobody can take those units.
    short_sku = sku_x if held[0] else sku_y
    with pytest.raises(OutOfStock) as info:
        await other.reserve(req("cart-2", (short_sku, 3)))
    assert info.value.shortfalls[0].available == 2
    await no_oversell(store, rows)
    assert (await store.audit()).ok

    # Past the TTL the sweeper gives the units back, without anyone touching the SKU.
    clock.now = T0 + 31.0
    await until(lambda: rs_is(store, short_sku, "dc1", 0), "the orphaned hold to expire")
    assert (await store.audit()).ok

    # The retry with the same id: a fresh attempt, complete.
    retried = await store.reserve(req(rid, (sku_x, 3), (sku_y, 3), ttl=30.0))
    assert retried.state == HELD and [line.allocated for line in retried.lines] == [3, 3]
    assert await store.get_reservation(rid) == retried
    assert await other.get_reservation(rid) == retried
    assert [(await raw_row(store, sku, "dc1"))["rs"] for sku in (sku_x, sku_y)] == [3, 3]
    assert (await store.audit()).ok
    assert (await store.reserve(req(rid, (sku_x, 3), (sku_y, 3), ttl=30.0))) == retried  # a replay


@pytest.mark.redis
@pytest.mark.asyncio
async def test_another_process_resumes_a_crashed_reservation_after_the_owners_lease(
    open_cluster_store: Opener,
) -> None:
    clock = FakeClock(T0)
    store = await open_cluster_store(clock=clock)
    other = await open_cluster_store(clock=clock)
    keys = store.keys
    rid = "cart-9"
    sku_x, sku_y = skus_in_distinct_slots(keys, 2, avoid_slot=keys.slots[keys.shard_of_reservation(rid)])
    await store.upsert_node(Node("dc1", NodeType.DC))
    await store.upsert_channel(Channel("web", ("dc1",)))
    await store.apply_supply([adjust(sku_x, "dc1", 5), adjust(sku_y, "dc1", 5)])

    store.step_hook = crash_at_step(2)
    with pytest.raises(Crash):
        await store.reserve(req(rid, (sku_x, 3), (sku_y, 3), ttl=600.0))
    # The owner's lease is live: another process is told to retry later.
    with pytest.raises(StoreUnavailable) as busy:
        await other.reserve(req(rid, (sku_x, 3), (sku_y, 3), ttl=600.0))
    assert busy.value.reason == "RESERVATION_IN_PROGRESS"
    # Once it lapses (the owner is dead), it takes the attempt over and adopts the live hold.
    clock.now = T0 + 60.0
    held_before = _held_count()
    resumed = await other.reserve(req(rid, (sku_x, 3), (sku_y, 3), ttl=600.0))
    assert resumed.state == HELD
    assert (resumed.created_at, resumed.expires_at) == (T0, T0 + 600.0)  # the attempt's own times
    assert [(await raw_row(store, sku, "dc1"))["rs"] for sku in (sku_x, sku_y)] == [3, 3]
    assert (await store.audit()).ok
    # The process that completed it counts the new hold, once; a replay does not.
    assert _held_count() == held_before + 1
    assert await other.reserve(req(rid, (sku_x, 3), (sku_y, 3), ttl=600.0)) == resumed
    assert _held_count() == held_before + 1


def _held_count() -> float:
    labels = {"channel": "web", "outcome": "held"}
    return REGISTRY.get_sample_value("inventory_reservations_total", labels) or 0.0


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_reservation_across_slots_short_in_one_slot_holds_nothing(open_cluster_store: Opener) -> None:
    store = await open_cluster_store()
    keys = store.keys
    sku_x, sku_y, sku_z = skus_in_distinct_slots(keys, 3)
    await store.upsert_node(Node("dc1", NodeType.DC))
    await store.upsert_channel(Channel("web", ("dc1",)))
    await store.apply_supply([adjust(sku_x, "dc1", 5), adjust(sku_y, "dc1", 1)])
    with pytest.raises(OutOfStock) as info:
        await store.reserve(req("r", (sku_x, 2), (sku_y, 2), (sku_z, 1)))
    assert [(s.line_index, s.requested, s.available) for s in info.value.shortfalls] == [(1, 2, 1), (2, 1, 0)]
    assert [(await raw_row(store, sku, "dc1"))["rs"] for sku in (sku_x, sku_y)] == [0, 0]
    assert not await store.client.exists(keys.directory("r"))
    with pytest.raises(NotFound):
        await store.get_reservation("r")
    # Partial: what each slot can give, but nothing at all is still out of stock.
    partial = await store.reserve(req("p", (sku_x, 2), (sku_y, 2), (sku_z, 1), allow_partial=True))
    assert [line.allocated for line in partial.lines] == [2, 1, 0]
    with pytest.raises(OutOfStock):
        await store.reserve(req("none", (sku_z, 1), (sku_z + "-other", 1), allow_partial=True))
    assert not await store.client.exists(keys.directory("none"))
    assert (await store.audit()).ok


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_commit_across_slots_interrupted_between_slots_completes_on_retry(
    open_cluster_store: Opener,
) -> None:
    store = await open_cluster_store()
    keys = store.keys
    sku_x, sku_y = skus_in_distinct_slots(keys, 2)
    await store.upsert_node(Node("dc1", NodeType.DC))
    await store.upsert_channel(Channel("web", ("dc1",)))
    await store.apply_supply([adjust(sku_x, "dc1", 5), adjust(sku_y, "dc1", 5)])
    await store.reserve(req("r", (sku_x, 2), (sku_y, 3)))

    store.step_hook = crash_at_step(2)
    with pytest.raises(Crash):
        await store.commit("r")
    store.step_hook = None
    half = await store.get_reservation("r")
    assert sorted(line.state for line in half.lines) == [HELD, COMMITTED]
    assert half.state == HELD  # still committable
    assert (await store.audit()).ok
    done = await store.commit("r")
    assert [line.state for line in done.lines] == [COMMITTED, COMMITTED]
    assert [(await raw_row(store, sku, "dc1"))["cm"] for sku in (sku_x, sku_y)] == [2, 3]
    released = await store.release("r", [1])
    assert [line.state for line in released.lines] == [COMMITTED, ReservationState.RELEASED]
    shipped = await store.fulfill("r", None)
    assert shipped.state == ReservationState.FULFILLED
    assert (await raw_row(store, sku_x, "dc1"))["oh"] == 3
    assert (await store.audit()).ok


@pytest.mark.redis
@pytest.mark.asyncio
async def test_a_supply_batch_across_slots_is_checked_everywhere_before_any_write(
    open_cluster_store: Opener,
) -> None:
    store = await open_cluster_store()
    sku_x, sku_y = skus_in_distinct_slots(store.keys, 2)
    await store.upsert_node(Node("dc1", NodeType.DC))
    await store.apply_supply([adjust(sku_x, "dc1", 5)])
    with pytest.raises(StockRejected) as info:
        await store.apply_supply([adjust(sku_x, "dc1", 1), adjust(sku_y, "dc1", -1)])
    assert info.value.reason == "NEGATIVE_ON_HAND"
    assert (await raw_row(store, sku_x, "dc1"))["oh"] == 5
    changes = await store.apply_supply([adjust(sku_y, "dc1", 2, "e1"), adjust(sku_x, "dc1", 1, "e2")])
    assert [(c.level.sku, c.level.on_hand) for c in changes] == [(sku_y, 2), (sku_x, 6)]


# ================================================================= concurrency


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_two_processes_racing_for_fifty_units_hold_exactly_fifty(open_store: Opener) -> None:
    clock = FakeClock()
    a = await open_store(clock=clock)
    b = await open_store(clock=clock)
    await seed(a)
    await a.apply_supply([adjust("hot", "dc1", 50)])

    async def buy(i: int) -> bool:
        store = a if i % 2 else b
        try:
            await store.reserve(req(f"buyer-{i}", ("hot", 1)))
        except OutOfStock:
            return False
        return True

    outcomes = await asyncio.gather(*(buy(i) for i in range(200)))
    assert sum(outcomes) == 50
    assert (await raw_row(a, "hot", "dc1"))["rs"] == 50
    assert (await a.audit()).ok


@pytest.mark.redis
@pytest.mark.asyncio
async def test_racing_reservations_across_slots_never_oversell(open_cluster_store: Opener) -> None:
    clock = FakeClock()
    a = await open_cluster_store(clock=clock)
    b = await open_cluster_store(clock=clock)
    sku_x, sku_y = skus_in_distinct_slots(a.keys, 2)
    await a.upsert_node(Node("dc1", NodeType.DC))
    await a.upsert_channel(Channel("web", ("dc1",)))
    await a.apply_supply([adjust(sku_x, "dc1", 25), adjust(sku_y, "dc1", 25)])

    async def buy(i: int) -> bool:
        store = a if i % 2 else b
        try:
            await store.reserve(req(f"pair-{i}", (sku_x, 1), (sku_y, 1)))
        except OutOfStock:
            return False
        return True

    succeeded = sum(await asyncio.gather(*(buy(i) for i in range(100))))
    assert 0 < succeeded <= 25
    for sku in (sku_x, sku_y):
        assert (await raw_row(a, sku, "dc1"))["rs"] == succeeded  # compensation left nothing behind
    report = await a.audit()
    assert report.ok, report.violations
    assert report.reservations == succeeded


def test_store_config_is_validated() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        RedisStoreConfig()
    with pytest.raises(ValueError, match="exactly one"):
        RedisStoreConfig(url="redis://h:1", cluster_nodes=("h:2",))
    with pytest.raises(ValueError, match="namespace"):
        RedisStoreConfig(url="redis://h:1", namespace="a{b}")
    with pytest.raises(ValueError, match="shards"):
        RedisStoreConfig(url="redis://h:1", shards=0)
    with pytest.raises(ValueError, match="sweep_interval_s"):
        RedisStoreConfig(url="redis://h:1", sweep_interval_s=2.0)
    with pytest.raises(ValueError, match="host:port"):
        RedisStoreConfig(cluster_nodes=("nohost",))
    with pytest.raises(ValueError, match="pipeline_linger_s"):
        RedisStoreConfig(url="redis://h:1", pipeline_linger_s=-0.001)
    with pytest.raises(ValueError, match="feed_busy_interval_s"):
        RedisStoreConfig(url="redis://h:1", feed_busy_interval_s=0.5, view_max_lag_s=0.5)
    assert re.fullmatch(r"[a-z]+", RedisStore.kind)


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_keys_py_names_the_inbound_book_the_scripts_write(open_store: Opener) -> None:
    store = await open_store()
    await seed(store)
    record = InboundSupply("po-1", "sku-a", "dc1", 5, 2_000_086_400.0)
    await store.upsert_inbound([record])
    keys, client = store.keys, store.client
    assert await client.hget(keys.inbound_records(), "po-1") == encode_inbound(record)
    assert await client.zrange(keys.inbound_ids(), 0, -1) == ["po-1"]
    assert await client.zrange(keys.inbound_sku("sku-a"), 0, -1) == ["po-1"]
    assert await client.zrange(keys.inbound_node("dc1"), 0, -1) == ["po-1"]
    # A revision moving the record to another node leaves the old node's index.
    await store.upsert_inbound([InboundSupply("po-1", "sku-a", "dc2", 5, 2_000_086_400.0)])
    assert await client.zrange(keys.inbound_node("dc1"), 0, -1) == []
    assert await client.zrange(keys.inbound_node("dc2"), 0, -1) == ["po-1"]
    # The whole book shares one slot: one script may change all of it on a Cluster.
    book = (keys.inbound_records(), keys.inbound_ids(), keys.inbound_sku("x"), keys.inbound_node("y"))
    assert {key_slot("inb")} == {key_slot(k[k.index("{") + 1 : k.index("}")]) for k in book}
    await store.remove_inbound(["po-1"])
    assert await client.exists(*book[:2], keys.inbound_sku("sku-a"), keys.inbound_node("dc2")) == 0


@pytest.mark.redis
@pytest.mark.asyncio
async def test_the_sweeper_reports_how_late_it_returns_expired_holds(open_store: Opener) -> None:
    clock = FakeClock()
    store = await open_store(clock=clock)
    await seed(store)
    await until(lambda: store.stats.sweeper_lease, "this process to hold the sweeper lease")
    assert store.expiry_lag_s < 1.0
    await store.reserve(req("late-1", ("sku-a", 1), ttl=1.0))
    swept = store.stats.expired_holds
    clock.now += 3.5  # the engine's clock jumps: the hold is 2.5 s overdue when the sweeper sees it
    await until(lambda: store.stats.expired_holds > swept, "the hold to be swept")
    assert store.expiry_lag_s >= 2.5  # what inventory_expiry_sweep_lag_seconds shows (alert: > 1 s)
    # A process without the lease reports no lag of its own (the holder does).
    other = await open_store(clock=clock)
    assert not other.stats.sweeper_lease and other.expiry_lag_s == 0.0


@pytest.mark.parametrize("backing", REDIS, indirect=True)
@pytest.mark.asyncio
async def test_keys_py_names_the_carrier_table_and_capacity_keys_the_scripts_write(
    open_store: Opener,
) -> None:
    from engine.core.capacity import CAPACITY_RETENTION_DAYS, local_day
    from engine.core.carriers import default_carriers, dump_carriers

    store = await open_store()
    await seed(store)
    keys, client = store.keys, store.client
    net_version = int(await client.hget(keys.net, "ver"))
    await store.set_carrier_table(dump_carriers(default_carriers()))
    # The table has a key of its own in the network's slot; the network's
    # version moved (every process reloads) and names the table's.
    assert key_slot(keys.net) == key_slot(keys.carriers[1 : keys.carriers.index("}")])
    assert await client.hget(keys.carriers, "v") == "1" == await client.hget(keys.net, "cv")
    assert await client.hget(keys.carriers, "doc")
    assert int(await client.hget(keys.net, "ver")) == net_version + 1

    await store.upsert_node(Node("dc1", NodeType.DC, "DC one", daily_capacity=3))
    await store.reserve(req("cap-1", ("sku-a", 1, "dc1")))
    await store.commit("cap-1")
    day_key = keys.capacity_day("dc1", local_day("UTC", T0))
    assert await client.get(day_key) == "1"
    assert await client.get(keys.capacity_marker("cap-1")) == "1"
    ttl = CAPACITY_RETENTION_DAYS * 86_400
    assert ttl - 5 < await client.ttl(day_key) <= ttl
    assert {key_slot("cap")} == {
        key_slot(k[k.index("{") + 1 : k.index("}")]) for k in (day_key, keys.capacity_marker("cap-1"))
    }
