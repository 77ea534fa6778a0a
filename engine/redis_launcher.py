"""Real ``redis-server`` processes on loopback: one server, or a Redis Cluster.

Used by the test suite, the benchmarks and the local deployment: anything that
needs a Redis the engine can use, started from nothing and stopped again. Each
server runs in a directory of its own (its config file, AOF, log and, in a
cluster, ``nodes.conf``), listens on 127.0.0.1 only, on a free port unless told
otherwise, with the settings the engine's Redis store relies on:

- ``maxmemory-policy noeviction``: Redis must refuse a write rather than evict a
  hold or a counter to make room for it;
- ``appendonly yes`` with ``appendfsync everysec`` (default) or ``always``
  (every acknowledged write is on disk before the reply: the durability tests);
- ``save ""``: no RDB snapshots on top of the AOF (a fork per snapshot buys
  nothing when the AOF is the durable record).

``restart()`` brings a server back on the same directory and port, so Redis
replays its AOF (and a cluster node rejoins from ``nodes.conf``): that is how the
tests simulate a Redis crash or restart. Every process started here is reaped by
``stop()``/``kill()``, and killed at interpreter exit if its owner forgot.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine.launcher import free_ports

__all__ = [
    "APPENDFSYNC_POLICIES",
    "CLUSTER_SLOTS",
    "HOST",
    "LocalRedisCluster",
    "RedisLauncherError",
    "RedisNotInstalled",
    "RedisServer",
    "redis_binary",
    "redis_server_version",
]

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
APPENDFSYNC_POLICIES = ("everysec", "always")
CLUSTER_SLOTS = 16384
# ``cluster-port`` (an explicit cluster bus port) appeared in Redis 7.0; without
# it the bus port is port + 10000, which may be taken or above 65535.
MIN_VERSION = (7, 0, 0)
# The Debian package that ships each binary (the names `make test` installs).
PACKAGES = {"redis-server": "redis-server", "redis-cli": "redis-tools"}


class RedisLauncherError(RuntimeError):
    """A Redis server or cluster did not start, become ready or stop as asked."""


class RedisNotInstalled(RedisLauncherError):
    """``redis-server`` or ``redis-cli`` is missing (or too old)."""


def redis_binary(name: str) -> str:
    """The path of ``redis-server`` or ``redis-cli``, or a clear error naming the package."""
    path = shutil.which(name)
    if path is None:
        package = PACKAGES.get(name, name)
        raise RedisNotInstalled(
            f"{name} was not found on PATH. Install Debian's {package} package "
            f"(apt-get install redis-server redis-tools); `make test` installs both "
            f"when it runs as root (tools/ensure_system_deps.sh)."
        )
    return path


_versions: dict[str, tuple[int, int, int]] = {}


def redis_server_version() -> tuple[int, int, int]:
    """The version of the ``redis-server`` on PATH, checked against the minimum once."""
    binary = redis_binary("redis-server")
    if binary not in _versions:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
        if match is None:
            raise RedisNotInstalled(f"cannot tell the version of {binary} from {out.strip()!r}")
        version = (int(match[1]), int(match[2]), int(match[3]))
        if version < MIN_VERSION:
            raise RedisNotInstalled(
                f"{binary} is Redis {'.'.join(map(str, version))}; the engine's tests need "
                f"{'.'.join(map(str, MIN_VERSION))} or newer (Debian 12's redis-server package has it)"
            )
        _versions[binary] = version
    return _versions[binary]


# Processes started here and not yet reaped; killed at exit so that a test run
# (or a benchmark) that forgets to stop a server leaves nothing behind.
_unreaped: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for process in list(_unreaped):
        if process.poll() is None:
            process.kill()
        process.wait()
        _unreaped.discard(process)


def _client(port: int, timeout_s: float) -> redis.Redis:
    # No retries: the caller polls, and redis-py's default retry policy would
    # spend seconds backing off on every refused connection.
    return redis.Redis(
        host=HOST,
        port=port,
        socket_connect_timeout=min(timeout_s, 1.0),
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


class _PortTaken(RedisLauncherError):
    pass


class RedisServer:
    """One ``redis-server`` process: ``with RedisServer(tmp_dir) as server: server.url``.

    ``port=None`` picks a free port at the first start (and a free cluster bus
    port for a cluster node), trying again if another process grabs it first;
    later restarts keep both. ``cluster=True`` makes it a cluster node (see
    :class:`LocalRedisCluster`, which creates the cluster from such nodes).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        port: int | None = None,
        appendfsync: str = "everysec",
        cluster: bool = False,
        cluster_bus_port: int | None = None,
        cluster_node_timeout_ms: int = 5000,
        extra_config: Mapping[str, str] | None = None,
        start_timeout_s: float = 60.0,
        own_session: bool = False,
    ) -> None:
        if appendfsync not in APPENDFSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {APPENDFSYNC_POLICIES}, not {appendfsync!r}")
        if cluster_node_timeout_ms < 100:
            raise ValueError("cluster_node_timeout_ms must be at least 100")
        self.directory = Path(directory).resolve()
        self.appendfsync = appendfsync
        self.cluster = cluster
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.extra_config = dict(extra_config or {})
        self.start_timeout_s = start_timeout_s
        # A session of its own keeps a terminal's Ctrl-C (sent to the whole
        # foreground process group) from reaching the server, so that its owner
        # decides when it stops: after the engines that use it (deploy/local).
        self.own_session = own_session
        self._port = port or 0
        self._bus_port = cluster_bus_port or 0
        # Ports given by the caller are never replaced; chosen ones only before the first start.
        self._pick_ports = port is None
        self._process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        """The client port (0 until the first start when it is picked then)."""
        return self._port

    @property
    def cluster_bus_port(self) -> int:
        return self._bus_port

    @property
    def address(self) -> str:
        """``host:port``, as cluster startup nodes are written."""
        return f"{HOST}:{self._port}"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self._port}/0"

    @property
    def config_file(self) -> Path:
        return self.directory / "redis.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client(self, timeout_s: float = 10.0) -> redis.Redis:
        """A plain synchronous client (decoded replies) for setup and inspection."""
        return _client(self._port, timeout_s)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RedisServer:
        """Start the process and return once it answers PING (its AOF loaded)."""
        if self.running:
            raise RedisLauncherError(f"redis-server at {self.address} is already running")
        binary = redis_binary("redis-server")
        redis_server_version()
        self.directory.mkdir(parents=True, exist_ok=True)
        # Picked ports get a few tries: another process may bind one between our
        # check and Redis's bind. Ports the caller gave get one.
        attempts_left = 5 if self._pick_ports else 1
        while True:
            attempts_left -= 1
            if self._pick_ports:
                if self.cluster:
                    self._port, self._bus_port = free_ports(2)
                else:
                    [self._port] = free_ports(1)
            elif self.cluster and not self._bus_port:
                [self._bus_port] = free_ports(1)
            try:
                self._launch(binary)
            except _PortTaken:
                if attempts_left == 0:
                    raise
                continue
            self._pick_ports = False  # a restart comes back where its clients and AOF expect it
            return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """A clean ``SHUTDOWN`` (the AOF is flushed and fsynced), then reap the process.

        A no-op when it is not running. Raises if Redis refused to shut down or
        exited with an error; the process is gone either way.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            refused: Exception | None = None
            try:
                with self.client(timeout_s) as client:
                    client.shutdown()
            except redis.RedisError as exc:
                refused = exc
            try:
                process.wait(timeout_s if refused is None else 1.0)
            except subprocess.TimeoutExpired:
                process.kill()
                self._reap()
                raise RedisLauncherError(
                    f"redis-server at {self.address} did not shut down ({refused!r}); killed it: "
                    f"writes since its last fsync may be lost\n{self._log_tail()}"
                ) from refused
        code = self._reap()
        if code != 0:
            raise RedisLauncherError(
                f"redis-server at {self.address} exited with {code} on shutdown\n{self._log_tail()}"
            )
        log.debug("redis-server at %s stopped", self.address)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would: nothing is flushed. Reaps the process."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        self._reap()
        log.debug("redis-server at %s killed", self.address)

    def restart(self) -> RedisServer:
        """Start again on the same directory and ports (stopping cleanly first if running).

        Redis replays its AOF before it answers PING, so this returns with the
        data back; after ``kill()`` that is exactly what the AOF had on disk.
        """
        if not self._port:
            return self.start()  # never started: nothing to come back to
        if self.running:
            self.stop()
        self._reap()  # a process that died by itself
        self._launch(redis_binary("redis-server"))
        return self

    def __enter__(self) -> RedisServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        kind = "cluster node" if self.cluster else "server"
        return f"<RedisServer {kind} {self.address} {state} in {self.directory}>"

    # ------------------------------------------------------------------ internals

    def _config_text(self) -> str:
        settings: list[tuple[str, str]] = [
            ("bind", HOST),
            ("port", str(self._port)),
            ("protected-mode", "yes"),
            ("daemonize", "no"),
            ("dir", str(self.directory)),
            ("logfile", str(self.log_file)),
            ("maxmemory-policy", "noeviction"),
            ("appendonly", "yes"),
            ("appendfsync", self.appendfsync),
            ("save", '""'),
        ]
        if self.cluster:
            settings += [
                ("cluster-enabled", "yes"),
                # Its own file per node: a node's identity and view of the cluster.
                ("cluster-config-file", str(self.directory / "nodes.conf")),
                ("cluster-port", str(self._bus_port)),
                ("cluster-node-timeout", str(self.cluster_node_timeout_ms)),
            ]
        settings += list(self.extra_config.items())
        lines = ["# Written by engine.redis_launcher; rewritten at every start."]
        lines += [f"{key} {value}" for key, value in settings]
        return "\n".join(lines) + "\n"

    def _launch(self, binary: str) -> None:
        self.config_file.write_text(self._config_text())
        # Config errors are printed before the log file is opened: keep them too.
        with (self.directory / "redis.stdout").open("ab") as out:
            process = subprocess.Popen(
                [binary, str(self.config_file)],
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.own_session,
            )
        _unreaped.add(process)
        self._process = process
        log.debug("redis-server at %s started (pid %d)", self.address, process.pid)
        self._wait_ready(process)

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        # A short timeout per PING: a port that accepts but never answers (not
        # Redis) must not stall the loop that notices the process has exited.
        with self.client(timeout_s=0.25) as client:
            while True:
                code = process.poll()
                if code is not None:
                    self._reap()
                    tail = self._log_tail()
                    if "Address already in use" in tail:
                        raise _PortTaken(f"port {self._port} or {self._bus_port} is taken\n{tail}")
                    raise RedisLauncherError(
                        f"redis-server at {self.address} exited with {code} before it answered PING\n{tail}"
                    )
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:  # not listening yet, or LOADING its AOF
                    pass
                except redis.TimeoutError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RedisLauncherError(
                        f"redis-server at {self.address} did not answer PING within "
                        f"{self.start_timeout_s} s\n{self._log_tail()}"
                    )
                time.sleep(0.02)

    def _reap(self) -> int | None:
        """Wait for the process (it must be exiting) and forget it; its exit code."""
        process = self._process
        if process is None:
            return None
        code = process.wait()
        _unreaped.discard(process)
        self._process = None
        return code

    def _log_tail(self, lines: int = 20) -> str:
        text = []
        for path in (self.directory / "redis.stdout", self.log_file):
            with contextlib.suppress(OSError):  # not written yet
                text += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)


class LocalRedisCluster:
    """A Redis Cluster of ``masters`` processes on loopback, with no replicas.

    ``with LocalRedisCluster(tmp_dir) as cluster: cluster.startup_nodes``. Each
    node is a :class:`RedisServer` in ``directory/node-N`` (so a test can
    ``kill()`` and ``restart()`` one master); the cluster is created with
    ``redis-cli --cluster create`` and is ready once every node reports
    ``cluster_state:ok`` with all 16384 slots served. ``own_session`` is passed
    to every node (see :class:`RedisServer`).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        masters: int = 3,
        appendfsync: str = "everysec",
        node_timeout_ms: int = 5000,
        start_timeout_s: float = 60.0,
        own_session: bool = False,
    ) -> None:
        if masters < 3:
            raise ValueError("a Redis Cluster needs at least 3 masters")
        self.directory = Path(directory).resolve()
        self.start_timeout_s = start_timeout_s
        self.nodes: tuple[RedisServer, ...] = tuple(
            RedisServer(
                self.directory / f"node-{index}",
                appendfsync=appendfsync,
                cluster=True,
                cluster_node_timeout_ms=node_timeout_ms,
                start_timeout_s=start_timeout_s,
                own_session=own_session,
            )
            for index in range(masters)
        )

    @property
    def startup_nodes(self) -> tuple[str, ...]:
        """``("127.0.0.1:PORT", ...)``, one per master: what a cluster client starts from."""
        return tuple(node.address for node in self.nodes)

    @property
    def running(self) -> bool:
        return all(node.running for node in self.nodes)

    def start(self) -> LocalRedisCluster:
        cli = redis_binary("redis-cli")  # before anything starts: fail fast and leave nothing
        try:
            for node in self.nodes:
                node.start()
            command = [
                cli,
                "--cluster",
                "create",
                *self.startup_nodes,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ]
            created = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=self.start_timeout_s,
                check=False,
            )
            if created.returncode != 0:
                raise RedisLauncherError(
                    f"{' '.join(command)} failed with {created.returncode}:\n{created.stdout}{created.stderr}"
                )
            self.wait_ready()
        except BaseException:
            self._stop_quietly()
            raise
        return self

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Return once every node is up and reports a healthy cluster covering every slot.

        Also the way to wait after ``restart()`` of a node: it rejoins from its
        ``nodes.conf``, and the others clear its failure flag.
        """
        deadline = time.monotonic() + (self.start_timeout_s if timeout_s is None else timeout_s)
        while True:
            problems = self._health_problems()
            if not problems:
                return
            if time.monotonic() > deadline:
                raise RedisLauncherError("the Redis Cluster is not ready: " + "; ".join(problems))
            time.sleep(0.05)

    def _health_problems(self) -> list[str]:
        problems = []
        for node in self.nodes:
            if not node.running:
                problems.append(f"{node.address} is not running")
                continue
            try:
                with node.client(timeout_s=2.0) as client:
                    raw = client.execute_command("CLUSTER", "INFO")
            except redis.RedisError as exc:
                problems.append(f"{node.address}: {exc}")
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            expected = {
                "cluster_state": "ok",
                "cluster_slots_assigned": str(CLUSTER_SLOTS),
                "cluster_slots_ok": str(CLUSTER_SLOTS),
                "cluster_known_nodes": str(len(self.nodes)),
            }
            wrong = {key: info.get(key) for key, value in expected.items() if info.get(key) != value}
            if wrong:
                problems.append(f"{node.address}: {wrong}")
        return problems

    def stop(self) -> None:
        """Stop every node cleanly (the ones not running are skipped); raise the first failure."""
        errors: list[RedisLauncherError] = []
        for node in self.nodes:
            try:
                node.stop()
            except RedisLauncherError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def _stop_quietly(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except RedisLauncherError:
                node.kill()

    def __enter__(self) -> LocalRedisCluster:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<LocalRedisCluster {', '.join(self.startup_nodes)} in {self.directory}>"
