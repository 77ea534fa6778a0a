"""deploy/local: ``inventory-engine local-stack``, run as a user runs it, in its own process.

It starts a real 3-master Redis Cluster, 2 engine workers with the demo data and
a real Prometheus (Debian's package), all on loopback. The test reads the
summary the command prints, checks through Prometheus' HTTP API that the engine
target is up and that the engine's metrics arrive (including a Reserve it sends
over gRPC against the demo stock), then sends SIGTERM and checks that the
command exits cleanly and that every process it started (Redis servers,
Prometheus, the engine's supervisor, its workers and helpers) is gone.

A missing redis-server or prometheus fails this test; it never skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import grpc
import pytest
import yaml
from google.protobuf.duration_pb2 import Duration

from engine import demo, local_stack
from engine._proto.inventory.v1 import inventory_service_pb2 as inv_pb
from engine._proto.inventory.v1 import inventory_service_pb2_grpc as inv_grpc
from engine.local_stack import JOB_NAME, prometheus_config

WORKERS = 2
# A slice of the demo catalogue: the same network and the same (seeded) stock
# per SKU as the whole demo, which takes ~10 s longer to load.
DEMO_SKUS = 300
SKU = "SKU-000001"
# Hang guards, not measurements.
SUMMARY_TIMEOUT_S = 45.0
SERIES_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 30.0


# ------------------------------------------------------------------ processes


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = stat[stat.rfind(")") + 2 :].split()[:2]
    return state, int(ppid)


def descendants(root: int) -> dict[int, str]:
    """Every process below ``root`` (children, their children, ...), pid -> command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    found: dict[int, str] = {}
    pending = list(children.get(root, ()))
    while pending:
        pid = pending.pop()
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        pending += children.get(pid, ())
    return found


def running(pid: int) -> bool:
    # A zombie has exited; only its parent's wait() is missing, and the parent of
    # an orphan may be an init that never reaps.
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def read_summary(stdout: IO[bytes], timeout_s: float) -> dict[str, Any]:
    """The first line of stdout, parsed as the JSON summary, within the timeout."""
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout_s)
    except queue.Empty:
        raise AssertionError(f"no summary within {timeout_s} s") from None
    assert line, "local-stack exited without printing its summary"
    return json.loads(line)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ Prometheus


def prometheus_get(base_url: str, path: str, **params: str) -> Any:
    url = f"{base_url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def value(base_url: str, promql: str) -> float | None:
    result = prometheus_get(base_url, "/api/v1/query", query=promql)["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + SERIES_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# ------------------------------------------------------------------ the test


def start_command(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    stderr_path = tmp_path / "local-stack.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "engine.cli", "local-stack",
                "--workers", str(WORKERS),
                "--base-dir", str(tmp_path / "stack"),
                "--demo-skus", str(DEMO_SKUS),
                "--scrape-interval", "1",
                "--json",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )  # fmt: skip
    return process, stderr_path


def clean_up(process: subprocess.Popen[bytes]) -> None:
    """After a failed test: the command stops its parts itself, or they are killed by pid."""
    started = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.stdout is not None
    process.stdout.close()
    # The children run in sessions of their own: killing the command does not reach them.
    for pid in started:
        if running(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def stack_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The command, started; whatever the test's outcome, nothing of it outlives the test."""
    process, stderr_path = start_command(tmp_path)
    try:
        yield process, stderr_path
    finally:
        clean_up(process)


@pytest.mark.redis
def test_one_command_starts_the_stack_serves_the_demo_and_stops_everything(
    stack_process: tuple[subprocess.Popen[bytes], Path],
) -> None:
    process, stderr_path = stack_process
    assert process.stdout is not None
    summary = read_summary(process.stdout, SUMMARY_TIMEOUT_S)

    # Where everything is: loopback addresses, the three masters, the logs.
    assert summary["grpc_target"].startswith("127.0.0.1:")
    assert summary["metrics_url"].startswith("http://127.0.0.1:")
    assert summary["prometheus_url"].startswith("http://127.0.0.1:")
    assert len(summary["redis_nodes"]) == 3
    assert all(node.startswith("127.0.0.1:") for node in summary["redis_nodes"])
    assert summary["workers"] == WORKERS
    assert "serving on" in Path(summary["engine_log"]).read_text()

    # The processes it started, as the OS sees them: 3 Redis servers, Prometheus,
    # the engine's supervisor and below it the workers (and multiprocessing's helper).
    started = descendants(process.pid)
    pids = summary["pids"]
    assert pids["local_stack"] == process.pid
    assert {pids["engine"], pids["prometheus"], *pids["redis"]} <= set(started)
    workers = [pid for pid, cmd in descendants(pids["engine"]).items() if "spawn_main" in cmd]
    assert len(workers) == WORKERS, descendants(pids["engine"])

    # Prometheus scrapes the engine, and the engine's series are there.
    prometheus = summary["prometheus_url"]
    targets = prometheus_get(prometheus, "/api/v1/targets", state="active")["activeTargets"]
    [target] = [t for t in targets if t["labels"]["job"] == JOB_NAME]
    assert target["health"] == "up"
    assert target["scrapeUrl"] == summary["metrics_url"]
    live_workers = f'count(inventory_worker_info{{job="{JOB_NAME}",store="redis"}})'
    wait_for("both workers in inventory_worker_info", lambda: value(prometheus, live_workers) == WORKERS)
    assert value(prometheus, f'inventory_configured_workers{{job="{JOB_NAME}"}}') == WORKERS

    # The engine serves the demo: the web channel sees exactly the demo's stock
    # of the SKU at its nodes, and a cart can hold some of it.
    [web] = [channel for channel in demo.demo_channels() if channel.id == "web"]
    demo_units = sum(op.value for op in demo.demo_supply(DEMO_SKUS) if op.sku == SKU and op.node in web.nodes)
    assert demo_units > 0
    with grpc.insecure_channel(summary["grpc_target"]) as channel:
        inventory = inv_grpc.InventoryServiceStub(channel)
        [available] = inventory.GetAvailability(
            inv_pb.GetAvailabilityRequest(skus=[SKU], channel="web"), timeout=10
        ).availabilities
        assert available.atp == demo_units
        held = inventory.Reserve(
            inv_pb.ReserveRequest(
                reservation_id="local-stack-cart-1",
                channel="web",
                lines=[inv_pb.LineRequest(sku=SKU, quantity=2)],
                ttl=Duration(seconds=600),
            ),
            timeout=10,
        )
    assert held.state == inv_pb.RESERVATION_STATE_HELD
    assert held.lines[0].allocated_quantity == 2
    reserves_ok = f'sum(inventory_rpc_handled_total{{job="{JOB_NAME}",method="Reserve",code="OK"}})'
    wait_for("the Reserve counted in Prometheus", lambda: (value(prometheus, reserves_ok) or 0) >= 1)

    # SIGTERM: everything stops, engine first, and nothing is left behind.
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_TIMEOUT_S) == 0, stderr_path.read_text()
    log = stderr_path.read_text()
    stops = [log.index(f"{part} stopped") for part in ("the engine", "Prometheus", "Redis Cluster")]
    assert stops == sorted(stops), log
    assert "everything stopped" in log
    left = {pid: cmd for pid, cmd in started.items() if running(pid)}
    assert not left, f"processes left behind: {left}"


@pytest.mark.redis
def test_a_part_failing_to_start_stops_the_others_and_exits_non_zero(tmp_path: Path) -> None:
    # Prometheus is the last part to start: Redis is up and the engine started when
    # its port turns out taken. The engine may be stopped again before a poll of
    # the process tree sees it run, so its start is read from the log.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process, stderr_path = start_command(tmp_path, "--prometheus-port", str(port))
        try:
            started: dict[int, str] = {}
            deadline = time.monotonic() + SUMMARY_TIMEOUT_S
            while process.poll() is None:  # everything it starts, until it gives up
                assert time.monotonic() < deadline, "local-stack neither failed nor finished"
                started |= descendants(process.pid)
                time.sleep(0.05)
            assert process.returncode == 1
            assert process.stdout is not None
            assert process.stdout.read() == b"", "no summary for a stack that did not start"
        finally:
            clean_up(process)
    log = stderr_path.read_text()
    assert "the local stack did not start: Prometheus exited with 1" in log, log
    assert "address already in use" in log
    assert log.index("the engine stopped") < log.index("Redis Cluster stopped")
    assert any("redis-server" in cmd for cmd in started.values())
    assert log.index(f"starting {WORKERS} engine workers") < log.index("the engine stopped")
    left = {pid: cmd for pid, cmd in started.items() if running(pid)}
    assert not left, f"processes left behind: {left}"
    # Kept for the post-mortem: the logs it pointed to.
    assert (tmp_path / "stack" / "prometheus" / "prometheus.log").is_file()


def test_generated_prometheus_config_points_the_projects_job_at_the_engine(tmp_path: Path) -> None:
    promtool = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    assert promtool is not None, "promtool is missing: install Debian's prometheus package"
    source = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "prometheus.yml"
    config = prometheus_config(source, "127.0.0.1:4242", 1.5)
    [job] = config["scrape_configs"]
    assert job["job_name"] == JOB_NAME
    assert job["static_configs"] == [{"targets": ["127.0.0.1:4242"]}]
    assert config["global"]["scrape_interval"] == "1500ms"
    assert config["global"]["scrape_timeout"] == "1500ms"
    # The project's rules, by absolute path (the generated file lives elsewhere).
    assert config["rule_files"]
    assert all(Path(path).is_absolute() and Path(path).is_file() for path in config["rule_files"])
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    checked = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, timeout=60)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()


def test_the_default_demo_size_is_the_whole_demo() -> None:
    # local_stack repeats the figure so that building the CLI parser imports no domain code.
    assert local_stack.DEMO_SKUS == demo.DEMO_SKUS
