"""``serve --workers N``: N engine processes sharing one port (SO_REUSEPORT).

Python serves gRPC on one core per process, so more cores need more processes.
Every worker binds the same address with SO_REUSEPORT and the kernel spreads new
connections over them. This is only correct when the truth lives outside the
processes (Redis): N embedded stores would be N different ledgers, so the CLI
refuses ``--workers`` without a Redis store.

The supervisor (this process) starts the workers with the ``spawn`` method (a
forked gRPC runtime is not safe to use), forwards SIGTERM/SIGINT to them so each
drains its in-flight RPCs, and restarts a worker that dies on its own. A worker
that keeps dying (``MAX_RESTARTS`` within ``RESTART_WINDOW_S``) means something
is wrong with the configuration or Redis, not a one-off crash: the supervisor
then stops everything and exits non-zero rather than spin.

Metrics: with a metrics port, the supervisor serves every worker's metrics on
it, in prometheus_client's multiprocess mode (engine/observability/exposition.py
says why and how); the workers serve none themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from engine.config import RedisStoreConfig, ServerConfig
from engine.observability.exposition import (
    MetricsEndpoint,
    create_multiprocess_dir,
    enable_multiprocess,
    mark_process_dead,
    metrics_host,
    multiprocess_registry,
    remove_multiprocess_dir,
)

__all__ = ["MAX_RESTARTS", "RESTART_WINDOW_S", "WorkerSupervisor", "run_worker"]

log = logging.getLogger("engine.workers")

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
# Pause before restarting a worker, so a crash loop does not burn a core.
RESTART_DELAY_S = 0.5


def run_worker(
    index: int,
    server_config: ServerConfig,
    store_config: RedisStoreConfig,
    log_level: str,
    log_format: str = "text",
) -> None:
    """One worker process: its own event loop, Redis client and availability view."""
    from engine.observability.logs import configure_logging
    from engine.service.server import run
    from engine.store.redis import RedisStore

    configure_logging(log_level, log_format, worker=index)

    async def make_store() -> RedisStore:
        store = RedisStore(store_config)
        await store.start()
        return store

    run(server_config, make_store)


class WorkerSupervisor:
    """Start, watch and stop the worker processes."""

    def __init__(
        self,
        count: int,
        server_config: ServerConfig,
        store_config: RedisStoreConfig,
        *,
        log_level: str = "INFO",
        log_format: str = "text",
        metrics_dir: Path | None = None,
        target: Callable[..., None] = run_worker,
    ) -> None:
        """``metrics_dir``: a multiprocess metrics directory the caller already enabled
        (and removes); without one, the supervisor makes and removes its own."""
        if count < 1:
            raise ValueError("workers must be at least 1")
        if server_config.listen.endswith(":0"):
            # Port 0 would give every worker its own port; pick one for all.
            raise ValueError("--workers needs an explicit port in --listen")
        self.count = count
        # The supervisor serves the metrics of all workers; they serve none.
        self.metrics_port = server_config.metrics_port
        self.metrics_host = metrics_host(server_config)
        self.server_config = dataclasses.replace(server_config, reuse_port=True, metrics_port=0)
        self.store_config = store_config
        self.log_level = log_level
        self.log_format = log_format
        self._metrics_dir = metrics_dir
        self._owns_metrics_dir = False
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, BaseProcess] = {}
        self._restarts: deque[float] = deque()
        self._stopping = False

    def _spawn(self, index: int) -> None:
        config = dataclasses.replace(self.server_config, worker_index=index)
        process = self._context.Process(
            target=self._target,
            args=(index, config, self.store_config, self.log_level, self.log_format),
            name=f"engine-worker-{index}",
        )
        process.start()
        self._workers[index] = process
        log.info("worker %d started (pid %s)", index, process.pid)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Ask every worker to drain and exit (SIGTERM); ``run`` then returns."""
        self._stopping = True
        for process in self._workers.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code for the CLI."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        endpoint = None
        try:
            if self.metrics_port:
                endpoint = self._serve_metrics()
            for index in range(self.count):
                self._spawn(index)
            return self._watch()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._reap()
            if endpoint is not None:
                endpoint.close()
            if self._owns_metrics_dir and self._metrics_dir is not None:
                remove_multiprocess_dir(self._metrics_dir)

    def _serve_metrics(self) -> MetricsEndpoint:
        """Multiprocess metrics, served from here (set up before any worker starts)."""
        directory = self._metrics_dir
        if directory is None:
            directory = self._metrics_dir = create_multiprocess_dir()
            self._owns_metrics_dir = True
            enable_multiprocess(directory)
        from engine.observability import metrics

        endpoint = MetricsEndpoint(self.metrics_host, self.metrics_port, multiprocess_registry(directory))
        metrics.set_configured_workers(self.count)
        log.info("metrics of %d workers on %s:%d", self.count, self.metrics_host, endpoint.port)
        return endpoint

    def _watch(self) -> int:
        while True:
            if self._stopping:
                return 0
            for index, process in list(self._workers.items()):
                process.join(timeout=0.2 / max(1, self.count))
                if process.is_alive() or self._stopping:
                    continue
                log.error("worker %d (pid %s) exited with %s", index, process.pid, process.exitcode)
                self._forget_metrics_of(process)
                now = time.monotonic()
                self._restarts.append(now)
                while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
                    self._restarts.popleft()
                if len(self._restarts) > MAX_RESTARTS:
                    log.error(
                        "workers died %d times within %.0f s; stopping", len(self._restarts), RESTART_WINDOW_S
                    )
                    self.stop()
                    return 1
                time.sleep(RESTART_DELAY_S)
                if not self._stopping:
                    self._spawn(index)
                    if self._metrics_dir is not None:
                        from engine.observability import metrics

                        metrics.record_worker_restart()

    def _forget_metrics_of(self, process: BaseProcess) -> None:
        # Its in-flight RPCs, lags and worker info would otherwise count forever.
        if self._metrics_dir is not None and process.pid is not None:
            mark_process_dead(process.pid, self._metrics_dir)

    def _reap(self) -> None:
        # Each worker gets its grace period plus a margin, then is killed.
        deadline = time.monotonic() + self.server_config.grace_s + 10.0
        for process in self._workers.values():
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("worker pid %s did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
