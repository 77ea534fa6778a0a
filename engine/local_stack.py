"""``inventory-engine local-stack``: the whole Redis deployment on loopback, from one command.

What it starts, on ``127.0.0.1`` (free ports unless given), under one base directory:

1. a Redis Cluster of 3 masters (:class:`engine.redis_launcher.LocalRedisCluster`:
   ``noeviction``, AOF on), ready once every node reports ``cluster_state:ok``;
2. the demo network and catalogue (:mod:`engine.demo`), loaded into the cluster
   once, by this process, before any engine starts (N workers loading it
   at once would race);
3. ``inventory-engine serve --redis-cluster ... --workers N``: one supervisor, N
   worker processes sharing the gRPC port, all their metrics on one port; ready
   once health answers SERVING *and* the metrics show N live workers (health
   answers as soon as the first worker listens);
4. Prometheus (Debian's ``prometheus``) with ``deploy/prometheus/prometheus.yml``
   and its rules, the ``inventory-engine`` job pointed at the engine's metrics
   port; ready once it reports ready *and* has scraped that target as ``up``.

Then it prints where everything is and runs until SIGINT (Ctrl-C) or SIGTERM,
or until a part dies. Stopping goes from the clients to the truth: the engine
first (SIGTERM: health turns NOT_SERVING and in-flight RPCs drain), then
Prometheus, then Redis (``SHUTDOWN``: the AOF is flushed). A failure during
startup stops whatever had started, in the same order, and exits non-zero.

Every child runs in a session of its own. A Ctrl-C in a terminal goes to the
whole foreground process group; if the children were in it, Redis would shut
down at the same moment as the engines it serves, instead of after them. And a
session per child gives each a process group whose members can be counted: the
engine's group includes its workers, so "nothing left behind" is checked, not
hoped for (leftovers get SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import yaml

from engine.launcher import free_ports
from engine.redis_launcher import HOST, LocalRedisCluster, RedisLauncherError, redis_binary

__all__ = [
    "JOB_NAME",
    "LocalStack",
    "LocalStackConfig",
    "LocalStackError",
    "StackSummary",
    "add_subcommand",
    "prometheus_config",
    "run",
]

log = logging.getLogger("engine.local_stack")

# The rules and the dashboard select this job name (deploy/prometheus/README.md).
JOB_NAME = "inventory-engine"
# Shipped with the source tree (not in the wheel): the default scrape config.
DEFAULT_PROMETHEUS_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "prometheus.yml"
DEMO_SKUS = 10_000  # engine.demo.DEMO_SKUS, without importing the domain to build the parser
REDIS_MASTERS = 3
# Hang guards for stopping: the supervisor itself gives each worker its grace
# plus 10 s before killing it, so wait a little longer than that.
ENGINE_STOP_MARGIN_S = 15.0
PROMETHEUS_STOP_TIMEOUT_S = 30.0
# A supervisor's helpers (multiprocessing's resource tracker) exit once it is
# gone; this long for them before they are killed.
LEFTOVER_TIMEOUT_S = 5.0
POLL_S = 0.1


class LocalStackError(RuntimeError):
    """A part of the stack did not start, become ready or stop as it should."""


class StopRequested(BaseException):
    """SIGINT/SIGTERM during startup. A BaseException, like KeyboardInterrupt, so
    that no ``except Exception`` on the way swallows it before the stack is stopped."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalStackConfig:
    workers: int = 2
    # None: a fresh temporary directory, removed after a clean stop unless ``keep``.
    # A given directory must be empty (a new cluster is created every time) and is kept.
    base_dir: Path | None = None
    keep: bool = False
    demo_skus: int = DEMO_SKUS
    # 0: a free port.
    grpc_port: int = 0
    metrics_port: int = 0
    prometheus_port: int = 0
    # Scrape and rule evaluation interval (the project's config says 15 s, a
    # production figure; locally a dashboard should move sooner).
    scrape_interval_s: float = 5.0
    prometheus_config: Path = DEFAULT_PROMETHEUS_CONFIG
    # Per step: the cluster, the demo load, the engine, Prometheus.
    start_timeout_s: float = 120.0
    # The engine's grace for in-flight RPCs on stop (serve --grace).
    grace_s: float = 5.0

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.demo_skus < 1:
            raise ValueError("demo_skus must be at least 1")
        for name in ("grpc_port", "metrics_port", "prometheus_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ValueError(f"{name} must be 0 (a free port) or a TCP port")
        if not self.scrape_interval_s >= 0.1:
            raise ValueError("scrape_interval_s must be at least 0.1")
        if not self.start_timeout_s > 0 or self.grace_s < 0:
            raise ValueError("start_timeout_s must be positive and grace_s not negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class StackSummary:
    """Where everything is: printed once the stack is ready."""

    grpc_target: str
    metrics_url: str
    prometheus_url: str
    redis_nodes: tuple[str, ...]
    workers: int
    demo_skus: int
    base_dir: Path
    engine_log: Path
    prometheus_config: Path
    prometheus_log: Path
    redis_dirs: tuple[Path, ...]
    # The processes this command started (the engine's workers are children of
    # its supervisor, in the supervisor's process group).
    pids: dict[str, Any] = field(default_factory=dict)
    ready_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "grpc_target": self.grpc_target,
            "metrics_url": self.metrics_url,
            "prometheus_url": self.prometheus_url,
            "redis_nodes": list(self.redis_nodes),
            "workers": self.workers,
            "demo_skus": self.demo_skus,
            "base_dir": str(self.base_dir),
            "engine_log": str(self.engine_log),
            "prometheus_config": str(self.prometheus_config),
            "prometheus_log": str(self.prometheus_log),
            "redis_dirs": [str(path) for path in self.redis_dirs],
            "pids": self.pids,
            "ready_s": round(self.ready_s, 1),
        }

    def text(self) -> str:
        base = self.base_dir

        def under_base(path: Path) -> str:  # the paths are long; the directory is printed once
            return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

        redis_logs = ", ".join(under_base(path / "redis.log") for path in self.redis_dirs)
        return "\n".join(
            [
                f"inventory-engine local stack is up ({self.ready_s:.0f} s): "
                f"{len(self.redis_nodes)}-master Redis Cluster, {self.workers} engine workers "
                f"with the demo data ({self.demo_skus:,} SKUs), Prometheus",
                "",
                f"  gRPC            {self.grpc_target}",
                f"  metrics         {self.metrics_url}",
                f"  Prometheus      {self.prometheus_url}  (targets: {self.prometheus_url}/targets)",
                f"  Redis Cluster   {', '.join(self.redis_nodes)}",
                "",
                f"  data and logs   {base}/",
                f"    engine        {under_base(self.engine_log)}",
                f"    Prometheus    {under_base(self.prometheus_log)}, {under_base(self.prometheus_config)}",
                f"    Redis         {redis_logs}",
                "",
                f"Try: inventory-engine availability SKU-000001 --channel web --nodes "
                f"--target {self.grpc_target}",
                f"Ctrl-C (or SIGTERM to pid {self.pids.get('local_stack', os.getpid())}) stops everything.",
            ]
        )


# ------------------------------------------------------------------ processes


def _live_group_members(pgid: int) -> list[int]:
    """Processes of this process group that still run; zombies (dead, waiting
    for a parent that may never come) do not count."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the group exists or it does not
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        state, _ppid, pgrp = stat[stat.rfind(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"({path} not written)"
    return "\n".join(f"    {line}" for line in text)


class _Child:
    """A child process in a session (so a process group) of its own, with its log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, cwd: Path) -> None:
        self.name = name
        self.log_path = log_path
        with log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.debug("%s started (pid %d): %s", name, self.process.pid, " ".join(argv))

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_problem(self) -> str | None:
        """A sentence, with the end of its log, if the process has exited (it
        should run until stopped)."""
        code = self.process.poll()
        if code is None:
            return None
        return f"{self.name} exited with {code}; the end of {self.log_path}:\n{_log_tail(self.log_path)}"

    def stop(self, timeout_s: float) -> str | None:
        """SIGTERM to the process (it stops its own children), then make sure its
        whole group is gone. Returns what went wrong, if anything."""
        problem = None
        if self.process.poll() is not None:  # the caller has seen why, from exit_problem()
            problem = f"{self.name} had exited with {self.process.returncode} before the stop"
        else:
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                problem = f"{self.name} did not stop within {timeout_s:.0f} s; killed it and its group"
                self._kill_group()
                code = self.process.wait()
            if code != 0 and problem is None:
                problem = f"{self.name} exited with {code} on stop; see {self.log_path}"
        leftovers = self._wait_group_gone(LEFTOVER_TIMEOUT_S)
        if leftovers:
            self._kill_group()
            survivors = self._wait_group_gone(LEFTOVER_TIMEOUT_S)
            note = f"{self.name} left processes {leftovers} behind; killed them"
            if survivors:
                note += f", but {survivors} still run"
            problem = f"{problem}; {note}" if problem else note
        log.info("%s stopped", self.name)
        return problem

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def _wait_group_gone(self, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while (members := _live_group_members(self.pid)) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        return members


# ------------------------------------------------------------------ readiness


def _wait_until(what: str, ready: Callable[[], bool], timeout_s: float, *children: _Child) -> None:
    """Poll ``ready`` until it holds; fail early, with its log, if a child exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        for child in children:
            problem = child.exit_problem()
            if problem is not None:
                raise LocalStackError(f"{problem}\n(while waiting for {what})")
        if ready():
            return
        if time.monotonic() > deadline:
            raise LocalStackError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def _http_get(url: str) -> bytes | None:
    """The body of a 200 answer, or None for anything else (not up yet)."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            body: bytes = response.read()
            return body if response.status == 200 else None
    except (OSError, urllib.error.URLError):
        return None


def _live_workers(metrics_url: str) -> int:
    """How many workers serve gRPC, from the supervisor's metrics: a worker sets
    its ``inventory_worker_info`` series once its server started."""
    from prometheus_client.parser import text_string_to_metric_families

    body = _http_get(metrics_url)
    if body is None:
        return 0
    for family in text_string_to_metric_families(body.decode()):
        if family.name == "inventory_worker_info":
            return sum(1 for sample in family.samples if sample.value == 1)
    return 0


@contextlib.contextmanager
def _health_checker(target: str) -> Iterator[Callable[[], bool]]:
    """A function answering whether the engine's health service says SERVING.

    gRPC backs off exponentially between reconnects to a port nobody listens
    on yet; capped at half a second, so readiness is noticed within that.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
    ]
    with grpc.insecure_channel(target, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def serving() -> bool:
            try:
                response = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError:
                return False
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

        yield serving


def _target_up(prometheus_url: str, metrics_target: str) -> bool:
    """Prometheus has scraped the engine's target, and the scrape succeeded."""
    body = _http_get(f"{prometheus_url}/api/v1/targets?state=active")
    if body is None:
        return False
    targets = json.loads(body)["data"]["activeTargets"]
    return any(
        target["labels"].get("job") == JOB_NAME
        and target["labels"].get("instance") == metrics_target
        and target["health"] == "up"
        for target in targets
    )


# ------------------------------------------------------------------ Prometheus


def _duration(seconds: float) -> str:
    """A Prometheus duration ("5s", "1500ms"): it takes integers with a unit only."""
    milliseconds = round(seconds * 1000)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def prometheus_config(source: Path, metrics_target: str, scrape_interval_s: float) -> dict[str, Any]:
    """The project's scrape config with its ``inventory-engine`` job pointed at ``metrics_target``.

    Other jobs are dropped (they point at hosts that are not part of this stack);
    rule files become absolute paths, since the generated file lives elsewhere.
    """
    config = yaml.safe_load(source.read_text())
    jobs = [job for job in config.get("scrape_configs") or () if job.get("job_name") == JOB_NAME]
    if len(jobs) != 1:
        raise LocalStackError(f"{source} must have exactly one scrape job named {JOB_NAME!r}")
    [job] = jobs
    job["static_configs"] = [{"targets": [metrics_target]}]
    interval = _duration(scrape_interval_s)
    # A timeout longer than the interval is refused by Prometheus.
    config["global"] = {
        **(config.get("global") or {}),
        "scrape_interval": interval,
        "evaluation_interval": interval,
        "scrape_timeout": interval,
    }
    job.pop("scrape_interval", None)
    job.pop("scrape_timeout", None)
    config["scrape_configs"] = [job]
    config["rule_files"] = [str((source.parent / path).resolve()) for path in config.get("rule_files") or ()]
    return config


def _prometheus_binary() -> str:
    # Debian installs it in /usr/bin, which a trimmed PATH may lack.
    path = shutil.which("prometheus") or shutil.which("prometheus", path="/usr/bin")
    if path is None:
        raise LocalStackError(
            "prometheus was not found on PATH: install Debian's prometheus package "
            "(apt-get install prometheus; `make system-deps` does it as root)"
        )
    return path


# ------------------------------------------------------------------ the stack


class LocalStack:
    """Start, watch and stop the parts: ``summary = stack.start()`` ... ``stack.stop()``."""

    def __init__(self, config: LocalStackConfig) -> None:
        self.config = config
        self._temporary = config.base_dir is None
        # A temporary directory is made once the prerequisites are checked.
        self.base_dir = config.base_dir.resolve() if config.base_dir is not None else Path()
        self.cluster: LocalRedisCluster | None = None
        self.engine: _Child | None = None
        self.prometheus: _Child | None = None
        # Set once a stop begins: a signal must not interrupt the stop itself.
        self.stopping = False
        self._started_at = time.monotonic()

    # -------------------------------------------------------------- start

    def start(self) -> StackSummary:
        """Start every part and wait until each is ready. On any failure (or
        StopRequested) everything already started is stopped before it propagates;
        what went wrong while stopping is in the exception's notes."""
        self._started_at = time.monotonic()
        prometheus = self._check_prerequisites()
        try:
            cluster = self._start_redis()
            self._load_demo(cluster.startup_nodes)
            grpc_port, metrics_port, prometheus_port = self._ports()
            self.engine = self._start_engine(cluster.startup_nodes, grpc_port, metrics_port)
            # Started before the engine is ready: both take seconds to come up.
            self.prometheus = self._start_prometheus(prometheus, metrics_port, prometheus_port)
            self._wait_engine(grpc_port, metrics_port)
            self._wait_prometheus(prometheus_port, metrics_port)
        except BaseException as exc:
            for problem in self.stop(remove_base_dir=False):
                exc.add_note(f"while stopping: {problem}")
            raise
        return self._summary(cluster, grpc_port, metrics_port, prometheus_port)

    def _check_prerequisites(self) -> str:
        """Everything that can be checked before anything starts: fail fast, leave nothing."""
        redis_binary("redis-server")
        redis_binary("redis-cli")
        prometheus = _prometheus_binary()
        if not self.config.prometheus_config.is_file():
            raise LocalStackError(
                f"no Prometheus config at {self.config.prometheus_config} (deploy/ comes with the "
                f"source tree, not with the installed package): give --prometheus-config"
            )
        if self._temporary:
            self.base_dir = Path(tempfile.mkdtemp(prefix="inventory-local-")).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if any(self.base_dir.iterdir()):
            raise LocalStackError(
                f"{self.base_dir} is not empty: the stack creates a new Redis Cluster every time; "
                f"give a new or empty --base-dir"
            )
        for part in ("engine", "prometheus"):
            (self.base_dir / part).mkdir()
        return prometheus

    def _start_redis(self) -> LocalRedisCluster:
        log.info("starting a %d-master Redis Cluster", REDIS_MASTERS)
        self.cluster = LocalRedisCluster(
            self.base_dir / "redis",
            masters=REDIS_MASTERS,
            start_timeout_s=self.config.start_timeout_s,
            own_session=True,
        )
        self.cluster.start()
        log.info("Redis Cluster ready: %s", ", ".join(self.cluster.startup_nodes))
        return self.cluster

    def _load_demo(self, nodes: tuple[str, ...]) -> None:
        from engine.config import RedisStoreConfig
        from engine.demo import load_demo
        from engine.store.redis import RedisStore

        skus = self.config.demo_skus
        log.info("loading the demo network and %s SKUs into the cluster", f"{skus:,}")
        began = time.monotonic()

        async def load() -> None:
            store = RedisStore(RedisStoreConfig(cluster_nodes=nodes))
            await store.start()
            try:
                await asyncio.wait_for(load_demo(store, skus), self.config.start_timeout_s)
            finally:
                await store.close()

        try:
            asyncio.run(load())
        except TimeoutError as exc:
            raise LocalStackError(f"loading the demo took over {self.config.start_timeout_s:.0f} s") from exc
        except Exception as exc:  # a Redis error, mostly: say which step failed
            raise LocalStackError(f"loading the demo data failed: {exc!r}") from exc
        log.info("demo data loaded in %.1f s", time.monotonic() - began)

    def _ports(self) -> tuple[int, int, int]:
        # Chosen after Redis is up, so its ports are taken and cannot be picked.
        wanted = (self.config.grpc_port, self.config.metrics_port, self.config.prometheus_port)
        free = iter(free_ports(sum(1 for port in wanted if port == 0)))
        grpc_port, metrics_port, prometheus_port = (port or next(free) for port in wanted)
        return grpc_port, metrics_port, prometheus_port

    def _start_engine(self, nodes: tuple[str, ...], grpc_port: int, metrics_port: int) -> _Child:
        log.info("starting %d engine workers on %s:%d", self.config.workers, HOST, grpc_port)
        argv = [
            sys.executable, "-m", "engine.cli", "--log-level", "INFO",
            "serve",
            "--listen", f"{HOST}:{grpc_port}",
            "--metrics-host", HOST,
            "--metrics-port", str(metrics_port),
            "--redis-cluster", ",".join(nodes),
            "--workers", str(self.config.workers),
            "--grace", str(self.config.grace_s),
        ]  # fmt: skip
        directory = self.base_dir / "engine"
        return _Child("the engine", argv, directory / "engine.log", directory)

    def _start_prometheus(self, binary: str, metrics_port: int, prometheus_port: int) -> _Child:
        directory = self.base_dir / "prometheus"
        config = prometheus_config(
            self.config.prometheus_config, f"{HOST}:{metrics_port}", self.config.scrape_interval_s
        )
        config_path = directory / "prometheus.yml"
        config_path.write_text(
            f"# Generated by inventory-engine local-stack from {self.config.prometheus_config}\n"
            + yaml.safe_dump(config, sort_keys=False)
        )
        log.info("starting Prometheus on %s:%d", HOST, prometheus_port)
        argv = [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address={HOST}:{prometheus_port}",
        ]
        return _Child("Prometheus", argv, directory / "prometheus.log", directory)

    def _wait_engine(self, grpc_port: int, metrics_port: int) -> None:
        assert self.engine is not None
        target, timeout = f"{HOST}:{grpc_port}", self.config.start_timeout_s
        with _health_checker(target) as serving:
            _wait_until(
                f"the engine's gRPC health at {target} to say SERVING", serving, timeout, *self._children()
            )
        workers, metrics_url = self.config.workers, f"http://{HOST}:{metrics_port}/metrics"
        _wait_until(
            f"{workers} engine workers to serve (inventory_worker_info at {metrics_url})",
            lambda: _live_workers(metrics_url) >= workers,
            timeout,
            *self._children(),
        )
        log.info("engine ready: %d workers serve %s", workers, target)

    def _wait_prometheus(self, prometheus_port: int, metrics_port: int) -> None:
        assert self.prometheus is not None
        url, timeout = f"http://{HOST}:{prometheus_port}", self.config.start_timeout_s
        _wait_until(
            f"Prometheus at {url} to be ready",
            lambda: _http_get(f"{url}/-/ready") is not None,
            timeout,
            self.prometheus,
        )
        metrics_target = f"{HOST}:{metrics_port}"
        _wait_until(
            f"Prometheus to scrape the engine at {metrics_target} (job {JOB_NAME})",
            lambda: _target_up(url, metrics_target),
            timeout,
            *self._children(),
        )
        log.info("Prometheus ready: target %s is up", metrics_target)

    def _children(self) -> list[_Child]:
        """The started child processes: a wait fails as soon as any of them exits."""
        return [child for child in (self.engine, self.prometheus) if child is not None]

    def _summary(
        self, cluster: LocalRedisCluster, grpc_port: int, metrics_port: int, prometheus_port: int
    ) -> StackSummary:
        assert self.engine is not None and self.prometheus is not None
        return StackSummary(
            grpc_target=f"{HOST}:{grpc_port}",
            metrics_url=f"http://{HOST}:{metrics_port}/metrics",
            prometheus_url=f"http://{HOST}:{prometheus_port}",
            redis_nodes=cluster.startup_nodes,
            workers=self.config.workers,
            demo_skus=self.config.demo_skus,
            base_dir=self.base_dir,
            engine_log=self.engine.log_path,
            prometheus_config=self.base_dir / "prometheus" / "prometheus.yml",
            prometheus_log=self.prometheus.log_path,
            redis_dirs=tuple(node.directory for node in cluster.nodes),
            pids={
                "local_stack": os.getpid(),
                "engine": self.engine.pid,
                "prometheus": self.prometheus.pid,
                "redis": [node.pid for node in cluster.nodes],
            },
            ready_s=time.monotonic() - self._started_at,
        )

    # -------------------------------------------------------------- run, stop

    def problem(self) -> str | None:
        """A sentence if a part has died since the start, else None."""
        for child in (self.engine, self.prometheus):
            if child is not None and (problem := child.exit_problem()) is not None:
                return problem
        if self.cluster is not None:
            for node in self.cluster.nodes:
                if not node.running:
                    return f"redis-server {node.address} is not running; see {node.log_file}"
        return None

    def stop(self, *, remove_base_dir: bool = True) -> list[str]:
        """Stop what runs, clients before the truth: the engine (drains), Prometheus, Redis.

        Returns what went wrong (empty: a clean stop). The base directory goes
        only if it was a temporary one, nothing went wrong and ``keep`` is off.
        """
        self.stopping = True
        problems: list[str] = []
        if self.engine is not None:
            log.info("stopping the engine (in-flight RPCs get %.0f s)", self.config.grace_s)
            problems.append(self.engine.stop(self.config.grace_s + ENGINE_STOP_MARGIN_S) or "")
        if self.prometheus is not None:
            problems.append(self.prometheus.stop(PROMETHEUS_STOP_TIMEOUT_S) or "")
        if self.cluster is not None:
            problems.append(self._stop_redis(self.cluster) or "")
        problems = [problem for problem in problems if problem]
        if remove_base_dir and self._temporary and not self.config.keep and not problems:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        elif self.engine is not None or self.cluster is not None:
            log.info("data and logs kept in %s", self.base_dir)
        self.engine = self.prometheus = self.cluster = None
        self.stopping = False
        return problems

    @staticmethod
    def _stop_redis(cluster: LocalRedisCluster) -> str | None:
        log.info("stopping the Redis Cluster")
        try:
            cluster.stop()
        except RedisLauncherError as exc:
            for node in cluster.nodes:  # the failed one is reaped; the rest must not outlive us
                node.kill()
            return f"the Redis Cluster did not stop cleanly: {exc}"
        log.info("Redis Cluster stopped")
        return None


# ------------------------------------------------------------------ command


class _Signals:
    """SIGINT/SIGTERM: during startup raise StopRequested (the start unwinds and
    stops what it started); afterwards only record the request. A second signal
    while stopping is ignored: the stop is bounded by its own timeouts."""

    def __init__(self, stack: LocalStack) -> None:
        self.requested = threading.Event()
        self.signum = 0
        self.starting = True
        self._stack = stack
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested.is_set():
            log.warning("already stopping (%s ignored)", signal.Signals(signum).name)
            return
        self.signum = signum
        self.requested.set()
        if self.starting and not self._stack.stopping:
            raise StopRequested(signum)
        log.info("%s: stopping", signal.Signals(signum).name)


def run(
    config: LocalStackConfig, *, check: bool = False, json_summary: bool = False, out: TextIO | None = None
) -> int:
    """Start the stack, print the summary, serve until a signal (or, with ``check``,
    stop at once), stop. Returns the exit code."""
    out = out or sys.stdout
    stack = LocalStack(config)
    with _Signals(stack) as signals:
        try:
            summary = stack.start()
            signals.starting = False
        except StopRequested as stop:
            # start() stopped what it had started, unless the signal came just after it returned.
            problems = [*getattr(stop, "__notes__", ()), *stack.stop(remove_base_dir=False)]
            for problem in problems:
                log.error("%s", problem)
            log.error("interrupted by %s during startup; stopped what had started", stop)
            return 128 + stop.signum
        except (LocalStackError, RedisLauncherError, OSError) as exc:
            notes = "".join(f"\n{note}" for note in getattr(exc, "__notes__", ()))
            log.error("the local stack did not start: %s%s", exc, notes)
            return 1
        try:
            print(json.dumps(summary.as_json()) if json_summary else summary.text(), file=out, flush=True)
            code = 0 if check else _watch(stack, signals)
        finally:  # even if stdout is gone (a closed pipe): nothing may outlive this command
            problems = stack.stop()
    for problem in problems:
        log.error("%s", problem)
    if problems:
        return 1
    log.info("everything stopped")
    return code


def _watch(stack: LocalStack, signals: _Signals) -> int:
    """Until a signal (exit 0) or a part dying (exit 1)."""
    while not signals.requested.wait(0.5):
        problem = stack.problem()
        if problem is not None:
            log.error("%s\nstopping everything", problem)
            return 1
    return 0


def add_subcommand(subparsers: Any) -> None:
    """Register ``local-stack`` on the ``inventory-engine`` parser's subcommands."""
    p = subparsers.add_parser(
        "local-stack",
        help="start a Redis Cluster, engine workers with the demo data and Prometheus on loopback",
        description=(
            "Start on 127.0.0.1 a 3-master Redis Cluster, N engine workers with the demo data and a "
            "Prometheus scraping them; print where everything is; stop it all on Ctrl-C or SIGTERM."
        ),
    )
    p.add_argument("--workers", type=int, default=2, help="engine worker processes (default %(default)s)")
    p.add_argument(
        "--base-dir", type=Path, help="new or empty directory for data and logs, kept (default: a temporary "
        "one, removed after a clean stop)",
    )  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the temporary directory after the stop")
    p.add_argument("--demo-skus", type=int, default=DEMO_SKUS, help="SKUs in the demo (default %(default)s)")
    p.add_argument("--grpc-port", type=int, default=0, help="engine gRPC port (default: a free one)")
    p.add_argument("--metrics-port", type=int, default=0, help="engine metrics port (default: a free one)")
    p.add_argument("--prometheus-port", type=int, default=0, help="Prometheus port (default: a free one)")
    p.add_argument(
        "--scrape-interval", type=float, default=5.0, help="seconds between scrapes (default %(default)s)"
    )
    p.add_argument(
        "--prometheus-config", type=Path, default=DEFAULT_PROMETHEUS_CONFIG,
        help="scrape config whose inventory-engine job is pointed at the engine (default: the project's)",
    )  # fmt: skip
    p.add_argument("--start-timeout", type=float, default=120.0, help="seconds per startup step")
    p.add_argument("--check", action="store_true", help="start, verify, print the summary, stop")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    try:
        config = LocalStackConfig(
            workers=args.workers,
            base_dir=args.base_dir,
            keep=args.keep,
            demo_skus=args.demo_skus,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            prometheus_port=args.prometheus_port,
            scrape_interval_s=args.scrape_interval,
            prometheus_config=args.prometheus_config.resolve(),
            start_timeout_s=args.start_timeout,
        )
    except ValueError as exc:
        raise SystemExit(f"local-stack: {exc}") from exc
    return run(config, check=args.check, json_summary=args.json)
