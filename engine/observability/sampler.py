"""Store state as metrics: a task on the serving event loop, once a second.

Some metrics are not events at a call site but states that change with time
alone: how far behind the expiry sweeper is, how stale the availability view
is, whether the store takes writes. A value set only when something happens
would look fine exactly when nothing happens any more (a stalled feed, a dead
sweeper), so this sampler reads them every :data:`SAMPLE_INTERVAL_S`. It runs
on the event loop because the stores are single-threaded objects; what it
reads is cheap (counters, a heap head, a timestamp).

What it reads, when the store has it (the Store port does not require any):

- ``kind`` and ``healthy``: ``inventory_store_up{store=kind}``;
- ``stats`` (the embedded store's :class:`~engine.store.embedded.EmbeddedStoreStats`):
  journal records and bytes, the group commit in progress, snapshots;
- ``ledger.next_expiry()`` (embedded): the expiry sweep lag;
- ``expiry_lag_s`` (a float; a store whose sweeper runs elsewhere, Redis): the
  expiry sweep lag as the store knows it;
- ``view.lag_s`` (Redis mode's :class:`~engine.store.view.AvailabilityView`): view lag.

It also measures its own wake-up delay (the event loop's lag), declares each
channel's reservation series (so they exist at 0 before their first event), and
every ``audit_interval_s`` runs the store's audit, which exports invariant
violations and shortages. The audit walks every row; it is off on all workers
but one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from engine.observability import metrics
from engine.store.base import Store

__all__ = ["SAMPLE_INTERVAL_S", "StoreSampler"]

log = logging.getLogger("engine.metrics")

SAMPLE_INTERVAL_S = 1.0
# New channels are rare; looking them up every 30 s is plenty.
CHANNEL_REFRESH_S = 30.0


class StoreSampler:
    def __init__(
        self,
        store: Store,
        *,
        audit_interval_s: float = 0.0,
        interval_s: float = SAMPLE_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock`` must be the store's clock: expiry times are in its time base."""
        self._store = store
        self._audit_interval_s = audit_interval_s
        self._interval_s = interval_s
        self._clock = clock
        self._kind = str(getattr(store, "kind", "unknown"))
        # Counters mirrored from the store's cumulative stats: what was added so far.
        self._mirrored: dict[str, int] = {}

    async def run(self) -> None:
        """Sample until cancelled; one failing sample is logged, never fatal."""
        loop = asyncio.get_running_loop()
        # The first audit right away: the gauges it sets mean nothing before it.
        next_audit = loop.time()
        next_channels = loop.time()
        while True:
            if loop.time() >= next_channels:
                next_channels = loop.time() + CHANNEL_REFRESH_S
                await self._declare_channels()
            try:
                self.sample()
            except Exception:
                log.exception("metrics sample failed")
            if self._audit_interval_s > 0 and loop.time() >= next_audit:
                await self.audit()
                next_audit = loop.time() + self._audit_interval_s
            expected = loop.time() + self._interval_s
            await asyncio.sleep(self._interval_s)
            metrics.set_event_loop_lag(loop.time() - expected)

    def sample(self) -> None:
        store: Any = self._store
        healthy = getattr(store, "healthy", None)
        if healthy is not None:
            metrics.set_store_up(self._kind, bool(healthy))
        stats = getattr(store, "stats", None)
        if stats is not None:
            self._sample_stats(stats)
        lag = self._expiry_lag(store)
        if lag is not None:
            metrics.set_expiry_sweep_lag(lag)
        view = getattr(store, "view", None)
        if view is not None:
            metrics.set_view_lag(float(view.lag_s))

    def _expiry_lag(self, store: Any) -> float | None:
        lag = getattr(store, "expiry_lag_s", None)
        if lag is not None:
            return float(lag)
        ledger = getattr(store, "ledger", None)
        if ledger is None or not hasattr(ledger, "next_expiry"):
            return None
        due = ledger.next_expiry()
        # The heap's head may be a hold already committed or released; the
        # sweeper discards such heads when they come due, so this overstates the
        # lag by at most one sweep interval.
        return 0.0 if due is None else max(0.0, self._clock() - due)

    def _sample_stats(self, stats: Any) -> None:
        self._mirror("journal_records", stats, metrics.JOURNAL_RECORDS)
        self._mirror("journal_bytes", stats, metrics.JOURNAL_BYTES)
        self._mirror("snapshots", stats, metrics.SNAPSHOTS.labels("ok"))
        self._mirror("snapshot_failures", stats, metrics.SNAPSHOTS.labels("failed"))
        appended = getattr(stats, "appended_seq", None)
        durable = getattr(stats, "durable_seq", None)
        if appended is not None and durable is not None:
            metrics.JOURNAL_DURABLE_LAG.set(max(0, appended - durable))

    def _mirror(self, field: str, stats: Any, counter: Any) -> None:
        value = getattr(stats, field, None)
        if value is None:
            return
        added = int(value) - self._mirrored.get(field, 0)
        if added > 0:
            counter.inc(added)
            self._mirrored[field] = int(value)

    async def _declare_channels(self) -> None:
        with contextlib.suppress(Exception):  # a store that is not ready yet gets asked again later
            metrics.declare_channels(c.id for c in await self._store.list_channels())

    async def audit(self) -> None:
        """Run the store's audit now and export what it found."""
        started = time.perf_counter()
        try:
            report = await self._store.audit()
        except Exception:
            metrics.record_audit_failure()
            log.exception("periodic audit failed")
            return
        metrics.set_audit_result(
            violations=len(report.violations),
            shortage_rows=len(report.shortages),
            shortage_units=sum(level.shortage for level in report.shortages),
            duration_s=time.perf_counter() - started,
        )
        if report.violations:
            count = len(report.violations)
            log.error("periodic audit: %d invariant violations, e.g. %s", count, report.violations[0])
