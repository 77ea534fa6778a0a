"""RedisStore: the Store port on standalone Redis or a Redis Cluster.

See the package docstring (``engine/store/redis/__init__.py``) for the design,
``keys.py`` for the data layout and ``crossslot.py`` for operations whose keys
span Cluster slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from engine.config import RedisStoreConfig
from engine.core.allocation_rules import RuleKind, channel_allowance, resolve_channel_rules
from engine.core.capacity import CAPACITY_RETENTION_DAYS, capacity_nodes, local_day
from engine.core.errors import (
    EtagMismatch,
    FieldViolation,
    InvalidArgument,
    NodeNotEligible,
    OutOfStock,
    Shortfall,
    StoreUnavailable,
    UnknownChannel,
    UnknownNode,
)
from engine.core.future_supply import (
    MAX_INBOUND_PAGE,
    InboundOutcome,
    InboundPage,
    InboundSupply,
    check_inbound_batch,
    decode_inbound,
    encode_inbound,
)
from engine.core.ledger import FOLLOW_NODE_DEFAULT, check_backorder, usable_candidates
from engine.core.types import (
    MAX_ON_HAND,
    Channel,
    Node,
    NodeAvailability,
    RankedSourcing,
    Reservation,
    ReservationState,
    ReserveRequest,
    SkuAvailability,
    StockChange,
    StockLevel,
    SupplyOp,
)
from engine.observability import metrics
from engine.store.base import AuditReport, CarrierRecord
from engine.store.clock import MonotonicClock
from engine.store.redis import replies
from engine.store.redis.audit import ShardAudit, build_report
from engine.store.redis.connection import check_settings, make_client
from engine.store.redis.crossslot import DRY_RUN_OPS, CrossSlot, StepHook
from engine.store.redis.feed import IDLE_INTERVAL_S, FeedFollower
from engine.store.redis.keys import FORMAT_VERSION, KeySpace
from engine.store.redis.network import NetworkCopy, encode_channel, encode_node
from engine.store.redis.plans import Line, ReservationFacts, ReservePlan, ms, seconds
from engine.store.redis.resp import Endpoint, RespConnection
from engine.store.redis.runner import Arg, RunnerStats, ScriptRunner, unavailable
from engine.store.redis.scripts import load_scripts
from engine.store.view import AvailabilityView

__all__ = ["NamespaceMismatch", "RedisStore", "RedisStoreStats"]

log = logging.getLogger("engine.store.redis")

# While Redis is out of reach, one "expiry sweep skipped" line per this many seconds.
SKIPPED_SWEEPS_LOG_S = 30.0

# Facts of this many reservations are cached per process (they never change).
FACTS_CACHE_SIZE = 100_000
# SKUs read by one call of rows.lua (a big availability request becomes several
# calls, pipelined together, so no single script blocks Redis for long).
ROWS_PER_CALL = 1_000
# Holds one sweeper call expires at most (it calls again while there are more).
SWEEP_LIMIT = 1_000


# Deterministic text for the carrier table, so setting the same table twice is
# recognised by comparing it in the script.
_CARRIERS_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


class NamespaceMismatch(RuntimeError):
    """The namespace in Redis was created with another shard count or layout."""


@dataclasses.dataclass(slots=True)
class RedisStoreStats:
    """Counters for a metrics layer; ``RedisStore.stats`` returns a copy."""

    runner: RunnerStats
    expired_holds: int = 0  # holds expired by this process's sweeps
    sweeps: int = 0  # sweeps run by this process (while holding the lease)
    sweeper_lease: bool = False  # this process is the one sweeping
    network_reloads: int = 0
    cross_slot_reserves: int = 0


class RedisStore:
    """The Store port over Redis: every mutation is one Lua script per slot."""

    kind = "redis"

    def __init__(self, config: RedisStoreConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = MonotonicClock(clock)
        self._keys = KeySpace(config.namespace, config.shards)
        self._cluster = not config.url
        self._owner = uuid.uuid4().hex
        self._feedmax = str(config.feed_maxlen)
        self._phase = "new"  # new -> starting -> running -> closing -> closed
        self._client: Redis | RedisCluster | None = None
        self._runner: ScriptRunner | None = None
        self._cross: CrossSlot | None = None
        self._net = NetworkCopy()
        self._net_lock = asyncio.Lock()
        # The carrier table set through the API, as of the network's last load
        # (reloaded from its own key when the network's ``cv`` moves).
        self._carriers = CarrierRecord()
        self._facts: dict[str, ReservationFacts] = {}
        self._sweeper: asyncio.Task[None] | None = None
        # The shards' expiry totals by (shard, channel) at the last sweep (see _report_expiries).
        self._expiry_totals: dict[tuple[int, str], int] | None = None
        self._last_sweep_at: float | None = None  # monotonic
        self._last_sweep_lateness_s = 0.0
        self._lease_held = False
        self._expired_holds = 0
        self._sweeps = 0
        self._network_reloads = 0
        self._cross_slot_reserves = 0
        # Awaited between the steps of cross-slot operations (failure injection in tests).
        self.step_hook: StepHook | None = None
        self.settings_warnings: list[str] = []
        # The availability view and its feed (config.view); see engine.store.view.
        self.view: AvailabilityView | None = None
        self._feed: FeedFollower | None = None
        # Shard -> when this process's last write there was acknowledged (monotonic).
        self._wrote_at: dict[int, float] = {}
        self.sold_out_fast_path_hits = 0
        self.view_availability_reads = 0  # availability answered by the view, not Redis

    # ----------------------------------------------------------------- lifecycle

    @property
    def keys(self) -> KeySpace:
        return self._keys

    @property
    def stats(self) -> RedisStoreStats:
        runner = self._runner.stats if self._runner is not None else RunnerStats()
        return RedisStoreStats(
            runner=dataclasses.replace(runner),
            expired_holds=self._expired_holds,
            sweeps=self._sweeps,
            sweeper_lease=self._lease_held,
            network_reloads=self._network_reloads,
            cross_slot_reserves=self._cross_slot_reserves,
        )

    @property
    def healthy(self) -> bool:
        """Running, and the last script pipeline reached Redis."""
        return self._phase == "running" and self._runner is not None and self._runner.reachable

    @property
    def expiry_lag_s(self) -> float:
        """How late this process returns expired holds: the lateness of the holds
        its last sweep expired, or the time since that sweep beyond one interval
        when sweeps stop coming. 0 where another process holds the sweeper lease
        (that process reports the lag)."""
        if not self._lease_held or self._last_sweep_at is None:
            return 0.0
        overdue = time.monotonic() - self._last_sweep_at - self.config.sweep_interval_s
        return max(0.0, self._last_sweep_lateness_s, overdue)

    @property
    def client(self) -> Redis | RedisCluster:
        """The redis-py client (tests, tools); mutate only through the store."""
        assert self._client is not None, "start() the store first"
        return self._client

    async def start(self) -> None:
        """Connect, load the scripts, check the namespace and settings, start sweeping."""
        if self._phase != "new":
            raise RuntimeError("RedisStore.start() is called once")
        self._phase = "starting"
        try:
            client = self._client = make_client(self.config)
            if isinstance(client, RedisCluster):
                try:
                    await client.initialize()
                except Exception as exc:
                    raise unavailable(exc) or exc from None
            runner = self._runner = ScriptRunner(
                client, load_scripts(), self._lean_connection(), linger_s=self.config.pipeline_linger_s,
                master_timeout_s=self._master_timeout_s(),
            )  # fmt: skip
            await runner.load()
            self._cross = CrossSlot(
                runner,
                self._keys,
                owner=self._owner,
                feed_maxlen=self.config.feed_maxlen,
                socket_timeout_s=self.config.socket_timeout_s,
                hook=lambda: self.step_hook,
            )
            shards, layout = await runner.call(
                "meta", [self._keys.meta], [self.config.shards, FORMAT_VERSION]
            )
            if (int(shards), int(layout)) != (self.config.shards, FORMAT_VERSION):
                raise NamespaceMismatch(
                    f"namespace {self.config.namespace!r} in Redis has {shards} shards and layout "
                    f"{layout}; this engine is configured with {self.config.shards} shards and layout "
                    f"{FORMAT_VERSION}. Use the same shard count (it cannot change) or another namespace."
                )
            if self.config.check_settings:
                self.settings_warnings = await self._guard(check_settings(client))
            await self._reload_network()
        except BaseException:
            await self._disconnect()
            self._phase = "closed"
            raise
        self._phase = "running"
        if self.config.view:
            await self._start_view()
        # Holds that expired while no engine was sweeping return now (if no other
        # process is the sweeper), before anyone can see them.
        try:
            await self._sweep_tick()
        except StoreUnavailable as exc:
            log.warning("first expiry sweep skipped: %s", exc)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="redis-store-sweeper")

    async def close(self) -> None:
        """Stop sweeping (handing the lease over), wait for calls in flight, disconnect."""
        if self._phase in ("new", "closed"):
            self._phase = "closed"
            return
        if self._phase == "closing":
            return
        self._phase = "closing"
        if self._feed is not None:
            await self._feed.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            # wait() does not re-raise the sweeper's CancelledError, so a
            # cancellation of close() itself still propagates.
            await asyncio.wait({self._sweeper})
        if self._lease_held and self._runner is not None:
            # Let another process take over now rather than when the lease lapses.
            with contextlib.suppress(Exception):
                await self._runner.call("lease", [self._keys.sweeper], [self._owner, "release", 0])
            self._lease_held = False
        await self._disconnect()
        self._phase = "closed"

    async def _start_view(self) -> None:
        """Load every shard into a fresh view, then follow the feeds."""
        config = self.config
        view = self.view = AvailabilityView(config.view_impl, max_lag_s=config.view_max_lag_s)
        view.set_network(self._net.nodes.values(), self._net.channels.values())
        self._feed = FeedFollower(
            self.client, self._keys, view, self.read_shard,
            cluster=self._cluster, resp=self._lean_connection(),
            master_timeout_s=self._master_timeout_s(),
            busy_interval_s=config.feed_busy_interval_s,
            # A quiet Cluster feed is polled less often, never so rarely that the view goes stale.
            idle_interval_s=min(IDLE_INTERVAL_S, config.view_max_lag_s / 2),
        )  # fmt: skip
        try:
            await self._feed.start()
        except BaseException:
            self._phase = "closing"
            await self._disconnect()
            self._phase = "closed"
            raise

    def _master_timeout_s(self) -> float | None:
        """On a Cluster, the timeout of the engine's own connections to each master (None: use redis-py)."""
        config = self.config
        return config.socket_timeout_s if config.cluster_nodes and config.lean_transport else None

    def _lean_connection(self) -> RespConnection | None:
        """A connection of the engine's own to standalone Redis (None: use redis-py; see config)."""
        config = self.config
        endpoint = Endpoint.from_url(config.url) if config.url and config.lean_transport else None
        return RespConnection(endpoint, timeout_s=config.socket_timeout_s) if endpoint is not None else None

    def _wrote(self, shards: Iterable[int]) -> None:
        now = time.monotonic()
        for shard in shards:
            self._wrote_at[shard] = now

    def _sold_out(
        self, request: ReserveRequest, refusal: tuple[str, str, str]
    ) -> tuple[Shortfall, ...] | None:
        """The sold-out fast path's verdict: shortfalls when the view is sure the reserve fails.

        Decided before the script's arguments are worked out (``_plan``), which
        a sold-out reject never needs.
        """
        view = self.view
        if view is None or refusal[0] or request.sourcing is not None:
            # Promise-driven sourcing takes lines from its ranked candidates
            # only: the view's verdict over the channel's nodes does not apply.
            # Nor can the view refuse a line with a backorder allowance (only
            # promise-driven requests carry them): it may be held beyond the
            # shelf the view sees.
            return None
        shard_of_sku, wrote_at = self._keys.shard_of_sku, self._wrote_at
        written = max(wrote_at.get(shard_of_sku(line.sku), -1.0) for line in request.lines)
        if not view.covers(written):
            return None
        return view.sold_out_shortfalls(
            request.channel,
            request.lines,
            bool(request.allow_partial),
            self._net.channels.get(request.channel),
        )

    async def _disconnect(self) -> None:
        if self._runner is not None:
            await self._runner.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()

    def _check_open(self) -> ScriptRunner:
        if self._phase != "running" or self._runner is None:
            raise StoreUnavailable(f"the Redis store is {self._phase}", reason="STORE_NOT_RUNNING")
        return self._runner

    async def _guard(self, call: Any) -> Any:
        """Await a plain redis-py call, turning connection trouble into StoreUnavailable."""
        try:
            return await call
        except Exception as exc:
            raise unavailable(exc) or exc from None

    def _now(self) -> float:
        return self._clock()

    def _groups(self, shards: Iterable[int]) -> list[list[int]]:
        """Shards grouped by Cluster slot, in ascending shard order (one group on standalone)."""
        ordered = sorted(set(shards))
        if not self._cluster:
            return [ordered] if ordered else []
        by_slot: dict[int, list[int]] = {}
        for shard in ordered:
            by_slot.setdefault(self._keys.slots[shard], []).append(shard)
        return list(by_slot.values())

    def _xkeys(self, shards: Sequence[int]) -> list[str]:
        return [self._keys.expiry(k) for k in shards]

    # -------------------------------------------------------------------- network

    async def _reload_network(self) -> None:
        async with self._net_lock:
            raw = await self._guard(self.client.hgetall(self._keys.net))
            self._net.load(raw)
            if self._net.carrier_version != self._carriers.version:
                self._carriers = await self._read_carriers()
            self._network_reloads += 1
            if self.view is not None:
                self.view.set_network(self._net.nodes.values(), self._net.channels.values())

    async def _read_carriers(self) -> CarrierRecord:
        stored = await self._guard(self.client.hgetall(self._keys.carriers))
        if not stored:
            return CarrierRecord()
        document = json.loads(stored["doc"]) if "doc" in stored else None
        return CarrierRecord(document, int(stored["v"]), float(stored["at"]))

    async def _check_network_version(self) -> None:
        version = await self._guard(self.client.hget(self._keys.net, "ver"))
        if int(version or 0) != self._net.version:
            await self._reload_network()

    async def _knows(self, channels: Iterable[str] = (), nodes: Iterable[str] = ()) -> None:
        """Reload the network copy if it lacks a name, before calling it unknown."""
        net = self._net
        if any(c not in net.channels for c in channels) or any(n not in net.nodes for n in nodes):
            await self._reload_network()

    async def upsert_node(self, node: Node) -> Node:
        runner = self._check_open()
        reply = await runner.call("upsert_node", [self._keys.net], [node.id, encode_node(node)])
        self._adopt_network_change(reply, lambda: self._net.nodes.__setitem__(node.id, node))
        if self.view is not None:
            self.view.set_network((node,), ())
        return node

    async def upsert_channel(self, channel: Channel) -> Channel:
        runner = self._check_open()
        # Rules are checked before anything is written, as the embedded store
        # does: a channel with bad rules stored in Redis would stop every
        # process that loads the network later.
        resolve_channel_rules(channel, self._net.nodes)
        reply = await runner.call(
            "upsert_channel",
            [self._keys.net],
            [channel.id, encode_channel(channel), len(channel.nodes), *channel.nodes],
        )
        if reply[0] == "UNKNOWN_NODE":
            raise UnknownNode(reply[2], field=f"nodes[{reply[1]}]")
        if reply[0] == "DUPLICATE_NODE":
            node = reply[2]
            raise InvalidArgument(
                f"node {node!r} is listed twice",
                (FieldViolation(f"nodes[{reply[1]}]", f"node {node!r} is listed twice"),),
            )
        self._adopt_network_change(reply, lambda: self._net.channels.__setitem__(channel.id, channel))
        if self.view is not None:
            self.view.set_network((), (channel,))
        return channel

    def _adopt_network_change(self, reply: Sequence[Any], apply: Callable[[], None]) -> None:
        apply()
        if reply[0] == "OK" and int(reply[1]) == self._net.version + 1:
            self._net.version += 1  # nobody else changed the network meanwhile
        # Otherwise the version stays behind and the next check reloads everything.

    async def list_nodes(self) -> list[Node]:
        self._check_open()
        # Every network write bumps the version: one HGET tells whether the copy
        # is current (Quote and ranked Reserve ask for the network on every call).
        await self._check_network_version()
        return [node for _, node in sorted(self._net.nodes.items())]

    async def carrier_table(self) -> CarrierRecord:
        self._check_open()
        # One HGET when nothing changed (a quote asks right after listing nodes).
        await self._check_network_version()
        return self._carriers

    async def set_carrier_table(
        self, document: dict[str, Any] | None, *, expected_version: int | None = None
    ) -> CarrierRecord:
        runner = self._check_open()
        text = "" if document is None else _CARRIERS_ENCODER.encode(document)
        now = self._now()
        expected = "" if expected_version is None else str(int(expected_version))
        reply = await runner.call(
            "carriers_set", [self._keys.net, self._keys.carriers], [expected, text, repr(now)]
        )
        if reply[0] == "STALE":
            raise EtagMismatch(
                f"the carrier table is at version {reply[1]}, not {expected_version}; "
                "read it again and reapply the change"
            )
        if reply[0] == "SAME":
            if int(reply[1]) != self._carriers.version:
                await self._reload_network()
            return self._carriers
        self._carriers = CarrierRecord(document, int(reply[1]), now)
        self._adopt_network_change(["OK", reply[2]], lambda: None)
        if self._net.version == int(reply[2]):
            self._net.carrier_version = self._carriers.version
        return self._carriers

    async def released(self, days: Sequence[tuple[str, str]]) -> list[int]:
        self._check_open()
        if not days:
            return []
        keys = [self._keys.capacity_day(node, day) for node, day in days]
        counts = await self._guard(self.client.mget(keys))
        return [int(c or 0) for c in counts]

    async def _count_release(self, reservation: Reservation) -> None:
        """Count a committed order against its nodes' daily capacity, once
        (capacity_count.lua keeps a marker per reservation, so a retried commit
        counts nothing). After the commit: the ledger scripts stay as they are."""
        if reservation.state != ReservationState.COMMITTED:
            return
        nodes = capacity_nodes(reservation, self._net.nodes)
        if not nodes:
            return
        runner = self._check_open()
        now = self._now()
        keys = [self._keys.capacity_marker(reservation.id)]
        keys += [self._keys.capacity_day(n, local_day(self._net.nodes[n].time_zone, now)) for n in nodes]
        await runner.call("capacity_count", keys, [CAPACITY_RETENTION_DAYS * 86_400])

    async def list_channels(self) -> list[Channel]:
        self._check_open()
        await self._check_network_version()  # as list_nodes
        return [channel for _, channel in sorted(self._net.channels.items())]

    # --------------------------------------------------------------------- supply

    async def apply_supply(self, ops: Sequence[SupplyOp]) -> list[StockChange]:
        runner = self._check_open()
        for i, op in enumerate(ops):
            _check_sku(op.sku, f"changes[{i}].sku")
        await self._knows(nodes=(op.node for op in ops))
        by_shard: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            by_shard.setdefault(self._keys.shard_of_sku(op.sku), []).append(i)
        # Per slot: its shards, the batch indexes of its changes, their arguments.
        calls: list[tuple[list[int], list[int], list[Arg]]] = []
        for shards in self._groups(by_shard):
            position = {shard: n + 1 for n, shard in enumerate(shards)}
            indexes = sorted(i for shard in shards for i in by_shard[shard])
            changes: list[Arg] = [len(indexes)]
            for i in indexes:
                kind, sku, node, value, version, event_id = ops[i]
                changes += [
                    position[self._keys.shard_of_sku(sku)], i, int(kind), sku, node, int(value), int(version),
                    event_id or "", 1 if node in self._net.nodes else 0,
                ]  # fmt: skip
            calls.append((shards, indexes, changes))
        head: list[Arg] = [ms(self._now()), self._feedmax, MAX_ON_HAND]
        if len(calls) > 1:
            assert self._cross is not None
            try:
                return self._resolve_safety(await self._cross.supply(ops, head, calls))
            finally:
                self._wrote(by_shard)
        if not calls:
            return []
        shards, _, changes = calls[0]
        reply = await runner.call("supply", self._xkeys(shards), [*head, 0, *changes])
        self._wrote(shards)
        if reply[0] != "OK":
            raise replies.supply_error(reply)
        return self._resolve_safety(replies.stock_changes([(op.sku, op.node) for op in ops], reply[1]))

    def _resolve_safety(self, changes: list[StockChange]) -> list[StockChange]:
        return [
            dataclasses.replace(
                c,
                level=dataclasses.replace(
                    c.level, safety_stock=self._net.safety_in_effect(c.level.node, c.level.safety_stock)
                ),
            )
            if c.level.safety_stock == FOLLOW_NODE_DEFAULT
            else c
            for c in changes
        ]

    async def stock(self, sku: str, node: str) -> StockLevel:
        self._check_open()
        _check_sku(sku, "sku")
        [values] = await self._read_rows([sku], [node])
        on_hand, reserved, committed, safety, version = values[:5]
        safety = self._net.safety_in_effect(node, safety)
        return StockLevel(sku, node, on_hand, reserved, committed, safety, version)

    async def _read_rows(
        self, skus: Sequence[str], nodes: Sequence[str], channel: str = ""
    ) -> list[list[int]]:
        """Per unique SKU, 6 values at each node, flattened: the 5 counters and the
        channel's channel_used there (0 without a channel); expires what is due first."""
        runner = self._check_open()
        by_shard: dict[int, list[str]] = {}
        for sku in skus:
            by_shard.setdefault(self._keys.shard_of_sku(sku), []).append(sku)
        calls: list[tuple[list[str], asyncio.Future[Any]]] = []
        head: list[Arg] = [ms(self._now()), self._feedmax, channel, len(nodes), *nodes]
        for shards in self._groups(by_shard):
            chunk: list[int] = []
            size = 0
            for shard in [*shards, -1]:
                if shard < 0 or (chunk and size + len(by_shard[shard]) > ROWS_PER_CALL):
                    args: list[Arg] = list(head)
                    order: list[str] = []
                    for k in chunk:
                        args += [len(by_shard[k]), *by_shard[k]]
                        order += by_shard[k]
                    calls.append((order, runner.call("rows", self._xkeys(chunk), args)))
                    chunk, size = [], 0
                if shard >= 0:
                    chunk.append(shard)
                    size += len(by_shard[shard])
        found: dict[str, list[int]] = {}
        for order, future in calls:
            for sku, values in zip(order, await future, strict=True):
                found[sku] = values
        # The reads may have expired holds: a later read served by the view must see that.
        self._wrote(by_shard)
        return [found[sku] for sku in skus]

    # --------------------------------------------------------------- reservations

    async def reserve(self, request: ReserveRequest) -> Reservation:
        runner = self._check_open()
        rid, channel = request.reservation_id, request.channel
        backorder = _check_reserve(request)
        await self._knows(channels=[channel], nodes=(line.node for line in request.lines if line.node))
        refusal, eligible = self._reserve_refusal(request)
        shortfalls = self._sold_out(request, refusal)
        if shortfalls is not None:
            dir_key = self._keys.directory(rid)
            if not int(await runner.call("reservation_exists", [dir_key], [])):
                # Sold out on a view that has seen every write of ours: no script
                # on the hot SKU. The existence check keeps replays exact.
                self.sold_out_fast_path_hits += 1
                metrics.record_sold_out_fast_path(channel)
                raise OutOfStock(shortfalls)
        plan = self._plan(request, backorder, refusal, eligible)
        facts = plan.facts
        dir_shard = self._keys.shard_of_reservation(rid)
        if len(plan.groups) == 1 and (
            not self._cluster or self._keys.slots[dir_shard] == self._keys.slots[plan.groups[0][0]]
        ):
            reservation = await self._reserve_in_one_call(runner, plan, dir_shard)
            # Created by this call, or a replay of an earlier one: the script
            # stores the creating call's `now` as created_at, read back exactly.
            if reservation.created_at == plan.now:
                metrics.record_held(reservation)
        else:
            assert self._cross is not None
            self._cross_slot_reserves += 1
            reservation = await self._cross.reserve(plan)  # counts the hold when it completes one
        self._wrote(facts.shards)
        self._remember(rid, facts)
        return reservation

    def _plan(
        self,
        request: ReserveRequest,
        backorder: tuple[int, ...] | None,
        refusal: tuple[str, str, str],
        eligible: tuple[str, ...],
    ) -> ReservePlan:
        """Everything the reserve scripts need, decided from the request and the network copy.

        ``backorder``: the request's backorder allowances as ``_check_reserve``
        returns them (None: no line may be backordered, and the arguments are
        exactly those of a request without them); ``refusal`` and
        ``eligible``: what ``_reserve_refusal`` says of the request.
        """
        rid, channel = request.reservation_id, request.channel
        definition = self._net.channels.get(channel)
        rules = _rules_by_node(definition, self._net.nodes) if definition is not None else {}
        rule_args: list[Arg] = [len(rules)]
        for ruled_node, (kind, value) in rules.items():
            rule_args += [ruled_node, kind, value]
        # The default safety stock of the eligible nodes with one: a row that
        # follows it (ss -1) keeps it back in the script (lib.lua read_rules).
        defaults = [
            (n, d.default_safety_stock) for n in eligible if (d := self._net.nodes.get(n)) is not None
        ]
        defaults = [(n, units) for n, units in defaults if units]
        rule_args.append(len(defaults))
        for node_id, units in defaults:
            rule_args += [node_id, units]
        lines_by_shard: dict[int, list[Line]] = {}
        sourcing = request.sourcing
        for i, (sku, quantity, node) in enumerate(request.lines):
            line: Line = (i, sku, int(quantity), node or "")
            if sourcing is not None:
                line += _ranked_args(sourcing, i, node, eligible)
                if backorder is not None:
                    line += (backorder[i],)
            lines_by_shard.setdefault(self._keys.shard_of_sku(sku), []).append(line)
        ttl_s = float(request.ttl_s)
        facts = ReservationFacts(
            shards=tuple(sorted(lines_by_shard)),
            channel=channel,
            ttl_s=ttl_s,
            allow_partial=bool(request.allow_partial),
            lines=len(request.lines),
        )
        now = self._now()
        plan = ReservePlan(
            reservation_id=rid,
            body=ReservePlan.canonical_body(
                channel, ttl_s, facts.allow_partial, request.lines, sourcing.context if sourcing else None
            ),
            facts=facts,
            lines_by_shard=lines_by_shard,
            groups=self._groups(lines_by_shard),
            eligible=eligible,
            rule_args=tuple(rule_args),
            refusal=refusal,
            now=now,
            # Computed as the reference ledger does (now + ttl), before anything is written.
            expires_at=now + ttl_s,
            sourcing=_sourcing_mode(sourcing, backorder),
        )
        return plan

    def _reserve_refusal(self, request: ReserveRequest) -> tuple[tuple[str, str, str], tuple[str, ...]]:
        """The reference ledger's checks after the idempotency check, on the network copy.

        Decided here, applied by the script only when the reservation does not
        exist yet (a replay succeeds even if the channel changed since).
        """
        channel = self._net.channels.get(request.channel)
        if channel is None:
            return ("CHANNEL", "", ""), ()
        eligible = channel.nodes
        for i, line in enumerate(request.lines):
            if line.node is not None:
                if line.node not in self._net.nodes:
                    return ("UNKNOWN_NODE", line.node, f"lines[{i}].node"), eligible
                if line.node not in eligible:
                    return ("NOT_ELIGIBLE", line.node, f"lines[{i}].node"), eligible
        return ("", "", ""), eligible

    def _reserve_call(self, plan: ReservePlan, dir_shard: int) -> tuple[str, list[str], list[Arg]]:
        """The one-call reserve script's name, keys and arguments for a single-slot plan."""
        facts, rid = plan.facts, plan.reservation_id
        [shards] = plan.groups
        return (
            "reserve",
            [self._keys.directory(rid), self._keys.shard_meta(dir_shard), *self._xkeys(shards)],
            [
                ms(plan.now), self._feedmax, rid, plan.body, int(facts.allow_partial),
                seconds(plan.now), seconds(plan.expires_at), ms(plan.expires_at),
                ",".join(map(str, facts.shards)), *plan.refusal,
                len(plan.eligible), *plan.eligible, facts.channel, *plan.rule_args, plan.sourcing,
                *plan.group_args(shards),
            ],
        )  # fmt: skip

    def reserve_script_call(self, request: ReserveRequest) -> tuple[str, list[str], list[Arg]]:
        """The exact ``EVALSHA`` (sha, keys, args) ``reserve`` would send on standalone Redis.

        For benchmarks that drive the script without the Python client in the
        way (``inventory-engine bench redis``). The channel and nodes must be in
        this process's network copy already.
        """
        runner = self._check_open()
        if self._cluster:
            raise ValueError("reserve_script_call is for standalone Redis: one script per reservation")
        plan = self._plan(request, _check_reserve(request), *self._reserve_refusal(request))
        name, keys, args = self._reserve_call(plan, self._keys.shard_of_reservation(request.reservation_id))
        return runner.scripts[name].sha, keys, args

    async def _reserve_in_one_call(
        self, runner: ScriptRunner, plan: ReservePlan, dir_shard: int
    ) -> Reservation:
        facts, rid = plan.facts, plan.reservation_id
        reply = await runner.call(*self._reserve_call(plan, dir_shard))
        if reply[0] != "OK":
            raise replies.reservation_error(rid, facts.channel, reply)
        return replies.assemble_reservation(rid, facts.channel, facts.ttl_s, facts.allow_partial, reply[1])

    def _remember(self, rid: str, facts: ReservationFacts) -> None:
        if rid not in self._facts:
            if len(self._facts) >= FACTS_CACHE_SIZE:
                del self._facts[next(iter(self._facts))]  # the oldest
            self._facts[rid] = facts

    async def _facts_of(self, rid: str) -> ReservationFacts:
        facts = self._facts.get(rid)
        if facts is not None:
            return facts
        status, shards, body = await self._guard(
            self.client.hmget(self._keys.directory(rid), ["st", "sh", "b"])
        )
        if status != "DONE":
            # Absent, or a cross-slot attempt never acknowledged.
            raise replies.not_found(rid)
        facts = ReservePlan.facts_from_body(body, shards)
        self._remember(rid, facts)
        return facts

    async def _by_id(self, op: str, rid: str, extra: Sequence[Arg], now: float | None = None) -> Reservation:
        runner = self._check_open()
        facts = await self._facts_of(rid)
        now = self._now() if now is None else now
        groups = self._groups(facts.shards)
        if len(groups) > 1:
            assert self._cross is not None
            try:
                if op == "get":
                    return await self._cross.read(rid, facts, groups, now)
                return await self._cross.transition(op, rid, facts, groups, now, extra)
            finally:
                self._wrote(facts.shards)
        [shards] = groups
        # One script call: atomic, so a script with a dry run (fulfill) just applies.
        apply = (0,) if op in DRY_RUN_OPS else ()
        reply = await runner.call(
            op, self._xkeys(shards), [ms(now), self._feedmax, rid, facts.lines, 0, *extra, *apply]
        )
        # Every one of these scripts may write, "get" too: it expires what is due first.
        self._wrote(facts.shards)
        if reply[0] != "OK":
            raise replies.transition_error(rid, reply)
        return replies.assemble_reservation(rid, facts.channel, facts.ttl_s, facts.allow_partial, reply[1])

    async def commit(self, reservation_id: str) -> Reservation:
        reservation = await self._by_id("commit", reservation_id, ())
        try:
            await self._count_release(reservation)
        except StoreUnavailable as exc:
            # The order is committed: say so. Capacity only moves promise
            # dates, so a count lost to an outage costs an optimistic date.
            log.warning("commit of %s not counted against daily capacity: %s", reservation_id, exc)
        return reservation

    async def release(self, reservation_id: str, line_indexes: Sequence[int] | None) -> Reservation:
        return await self._by_id("release", reservation_id, _index_args(line_indexes))

    async def fulfill(self, reservation_id: str, line_indexes: Sequence[int] | None) -> Reservation:
        return await self._by_id("fulfill", reservation_id, _index_args(line_indexes))

    async def extend(self, reservation_id: str, ttl_s: float) -> Reservation:
        now = self._now()
        expires_at = now + float(ttl_s)
        return await self._by_id("extend", reservation_id, (seconds(expires_at), ms(expires_at)), now)

    async def get_reservation(self, reservation_id: str) -> Reservation:
        return await self._by_id("get", reservation_id, ())

    # --------------------------------------------------------------- availability

    async def availability(
        self,
        skus: Sequence[str],
        channel: str | None,
        nodes: Sequence[str] | None,
        per_node: bool,
    ) -> list[SkuAvailability]:
        self._check_open()
        for i, sku in enumerate(skus):
            _check_sku(sku, f"skus[{i}]")
        selected = await self._select_nodes(channel, nodes)
        # A channel with rules sees its allowance at the nodes where it has one.
        definition = self._net.channels.get(channel) if channel is not None else None
        rules = _rules_by_node(definition, self._net.nodes) if definition is not None else {}
        unique = list(dict.fromkeys(skus))
        from_view = self._availability_from_view(unique, selected, per_node, definition if rules else None)
        if from_view is not None:
            by_sku = {level.sku: level for level in from_view}
            return [by_sku[sku] for sku in skus]
        read = await self._read_rows(unique, selected, channel if rules and channel is not None else "")
        values = dict(zip(unique, read, strict=True))
        out: list[SkuAvailability] = []
        for sku in skus:
            row = values[sku]
            total = 0
            breakdown: list[NodeAvailability] = []
            for i, node in enumerate(selected):
                on_hand, reserved, committed, safety, _, used = row[6 * i : 6 * i + 6]
                safety = self._net.safety_in_effect(node, safety)
                rule = rules.get(node)
                if rule is not None:
                    atp = channel_allowance(on_hand, reserved, committed, safety, rule[0], rule[1], used)
                else:
                    atp = max(0, on_hand - reserved - committed - safety)
                total += atp
                if per_node:
                    breakdown.append(NodeAvailability(node, on_hand, reserved, committed, safety, atp))
            out.append(SkuAvailability(sku, total, tuple(breakdown)))
        return out

    def _availability_from_view(
        self, skus: Sequence[str], selected: Sequence[str], per_node: bool, ruled: Channel | None = None
    ) -> list[SkuAvailability] | None:
        """The answer from this process's view, or None when only Redis can give it.

        The view answers when it knows every selected node and has caught up,
        by a feed read that began after this process's last write to the SKUs'
        shards, within its lag budget: a client never reads less than what its
        own reserve just took (read-your-writes), and what other processes did
        shows within ``view_max_lag_s``, like any replica read. The nodes are
        the ones the network copy selected, so the view's own channel list,
        which may trail an UpsertChannel by a moment, is never consulted;
        except for a channel with allocation rules (``ruled``), whose allowances
        the view computes only while its definition is the network copy's.
        """
        view = self.view
        if view is None or not selected or not view.knows_nodes(selected):
            return None
        wrote_at, shard_of = self._wrote_at, self._keys.shard_of_sku
        written = max((wrote_at.get(shard_of(sku), -1.0) for sku in skus), default=-1.0) if wrote_at else -1.0
        if not view.covers(written):
            return None
        if ruled is not None and not view.channel_is(ruled):
            return None
        self.view_availability_reads += 1
        return view.availability(skus, ruled.id if ruled is not None else None, selected, per_node)

    async def _select_nodes(self, channel: str | None, nodes: Sequence[str] | None) -> Sequence[str]:
        """The reference ledger's node selection, on the network copy."""
        await self._knows(channels=[channel] if channel is not None else [], nodes=nodes or ())
        net = self._net
        eligible: tuple[str, ...] | None = None
        if channel is not None:
            found = net.channels.get(channel)
            if found is None:
                raise UnknownChannel(channel)
            eligible = found.nodes
            if not nodes:
                return eligible
        elif not nodes:
            raise InvalidArgument(
                "give a channel, nodes, or both",
                (FieldViolation("channel", "a channel or at least one node is required"),),
            )
        seen: set[str] = set()
        for i, node in enumerate(nodes):
            if node not in net.nodes:
                raise UnknownNode(node, field=f"nodes[{i}]")
            if channel is not None and eligible is not None and node not in eligible:
                raise NodeNotEligible(node, channel, field=f"nodes[{i}]")
            if node in seen:
                raise InvalidArgument(
                    f"node {node!r} is listed twice",
                    (FieldViolation(f"nodes[{i}]", f"node {node!r} is listed twice"),),
                )
            seen.add(node)
        return nodes

    async def read_shard(
        self, shard: int
    ) -> tuple[list[tuple[str, str, int, int, int, int, int, dict[str, int]]], str]:
        """Every row of one shard as ``(sku, node, on_hand, reserved, committed,
        safety_stock, version, channel_used by channel)``, and the id of the
        shard's newest feed entry, read atomically: what a feed reader reloads a
        shard from after a gap, before following the feed after that id."""
        runner = self._check_open()
        last_id, flat = await runner.call(
            "shard_rows", [self._keys.expiry(shard)], [ms(self._now()), self._feedmax]
        )
        rows = [
            (flat[i], flat[i + 1], int(flat[i + 2]), int(flat[i + 3]), int(flat[i + 4]), int(flat[i + 5]),
             int(flat[i + 6]), _usage(flat[i + 7]))
            for i in range(0, len(flat), 8)
        ]  # fmt: skip
        return rows, last_id

    # ------------------------------------------------------------- future supply
    #
    # The inbound book lives in one slot (keys.py, "Future supply"), so each
    # call is one script on standalone Redis and on a Cluster alike. Nodes are
    # checked on the network copy (reloaded first if it lacks one): nodes are
    # never deleted, so a node known here exists when the script runs.

    def _inbound_keys(self) -> list[str]:
        return [self._keys.inbound_records(), self._keys.inbound_ids()]

    async def upsert_inbound(self, records: Sequence[InboundSupply]) -> list[InboundOutcome]:
        runner = self._check_open()
        await self._knows(nodes=(r.node for r in records))
        check_inbound_batch(records, self._net.nodes.__contains__)
        if not records:
            return []
        args: list[Arg] = [self._keys.inbound_prefix, len(records)]
        for r in records:
            args += [r.id, r.sku, r.node, encode_inbound(r)]
        codes = await runner.call("inbound_upsert", self._inbound_keys(), args)
        return [InboundOutcome(int(code)) for code in codes]

    async def remove_inbound(self, ids: Sequence[str]) -> list[bool]:
        runner = self._check_open()
        if not ids:
            return []
        flags = await runner.call("inbound_remove", self._inbound_keys(), [self._keys.inbound_prefix, *ids])
        return [bool(int(flag)) for flag in flags]

    async def inbound(self, skus: Sequence[str]) -> list[InboundSupply]:
        runner = self._check_open()
        unique = list(dict.fromkeys(skus))
        if not unique:
            return []
        found = await runner.call(
            "inbound_read", [self._keys.inbound_records()], [self._keys.inbound_prefix, *unique]
        )
        return [decode_inbound(text) for text in found]

    async def list_inbound(
        self, *, sku: str | None = None, node: str | None = None, after: str | None = None, limit: int = 100
    ) -> InboundPage:
        runner = self._check_open()
        reply = await runner.call(
            "inbound_list",
            self._inbound_keys(),
            [self._keys.inbound_prefix, sku or "", node or "", after or "", max(1, int(limit))],
        )
        records = tuple(decode_inbound(text) for text in reply[1:])
        more = int(reply[0]) == 1 and bool(records)
        return InboundPage(records, records[-1].id if more else None)

    # ---------------------------------------------------------------------- audit

    async def audit(self) -> AuditReport:
        """The invariants, shard by shard (each read atomically), plus the network.

        Like the embedded store's, it expires nothing first: a hold more than a
        second past its expiry means no sweeper is doing its job, and that is reported.
        """
        runner = self._check_open()
        now = self._now()
        # The inbound book before the rows: a receipt removes its record, then
        # adds the units to on_hand (README), so the audit sees its record or
        # its units or both, never neither, unless the receipt's own gap
        # between those two calls spans the whole audit.
        expected = await self._expected_inbound()
        futures = [runner.call("audit", [self._keys.expiry(k)], []) for k in range(self._keys.shards)]
        shards = [ShardAudit.from_reply(await future) for future in futures]
        await self._reload_network()
        return build_report(shards, now, self._net, expected)

    async def _expected_inbound(self) -> dict[tuple[str, str], int]:
        """Units of inbound supply expected per (SKU, node): every record of the
        book (they are few), summed; what backorder holds there count on."""
        expected: dict[tuple[str, str], int] = {}
        after: str | None = None
        while True:
            page = await self.list_inbound(after=after, limit=MAX_INBOUND_PAGE)
            for record in page.records:
                key = (record.sku, record.node)
                expected[key] = expected.get(key, 0) + record.quantity
            if page.next_after is None:
                return expected
            after = page.next_after

    # -------------------------------------------------------------------- sweeper

    async def _sweep_loop(self) -> None:
        interval = self.config.sweep_interval_s
        task = asyncio.current_task()
        # While Redis is out of reach the sweep fails every interval: the first
        # skip is logged, then one line per SKIPPED_SWEEPS_LOG_S, and the end.
        skipped, logged_at = 0, float("-inf")
        # The phase test ends the loop even if a cancellation was swallowed on
        # the way (a client library turning it into a connection error).
        while self._phase == "running":
            await asyncio.sleep(interval)
            try:
                await self._sweep_tick()
            except Exception as exc:  # a sweep must never kill the sweeper
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                if self._phase != "running":
                    return  # closing: the sweep was cut short on purpose
                if isinstance(exc, StoreUnavailable):
                    skipped += 1
                    if time.monotonic() - logged_at >= SKIPPED_SWEEPS_LOG_S:
                        logged_at = time.monotonic()
                        log.warning("expiry sweep skipped (%d in this outage): %s", skipped, exc)
                else:
                    log.exception("expiry sweep failed")
            else:
                if skipped:
                    log.warning("expiry sweeps resumed after %d skipped", skipped)
                    skipped, logged_at = 0, float("-inf")

    def _lease_ms(self) -> int:
        # Three ticks of slack before another process takes over: a loop stall
        # does not make the sweeper change hands (two sweeping at once would be
        # harmless anyway: expiry is idempotent).
        return max(1, int(3 * self.config.sweep_interval_s * 1000))

    async def _sweep_tick(self) -> None:
        runner = self._check_open()
        await self._check_network_version()
        held = await runner.call("lease", [self._keys.sweeper], [self._owner, "hold", self._lease_ms()])
        if held != 1:
            if self._lease_held:
                log.info("another engine process sweeps expired holds now")
            self._lease_held = False
            self._expiry_totals = None  # the holder reports expiries; a new baseline when ours again
            return
        if not self._lease_held:
            log.info("this engine process sweeps expired holds")
        self._lease_held = True
        await self._sweep()

    async def _sweep(self) -> list[str]:
        runner = self._check_open()
        now = ms(self._now())
        expired: dict[str, float] = {}
        pending = list(range(self._keys.shards))
        while pending:
            futures = [
                (k, runner.call("expire", [self._keys.expiry(k)], [now, self._feedmax, SWEEP_LIMIT]))
                for k in pending
            ]
            pending = []
            counts: dict[tuple[int, str], int] = {}
            for shard, future in futures:
                more, pairs, totals = await future
                if pairs:
                    self._wrote((shard,))  # units came back: availability reads must see it
                for i in range(0, len(pairs), 2):
                    expired[pairs[i]] = float(pairs[i + 1])
                for i in range(0, len(totals), 2):
                    counts[(shard, totals[i])] = int(totals[i + 1])
                if more == 1:
                    pending.append(shard)
            self._report_expiries(counts)
        self._sweeps += 1
        self._expired_holds += len(expired)
        self._last_sweep_at = time.monotonic()
        self._last_sweep_lateness_s = max((self._now() - at for at in expired.values()), default=0.0)
        return [rid for _, rid in sorted((at, rid) for rid, at in expired.items())]

    def _report_expiries(self, totals: dict[tuple[int, str], int]) -> None:
        """Count expired reservations from the shards' running totals.

        Every script that expires holds (the sweep, or lazily any script that
        touches the shard first) adds to its shard's total by channel, so the
        totals see every expiry, across all processes. The process holding the
        sweeper lease reports what they gained since its previous sweep; its
        first sweep only takes them as a baseline (what came before was
        reported by the previous holder, or by nobody if none ran).
        """
        seen = self._expiry_totals
        if seen is None:
            self._expiry_totals = dict(totals)
            return
        gained: list[str] = []
        for key, total in totals.items():
            delta = total - seen.get(key, 0)
            if delta > 0:
                gained.extend([key[1]] * delta)
            seen[key] = total
        if gained:
            metrics.record_expired(gained)

    async def expire_now(self) -> list[str]:
        """Run one sweep now, lease or not; returns the reservation ids whose holds
        expired, ordered by (expires_at, id)."""
        return await self._sweep()


def _rules_by_node(channel: Channel | None, nodes: Mapping[str, Node]) -> dict[str, tuple[int, int]]:
    """The channel's allocation rule at each eligible node that has one, as the scripts take them."""
    if channel is None or not channel.allocation_rules:
        return {}  # the common case costs nothing
    resolved = resolve_channel_rules(channel, nodes) or []
    return {n: rule for n, rule in zip(channel.nodes, resolved, strict=True) if rule[0] != RuleKind.NONE}


def _usage(text: str) -> dict[str, int]:
    """``channel TAB units TAB ...`` (shard_rows.lua) as a dict."""
    if not text:
        return {}
    parts = text.split("\t")
    return {parts[i]: int(parts[i + 1]) for i in range(0, len(parts), 2)}


def _ranked_args(sourcing: RankedSourcing, index: int, node: str | None, eligible: Sequence[str]) -> Line:
    """A line's candidates for the reserve scripts: count (-1: the channel's
    order), then the nodes, filtered as the ledgers filter them (eligible for
    the channel by this process's network copy, each once) so the script never
    counts a row twice."""
    ranked = sourcing.candidates[index]
    if node is not None or ranked is None:
        return (-1,)
    usable = usable_candidates(ranked, eligible)
    return (len(usable), *usable)


def _check_reserve(request: ReserveRequest) -> tuple[int, ...] | None:
    """What the ledgers refuse as InvalidArgument before sourcing, checked here
    before any script runs (a script cannot raise the field violations); returns
    the backorder allowances as ``check_backorder`` does (None: no line may be
    backordered)."""
    if not request.lines:
        # The edge refuses it too; a reservation of nothing would have no shard to live in.
        raise InvalidArgument(
            "lines must not be empty", (FieldViolation("lines", "at least one line is required"),)
        )
    for i, line in enumerate(request.lines):
        _check_sku(line.sku, f"lines[{i}].sku")
    sourcing = request.sourcing
    if sourcing is None:
        return None
    if len(sourcing.candidates) != len(request.lines):
        # As the ledgers refuse it.
        count = len(sourcing.candidates)
        raise InvalidArgument(
            "give one candidate list per line",
            (FieldViolation("candidates", f"{count} candidate lists for {len(request.lines)} lines"),),
        )
    # The ledgers' own check (length, negative entries, one node per backorder
    # line), so every store refuses the same requests with the same fields.
    return check_backorder(request.lines, sourcing.candidates, sourcing.backorder)


def _sourcing_mode(sourcing: RankedSourcing | None, backorder: tuple[int, ...] | None) -> str:
    """The scripts' sourcing argument (see reserve.lua): '' for the channel's
    order, '0'/'1' for ranked candidates (whole lines only: '1'), with 'b' when
    the lines carry backorder allowances."""
    if sourcing is None:
        return ""
    return ("1" if sourcing.whole_lines else "0") + ("b" if backorder is not None else "")


def _index_args(line_indexes: Sequence[int] | None) -> list[Arg]:
    if line_indexes is None:
        return [0, 0]
    indexes = [int(i) for i in line_indexes]
    return [1, len(indexes), *indexes]


def _check_sku(sku: str, field: str) -> None:
    # The edge validation refuses these already. A key's hash tag is its first
    # {...}, the shard's, so a brace in a SKU would not move the key; it is
    # refused anyway so that no key ever carries a second tag-like part.
    if "{" in sku or "}" in sku:
        raise InvalidArgument(
            f"{field} must not contain '{{' or '}}'",
            (FieldViolation(field, "must not contain '{' or '}' (Redis Cluster hash tags)"),),
        )
