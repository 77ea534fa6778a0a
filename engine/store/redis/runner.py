"""Every script call goes through one runner, which coalesces and pipelines them.

Calls issued during one turn of the event loop are sent as ONE pipeline: the
first call of a batch schedules the flush with ``loop.call_soon``, so every
coroutine that runs in the same turn (a burst of concurrent Reserve RPCs, the
sweeper's call for every shard) joins it.

Each Redis server has one pipeline out at a time (a lane per server: one on
standalone Redis, one per master on a Cluster). Calls made while it is out
wait and leave together the moment its reply is in, the way a journal's group
commit works: at light load a call leaves at once, under load batches grow by
themselves. Redis runs one server's commands one after another anyway, so a
second pipeline written before the first one's reply gains no parallelism; it
only splits what could have been one write, one read and one reply on each
side. Measured with ``inventory-engine bench grpc --backend redis`` and
``--backend redis-cluster`` (README): a Reserve costs the engine about a
sixth less CPU than with up to 32 small pipelines out at once. A master that
stalls (a failover, a timeout) holds up only the calls bound for it.

Lingering. A fast Redis answers before the next call comes, so under load
that alone still sent a pipeline per call or two, each costing the engine a
task, a ``write``, a read wake-up and its metrics. So a lane whose calls
arrive fast (at least ``LINGER_COMPANY`` expected within ``linger_s``, by the
rate of its last ``RATE_WINDOW_S``) holds its first waiting call up to
``linger_s`` for company, or until ``LINGER_MAX_CALLS`` wait. At that rate
the engine is busy and a call's wait for the CPU is far longer than the
linger. An idle or lightly loaded lane never lingers, nor does the first
call after a pause longer than ``linger_s``.

On standalone Redis a batch goes out over the runner's own
:class:`~engine.store.redis.resp.RespConnection` (one ``write``, replies parsed
by hiredis: a fraction of redis-py's cost per pipeline, see ``resp.py``), or
as a redis-py pipeline where there is none (TLS).

On a Redis Cluster a batch is split per master (by the slot of each call's
first key, from redis-py's slot map; every call's keys share a slot) and the
per-master pipelines run concurrently. With ``master_timeout_s`` set (the
store's default) each goes over a connection of the runner's own to its
master, like the standalone one; the calls that come back redirected
(``MOVED``/``ASK``: the slot is served elsewhere now, and a redirected
command was not executed, so resending is safe) are sent again through a
redis-py ``ClusterPipeline``, which follows the redirection and updates the
slot map the lanes are chosen by. A master that cannot be reached fails its
calls as unavailable and has redis-py read the topology again (a failover
moves its slots), at most once a second. Without ``master_timeout_s`` every
per-master pipeline is a ``ClusterPipeline``. A master that fails fails only
the calls sent to it.

``NOSCRIPT`` (Redis restarted without its script cache, ``SCRIPT FLUSH``, a
failover to a node that never saw ``SCRIPT LOAD``): the runner loads every
script on every master again and resends the calls that got it, once.

Redis unreachable, timing out, loading, out of memory, a cluster slot not
served: the call raises :class:`~engine.core.errors.StoreUnavailable`. The
clients are built without redis-py's automatic retries (see
``engine.store.redis.connection``): a script whose reply timed out may have
run, and resending it blindly could apply it twice. Reservations (by id) and
supply changes with an event id are safe for the *caller* to retry; a supply
change without an event id is not, and neither is anything the caller cannot
identify: the error says so in its message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from engine.core.errors import StoreUnavailable
from engine.observability import metrics
from engine.store.redis.resp import Endpoint, RespConnection, pack
from engine.store.redis.scripts import Script

__all__ = ["RunnerStats", "ScriptRunner", "unavailable"]

log = logging.getLogger("engine.store.redis")

Arg = str | int | float

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rx.ConnectionError,  # refused, reset, too many connections, still loading
    rx.TimeoutError,
    rx.ClusterDownError,
    rx.TryAgainError,
    rx.ReadOnlyError,  # a failover in progress: this node became a replica
    rx.OutOfMemoryError,  # scripts are refused before they start (see scripts.py)
    rx.SlotNotCoveredError,
    OSError,
    asyncio.TimeoutError,
)
# Server errors without a class of their own in redis-py that mean "not now".
_UNAVAILABLE_PREFIXES = ("BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS", "OOM")


def unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable that ``exc`` means, or None if it means something else."""
    if isinstance(exc, StoreUnavailable):
        return exc
    if (
        isinstance(exc, _UNAVAILABLE)
        or (isinstance(exc, rx.ResponseError) and str(exc).startswith(_UNAVAILABLE_PREFIXES))
        # redis-py's word for "no startup node answered" when it (re)reads the topology.
        or (isinstance(exc, rx.RedisClusterException) and "cannot be connected" in str(exc))
    ):
        error = StoreUnavailable(
            f"Redis is unavailable ({type(exc).__name__}: {exc}); a call that timed out may have "
            "been applied: retry reservations by their id and supply changes by their event id",
            reason="STORE_UNAVAILABLE",
        )
        error.__cause__ = exc
        return error
    return None


# Replies that say a Cluster slot is served by another node: the command did not run.
_MOVED = ("MOVED ", "ASK ")


def _packed(batch: list[_Call]) -> list[bytes]:
    return [pack("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args) for c in batch]


def _redirected(error: rx.ResponseError) -> bool:
    return str(error).startswith(_MOVED)


async def _via_redis_py(client: Redis | RedisCluster, batch: list[_Call]) -> list[Any]:
    """One redis-py pipeline (a ClusterPipeline follows MOVED/ASK); errors come back in place."""
    pipe = client.pipeline(transaction=False) if isinstance(client, Redis) else client.pipeline()
    for call in batch:
        pipe.execute_command("EVALSHA", call.script.sha, len(call.keys), *call.keys, *call.args)
    return list(await pipe.execute(raise_on_error=False))


@dataclass(slots=True)
class RunnerStats:
    """Counters for a metrics layer."""

    pipelines: int = 0  # pipelines sent (a Cluster batch counts once per master)
    calls: int = 0  # script calls sent, resends included
    last_pipeline_calls: int = 0
    max_pipeline_calls: int = 0
    noscript_reloads: int = 0
    unavailable: int = 0  # calls failed with StoreUnavailable


@dataclass(slots=True)
class _Call:
    script: Script
    keys: Sequence[str]
    args: Sequence[Arg]
    future: asyncio.Future[Any]


# Lingering (see the module docstring): how many calls must be expected meanwhile,
# how many end a linger at once, and the window the arrival rate is measured over.
LINGER_COMPANY = 2.0
LINGER_MAX_CALLS = 64
RATE_WINDOW_S = 0.05


@dataclass(slots=True)
class _Lane:
    """The calls bound for one Redis server, whether its pipeline is out, how fast calls come."""

    server: str = ""  # "host:port" of its master on a Cluster; "" on standalone Redis or not known
    waiting: list[_Call] = field(default_factory=list)
    busy: bool = False
    linger: asyncio.TimerHandle | None = None  # set while the waiting calls linger
    arrivals: int = 0  # calls since window_start
    window_start: float = float("-inf")
    since: float = 0.0  # when the first of the waiting calls came
    gap_s: float = float("inf")  # the time between that call and the one before it
    last_call: float = float("-inf")
    rate: float = 0.0  # calls per second in the last full window


class ScriptRunner:
    """Coalesces script calls into pipelines; loads scripts; recovers NOSCRIPT."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        scripts: dict[str, Script],
        resp: RespConnection | None = None,
        *,
        linger_s: float = 0.0,
        master_timeout_s: float | None = None,
    ) -> None:
        """``resp``: the connection for script pipelines on standalone Redis (None: redis-py's).

        ``linger_s``: the longest a busy lane holds a call for company (0: never).
        ``master_timeout_s``: on a Cluster, send over connections of the
        runner's own to each master, with this timeout (None: redis-py's).
        """
        if resp is not None and isinstance(client, RedisCluster):
            raise ValueError("a RespConnection reaches one server: not for a Redis Cluster")
        if master_timeout_s is not None and not isinstance(client, RedisCluster):
            raise ValueError("master_timeout_s is for a Redis Cluster")
        self._master_timeout_s = master_timeout_s
        self._masters: dict[str, RespConnection] = {}  # by "host:port"
        self._refreshed_at = float("-inf")  # when a topology refresh was last asked for
        self._client = client
        self._resp = resp
        self._cluster = isinstance(client, RedisCluster)
        self.scripts = scripts
        self.stats = RunnerStats()
        self._pending: list[_Call] = []  # made in this turn of the loop, not yet in a lane
        self._scheduled = False
        self._lanes: dict[str, _Lane] = {}  # by server ("" on standalone Redis)
        self._tasks: set[asyncio.Task[None]] = set()
        self._linger_s = linger_s
        self._reload_lock = asyncio.Lock()
        self._loads = 0  # completed loads: a batch sent before the latest one needs no reload of its own
        # Whether the last pipeline reached Redis (the store's health): the
        # sweeper's lease call keeps it current even without client traffic.
        self.reachable = True

    async def load(self) -> None:
        """SCRIPT LOAD every script on the server, or on every master of the Cluster."""
        try:
            if isinstance(self._client, RedisCluster):
                for node in self._client.get_primaries():
                    for script in self.scripts.values():
                        await self._client.execute_command("SCRIPT LOAD", script.text, target_nodes=node)
            else:
                for script in self.scripts.values():
                    await self._client.execute_command("SCRIPT LOAD", script.text)
        except Exception as exc:
            raise unavailable(exc) or exc from None
        self._loads += 1

    def call(self, name: str, keys: Sequence[str], args: Sequence[Arg]) -> asyncio.Future[Any]:
        """Queue one script call; the future resolves with its reply."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Call(self.scripts[name], keys, args, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        touched: dict[str, _Lane] = {}
        now = time.monotonic()
        for call in pending:
            server = self._server_of(call) if self._cluster else ""
            lane = self._lanes.get(server)
            if lane is None:
                lane = self._lanes[server] = _Lane(server)
            touched[server] = lane
            if not lane.waiting:
                lane.since, lane.gap_s = now, now - lane.last_call
            lane.waiting.append(call)
            lane.arrivals += 1
            lane.last_call = now
        for lane in touched.values():
            if now - lane.window_start >= RATE_WINDOW_S:
                # After a quiet spell the window spans it, so the rate comes out low.
                lane.rate = lane.arrivals / max(now - lane.window_start, RATE_WINDOW_S)
                lane.window_start, lane.arrivals = now, 0
            self._dispatch(lane, now)

    def _dispatch(self, lane: _Lane, now: float) -> None:
        """Send the lane's waiting calls now, or once they lingered (never while its pipeline is out)."""
        if lane.busy or not lane.waiting:
            return
        if (
            len(lane.waiting) >= LINGER_MAX_CALLS
            or lane.rate * self._linger_s < LINGER_COMPANY
            or lane.gap_s > self._linger_s  # the first call after a pause: no stream to expect company from
        ):
            self._start(lane)
        elif lane.linger is None:
            delay = lane.since + self._linger_s - now
            if delay > 0:
                lane.linger = asyncio.get_running_loop().call_later(delay, self._start, lane)
            else:
                self._start(lane)

    def _server_of(self, call: _Call) -> str:
        """The Cluster master serving the call's slot ("": not known now; the pipeline will tell)."""
        client = self._client
        assert isinstance(client, RedisCluster)
        try:
            node = client.get_node_from_key(call.keys[0])
        except rx.SlotNotCoveredError:
            return ""
        return node.name if node is not None else ""

    def _start(self, lane: _Lane) -> None:
        if lane.linger is not None:
            lane.linger.cancel()
            lane.linger = None
        batch, lane.waiting = lane.waiting, []
        lane.busy = True
        task = asyncio.get_running_loop().create_task(self._send(batch, lane.server))
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._sent(lane, done))

    def _sent(self, lane: _Lane, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        lane.busy = False
        # What gathered while the pipeline was out leaves as one: now, or when
        # the first of it has lingered long enough.
        self._dispatch(lane, time.monotonic())

    async def close(self) -> None:
        """Send what lingers or waits, and wait for the pipelines in flight (their callers wait for them)."""
        self._linger_s = 0.0  # from now on a lane sends what it has as soon as it may
        for lane in self._lanes.values():
            if lane.linger is not None:
                self._start(lane)
        # A pipeline that returns starts what waited behind it, a task that this loop waits for too.
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        stranded = [call for lane in self._lanes.values() for call in lane.waiting] + self._pending
        for call in stranded:
            if not call.future.done():
                call.future.set_exception(
                    StoreUnavailable("the Redis store is closed", reason="STORE_NOT_RUNNING")
                )
        self._pending = []
        for lane in self._lanes.values():
            lane.waiting = []
        if self._resp is not None:
            await self._resp.close()
        for conn in self._masters.values():
            await conn.close()

    # ------------------------------------------------------------------ sending

    async def _send(self, batch: list[_Call], server: str) -> None:
        interrupted: BaseException | None = None
        try:
            loads = self._loads
            results = await self._pipeline(batch, server)
        except BaseException as exc:
            if unavailable(exc) is not None:
                self.reachable = False
            for call in batch:
                self._fail(call, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.reachable = True
        noscript = [i for i, result in enumerate(results) if isinstance(result, rx.NoScriptError)]
        if noscript:
            try:
                await self._reload(loads)
                again = await self._pipeline([batch[i] for i in noscript], server)
            except BaseException as exc:
                # Only the calls that did not run fail: the others ran, and
                # their callers get their replies.
                if unavailable(exc) is not None:
                    self.reachable = False
                again = [exc] * len(noscript)
                if not isinstance(exc, Exception):
                    interrupted = exc
            for i, result in zip(noscript, again, strict=True):
                results[i] = result
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                self._fail(call, result)
            elif not call.future.done():
                call.future.set_result(result)
        if interrupted is not None:
            raise interrupted

    async def _via_master(self, server: str, batch: list[_Call]) -> list[Any]:
        """One pipeline over the runner's own connection to a Cluster master; redirected calls again."""
        conn = self._masters.get(server)
        if conn is None:
            assert self._master_timeout_s is not None
            host, _, port = server.rpartition(":")
            conn = self._masters[server] = RespConnection(
                Endpoint(host=host, port=int(port)), timeout_s=self._master_timeout_s
            )
        try:
            results = await conn.execute(_packed(batch))
        except Exception:
            self._refresh_topology()
            raise
        moved = [i for i, r in enumerate(results) if isinstance(r, rx.ResponseError) and _redirected(r)]
        if moved:
            try:
                again = await _via_redis_py(self._client, [batch[i] for i in moved])
            except Exception as exc:
                # Only the redirected calls fail: the others ran and keep their replies.
                self._refresh_topology()
                again = [exc] * len(moved)
            for i, result in zip(moved, again, strict=True):
                results[i] = result
        return results

    def _refresh_topology(self) -> None:
        """Have redis-py read the Cluster's topology again (at most once a second), in the background."""
        now = time.monotonic()
        if now - self._refreshed_at < 1.0:
            return
        self._refreshed_at = now
        assert isinstance(self._client, RedisCluster)
        task = asyncio.get_running_loop().create_task(self._refresh(self._client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _refresh(client: RedisCluster) -> None:
        try:
            await client.nodes_manager.initialize()
        except Exception as exc:  # the next failed call asks again
            log.warning("could not read the Redis Cluster topology again: %s", exc)

    def _fail(self, call: _Call, exc: BaseException) -> None:
        if call.future.done():
            return  # the caller was cancelled
        if isinstance(exc, asyncio.CancelledError):
            error: BaseException = StoreUnavailable("the Redis store is closing", reason="STORE_NOT_RUNNING")
        else:
            mapped = unavailable(exc)
            if mapped is not None:
                self.stats.unavailable += 1
            error = mapped or exc
        call.future.set_exception(error)

    async def _reload(self, loads_before: int) -> None:
        async with self._reload_lock:
            if self._loads != loads_before:
                return  # another batch that got NOSCRIPT reloaded them meanwhile
            self.stats.noscript_reloads += 1
            log.warning("Redis answered NOSCRIPT (restarted or flushed?): loading the scripts again")
            await self.load()

    async def _pipeline(self, batch: list[_Call], server: str = "") -> list[Any]:
        stats = self.stats
        stats.pipelines += 1
        stats.calls += len(batch)
        stats.last_pipeline_calls = len(batch)
        if len(batch) > stats.max_pipeline_calls:
            stats.max_pipeline_calls = len(batch)
        metrics.observe_pipeline(len(batch))
        started = time.perf_counter()
        try:
            if self._resp is not None:
                results = await self._resp.execute(_packed(batch))
            elif server and self._master_timeout_s is not None:
                results = await self._via_master(server, batch)
            else:
                results = await _via_redis_py(self._client, batch)
        except Exception as exc:
            for call in batch:
                metrics.record_redis_error(call.script.name, exc)
            raise
        # The pipeline's round trip is each script's latency as its caller saw it.
        elapsed = time.perf_counter() - started
        for call, result in zip(batch, results, strict=True):
            metrics.observe_redis_script(call.script.name, elapsed)
            if isinstance(result, Exception):
                metrics.record_redis_error(call.script.name, result)
        return results
