"""Every metric the engine exports, defined once, and the helpers that record them.

Call sites stay one line (``metrics.record_reservation(channel, "held", units)``)
and never build label sets themselves: the helpers cache each label child, since
``Metric.labels()`` costs more than the increment it precedes and some of these
run once per RPC.

Names follow the Prometheus conventions (checked by ``promtool check metrics`` in
the tests): an ``inventory_`` prefix, base units (seconds), ``_total`` on
counters. Label values come from bounded sets (gRPC methods and codes,
configured channels, script names); :class:`_Children` caps each metric's label
sets anyway, so a bug can never explode a metric's cardinality.

Multiprocess mode (``serve --workers N``, see :mod:`.exposition`): every gauge
declares how the supervisor combines its workers' values. ``livesum`` for
amounts each worker holds a part of (RPCs in flight), ``livemax`` for lags
(the worst worker is the one to look at), ``livemin`` for "is it up" (one worker
that cannot reach Redis is a problem), ``livemostrecent`` for facts about the
shared store that one process measures (the periodic audit), ``liveall`` (one
series per worker pid) for worker identity. The ``live`` modes drop a dead
worker's values as soon as the supervisor notices its death.

This module defines its metrics when imported: the supervisor imports it only
after choosing multiprocess storage.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from importlib import metadata
from typing import TYPE_CHECKING, Generic, Literal, TypeVar

import prometheus_client
from prometheus_client import Counter, Gauge, Histogram

from engine.core.errors import OutOfStock

if TYPE_CHECKING:
    from engine.core.types import Reservation, StockChange

__all__ = [
    "ALL_METRICS",
    "FSYNC_BUCKETS",
    "OUTCOMES",
    "RPC_LATENCY_BUCKETS",
    "SIZE_BUCKETS",
    "Outcome",
    "engine_version",
    "observe_journal_batch",
    "observe_journal_fsync",
    "observe_pipeline",
    "observe_redis_script",
    "declare_channels",
    "record_audit_failure",
    "record_expired",
    "record_held",
    "record_out_of_stock",
    "record_reserve_error",
    "record_transition",
    "record_redis_error",
    "record_reservation",
    "record_sold_out_fast_path",
    "record_supply_changes",
    "record_worker_restart",
    "redis_error_kind",
    "redis_script_timer",
    "series_names",
    "set_audit_result",
    "set_configured_workers",
    "set_event_loop_lag",
    "set_expiry_sweep_lag",
    "set_store_up",
    "set_view_lag",
    "set_worker_info",
]

# A ``_created`` sample per counter and histogram doubles the series count and
# no query here uses it.
prometheus_client.disable_created_metrics()

# 100 us (a no-op RPC on a quiet server) to 1 s (well past any deadline a
# checkout sets), about two buckets per decade so histogram_quantile stays
# within a factor of ~2.5 anywhere in that range; 2.5 s catches the pathological.
RPC_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# fdatasync on NVMe is tens of microseconds, on network disks milliseconds, on a
# failing disk seconds.
FSYNC_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# Records per group commit, commands per Redis pipeline: powers of two.
SIZE_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

Outcome = Literal["held", "out_of_stock", "expired", "released", "committed", "fulfilled"]
OUTCOMES: tuple[Outcome, ...] = ("held", "out_of_stock", "expired", "released", "committed", "fulfilled")

# Beyond this many label sets per metric, new ones are folded into "other".
MAX_LABEL_SETS = 2000
OTHER = "other"

# ------------------------------------------------------------------------ RPCs

RPC_HANDLED = Counter(
    "inventory_rpc_handled_total",
    "RPCs of the engine's services completed, by gRPC service, method and status code.",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "inventory_rpc_duration_seconds",
    "Time to handle an RPC of the engine's services, from the interceptors to the handler's answer, "
    "by gRPC service and method.",
    ["service", "method"],
    buckets=RPC_LATENCY_BUCKETS,
)
RPC_IN_FLIGHT = Gauge(
    "inventory_rpc_in_flight",
    "RPCs of the engine's services being handled now, by gRPC service and method.",
    ["service", "method"],
    multiprocess_mode="livesum",
)

# ---------------------------------------------------------------- reservations

RESERVATIONS = Counter(
    "inventory_reservations_total",
    "Reservations that reached an outcome (held, out_of_stock, expired, released, committed, "
    "fulfilled), by sales channel; expired counts a reservation whose first line was held until "
    "its hold expired.",
    ["channel", "outcome"],
)
RESERVED_UNITS = Counter(
    "inventory_reserved_units_total",
    "Units held by new reservations, by sales channel.",
    ["channel"],
)
OUT_OF_STOCK_REJECTIONS = Counter(
    "inventory_out_of_stock_rejections_total",
    "Reservation lines refused or cut short for lack of stock (oversell attempts turned away), "
    "by sales channel.",
    ["channel"],
)
SOLD_OUT_FAST_PATH_HITS = Counter(
    "inventory_sold_out_fast_path_hits_total",
    "Reserve requests refused from the in-memory view without a store round trip (Redis mode), "
    "by sales channel.",
    ["channel"],
)

# ------------------------------------------------------------ supply, shortages

SHORTAGES_CREATED = Counter(
    "inventory_shortages_created_total",
    "Supply changes that left a (SKU, node) row with more units held and committed than on hand.",
)
SHORTAGE_ROWS = Gauge(
    "inventory_shortage_rows",
    "(SKU, node) rows with more units held and committed than on hand, at the last periodic audit.",
    multiprocess_mode="livemostrecent",
)
SHORTAGE_UNITS = Gauge(
    "inventory_shortage_units",
    "Units held or committed but not on hand, summed over all rows, at the last periodic audit.",
    multiprocess_mode="livemostrecent",
)
INVARIANT_VIOLATIONS = Gauge(
    "inventory_invariant_violations",
    "Invariant violations (oversold rows, ledger and counters disagreeing, overdue holds) found by "
    "the last periodic audit.",
    multiprocess_mode="livemostrecent",
)
AUDIT_RUNS = Counter(
    "inventory_audit_runs_total",
    "Periodic audits run, by result (ok, violations, failed).",
    ["result"],
)
AUDIT_LAST_COMPLETION = Gauge(
    "inventory_audit_last_completion_timestamp_seconds",
    "Unix time at which the last periodic audit completed.",
    multiprocess_mode="livemostrecent",
)
AUDIT_LAST_DURATION = Gauge(
    "inventory_audit_last_duration_seconds",
    "How long the last periodic audit took (it pauses the event loop of the embedded store).",
    multiprocess_mode="livemostrecent",
)

# ----------------------------------------------------------------------- expiry

EXPIRY_SWEEP_LAG = Gauge(
    "inventory_expiry_sweep_lag_seconds",
    "How far past its expiry the oldest hold still held is (0 when none is due); expired holds "
    "must return their units within 1 s.",
    multiprocess_mode="livemax",
)

# ----------------------------------------------------------- store, journal

STORE_UP = Gauge(
    "inventory_store_up",
    "1 while the store takes writes (embedded: the journal works; Redis: Redis answers), else 0.",
    ["store"],
    multiprocess_mode="livemin",
)
JOURNAL_FSYNC = Histogram(
    "inventory_journal_fsync_seconds",
    "Duration of each journal fsync of the embedded store.",
    buckets=FSYNC_BUCKETS,
)
JOURNAL_BATCH_RECORDS = Histogram(
    "inventory_journal_batch_records",
    "Journal records written per group commit (one fsync) of the embedded store.",
    buckets=SIZE_BUCKETS,
)
JOURNAL_RECORDS = Counter(
    "inventory_journal_records_total",
    "Records appended to the journal of the embedded store.",
)
JOURNAL_BYTES = Counter(
    "inventory_journal_bytes_total",
    "Bytes written to the journal of the embedded store.",
)
JOURNAL_DURABLE_LAG = Gauge(
    "inventory_journal_durable_lag_records",
    "Journal records applied in memory but not yet fsynced (the group commit in progress).",
    multiprocess_mode="livemax",
)
SNAPSHOTS = Counter(
    "inventory_snapshots_total",
    "Snapshots of the embedded store, by result (ok, failed).",
    ["result"],
)

# ------------------------------------------------------------------------ Redis

REDIS_SCRIPT_DURATION = Histogram(
    "inventory_redis_script_duration_seconds",
    "Round trip of each Redis script (or Redis Function) call, by script.",
    ["script"],
    buckets=RPC_LATENCY_BUCKETS,
)
REDIS_SCRIPT_ERRORS = Counter(
    "inventory_redis_script_errors_total",
    "Redis script calls that failed, by script and error kind (connection, timeout, cluster_down, "
    "noscript, response, other).",
    ["script", "error"],
)
REDIS_PIPELINE_COMMANDS = Histogram(
    "inventory_redis_pipeline_commands",
    "Commands coalesced into one Redis pipeline round trip.",
    buckets=SIZE_BUCKETS,
)
VIEW_LAG = Gauge(
    "inventory_view_lag_seconds",
    "Time since the in-memory availability view last caught up with the store's change feed "
    "(worst worker; +Inf until the first catch-up or after a gap).",
    multiprocess_mode="livemax",
)

# ------------------------------------------------------------------- processes

WORKER_INFO = Gauge(
    "inventory_worker_info",
    "Always 1: one series per engine process serving gRPC, with its worker index, store kind, "
    "ledger implementation and engine version.",
    ["worker", "store", "ledger", "version"],
    multiprocess_mode="liveall",
)
CONFIGURED_WORKERS = Gauge(
    "inventory_configured_workers",
    "Worker processes the serve --workers supervisor keeps running.",
    multiprocess_mode="livemax",
)
WORKER_RESTARTS = Counter(
    "inventory_worker_restarts_total",
    "Worker processes that died and were restarted by the serve --workers supervisor.",
)
EVENT_LOOP_LAG = Gauge(
    "inventory_event_loop_lag_seconds",
    "How late the periodic metrics sampler woke up on the event loop (worst worker): the time "
    "any callback waits behind work that does not yield.",
    multiprocess_mode="livemax",
)

ALL_METRICS: tuple[Counter | Gauge | Histogram, ...] = (
    RPC_HANDLED,
    RPC_DURATION,
    RPC_IN_FLIGHT,
    RESERVATIONS,
    RESERVED_UNITS,
    OUT_OF_STOCK_REJECTIONS,
    SOLD_OUT_FAST_PATH_HITS,
    SHORTAGES_CREATED,
    SHORTAGE_ROWS,
    SHORTAGE_UNITS,
    INVARIANT_VIOLATIONS,
    AUDIT_RUNS,
    AUDIT_LAST_COMPLETION,
    AUDIT_LAST_DURATION,
    EXPIRY_SWEEP_LAG,
    STORE_UP,
    JOURNAL_FSYNC,
    JOURNAL_BATCH_RECORDS,
    JOURNAL_RECORDS,
    JOURNAL_BYTES,
    JOURNAL_DURABLE_LAG,
    SNAPSHOTS,
    REDIS_SCRIPT_DURATION,
    REDIS_SCRIPT_ERRORS,
    REDIS_PIPELINE_COMMANDS,
    VIEW_LAG,
    WORKER_INFO,
    CONFIGURED_WORKERS,
    WORKER_RESTARTS,
    EVENT_LOOP_LAG,
)

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def series_names() -> frozenset[str]:
    """Every sample name the engine can export (``_total``, ``_bucket``... included).

    Dashboards and rules must query only these (tests check it).
    """
    names: set[str] = set()
    for metric in ALL_METRICS:
        for family in metric.describe():
            names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)


def engine_version() -> str:
    try:
        return metadata.version("inventory-engine")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"


# ------------------------------------------------------------ label children

_M = TypeVar("_M", Counter, Gauge, Histogram)


class _Children(Generic[_M]):
    """Label children of one metric, cached by label values, at most ``MAX_LABEL_SETS``."""

    __slots__ = ("_cache", "_make", "_width")

    def __init__(self, metric: _M, width: int) -> None:
        self._make: Callable[..., _M] = metric.labels
        self._width = width
        self._cache: dict[tuple[str, ...], _M] = {}

    def get(self, *values: str) -> _M:
        child = self._cache.get(values)
        if child is None:
            if len(self._cache) >= MAX_LABEL_SETS:
                values = (OTHER,) * self._width
                child = self._cache.get(values)
                if child is not None:
                    return child
            child = self._cache[values] = self._make(*values)
        return child


_reservations = _Children(RESERVATIONS, 2)
_reserved_units = _Children(RESERVED_UNITS, 1)
_out_of_stock = _Children(OUT_OF_STOCK_REJECTIONS, 1)
_fast_path = _Children(SOLD_OUT_FAST_PATH_HITS, 1)
_store_up = _Children(STORE_UP, 1)
_script_duration = _Children(REDIS_SCRIPT_DURATION, 1)
_script_errors = _Children(REDIS_SCRIPT_ERRORS, 2)


# --------------------------------------------------------------- domain helpers


def record_reservation(channel: str, outcome: Outcome, units: int = 0) -> None:
    """One reservation reached ``outcome`` (not for idempotent replays).

    ``units``: for ``held``, the units the new hold took (added to units reserved).
    A partial reservation that held something is ``held``; its short lines go to
    :func:`record_out_of_stock` as well.
    """
    _reservations.get(channel, outcome).inc()
    if units > 0:
        _reserved_units.get(channel).inc(units)


def record_held(reservation: Reservation) -> None:
    """A new reservation took effect (not an idempotent replay): held, its units, its short lines.

    A partial reservation that held nothing at all is refused by the stores with
    OUT_OF_STOCK, so whatever reaches here held something.
    """
    units = 0
    short = 0
    for line in reservation.lines:
        allocated = line.allocated
        units += allocated
        if allocated < line.requested:
            short += 1
    record_reservation(reservation.channel, "held", units)
    record_out_of_stock(reservation.channel, short)


def record_reserve_error(channel: str, error: BaseException) -> None:
    """A reserve request failed: counted when it failed for lack of stock, ignored otherwise.

    Meant for the one place every reserve failure passes (the servicer), so the
    store's refusal and the sold-out fast path are counted alike.
    """
    if isinstance(error, OutOfStock):
        record_reservation(channel, "out_of_stock")
        record_out_of_stock(channel, len(error.shortfalls))


def record_transition(outcome: Outcome, reservation: Reservation) -> None:
    """A commit, release or fulfill took effect on ``reservation`` (the store's answer)."""
    record_reservation(reservation.channel, outcome)


def record_expired(channels: Iterable[str]) -> None:
    """Holds of these channels (one entry per expired reservation) expired."""
    for channel in channels:
        record_reservation(channel, "expired")


def record_out_of_stock(channel: str, short_lines: int) -> None:
    """``short_lines`` lines of one reserve request were refused or cut short for lack of stock."""
    if short_lines > 0:
        _out_of_stock.get(channel).inc(short_lines)


def record_sold_out_fast_path(channel: str) -> None:
    """A reserve was refused from the fresh in-memory view, without running a script."""
    _fast_path.get(channel).inc()


def record_supply_changes(
    changes: Sequence[StockChange], expected: Mapping[tuple[str, str], int] | None = None
) -> None:
    """After a supply batch: count the applied changes that left their row short.

    ``expected``: the inbound units expected per (SKU, node). A row whose
    backorders wait for supply is short by design up to them (the audit's
    rule, ``future_supply.uncovered_shortages``): only what goes beyond counts.
    """
    expected = expected or {}
    created = sum(
        1
        for change in changes
        if change.applied
        and change.level.shortage > expected.get((change.level.sku, change.level.node), 0)
    )
    if created:
        SHORTAGES_CREATED.inc(created)


def set_audit_result(*, violations: int, shortage_rows: int, shortage_units: int, duration_s: float) -> None:
    INVARIANT_VIOLATIONS.set(violations)
    SHORTAGE_ROWS.set(shortage_rows)
    SHORTAGE_UNITS.set(shortage_units)
    AUDIT_LAST_DURATION.set(duration_s)
    AUDIT_LAST_COMPLETION.set(time.time())
    AUDIT_RUNS.labels("violations" if violations else "ok").inc()


def record_audit_failure() -> None:
    AUDIT_RUNS.labels("failed").inc()


def set_expiry_sweep_lag(seconds: float) -> None:
    EXPIRY_SWEEP_LAG.set(max(0.0, seconds))


def set_store_up(store: str, up: bool) -> None:
    _store_up.get(store).set(1 if up else 0)


# ------------------------------------------------------------------- journal


def observe_journal_fsync(seconds: float) -> None:
    """One fsync of the journal took ``seconds`` (thread-safe: the journal thread calls it)."""
    JOURNAL_FSYNC.observe(seconds)


def observe_journal_batch(records: int) -> None:
    """One group commit wrote ``records`` records."""
    JOURNAL_BATCH_RECORDS.observe(records)


# --------------------------------------------------------------------- Redis

# Exception class names (redis-py's and the builtins) to error kinds, most
# specific first; matched along the exception's MRO so this module need not
# import redis.
_REDIS_ERROR_KINDS: tuple[tuple[str, str], ...] = (
    ("ClusterDownError", "cluster_down"),
    ("NoScriptError", "noscript"),
    ("TimeoutError", "timeout"),
    ("ConnectionError", "connection"),
    ("ResponseError", "response"),
)


def redis_error_kind(exc: BaseException) -> str:
    """connection, timeout, cluster_down, noscript, response or other."""
    mro_names = [cls.__name__ for cls in type(exc).__mro__]
    for name, kind in _REDIS_ERROR_KINDS:
        if name in mro_names:
            return kind
    return "other"


def observe_redis_script(script: str, seconds: float) -> None:
    _script_duration.get(script).observe(seconds)


def record_redis_error(script: str, exc: BaseException) -> None:
    _script_errors.get(script, redis_error_kind(exc)).inc()


@contextlib.contextmanager
def redis_script_timer(script: str) -> Iterator[None]:
    """``with metrics.redis_script_timer("reserve"): await client.evalsha(...)``.

    Times the round trip and counts a raised exception as an error of that
    script. Wrap the Redis call only: a domain refusal the store raises after
    reading the script's answer (OUT_OF_STOCK) is not a Redis error.
    """
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        record_redis_error(script, exc)
        raise
    finally:
        observe_redis_script(script, time.perf_counter() - started)


def observe_pipeline(commands: int) -> None:
    """One coalesced pipeline carried ``commands`` commands."""
    REDIS_PIPELINE_COMMANDS.observe(commands)


def set_view_lag(seconds: float) -> None:
    VIEW_LAG.set(seconds)


# ------------------------------------------------------------------ processes


def set_worker_info(*, worker: int, store: str, ledger: str) -> None:
    WORKER_INFO.labels(str(worker), store, ledger, engine_version()).set(1)


def set_configured_workers(count: int) -> None:
    CONFIGURED_WORKERS.set(count)


def record_worker_restart() -> None:
    WORKER_RESTARTS.inc()


def set_event_loop_lag(seconds: float) -> None:
    EVENT_LOOP_LAG.set(max(0.0, seconds))


def declare_channels(channels: Iterable[str]) -> None:
    """Create the label children a fresh process would lack, so dashboards show 0, not "no data".

    Counters that only appear on their first increment make ``rate()`` miss it
    and alerts on absent series silent; the engine's own outcomes per channel are
    known at start.
    """
    for channel in channels:
        for outcome in OUTCOMES:
            _reservations.get(channel, outcome)
        _reserved_units.get(channel)
        _out_of_stock.get(channel)
