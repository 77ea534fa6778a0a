"""Serving the metrics over HTTP: one process, or a ``serve --workers N`` supervisor.

One process (the default): the engine serves ``/metrics`` itself, from the
default registry (its own metrics plus the Python process and GC collectors),
on a thread of its own, so a scrape never waits for the event loop.

``serve --workers N``: prometheus_client's multiprocess mode, served by the
supervisor on the one metrics port. We chose it over a port per worker because
a pod then has one scrape target whatever N is (one ``prometheus.io/port``
annotation, one Service port), counters and histograms come out already summed
over workers, and a restarted worker does not make a counter go backwards (a
dead worker's counter files stay and keep counting in the sum). How it works:

- before anything defines a metric, the supervisor creates an empty directory
  and names it in ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client reads that
  variable when the first metric is created, and the spawned workers inherit
  it); every process then keeps its values in memory-mapped files there;
- the supervisor serves a registry with a ``MultiProcessCollector`` over that
  directory, which merges the files on each scrape; gauges merge as their
  ``multiprocess_mode`` says (see :mod:`.metrics`);
- when a worker dies, the supervisor calls :func:`mark_process_dead` with its
  pid, so its ``live*`` gauges (in-flight RPCs, worker info, lags) stop
  counting; its counters stay;
- the supervisor removes the directory when it exits. A new supervisor always
  starts from a new, empty directory: leftovers from a crashed run would
  otherwise be summed into the new one.

The process and GC collectors are not available in multiprocess mode (they
describe one process); ``inventory_worker_info`` has one series per live
worker pid instead.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.registry import CollectorRegistry

    from engine.config import ServerConfig

__all__ = [
    "DEFAULT_METRICS_PORT",
    "MULTIPROC_ENV",
    "MetricsEndpoint",
    "create_multiprocess_dir",
    "enable_multiprocess",
    "mark_process_dead",
    "metrics_host",
    "multiprocess_registry",
    "remove_multiprocess_dir",
]

# The port the CLI uses unless told otherwise (9464 is the port OpenTelemetry's
# Prometheus exporter uses, free of the usual collisions: 9090 Prometheus,
# 9100 node exporter).
DEFAULT_METRICS_PORT = 9464
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_host(config: ServerConfig) -> str:
    """The host the metrics endpoint binds: ``metrics_host``, else the gRPC listen host."""
    if config.metrics_host:
        return config.metrics_host
    if config.listen.startswith("unix:"):
        return "127.0.0.1"
    host = config.listen.rsplit(":", 1)[0]
    # "[::]:50051" -> "::"; an empty host ("":50051) means every interface, as in gRPC.
    return host.strip("[]") or "0.0.0.0"


class MetricsEndpoint:
    """``GET /metrics`` on ``host:port`` from a daemon thread; ``close()`` stops it."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, start_http_server

        try:
            server, thread = start_http_server(port, addr=host, registry=registry or REGISTRY)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        self._server: WSGIServer = server
        self._thread: threading.Thread = thread
        self.host = host
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


# ---------------------------------------------------------------- multiprocess


def create_multiprocess_dir() -> Path:
    """A new empty directory for the workers' metric files (under $TMPDIR)."""
    return Path(tempfile.mkdtemp(prefix="inventory-metrics-"))


def enable_multiprocess(directory: Path) -> None:
    """Make this process and the workers it spawns keep metrics in ``directory``.

    Must run before :mod:`engine.observability.metrics` is imported: a metric
    defined earlier would keep its values in this process's memory, invisible
    to the supervisor's collector.
    """
    if "engine.observability.metrics" in sys.modules:
        raise RuntimeError(
            "multiprocess metrics must be enabled before engine.observability.metrics is imported"
        )
    os.environ[MULTIPROC_ENV] = str(directory)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # prometheus_client picked its value class at import; pick again now that
        # the variable is set (no metric of ours exists yet, checked above).
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def mark_process_dead(pid: int, directory: Path) -> None:
    """A worker died: drop its ``live*`` gauges (its counters keep counting in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(directory))


def remove_multiprocess_dir(directory: Path) -> None:
    if os.environ.get(MULTIPROC_ENV) == str(directory):
        del os.environ[MULTIPROC_ENV]
    shutil.rmtree(directory, ignore_errors=True)
