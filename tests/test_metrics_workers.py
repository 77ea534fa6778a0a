"""``serve --workers N`` metrics: the supervisor serves every worker's metrics on one port.

A real supervisor (engine.service.workers.WorkerSupervisor) in its own process
spawns two real engine workers sharing a gRPC port (SO_REUSEPORT). The workers
run on the embedded memory store here instead of Redis (the target is
injectable), which does not matter to what is checked: that counters are
summed over workers exactly, that a SIGKILLed worker's gauges disappear while
its counts stay, and that the metrics directory is removed at exit.

This module is imported by the supervisor process and its workers (the worker
target below lives here): it must not import engine.observability.metrics at
import time, which would fix the supervisor's metrics to single-process mode.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.config import RedisStoreConfig, ServerConfig
from engine.launcher import free_ports, wait_serving

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# As the CLI does it: multiprocess metrics first, then the engine's modules.
SUPERVISOR = """
import sys
sys.path.insert(0, {tests!r})
from engine.observability import exposition
metrics_dir = exposition.create_multiprocess_dir()
exposition.enable_multiprocess(metrics_dir)
from engine.config import RedisStoreConfig, ServerConfig
from engine.service.workers import WorkerSupervisor
import test_metrics_workers

config = ServerConfig(
    listen="127.0.0.1:{grpc_port}", grace_s=1.0, metrics_port={metrics_port}, audit_interval_s=0
)
supervisor = WorkerSupervisor(
    2, config, RedisStoreConfig(url="redis://127.0.0.1:1"), log_level="INFO", log_format="json",
    target=test_metrics_workers.embedded_worker, metrics_dir=metrics_dir,
)
try:
    code = supervisor.run()
finally:
    exposition.remove_multiprocess_dir(metrics_dir)
sys.exit(code)
"""


def embedded_worker(
    index: int, server_config: ServerConfig, store_config: RedisStoreConfig, log_level: str, log_format: str
) -> None:
    """A worker like engine.service.workers.run_worker, on its own memory store instead of Redis."""
    from engine.config import EmbeddedStoreConfig
    from engine.observability.logs import configure_logging
    from engine.service.server import run
    from engine.store.embedded import EmbeddedStore

    configure_logging(log_level, log_format, worker=index)

    async def make_store() -> EmbeddedStore:
        store = EmbeddedStore(EmbeddedStoreConfig(data_dir=None, ledger_impl="pure"))
        await store.start()
        return store

    run(server_config, make_store)


def scrape(port: int) -> dict[str, list[Any]]:
    """Samples by name from the supervisor's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    samples["__text__"] = [text]
    return samples


def total(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def worker_pids(samples: dict[str, list[Any]]) -> set[str]:
    return {s.labels["pid"] for s in samples.get("inventory_worker_info", [])}


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """A hang guard, not a measurement."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except OSError:
            pass  # the endpoint is not up yet
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def noop_on_a_new_connection(target: str) -> None:
    from engine._proto.inventory.v1 import admin_service_pb2, admin_service_pb2_grpc

    # A new channel per call: SO_REUSEPORT spreads connections, not calls.
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        admin_service_pb2_grpc.AdminServiceStub(channel).Noop(admin_service_pb2.NoopRequest(), timeout=10)


def test_supervisor_serves_the_sum_of_its_workers_and_forgets_dead_ones(tmp_path: Path) -> None:
    grpc_port, metrics_port = free_ports(2)
    target = f"127.0.0.1:{grpc_port}"
    stderr_path = tmp_path / "stderr.log"
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),
        "GRPC_VERBOSITY": "NONE",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    script = SUPERVISOR.format(tests=str(HERE), grpc_port=grpc_port, metrics_port=metrics_port)
    with stderr_path.open("wb") as stderr:
        supervisor = subprocess.Popen([sys.executable, "-c", script], stderr=stderr, env=env)
    try:
        wait_until(lambda: len(worker_pids(scrape(metrics_port))) == 2, "two workers")
        asyncio.run(wait_serving(target, process=supervisor))
        pids = worker_pids(scrape(metrics_port))
        before = scrape(metrics_port)
        assert total(before, "inventory_configured_workers") == 2

        calls = 30
        for _ in range(calls):
            noop_on_a_new_connection(target)
        after = scrape(metrics_port)
        noop = {"service": "inventory.v1.AdminService", "method": "Noop"}
        # Counted once per call, summed over both workers, without a pid label.
        assert total(after, "inventory_rpc_handled_total", code="OK", **noop) == calls
        assert total(after, "inventory_rpc_duration_seconds_count", **noop) == calls
        assert all("pid" not in s.labels for s in after["inventory_rpc_handled_total"])
        assert total(after, "inventory_rpc_in_flight", **noop) == 0
        check = subprocess.run(
            [promtool(), "check", "metrics"],
            input=after["__text__"][0].encode(),
            capture_output=True,
            timeout=60,
        )
        assert check.returncode == 0, (check.stdout + check.stderr).decode()

        victim = int(sorted(pids)[0])
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = worker_pids(scrape(metrics_port))
            return len(now) == 2 and str(victim) not in now

        wait_until(replaced, "the killed worker to be forgotten and replaced")
        later = scrape(metrics_port)
        # The dead worker's counts stay in the sum; its gauges are gone.
        assert total(later, "inventory_rpc_handled_total", code="OK", **noop) == calls
        assert total(later, "inventory_worker_restarts_total") == 1
        assert str(victim) not in worker_pids(later)

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=60) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
    assert not list(tmp_path.glob("inventory-metrics-*")), "the metrics directory outlived the supervisor"
    worker_lines = [json.loads(line) for line in stderr_path.read_text().splitlines() if line.startswith("{")]
    assert {r.get("worker") for r in worker_lines if r["message"].startswith("serving on")} == {0, 1}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (apt-get install prometheus)")
    return path


@pytest.mark.redis
def test_serve_workers_on_redis_exposes_all_workers_on_the_metrics_port(
    tmp_path: Path, redis_server: Any
) -> None:
    """The production path: ``inventory-engine serve --workers 2 --redis ...`` with --metrics-port."""
    grpc_port, metrics_port = free_ports(2)
    target = f"127.0.0.1:{grpc_port}"
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRPC_VERBOSITY": "NONE"}
    command = [
        sys.executable, "-m", "engine.cli", "--log-level", "WARNING", "serve",
        "--listen", target, "--workers", "2", "--grace", "1",
        "--redis", redis_server.url, "--redis-namespace", f"metrics-{grpc_port}",
        "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    with (tmp_path / "stderr.log").open("wb") as stderr:
        serve = subprocess.Popen(command, stderr=stderr, env=env)
    try:
        wait_until(lambda: len(worker_pids(scrape(metrics_port))) == 2, "two workers")
        asyncio.run(wait_serving(target, process=serve))
        calls = 20
        for _ in range(calls):
            noop_on_a_new_connection(target)
        samples = scrape(metrics_port)
        noop = {"service": "inventory.v1.AdminService", "method": "Noop"}
        assert total(samples, "inventory_rpc_handled_total", code="OK", **noop) == calls
        assert {s.labels["worker"] for s in samples["inventory_worker_info"]} == {"0", "1"}
        assert all(s.labels["store"] != "embedded" for s in samples["inventory_worker_info"])
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0, (tmp_path / "stderr.log").read_text()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert not list(tmp_path.glob("inventory-metrics-*")), "the metrics directory outlived the server"
